package test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deferpush/deferpush/adapters/imclient"
	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/plugin/encap"
	"github.com/deferpush/deferpush/test/harness"
)

// sendMessage sends a text MESSAGE from c to user through Kamailio and
// returns the final status code.
func sendMessage(t *testing.T, c *imclient.Client, user string, body []byte) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := c.SendMessage(ctx, "sip:"+user+"@"+domain, "text/plain", body)
	if err != nil {
		t.Fatalf("MESSAGE to %s: %v", user, err)
	}
	return res.StatusCode
}

// TestKamailioLargeMessage stores a 60 KB MESSAGE through Kamailio (past
// the pv_buffer_size and tcp_rd_buf_size traps) and pushes it intact, in
// MSRP chunks.
func TestKamailioLargeMessage(t *testing.T) {
	s := startKamailioStack(t, stackOptions{})
	body := bytes.Repeat([]byte("0123456789abcdefghijklmnopqrstuvwxyz-._~ABCDEFGHIJKLMNOPQRSTUVW\r\n"), 60_000/64)
	user1 := s.client(t, "user1", imclient.Config{})
	if code := sendMessage(t, user1, "user2", body); code != 202 {
		t.Fatalf("60 KB MESSAGE: %d, want 202", code)
	}
	s.waitPending(t, "user2", 1)

	user2 := s.client(t, "user2", imclient.Config{})
	s.register(t, user2)
	waitClient(t, user2, "BYE", func(st imclient.Stats) bool { return st.Byes == 1 })
	got := user2.Received()
	if len(got) != 1 {
		t.Fatalf("received %d messages, want 1", len(got))
	}
	if got[0].ContentType != encap.TypeSIP || got[0].DecodeErr != nil || !bytes.Equal(got[0].Decoded.Body, body) {
		t.Errorf("received %s (%v), %d body bytes; want message/sip with the %d bytes sent",
			got[0].ContentType, got[0].DecodeErr, len(got[0].Decoded.Body), len(body))
	}
	if n := s.counts(t, "user2"); n != (plugin.Counts{}) {
		t.Errorf("user2's mailbox after the push: %+v, want empty", n)
	}
}

// TestKamailioHookRefusals: a refusal by the hook reaches the sender as the
// SIP reply it maps to, and nothing is stored.
func TestKamailioHookRefusals(t *testing.T) {
	t.Run("wrong token", func(t *testing.T) {
		s := startKamailioStack(t, stackOptions{token: "not-the-hooks-token-at-all"})
		user1 := s.client(t, "user1", imclient.Config{})
		if code := sendMessage(t, user1, "user2", []byte("hello")); code != 500 {
			t.Errorf("MESSAGE with a wrong hook token: %d, want 500", code)
		}
		if n := s.counts(t, "user2"); n != (plugin.Counts{}) {
			t.Errorf("stored %+v, want nothing", n)
		}
	})
	t.Run("deferpush unreachable", func(t *testing.T) {
		s := startKamailioStack(t, stackOptions{hooks: func(string) string {
			return fmt.Sprintf("http://127.0.0.1:%d", harness.FreePort(t))
		}})
		user1 := s.client(t, "user1", imclient.Config{})
		if code := sendMessage(t, user1, "user2", []byte("hello")); code != 480 {
			t.Errorf("MESSAGE while the hook is unreachable: %d, want 480", code)
		}
	})
	t.Run("limits", func(t *testing.T) {
		s := startKamailioStack(t, stackOptions{policy: func(p *plugin.Policy) {
			p.MaxMailbox = 1
			p.MaxMessageSize = 2000
			p.FullMailboxReply = 480
		}})
		user1 := s.client(t, "user1", imclient.Config{})
		if code := sendMessage(t, user1, "user2", bytes.Repeat([]byte("x"), 3000)); code != 513 {
			t.Errorf("oversize MESSAGE: %d, want 513", code)
		}
		if n := s.counts(t, "user2"); n != (plugin.Counts{}) {
			t.Errorf("stored %+v after the oversize one, want nothing", n)
		}
		if code := sendMessage(t, user1, "user2", []byte("first")); code != 202 {
			t.Errorf("first MESSAGE: %d, want 202", code)
		}
		if code := sendMessage(t, user1, "user2", []byte("second")); code != 480 {
			t.Errorf("MESSAGE to a full mailbox: %d, want 480 (the policy's full_mailbox_reply)", code)
		}
		if n := s.counts(t, "user2"); n.Pending != 1 {
			t.Errorf("stored %+v, want the first message only", n)
		}
	})
}

// TestKamailioFailureRouteStores: user2 is registered but its contact
// never answers the MESSAGE; Kamailio's failure_route stores it after
// MESSAGE_TIMEOUT, and it is pushed when user2 registers again.
func TestKamailioFailureRouteStores(t *testing.T) {
	s := startKamailioStack(t, stackOptions{messageTimeout: 1000})
	// A contact that accepts the connection and never answers.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	var accepted atomic.Int32
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			defer c.Close()
		}
	}()
	rawRegister(t, s.k.SIPAddr, "user2", "sip:user2@"+silent.Addr().String()+";transport=tcp", 300)

	user1 := s.client(t, "user1", imclient.Config{})
	start := time.Now()
	if code := sendMessage(t, user1, "user2", []byte("are you there?")); code != 202 {
		t.Fatalf("MESSAGE to a silent registered contact: %d, want 202 from the failure route", code)
	}
	if accepted.Load() == 0 {
		t.Errorf("Kamailio never tried the registered contact (answered in %v)", time.Since(start))
	}
	s.waitPending(t, "user2", 1)

	user2 := s.client(t, "user2", imclient.Config{})
	s.register(t, user2)
	waitClient(t, user2, "BYE", func(st imclient.Stats) bool { return st.Byes == 1 })
	got := user2.Received()
	if len(got) != 1 || string(got[0].Decoded.Body) != "are you there?" {
		t.Fatalf("user2 received %+v, want the stored message", got)
	}
}

// rawRegister registers contact for user over UDP, as a client that does
// nothing else would.
func rawRegister(t *testing.T, proxy, user, contact string, expires int) {
	t.Helper()
	conn, err := net.Dial("udp", proxy)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	local := conn.LocalAddr().String()
	req := strings.Join([]string{
		"REGISTER sip:" + domain + " SIP/2.0",
		"Via: SIP/2.0/UDP " + local + ";branch=z9hG4bK-raw-" + user + ";rport",
		"Max-Forwards: 70",
		"From: <sip:" + user + "@" + domain + ">;tag=raw1",
		"To: <sip:" + user + "@" + domain + ">",
		"Call-ID: raw-register-" + user + "@test",
		"CSeq: 1 REGISTER",
		"Contact: <" + contact + ">",
		"Expires: " + strconv.Itoa(expires),
		"Content-Length: 0", "", "",
	}, "\r\n")
	if _, err := conn.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("REGISTER %s: %v", contact, err)
	}
	if !strings.HasPrefix(string(buf[:n]), "SIP/2.0 200") {
		t.Fatalf("REGISTER %s: %q", contact, strings.SplitN(string(buf[:n]), "\r\n", 2)[0])
	}
}

// TestKamailioNotBlockedBySlowHook: with every registration hook delayed
// by 2 s, REGISTER replies stay fast — the hook runs in Kamailio's async
// workers, not in the SIP workers — and every hook still arrives.
func TestKamailioNotBlockedBySlowHook(t *testing.T) {
	const delay = 2 * time.Second
	var hooked atomic.Int32
	s := startKamailioStack(t, stackOptions{hooks: func(dp string) string {
		u, err := url.Parse(dp)
		if err != nil {
			t.Fatal(err)
		}
		rp := httputil.NewSingleHostReverseProxy(u)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasSuffix(r.URL.Path, "/registered") {
				time.Sleep(delay) // the slow deferpush under test, not a wait for a condition
				defer hooked.Add(1)
			}
			rp.ServeHTTP(w, r)
		}))
		t.Cleanup(srv.Close)
		return srv.URL
	}})
	const users = 12
	var slowest time.Duration
	for i := range users {
		c := s.client(t, fmt.Sprintf("fast%02d", i), imclient.Config{})
		start := time.Now()
		s.register(t, c)
		slowest = max(slowest, time.Since(start))
	}
	if slowest > delay/4 {
		t.Errorf("slowest REGISTER took %v while the hook takes %v: SIP workers wait for the hook", slowest, delay)
	}
	t.Logf("slowest of %d REGISTERs: %v (hook delay %v)", users, slowest, delay)
	waitFor(t, 30*time.Second, "every registration hook", func() bool { return hooked.Load() == users })
}

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
	rawRegister(t, s.k.SIPAddr, "user3", contact, 2)
	got := waitHook(t, expired, "contact-expired")
	if got["aor"] != "sip:user3@"+domain || got["contact"] != contact {
		t.Errorf("expired hook body %v, want aor sip:user3@%s and contact %s", got, domain, contact)
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
	if code, err := c.Register(ctx, 0); err != nil || code != 200 {
		t.Fatalf("unREGISTER: %d %v", code, err)
	}
	got := waitHook(t, unreg, "unregistered")
	if got["aor"] != "sip:user4@"+domain || got["contact"] != c.Contact() {
		t.Errorf("unregistered hook body %v, want aor sip:user4@%s and contact %s", got, domain, c.Contact())
	}
	// The contact is forgotten: nothing may be sent there any more, not
	// even by an operator (the probe saw push now INVITE the old contact).
	aor := plugin.MustParseAOR("sip:user4@" + domain)
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
