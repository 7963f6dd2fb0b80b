package plugin_test

import (
	"bytes"
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/plugin/plugintest"
)

// fakeNotifier asks for what a message's body names ("stored",
// "failed") and records what it is asked to send.
type fakeNotifier struct {
	mu   sync.Mutex
	sent []string // "<Call-ID> <disposition>"
}

func (n *fakeNotifier) Requests(m *plugin.Message) (stored, failed bool) {
	return bytes.Contains(m.Raw, []byte("stored")), bytes.Contains(m.Raw, []byte("failed"))
}

func (n *fakeNotifier) Notify(ctx context.Context, m *plugin.Message, d plugin.Disposition) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.sent = append(n.sent, m.CallID+" "+string(d))
	return nil
}

func (n *fakeNotifier) wait(t *testing.T, want []string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		n.mu.Lock()
		got := slices.Clone(n.sent)
		n.mu.Unlock()
		slices.Sort(got)
		if slices.Equal(got, want) || time.Now().After(deadline) {
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("notifications (-want +got):\n%s", diff)
			}
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestEngineNotifies: the engine tells a sender its message is stored
// when it asked, and that it failed when it is dead-lettered or expires
// undelivered — once, and never for a message delivered or for a sender
// who did not ask; the observer counts each.
func TestEngineNotifies(t *testing.T) {
	st := plugintest.NewStore(nil)
	ctx := context.Background()
	pol := plugin.DefaultPolicy()
	pol.RetryBackoff, pol.MaxAttempts = 0, 1
	if err := st.SetPolicy(ctx, pol, "test"); err != nil {
		t.Fatal(err)
	}
	n := &fakeNotifier{}
	p := &fakePusher{failAt: map[string]error{"refused": &plugin.RejectedError{Status: 415, Reason: "Unsupported Media Type"}}}
	rec := &recorder{ch: make(chan plugin.PushReport, 100)}
	eng, err := plugin.NewEngine(plugin.EngineConfig{Store: st, Pusher: p, Observer: rec, Notifier: n, SweepInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- eng.Run(rctx) }()
	t.Cleanup(func() { cancel(); <-done })
	for !eng.Running() {
		time.Sleep(time.Millisecond)
	}
	store := func(to plugin.AOR, callID, body string, expires time.Time) {
		t.Helper()
		m := &plugin.Message{Recipient: to, Sender: "sip:alice@example.com", Received: time.Now(), Expires: expires,
			Kind: plugin.KindSIPMessage, Raw: []byte(body), CallID: callID}
		if err := eng.Store(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	carol := plugin.MustParseAOR("sip:carol@example.com")
	soon := time.Now().Add(100 * time.Millisecond)
	store(bob, "delivered", "stored failed", time.Time{})
	store(bob, "refused", "failed", time.Time{})
	store(bob, "quiet", "nothing asked", time.Time{})
	store(carol, "expires", "stored failed", soon)
	store(carol, "expires-quietly", "stored", soon)
	n.wait(t, []string{"delivered stored", "expires stored", "expires-quietly stored"})

	if err := eng.Registered(ctx, plugin.Registration{AOR: bob, Contact: "sip:bob@127.0.0.1:5099", Expires: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if rep := <-rec.ch; rep.Delivered != 2 || rep.DeadLettered != 1 {
		t.Fatalf("push %+v; want 2 delivered, 1 dead-lettered", rep)
	}
	n.wait(t, []string{"delivered stored", "expires failed", "expires stored", "expires-quietly stored", "refused failed"})
	time.Sleep(100 * time.Millisecond) // more sweeps: nothing told twice
	n.wait(t, []string{"delivered stored", "expires failed", "expires stored", "expires-quietly stored", "refused failed"})
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.notified) != 5 || slices.ContainsFunc(rec.notified, func(s string) bool { return s[len(s)-5:] != "<nil>" }) {
		t.Errorf("observer saw %v; want five sent", rec.notified)
	}
}
