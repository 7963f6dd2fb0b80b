package msrp

import (
	"net"
	"testing"
	"time"

	"github.com/deferpush/deferpush/plugin/guard"
)

// dialFrom connects to l from the loopback address src.
func dialFrom(t testing.TB, l *Listener, src string) *rawPeer {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	nc, err := d.Dial("tcp", l.URI().Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	return &rawPeer{t: t, nc: nc, r: NewReader(nc, Limits{})}
}

// TestListenerConnectionBounds: past MaxConnsPerHost from one address, or
// MaxConns in all, a connection's first request is answered 403 "Too many
// connections" and the connection closed; one that closes frees its slot.
func TestListenerConnectionBounds(t *testing.T) {
	l := startListener(t, ListenerConfig{MaxConns: 3, MaxConnsPerHost: 2})
	s := newSession(t, Config{Local: l.URI(), Handler: newInbox()})
	if err := l.Add(s, nil); err != nil {
		t.Fatal(err)
	}
	to, peer := s.URI().String(), "msrp://127.0.0.1:9/peer1234;tcp"
	// served says whether p's SEND is served (a 481 for no session, as it
	// names another session) or refused 403 and closed.
	served := func(p *rawPeer) bool {
		t.Helper()
		p.write(send("t0001", to[:len(to)-4]+"x;tcp", peer, "", ""))
		f := p.read()
		switch f.Status {
		case StatusNoSession:
			return true
		case StatusForbidden:
			if f.Comment != "Too many connections" {
				t.Errorf("403 comment %q", f.Comment)
			}
			p.expectClosed()
			return false
		}
		t.Fatalf("got %q", f.String())
		return false
	}
	a1, a2 := dialFrom(t, l, "127.0.0.1"), dialFrom(t, l, "127.0.0.1")
	if !served(a1) || !served(a2) {
		t.Fatal("connections within the bounds refused")
	}
	if served(dialFrom(t, l, "127.0.0.1")) {
		t.Error("a third connection from 127.0.0.1 served, want 403 (MaxConnsPerHost 2)")
	}
	if !served(dialFrom(t, l, "127.0.0.2")) {
		t.Fatal("a connection from another address refused")
	}
	if served(dialFrom(t, l, "127.0.0.3")) {
		t.Error("a fourth connection served, want 403 (MaxConns 3)")
	}
	a1.nc.Close()
	deadline := time.Now().Add(5 * time.Second)
	for !served(dialFrom(t, l, "127.0.0.3")) {
		if time.Now().After(deadline) {
			t.Fatal("the slot of a closed connection was not freed")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestUnboundConnectionTrickling: a connection that binds no session is
// closed Timeout after its accept, however often it sends frames that bind
// nothing (REPORTs, requests for sessions that do not exist).
func TestUnboundConnectionTrickling(t *testing.T) {
	l := startListener(t, ListenerConfig{Timeout: 500 * time.Millisecond})
	p := dialRaw(t, l)
	start := time.Now()
	closed := make(chan time.Duration, 1)
	go func() {
		for {
			if _, err := p.r.ReadFrame(); err != nil {
				closed <- time.Since(start)
				return
			}
		}
	}()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case d := <-closed:
			if d < 400*time.Millisecond || d > 3*time.Second {
				t.Errorf("closed after %v, want about 500ms", d)
			}
			return
		case <-tick.C:
			if i > 50 {
				t.Fatal("an unbound connection still open after 5 s of trickling")
			}
			p.nc.Write([]byte("MSRP r0001 REPORT\r\nTo-Path: msrp://127.0.0.1:9/nosession;tcp\r\nFrom-Path: msrp://127.0.0.1:9/peer;tcp\r\nMessage-ID: m1\r\nStatus: 000 200 OK\r\n-------r0001$\r\n"))
		}
	}
}

// TestExpectPeer: once Expect names the peer of a session added without
// one, a connection claiming the session from another path gets 481 and
// the named peer binds it; a connection that bound it before Expect, from
// another path, is dropped.
func TestExpectPeer(t *testing.T) {
	l := startListener(t, ListenerConfig{})
	const peer, other = "msrp://127.0.0.1:9/realpeer01;tcp", "msrp://127.0.0.1:9/impostor01;tcp"
	peerURI, _ := ParseURI(peer)

	t.Run("after Expect", func(t *testing.T) {
		s := newSession(t, Config{Local: l.URI(), Handler: newInbox()})
		if err := l.Add(s, nil); err != nil {
			t.Fatal(err)
		}
		if err := s.Expect([]URI{peerURI}); err != nil {
			t.Fatal(err)
		}
		imp := dialRaw(t, l)
		imp.write(send("t0001", s.URI().String(), other, "Message-ID: m0001\r\n", ""))
		if f := imp.read(); f.Status != StatusNoSession {
			t.Errorf("impostor got %q, want 481", f.String())
		}
		real := dialRaw(t, l)
		real.write(send("t0002", s.URI().String(), peer, "Message-ID: m0002\r\n", ""))
		if f := real.read(); f.Status != StatusOK {
			t.Errorf("peer got %q, want 200", f.String())
		}
	})
	t.Run("impostor bound first", func(t *testing.T) {
		s := newSession(t, Config{Local: l.URI(), Handler: newInbox()})
		if err := l.Add(s, nil); err != nil {
			t.Fatal(err)
		}
		imp := dialRaw(t, l)
		imp.write(send("t0003", s.URI().String(), other, "Message-ID: m0003\r\n", ""))
		if f := imp.read(); f.Status != StatusOK {
			t.Fatalf("impostor binding a session without a named peer: %q", f.String())
		}
		if err := s.Expect([]URI{peerURI}); err == nil {
			t.Error("Expect with another peer bound: nil error")
		}
		imp.expectClosed() // it served no other session
		real := dialRaw(t, l)
		real.write(send("t0004", s.URI().String(), peer, "Message-ID: m0004\r\n", ""))
		if f := real.read(); f.Status != StatusOK {
			t.Errorf("peer after the impostor was dropped: %q, want 200", f.String())
		}
	})
}

// TestSilentConnectionClosed: a connection that never sends a byte is
// closed Timeout after its accept.
func TestSilentConnectionClosed(t *testing.T) {
	l := startListener(t, ListenerConfig{Timeout: 300 * time.Millisecond})
	p := dialRaw(t, l)
	start := time.Now()
	if _, err := p.r.ReadFrame(); err == nil {
		t.Fatal("a frame on a silent connection")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("closed after %v, want about 300ms", d)
	}
}

// TestListenerBudget: with a shared guard.Budget full of connections that
// sent nothing, a new one takes the place of the oldest, and Run goes on.
func TestListenerBudget(t *testing.T) {
	b := guard.NewBudget(2)
	l := startListener(t, ListenerConfig{Budget: b})
	first, _ := dialRaw(t, l), dialRaw(t, l)
	third := dialRaw(t, l)
	if _, err := first.r.ReadFrame(); err == nil {
		t.Fatal("a frame on a silent connection")
	}
	s := newSession(t, Config{Local: l.URI(), Handler: newInbox()})
	if err := l.Add(s, nil); err != nil {
		t.Fatal(err)
	}
	to := s.URI().String()
	third.write(send("t0001", to[:len(to)-4]+"x;tcp", "msrp://127.0.0.1:9/peer1234;tcp", "", ""))
	if f := third.read(); f.Status != StatusNoSession {
		t.Errorf("the newest connection got %q, want it served (481)", f.String())
	}
	if n := b.Open(); n != 2 {
		t.Errorf("%d connections under the budget, want 2", n)
	}
}

// TestListenerEvictsSilentForRoom: at MaxConnsPerHost a new connection
// from the host takes the place of the one that has sent nothing for
// longest (README, Security: Connections); a connection that carries a
// session is never closed for room, and only when every connection has
// sent something is the new one refused 403.
func TestListenerEvictsSilentForRoom(t *testing.T) {
	l := startListener(t, ListenerConfig{MaxConnsPerHost: 3})
	s := newSession(t, Config{Local: l.URI(), Handler: newInbox()})
	if err := l.Add(s, nil); err != nil {
		t.Fatal(err)
	}
	const peer = "msrp://127.0.0.1:9/peer1234;tcp"
	to := s.URI().String()
	other := to[:len(to)-4] + "x;tcp" // no such session: 481
	bound := dialFrom(t, l, "127.0.0.1")
	bound.write(send("t0001", to, peer, "Message-ID: m0001\r\n", ""))
	if f := bound.read(); f.Status != StatusOK {
		t.Fatalf("binding the session: %q", f.String())
	}
	silent1 := dialFrom(t, l, "127.0.0.1")
	silent2 := dialFrom(t, l, "127.0.0.1")

	// status is the answer to a request on a new connection from the host.
	status := func(tid string) (*rawPeer, int) {
		t.Helper()
		p := dialFrom(t, l, "127.0.0.1")
		p.write(send(tid, other, peer, "", ""))
		return p, p.read().Status
	}
	if _, got := status("t0002"); got != StatusNoSession {
		t.Fatalf("new connection at the bound with silent ones open: %d, want it served (481)", got)
	}
	silent1.expectClosed()
	if _, got := status("t0003"); got != StatusNoSession {
		t.Fatalf("second new connection: %d, want it served (481) in place of the other silent one", got)
	}
	silent2.expectClosed()
	p, got := status("t0004")
	if got != StatusForbidden {
		t.Fatalf("every connection has sent something: %d, want 403", got)
	}
	p.expectClosed()
	bound.write(send("t0005", to, peer, "Message-ID: m0005\r\n", ""))
	if f := bound.read(); f.Status != StatusOK {
		t.Errorf("the session's connection after the bound: %q, want 200", f.String())
	}
}
