package api

import (
	"context"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/plugin/guard"
	"github.com/deferpush/deferpush/plugin/guard/guardtest"
)

// TestHooksSlowRequestFlood: 256 connections from 127.0.0.2-5 sending
// hook requests a byte at a time, reopened as soon as they are closed,
// hold the hooks' connection bound (64); the proxy's hook calls from
// 127.0.0.1, each on a new connection, are all answered 200 throughout:
// a new connection takes the place of the oldest request of the flood's
// address holding the most (before, every one got 503
// too_many_connections). With hooks.allow_cidrs naming the proxy, the
// flood is refused at accept (403) and never reaches the bound.
func TestHooksSlowRequestFlood(t *testing.T) {
	tests := []struct {
		name  string
		allow []netip.Prefix
		// refusal is the answer the flood's connections get: the bound's
		// or the source's.
		refusal string
	}{
		{"any source", nil, "HTTP/1.1 503"},
		{"allow list", []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, "HTTP/1.1 403"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			eng := &hookEngine{policy: plugin.DefaultPolicy()}
			var hooks string
			base := startHooksWith(t, eng, func(c *Config) {
				hooks = c.HooksListener.Addr().String()
				c.HooksConns = ConnLimits{Max: 64, PerHost: 64}
				c.HooksAllow = tt.allow
			})
			ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
			flood := guardtest.StartSlow(ctx, guardtest.SlowConfig{Addr: hooks, Sources: 4, PerSource: 64,
				Start: "POST /hooks/kamailio/message HTTP/1.1\r\nHost: x\r\nX-Pad: "})
			t.Cleanup(func() { cancel(); flood.Wait() })

			// The bound is held once the flood's connections are refused.
			for flood.Count(tt.refusal) < 10 {
				if ctx.Err() != nil {
					t.Fatalf("the flood was never refused %q (answers: %v)", tt.refusal, flood.Answers())
				}
				time.Sleep(20 * time.Millisecond)
			}
			// A new connection takes the place of a flood request a
			// quarter of the grace old (guard.Config.BusyGrace).
			time.Sleep(guard.DefaultBusyGrace/4 + 100*time.Millisecond)
			proxy := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
			body := `{"raw":` + jsonString(rawMessage) + `}`
			for i := range 12 {
				req, _ := http.NewRequest(http.MethodPost, base+"/hooks/kamailio/message", strings.NewReader(body))
				req.Header.Set(TokenHeader, testHooksToken)
				res, err := proxy.Do(req)
				if err != nil {
					t.Errorf("hook call %d during the flood: %v", i, err)
					continue
				}
				b, _ := io.ReadAll(res.Body)
				res.Body.Close()
				if res.StatusCode != 200 || !strings.Contains(string(b), `"stored"`) {
					t.Errorf("hook call %d during the flood: %d %s, want 200 stored", i, res.StatusCode, b)
				}
				time.Sleep(200 * time.Millisecond)
			}
			if tt.allow != nil {
				if n := flood.Count("HTTP/1.1 503"); n > 0 {
					t.Errorf("%d of the flood's connections got 503: they counted against the bound", n)
				}
			}
			t.Logf("the flood's answers: %v", flood.Answers())
		})
	}
}
