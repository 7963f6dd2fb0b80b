package store_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/store"
	"github.com/deferpush/deferpush/store/storetest"
	"github.com/deferpush/deferpush/test/harness"
)

// fillMailbox appends n messages for aor, received from `from` on, a
// millisecond apart, each expiring ttl after its arrival, and returns
// their ids in order.
func fillMailbox(tb testing.TB, s *store.Redis, aor plugin.AOR, from time.Time, n int, ttl time.Duration) []string {
	tb.Helper()
	ctx := context.Background()
	ids := make([]string, n)
	for i := range n {
		at := from.Add(time.Duration(i) * time.Millisecond)
		m := &plugin.Message{Recipient: aor, Kind: plugin.KindSIPMessage, Raw: []byte("x"), Received: at, Expires: at.Add(ttl)}
		if err := s.Append(ctx, m, plugin.Limits{}); err != nil {
			tb.Fatal(err)
		}
		ids[i] = m.ID
	}
	return ids
}

// expireCalls is the number of dp_expire calls in redis-server's SLOWLOG,
// which logs every command once slowlog-log-slower-than is 0.
func expireCalls(t *testing.T, s *store.Redis) int {
	t.Helper()
	entries, err := s.Client().SlowLogGet(context.Background(), 100000).Result()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		if len(e.Args) > 1 && strings.EqualFold(e.Args[0], "fcall") && e.Args[1] == "dp_expire" {
			n++
		}
	}
	return n
}

// slowlogAll makes redis-server log every command from now on.
func slowlogAll(tb testing.TB, srv *harness.RedisServer) {
	tb.Helper()
	for _, cmd := range [][]string{{"CONFIG", "SET", "slowlog-log-slower-than", "0"}, {"CONFIG", "SET", "slowlog-max-len", "100000"}, {"SLOWLOG", "RESET"}} {
		if _, err := harness.RedisDo(context.Background(), srv.Addr, cmd...); err != nil {
			tb.Fatal(err)
		}
	}
}

// TestSweepExpiresInBatches: the sweeper drops a large mailbox's expired
// messages a bounded batch per function call (main dropped 100,000 in one
// call that held Redis 207 ms), in the usual order (expiry follows
// arrival) and when a shortened TTL made later messages expire first;
// what is left stays, in order.
func TestSweepExpiresInBatches(t *testing.T) {
	srv := harness.Redis(t)
	s, err := store.New(store.Config{URL: srv.URL()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	now := time.Now()
	for _, tc := range []struct {
		name       string
		fill       func(aor plugin.AOR) (keep []string)
		expired    int
		minScripts int // dp_expire calls at least: one per batch
	}{
		{"in order", func(aor plugin.AOR) []string {
			fillMailbox(t, s, aor, now.Add(-time.Hour), 2500, time.Minute)
			return fillMailbox(t, s, aor, now, 10, time.Hour)
		}, 2500, 3},
		{"shortened TTL", func(aor plugin.AOR) []string {
			keep := fillMailbox(t, s, aor, now.Add(-time.Hour), 1500, 2*time.Hour)
			fillMailbox(t, s, aor, now.Add(-time.Hour), 1200, time.Minute)
			return keep
		}, 1200, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			aor := plugin.MustParseAOR("sip:" + tc.name[:2] + "@example.com")
			keep := tc.fill(aor)
			slowlogAll(t, srv)
			st, err := s.Sweep(ctx, now)
			if err != nil {
				t.Fatal(err)
			}
			if st.Expired != tc.expired {
				t.Errorf("swept %d expired, want %d", st.Expired, tc.expired)
			}
			if n := expireCalls(t, s); n < tc.minScripts {
				t.Errorf("%d dp_expire calls for %d expired messages, want at least %d (a bounded batch a call)", n, tc.expired, tc.minScripts)
			}
			page, err := s.List(ctx, aor, plugin.ListQuery{})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, m := range page.Messages {
				got = append(got, m.ID)
			}
			if d := cmp.Diff(keep, got); d != "" {
				t.Errorf("left after the sweep (-want +got):\n%s", d)
			}
			if c, _ := s.Count(ctx, aor); c.Pending != len(keep) || page.Total != len(keep) {
				t.Errorf("counts %+v, total %d; want %d pending", c, page.Total, len(keep))
			}
		})
	}
}

// BenchmarkSweepExpired100k sweeps a mailbox of 100,000 expired messages
// and reports, from redis-server's SLOWLOG, the longest any one command
// held the server (max-hold-ms: dp_expire's batch) and the whole
// sweep's time. Run it with -benchtime=1x: each round fills the mailbox.
func BenchmarkSweepExpired100k(b *testing.B) {
	srv := harness.Redis(b)
	s, err := store.New(store.Config{URL: srv.URL()})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	aor := plugin.MustParseAOR("sip:big@example.com")
	var hold, total time.Duration
	for b.Loop() {
		b.StopTimer()
		fillMailbox(b, s, aor, time.Now().Add(-time.Hour), 100000, time.Minute)
		slowlogAll(b, srv)
		b.StartTimer()
		start := time.Now()
		st, err := s.Sweep(ctx, time.Now())
		total += time.Since(start)
		if err != nil || st.Expired != 100000 {
			b.Fatalf("Sweep = %+v, %v; want 100000 expired", st, err)
		}
		b.StopTimer()
		entries, err := s.Client().SlowLogGet(ctx, 100000).Result()
		if err != nil {
			b.Fatal(err)
		}
		for _, e := range entries {
			hold = max(hold, e.Duration)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(hold.Microseconds())/1000, "max-hold-ms")
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "sweep-ms")
}

// TestSweepFailureNotices: the failure notices of a mailbox larger than
// one dp_expire batch are each reported once, in batches, also those a
// claim met expired and left in no list; a sweep whose clock is behind
// the claim's (another instance) neither reports them early nor
// unindexes the mailbox they keep, and a later one reports them.
func TestSweepFailureNotices(t *testing.T) {
	srv := harness.Redis(t)
	clock := storetest.NewClock()
	s, err := store.New(store.Config{URL: srv.URL(), Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	add := func(aor plugin.AOR, n int, ttl time.Duration) []string {
		t.Helper()
		ids := make([]string, n)
		for i := range n {
			at := clock.Now().Add(time.Duration(i) * time.Millisecond)
			m := &plugin.Message{Recipient: aor, Kind: plugin.KindSIPMessage, Raw: []byte(fmt.Sprint("MESSAGE ", i)),
				Received: at, Expires: at.Add(ttl), NotifyFailure: true}
			if err := s.Append(ctx, m, plugin.Limits{}); err != nil {
				t.Fatal(err)
			}
			ids[i] = m.ID
		}
		return ids
	}
	reported := func(st plugin.SweepStats) []string {
		var ids []string
		for _, m := range st.Undelivered {
			if !m.NotifyFailure || len(m.Raw) == 0 {
				t.Errorf("reported %+v: want it whole, with NotifyFailure", m)
			}
			ids = append(ids, m.ID)
		}
		slices.Sort(ids)
		return ids
	}

	big := plugin.MustParseAOR("sip:big@example.com")
	expired := add(big, 1200, time.Minute)
	clock.Advance(time.Millisecond * 1200)
	keep := add(big, 10, 24*time.Hour)
	clock.Advance(time.Hour)
	// A claim meets the 1200 expired on its way to 5 live ones: it
	// takes them out of the list, keeping them for their notices.
	if ok, err := s.Lock(ctx, big, "t", time.Minute); !ok || err != nil {
		t.Fatalf("Lock = %v, %v", ok, err)
	}
	if _, err := s.Claim(ctx, big, "t", 5, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := s.Unlock(ctx, big, "t"); err != nil {
		t.Fatal(err)
	}
	slowlogAll(t, srv)
	st, err := s.Sweep(ctx, clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(expired, reported(st)); d != "" {
		t.Errorf("notices (-want +got):\n%s", d)
	}
	if st.Expired != len(expired) {
		t.Errorf("swept %d expired, want %d", st.Expired, len(expired))
	}
	if n := expireCalls(t, s); n < 3 {
		t.Errorf("%d dp_expire calls for %d notices, want at least 3 (a bounded batch a call)", n, len(expired))
	}
	if st, err := s.Sweep(ctx, clock.Now()); err != nil || len(st.Undelivered) != 0 {
		t.Errorf("second Sweep = %d notices, %v; want none", len(st.Undelivered), err)
	}
	page, err := s.List(ctx, big, plugin.ListQuery{})
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, m := range page.Messages {
		left = append(left, m.ID)
	}
	if d := cmp.Diff(keep, left); d != "" {
		t.Errorf("left (-want +got):\n%s", d)
	}

	// A mailbox whose only messages a claim left for their notices.
	few := plugin.MustParseAOR("sip:few@example.com")
	ids := add(few, 3, time.Minute)
	clock.Advance(2 * time.Minute)
	if ok, err := s.Lock(ctx, few, "t", time.Minute); !ok || err != nil {
		t.Fatalf("Lock = %v, %v", ok, err)
	}
	if got, err := s.Claim(ctx, few, "t", 5, time.Minute); err != nil || len(got) != 0 {
		t.Fatalf("Claim = %d, %v; want nothing", len(got), err)
	}
	if err := s.Unlock(ctx, few, "t"); err != nil {
		t.Fatal(err)
	}
	if c, err := s.Count(ctx, few); err != nil || c != (plugin.Counts{}) {
		t.Errorf("Count = %+v, %v; want nothing listed", c, err)
	}
	if err := s.Client().ZAdd(ctx, "dp:mailboxes", redis.Z{Score: 0, Member: few.String()}).Err(); err != nil {
		t.Fatal(err) // due for any sweep
	}
	if st, err := s.Sweep(ctx, clock.Now().Add(-90*time.Second)); err != nil || len(st.Undelivered) != 0 {
		t.Errorf("Sweep behind the claim's clock = %d notices, %v; want none yet", len(st.Undelivered), err)
	}
	if _, err := s.Client().ZScore(ctx, "dp:mailboxes", few.String()).Result(); err != nil {
		t.Errorf("mailbox index entry after the early sweep: %v; want it kept", err)
	}
	st, err = s.Sweep(ctx, clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(ids, reported(st)); d != "" {
		t.Errorf("notices of the messages the claim left (-want +got):\n%s", d)
	}
	if n, err := s.Client().Exists(ctx, "dp:{"+few.String()+"}:m", "dp:{"+few.String()+"}:f").Result(); err != nil || n != 0 {
		t.Errorf("%d keys of the mailbox left, %v; want none", n, err)
	}
}
