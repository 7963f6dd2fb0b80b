package guard

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"
)

// refusals records why the listener refused each connection.
type refusals chan error

func (r refusals) refuse(c net.Conn, why error) {
	c.Close()
	r <- why
}

// expect waits for the next refusal and checks its reason.
func (r refusals) expect(t *testing.T, what string, want error) {
	t.Helper()
	select {
	case got := <-r:
		if !errors.Is(got, want) {
			t.Errorf("%s refused for %v, want %v", what, got, want)
		}
	case <-time.After(2 * time.Second):
		t.Fatalf("%s was not refused, want %v", what, want)
	}
}

// none checks that nothing was refused.
func (r refusals) none(t *testing.T, what string) {
	t.Helper()
	select {
	case got := <-r:
		t.Errorf("%s: a connection was refused (%v), want it admitted", what, got)
	default:
	}
}

// trickle starts a request on c and then sends one more byte every 50 ms
// until the test ends or the connection breaks, never ending a line: a
// slow-request flood's connection, which the echo server never answers.
func trickle(t *testing.T, c net.Conn) {
	t.Helper()
	if _, err := io.WriteString(c, "POST /hooks HTTP/1.1 "); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	go func() {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				if _, err := c.Write([]byte("x")); err != nil {
					return
				}
			}
		}
	}()
}

// settle gives the server time to read what was just sent.
func settle() { time.Sleep(30 * time.Millisecond) }

// TestBusyPastGraceClosedForRoom: with the cap full of connections
// trickling a request, a new one is refused within the grace and, past it,
// takes the place of the connection whose request began first (not the
// one accepted first); the others stay.
func TestBusyPastGraceClosedForRoom(t *testing.T) {
	inner := loopback(t)
	refused := make(refusals, 10)
	l := Listen(inner, Config{Name: "test", MaxConns: 3, EvictIdle: true, BusyGrace: 300 * time.Millisecond, Refuse: refused.refuse})
	go serve(l)
	addr := inner.Addr().String()
	var flood []net.Conn
	for i := range 3 {
		flood = append(flood, dial(t, addr, "127.0.0.1"))
		waitOpen(t, l, i+1)
	}
	// The last accepted begins its request first.
	for _, c := range []net.Conn{flood[2], flood[0], flood[1]} {
		trickle(t, c)
		settle()
	}

	dial(t, addr, "127.0.0.1")
	refused.expect(t, "a new connection within the grace", ErrBusy)

	time.Sleep(300 * time.Millisecond)
	fresh := dial(t, addr, "127.0.0.1")
	if err := roundTrip(fresh); err != nil {
		t.Fatalf("a new connection past the grace: %v, want it served", err)
	}
	refused.none(t, "past the grace")
	if !closedByServer(flood[2]) {
		t.Error("the connection whose request began first is still open")
	}
	for _, c := range flood[:2] {
		if closedByServer(c) {
			t.Errorf("connection %v closed, want only the oldest request closed", c.LocalAddr())
		}
	}
	if n := l.Open(); n != 3 {
		t.Errorf("%d connections open, want 3", n)
	}
}

// TestLightSourceTakesFromHeaviest: a flood from one address that reopens
// what is closed keeps every request younger than the grace; a connection
// from another address still gets in, in the place of the flood's oldest
// request once it is a quarter of the grace old, while the flood's own
// new connections are refused and cannot take the other address's idle
// kept-alive connection.
func TestLightSourceTakesFromHeaviest(t *testing.T) {
	inner := loopback(t)
	refused := make(refusals, 10)
	l := Listen(inner, Config{Name: "test", MaxConns: 4, EvictIdle: true, BusyGrace: 2 * time.Second, Refuse: refused.refuse})
	go serve(l)
	addr := inner.Addr().String()
	var flood []net.Conn
	for i := range 4 {
		c := dial(t, addr, "127.0.0.2")
		waitOpen(t, l, i+1)
		trickle(t, c)
		settle()
		flood = append(flood, c)
	}
	dial(t, addr, "127.0.0.2")
	refused.expect(t, "the flood's next connection", ErrBusy)
	dial(t, addr, "127.0.0.1")
	refused.expect(t, "another address's, the flood's requests just begun", ErrBusy)

	time.Sleep(500 * time.Millisecond)
	proxy := dial(t, addr, "127.0.0.1")
	if err := roundTrip(proxy); err != nil {
		t.Fatalf("a connection from another address: %v, want it served", err)
	}
	refused.none(t, "another address")
	if !closedByServer(flood[0]) {
		t.Error("the flood's oldest request is still open")
	}
	// proxy is idle now; the flood's address holds 3, proxy's 1.
	dial(t, addr, "127.0.0.2")
	refused.expect(t, "the flood's connection with the other address idle", ErrBusy)
	if err := roundTrip(proxy); err != nil {
		t.Errorf("the other address's kept-alive connection: %v, want it untouched", err)
	}
}

// TestTrustedNeverClosedForOthers: a trusted source's connections, idle
// or busy, are never closed for a connection from elsewhere, and a new
// trusted one takes the place of an untrusted connection in the middle of
// a request, however young.
func TestTrustedNeverClosedForOthers(t *testing.T) {
	inner := loopback(t)
	refused := make(refusals, 10)
	l := Listen(inner, Config{Name: "test", MaxConns: 3, EvictIdle: true, BusyGrace: time.Minute,
		Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, Refuse: refused.refuse})
	go serve(l)
	addr := inner.Addr().String()
	idle := dial(t, addr, "127.0.0.1")
	if err := roundTrip(idle); err != nil {
		t.Fatal(err)
	}
	busy := dial(t, addr, "127.0.0.1")
	trickle(t, busy)
	stranger := dial(t, addr, "127.0.0.2")
	trickle(t, stranger)
	waitOpen(t, l, 3)
	settle()

	dial(t, addr, "127.0.0.3")
	refused.expect(t, "an untrusted connection with a trusted one idle", ErrBusy)

	proxy := dial(t, addr, "127.0.0.1")
	if err := roundTrip(proxy); err != nil {
		t.Fatalf("a new trusted connection: %v, want it served", err)
	}
	refused.none(t, "a new trusted connection")
	if !closedByServer(stranger) {
		t.Error("the untrusted connection is still open")
	}
	if err := roundTrip(idle); err != nil {
		t.Errorf("the trusted idle connection: %v, want it untouched", err)
	}
	if closedByServer(busy) {
		t.Error("the trusted busy connection was closed")
	}
}

// TestOnlyTrustedRefusedAtAccept: a connection from outside Trusted is
// refused at its accept with ErrSource and closed, counting against no
// bound: it closes nothing to make room and is refused as such, not as
// busy, when the cap is full.
func TestOnlyTrustedRefusedAtAccept(t *testing.T) {
	inner := loopback(t)
	refused := make(refusals, 10)
	b := NewBudget(1)
	l := Listen(inner, Config{Name: "test", MaxConns: 1, EvictIdle: true, Budget: b,
		Trusted:     []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")},
		OnlyTrusted: true, Refuse: refused.refuse})
	go serve(l)
	addr := inner.Addr().String()

	stranger := dial(t, addr, "127.0.0.2")
	refused.expect(t, "a connection from outside Trusted", ErrSource)
	if !closedByServer(stranger) {
		t.Error("the refused connection is still open")
	}
	if n := l.Open(); n != 0 {
		t.Errorf("%d connections open after the refusal, want 0", n)
	}

	proxy := dial(t, addr, "127.0.0.1")
	if err := roundTrip(proxy); err != nil {
		t.Fatal(err)
	}
	// The cap and the budget are full with proxy idle: a stranger closes
	// nothing.
	for range 3 {
		dial(t, addr, "127.0.0.2")
		refused.expect(t, "a stranger at the cap", ErrSource)
	}
	if err := roundTrip(proxy); err != nil {
		t.Errorf("the trusted idle connection: %v, want it untouched", err)
	}
	if n := b.Open(); n != 1 {
		t.Errorf("budget holds %d, want 1", n)
	}
}

// serveBinding is serve with a server that protects the connections
// that send a line starting "bind" (an MSRP session bound to them).
func serveBinding(l *Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			buf := make([]byte, 64)
			for {
				n, err := c.Read(buf)
				if err != nil {
					return
				}
				if bytes.HasPrefix(buf[:n], []byte("bind")) {
					Protect(c)
				}
				if buf[n-1] == '\n' {
					if _, err := c.Write(buf[:n]); err != nil {
						return
					}
				}
			}
		}()
	}
}

// TestUntilProtected: under UntilProtected a connection that has been
// answered but has not established anything (its server did not call
// Protect) still counts as in its first request, and goes for room once
// the grace has passed since its first byte, the oldest first; a
// protected one never goes.
func TestUntilProtected(t *testing.T) {
	inner := loopback(t)
	refused := make(refusals, 10)
	l := Listen(inner, Config{Name: "test", MaxConns: 3, BusyGrace: 200 * time.Millisecond, UntilProtected: true, Refuse: refused.refuse})
	go serveBinding(l)
	addr := inner.Addr().String()
	bound := dial(t, addr, "")
	if _, err := io.WriteString(bound, "bind\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(bound, make([]byte, 5)); err != nil {
		t.Fatal(err)
	}
	var unbound []net.Conn
	for range 2 {
		c := dial(t, addr, "")
		if err := roundTrip(c); err != nil {
			t.Fatal(err)
		}
		unbound = append(unbound, c)
	}

	dial(t, addr, "")
	refused.expect(t, "a new connection within the grace", ErrBusy)
	time.Sleep(200 * time.Millisecond)
	for i, c := range unbound {
		n := dial(t, addr, "")
		if err := roundTrip(n); err != nil {
			t.Fatalf("new connection %d: %v, want it served", i, err)
		}
		if !closedByServer(c) {
			t.Errorf("unbound connection %d is still open", i)
		}
	}
	dial(t, addr, "")
	refused.expect(t, "a new connection with the others young or protected", ErrBusy)
	if err := roundTrip(bound); err != nil {
		t.Errorf("the protected connection: %v, want it untouched", err)
	}
}

// TestFramedRequestFromMessageStart: with a Framer, a connection whose
// message arrived whole and waits for its answer is not in the middle of
// a request, however long the server takes; the one whose message is
// still arriving past the grace is closed for room.
func TestFramedRequestFromMessageStart(t *testing.T) {
	inner := loopback(t)
	refused := make(refusals, 10)
	l := Listen(inner, Config{Name: "test", MaxConns: 2, BusyGrace: 200 * time.Millisecond, Refuse: refused.refuse,
		NewFramer: func() Framer { return &startFramer{} }})
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(io.Discard, c) }() // never answers
		}
	}()
	addr := inner.Addr().String()
	waiting := dial(t, addr, "")
	if _, err := io.WriteString(waiting, "a whole message\n"); err != nil {
		t.Fatal(err)
	}
	settle()
	slow := dial(t, addr, "")
	trickle(t, slow)
	time.Sleep(250 * time.Millisecond)

	dial(t, addr, "")
	refused.none(t, "past the grace")
	if !closedByServer(slow) {
		t.Error("the connection still sending its message is open")
	}
	if closedByServer(waiting) {
		t.Error("the connection waiting for its answer was closed")
	}
}

// startFramer frames newline-ended lines.
type startFramer struct{ open bool }

func (f *startFramer) Feed(p []byte) (open, began bool) {
	began = !f.open
	f.open = p[len(p)-1] != '\n'
	return f.open, began && f.open
}
