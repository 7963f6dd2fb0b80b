package store

import (
	"context"
	"testing"

	"github.com/deferpush/deferpush/plugin"
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
