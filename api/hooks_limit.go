package api

import (
	"math"
	"net/netip"
	"sync"
	"time"
)

// maxHookDepth bounds the nesting of a hook body. The hooks' JSON is one
// flat object: anything deeper is refused before a decoder walks it.
const maxHookDepth = 8

// jsonDepth returns how deeply arrays and objects nest in b, a JSON text,
// stopping as soon as it passes limit; brackets inside strings do not
// count. It does not validate b.
func jsonDepth(b []byte, limit int) int {
	depth, deepest, inString := 0, 0, false
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch {
		case inString:
			switch c {
			case '\\':
				i++
			case '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			depth++
			if depth > deepest {
				deepest = depth
				if deepest > limit {
					return deepest
				}
			}
		case c == '}' || c == ']':
			depth--
		}
	}
	return deepest
}

// maxRateSources bounds the sources rateLimiter tracks one by one; beyond
// it, sources it has not seen share one bucket.
const maxRateSources = 10000

// rateLimiter is a token bucket per source address: each source may make
// burst calls at once and rate calls a second in the long run. Its memory
// is bounded: a bucket that has refilled is forgotten when room is needed,
// and past maxRateSources, new sources share one bucket.
type rateLimiter struct {
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

func newRateLimiter(rate float64, burst int, now func() time.Time) *rateLimiter {
	if burst < 1 {
		burst = max(1, int(math.Ceil(rate)))
	}
	return &rateLimiter{
		rate: rate, burst: float64(burst), now: now,
		buckets:  make(map[netip.Addr]*bucket),
		overflow: bucket{tokens: float64(burst), last: now()},
	}
}

// allow takes a token of src's bucket. When there is none it returns
// false and how long until there is one.
func (l *rateLimiter) allow(src netip.Addr) (bool, time.Duration) {
	if src.Is6() && !src.Is4In6() {
		// One IPv6 host usually holds a whole /64.
		src = netip.PrefixFrom(src, 64).Masked().Addr()
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[src]
	if b == nil {
		// A sweep walks every bucket: at most one a second.
		if len(l.buckets) >= maxRateSources && now.Sub(l.lastEvict) >= time.Second {
			l.lastEvict = now
			l.evict(now)
		}
		if len(l.buckets) >= maxRateSources {
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
func (l *rateLimiter) evict(now time.Time) {
	for src, b := range l.buckets {
		if b.tokens+now.Sub(b.last).Seconds()*l.rate >= l.burst {
			delete(l.buckets, src)
		}
	}
}

// sources is the number of sources tracked one by one.
func (l *rateLimiter) sources() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}
