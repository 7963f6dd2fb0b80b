package ingress

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/plugin/msrp"
)

// fakeEngine keeps what it is asked to store, or refuses with err. A
// test that stores through a running Stack reads it with messages.
type fakeEngine struct {
	mu     sync.Mutex
	stored []*plugin.Message
	err    error
	gate   chan struct{} // set: Policy waits for it to close (a pending INVITE)
}

func (e *fakeEngine) Store(_ context.Context, m *plugin.Message) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.err != nil {
		return e.err
	}
	e.stored = append(e.stored, m)
	return nil
}

func (e *fakeEngine) messages() []*plugin.Message {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]*plugin.Message(nil), e.stored...)
}

func (e *fakeEngine) Policy(ctx context.Context) (plugin.Policy, error) {
	if e.gate != nil {
		select {
		case <-e.gate:
		case <-ctx.Done():
			return plugin.Policy{}, ctx.Err()
		}
	}
	return plugin.DefaultPolicy(), nil
}

// fakeTx records the response; the rest of the interface is never called.
type fakeTx struct {
	sip.ServerTransaction
	res *sip.Response
}

func (tx *fakeTx) Respond(res *sip.Response) error { tx.res = res; return nil }

func newTestIngress(t *testing.T, e Engine) *Ingress {
	t.Helper()
	ua, err := sipgo.NewUA(sipgo.WithUserAgentHostname("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ua.Close() })
	cli, err := sipgo.NewClient(ua)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := msrp.NewListener(msrp.ListenerConfig{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	in, err := New(Config{Engine: e, Client: cli, Contact: "sip:127.0.0.1:5070;transport=tcp", MSRP: ln,
		Now: func() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) }})
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// sent is a MESSAGE as its sender sent it: a compact header, an identity
// header and a multi-line body.
const sent = "MESSAGE sip:user2@example.com SIP/2.0\r\n" +
	"Via: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bKsender1;rport\r\n" +
	"Max-Forwards: 70\r\n" +
	"From: \"User One\" <sip:user1@example.com>;tag=49583\r\n" +
	"To: <sip:user2@example.com>\r\n" +
	"Call-ID: asd88asd77a@192.0.2.1\r\n" +
	"CSeq: 7 MESSAGE\r\n" +
	"P-Asserted-Identity: <sip:user1@example.com>\r\n" +
	"Identity: abc.def.ghi;info=<https://cert.example.com/c.pem>\r\n" +
	"c: text/plain\r\n" +
	"Content-Length: 12\r\n" +
	"\r\n" +
	"hello\r\nthere"

// relayed is sent as Kamailio relays it with STORE_VIA_SIP: its own Via on
// top, Max-Forwards decremented.
var relayed = strings.Replace(strings.Replace(sent, "Via: ", "Via: SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bKproxy.0\r\nVia: ", 1),
	"Max-Forwards: 70", "Max-Forwards: 69", 1)

func parseRequest(t *testing.T, raw string) *sip.Request {
	t.Helper()
	msg, err := sip.NewParser().ParseSIP([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	return msg.(*sip.Request)
}

// TestIngressOnMessageRelayed: a MESSAGE relayed by the proxy is stored without
// the proxy's Via; Call-ID, From, To, identity headers and body are kept,
// and a Date is added. What sipgo's re-serialisation changes is pinned
// here (and listed in the README): the compact "c:" is written
// "Content-Type:".
func TestIngressOnMessageRelayed(t *testing.T) {
	e := &fakeEngine{}
	in := newTestIngress(t, e)
	tx := &fakeTx{}
	in.OnMessage(parseRequest(t, relayed), tx)
	if tx.res == nil || tx.res.StatusCode != 202 {
		t.Fatalf("response %v, want 202", tx.res)
	}
	if len(tx.res.GetHeaders("Via")) != 2 {
		t.Errorf("the 202 carries %d Vias, want both (the proxy's and the sender's)", len(tx.res.GetHeaders("Via")))
	}
	if len(e.stored) != 1 {
		t.Fatalf("stored %d, want 1", len(e.stored))
	}
	m := e.stored[0]
	want := strings.Replace(strings.Replace(strings.Replace(sent, "Max-Forwards: 70", "Max-Forwards: 69", 1),
		"c: text/plain", "Content-Type: text/plain", 1),
		"CSeq: 7 MESSAGE\r\n", "Date: Fri, 02 Jan 2026 03:04:05 GMT\r\nCSeq: 7 MESSAGE\r\n", 1)
	if string(m.Raw) != want {
		t.Errorf("stored\n%q\nwant\n%q", m.Raw, want)
	}
	if m.Recipient.String() != "sip:user2@example.com" || m.CallID != "asd88asd77a@192.0.2.1" || m.Sender != "sip:user1@example.com" {
		t.Errorf("stored recipient %q call-id %q sender %q", m.Recipient, m.CallID, m.Sender)
	}
}

// TestIngressOnMessageDirect: a MESSAGE straight from its sender (one Via) keeps
// its Via; a refusal is answered with the mapped reply.
func TestIngressOnMessageDirect(t *testing.T) {
	e := &fakeEngine{}
	in := newTestIngress(t, e)
	tx := &fakeTx{}
	in.OnMessage(parseRequest(t, sent), tx)
	if tx.res == nil || tx.res.StatusCode != 202 || len(e.stored) != 1 {
		t.Fatalf("response %v, stored %d; want 202, 1", tx.res, len(e.stored))
	}
	if !bytes.Contains(e.stored[0].Raw, []byte("Via: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bKsender1;rport\r\n")) {
		t.Errorf("the sender's Via is gone:\n%s", e.stored[0].Raw)
	}

	e.err = plugin.ErrMailboxFull
	tx = &fakeTx{}
	in.OnMessage(parseRequest(t, relayed), tx)
	if want := plugin.DefaultPolicy().FullMailboxReply; tx.res == nil || tx.res.StatusCode != want {
		t.Errorf("full mailbox: %v, want %d", tx.res, want)
	}
}

func TestIngressDropTopVia(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"M sip:a SIP/2.0\r\nVia: A\r\nVia: B\r\nTo: x\r\n\r\nVia: body", "M sip:a SIP/2.0\r\nVia: B\r\nTo: x\r\n\r\nVia: body"},
		{"M sip:a SIP/2.0\r\nTo: x\r\nv: A\r\n\r\n", "M sip:a SIP/2.0\r\nTo: x\r\n\r\n"},
		{"M sip:a SIP/2.0\r\nVIA : A;x=\"a,b\", B\r\nTo: x\r\n\r\n", "M sip:a SIP/2.0\r\nVIA : B\r\nTo: x\r\n\r\n"},
		{"M sip:a SIP/2.0\r\nVia: A\r\n  ;folded=1\r\nVia: B\r\n\r\n", "M sip:a SIP/2.0\r\nVia: B\r\n\r\n"},
		{"M sip:a SIP/2.0\r\nTo: x\r\n\r\nVia: body", "M sip:a SIP/2.0\r\nTo: x\r\n\r\nVia: body"},
	} {
		if got := string(dropTopVia([]byte(tt.in))); got != tt.want {
			t.Errorf("dropTopVia(%q) =\n%q\nwant\n%q", tt.in, got, tt.want)
		}
	}
}
