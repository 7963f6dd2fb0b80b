package store

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/deferpush/deferpush/plugin"
)

// recentCheck is how often the store reads dp:recent:on, the sign that a
// proxy polls dp:recent (library.lua's dp_recent). A proxy waits at least
// twice as long after setting it before it scans dp:mailboxes, so that a
// store this process made without adding to dp:recent is in the scan.
const recentCheck = time.Second

// recentSign caches whether dp:recent:on exists, read at most once per
// recentCheck.
type recentSign struct {
	checked atomic.Int64 // Unix ns of the last read
	on      atomic.Bool
}

// polled reports whether a proxy polls dp:recent, reading dp:recent:on
// when the last read is older than recentCheck. Concurrent callers
// within that time get the cached answer; a failed read keeps it.
func (r *Redis) polled(ctx context.Context) bool {
	now := time.Now().UnixNano()
	last := r.recent.checked.Load()
	if now-last < int64(recentCheck) || !r.recent.checked.CompareAndSwap(last, now) {
		return r.recent.on.Load()
	}
	// On the autopipeliner when there is one, within the call's bound
	// (await): a stalled Redis costs the store that reads one wait, not
	// two.
	var c redis.Cmdable = r.c
	if r.batch != nil {
		c = r.batch
	}
	cmd := c.Exists(ctx, recentOnKey)
	if r.await(ctx, cmd) == nil && cmd.Err() == nil {
		r.recent.on.Store(cmd.Val() > 0)
	}
	return r.recent.on.Load()
}

// addRecent queues aor's dp:recent entry for a message stored now, when
// a proxy polls dp:recent: a proxy that caches who may have messages
// (kamailio.cfg's REDIS_DIRECT mode) learns of stores made elsewhere
// from it. Nothing is written while no proxy polls.
func (r *Redis) addRecent(ctx context.Context, c redis.Cmdable, aor plugin.AOR) {
	r.addRecentMember(ctx, c, aor.String())
}

func (r *Redis) addRecentMember(ctx context.Context, c redis.Cmdable, aor string) {
	if r.polled(ctx) {
		c.ZAdd(ctx, recentKey, redis.Z{Score: float64(ms(r.now())), Member: aor})
	}
}
