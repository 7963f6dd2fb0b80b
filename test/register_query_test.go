package test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/deferpush/deferpush/adapters/imclient"
	"github.com/deferpush/deferpush/plugin"
)

// registerQuery sends a REGISTER without Contact for user (RFC 3261
// 10.2.3: a query of the bindings, which changes none) over UDP to
// addr and returns the reply's status line.
func registerQuery(t *testing.T, addr, user string) string {
	t.Helper()
	return registerRaw(t, addr, user)
}

// registerRaw sends a REGISTER for user with the extra header lines
// over UDP to addr and returns the reply's status line.
func registerRaw(t *testing.T, addr, user string, extra ...string) string {
	t.Helper()
	conn, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	local := conn.LocalAddr().String()
	tag := fmt.Sprint(time.Now().UnixNano())
	lines := []string{
		"REGISTER sip:" + domain + " SIP/2.0",
		"Via: SIP/2.0/UDP " + local + ";branch=z9hG4bKq" + tag + ";rport",
		"Max-Forwards: 70",
		"From: <sip:" + user + "@" + domain + ">;tag=" + tag,
		"To: <sip:" + user + "@" + domain + ">",
		"Call-ID: query-" + tag,
		"CSeq: 1 REGISTER"}
	lines = append(lines, extra...)
	req := strings.Join(append(lines, "Content-Length: 0", "", ""), "\r\n")
	if _, err := conn.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("no answer to the REGISTER: %v", err)
	}
	line, _, _ := strings.Cut(string(buf[:n]), "\r\n")
	return line
}

// startHeldUser2 starts a stack in which user2 has one message stored
// and pushes held: the message stays, and every registration of user2 is
// recorded (something waits), none pushed.
func startHeldUser2(t *testing.T, start startStack) (*dpStack, plugin.AOR) {
	t.Helper()
	s := start(t, stackOptions{})
	aor := plugin.MustParseAOR("sip:user2@" + domain)
	if err := s.st.SetUserSettings(context.Background(), aor, plugin.UserSettings{Push: plugin.PushHold}); err != nil {
		t.Fatal(err)
	}
	user1 := s.client(t, "user1", imclient.Config{})
	if code := sendMessage(t, user1, "user2", []byte("held")); code != 202 {
		t.Fatalf("MESSAGE: %d, want 202", code)
	}
	s.waitPending(t, "user2", 1)
	return s, aor
}

// flowRegisterQuery: a REGISTER without Contact (a query of the
// bindings) leaves the registration deferpush recorded as it was: it is
// neither an unregistration nor a registration.
func flowRegisterQuery(t *testing.T, start startStack) {
	s, aor := startHeldUser2(t, start)
	ctx := context.Background()
	user2 := s.client(t, "user2", imclient.Config{})
	s.register(t, user2)
	var before plugin.Registration
	waitFor(t, 10*time.Second, "user2's registration recorded", func() bool {
		r, err := s.st.Contact(ctx, aor)
		before = r
		return err == nil
	})
	if before.Instance != "" {
		t.Errorf("instance recorded as %q for a Contact without +sip.instance", before.Instance)
	}
	if line := registerQuery(t, s.proxyAddr, "user2"); !strings.HasPrefix(line, "SIP/2.0 200") {
		t.Fatalf("query REGISTER answered %q, want 200", line)
	}
	time.Sleep(time.Second)
	after, err := s.st.Contact(ctx, aor)
	if err != nil || after.Contact != before.Contact || !after.Expires.Equal(before.Expires) {
		t.Errorf("after the query: %+v, %v; want the registration unchanged (%+v)", after, err, before)
	}
}

func TestKamailioRegisterQuery(t *testing.T)       { flowRegisterQuery(t, kamailioStarter) }
func TestKamailioDirectRegisterQuery(t *testing.T) { flowRegisterQuery(t, kamailioDirectStarter) }
func TestOpenSIPSRegisterQuery(t *testing.T)       { flowRegisterQuery(t, opensipsStarter) }
func TestOpenSIPSDirectRegisterQuery(t *testing.T) { flowRegisterQuery(t, opensipsDirectStarter) }

// flowRegisterExpiresParam: a Contact's expires parameter overrides the
// Expires header (RFC 3261 10.2.1.1): "Expires: 0" with ";expires=600"
// registers the contact for 600 s, which deferpush records as such, not
// as an unregistration.
func flowRegisterExpiresParam(t *testing.T, start startStack) {
	s, aor := startHeldUser2(t, start)
	ctx := context.Background()
	contact := "sip:user2@127.0.0.1:5999;transport=udp"
	at := time.Now()
	if line := registerRaw(t, s.proxyAddr, "user2", "Contact: <"+contact+">;expires=600", "Expires: 0"); !strings.HasPrefix(line, "SIP/2.0 200") {
		t.Fatalf("REGISTER answered %q, want 200", line)
	}
	var got plugin.Registration
	waitFor(t, 10*time.Second, "user2's registration recorded", func() bool {
		r, err := s.st.Contact(ctx, aor)
		got = r
		return err == nil
	})
	if got.Contact != contact {
		t.Errorf("recorded contact %q, want %q", got.Contact, contact)
	}
	if d := got.Expires.Sub(at); d < 595*time.Second || d > 605*time.Second {
		t.Errorf("recorded expiry %v after the REGISTER, want 600 s (the Contact's parameter)", d)
	}
}

func TestKamailioRegisterExpiresParam(t *testing.T) { flowRegisterExpiresParam(t, kamailioStarter) }
func TestKamailioDirectRegisterExpiresParam(t *testing.T) {
	flowRegisterExpiresParam(t, kamailioDirectStarter)
}
func TestOpenSIPSRegisterExpiresParam(t *testing.T) { flowRegisterExpiresParam(t, opensipsStarter) }
func TestOpenSIPSDirectRegisterExpiresParam(t *testing.T) {
	flowRegisterExpiresParam(t, opensipsDirectStarter)
}
