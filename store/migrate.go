package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// Converting the first layout.
//
// Releases before store v2 kept a recipient in up to ten keys
// (dp:{aor}:pending, inflight, dead, msgs, expiry, tries, lock, gone,
// settings, contact, notify; keys.go). Before its first operation the store
// scans every master for keys of that layout and converts each recipient
// it finds with dp_migrate1, a scan page (1,000 keys) at a time, one
// function call per recipient: nothing stored is lost, messages keep
// their order and attempts, what was in flight is pending again (its
// lease is dropped: the release that held it is gone), failure notices
// still wait, a registration keeps what a push learnt (pager_only). A
// complete pass deletes the first layout's index of notify sets
// (dp:notices, which this layout does without) and sets dp:layout to
// "2", and later starts skip the scan. A recipient is
// converted as its key writes it, without parsing the AOR again.
//
// The scan sees every key that exists throughout it. Instances of the
// earlier release must be stopped first: what one writes after the pass
// stays in the first layout, unseen (until dp:layout is deleted and an
// instance starts again).

const (
	layoutV2 = "2"
	// migrateScan is the SCAN COUNT of the conversion.
	migrateScan = 1000
)

// migrate converts the keys of the first layout, once.
func (r *Redis) migrate(ctx context.Context) error {
	v, err := r.c.Get(ctx, layoutKey).Result()
	switch {
	case err == nil && v == layoutV2:
		return nil
	case err != nil && !errors.Is(err, redis.Nil):
		return fmt.Errorf("read %s: %w", layoutKey, err)
	}
	// A cluster's masters are scanned at once.
	var recipients, messages atomic.Int64
	err = eachMaster(ctx, r.c, func(ctx context.Context, c *redis.Client) error {
		var cursor uint64
		for {
			keys, next, err := c.Scan(ctx, cursor, layoutPattern, migrateScan).Result()
			if err != nil {
				return err
			}
			n, moved, err := r.migratePage(ctx, keys)
			if err != nil {
				return err
			}
			recipients.Add(n)
			messages.Add(moved)
			if next == 0 {
				return nil
			}
			cursor = next
		}
	})
	if err != nil {
		return fmt.Errorf("convert the first layout: %w", err)
	}
	if n := recipients.Load(); n > 0 {
		r.log.Info("store layout converted", "recipients", n, "messages", messages.Load())
	}
	if err := r.c.Del(ctx, firstNoticesKey).Err(); err != nil {
		return fmt.Errorf("delete %s: %w", firstNoticesKey, err)
	}
	if err := r.c.Set(ctx, layoutKey, layoutV2, 0).Err(); err != nil {
		return fmt.Errorf("write %s: %w", layoutKey, err)
	}
	return nil
}

// migratePage converts the recipients of the first-layout keys among keys
// and returns how many recipients and messages it moved.
func (r *Redis) migratePage(ctx context.Context, keys []string) (recipients, messages int64, err error) {
	var aors []string
	for _, k := range keys {
		if aor, ok := firstLayoutAOR(k); ok && !slices.Contains(aors, aor) {
			aors = append(aors, aor)
		}
	}
	if len(aors) == 0 {
		return 0, 0, nil
	}
	pipe := r.c.Pipeline()
	cmds := make([]*redis.Cmd, len(aors))
	for i, aor := range aors {
		cmds[i] = r.fn.queue(ctx, pipe, "dp_migrate1", migrateKeys(aor))
	}
	_, _ = pipe.Exec(ctx) // errors are per command
	for i, aor := range aors {
		res, err := r.fn.again(ctx, cmds[i], "dp_migrate1", migrateKeys(aor)).Int64Slice()
		if err != nil {
			return recipients, messages, fmt.Errorf("%s: %w", aor, err)
		}
		if res[1] > 0 {
			recipients++
			messages += res[0]
		}
		// A proxy's cache of who may have messages, warm already, hears
		// of the moved mailbox (best effort, as the index; one that had
		// nothing costs the proxy one dp_register).
		r.addRecentMember(ctx, r.c, aor)
	}
	return recipients, messages, nil
}

// firstLayoutAOR returns the recipient of a key of the first layout.
func firstLayoutAOR(key string) (string, bool) {
	rest, ok := strings.CutPrefix(key, "dp:{")
	i := strings.LastIndex(rest, "}:")
	if !ok || i < 0 || !slices.Contains(firstLayout, rest[i+2:]) {
		return "", false
	}
	return rest[:i], true
}
