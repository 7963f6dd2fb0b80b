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
	n, err := r.deleteWatched(ctx, aor, 2, func(tx redis.Cmdable, _ []string) error {
		v, err := version(ctx, tx, aor)
		if err != nil {
			return err
		}
		return check(v)
	}, "dp_delete_all")
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
	res, err := r.deleteWatched(ctx, aor, 3, func(tx redis.Cmdable, keys []string) error {
		got, err := r.fn.queue(ctx, tx, "dp_get", keys, id).Slice()
		if err != nil {
			return err
		}
		m, err := gotMessage(aor, id, got)
		if err != nil {
			return err
		}
		return check(m)
	}, "dp_delete", id)
	if err == nil {
		err = r.deletedOne(ctx, aor, res)
	}
	if err != nil {
		return fmt.Errorf("store: delete %s for %s: %w", id, aor, err)
	}
	return nil
}

// deleteWatched runs the library function fn on aor's mailbox keys in
// MULTI/EXEC, under a WATCH of the first watched of them, once read (the
// caller's read and check, on the transaction's connection) has passed;
// it returns fn's reply.
func (r *Redis) deleteWatched(ctx context.Context, aor plugin.AOR, watched int, read func(tx redis.Cmdable, keys []string) error, fn string, args ...any) (int, error) {
	if err := checkAOR(aor); err != nil {
		return 0, err
	}
	if err := r.ready(ctx); err != nil {
		return 0, err
	}
	keys := mailboxKeys(aor)
	var del *redis.Cmd
	err := r.transact(ctx, keys[:watched], func(tx *redis.Tx) (func(redis.Pipeliner) error, error) {
		if err := read(tx, keys); err != nil {
			return nil, err
		}
		return func(p redis.Pipeliner) error {
			del = r.fn.queue(ctx, p, fn, keys, args...)
			return nil
		}, nil
	})
	if err != nil {
		return 0, err
	}
	return del.Int()
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
