package msrp

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/deferpush/deferpush/plugin/guard"
	"github.com/deferpush/deferpush/plugin/guard/guardtest"
)

// TestListenerSlowFlood: connections from 127.0.0.2-3 that send a SEND a
// byte at a time, bind nothing and are reopened as soon as they are
// closed hold the listener's bound (PROBE5 F1, the MSRP variant). A
// session's connection bound before keeps working, and clients that
// connect to bind their sessions (a=setup:active) get in, each in the
// place of a flood connection; before, every one was refused 403 (each
// flood connection had sent a byte, so might carry a session).
func TestListenerSlowFlood(t *testing.T) {
	l := startListener(t, ListenerConfig{MaxConns: 16, MaxConnsPerHost: 16})
	const peer = "msrp://127.0.0.1:9/peer1234;tcp"
	bind := func(p *rawPeer, s *Session, tid string) error {
		p.write(send(tid, s.URI().String(), peer, "Message-ID: m"+tid+"\r\n", ""))
		f, err := p.r.ReadFrame()
		if err != nil {
			return err
		}
		if f.Status != StatusOK {
			return fmt.Errorf("answered %q", f.String())
		}
		return nil
	}
	session := func() *Session {
		s := newSession(t, Config{Local: l.URI(), Handler: newInbox()})
		if err := l.Add(s, nil); err != nil {
			t.Fatal(err)
		}
		return s
	}
	early, earlyConn := session(), dialFrom(t, l, "127.0.0.1")
	if err := bind(earlyConn, early, "t0000"); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	flood := guardtest.StartSlow(ctx, guardtest.SlowConfig{Addr: l.URI().Addr(), Sources: 2, PerSource: 32,
		Start: "MSRP flood123 SEND\r\nTo-Path: msrp://127.0.0.1:9/nosuchsession;tcp\r\nX-Pad: "})
	t.Cleanup(func() { cancel(); flood.Wait() })
	gl := l.ln.(*guard.Listener)
	for gl.Open() < 16 {
		if ctx.Err() != nil {
			t.Fatalf("the flood never held the bound: %d open", gl.Open())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// A client's new connection takes the place of a flood request a
	// quarter of the grace old (guard.Config.BusyGrace).
	time.Sleep(guard.DefaultBusyGrace/4 + 100*time.Millisecond)
	for i := range 6 {
		p := dialFrom(t, l, "127.0.0.1")
		if err := bind(p, session(), fmt.Sprintf("t%04d", i+1)); err != nil {
			t.Errorf("a client binding its session during the flood (%d): %v", i+1, err)
		}
		if err := bind(earlyConn, early, fmt.Sprintf("e%04d", i+1)); err != nil {
			t.Fatalf("the session bound before the flood: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("the flood's answers: %v", flood.Answers())
}

// TestListenerKeepsBoundPastGrace: at the bound, a connection that bound
// no session goes for room once the grace has passed since its first
// byte, one that carries a session never does, however long ago it
// bound it; when only that one and young ones are left, a new connection
// is refused 403.
func TestListenerKeepsBoundPastGrace(t *testing.T) {
	l := startListener(t, ListenerConfig{MaxConnsPerHost: 2})
	const peer = "msrp://127.0.0.1:9/peer1234;tcp"
	s := newSession(t, Config{Local: l.URI(), Handler: newInbox()})
	if err := l.Add(s, nil); err != nil {
		t.Fatal(err)
	}
	to := s.URI().String()
	other := to[:len(to)-4] + "x;tcp" // no such session: 481
	bound := dialFrom(t, l, "127.0.0.1")
	bound.write(send("t0001", to, peer, "Message-ID: m0001\r\n", ""))
	if f := bound.read(); f.Status != StatusOK {
		t.Fatalf("binding the session: %q", f.String())
	}
	unbound := dialFrom(t, l, "127.0.0.1")
	unbound.write(send("t0002", other, peer, "", ""))
	if f := unbound.read(); f.Status != StatusNoSession {
		t.Fatalf("a request for no session: %q, want 481", f.String())
	}
	time.Sleep(guard.DefaultBusyGrace + 100*time.Millisecond)

	status := func(tid string) int {
		t.Helper()
		p := dialFrom(t, l, "127.0.0.1")
		p.write(send(tid, other, peer, "", ""))
		return p.read().Status
	}
	if got := status("t0003"); got != StatusNoSession {
		t.Fatalf("a new connection with an unbound one past the grace: %d, want it served (481)", got)
	}
	unbound.expectClosed()
	if got := status("t0004"); got != StatusForbidden {
		t.Errorf("a new connection with only a bound and a young one: %d, want 403", got)
	}
	bound.write(send("t0005", to, peer, "Message-ID: m0005\r\n", ""))
	if f := bound.read(); f.Status != StatusOK {
		t.Errorf("the session's connection bound past the grace: %q, want 200", f.String())
	}
}
