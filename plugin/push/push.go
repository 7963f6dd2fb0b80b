// Package push is deferpush's Pusher: it delivers deferred messages to a
// registered client as the seed's Figure 2 shows — a SIP INVITE with an MSRP
// offer through the outbound proxy, ACK, one MSRP SEND per message carrying
// the stored message encapsulated (plugin/encap), then BYE.
//
// It speaks SIP with sipgo and MSRP with plugin/msrp. deferpush offers
// a=setup:actpass: it connects to the path of the answer unless the answer
// says a=setup:active, in which case the client connects to deferpush's
// MSRP listener (RFC 6135).
package push

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/plugin/encap"
	"github.com/deferpush/deferpush/plugin/msrp"
	"github.com/deferpush/deferpush/plugin/sdp"
)

// Config configures a Pusher.
type Config struct {
	// Client sends the INVITE, ACK, CANCEL and BYE. Required.
	Client *sipgo.Client
	// Contact is our Contact URI, where the client's in-dialog requests
	// (its BYE) reach us, e.g. sip:deferpush@192.0.2.1:5070;transport=tcp.
	// Required.
	Contact string
	// From is the From URI of our INVITEs. Empty means
	// sip:deferpush@<Contact host>.
	From string
	// OutboundProxy is the SIP URI INVITEs are routed through (a Route
	// header with ;lr). Empty sends them to the Request-URI directly.
	OutboundProxy string
	// MSRP is our MSRP listener: its URI is the path we offer, and it takes
	// the client's connection when the answer says a=setup:active.
	// Required.
	MSRP *msrp.Listener
	// ChunkSize is the largest body of one MSRP SEND. Zero means 2048.
	ChunkSize int
	// MSRPTimeout bounds the wait for each MSRP response (a local 408
	// after it) and for a passive client to connect. Zero means 30 s.
	MSRPTimeout time.Duration
	// TLS configures the msrps connections to clients whose answer has an
	// msrps path. Nil uses the system roots and the host of the path.
	// Whether we offer msrps is the listener's choice: a TLS listener
	// offers TCP/TLS/MSRP with an msrps path.
	TLS *tls.Config
	// Window is the number of messages a session keeps in flight: sent,
	// their confirmation awaited. Zero means 16; 1 sends each message
	// only once the previous one is confirmed.
	Window int
	// Logger; nil discards.
	Logger *slog.Logger
}

// Pusher implements plugin.Pusher.
type Pusher struct {
	cfg     Config
	contact sip.ContactHeader
	from    sip.Uri
	route   *sip.Uri
	dialogs *sipgo.DialogClientCache
	log     *slog.Logger
}

var _ plugin.Pusher = (*Pusher)(nil)

// acceptTypes is what our offer's a=accept-types lists. deferpush receives
// nothing in a push session but REPORTs (which carry no content type), yet
// RFC 4975 requires the attribute: it names what we send.
var acceptTypes = []string{encap.TypeSIP, encap.TypeMSRP, encap.TypeMultipart, encap.TypeCPIM, encap.TypeSIPFrag}

// New returns a Pusher.
func New(cfg Config) (*Pusher, error) {
	if cfg.Client == nil || cfg.MSRP == nil || cfg.Contact == "" {
		return nil, errors.New("push: Client, Contact and MSRP are required")
	}
	if cfg.ChunkSize == 0 {
		cfg.ChunkSize = 2048
	}
	if cfg.MSRPTimeout == 0 {
		cfg.MSRPTimeout = 30 * time.Second
	}
	if cfg.Window <= 0 {
		cfg.Window = 16
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	p := &Pusher{cfg: cfg, log: cfg.Logger}
	if err := sip.ParseUri(cfg.Contact, &p.contact.Address); err != nil {
		return nil, fmt.Errorf("push: contact %q: %w", cfg.Contact, err)
	}
	from := cfg.From
	if from == "" {
		from = "sip:deferpush@" + p.contact.Address.Host
	}
	if err := sip.ParseUri(from, &p.from); err != nil {
		return nil, fmt.Errorf("push: from %q: %w", from, err)
	}
	if cfg.OutboundProxy != "" {
		var u sip.Uri
		if err := sip.ParseUri(cfg.OutboundProxy, &u); err != nil {
			return nil, fmt.Errorf("push: outbound proxy %q: %w", cfg.OutboundProxy, err)
		}
		if u.UriParams == nil {
			u.UriParams = sip.NewParams()
		}
		u.UriParams.Add("lr", "")
		p.route = &u
	}
	p.dialogs = sipgo.NewDialogClientCache(cfg.Client, p.contact)
	return p, nil
}

// ReadBye answers a BYE from a client in one of our push dialogs and ends
// that session. It returns sipgo.ErrDialogDoesNotExists when the BYE
// belongs to no push dialog, so the caller can hand it to someone else.
func (p *Pusher) ReadBye(req *sip.Request, tx sip.ServerTransaction) error {
	return p.dialogs.ReadBye(req, tx)
}

// Open sends the INVITE and sets up the MSRP session (steps 2–7).
func (p *Pusher) Open(ctx context.Context, t plugin.Target) (plugin.PushSession, error) {
	var ruri sip.Uri
	if err := sip.ParseUri(t.URI, &ruri); err != nil {
		return nil, &plugin.SessionError{Op: "invite", Err: fmt.Errorf("request-uri %q: %w", t.URI, err)}
	}
	local := p.cfg.MSRP.URI()
	local.SessionID = msrp.NewSessionID()
	mcfg := msrp.Config{Local: local, ChunkSize: p.cfg.ChunkSize, Timeout: p.cfg.MSRPTimeout, TLS: p.cfg.TLS, Logger: p.log}
	// Registered before the INVITE leaves: a client answering
	// a=setup:active may connect as soon as it sends its 200.
	passive, err := msrp.NewSession(mcfg)
	if err != nil {
		return nil, &plugin.SessionError{Op: "msrp", Err: err}
	}
	if err := p.cfg.MSRP.Add(passive, nil); err != nil {
		passive.Close()
		return nil, &plugin.SessionError{Op: "msrp", Err: err}
	}
	offer, err := sdp.Build(sdp.Media{Path: []msrp.URI{local}, AcceptTypes: acceptTypes, Setup: sdp.SetupActPass})
	if err != nil {
		passive.Close()
		return nil, &plugin.SessionError{Op: "invite", Err: err}
	}

	req := p.newInvite(ruri, t, offer)
	ictx, cancel := context.WithTimeout(ctx, time.Duration(t.Policy.InviteTimeout))
	defer cancel()
	dlg, err := p.dialogs.WriteInvite(ictx, req)
	if err != nil {
		passive.Close()
		return nil, &plugin.SessionError{Op: "invite", Err: err}
	}
	if err := dlg.WaitAnswer(ictx, sipgo.AnswerOptions{}); err != nil {
		passive.Close()
		dlg.Close()
		var de *sipgo.ErrDialogResponse
		if errors.As(err, &de) {
			return nil, &plugin.SessionError{Op: "invite", Status: de.Res.StatusCode, Err: errors.New(de.Res.Reason)}
		}
		if ictx.Err() != nil && ctx.Err() == nil {
			err = fmt.Errorf("no answer within %v (cancelled): %w", time.Duration(t.Policy.InviteTimeout), err)
		}
		return nil, &plugin.SessionError{Op: "invite", Err: err}
	}
	s := &session{p: p, dlg: dlg, policy: t.Policy, aor: t.AOR}
	if err := dlg.Ack(ctx); err != nil {
		passive.Close()
		s.bye()
		return nil, &plugin.SessionError{Op: "ack", Err: err}
	}
	ans, err := sdp.Parse(dlg.InviteResponse.Body())
	if err != nil {
		passive.Close()
		s.bye()
		return nil, &plugin.SessionError{Op: "invite", Err: fmt.Errorf("answer: %w", err)}
	}
	s.answer = ans
	if !sdp.OffererConnects(ans) {
		// Only the client the answer names may bind the session: a
		// connection that claimed it first from another path (it knew
		// the session id from our offer) is dropped, having got nothing.
		if err := passive.Expect(ans.Path); err != nil {
			p.log.Warn("msrp session claimed by another peer", "aor", t.AOR, "err", err)
		}
		s.ms = passive // the client connects to our listener
		s.awaiting = true
		return s, nil
	}
	passive.Close()
	active, err := msrp.NewSession(mcfg)
	if err == nil {
		err = active.Connect(ctx, ans.Path)
		if err != nil {
			active.Close()
		}
	}
	if err != nil {
		s.bye()
		return nil, &plugin.SessionError{Op: "msrp", Err: err}
	}
	s.ms = active
	return s, nil
}

// newInvite builds the INVITE of step 2.
func (p *Pusher) newInvite(ruri sip.Uri, t plugin.Target, offer []byte) *sip.Request {
	req := sip.NewRequest(sip.INVITE, ruri)
	var routes []string
	if p.route != nil {
		routes = append(routes, p.route.String())
	}
	// A registration through edge proxies (RFC 3327 Path) is reached
	// through them, when we target the contact ourselves.
	if t.Policy.PushTarget != plugin.TargetAOR {
		routes = append(routes, t.Registration.Path...)
	}
	for _, r := range routes {
		if !strings.HasPrefix(r, "<") {
			r = "<" + r + ">"
		}
		req.AppendHeader(sip.NewHeader("Route", r))
	}
	from := &sip.FromHeader{Address: p.from, Params: sip.NewParams()}
	from.Params.Add("tag", sip.GenerateTagN(16))
	req.AppendHeader(from)
	var to sip.Uri
	if err := sip.ParseUri(t.AOR.String(), &to); err != nil {
		to = ruri
	}
	req.AppendHeader(&sip.ToHeader{Address: to, Params: sip.NewParams()})
	req.AppendHeader(sip.NewHeader("Subject", "deferred messages"))
	req.AppendHeader(sip.NewHeader("User-Agent", "deferpush"))
	req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	req.SetBody(offer)
	if p.route != nil {
		if tp, ok := p.route.UriParams.Get("transport"); ok && tp != "" {
			req.SetTransport(strings.ToUpper(tp))
		}
	}
	return req
}

// session is one push session: a confirmed dialog and its MSRP session.
type session struct {
	p      *Pusher
	dlg    *sipgo.DialogClientSession
	ms     *msrp.Session
	answer sdp.Media
	policy plugin.Policy
	aor    plugin.AOR
	// awaiting is set while a passive session waits for the client to
	// connect (its answer said a=setup:active).
	awaiting bool
}

var _ plugin.PushSession = (*session)(nil)

// Deliver sends one SEND per message (step 8), in order, keeping up to
// Config.Window of them in flight, and waits for each 200 (step 9) — and
// the success REPORT when the policy asks for one — before reporting it
// confirmed.
func (s *session) Deliver(ctx context.Context, msgs []*plugin.Message, done func(*plugin.Message, error)) error {
	// A BYE from the client ends the dialog: stop sending then.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := context.AfterFunc(s.dlg.Context(), func() { cancel(errClientBye) })
	defer stop()

	// A client that answered a=setup:active must connect within the MSRP
	// timeout; one that never does ends the session, its messages unsent.
	var started func()
	if s.awaiting {
		t := time.AfterFunc(s.p.cfg.MSRPTimeout, func() { cancel(errNoConnect) })
		defer t.Stop()
		started = func() {
			t.Stop()
			s.awaiting = false
		}
	}

	d := delivery{
		started: started,
		stall:   cancel,
		timeout: s.p.cfg.MSRPTimeout,
		ms:      s.ms,
		window:  s.p.cfg.Window,
		// A 200 to a SEND only says the next hop took it (RFC 4975
		// §7.1.2): when the client's path goes through a relay, only its
		// success REPORT confirms delivery, so ask for one whatever the
		// policy says.
		report: s.policy.SuccessReports || len(s.answer.Path) > 1,
		opts: encap.Options{
			AcceptTypes:        s.answer.AcceptTypes,
			AcceptWrappedTypes: s.answer.AcceptWrappedTypes,
			Preference:         preference(s.policy.Encapsulation),
			Fallback:           encap.Fallback(s.policy.NoEncapFallback),
		},
	}
	return d.run(ctx, msgs, done)
}

// delivery is what Deliver needs of a session, apart from its dialog.
type delivery struct {
	started func() // called after each message started; may be nil
	// stall ends the session when a message cannot start within timeout.
	stall   func(error)
	timeout time.Duration
	ms      *msrp.Session
	window  int  // messages in flight
	report  bool // ask for success REPORTs
	opts    encap.Options
}

// run is Deliver once ctx ends with the dialog.
//
// This goroutine encapsulates and starts the messages; a second one waits
// for them in the same order and calls done, so that a message's fate is
// reported as soon as it and those before it are known. Held and
// unencapsulable messages pass through it too, to keep done in order.
func (d *delivery) run(ctx context.Context, msgs []*plugin.Message, done func(*plugin.Message, error)) error {
	var (
		mu       sync.Mutex
		broken   error
		brokenCh = make(chan struct{})
	)
	breakOff := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if broken == nil {
			broken = err
			close(brokenCh)
		}
	}
	isBroken := func() bool {
		select {
		case <-brokenCh:
			return true
		default:
			return false
		}
	}

	// fate is a message on its way to done: wait is nil when err is
	// already its outcome.
	type fate struct {
		m    *plugin.Message
		wait func() error
		err  error
	}
	fates := make(chan fate, len(msgs))
	slots := make(chan struct{}, max(d.window, 1))
	reported := make(chan struct{})
	go func() {
		defer close(reported)
		charged := false
		for f := range fates {
			if f.wait != nil {
				f.err = outcome(ctx, f.wait(), &charged, breakOff)
				<-slots
			}
			done(f.m, f.err)
		}
	}()

	for _, m := range msgs {
		if isBroken() {
			fates <- fate{m: m, err: plugin.ErrNotSent}
			continue
		}
		pl, err := encap.Build(deferred(m), d.opts)
		switch {
		case errors.Is(err, encap.ErrHold):
			fates <- fate{m: m, err: plugin.ErrHeld}
			continue
		case err != nil:
			fates <- fate{m: m, err: fmt.Errorf("encapsulate: %w", err)}
			continue
		}
		select {
		case slots <- struct{}{}:
		case <-brokenCh:
			fates <- fate{m: m, err: plugin.ErrNotSent}
			continue
		case <-ctx.Done():
			breakOff(context.Cause(ctx))
			fates <- fate{m: m, err: plugin.ErrNotSent}
			continue
		}
		if isBroken() {
			<-slots
			fates <- fate{m: m, err: plugin.ErrNotSent}
			continue
		}
		// Start waits for window room and, on a session the client
		// connected to, for a connection: one lost without a BYE would
		// hold the push (and the mailbox's lock) for good.
		var watchdog *time.Timer
		if d.timeout > 0 && d.stall != nil {
			watchdog = time.AfterFunc(d.timeout, func() { d.stall(errStalled) })
		}
		wait, err := d.ms.Start(ctx, msrp.Message{
			// The outer Message-ID is the stored message's id, so a resend
			// after a failure reuses it (RFC 4975 §7.1.1) and a client can
			// spot a duplicate.
			ID:            m.ID,
			ContentType:   pl.ContentType,
			Body:          pl.Body,
			SuccessReport: d.report,
		})
		if watchdog != nil {
			watchdog.Stop()
		}
		if err != nil {
			// Nothing of it went out: the session is gone or ctx ended.
			<-slots
			if ctx.Err() != nil {
				err = context.Cause(ctx)
			}
			breakOff(err)
			fates <- fate{m: m, err: plugin.ErrNotSent}
			continue
		}
		if d.started != nil {
			d.started()
		}
		fates <- fate{m: m, wait: wait}
	}
	close(fates)
	<-reported

	mu.Lock()
	defer mu.Unlock()
	if broken != nil {
		return &plugin.SessionError{Op: "msrp", Err: broken}
	}
	return nil
}

// outcome maps what the wait of a sent message returned to what Deliver
// reports for it, and calls breakOff with the cause when the session can
// carry no more messages. The first message the session breaks on is
// charged an attempt (*charged is set then); the messages pipelined behind
// it are not: they go back unsent.
func outcome(ctx context.Context, err error, charged *bool, breakOff func(error)) error {
	var se *msrp.StatusError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &se) && se.Code != msrp.StatusTimeout && se.Code != msrp.StatusNoSession:
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
	errClientBye = errors.New("client ended the session (BYE)")
	errNoConnect = errors.New("client did not open its MSRP connection in time")
	errStalled   = errors.New("MSRP session stalled: a message could not start in time")
)

// Close sends the BYE (steps 10–13) unless the client ended the dialog,
// and closes the MSRP session.
func (s *session) Close(ctx context.Context) error {
	err := s.byeCtx(ctx)
	if cerr := s.ms.Close(); err == nil && cerr != nil && !errors.Is(cerr, msrp.ErrClosed) {
		err = cerr
	}
	return err
}

func (s *session) bye() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = s.byeCtx(ctx)
}

func (s *session) byeCtx(ctx context.Context) error {
	defer s.dlg.Close()
	if s.dlg.LoadState() == sip.DialogStateEnded {
		return nil
	}
	if err := s.dlg.Bye(ctx); err != nil {
		return &plugin.SessionError{Op: "bye", Err: err}
	}
	return nil
}

// deferred is what encap needs of a stored message.
func deferred(m *plugin.Message) encap.Deferred {
	if m.Kind == plugin.KindMSRPSession {
		return encap.Deferred{Kind: encap.KindMSRP, Stored: m.Raw, Head: m.Invite}
	}
	return encap.Deferred{Kind: encap.KindSIP, Stored: m.Raw}
}

// preference maps the policy's encapsulation to encap's preference, one
// to one: both name the media type tried first ("auto" aside).
func preference(e plugin.Encapsulation) encap.Preference {
	switch e {
	case plugin.EncapSIP:
		return encap.PreferSIP
	case plugin.EncapSIPFrag:
		return encap.PreferSIPFrag
	case plugin.EncapCPIM:
		return encap.PreferCPIM
	case plugin.EncapMSRP:
		return encap.PreferMSRP
	case plugin.EncapMultipart:
		return encap.PreferMultipart
	}
	return encap.PreferAuto
}
