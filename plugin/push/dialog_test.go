package push

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/google/go-cmp/cmp"

	"github.com/deferpush/deferpush/plugin"
)

// uas is the client end of a push's INVITE, written by hand on loopback
// TCP so that a test chooses every answer byte by byte and sees every
// request as it came, and on which connection.
type uas struct {
	port int
	reqs chan uasReq
}

// uasReq is a request the uas got and the connection it came on.
type uasReq struct {
	*sip.Request
	conn net.Conn
}

func startUAS(t *testing.T) *uas {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &uas{port: ln.Addr().(*net.TCPAddr).Port, reqs: make(chan uasReq, 32)}
	var conns []net.Conn
	accepted := make(chan net.Conn)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
			go u.read(t, c)
		}
	}()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for c := range accepted {
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		for _, c := range conns {
			c.Close()
		}
	})
	return u
}

func (u *uas) read(t *testing.T, c net.Conn) {
	br := bufio.NewReader(c)
	for {
		raw, err := readSIP(br)
		if err != nil {
			return
		}
		m, err := sip.ParseMessage(raw)
		if err != nil {
			t.Errorf("uas: unparseable message %q: %v", raw, err)
			return
		}
		if req, ok := m.(*sip.Request); ok {
			u.reqs <- uasReq{Request: req, conn: c}
		}
	}
}

// readSIP reads one SIP message (header section and Content-Length
// octets of body) from br, skipping keep-alive CRLFs.
func readSIP(br *bufio.Reader) ([]byte, error) {
	var head bytes.Buffer
	n := 0
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return nil, err
		}
		if line == "\r\n" && head.Len() == 0 {
			continue
		}
		head.WriteString(line)
		if line == "\r\n" {
			break
		}
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(strings.TrimSpace(k), "Content-Length") {
			n, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(br, body); err != nil {
		return nil, err
	}
	return append(head.Bytes(), body...), nil
}

// next returns the next request the uas got, which must be a method one.
func (u *uas) next(t *testing.T, method sip.RequestMethod) uasReq {
	t.Helper()
	select {
	case r := <-u.reqs:
		if r.Method != method {
			t.Fatalf("uas got %s, want %s:\n%s", r.Method, method, r)
		}
		return r
	case <-time.After(10 * time.Second):
		t.Fatalf("uas: no %s within 10 s", method)
	}
	return uasReq{}
}

// recordRoute is what the uas's answers carry as Record-Route, contact
// their Contact, both naming the uas itself, tagged by dialog.
func (u *uas) recordRoute(dlg string) string {
	return fmt.Sprintf("Record-Route: <sip:127.0.0.1:%d;transport=tcp;lr;rr=%s-second>\r\n"+
		"Record-Route: <sip:127.0.0.1:%d;transport=tcp;lr;rr=%s-first>\r\n", u.port, dlg, u.port, dlg)
}

func (u *uas) contact(dlg string) string {
	return fmt.Sprintf("sip:bob@127.0.0.1:%d;transport=tcp;dlg=%s", u.port, dlg)
}

// answer writes a response to r on its connection: status ("200 OK"),
// the To tag added when tag is set, dialog headers (Record-Route,
// Contact) when dlg is set, and an SDP answer with a=setup:active (the
// client connects: Open returns without an MSRP connection) on a 2xx to
// INVITE.
func (u *uas) answer(t *testing.T, r uasReq, status, tag, dlg string) string {
	t.Helper()
	return u.answerMedia(t, r, status, tag, dlg, "a=accept-types:message/sip message/cpim\r\n")
}

// answerMedia is answer with media's a= lines (a=accept-types and others)
// in the SDP answer, before its a=path and a=setup:active.
func (u *uas) answerMedia(t *testing.T, r uasReq, status, tag, dlg, media string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("SIP/2.0 " + status + "\r\n")
	for _, v := range r.GetHeaders("Via") {
		b.WriteString("Via: " + v.Value() + "\r\n")
	}
	to := r.To().Value()
	if tag != "" {
		to += ";tag=" + tag
	}
	fmt.Fprintf(&b, "From: %s\r\nTo: %s\r\nCall-ID: %s\r\nCSeq: %s\r\n", r.From().Value(), to, r.CallID().Value(), r.CSeq().Value())
	if dlg != "" {
		b.WriteString(u.recordRoute(dlg))
		fmt.Fprintf(&b, "Contact: <%s>\r\n", u.contact(dlg))
	}
	body := ""
	if r.IsInvite() && strings.HasPrefix(status, "2") {
		body = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=message 9 TCP/MSRP *\r\n" +
			media + "a=path:msrp://127.0.0.1:9/clientsess01;tcp\r\na=setup:active\r\n"
		b.WriteString("Content-Type: application/sdp\r\n")
	}
	fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n%s", len(body), body)
	raw := b.String()
	u.write(t, r, raw)
	return raw
}

func (u *uas) write(t *testing.T, r uasReq, raw string) {
	t.Helper()
	if _, err := io.WriteString(r.conn, raw); err != nil {
		t.Fatal(err)
	}
}

// values are the values of r's name headers, in order.
func values(r *sip.Request, name string) []string {
	var vs []string
	for _, h := range r.GetHeaders(name) {
		vs = append(vs, h.Value())
	}
	return vs
}

// opened is what Open returned.
type opened struct {
	sess plugin.PushSession
	err  error
}

// open runs p.Open to the uas in the background, with an outbound
// proxy (the uas itself) so that the INVITE carries a Route.
func (u *uas) open(t *testing.T, timeout time.Duration) (*Pusher, <-chan opened) {
	t.Helper()
	pol := plugin.DefaultPolicy()
	pol.InviteTimeout = plugin.Duration(timeout)
	return u.openTarget(t, plugin.Target{Policy: pol})
}

// openTarget is open with tgt's policy and messages.
func (u *uas) openTarget(t *testing.T, tgt plugin.Target) (*Pusher, <-chan opened) {
	t.Helper()
	p := newTestPusher(t, fmt.Sprintf("sip:127.0.0.1:%d;transport=tcp", u.port))
	tgt.AOR, tgt.URI = plugin.MustParseAOR("sip:bob@example.com"), fmt.Sprintf("sip:bob@127.0.0.1:%d;transport=tcp", u.port)
	ch := make(chan opened, 1)
	go func() {
		s, err := p.Open(context.Background(), tgt)
		ch <- opened{s, err}
	}()
	return p, ch
}

func waitOpen(t *testing.T, ch <-chan opened) opened {
	t.Helper()
	select {
	case o := <-ch:
		return o
	case <-time.After(10 * time.Second):
		t.Fatal("Open did not return within 10 s")
	}
	return opened{}
}

// checkInDialog checks a request of the dialog a 2xx set up (RFC 3261
// §12.2.1.1): Request-URI the 2xx's Contact, Route its Record-Route
// reversed, From and Call-ID the INVITE's, To the 2xx's (with its tag),
// CSeq the INVITE's number plus inc with method m, a Via of its own.
func checkInDialog(t *testing.T, u *uas, r, inv uasReq, m sip.RequestMethod, tag, dlg string, inc uint32) {
	t.Helper()
	if got, want := r.Recipient.String(), u.contact(dlg); got != want {
		t.Errorf("%s Request-URI %q, want the 2xx's Contact %q", m, got, want)
	}
	wantRoute := []string{
		fmt.Sprintf("<sip:127.0.0.1:%d;transport=tcp;lr;rr=%s-first>", u.port, dlg),
		fmt.Sprintf("<sip:127.0.0.1:%d;transport=tcp;lr;rr=%s-second>", u.port, dlg),
	}
	if diff := cmp.Diff(wantRoute, values(r.Request, "Route")); diff != "" {
		t.Errorf("%s Route, not the 2xx's Record-Route reversed (-want +got):\n%s", m, diff)
	}
	if got, want := r.From().Value(), inv.From().Value(); got != want {
		t.Errorf("%s From %q, want %q", m, got, want)
	}
	if got, want := r.To().Value(), inv.To().Value()+";tag="+tag; got != want {
		t.Errorf("%s To %q, want %q", m, got, want)
	}
	if got, want := r.CallID().Value(), inv.CallID().Value(); got != want {
		t.Errorf("%s Call-ID %q, want %q", m, got, want)
	}
	if got, want := r.CSeq().Value(), fmt.Sprintf("%d %s", inv.CSeq().SeqNo+inc, m); got != want {
		t.Errorf("%s CSeq %q, want %q", m, got, want)
	}
	if vias := values(r.Request, "Via"); len(vias) != 1 || branch(r.Request) == branch(inv.Request) {
		t.Errorf("%s Via %q: want one, of a new branch (INVITE's %q)", m, vias, inv.Via().Value())
	}
}

func branch(r *sip.Request) string {
	b, _ := r.Via().Params.Get("branch")
	return b
}

// checkNoContact: Contact is "-" for BYE and CANCEL in RFC 3261 §20
// Table 3, which makes it not allowed.
func checkNoContact(t *testing.T, r uasReq) {
	t.Helper()
	if c := r.Contact(); c != nil {
		t.Errorf("%s has Contact %q: not allowed in it (RFC 3261 §20, Table 3)", r.Method, c.Value())
	}
}

// TestInviteHeaders: the INVITE says which methods deferpush takes in the
// push dialog and which extensions it supports (none), both SHOULDs of
// RFC 3261 §13.2.1.
func TestInviteHeaders(t *testing.T) {
	u := startUAS(t)
	_, ch := u.open(t, 5*time.Second)
	inv := u.next(t, sip.INVITE)
	u.answer(t, inv, "486 Busy Here", "t1", "")
	u.next(t, sip.ACK)
	waitOpen(t, ch)
	if got, want := values(inv.Request, "Allow"), []string{"INVITE, ACK, CANCEL, BYE, OPTIONS"}; !cmp.Equal(got, want) {
		t.Errorf("INVITE Allow %q, want %q", got, want)
	}
	if got, want := values(inv.Request, "Supported"), []string{""}; !cmp.Equal(got, want) {
		t.Errorf("INVITE Supported %q, want one, empty: deferpush supports no extension", got)
	}
	// The offer: what deferpush takes back inside message/cpim is
	// notifications alone (RFC 4975 §8.6).
	if b := string(inv.Request.Body()); !strings.Contains(b, "\r\na=accept-wrapped-types:message/imdn+xml\r\n") ||
		!strings.Contains(b, "a=accept-types:message/sip message/msrp multipart/mixed message/cpim message/sipfrag\r\n") {
		t.Errorf("INVITE offer:\n%s\nwant the accept-types and accept-wrapped-types:message/imdn+xml", b)
	}
}

// TestInviteCancel: past invite_timeout, an INVITE answered only
// provisionally (with a To tag and a Record-Route: an early dialog) is
// cancelled with a CANCEL of RFC 3261 §9.1 — the INVITE's Request-URI,
// Call-ID, From, To (no tag), CSeq number, top Via, Route and
// Max-Forwards, no Contact, on the INVITE's connection — and the push
// waits for the INVITE's final answer. A 2xx crossing the CANCEL sets up
// a session the push no longer wants: it is ACKed, then ended with BYE.
func TestInviteCancel(t *testing.T) {
	tests := []struct {
		name    string
		final   string // the INVITE's final answer after the CANCEL
		wantErr string
	}{
		{name: "487", final: "487 Request Terminated", wantErr: "no answer within 300ms (cancelled)"},
		{name: "answered while cancelling", final: "200 OK", wantErr: "answered 200 after invite_timeout 300ms, while cancelling"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := startUAS(t)
			_, ch := u.open(t, 300*time.Millisecond)
			inv := u.next(t, sip.INVITE)
			u.answer(t, inv, "180 Ringing", "early", "early")
			c := u.next(t, sip.CANCEL)
			if c.conn != inv.conn {
				t.Error("CANCEL came on another connection than the INVITE")
			}
			if got, want := c.Recipient.String(), inv.Recipient.String(); got != want {
				t.Errorf("CANCEL Request-URI %q, want the INVITE's %q", got, want)
			}
			for _, h := range []string{"Call-ID", "From", "To", "Route", "Max-Forwards"} {
				if diff := cmp.Diff(values(inv.Request, h), values(c.Request, h)); diff != "" {
					t.Errorf("CANCEL %s, not the INVITE's (-INVITE +CANCEL):\n%s", h, diff)
				}
			}
			if got, want := values(c.Request, "Via"), []string{inv.Via().Value()}; !cmp.Equal(got, want) {
				t.Errorf("CANCEL Via %q, want the INVITE's top Via %q", got, want)
			}
			if got, want := c.CSeq().Value(), fmt.Sprintf("%d CANCEL", inv.CSeq().SeqNo); got != want {
				t.Errorf("CANCEL CSeq %q, want %q", got, want)
			}
			checkNoContact(t, c)
			u.answer(t, c, "200 OK", "", "")
			u.answer(t, inv, tt.final, "final", "final")
			ack := u.next(t, sip.ACK)
			if tt.final == "200 OK" {
				checkInDialog(t, u, ack, inv, sip.ACK, "final", "final", 0)
				bye := u.next(t, sip.BYE)
				checkInDialog(t, u, bye, inv, sip.BYE, "final", "final", 1)
				checkNoContact(t, bye)
				u.answer(t, bye, "200 OK", "", "")
			}
			o := waitOpen(t, ch)
			if o.err == nil || !strings.Contains(o.err.Error(), tt.wantErr) {
				t.Errorf("Open: %v, want an error with %q", o.err, tt.wantErr)
			}
		})
	}
}

// TestSessionDialog: the 2xx is ACKed (again for each retransmission of
// it, with the same ACK), and the session's BYE is sent within the dialog
// (RFC 3261 §15.1.1), without Contact.
func TestSessionDialog(t *testing.T) {
	u := startUAS(t)
	_, ch := u.open(t, 5*time.Second)
	inv := u.next(t, sip.INVITE)
	u.answer(t, inv, "180 Ringing", "c1", "c1")
	ok := u.answer(t, inv, "200 OK", "c1", "c1")
	ack := u.next(t, sip.ACK)
	checkInDialog(t, u, ack, inv, sip.ACK, "c1", "c1", 0)
	o := waitOpen(t, ch)
	if o.err != nil {
		t.Fatalf("Open: %v", o.err)
	}
	u.write(t, inv, ok)
	again := u.next(t, sip.ACK)
	if got, want := again.String(), ack.String(); got != want {
		t.Errorf("ACK to the retransmitted 2xx:\n%s\nwant the first ACK again:\n%s", got, want)
	}
	closed := make(chan error, 1)
	go func() { closed <- o.sess.Close(context.Background()) }()
	bye := u.next(t, sip.BYE)
	checkInDialog(t, u, bye, inv, sip.BYE, "c1", "c1", 1)
	checkNoContact(t, bye)
	u.answer(t, bye, "200 OK", "", "")
	if err := <-closed; err != nil {
		t.Errorf("Close: %v", err)
	}
}

// TestForkedAnswers: a proxy that forks the INVITE may bring a 2xx from
// each device (RFC 3261 §13.2.2.4). The push keeps the first dialog; each
// other 2xx gets an ACK built from it (its To tag, Contact, Record-Route),
// each retransmission of it too, and its dialog one BYE.
func TestForkedAnswers(t *testing.T) {
	u := startUAS(t)
	_, ch := u.open(t, 5*time.Second)
	inv := u.next(t, sip.INVITE)
	u.answer(t, inv, "200 OK", "c1", "c1")
	checkInDialog(t, u, u.next(t, sip.ACK), inv, sip.ACK, "c1", "c1", 0)
	o := waitOpen(t, ch)
	if o.err != nil {
		t.Fatalf("Open: %v", o.err)
	}
	for _, f := range []struct{ status, tag string }{{"200 OK", "fork2"}, {"202 Accepted", "fork3"}} {
		raw := u.answer(t, inv, f.status, f.tag, f.tag)
		checkInDialog(t, u, u.next(t, sip.ACK), inv, sip.ACK, f.tag, f.tag, 0)
		bye := u.next(t, sip.BYE)
		checkInDialog(t, u, bye, inv, sip.BYE, f.tag, f.tag, 1)
		checkNoContact(t, bye)
		u.answer(t, bye, "200 OK", "", "")
		u.write(t, inv, raw) // a retransmission: ACKed again, not BYEd again
		checkInDialog(t, u, u.next(t, sip.ACK), inv, sip.ACK, f.tag, f.tag, 0)
	}
	closed := make(chan error, 1)
	go func() { closed <- o.sess.Close(context.Background()) }()
	bye := u.next(t, sip.BYE)
	checkInDialog(t, u, bye, inv, sip.BYE, "c1", "c1", 1)
	u.answer(t, bye, "200 OK", "", "")
	if err := <-closed; err != nil {
		t.Errorf("Close: %v", err)
	}
}

// TestAnswerNotSDP: a 2xx whose body is not labelled application/sdp
// carries no SDP answer (RFC 3261 §13.2.1), whatever its bytes: it is
// ACKed, its session ended with BYE, and Open reports MSRP refused.
func TestAnswerNotSDP(t *testing.T) {
	u := startUAS(t)
	_, ch := u.open(t, 5*time.Second)
	inv := u.next(t, sip.INVITE)
	body := "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=message 9 TCP/MSRP *\r\n" +
		"a=accept-types:message/sip\r\na=path:msrp://127.0.0.1:9/clientsess01;tcp\r\na=setup:active\r\n"
	var vias strings.Builder
	for _, v := range inv.GetHeaders("Via") {
		vias.WriteString("Via: " + v.Value() + "\r\n")
	}
	u.write(t, inv, fmt.Sprintf("SIP/2.0 200 OK\r\n%sFrom: %s\r\nTo: %s;tag=c1\r\nCall-ID: %s\r\nCSeq: %s\r\n%sContact: <%s>\r\n"+
		"Content-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s",
		vias.String(), inv.From().Value(), inv.To().Value(), inv.CallID().Value(), inv.CSeq().Value(),
		u.recordRoute("c1"), u.contact("c1"), len(body), body))
	u.next(t, sip.ACK)
	bye := u.next(t, sip.BYE)
	u.answer(t, bye, "200 OK", "", "")
	if o := waitOpen(t, ch); !errors.Is(o.err, plugin.ErrMSRPRefused) {
		t.Errorf("Open = %v, %v; want MSRP refused", o.sess, o.err)
	}
}

// TestAnswerSetupNotUsable: an answer whose a=setup is holdconn (no
// connection now) or actpass (no answer's value, RFC 4145 §4.1) has no
// usable MSRP: ACKed, BYEd, MSRP refused, where deferpush connected.
func TestAnswerSetupNotUsable(t *testing.T) {
	for _, setup := range []string{"holdconn", "actpass"} {
		t.Run(setup, func(t *testing.T) {
			u := startUAS(t)
			_, ch := u.open(t, 5*time.Second)
			inv := u.next(t, sip.INVITE)
			body := "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=message 9 TCP/MSRP *\r\n" +
				"a=accept-types:message/sip\r\na=path:msrp://127.0.0.1:9/clientsess01;tcp\r\na=setup:" + setup + "\r\n"
			var vias strings.Builder
			for _, v := range inv.GetHeaders("Via") {
				vias.WriteString("Via: " + v.Value() + "\r\n")
			}
			u.write(t, inv, fmt.Sprintf("SIP/2.0 200 OK\r\n%sFrom: %s\r\nTo: %s;tag=c1\r\nCall-ID: %s\r\nCSeq: %s\r\n%sContact: <%s>\r\n"+
				"Content-Type: application/sdp\r\nContent-Length: %d\r\n\r\n%s",
				vias.String(), inv.From().Value(), inv.To().Value(), inv.CallID().Value(), inv.CSeq().Value(),
				u.recordRoute("c1"), u.contact("c1"), len(body), body))
			u.next(t, sip.ACK)
			bye := u.next(t, sip.BYE)
			u.answer(t, bye, "200 OK", "", "")
			if o := waitOpen(t, ch); !errors.Is(o.err, plugin.ErrMSRPRefused) || !strings.Contains(o.err.Error(), "a=setup:"+setup) {
				t.Errorf("Open = %v, %v; want MSRP refused for a=setup:%s", o.sess, o.err, setup)
			}
		})
	}
}

// TestAnswerCarriesNothing: a client that answers with MSRP media taking
// none of the push's messages — no encapsulation in its accept-types
// (a simple client's a=accept-types:text/plain), or each too large for
// its a=max-size — would get an INVITE and an empty session at every push
// (INTEROP finding 5). Open refuses it as it refuses an answer without
// MSRP: ACK, BYE, ErrMSRPRefused, so that the engine goes on in pager
// mode. What no_encap_fallback bare lets go (the bare body the client
// takes) is carried, and so is a push whose first message fits.
func TestAnswerCarriesNothing(t *testing.T) {
	tests := []struct {
		name     string
		media    string
		fallback string
		msgs     int
		refused  bool
	}{
		{name: "text/plain only", media: "a=accept-types:text/plain\r\n", msgs: 2, refused: true},
		{name: "every message over max-size", media: "a=accept-types:message/sip\r\na=max-size:20\r\n", msgs: 2, refused: true},
		{name: "cpim, content not among the wrapped types", media: "a=accept-types:message/cpim\r\na=accept-wrapped-types:message/imdn+xml\r\n", msgs: 1, refused: true},
		{name: "text/plain only, fallback bare", media: "a=accept-types:text/plain\r\n", fallback: plugin.FallbackBare, msgs: 2},
		{name: "message/sip", media: "a=accept-types:message/sip\r\n", msgs: 2},
		{name: "no messages given", media: "a=accept-types:text/plain\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := startUAS(t)
			pol := plugin.DefaultPolicy()
			pol.InviteTimeout = plugin.Duration(5 * time.Second)
			if tt.fallback != "" {
				pol.NoEncapFallback = tt.fallback
			}
			var msgs []*plugin.Message
			if tt.msgs > 0 {
				msgs = stored(t, tt.msgs)
			}
			_, ch := u.openTarget(t, plugin.Target{Policy: pol, Messages: msgs})
			inv := u.next(t, sip.INVITE)
			u.answerMedia(t, inv, "200 OK", "c1", "c1", tt.media)
			checkInDialog(t, u, u.next(t, sip.ACK), inv, sip.ACK, "c1", "c1", 0)
			if !tt.refused {
				o := waitOpen(t, ch)
				if o.err != nil {
					t.Fatalf("Open: %v", o.err)
				}
				closed := make(chan error, 1)
				go func() { closed <- o.sess.Close(context.Background()) }()
				u.answer(t, u.next(t, sip.BYE), "200 OK", "", "")
				<-closed
				return
			}
			bye := u.next(t, sip.BYE)
			checkInDialog(t, u, bye, inv, sip.BYE, "c1", "c1", 1)
			u.answer(t, bye, "200 OK", "", "")
			o := waitOpen(t, ch)
			if !errors.Is(o.err, plugin.ErrMSRPRefused) {
				t.Errorf("Open = %v, %v; want MSRP refused", o.sess, o.err)
			}
		})
	}
}

// TestInDialogNextHop: the ACK and BYE go where RFC 3261 §8.1.2 says,
// over the transport that hop's URI names (RFC 3263 §4.1): to a
// Record-Route's proxy over UDP when it says transport=udp (the INVITE
// went over TCP), and to a strict router (a first route without lr) that
// takes the Request-URI, with the remote target last in Route — sipgo
// alone would send it to that last Route, past the router.
func TestInDialogNextHop(t *testing.T) {
	answer200 := func(t *testing.T, u *uas, inv uasReq, headers string) {
		var vias strings.Builder
		for _, v := range inv.GetHeaders("Via") {
			vias.WriteString("Via: " + v.Value() + "\r\n")
		}
		// A body that is no SDP: the push ACKs and BYEs at once.
		u.write(t, inv, fmt.Sprintf("SIP/2.0 200 OK\r\n%sFrom: %s\r\nTo: %s;tag=c1\r\nCall-ID: %s\r\nCSeq: %s\r\n%s"+
			"Content-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi",
			vias.String(), inv.From().Value(), inv.To().Value(), inv.CallID().Value(), inv.CSeq().Value(), headers))
	}

	t.Run("record-route over udp", func(t *testing.T) {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		udpPort := pc.LocalAddr().(*net.UDPAddr).Port
		u := startUAS(t)
		_, ch := u.open(t, 5*time.Second)
		inv := u.next(t, sip.INVITE)
		answer200(t, u, inv, fmt.Sprintf("Record-Route: <sip:127.0.0.1:%d;lr;transport=udp>\r\nContact: <%s>\r\n", udpPort, u.contact("c1")))
		readUDP := func(method sip.RequestMethod) (*sip.Request, net.Addr) {
			t.Helper()
			buf := make([]byte, 65535)
			pc.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				t.Fatalf("waiting for the %s over UDP: %v", method, err)
			}
			msg, err := sip.ParseMessage(buf[:n])
			req, ok := msg.(*sip.Request)
			if err != nil || !ok || req.Method != method {
				t.Fatalf("got %v (%v) over UDP, want a %s", msg, err, method)
			}
			if v := req.Via(); v == nil || !strings.EqualFold(v.Transport, "UDP") {
				t.Errorf("%s Via %v, want UDP", method, v)
			}
			return req, from
		}
		readUDP(sip.ACK)
		bye, from := readUDP(sip.BYE)
		if _, err := pc.WriteTo([]byte(sip.NewResponseFromRequest(bye, 200, "OK", nil).String()), from); err != nil {
			t.Fatal(err)
		}
		waitOpen(t, ch)
	})

	t.Run("strict router", func(t *testing.T) {
		router := startUAS(t)
		u := startUAS(t)
		_, ch := u.open(t, 5*time.Second)
		inv := u.next(t, sip.INVITE)
		routerURI := fmt.Sprintf("sip:127.0.0.1:%d;transport=tcp", router.port)
		answer200(t, u, inv, "Record-Route: <"+routerURI+">\r\nContact: <"+u.contact("c1")+">\r\n")
		ack := router.next(t, sip.ACK)
		bye := router.next(t, sip.BYE)
		for _, r := range []uasReq{ack, bye} {
			if r.Recipient.String() != routerURI {
				t.Errorf("%s Request-URI %s, want the strict router's %s", r.Method, r.Recipient.String(), routerURI)
			}
			if got, want := values(r.Request, "Route"), []string{"<" + u.contact("c1") + ">"}; !cmp.Equal(got, want) {
				t.Errorf("%s Route %q, want the remote target %q", r.Method, got, want)
			}
		}
		router.answer(t, bye, "200 OK", "", "")
		waitOpen(t, ch)
	})
}
