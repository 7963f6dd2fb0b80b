package store

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/test/harness"
)

// TestPolicySurvivesEmptyRedis: a Redis that comes back empty (restarted
// without persistence, flushed) gets back the policy in force, in
// dp:policy and in dp:limits (what the proxies' functions apply), not
// the defaults, which would switch storing and pushing back on against
// the operator (PROBE5 F5); an update after the loss changes the policy
// in force.
func TestPolicySurvivesEmptyRedis(t *testing.T) {
	p := plugin.DefaultPolicy()
	p.StoreEnabled, p.PushEnabled, p.MaxMailbox = false, false, 5
	s, c := directStore(t, p, plugin.AORRules{})
	ctx := context.Background()
	if err := c.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.restore(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := s.Policy(ctx)
	if err != nil || got != p {
		t.Fatalf("policy after the loss = %+v, %v; want %+v", got, err, p)
	}
	if n, _ := c.Exists(ctx, policyKey).Result(); n != 1 {
		t.Error("dp:policy not put back")
	}
	lim, _ := c.HMGet(ctx, limitsKey, "store_enabled", "push_enabled", "max_mailbox").Result()
	if lim[0] != "0" || lim[1] != "0" || lim[2] != "5" {
		t.Errorf("dp:limits store_enabled, push_enabled, max_mailbox = %v, want 0 0 5", lim)
	}
	if code, _, _ := dpStore(t, c, "sip:bob@example.com", directMessages[0].raw); code != 480 {
		t.Errorf("dp_store with storing off = %d, want 480", code)
	}
	// Lost again, then updated: the update starts from the policy in force.
	if err := c.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	_, upd, err := s.UpdatePolicy(ctx, "test", func(q *plugin.Policy) error { q.MaxMailbox = 7; return nil })
	if err != nil || upd.StoreEnabled || upd.PushEnabled || upd.MaxMailbox != 7 {
		t.Errorf("update after the loss = %+v, %v; want the policy in force with max_mailbox 7", upd, err)
	}
}

// TestEvictionPolicyWarned: a Redis whose maxmemory-policy may evict keys
// (allkeys-lru) is reported at start as an error naming the policy (it
// dropped 2,000 of 10,000 messages answered "stored" without a word,
// PROBE5 F8); noeviction, Redis's default, is not.
func TestEvictionPolicyWarned(t *testing.T) {
	srv := harness.Redis(t)
	for _, policy := range []string{"noeviction", "allkeys-lru"} {
		var logs bytes.Buffer
		s, err := New(Config{URL: srv.URL(), Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Client().ConfigSet(context.Background(), "maxmemory-policy", policy).Err(); err != nil {
			t.Fatal(err)
		}
		if err := s.Ping(context.Background()); err != nil {
			t.Fatal(err)
		}
		warned := strings.Contains(logs.String(), "maxmemory_policy="+policy)
		if warned != (policy != "noeviction") {
			t.Errorf("maxmemory-policy %s: warned %v; log:\n%s", policy, warned, logs.String())
		}
		s.Close()
	}
}

// TestDrainsWhenOutOfMemory: a Redis over maxmemory (noeviction) refuses
// new messages, but what drains it still runs (PROBE5 F7: every function
// was refused, so nothing could be delivered, listed or deleted): claim,
// ack, the contact a registration records, listing, counting and
// deleting.
func TestDrainsWhenOutOfMemory(t *testing.T) {
	s, c := directStore(t, plugin.DefaultPolicy(), plugin.AORRules{})
	ctx := context.Background()
	bob, carol := plugin.MustParseAOR("sip:bob@example.com"), plugin.MustParseAOR("sip:carol@example.com")
	for _, aor := range []plugin.AOR{bob, carol} {
		for range 3 {
			if code, _, _ := dpStore(t, c, aor.String(), directMessages[0].raw); code != 202 {
				t.Fatalf("store: %d", code)
			}
		}
	}
	if err := c.ConfigSet(ctx, "maxmemory", "1").Err(); err != nil {
		t.Fatal(err)
	}
	defer c.ConfigSet(ctx, "maxmemory", "0")
	if err := c.FCall(ctx, "dp_store", nil, bob.String(), directMessages[0].raw).Err(); err == nil || !strings.Contains(err.Error(), "OOM") {
		t.Errorf("dp_store over maxmemory: %v, want an OOM refusal", err)
	}
	reg := plugin.Registration{AOR: bob, Contact: "sip:bob@127.0.0.1:5999", Expires: time.Now().Add(time.Hour)}
	if err := s.SetContact(ctx, reg); err != nil {
		t.Errorf("SetContact over maxmemory: %v", err)
	}
	msgs, err := s.Claim(ctx, bob, "tok", 10, time.Minute)
	if err != nil || len(msgs) != 3 {
		t.Fatalf("Claim over maxmemory: %d, %v; want 3", len(msgs), err)
	}
	ids := make([]string, len(msgs))
	for i, m := range msgs {
		ids[i] = m.ID
	}
	if n, err := s.Finish(ctx, bob, "tok", ids...); err != nil || n != 3 {
		t.Errorf("Finish over maxmemory: %d, %v; want 3", n, err)
	}
	if p, err := s.List(ctx, carol, plugin.ListQuery{Limit: 10}); err != nil || len(p.Messages) != 3 {
		t.Errorf("List over maxmemory: %v; want 3 messages", err)
	}
	if n, err := s.DeleteAll(ctx, carol); err != nil || n != 3 {
		t.Errorf("DeleteAll over maxmemory: %d, %v; want 3", n, err)
	}
}
