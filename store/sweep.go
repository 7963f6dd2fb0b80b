package store

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/deferpush/deferpush/plugin"
)

// Sweeping, and why the global indexes cannot lose a message.
//
// dp:leases lists recipients that may have messages in flight. Claim adds
// the recipient (score: now) in the round trip that moves messages; the
// sweeper runs dp_recover on each entry and removes an entry only when no
// lease is live, nothing is in flight, the entry is older than leaseIdle
// and its score is unchanged (dp_index_cas). A Claim that starts after
// the sweeper read the entry has rewritten its score, so its entry stays.
// Should an entry still be missed, the next Lock or Claim for that
// recipient requeues what a dead owner left in flight.
//
// dp:mailboxes lists recipients with stored messages, scored by the
// earliest expiry to look at. Append lowers the score (ZADD LT) in the
// same round trip; the sweeper visits entries whose score has passed,
// drops expired messages (dp_expire, a bounded batch a call, so that a
// large mailbox never holds Redis long), and either moves the score to
// the next expiry or, for an empty mailbox, marks it gone (in its slot)
// and removes the entry if its score is unchanged. An Append that finds
// the gone mark indexes the mailbox again. A message missed by the index
// (or by a sweep, when its mailbox changed between two calls) is never
// lost or delivered late (Claim checks expiry); it is only removed later.
// The same visits report the failure notices (notices.go).

const (
	// leaseIdle is how long an idle lease-index entry is kept: longer than
	// a Claim can take between its two round trips.
	leaseIdle = time.Minute
	// sweepBatch is the number of mailboxes handled per pipeline.
	sweepBatch = 100
	// sweepMax bounds the mailboxes one Sweep looks at; the rest wait for
	// the next.
	sweepMax = 20000
	// expireBatch bounds the ids one dp_expire call reads (and about 4 MB
	// of records), and so the time it holds Redis: a larger mailbox takes
	// several calls, other clients served in between. A mailbox of 100,000
	// expired messages takes 200 calls of 1.6 to 2.4 ms (p50) here, the
	// longest 2.6 to 3 ms (BenchmarkSweepExpired100k, SLOWLOG).
	expireBatch = 500
	// revisit is when to look again at a mailbox whose sweep found no
	// message that expires (messages stored without a TTL, or a sweep
	// that missed some because the mailbox changed between its calls):
	// an append racing with the sweep may have left its expiry unindexed.
	revisit = time.Hour
)

// Sweep implements plugin.Queue.
func (r *Redis) Sweep(ctx context.Context, now time.Time) (plugin.SweepStats, error) {
	var st plugin.SweepStats
	if err := r.ready(ctx); err != nil {
		return st, fmt.Errorf("store: sweep: %w", err)
	}
	if err := r.sweepLeases(ctx, now, &st); err != nil {
		return st, fmt.Errorf("store: sweep leases: %w", err)
	}
	// What a sweep that failed half-way dropped is counted and, with its
	// failure notices, returned all the same.
	err := r.sweepMailboxes(ctx, now, &st)
	if st.Expired > 0 {
		r.c.HIncrBy(context.WithoutCancel(ctx), statsKey, "expired", int64(st.Expired))
	}
	if err != nil {
		return st, fmt.Errorf("store: sweep mailboxes: %w", err)
	}
	return st, nil
}

func (r *Redis) sweepLeases(ctx context.Context, now time.Time, st *plugin.SweepStats) error {
	entries, err := r.c.ZRangeWithScores(ctx, leasesKey, 0, sweepMax-1).Result()
	if err != nil {
		return err
	}
	for len(entries) > 0 {
		batch := entries[:min(sweepBatch, len(entries))]
		entries = entries[len(batch):]
		pipe := r.c.Pipeline()
		cmds := make([]*redis.Cmd, len(batch))
		for i, e := range batch {
			cmds[i] = r.fn.queue(ctx, pipe, "dp_recover", mailboxKeys(memberAOR(e.Member)), ms(now))
		}
		_, _ = pipe.Exec(ctx)
		for i, e := range batch {
			aor := memberAOR(e.Member)
			res, err := r.fn.again(ctx, cmds[i], "dp_recover", mailboxKeys(aor), ms(now)).Slice()
			if err != nil {
				return fmt.Errorf("recover %s: %w", aor, err)
			}
			if n := int(res[1].(int64)); n > 0 {
				st.Requeued += n
				st.Requeue = append(st.Requeue, aor)
			}
			if res[0].(int64) == 0 && e.Score < float64(ms(now.Add(-leaseIdle))) {
				if err := r.indexCAS(ctx, leasesKey, aor, e.Score, ""); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func (r *Redis) sweepMailboxes(ctx context.Context, now time.Time, st *plugin.SweepStats) error {
	// Entries still due after a visit (an expired message in flight under
	// a live lease) are skipped by offset so the loop ends.
	offset := int64(0)
	for seen := 0; seen < sweepMax; {
		entries, err := r.c.ZRangeByScoreWithScores(ctx, mailboxesKey, &redis.ZRangeBy{
			Min: "-inf", Max: strconv.FormatInt(ms(now), 10), Offset: offset, Count: sweepBatch,
		}).Result()
		if err != nil || len(entries) == 0 {
			return err
		}
		seen += len(entries)
		pipe := r.c.Pipeline()
		cmds := make([]*redis.Cmd, len(entries))
		for i, e := range entries {
			cmds[i] = r.fn.queue(ctx, pipe, "dp_expire", mailboxKeys(memberAOR(e.Member)), ms(now), expireBatch, 0)
		}
		_, _ = pipe.Exec(ctx)
		for i, e := range entries {
			aor := memberAOR(e.Member)
			x, err := r.expire(ctx, aor, now, cmds[i], st)
			if err != nil {
				return fmt.Errorf("expire %s: %w", aor, err)
			}
			st.Expired += x.dropped
			switch {
			case x.empty:
				err = r.indexCAS(ctx, mailboxesKey, aor, e.Score, "")
			case x.next < 0:
				err = r.indexCAS(ctx, mailboxesKey, aor, e.Score, strconv.FormatInt(ms(now.Add(revisit)), 10))
			case x.next <= ms(now):
				offset++
				continue
			default:
				err = r.indexCAS(ctx, mailboxesKey, aor, e.Score, strconv.FormatInt(x.next, 10))
			}
			if err != nil {
				return err
			}
		}
		if len(entries) < sweepBatch {
			return nil
		}
	}
	return nil
}

// expiry is what the sweep of one mailbox found.
type expiry struct {
	dropped int
	next    int64 // earliest expiry left (ms), -1 if none
	empty   bool
}

// expire finishes the sweep of aor's mailbox whose first dp_expire call is
// first: it calls again, one batch a call, until the mailbox was read to
// its end. The failure notices the calls return go to st.Undelivered.
func (r *Redis) expire(ctx context.Context, aor plugin.AOR, now time.Time, first *redis.Cmd, st *plugin.SweepStats) (expiry, error) {
	keys := mailboxKeys(aor)
	x := expiry{next: -1}
	cmd := r.fn.again(ctx, first, "dp_expire", keys, ms(now), expireBatch, 0)
	for {
		res, err := cmd.Slice()
		if err != nil {
			return x, err
		}
		cursor, next := res[1].(int64), res[2].(int64)
		x.dropped += int(res[0].(int64))
		r.undelivered(aor, res[4:], st)
		x.empty = res[3].(int64) == 1
		if next >= 0 && (x.next < 0 || next < x.next) {
			x.next = next
		}
		if cursor < 0 {
			return x, nil
		}
		cmd = r.fn.run(ctx, "dp_expire", keys, ms(now), expireBatch, cursor)
	}
}

func (r *Redis) indexCAS(ctx context.Context, key string, aor plugin.AOR, old float64, next string) error {
	err := r.fn.run(ctx, "dp_index_cas", []string{key}, aor.String(), strconv.FormatFloat(old, 'f', -1, 64), next).Err()
	if err != nil {
		return fmt.Errorf("update %s for %s: %w", key, aor, err)
	}
	return nil
}

// memberAOR reads back an AOR kept as a set member; it was canonical when
// written, so a member that does not parse is one nobody wrote (its zero
// AOR matches no key).
func memberAOR(member any) plugin.AOR {
	s, _ := member.(string)
	var aor plugin.AOR
	_ = aor.UnmarshalText([]byte(s))
	return aor
}

// Recipients implements plugin.Queue: a ZSCAN of the mailbox index.
func (r *Redis) Recipients(ctx context.Context, cursor string, n int) ([]plugin.AOR, string, error) {
	if err := r.ready(ctx); err != nil {
		return nil, "", fmt.Errorf("store: recipients: %w", err)
	}
	var c uint64
	if cursor != "" {
		var err error
		if c, err = strconv.ParseUint(cursor, 10, 64); err != nil {
			return nil, "", fmt.Errorf("store: recipients: bad cursor %q", cursor)
		}
	}
	members, next, err := r.c.ZScan(ctx, mailboxesKey, c, "", int64(max(n, 1))).Result()
	if err != nil {
		return nil, "", fmt.Errorf("store: recipients: %w", err)
	}
	var aors []plugin.AOR
	for i := 0; i < len(members); i += 2 { // member, score, member, score ...
		if aor := memberAOR(members[i]); !aor.IsZero() {
			aors = append(aors, aor)
		}
	}
	if next == 0 {
		return aors, "", nil
	}
	return aors, strconv.FormatUint(next, 10), nil
}
