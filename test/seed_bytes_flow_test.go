package test

import (
	"bufio"
	"bytes"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/deferpush/deferpush/adapters/imclient"
	"github.com/deferpush/deferpush/plugin/encap"
)

// TestKamailioSeedMessageBytes and TestOpenSIPSSeedMessageBytes: the
// seed's first example, its SIP MESSAGE (flowSeedMessageBytes), byte for
// byte through each proxy's message hook and deferpush's push.
func TestKamailioSeedMessageBytes(t *testing.T) {
	flowSeedMessageBytes(t, kamailioStarter(t, stackOptions{}))
}

func TestOpenSIPSSeedMessageBytes(t *testing.T) {
	flowSeedMessageBytes(t, opensipsStarter(t, stackOptions{}))
}

// flowSeedMessageBytes: the seed's first example, its SIP MESSAGE
// (plugin/encap/testdata/seed1-message-sip.golden, addressed to this
// deployment's domain and sent from this test's socket), goes through the
// proxy's message hook to an offline user2 and comes out of deferpush's
// push as message/sip holding the bytes the sender sent, with the one Date
// header deferpush adds after the Call-ID (as the seed's own pushed
// example has it) and one difference the proxy makes: its maxfwd module
// decrements Max-Forwards in the received buffer ($mb), which the hook
// posts, before the script looks at the request.
func flowSeedMessageBytes(t *testing.T, s *dpStack) {
	seed := readSeed(t, "seed1-message-sip.golden")
	flowMessageBytes(t, s, func(local string) []byte {
		sent := bytes.ReplaceAll(seed.received[0], []byte("user1pc.imserver.com"), []byte(local))
		return bytes.ReplaceAll(sent, []byte("imserver.com"), []byte(domain))
	})
}

// flowMessageBytes is flowSeedMessageBytes for the MESSAGE build returns
// given the sender's host:port: a MESSAGE to user2 at this deployment's
// domain, with Max-Forwards: 70 and no Date.
func flowMessageBytes(t *testing.T, s *dpStack, build func(local string) []byte) {
	conn, err := net.Dial("tcp", s.proxyAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	sent := build(conn.LocalAddr().String())
	before := time.Now().Add(-time.Second)
	if _, err := conn.Write(sent); err != nil {
		t.Fatal(err)
	}
	status, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || !strings.HasPrefix(status, "SIP/2.0 202 ") {
		t.Fatalf("the MESSAGE through %s: %q %v, want 202", s.proxy, status, err)
	}
	s.waitPending(t, "user2", 1)

	user2 := s.client(t, "user2", imclient.Config{})
	s.register(t, user2)
	waitClient(t, user2, "BYE", func(st imclient.Stats) bool { return st.Byes == 1 })
	got := user2.Received()
	if len(got) != 1 {
		t.Fatalf("user2 received %d messages, want 1", len(got))
	}
	r := got[0]
	if r.ContentType != encap.TypeSIP || r.DecodeErr != nil {
		t.Fatalf("pushed %s (%v), want message/sip", r.ContentType, r.DecodeErr)
	}
	if d := r.Decoded.Date; d.Before(before.Truncate(time.Second)) || d.After(time.Now()) {
		t.Errorf("Date %v, want the time deferpush stored it", d)
	}
	asSeen := bytes.Replace(sent, []byte("\r\nMax-Forwards: 70\r\n"), []byte("\r\nMax-Forwards: 69\r\n"), 1)
	if bytes.Equal(asSeen, sent) {
		t.Fatal("the MESSAGE has no Max-Forwards: 70")
	}
	want, err := encap.AddDate(asSeen, r.Decoded.Date)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(r.Body, want) {
		t.Errorf("pushed message/sip differs from the MESSAGE sent (Max-Forwards decremented, a Date added):\n--- got\n%s\n--- want\n%s", r.Body, want)
	}
	if r.Answered != 200 {
		t.Errorf("answered %d, want 200", r.Answered)
	}
}
