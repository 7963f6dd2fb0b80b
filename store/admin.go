package store

import (
	"context"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/deferpush/deferpush/plugin"
)

// List implements plugin.Mailboxes.
func (r *Redis) List(ctx context.Context, aor plugin.AOR, offset, limit int) (plugin.Page, error) {
	p, err := r.list(ctx, aor, offset, limit, []plugin.State{plugin.StateInFlight, plugin.StatePending},
		inflightKey(aor), pendingKey(aor))
	if err != nil {
		return p, fmt.Errorf("store: list %s: %w", aor, err)
	}
	return p, nil
}

// DeadLetters implements plugin.Mailboxes.
func (r *Redis) DeadLetters(ctx context.Context, aor plugin.AOR, offset, limit int) (plugin.Page, error) {
	p, err := r.list(ctx, aor, offset, limit, []plugin.State{plugin.StateDead}, deadKey(aor))
	if err != nil {
		return p, fmt.Errorf("store: list dead letters %s: %w", aor, err)
	}
	return p, nil
}

func (r *Redis) list(ctx context.Context, aor plugin.AOR, offset, limit int, states []plugin.State, lists ...string) (plugin.Page, error) {
	page := plugin.Page{Messages: []*plugin.Message{}}
	if err := checkAOR(aor); err != nil {
		return page, err
	}
	offset = max(offset, 0)
	res, err := listScript.Run(ctx, r.c, append([]string{msgsKey(aor), triesKey(aor)}, lists...), offset, limit).Slice()
	if err != nil {
		return page, err
	}
	page.Total = int(res[0].(int64))
	for i := 1; i+3 < len(res); i += 4 {
		id, rec := res[i].(string), res[i+1].(string)
		if rec == "" {
			continue // deleted between LRANGE and HGET cannot happen in a script; be safe
		}
		m, err := decode(aor, id, rec, res[i+2].(string))
		if err != nil {
			return page, err
		}
		m.State = states[res[i+3].(int64)-1]
		page.Messages = append(page.Messages, m)
	}
	if end := offset + len(page.Messages); limit > 0 && end < page.Total {
		page.Next = end
	}
	return page, nil
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
	res, err := getScript.Run(ctx, r.c, mailboxKeys(aor), id).Slice()
	if err != nil {
		return nil, err
	}
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
	err := checkAOR(aor)
	if err == nil {
		var res int
		res, err = deleteScript.Run(ctx, r.c, mailboxKeys(aor), id).Int()
		if err == nil {
			err = r.outcome(ctx, aor, res)
		}
	}
	if err != nil {
		return fmt.Errorf("store: delete %s for %s: %w", id, aor, err)
	}
	r.c.HIncrBy(ctx, statsKey, "deleted", 1)
	return nil
}

// DeleteAll implements plugin.Mailboxes.
func (r *Redis) DeleteAll(ctx context.Context, aor plugin.AOR) (int, error) {
	err := checkAOR(aor)
	n := 0
	if err == nil {
		n, err = deleteAllScript.Run(ctx, r.c, mailboxKeys(aor)).Int()
	}
	if err != nil {
		return 0, fmt.Errorf("store: delete all for %s: %w", aor, err)
	}
	if n > 0 {
		pipe := r.c.Pipeline()
		pipe.HIncrBy(ctx, statsKey, "deleted", int64(n))
		pipe.ZAddXX(ctx, mailboxesKey, redis.Z{Score: float64(ms(r.now())), Member: aor.String()})
		_, _ = pipe.Exec(ctx)
	}
	return n, nil
}

// RequeueDeadLetters implements plugin.Mailboxes.
func (r *Redis) RequeueDeadLetters(ctx context.Context, aor plugin.AOR) (int, error) {
	err := checkAOR(aor)
	n := 0
	if err == nil {
		n, err = requeueDeadScript.Run(ctx, r.c, mailboxKeys(aor)).Int()
	}
	if err != nil {
		return 0, fmt.Errorf("store: requeue dead letters for %s: %w", aor, err)
	}
	return n, nil
}

// Count implements plugin.Mailboxes.
func (r *Redis) Count(ctx context.Context, aor plugin.AOR) (plugin.Counts, error) {
	if err := checkAOR(aor); err != nil {
		return plugin.Counts{}, fmt.Errorf("store: count %s: %w", aor, err)
	}
	pipe := r.c.Pipeline()
	p, f, d := pipe.LLen(ctx, pendingKey(aor)), pipe.LLen(ctx, inflightKey(aor)), pipe.LLen(ctx, deadKey(aor))
	if _, err := pipe.Exec(ctx); err != nil {
		return plugin.Counts{}, fmt.Errorf("store: count %s: %w", aor, err)
	}
	return plugin.Counts{Pending: int(p.Val()), InFlight: int(f.Val()), Dead: int(d.Val())}, nil
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
