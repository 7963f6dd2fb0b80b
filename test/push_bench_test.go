package test

import (
	"context"
	"fmt"
	"slices"
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
