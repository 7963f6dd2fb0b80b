package store

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/test/harness"
)

// TestEvents: the registration events dp_register writes are read by the
// group once (two consumers: one gets each), with the fields the library
// wrote; one a consumer read and never acked (it died) is taken over by
// another once idle, and gone from the pending entries once acked.
func TestEvents(t *testing.T) {
	s, c := directStore(t, plugin.DefaultPolicy(), plugin.AORRules{})
	ctx := context.Background()
	if code, _, _ := dpStore(t, c, "sip:bob@example.com", directMessages[0].raw); code != 202 {
		t.Fatal(code)
	}
	at := time.Now()
	if n := dpRegister(t, c, "sip:Bob@example.com", "sip:bob@h:5", 600, fmt.Sprintf("%d.%d", at.Unix(), at.Nanosecond()/1000), "", "", "", ""); n != 1 {
		t.Fatalf("dp_register = %d", n)
	}
	evs, err := s.ReadEvents(ctx, "a", 10, 100*time.Millisecond)
	if err != nil || len(evs) != 1 {
		t.Fatalf("a read %v, %v; want one event", evs, err)
	}
	ev := evs[0]
	if ev.Kind != plugin.EventRegistered || ev.AOR.String() != "sip:bob@example.com" || ev.Contact != "sip:bob@h:5" ||
		!ev.At.Equal(at.Truncate(time.Microsecond)) || time.Until(ev.Expires) < 590*time.Second || time.Until(ev.Expires) > 601*time.Second {
		t.Errorf("event %+v (at %v)", ev, at)
	}
	if evs, err := s.ReadEvents(ctx, "b", 10, 100*time.Millisecond); err != nil || len(evs) != 0 {
		t.Errorf("b read %v, %v; want nothing (a has it)", evs, err)
	}
	// a dies holding it: b takes it over once idle, not before.
	if evs, err := s.ClaimEvents(ctx, "b", time.Minute, 10); err != nil || len(evs) != 0 {
		t.Errorf("b claimed %v, %v before the idle time", evs, err)
	}
	time.Sleep(150 * time.Millisecond)
	evs, err = s.ClaimEvents(ctx, "b", 100*time.Millisecond, 10)
	if err != nil || len(evs) != 1 || evs[0].ID != ev.ID {
		t.Fatalf("b claimed %v, %v; want %s", evs, err, ev.ID)
	}
	if err := s.AckEvents(ctx, ev.ID); err != nil {
		t.Fatal(err)
	}
	if p, _ := c.XPending(ctx, "dp:events", "deferpush").Result(); p.Count != 0 {
		t.Errorf("%d pending after ack", p.Count)
	}
	// A group lost meanwhile (a Redis without persistence restarted) is
	// created again by the next read.
	if err := c.XGroupDestroy(ctx, "dp:events", "deferpush").Err(); err != nil {
		t.Fatal(err)
	}
	dpRegister(t, c, "sip:bob@example.com", "sip:bob@h:5", 600, fmt.Sprint(time.Now().UnixMicro()), "", "", "", "")
	if evs, err := s.ReadEvents(ctx, "a", 10, 100*time.Millisecond); err != nil || len(evs) != 2 {
		t.Errorf("after the group was lost: read %d events, %v; want both from the start", len(evs), err)
	}
}

// TestEventsAckAndRead: one call acks the events handled and reads the
// next ones, without waiting when there are none.
func TestEventsAckAndRead(t *testing.T) {
	s, c := directStore(t, plugin.DefaultPolicy(), plugin.AORRules{})
	ctx := context.Background()
	if code, _, _ := dpStore(t, c, "sip:bob@example.com", directMessages[0].raw); code != 202 {
		t.Fatal(code)
	}
	register := func() {
		t.Helper()
		if n := dpRegister(t, c, "sip:bob@example.com", "sip:bob@h:5", 600, fmt.Sprint(time.Now().UnixMicro()), "", "", "", ""); n != 1 {
			t.Fatalf("dp_register = %d", n)
		}
	}
	pending := func() int64 {
		t.Helper()
		p, err := c.XPending(ctx, "dp:events", "deferpush").Result()
		if err != nil {
			t.Fatal(err)
		}
		return p.Count
	}
	register()
	first, err := s.ReadEvents(ctx, "a", 10, 100*time.Millisecond)
	if err != nil || len(first) != 1 {
		t.Fatalf("read %v, %v; want one event", first, err)
	}
	register()
	evs, err := s.AckAndReadEvents(ctx, "a", []string{first[0].ID}, 10)
	if err != nil || len(evs) != 1 || evs[0].ID == first[0].ID {
		t.Fatalf("ack and read %v, %v; want the second event", evs, err)
	}
	if n := pending(); n != 1 {
		t.Errorf("%d pending, want the second event only", n)
	}
	start := time.Now()
	none, err := s.AckAndReadEvents(ctx, "a", []string{evs[0].ID}, 10)
	if err != nil || len(none) != 0 {
		t.Errorf("ack and read with nothing new: %v, %v; want none", none, err)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("ack and read with nothing new took %v: it waited", d)
	}
	if n := pending(); n != 0 {
		t.Errorf("%d pending after the last ack", n)
	}
}

// TestEventsBeforeFirstStart: events a proxy wrote before deferpush first
// created its group are read: the group starts at the stream's start.
func TestEventsBeforeFirstStart(t *testing.T) {
	srv := harness.Redis(t)
	s, err := New(Config{URL: srv.URL()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	exp := time.Now().Add(time.Hour).UnixMilli()
	if err := s.Client().XAdd(ctx, &redis.XAddArgs{Stream: "dp:events", Values: []string{"kind", "registered",
		"aor", "sip:bob@example.com", "contact", "sip:b@h", "expires", fmt.Sprint(exp), "at", "1"}}).Err(); err != nil {
		t.Fatal(err)
	}
	evs, err := s.ReadEvents(ctx, "a", 10, 100*time.Millisecond)
	if err != nil || len(evs) != 1 || evs[0].Expires.UnixMilli() != exp {
		t.Fatalf("read %v, %v; want the event written before", evs, err)
	}
}

// TestEventsRestoreAfterFlush: a Redis that lost everything (restarted
// without persistence) gets back, at the events reader's next read, what
// a proxy calling the library needs: the functions and dp:limits (and
// the group), so dp_store stores again without deferpush restarting.
func TestEventsRestoreAfterFlush(t *testing.T) {
	s, c := directStore(t, plugin.DefaultPolicy(), plugin.AORRules{})
	ctx := context.Background()
	if err := c.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.FunctionFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.FCall(ctx, "dp_store", nil, "sip:bob@example.com", directMessages[0].raw).Err(); err == nil {
		t.Fatal("dp_store answered after FUNCTION FLUSH")
	}
	if _, err := s.ReadEvents(ctx, "a", 10, 10*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if code, _, _ := dpStore(t, c, "sip:bob@example.com", directMessages[0].raw); code != 202 {
		t.Errorf("dp_store after the reader's read = %d, want 202", code)
	}
}

// TestPruneConsumers: the group's consumers that hold no event and have
// been idle for the given time are forgotten (stopped instances: each
// joins as a new consumer); one holding an event is kept whatever its
// idle time, and a pruned reader joins again with its next read.
func TestPruneConsumers(t *testing.T) {
	s, c := directStore(t, plugin.DefaultPolicy(), plugin.AORRules{})
	ctx := context.Background()
	if code, _, _ := dpStore(t, c, "sip:bob@example.com", directMessages[0].raw); code != 202 {
		t.Fatal(code)
	}
	for i := range 3 {
		dpRegister(t, c, "sip:bob@example.com", fmt.Sprintf("sip:bob@h:%d", 5+i), 600, fmt.Sprint(time.Now().UnixMicro()), "", "", "", "")
	}
	if evs, err := s.ReadEvents(ctx, "holder", 1, 100*time.Millisecond); err != nil || len(evs) != 1 {
		t.Fatalf("holder read %v, %v", evs, err)
	}
	// Two readers that handled an event each (and acked it), then stopped.
	for _, name := range []string{"stopped1", "stopped2"} {
		evs, err := s.ReadEvents(ctx, name, 1, 100*time.Millisecond)
		if err != nil || len(evs) != 1 {
			t.Fatalf("%s read %v, %v", name, evs, err)
		}
		if err := s.AckEvents(ctx, evs[0].ID); err != nil {
			t.Fatal(err)
		}
	}
	names := func() []string {
		cs, err := c.XInfoConsumers(ctx, "dp:events", "deferpush").Result()
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, x := range cs {
			out = append(out, x.Name)
		}
		return out
	}
	if n, err := s.PruneConsumers(ctx, time.Hour); err != nil || n != 0 {
		t.Errorf("pruned %d (%v) consumers idle under an hour, want none", n, err)
	}
	time.Sleep(50 * time.Millisecond)
	if n, err := s.PruneConsumers(ctx, 20*time.Millisecond); err != nil || n != 2 {
		t.Errorf("pruned %d (%v), want the 2 idle ones holding nothing", n, err)
	}
	if got := names(); len(got) != 1 || got[0] != "holder" {
		t.Errorf("consumers left %v, want the one holding an event", got)
	}
	if _, err := s.ReadEvents(ctx, "stopped1", 10, 10*time.Millisecond); err != nil {
		t.Errorf("a pruned reader reading again: %v", err)
	}
}
