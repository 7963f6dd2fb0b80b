package plugintest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/deferpush/deferpush/plugin"
)

// leaseCall checks what every lease operation needs: a context not done,
// a recipient and a token.
func leaseCall(ctx context.Context, aor plugin.AOR, token string) error {
	return errors.Join(ctx.Err(), checkAOR(aor), checkToken(token))
}

// Append implements plugin.Queue. It fills in m.ID and m.Expires as the
// contract says and stores a copy of m: Attempts, LastError and State of
// m are not stored.
func (s *Store) Append(ctx context.Context, m *plugin.Message, lim plugin.Limits) error {
	if err := s.append(ctx, m, lim); err != nil {
		return fmt.Errorf("plugintest: append for %s: %w", m.Recipient, err)
	}
	return nil
}

func (s *Store) append(ctx context.Context, m *plugin.Message, lim plugin.Limits) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := m.Validate(); err != nil {
		return err
	}
	if err := checkAOR(m.Recipient); err != nil {
		return err
	}
	if lim.MaxMessageSize > 0 && m.Counted() > lim.MaxMessageSize {
		return &plugin.LimitError{Err: plugin.ErrTooLarge, Limit: "max_message_size", Max: lim.MaxMessageSize, Got: m.Counted()}
	}
	if m.ID == "" {
		m.ID = plugin.NewID(m.Received)
	}
	if m.Expires.IsZero() && lim.TTL > 0 {
		m.Expires = m.Received.Add(lim.TTL)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.box(m.Recipient, true)
	if _, ok := b.msgs[m.ID]; ok {
		return nil // already stored: a retried Append
	}
	// Pending, in flight and dead letters all count, as Policy.MaxMailbox says.
	if lim.MaxMailbox > 0 && len(b.msgs) >= lim.MaxMailbox {
		return &plugin.LimitError{Err: plugin.ErrMailboxFull, Limit: "max_mailbox", Max: lim.MaxMailbox, Got: len(b.msgs)}
	}
	c := clone(m, "")
	c.Attempts, c.LastError, c.NotifyFailure = 0, "", false
	b.msgs[c.ID] = c
	if m.NotifyFailure && !m.Expires.IsZero() {
		if b.notify == nil {
			b.notify = map[string]bool{}
		}
		b.notify[c.ID] = true
	}
	b.pending = append(b.pending, c.ID)
	s.totals.Stored++
	return nil
}

// Claim implements plugin.Queue.
func (s *Store) Claim(ctx context.Context, aor plugin.AOR, token string, n int, lease time.Duration) ([]*plugin.Message, error) {
	msgs, err := s.claim(ctx, aor, token, n, lease)
	if err != nil {
		return nil, fmt.Errorf("plugintest: claim for %s: %w", aor, err)
	}
	return msgs, nil
}

// ClaimAndRead implements plugin.Queue.
func (s *Store) ClaimAndRead(ctx context.Context, aor plugin.AOR, token string, n int, lease time.Duration) (plugin.ClaimRead, error) {
	msgs, err := s.Claim(ctx, aor, token, n, lease)
	if err != nil {
		return plugin.ClaimRead{}, err
	}
	reg, u, err := s.ContactAndSettings(ctx, aor)
	return plugin.NewClaimRead(msgs, reg, u, err)
}

func (s *Store) claim(ctx context.Context, aor plugin.AOR, token string, n int, lease time.Duration) ([]*plugin.Message, error) {
	if err := leaseCall(ctx, aor, token); err != nil {
		return nil, err
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.box(aor, true)
	if !b.acquire(token, now.Add(lease), now) {
		return nil, plugin.ErrLeaseLost
	}
	out := []*plugin.Message{}
	for len(out) < n && len(b.pending) > 0 {
		id := b.pending[0]
		b.pending = b.pending[1:]
		m := b.msgs[id]
		if expired(m, now) {
			// One whose sender waits for a failure notice stays stored,
			// in no list, for Sweep to report and drop.
			if !b.notify[id] {
				delete(b.msgs, id)
				s.totals.Expired++
			}
			continue
		}
		b.inflight = append(b.inflight, id)
		out = append(out, clone(m, plugin.StateInFlight))
	}
	return out, nil
}

// Ack implements plugin.Queue.
func (s *Store) Ack(ctx context.Context, aor plugin.AOR, token string, ids ...string) (int, error) {
	n, err := s.ack(ctx, aor, token, ids)
	if err != nil {
		return 0, fmt.Errorf("plugintest: ack %d for %s: %w", len(ids), aor, err)
	}
	return n, nil
}

func (s *Store) ack(ctx context.Context, aor plugin.AOR, token string, ids []string) (int, error) {
	if err := leaseCall(ctx, aor, token); err != nil {
		return 0, err
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.box(aor, false)
	if !b.live(token, now) {
		return 0, plugin.ErrLeaseLost
	}
	acked := b.ack(ids)
	s.totals.Pushed += int64(acked)
	return acked, nil
}

// Fail implements plugin.Queue.
func (s *Store) Fail(ctx context.Context, aor plugin.AOR, token, id, reason string, maxAttempts int) (bool, error) {
	dead, err := s.fail(ctx, aor, token, id, reason, maxAttempts)
	if err != nil {
		return false, fmt.Errorf("plugintest: fail %s for %s: %w", id, aor, err)
	}
	return dead, nil
}

func (s *Store) fail(ctx context.Context, aor plugin.AOR, token, id, reason string, maxAttempts int) (bool, error) {
	if err := leaseCall(ctx, aor, token); err != nil {
		return false, err
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.box(aor, false)
	if !b.live(token, now) {
		return false, plugin.ErrLeaseLost
	}
	i := slices.Index(b.inflight, id)
	if i < 0 {
		return false, plugin.ErrNotFound
	}
	m := b.msgs[id]
	m.Attempts++
	m.LastError = reason
	s.totals.Failed++
	if maxAttempts <= 0 || m.Attempts < maxAttempts {
		return false, nil
	}
	b.inflight = slices.Delete(b.inflight, i, i+1)
	b.dead = append(b.dead, id)
	delete(b.notify, id) // the caller tells the sender now
	s.totals.DeadLettered++
	return true, nil
}

// Release implements plugin.Queue.
func (s *Store) Release(ctx context.Context, aor plugin.AOR, token string) (int, error) {
	if err := leaseCall(ctx, aor, token); err != nil {
		return 0, fmt.Errorf("plugintest: release %s: %w", aor, err)
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.box(aor, false)
	if !b.live(token, now) {
		return 0, fmt.Errorf("plugintest: release %s: %w", aor, plugin.ErrLeaseLost)
	}
	return b.requeue(), nil
}

// Lock implements plugin.Queue.
func (s *Store) Lock(ctx context.Context, aor plugin.AOR, token string, ttl time.Duration) (bool, error) {
	if err := leaseCall(ctx, aor, token); err != nil {
		return false, fmt.Errorf("plugintest: lock %s: %w", aor, err)
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.box(aor, true).acquire(token, now.Add(ttl), now), nil
}

// RenewLock implements plugin.Queue.
func (s *Store) RenewLock(ctx context.Context, aor plugin.AOR, token string, ttl time.Duration) error {
	if err := leaseCall(ctx, aor, token); err != nil {
		return fmt.Errorf("plugintest: renew lock %s: %w", aor, err)
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.box(aor, false)
	if !b.live(token, now) {
		return fmt.Errorf("plugintest: renew lock %s: %w", aor, plugin.ErrLeaseLost)
	}
	b.until = now.Add(ttl)
	return nil
}

// Unlock implements plugin.Queue. Like the Redis store it works when token
// owns the lease, live or not, and when nobody does.
func (s *Store) Unlock(ctx context.Context, aor plugin.AOR, token string) error {
	if err := leaseCall(ctx, aor, token); err != nil {
		return fmt.Errorf("plugintest: unlock %s: %w", aor, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.box(aor, false)
	if b == nil {
		return nil
	}
	if b.owner != "" && b.owner != token {
		return fmt.Errorf("plugintest: unlock %s: %w", aor, plugin.ErrLeaseLost)
	}
	b.requeue()
	b.owner, b.until = "", time.Time{}
	s.tidy(aor)
	return nil
}

// Finish implements plugin.Queue: Ack, then Unlock, under one lock. A
// lease that is nobody's, none of ids stored, is a retry whose first try
// went through: no error.
func (s *Store) Finish(ctx context.Context, aor plugin.AOR, token string, ids ...string) (int, error) {
	if err := leaseCall(ctx, aor, token); err != nil {
		return 0, fmt.Errorf("plugintest: finish %s: %w", aor, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.box(aor, false)
	if b == nil {
		return 0, nil // nothing stored: a retry whose first try went through
	}
	if b.owner != "" && b.owner != token {
		return 0, fmt.Errorf("plugintest: finish %s: %w", aor, plugin.ErrLeaseLost)
	}
	acked := 0
	var err error
	stored := slices.ContainsFunc(ids, func(id string) bool { _, ok := b.msgs[id]; return ok })
	if b.owner == "" && stored || b.owner != "" && len(ids) > 0 && !b.live(token, s.now()) {
		err = fmt.Errorf("plugintest: finish %s: %w", aor, plugin.ErrLeaseLost)
	} else {
		acked = b.ack(ids)
		s.totals.Pushed += int64(acked)
	}
	b.requeue()
	b.owner, b.until = "", time.Time{}
	s.tidy(aor)
	return acked, err
}

// Sweep implements plugin.Queue. Leases and expiry are judged at now, not
// by the store's clock, as the contract says.
func (s *Store) Sweep(ctx context.Context, now time.Time) (plugin.SweepStats, error) {
	var st plugin.SweepStats
	if err := ctx.Err(); err != nil {
		return st, fmt.Errorf("plugintest: sweep: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, aor := range s.sortedAORs() {
		b := s.boxes[aor]
		held := b.owner != "" && b.until.After(now)
		if !held {
			if n := b.requeue(); n > 0 {
				st.Requeued += n
				st.Requeue = append(st.Requeue, aor)
			}
			b.owner, b.until = "", time.Time{}
		}
		// An expired message in flight under a live lease waits for its
		// push to end. Failure notices first: by expiry, then id.
		var notices []*plugin.Message
		for id := range b.notify {
			m := b.msgs[id]
			if m != nil && expired(m, now) && !(held && slices.Contains(b.inflight, id)) {
				c := clone(m, "")
				c.NotifyFailure = true
				notices = append(notices, c)
				delete(b.notify, id)
			}
		}
		slices.SortFunc(notices, func(x, y *plugin.Message) int {
			if c := x.Expires.Compare(y.Expires); c != 0 {
				return c
			}
			return strings.Compare(x.ID, y.ID)
		})
		st.Undelivered = append(st.Undelivered, notices...)
		for id, m := range b.msgs {
			if expired(m, now) && !(held && slices.Contains(b.inflight, id)) {
				b.drop(id)
				st.Expired++
			}
		}
		s.tidy(aor)
	}
	s.totals.Expired += int64(st.Expired)
	return st, nil
}
