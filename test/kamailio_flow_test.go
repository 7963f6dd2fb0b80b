package test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/deferpush/deferpush/adapters/imclient"
	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/plugin/encap"
	"github.com/deferpush/deferpush/test/harness"
)

// TestKamailioSeedFlow is the seed's flow through a real Kamailio running
// the shipped config: user2 is offline; user1 sends a SIP MESSAGE (SIPp)
// and a message in an MSRP session (reference client); both are stored;
// user2 registers; deferpush's INVITE reaches user2 through Kamailio; two
// SENDs arrive — message/sip with the original Call-ID and a Date, and
// multipart/mixed (message/sip + message/msrp) with the original
// Message-ID; the BYE comes through Kamailio; user2's mailbox is empty.
func TestKamailioSeedFlow(t *testing.T) {
	s := startKamailioStack(t, stackOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	const seedCallID = "asd88asd77a-1@1.2.3.4"
	res := harness.RunSIPp(t, harness.SIPpConfig{
		Scenario: "testdata/sipp-deferred-message.xml",
		Remote:   s.k.SIPAddr,
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
	st := waitClient(t, user2, "BYE", func(st imclient.Stats) bool { return st.Byes == 1 })
	if st.Invites != 1 || st.Acks != 1 || st.Received != 2 {
		t.Errorf("user2 saw %+v; want 1 INVITE, 1 ACK, 2 messages", st)
	}
	kport := s.k.SIPAddr[strings.LastIndexByte(s.k.SIPAddr, ':'):]
	for name, req := range map[string]*sip.Request{"INVITE": user2.LastInvite(), "BYE": user2.LastBye()} {
		if req == nil || !viaKamailio(req, kport) {
			t.Errorf("%s did not come through Kamailio's users' port (%s):\n%v", name, s.k.SIPAddr, req)
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

// viaKamailio reports whether req passed Kamailio's users' port: its Via
// or Record-Route names it.
func viaKamailio(req *sip.Request, port string) bool {
	for _, name := range []string{"Via", "Record-Route"} {
		for _, h := range req.GetHeaders(name) {
			if strings.Contains(h.Value(), port) {
				return true
			}
		}
	}
	return false
}

// TestKamailioPushToAOR: with push_target aor, deferpush INVITEs the AOR
// and Kamailio looks it up (route FROM_DEFERPUSH) before relaying.
func TestKamailioPushToAOR(t *testing.T) {
	s := startKamailioStack(t, stackOptions{policy: func(p *plugin.Policy) { p.PushTarget = plugin.TargetAOR }})
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
		t.Errorf("INVITE Request-URI %s: want the contact Kamailio looked up", inv.Recipient.String())
	}
	if to := inv.To(); to == nil || to.Address.Host != domain {
		t.Errorf("INVITE To %v, want the AOR", to)
	}
	if got := user2.Received(); len(got) != 1 || string(got[0].Decoded.Body) != "to the AOR" {
		t.Errorf("received %+v", got)
	}
}
