package test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/deferpush/deferpush/adapters/imclient"
	"github.com/deferpush/deferpush/plugin"
)

// TestKamailioLargeMessage stores a 60 KB MESSAGE through Kamailio (past
// the pv_buffer_size and tcp_rd_buf_size traps) and pushes it intact.
func TestKamailioLargeMessage(t *testing.T) {
	flowLargeMessage(t, kamailioStarter(t, stackOptions{}))
}

// TestKamailioHookRefusals: a refusal by the hook reaches the sender as the
// SIP reply it maps to, and nothing is stored.
func TestKamailioHookRefusals(t *testing.T) { flowHookRefusals(t, kamailioStarter) }

// TestKamailioFailureRouteStores: a MESSAGE to a registered contact that
// never answers is stored by Kamailio's failure_route after
// MESSAGE_TIMEOUT and pushed at the next registration.
func TestKamailioFailureRouteStores(t *testing.T) { flowFailureRouteStores(t, kamailioStarter) }

// TestKamailioNotBlockedBySlowHook: the registration hook runs in
// Kamailio's async workers, so a slow deferpush does not slow REGISTER.
func TestKamailioNotBlockedBySlowHook(t *testing.T) { flowNotBlockedBySlowHook(t, kamailioStarter) }

// hookTap is a hooks URL in front of deferpush's that passes every call on
// and reports the body of those whose path ends in suffix.
func hookTap(t *testing.T, suffix string, bodies chan<- string) func(string) string {
	return func(dp string) string {
		u, err := url.Parse(dp)
		if err != nil {
			t.Fatal(err)
		}
		rp := httputil.NewSingleHostReverseProxy(u)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasSuffix(r.URL.Path, suffix) {
				b, _ := io.ReadAll(r.Body)
				r.Body = io.NopCloser(bytes.NewReader(b))
				bodies <- string(b)
			}
			rp.ServeHTTP(w, r)
		}))
		t.Cleanup(srv.Close)
		return srv.URL
	}
}

// waitHook returns the next body from bodies, decoded.
func waitHook(t *testing.T, bodies <-chan string, what string) map[string]string {
	t.Helper()
	select {
	case body := <-bodies:
		var got map[string]string
		if err := json.Unmarshal([]byte(body), &got); err != nil {
			t.Fatalf("%s hook body %q: %v", what, body, err)
		}
		return got
	case <-time.After(20 * time.Second):
		t.Fatalf("no %s hook within 20 s", what)
	}
	return nil
}

// TestKamailioContactExpired: a registration that is not refreshed expires
// in usrloc, and event_route[usrloc:contact-expired] tells deferpush.
func TestKamailioContactExpired(t *testing.T) {
	expired := make(chan string, 4)
	s := startKamailioStack(t, stackOptions{hooks: hookTap(t, "/expired", expired)})
	contact := "sip:user3@127.0.0.1:9;transport=tcp"
	rawRegister(t, s.proxyAddr, "user3", contact, 2)
	got := waitHook(t, expired, "contact-expired")
	if got["aor"] != "sip:user3@"+domain || got["contact"] != contact || got["at"] == "" {
		t.Errorf("expired hook body %v, want aor sip:user3@%s, contact %s and at", got, domain, contact)
	}
}

// TestKamailioUnregister: REGISTER with expires 0 reaches the unregistered
// hook with the contact removed.
func TestKamailioUnregister(t *testing.T) {
	unreg := make(chan string, 4)
	s := startKamailioStack(t, stackOptions{hooks: hookTap(t, "/unregistered", unreg)})
	c := s.client(t, "user4", imclient.Config{})
	s.register(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Kamailio posts the hooks from several async workers, which may
	// reorder a registration and an unregistration that follow each other
	// within milliseconds: the client unregisters at once, and the "at" of
	// the bodies puts them back in order (TestKamailioHookOrder).
	aor := plugin.MustParseAOR("sip:user4@" + domain)
	if code, err := c.Register(ctx, 0); err != nil || code != 200 {
		t.Fatalf("unREGISTER: %d %v", code, err)
	}
	got := waitHook(t, unreg, "unregistered")
	if got["aor"] != "sip:user4@"+domain || got["contact"] != c.Contact() || got["at"] == "" {
		t.Errorf("unregistered hook body %v, want aor sip:user4@%s, contact %s and at", got, domain, c.Contact())
	}
	// The contact is forgotten: nothing may be sent there any more, not
	// even by an operator (the probe saw push now INVITE the old contact).
	waitFor(t, 5*time.Second, "contact forgotten", func() bool {
		_, err := s.st.Contact(ctx, aor)
		return errors.Is(err, plugin.ErrNotFound)
	})
	req, _ := http.NewRequest(http.MethodPost, "http://"+s.dp.AdminAddr+"/v1/users/"+aor.String()+"/push", nil)
	req.Header.Set("Authorization", "Bearer "+s.dp.AdminToken)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusConflict || !strings.Contains(string(b), "not_registered") {
		t.Errorf("push now after the unregistration: %d %s, want 409 not_registered", res.StatusCode, b)
	}
}
