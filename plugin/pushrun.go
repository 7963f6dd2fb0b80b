package plugin

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"time"
)

// pushRun is one push to one recipient, the seed's Figure 2 as the engine
// sees it, in named steps:
//
//	due      the policy allows it and something is stored
//	lock     take the recipient's push lock (a lease), renewed meanwhile
//	claim    move the oldest messages in flight under the lease
//	open     INVITE the client and connect MSRP (the Pusher), once
//	deliver  one SEND per message; ack each confirmed, fail each refused
//	release  BYE, then unlock: whatever was not confirmed goes back
//
// claim and deliver repeat until the mailbox is empty or the session
// limit is reached.
type pushRun struct {
	e       *Engine
	reg     Registration
	at      time.Time // when the event that asked for the push arrived
	start   time.Time
	policy  Policy
	token   string // owns the lease
	sess    PushSession
	rep     PushReport
	partial bool // a message was held, refused or not sent
	// delivery is the user's delivery mode; pager says the push goes by
	// SIP MESSAGE (decided in due, or in open when the client refuses
	// MSRP under delivery auto).
	delivery Delivery
	pager    bool
}

// push runs one push to reg; the report's Outcome is OutcomeNone when
// there was nothing to do.
func (e *Engine) push(ctx context.Context, reg Registration, at time.Time) PushReport {
	r := &pushRun{e: e, reg: reg, at: at, start: e.cfg.Now(), rep: PushReport{AOR: reg.AOR}}
	return r.run(ctx)
}

func (r *pushRun) run(ctx context.Context) (rep PushReport) {
	limit, err := r.due(ctx)
	if err != nil || limit == 0 {
		return r.ended(ctx, err)
	}
	r.token = rand.Text()
	locked, err := r.e.cfg.Store.Lock(ctx, r.reg.AOR, r.token, r.e.cfg.LockTTL)
	if err != nil {
		return r.ended(ctx, fmt.Errorf("lock: %w", err))
	}
	if !locked {
		// Another push (here or on another instance) owns the recipient;
		// it delivers what is pending, new messages included.
		r.e.log.Debug("push lock held elsewhere", "aor", r.reg.AOR)
		return PushReport{}
	}
	ctx, cancel := context.WithCancelCause(ctx)
	renewing := r.keepLease(ctx, cancel)
	defer func() { rep.Duration = r.release(ctx, cancel, renewing) }()

	for sent := 0; sent < limit; {
		msgs, err := r.e.cfg.Store.Claim(ctx, r.reg.AOR, r.token, min(r.e.cfg.Batch, limit-sent), r.e.cfg.LockTTL)
		if err != nil {
			return r.ended(ctx, fmt.Errorf("claim: %w", err))
		}
		if len(msgs) == 0 {
			break
		}
		if err := r.open(ctx); err != nil {
			return r.ended(ctx, err)
		}
		sent += len(msgs)
		if err := r.deliver(ctx, cancel, msgs); err != nil {
			return r.ended(ctx, err)
		}
	}
	r.rep.Outcome = OutcomeDelivered
	if r.partial {
		r.rep.Outcome = OutcomePartial
	}
	return r.rep
}

// due returns how many messages this push may send: zero when the policy
// says not to push to this user or nothing is stored.
func (r *pushRun) due(ctx context.Context) (int, error) {
	var err error
	if r.policy, err = r.e.Policy(ctx); err != nil {
		return 0, err
	}
	u, err := r.e.cfg.Store.UserSettings(ctx, r.reg.AOR)
	if err != nil {
		return 0, err
	}
	if r.policy.Push(u) != PushOn {
		r.e.log.Debug("push not allowed", "aor", r.reg.AOR, "mode", r.policy.Push(u))
		return 0, nil
	}
	c, err := r.e.cfg.Store.Count(ctx, r.reg.AOR)
	if err != nil || c.Pending == 0 && c.InFlight == 0 {
		return 0, err
	}
	// What an earlier push learnt of this client is in the stored
	// registration (the event's may come straight from the proxy).
	if stored, err := r.e.cfg.Store.Contact(ctx, r.reg.AOR); err == nil && stored.Binding() == r.reg.Binding() {
		r.reg.PagerOnly = r.reg.PagerOnly || stored.PagerOnly
	}
	var below int
	r.delivery, below = r.policy.DeliveryFor(u)
	r.pager = Pager(r.delivery, below, c.Pending+c.InFlight, r.reg.PagerOnly)
	return r.policy.SessionLimit(u), nil
}

// keepLease renews the lease while ctx lasts; losing it cancels ctx with
// the reason. The returned channel closes when the renewer has stopped.
func (r *pushRun) keepLease(ctx context.Context, cancel context.CancelCauseFunc) <-chan struct{} {
	rn := &renewer{store: r.e.cfg.Store, aor: r.reg.AOR, token: r.token, ttl: r.e.cfg.LockTTL, now: r.e.cfg.Now, log: r.e.log}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := rn.Run(ctx); err != nil {
			cancel(err)
		}
	}()
	return done
}

// open sets up the session on the first claim: an MSRP session, or pager
// mode. Under delivery auto, a client that refuses MSRP gets pager mode
// at once, and the refusal is recorded with its registration so that its
// next pushes go straight to pager mode.
func (r *pushRun) open(ctx context.Context) error {
	if r.sess != nil {
		return nil
	}
	t := Target{AOR: r.reg.AOR, URI: r.reg.Contact, Registration: r.reg, Policy: r.policy, Pager: r.pager}
	if !t.Pager && r.policy.PushTarget == TargetAOR || t.URI == "" {
		t.URI = r.reg.AOR.String()
	}
	sess, err := r.e.cfg.Pusher.Open(ctx, t)
	if err != nil && !t.Pager && r.delivery == DeliveryAuto && r.reg.Contact != "" && errors.Is(err, ErrMSRPRefused) {
		r.e.log.Info("client refused MSRP; pager mode", "aor", r.reg.AOR, "contact", r.reg.Contact, "err", err)
		if merr := r.e.cfg.Store.SetPagerOnly(ctx, r.reg.AOR, r.reg.Binding()); merr != nil {
			// Only the next push's choice depends on it: it refuses again.
			r.e.log.Warn("record pager mode", "aor", r.reg.AOR, "err", merr)
		}
		r.reg.PagerOnly, r.pager = true, true
		t.Pager, t.URI, t.Registration = true, r.reg.Contact, r.reg
		sess, err = r.e.cfg.Pusher.Open(ctx, t)
	}
	if err != nil {
		return err
	}
	r.sess = sess
	r.rep.Pager = r.pager
	r.rep.ToFirstSend = r.e.cfg.Now().Sub(r.at)
	return nil
}

// deliver hands msgs to the session and settles each as its fate is
// known. A store error while settling ends the push (cancel).
func (r *pushRun) deliver(ctx context.Context, cancel context.CancelCauseFunc, msgs []*Message) error {
	var storeErr error
	err := r.sess.Deliver(ctx, msgs, func(m *Message, err error) {
		if storeErr != nil {
			return
		}
		if storeErr = r.settle(ctx, m, err); storeErr != nil {
			cancel(storeErr)
		}
	})
	if storeErr != nil {
		return storeErr
	}
	return err
}

// settle records the fate of one message: acked when confirmed; back to
// pending at release when held, not sent or unconfirmed (no attempt); an
// attempt (and maybe a dead letter) when refused or broken on.
func (r *pushRun) settle(ctx context.Context, m *Message, err error) error {
	aor := r.reg.AOR
	switch {
	case err == nil:
		if aerr := r.ack(ctx, m.ID); aerr != nil && !errors.Is(aerr, ErrNotFound) {
			return fmt.Errorf("ack: %w", aerr)
		}
		r.rep.Delivered++
	case errors.Is(err, ErrHeld), errors.Is(err, ErrNotSent), errors.Is(err, ErrUnconfirmed):
		r.partial = true
	default:
		r.rep.Failed++
		r.partial = true
		dead, ferr := r.e.cfg.Store.Fail(ctx, aor, r.token, m.ID, err.Error(), r.policy.MaxAttempts)
		if ferr != nil {
			return fmt.Errorf("fail: %w", ferr)
		}
		if dead {
			r.rep.DeadLettered++
			if _, failed := r.e.notices.requests(m); failed {
				r.e.notices.send(m, DispositionFailed)
			}
		}
	}
	return nil
}

// ack removes a message the client confirmed. An error other than a lost
// lease (a Redis restart: the reply never came) is tried again a few times
// within a second, so that a short outage does not end a session whose
// client goes on confirming; the store checks the lease on every try, and
// a try whose earlier twin went through finds nothing (ErrNotFound).
//
// The client has the message: its ack is not given up because the push
// is being cancelled (an unregistration arriving meanwhile, a shutdown),
// which would only push it again. A lost lease still refuses it.
func (r *pushRun) ack(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	wait := 50 * time.Millisecond
	for try := 1; ; try++ {
		err := r.e.cfg.Store.Ack(ctx, r.reg.AOR, r.token, id)
		if err == nil || errors.Is(err, ErrNotFound) || errors.Is(err, ErrLeaseLost) || try == 5 || ctx.Err() != nil {
			return err
		}
		sleepCtx(ctx, wait)
		wait *= 2
	}
}

// release ends the session (BYE), stops the renewer and unlocks: the
// unconfirmed messages go back to pending, in order. It runs even when
// ctx was cancelled, and returns the push's duration.
func (r *pushRun) release(ctx context.Context, cancel context.CancelCauseFunc, renewing <-chan struct{}) time.Duration {
	bg := context.WithoutCancel(ctx)
	if r.sess != nil {
		cctx, ccancel := context.WithTimeout(bg, 5*time.Second)
		if err := r.sess.Close(cctx); err != nil {
			r.e.log.Debug("push close", "aor", r.reg.AOR, "err", err)
		}
		ccancel()
	}
	cancel(nil)
	<-renewing
	uctx, ucancel := context.WithTimeout(bg, 5*time.Second)
	defer ucancel()
	if err := r.e.cfg.Store.Unlock(uctx, r.reg.AOR, r.token); err != nil && !errors.Is(err, ErrLeaseLost) {
		r.e.log.Error("unlock", "aor", r.reg.AOR, "err", err)
	}
	return r.e.cfg.Now().Sub(r.start)
}

// ended is the report of a push that stopped early: cancelled when ctx
// was (unregistration, shutdown), failed otherwise, with the cause that
// ended ctx (a lost lease) when there is one. A nil err means there was
// nothing to do.
func (r *pushRun) ended(ctx context.Context, err error) PushReport {
	if err == nil {
		return PushReport{}
	}
	r.rep.Err = err
	r.rep.Outcome = OutcomeFailed
	if cause := context.Cause(ctx); cause != nil && errors.Is(cause, context.Canceled) {
		r.rep.Outcome = OutcomeCancelled
	} else if cause != nil {
		r.rep.Err = cause
	}
	return r.rep
}
