package plugin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// ErrStoreDisabled reports that the operator policy has storing switched
// off: the message was not stored.
var ErrStoreDisabled = errors.New("plugin: storing deferred messages is disabled")

// errNotRunning reports an event that came before Run or after it ended.
var errNotRunning = errors.New("engine: not running")

// EngineConfig configures an Engine.
type EngineConfig struct {
	// Store keeps the messages and the shared settings. Required.
	Store Store
	// Pusher opens sessions to clients. Required.
	Pusher Pusher
	// MaxConcurrent bounds the pushes this instance runs at once; further
	// ones wait their turn. Zero means 256.
	MaxConcurrent int
	// LockTTL is the lease of a recipient's push lock and claim; it is
	// renewed every LockTTL/3 while the push runs, so a crashed instance's
	// messages come back after at most LockTTL. Zero means 30 s.
	LockTTL time.Duration
	// Batch is how many messages one claim takes (and the pipeline depth
	// the engine hands to a session at once). Zero means 64.
	Batch int
	// AckWindow is how many confirmed messages a push acks in one store
	// call (sooner when the session's batch ends or before a Fail): after
	// a crash at most that many confirmed messages are pushed again.
	// Zero means 16, the push session's window (push.Config.Window).
	AckWindow int
	// SweepInterval is how often the engine sweeps expired leases and
	// messages. Zero means 5 s.
	SweepInterval time.Duration
	// Observer receives push reports; nil means none.
	Observer Observer
	// Notifier sends senders the disposition notifications (RFC 5438)
	// they asked for; nil sends none.
	Notifier Notifier
	// Events is the log of registration events a proxy writes into the
	// store itself (events.go); nil reads none (the hooks call Registered
	// and Unregistered instead).
	Events Events
	// EventClaimIdle is how long an event read by an instance and not
	// acked waits before another takes it over. Zero means 30 s.
	EventClaimIdle time.Duration
	// Logger; nil discards.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Engine is the core of deferpush: it stores deferred messages under the
// operator policy and, when a recipient registers, pushes them (the
// seed's Figure 2). It is built from four components, each with the same
// shape (Run(ctx) until ctx ends, owning its goroutines):
//
//   - the policy in force (policy.go's policyInForce): the operator policy
//     this instance applies, kept current from the store and written
//     through by UpdatePolicy;
//   - the scheduler (scheduler.go): pushes in progress, one per recipient
//     and at most MaxConcurrent at once, and the backoff and retry timers
//     of recipients whose push failed;
//   - one push run (pushrun.go), started by the scheduler: claim (with
//     the lock) → open → deliver → ack or fail → release, with a lease renewer
//     (renewer.go) while it lasts;
//   - the sweeper (sweeper.go): requeues the messages of dead pushes and
//     drops expired ones;
//   - the start-up scan (startup.go): once, a push to every recipient
//     with stored messages and a live registration;
//   - the events reader (events.go), with EngineConfig.Events: the
//     registrations and unregistrations a proxy wrote into the store
//     itself, each kicking or cancelling a push.
//
// Run starts them in that order once the policy is known, and stops them
// in reverse: the events reader and the scheduler first (both as soon as
// Run's context ends: an event read and not yet acked is taken over by
// another instance), so that cancelled pushes put their messages back
// while the store is still in use.
type Engine struct {
	cfg     EngineConfig
	log     *slog.Logger
	policy  *policyInForce
	sched   *scheduler
	notices *notices // nil without a Notifier
	retry   *regRetry
}

// NewEngine returns an Engine; call Run to start it.
func NewEngine(cfg EngineConfig) (*Engine, error) {
	if cfg.Store == nil || cfg.Pusher == nil {
		return nil, errors.New("plugin: engine needs a Store and a Pusher")
	}
	if cfg.MaxConcurrent == 0 {
		cfg.MaxConcurrent = 256
	}
	if cfg.LockTTL == 0 {
		cfg.LockTTL = 30 * time.Second
	}
	if cfg.Batch == 0 {
		cfg.Batch = 64
	}
	if cfg.AckWindow <= 0 {
		cfg.AckWindow = 16
	}
	if cfg.SweepInterval == 0 {
		cfg.SweepInterval = 5 * time.Second
	}
	if cfg.EventClaimIdle <= 0 {
		cfg.EventClaimIdle = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	e := &Engine{cfg: cfg, log: cfg.Logger}
	e.retry = newRegRetry(cfg.Now, cfg.Logger, e.register)
	e.policy = &policyInForce{store: cfg.Store, log: cfg.Logger}
	e.sched = newScheduler(cfg.MaxConcurrent, cfg.Now, cfg.Logger, e.policy.current, e.push, e.pushed)
	if cfg.Notifier != nil {
		e.notices = newNotices(cfg.Notifier, cfg.Logger, cfg.Observer)
	}
	return e, nil
}

// Run starts the components and runs until ctx ends. Then it stops the
// scheduler (running pushes are cancelled; their unconfirmed messages go
// back to pending), the sweeper and the policy watch, in that order, and
// returns after all of them ended.
func (e *Engine) Run(ctx context.Context) error {
	// The store may be down at start: pushes wait until the policy is known.
	if err := e.policy.load(ctx); err != nil {
		return nil // ctx ended first
	}
	sw := &sweeper{store: e.cfg.Store, interval: e.cfg.SweepInterval, now: e.cfg.Now, log: e.log,
		kick:        func(ctx context.Context, aor AOR) error { _, err := e.kickRegistered(ctx, aor); return err },
		undelivered: func(m *Message) { e.notices.send(m, DispositionFailed) }}
	scan := &startupScan{store: e.cfg.Store, log: e.log, kick: e.kickRegistered}
	bg, stopBg := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Add(4)
	go func() { defer wg.Done(); _ = e.retry.Run(bg) }()
	go func() { defer wg.Done(); _ = e.policy.Run(bg) }()
	go func() { defer wg.Done(); _ = sw.Run(bg) }()
	go func() { defer wg.Done(); _ = scan.Run(bg) }()
	if e.notices != nil {
		wg.Go(func() { _ = e.notices.Run(bg) })
	}
	if cw, ok := e.cfg.Store.(CancelWatcher); ok {
		// An unregistration told to another instance (or recorded by a
		// proxy) ends the push this one runs to that contact.
		wg.Go(func() {
			_ = cw.WatchCancels(bg, func(aor AOR, contact string, at time.Time) {
				_ = e.sched.send(cancelEvent{aor: aor, contact: contact, before: at})
			})
		})
	}
	if e.cfg.Events != nil {
		events := &eventReader{events: e.cfg.Events, consumer: consumerName(), idle: e.cfg.EventClaimIdle,
			log: e.log, handle: e.registrationEvent, started: make(chan string, 4*eventsBatch)}
		wg.Go(func() { _ = events.Run(ctx) })
	}
	err := e.sched.Run(ctx)
	stopBg()
	wg.Wait()
	return err
}

// Policy returns the operator policy in force on this instance.
func (e *Engine) Policy(ctx context.Context) (Policy, error) {
	return e.policy.get(ctx)
}

// UpdatePolicy changes the operator policy: change edits a copy of the
// stored policy, which is validated, stored (every instance hears of it)
// and put in force here at once. who is recorded as the author. It
// returns the policy before and after. A *FieldError if the result is
// invalid, or the error change returned; nothing changes then.
func (e *Engine) UpdatePolicy(ctx context.Context, who string, change func(*Policy) error) (old, updated Policy, err error) {
	return e.policy.update(ctx, who, change)
}

// Store keeps a deferred message for its recipient, under the operator's
// limits. Errors: ErrStoreDisabled, a *LimitError (ErrMailboxFull,
// ErrTooLarge), a *FieldError; nothing is stored then.
func (e *Engine) Store(ctx context.Context, m *Message) error {
	p, err := e.Policy(ctx)
	if err != nil {
		return err
	}
	if !p.StoreEnabled {
		return ErrStoreDisabled
	}
	var stored bool
	stored, m.NotifyFailure = e.notices.requests(m)
	if err := e.cfg.Store.Append(ctx, m, p.Limits()); err != nil {
		return err
	}
	if stored {
		e.notices.send(m, DispositionStored)
	}
	// A push running for this recipient claims until the mailbox is
	// empty; should it have claimed for the last time already, it runs
	// once more.
	e.sched.nudge(m.Recipient)
	return nil
}

// Registered handles a registration event: it records the contact and
// asks the scheduler to push, unless the recipient is backing off after a
// failed push. It returns once the event is recorded, not when the push
// ends. A registration whose Expires is not in the future is an
// unregistration. One that the proxy handled before the last
// unregistration of the same contact (r.At, see Settings.SetContact)
// changes nothing: the proxy posted the two out of order.
func (e *Engine) Registered(ctx context.Context, r Registration) error {
	now := e.cfg.Now()
	if !r.Expires.After(now) {
		return e.Unregistered(ctx, Unregistration{AOR: r.AOR, Contact: r.Contact, At: r.At})
	}
	err := e.register(ctx, r)
	if errors.Is(err, ErrSuperseded) {
		e.log.Debug("registration superseded", "aor", r.AOR, "contact", r.Contact)
		return nil
	}
	var se *storeError
	if errors.As(err, &se) {
		// Recorded and pushed once the store answers again (regRetry).
		e.retry.keep(r)
	}
	return err
}

// storeError is a store failure recording a registration.
type storeError struct{ err error }

func (e *storeError) Error() string { return e.err.Error() }
func (e *storeError) Unwrap() error { return e.err }

// register records r and pushes to it. A store failure is a *storeError.
func (e *Engine) register(ctx context.Context, r Registration) error {
	if err := e.cfg.Store.SetContact(ctx, r); errors.Is(err, ErrSuperseded) {
		return err
	} else if errors.Is(err, ErrInvalid) {
		return fmt.Errorf("record contact of %s: %w", r.AOR, err)
	} else if err != nil {
		return &storeError{fmt.Errorf("record contact of %s: %w", r.AOR, err)}
	}
	if err := e.kick(ctx, r, e.cfg.Now(), false); err != nil {
		// Reading the settings failed: recorded, but not pushed yet.
		return &storeError{err}
	}
	return nil
}

// PushNow pushes aor's messages to its last known contact, ignoring any
// backoff. ErrNotFound if no live registration is known.
func (e *Engine) PushNow(ctx context.Context, aor AOR) error {
	r, err := e.cfg.Store.Contact(ctx, aor)
	if err != nil {
		return err
	}
	return e.kick(ctx, r, e.cfg.Now(), true)
}

// Unregistered cancels a push in progress to contact (any contact of aor
// when contact is empty) and its retry, and forgets the registration, so
// that nothing (a retry, the sweeper, an operator's push now) is sent to
// a contact that may belong to another device by now. Unconfirmed
// messages stay stored. One that the proxy handled before the last
// registration of the contact (u.At, see Settings.DeleteContact) changes
// nothing, and cancels nothing.
func (e *Engine) Unregistered(ctx context.Context, u Unregistration) error {
	e.retry.forget(u.AOR, u.Contact)
	if err := e.cfg.Store.DeleteContact(ctx, u.AOR, u.Contact, u.At); errors.Is(err, ErrSuperseded) {
		e.log.Debug("unregistration superseded", "aor", u.AOR, "contact", u.Contact)
		return nil
	} else if err != nil {
		return fmt.Errorf("forget contact of %s: %w", u.AOR, err)
	}
	return e.sched.cancel(u.AOR, u.Contact)
}

// Running reports whether Run has started the components (it waits for
// the store to give the policy first) and not yet stopped them.
func (e *Engine) Running() bool { return e.sched.running.Load() }

// Active returns how many pushes are queued or running in this instance.
func (e *Engine) Active() int { return e.sched.active() }

// kickRegistered pushes to aor if it has a live registration (the
// sweeper's follow-up of requeued messages, the start-up scan) and
// reports whether it asked for a push.
func (e *Engine) kickRegistered(ctx context.Context, aor AOR) (bool, error) {
	r, u, err := e.cfg.Store.ContactAndSettings(ctx, aor)
	if errors.Is(err, ErrNotFound) {
		return false, nil // not registered: the next registration pushes
	}
	if err != nil {
		return false, err
	}
	return true, e.kickRead(ctx, r, e.cfg.Now(), false, kickRead{settings: u, stored: true})
}

// kick asks the scheduler for a push to r unless the effective policy
// says not to push to this user: the decision is taken here, so that a
// user who is not pushed to never counts as a push in progress. The push
// checks again when it starts (the policy may change meanwhile), with the
// settings read here when it starts at once (scheduler.go, settingsFresh).
// The stored registration comes in the same round trip: when it is r's
// binding, what an earlier push learnt of the client (PagerOnly), which
// the push needs under delivery auto, is taken from it here rather than
// read again by the push. force ignores and clears a backoff.
func (e *Engine) kick(ctx context.Context, r Registration, at time.Time, force bool) error {
	stored, u, err := e.cfg.Store.ContactAndSettings(ctx, r.AOR)
	found := err == nil
	if errors.Is(err, ErrNotFound) {
		// None stored, or it expired: the settings alone.
		u, err = e.cfg.Store.UserSettings(ctx, r.AOR)
	}
	if err != nil {
		return fmt.Errorf("settings of %s: %w", r.AOR, err)
	}
	k := kickRead{settings: u}
	if found && stored.Binding() == r.Binding() {
		r.PagerOnly = r.PagerOnly || stored.PagerOnly
		k.stored = true
	}
	return e.kickRead(ctx, r, at, force, k)
}

// kickRead is kick with the user's settings (and maybe the stored
// registration, k.stored) read already.
func (e *Engine) kickRead(ctx context.Context, r Registration, at time.Time, force bool, k kickRead) error {
	p, err := e.Policy(ctx)
	if err != nil {
		return err
	}
	if mode := p.Push(k.settings); mode != PushOn {
		e.log.Debug("push not allowed", "aor", r.AOR, "mode", mode)
		return nil
	}
	return e.sched.kick(r, at, force, &k)
}

// pushed reports a push that ended to the observer.
func (e *Engine) pushed(rep PushReport) {
	if e.cfg.Observer != nil && rep.Outcome != OutcomeNone {
		e.cfg.Observer.PushDone(rep)
	}
}

// every runs fn every d until ctx ends.
func every(ctx context.Context, d time.Duration, fn func(context.Context)) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fn(ctx)
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
