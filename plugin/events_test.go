package plugin_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/plugin/plugintest"
)

// eventsEnv is an engine reading registration events from an in-memory
// log, the contact recorded in the store as the proxy's dp_register
// records it.
type eventsEnv struct {
	*engineEnv
	ev *plugintest.Events
}

func newEventsEngine(t *testing.T, p *fakePusher, ev plugin.Events, idle time.Duration) *engineEnv {
	t.Helper()
	st := plugintest.NewStore(nil)
	return newEventsEngineOn(t, st, st, p, ev, idle)
}

// newEventsEngineOn is newEventsEngine on the store s (st, or st
// wrapped).
func newEventsEngineOn(t *testing.T, st *plugintest.Store, s plugin.Store, p *fakePusher, ev plugin.Events, idle time.Duration) *engineEnv {
	t.Helper()
	setPolicy(t, st, nil)
	rec := &recorder{ch: make(chan plugin.PushReport, 100)}
	eng := startEngine(t, plugin.EngineConfig{Store: s, Pusher: p, Observer: rec, Batch: 4, LockTTL: 5 * time.Second,
		Events: ev, EventClaimIdle: idle})
	return &engineEnv{st: st, eng: eng, rec: rec, p: p}
}

func newEvents(t *testing.T, p *fakePusher, idle time.Duration) *eventsEnv {
	ev := plugintest.NewEvents(nil)
	return &eventsEnv{engineEnv: newEventsEngine(t, p, ev, idle), ev: ev}
}

// registered records bob's contact as dp_register does and adds its
// event, expiring at exp.
func (e *eventsEnv) registered(t *testing.T, exp time.Time) string {
	t.Helper()
	reg := plugin.Registration{AOR: bob, Contact: "sip:bob@127.0.0.1:5099", Expires: exp}
	if exp.After(time.Now()) {
		if err := e.st.SetContact(context.Background(), reg); err != nil {
			t.Fatal(err)
		}
	}
	return e.ev.Add(plugin.RegistrationEvent{Kind: plugin.EventRegistered, AOR: bob, Contact: reg.Contact, Expires: exp, At: time.Now()})
}

// acked waits until no event is unread or pending.
func (e *eventsEnv) acked(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for e.ev.Unread() > 0 || len(e.ev.Pending()) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("events not acked: %d unread, pending %v", e.ev.Unread(), e.ev.Pending())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestEventsRegisteredPushes: a registered event pushes the messages
// stored, as the registration hook does, and is acked.
func TestEventsRegisteredPushes(t *testing.T) {
	p := &fakePusher{}
	e := newEvents(t, p, time.Minute)
	want := e.store(t, 3)
	e.registered(t, time.Now().Add(time.Hour))
	if rep := e.report(t); rep.Outcome != "delivered" || rep.Delivered != 3 {
		t.Fatalf("report %+v, want 3 delivered", rep)
	}
	e.acked(t)
	if len(p.got) != len(want) {
		t.Errorf("delivered %v, want %v", p.got, want)
	}
}

// TestEventsExpiredRegistrationDropped: an event whose registration has
// expired by the time it is read (deferpush was down meanwhile) is acked
// and pushes nothing; the next one, live, pushes.
func TestEventsExpiredRegistrationDropped(t *testing.T) {
	p := &fakePusher{}
	e := newEvents(t, p, time.Minute)
	e.store(t, 2)
	e.registered(t, time.Now().Add(-time.Second))
	e.acked(t)
	// A live registration's event after it: the only push is its.
	e.registered(t, time.Now().Add(time.Hour))
	if rep := e.report(t); rep.Delivered != 2 {
		t.Fatalf("report %+v, want 2 delivered", rep)
	}
	e.acked(t)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.opens != 1 {
		t.Errorf("%d sessions opened, want 1 (the expired registration's event pushes nothing)", p.opens)
	}
}

// TestEventsUnregisteredCancels: an unregistered (or expired) event
// cancels the push in progress to that contact; the messages stay.
func TestEventsUnregisteredCancels(t *testing.T) {
	for _, kind := range []string{plugin.EventUnregistered, plugin.EventExpired} {
		t.Run(kind, func(t *testing.T) {
			p := &fakePusher{gate: make(chan struct{}), started: make(chan struct{})}
			e := newEvents(t, p, time.Minute)
			e.store(t, 3)
			e.registered(t, time.Now().Add(time.Hour))
			<-p.started
			e.ev.Add(plugin.RegistrationEvent{Kind: kind, AOR: bob, Contact: "sip:bob@127.0.0.1:5099", At: time.Now()})
			if rep := e.report(t); rep.Outcome != "cancelled" {
				t.Errorf("outcome = %q (%v), want cancelled", rep.Outcome, rep.Err)
			}
			e.acked(t)
			if c := e.counts(t); c.Pending != 3 {
				t.Errorf("counts = %+v, want 3 pending", c)
			}
		})
	}
}

// TestEventsTakenOver: an event another instance read and never acked
// (it died) is taken over once idle, and handled: at-least-once.
func TestEventsTakenOver(t *testing.T) {
	p := &fakePusher{}
	ev := plugintest.NewEvents(nil)
	// The dead instance read it before this one started.
	e := &eventsEnv{ev: ev}
	reg := plugin.Registration{AOR: bob, Contact: "sip:bob@127.0.0.1:5099", Expires: time.Now().Add(time.Hour)}
	ev.Add(plugin.RegistrationEvent{Kind: plugin.EventRegistered, AOR: bob, Contact: reg.Contact, Expires: reg.Expires})
	got, err := ev.ReadEvents(context.Background(), "dead", 10, time.Millisecond)
	if err != nil || len(got) != 1 {
		t.Fatalf("dead reader got %v, %v", got, err)
	}
	e.engineEnv = newEventsEngine(t, p, ev, 300*time.Millisecond)
	e.store(t, 2)
	if err := e.st.SetContact(context.Background(), reg); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if rep := e.report(t); rep.Delivered != 2 {
		t.Fatalf("report %+v, want 2 delivered", rep)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("taken over after %v, want about the idle time (300 ms) and its third", d)
	}
	e.acked(t)
}

// TestEventsStoreDown: while the log does not answer the reader keeps
// trying; once it answers, the event is handled.
func TestEventsStoreDown(t *testing.T) {
	p := &fakePusher{}
	ev := plugintest.NewEvents(nil)
	ev.SetErr(errors.New("connection refused"))
	e := &eventsEnv{ev: ev, engineEnv: newEventsEngine(t, p, ev, time.Minute)}
	e.store(t, 1)
	e.registered(t, time.Now().Add(time.Hour))
	time.Sleep(300 * time.Millisecond) // a few failed reads
	if ev.Unread() != 1 {
		t.Fatalf("%d unread while the log failed, want 1", ev.Unread())
	}
	ev.SetErr(nil)
	if rep := e.report(t); rep.Delivered != 1 {
		t.Fatalf("report %+v, want 1 delivered", rep)
	}
	e.acked(t)
}

// ackHeld holds a push's first ack (after the client confirmed its
// messages, before the push ends) until release is closed, after a send
// on held.
type ackHeld struct {
	*plugintest.Store
	held, release chan struct{}
	once          sync.Once
}

func (s *ackHeld) Ack(ctx context.Context, aor plugin.AOR, token string, ids ...string) (int, error) {
	s.once.Do(func() {
		s.held <- struct{}{}
		<-s.release
	})
	return s.Store.Ack(ctx, aor, token, ids...)
}

// Finish is held as Ack is: a push of one claim acks with its unlock.
func (s *ackHeld) Finish(ctx context.Context, aor plugin.AOR, token string, ids ...string) (int, error) {
	if len(ids) > 0 {
		s.once.Do(func() {
			s.held <- struct{}{}
			<-s.release
		})
	}
	return s.Store.Finish(ctx, aor, token, ids...)
}

// TestEventsStoredProlongsPush: a message the proxy stores itself while
// a push to the user runs, after the push's claim, comes with a
// "stored" event: the push runs once more and delivers it, as after
// the hook's store (Engine.Store), instead of leaving it for the next
// registration.
func TestEventsStoredProlongsPush(t *testing.T) {
	p := &fakePusher{}
	st := plugintest.NewStore(nil)
	wrapped := &ackHeld{Store: st, held: make(chan struct{}), release: make(chan struct{})}
	ev := plugintest.NewEvents(nil)
	e := &eventsEnv{ev: ev, engineEnv: newEventsEngineOn(t, st, wrapped, p, ev, time.Minute)}
	e.store(t, 1)
	e.registered(t, time.Now().Add(time.Hour))
	select {
	case <-wrapped.held:
	case <-time.After(10 * time.Second):
		t.Fatal("the push never acked")
	}
	// The proxy stores one more (dp_store) and writes its event.
	late := &plugin.Message{Recipient: bob, Sender: "sip:alice@example.com", Received: time.Now(),
		Kind: plugin.KindSIPMessage, Raw: []byte("MESSAGE late"), CallID: "call-late"}
	if err := st.Append(context.Background(), late, plugin.Limits{}); err != nil {
		t.Fatal(err)
	}
	ev.Add(plugin.RegistrationEvent{Kind: plugin.EventStored, AOR: bob, At: time.Now()})
	e.acked(t)
	close(wrapped.release)
	// The push ends with the first message, then runs once more.
	if rep := e.report(t); rep.Delivered != 1 {
		t.Fatalf("first report %+v, want the first message", rep)
	}
	if rep := e.report(t); rep.Delivered != 1 {
		t.Fatalf("second report %+v, want the late message", rep)
	}
	if c := e.counts(t); c != (plugin.Counts{}) {
		t.Errorf("counts %+v, want an empty mailbox", c)
	}
}

// idle waits until the engine has handled every event and, for 50 ms on
// end, runs no push and holds nothing in flight (a push an event kicked
// may start an instant after the event's ack). What a push that should
// not have run did anyway shows later: the tests check every session
// opened.
func (e *eventsEnv) idle(t *testing.T) {
	t.Helper()
	e.acked(t)
	deadline := time.Now().Add(10 * time.Second)
	for quiet := 0; quiet < 10; {
		if time.Now().After(deadline) {
			t.Fatalf("%d pushes still active, %+v", e.eng.Active(), e.counts(t))
		}
		quiet++
		if e.eng.Active() != 0 || e.counts(t).InFlight != 0 {
			quiet = 0
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// nothingSent checks that p opened no session (why: for whom it would
// have been) and that bob's pending messages are all pending, none in
// flight.
func (e *eventsEnv) nothingSent(t *testing.T, p *fakePusher, why string, pending int) {
	t.Helper()
	p.mu.Lock()
	opens := p.opens
	p.mu.Unlock()
	if opens != 0 {
		t.Fatalf("%d sessions opened %s", opens, why)
	}
	if c := e.counts(t); c.Pending != pending || c.InFlight != 0 {
		t.Fatalf("counts %+v, want %d pending, none in flight", c, pending)
	}
}

// TestEventsPushReadsWithClaim: a registered event's push reads the
// registration recorded (Path, received, instance: what the INVITE
// needs) and the user's settings in its first claim's round trip, with
// no read of its own before.
func TestEventsPushReadsWithClaim(t *testing.T) {
	p := &fakePusher{}
	st := &readCounter{Store: plugintest.NewStore(nil)}
	ev := plugintest.NewEvents(nil)
	e := &eventsEnv{engineEnv: newEventsEngineOn(t, st.Store, st, p, ev, time.Minute), ev: ev}
	e.store(t, 2)
	reg := plugin.Registration{AOR: bob, Contact: "sip:bob@127.0.0.1:5099", Expires: time.Now().Add(time.Hour),
		Received: "127.0.0.1:5099", Instance: "<urn:uuid:b0b>", Path: []string{"<sip:edge.example.com;lr>"}}
	if err := st.SetContact(context.Background(), reg); err != nil {
		t.Fatal(err)
	}
	e.ev.Add(plugin.RegistrationEvent{Kind: plugin.EventRegistered, AOR: bob, Contact: reg.Contact, Expires: reg.Expires,
		Instance: reg.Instance, Received: reg.Received, At: time.Now()})
	if rep := e.report(t); rep.Delivered != 2 {
		t.Fatalf("report %+v, want 2 delivered", rep)
	}
	e.idle(t)
	st.onlyClaimRead(t, "the push")
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.targets) != 1 {
		t.Fatalf("%d sessions opened, want 1", len(p.targets))
	}
	got := p.targets[0].Registration
	got.At = time.Time{}
	diff := got.Contact != reg.Contact || got.Received != reg.Received || got.Instance != reg.Instance ||
		len(got.Path) != 1 || got.Path[0] != reg.Path[0]
	if diff {
		t.Errorf("pushed to %+v, want the registration recorded %+v", got, reg)
	}
}

// TestEventsNotTheRecordedContact: a registered event whose contact is no
// longer the one recorded (another contact registered since, or it was
// removed) pushes nothing and leaves the messages pending, unlocked: the
// recorded contact's own event pushes them.
func TestEventsNotTheRecordedContact(t *testing.T) {
	p := &fakePusher{}
	e := newEvents(t, p, time.Minute)
	want := e.store(t, 2)
	ctx := context.Background()
	exp := time.Now().Add(time.Hour)
	e.ev.Add(plugin.RegistrationEvent{Kind: plugin.EventRegistered, AOR: bob, Contact: "sip:bob@127.0.0.1:5098", Expires: exp, At: time.Now()})
	e.idle(t) // nothing recorded: no push
	newer := plugin.Registration{AOR: bob, Contact: "sip:bob@127.0.0.1:5099", Expires: exp}
	if err := e.st.SetContact(ctx, newer); err != nil {
		t.Fatal(err)
	}
	e.ev.Add(plugin.RegistrationEvent{Kind: plugin.EventRegistered, AOR: bob, Contact: "sip:bob@127.0.0.1:5098", Expires: exp, At: time.Now()})
	e.idle(t) // another contact recorded: no push
	e.nothingSent(t, p, "for a contact that is not the one recorded", 2)
	e.ev.Add(plugin.RegistrationEvent{Kind: plugin.EventRegistered, AOR: bob, Contact: newer.Contact, Expires: exp, At: time.Now()})
	if rep := e.report(t); rep.Delivered != 2 {
		t.Fatalf("report %+v, want the recorded contact's push to deliver 2", rep)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.got) != len(want) || p.targets[0].Registration.Contact != newer.Contact {
		t.Errorf("delivered %v to %s, want %v to %s", p.got, p.targets[0].Registration.Contact, want, newer.Contact)
	}
}

// TestEventsHoldBeforePush: the operator holds the user after the proxy
// wrote the event (its dp_register saw push on): the push, which reads
// the settings with its claim, sends nothing and puts the messages back.
func TestEventsHoldBeforePush(t *testing.T) {
	p := &fakePusher{}
	e := newEvents(t, p, time.Minute)
	e.store(t, 2)
	ctx := context.Background()
	if err := e.st.SetUserSettings(ctx, bob, plugin.UserSettings{Push: plugin.PushHold}); err != nil {
		t.Fatal(err)
	}
	e.registered(t, time.Now().Add(time.Hour))
	e.idle(t)
	e.nothingSent(t, p, "for a user on hold", 2)
	if err := e.st.DeleteUserSettings(ctx, bob); err != nil {
		t.Fatal(err)
	}
	e.registered(t, time.Now().Add(time.Hour))
	if rep := e.report(t); rep.Delivered != 2 {
		t.Fatalf("report %+v, want 2 delivered once the hold is lifted", rep)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.opens != 1 {
		t.Errorf("%d sessions opened, want 1 (none while on hold)", p.opens)
	}
}

// TestEventsSessionLimitFromClaim: the settings a registration event's
// push reads with its claim bound the session (max_per_session 1): one
// message goes, the others stay pending, none is left in flight.
func TestEventsSessionLimitFromClaim(t *testing.T) {
	p := &fakePusher{}
	e := newEvents(t, p, time.Minute)
	want := e.store(t, 3)
	if err := e.st.SetUserSettings(context.Background(), bob, plugin.UserSettings{MaxPerSession: 1}); err != nil {
		t.Fatal(err)
	}
	e.registered(t, time.Now().Add(time.Hour))
	if rep := e.report(t); rep.Delivered != 1 {
		t.Fatalf("report %+v, want 1 delivered (max_per_session 1)", rep)
	}
	e.idle(t)
	if c := e.counts(t); c.Pending != 2 || c.InFlight != 0 {
		t.Fatalf("counts %+v, want 2 pending, none in flight", c)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.got) != 1 || p.got[0] != want[0] {
		t.Errorf("delivered %v, want the oldest, %s", p.got, want[0])
	}
}

// TestEventsAckedOncePushStarts: a registration event whose push waits
// for a slot (push.max_concurrent taken) stays pending until the push
// starts, so that another instance takes it over should this one die
// meanwhile (PROBE8 F2: it was acked once queued, and lost with the
// instance); it is acked once the push has started.
func TestEventsAckedOncePushStarts(t *testing.T) {
	p := &fakePusher{gate: make(chan struct{}), started: make(chan struct{})}
	ev := plugintest.NewEvents(nil)
	st := plugintest.NewStore(nil)
	setPolicy(t, st, nil)
	rec := &recorder{ch: make(chan plugin.PushReport, 100)}
	eng := startEngine(t, plugin.EngineConfig{Store: st, Pusher: p, Observer: rec, Batch: 4, LockTTL: 5 * time.Second,
		Events: ev, EventClaimIdle: time.Minute, MaxConcurrent: 1})
	e := &eventsEnv{engineEnv: &engineEnv{st: st, eng: eng, rec: rec, p: p}, ev: ev}
	carol := plugin.MustParseAOR("sip:carol@example.com")
	e.store(t, 1) // bob's
	m := &plugin.Message{Recipient: carol, Sender: "sip:alice@example.com", Received: time.Now(),
		Kind: plugin.KindSIPMessage, Raw: []byte("MESSAGE c"), CallID: "call-c"}
	if err := eng.Store(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	e.registered(t, time.Now().Add(time.Hour))
	<-p.started // bob's push holds the one slot
	creg := plugin.Registration{AOR: carol, Contact: "sip:carol@127.0.0.1:5098", Expires: time.Now().Add(time.Hour)}
	if err := st.SetContact(context.Background(), creg); err != nil {
		t.Fatal(err)
	}
	cid := ev.Add(plugin.RegistrationEvent{Kind: plugin.EventRegistered, AOR: carol, Contact: creg.Contact, Expires: creg.Expires, At: time.Now()})
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s (pending %v)", what, ev.Pending())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitFor("carol's event read", func() bool { return ev.Unread() == 0 })
	time.Sleep(200 * time.Millisecond) // more than an ack would take
	if _, ok := ev.Pending()[cid]; !ok {
		t.Fatalf("carol's event acked while her push waits for a slot (pending %v)", ev.Pending())
	}
	close(p.gate)
	e.acked(t)
}
