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
// the recipient (score: now) before it moves anything; the sweeper runs
// recoverScript on each entry and removes an entry only when no lease is
// live, nothing is in flight, the entry is older than leaseIdle and its
// score is unchanged (indexCASScript). A Claim that starts after the
// sweeper read the entry has rewritten its score, so its entry stays.
// Should an entry still be missed, the next Lock or Claim for that
// recipient requeues what a dead owner left in flight.
//
// dp:mailboxes lists recipients with stored messages, scored by the
// earliest expiry to look at. Append lowers the score (ZADD LT) in the
// same round trip; the sweeper visits entries whose score has passed,
// drops expired messages, and either moves the score to the next expiry
// or, for an empty mailbox, marks it gone (in its slot) and removes the
// entry if its score is unchanged. An Append that finds the gone mark
// indexes the mailbox again. A message missed by the index is never lost
// or delivered late (Claim checks expiry); it is only removed later.

const (
	// leaseIdle is how long an idle lease-index entry is kept: longer than
	// a Claim can take between its two round trips.
	leaseIdle = time.Minute
	// sweepBatch is the number of mailboxes handled per pipeline.
	sweepBatch = 100
	// sweepMax bounds the mailboxes one Sweep looks at; the rest wait for
	// the next.
	sweepMax = 20000
	// expireBatch bounds the messages one expireScript call drops, and so
	// the time it holds Redis (under 4 ms here, for a mailbox of 100,000:
	// BenchmarkSweepExpired100k); a mailbox with more expired is visited
	// again at once.
	expireBatch = 1000
)

// Sweep implements plugin.Queue.
func (r *Redis) Sweep(ctx context.Context, now time.Time) (plugin.SweepStats, error) {
	var st plugin.SweepStats
	if err := r.sweepLeases(ctx, now, &st); err != nil {
		return st, fmt.Errorf("store: sweep leases: %w", err)
	}
	if err := r.sweepNotices(ctx, now, &st); err != nil {
		return st, fmt.Errorf("store: sweep notices: %w", err)
	}
	if err := r.sweepMailboxes(ctx, now, &st); err != nil {
		return st, fmt.Errorf("store: sweep mailboxes: %w", err)
	}
	if st.Expired > 0 {
		r.c.HIncrBy(ctx, statsKey, "expired", int64(st.Expired))
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
			cmds[i] = recoverScript.EvalSha(ctx, pipe, mailboxKeys(memberAOR(e.Member)), ms(now))
		}
		_, _ = pipe.Exec(ctx)
		for i, e := range batch {
			aor := memberAOR(e.Member)
			res, err := cmds[i].Slice()
			if isNoScript(err) {
				res, err = recoverScript.Run(ctx, r.c, mailboxKeys(aor), ms(now)).Slice()
			}
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
			aor := memberAOR(e.Member)
			cmds[i] = expireScript.EvalSha(ctx, pipe, append(mailboxKeys(aor), goneKey(aor)), ms(now), expireBatch)
		}
		_, _ = pipe.Exec(ctx)
		for i, e := range entries {
			aor := memberAOR(e.Member)
			res, err := cmds[i].Slice()
			if isNoScript(err) {
				res, err = r.expire(ctx, aor, now)
			}
			// A full batch: the rest of this mailbox's expired messages,
			// one batch a call, other clients served in between.
			for err == nil && res[2].(int64) == 1 {
				st.Expired += int(res[0].(int64))
				res, err = r.expire(ctx, aor, now)
			}
			if err != nil {
				return fmt.Errorf("expire %s: %w", aor, err)
			}
			st.Expired += int(res[0].(int64))
			next := res[1].(int64)
			switch {
			case next < 0:
				err = r.indexCAS(ctx, mailboxesKey, aor, e.Score, "")
			case next <= ms(now):
				offset++
				continue
			default:
				err = r.indexCAS(ctx, mailboxesKey, aor, e.Score, strconv.FormatInt(next, 10))
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

// expire runs expireScript once on aor's mailbox.
func (r *Redis) expire(ctx context.Context, aor plugin.AOR, now time.Time) ([]any, error) {
	return expireScript.Run(ctx, r.c, append(mailboxKeys(aor), goneKey(aor)), ms(now), expireBatch).Slice()
}

func (r *Redis) indexCAS(ctx context.Context, key string, aor plugin.AOR, old float64, next string) error {
	err := indexCASScript.Run(ctx, r.c, []string{key}, aor.String(), strconv.FormatFloat(old, 'f', -1, 64), next).Err()
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
