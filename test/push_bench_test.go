package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/deferpush/deferpush/adapters/imclient"
	"github.com/redis/go-redis/v9"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/store"
	"github.com/deferpush/deferpush/test/harness"
)

// BenchmarkPushThroughput: 1,000 users with 10 stored messages each all
// register at once; it measures messages per second until every message is
// confirmed by its client (real redis-server, real SIP and MSRP over
// loopback, in-process reference clients), and the time from the
// registration event to the first SEND of each push.
func BenchmarkPushThroughput(b *testing.B) {
	const users, perUser = 1000, 10
	r := harness.Redis(b)
	c := startCore(b, r.URL(), coreOptions{})
	aors := make([]plugin.AOR, users)
	clients := make([]*imclient.Client, users)
	for i := range users {
		aors[i] = plugin.MustParseAOR(fmt.Sprintf("sip:bench%04d@example.com", i))
		clients[i] = newClient(b, aors[i].String(), imclient.Config{})
	}
	var firstSend []time.Duration
	var elapsed time.Duration
	delivered := 0
	for b.Loop() {
		b.StopTimer()
		base := make([]int, users)
		for i, a := range aors {
			storeN(b, c, a, perUser)
			base[i] = clients[i].Stats().Received
		}
		b.StartTimer()
		start := time.Now()
		for i, a := range aors {
			c.register(b, a, clients[i].Contact())
		}
		for range users {
			rep := c.report(b)
			if rep.Delivered != perUser {
				b.Fatalf("push to %s delivered %d, want %d (%v)", rep.AOR, rep.Delivered, perUser, rep.Err)
			}
			firstSend = append(firstSend, rep.ToFirstSend)
		}
		elapsed += time.Since(start)
		b.StopTimer()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		for i, cl := range clients {
			if _, err := cl.Wait(ctx, func(s imclient.Stats) bool { return s.Received >= base[i]+perUser }); err != nil {
				b.Fatalf("client %d: %v", i, err)
			}
		}
		cancel()
		delivered += users * perUser
		b.StartTimer()
	}
	slices.Sort(firstSend)
	b.ReportMetric(float64(delivered)/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(float64(firstSend[len(firstSend)/2].Microseconds())/1000, "first-send-p50-ms")
	b.ReportMetric(float64(firstSend[len(firstSend)*99/100].Microseconds())/1000, "first-send-p99-ms")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkPushOne is the everyday push, one message per user (the bench's
// M=1 row without the proxy): up to 100 users with one stored message each
// register at once; an op is one push, registration to the push's report
// (every message confirmed by its client; real redis-server, real SIP and
// MSRP over loopback, in-process reference clients). cpu-us/push is the CPU
// of this whole process per push — deferpush's side and the clients', not
// Redis's — from getrusage over the timed part; B/op and allocs/op count
// both sides too. deferpush logs as the binary does by default (JSON,
// level info), to io.Discard.
func BenchmarkPushOne(b *testing.B) {
	const users = 100
	quietSIP(b)
	r := harness.Redis(b)
	// deferpush's own logging as it runs: JSON at level info.
	log := slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))
	c := startCore(b, r.URL(), coreOptions{logger: log})
	aors := make([]plugin.AOR, users)
	clients := make([]*imclient.Client, users)
	for i := range users {
		aors[i] = plugin.MustParseAOR(fmt.Sprintf("sip:one%03d@example.com", i))
		clients[i] = newClient(b, aors[i].String(), imclient.Config{})
	}
	var cpu time.Duration
	var redisCPU float64
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; {
		b.StopTimer()
		n := min(users, b.N-done)
		base := make([]int, n)
		for i := range n {
			storeN(b, c, aors[i], 1)
			base[i] = clients[i].Stats().Received
		}
		cpu0, redis0 := processCPU(b), processCPUSeconds(r.Proc().PID())
		b.StartTimer()
		for i := range n {
			c.register(b, aors[i], clients[i].Contact())
		}
		for range n {
			if rep := c.report(b); rep.Delivered != 1 {
				b.Fatalf("push to %s delivered %d, want 1 (%v)", rep.AOR, rep.Delivered, rep.Err)
			}
		}
		b.StopTimer()
		cpu += processCPU(b) - cpu0
		redisCPU += processCPUSeconds(r.Proc().PID()) - redis0
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		for i := range n {
			if _, err := clients[i].Wait(ctx, func(s imclient.Stats) bool { return s.Received >= base[i]+1 }); err != nil {
				b.Fatalf("client %d: %v", i, err)
			}
		}
		cancel()
		done += n
		b.StartTimer()
	}
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-us/push")
	b.ReportMetric(redisCPU*1e6/float64(b.N), "redis-us/push")
}

// processCPU is the user and system CPU time this process has used.
func processCPU(b *testing.B) time.Duration {
	b.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkPushOneBinary is BenchmarkPushOne against the deferpush binary,
// run as make bench runs it (JSON logs at level info, the default), so
// that its CPU is its own: 100 users with one message each (stored through
// the message hook, untimed) register through the registered hook at once;
// an op is one push, hook to the BYE at the client. deferpush-us/push is
// the deferpush process's CPU per push (hook included; the proxy's share
// of the bench's M=1 row aside), redis-us/push redis-server's, both from
// schedstat as make bench counts server CPU. Its B/op and allocs/op are
// the bench process's (the clients and the hook calls), not deferpush's.
func BenchmarkPushOneBinary(b *testing.B) { pushOneBinary(b, false, false) }

// BenchmarkPushOneDirect is BenchmarkPushOneBinary in Redis-direct mode:
// each user registers as Kamailio's REDIS_DIRECT script records it (FCALL
// dp_register, whose registration event deferpush reads), so that no
// hook call is in deferpush's CPU; dp_register's own work is in
// redis-us/push, as the bench counts it.
func BenchmarkPushOneDirect(b *testing.B) { pushOneBinary(b, true, false) }

// BenchmarkPushOnePagerDirect is BenchmarkPushOneDirect in pager mode
// (delivery auto, pager_below 1, as the bench's pager rows): the message
// goes as a SIP MESSAGE to the client's contact, no INVITE, no MSRP; an
// op is one push, registration to the client's MESSAGE.
func BenchmarkPushOnePagerDirect(b *testing.B) { pushOneBinary(b, true, true) }

// pushOneBinary runs the benchmarks above: registrations through the
// hook or, direct, through dp_register; MSRP or, pager, pager mode.
func pushOneBinary(b *testing.B, direct, pager bool) {
	const users = 100
	quietSIP(b)
	r := harness.Redis(b)
	if pager {
		st, err := store.New(store.Config{URL: r.URL()})
		if err != nil {
			b.Fatal(err)
		}
		_, _, err = st.UpdatePolicy(context.Background(), "bench", func(p *plugin.Policy) error {
			p.Delivery, p.PagerBelow = plugin.DeliveryAuto, 1
			return nil
		})
		st.Close()
		if err != nil {
			b.Fatal(err)
		}
	}
	cfg := filepath.Join(b.TempDir(), "deferpush.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("hooks:\n  token: %s\n", consoleHooksToken)), 0o600); err != nil {
		b.Fatal(err)
	}
	dp := startDeferpush(b, nil, "--config", cfg, "--redis", r.URL(), "--log-level", "info")
	opt, err := redis.ParseURL(r.URL())
	if err != nil {
		b.Fatal(err)
	}
	rc := redis.NewClient(opt)
	b.Cleanup(func() { rc.Close() })
	hook := func(path string, body any) {
		b.Helper()
		raw, _ := json.Marshal(body)
		req, _ := http.NewRequest(http.MethodPost, "http://"+dp.HooksAddr+path, bytes.NewReader(raw))
		req.Header.Set("X-Deferpush-Token", consoleHooksToken)
		req.Header.Set("Content-Type", "application/json")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		out, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			b.Fatalf("%s: %d %s", path, res.StatusCode, out)
		}
	}
	register := func(aor, contact string) {
		b.Helper()
		if !direct {
			hook("/hooks/kamailio/registered", map[string]any{"aor": aor, "contact": contact, "expires": 300})
			return
		}
		n, err := rc.FCall(context.Background(), "dp_register", nil, aor, contact, 300,
			fmt.Sprint(time.Now().UnixMicro()), "", "", "", "").Int()
		if err != nil || n != 1 {
			b.Fatalf("dp_register %s = %d, %v; want an event", aor, n, err)
		}
	}
	aors := make([]string, users)
	clients := make([]*imclient.Client, users)
	for i := range users {
		aors[i] = fmt.Sprintf("sip:bin%03d@example.com", i)
		clients[i] = newClient(b, aors[i], imclient.Config{})
	}
	var dpCPU, redisCPU float64
	b.ResetTimer()
	for done, round := 0, 0; done < b.N; round++ {
		b.StopTimer()
		n := min(users, b.N-done)
		base := make([]imclient.Stats, n)
		for i := range n {
			callID := fmt.Sprintf("bin-%d-%d@example.com", round, i)
			raw := "MESSAGE " + aors[i] + " SIP/2.0\r\n" +
				"Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK" + strings.ReplaceAll(callID, "@", ".") + "\r\n" +
				"From: <sip:alice@example.com>;tag=1\r\nTo: <" + aors[i] + ">\r\nCall-ID: " + callID + "\r\nCSeq: 1 MESSAGE\r\n" +
				"Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
			hook("/hooks/kamailio/message", map[string]string{"raw": raw, "aor": aors[i]})
			base[i] = clients[i].Stats()
		}
		dp0, redis0 := processCPUSeconds(dp.cmd.Process.Pid), processCPUSeconds(r.Proc().PID())
		b.StartTimer()
		for i := range n {
			register(aors[i], clients[i].Contact())
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		for i := range n {
			if _, err := clients[i].Wait(ctx, func(s imclient.Stats) bool {
				return s.Received >= base[i].Received+1 && (pager || s.Byes >= base[i].Byes+1)
			}); err != nil {
				b.Fatalf("client %d: %v", i, err)
			}
		}
		cancel()
		b.StopTimer()
		// The BYE's answer (in pager mode the MESSAGE's 200, then the
		// ack and unlock) comes last: let the last ones run before the
		// CPU is read.
		time.Sleep(20 * time.Millisecond)
		dpCPU += processCPUSeconds(dp.cmd.Process.Pid) - dp0
		redisCPU += processCPUSeconds(r.Proc().PID()) - redis0
		done += n
		b.StartTimer()
	}
	if pager {
		for i := range users {
			for _, m := range clients[i].Received() {
				if !m.Pager {
					b.Fatalf("client %d got a message over MSRP, want pager mode", i)
				}
			}
		}
	}
	b.ReportMetric(dpCPU*1e6/float64(b.N), "deferpush-us/push")
	b.ReportMetric(redisCPU*1e6/float64(b.N), "redis-us/push")
}

// quietSIP silences sipgo's package logger (slog's default) for the
// benchmark: under load it warns of its TCP connections' reference counts
// ("TCP ref went negative") on the benchmark's output, where go test
// merges it into the result lines benchstat reads.
func quietSIP(b *testing.B) {
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.DiscardHandler))
	b.Cleanup(func() { slog.SetDefault(prev) })
}
