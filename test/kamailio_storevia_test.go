package test

import (
	"bytes"
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/deferpush/deferpush/adapters/imclient"
	"github.com/deferpush/deferpush/plugin"
)

// storedVia checks what user2 received through a STORE_VIA_SIP stack: the
// MESSAGE user1 sent, with its Call-ID, identity and body, addressed to the
// AOR, carrying the sender's Via only and Kamailio's decremented
// Max-Forwards (the mark of the relay path: the hook stores $mb, 70).
func storedVia(t *testing.T, got []imclient.Received, callID, body string) {
	t.Helper()
	if len(got) != 1 {
		t.Fatalf("received %d messages, want 1", len(got))
	}
	r := got[0]
	if r.DecodeErr != nil || r.Decoded.CallID != callID || string(r.Decoded.Body) != body {
		t.Fatalf("received Call-ID %q body %q (%v), want %q %q", r.Decoded.CallID, r.Decoded.Body, r.DecodeErr, callID, body)
	}
	if r.Decoded.PAssertedIdentity != "<sip:user1@"+domain+">" {
		t.Errorf("P-Asserted-Identity %q, want the sender's", r.Decoded.PAssertedIdentity)
	}
	if !bytes.HasPrefix(r.Body, []byte("MESSAGE sip:user2@"+domain+" SIP/2.0\r\n")) {
		t.Errorf("stored request line: %q", bytes.SplitN(r.Body, []byte("\r\n"), 2)[0])
	}
	if n := bytes.Count(r.Body, []byte("\r\nVia: ")); n != 1 {
		t.Errorf("stored MESSAGE has %d Via headers, want the sender's only:\n%s", n, r.Body)
	}
	if !bytes.Contains(r.Body, []byte("\r\nMax-Forwards: 69\r\n")) {
		t.Errorf("stored MESSAGE was not relayed by Kamailio (Max-Forwards):\n%s", r.Body)
	}
	if !bytes.Contains(r.Body, []byte("\r\nDate: ")) {
		t.Errorf("stored MESSAGE has no Date:\n%s", r.Body)
	}
}

func sendWithID(t *testing.T, c *imclient.Client, user, callID, body string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cid := sip.CallIDHeader(callID)
	res, err := c.SendMessage(ctx, "sip:"+user+"@"+domain, "text/plain", []byte(body),
		&cid, sip.NewHeader("P-Asserted-Identity", "<sip:user1@"+domain+">"))
	if err != nil {
		t.Fatalf("MESSAGE to %s: %v", user, err)
	}
	return res.StatusCode
}

// TestKamailioStoreViaSIP runs the cfg with STORE_VIA_SIP: a MESSAGE to an
// offline user is relayed to deferpush's SIP ingress, answered 202,
// stored, and pushed at registration with its Call-ID and body; a full
// mailbox gives the sender the policy's reply; and the failure_route case
// (a registered contact that never answers) is stored the same way.
func TestKamailioStoreViaSIP(t *testing.T) {
	t.Run("offline", func(t *testing.T) {
		s := startKamailioStack(t, stackOptions{storeViaSIP: true, policy: func(p *plugin.Policy) {
			p.MaxMailbox = 1
			p.FullMailboxReply = 486
		}})
		user1 := s.client(t, "user1", imclient.Config{})
		if code := sendWithID(t, user1, "user2", "via-sip-1@user1", "stored over SIP"); code != 202 {
			t.Fatalf("MESSAGE to offline user2: %d, want 202", code)
		}
		s.waitPending(t, "user2", 1)
		if code := sendWithID(t, user1, "user2", "via-sip-2@user1", "one too many"); code != 486 {
			t.Errorf("MESSAGE to a full mailbox: %d, want 486 (the policy's full_mailbox_reply)", code)
		}
		if n := s.counts(t, "user2"); n.Pending != 1 {
			t.Errorf("stored %+v, want the first message only", n)
		}

		user2 := s.client(t, "user2", imclient.Config{})
		s.register(t, user2)
		waitClient(t, user2, "BYE", func(st imclient.Stats) bool { return st.Byes == 1 })
		storedVia(t, user2.Received(), "via-sip-1@user1", "stored over SIP")
		if n := s.counts(t, "user2"); n != (plugin.Counts{}) {
			t.Errorf("user2's mailbox after the push: %+v, want empty", n)
		}
	})
	t.Run("idle connection closed", func(t *testing.T) {
		// deferpush closes Kamailio's connection after sip.idle_timeout;
		// Kamailio opens a new one for the next MESSAGE.
		s := startKamailioStack(t, stackOptions{storeViaSIP: true, dpEnv: []string{"DEFERPUSH_SIP_IDLE_TIMEOUT=1s"}})
		user1 := s.client(t, "user1", imclient.Config{})
		if code := sendWithID(t, user1, "user2", "via-sip-idle-1@user1", "before the idle close"); code != 202 {
			t.Fatalf("first MESSAGE: %d, want 202", code)
		}
		waitFor(t, 10*time.Second, "deferpush closing the idle connection", func() bool {
			return strings.Contains(s.dp.Log(), "idle connection closed")
		})
		if code := sendWithID(t, user1, "user2", "via-sip-idle-2@user1", "after the idle close"); code != 202 {
			t.Fatalf("MESSAGE after deferpush closed the idle connection: %d, want 202", code)
		}
		s.waitPending(t, "user2", 2)
	})
	t.Run("deferpush down", func(t *testing.T) {
		// Kamailio cannot reach deferpush's SIP ingress: the sender hears
		// 480, as through the hooks.
		s := startKamailioStack(t, stackOptions{storeViaSIP: true})
		user1 := s.client(t, "user1", imclient.Config{})
		s.dp.Kill(t)
		if code := sendWithID(t, user1, "user2", "via-sip-down@user1", "nobody to store it"); code != 480 {
			t.Fatalf("MESSAGE with deferpush down: %d, want 480", code)
		}
	})
	t.Run("failure_route", func(t *testing.T) {
		s := startKamailioStack(t, stackOptions{storeViaSIP: true, messageTimeout: 1000})
		silent, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer silent.Close()
		go func() {
			for {
				c, err := silent.Accept()
				if err != nil {
					return
				}
				defer c.Close()
			}
		}()
		rawRegister(t, s.proxyAddr, "user2", "sip:user2@"+silent.Addr().String()+";transport=tcp", 300)
		user1 := s.client(t, "user1", imclient.Config{})
		if code := sendWithID(t, user1, "user2", "via-sip-fr@user1", "are you there?"); code != 202 {
			t.Fatalf("MESSAGE to a silent registered contact: %d, want 202 from the failure route", code)
		}
		s.waitPending(t, "user2", 1)
		user2 := s.client(t, "user2", imclient.Config{})
		s.register(t, user2)
		waitClient(t, user2, "BYE", func(st imclient.Stats) bool { return st.Byes == 1 })
		storedVia(t, user2.Received(), "via-sip-fr@user1", "are you there?")
	})
}
