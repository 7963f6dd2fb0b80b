package push

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/google/go-cmp/cmp"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/plugin/msrp"
)

// records keeps the debug records logged, each as its message and
// attributes.
type records struct {
	mu  sync.Mutex
	got []map[string]string
}

func (r *records) Enabled(context.Context, slog.Level) bool { return true }
func (r *records) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *records) WithGroup(string) slog.Handler            { return r }
func (r *records) Handle(_ context.Context, rec slog.Record) error {
	m := map[string]string{"msg": rec.Message}
	rec.Attrs(func(a slog.Attr) bool {
		m[a.Key] = a.Value.String()
		return true
	})
	r.mu.Lock()
	r.got = append(r.got, m)
	r.mu.Unlock()
	return nil
}

func (r *records) find(msg string) map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range r.got {
		if m["msg"] == msg {
			return m
		}
	}
	return nil
}

// clientIMDN is an RCS client's "delivered" notification for message
// 34jk324j, as it sends it back in the push session (RFC 5438 §7.1.1.3).
const clientIMDN = "From: <sip:bob@example.com>\r\nTo: <sip:alice@example.com>\r\nNS: imdn <urn:ietf:params:imdn>\r\n" +
	"imdn.Message-ID: d834jied93rf\r\nDateTime: 2026-11-26T12:00:05Z\r\n\r\n" +
	"Content-Type: message/imdn+xml\r\nContent-Disposition: notification\r\n\r\n" +
	`<?xml version="1.0" encoding="UTF-8"?>` + "\r\n" +
	`<imdn xmlns="urn:ietf:params:xml:ns:imdn"><message-id>34jk324j</message-id>` +
	`<datetime>2026-11-26T12:00:00Z</datetime><recipient-uri>sip:bob@example.com</recipient-uri>` +
	`<delivery-notification><status><delivered/></status></delivery-notification></imdn>` + "\r\n"

// TestPushSessionTakesOfferedTypes: the push session (the config Open
// gives it) takes a notification in message/cpim — 200, the success
// REPORT asked for, the IMDN logged at debug — and answers 415 to what is
// no notification: a type not offered before reassembly, a CPIM message
// or a message/sip once whole (deferpush has nowhere to deliver them);
// 413 past the reassembly bound as before.
func TestPushSessionTakesOfferedTypes(t *testing.T) {
	l, err := msrp.NewListener(msrp.ListenerConfig{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	runErr := make(chan error, 1)
	go func() { runErr <- l.Run(context.Background()) }()
	t.Cleanup(func() {
		l.Close()
		<-runErr
	})
	logs := &records{}
	p := &Pusher{cfg: Config{MSRP: l, ChunkSize: 2048, MSRPTimeout: 5 * time.Second}, log: slog.New(logs)}
	local := l.URI()
	local.SessionID = msrp.NewSessionID()
	s, err := msrp.NewSession(p.sessionConfig(local, plugin.MustParseAOR("sip:bob@example.com"), nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := l.Add(s, nil); err != nil {
		t.Fatal(err)
	}
	nc, err := net.Dial("tcp", l.URI().Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	r, w := msrp.NewReader(nc, msrp.Limits{}), msrp.NewWriter(nc)
	peer := "msrp://127.0.0.1:9/client01;tcp"
	sendFrame := func(tid, ct string, extra []msrp.Header, body string) {
		t.Helper()
		h := append([]msrp.Header{{Name: msrp.HeaderToPath, Value: local.String()}, {Name: msrp.HeaderFromPath, Value: peer}}, extra...)
		f := &msrp.Frame{TID: tid, Method: "SEND", Header: h, Flag: msrp.FlagEnd}
		if ct != "" {
			f.Header = append(f.Header, msrp.Header{Name: msrp.HeaderContentType, Value: ct})
			f.Body = []byte(body)
		}
		if err := w.WriteFrame(f); err != nil {
			t.Fatal(err)
		}
	}
	// The answers, and the REPORT the deliverer writes, in any order.
	read := func(n int) []string {
		var got []string
		for range n {
			f, err := r.ReadFrame()
			if err != nil {
				t.Errorf("read: %v", err)
				break
			}
			if f.IsRequest() {
				got = append(got, f.Method+" "+f.Value(msrp.HeaderMessageID)+" "+f.Value(msrp.HeaderStatus))
			} else {
				got = append(got, f.TID+" "+f.Comment)
			}
		}
		slices.Sort(got)
		return got
	}

	sendFrame("bind0001", "", []msrp.Header{{Name: msrp.HeaderMessageID, Value: "bind0001"}}, "")
	sendFrame("imdn0001", "message/cpim", []msrp.Header{{Name: msrp.HeaderMessageID, Value: "imdn0001"},
		{Name: msrp.HeaderSuccessReport, Value: "yes"}}, clientIMDN)
	sendFrame("text0001", "text/plain", []msrp.Header{{Name: msrp.HeaderMessageID, Value: "text0001"}}, "hello")
	sendFrame("chat0001", "message/cpim", []msrp.Header{{Name: msrp.HeaderMessageID, Value: "chat0001"}},
		"From: <sip:bob@example.com>\r\nTo: <sip:alice@example.com>\r\n\r\nContent-Type: text/plain\r\n\r\nhi alice")
	sendFrame("msip0001", "message/sip", []msrp.Header{{Name: msrp.HeaderMessageID, Value: "msip0001"}},
		"MESSAGE sip:alice@example.com SIP/2.0\r\nContent-Length: 0\r\n\r\n")
	sendFrame("huge0001", "message/cpim", []msrp.Header{{Name: msrp.HeaderMessageID, Value: "huge0001"},
		{Name: msrp.HeaderByteRange, Value: "1-5/99999999"}}, "hello")
	nc.SetReadDeadline(time.Now().Add(3 * time.Second))
	got := read(7)
	want := []string{"REPORT imdn0001 000 200 OK", "bind0001 OK", "chat0001 deferpush takes only IMDN notifications here", "huge0001 Stop Sending Message",
		"imdn0001 OK", "msip0001 deferpush takes only IMDN notifications here", "text0001 Unsupported Media Type"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("answers (-want +got):\n%s", diff)
	}
	rec := logs.find("imdn from client")
	if rec == nil {
		t.Fatalf("no imdn logged; records: %v", logs.got)
	}
	for k, v := range map[string]string{"imdn_message_id": "34jk324j", "notification": "delivery", "status": "delivered",
		"msg_id": "imdn0001", "aor": "sip:bob@example.com"} {
		if rec[k] != v {
			t.Errorf("imdn record %s = %q, want %q", k, rec[k], v)
		}
	}
}

// TestForwardClientIMDN: a notification a client sends back in its push
// session about a message the session pushed, which asked for it, goes
// on to that message's sender — the stored message's CPIM From (or first
// imdn.IMDN-Record-Route), never where the client's notification points —
// as a SIP MESSAGE through the outbound proxy from the client's AOR with
// the CPIM body as the client wrote it, once per disposition asked. A
// notification about another message goes nowhere (200), a message/cpim
// holding no notification is refused 415, and without an outbound proxy
// nothing is forwarded. Before, the client's imdn.IMDN-Route or CPIM To
// chose the target: any pushed client had an open relay.
func TestForwardClientIMDN(t *testing.T) {
	peer := startPagerPeer(t, nil)
	p := newTestPusher(t, "sip:"+peer.addr+";transport=tcp")
	aor := plugin.MustParseAOR("sip:bob@example.com")
	routes := &imdnRoutes{}
	asked := imdnMessage(t, "positive-delivery, display", "sip:alice@example.com")
	asked.Raw = []byte(strings.Replace(string(asked.Raw), "imdn.Message-ID: m-42", "imdn.Message-ID: 34jk324j", 1))
	routed := imdnMessage(t, "positive-delivery", "sip:carol@example.com")
	routed.Raw = []byte(strings.Replace(strings.Replace(string(routed.Raw), "imdn.Message-ID: m-42", "imdn.Message-ID: r-1", 1),
		"DateTime:", "imdn.IMDN-Record-Route: <sip:imdn@relay.example.com>\r\nDateTime:", 1))
	// Fix the stored Content-Length after the edits.
	for _, m := range []*plugin.Message{asked, routed} {
		head, body, _ := strings.Cut(string(m.Raw), "\r\n\r\n")
		head = head[:strings.Index(head, "Content-Length: ")] + "Content-Length: " + strconv.Itoa(len(body))
		m.Raw = []byte(head + "\r\n\r\n" + body)
	}
	routes.add([]*plugin.Message{asked, routed, imdnMessage(t, "processing", "sip:dave@example.com")})
	h := p.sessionConfig(p.cfg.MSRP.URI(), aor, routes).Handler
	elsewhere := strings.Replace(clientIMDN, "DateTime:", "imdn.IMDN-Route: <sip:evil@attacker.example>\r\nDateTime:", 1)
	aboutR1 := strings.Replace(clientIMDN, "<message-id>34jk324j</message-id>", "<message-id>r-1</message-id>", 1)
	unknown := strings.Replace(clientIMDN, "<message-id>34jk324j</message-id>", "<message-id>m-42</message-id>", 1)
	notIMDN := strings.Replace(clientIMDN, "Content-Type: message/imdn+xml", "Content-Type: text/plain", 1)
	for i, body := range []string{clientIMDN, elsewhere, clientIMDN, aboutR1, unknown, notIMDN} {
		m := &msrp.Message{ID: "m" + strconv.Itoa(i), ContentType: "message/cpim", Body: []byte(body)}
		err := h.ServeMSRP(context.Background(), nil, m)
		var se *msrp.StatusError
		if body == notIMDN && (!errors.As(err, &se) || se.Code != 415) {
			t.Errorf("ServeMSRP of a CPIM message that is no notification: %v, want 415", err)
		}
		if body != notIMDN && err != nil {
			t.Fatalf("ServeMSRP %d: %v", i, err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(peer.requests()) < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // a fourth, should one wrongly go out
	got := peer.requests()
	if len(got) != 3 {
		t.Fatalf("%d MESSAGEs forwarded, want 3 (two dispositions of 34jk324j, one of r-1)", len(got))
	}
	slices.SortFunc(got, func(a, b *sip.Request) int { return strings.Compare(a.Recipient.String(), b.Recipient.String()) })
	for i, want := range []struct{ target, body string }{
		{"sip:alice@example.com", clientIMDN}, {"sip:alice@example.com", elsewhere}, {"sip:imdn@relay.example.com", aboutR1},
	} {
		r := got[i]
		if r.Recipient.String() != want.target || r.To().Address.String() != want.target || r.From().Address.String() != "sip:bob@example.com" {
			t.Errorf("forward %d: %s to %s from %s, want to %s from the client's AOR", i, r.Recipient.String(), r.To().Address.String(), r.From().Address.String(), want.target)
		}
		if h := r.GetHeader("Route"); h == nil || !strings.Contains(h.Value(), peer.addr) {
			t.Errorf("forward %d: Route %v, want the outbound proxy", i, h)
		}
		if ct := r.ContentType(); ct == nil || ct.Value() != "message/cpim" {
			t.Errorf("forward %d: Content-Type %v", i, ct)
		}
	}
	bodies := []string{string(got[0].Body()), string(got[1].Body())}
	slices.Sort(bodies)
	if want := []string{clientIMDN, elsewhere}; !slices.Equal(bodies, func() []string { slices.Sort(want); return want }()) {
		t.Errorf("forwarded bodies differ from the client's")
	}

	// Without an outbound proxy nothing is forwarded.
	lone := newTestPusher(t, "")
	peer2 := startPagerPeer(t, nil)
	loneRoutes := &imdnRoutes{}
	loneRoutes.add([]*plugin.Message{asked})
	h = lone.sessionConfig(lone.cfg.MSRP.URI(), aor, loneRoutes).Handler
	if err := h.ServeMSRP(context.Background(), nil, &msrp.Message{ID: "x", ContentType: "message/cpim", Body: []byte(clientIMDN)}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if n := len(peer2.requests()) + len(peer.requests()) - 3; n != 0 {
		t.Errorf("%d MESSAGEs forwarded without an outbound proxy", n)
	}
}
