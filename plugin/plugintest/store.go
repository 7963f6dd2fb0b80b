// Package plugintest provides an in-memory plugin.Store for the tests of
// the core and its edges, as net/http/httptest provides a server: the
// plugin and api tests run on it without Redis and without importing the
// store package, so the dependency directions hold in test code too.
//
// Store follows the contract of plugin.Store as documented there and as
// the Redis store implements it (its Lua functions, store/library.lua, define the semantics),
// and it passes the same conformance suite, store/storetest. It keeps
// nothing across processes: it stands in for one shared Redis only within
// one test binary.
//
//	st := plugintest.NewStore(nil) // time.Now
//	eng, err := plugin.NewEngine(plugin.EngineConfig{Store: st, Pusher: p})
package plugintest

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/deferpush/deferpush/plugin"
)

var _ plugin.Store = (*Store)(nil)

// Store is an in-memory plugin.Store. Every method runs under one mutex
// (WatchPolicy only while it reads the policy), so each is atomic, as each
// Lua function of the Redis store is. Messages go in and come out as copies:
// a caller may change what it gave or got without touching what is
// stored. Times are compared as they are, where the Redis store compares
// Unix milliseconds.
//
// Like a networked store, a method called with a context that is already
// done fails with the context's error and changes nothing.
type Store struct {
	now func() time.Time

	mu       sync.Mutex
	boxes    map[plugin.AOR]*mailbox
	totals   plugin.Totals // all but Mailboxes, which Totals counts
	policy   plugin.Policy
	changed  chan struct{} // closed and replaced by each SetPolicy
	settings map[plugin.AOR]plugin.UserSettings
	contacts map[plugin.AOR]plugin.Registration
	// lasts is the last registration event recorded with a time, per
	// recipient: the Redis store's dp:{aor}:a.
	lasts map[plugin.AOR]lastEvent
}

// lastEvent is the last registration (registered) or unregistration of
// contact a proxy timed, at in microseconds, kept until until (zero:
// for ever).
type lastEvent struct {
	at         int64
	registered bool
	contact    string
	until      time.Time
}

// mailbox is one recipient's messages and lease, the keys dp:{aor}:* of
// the Redis store.
type mailbox struct {
	pending  []string // ids waiting, oldest first
	inflight []string // ids claimed by the lease's owner, in claim order
	dead     []string // dead-lettered ids, in order
	// msgs holds every stored message by id, with Attempts and LastError
	// kept up to date; State is set only on the copies handed out.
	msgs map[string]*plugin.Message
	// notify holds the ids of messages whose sender waits for a failure
	// notice (Message.NotifyFailure), the Redis store's dp:{aor}:notify.
	notify map[string]bool
	owner  string    // lease owner token; "" when nobody holds the lease
	until  time.Time // lease end
}

// NewStore returns an empty store whose clock (for leases, Claim's expiry
// check and Contact) is now; nil means time.Now. Its policy is
// plugin.DefaultPolicy until SetPolicy.
func NewStore(now func() time.Time) *Store {
	if now == nil {
		now = time.Now
	}
	return &Store{
		now:      now,
		boxes:    map[plugin.AOR]*mailbox{},
		policy:   plugin.DefaultPolicy(),
		changed:  make(chan struct{}),
		settings: map[plugin.AOR]plugin.UserSettings{},
		contacts: map[plugin.AOR]plugin.Registration{},
		lasts:    map[plugin.AOR]lastEvent{},
	}
}

// Ping implements plugin.Store: an in-memory store always answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("plugintest: ping: %w", err)
	}
	return nil
}

// checkAOR refuses the zero AOR, the only invalid one a store can be
// given (plugin.ParseAOR builds every other canonical).
func checkAOR(aor plugin.AOR) error {
	if aor.IsZero() {
		return fmt.Errorf("%w: empty address of record", plugin.ErrBadAOR)
	}
	return nil
}

func checkToken(token string) error {
	if token == "" {
		return &plugin.FieldError{Field: "token", Problem: "empty"}
	}
	return nil
}

// box returns aor's mailbox, creating it when create is set; nil when it
// does not exist and create is not set. Callers hold s.mu.
func (s *Store) box(aor plugin.AOR, create bool) *mailbox {
	b := s.boxes[aor]
	if b == nil && create {
		b = &mailbox{msgs: map[string]*plugin.Message{}}
		s.boxes[aor] = b
	}
	return b
}

// tidy forgets aor's mailbox once it holds neither messages nor a lease,
// so that the map does not grow with every recipient ever seen. Callers
// hold s.mu.
func (s *Store) tidy(aor plugin.AOR) {
	if b := s.boxes[aor]; b != nil && len(b.msgs) == 0 && b.owner == "" {
		delete(s.boxes, aor)
	}
}

// live reports whether token holds b's lease at now: it owns it and it has
// not ended. A nil mailbox has no lease.
func (b *mailbox) live(token string, now time.Time) bool {
	return b != nil && b.owner == token && b.until.After(now)
}

// requeue moves every in-flight id back to pending and returns how many:
// those that never failed to the head, in order; those that failed an
// attempt to the tail, in order, behind everything waiting.
func (b *mailbox) requeue() int {
	n := len(b.inflight)
	var fresh, failed []string
	for _, id := range b.inflight {
		if m := b.msgs[id]; m != nil && m.Attempts > 0 {
			failed = append(failed, id)
		} else {
			fresh = append(fresh, id)
		}
	}
	b.pending = append(append(fresh, b.pending...), failed...)
	b.inflight = nil
	return n
}

// acquire takes the lease for token until the given time unless another
// token holds it live at now; a new owner first requeues what a previous
// owner left in flight. It reports whether the lease is token's now.
func (b *mailbox) acquire(token string, until, now time.Time) bool {
	if b.owner != token {
		if b.owner != "" && b.until.After(now) {
			return false
		}
		b.requeue()
	}
	b.owner, b.until = token, until
	return true
}

// drop removes id from whichever lists hold it and forgets the message.
func (b *mailbox) drop(id string) {
	del := func(ids []string) []string { return slices.DeleteFunc(ids, func(x string) bool { return x == id }) }
	b.pending, b.inflight, b.dead = del(b.pending), del(b.inflight), del(b.dead)
	delete(b.msgs, id)
	delete(b.notify, id)
}

// state says which list holds id.
func (b *mailbox) state(id string) plugin.State {
	switch {
	case slices.Contains(b.inflight, id):
		return plugin.StateInFlight
	case slices.Contains(b.dead, id):
		return plugin.StateDead
	}
	return plugin.StatePending
}

// expired reports whether m is past its expiry at now.
func expired(m *plugin.Message, now time.Time) bool {
	return !m.Expires.IsZero() && !m.Expires.After(now)
}

// clone returns a copy of m that shares no memory with it, with state set.
// Times lose their monotonic reading, as any stored time does.
func clone(m *plugin.Message, state plugin.State) *plugin.Message {
	c := *m
	c.Raw = bytes.Clone(m.Raw)
	c.Invite = bytes.Clone(m.Invite)
	c.Received, c.Expires = m.Received.Round(0), m.Expires.Round(0)
	c.State = state
	return &c
}

// sortedAORs returns the recipients with a mailbox in a fixed order, so
// that Sweep reports them the same way every run. Callers hold s.mu.
func (s *Store) sortedAORs() []plugin.AOR {
	aors := make([]plugin.AOR, 0, len(s.boxes))
	for aor := range s.boxes {
		aors = append(aors, aor)
	}
	slices.SortFunc(aors, func(a, b plugin.AOR) int { return strings.Compare(a.String(), b.String()) })
	return aors
}

// ack removes the in-flight messages among ids and returns how many it
// removed (one acked before, or deleted meanwhile, is skipped): Ack's and
// Finish's work.
func (b *mailbox) ack(ids []string) int {
	acked := 0
	for _, id := range ids {
		i := slices.Index(b.inflight, id)
		if i < 0 {
			continue
		}
		b.inflight = slices.Delete(b.inflight, i, i+1)
		delete(b.msgs, id)
		delete(b.notify, id)
		acked++
	}
	return acked
}
