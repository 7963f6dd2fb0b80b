package plugin

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"
)

// policyInForce is the operator policy this instance applies: every reader
// (the hooks, the ingress, the scheduler, the admin API) reads it here, and
// the admin API writes through it. Changes made on other instances arrive
// through the store's WatchPolicy.
type policyInForce struct {
	store Settings
	log   *slog.Logger
	p     atomic.Pointer[Policy]
}

// load reads the policy, retrying every second while the store does not
// answer; it returns ctx.Err() if ctx ends first.
func (f *policyInForce) load(ctx context.Context) error {
	for {
		p, err := f.store.Policy(ctx)
		if err == nil {
			f.set(p)
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
		err := f.store.WatchPolicy(ctx, f.set)
		if ctx.Err() == nil {
			f.log.Warn("policy watch ended; retrying", "err", err)
			sleepCtx(ctx, time.Second)
		}
	}
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

// update reads the stored policy, lets change edit it, validates, stores
// and puts the result in force.
func (f *policyInForce) update(ctx context.Context, who string, change func(*Policy) error) (old, updated Policy, err error) {
	old, err = f.store.Policy(ctx)
	if err != nil {
		return old, old, err
	}
	updated = old
	if err := change(&updated); err != nil {
		return old, old, err
	}
	if err := updated.Validate(); err != nil {
		return old, old, err
	}
	if err := f.store.SetPolicy(ctx, updated, who); err != nil {
		return old, old, err
	}
	f.set(updated)
	return old, updated, nil
}
