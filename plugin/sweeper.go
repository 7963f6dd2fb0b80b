package plugin

import (
	"context"
	"log/slog"
	"time"
)

// sweeper puts back the in-flight messages of pushes whose lease expired
// (an instance that died) and drops expired messages, every interval; it
// then asks for a push to each recipient whose messages came back. Every
// instance runs one; concurrent sweeps are safe.
type sweeper struct {
	store    Queue
	interval time.Duration
	now      func() time.Time
	log      *slog.Logger
	// kick asks for a push to aor if it has a live registration.
	kick func(ctx context.Context, aor AOR) error
	// undelivered tells the sender of an expired message that asked.
	undelivered func(m *Message)
}

// Run sweeps every interval until ctx ends.
func (s *sweeper) Run(ctx context.Context) error {
	every(ctx, s.interval, s.sweep)
	return nil
}

func (s *sweeper) sweep(ctx context.Context) {
	st, err := s.store.Sweep(ctx, s.now())
	// A sweep that failed half-way has taken its failure notices out of
	// the store: they are sent all the same.
	for _, m := range st.Undelivered {
		s.undelivered(m)
	}
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("sweep", "err", err)
		}
		return
	}
	if st.Requeued > 0 || st.Expired > 0 {
		s.log.Info("swept", "requeued", st.Requeued, "expired", st.Expired)
	}
	for _, aor := range st.Requeue {
		if err := s.kick(ctx, aor); err != nil {
			s.log.Warn("push after sweep", "aor", aor, "err", err)
		}
	}
}
