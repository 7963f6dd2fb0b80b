package plugin

import (
	"context"
	"log/slog"
	"time"
)

// startupScan pushes, once when the engine starts, to every recipient with
// stored messages whose registration is still live. A registration that
// reached this instance just before it died (kill -9 between the hook and
// the push), or a push that a crash broke off while the client stayed
// registered, would otherwise wait for the client's next REGISTER — up
// to an hour with the shipped script.
type startupScan struct {
	store Queue
	log   *slog.Logger
	// kick asks for a push to aor if it has a live registration; it
	// reports whether it did.
	kick func(ctx context.Context, aor AOR) (bool, error)
}

// scanPage is how many recipients one Recipients call asks for.
const scanPage = 500

// Run scans every recipient once, then returns. A store error is tried
// again every few seconds until ctx ends.
func (s *startupScan) Run(ctx context.Context) error {
	start := time.Now()
	cursor, seen, pushed := "", 0, 0
	for {
		aors, next, err := s.store.Recipients(ctx, cursor, scanPage)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			s.log.Warn("start-up scan; trying again", "err", err)
			sleepCtx(ctx, 3*time.Second)
			continue
		}
		for _, aor := range aors {
			seen++
			ok, err := s.kick(ctx, aor)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				s.log.Warn("start-up push", "aor", aor, "err", err)
			}
			if ok {
				pushed++
			}
		}
		if next == "" {
			break
		}
		cursor = next
	}
	s.log.Info("start-up scan done", "mailboxes", seen, "pushed", pushed, "duration", time.Since(start))
	return nil
}
