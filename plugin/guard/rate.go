package guard

import (
	"math"
	"net"
	"net/netip"
	"sync"
	"time"
)

// MaxRateSources bounds the sources a RateLimiter tracks one by one;
// beyond it, sources it has not seen share one bucket.
const MaxRateSources = 10000

// RateLimiter is a token bucket per source address: each source may make
// Burst calls at once and rate calls a second in the long run (IPv6 per
// /64). Its memory is bounded: a bucket that has refilled is forgotten
// when room is needed, and past MaxRateSources, new sources share one
// bucket.
type RateLimiter struct {
	rate  float64 // tokens a second
	burst float64
	now   func() time.Time

	mu        sync.Mutex
	buckets   map[netip.Addr]*bucket
	overflow  bucket
	lastEvict time.Time
}

type bucket struct {
	tokens float64
	last   time.Time
}

// NewRateLimiter returns a limiter of rate calls a second (positive) with
// bursts of burst; a burst below 1 is the rate rounded up. now is the
// clock; nil means time.Now.
func NewRateLimiter(rate float64, burst int, now func() time.Time) *RateLimiter {
	if burst < 1 {
		burst = max(1, int(math.Ceil(rate)))
	}
	if now == nil {
		now = time.Now
	}
	return &RateLimiter{
		rate: rate, burst: float64(burst), now: now,
		buckets:  make(map[netip.Addr]*bucket),
		overflow: bucket{tokens: float64(burst), last: now()},
	}
}

// Rate is the calls a second a source may make in the long run.
func (l *RateLimiter) Rate() float64 { return l.rate }

// Burst is the calls a source may make at once.
func (l *RateLimiter) Burst() int { return int(l.burst) }

// Allow takes a token of src's bucket. When there is none it returns
// false and how long until there is one.
func (l *RateLimiter) Allow(src netip.Addr) (bool, time.Duration) {
	src = sourceKey(src)
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[src]
	if b == nil {
		// A sweep walks every bucket: at most one a second.
		if len(l.buckets) >= MaxRateSources && now.Sub(l.lastEvict) >= time.Second {
			l.lastEvict = now
			l.evict(now)
		}
		if len(l.buckets) >= MaxRateSources {
			b = &l.overflow
		} else {
			b = &bucket{tokens: l.burst, last: now}
			l.buckets[src] = b
		}
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) / l.rate * float64(time.Second))
}

// evict forgets the buckets that are full again: their sources are idle,
// and a fresh bucket is the same as theirs.
func (l *RateLimiter) evict(now time.Time) {
	for src, b := range l.buckets {
		if b.tokens+now.Sub(b.last).Seconds()*l.rate >= l.burst {
			delete(l.buckets, src)
		}
	}
}

// Sources is the number of sources tracked one by one.
func (l *RateLimiter) Sources() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

// sourceKey is the unit a limit counts: the address, IPv4 unmapped, and
// an IPv6 address's /64 (one host usually holds a whole /64).
func sourceKey(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if a.Is6() {
		return netip.PrefixFrom(a, 64).Masked().Addr()
	}
	return a
}

// SourceOf is the address of a connection's peer (IPv4 unmapped); the
// zero Addr when addr is not an IP address.
func SourceOf(addr net.Addr) netip.Addr {
	if ta, ok := addr.(*net.TCPAddr); ok {
		return ta.AddrPort().Addr().Unmap()
	}
	if ua, ok := addr.(*net.UDPAddr); ok {
		return ua.AddrPort().Addr().Unmap()
	}
	ap, err := netip.ParseAddrPort(addr.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}
