package test

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/store"
	"github.com/deferpush/deferpush/test/harness"
)

// countingPusher confirms every message and counts sessions and
// messages per recipient: the events reader's tests are about which
// instance pushes, not how (the proxy flows push for real).
type countingPusher struct {
	mu       sync.Mutex
	sessions map[string]int
	messages map[string]int
}

func (p *countingPusher) Open(ctx context.Context, t plugin.Target) (plugin.PushSession, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sessions[t.AOR.String()]++
	return &countingSession{p: p, aor: t.AOR.String()}, nil
}

func (p *countingPusher) counts(aor string) (sessions, messages int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sessions[aor], p.messages[aor]
}

type countingSession struct {
	p   *countingPusher
	aor string
}

func (s *countingSession) Deliver(ctx context.Context, msgs []*plugin.Message, done func(*plugin.Message, error)) error {
	for _, m := range msgs {
		s.p.mu.Lock()
		s.p.messages[s.aor]++
		s.p.mu.Unlock()
		done(m, nil)
	}
	return nil
}

func (s *countingSession) Close(context.Context) error { return nil }

// claimOnly is the surviving instance's view of the events in
// TestEventsReclaimedFromDeadInstance: it never reads new events (the
// dead instance got them), only takes over idle ones.
type claimOnly struct{ *store.Redis }

func (c claimOnly) ReadEvents(ctx context.Context, _ string, _ int, block time.Duration) ([]plugin.RegistrationEvent, error) {
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(block):
		return nil, nil
	}
}

// AckAndReadEvents acks, and reads nothing either.
func (c claimOnly) AckAndReadEvents(ctx context.Context, _ string, ack []string, _ int) ([]plugin.RegistrationEvent, error) {
	return nil, c.AckEvents(ctx, ack...)
}

// eventsEngine runs an engine on the store st reading events from ev,
// taking over events idle for idle; it returns once the engine's
// start-up scan is over.
func eventsEngine(t *testing.T, st *store.Redis, ev plugin.Events, p plugin.Pusher, idle time.Duration) {
	t.Helper()
	scanned := make(chan struct{})
	log := slog.New(&onMessage{Handler: testLogger(t).Handler(), msg: "start-up scan done", ch: scanned, once: new(sync.Once)})
	eng, err := plugin.NewEngine(plugin.EngineConfig{Store: st, Pusher: p, Logger: log, Events: ev, EventClaimIdle: idle})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = eng.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-scanned:
	case <-time.After(10 * time.Second):
		t.Fatal("start-up scan not over within 10 s")
	}
}

// directStoreAndRegister stores one message for user and registers it
// the way the REDIS_DIRECT script does (FCALL dp_store, dp_register),
// the registration lasting expires seconds.
func directStoreAndRegister(t *testing.T, st *store.Redis, user string, expires int) {
	t.Helper()
	ctx := context.Background()
	aor := "sip:" + user + "@" + domain
	raw := "MESSAGE " + aor + " SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK1\r\n" +
		"From: <sip:alice@example.com>;tag=1\r\nTo: <" + aor + ">\r\nCall-ID: ev-" + user + "\r\nCSeq: 1 MESSAGE\r\n" +
		"Content-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi"
	if res, err := st.Client().FCall(ctx, "dp_store", nil, aor, raw).Slice(); err != nil || res[0].(int64) != 202 {
		t.Fatalf("dp_store: %v %v", res, err)
	}
	n, err := st.Client().FCall(ctx, "dp_register", nil, aor, "sip:"+user+"@127.0.0.1:9", expires,
		fmt.Sprint(time.Now().UnixMicro()), "", "", "", "").Int()
	if err != nil || n != 1 {
		t.Fatalf("dp_register = %d, %v; want an event", n, err)
	}
}

// TestEventsReclaimedFromDeadInstance: an instance reads a registration
// event and dies before handling it; another instance takes it over once
// it has been idle long enough, pushes, and acks it (at-least-once).
func TestEventsReclaimedFromDeadInstance(t *testing.T) {
	srv := harness.Redis(t)
	st, err := store.New(store.Config{URL: srv.URL()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	p := &countingPusher{sessions: map[string]int{}, messages: map[string]int{}}
	const idle = 500 * time.Millisecond
	eventsEngine(t, st, claimOnly{st}, p, idle)

	directStoreAndRegister(t, st, "reclaim", 600)
	ctx := context.Background()
	// The instance that dies: it read the event, never acked it.
	evs, err := st.ReadEvents(ctx, "dead-instance", 10, time.Second)
	if err != nil || len(evs) != 1 {
		t.Fatalf("the dying instance read %v, %v", evs, err)
	}
	read := time.Now()
	aor := "sip:reclaim@" + domain
	waitFor(t, 10*time.Second, "the message pushed by the surviving instance", func() bool {
		_, m := p.counts(aor)
		return m == 1
	})
	if d := time.Since(read); d < idle {
		t.Errorf("taken over %v after it was read, before it was idle %v", d, idle)
	}
	waitFor(t, 5*time.Second, "the event acked", func() bool {
		x, err := st.Client().XPending(ctx, "dp:events", "deferpush").Result()
		return err == nil && x.Count == 0
	})
	if s, _ := p.counts(aor); s != 1 {
		t.Errorf("%d push sessions, want 1", s)
	}
}

// TestEventsExpiredRegistrationDropped: an event whose registration
// expired before any instance read it (all were down) is acked and pushes
// nothing; the messages wait for the next registration.
func TestEventsExpiredRegistrationDropped(t *testing.T) {
	srv := harness.Redis(t)
	st, err := store.New(store.Config{URL: srv.URL()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	directStoreAndRegister(t, st, "late", 1)
	time.Sleep(1100 * time.Millisecond) // the registration's lifetime: no condition to poll
	p := &countingPusher{sessions: map[string]int{}, messages: map[string]int{}}
	eventsEngine(t, st, st, p, time.Minute)
	ctx := context.Background()
	waitFor(t, 5*time.Second, "the event read and acked", func() bool {
		g, err := st.Client().XInfoGroups(ctx, "dp:events").Result()
		x, perr := st.Client().XPending(ctx, "dp:events", "deferpush").Result()
		return err == nil && perr == nil && len(g) == 1 && g[0].EntriesRead == 1 && x.Count == 0
	})
	if s, _ := p.counts("sip:late@" + domain); s != 0 {
		t.Errorf("%d push sessions for an expired registration, want 0", s)
	}
	if n, err := st.Count(ctx, plugin.MustParseAOR("sip:late@"+domain)); err != nil || n.Pending != 1 {
		t.Errorf("counts %+v, %v; want the message still pending", n, err)
	}
}
