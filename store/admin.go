package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/deferpush/deferpush/plugin"
)

// List implements plugin.Mailboxes.
func (r *Redis) List(ctx context.Context, aor plugin.AOR, q plugin.ListQuery) (plugin.Page, error) {
	p, err := r.list(ctx, aor, "q", q)
	if err != nil {
		return p, fmt.Errorf("store: list %s: %w", aor, err)
	}
	return p, nil
}

// DeadLetters implements plugin.Mailboxes.
func (r *Redis) DeadLetters(ctx context.Context, aor plugin.AOR, q plugin.ListQuery) (plugin.Page, error) {
	p, err := r.list(ctx, aor, "d", q)
	if err != nil {
		return p, fmt.Errorf("store: list dead letters %s: %w", aor, err)
	}
	return p, nil
}

// errListReply is a dp_list answer of another shape than documented.
var errListReply = errors.New("unexpected dp_list reply")

// list pages through q (which: "q") or d ("d") with dp_list.
func (r *Redis) list(ctx context.Context, aor plugin.AOR, which string, q plugin.ListQuery) (plugin.Page, error) {
	page := plugin.Page{Messages: []*plugin.Message{}}
	if err := checkAOR(aor); err != nil {
		return page, err
	}
	if err := r.ready(ctx); err != nil {
		return page, err
	}
	body := ""
	if q.Body {
		body = "body"
	}
	res, err := r.fn.run(ctx, "dp_list", mailboxKeys(aor), which, max(q.Offset, 0), q.Limit, q.After, body, max(q.MaxBytes, 0)).Slice()
	if err != nil {
		return page, err
	}
	total, start, read, last, ok := listHead(res)
	if !ok || (len(res)-4)%5 != 0 {
		return page, errListReply
	}
	page.Total, page.Offset = total, start
	for i := 4; i < len(res); i += 5 {
		id, rec, length, tries, state, ok := listEntry(res[i : i+5])
		if !ok {
			return page, errListReply
		}
		var m *plugin.Message
		if q.Body {
			m, err = decode(aor, id, rec, tries)
		} else {
			m, err = decodeHead(aor, id, rec, tries, length)
		}
		if err != nil {
			return page, err
		}
		m.State = plugin.State(state)
		page.Messages = append(page.Messages, m)
	}
	if end := start + read; read > 0 && end < total {
		page.Next, page.NextAfter = end, last
	}
	return page, nil
}

// listHead reads the four values dp_list's answer starts with.
func listHead(res []any) (total, start, read int, last string, ok bool) {
	if len(res) < 4 {
		return 0, 0, 0, "", false
	}
	t, ok1 := res[0].(int64)
	s, ok2 := res[1].(int64)
	n, ok3 := res[2].(int64)
	last, ok4 := res[3].(string)
	return int(t), int(s), int(n), last, ok1 && ok2 && ok3 && ok4
}

// listEntry reads one message of dp_list's answer.
func listEntry(e []any) (id, rec string, length int, tries, state string, ok bool) {
	id, ok1 := e[0].(string)
	rec, ok2 := e[1].(string)
	n, ok3 := e[2].(int64)
	tries, ok4 := e[3].(string)
	state, ok5 := e[4].(string)
	return id, rec, int(n), tries, state, ok1 && ok2 && ok3 && ok4 && ok5
}

// Get implements plugin.Mailboxes.
func (r *Redis) Get(ctx context.Context, aor plugin.AOR, id string) (*plugin.Message, error) {
	m, err := r.get(ctx, aor, id)
	if err != nil {
		return nil, fmt.Errorf("store: get %s for %s: %w", id, aor, err)
	}
	return m, nil
}

func (r *Redis) get(ctx context.Context, aor plugin.AOR, id string) (*plugin.Message, error) {
	if err := checkAOR(aor); err != nil {
		return nil, err
	}
	if err := r.ready(ctx); err != nil {
		return nil, err
	}
	res, err := r.fn.run(ctx, "dp_get", mailboxKeys(aor), id).Slice()
	if err != nil {
		return nil, err
	}
	return gotMessage(aor, id, res)
}

// gotMessage decodes dp_get's answer res about id: ErrNotFound when it
// knows no such message.
func gotMessage(aor plugin.AOR, id string, res []any) (*plugin.Message, error) {
	if len(res) == 0 {
		return nil, plugin.ErrNotFound
	}
	m, err := decode(aor, id, res[0].(string), res[1].(string))
	if err != nil {
		return nil, err
	}
	m.State = plugin.State(res[2].(string))
	return m, nil
}

// Delete implements plugin.Mailboxes.
func (r *Redis) Delete(ctx context.Context, aor plugin.AOR, id string) error {
	if err := r.delete(ctx, aor, id); err != nil {
		return fmt.Errorf("store: delete %s for %s: %w", id, aor, err)
	}
	return nil
}

func (r *Redis) delete(ctx context.Context, aor plugin.AOR, id string) error {
	if err := checkAOR(aor); err != nil {
		return err
	}
	if err := r.ready(ctx); err != nil {
		return err
	}
	res, err := r.fn.run(ctx, "dp_delete", mailboxKeys(aor), id).Int()
	if err != nil {
		return err
	}
	return r.deletedOne(ctx, aor, res)
}

// deletedOne follows dp_delete's answer res: ErrNotFound for 0, else the
// count of deleted messages and, when the mailbox is now empty (2), its
// index entry.
func (r *Redis) deletedOne(ctx context.Context, aor plugin.AOR, res int) error {
	switch res {
	case 0:
		return plugin.ErrNotFound
	case 2:
		r.emptied(ctx, aor)
	}
	r.c.HIncrBy(ctx, statsKey, "deleted", 1)
	return nil
}

// DeleteAll implements plugin.Mailboxes.
func (r *Redis) DeleteAll(ctx context.Context, aor plugin.AOR) (int, error) {
	err := checkAOR(aor)
	if err == nil {
		err = r.ready(ctx)
	}
	n := 0
	if err == nil {
		n, err = r.fn.run(ctx, "dp_delete_all", mailboxKeys(aor)).Int()
	}
	if err != nil {
		return 0, fmt.Errorf("store: delete all for %s: %w", aor, err)
	}
	r.deletedAll(ctx, aor, n)
	return n, nil
}

// deletedAll counts the n messages dp_delete_all removed from aor's
// mailbox and has the sweeper look at its index entry now.
func (r *Redis) deletedAll(ctx context.Context, aor plugin.AOR, n int) {
	if n > 0 {
		pipe := r.c.Pipeline()
		pipe.HIncrBy(ctx, statsKey, "deleted", int64(n))
		pipe.ZAddXX(ctx, mailboxesKey, redis.Z{Score: float64(ms(r.now())), Member: aor.String()})
		_, _ = pipe.Exec(ctx)
	}
}

// RequeueDeadLetters implements plugin.Mailboxes.
func (r *Redis) RequeueDeadLetters(ctx context.Context, aor plugin.AOR) (int, error) {
	err := checkAOR(aor)
	if err == nil {
		err = r.ready(ctx)
	}
	n := 0
	if err == nil {
		n, err = r.fn.run(ctx, "dp_requeue_dead", mailboxKeys(aor)).Int()
	}
	if err != nil {
		return 0, fmt.Errorf("store: requeue dead letters for %s: %w", aor, err)
	}
	if n > 0 {
		// Pending again: a proxy's cache of who may have messages must
		// hear of it (best effort, as the index).
		r.addRecent(ctx, r.c, aor)
	}
	return n, nil
}

// Count implements plugin.Mailboxes.
func (r *Redis) Count(ctx context.Context, aor plugin.AOR) (plugin.Counts, error) {
	err := checkAOR(aor)
	if err == nil {
		err = r.ready(ctx)
	}
	var res []int64
	if err == nil {
		res, err = r.fn.run(ctx, "dp_count", mailboxKeys(aor)).Int64Slice()
	}
	if err != nil {
		return plugin.Counts{}, fmt.Errorf("store: count %s: %w", aor, err)
	}
	return plugin.Counts{Pending: int(res[0] - res[1]), InFlight: int(res[1]), Dead: int(res[2])}, nil
}

// Totals implements plugin.Mailboxes.
func (r *Redis) Totals(ctx context.Context) (plugin.Totals, error) {
	pipe := r.c.Pipeline()
	h, z := pipe.HGetAll(ctx, statsKey), pipe.ZCard(ctx, mailboxesKey)
	if _, err := pipe.Exec(ctx); err != nil {
		return plugin.Totals{}, fmt.Errorf("store: totals: %w", err)
	}
	get := func(f string) int64 { n, _ := strconv.ParseInt(h.Val()[f], 10, 64); return n }
	return plugin.Totals{
		Stored: get("stored"), Pushed: get("pushed"), Failed: get("failed"), Expired: get("expired"),
		DeadLettered: get("dead_lettered"), Deleted: get("deleted"), Mailboxes: z.Val(),
	}, nil
}
