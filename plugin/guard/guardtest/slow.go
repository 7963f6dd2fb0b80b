// Package guardtest floods a listener the ways package guard is meant to
// withstand, for the tests of the servers behind it: the connections
// come from loopback addresses (127.0.0.2 and up), are bounded in number
// and end with the flood's context.
package guardtest

import (
	"bufio"
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"time"
)

// The pace of a SlowFlood's connections.
const (
	// TrickleEvery is how often each connection sends its next byte.
	TrickleEvery = 200 * time.Millisecond
	// ReopenAfter is how soon a connection the server closed is opened
	// again.
	ReopenAfter = 100 * time.Millisecond
)

// SlowConfig configures a SlowFlood.
type SlowConfig struct {
	// Addr is the listener's TCP address.
	Addr string
	// Sources is the number of source addresses, 127.0.0.2 and up, and
	// PerSource the connections held from each at once.
	Sources, PerSource int
	// Start is what each connection sends first: the beginning of a
	// request, which the flood then lengthens by one octet ('a') every
	// TrickleEvery and never ends, so it must end inside a header field's
	// value ("...\r\nX-Pad: ").
	Start string
}

// SlowFlood is a slow-request ("slowloris") flood: connections that each
// send a request a byte at a time, opened again whenever the server
// closes them.
type SlowFlood struct {
	wg      sync.WaitGroup
	mu      sync.Mutex
	answers map[string]int64 // the first line of each answer; "closed": none
}

// StartSlow starts the flood; it lasts until ctx ends. Wait for its
// connections to be closed before the test ends.
func StartSlow(ctx context.Context, cfg SlowConfig) *SlowFlood {
	f := &SlowFlood{answers: make(map[string]int64)}
	for s := range cfg.Sources {
		src := &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+s))}
		for range cfg.PerSource {
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				for ctx.Err() == nil {
					f.hold(ctx, cfg, src)
					select {
					case <-ctx.Done():
					case <-time.After(ReopenAfter):
					}
				}
			}()
		}
	}
	return f
}

// Wait waits until every connection of the flood is closed (its context
// ended).
func (f *SlowFlood) Wait() { f.wg.Wait() }

// hold keeps one connection trickling until the server closes it or ctx
// ends, and notes the first line of the answer, if any.
func (f *SlowFlood) hold(ctx context.Context, cfg SlowConfig, src *net.TCPAddr) {
	d := net.Dialer{LocalAddr: src, Timeout: time.Second}
	c, err := d.DialContext(ctx, "tcp", cfg.Addr)
	if err != nil {
		return
	}
	defer c.Close()
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		line, _ := bufio.NewReader(c).ReadString('\n')
		if line = strings.TrimSpace(line); line == "" {
			line = "closed"
		}
		f.mu.Lock()
		f.answers[line]++
		f.mu.Unlock()
	}()
	if _, err := io.WriteString(c, cfg.Start); err != nil {
		return
	}
	tick := time.NewTicker(TrickleEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-closed:
			return
		case <-tick.C:
			if _, err := c.Write([]byte("a")); err != nil {
				return
			}
		}
	}
}

// Count is the number of the flood's connections that got an answer whose
// first line begins with prefix ("closed": those closed unanswered).
func (f *SlowFlood) Count(prefix string) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	var n int64
	for line, k := range f.answers {
		if strings.HasPrefix(line, prefix) {
			n += k
		}
	}
	return n
}

// Answers is how many connections got each answer, for a test's log.
func (f *SlowFlood) Answers() map[string]int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := make(map[string]int64, len(f.answers))
	for line, k := range f.answers {
		m[line] = k
	}
	return m
}
