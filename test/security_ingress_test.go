package test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/deferpush/deferpush/adapters/imclient"
	"github.com/deferpush/deferpush/adapters/ingress"
	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/store"
	"github.com/deferpush/deferpush/test/harness"
)

// TestSecurityIngressTrust sends MESSAGEs and session INVITEs straight to
// the SIP port of the deferpush binary: the ingress takes them only from
// its sip.trusted_sources and with its shared secret (403 otherwise),
// within its rate limit (503 with Retry-After), and not at all when it is
// switched off (405 with Allow); nothing refused is stored, and the
// secret of what is taken is not stored with it.
func TestSecurityIngressTrust(t *testing.T) {
	r := harness.Redis(t)
	st, err := store.New(store.Config{URL: r.URL()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	user2 := plugin.MustParseAOR("sip:user2@" + domain)
	count := func(t *testing.T) int {
		t.Helper()
		n, err := st.Count(context.Background(), user2)
		if err != nil {
			t.Fatal(err)
		}
		return n.Pending
	}
	send := func(t *testing.T, dp *deferpushProc, hdrs ...sip.Header) *sip.Response {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c := newClient(t, "sip:user1@"+domain, imclient.Config{Proxy: dp.SIPAddr})
		res, err := c.SendMessage(ctx, "sip:user2@"+domain, "text/plain", []byte("hello"), hdrs...)
		if err != nil {
			t.Fatalf("MESSAGE: %v", err)
		}
		return res
	}
	invite := func(t *testing.T, dp *deferpushProc, hdrs ...sip.Header) error {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c := newClient(t, "sip:user1@"+domain, imclient.Config{Proxy: dp.SIPAddr})
		s, err := c.OpenSession(ctx, "sip:user2@"+domain, hdrs...)
		if err == nil {
			_ = s.Close(ctx)
		}
		return err
	}
	secretOf := func(dp *deferpushProc) sip.Header { return sip.NewHeader(ingress.SecretHeader, dp.HooksToken) }

	t.Run("untrusted source", func(t *testing.T) {
		st.DeleteAll(context.Background(), user2)
		// Only 127.0.0.2 is trusted; the clients send from 127.0.0.1.
		dp := startDeferpush(t, []string{"DEFERPUSH_SIP_TRUSTED_SOURCES=127.0.0.2/32"}, "--redis", r.URL())
		res := send(t, dp, secretOf(dp))
		if res.StatusCode != 403 {
			t.Errorf("MESSAGE from an untrusted source, with the secret: %d, want 403", res.StatusCode)
		}
		if w := res.GetHeader("Warning"); w == nil || !strings.Contains(w.Value(), "trusted_sources") {
			t.Errorf("403 without a Warning saying why: %v", w)
		}
		if err := invite(t, dp, secretOf(dp)); err == nil || !strings.Contains(err.Error(), "403") {
			t.Errorf("session INVITE from an untrusted source: %v, want 403", err)
		}
		if n := count(t); n != 0 {
			t.Errorf("%d messages stored from an untrusted source, want 0", n)
		}
	})

	t.Run("secret", func(t *testing.T) {
		st.DeleteAll(context.Background(), user2)
		dp := startDeferpush(t, nil, "--redis", r.URL())
		if res := send(t, dp); res.StatusCode != 403 {
			t.Errorf("MESSAGE without the secret: %d, want 403", res.StatusCode)
		}
		if res := send(t, dp, sip.NewHeader(ingress.SecretHeader, "not-the-secret-at-all")); res.StatusCode != 403 {
			t.Errorf("MESSAGE with a wrong secret: %d, want 403", res.StatusCode)
		}
		if err := invite(t, dp); err == nil || !strings.Contains(err.Error(), "403") {
			t.Errorf("session INVITE without the secret: %v, want 403", err)
		}
		if n := count(t); n != 0 {
			t.Fatalf("%d messages stored without the secret, want 0", n)
		}
		if res := send(t, dp, secretOf(dp)); res.StatusCode != 202 {
			t.Fatalf("MESSAGE with the secret: %d, want 202", res.StatusCode)
		}
		page, err := st.List(context.Background(), user2, plugin.ListQuery{Body: true})
		if err != nil || len(page.Messages) != 1 {
			t.Fatalf("stored %v (%v), want the one MESSAGE", page.Messages, err)
		}
		if raw := page.Messages[0].Raw; bytes.Contains(bytes.ToLower(raw), []byte("x-deferpush-secret")) ||
			bytes.Contains(raw, []byte(dp.HooksToken)) {
			t.Errorf("the stored MESSAGE carries the secret:\n%s", raw)
		}
	})

	t.Run("rate limit", func(t *testing.T) {
		st.DeleteAll(context.Background(), user2)
		dp := startDeferpush(t, []string{"DEFERPUSH_SIP_RATE_LIMIT=1", "DEFERPUSH_SIP_RATE_BURST=2"}, "--redis", r.URL())
		var codes []int
		var retry sip.Header
		for range 3 {
			res := send(t, dp, secretOf(dp))
			codes = append(codes, res.StatusCode)
			if h := res.GetHeader("Retry-After"); h != nil {
				retry = h
			}
		}
		if codes[0] != 202 || codes[1] != 202 || codes[2] != 503 {
			t.Errorf("three MESSAGEs over a burst of 2: %v, want [202 202 503]", codes)
		}
		if retry == nil || retry.Value() != "1" {
			t.Errorf("503 Retry-After %v, want 1", retry)
		}
		if n := count(t); n != 2 {
			t.Errorf("%d stored, want the 2 within the limit", n)
		}
	})

	t.Run("switched off", func(t *testing.T) {
		st.DeleteAll(context.Background(), user2)
		dp := startDeferpush(t, []string{"DEFERPUSH_SIP_INGRESS=false"}, "--redis", r.URL())
		res := send(t, dp, secretOf(dp))
		if res.StatusCode != 405 {
			t.Errorf("MESSAGE to a switched-off ingress: %d, want 405", res.StatusCode)
		}
		if a := res.GetHeader("Allow"); a == nil || strings.Contains(a.Value(), "MESSAGE") {
			t.Errorf("405 Allow %v, want the methods served without MESSAGE", a)
		}
		if err := invite(t, dp, secretOf(dp)); err == nil || !strings.Contains(err.Error(), "405") {
			t.Errorf("session INVITE to a switched-off ingress: %v, want 405", err)
		}
		// OPTIONS still answers, and says what is served.
		ua, _ := sipgo.NewUA(sipgo.WithUserAgentHostname("127.0.0.1"))
		defer ua.Close()
		cli, _ := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"))
		req := sip.NewRequest(sip.OPTIONS, sip.Uri{Scheme: "sip", Host: "127.0.0.1"})
		req.SetTransport("TCP")
		req.SetDestination(dp.SIPAddr)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ores, err := cli.Do(ctx, req)
		if err != nil || ores.StatusCode != 200 {
			t.Fatalf("OPTIONS: %v %v", ores, err)
		}
		if a := ores.GetHeader("Allow"); a == nil || strings.Contains(a.Value(), "MESSAGE") {
			t.Errorf("OPTIONS Allow %v with the ingress off", a)
		}
		if n := count(t); n != 0 {
			t.Errorf("%d stored by a switched-off ingress", n)
		}
	})
}
