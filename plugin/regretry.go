package plugin

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"
)

// regRetry keeps the registrations the store could not record (Redis
// down, stalled or restarting) and records and pushes them once it
// answers again. The hook that reported one was answered an error, which
// the shipped route scripts log and do not retry: without this the
// client's messages would wait for its next REGISTER, up to an hour
// away, although it is online.
type regRetry struct {
	mu sync.Mutex
	// pending by AOR and contact: a later registration of the same
	// binding replaces an earlier one.
	pending map[regKey]Registration
	now     func() time.Time
	log     *slog.Logger
	// record records r and pushes to it (Engine.Registered's work).
	record func(ctx context.Context, r Registration) error
}

type regKey struct{ aor, contact string }

// maxRegRetries bounds the registrations kept: a store that stays down
// while every client of a large proxy registers must not grow memory
// without end. Past it a registration waits for the client's next one.
const maxRegRetries = 10000

// regRetryInterval is how often kept registrations are tried again.
const regRetryInterval = 2 * time.Second

func newRegRetry(now func() time.Time, log *slog.Logger, record func(context.Context, Registration) error) *regRetry {
	return &regRetry{pending: map[regKey]Registration{}, now: now, log: log, record: record}
}

// keep adds r, which the store could not record.
func (q *regRetry) keep(r Registration) {
	q.mu.Lock()
	defer q.mu.Unlock()
	k := regKey{r.AOR.String(), r.Contact}
	if _, ok := q.pending[k]; !ok && len(q.pending) >= maxRegRetries {
		q.log.Warn("registration not kept for a retry: too many waiting for the store", "aor", r.AOR, "waiting", len(q.pending))
		return
	}
	q.pending[k] = r
}

// forget drops what is kept for aor's contact (every contact of aor
// when contact is empty): it unregistered.
func (q *regRetry) forget(aor AOR, contact string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for k := range q.pending {
		if k.aor == aor.String() && (contact == "" || k.contact == contact) {
			delete(q.pending, k)
		}
	}
}

// Run tries the kept registrations again every regRetryInterval until
// ctx ends: an expired one is dropped, one recorded (or superseded by a
// later event) leaves; at the first store error the round ends.
func (q *regRetry) Run(ctx context.Context) error {
	every(ctx, regRetryInterval, q.round)
	return nil
}

func (q *regRetry) round(ctx context.Context) {
	q.mu.Lock()
	regs := make([]Registration, 0, len(q.pending))
	for _, r := range q.pending {
		regs = append(regs, r)
	}
	q.mu.Unlock()
	for _, r := range regs {
		if r.Expires.After(q.now()) {
			cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			err := q.record(cctx, r)
			cancel()
			if err != nil && !errors.Is(err, ErrSuperseded) {
				return
			}
			if err == nil {
				q.log.Info("registration recorded after the store came back", "aor", r.AOR, "contact", r.Contact)
			}
		}
		q.mu.Lock()
		k := regKey{r.AOR.String(), r.Contact}
		if cur, ok := q.pending[k]; ok && cur.Expires.Equal(r.Expires) && cur.At.Equal(r.At) {
			delete(q.pending, k)
		}
		q.mu.Unlock()
	}
}
