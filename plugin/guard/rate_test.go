package guard

import (
	"net/netip"
	"testing"
	"time"
)

func TestRateLimiterBuckets(t *testing.T) {
	now := time.Unix(1000, 0)
	l := NewRateLimiter(10, 20, func() time.Time { return now })
	a := netip.MustParseAddr("192.0.2.1")
	for i := range 20 {
		if ok, _ := l.Allow(a); !ok {
			t.Fatalf("call %d of the burst refused", i+1)
		}
	}
	if ok, wait := l.Allow(a); ok || wait != 100*time.Millisecond {
		t.Fatalf("past the burst: %v, wait %v; want refused, 100ms", ok, wait)
	}
	now = now.Add(250 * time.Millisecond) // 2.5 tokens
	for i := range 2 {
		if ok, _ := l.Allow(a); !ok {
			t.Fatalf("refilled call %d refused", i+1)
		}
	}
	if ok, _ := l.Allow(a); ok {
		t.Fatal("a third call after 250 ms allowed")
	}
	// Two addresses of one IPv6 /64 share a bucket.
	v6a, v6b := netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::ffff:2")
	for range 20 {
		l.Allow(v6a)
	}
	if ok, _ := l.Allow(v6b); ok {
		t.Error("another address of the same /64 has its own bucket")
	}
	if ok, _ := l.Allow(netip.MustParseAddr("2001:db8:0:1::1")); !ok {
		t.Error("another /64 refused")
	}
}

// TestRateLimiterBoundedMemory: many sources never make it track more
// than MaxRateSources; idle sources are forgotten to make room, and while
// none is idle, new sources share one bucket.
func TestRateLimiterBoundedMemory(t *testing.T) {
	now := time.Unix(1000, 0)
	l := NewRateLimiter(1, 2, func() time.Time { return now })
	addr := func(i int) netip.Addr {
		return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
	}
	for i := range MaxRateSources + 500 {
		l.Allow(addr(i))
	}
	if n := l.Sources(); n != MaxRateSources {
		t.Fatalf("tracking %d sources, want %d", n, MaxRateSources)
	}
	// The 500 newest share the overflow bucket: it is empty by now.
	if ok, _ := l.Allow(addr(MaxRateSources + 600)); ok {
		t.Error("an untracked source got a token from the drained overflow bucket")
	}
	// Once the tracked sources are idle (full again), they make room.
	now = now.Add(3 * time.Second)
	if ok, _ := l.Allow(addr(MaxRateSources + 700)); !ok {
		t.Error("a new source refused after the others went idle")
	}
	if n := l.Sources(); n != 1 {
		t.Errorf("tracking %d sources after the sweep, want 1", n)
	}
}
