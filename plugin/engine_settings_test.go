package plugin_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/plugin/plugintest"
)

// TestEngineSettingsReadAgainAfterWait: a push takes the user's settings
// its registration's kick read only when it starts at once; one that
// waited for a slot (MaxConcurrent) reads them again, and an operator's
// hold set meanwhile stops it.
func TestEngineSettingsReadAgainAfterWait(t *testing.T) {
	ctx := context.Background()
	carol := plugin.MustParseAOR("sip:carol@example.com")
	st := plugintest.NewStore(nil)
	eng, p, rec, skew := slotEngine(t, st, bob, carol)
	register := func(aor plugin.AOR) {
		t.Helper()
		err := eng.Registered(ctx, plugin.Registration{AOR: aor, Contact: "sip:" + aor.User() + "@127.0.0.1:5099", Expires: time.Now().Add(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
	}
	register(bob)
	<-p.started // bob's push holds the only slot
	register(carol)
	// carol's kick read push on; the operator holds her before her push
	// gets the slot, a second later.
	if err := st.SetUserSettings(ctx, carol, plugin.UserSettings{Push: plugin.PushHold}); err != nil {
		t.Fatal(err)
	}
	skew.Store(int64(time.Second))
	close(p.gate)
	if rep := (&engineEnv{rec: rec}).report(t); rep.AOR != bob || rep.Delivered != 1 {
		t.Fatalf("report %+v, want bob's push delivering 1", rep)
	}
	deadline := time.Now().Add(5 * time.Second)
	for eng.Active() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d pushes still active", eng.Active())
		}
		time.Sleep(5 * time.Millisecond)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, tg := range p.targets {
		if tg.AOR == carol {
			t.Errorf("pushed to carol, whom the operator put on hold while her push waited for a slot")
		}
	}
	if c, err := st.Count(ctx, carol); err != nil || c.Pending != 1 {
		t.Errorf("carol's mailbox %+v (%v), want her message pending", c, err)
	}
}

// readCounter counts the reads of a user's settings and registration,
// and the claims.
type readCounter struct {
	*plugintest.Store
	contact, settings, both, claims, claimReads atomic.Int32
}

// onlyClaimRead checks that what was counted (since the counters were
// last zeroed) is one ClaimAndRead, and no other claim or read: who's
// push read with its claim.
func (c *readCounter) onlyClaimRead(t *testing.T, who string) {
	t.Helper()
	if n, s, b := c.contact.Load(), c.settings.Load(), c.both.Load(); n+s+b != 0 {
		t.Errorf("%s read Contact %d, UserSettings %d, ContactAndSettings %d times; want none (its claim reads)", who, n, s, b)
	}
	if n, cr := c.claims.Load(), c.claimReads.Load(); n != 0 || cr != 1 {
		t.Errorf("%s claimed %d times and %d times with ClaimAndRead; want one ClaimAndRead", who, n, cr)
	}
}

func (c *readCounter) Claim(ctx context.Context, aor plugin.AOR, token string, n int, lease time.Duration) ([]*plugin.Message, error) {
	c.claims.Add(1)
	return c.Store.Claim(ctx, aor, token, n, lease)
}

func (c *readCounter) ClaimAndRead(ctx context.Context, aor plugin.AOR, token string, n int, lease time.Duration) (plugin.ClaimRead, error) {
	c.claimReads.Add(1)
	return c.Store.ClaimAndRead(ctx, aor, token, n, lease)
}

func (c *readCounter) Contact(ctx context.Context, aor plugin.AOR) (plugin.Registration, error) {
	c.contact.Add(1)
	return c.Store.Contact(ctx, aor)
}

func (c *readCounter) UserSettings(ctx context.Context, aor plugin.AOR) (plugin.UserSettings, error) {
	c.settings.Add(1)
	return c.Store.UserSettings(ctx, aor)
}

func (c *readCounter) ContactAndSettings(ctx context.Context, aor plugin.AOR) (plugin.Registration, plugin.UserSettings, error) {
	c.both.Add(1)
	return c.Store.ContactAndSettings(ctx, aor)
}

// TestEngineReadWithClaim: a push that waited for a slot reads the
// user's settings and registration again in its first claim's round trip
// (ClaimAndRead), not in calls of their own, and still finds what an
// earlier push learnt of the client under delivery auto (PagerOnly: it
// goes in pager mode).
func TestEngineReadWithClaim(t *testing.T) {
	ctx := context.Background()
	carol := plugin.MustParseAOR("sip:carol@example.com")
	st := &readCounter{Store: plugintest.NewStore(nil)}
	eng, p, rec, skew := slotEngine(t, st, bob, carol)
	reg := func(aor plugin.AOR) plugin.Registration {
		return plugin.Registration{AOR: aor, Contact: "sip:" + aor.User() + "@127.0.0.1:5099", Expires: time.Now().Add(time.Hour)}
	}
	if err := eng.Registered(ctx, reg(bob)); err != nil {
		t.Fatal(err)
	}
	<-p.started // bob's push holds the only slot
	if err := eng.Registered(ctx, reg(carol)); err != nil {
		t.Fatal(err)
	}
	// An earlier push learnt that carol's client takes no MSRP.
	if err := st.SetPagerOnly(ctx, carol, reg(carol).Binding()); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*atomic.Int32{&st.contact, &st.settings, &st.both, &st.claims, &st.claimReads} {
		n.Store(0)
	}
	skew.Store(int64(time.Second)) // carol's kick read is stale when her push starts
	close(p.gate)
	env := &engineEnv{rec: rec}
	for range 2 {
		if rep := env.report(t); rep.Delivered != 1 {
			t.Fatalf("report %+v, want 1 delivered", rep)
		}
	}
	st.onlyClaimRead(t, "carol's push")
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, tg := range p.targets {
		if tg.AOR == carol && !tg.Pager {
			t.Errorf("carol's push went by MSRP; her stored registration says pager only")
		}
	}
}

// slotEngine runs an engine on st with one push at a time (MaxConcurrent
// 1), the default policy (delivery auto) without retry backoff, a clock
// the test moves forward by skew,
// and a pusher whose sessions wait for its gate; one message is stored
// for each of aors.
func slotEngine(t *testing.T, st plugin.Store, aors ...plugin.AOR) (*plugin.Engine, *fakePusher, *recorder, *atomic.Int64) {
	t.Helper()
	ctx := context.Background()
	setPolicy(t, st, nil)
	skew := new(atomic.Int64)
	now := func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	p := &fakePusher{gate: make(chan struct{}), started: make(chan struct{})}
	rec := &recorder{ch: make(chan plugin.PushReport, 100)}
	eng := startEngine(t, plugin.EngineConfig{Store: st, Pusher: p, Observer: rec, Batch: 4,
		LockTTL: 5 * time.Second, MaxConcurrent: 1, Now: now})
	for _, aor := range aors {
		m := &plugin.Message{Recipient: aor, Sender: "sip:alice@example.com", Received: time.Now(),
			Kind: plugin.KindSIPMessage, Raw: []byte("MESSAGE"), CallID: "call-" + aor.User()}
		if err := eng.Store(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	return eng, p, rec, skew
}
