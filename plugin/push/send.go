package push

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/plugin/encap"
	"github.com/deferpush/deferpush/plugin/msrp"
	"github.com/deferpush/deferpush/plugin/sdp"
)

// Steps 8–9 of the seed's Figure 2: one MSRP SEND per stored message,
// encapsulated, and the client's 200 (and success REPORT) for each.

// session is one push session: a confirmed dialog and its MSRP session.
type session struct {
	p      *Pusher
	dlg    *dialog
	ms     *msrp.Session
	answer sdp.Media
	policy plugin.Policy
	aor    plugin.AOR
	// awaiting is set while a passive session waits for the client to
	// connect (its answer said a=setup:active).
	awaiting bool
	// imdn are the notifications the client may send back (inbound.go).
	imdn *imdnRoutes
}

var _ plugin.PushSession = (*session)(nil)

// Deliver sends one SEND per message (step 8), in order, keeping up to
// Config.Window of them in flight, and waits for each 200 (step 9) — and
// the success REPORT when one is asked for (see delivery) — before
// reporting it confirmed.
func (s *session) Deliver(ctx context.Context, msgs []*plugin.Message, done func(*plugin.Message, error)) error {
	s.imdn.add(msgs)
	// A BYE from the client ends the dialog: stop sending then.
	ctx, cancel := context.WithCancelCause(ctx)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		select {
		case <-s.dlg.bye:
			cancel(errClientBye)
		case <-ctx.Done():
		}
	}()
	defer func() {
		cancel(nil)
		<-watched
	}()

	d := s.delivery(ctx, cancel)
	// A client that answered a=setup:active must connect within the MSRP
	// timeout; one that never does ends the session, its messages unsent.
	if s.awaiting {
		t := time.AfterFunc(s.p.cfg.MSRPTimeout, func() { cancel(errNoConnect) })
		defer t.Stop()
		d.started = func() {
			t.Stop()
			s.awaiting = false
		}
	}
	return d.run(ctx, msgs, done)
}

// delivery sets up the delivery of messages on s; stall ends the session.
//
// A 200 to a SEND only says the next hop took it (RFC 4975 §7.1.2): when
// the client's path goes through a relay, only the client's success REPORT
// confirms delivery, so one is asked for whatever the policy says — unless
// every relay on the path is one the operator trusts (TrustedRelays).
func (s *session) delivery(ctx context.Context, stall func(error)) *delivery {
	path := s.answer.Path
	relayed := len(path) > 1 && !s.p.trusted(ctx, path[:len(path)-1])
	d := &delivery{
		stall:     stall,
		timeout:   s.p.cfg.MSRPTimeout,
		chunkSize: s.p.cfg.ChunkSize,
		ms:        s.ms,
		window:    s.p.cfg.Window,
		report:    s.policy.SuccessReports || relayed,
		opts:      s.encapOptions(),
	}
	if len(path) > 1 {
		d.noReport = fmt.Errorf("%w: no success REPORT came back through the MSRP relay %s within msrp.timeout (%v) "+
			"of its 200; a relay that drops REPORTs leaves every message stored (msrp.trusted_relays trusts the 200 of relays you run)",
			errUnconfirmed, path[0].Addr(), s.p.cfg.MSRPTimeout)
	} else {
		d.noReport = fmt.Errorf("%w: the client sent no success REPORT within msrp.timeout (%v) of its 200 (policy success_reports)",
			errUnconfirmed, s.p.cfg.MSRPTimeout)
	}
	return d
}

// encapOptions are what the client's answer and the policy let Build send.
func (s *session) encapOptions() encap.Options {
	return encap.Options{
		AcceptTypes:        s.answer.AcceptTypes,
		AcceptWrappedTypes: s.answer.AcceptWrappedTypes,
		Preference:         preference(s.policy.Encapsulation),
		Fallback:           encap.Fallback(s.policy.NoEncapFallback),
		MaxSize:            s.answer.MaxSize,
	}
}

// carries returns an ErrMSRPRefused session error when the answer can
// carry none of msgs: each would be held (encap.ErrHold), and the session
// would send nothing — at every push, the client answering the same way.
// A message Build fails on otherwise (a stored message that does not
// parse) counts as carried: Deliver reports its error as before.
func (s *session) carries(msgs []*plugin.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	o := s.encapOptions()
	for _, m := range msgs {
		if _, err := encap.Build(deferred(m), o); !errors.Is(err, encap.ErrHold) {
			return nil
		}
	}
	return &plugin.SessionError{Op: "invite", Err: fmt.Errorf("%w: the answer takes none of the %d messages "+
		"(accept-types %q, accept-wrapped-types %q, max-size %d, no_encap_fallback %s)", plugin.ErrMSRPRefused,
		len(msgs), o.AcceptTypes, o.AcceptWrappedTypes, o.MaxSize, o.Fallback)}
}

// delivery is what Deliver needs of a session, apart from its dialog.
type delivery struct {
	started func() // called after each message started; may be nil
	// stall ends the session when a message cannot start within timeout,
	// when a success REPORT did not come, or when the session outlasts
	// its budget.
	stall   func(error)
	timeout time.Duration
	// chunkSize is the session's SEND chunk size, which the budget
	// counts in (0: a message is one chunk).
	chunkSize int
	ms        *msrp.Session
	window    int  // messages in flight
	report    bool // ask for success REPORTs
	// noReport is why the session ends when a success REPORT does not
	// come: the reason logged with the push's end.
	noReport error
	opts     encap.Options
}

// run is Deliver once ctx ends with the dialog.
//
// This goroutine encapsulates and starts the messages (send); a second one
// waits for them in the same order and calls done (report), so that a
// message's fate is reported as soon as it and those before it are known.
// Held and unencapsulable messages pass through it too, to keep done in
// order. With a timeout and a stall, the whole run has a budget.
func (d *delivery) run(ctx context.Context, msgs []*plugin.Message, done func(*plugin.Message, error)) error {
	pl := &pipeline{
		d:        d,
		brokenCh: make(chan struct{}),
		fates:    make(chan fate, len(msgs)),
		slots:    make(chan struct{}, max(d.window, 1)),
	}
	if d.timeout > 0 && d.stall != nil {
		pl.budget = startBudget(d.timeout, d.stall)
		defer pl.budget.stop()
	}
	reported := make(chan struct{})
	go func() {
		defer close(reported)
		pl.report(ctx, done)
	}()
	for _, m := range msgs {
		pl.fates <- pl.send(ctx, m)
	}
	close(pl.fates)
	<-reported
	if err := pl.err(); err != nil {
		return &plugin.SessionError{Op: "msrp", Err: err}
	}
	return nil
}

// fate is a message on its way to done: wait is nil when err is already
// its outcome; contentType is the type of the payload that went.
type fate struct {
	m           *plugin.Message
	wait        func() error
	err         error
	contentType string
}

// pipeline is one run of a delivery: the messages started and not yet
// reported, at most window of them, and what broke the session.
type pipeline struct {
	d        *delivery
	mu       sync.Mutex
	broken   error
	brokenCh chan struct{} // closed when broken is set
	fates    chan fate
	slots    chan struct{} // a token per message in flight
	budget   *budget       // nil: unbounded
	// refused are the types the client answered 415 to (under mu): the
	// messages encapsulated after that use another.
	refused []string
}

// opts are the delivery's encapsulation options with the types refused
// so far.
func (p *pipeline) opts() encap.Options {
	p.mu.Lock()
	defer p.mu.Unlock()
	o := p.d.opts
	o.Refused = append(o.Refused[:len(o.Refused):len(o.Refused)], p.refused...)
	return o
}

// refuse records that the client refused payloads of contentType.
func (p *pipeline) refuse(contentType string) {
	mt, _, _ := strings.Cut(contentType, ";")
	mt = strings.TrimSpace(mt)
	p.mu.Lock()
	defer p.mu.Unlock()
	if !slices.ContainsFunc(p.refused, func(r string) bool { return strings.EqualFold(r, mt) }) {
		p.refused = append(p.refused, mt)
	}
}

// breakOff records the first error that broke the session.
func (p *pipeline) breakOff(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.broken == nil {
		p.broken = err
		close(p.brokenCh)
	}
}

func (p *pipeline) isBroken() bool {
	select {
	case <-p.brokenCh:
		return true
	default:
		return false
	}
}

func (p *pipeline) err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.broken
}

// report waits for each started message in order and reports every fate.
func (p *pipeline) report(ctx context.Context, done func(*plugin.Message, error)) {
	charged := false
	for f := range p.fates {
		if f.wait != nil {
			f.err = p.d.outcome(ctx, f.wait(), &charged, p.breakOff)
			f.err = p.again(ctx, f, &charged)
			<-p.slots
		}
		done(f.m, f.err)
	}
}

// again sends f's message once more, in another encapsulation, while the
// client answers 415 to the one it got although its accept-types listed
// it: the message is not the client's to refuse, the type is, so the
// type is not used again in the session and the message charged an
// attempt only when no other encapsulation is left (the 415 it got then).
// It runs in the report goroutine, holding f's window slot; the message
// goes out after those already started.
func (p *pipeline) again(ctx context.Context, f fate, charged *bool) error {
	err := f.err
	for {
		var re *plugin.RejectedError
		if !errors.As(err, &re) || re.Status != msrp.StatusUnsupportedMedia || p.isBroken() {
			return err
		}
		p.refuse(f.contentType)
		pl, berr := encap.Build(deferred(f.m), p.opts())
		if berr != nil {
			return err
		}
		p.budget.message(len(pl.Body), p.d.chunkSize)
		wait, serr := p.d.start(ctx, f.m, pl)
		if serr != nil {
			if ctx.Err() != nil {
				serr = context.Cause(ctx)
			}
			p.breakOff(serr)
			return plugin.ErrNotSent
		}
		f.contentType = pl.ContentType
		err = p.d.outcome(ctx, wait(), charged, p.breakOff)
	}
}

// send encapsulates m and starts it once the window has room; a message
// it cannot start goes back unsent (no attempt).
func (p *pipeline) send(ctx context.Context, m *plugin.Message) fate {
	if p.isBroken() {
		return fate{m: m, err: plugin.ErrNotSent}
	}
	o := p.opts()
	pl, err := encap.Build(deferred(m), o)
	switch {
	case errors.Is(err, encap.ErrHold):
		return fate{m: m, err: plugin.ErrHeld}
	case err != nil:
		return fate{m: m, err: fmt.Errorf("encapsulate: %w", err)}
	}
	select {
	case p.slots <- struct{}{}:
	case <-p.brokenCh:
		return fate{m: m, err: plugin.ErrNotSent}
	case <-ctx.Done():
		p.breakOff(context.Cause(ctx))
		return fate{m: m, err: plugin.ErrNotSent}
	}
	if p.isBroken() {
		<-p.slots
		return fate{m: m, err: plugin.ErrNotSent}
	}
	if now := p.opts(); len(now.Refused) != len(o.Refused) {
		// The client refused a type while m waited for room: m is
		// encapsulated again without it.
		if pl, err = encap.Build(deferred(m), now); err != nil {
			<-p.slots
			if errors.Is(err, encap.ErrHold) {
				return fate{m: m, err: plugin.ErrHeld}
			}
			return fate{m: m, err: fmt.Errorf("encapsulate: %w", err)}
		}
	}
	p.budget.message(len(pl.Body), p.d.chunkSize)
	wait, err := p.d.start(ctx, m, pl)
	if err != nil {
		// Nothing of it went out: the session is gone or ctx ended.
		<-p.slots
		if ctx.Err() != nil {
			err = context.Cause(ctx)
		}
		p.breakOff(err)
		return fate{m: m, err: plugin.ErrNotSent}
	}
	if p.d.started != nil {
		p.d.started()
	}
	return fate{m: m, wait: wait, contentType: pl.ContentType}
}

// start hands one payload to the MSRP session. Start waits for window room
// and, on a session the client connected to, for a connection: one lost
// without a BYE would hold the push (and the mailbox's lock) for good, so
// a watchdog stalls the session once none of its transactions has moved
// for the MSRP timeout (msrp.Session.LastProgress: what the client sends
// of its own does not count). While they move — a large message going
// out slowly, its chunks queued behind each other — the watchdog waits.
func (d *delivery) start(ctx context.Context, m *plugin.Message, pl encap.Payload) (func() error, error) {
	if d.timeout > 0 && d.stall != nil {
		defer d.watchdog().Stop()
	}
	return d.ms.Start(ctx, msrp.Message{
		// The outer Message-ID is the stored message's id, so a resend
		// after a failure reuses it (RFC 4975 §7.1.1) and a client can
		// spot a duplicate.
		ID:            m.ID,
		ContentType:   pl.ContentType,
		Body:          pl.Body,
		SuccessReport: d.report,
	})
}

// watchdog stalls the session once nothing has moved on it for the MSRP
// timeout, counting from now.
func (d *delivery) watchdog() *time.Timer {
	begun := time.Now()
	var mu sync.Mutex
	mu.Lock()
	defer mu.Unlock()
	var t *time.Timer
	t = time.AfterFunc(d.timeout, func() {
		last := d.ms.LastProgress()
		if last.Before(begun) {
			last = begun
		}
		if idle := time.Since(last); idle < d.timeout {
			mu.Lock()
			t.Reset(d.timeout - idle)
			mu.Unlock()
			return
		}
		d.stall(errStalled)
	})
	return t
}

// outcome maps what the wait of a sent message returned to what Deliver
// reports for it, and calls breakOff with the cause when the session can
// carry no more messages. The first message the session breaks on is
// charged an attempt (*charged is set then); the messages pipelined behind
// it are not: they go back unsent.
//
// A success REPORT that does not come is no attempt at the message: the
// next hop took it, the client may have it. It ends the session, so that
// a path that drops REPORTs costs one timeout, not one per message; the
// messages stay stored.
func (d *delivery) outcome(ctx context.Context, err error, charged *bool, breakOff func(error)) error {
	var se *msrp.StatusError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, msrp.ErrNoReport):
		breakOff(d.noReport)
		if d.stall != nil {
			d.stall(d.noReport)
		}
		return plugin.ErrUnconfirmed
	case errors.As(err, &se) && (se.Code == msrp.StatusSessionAlreadyBound || se.Code == msrp.StatusNoSession):
		// 506: the client holds the session bound to another connection
		// (RFC 4975 §7.3.1) and will take nothing on this one; 481: it
		// has no such session (§7.3). That is about the session, not the
		// message: no attempt at it.
		breakOff(err)
		return plugin.ErrNotSent
	case errors.As(err, &se) && se.Code != msrp.StatusTimeout:
		// The client refused this message (413, 415, ...): the
		// session goes on with the next one.
		return &plugin.RejectedError{Status: se.Code, Reason: se.Comment}
	case ctx.Err() != nil:
		// Aborted (#) or cut short by the end of the session: not an
		// attempt at it.
		breakOff(context.Cause(ctx))
		return plugin.ErrNotSent
	case *charged:
		return plugin.ErrNotSent
	default:
		breakOff(err)
		*charged = true
		return err
	}
}

var (
	errUnconfirmed = errors.New("messages unconfirmed")
	errClientBye   = errors.New("client ended the session (BYE)")
	errNoConnect   = errors.New("client did not open its MSRP connection in time")
	errStalled     = errors.New("MSRP session stalled: a message could not start in time")
)
