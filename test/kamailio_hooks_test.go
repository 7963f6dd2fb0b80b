package test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
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

// TestKamailioUnreachableContactStores: flowUnreachableContactStores
// through Kamailio's hooks, STORE_VIA_SIP and REDIS_DIRECT modes: the
// MESSAGE that no branch could be sent for is stored, not answered 477.
func TestKamailioUnreachableContactStores(t *testing.T) {
	t.Run("hooks", func(t *testing.T) { flowUnreachableContactStores(t, kamailioStarter(t, stackOptions{})) })
	t.Run("store via SIP", func(t *testing.T) {
		flowUnreachableContactStores(t, kamailioStarter(t, stackOptions{storeViaSIP: true}))
	})
	t.Run("Redis direct", func(t *testing.T) { flowUnreachableContactStores(t, kamailioDirectStarter(t, stackOptions{})) })
}

// TestKamailioRelayFailureAnsweredOnce: a request that no branch could be
// sent for (an OPTIONS to a registered TCP contact that refuses the
// connection) gets one final answer, tm's 477, not also a stateless
// second one with another To tag (RFC 3261 §17.2.1: a server transaction
// sends one final response; its retransmissions repeat it).
func TestKamailioRelayFailureAnsweredOnce(t *testing.T) {
	s := kamailioStarter(t, stackOptions{})
	rawRegisterTCP(t, s.proxyAddr, "user2", "sip:user2@127.0.0.1:1;transport=tcp", 300)
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	proxy, err := net.ResolveUDPAddr("udp", s.proxyAddr)
	if err != nil {
		t.Fatal(err)
	}
	local := conn.LocalAddr().String()
	req := strings.Join([]string{
		"OPTIONS sip:user2@" + domain + " SIP/2.0",
		"Via: SIP/2.0/UDP " + local + ";branch=z9hG4bK-once-1;rport",
		"Max-Forwards: 70",
		"From: <sip:user1@" + domain + ">;tag=once1",
		"To: <sip:user2@" + domain + ">",
		"Call-ID: relay-once@test",
		"CSeq: 1 OPTIONS",
		"Content-Length: 0", "", "",
	}, "\r\n")
	if _, err := conn.WriteTo([]byte(req), proxy); err != nil {
		t.Fatal(err)
	}
	finals := map[string]string{} // To tag -> status line
	buf := make([]byte, 65535)
	_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	for {
		n, _, err := conn.ReadFrom(buf)
		if err != nil {
			break
		}
		msg := string(buf[:n])
		status, _, _ := strings.Cut(msg, "\r\n")
		if !strings.HasPrefix(status, "SIP/2.0 ") || strings.HasPrefix(status, "SIP/2.0 1") {
			continue
		}
		tag := ""
		for _, line := range strings.Split(msg, "\r\n") {
			if name, v, ok := strings.Cut(line, ":"); ok && (strings.EqualFold(name, "To") || name == "t") {
				_, tag, _ = strings.Cut(v, ";tag=")
			}
		}
		finals[tag] = status
	}
	if len(finals) != 1 {
		t.Fatalf("final answers by To tag: %q, want one", finals)
	}
	for _, status := range finals {
		if !strings.HasPrefix(status, "SIP/2.0 477") {
			t.Errorf("final answer %q, want 477", status)
		}
	}
}
