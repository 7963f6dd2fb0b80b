package plugintest_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/plugin/plugintest"
	"github.com/deferpush/deferpush/store/storetest"
)

// TestConformance runs the suite the Redis store passes: the fake the
// core's tests run on keeps the same contract.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, now func() time.Time) plugin.Store {
		return plugintest.NewStore(now)
	})
}

// The tests below pin down what the Redis store does (store/library.lua)
// where the conformance suite does not look.

var bob = plugin.MustParseAOR("sip:bob@example.com")

func newMessage(clock *storetest.Clock, body string) *plugin.Message {
	return &plugin.Message{Recipient: bob, Kind: plugin.KindSIPMessage, Raw: []byte(body), Received: clock.Now()}
}

func mustAppend(t *testing.T, s plugin.Store, m *plugin.Message, lim plugin.Limits) {
	t.Helper()
	if err := s.Append(context.Background(), m, lim); err != nil {
		t.Fatalf("Append: %v", err)
	}
}

func wantCounts(t *testing.T, s plugin.Store, want plugin.Counts) {
	t.Helper()
	got, err := s.Count(context.Background(), bob)
	if err != nil || got != want {
		t.Errorf("Count = %+v, %v; want %+v", got, err, want)
	}
}

// An expired message in flight under a live lease stays until its push
// ends (dp_expire); an expired pending one beside it goes.
func TestSweepKeepsExpiredInFlightUnderLiveLease(t *testing.T) {
	ctx, clock := context.Background(), storetest.NewClock()
	s := plugintest.NewStore(clock.Now)
	short := plugin.Limits{TTL: time.Minute}
	held, pending := newMessage(clock, "held"), newMessage(clock, "pending")
	mustAppend(t, s, held, short)
	mustAppend(t, s, pending, short)
	if _, err := s.Claim(ctx, bob, "t", 1, time.Hour); err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * time.Minute)
	st, err := s.Sweep(ctx, clock.Now())
	if err != nil || st.Expired != 1 || st.Requeued != 0 {
		t.Fatalf("Sweep = %+v, %v; want only the pending message expired", st, err)
	}
	wantCounts(t, s, plugin.Counts{InFlight: 1})
	if n, err := s.Ack(ctx, bob, "t", held.ID); n != 1 || err != nil {
		t.Errorf("Ack of the held message after the sweep = %d, %v; want 1", n, err)
	}
}

// Unlock works for the owner of a lease that ended and when nobody owns
// the lease (dp_unlock); what was in flight goes back either way.
func TestUnlockWithoutLiveLease(t *testing.T) {
	ctx, clock := context.Background(), storetest.NewClock()
	s := plugintest.NewStore(clock.Now)
	if err := s.Unlock(ctx, bob, "nobody-locked"); err != nil {
		t.Errorf("Unlock of a recipient nobody locked: %v", err)
	}
	mustAppend(t, s, newMessage(clock, "m"), plugin.Limits{})
	if _, err := s.Claim(ctx, bob, "t", 1, time.Second); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Minute)
	if err := s.Unlock(ctx, bob, "t"); err != nil {
		t.Errorf("Unlock by the owner of an ended lease: %v", err)
	}
	wantCounts(t, s, plugin.Counts{Pending: 1})
	if err := s.Unlock(ctx, bob, "other"); err != nil {
		t.Errorf("Unlock after the lease was dropped: %v", err)
	}
}

// What goes in and what comes out are copies: callers (the engine, the
// admin API) change them.
func TestMessagesAreCopies(t *testing.T) {
	ctx, clock := context.Background(), storetest.NewClock()
	s := plugintest.NewStore(clock.Now)
	in := newMessage(clock, "body")
	in.Attempts, in.LastError, in.State = 3, "stale", plugin.StateDead
	mustAppend(t, s, in, plugin.Limits{})
	in.Raw[0] = 'X'
	got, err := s.Get(ctx, bob, in.ID)
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Raw) != "body" || got.Attempts != 0 || got.LastError != "" || got.State != plugin.StatePending {
		t.Errorf("Get = raw %q, attempts %d, last error %q, state %s; want the stored body, no attempts, pending",
			got.Raw, got.Attempts, got.LastError, got.State)
	}
	got.Raw[0], got.Attempts = 'Y', 9
	msgs, err := s.Claim(ctx, bob, "t", 1, time.Minute)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("Claim = %v, %v", msgs, err)
	}
	if string(msgs[0].Raw) != "body" || msgs[0].Attempts != 0 {
		t.Errorf("Claim after changing Get's copy = raw %q, attempts %d", msgs[0].Raw, msgs[0].Attempts)
	}
}

// A call whose context is done fails and changes nothing, as a call to
// Redis does.
func TestDoneContext(t *testing.T) {
	clock := storetest.NewClock()
	s := plugintest.NewStore(clock.Now)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Append(ctx, newMessage(clock, "m"), plugin.Limits{}); !errors.Is(err, context.Canceled) {
		t.Errorf("Append = %v, want context.Canceled", err)
	}
	if err := s.WatchPolicy(ctx, func(plugin.Policy) { t.Error("fn called") }); !errors.Is(err, context.Canceled) {
		t.Errorf("WatchPolicy = %v, want context.Canceled", err)
	}
	wantCounts(t, s, plugin.Counts{})
}
