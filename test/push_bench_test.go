package test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/deferpush/deferpush/adapters/imclient"
	"github.com/deferpush/deferpush/plugin"
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
