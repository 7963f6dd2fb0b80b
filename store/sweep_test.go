package store_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/store"
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
			page, err := s.List(ctx, aor, 0, 0)
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
