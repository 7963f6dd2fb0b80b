package msrp

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestActivate: a session added to a listener as passive, then activated,
// connects itself to the peer and sends; a third party that read its
// session id cannot bind it (481), and it cannot be activated twice. A
// session a peer already bound cannot be activated.
func TestActivate(t *testing.T) {
	ours := startListener(t, ListenerConfig{})
	theirs := startListener(t, ListenerConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	s := newSession(t, Config{Local: ours.URI()})
	if err := ours.Add(s, nil); err != nil {
		t.Fatal(err)
	}
	in := newInbox()
	peer := newSession(t, Config{Local: theirs.URI(), Handler: in})
	if err := theirs.Add(peer, []URI{s.URI()}); err != nil {
		t.Fatal(err)
	}
	if err := ours.Activate(s); err != nil {
		t.Fatalf("Activate: %v", err)
	}
	if err := ours.Activate(s); err == nil {
		t.Error("second Activate: no error")
	}
	intruder := newSession(t, Config{Local: URI{Host: "127.0.0.1", Port: 9, Transport: "tcp"}})
	var se *StatusError
	if err := intruder.Connect(ctx, []URI{s.URI()}); !errors.As(err, &se) || se.Code != StatusNoSession {
		t.Errorf("a third party binding the activated session: %v, want a 481", err)
	}
	if err := s.Connect(ctx, []URI{peer.URI()}); err != nil {
		t.Fatalf("Connect: %v", err)
	}
	if err := s.Send(ctx, Message{ID: "activated01", ContentType: "text/plain", Body: []byte("hello")}); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if got := in.next(t); got.ID != "activated01" || string(got.Body) != "hello" {
		t.Errorf("peer got %s %q, want activated01 \"hello\"", got.ID, got.Body)
	}

	// A passive session a peer bound stays passive.
	bound := newSession(t, Config{Local: ours.URI(), Handler: newInbox()})
	if err := ours.Add(bound, nil); err != nil {
		t.Fatal(err)
	}
	other := newSession(t, Config{Local: URI{Host: "127.0.0.1", Port: 9, Transport: "tcp"}})
	if err := other.Connect(ctx, []URI{bound.URI()}); err != nil {
		t.Fatalf("peer Connect: %v", err)
	}
	if err := ours.Activate(bound); err == nil {
		t.Error("Activate of a bound session: no error")
	}
	if err := theirs.Activate(newSession(t, Config{Local: theirs.URI()})); err == nil {
		t.Error("Activate of a session not added: no error")
	}
}
