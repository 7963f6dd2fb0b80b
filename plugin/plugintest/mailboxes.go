package plugintest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/deferpush/deferpush/plugin"
)

// list is one of a mailbox's id lists with the state its messages are in.
type list struct {
	ids   []string
	state plugin.State
}

// List implements plugin.Mailboxes.
func (s *Store) List(ctx context.Context, aor plugin.AOR, q plugin.ListQuery) (plugin.Page, error) {
	p, err := s.list(ctx, aor, q, func(b *mailbox) []list {
		return []list{{b.inflight, plugin.StateInFlight}, {b.pending, plugin.StatePending}}
	})
	if err != nil {
		return p, fmt.Errorf("plugintest: list %s: %w", aor, err)
	}
	return p, nil
}

// DeadLetters implements plugin.Mailboxes.
func (s *Store) DeadLetters(ctx context.Context, aor plugin.AOR, q plugin.ListQuery) (plugin.Page, error) {
	p, err := s.list(ctx, aor, q, func(b *mailbox) []list {
		return []list{{b.dead, plugin.StateDead}}
	})
	if err != nil {
		return p, fmt.Errorf("plugintest: list dead letters %s: %w", aor, err)
	}
	return p, nil
}

// list reads a page of the lists lists picks from aor's mailbox, one
// after the other, as dp_list does.
func (s *Store) list(ctx context.Context, aor plugin.AOR, q plugin.ListQuery, lists func(*mailbox) []list) (plugin.Page, error) {
	page := plugin.Page{Messages: []*plugin.Message{}, Offset: max(q.Offset, 0)}
	if err := errors.Join(ctx.Err(), checkAOR(aor)); err != nil {
		return page, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.box(aor, false)
	var ids []string
	var states []plugin.State
	if b != nil {
		for _, l := range lists(b) {
			for _, id := range l.ids {
				ids, states = append(ids, id), append(states, l.state)
			}
		}
	}
	page.Total = len(ids)
	if q.After != "" {
		page.Offset = behind(ids, q.After)
	}
	end := page.Total
	if q.Limit > 0 {
		end = min(page.Offset+q.Limit, end)
	}
	read, used := 0, 0
	for i := page.Offset; i < end; i++ {
		m := b.msgs[ids[i]]
		if q.MaxBytes > 0 && len(page.Messages) > 0 && used+m.Size() > q.MaxBytes {
			break
		}
		used += m.Size()
		c := clone(m, states[i])
		if !q.Body {
			c.Omitted, c.Raw, c.Invite = c.Size(), nil, nil
		}
		page.Messages = append(page.Messages, c)
		read++
	}
	if next := page.Offset + read; read > 0 && next < page.Total {
		page.Next, page.NextAfter = next, ids[next-1]
	}
	return page, nil
}

// behind is where a page after id starts in ids, as library.lua's
// behind finds it: behind id, or at the first greater id, searched in the
// first 1,000 ids and then by bisection.
func behind(ids []string, id string) int {
	if i := slices.Index(ids, id); i >= 0 {
		return i + 1
	}
	head := ids[:min(len(ids), 1000)]
	if i := slices.IndexFunc(head, func(v string) bool { return v > id }); i >= 0 {
		return i
	}
	return len(head) + sort.Search(len(ids)-len(head), func(i int) bool { return ids[len(head)+i] > id })
}

// Get implements plugin.Mailboxes.
func (s *Store) Get(ctx context.Context, aor plugin.AOR, id string) (*plugin.Message, error) {
	m, err := s.get(ctx, aor, id)
	if err != nil {
		return nil, fmt.Errorf("plugintest: get %s for %s: %w", id, aor, err)
	}
	return m, nil
}

func (s *Store) get(ctx context.Context, aor plugin.AOR, id string) (*plugin.Message, error) {
	if err := errors.Join(ctx.Err(), checkAOR(aor)); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.box(aor, false)
	if b == nil || b.msgs[id] == nil {
		return nil, plugin.ErrNotFound
	}
	return clone(b.msgs[id], b.state(id)), nil
}

// Delete implements plugin.Mailboxes.
func (s *Store) Delete(ctx context.Context, aor plugin.AOR, id string) error {
	if err := s.delete(ctx, aor, id); err != nil {
		return fmt.Errorf("plugintest: delete %s for %s: %w", id, aor, err)
	}
	return nil
}

func (s *Store) delete(ctx context.Context, aor plugin.AOR, id string) error {
	if err := errors.Join(ctx.Err(), checkAOR(aor)); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.box(aor, false)
	if b == nil || b.msgs[id] == nil {
		return plugin.ErrNotFound
	}
	b.drop(id)
	s.totals.Deleted++
	s.tidy(aor)
	return nil
}

// DeleteAll implements plugin.Mailboxes. The lease stays.
func (s *Store) DeleteAll(ctx context.Context, aor plugin.AOR) (int, error) {
	return s.DeleteAllIf(ctx, aor, func(string) error { return nil })
}

// DeleteAllIf implements plugin.Mailboxes: check runs under the store's
// mutex, so it must not call the store.
func (s *Store) DeleteAllIf(ctx context.Context, aor plugin.AOR, check func(version string) error) (int, error) {
	if err := errors.Join(ctx.Err(), checkAOR(aor)); err != nil {
		return 0, fmt.Errorf("plugintest: delete all for %s: %w", aor, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.box(aor, false)
	if err := check(b.version()); err != nil {
		return 0, fmt.Errorf("plugintest: delete all for %s: %w", aor, err)
	}
	if b == nil {
		return 0, nil
	}
	n := len(b.msgs)
	b.pending, b.inflight, b.dead = nil, nil, nil
	clear(b.msgs)
	clear(b.notify)
	s.totals.Deleted += int64(n)
	s.tidy(aor)
	return n, nil
}

// DeleteIf implements plugin.Mailboxes: check runs under the store's
// mutex, so it must not call the store.
func (s *Store) DeleteIf(ctx context.Context, aor plugin.AOR, id string, check func(*plugin.Message) error) error {
	err := errors.Join(ctx.Err(), checkAOR(aor))
	if err == nil {
		s.mu.Lock()
		defer s.mu.Unlock()
		b := s.box(aor, false)
		switch {
		case b == nil || b.msgs[id] == nil:
			err = plugin.ErrNotFound
		default:
			err = check(clone(b.msgs[id], b.state(id)))
		}
		if err == nil {
			b.drop(id)
			s.totals.Deleted++
			s.tidy(aor)
		}
	}
	if err != nil {
		return fmt.Errorf("plugintest: delete %s for %s: %w", id, aor, err)
	}
	return nil
}

// Version implements plugin.Mailboxes.
func (s *Store) Version(ctx context.Context, aor plugin.AOR) (string, error) {
	if err := errors.Join(ctx.Err(), checkAOR(aor)); err != nil {
		return "", fmt.Errorf("plugintest: version of %s: %w", aor, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.box(aor, false).version(), nil
}

// version digests what List shows of b (nil: an empty mailbox): the ids
// in flight and pending, in order, each with its state, attempts and
// last error. Callers hold s.mu.
func (b *mailbox) version() string {
	h := sha256.New()
	if b != nil {
		for _, l := range []list{{b.inflight, plugin.StateInFlight}, {b.pending, plugin.StatePending}} {
			for _, id := range l.ids {
				m := b.msgs[id]
				fmt.Fprintf(h, "%s %s %d %q\n", id, l.state, m.Attempts, m.LastError)
			}
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

// RequeueDeadLetters implements plugin.Mailboxes.
func (s *Store) RequeueDeadLetters(ctx context.Context, aor plugin.AOR) (int, error) {
	if err := errors.Join(ctx.Err(), checkAOR(aor)); err != nil {
		return 0, fmt.Errorf("plugintest: requeue dead letters for %s: %w", aor, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.box(aor, false)
	if b == nil {
		return 0, nil
	}
	n := len(b.dead)
	for _, id := range b.dead {
		b.msgs[id].Attempts, b.msgs[id].LastError = 0, ""
	}
	b.pending = append(b.dead, b.pending...)
	b.dead = nil
	return n, nil
}

// Count implements plugin.Mailboxes.
func (s *Store) Count(ctx context.Context, aor plugin.AOR) (plugin.Counts, error) {
	if err := errors.Join(ctx.Err(), checkAOR(aor)); err != nil {
		return plugin.Counts{}, fmt.Errorf("plugintest: count %s: %w", aor, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.box(aor, false)
	if b == nil {
		return plugin.Counts{}, nil
	}
	return plugin.Counts{Pending: len(b.pending), InFlight: len(b.inflight), Dead: len(b.dead)}, nil
}

// Totals implements plugin.Mailboxes. Mailboxes is exact: it never lags
// as the Redis store's may.
func (s *Store) Totals(ctx context.Context) (plugin.Totals, error) {
	if err := ctx.Err(); err != nil {
		return plugin.Totals{}, fmt.Errorf("plugintest: totals: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.totals
	for _, b := range s.boxes {
		if len(b.msgs) > 0 {
			t.Mailboxes++
		}
	}
	return t, nil
}

// Recipients implements plugin.Queue: recipients in AOR order, the cursor
// being the last one returned.
func (s *Store) Recipients(ctx context.Context, cursor string, n int) ([]plugin.AOR, string, error) {
	if err := ctx.Err(); err != nil {
		return nil, "", fmt.Errorf("plugintest: recipients: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var all []plugin.AOR
	for aor, b := range s.boxes {
		if len(b.msgs) > 0 && aor.String() > cursor {
			all = append(all, aor)
		}
	}
	slices.SortFunc(all, func(a, b plugin.AOR) int { return strings.Compare(a.String(), b.String()) })
	if len(all) <= max(n, 1) {
		return all, "", nil
	}
	all = all[:max(n, 1)]
	return all, all[len(all)-1].String(), nil
}
