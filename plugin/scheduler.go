package plugin

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"
)

// scheduler decides when pushes run: at most one per recipient, at most
// MaxConcurrent at once, again when something new arrives while one runs,
// and after a backoff when one failed. Its state belongs to the goroutine
// of Run; the engine's entry points send it events.
type scheduler struct {
	sem    chan struct{} // a slot per push allowed to run at once
	now    func() time.Time
	log    *slog.Logger
	policy func() Policy
	// push runs one push (pushrun.go); pushed reports its end.
	push   func(ctx context.Context, reg Registration, at time.Time, k *kickRead) PushReport
	pushed func(PushReport)

	events  chan event
	running atomic.Bool
	done    chan struct{} // closed when Run returns
	count   atomic.Int64  // len(runs), for Active

	// Owned by Run's goroutine.
	runs    map[AOR]*schedRun
	backoff map[AOR]backoffState
	retries map[AOR]*retryTimer
}

// schedRun is a recipient with a push queued or running.
type schedRun struct {
	reg Registration // the registration to push to next
	at  time.Time    // when the event that asked for it arrived
	// read is what the kick that queued the run read, handed to its
	// first push only (see settingsFresh).
	read   *kickRead
	cancel context.CancelFunc
	again  bool // something arrived while it ran: run once more
	// onStart are the kicks' started (kickEvent) waiting for the run to
	// take a slot.
	onStart []func()
	running bool         // it has taken its slot (scheduler goroutine only)
	pushing Registration // the registration of the push running now
}

// sameDeviceNewFlow reports whether reg is the device of old (the same
// +sip.instance, RFC 5626) at a new contact or from a new source.
func sameDeviceNewFlow(old, reg Registration) bool {
	return reg.Instance != "" && reg.Instance == old.Instance &&
		(reg.Contact != old.Contact || reg.Received != "" && reg.Received != old.Received)
}

type backoffState struct {
	failures int
	until    time.Time
	// reg is the registration the failed push went to; transport says
	// the transport broke it (a reset, no answer) rather than the
	// client refusing (see brokenByTransport).
	reg       Registration
	transport bool
}

// waits reports whether a registration r arriving during the backoff
// waits for it. It does not when r is a new contact or flow (another
// binding, or the same one registering from another source: a new
// connection), nor when the transport broke the failed push: a client
// that lost its connection and registers again is pushed at once. A
// client's refusal (486, 603) keeps the backoff.
func (b backoffState) waits(r Registration) bool {
	return !b.transport && r.Binding() == b.reg.Binding() && r.Received == b.reg.Received
}

// brokenByTransport reports whether a failed push ended for want of a
// working path to the client — a reset or closed connection, no answer in
// time (SIP 408, a local MSRP 408, a timed-out INVITE), the proxy unable
// to reach it (477) or a server error — rather than a refusal by the
// client (a 4xx or 6xx final answer to the INVITE, 486 Busy Here or 603
// Decline among them).
func brokenByTransport(err error) bool {
	var se *SessionError
	if !errors.As(err, &se) {
		return err != nil
	}
	switch s := se.Status; {
	case s == 0, s == 408, s == 477, s >= 500 && s < 600:
		return true
	}
	return false
}

type retryTimer struct {
	t   *time.Timer
	reg Registration
}

// Events the scheduler's goroutine handles.
type (
	event     any
	kickEvent struct {
		reg   Registration
		at    time.Time
		force bool      // ignore and clear the backoff (an operator's push now)
		read  *kickRead // what the kick read
		// started, when set, is called once the push it asked for has
		// started (its slot taken: it takes the lease at once), or
		// merged into one that has, or turned into a timed retry; never
		// for one that is cancelled or whose instance stops before.
		started func()
	}
	cancelEvent struct {
		aor     AOR
		contact string    // empty: any contact
		before  time.Time // not zero: a push to a registration newer than this goes on
	}
	nudgeEvent   AOR // a message was stored
	startedEvent struct {
		aor AOR
		r   *schedRun // the run that took a slot
	}
	endedEvent struct {
		aor AOR
		reg Registration
		rep PushReport
	}
	retryEvent struct {
		aor AOR
		t   *retryTimer
	}
)

func newScheduler(maxConcurrent int, now func() time.Time, log *slog.Logger, policy func() Policy,
	push func(context.Context, Registration, time.Time, *kickRead) PushReport, pushed func(PushReport)) *scheduler {
	return &scheduler{
		sem: make(chan struct{}, maxConcurrent), now: now, log: log, policy: policy,
		push: push, pushed: pushed,
		events:  make(chan event, 1024),
		done:    make(chan struct{}),
		runs:    map[AOR]*schedRun{},
		backoff: map[AOR]backoffState{},
		retries: map[AOR]*retryTimer{},
	}
}

// Run handles events until ctx ends; then it cancels the running pushes,
// stops the retry timers and returns once every push has ended.
func (s *scheduler) Run(ctx context.Context) error {
	s.running.Store(true)
	defer close(s.done)
	defer s.running.Store(false)
	for {
		select {
		case <-ctx.Done():
			s.stop(ctx)
			return nil
		case ev := <-s.events:
			s.handle(ctx, ev)
		}
	}
}

// send hands an event to Run's goroutine. Before Run starts (the engine
// waits for the policy) events queue up to the channel's capacity; after
// Run ended, or with the queue full before it started, errNotRunning.
func (s *scheduler) send(ev event) error {
	if !s.running.Load() {
		select {
		case <-s.done:
			return errNotRunning
		case s.events <- ev:
			return nil
		default:
			return errNotRunning
		}
	}
	select {
	case s.events <- ev:
		return nil
	case <-s.done:
		return errNotRunning
	}
}

// kickRead is what a kick read to decide a push, which the push takes
// when it starts at once rather than read it again (settingsFresh).
type kickRead struct {
	settings UserSettings // the user's settings
	// stored says the push's registration is the one the store holds
	// (its binding), read with the settings: PagerOnly included.
	stored bool
}

// kick asks for a push to r; k is what the caller read to decide it,
// nil when it read nothing (the push reads with its first claim).
func (s *scheduler) kick(r Registration, at time.Time, force bool, k *kickRead) error {
	return s.send(kickEvent{reg: r, at: at, force: force, read: k})
}

// kickStarted is kick (no force, nothing read) that calls started, when
// not nil, once the push has started (kickEvent.started).
func (s *scheduler) kickStarted(r Registration, at time.Time, started func()) error {
	return s.send(kickEvent{reg: r, at: at, started: started})
}

// cancel ends a push to contact of aor (any contact when empty) and its
// retry.
func (s *scheduler) cancel(aor AOR, contact string) error {
	return s.send(cancelEvent{aor: aor, contact: contact})
}

// nudge tells a push to aor in progress that a message arrived.
func (s *scheduler) nudge(aor AOR) {
	_ = s.send(nudgeEvent(aor))
}

// active is the number of recipients with a push queued or running.
func (s *scheduler) active() int { return int(s.count.Load()) }

func (s *scheduler) handle(ctx context.Context, ev event) {
	switch ev := ev.(type) {
	case kickEvent:
		s.onKick(ctx, ev)
	case cancelEvent:
		// The push to the contact removed ends, and its retry; one queued
		// to run next for another contact (a newer registration) stays.
		if r, ok := s.runs[ev.aor]; ok && (ev.contact == "" || r.pushing.Contact == ev.contact) && !newer(r.reg, ev.before) {
			if ev.contact == "" || r.reg.Contact == ev.contact {
				r.again = false
			}
			r.cancel()
		}
		if rt, ok := s.retries[ev.aor]; ok && (ev.contact == "" || rt.reg.Contact == ev.contact) && !newer(rt.reg, ev.before) {
			s.stopRetry(ev.aor)
		}
	case nudgeEvent:
		if r, ok := s.runs[AOR(ev)]; ok {
			r.again = true
		}
	case startedEvent:
		if r, ok := s.runs[ev.aor]; ok && r == ev.r {
			r.running = true
			for _, f := range r.onStart {
				f()
			}
			r.onStart = nil
		}
	case endedEvent:
		s.onEnded(ctx, ev)
	case retryEvent:
		if s.retries[ev.aor] != ev.t {
			return // stopped or replaced after it fired
		}
		delete(s.retries, ev.aor)
		s.queue(ctx, ev.t.reg, s.now(), nil, nil)
	}
}

// newer reports whether r was registered after t, both known.
func newer(r Registration, t time.Time) bool {
	return !t.IsZero() && !r.At.IsZero() && r.At.After(t)
}

func (s *scheduler) onKick(ctx context.Context, ev kickEvent) {
	aor := ev.reg.AOR
	if ev.force {
		delete(s.backoff, aor)
	} else if b, ok := s.backoff[aor]; ok && ev.at.Before(b.until) {
		if b.waits(ev.reg) {
			s.log.Debug("push backing off", "aor", aor, "until", b.until)
			s.retryTo(ev.reg)
			if ev.started != nil {
				ev.started()
			}
			return
		}
		s.log.Info("push at once despite the backoff", "aor", aor, "contact", ev.reg.Contact,
			"broken_by_transport", b.transport, "until", b.until)
	}
	s.queue(ctx, ev.reg, ev.at, ev.read, ev.started)
}

// queue starts a push to reg, or has the one running run once more. k,
// when not nil, is what the kick just read.
func (s *scheduler) queue(ctx context.Context, reg Registration, at time.Time, k *kickRead, started func()) {
	if r, ok := s.runs[reg.AOR]; ok {
		r.again = true
		if r.running && sameDeviceNewFlow(r.pushing, reg) {
			// The device the push runs to registered again from a new
			// flow (a network change): the old one is likely dead, and
			// the push would wait out its timeouts. It ends (its
			// unconfirmed messages stay), and runs once more to the new.
			s.log.Info("push moves to the device's new flow", "aor", reg.AOR, "contact", reg.Contact, "from", r.pushing.Contact)
			r.cancel()
		}
		r.reg = reg
		switch {
		case started == nil:
		case r.running:
			// Its lease is taken: an instance that dies holding it is
			// found by the recovery sweep, which pushes again.
			started()
		default:
			r.onStart = append(r.onStart, started)
		}
		return
	}
	r := &schedRun{reg: reg, at: at, read: k}
	if started != nil {
		r.onStart = append(r.onStart, started)
	}
	s.runs[reg.AOR] = r
	s.count.Add(1)
	s.start(ctx, r)
}

// settingsFresh is how old the settings a kick read may be when its push
// starts for the push to take them rather than read them again: a push
// that starts at once after the registration spares Redis the second
// read of the same key; one that waited for a slot (MaxConcurrent) reads
// them again, as the operator may have changed them meanwhile.
const settingsFresh = 100 * time.Millisecond

// start runs one push for r in its own goroutine, once a slot is free.
func (s *scheduler) start(ctx context.Context, r *schedRun) {
	rctx, cancel := context.WithCancel(ctx)
	r.cancel, r.again, r.running, r.pushing = cancel, false, false, r.reg
	reg, at, k := r.reg, r.at, r.read
	r.read = nil // a run once more reads them again
	go func() {
		var rep PushReport
		select {
		case s.sem <- struct{}{}:
			s.events <- startedEvent{aor: reg.AOR, r: r}
			if k != nil && s.now().Sub(at) > settingsFresh {
				k = nil // it waited for a slot: read them again
			}
			rep = s.push(rctx, reg, at, k)
			<-s.sem
		case <-rctx.Done():
		}
		cancel()
		// Run receives until every push it started has ended.
		s.events <- endedEvent{aor: reg.AOR, reg: reg, rep: rep}
	}()
}

func (s *scheduler) onEnded(ctx context.Context, ev endedEvent) {
	r := s.runs[ev.aor]
	s.after(ctx, ev.aor, ev.reg, ev.rep)
	// What arrived meanwhile (a registration, a message) runs the push
	// again, unless the client refused this one: then it waits for the
	// backoff like a registration that comes later.
	if b, ok := s.backoff[ev.aor]; ok && r.again && b.waits(r.reg) && s.now().Before(b.until) {
		s.log.Debug("push backing off", "aor", ev.aor, "until", b.until)
		r.again = false
		s.retryTo(r.reg)
	}
	if r.again && ctx.Err() == nil {
		r.at = s.now()
		s.start(ctx, r)
		return
	}
	delete(s.runs, ev.aor)
	s.count.Add(-1)
}

// after records how a push ended: a failure backs off and schedules a
// retry while the registration lasts.
func (s *scheduler) after(ctx context.Context, aor AOR, reg Registration, rep PushReport) {
	if rep.Outcome == OutcomeNone {
		return // nothing to push
	}
	// Reported last: an observer that reacts (a test registering again)
	// finds the backoff already recorded.
	defer s.pushed(rep)
	log := s.log.With("aor", aor, "outcome", rep.Outcome, "delivered", rep.Delivered,
		"failed", rep.Failed, "dead_lettered", rep.DeadLettered, "duration", rep.Duration, "pager", rep.Pager)
	if rep.Err != nil {
		log = log.With("err", rep.Err)
	}
	// A push cancelled (unregistration, shutdown) is not retried: the
	// contact may be gone.
	if rep.Outcome == OutcomeCancelled || ctx.Err() != nil {
		log.Info("push cancelled")
		return
	}
	// A push that failed, or in which the client refused messages, is
	// tried again after a backoff; refused messages count attempts until
	// they are dead-lettered. Held messages wait for another client.
	if rep.Outcome != OutcomeFailed && rep.Failed == rep.DeadLettered {
		delete(s.backoff, aor)
		log.Info("push done")
		return
	}
	p := s.policy()
	b := s.backoff[aor]
	b.failures++
	d := time.Duration(p.RetryBackoff) << min(b.failures-1, 6)
	b.until = s.now().Add(d)
	b.reg, b.transport = reg, rep.Outcome == OutcomeFailed && brokenByTransport(rep.Err)
	s.backoff[aor] = b
	if b.failures >= p.MaxAttempts || d <= 0 || !reg.Expires.After(b.until) {
		// No timed retry: max_attempts pushes in a row failed, or the
		// registration ends first. The next registration tries again
		// (after the backoff, unless it is a new contact).
		log.Warn("push incomplete", "retry", "at the next registration", "backoff", d, "failures", b.failures)
		return
	}
	log.Warn("push incomplete", "retry_in", d, "failures", b.failures)
	s.stopRetry(aor)
	rt := &retryTimer{reg: reg}
	rt.t = time.AfterFunc(d, func() {
		select {
		case s.events <- retryEvent{aor: aor, t: rt}:
		case <-s.done:
		}
	})
	s.retries[aor] = rt
}

// retryTo points the retry pending for reg's recipient, if any, at reg:
// a registration the backoff holds back (the same device, from the same
// source) is the newest, and the retry goes to it, not to the contact
// the failed push used, which the push would find replaced (it pushes
// only to the registration recorded now).
func (s *scheduler) retryTo(reg Registration) {
	if rt, ok := s.retries[reg.AOR]; ok {
		rt.reg = reg
	}
}

func (s *scheduler) stopRetry(aor AOR) {
	if rt, ok := s.retries[aor]; ok {
		rt.t.Stop()
		delete(s.retries, aor)
	}
}

// stop cancels every push and waits for them to end; retries are dropped.
// ctx has ended.
func (s *scheduler) stop(ctx context.Context) {
	for aor := range s.retries {
		s.stopRetry(aor)
	}
	for _, r := range s.runs {
		r.again = false
		r.cancel()
	}
	for len(s.runs) > 0 {
		if ev, ok := (<-s.events).(endedEvent); ok {
			s.after(ctx, ev.aor, ev.reg, ev.rep)
			delete(s.runs, ev.aor)
			s.count.Add(-1)
		}
	}
}
