package test

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/deferpush/deferpush/adapters/imclient"
	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/plugin/encap"
	"github.com/deferpush/deferpush/test/harness"
)

// sippStoreN sends n MESSAGEs to user through the proxy with SIPp, one at
// a time (so they are stored in order), with the Call-IDs
// <prefix>-1@1.2.3.4 .. <prefix>-n@1.2.3.4, and fails unless each is
// answered 202.
func sippStoreN(t *testing.T, s *dpStack, user, prefix string, n int) []string {
	t.Helper()
	res := harness.RunSIPp(t, harness.SIPpConfig{
		Scenario: "testdata/sipp-deferred-message.xml",
		Remote:   s.proxyAddr,
		Args:     []string{"-t", "t1", "-m", strconv.Itoa(n), "-l", "1", "-s", user, "-cid_str", prefix + "-%u@1.2.3.4"},
		Timeout:  20 * time.Second,
	})
	if res.Err != nil {
		t.Fatalf("SIPp MESSAGEs to offline %s: %v", user, res.Err)
	}
	var ids []string
	for i := 1; i <= n; i++ {
		ids = append(ids, fmt.Sprintf("%s-%d@1.2.3.4", prefix, i))
	}
	return ids
}

// sippRegister registers user through the proxy with SIPp, its Contact the
// SIPp UAS on uasPort.
func sippRegister(t *testing.T, s *dpStack, user string, uasPort int) {
	t.Helper()
	users := filepath.Join(t.TempDir(), "users.csv")
	if err := os.WriteFile(users, []byte("SEQUENTIAL\n"+user+";"+domain+";\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	res := harness.RunSIPp(t, harness.SIPpConfig{
		Scenario: "testdata/bench/register-uac.xml",
		Remote:   s.proxyAddr,
		Args:     []string{"-inf", users, "-m", "1", "-key", "uas_port", strconv.Itoa(uasPort)},
		Timeout:  20 * time.Second,
	})
	if res.Err != nil {
		t.Fatalf("SIPp REGISTER of %s: %v", user, res.Err)
	}
}

// postMessage stores raw for user through deferpush's message hook, as
// the proxy's script does (kamailio.cfg's and opensips.cfg's
// STORE_MESSAGE), and fails unless it is stored.
func postMessage(t *testing.T, s *dpStack, user, raw string) {
	t.Helper()
	postMessageTo(t, s.dp, s.token, s.proxy, user, raw)
}

// postMessageTo is postMessage to the hooks of dp, as proxy's script.
func postMessageTo(t *testing.T, dp *deferpushProc, token, proxy, user, raw string) {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"raw": raw, "aor": "sip:" + user + "@" + domain, "source": "127.0.0.1:5060"})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+dp.HooksAddr+"/hooks/"+strings.ToLower(proxy)+"/message", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Deferpush-Token", token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("message hook: %v", err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 || !bytes.Contains(b, []byte(`"stored"`)) {
		t.Fatalf("message hook: %d %s", res.StatusCode, b)
	}
}

// pagerLog is what the SIPp pager-only client logged: its INVITEs, and
// the Call-IDs of its MESSAGEs in arrival order, with their From tags and
// CSeq numbers.
type pagerLog struct {
	invites  int
	callIDs  []string
	fromTags []string
	cseqs    []string
}

func readPagerLog(path string) pagerLog {
	var l pagerLog
	for _, line := range readLog(path) {
		switch {
		case line.kind == "INVITE":
			l.invites++
		case line.kind == "MESSAGE" && len(line.args) >= 4:
			l.callIDs = append(l.callIDs, line.args[0])
			l.fromTags = append(l.fromTags, line.args[1])
			l.cseqs = append(l.cseqs, line.args[2])
		}
	}
	return l
}

// flowPagerOnlyClient: a client without MSRP (a SIPp UAS that
// answers INVITE 488 and MESSAGE 200), through the proxy with its shipped
// script, gets every stored message once, in order, as SIP MESSAGEs with
// their Call-IDs, From tags and CSeqs intact and a Date; deferpush
// remembers the refusal, so the next push to it sends no INVITE.
func flowPagerOnlyClient(t *testing.T, start startStack) {
	s := start(t, stackOptions{})
	first := sippStoreN(t, s, "user2", "pager", 3)
	s.waitPending(t, "user2", 3)

	log := filepath.Join(t.TempDir(), "uas.log")
	_, uasPort := harness.StartSIPp(t, harness.SIPpConfig{
		Scenario: "testdata/sipp-pager-uas.xml",
		Args:     []string{"-trace_logs", "-log_file", log},
		Timeout:  2 * time.Minute,
	})
	sippRegister(t, s, "user2", uasPort)
	waitFor(t, 15*time.Second, "three MESSAGEs at the client", func() bool { return len(readPagerLog(log).callIDs) >= 3 })
	waitFor(t, 10*time.Second, "user2's mailbox empty", func() bool { return s.counts(t, "user2") == plugin.Counts{} })
	got := readPagerLog(log)
	if got.invites != 1 {
		t.Errorf("the client got %d INVITEs, want 1 (refused 488)", got.invites)
	}
	if diff := cmp.Diff(first, got.callIDs); diff != "" {
		t.Errorf("MESSAGEs received (-want +got):\n%s", diff)
	}
	for i, tag := range got.fromTags[:min(3, len(got.fromTags))] {
		// sipp-deferred-message.xml's From tag is <pid>SIPpTag<call number>.
		if !strings.HasSuffix(tag, "SIPpTag"+strconv.Itoa(i+1)) || got.cseqs[i] != "1" {
			t.Errorf("MESSAGE %d: From tag %q, CSeq %s; want the sender's tag and CSeq 1", i+1, tag, got.cseqs[i])
		}
	}
	reg, err := s.st.Contact(context.Background(), plugin.MustParseAOR("sip:user2@"+domain))
	if err != nil || !reg.PagerOnly {
		t.Errorf("stored registration %+v, %v; want it marked pager-only", reg, err)
	}

	// The next push: straight to pager mode. user2 is registered, so a
	// MESSAGE now would reach it directly; these two are stored the way
	// the proxy stores one the client did not answer in time (the
	// message hook from failure_route), and its REGISTER refresh pushes.
	var second []string
	for i := 1; i <= 2; i++ {
		id := fmt.Sprintf("again-%d@1.2.3.4", i)
		postMessage(t, s, "user2", fmt.Sprintf("MESSAGE sip:user2@%[1]s SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bKagain%[2]d\r\n"+
			"From: <sip:user1@%[1]s>;tag=again%[2]d\r\nTo: <sip:user2@%[1]s>\r\nCall-ID: %[3]s\r\nCSeq: 1 MESSAGE\r\n"+
			"Content-Type: text/plain\r\nContent-Length: 18\r\n\r\nWatson, come here.", domain, i, id))
		second = append(second, id)
	}
	s.waitPending(t, "user2", 2)
	sippRegister(t, s, "user2", uasPort)
	waitFor(t, 15*time.Second, "two more MESSAGEs", func() bool { return len(readPagerLog(log).callIDs) >= 5 })
	got = readPagerLog(log)
	if diff := cmp.Diff(append(first, second...), got.callIDs); diff != "" {
		t.Errorf("MESSAGEs received over both pushes (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"again1", "again2"}, got.fromTags[3:]); diff != "" {
		t.Errorf("From tags of the second push (-want +got):\n%s", diff)
	}
	time.Sleep(500 * time.Millisecond) // a stray INVITE would show by now
	if got := readPagerLog(log); got.invites != 1 {
		t.Errorf("the second push sent an INVITE (%d in all)", got.invites)
	}
	waitFor(t, 10*time.Second, "user2's mailbox empty", func() bool { return s.counts(t, "user2") == plugin.Counts{} })
}

// flowPagerBelow: with pager_below 1, a one-message mailbox goes
// by SIP MESSAGE even to a client that takes MSRP; two messages go in an
// MSRP session.
func flowPagerBelow(t *testing.T, start startStack) {
	s := start(t, stackOptions{policy: func(p *plugin.Policy) { p.PagerBelow = 1 }})
	user1 := s.client(t, "user1", imclient.Config{})
	if code := sendMessage(t, user1, "user2", []byte("just one")); code != 202 {
		t.Fatalf("MESSAGE: %d, want 202", code)
	}
	s.waitPending(t, "user2", 1)
	user2 := s.client(t, "user2", imclient.Config{})
	s.register(t, user2)
	waitClient(t, user2, "the message", func(st imclient.Stats) bool { return st.Received == 1 })
	waitFor(t, 10*time.Second, "user2's mailbox empty", func() bool { return s.counts(t, "user2") == plugin.Counts{} })
	r := user2.Received()[0]
	if !r.Pager || r.DecodeErr != nil || string(r.Decoded.Body) != "just one" || r.Decoded.Date.IsZero() ||
		!strings.Contains(r.Decoded.From, "sip:user1@"+domain) {
		t.Errorf("received %+v (%v); want the MESSAGE from user1 by pager mode, dated", r.Decoded, r.DecodeErr)
	}
	if st := user2.Stats(); st.Invites != 0 {
		t.Errorf("user2 got %d INVITEs, want none", st.Invites)
	}

	for _, b := range []string{"one of two", "two of two"} {
		if code := sendMessage(t, user1, "user3", []byte(b)); code != 202 {
			t.Fatalf("MESSAGE: %d, want 202", code)
		}
	}
	s.waitPending(t, "user3", 2)
	user3 := s.client(t, "user3", imclient.Config{})
	s.register(t, user3)
	st := waitClient(t, user3, "the BYE", func(st imclient.Stats) bool { return st.Byes == 1 })
	if st.Invites != 1 || st.Received != 2 || slices.ContainsFunc(user3.Received(), func(r imclient.Received) bool { return r.Pager }) {
		t.Errorf("user3 saw %+v; want one MSRP session of two messages", st)
	}
}

// pagedAfterInvite stores two messages for user2, registers user2 as a
// client of cfg (one whose answer carries no message), and checks that
// it got one INVITE, ACKed and ended with BYE, and the two messages by
// pager mode, in order. The ACK may come after the BYE (see flowSeed).
func pagedAfterInvite(t *testing.T, s *dpStack, cfg imclient.Config) {
	t.Helper()
	user1 := s.client(t, "user1", imclient.Config{})
	for _, b := range []string{"first", "second"} {
		if code := sendMessage(t, user1, "user2", []byte(b)); code != 202 {
			t.Fatalf("MESSAGE: %d, want 202", code)
		}
	}
	s.waitPending(t, "user2", 2)
	user2 := s.client(t, "user2", cfg)
	s.register(t, user2)
	st := waitClient(t, user2, "two messages, the BYE and the ACK", func(st imclient.Stats) bool {
		return st.Received == 2 && st.Byes == 1 && st.Acks >= 1
	})
	if st.Invites != 1 || st.Acks != 1 {
		t.Errorf("user2 saw %+v; want one INVITE, ACKed and ended", st)
	}
	var bodies []string
	for _, r := range user2.Received() {
		if !r.Pager {
			t.Errorf("a message came by MSRP: %+v", r)
		}
		bodies = append(bodies, string(r.Decoded.Body))
	}
	if diff := cmp.Diff([]string{"first", "second"}, bodies); diff != "" {
		t.Errorf("received (-want +got):\n%s", diff)
	}
}

// flowPagerNoMSRPAnswer: a client that answers the INVITE 200
// but refuses the MSRP stream (port 0) gets the BYE, then its messages
// by SIP MESSAGE.
func flowPagerNoMSRPAnswer(t *testing.T, start startStack) {
	s := start(t, stackOptions{})
	pagedAfterInvite(t, s, imclient.Config{NoMSRPAnswer: true})
}

// flowPagerNothingFits: a client that answers with MSRP but takes none of
// the encapsulations (a simple client's a=accept-types:text/plain) gets
// its messages by pager mode in the same push — its INVITE ACKed and
// ended with BYE, as for an answer without MSRP — where it got an empty
// session at every registration (INTEROP finding 5); the answer is
// remembered with its registration (pager_only).
func flowPagerNothingFits(t *testing.T, start startStack) {
	s := start(t, stackOptions{})
	pagedAfterInvite(t, s, imclient.Config{AcceptTypes: []string{"text/plain"}})
	waitFor(t, 10*time.Second, "user2's mailbox empty", func() bool { return s.counts(t, "user2") == plugin.Counts{} })
	reg, err := s.st.Contact(context.Background(), plugin.MustParseAOR("sip:user2@"+domain))
	if err != nil || !reg.PagerOnly {
		t.Errorf("stored registration %+v, %v; want it marked pager-only", reg, err)
	}
}

// imdnCPIM is a CPIM body (RFC 3862) asking for processing and
// negative-delivery notifications (RFC 5438).
func imdnCPIM(from, to, id, text string) []byte {
	return []byte(strings.ReplaceAll("From: <"+from+">\nTo: <"+to+">\nNS: imdn <urn:ietf:params:imdn>\nimdn.Message-ID: "+id+
		"\nDateTime: "+time.Now().UTC().Format(time.RFC3339)+"\nimdn.Disposition-Notification: positive-delivery, negative-delivery, processing\n\n"+
		"Content-Type: text/plain\n\n"+text, "\n", "\r\n"))
}

// imdnDocument is a message/imdn+xml document (RFC 5438 §8), as far as
// the tests read it.
type imdnDocument struct {
	XMLName    xml.Name    `xml:"urn:ietf:params:xml:ns:imdn imdn"`
	MessageID  string      `xml:"message-id"`
	DateTime   string      `xml:"datetime"`
	Processing *imdnStatus `xml:"processing-notification>status"`
	Delivery   *imdnStatus `xml:"delivery-notification>status"`
}

type imdnStatus struct {
	Stored    *struct{} `xml:"stored"`
	Failed    *struct{} `xml:"failed"`
	Delivered *struct{} `xml:"delivered"`
}

// notification is an IMDN a client received, read down to its status.
type notification struct {
	messageID, status string
	asks              bool // it asks for notifications itself
}

func readNotification(t *testing.T, r imclient.Received) notification {
	t.Helper()
	if r.DecodeErr != nil || r.Decoded.ContentType != encap.TypeCPIM {
		t.Fatalf("not a CPIM message: %s (%v)", r.Decoded.ContentType, r.DecodeErr)
	}
	d, err := encap.Decode(encap.TypeCPIM, r.Decoded.Body)
	if err != nil || d.ContentType != encap.TypeIMDN {
		t.Fatalf("not an IMDN inside CPIM: %q (%v)\n%s", d.ContentType, err, r.Decoded.Body)
	}
	var doc imdnDocument
	if err := xml.Unmarshal(d.Body, &doc); err != nil {
		t.Fatalf("message/imdn+xml does not parse: %v\n%s", err, d.Body)
	}
	n := notification{messageID: doc.MessageID, asks: strings.Contains(string(r.Decoded.Body), "Disposition-Notification")}
	switch {
	case doc.Processing != nil && doc.Processing.Stored != nil:
		n.status = "stored"
	case doc.Delivery != nil && doc.Delivery.Failed != nil:
		n.status = "failed"
	case doc.Delivery != nil && doc.Delivery.Delivered != nil:
		n.status = "delivered"
	}
	return n
}

// flowIMDN: a sender who asks for processing and negative-delivery
// notifications hears "stored" when its message is stored for an offline
// user, and "failed" when the message expires undelivered, each a valid
// message/imdn+xml in CPIM that asks for none itself. The "failed" one
// finds the sender offline: the proxy stores it in deferpush like any
// message, and it is pushed when the sender registers again.
func flowIMDN(t *testing.T, start startStack) {
	s := start(t, stackOptions{policy: func(p *plugin.Policy) { p.MessageTTL = plugin.Duration(2 * time.Second) }})
	alice := s.client(t, "alice", imclient.Config{})
	s.register(t, alice)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := alice.SendMessage(ctx, "sip:bob@"+domain, encap.TypeCPIM,
		imdnCPIM("sip:alice@"+domain, "sip:bob@"+domain, "imdn-msg-1", "are you there?"))
	if err != nil || res.StatusCode != 202 {
		t.Fatalf("MESSAGE to offline bob: %v %v", res, err)
	}
	waitClient(t, alice, "the stored notification", func(st imclient.Stats) bool { return st.Received == 1 })
	n := readNotification(t, alice.Received()[0])
	if n != (notification{messageID: "imdn-msg-1", status: "stored"}) {
		t.Errorf("first notification %+v; want stored for imdn-msg-1, asking for none", n)
	}
	if r := alice.Received()[0]; !strings.Contains(r.Decoded.From, "sip:bob@"+domain) {
		t.Errorf("notification from %q, want bob's mailbox", r.Decoded.From)
	}

	// alice goes offline; bob's message expires (2 s, then a sweep).
	if code, err := alice.Register(ctx, 0); err != nil || code != 200 {
		t.Fatalf("unREGISTER: %d %v", code, err)
	}
	waitFor(t, 15*time.Second, "the failed notification stored for alice", func() bool {
		return s.counts(t, "alice").Pending == 1 && s.counts(t, "bob") == plugin.Counts{}
	})
	s.register(t, alice)
	waitClient(t, alice, "the failed notification", func(st imclient.Stats) bool { return st.Received == 2 })
	n = readNotification(t, alice.Received()[1])
	if n != (notification{messageID: "imdn-msg-1", status: "failed"}) {
		t.Errorf("second notification %+v; want failed for imdn-msg-1, asking for none", n)
	}
	// Nothing more: no notification about a notification.
	time.Sleep(time.Second)
	if st := alice.Stats(); st.Received != 2 {
		t.Errorf("alice received %d messages, want 2", st.Received)
	}
	waitFor(t, 10*time.Second, "alice's mailbox empty", func() bool { return s.counts(t, "alice") == plugin.Counts{} })
}

// flowClientDelivered: the "delivered" notification a recipient sends
// back inside the push session (as an RCS client does) reaches the
// sender: deferpush forwards it as a SIP MESSAGE through the proxy, from
// the recipient, the client's CPIM body unchanged.
func flowClientDelivered(t *testing.T, start startStack) {
	s := start(t, stackOptions{})
	alice := s.client(t, "alice", imclient.Config{})
	s.register(t, alice)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := alice.SendMessage(ctx, "sip:bob@"+domain, encap.TypeCPIM,
		imdnCPIM("sip:alice@"+domain, "sip:bob@"+domain, "imdn-msg-2", "hello bob"))
	if err != nil || res.StatusCode != 202 {
		t.Fatalf("MESSAGE to offline bob: %v %v", res, err)
	}
	waitClient(t, alice, "the stored notification", func(st imclient.Stats) bool { return st.Received == 1 })
	bob := s.client(t, "bob", imclient.Config{Delivered: true})
	s.register(t, bob)
	waitClient(t, bob, "the message", func(st imclient.Stats) bool { return st.Received == 1 })
	waitClient(t, alice, "the delivered notification", func(st imclient.Stats) bool { return st.Received == 2 })
	r := alice.Received()[1]
	if n := readNotification(t, r); n != (notification{messageID: "imdn-msg-2", status: "delivered"}) {
		t.Errorf("second notification %+v; want delivered for imdn-msg-2, asking for none", n)
	}
	if !strings.Contains(r.Decoded.From, "sip:bob@"+domain) {
		t.Errorf("delivered notification from %q, want bob", r.Decoded.From)
	}
	waitFor(t, 10*time.Second, "both mailboxes empty", func() bool {
		return s.counts(t, "alice") == plugin.Counts{} && s.counts(t, "bob") == plugin.Counts{}
	})
}

// flowPromptRetry: a client whose MSRP connection broke mid-push
// and that registers again gets the rest within 2 s, although
// retry_backoff is a minute; one that answered 486 keeps its backoff.
func flowPromptRetry(t *testing.T, start startStack) {
	s := start(t, stackOptions{})
	user1 := s.client(t, "user1", imclient.Config{})
	for i := range 6 {
		if code := sendMessage(t, user1, "user2", fmt.Appendf(nil, "message %d", i+1)); code != 202 {
			t.Fatalf("MESSAGE: %d, want 202", code)
		}
	}
	s.waitPending(t, "user2", 6)
	user2 := s.client(t, "user2", imclient.Config{DropAt: 3})
	s.register(t, user2)
	waitClient(t, user2, "the third message", func(st imclient.Stats) bool { return st.Received >= 3 })
	waitFor(t, 10*time.Second, "the broken push over", func() bool {
		c := s.counts(t, "user2")
		return c.InFlight == 0 && c.Pending == 4
	})
	registered := time.Now()
	s.register(t, user2)
	waitClient(t, user2, "the rest", func(st imclient.Stats) bool { return st.Received >= 7 })
	if d := time.Since(registered); d > 2*time.Second {
		t.Errorf("the rest came %v after the REGISTER; want within 2 s", d.Round(time.Millisecond))
	}
	var bodies []string
	for _, r := range user2.Received()[3:] {
		bodies = append(bodies, string(r.Decoded.Body))
	}
	// The third, charged an attempt, went behind the others.
	if diff := cmp.Diff([]string{"message 4", "message 5", "message 6", "message 3"}, bodies); diff != "" {
		t.Errorf("after the REGISTER (-want +got):\n%s", diff)
	}

	// A refusal keeps the backoff: 486, REGISTER again, nothing for 2 s.
	if code := sendMessage(t, user1, "user3", []byte("busy?")); code != 202 {
		t.Fatalf("MESSAGE: %d, want 202", code)
	}
	s.waitPending(t, "user3", 1)
	user3 := s.client(t, "user3", imclient.Config{InviteStatus: 486})
	s.register(t, user3)
	waitClient(t, user3, "the INVITE", func(st imclient.Stats) bool { return st.Invites == 1 })
	waitFor(t, 10*time.Second, "the refused push over", func() bool {
		c := s.counts(t, "user3")
		return c.InFlight == 0 && c.Pending == 1
	})
	s.register(t, user3)
	time.Sleep(2 * time.Second)
	if st := user3.Stats(); st.Invites != 1 {
		t.Errorf("user3 got %d INVITEs; want 1 (486 keeps the backoff)", st.Invites)
	}
}

// Pager mode, notifications and the prompt push through each proxy with
// its shipped script.

func TestKamailioPagerOnlyClient(t *testing.T)   { flowPagerOnlyClient(t, kamailioStarter) }
func TestKamailioPagerBelow(t *testing.T)        { flowPagerBelow(t, kamailioStarter) }
func TestKamailioPagerNoMSRPAnswer(t *testing.T) { flowPagerNoMSRPAnswer(t, kamailioStarter) }
func TestKamailioPagerNothingFits(t *testing.T)  { flowPagerNothingFits(t, kamailioStarter) }
func TestKamailioIMDN(t *testing.T)              { flowIMDN(t, kamailioStarter) }
func TestKamailioClientDelivered(t *testing.T)   { flowClientDelivered(t, kamailioStarter) }
func TestKamailioPromptRetry(t *testing.T)       { flowPromptRetry(t, kamailioStarter) }

func TestOpenSIPSPagerOnlyClient(t *testing.T)   { flowPagerOnlyClient(t, opensipsStarter) }
func TestOpenSIPSPagerBelow(t *testing.T)        { flowPagerBelow(t, opensipsStarter) }
func TestOpenSIPSPagerNoMSRPAnswer(t *testing.T) { flowPagerNoMSRPAnswer(t, opensipsStarter) }
func TestOpenSIPSPagerNothingFits(t *testing.T)  { flowPagerNothingFits(t, opensipsStarter) }
func TestOpenSIPSIMDN(t *testing.T)              { flowIMDN(t, opensipsStarter) }
func TestOpenSIPSClientDelivered(t *testing.T)   { flowClientDelivered(t, opensipsStarter) }
func TestOpenSIPSPromptRetry(t *testing.T)       { flowPromptRetry(t, opensipsStarter) }
