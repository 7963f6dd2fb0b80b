package plugin

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// policyInForce is the operator policy this instance applies: every reader
// (the hooks, the ingress, the scheduler, the admin API) reads it here, and
// the admin API writes through it. Changes made on other instances arrive
// through the store's WatchPolicy.
//
// The copy in force only moves forward: every change of it is a read of
// the store made under mu, so a later read (a newer policy) is never
// overwritten by an earlier one, whichever of the watch and a local update
// gets there first.
type policyInForce struct {
	store Settings
	log   *slog.Logger
	mu    sync.Mutex // serialises refresh
	p     atomic.Pointer[Policy]
}

// load reads the policy, retrying every second while the store does not
// answer; it returns ctx.Err() if ctx ends first.
func (f *policyInForce) load(ctx context.Context) error {
	for {
		err := f.refresh(ctx)
		if err == nil {
			return nil
		}
		f.log.Warn("engine cannot read the policy; retrying", "err", err)
		sleepCtx(ctx, time.Second)
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// Run keeps the policy current with the store's changes until ctx ends.
func (f *policyInForce) Run(ctx context.Context) error {
	for ctx.Err() == nil {
		err := f.store.WatchPolicy(ctx, func(Policy) {
			if err := f.refresh(ctx); err != nil && ctx.Err() == nil {
				f.log.Warn("policy reload failed", "err", err)
			}
		})
		if ctx.Err() == nil {
			f.log.Warn("policy watch ended; retrying", "err", err)
			sleepCtx(ctx, time.Second)
		}
	}
	return nil
}

// refresh reads the stored policy and puts it in force.
func (f *policyInForce) refresh(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, err := f.store.Policy(ctx)
	if err != nil {
		return err
	}
	f.set(p)
	return nil
}

func (f *policyInForce) set(p Policy) {
	old := f.p.Swap(&p)
	if old == nil || *old != p {
		f.log.Info("policy in force", "push_enabled", p.PushEnabled, "store_enabled", p.StoreEnabled)
	}
}

// current returns the policy in force; DefaultPolicy before the first
// load (the scheduler runs only after it).
func (f *policyInForce) current() Policy {
	if p := f.p.Load(); p != nil {
		return *p
	}
	return DefaultPolicy()
}

// get returns the policy in force, or the store's before the first load.
func (f *policyInForce) get(ctx context.Context) (Policy, error) {
	if p := f.p.Load(); p != nil {
		return *p, nil
	}
	return f.store.Policy(ctx)
}

// update changes the stored policy atomically (Settings.UpdatePolicy)
// and puts the store's policy, this change or a newer one, in force here
// at once; should that read fail, the watch brings it within a second.
func (f *policyInForce) update(ctx context.Context, who string, change func(*Policy) error) (old, updated Policy, err error) {
	old, updated, err = f.store.UpdatePolicy(ctx, who, change)
	if err != nil {
		return old, old, err
	}
	if err := f.refresh(ctx); err != nil {
		f.log.Warn("policy reload after a change failed", "err", err)
	}
	return old, updated, nil
}
