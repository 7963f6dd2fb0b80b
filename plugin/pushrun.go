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
//	due      the policy allows it
//	claim    take the recipient's push lock (a lease, renewed meanwhile)
//	         and move the oldest messages in flight under it, in one call;
//	         nothing claimed: nothing to do (another push holds the lease,
//	         or the mailbox is empty)
//	mode     MSRP or pager mode (delivery, pager_below, what an earlier
//	         push learnt of the client)
//	open     INVITE the client and connect MSRP (the Pusher), once; or
//	         pager mode, one SIP MESSAGE per message
//	deliver  one SEND (or MESSAGE) per message; ack the confirmed ones a window at a
//	         time, fail each refused
//	release  ack what is left confirmed and unlock, in one call (whatever
//	         was not confirmed goes back), then BYE
//
// claim and deliver repeat until the mailbox is empty (a claim took less
// than it asked for) or the session limit is reached.
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
	// confirmed holds the ids the client confirmed and the store has not
	// removed yet: they are acked in one call once there are AckWindow of
	// them, before a Fail, and when a Deliver returns, so that a crash
	// pushes at most one window of them again.
	confirmed []string
	// delivery is the user's delivery mode and below its pager_below;
	// pager says the push goes by SIP MESSAGE (decided in mode after the
	// first claim, or in open when the client refuses MSRP under
	// delivery auto).
	delivery Delivery
	below    int
	pager    bool
	// read, when not nil, is what the kick read an instant ago.
	read *kickRead
}

// push runs one push to reg; the report's Outcome is OutcomeNone when
// there was nothing to do. k, when not nil, is what the kick that asked
// for the push read an instant ago.
func (e *Engine) push(ctx context.Context, reg Registration, at time.Time, k *kickRead) PushReport {
	r := &pushRun{e: e, reg: reg, at: at, start: e.cfg.Now(), rep: PushReport{AOR: reg.AOR}, read: k}
	return r.run(ctx)
}

func (r *pushRun) run(ctx context.Context) (rep PushReport) {
	var err error
	if r.policy, err = r.e.Policy(ctx); err != nil {
		return r.ended(ctx, err)
	}
	r.token = rand.Text()
	var msgs []*Message
	var limit int
	if r.read != nil {
		// The settings its kick read; whether anything is stored the
		// first claim finds out.
		if limit = r.allowed(r.read.settings); limit == 0 {
			return PushReport{}
		}
		msgs, err = r.claim(ctx, limit)
	} else if msgs, limit, err = r.claimReading(ctx); err == nil && limit == 0 {
		r.unlock(ctx) // not to be pushed to: what it claimed goes back
		return PushReport{}
	}
	switch {
	case errors.Is(err, ErrLeaseLost):
		// Another push (here or on another instance) owns the recipient;
		// it delivers what is pending, new messages included.
		r.e.log.Debug("push lock held elsewhere", "aor", r.reg.AOR)
		return PushReport{}
	case err != nil || len(msgs) == 0:
		// Nothing stored, or the store failed: let go of the lease the
		// claim took (or may have taken).
		r.unlock(ctx)
		if err != nil {
			return r.ended(ctx, fmt.Errorf("claim: %w", err))
		}
		return PushReport{}
	}
	ctx, cancel := context.WithCancelCause(ctx)
	renewing := r.keepLease(ctx, cancel)
	defer func() { r.release(ctx, cancel, renewing, &rep) }()
	if err := r.mode(ctx, msgs, min(r.e.cfg.Batch, limit)); err != nil {
		return r.ended(ctx, err)
	}

	for sent, asked := 0, min(r.e.cfg.Batch, limit); len(msgs) > 0; {
		if err := r.open(ctx, msgs); err != nil {
			return r.ended(ctx, err)
		}
		sent += len(msgs)
		failed := r.rep.Failed
		if err := r.deliver(ctx, cancel, msgs); err != nil {
			return r.ended(ctx, err)
		}
		// A claim that took less than it asked for emptied the pending
		// list: claiming again would find only what arrived meanwhile,
		// and a message stored during the push has it run once more:
		// the store's nudge when this instance stored it (scheduler.go),
		// dp_finish's mark whichever did (release). That saves the
		// everyday push its last, empty claim. A message refused
		// meanwhile went back to the tail (Fail): the next claim takes
		// it again, as before.
		if sent >= limit || len(msgs) < asked && r.rep.Failed == failed {
			break // release acks what is left, with the unlock
		}
		if err := r.flush(ctx); err != nil {
			return r.ended(ctx, err)
		}
		asked = min(r.e.cfg.Batch, limit-sent)
		if msgs, err = r.claim(ctx, limit-sent); err != nil {
			return r.ended(ctx, fmt.Errorf("claim: %w", err))
		}
	}
	r.rep.Outcome = OutcomeDelivered
	if r.partial {
		r.rep.Outcome = OutcomePartial
	}
	return r.rep
}

// claim takes (or extends) the lease and the next messages, at most a
// batch and what is left of limit.
func (r *pushRun) claim(ctx context.Context, limit int) ([]*Message, error) {
	return r.e.cfg.Store.Claim(ctx, r.reg.AOR, r.token, min(r.e.cfg.Batch, limit), r.e.cfg.LockTTL)
}

// allowed applies the policy to the user's settings u: the session's
// limit, zero when the policy says not to push to this user.
func (r *pushRun) allowed(u UserSettings) int {
	if r.policy.Push(u) != PushOn {
		r.e.log.Debug("push not allowed", "aor", r.reg.AOR, "mode", r.policy.Push(u))
		return 0
	}
	r.delivery, r.below = r.policy.DeliveryFor(u)
	return r.policy.SessionLimit(u)
}

// claimReading is allowed and the first claim of a push that has read
// nothing yet (a registration event's, which the proxy's dp_register
// wrote having applied the policy; one that waited for a slot; one that
// runs once more; a retry), in one round trip (ClaimAndRead): the lease
// and a batch, the registration recorded now and the user's settings.
// The push goes to that registration, if it is the contact the push was
// asked for: a newer registration of another contact has its own push
// (it wrote its own event, or its hook ran its own kick, which runs this
// push once more), and none (unregistered, expired) means no push. A
// limit of 0 says not to push (the caller unlocks); the messages beyond
// the session's limit stay in flight until the release puts them back.
func (r *pushRun) claimReading(ctx context.Context) ([]*Message, int, error) {
	// The user's settings can only lower the policy's session limit.
	cr, err := r.e.cfg.Store.ClaimAndRead(ctx, r.reg.AOR, r.token, min(r.e.cfg.Batch, r.policy.MaxPerSession), r.e.cfg.LockTTL)
	if err != nil {
		return nil, 0, err
	}
	if !cr.Registered || cr.Registration.Contact != r.reg.Contact {
		r.e.log.Debug("push not started", "aor", r.reg.AOR, "contact", r.reg.Contact,
			"reason", "not the registration recorded now", "recorded", cr.Registration.Contact)
		return cr.Messages, 0, nil
	}
	reg := cr.Registration
	reg.AOR, reg.At = r.reg.AOR, r.reg.At
	r.reg = reg
	r.read = &kickRead{settings: cr.Settings, stored: true}
	limit := r.allowed(cr.Settings)
	if limit < len(cr.Messages) {
		cr.Messages = cr.Messages[:limit]
	}
	return cr.Messages, limit, nil
}

// mode decides between an MSRP session and pager mode once the first
// claim took msgs of the asked for (Pager). Only delivery auto needs to
// know more, and reads it only then: what an earlier push learnt of this
// client (the stored registration, unless the kick read it with the
// settings: a hook's comes straight from the proxy), and, under pager_below, the mailbox's size when the claim
// does not tell it (it took all that was asked for, no more than
// pager_below). A claim that took less than asked for took every message
// pending.
func (r *pushRun) mode(ctx context.Context, msgs []*Message, asked int) error {
	if r.delivery != DeliveryAuto {
		r.pager = Pager(r.delivery, r.below, len(msgs), r.reg.PagerOnly)
		return nil
	}
	if !r.reg.PagerOnly && (r.read == nil || !r.read.stored) {
		// Not known (a hook's registration, or the kick's read is
		// stale): MSRP is offered first, as for a new client.
		if stored, err := r.e.cfg.Store.Contact(ctx, r.reg.AOR); err == nil && stored.Binding() == r.reg.Binding() {
			r.reg.PagerOnly = stored.PagerOnly
		}
	}
	size := len(msgs)
	if !r.reg.PagerOnly && size >= asked && size <= r.below {
		c, err := r.e.cfg.Store.Count(ctx, r.reg.AOR)
		if err != nil {
			return fmt.Errorf("count: %w", err)
		}
		size = c.Pending + c.InFlight
	}
	r.pager = Pager(r.delivery, r.below, size, r.reg.PagerOnly)
	return nil
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

// open sets up the session on the first claim, msgs: an MSRP session, or
// pager mode. Under delivery auto, a client that refuses MSRP — or whose
// answer can carry none of msgs (Target.Messages) — gets pager mode at
// once, and the refusal is recorded with its registration so that its
// next pushes go straight to pager mode.
func (r *pushRun) open(ctx context.Context, msgs []*Message) error {
	if r.sess != nil {
		return nil
	}
	t := Target{AOR: r.reg.AOR, URI: r.reg.Contact, Registration: r.reg, Policy: r.policy, Pager: r.pager, Messages: msgs}
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
// known. The confirmed ones not yet acked when the session returns are
// acked before the next claim, or with the unlock (release).
// A store error while settling ends the push (cancel).
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

// settle records the fate of one message: confirmed, queued for the next
// ack; back to pending at release when held, not sent or unconfirmed (no
// attempt); an attempt (and maybe a dead letter) when refused or broken
// on.
func (r *pushRun) settle(ctx context.Context, m *Message, err error) error {
	aor := r.reg.AOR
	switch {
	case err == nil:
		r.confirmed = append(r.confirmed, m.ID)
		if len(r.confirmed) >= r.e.cfg.AckWindow {
			return r.flush(ctx)
		}
	case errors.Is(err, ErrHeld), errors.Is(err, ErrNotSent), errors.Is(err, ErrUnconfirmed):
		r.partial = true
	default:
		r.rep.Failed++
		r.partial = true
		if err := r.flush(ctx); err != nil {
			return err
		}
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

// flush acks the confirmed messages queued, in one call. It runs even
// when ctx was cancelled (an unregistration, a shutdown): what the client
// confirmed is removed while the lease lasts. An error other than a lost
// lease (a Redis restart: the reply never came) is tried again a few times
// within a second, so that a short outage does not end a session whose
// client goes on confirming; the store checks the lease on every try, and
// a try whose earlier twin went through finds nothing to ack.
func (r *pushRun) flush(ctx context.Context) error {
	if len(r.confirmed) == 0 {
		return nil
	}
	return r.acking(ctx, r.e.cfg.Store.Ack)
}

// acking calls ack (Store.Ack, or Store.Finish) with the confirmed
// messages queued, as flush says.
func (r *pushRun) acking(ctx context.Context, ack func(context.Context, AOR, string, ...string) (int, error)) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	wait := 50 * time.Millisecond
	for try := 1; ; try++ {
		_, err := ack(ctx, r.reg.AOR, r.token, r.confirmed...)
		if err == nil {
			r.rep.Delivered += len(r.confirmed)
			r.confirmed = r.confirmed[:0]
			return nil
		}
		if errors.Is(err, ErrLeaseLost) || try == 5 || ctx.Err() != nil {
			return fmt.Errorf("ack: %w", err)
		}
		sleepCtx(ctx, wait)
		wait *= 2
	}
}

// release stops the renewer, acks the confirmed messages not acked yet
// and unlocks in one call (Store.Finish: the unconfirmed messages go
// back to pending, in order), then ends the session (BYE). The lease is
// not needed for the BYE: nothing more is sent in the session, and a
// client that does not answer it holds up no other push. It runs even
// when ctx was cancelled, and completes rep: the messages acked now, an
// ack that failed (the push's first error is kept), the duration.
func (r *pushRun) release(ctx context.Context, cancel context.CancelCauseFunc, renewing <-chan struct{}, rep *PushReport) {
	bg := context.WithoutCancel(ctx)
	cancel(nil)
	<-renewing
	before := r.rep.Delivered
	finish, more := r.e.cfg.Store.Finish, false
	if fm, ok := r.e.cfg.Store.(FinishMore); ok {
		finish = func(ctx context.Context, aor AOR, token string, ids ...string) (int, error) {
			n, m, err := fm.FinishMore(ctx, aor, token, ids...)
			more = more || m
			return n, err
		}
	}
	err := r.acking(bg, finish)
	if more {
		// Stored after the last claim, maybe through another instance,
		// whose nudge did not reach this scheduler: once more.
		r.e.sched.nudge(r.reg.AOR)
	}
	rep.Delivered += r.rep.Delivered - before
	switch {
	case err != nil && len(r.confirmed) > 0 && rep.Err == nil:
		rep.Err, rep.Outcome = err, OutcomeFailed
	case err != nil && !errors.Is(err, ErrLeaseLost):
		r.e.log.Error("unlock", "aor", r.reg.AOR, "err", err)
	}
	if r.sess != nil {
		cctx, ccancel := context.WithTimeout(bg, 5*time.Second)
		if err := r.sess.Close(cctx); err != nil {
			r.e.log.Debug("push close", "aor", r.reg.AOR, "err", err)
		}
		ccancel()
	}
	rep.Duration = r.e.cfg.Now().Sub(r.start)
}

// unlock drops the lease: whatever is in flight goes back to pending. It
// runs even when ctx was cancelled.
func (r *pushRun) unlock(ctx context.Context) {
	uctx, ucancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer ucancel()
	if err := r.e.cfg.Store.Unlock(uctx, r.reg.AOR, r.token); err != nil && !errors.Is(err, ErrLeaseLost) {
		r.e.log.Error("unlock", "aor", r.reg.AOR, "err", err)
	}
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
