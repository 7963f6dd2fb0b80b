package plugintest

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/deferpush/deferpush/plugin"
)

var _ plugin.Events = (*Events)(nil)

// Events is an in-memory plugin.Events: a log read by one group, as a
// Redis stream with a consumer group is. Add appends what a proxy would.
type Events struct {
	mu      sync.Mutex
	now     func() time.Time
	log     []plugin.RegistrationEvent
	next    int                      // the first entry not delivered yet
	pending map[string]*pendingEvent // id -> who holds it
	added   chan struct{}            // closed and replaced by Add
	err     error                    // SetErr
}

type pendingEvent struct {
	ev        plugin.RegistrationEvent
	consumer  string
	delivered time.Time
}

// NewEvents returns an empty log on the clock now (nil: time.Now).
func NewEvents(now func() time.Time) *Events {
	if now == nil {
		now = time.Now
	}
	return &Events{now: now, pending: map[string]*pendingEvent{}, added: make(chan struct{})}
}

// Add appends ev with a new ID, which it returns.
func (e *Events) Add(ev plugin.RegistrationEvent) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	ev.ID = strconv.Itoa(len(e.log) + 1)
	e.log = append(e.log, ev)
	close(e.added)
	e.added = make(chan struct{})
	return ev.ID
}

// SetErr makes every call fail with err (a store that does not
// answer); nil ends that.
func (e *Events) SetErr(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.err = err
}

// Pending returns the ids delivered and not acked, with their holders.
func (e *Events) Pending() map[string]string {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := map[string]string{}
	for id, p := range e.pending {
		out[id] = p.consumer
	}
	return out
}

// Unread is how many events no reader has read yet.
func (e *Events) Unread() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.log) - e.next
}

// ReadEvents implements plugin.Events.
func (e *Events) ReadEvents(ctx context.Context, consumer string, n int, block time.Duration) ([]plugin.RegistrationEvent, error) {
	timer := time.NewTimer(block)
	defer timer.Stop()
	for {
		e.mu.Lock()
		if e.err != nil {
			err := e.err
			e.mu.Unlock()
			return nil, err
		}
		var out []plugin.RegistrationEvent
		for e.next < len(e.log) && len(out) < n {
			ev := e.log[e.next]
			e.next++
			e.pending[ev.ID] = &pendingEvent{ev: ev, consumer: consumer, delivered: e.now()}
			out = append(out, ev)
		}
		added := e.added
		e.mu.Unlock()
		if len(out) > 0 {
			return out, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-timer.C:
			return nil, nil
		case <-added:
		}
	}
}

// AckAndReadEvents implements plugin.Events.
func (e *Events) AckAndReadEvents(ctx context.Context, consumer string, ack []string, n int) ([]plugin.RegistrationEvent, error) {
	if err := e.AckEvents(ctx, ack...); err != nil {
		return nil, err
	}
	return e.ReadEvents(ctx, consumer, n, 0)
}

// ClaimEvents implements plugin.Events.
func (e *Events) ClaimEvents(ctx context.Context, consumer string, idle time.Duration, n int) ([]plugin.RegistrationEvent, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.err != nil {
		return nil, e.err
	}
	var out []plugin.RegistrationEvent
	now := e.now()
	// In log order, as XAUTOCLAIM goes through the pending entries.
	for _, ev := range e.log {
		p, ok := e.pending[ev.ID]
		if !ok || now.Sub(p.delivered) < idle || len(out) >= n {
			continue
		}
		p.consumer, p.delivered = consumer, now
		out = append(out, ev)
	}
	return out, nil
}

// AckEvents implements plugin.Events.
func (e *Events) AckEvents(ctx context.Context, ids ...string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.err != nil {
		return e.err
	}
	for _, id := range ids {
		delete(e.pending, id)
	}
	return nil
}
