package ingress

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
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
	"github.com/deferpush/deferpush/plugin/sdp"
)

// noDialogs is a pusher with no push sessions.
type noDialogs struct{}

func (noDialogs) ReadBye(*sip.Request, sip.ServerTransaction) error {
	return sipgo.ErrDialogDoesNotExists
}

func (noDialogs) HasDialog(*sip.Request) bool { return false }

// syncBuffer is a log destination the stack's goroutines write to while
// the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testStack is a running Stack on a free loopback port, routed to an
// Ingress storing into e (nil: a new fakeEngine); its log (JSON, Debug
// and up) is kept.
type testStack struct {
	*Stack
	engine *fakeEngine
	log    *syncBuffer
}

func startStack(t *testing.T, trust Trust, e *fakeEngine) *testStack {
	t.Helper()
	return startStackConfig(t, StackConfig{}, trust, e)
}

// startStackConfig is startStack with cfg's timeouts and bounds (its
// Listen and Logger are the test's).
func startStackConfig(t *testing.T, cfg StackConfig, trust Trust, e *fakeEngine) *testStack {
	t.Helper()
	logs := &syncBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg.Listen, cfg.Logger = "127.0.0.1:0", log
	s, err := NewStack(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := msrp.NewListener(msrp.ListenerConfig{Addr: "127.0.0.1:0"})
	if err != nil {
		s.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	if e == nil {
		e = &fakeEngine{}
	}
	in, err := New(Config{Engine: e, Client: s.Client(), Contact: s.Contact(), MSRP: ln, Trust: trust, Logger: log})
	if err != nil {
		s.Close()
		t.Fatal(err)
	}
	s.Route(noDialogs{}, in)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	msrpDone := make(chan error, 1)
	go func() { msrpDone <- ln.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		<-msrpDone
		in.Close()
		if t.Failed() {
			t.Logf("stack log:\n%s", logs)
		}
	})
	return &testStack{Stack: s, engine: e, log: logs}
}

// request is a MESSAGE to user2 from 127.0.0.1 over transport, its Via
// branch from branch, with the headers given before Content-Length.
func request(transport, branch string, hdrs ...string) string {
	h := ""
	for _, l := range hdrs {
		h += l + "\r\n"
	}
	return "MESSAGE sip:user2@example.com SIP/2.0\r\n" +
		"Via: SIP/2.0/" + transport + " 127.0.0.1:5999;rport;branch=z9hG4bK" + branch + "\r\n" +
		"Max-Forwards: 70\r\n" +
		"From: <sip:user1@example.com>;tag=49583\r\n" +
		"To: <sip:user2@example.com>\r\n" +
		"Call-ID: " + branch + "@127.0.0.1\r\n" +
		"CSeq: 1 MESSAGE\r\n" +
		h +
		"Content-Type: text/plain\r\n" +
		"Content-Length: 5\r\n" +
		"\r\n" +
		"hello"
}

// exchangeUDP sends raw in one datagram and returns the final response
// (provisional ones skipped), or nil when none came within wait.
func exchangeUDP(t *testing.T, addr net.Addr, raw string, wait time.Duration) *sip.Response {
	t.Helper()
	c, err := net.Dial("udp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(raw)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 65535)
	deadline := time.Now().Add(wait)
	for {
		_ = c.SetReadDeadline(deadline)
		n, err := c.Read(buf)
		if err != nil {
			return nil
		}
		res := parseResponse(t, buf[:n])
		if res.StatusCode >= 200 {
			return res
		}
	}
}

// rawUDP sends raw in one datagram from a new socket and returns the
// first datagram that comes back within wait, unparsed; an error when
// none came.
func rawUDP(t *testing.T, addr net.Addr, raw string, wait time.Duration) (string, error) {
	t.Helper()
	c, err := net.Dial("udp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(raw)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 65535)
	_ = c.SetReadDeadline(time.Now().Add(wait))
	n, err := c.Read(buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// exchangeTCP sends raw on a new connection and returns the final
// response, or nil when the connection closed or none came within wait.
func exchangeTCP(t *testing.T, addr net.Addr, raw string, wait time.Duration) *sip.Response {
	t.Helper()
	c, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(raw)); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(wait))
	return readTCP(t, bufio.NewReader(c))
}

// readTCP reads responses from br until a final one, which it returns;
// nil when the connection closed or its read deadline passed first.
func readTCP(t *testing.T, br *bufio.Reader) *sip.Response {
	t.Helper()
	for {
		var msg bytes.Buffer
		length := 0
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return nil
			}
			msg.WriteString(line)
			if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(strings.TrimSpace(k), "Content-Length") {
				length = atoi(strings.TrimSpace(v))
			}
			if line == "\r\n" {
				break
			}
		}
		body := make([]byte, length)
		if _, err := io.ReadFull(br, body); err != nil {
			return nil
		}
		msg.Write(body)
		res := parseResponse(t, msg.Bytes())
		if res.StatusCode >= 200 {
			return res
		}
	}
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0
		}
		n = n*10 + int(c-'0')
	}
	return n
}

func parseResponse(t *testing.T, raw []byte) *sip.Response {
	t.Helper()
	msg, err := sip.NewParser().ParseSIP(raw)
	if err != nil {
		t.Fatalf("response does not parse: %v\n%s", err, raw)
	}
	res, ok := msg.(*sip.Response)
	if !ok {
		t.Fatalf("got a request, not a response:\n%s", raw)
	}
	return res
}

// logLines are the JSON records of the stack's log with msg.
func logLines(t *testing.T, logs string, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for line := range strings.SplitSeq(strings.TrimSpace(logs), "\n") {
		if line == "" {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line is not JSON: %v\n%s", err, line)
		}
		if rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}

// waitLog polls the stack's log until it has n records with msg.
func waitLog(t *testing.T, s *testStack, msg string, n int) []map[string]any {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := logLines(t, s.log.String(), msg)
		if len(got) >= n || time.Now().After(deadline) {
			return got
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestStackUnparsableLogged: a request sipgo cannot parse, over UDP or
// TCP, is logged without its bytes (the secret the proxy added, the
// sender's body): its length only, at Warn, and a flood of them at most
// logLimitLines times a window.
func TestStackUnparsableLogged(t *testing.T) {
	const secretLine = "X-Deferpush-Secret: " + testSecret
	bad := []struct{ name, from, to string }{
		{"Content-Length abc", "Content-Length: 5", "Content-Length: abc"},
		{"Content-Length -1", "Content-Length: 5", "Content-Length: -1"},
		{"Content-Length too large", "Content-Length: 5", "Content-Length: 99999999999"},
		{"CSeq abc", "CSeq: 1 MESSAGE", "CSeq: abc MESSAGE"},
	}
	s := startStack(t, Trust{Secret: testSecret}, nil)
	udp := s.udp.LocalAddr()
	for i, b := range bad {
		raw := strings.Replace(request("UDP", "bad"+b.name[:4], secretLine), b.from, b.to, 1)
		if res := exchangeUDP(t, udp, raw, 200*time.Millisecond); res != nil {
			t.Logf("%s over UDP: %d", b.name, res.StatusCode)
		}
		raw = strings.Replace(request("TCP", "bad"+b.name[:4], secretLine), b.from, b.to, 1)
		_ = exchangeTCP(t, s.Addr(), raw, 2*time.Second) // closed by the stack
		recs := waitLog(t, s, "unparsable sip message dropped", 2*(i+1))
		if len(recs) != 2*(i+1) {
			t.Fatalf("%s: %d records of the unparsable requests, want %d", b.name, len(recs), 2*(i+1))
		}
	}
	logs := s.log.String()
	for _, leak := range []string{testSecret, "Deferpush-Secret", "hello", "user1@example.com", "MESSAGE sip:"} {
		if strings.Contains(logs, leak) {
			t.Errorf("the log holds %q", leak)
		}
	}
	if strings.Contains(logs, `"msg":"failed to parse"`) || strings.Contains(logs, `"data":`) {
		t.Errorf("sipgo's record is logged as it was")
	}
	for _, rec := range logLines(t, logs, "unparsable sip message dropped") {
		if rec["level"] != "WARN" || rec["data_len"] == nil || rec["component"] != "sip" {
			t.Errorf("record %v, want WARN with data_len and component sip", rec)
		}
	}

	// A flood: 3 windows' worth of bad datagrams, then an OPTIONS whose
	// answer shows every one before it was read.
	for range 3 * logLimitLines {
		raw := strings.Replace(request("UDP", "flood", secretLine), "Content-Length: 5", "Content-Length: abc", 1)
		c, err := net.Dial("udp", udp.String())
		if err != nil {
			t.Fatal(err)
		}
		_, _ = c.Write([]byte(raw))
		c.Close()
	}
	opts := strings.NewReplacer("MESSAGE sip:user2@example.com", "OPTIONS sip:127.0.0.1", "1 MESSAGE", "1 OPTIONS").Replace(request("UDP", "opts"))
	if res := exchangeUDP(t, udp, opts, 5*time.Second); res == nil || res.StatusCode != 200 {
		t.Fatalf("OPTIONS after the flood: %v", res)
	}
	if n := len(logLines(t, s.log.String(), "unparsable sip message dropped")); n > logLimitLines {
		t.Errorf("%d records of the unparsable requests in a window, want at most %d", n, logLimitLines)
	}
}

// TestStackCSeq: over the SIP ingress, a MESSAGE (or session INVITE)
// whose CSeq names another method is refused 400 with a Warning saying
// so, and nothing is stored (RFC 3261 §8.1.1.5). The same MESSAGE with
// its own method is stored.
//
// A request line's method in lower case ("message sip:...") cannot be
// refused here: sipgo's parser upper-cases it (sip/parser.go
// parseRequestLine) before deferpush sees the request, so it is stored
// as a MESSAGE; the hooks, which read the raw bytes, refuse it
// (TestDeferredRefuses).
func TestStackCSeq(t *testing.T) {
	s := startStack(t, Trust{Secret: testSecret}, nil)
	secret := "X-Deferpush-Secret: " + testSecret
	for _, tr := range []string{"UDP", "TCP"} {
		exchange := exchangeUDP
		addr := s.udp.LocalAddr()
		if tr == "TCP" {
			exchange, addr = exchangeTCP, s.Addr()
		}
		raw := strings.Replace(request(tr, "cseq"+tr, secret), "CSeq: 1 MESSAGE", "CSeq: 1 INVITE", 1)
		res := exchange(t, addr, raw, 5*time.Second)
		if res == nil || res.StatusCode != 400 {
			t.Fatalf("%s: MESSAGE with CSeq 1 INVITE: %v, want 400", tr, res)
		}
		if w := res.GetHeader("Warning"); w == nil || !strings.Contains(w.Value(), "CSeq method") {
			t.Errorf("%s: 400 Warning %v, want one naming the CSeq method", tr, w)
		}
		invite := strings.NewReplacer("MESSAGE sip:", "INVITE sip:", "CSeq: 1 MESSAGE", "CSeq: 1 MESSAGE").Replace(request(tr, "cseqinv"+tr, secret))
		if res := exchange(t, addr, invite, 5*time.Second); res == nil || res.StatusCode != 400 {
			t.Errorf("%s: INVITE with CSeq 1 MESSAGE: %v, want 400", tr, res)
		}
		// 0 is a CSeq number (RFC 3261 §8.1.1.5): this INVITE is refused
		// for its body (no MSRP offer), not for its CSeq.
		zero := strings.NewReplacer("MESSAGE sip:", "INVITE sip:", "CSeq: 1 MESSAGE", "CSeq: 0 INVITE").Replace(request(tr, "cseqzero"+tr, secret))
		if res := exchange(t, addr, zero, 5*time.Second); res == nil || res.GetHeader("Warning") != nil && strings.Contains(res.GetHeader("Warning").Value(), "CSeq") {
			t.Errorf("%s: INVITE with CSeq 0: %v, want an answer that is not about the CSeq", tr, res)
		}
		for i, cseq := range []string{"CSeq: 1 INVITE\r\nCSeq: 2 INVITE"} {
			invite := strings.NewReplacer("MESSAGE sip:", "INVITE sip:", "CSeq: 1 MESSAGE", cseq).Replace(request(tr, fmt.Sprintf("cseqinv%d%s", i, tr), secret))
			if res := exchange(t, addr, invite, 5*time.Second); res == nil || res.StatusCode != 400 {
				t.Errorf("%s: INVITE with %q: %v, want 400", tr, cseq, res)
			}
		}
		if n := len(s.engine.messages()); n != 0 {
			t.Fatalf("%s: stored %d, want 0", tr, n)
		}
	}
	if res := exchangeUDP(t, s.udp.LocalAddr(), request("UDP", "cseqok", secret), 5*time.Second); res == nil || res.StatusCode != 202 {
		t.Fatalf("MESSAGE with CSeq 1 MESSAGE: %v, want 202", res)
	}
	if n := len(s.engine.messages()); n != 1 {
		t.Errorf("stored %d, want 1", n)
	}
}

// other is request (a MESSAGE over UDP) with method in its request line
// and CSeq.
func other(method, branch string) string {
	return strings.NewReplacer("MESSAGE sip:", method+" sip:", "CSeq: 1 MESSAGE", "CSeq: 1 "+method).Replace(request("UDP", branch))
}

// TestStackRoutes: what deferpush does not serve is answered as RFC 3261
// says, not as sipgo would by default: 405 with Allow for a method it
// knows (§8.2.1), 501 for one it does not (§21.5.2), 481 for a CANCEL
// matching nothing (§9.2), 505 in SIP/2.0 for another SIP version
// (§8.2.2); with the ingress switched off, Allow leaves out MESSAGE and
// INVITE.
func TestStackRoutes(t *testing.T) {
	for _, off := range []bool{false, true} {
		allow := allowWithIngress
		if off {
			allow = allowWithoutIngress
		}
		s := startStack(t, Trust{Off: off, Secret: testSecret}, nil)
		tests := []struct {
			name, raw string
			code      int
			allow     bool
		}{
			{"REGISTER", other("REGISTER", "reg"), 405, true},
			{"SUBSCRIBE", other("SUBSCRIBE", "sub"), 405, true},
			{"NOTIFY", other("NOTIFY", "not"), 405, true},
			{"INFO", other("INFO", "info"), 405, true},
			{"UPDATE", other("UPDATE", "upd"), 405, true},
			{"PUBLISH", other("PUBLISH", "pub"), 405, true},
			{"unknown method", other("FOO", "foo"), 501, true},
			{"CANCEL of nothing", other("CANCEL", "cancel"), 481, false},
			{"OPTIONS", other("OPTIONS", "opt"), 200, true},
			{"SIP/3.0", strings.Replace(request("UDP", "v3"), " SIP/2.0\r\n", " SIP/3.0\r\n", 1), 505, false},
			{"SIP/3.0 REGISTER", strings.Replace(other("REGISTER", "v3reg"), " SIP/2.0\r\n", " SIP/3.0\r\n", 1), 505, false},
		}
		for _, tt := range tests {
			res := exchangeUDP(t, s.udp.LocalAddr(), tt.raw, 5*time.Second)
			if res == nil || res.StatusCode != tt.code || res.SipVersion != "SIP/2.0" {
				t.Errorf("off %v: %s: %v, want SIP/2.0 %d", off, tt.name, res, tt.code)
				continue
			}
			if a := res.GetHeader("Allow"); tt.allow && (a == nil || a.Value() != allow) {
				t.Errorf("off %v: %s: Allow %v, want %q", off, tt.name, a, allow)
			}
			if tt.code == 200 {
				for name, want := range map[string]string{"Accept": "application/sdp, */*", "Accept-Encoding": "identity",
					"Accept-Language": "en", "Supported": ""} {
					if h := res.GetHeader(name); h == nil || h.Value() != want {
						t.Errorf("off %v: OPTIONS %s %v, want %q (RFC 3261 §11.2)", off, name, h, want)
					}
				}
			}
		}
	}
}

// TestStackCancelPending: a CANCEL of an INVITE still pending is
// answered 200 and the INVITE 487, by sipgo's transaction layer, as
// before the stack answered other CANCELs 481.
func TestStackCancelPending(t *testing.T) {
	gate := make(chan struct{}) // the INVITE waits for the policy
	defer close(gate)
	s := startStack(t, Trust{Secret: testSecret}, &fakeEngine{gate: gate})
	const offer = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n" +
		"m=message 2855 TCP/MSRP *\r\na=accept-types:*\r\na=path:msrp://127.0.0.1:2855/s;tcp\r\n"
	invite := strings.NewReplacer("MESSAGE sip:", "INVITE sip:", "CSeq: 1 MESSAGE", "CSeq: 1 INVITE",
		"Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
		"Contact: <sip:user1@127.0.0.1:5999>\r\nContent-Type: application/sdp\r\nContent-Length: "+strconv.Itoa(len(offer))+"\r\n\r\n"+offer,
	).Replace(request("UDP", "pending", "X-Deferpush-Secret: "+testSecret))
	cancel := strings.NewReplacer("MESSAGE sip:", "CANCEL sip:", "CSeq: 1 MESSAGE", "CSeq: 1 CANCEL",
		"Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello", "Content-Length: 0\r\n\r\n").Replace(request("UDP", "pending"))

	c, err := net.Dial("udp", s.udp.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	read := func() *sip.Response {
		t.Helper()
		buf := make([]byte, 65535)
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("no response: %v", err)
		}
		return parseResponse(t, buf[:n])
	}
	if _, err := c.Write([]byte(invite)); err != nil {
		t.Fatal(err)
	}
	if res := read(); res.StatusCode != 100 {
		t.Fatalf("INVITE: %v, want 100 Trying first", res)
	}
	if _, err := c.Write([]byte(cancel)); err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for range 2 {
		res := read()
		got[string(res.CSeq().MethodName)] = res.StatusCode
	}
	if got["CANCEL"] != 200 || got["INVITE"] != 487 {
		t.Errorf("responses %v, want CANCEL 200 and INVITE 487", got)
	}
}

// TestStackMessageWithToTag: a MESSAGE inside a dialog (a To tag) matches
// none of deferpush's and gets 481 (RFC 3261 §12.2.2); nothing is stored.
// The same MESSAGE without the tag is stored.
func TestStackMessageWithToTag(t *testing.T) {
	s := startStack(t, Trust{Secret: testSecret}, nil)
	secret := "X-Deferpush-Secret: " + testSecret
	for _, tr := range []string{"UDP", "TCP"} {
		exchange := exchangeUDP
		addr := s.udp.LocalAddr()
		if tr == "TCP" {
			exchange, addr = exchangeTCP, s.Addr()
		}
		tagged := strings.Replace(request(tr, "totag"+tr, secret), "To: <sip:user2@example.com>", "To: <sip:user2@example.com>;tag=abc", 1)
		if res := exchange(t, addr, tagged, 5*time.Second); res == nil || res.StatusCode != 481 {
			t.Errorf("%s: MESSAGE with a To tag: %v, want 481", tr, res)
		}
		if res := exchange(t, addr, request(tr, "notag"+tr, secret), 5*time.Second); res == nil || res.StatusCode != 202 {
			t.Errorf("%s: MESSAGE without a To tag: %v, want 202", tr, res)
		}
	}
	s.engine.mu.Lock()
	defer s.engine.mu.Unlock()
	if len(s.engine.stored) != 2 {
		t.Errorf("%d messages stored, want the 2 without a To tag", len(s.engine.stored))
	}
}

// TestStackSessionAnswerMLines: a session INVITE offering audio, MSRP
// and video is answered with as many m-lines as the offer, in its order,
// the MSRP one ours and the others refused with port 0 (RFC 3264 §6); an
// MSRP offer over TLS to a plain listener is refused 488, not answered
// with plain MSRP.
func TestStackSessionAnswerMLines(t *testing.T) {
	s := startStack(t, Trust{Secret: testSecret}, nil)
	invite := sessionInvite
	msrpMedia := "m=message 2855 TCP/MSRP *\r\na=accept-types:text/plain\r\na=path:msrp://127.0.0.1:2855/s;tcp\r\na=setup:active\r\n"
	res := exchangeUDP(t, s.udp.LocalAddr(), invite("mlines", "m=audio 49170 RTP/AVP 0 8\r\n"+msrpMedia+"m=video 51372 RTP/AVP 31\r\n"), 5*time.Second)
	if res == nil || res.StatusCode != 200 {
		t.Fatalf("INVITE audio+MSRP+video: %v, want 200", res)
	}
	var mlines []string
	for _, l := range strings.Split(string(res.Body()), "\r\n") {
		if strings.HasPrefix(l, "m=") {
			mlines = append(mlines, l)
		}
	}
	if len(mlines) != 3 || mlines[0] != "m=audio 0 RTP/AVP 0 8" || !strings.HasPrefix(mlines[1], "m=message ") ||
		strings.HasPrefix(mlines[1], "m=message 0 ") || mlines[2] != "m=video 0 RTP/AVP 31" {
		t.Errorf("answer's m-lines %q, want audio refused, our MSRP, video refused", mlines)
	}
	if !strings.Contains(string(res.Body()), "a=path:msrp://") {
		t.Errorf("answer without our a=path:\n%s", res.Body())
	}
	tls := strings.Replace(strings.Replace(msrpMedia, "TCP/MSRP", "TCP/TLS/MSRP", 1), "msrp://", "msrps://", 1)
	if res := exchangeUDP(t, s.udp.LocalAddr(), invite("tls", tls), 5*time.Second); res == nil || res.StatusCode != 488 {
		t.Errorf("INVITE offering MSRP over TLS to a plain listener: %v, want 488", res)
	}
}

// sessionInvite is a session INVITE over UDP whose offer is media (the
// MSRP m-line and its attributes), its Via branch and Call-ID from branch.
func sessionInvite(branch, media string) string {
	offer := "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n" + media
	return strings.NewReplacer("MESSAGE sip:", "INVITE sip:", "CSeq: 1 MESSAGE", "CSeq: 1 INVITE",
		"Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
		"Contact: <sip:user1@127.0.0.1:5999>\r\nContent-Type: application/sdp\r\nContent-Length: "+strconv.Itoa(len(offer))+"\r\n\r\n"+offer,
	).Replace(request("UDP", branch, "X-Deferpush-Secret: "+testSecret))
}

// TestStackSessionDuplicateMessageID: in one ingress session, a SEND of a
// Message-ID already stored (the sender resending after a lost 200) is
// answered 200 again and not stored a second time (RFC 4975 §7.1.1: the
// Message-ID names the message within the session). A message whose
// store failed is stored when it is sent again, and another Message-ID
// is another message. Before the fix the duplicate was stored again.
func TestStackSessionDuplicateMessageID(t *testing.T) {
	s := startStack(t, Trust{Secret: testSecret}, nil)
	peer := "msrp://127.0.0.1:9/peer1234;tcp"
	res := exchangeUDP(t, s.udp.LocalAddr(), sessionInvite("dupid",
		"m=message 9 TCP/MSRP *\r\na=accept-types:text/plain\r\na=path:"+peer+"\r\na=setup:active\r\n"), 5*time.Second)
	if res == nil || res.StatusCode != 200 {
		t.Fatalf("INVITE: %v, want 200", res)
	}
	answer, err := sdp.Parse(res.Body())
	if err != nil {
		t.Fatalf("answer: %v\n%s", err, res.Body())
	}
	ours := answer.Path[len(answer.Path)-1]
	nc, err := net.Dial("tcp", ours.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	r, w := msrp.NewReader(nc, msrp.Limits{}), msrp.NewWriter(nc)
	tids := 0
	// send sends a one-chunk message and returns the status of its answer.
	send := func(id, body string) int {
		t.Helper()
		tids++
		f := &msrp.Frame{TID: fmt.Sprintf("tid%05d", tids), Method: "SEND", Header: []msrp.Header{
			{Name: msrp.HeaderToPath, Value: ours.String()}, {Name: msrp.HeaderFromPath, Value: peer},
			{Name: msrp.HeaderMessageID, Value: id}, {Name: msrp.HeaderByteRange, Value: fmt.Sprintf("1-%d/%d", len(body), len(body))},
			{Name: msrp.HeaderContentType, Value: "text/plain"},
		}, Body: []byte(body), Flag: msrp.FlagEnd}
		if err := w.WriteFrame(f); err != nil {
			t.Fatal(err)
		}
		got, err := r.ReadFrame()
		if err != nil {
			t.Fatalf("SEND %s: %v", id, err)
		}
		if got.IsRequest() || got.TID != f.TID {
			t.Fatalf("SEND %s: got %q, want its answer", id, got.String())
		}
		return got.Status
	}
	ids := func() []string {
		var out []string
		for _, m := range s.engine.messages() {
			out = append(out, m.MessageID)
		}
		return out
	}
	if got := send("first001", "hello"); got != 200 {
		t.Fatalf("SEND first001: %d, want 200", got)
	}
	if got := send("first001", "hello"); got != 200 {
		t.Errorf("SEND first001 again: %d, want 200", got)
	}
	s.engine.mu.Lock()
	s.engine.err = plugin.ErrUnavailable
	s.engine.mu.Unlock()
	if got := send("second01", "world"); got == 200 {
		t.Errorf("SEND second01, the store down: %d, want a refusal", got)
	}
	s.engine.mu.Lock()
	s.engine.err = nil
	s.engine.mu.Unlock()
	if got := send("second01", "world"); got != 200 {
		t.Errorf("SEND second01 again, the store up: %d, want 200", got)
	}
	if got := send("first001", "hello"); got != 200 {
		t.Errorf("SEND first001 a third time: %d, want 200", got)
	}
	if diff := cmp.Diff([]string{"first001", "second01"}, ids()); diff != "" {
		t.Errorf("stored Message-IDs (-want +got):\n%s", diff)
	}
}

// TestStackSessionOfferDirection: deferpush takes no re-INVITE, so a
// session INVITE whose MSRP stream carries no message to it now is
// refused 488 with a Warning saying why: a=setup:holdconn (RFC 4145 §4),
// an inactive stream, at media or session level (RFC 3264 §6.1), a
// recvonly one (the offerer only receives, §5.1). A sendonly offer (the
// offerer only sends) is answered 200 and recvonly (§6.1). Before the
// fix, holdconn was answered a=setup:passive and inactive, recvonly and
// sendonly without a direction (sendrecv), all 200.
func TestStackSessionOfferDirection(t *testing.T) {
	s := startStack(t, Trust{Secret: testSecret}, nil)
	media := func(setup, attrs string) string {
		return "m=message 2855 TCP/MSRP *\r\na=accept-types:text/plain\r\na=path:msrp://127.0.0.1:2855/s;tcp\r\na=setup:" + setup + "\r\n" + attrs
	}
	tests := []struct {
		name, offer string
		code        int
		warning     string // in the 488's Warning
		direction   string // the 200's a= direction line, "" none
	}{
		{"holdconn", media("holdconn", ""), 488, "holdconn", ""},
		{"inactive", media("active", "a=inactive\r\n"), 488, "inactive", ""},
		{"inactive session", "a=inactive\r\n" + media("active", ""), 488, "inactive", ""},
		{"recvonly", media("actpass", "a=recvonly\r\n"), 488, "recvonly", ""},
		{"sendonly", media("active", "a=sendonly\r\n"), 200, "", "a=recvonly"},
		{"sendrecv", media("active", "a=sendrecv\r\n"), 200, "", ""},
		{"no direction", media("active", ""), 200, "", ""},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := exchangeUDP(t, s.udp.LocalAddr(), sessionInvite(fmt.Sprintf("dir%d", i), tt.offer), 5*time.Second)
			if res == nil || res.StatusCode != tt.code {
				t.Fatalf("INVITE: %v, want %d", res, tt.code)
			}
			if tt.code != 200 {
				if w := res.GetHeader("Warning"); w == nil || !strings.Contains(w.Value(), tt.warning) {
					t.Errorf("488 Warning %v, want one naming %s", w, tt.warning)
				}
				return
			}
			var dirs []string
			for l := range strings.SplitSeq(string(res.Body()), "\r\n") {
				switch l {
				case "a=sendrecv", "a=sendonly", "a=recvonly", "a=inactive":
					dirs = append(dirs, l)
				}
			}
			want := []string(nil)
			if tt.direction != "" {
				want = []string{tt.direction}
			}
			if diff := cmp.Diff(want, dirs); diff != "" {
				t.Errorf("answer's direction (-want +got):\n%s\n%s", diff, res.Body())
			}
		})
	}
	if n := len(s.engine.messages()); n != 0 {
		t.Errorf("%d messages stored, want none", n)
	}
}

// TestStackReInvite: a re-INVITE within a session deferpush answered is
// refused 488 and leaves the session as it was (RFC 3261 §14.2); one
// whose dialog deferpush does not have gets 481 (§12.2.2).
func TestStackReInvite(t *testing.T) {
	s := startStack(t, Trust{Secret: testSecret}, nil)
	invite := func(branch string) string {
		return sessionInvite(branch, "m=message 2855 TCP/MSRP *\r\na=accept-types:text/plain\r\na=path:msrp://127.0.0.1:2855/s;tcp\r\na=setup:active\r\n")
	}
	res := exchangeUDP(t, s.udp.LocalAddr(), invite("reinv"), 5*time.Second)
	if res == nil || res.StatusCode != 200 {
		t.Fatalf("INVITE: %v, want 200", res)
	}
	tag, _ := res.To().Params.Get("tag")
	if tag == "" {
		t.Fatalf("200 without a To tag: %v", res)
	}
	reinvite := func(branch, toTag string) string {
		return strings.NewReplacer("Call-ID: "+branch+"@", "Call-ID: reinv@",
			"To: <sip:user2@example.com>", "To: <sip:user2@example.com>;tag="+toTag,
			"CSeq: 1 INVITE", "CSeq: 2 INVITE").Replace(invite(branch))
	}
	if res := exchangeUDP(t, s.udp.LocalAddr(), reinvite("reinv2", tag), 5*time.Second); res == nil || res.StatusCode != 488 {
		t.Errorf("re-INVITE in the session: %v, want 488", res)
	}
	if res := exchangeUDP(t, s.udp.LocalAddr(), reinvite("reinv3", tag+"x"), 5*time.Second); res == nil || res.StatusCode != 481 {
		t.Errorf("re-INVITE of no dialog: %v, want 481", res)
	}
}

// TestStackViaSentBy: a request deferpush sends carries the listener's
// port in its Via sent-by, with rport (RFC 3581), not the connection's
// ephemeral port; so a peer whose connection closed before it answered
// reaches the stack by connecting to the sent-by port (RFC 3261 §18.2.2)
// and the request gets its answer.
func TestStackViaSentBy(t *testing.T) {
	s := startStack(t, Trust{Secret: testSecret}, nil)
	peer, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	got := make(chan *sip.Request, 1)
	go func() {
		c, err := peer.Accept()
		if err != nil {
			return
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		var raw []byte
		buf := make([]byte, 4096)
		for !bytes.Contains(raw, []byte("\r\n\r\n")) {
			n, err := c.Read(buf)
			if err != nil {
				c.Close()
				return
			}
			raw = append(raw, buf[:n]...)
		}
		// Close the connection the request came on, then answer over a
		// new one to the sent-by address.
		c.Close()
		msg, err := sip.ParseMessage(raw)
		req, _ := msg.(*sip.Request)
		if err != nil || req == nil {
			return
		}
		got <- req
		v := req.Via()
		back, err := net.Dial("tcp", net.JoinHostPort(v.Host, strconv.Itoa(v.Port)))
		if err != nil {
			return
		}
		defer back.Close()
		io.WriteString(back, sip.NewResponseFromRequest(req, 200, "OK", nil).String())
		time.Sleep(time.Second)
	}()
	req := sip.NewRequest(sip.OPTIONS, sip.Uri{Scheme: "sip", Host: "127.0.0.1", Port: peer.Addr().(*net.TCPAddr).Port})
	req.SetTransport("TCP")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := s.Client().Do(ctx, req)
	if err != nil || res.StatusCode != 200 {
		t.Errorf("OPTIONS answered over a new connection to the sent-by port: %v %v, want 200", res, err)
	}
	select {
	case r := <-got:
		v := r.Via()
		if port := s.Addr().(*net.TCPAddr).Port; v.Host != "127.0.0.1" || v.Port != port || !v.Params.Has("rport") {
			t.Errorf("Via %s, want sent-by 127.0.0.1:%d with rport", v.Value(), port)
		}
	default:
		t.Error("the peer read no request")
	}
}

// TestStackLargeUDPResponse: a MESSAGE over UDP whose 202 is larger than
// 1300 octets (it echoes 13 Vias) is answered, and its retransmission
// gets the 202 again without storing the message twice (RFC 3261
// §17.2.1). sipgo refused to write a datagram over 1300 octets, response
// or not: the message was stored, never answered, and stored again at
// each retransmission.
func TestStackLargeUDPResponse(t *testing.T) {
	e := &fakeEngine{}
	s := startStack(t, Trust{Secret: testSecret}, e)
	var vias []string
	for i := range 12 {
		vias = append(vias, fmt.Sprintf("Via: SIP/2.0/UDP 192.0.2.%d:5060;branch=z9hG4bK-proxy-hop-%02d-%s", i+1, i, strings.Repeat("x", 60)))
	}
	raw := request("UDP", "bigresp", append([]string{"X-Deferpush-Secret: " + testSecret}, vias...)...)
	c, err := net.Dial("udp", s.udp.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 65535)
	for round := range 2 {
		if _, err := c.Write([]byte(raw)); err != nil {
			t.Fatal(err)
		}
		var res *sip.Response
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		for res == nil || res.StatusCode < 200 {
			n, err := c.Read(buf)
			if err != nil {
				t.Fatalf("round %d: no final answer: %v", round, err)
			}
			res = parseResponse(t, buf[:n])
			if res.StatusCode >= 200 && n <= 1300 {
				t.Fatalf("the 202 is %d octets; the test wants one over 1300", n)
			}
		}
		if res.StatusCode != 202 {
			t.Fatalf("round %d: %d, want 202", round, res.StatusCode)
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.stored) != 1 {
		t.Errorf("%d messages stored, want 1 (the retransmission is the same transaction)", len(e.stored))
	}
}

// TestStackRequire: a request requiring an extension is answered 420 Bad
// Extension with the tags in Unsupported, deferpush supporting none (RFC
// 3261 §8.2.2.3), and nothing is stored; a CANCEL is not refused for its
// Require. A session INVITE whose offer is not application/sdp gets 415
// with Accept: application/sdp (§8.2.3).
func TestStackRequire(t *testing.T) {
	e := &fakeEngine{}
	s := startStack(t, Trust{Secret: testSecret}, e)
	secret := "X-Deferpush-Secret: " + testSecret
	offer := "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n" +
		"m=message 2855 TCP/MSRP *\r\na=accept-types:text/plain\r\na=path:msrp://127.0.0.1:2855/s;tcp\r\na=setup:active\r\n"
	invite := func(branch, ct string, hdrs ...string) string {
		return strings.NewReplacer("MESSAGE sip:", "INVITE sip:", "CSeq: 1 MESSAGE", "CSeq: 1 INVITE",
			"Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
			"Contact: <sip:user1@127.0.0.1:5999>\r\nContent-Type: "+ct+"\r\nContent-Length: "+strconv.Itoa(len(offer))+"\r\n\r\n"+offer,
		).Replace(request("UDP", branch, append([]string{secret}, hdrs...)...))
	}
	tests := []struct {
		name        string
		raw         string
		code        int
		unsupported string
	}{
		{"MESSAGE", request("UDP", "req1", secret, "Require: foo"), 420, "foo"},
		{"INVITE", invite("req2", "application/sdp", "Require: 100rel, timer", "Require: x-y"), 420, "100rel, timer, x-y"},
		{"OPTIONS", strings.Replace(other("OPTIONS", "req3"), "CSeq: 1 OPTIONS\r\n", "CSeq: 1 OPTIONS\r\nRequire: foo\r\n", 1), 420, "foo"},
		{"CANCEL of nothing", strings.Replace(other("CANCEL", "req4"), "CSeq: 1 CANCEL\r\n", "CSeq: 1 CANCEL\r\nRequire: foo\r\n", 1), 481, ""},
		{"empty Require", request("UDP", "req5", secret, "Require: "), 202, ""},
		{"INVITE offer as text/plain", invite("req6", "text/plain"), 415, ""},
		// A stranger hears 403 first, whatever it requires.
		{"MESSAGE without the secret", request("UDP", "req7", "Require: foo"), 403, ""},
		{"a tag repeated", request("UDP", "req8", secret, "Require: a, a", "Require: a"), 420, "a"},
	}
	for _, tt := range tests {
		res := exchangeUDP(t, s.udp.LocalAddr(), tt.raw, 5*time.Second)
		if res == nil || res.StatusCode != tt.code {
			t.Errorf("%s: %v, want %d", tt.name, res, tt.code)
			continue
		}
		if u := res.GetHeader("Unsupported"); tt.unsupported != "" && (u == nil || u.Value() != tt.unsupported) {
			t.Errorf("%s: Unsupported %v, want %q", tt.name, u, tt.unsupported)
		}
		if tt.code == 415 {
			if a := res.GetHeader("Accept"); a == nil || a.Value() != "application/sdp" {
				t.Errorf("%s: Accept %v, want application/sdp", tt.name, a)
			}
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.stored) != 1 {
		t.Errorf("%d messages stored, want 1 (the MESSAGE with an empty Require)", len(e.stored))
	}
}

// TestStackUnparsableAnswered: a UDP request sipgo's parser refuses, whose
// Via, From, To, Call-ID and CSeq can still be read, is answered 400 with
// a Warning saying why (RFC 3261 §21.4.1; §18.3 for a Content-Length past
// the datagram), its Vias, From, To (tagged), Call-ID and CSeq echoed and
// the top Via given received and rport (RFC 3581); nothing is stored.
// Before, sipgo dropped it and the sender retransmitted for 32 s. An ACK,
// or a request whose CSeq cannot be matched, gets nothing.
func TestStackUnparsableAnswered(t *testing.T) {
	e := &fakeEngine{}
	s := startStack(t, Trust{Secret: testSecret}, e)
	const secretLine = "X-Deferpush-Secret: " + testSecret
	tests := []struct {
		name, from, to string
		answered       bool
	}{
		{"CSeq 2^31", "CSeq: 1 MESSAGE", "CSeq: 2147483648 MESSAGE", true},
		{"Max-Forwards abc", "Max-Forwards: 70", "Max-Forwards: abc", true},
		{"From without a URI", "From: <sip:user1@example.com>;tag=49583", "From: <garbage>;tag=49583", true},
		{"header line without a colon", "Max-Forwards: 70\r\n", "Max-Forwards: 70\r\nno colon here\r\n", true},
		{"Content-Length past the datagram", "Content-Length: 5", "Content-Length: 100", true},
		{"CSeq abc", "CSeq: 1 MESSAGE", "CSeq: abc MESSAGE", false},
		{"an ACK", "MESSAGE sip:user2@example.com SIP/2.0", "ACK sip:user2@example.com SIP/2.0", false},
	}
	for i, tt := range tests {
		raw := strings.Replace(request("UDP", fmt.Sprintf("unparsable%d", i), secretLine), tt.from, tt.to, 1)
		if tt.name == "an ACK" {
			raw = strings.Replace(strings.Replace(raw, "CSeq: 1 MESSAGE", "CSeq: 1 ACK", 1), "Max-Forwards: 70", "Max-Forwards: abc", 1)
		}
		got, err := rawUDP(t, s.udp.LocalAddr(), raw, time.Second)
		if !tt.answered {
			if err == nil {
				t.Errorf("%s: answered %q, want nothing", tt.name, got)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: no answer: %v", tt.name, err)
			continue
		}
		for _, want := range []string{"SIP/2.0 400 Bad Request\r\n", "Call-ID: unparsable" + strconv.Itoa(i) + "@127.0.0.1\r\n",
			";rport=", ";received=127.0.0.1", `Warning: 399 deferpush "malformed request: `, "\r\nTo: <sip:user2@example.com>;tag="} {
			if !strings.Contains(got, want) {
				t.Errorf("%s: answer lacks %q:\n%s", tt.name, want, got)
			}
		}
		if cseq := strings.SplitN(tt.to, ": ", 2)[1]; strings.HasPrefix(tt.to, "CSeq") && !strings.Contains(got, "\r\nCSeq: "+cseq+"\r\n") {
			t.Errorf("%s: answer without the request's CSeq %q:\n%s", tt.name, cseq, got)
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.stored) != 0 {
		t.Errorf("%d messages stored from unparsable requests", len(e.stored))
	}
}

func TestBadRequestRefusesInjection(t *testing.T) {
	src := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5999}
	ok := "MESSAGE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKx\r\nFrom: <sip:c@d>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 MESSAGE\r\n\r\n"
	if badRequest([]byte(ok), src, "why") == nil {
		t.Fatal("no 400 for a readable request")
	}
	// A Via list is echoed as one line: the answer is no larger than the
	// request (plus its Warning), not one line per entry.
	list := strings.Replace(ok, "Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKx", "v: x"+strings.Repeat(",x", 2000), 1)
	if res := badRequest([]byte(list), src, "why"); res == nil || len(res) > len(list)+200 || strings.Count(string(res), "Via: ") != 1 {
		t.Errorf("a Via list of 2001 entries: answered %d octets for %d, %d Via lines", len(res), len(list), strings.Count(string(res), "Via: "))
	}
	received := strings.Replace(ok, "branch=z9hG4bKx", "branch=z9hG4bKx;received=192.0.2.1", 1)
	if res := string(badRequest([]byte(received), src, "why")); strings.Count(res, "received=") != 1 {
		t.Errorf("a Via with received got another:\n%s", res)
	}
	for name, raw := range map[string]string{
		"two From headers":       strings.Replace(ok, "To: <sip:a@b>", "From: <sip:e@f>;tag=2\r\nTo: <sip:a@b>", 1),
		"bare LF in Call-ID":     strings.Replace(ok, "Call-ID: x", "Call-ID: x\nX-Evil: 1", 1),
		"no Call-ID":             strings.Replace(ok, "Call-ID: x\r\n", "", 1),
		"a response":             strings.Replace(ok, "MESSAGE sip:a@b SIP/2.0", "SIP/2.0 200 OK", 1),
		"CSeq of another method": strings.Replace(ok, "CSeq: 1 MESSAGE", "CSeq: 1 INVITE", 1),
		"SIP/3.0":                strings.Replace(ok, " SIP/2.0\r\n", " SIP/3.0\r\n", 1),
	} {
		if res := badRequest([]byte(raw), src, "why"); res != nil {
			t.Errorf("%s: answered\n%s", name, res)
		}
	}
}

// TestStackMergedRequest: over UDP, a copy of a MESSAGE whose transaction
// is going on (same From tag, Call-ID and CSeq, another Via branch: it
// forked upstream and came by two paths) gets 482 Loop Detected and is
// not stored again (RFC 3261 §8.2.2.2); a retransmission (same branch)
// gets the 202 again from the transaction; the next CSeq is a new
// message. Over TCP a transaction ends with its answer: the same copy
// sent after it is stored (a duplicate, never a loss).
func TestStackMergedRequest(t *testing.T) {
	e := &fakeEngine{}
	s := startStack(t, Trust{Secret: testSecret}, e)
	secret := "X-Deferpush-Secret: " + testSecret
	send := func(c net.Conn, raw string) int {
		t.Helper()
		if _, err := c.Write([]byte(raw)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 65535)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		for {
			n, err := c.Read(buf)
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			if res := parseResponse(t, buf[:n]); res.StatusCode >= 200 {
				return res.StatusCode
			}
		}
	}
	first := request("UDP", "merged1", secret)
	copyOf := strings.Replace(first, "branch=z9hG4bKmerged1", "branch=z9hG4bKmerged1-other-path", 1)
	next := strings.Replace(strings.Replace(first, "CSeq: 1 MESSAGE", "CSeq: 2 MESSAGE", 1), "branch=z9hG4bKmerged1", "branch=z9hG4bKmerged1-next", 1)
	c, err := net.Dial("udp", s.udp.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, step := range []struct {
		name, raw string
		want      int
	}{{"first", first, 202}, {"retransmission", first, 202}, {"copy by another path", copyOf, 482}, {"next CSeq", next, 202},
		// A proxy forking one MESSAGE to two offline users: another
		// Request-URI is another request, not a merge.
		{"forked to another user", strings.Replace(strings.Replace(first, "MESSAGE sip:user2@example.com", "MESSAGE sip:user3@example.com", 1),
			"branch=z9hG4bKmerged1", "branch=z9hG4bKmerged1-fork", 1), 202}} {
		if got := send(c, step.raw); got != step.want {
			t.Errorf("UDP %s: %d, want %d", step.name, got, step.want)
		}
	}
	tcpFirst := request("TCP", "merged2", secret)
	for i, raw := range []string{tcpFirst, strings.Replace(tcpFirst, "branch=z9hG4bKmerged2", "branch=z9hG4bKmerged2-again", 1)} {
		if res := exchangeTCP(t, s.Addr(), raw, 5*time.Second); res == nil || res.StatusCode != 202 {
			t.Errorf("TCP %d: %v, want 202", i, res)
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.stored) != 5 {
		t.Errorf("%d messages stored, want 5 (UDP: the first, the next CSeq, the fork; TCP: both)", len(e.stored))
	}
}

// TestStackUDPTooLarge: a UDP MESSAGE larger than sipgo's read buffer
// (32 KiB: it comes cut short) is answered 513 Message Too Large, saying
// to use TCP (RFC 3261 §21.5.14), where it was dropped silently; nothing
// is stored.
func TestStackUDPTooLarge(t *testing.T) {
	e := &fakeEngine{}
	s := startStack(t, Trust{Secret: testSecret}, e)
	body := strings.Repeat("x", 40<<10)
	withCL := strings.Replace(strings.Replace(request("UDP", "toolarge", "X-Deferpush-Secret: "+testSecret),
		"Content-Length: 5", "Content-Length: "+strconv.Itoa(len(body)), 1), "\r\n\r\nhello", "\r\n\r\n"+body, 1)
	// Without Content-Length (optional over UDP) the cut datagram parses.
	withoutCL := strings.Replace(strings.Replace(request("UDP", "toolarge2", "X-Deferpush-Secret: "+testSecret),
		"Content-Length: 5\r\n", "", 1), "\r\n\r\nhello", "\r\n\r\n"+body, 1)
	for _, raw := range []string{withCL, withoutCL} {
		got, err := rawUDP(t, s.udp.LocalAddr(), raw, 5*time.Second)
		if err != nil {
			t.Fatalf("no answer: %v", err)
		}
		if !strings.HasPrefix(got, "SIP/2.0 513 Message Too Large\r\n") || !strings.Contains(got, "send it over TCP") {
			t.Errorf("answer:\n%s\nwant 513 saying to use TCP", got)
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.stored) != 0 {
		t.Errorf("%d messages stored", len(e.stored))
	}
}

// TestStackTCPUnparsableAnswered: over TCP, a request sipgo's parser
// refuses is answered 400 with a Warning and one past sipgo's 65,535
// octets 513 (at once, when its header section says so), before the
// connection closes (RFC 3261 §18.3, §21.4.1, §21.5.14); a start line
// that is no request's gets no answer.
func TestStackTCPUnparsableAnswered(t *testing.T) {
	e := &fakeEngine{}
	s := startStack(t, Trust{Secret: testSecret}, e)
	const secretLine = "X-Deferpush-Secret: " + testSecret
	pad := strings.Repeat("X-Pad: "+strings.Repeat("p", 100)+"\r\n", 700) // 75 KB of header lines
	tests := []struct {
		name, raw string
		want      []string // final responses, in order; none: closed unanswered
	}{
		{"Max-Forwards abc", strings.Replace(request("TCP", "tcpbad1", secretLine), "Max-Forwards: 70", "Max-Forwards: abc", 1),
			[]string{"400"}},
		{"header line without a colon", strings.Replace(request("TCP", "tcpbad2", secretLine), "Max-Forwards: 70\r\n", "Max-Forwards: 70\r\nno colon here\r\n", 1),
			[]string{"400"}},
		// Only the header section is sent: the 513 comes without the body.
		{"Content-Length 70000", strings.TrimSuffix(strings.Replace(request("TCP", "tcpbig", secretLine), "Content-Length: 5", "Content-Length: 70000", 1), "hello"),
			[]string{"513"}},
		{"header section over 64 KiB", strings.Replace(request("TCP", "tcphead", secretLine), "Content-Type:", pad+"Content-Type:", 1),
			[]string{"513"}},
		{"no request line", "HELLO THERE\r\nVia: x\r\n\r\n", nil},
	}
	for _, tt := range tests {
		c, err := net.Dial("tcp", s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte(tt.raw)); err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
		br := bufio.NewReader(c)
		var got []string
		for {
			res := readTCP(t, br)
			if res == nil {
				break
			}
			got = append(got, strconv.Itoa(res.StatusCode))
			if res.StatusCode == 400 || res.StatusCode == 513 {
				w := res.GetHeader("Warning")
				if w == nil || !strings.HasPrefix(w.Value(), `399 deferpush "`) {
					t.Errorf("%s: %d without deferpush's Warning: %v", tt.name, res.StatusCode, w)
				}
				if res.CallID() == nil || !strings.HasPrefix(res.CallID().Value(), "tcp") {
					t.Errorf("%s: %d without the request's Call-ID", tt.name, res.StatusCode)
				}
			}
		}
		// The connection ended (EOF), it did not time out.
		if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
			t.Errorf("%s: connection not closed after the answers: %v", tt.name, err)
		}
		c.Close()
		if strings.Join(got, ",") != strings.Join(tt.want, ",") {
			t.Errorf("%s: answers %v, want %v", tt.name, got, tt.want)
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.stored) != 0 {
		t.Errorf("%d messages stored from refused requests", len(e.stored))
	}
}
