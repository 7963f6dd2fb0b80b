package store_test

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/store"
	"github.com/deferpush/deferpush/test/harness"
)

// benchClients matches `redis-benchmark -c 50`; compare with
//
//	redis-benchmark -h 127.0.0.1 -p PORT -t rpush -P 1 -c 50 -n 200000 -q
const benchClients = 50

// A typical stored SIP MESSAGE.
var benchRaw = []byte("MESSAGE sip:user2@example.com SIP/2.0\r\n" +
	"Via: SIP/2.0/TCP user1pc.example.com;branch=z9hG4bK776sgdkse\r\nMax-Forwards: 70\r\n" +
	"From: sip:user1@example.com;tag=49583\r\nTo: sip:user2@example.com\r\n" +
	"Call-ID: asd88asd77a@1.2.3.4\r\nDate: Thu, 21 Feb 2002 13:02:03 GMT\r\nCSeq: 1 MESSAGE\r\n" +
	"Content-Type: text/plain\r\nContent-Length: 18\r\n\r\nWatson, come here.")

func benchStore(b *testing.B) (*store.Redis, *harness.RedisServer) {
	srv := harness.Redis(b)
	s, err := store.New(store.Config{URL: srv.URL() + fmt.Sprintf("?pool_size=%d", benchClients+10)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s, srv
}

// rpushN is how many RPUSHes rpushRate sends.
const rpushN = 200000

// rpushRate runs redis-benchmark's unpipelined RPUSH at benchClients
// against srv and returns requests per second and the server CPU time
// they took, or 0 when not installed.
func rpushRate(b *testing.B, srv *harness.RedisServer, c redis.UniversalClient) (float64, time.Duration) {
	bin, err := exec.LookPath("redis-benchmark")
	if err != nil {
		return 0, 0
	}
	host, port, _ := net.SplitHostPort(srv.Addr)
	before := serverCPU(b, c)
	out, err := exec.Command(bin, "-h", host, "-p", port, "-t", "rpush", "-P", "1",
		"-c", strconv.Itoa(benchClients), "-n", strconv.Itoa(rpushN), "-q").Output()
	if err != nil {
		b.Logf("redis-benchmark: %v", err)
		return 0, 0
	}
	used := serverCPU(b, c) - before
	m := regexp.MustCompile(`RPUSH: ([0-9.]+) requests per second`).FindSubmatch(out)
	if m == nil {
		return 0, 0
	}
	rate, _ := strconv.ParseFloat(string(m[1]), 64)
	return rate, used
}

// serverCPU is the CPU time redis-server has used (INFO cpu: its user and
// system time, from getrusage). Per operation it is what an operation
// costs the server, which other work on a shared machine does not
// inflate as it does a rate.
func serverCPU(b *testing.B, c redis.UniversalClient) time.Duration {
	info, err := c.Info(context.Background(), "cpu").Result()
	if err != nil {
		b.Fatal(err)
	}
	var total float64
	for line := range strings.SplitSeq(info, "\r\n") {
		k, v, _ := strings.Cut(line, ":")
		if k == "used_cpu_sys" || k == "used_cpu_user" {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				b.Fatalf("INFO cpu %s: %v", line, err)
			}
			total += f
		}
	}
	return time.Duration(total * float64(time.Second))
}

// reportServerCPU reports the server's CPU time per operation since
// before (server-µs/op), and, when rpush is set (a redis-benchmark RPUSH
// run's), that figure for RPUSH (rpush-server-µs/op) and RPUSH's share
// of it (cpu-ratio: above 0.5, an operation costs the server less than
// two unpipelined RPUSHes).
func reportServerCPU(b *testing.B, used time.Duration, rpush time.Duration) {
	per := float64(used.Microseconds()) / float64(b.N)
	b.ReportMetric(per, "server-µs/op")
	if rpush > 0 {
		r := float64(rpush.Microseconds()) / rpushN
		b.ReportMetric(r, "rpush-server-µs/op")
		b.ReportMetric(r/per, "cpu-ratio")
	}
}

func benchParallelism(b *testing.B) {
	// RunParallel starts GOMAXPROCS*p goroutines.
	b.SetParallelism((benchClients + testingProcs() - 1) / testingProcs())
}

// BenchmarkAppend: appends spread over 1000 recipients.
func BenchmarkAppend(b *testing.B) {
	s, srv := benchStore(b)
	ctx := context.Background()
	if err := s.Ping(ctx); err != nil {
		b.Fatal(err)
	}
	var next atomic.Int64
	benchParallelism(b)
	b.SetBytes(int64(len(benchRaw)))
	cpu := serverCPU(b, s.Client())
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := next.Add(1)
			m := &plugin.Message{Recipient: plugin.MustParseAOR(fmt.Sprintf("sip:u%d@example.com", i%1000)),
				Kind: plugin.KindSIPMessage, Raw: benchRaw, Received: time.Now()}
			if err := s.Append(ctx, m, plugin.Limits{TTL: time.Hour}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	reportRates(b, srv, s.Client(), serverCPU(b, s.Client())-cpu)
}

// reportRates reports the operations' rate and server CPU time, and, after
// at least 10,000 of them, redis-benchmark's unpipelined RPUSH on the same
// server, at the same concurrency, right after: rpush/s and the ratio of
// the rates, the ratio of the CPU times (reportServerCPU).
func reportRates(b *testing.B, srv *harness.RedisServer, c redis.UniversalClient, used time.Duration) {
	rate := float64(b.N) / b.Elapsed().Seconds()
	b.ReportMetric(rate, "msgs/s")
	var rpushCPU time.Duration
	if b.N >= 10000 {
		var rpush float64
		if rpush, rpushCPU = rpushRate(b, srv, c); rpush > 0 {
			b.ReportMetric(rpush, "rpush/s")
			b.ReportMetric(rate/rpush, "ratio")
		}
	}
	reportServerCPU(b, used, rpushCPU)
}

// BenchmarkClaimAck: each goroutine drains its own recipients as a push
// does: Claim 10 (the lease with them), Ack them in one call, Unlock. One
// op is one message delivered.
func BenchmarkClaimAck(b *testing.B) {
	s, _ := benchStore(b)
	ctx := context.Background()
	const batch = 10
	workers := benchClients
	perWorker := b.N/workers + batch
	for w := range workers {
		fill(b, s, plugin.MustParseAOR(fmt.Sprintf("sip:w%d@example.com", w)), perWorker)
	}
	var worker atomic.Int64
	benchParallelism(b)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		w := worker.Add(1) - 1
		aor := plugin.MustParseAOR(fmt.Sprintf("sip:w%d@example.com", w%int64(workers)))
		token := fmt.Sprint("bench-", w)
		var msgs []*plugin.Message
		var confirmed []string
		settle := func() bool {
			if n, err := s.Ack(ctx, aor, token, confirmed...); n != len(confirmed) || err != nil {
				b.Errorf("Ack(%d) = %d, %v", len(confirmed), n, err)
				return false
			}
			confirmed = confirmed[:0]
			if err := s.Unlock(ctx, aor, token); err != nil {
				b.Error(err)
				return false
			}
			return true
		}
		for pb.Next() {
			if len(msgs) == 0 {
				var err error
				if msgs, err = s.Claim(ctx, aor, token, batch, time.Minute); err == nil && len(msgs) == 0 {
					// pb.Next shares work unevenly; top up (rare, timed).
					fill(b, s, aor, 10*batch)
					msgs, err = s.Claim(ctx, aor, token, batch, time.Minute)
				}
				if err != nil || len(msgs) == 0 {
					b.Errorf("Claim = %d, %v", len(msgs), err)
					return
				}
			}
			confirmed = append(confirmed, msgs[0].ID)
			if msgs = msgs[1:]; len(msgs) == 0 && !settle() {
				return
			}
		}
		if len(confirmed) > 0 {
			settle()
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

func testingProcs() int { return runtime.GOMAXPROCS(0) }

func fill(b testing.TB, s *store.Redis, aor plugin.AOR, n int) {
	for range n {
		m := &plugin.Message{Recipient: aor, Kind: plugin.KindSIPMessage, Raw: benchRaw, Received: time.Now()}
		if err := s.Append(context.Background(), m, plugin.Limits{}); err != nil {
			b.Error(err)
			return
		}
	}
}

// BenchmarkDirectStore: what a proxy in the REDIS_DIRECT mode runs per
// offline MESSAGE, FCALL dp_store (the raw request parsed, checked and
// dated in Lua, then appended), spread over 1000 recipients, one call at
// a time per client as ndb_redis makes them (no pipelining).
func BenchmarkDirectStore(b *testing.B) {
	s, srv := benchStore(b)
	ctx := context.Background()
	if err := s.Ping(ctx); err != nil {
		b.Fatal(err)
	}
	c := s.Client()
	raw := string(benchRaw)
	var next atomic.Int64
	benchParallelism(b)
	b.SetBytes(int64(len(benchRaw)))
	cpu := serverCPU(b, c)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := next.Add(1)
			res, err := c.FCall(ctx, "dp_store", nil, fmt.Sprintf("sip:u%d@example.com", i%1000), raw).Slice()
			if err != nil || res[0].(int64) != 202 {
				b.Errorf("dp_store = %v, %v", res, err)
				return
			}
		}
	})
	b.StopTimer()
	reportRates(b, srv, c, serverCPU(b, c)-cpu)
}

// BenchmarkPushCycle: the Redis calls of one push of M messages, as the
// engine makes them (ClaimAndRead of up to M, then Finish of the ids the
// client confirmed), 50 pushes at a time, each to a recipient of its own
// whose M messages were stored first (every recipient is pushed once). One
// op is one message delivered; server-µs/op is what it costs
// redis-server: the round trips at M=1, the Lua functions' work per
// message as M grows.
func BenchmarkPushCycle(b *testing.B) {
	for _, m := range []int{1, 10, 50} {
		b.Run(fmt.Sprintf("M=%d", m), func(b *testing.B) {
			s, _ := benchStore(b)
			ctx := context.Background()
			aors := make([]plugin.AOR, (b.N+m-1)/m)
			for i := range aors {
				aors[i] = plugin.MustParseAOR(fmt.Sprintf("sip:p%d@example.com", i))
				fill(b, s, aors[i], m)
			}
			var next atomic.Int64
			benchParallelism(b)
			cpu := serverCPU(b, s.Client())
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				ids := make([]string, 0, m)
				for pb.Next() {
					i := next.Add(1) - 1
					if i%int64(m) != 0 {
						continue // one push delivers m ops
					}
					aor, token := aors[i/int64(m)], fmt.Sprint("bench-", i)
					cr, err := s.ClaimAndRead(ctx, aor, token, m, time.Minute)
					if err != nil || len(cr.Messages) != m {
						b.Errorf("ClaimAndRead = %d messages, %v; want %d", len(cr.Messages), err, m)
						return
					}
					ids = ids[:0]
					for _, msg := range cr.Messages {
						ids = append(ids, msg.ID)
					}
					if n, err := s.Finish(ctx, aor, token, ids...); n != len(ids) || err != nil {
						b.Errorf("Finish(%d) = %d, %v", len(ids), n, err)
						return
					}
				}
			})
			b.StopTimer()
			reportServerCPU(b, serverCPU(b, s.Client())-cpu, 0)
		})
	}
}

// BenchmarkListFullMailbox: one page of a mailbox as full as the default
// policy lets it be (1,000 messages of 64 KiB), as the admin API reads
// it: metadata (limit 1000) and with the bytes (limit 50), each page
// ending at 4 MiB of messages; and, for scale, the metadata of the whole
// mailbox in one page (no byte budget), which still reads every record
// whole in Redis. server-µs/op is what a page costs redis-server, which
// serves nothing else meanwhile; B/op what it costs this process.
func BenchmarkListFullMailbox(b *testing.B) {
	s, _ := benchStore(b)
	ctx := context.Background()
	aor := plugin.MustParseAOR("sip:big@example.com")
	raw := append(slices.Clip(benchRaw), strings.Repeat("x", 64<<10-len(benchRaw))...)
	for range 1000 {
		m := &plugin.Message{Recipient: aor, Kind: plugin.KindSIPMessage, Raw: raw, Received: time.Now(),
			Sender: "sip:user1@example.com", CallID: "asd88asd77a@1.2.3.4", ContentType: "text/plain"}
		if err := s.Append(ctx, m, plugin.Limits{}); err != nil {
			b.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name string
		q    plugin.ListQuery
	}{
		{"metadata", plugin.ListQuery{Limit: 1000, MaxBytes: 4 << 20}},
		{"bodies", plugin.ListQuery{Limit: 50, Body: true, MaxBytes: 4 << 20}},
		{"metadata-unbounded", plugin.ListQuery{Limit: 1000}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			before, listed := serverCPU(b, s.Client()), 0
			for b.Loop() {
				page, err := s.List(ctx, aor, tc.q)
				if err != nil {
					b.Fatal(err)
				}
				listed += len(page.Messages)
			}
			reportServerCPU(b, serverCPU(b, s.Client())-before, 0)
			b.ReportMetric(float64(listed)/float64(b.N), "msgs/op")
		})
	}
}
