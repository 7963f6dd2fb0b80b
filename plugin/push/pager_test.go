package push

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/google/go-cmp/cmp"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/plugin/msrp"
)

// pagerPeer is a SIP UAS on loopback TCP that answers MESSAGEs: status
// chooses the answer by Call-ID (0: 200; -1: never answer), and every
// request is kept as it came.
type pagerPeer struct {
	addr   string
	mu     sync.Mutex
	got    []*sip.Request
	status map[string]int
}

func startPagerPeer(t *testing.T, status map[string]int) *pagerPeer {
	t.Helper()
	ua, err := sipgo.NewUA()
	if err != nil {
		t.Fatal(err)
	}
	srv, err := sipgo.NewServer(ua)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &pagerPeer{addr: ln.Addr().String(), status: status}
	srv.OnMessage(func(req *sip.Request, tx sip.ServerTransaction) {
		p.mu.Lock()
		p.got = append(p.got, req.Clone())
		code := p.status[req.CallID().Value()]
		p.mu.Unlock()
		switch {
		case code < 0:
			return
		case code == 0:
			code = 200
		}
		_ = tx.Respond(sip.NewResponseFromRequest(req, code, "Test", nil))
	})
	go func() { _ = srv.ServeTCP(ln) }()
	t.Cleanup(func() { ln.Close(); srv.Close(); ua.Close() })
	return p
}

func (p *pagerPeer) requests() []*sip.Request {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*sip.Request(nil), p.got...)
}

// newTestPusher is a Pusher whose outbound proxy is proxy ("" none).
func newTestPusher(t *testing.T, proxy string) *Pusher {
	t.Helper()
	ua, err := sipgo.NewUA()
	if err != nil {
		t.Fatal(err)
	}
	cli, err := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	l, err := msrp.NewListener(msrp.ListenerConfig{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close(); cli.Close(); ua.Close() })
	p, err := New(Config{Client: cli, Contact: "sip:deferpush@127.0.0.1:5070;transport=tcp", MSRP: l, OutboundProxy: proxy})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestPagerDelivers: each message goes as the stored request re-sent to
// the contact: Route (the proxy, then the registration's Path), one new
// Via, the stored From (tag), To, Call-ID, Date, identity headers, CSeq
// number, Content-Type and body, nothing of the sender's hop. A refusal
// skips one message; an unreachable client (503) ends the session.
func TestPagerDelivers(t *testing.T) {
	peer := startPagerPeer(t, map[string]int{"call-2": 415, "call-4": 503})
	p := newTestPusher(t, "sip:"+peer.addr+";transport=tcp")
	msgs := stored(t, 5)
	// The first one the way a sender's proxy relayed it.
	msgs[0].Raw = []byte(strings.Replace(string(msgs[0].Raw), "From:",
		"Via: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bKsender\r\nMax-Forwards: 69\r\nP-Asserted-Identity: <sip:alice@example.com>\r\n"+
			"Proxy-Authorization: Digest username=\"alice\"\r\nCSeq: 77 MESSAGE\r\nFrom:", 1))
	msgs[0].Raw = []byte(strings.Replace(string(msgs[0].Raw), "CSeq: 1 MESSAGE\r\n", "", 1))
	contact := "sip:bob@127.0.0.1:5099;transport=tcp"
	pol := plugin.DefaultPolicy()
	pol.InviteTimeout = plugin.Duration(5 * time.Second)
	sess, err := p.Open(context.Background(), plugin.Target{AOR: plugin.MustParseAOR("sip:bob@example.com"), URI: contact, Pager: true, Policy: pol,
		Registration: plugin.Registration{Contact: contact, Path: []string{"<sip:edge.example.com;lr>"}}})
	if err != nil {
		t.Fatal(err)
	}
	var fates []string
	err = sess.Deliver(context.Background(), msgs, func(m *plugin.Message, err error) {
		var re *plugin.RejectedError
		switch {
		case errors.As(err, &re):
			fates = append(fates, m.CallID+" refused "+strconv.Itoa(re.Status))
		default:
			fates = append(fates, m.CallID+" "+fateOf(err))
		}
	})
	var se *plugin.SessionError
	if !errors.As(err, &se) || se.Status != 503 {
		t.Errorf("Deliver = %v; want the 503 that broke it", err)
	}
	if diff := cmp.Diff([]string{"call-1 confirmed", "call-2 refused 415", "call-3 confirmed", "call-4 failed", "call-5 not sent"}, fates); diff != "" {
		t.Errorf("fates (-want +got):\n%s", diff)
	}
	if err := sess.Close(context.Background()); err != nil {
		t.Errorf("Close: %v", err)
	}

	got := peer.requests()
	var ids []string
	for _, r := range got {
		ids = append(ids, r.CallID().Value())
	}
	if diff := cmp.Diff([]string{"call-1", "call-2", "call-3", "call-4"}, ids); diff != "" {
		t.Fatalf("MESSAGEs received (-want +got):\n%s", diff)
	}
	r := got[0]
	if r.Method != sip.MESSAGE || r.Recipient.String() != contact {
		t.Errorf("request line %s %s; want MESSAGE to the contact", r.Method, r.Recipient.String())
	}
	var routes []string
	for _, h := range r.GetHeaders("Route") {
		routes = append(routes, h.Value())
	}
	if diff := cmp.Diff([]string{"<sip:" + peer.addr + ";transport=tcp;lr>", "<sip:edge.example.com;lr>"}, routes); diff != "" {
		t.Errorf("Route (-want +got):\n%s", diff)
	}
	if vias := r.GetHeaders("Via"); len(vias) != 1 || strings.Contains(vias[0].Value(), "z9hG4bKsender") {
		t.Errorf("Via %v; want ours alone", vias)
	}
	for name, want := range map[string]string{
		"From": "<sip:alice@example.com>;tag=1", "To": "<sip:bob@example.com>", "Call-ID": "call-1",
		"CSeq": "77 MESSAGE", "Date": "Thu, 26 Nov 2026 12:00:00 GMT", "P-Asserted-Identity": "<sip:alice@example.com>",
		"Content-Type": "text/plain", "Max-Forwards": "70",
	} {
		if h := r.GetHeader(name); h == nil || h.Value() != want {
			t.Errorf("%s: %v, want %q", name, h, want)
		}
	}
	if h := r.GetHeader("Proxy-Authorization"); h != nil {
		t.Errorf("the sender's credentials went to the client: %v", h)
	}
	if string(r.Body()) != "hello" {
		t.Errorf("body %q", r.Body())
	}
}

// TestPagerNoAnswer: a client that never answers ends the session after
// the policy's invite_timeout, the rest not sent; the message it broke on
// is charged (its fate is an error) once the client confirmed a page of
// the session, and not when it was the first (TestPagerUnreachable).
func TestPagerNoAnswer(t *testing.T) {
	peer := startPagerPeer(t, map[string]int{"call-2": -1})
	p := newTestPusher(t, "sip:"+peer.addr+";transport=tcp")
	pol := plugin.DefaultPolicy()
	pol.InviteTimeout = plugin.Duration(300 * time.Millisecond)
	contact := "sip:bob@127.0.0.1:5099;transport=tcp"
	sess, err := p.Open(context.Background(), plugin.Target{URI: contact, Pager: true, Policy: pol, Registration: plugin.Registration{Contact: contact}})
	if err != nil {
		t.Fatal(err)
	}
	var fates []string
	start := time.Now()
	err = sess.Deliver(context.Background(), stored(t, 3), func(m *plugin.Message, err error) { fates = append(fates, fateOf(err)) })
	if err == nil || time.Since(start) > 3*time.Second {
		t.Errorf("Deliver = %v after %v; want an error after about 300 ms", err, time.Since(start))
	}
	if diff := cmp.Diff([]string{confirmed, failed, notSent}, fates); diff != "" {
		t.Errorf("fates (-want +got):\n%s", diff)
	}
}

// TestPagerUnreachable: the first page of a session failing as a path
// failure does (no answer, 408, 477, 480, 503) says the client cannot be
// reached now, as a failed INVITE does in MSRP mode: the session ends and
// no message is charged (PROBE7: a registered client whose connection was
// gone saw its messages dead-lettered after max_attempts).
func TestPagerUnreachable(t *testing.T) {
	for _, code := range []int{-1, 408, 477, 480, 503} {
		peer := startPagerPeer(t, map[string]int{"call-1": code})
		p := newTestPusher(t, "sip:"+peer.addr+";transport=tcp")
		pol := plugin.DefaultPolicy()
		pol.InviteTimeout = plugin.Duration(300 * time.Millisecond)
		contact := "sip:bob@127.0.0.1:5099;transport=tcp"
		sess, err := p.Open(context.Background(), plugin.Target{URI: contact, Pager: true, Policy: pol, Registration: plugin.Registration{Contact: contact}})
		if err != nil {
			t.Fatal(err)
		}
		var fates []string
		err = sess.Deliver(context.Background(), stored(t, 2), func(m *plugin.Message, err error) { fates = append(fates, fateOf(err)) })
		var se *plugin.SessionError
		if !errors.As(err, &se) {
			t.Errorf("%d: Deliver = %v; want the session ended", code, err)
		}
		if diff := cmp.Diff([]string{notSent, notSent}, fates); diff != "" {
			t.Errorf("%d: fates (-want +got):\n%s", code, diff)
		}
	}
}

// TestPagerRouteAnswers: a 3xx, 401 or 407 to a page is about the route
// or credentials, not the message: the session ends, and neither that
// message nor the next is charged.
func TestPagerRouteAnswers(t *testing.T) {
	for _, code := range []int{302, 401, 407} {
		peer := startPagerPeer(t, map[string]int{"call-2": code})
		p := newTestPusher(t, "sip:"+peer.addr+";transport=tcp")
		pol := plugin.DefaultPolicy()
		pol.InviteTimeout = plugin.Duration(5 * time.Second)
		contact := "sip:bob@127.0.0.1:5099;transport=tcp"
		sess, err := p.Open(context.Background(), plugin.Target{URI: contact, Pager: true, Policy: pol, Registration: plugin.Registration{Contact: contact}})
		if err != nil {
			t.Fatal(err)
		}
		var fates []string
		err = sess.Deliver(context.Background(), stored(t, 3), func(m *plugin.Message, err error) { fates = append(fates, fateOf(err)) })
		var se *plugin.SessionError
		if !errors.As(err, &se) || se.Status != code {
			t.Errorf("%d: Deliver = %v; want the session ended by it", code, err)
		}
		if diff := cmp.Diff([]string{confirmed, notSent, notSent}, fates); diff != "" {
			t.Errorf("%d: fates (-want +got):\n%s", code, diff)
		}
	}
}

// TestPagerBadStored: a stored message that is not a MESSAGE any more
// fails alone, as an unencapsulable one does in MSRP.
func TestPagerBadStored(t *testing.T) {
	peer := startPagerPeer(t, nil)
	p := newTestPusher(t, "sip:"+peer.addr+";transport=tcp")
	contact := "sip:bob@127.0.0.1:5099;transport=tcp"
	sess, _ := p.Open(context.Background(), plugin.Target{URI: contact, Pager: true, Policy: plugin.DefaultPolicy(), Registration: plugin.Registration{Contact: contact}})
	var fates []string
	if err := sess.Deliver(context.Background(), stored(t, 3, 2), func(m *plugin.Message, err error) { fates = append(fates, fateOf(err)) }); err != nil {
		t.Errorf("Deliver = %v", err)
	}
	if diff := cmp.Diff([]string{confirmed, badStored, confirmed}, fates); diff != "" {
		t.Errorf("fates (-want +got):\n%s", diff)
	}
}

// TestPagerLargeOverTCP: with an outbound proxy reached over UDP (no
// transport parameter), a page larger than 1300 octets goes over TCP
// (RFC 3261 §18.1.1), its Via saying so, where sipgo refused to send it
// ("size of packet larger than MTU") and the message was charged an
// attempt at each push. The peer listens on TCP alone: a page sent over
// UDP would be lost.
func TestPagerLargeOverTCP(t *testing.T) {
	peer := startPagerPeer(t, nil)
	p := newTestPusher(t, "sip:"+peer.addr)
	msgs := stored(t, 1)
	body := strings.Repeat("a long message ", 140)
	msgs[0].Raw = []byte(strings.Replace(strings.Replace(string(msgs[0].Raw), "Content-Length: 5", "Content-Length: "+strconv.Itoa(len(body)), 1),
		"\r\n\r\nhello", "\r\n\r\n"+body, 1))
	contact := "sip:bob@127.0.0.1:5099"
	pol := plugin.DefaultPolicy()
	pol.InviteTimeout = plugin.Duration(5 * time.Second)
	sess, err := p.Open(context.Background(), plugin.Target{AOR: plugin.MustParseAOR("sip:bob@example.com"), URI: contact, Pager: true, Policy: pol,
		Registration: plugin.Registration{Contact: contact}})
	if err != nil {
		t.Fatal(err)
	}
	var fates []string
	if err := sess.Deliver(context.Background(), msgs, func(m *plugin.Message, err error) { fates = append(fates, fateOf(err)) }); err != nil {
		t.Errorf("Deliver: %v", err)
	}
	sess.Close(context.Background())
	if diff := cmp.Diff([]string{confirmed}, fates); diff != "" {
		t.Errorf("fates (-want +got):\n%s", diff)
	}
	got := peer.requests()
	if len(got) != 1 {
		t.Fatalf("%d pages reached the proxy, want 1", len(got))
	}
	if v := got[0].Via(); v == nil || v.Transport != "TCP" {
		t.Errorf("page's Via %v, want TCP", v)
	}
	if n := len(got[0].Body()); n != len(body) {
		t.Errorf("page body %d octets, want %d", n, len(body))
	}
}
