package guard

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// flakyListener fails its first accepts with errs, then accepts from a
// real loopback listener.
type flakyListener struct {
	net.Listener
	errs []error
}

func (f *flakyListener) Accept() (net.Conn, error) {
	if len(f.errs) > 0 {
		err := f.errs[0]
		f.errs = f.errs[1:]
		return nil, err
	}
	return f.Listener.Accept()
}

func loopback(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func dial(t *testing.T, addr string, from string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 2 * time.Second}
	if from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// closedByServer reports whether the server closed c (a read sees EOF or
// a reset within a second).
func closedByServer(c net.Conn) bool {
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	_, err := c.Read(make([]byte, 1))
	return err != nil && !errors.Is(err, os.ErrDeadlineExceeded)
}

// TestAcceptRetriesTemporaryErrors: descriptors running out (EMFILE,
// ENFILE) or an aborted connection do not end Accept, which returns the
// next connection; a closed listener ends it.
func TestAcceptRetriesTemporaryErrors(t *testing.T) {
	inner := loopback(t)
	errs := []error{
		&net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)},
		&net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.ENFILE)},
		&net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.ECONNABORTED)},
	}
	l := Listen(&flakyListener{Listener: inner, errs: errs}, Config{Name: "test"})
	dial(t, inner.Addr().String(), "")
	start := time.Now()
	c, err := l.Accept()
	if err != nil {
		t.Fatalf("Accept after temporary errors: %v, want the connection", err)
	}
	c.Close()
	// 5 + 10 + 20 ms of backoff.
	if d := time.Since(start); d < 35*time.Millisecond {
		t.Errorf("three retries took %v, want the backoff (at least 35 ms)", d)
	}
	l.Close()
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept on a closed listener: %v, want net.ErrClosed", err)
	}
}

// TestAcceptBackoffEndsOnClose: a Close during the backoff ends Accept.
func TestAcceptBackoffEndsOnClose(t *testing.T) {
	inner := loopback(t)
	var errs []error
	for range 100 {
		errs = append(errs, os.NewSyscallError("accept4", syscall.EMFILE))
	}
	l := Listen(&flakyListener{Listener: inner, errs: errs}, Config{})
	done := make(chan error, 1)
	go func() { _, err := l.Accept(); done <- err }()
	time.Sleep(50 * time.Millisecond)
	l.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Accept: %v, want net.ErrClosed", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Accept still retrying after Close")
	}
}

// serve accepts on l and, for each connection, echoes what it reads
// once a line is complete (one "request" a line), until l closes.
func serve(l *Listener) {
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
				if buf[n-1] == '\n' {
					if _, err := c.Write(buf[:n]); err != nil {
						return
					}
				}
			}
		}()
	}
}

func waitOpen(t *testing.T, l *Listener, n int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for l.Open() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections open, want %d", l.Open(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func roundTrip(c net.Conn) error {
	if _, err := io.WriteString(c, "ping\n"); err != nil {
		return err
	}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 5)
	_, err := io.ReadFull(c, buf)
	return err
}

// TestCapClosesIdleForRoom: at MaxConns, a new connection takes the place
// of one that sent nothing (the oldest), then of the one idle longest;
// connections busy with a request are never closed, and when all are
// busy the new one is refused.
func TestCapClosesIdleForRoom(t *testing.T) {
	inner := loopback(t)
	refused := make(chan struct{}, 10)
	l := Listen(inner, Config{Name: "test", MaxConns: 3, EvictIdle: true, Refuse: func(c net.Conn, _ error) {
		c.Close()
		refused <- struct{}{}
	}})
	go serve(l)
	addr := inner.Addr().String()

	silent := dial(t, addr, "")
	waitOpen(t, l, 1)
	used := dial(t, addr, "")
	if err := roundTrip(used); err != nil {
		t.Fatal(err)
	}
	busy := dial(t, addr, "")
	if _, err := io.WriteString(busy, "half a request"); err != nil {
		t.Fatal(err)
	}
	waitOpen(t, l, 3)
	time.Sleep(20 * time.Millisecond) // the server reads busy's bytes

	fresh := dial(t, addr, "")
	if !closedByServer(silent) {
		t.Fatal("the connection that sent nothing was not closed for the new one")
	}
	if err := roundTrip(fresh); err != nil {
		t.Fatalf("the new connection: %v", err)
	}
	// fresh and used are idle now; used has been idle longer.
	another := dial(t, addr, "")
	if !closedByServer(used) {
		t.Fatal("the connection idle longest was not closed for the new one")
	}
	if err := roundTrip(another); err != nil {
		t.Fatalf("the second new connection: %v", err)
	}
	if closedByServer(busy) {
		t.Error("a connection in the middle of a request was closed")
	}

	// Everything busy: the next is refused.
	for _, c := range []net.Conn{fresh, another} {
		if _, err := io.WriteString(c, "half"); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(20 * time.Millisecond)
	dial(t, addr, "")
	select {
	case <-refused:
	case <-time.After(2 * time.Second):
		t.Fatal("a connection past the cap with every one busy was not refused")
	}
	if n := l.Open(); n != 3 {
		t.Errorf("%d connections open, want 3", n)
	}
}

// TestPerHostCapTakesFromItsOwnHost: a source at MaxConnsPerHost makes
// room among its own connections, never another source's.
func TestPerHostCapTakesFromItsOwnHost(t *testing.T) {
	inner := loopback(t)
	l := Listen(inner, Config{MaxConns: 10, MaxConnsPerHost: 2, EvictIdle: true})
	go serve(l)
	addr := inner.Addr().String()
	other := dial(t, addr, "127.0.0.2") // idle the longest of all
	waitOpen(t, l, 1)
	a1 := dial(t, addr, "127.0.0.1")
	waitOpen(t, l, 2)
	dial(t, addr, "127.0.0.1")
	waitOpen(t, l, 3)
	a3 := dial(t, addr, "127.0.0.1")
	if !closedByServer(a1) {
		t.Fatal("the source's own oldest connection was not closed at its cap")
	}
	if err := roundTrip(a3); err != nil {
		t.Fatal(err)
	}
	if err := roundTrip(other); err != nil {
		t.Errorf("another source's connection: %v, want it untouched", err)
	}
}

// TestBudgetSharedByListeners: two listeners on one Budget hold at most
// its size together; the new connection on one takes the place of the
// oldest silent one on the other.
func TestBudgetSharedByListeners(t *testing.T) {
	b := NewBudget(2)
	in1, in2 := loopback(t), loopback(t)
	l1 := Listen(in1, Config{Name: "one", Budget: b})
	l2 := Listen(in2, Config{Name: "two", Budget: b})
	go serve(l1)
	go serve(l2)
	s1 := dial(t, in1.Addr().String(), "")
	waitOpen(t, l1, 1)
	dial(t, in1.Addr().String(), "")
	waitOpen(t, l1, 2)
	c := dial(t, in2.Addr().String(), "")
	if err := roundTrip(c); err != nil {
		t.Fatal(err)
	}
	if !closedByServer(s1) {
		t.Fatal("the oldest silent connection of the other listener was not closed")
	}
	if n := b.Open(); n != 2 {
		t.Errorf("budget holds %d connections, want 2", n)
	}
}

// TestFirstByteAndIdleTimeouts: a connection that sends nothing is ended
// after FirstByteTimeout, one that stops sending after IdleTimeout; the
// server's Read sees io.EOF.
func TestFirstByteAndIdleTimeouts(t *testing.T) {
	inner := loopback(t)
	l := Listen(inner, Config{FirstByteTimeout: 100 * time.Millisecond, IdleTimeout: 300 * time.Millisecond})
	errc := make(chan error, 2)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				start := time.Now()
				_, err := io.Copy(io.Discard, c)
				if err == nil {
					err = io.EOF // io.Copy swallows it
				}
				errc <- fmt.Errorf("%w after %v", err, time.Since(start).Round(100*time.Millisecond))
			}()
		}
	}()
	dial(t, inner.Addr().String(), "")
	select {
	case err := <-errc:
		if !errors.Is(err, io.EOF) {
			t.Errorf("silent connection: %v, want io.EOF", err)
		}
		t.Logf("silent connection ended: %v", err)
	case <-time.After(2 * time.Second):
		t.Fatal("a connection that sent nothing is still open")
	}
	c := dial(t, inner.Addr().String(), "")
	io.WriteString(c, "x")
	start := time.Now()
	if !closedByServer(c) {
		time.Sleep(time.Second)
	}
	<-errc
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Errorf("a connection that sent a byte was ended after %v, before its idle timeout", d)
	}
}

// lineRefuser frames newline-ended lines; it refuses at once a line
// starting "big" and, when the server closes, one starting "bad".
type lineRefuser struct{ last string }

func (f *lineRefuser) Feed(p []byte) (open, began bool) {
	f.last = string(p)
	return false, false
}

func (f *lineRefuser) Refusal(_ net.Addr, closing bool) []byte {
	switch {
	case strings.HasPrefix(f.last, "big"):
		return []byte("TOO LARGE\n")
	case closing && strings.HasPrefix(f.last, "bad"):
		return []byte("BAD\n")
	}
	return nil
}

// TestRefuserAnswers: a Refuser's answer is written before the close
// when the server closes right after reading (not after the peer ended
// its side or a timeout), at once for a message refused as it is read
// (the next Read ends the stream), and once.
func TestRefuserAnswers(t *testing.T) {
	inner := loopback(t)
	l := Listen(inner, Config{IdleTimeout: 300 * time.Millisecond, NewFramer: func() Framer { return &lineRefuser{} }})
	reads := make(chan string, 4)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				buf := make([]byte, 64)
				var got []string
				for {
					n, err := c.Read(buf)
					if err != nil {
						got = append(got, "EOF")
						break
					}
					got = append(got, string(buf[:n]))
					if string(buf[:n]) == "bad\n" {
						break // a parser giving up
					}
				}
				c.Close()
				c.Close()
				reads <- strings.Join(got, "|")
			}()
		}
	}()
	answer := func(c net.Conn) string {
		_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
		b, _ := io.ReadAll(c)
		return string(b)
	}
	tests := []struct {
		name, send      string
		halfClose       bool
		answer, readAll string
	}{
		{"server closes on what it read", "bad\n", false, "BAD\n", "bad\n"},
		{"refused as read", "big\n", false, "TOO LARGE\n", "big\n|EOF"},
		{"peer ends its side", "good\n", true, "", "good\n|EOF"},
		// The Refuser would refuse it, but the server reads on: the idle
		// timeout, not the server, ends the connection.
		{"idle timeout after a refusable read", "bad, yet read on\n", false, "", "bad, yet read on\n|EOF"},
	}
	for _, tt := range tests {
		c := dial(t, inner.Addr().String(), "")
		io.WriteString(c, tt.send)
		if tt.halfClose {
			time.Sleep(50 * time.Millisecond)
			c.(*net.TCPConn).CloseWrite()
		}
		if got := answer(c); got != tt.answer {
			t.Errorf("%s: answered %q, want %q", tt.name, got, tt.answer)
		}
		if got := <-reads; got != tt.readAll {
			t.Errorf("%s: the server read %q, want %q", tt.name, got, tt.readAll)
		}
	}
}
