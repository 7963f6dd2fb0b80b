package plugin

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// ErrStoreDisabled reports that the operator policy has storing switched
// off: the message was not stored.
var ErrStoreDisabled = errors.New("plugin: storing deferred messages is disabled")

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
	// SweepInterval is how often the engine sweeps expired leases and
	// messages. Zero means 5 s.
	SweepInterval time.Duration
	// Observer receives push reports; nil means none.
	Observer Observer
	// Logger; nil discards.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Engine decides when to push, and runs pushes: on a registration it checks
// the effective policy, takes the recipient's push lock, claims messages,
// hands them to the Pusher, acks each confirmed message and releases the
// rest. It also stores deferred messages under the operator's limits.
type Engine struct {
	cfg    EngineConfig
	log    *slog.Logger
	sem    chan struct{}
	policy atomic.Pointer[Policy]

	mu      sync.Mutex
	active  map[AOR]*pushRun     // pushes queued or running in this instance
	backoff map[AOR]backoffState // recipients whose last push failed
	wg      sync.WaitGroup       // push goroutines and retry timers
	ctx     context.Context      // Run's context; nil before Run
	retry   map[AOR]*time.Timer
}

type pushRun struct {
	contact string
	cancel  context.CancelFunc
	again   bool // a new trigger arrived while running: run once more
	reg     Registration
	at      time.Time // when the triggering event arrived
}

type backoffState struct {
	failures int
	until    time.Time
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
	if cfg.SweepInterval == 0 {
		cfg.SweepInterval = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Engine{
		cfg:     cfg,
		log:     cfg.Logger,
		sem:     make(chan struct{}, cfg.MaxConcurrent),
		active:  map[AOR]*pushRun{},
		backoff: map[AOR]backoffState{},
		retry:   map[AOR]*time.Timer{},
	}, nil
}

// Run watches the policy, sweeps expired leases and messages, and lets
// pushes run, until ctx ends. Then it cancels running pushes (their
// unconfirmed messages go back to pending) and returns after they ended.
func (e *Engine) Run(ctx context.Context) error {
	// The store may be down at start: keep trying, pushes wait for it.
	for {
		p, err := e.cfg.Store.Policy(ctx)
		if err == nil {
			e.policy.Store(&p)
			break
		}
		e.log.Warn("engine cannot read the policy; retrying", "err", err)
		sleepCtx(ctx, time.Second)
		if ctx.Err() != nil {
			return nil
		}
	}
	e.mu.Lock()
	e.ctx = ctx
	e.mu.Unlock()

	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			err := e.cfg.Store.WatchPolicy(ctx, func(p Policy) {
				old := e.policy.Swap(&p)
				if old == nil || *old != p {
					e.log.Info("policy in force", "push_enabled", p.PushEnabled, "store_enabled", p.StoreEnabled)
				}
			})
			if ctx.Err() == nil {
				e.log.Warn("policy watch ended; retrying", "err", err)
				sleepCtx(ctx, time.Second)
			}
		}
	}()
	go func() {
		defer wg.Done()
		t := time.NewTicker(e.cfg.SweepInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				e.sweep(ctx)
			}
		}
	}()
	<-ctx.Done()
	wg.Wait()
	e.mu.Lock()
	for aor, t := range e.retry {
		e.stopRetry(aor, t)
	}
	e.mu.Unlock()
	e.wg.Wait()
	return nil
}

// Policy returns the operator policy in force on this instance.
func (e *Engine) Policy(ctx context.Context) (Policy, error) {
	if p := e.policy.Load(); p != nil {
		return *p, nil
	}
	return e.cfg.Store.Policy(ctx)
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
	if err := e.cfg.Store.Append(ctx, m, p.Limits()); err != nil {
		return err
	}
	// A push running for this recipient in this instance claims until the
	// mailbox is empty; should it have claimed for the last time already,
	// it runs once more.
	e.mu.Lock()
	if run, ok := e.active[m.Recipient]; ok {
		run.again = true
	}
	e.mu.Unlock()
	return nil
}

// Registered handles a registration event: it records the contact and,
// when the effective policy allows, starts a push in the background. It
// returns once the decision is made, not when the push ends. A
// registration whose Expires is not in the future is an unregistration.
func (e *Engine) Registered(ctx context.Context, r Registration) error {
	now := e.cfg.Now()
	if !r.Expires.After(now) {
		return e.Unregistered(ctx, r.AOR, r.Contact)
	}
	if err := e.cfg.Store.SetContact(ctx, r); err != nil {
		return fmt.Errorf("record contact of %s: %w", r.AOR, err)
	}
	e.mu.Lock()
	if b, ok := e.backoff[r.AOR]; ok && now.Before(b.until) {
		e.mu.Unlock()
		e.log.Debug("push backing off", "aor", r.AOR, "until", b.until)
		return nil
	}
	e.mu.Unlock()
	return e.trigger(ctx, r, now)
}

// PushNow pushes aor's messages to its last known contact, ignoring any
// backoff. ErrNotFound if no live registration is known.
func (e *Engine) PushNow(ctx context.Context, aor AOR) error {
	r, err := e.cfg.Store.Contact(ctx, aor)
	if err != nil {
		return err
	}
	e.mu.Lock()
	delete(e.backoff, aor)
	e.mu.Unlock()
	return e.trigger(ctx, r, e.cfg.Now())
}

// Unregistered cancels a push in progress to contact (any contact of aor
// when contact is empty); its unconfirmed messages stay stored.
func (e *Engine) Unregistered(ctx context.Context, aor AOR, contact string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if run, ok := e.active[aor]; ok && (contact == "" || run.contact == contact) {
		run.again = false
		if run.cancel != nil {
			run.cancel()
		}
	}
	if t, ok := e.retry[aor]; ok {
		e.stopRetry(aor, t)
	}
	return nil
}

// stopRetry cancels a scheduled retry; e.mu is held. A timer stopped
// before it fired never runs its func, so its WaitGroup count is released
// here.
func (e *Engine) stopRetry(aor AOR, t *time.Timer) {
	if t.Stop() {
		e.wg.Done()
	}
	delete(e.retry, aor)
}

// Active returns how many pushes are queued or running in this instance.
func (e *Engine) Active() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.active)
}

// trigger starts a push for r unless the policy says no, or one is
// already queued or running here (then that one runs once more).
func (e *Engine) trigger(ctx context.Context, r Registration, at time.Time) error {
	p, err := e.Policy(ctx)
	if err != nil {
		return err
	}
	u, err := e.cfg.Store.UserSettings(ctx, r.AOR)
	if err != nil {
		return fmt.Errorf("settings of %s: %w", r.AOR, err)
	}
	if mode := p.Push(u); mode != PushOn {
		e.log.Debug("push not allowed", "aor", r.AOR, "mode", mode)
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ctx == nil || e.ctx.Err() != nil {
		return errors.New("engine: not running")
	}
	if run, ok := e.active[r.AOR]; ok {
		run.again = true
		run.reg = r
		return nil
	}
	run := &pushRun{contact: r.Contact, reg: r, at: at}
	e.active[r.AOR] = run
	e.wg.Add(1)
	go e.runPushes(r.AOR, run)
	return nil
}

// runPushes runs pushes for aor until no new trigger arrived meanwhile.
func (e *Engine) runPushes(aor AOR, run *pushRun) {
	defer e.wg.Done()
	for {
		select {
		case e.sem <- struct{}{}:
		case <-e.ctx.Done():
			e.mu.Lock()
			delete(e.active, aor)
			e.mu.Unlock()
			return
		}
		ctx, cancel := context.WithCancel(e.ctx)
		e.mu.Lock()
		run.cancel = cancel
		run.again = false
		reg, at := run.reg, run.at
		run.contact = reg.Contact
		e.mu.Unlock()

		rep := e.push(ctx, reg, at)
		cancel()
		<-e.sem
		e.after(aor, reg, rep)

		e.mu.Lock()
		if !run.again || e.ctx.Err() != nil {
			delete(e.active, aor)
			e.mu.Unlock()
			return
		}
		run.at = e.cfg.Now()
		e.mu.Unlock()
	}
}

// after records the outcome of a push: a failure backs off and schedules
// a retry while the registration lasts.
func (e *Engine) after(aor AOR, reg Registration, rep PushReport) {
	if rep.Outcome == "" {
		return // nothing to push
	}
	if e.cfg.Observer != nil {
		e.cfg.Observer.PushDone(rep)
	}
	log := e.log.With("aor", aor, "outcome", rep.Outcome, "delivered", rep.Delivered,
		"failed", rep.Failed, "dead_lettered", rep.DeadLettered, "duration", rep.Duration)
	if rep.Err != nil {
		log = log.With("err", rep.Err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	// A push cancelled (unregistration, shutdown) is not retried: Run may
	// already have stopped the retry timers, and the contact may be gone.
	if rep.Outcome == "cancelled" || e.ctx.Err() != nil {
		log.Info("push cancelled")
		return
	}
	// A push that failed, or in which the client refused messages, is
	// tried again after a backoff; refused messages count attempts until
	// they are dead-lettered. Held messages wait for another client.
	if rep.Outcome != "failed" && rep.Failed == rep.DeadLettered {
		delete(e.backoff, aor)
		log.Info("push done")
		return
	}
	p := e.policy.Load()
	b := e.backoff[aor]
	b.failures++
	d := time.Duration(p.RetryBackoff) << min(b.failures-1, 6)
	b.until = e.cfg.Now().Add(d)
	e.backoff[aor] = b
	log.Warn("push incomplete", "retry_in", d, "failures", b.failures)
	if b.failures >= p.MaxAttempts || d <= 0 || !reg.Expires.After(b.until) {
		return // the next registration tries again
	}
	if t, ok := e.retry[aor]; ok {
		e.stopRetry(aor, t)
	}
	e.wg.Add(1)
	var t *time.Timer
	t = time.AfterFunc(d, func() {
		defer e.wg.Done()
		e.mu.Lock()
		if e.retry[aor] == t {
			delete(e.retry, aor)
		}
		ctx := e.ctx
		e.mu.Unlock()
		if ctx.Err() != nil {
			return
		}
		if err := e.trigger(ctx, reg, e.cfg.Now()); err != nil {
			e.log.Warn("push retry", "aor", aor, "err", err)
		}
	})
	e.retry[aor] = t
}

// push is one push run for reg: lock, claim, open, deliver, ack, unlock.
func (e *Engine) push(ctx context.Context, reg Registration, at time.Time) (rep PushReport) {
	aor := reg.AOR
	start := e.cfg.Now()
	rep.AOR = aor
	p, err := e.Policy(ctx)
	if err != nil {
		return e.ended(rep, ctx, err)
	}
	u, err := e.cfg.Store.UserSettings(ctx, aor)
	if err != nil {
		return e.ended(rep, ctx, err)
	}
	if p.Push(u) != PushOn {
		return PushReport{}
	}
	counts, err := e.cfg.Store.Count(ctx, aor)
	if err != nil {
		return e.ended(rep, ctx, err)
	}
	if counts.Pending == 0 && counts.InFlight == 0 {
		return PushReport{}
	}

	token := newToken()
	ok, err := e.cfg.Store.Lock(ctx, aor, token, e.cfg.LockTTL)
	if err != nil {
		return e.ended(rep, ctx, fmt.Errorf("lock: %w", err))
	}
	if !ok {
		// Another push (here or on another instance) owns the recipient;
		// it delivers what is pending, new messages included.
		e.log.Debug("push lock held elsewhere", "aor", aor)
		return PushReport{}
	}
	// The lock is renewed while the push runs; losing it stops the push.
	// A renewal the store does not answer (a Redis restart) is tried again
	// at the next tick while the lease has more than half its time left,
	// so that a short outage does not throw away a session whose client
	// goes on confirming messages.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	renewDone := make(chan struct{})
	go func() {
		defer close(renewDone)
		t := time.NewTicker(e.cfg.LockTTL / 3)
		defer t.Stop()
		renewed := start
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				err := e.cfg.Store.RenewLock(ctx, aor, token, e.cfg.LockTTL)
				switch {
				case err == nil:
					renewed = e.cfg.Now()
				case ctx.Err() != nil:
					return
				case errors.Is(err, ErrLeaseLost) || e.cfg.Now().Sub(renewed) > e.cfg.LockTTL/2:
					cancel(fmt.Errorf("renew lock: %w", err))
					return
				default:
					e.log.Warn("renew lock; trying again", "aor", aor, "err", err)
				}
			}
		}
	}()
	defer func() {
		cancel(nil)
		<-renewDone
		// Unconfirmed messages go back to pending, in order. Unlock must
		// run even when ctx was cancelled.
		uctx, ucancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer ucancel()
		if err := e.cfg.Store.Unlock(uctx, aor, token); err != nil && !errors.Is(err, ErrLeaseLost) {
			e.log.Error("unlock", "aor", aor, "err", err)
		}
		rep.Duration = e.cfg.Now().Sub(start)
	}()

	target := Target{AOR: aor, URI: reg.Contact, Registration: reg, Policy: p}
	if p.PushTarget == TargetAOR || target.URI == "" {
		target.URI = string(aor)
	}
	limit := p.SessionLimit(u)
	var sess PushSession
	defer func() {
		if sess != nil {
			cctx, ccancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer ccancel()
			if err := sess.Close(cctx); err != nil {
				e.log.Debug("push close", "aor", aor, "err", err)
			}
		}
	}()

	sent := 0
	partial := false
	for sent < limit {
		msgs, err := e.cfg.Store.Claim(ctx, aor, token, min(e.cfg.Batch, limit-sent), e.cfg.LockTTL)
		if err != nil {
			return e.ended(rep, ctx, fmt.Errorf("claim: %w", err))
		}
		if len(msgs) == 0 {
			break
		}
		if sess == nil {
			sess, err = e.cfg.Pusher.Open(ctx, target)
			if err != nil {
				sess = nil
				return e.ended(rep, ctx, err)
			}
			rep.ToFirstSend = e.cfg.Now().Sub(at)
		}
		sent += len(msgs)
		var ackErr error
		derr := sess.Deliver(ctx, msgs, func(m *Message, err error) {
			switch {
			case err == nil:
				if aerr := e.ack(ctx, aor, token, m.ID); aerr != nil && !errors.Is(aerr, ErrNotFound) {
					ackErr = aerr
					cancel(fmt.Errorf("ack: %w", aerr))
					return
				}
				rep.Delivered++
			case errors.Is(err, ErrHeld), errors.Is(err, ErrNotSent), errors.Is(err, ErrUnconfirmed):
				// Not an attempt: it goes back to pending at Unlock.
				partial = true
			default:
				rep.Failed++
				dead, ferr := e.cfg.Store.Fail(ctx, aor, token, m.ID, err.Error(), p.MaxAttempts)
				if ferr != nil {
					ackErr = ferr
					cancel(fmt.Errorf("fail: %w", ferr))
					return
				}
				if dead {
					rep.DeadLettered++
				}
				partial = true
			}
		})
		if ackErr != nil {
			return e.ended(rep, ctx, ackErr)
		}
		if derr != nil {
			return e.ended(rep, ctx, derr)
		}
	}
	rep.Outcome = "delivered"
	if partial {
		rep.Outcome = "partial"
	}
	return rep
}

// ack removes a message the client confirmed. An error other than a lost
// lease (a Redis restart: the reply never came) is tried again a few times
// within a second, so that a short outage does not end a session whose
// client goes on confirming; the store checks the lease on every try, and
// a try whose earlier twin went through finds nothing (ErrNotFound).
func (e *Engine) ack(ctx context.Context, aor AOR, token, id string) error {
	wait := 50 * time.Millisecond
	for try := 1; ; try++ {
		err := e.cfg.Store.Ack(ctx, aor, token, id)
		if err == nil || errors.Is(err, ErrNotFound) || errors.Is(err, ErrLeaseLost) || try == 5 || ctx.Err() != nil {
			return err
		}
		sleepCtx(ctx, wait)
		wait *= 2
	}
}

// ended fills in a report of a push that stopped early.
func (e *Engine) ended(rep PushReport, ctx context.Context, err error) PushReport {
	rep.Err = err
	rep.Outcome = "failed"
	if cause := context.Cause(ctx); cause != nil && errors.Is(cause, context.Canceled) {
		rep.Outcome = "cancelled"
	} else if cause != nil {
		rep.Err = cause
	}
	return rep
}

// sweep requeues expired leases and drops expired messages, then pushes
// again to recipients whose messages came back, if they are registered.
func (e *Engine) sweep(ctx context.Context) {
	st, err := e.cfg.Store.Sweep(ctx, e.cfg.Now())
	if err != nil {
		if ctx.Err() == nil {
			e.log.Warn("sweep", "err", err)
		}
		return
	}
	if st.Requeued > 0 || st.Expired > 0 {
		e.log.Info("swept", "requeued", st.Requeued, "expired", st.Expired)
	}
	for _, aor := range st.Requeue {
		r, err := e.cfg.Store.Contact(ctx, aor)
		if err != nil {
			continue // not registered: the next registration pushes
		}
		if err := e.trigger(ctx, r, e.cfg.Now()); err != nil {
			e.log.Warn("push after sweep", "aor", aor, "err", err)
		}
	}
}

func newToken() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
