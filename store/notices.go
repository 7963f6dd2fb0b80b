package store

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/deferpush/deferpush/plugin"
)

// Failure notices (plugin.SweepStats.Undelivered).
//
// A message whose sender asked to hear of a failure is also in its
// mailbox's notify set, scored by its expiry, and the mailbox in the
// dp:notices index, scored by the earliest such expiry (ZADD LT at
// Append). Before dropping expired messages, Sweep visits the due entries
// of dp:notices: noticeScript takes the notify entries that expired out
// of the set and returns the messages still stored (not acked or deleted
// meanwhile), which Sweep reports; the expiry sweep that follows drops
// them. A message in flight under a live lease stays for a later sweep,
// after its push. A Claim that meets such a message expired leaves its
// record for this sweep; Fail takes a dead letter out of the set (the
// engine tells the sender at once).
//
// Notices are best effort where messages are not: a crash between the
// script and the report loses a notice, never a message.

// noticeBatch bounds the notices one noticeScript call takes.
const noticeBatch = 1000

// noticeScript takes the due notices of one mailbox.
//
//	KEYS  1 notify, 2 msgs, 3 inflight, 4 lock
//	ARGV  1 now ms, 2 batch
//	Returns {next, more, id, record, id, record, ...}: next is the earliest
//	remaining notify score (ms), -1 when none is left; more is 1 when the
//	batch was full and more may be due.
var noticeScript = redis.NewScript(`
local now, batch = tonumber(ARGV[1]), tonumber(ARGV[2])
local held = {}
local v = redis.call('HMGET', KEYS[4], 'owner', 'until')
if v[1] and tonumber(v[2]) > now then
  for _, id in ipairs(redis.call('LRANGE', KEYS[3], 0, -1)) do held[id] = true end
end
local out = {-1, 0}
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, batch)
local taken = 0
for _, id in ipairs(ids) do
  if not held[id] then
    taken = taken + 1
    redis.call('ZREM', KEYS[1], id)
    local rec = redis.call('HGET', KEYS[2], id)
    if rec then
      out[#out + 1] = id
      out[#out + 1] = rec
    end
  end
end
if #ids == batch and taken > 0 then out[2] = 1 end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #first > 0 then out[1] = tonumber(first[2]) end
return out
`)

func noticeKeys(aor plugin.AOR) []string {
	return []string{notifyKey(aor), msgsKey(aor), inflightKey(aor), lockKey(aor)}
}

// sweepNotices reports the expired messages whose senders wait for a
// failure notice (see above).
func (r *Redis) sweepNotices(ctx context.Context, now time.Time, st *plugin.SweepStats) error {
	offset := int64(0)
	for seen := 0; seen < sweepMax; {
		entries, err := r.c.ZRangeByScoreWithScores(ctx, noticesKey, &redis.ZRangeBy{
			Min: "-inf", Max: strconv.FormatInt(ms(now), 10), Offset: offset, Count: sweepBatch,
		}).Result()
		if err != nil || len(entries) == 0 {
			return err
		}
		seen += len(entries)
		for _, e := range entries {
			aor := memberAOR(e.Member)
			next, err := r.takeNotices(ctx, aor, now, st)
			if err != nil {
				return fmt.Errorf("notices of %s: %w", aor, err)
			}
			switch {
			case next < 0:
				err = r.indexCAS(ctx, noticesKey, aor, e.Score, "")
			case next <= ms(now):
				offset++ // held by a live push: a later sweep
				continue
			default:
				err = r.indexCAS(ctx, noticesKey, aor, e.Score, strconv.FormatInt(next, 10))
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

// takeNotices runs noticeScript on aor's mailbox until no full batch is
// left, adds the messages to st, and returns the next notify score.
func (r *Redis) takeNotices(ctx context.Context, aor plugin.AOR, now time.Time, st *plugin.SweepStats) (int64, error) {
	for {
		res, err := noticeScript.Run(ctx, r.c, noticeKeys(aor), ms(now), noticeBatch).Slice()
		if err != nil {
			return 0, err
		}
		for i := 2; i+1 < len(res); i += 2 {
			m, err := decode(aor, res[i].(string), res[i+1].(string), "")
			if err != nil {
				r.log.Warn("failure notice of an unreadable message", "aor", aor.String(), "err", err)
				continue
			}
			m.NotifyFailure = true
			st.Undelivered = append(st.Undelivered, m)
		}
		if res[1].(int64) == 0 {
			return res[0].(int64), nil
		}
	}
}
