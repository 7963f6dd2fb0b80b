package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/deferpush/deferpush/plugin"
)

// The admin API's conditional requests (If-Match on a DELETE) compare
// what a client read with what is stored and delete in one step: a
// WATCH of the mailbox's keys, the read and the caller's check, then the
// library function that deletes inside MULTI/EXEC, which Redis refuses
// when a watched key changed meanwhile (optimistic tries again).

// Version implements plugin.Mailboxes: a digest of the ids pending or in
// flight (q), in order, how many are in flight, and the attempts and
// last error of each (t:<id> in m). Records never change once stored.
func (r *Redis) Version(ctx context.Context, aor plugin.AOR) (string, error) {
	err := checkAOR(aor)
	if err == nil {
		err = r.ready(ctx)
	}
	var v string
	if err == nil {
		v, err = version(ctx, r.c, aor)
	}
	if err != nil {
		return "", fmt.Errorf("store: version of %s: %w", aor, err)
	}
	return v, nil
}

// version reads and digests what Version covers with c: the client, or a
// transaction's connection under WATCH (whose EXEC then fails if any of
// it changed; read with the client, the reads may straddle a change,
// which gives a version that matches no state a client was shown).
func version(ctx context.Context, c redis.Cmdable, aor plugin.AOR) (string, error) {
	keys := mailboxKeys(aor)
	var ids *redis.StringSliceCmd
	var n *redis.StringCmd
	_, _ = c.Pipelined(ctx, func(p redis.Pipeliner) error {
		ids, n = p.LRange(ctx, keys[0], 0, -1), p.HGet(ctx, keys[1], "n")
		return nil
	})
	if err := ids.Err(); err != nil {
		return "", err
	}
	if err := n.Err(); err != nil && !errors.Is(err, redis.Nil) {
		return "", err
	}
	var tries []any
	if len(ids.Val()) > 0 {
		fields := make([]string, len(ids.Val()))
		for i, id := range ids.Val() {
			fields[i] = "t:" + id
		}
		var err error
		if tries, err = c.HMGet(ctx, keys[1], fields...).Result(); err != nil {
			return "", err
		}
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s\n", n.Val())
	for i, id := range ids.Val() {
		t, _ := tries[i].(string)
		fmt.Fprintf(h, "%s %q\n", id, t)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// DeleteAllIf implements plugin.Mailboxes: under a WATCH of q and m, the
// version, check, then dp_delete_all in MULTI/EXEC.
func (r *Redis) DeleteAllIf(ctx context.Context, aor plugin.AOR, check func(version string) error) (int, error) {
	err := checkAOR(aor)
	if err == nil {
		err = r.ready(ctx)
	}
	keys := mailboxKeys(aor)
	var del *redis.Cmd
	if err == nil {
		err = r.transact(ctx, keys[:2], func(tx *redis.Tx) (func(redis.Pipeliner) error, error) {
			v, err := version(ctx, tx, aor)
			if err != nil {
				return nil, err
			}
			if err := check(v); err != nil {
				return nil, err
			}
			return func(p redis.Pipeliner) error {
				del = r.fn.queue(ctx, p, "dp_delete_all", keys)
				return nil
			}, nil
		})
	}
	n := 0
	if err == nil {
		n, err = del.Int()
	}
	if err != nil {
		return 0, fmt.Errorf("store: delete all for %s: %w", aor, err)
	}
	r.deletedAll(ctx, aor, n)
	return n, nil
}

// DeleteIf implements plugin.Mailboxes: under a WATCH of q, m and d (the
// message's state is where its id is), dp_get, check, then dp_delete in
// MULTI/EXEC.
func (r *Redis) DeleteIf(ctx context.Context, aor plugin.AOR, id string, check func(*plugin.Message) error) error {
	err := checkAOR(aor)
	if err == nil {
		err = r.ready(ctx)
	}
	keys := mailboxKeys(aor)
	var del *redis.Cmd
	if err == nil {
		err = r.transact(ctx, keys[:3], func(tx *redis.Tx) (func(redis.Pipeliner) error, error) {
			res, err := r.fn.queue(ctx, tx, "dp_get", keys, id).Slice()
			if err != nil {
				return nil, err
			}
			m, err := gotMessage(aor, id, res)
			if err != nil {
				return nil, err
			}
			if err := check(m); err != nil {
				return nil, err
			}
			return func(p redis.Pipeliner) error {
				del = r.fn.queue(ctx, p, "dp_delete", keys, id)
				return nil
			}, nil
		})
	}
	if err == nil {
		var res int
		if res, err = del.Int(); err == nil {
			err = r.deletedOne(ctx, aor, res)
		}
	}
	if err != nil {
		return fmt.Errorf("store: delete %s for %s: %w", id, aor, err)
	}
	return nil
}

// transact is optimistic for a transaction that calls the function
// library: when the library was missing (a Redis restarted without
// persistence), it is loaded and the transaction runs once more.
func (r *Redis) transact(ctx context.Context, keys []string, read func(*redis.Tx) (func(redis.Pipeliner) error, error)) error {
	err := r.optimistic(ctx, keys, read)
	if r.fn.heal(ctx, err) {
		err = r.optimistic(ctx, keys, read)
	}
	return err
}
