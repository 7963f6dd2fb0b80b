package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/store"
	"github.com/deferpush/deferpush/test/harness"
)

// TestLimitsMirror: dp:limits holds the part of the policy in force a
// proxy calling the library itself needs (store and push side) and the
// registrar's AOR rules, after SetPolicy and UpdatePolicy, on a
// standalone Redis and a cluster (where dp:policy and dp:limits live in
// two slots), and is written at start when a Redis of an earlier release
// has none, or one without the push side or the delivery mode.
func TestLimitsMirror(t *testing.T) {
	for _, tc := range []struct {
		name string
		url  func(t *testing.T) string
	}{
		{"redis", func(t *testing.T) string { return harness.Redis(t).URL() }},
		{"cluster", func(t *testing.T) string { return harness.RedisCluster(t).URL() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := store.New(store.Config{URL: tc.url(t), AORRules: plugin.AORRules{CaseSensitiveUser: true}})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			ctx := context.Background()
			limits := func() map[string]string {
				t.Helper()
				m, err := s.Client().HGetAll(ctx, "dp:limits").Result()
				if err != nil {
					t.Fatal(err)
				}
				return m
			}
			// An earlier release left a policy and no dp:limits.
			raw := `{"policy":{"store_enabled":true,"max_mailbox":77,"max_message_size":65536,"message_ttl":"72h","full_mailbox_reply":486,"store_disabled_reply":480},"updated_by":"old"}`
			if err := s.Client().Set(ctx, "dp:policy", raw, 0).Err(); err != nil {
				t.Fatal(err)
			}
			// ... and the dp:limits of a release without its push side.
			if err := s.Client().HSet(ctx, "dp:limits", "store_enabled", "1", "max_mailbox", "1").Err(); err != nil {
				t.Fatal(err)
			}
			if err := s.Ping(ctx); err != nil {
				t.Fatal(err)
			}
			want := map[string]string{"store_enabled": "1", "max_message_size": "65536", "max_mailbox": "77",
				"ttl_ms": "259200000", "full_mailbox_reply": "486", "store_disabled_reply": "480",
				"push_enabled": "1", "default_push": "on", "case_sensitive_user": "1", "delivery": "auto", "pager_below": "0"}
			if d := cmp.Diff(want, limits()); d != "" {
				t.Errorf("dp:limits at start (-want +got):\n%s", d)
			}
			p := plugin.DefaultPolicy()
			p.StoreEnabled, p.MaxMessageSize, p.MessageTTL = false, 1000, plugin.Duration(time.Hour)
			p.PushEnabled, p.DefaultPush = false, plugin.PushHold
			p.Delivery, p.PagerBelow = plugin.DeliveryPager, 3
			if err := s.SetPolicy(ctx, p, "admin"); err != nil {
				t.Fatal(err)
			}
			want = map[string]string{"store_enabled": "0", "max_message_size": "1000", "max_mailbox": "1000",
				"ttl_ms": "3600000", "full_mailbox_reply": "486", "store_disabled_reply": "480",
				"push_enabled": "0", "default_push": "hold", "case_sensitive_user": "1", "delivery": "pager", "pager_below": "3"}
			if d := cmp.Diff(want, limits()); d != "" {
				t.Errorf("dp:limits after SetPolicy (-want +got):\n%s", d)
			}
			if _, _, err := s.UpdatePolicy(ctx, "admin", func(p *plugin.Policy) error {
				p.MaxMailbox, p.FullMailboxReply, p.StoreDisabledReply = 5, 480, 403
				p.PushEnabled, p.DefaultPush = true, plugin.PushOff
				p.Delivery, p.PagerBelow = plugin.DeliveryAuto, 7
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			want["max_mailbox"], want["full_mailbox_reply"], want["store_disabled_reply"] = "5", "480", "403"
			want["push_enabled"], want["default_push"] = "1", "off"
			want["delivery"], want["pager_below"] = "auto", "7"
			if d := cmp.Diff(want, limits()); d != "" {
				t.Errorf("dp:limits after UpdatePolicy (-want +got):\n%s", d)
			}
		})
	}
}
