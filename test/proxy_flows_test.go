package test

import (
	"bytes"
	"context"
	"fmt"
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

	"github.com/emiago/sipgo/sip"

	"github.com/deferpush/deferpush/adapters/imclient"
	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/plugin/encap"
	"github.com/deferpush/deferpush/test/harness"
)

// The end-to-end flows every proxy's shipped script must pass, run once
// through Kamailio (TestKamailio*) and once through OpenSIPS (TestOpenSIPS*).

// flowSeed is the seed's flow through the proxy: user2 is offline; user1
// sends a SIP MESSAGE (SIPp) and a message in an MSRP session (reference
// client); both are stored; user2 registers; deferpush's INVITE reaches
// user2 through the proxy; two SENDs arrive — message/sip with the
// original Call-ID and a Date, and multipart/mixed (message/sip +
// message/msrp) with the original Message-ID; the BYE comes through the
// proxy; user2's mailbox is empty.
func flowSeed(t *testing.T, s *dpStack) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	const seedCallID = "asd88asd77a-1@1.2.3.4"
	res := harness.RunSIPp(t, harness.SIPpConfig{
		Scenario: "testdata/sipp-deferred-message.xml",
		Remote:   s.proxyAddr,
		Args:     []string{"-t", "t1", "-m", "1", "-s", "user2", "-cid_str", "asd88asd77a-%u@1.2.3.4"},
		Timeout:  20 * time.Second,
	})
	if res.Err != nil {
		t.Fatalf("SIPp MESSAGE to offline user2: %v", res.Err)
	}

	user1 := s.client(t, "user1", imclient.Config{})
	sess, err := user1.OpenSession(ctx, "sip:user2@"+domain,
		sip.NewHeader("Subject", "this is a subject"),
		sip.NewHeader("P-Asserted-Identity", "<sip:user1@"+domain+">"))
	if err != nil {
		t.Fatalf("session INVITE to offline user2: %v", err)
	}
	const msgID = "seed456msg"
	if err := sess.Send(ctx, msgID, "text/plain", []byte("Hi, Alice!  I'm Bob!")); err != nil {
		t.Fatalf("SEND in the session: %v", err)
	}
	sessionCallID := sess.CallID()
	if err := sess.Close(ctx); err != nil {
		t.Fatalf("BYE of the session: %v", err)
	}
	s.waitPending(t, "user2", 2)

	user2 := s.client(t, "user2", imclient.Config{})
	s.register(t, user2)
	// Kamailio may relay the ACK after the BYE: deferpush sends both on
	// one TCP connection, which another of its TCP workers can take in
	// between. Wait for both.
	st := waitClient(t, user2, "the BYE and the ACK", func(st imclient.Stats) bool { return st.Byes == 1 && st.Acks >= 1 })
	if st.Invites != 1 || st.Acks != 1 || st.Received != 2 {
		t.Errorf("user2 saw %+v; want 1 INVITE, 1 ACK, 2 messages", st)
	}
	for name, req := range map[string]*sip.Request{"INVITE": user2.LastInvite(), "BYE": user2.LastBye()} {
		if req == nil || !viaProxy(req, s.proxyAddr) {
			t.Errorf("%s did not come through %s's users' port (%s):\n%v", name, s.proxy, s.proxyAddr, req)
		}
	}

	got := user2.Received()
	if len(got) != 2 {
		t.Fatalf("user2 received %d messages, want 2", len(got))
	}
	m := got[0]
	if m.ContentType != encap.TypeSIP || m.DecodeErr != nil {
		t.Errorf("first SEND: %s (%v), want message/sip", m.ContentType, m.DecodeErr)
	}
	if m.Decoded.CallID != seedCallID || m.Decoded.Date.IsZero() || strings.TrimSpace(string(m.Decoded.Body)) != "Watson, come here." {
		t.Errorf("first SEND: Call-ID %q, Date %v, body %q; want %q, a Date, the text",
			m.Decoded.CallID, m.Decoded.Date, m.Decoded.Body, seedCallID)
	}
	m = got[1]
	if m.Decoded.Encapsulation != encap.TypeMultipart || m.DecodeErr != nil {
		t.Errorf("second SEND: %s (%v), want multipart/mixed", m.ContentType, m.DecodeErr)
	}
	if m.Decoded.MessageID != msgID || m.Decoded.CallID != sessionCallID || m.Decoded.Subject != "this is a subject" ||
		!bytes.Equal(m.Decoded.Body, []byte("Hi, Alice!  I'm Bob!")) {
		t.Errorf("second SEND: Message-ID %q, Call-ID %q, Subject %q, body %q; want %q, %q, the subject, the text",
			m.Decoded.MessageID, m.Decoded.CallID, m.Decoded.Subject, m.Decoded.Body, msgID, sessionCallID)
	}
	for _, r := range got {
		if r.Answered != 200 {
			t.Errorf("message %s answered %d, want 200", r.OuterID, r.Answered)
		}
	}
	waitFor(t, 10*time.Second, "user2's mailbox empty", func() bool {
		n := s.counts(t, "user2")
		return n.Pending == 0 && n.InFlight == 0 && n.Dead == 0
	})
}

// viaProxy reports whether req passed the proxy's users' port (addr is
// its host:port): its Via or Record-Route names it.
func viaProxy(req *sip.Request, addr string) bool {
	port := addr[strings.LastIndexByte(addr, ':'):]
	for _, name := range []string{"Via", "Record-Route"} {
		for _, h := range req.GetHeaders(name) {
			if strings.Contains(h.Value(), port) {
				return true
			}
		}
	}
	return false
}

// flowPushToAOR: with push_target aor, deferpush INVITEs the AOR and the
// proxy looks it up before relaying.
func flowPushToAOR(t *testing.T, start startStack) {
	s := start(t, stackOptions{policy: func(p *plugin.Policy) { p.PushTarget = plugin.TargetAOR }})
	user1 := s.client(t, "user1", imclient.Config{})
	if code := sendMessage(t, user1, "user2", []byte("to the AOR")); code != 202 {
		t.Fatalf("MESSAGE: %d, want 202", code)
	}
	s.waitPending(t, "user2", 1)
	user2 := s.client(t, "user2", imclient.Config{})
	s.register(t, user2)
	waitClient(t, user2, "BYE", func(st imclient.Stats) bool { return st.Byes == 1 })
	inv := user2.LastInvite()
	if got := inv.Recipient.Host; got != "127.0.0.1" {
		t.Errorf("INVITE Request-URI %s: want the contact %s looked up", inv.Recipient.String(), s.proxy)
	}
	if to := inv.To(); to == nil || to.Address.Host != domain {
		t.Errorf("INVITE To %v, want the AOR", to)
	}
	if got := user2.Received(); len(got) != 1 || string(got[0].Decoded.Body) != "to the AOR" {
		t.Errorf("received %+v", got)
	}
}

// flowPushOnlyToItsContact: two devices of one user registered on the
// proxy's own host (the contacts differ in port only, as on a host that
// runs clients beside the proxy); a pager-mode push to the one that
// registered last goes to it alone, not forked to the other as a
// MESSAGE to the AOR would be (PROBE7: OpenSIPS compared the host only).
func flowPushOnlyToItsContact(t *testing.T, start startStack) {
	s := start(t, stackOptions{policy: func(p *plugin.Policy) { p.Delivery = plugin.DeliveryPager }})
	ctx := context.Background()
	aor := plugin.MustParseAOR("sip:user2@" + domain)
	setPush := func(m plugin.PushMode) {
		if _, _, err := s.st.UpdateUserSettings(ctx, aor, func(u *plugin.UserSettings) error { u.Push = m; return nil }); err != nil {
			t.Fatal(err)
		}
	}
	// On hold while both devices register: the push goes when asked.
	setPush(plugin.PushHold)
	b := s.client(t, "user2", imclient.Config{})
	s.register(t, b)
	postMessage(t, s, "user2", fmt.Sprintf("MESSAGE sip:user2@%[1]s SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bKonly1\r\n"+
		"From: <sip:user1@%[1]s>;tag=only1\r\nTo: <sip:user2@%[1]s>\r\nCall-ID: only-1@192.0.2.7\r\nCSeq: 1 MESSAGE\r\n"+
		"Content-Type: text/plain\r\nContent-Length: 8\r\n\r\nfor A!!!", domain))
	s.waitPending(t, "user2", 1)
	a := s.client(t, "user2", imclient.Config{})
	s.register(t, a)
	// The proxy reports a registration after answering it.
	waitFor(t, 10*time.Second, "deferpush to record the last registration", func() bool {
		r, _, err := s.st.ContactAndSettings(ctx, aor)
		return err == nil && r.Contact == a.Contact()
	})
	setPush(plugin.PushOn)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+s.dp.AdminAddr+"/v1/users/sip:user2@"+domain+"/push", nil)
	req.Header.Set("Authorization", "Bearer "+s.dp.AdminToken)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 202 {
		t.Fatalf("push now: %d, want 202", res.StatusCode)
	}
	waitFor(t, 10*time.Second, "the push to the device that registered last", func() bool { return len(a.Received()) == 1 })
	waitFor(t, 5*time.Second, "the mailbox emptied", func() bool { return s.counts(t, "user2") == (plugin.Counts{}) })
	time.Sleep(500 * time.Millisecond) // a forked copy would be on its way
	if got := b.Received(); len(got) != 0 {
		t.Errorf("the other device received %d pushed messages, want none", len(got))
	}
}

// sendMessage sends a text MESSAGE from c to user through the proxy and
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

// flowLargeMessage stores a 60 KB MESSAGE through the proxy (past its
// buffer limits) and pushes it intact, in MSRP chunks.
func flowLargeMessage(t *testing.T, s *dpStack) {
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

// flowHookRefusals: a refusal by the hook reaches the sender as the SIP
// reply it maps to, and nothing is stored.
func flowHookRefusals(t *testing.T, start startStack) {
	t.Run("wrong token", func(t *testing.T) {
		s := start(t, stackOptions{token: "not-the-hooks-token-at-all"})
		user1 := s.client(t, "user1", imclient.Config{})
		if code := sendMessage(t, user1, "user2", []byte("hello")); code != 500 {
			t.Errorf("MESSAGE with a wrong hook token: %d, want 500", code)
		}
		if n := s.counts(t, "user2"); n != (plugin.Counts{}) {
			t.Errorf("stored %+v, want nothing", n)
		}
	})
	t.Run("deferpush unreachable", func(t *testing.T) {
		s := start(t, stackOptions{hooks: func(string) string {
			return fmt.Sprintf("http://127.0.0.1:%d", harness.FreePort(t))
		}})
		user1 := s.client(t, "user1", imclient.Config{})
		if code := sendMessage(t, user1, "user2", []byte("hello")); code != 480 {
			t.Errorf("MESSAGE while the hook is unreachable: %d, want 480", code)
		}
	})
	t.Run("limits", func(t *testing.T) {
		s := start(t, stackOptions{policy: func(p *plugin.Policy) {
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

// silentContact is a TCP listener that accepts connections and never
// answers: a registered contact whose client does not take a MESSAGE.
// It reports how many connections it accepted.
func silentContact(t *testing.T) (addr string, accepted *atomic.Int32) {
	t.Helper()
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { silent.Close() })
	accepted = new(atomic.Int32)
	go func() {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			conns = append(conns, c)
		}
	}()
	return silent.Addr().String(), accepted
}

// flowFailureRouteStores: user2 is registered but its contact never
// answers the MESSAGE; the proxy's failure route stores it after its
// MESSAGE timeout, and it is pushed when user2 registers again.
func flowFailureRouteStores(t *testing.T, start startStack) {
	s := start(t, stackOptions{messageTimeout: 1000})
	addr, accepted := silentContact(t)
	// Over TCP, as a client with a TCP contact registers: a proxy that
	// sends to the socket a REGISTER came in on (OpenSIPS) would otherwise
	// send the MESSAGE over UDP.
	rawRegisterTCP(t, s.proxyAddr, "user2", "sip:user2@"+addr+";transport=tcp", 300)

	user1 := s.client(t, "user1", imclient.Config{})
	start0 := time.Now()
	if code := sendMessage(t, user1, "user2", []byte("are you there?")); code != 202 {
		t.Fatalf("MESSAGE to a silent registered contact: %d, want 202 from the failure route", code)
	}
	if accepted.Load() == 0 {
		t.Errorf("%s never tried the registered contact (answered in %v)", s.proxy, time.Since(start0))
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

// flowUnreachableContactStores: a MESSAGE to a registered TCP contact
// that refuses the connection (a mobile client whose connection is gone,
// its registration still live) cannot be relayed at all: no branch is
// sent, so no failure_route runs. The script stores it (202) instead of
// answering the sender 477, and answers once; the user's next
// registration pushes it.
func flowUnreachableContactStores(t *testing.T, s *dpStack) {
	t.Helper()
	rawRegisterTCP(t, s.proxyAddr, "user2", "sip:user2@127.0.0.1:1;transport=tcp", 300)
	user1 := s.client(t, "user1", imclient.Config{})
	if code := sendMessage(t, user1, "user2", []byte("nobody home")); code != 202 {
		t.Fatalf("MESSAGE to an unreachable registered contact: %d, want 202", code)
	}
	s.waitPending(t, "user2", 1)
	user2 := s.client(t, "user2", imclient.Config{})
	s.register(t, user2)
	waitClient(t, user2, "BYE", func(st imclient.Stats) bool { return st.Byes == 1 })
	if got := user2.Received(); len(got) != 1 || string(got[0].Decoded.Body) != "nobody home" {
		t.Fatalf("user2 received %+v, want the stored message", got)
	}
}

// flowNotBlockedBySlowHook: with every registration hook delayed by 2 s,
// REGISTER replies stay fast — the proxy posts the hook outside the SIP
// worker that answers the REGISTER — and every hook still arrives.
func flowNotBlockedBySlowHook(t *testing.T, start startStack) {
	const delay = 2 * time.Second
	var hooked atomic.Int32
	s := start(t, stackOptions{hooks: func(dp string) string {
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

// flowUnregisterCancelsPush: user2 unregisters while deferpush pushes to
// it (holding the 2nd of 5 messages unanswered); the proxy reports the
// removal, deferpush cancels the push at once (BYE well before
// msrp.timeout), and the unconfirmed messages stay stored, none
// dead-lettered; no push follows while user2 is away.
func flowUnregisterCancelsPush(t *testing.T, start startStack) {
	s := start(t, stackOptions{})
	user1 := s.client(t, "user1", imclient.Config{})
	for i := range 5 {
		if code := sendMessage(t, user1, "user2", fmt.Appendf(nil, "message %d", i)); code != 202 {
			t.Fatalf("MESSAGE %d: %d, want 202", i, code)
		}
	}
	s.waitPending(t, "user2", 5)

	atSecond, release := make(chan struct{}), make(chan struct{})
	user2 := s.client(t, "user2", imclient.Config{OnEvent: func(ev imclient.Event) error {
		if ev.Kind == imclient.EventMessage && ev.N == 2 {
			close(atSecond)
			<-release
			return errDrop
		}
		return nil
	}})
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	s.register(t, user2)
	select {
	case <-atSecond:
	case <-time.After(20 * time.Second):
		t.Fatal("the push never reached the 2nd message")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	unregistered := time.Now()
	if code, err := user2.Register(ctx, 0); err != nil || code != 200 {
		t.Fatalf("unREGISTER through %s: %d %v", s.proxy, code, err)
	}
	// deferpush's msrp.timeout is 30 s: a BYE within 10 s is the
	// cancellation, not a timeout.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	if st, err := user2.Wait(ctx2, func(st imclient.Stats) bool { return st.Byes == 1 }); err != nil {
		t.Fatalf("no BYE within 10 s of the unregistration (client saw %+v): the push was not cancelled", st)
	}
	t.Logf("BYE %v after the unREGISTER", time.Since(unregistered).Round(time.Millisecond))
	close(release)
	// Messages 1 to 4 were never confirmed; message 0 was, but its ack
	// may still have been on its way to Redis when the push was cancelled
	// (the engine acks with the push's context): then it stays too, to
	// come again with the same ids (a duplicate, never a loss).
	waitFor(t, 15*time.Second, "the unconfirmed messages back in user2's mailbox", func() bool {
		n := s.counts(t, "user2")
		return n.InFlight == 0 && n.Pending >= 4
	})
	if n := s.counts(t, "user2"); n.Dead != 0 || n.Pending > 5 {
		t.Errorf("user2's mailbox %+v: want the 4 unconfirmed messages (5 with the confirmed one), none dead", n)
	} else if n.Pending == 5 {
		t.Logf("the confirmed message 0 stays too: its ack was cancelled with the push")
	}
	if st := user2.Stats(); st.Invites != 1 {
		t.Errorf("user2 got %d INVITEs, want the one push (none after it unregistered)", st.Invites)
	}
	if got := user2.Received(); len(got) < 1 || string(got[0].Decoded.Body) != "message 0" || got[0].Answered != 200 {
		t.Errorf("user2 received %+v, want message 0 confirmed first", got)
	}
}

// rawRegister registers contact for user over UDP, as a client that does
// nothing else would, and fails the test unless 200.
func rawRegister(t *testing.T, proxy, user, contact string, expires int) {
	t.Helper()
	if got := rawRegisterStatus(t, "udp", proxy, "sip:"+user+"@"+domain, contact, expires); !strings.HasPrefix(got, "SIP/2.0 200") {
		t.Fatalf("REGISTER %s: %q", contact, got)
	}
}

// rawRegisterTCP is rawRegister over a TCP connection closed after the
// answer.
func rawRegisterTCP(t *testing.T, proxy, user, contact string, expires int) {
	t.Helper()
	if got := rawRegisterStatus(t, "tcp", proxy, "sip:"+user+"@"+domain, contact, expires); !strings.HasPrefix(got, "SIP/2.0 200") {
		t.Fatalf("REGISTER %s over TCP: %q", contact, got)
	}
}

// rawCSeq numbers the raw REGISTERs, which share a Call-ID per user: each
// one is newer than the last.
var rawCSeq atomic.Int32

// rawRegisterStatus sends one REGISTER of contact for aor over network
// ("udp" or "tcp") and returns the status line of the answer. contact is
// a URI, or a whole Contact value when it starts with "<"; extra are more
// header lines.
func rawRegisterStatus(t *testing.T, network, proxy, aor, contact string, expires int, extra ...string) string {
	t.Helper()
	conn, err := net.Dial(network, proxy)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	local := conn.LocalAddr().String()
	cseq := rawCSeq.Add(1)
	ct := contact
	if !strings.HasPrefix(ct, "<") {
		ct = "<" + ct + ">"
	}
	u, err := url.Parse(aor)
	if err != nil {
		t.Fatal(err)
	}
	user, host, _ := strings.Cut(u.Opaque, "@")
	lines := []string{
		"REGISTER sip:" + host + " SIP/2.0",
		"Via: SIP/2.0/" + strings.ToUpper(network) + " " + local + ";branch=z9hG4bK-raw-" + user + "-" + strconv.Itoa(int(cseq)) + ";rport",
		"Max-Forwards: 70",
		"From: <" + aor + ">;tag=raw1",
		"To: <" + aor + ">",
		"Call-ID: raw-register-" + user + "@test",
		"CSeq: " + strconv.Itoa(int(cseq)) + " REGISTER",
		"Contact: " + ct,
		"Expires: " + strconv.Itoa(expires),
	}
	lines = append(append(lines, extra...), "Content-Length: 0", "", "")
	if _, err := conn.Write([]byte(strings.Join(lines, "\r\n"))); err != nil {
		t.Fatal(err)
	}
	var got []byte
	buf := make([]byte, 4096)
	for !bytes.Contains(got, []byte("\r\n\r\n")) {
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("REGISTER %s over %s: %v (got %q)", contact, network, err, got)
		}
		got = append(got, buf[:n]...)
	}
	line, _, _ := strings.Cut(string(got), "\r\n")
	return line
}

// flowCaseMismatch: the user part's case differs between the senders'
// Request-URIs and the client's registration, as a registrar folding
// case (usrloc's default) allows: MESSAGEs to "Bob" and to "bob" land in
// one mailbox, and the client registered as "BoB" gets both, in order,
// leaving it empty.
func flowCaseMismatch(t *testing.T, start startStack) {
	s := start(t, stackOptions{})
	user1 := s.client(t, "user1", imclient.Config{})
	for _, to := range []string{"Bob", "bob", "BOB"} {
		if code := sendMessage(t, user1, to, []byte("to "+to)); code != 202 {
			t.Fatalf("MESSAGE to %s: %d, want 202", to, code)
		}
	}
	s.waitPending(t, "bob", 3)
	if c := s.counts(t, "Bob"); c.Pending != 3 {
		t.Fatalf("the mailbox of sip:Bob@%s holds %+v, want the same 3 as bob's", domain, c)
	}
	rcv := s.client(t, "BoB", imclient.Config{})
	s.register(t, rcv)
	waitClient(t, rcv, "the three messages", func(st imclient.Stats) bool { return st.Received >= 3 })
	var got []string
	for _, r := range rcv.Received() {
		got = append(got, string(r.Decoded.Body))
	}
	if want := []string{"to Bob", "to bob", "to BOB"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("client registered as BoB got %q, want %q", got, want)
	}
	waitFor(t, 10*time.Second, "bob's mailbox empty", func() bool { return s.counts(t, "bob") == plugin.Counts{} })
}
