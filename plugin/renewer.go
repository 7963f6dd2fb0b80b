package plugin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// renewer keeps one push's lease alive: every ttl/3 it extends the lease
// to now+ttl. A renewal the store does not answer (a Redis restart) is
// tried again at the next tick while the lease has more than half its time
// left, so that a short outage does not throw away a session whose client
// goes on confirming messages.
type renewer struct {
	store Queue
	aor   AOR
	token string
	ttl   time.Duration
	now   func() time.Time
	log   *slog.Logger
}

// Run renews until ctx ends (it returns nil) or the lease is lost: lost
// to another owner, or left unrenewed for more than half its time (it
// returns why, and the push must stop).
func (r *renewer) Run(ctx context.Context) error {
	t := time.NewTicker(r.ttl / 3)
	defer t.Stop()
	renewed := r.now()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		err := r.store.RenewLock(ctx, r.aor, r.token, r.ttl)
		switch {
		case err == nil:
			renewed = r.now()
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, ErrLeaseLost) || r.now().Sub(renewed) > r.ttl/2:
			return fmt.Errorf("renew lock: %w", err)
		default:
			r.log.Warn("renew lock; trying again", "aor", r.aor, "err", err)
		}
	}
}
