package msrp

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// startListener runs a Listener on a free loopback port for the test.
func startListener(t testing.TB, cfg ListenerConfig) *Listener {
	t.Helper()
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	l, err := NewListener(cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- l.Run(context.Background()) }()
	t.Cleanup(func() {
		l.Close()
		if err := <-done; err != nil {
			t.Errorf("listener Run: %v", err)
		}
	})
	return l
}

// inbox collects the messages a Handler receives and answers with code.
type inbox struct {
	got  chan *Message
	code int // 0: 200
}

func newInbox() *inbox { return &inbox{got: make(chan *Message, 1024)} }

func (b *inbox) ServeMSRP(ctx context.Context, s *Session, m *Message) error {
	b.got <- m
	if b.code != 0 {
		return Status(b.code)
	}
	return nil
}

func (b *inbox) next(t testing.TB) *Message {
	t.Helper()
	select {
	case m := <-b.got:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no message delivered")
		return nil
	}
}

var _ Handler = (*inbox)(nil)

func newSession(t testing.TB, cfg Config) *Session {
	t.Helper()
	s, err := NewSession(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// pair returns an active session a connected to a passive session b served
// by l.
func pair(t testing.TB, l *Listener, acfg, bcfg Config) (a, b *Session) {
	t.Helper()
	if acfg.Local.Host == "" {
		acfg.Local = URI{Host: "127.0.0.1", Port: 9, Transport: "tcp"}
	}
	bcfg.Local = l.URI()
	a = newSession(t, acfg)
	b = newSession(t, bcfg)
	if err := l.Add(b, []URI{a.URI()}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Connect(ctx, []URI{b.URI()}); err != nil {
		t.Fatal(err)
	}
	return a, b
}

func randomBody(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func TestSendBothDirections(t *testing.T) {
	l := startListener(t, ListenerConfig{})
	tests := []struct {
		name    string
		size    int
		chunk   int
		report  bool
		reverse bool // passive side sends
	}{
		{"single chunk", 100, 0, false, false},
		{"empty body", 0, 0, false, false},
		{"exact chunk", 2048, 0, false, false},
		{"multi chunk", 64 << 10, 0, false, false},
		{"multi chunk with report", 64<<10 + 1, 1000, true, false},
		{"passive to active single", 100, 0, true, true},
		{"passive to active multi", 10000, 0, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ain, bin := newInbox(), newInbox()
			a, b := pair(t, l, Config{Handler: ain, ChunkSize: tt.chunk}, Config{Handler: bin, ChunkSize: tt.chunk})
			from, to := a, bin
			if tt.reverse {
				from, to = b, ain
			}
			want := &Message{ID: "msg-" + strings.ReplaceAll(tt.name, " ", "-"), ContentType: "application/octet-stream", Body: randomBody(tt.size), SuccessReport: tt.report}
			if err := from.Send(context.Background(), *want); err != nil {
				t.Fatalf("Send: %v", err)
			}
			got := to.next(t)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("delivered message (-want +got):\n%s", diff)
			}
		})
	}
}

func TestHandlerRefuses(t *testing.T) {
	l := startListener(t, ListenerConfig{})
	for _, code := range []int{StatusStopSending, StatusUnsupportedMedia, StatusForbidden} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			in := newInbox()
			in.code = code
			a, _ := pair(t, l, Config{}, Config{Handler: in})
			for _, size := range []int{10, 5000} {
				err := a.Send(context.Background(), Message{ContentType: "text/plain", Body: randomBody(size)})
				var se *StatusError
				if !errors.As(err, &se) || se.Code != code {
					t.Errorf("size %d: got %v, want status %d", size, err, code)
				}
			}
		})
	}
}

func TestNilHandlerAnswers403(t *testing.T) {
	l := startListener(t, ListenerConfig{})
	a, _ := pair(t, l, Config{}, Config{})
	err := a.Send(context.Background(), Message{ContentType: "text/plain", Body: []byte("hi")})
	var se *StatusError
	if !errors.As(err, &se) || se.Code != StatusForbidden {
		t.Errorf("got %v, want 403", err)
	}
}

func TestMessageTooLarge(t *testing.T) {
	l := startListener(t, ListenerConfig{})
	in := newInbox()
	a, _ := pair(t, l, Config{ChunkSize: 1000}, Config{Handler: in, MaxMessageSize: 4000})
	err := a.Send(context.Background(), Message{ContentType: "text/plain", Body: randomBody(10000)})
	var se *StatusError
	if !errors.As(err, &se) || se.Code != StatusStopSending {
		t.Fatalf("got %v, want 413", err)
	}
	// The session still works for a message within bounds.
	want := randomBody(3000)
	if err := a.Send(context.Background(), Message{ContentType: "text/plain", Body: want}); err != nil {
		t.Fatal(err)
	}
	if got := in.next(t); !bytes.Equal(got.Body, want) {
		t.Error("body differs")
	}
}

func TestConcurrentSends(t *testing.T) {
	l := startListener(t, ListenerConfig{})
	in := newInbox()
	a, _ := pair(t, l, Config{Window: 4, ChunkSize: 512}, Config{Handler: in})
	const n = 50
	want := make(map[string][]byte)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		id := fmt.Sprintf("concurrent%03d", i)
		body := randomBody(100 + i*37)
		want[id] = body
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- a.Send(context.Background(), Message{ID: id, ContentType: "text/plain", Body: body})
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	got := make(map[string][]byte)
	for range n {
		m := in.next(t)
		got[m.ID] = m.Body
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("messages (-want +got):\n%s", diff)
	}
}

func TestResendReusesMessageID(t *testing.T) {
	l := startListener(t, ListenerConfig{})
	in := newInbox()
	a, _ := pair(t, l, Config{}, Config{Handler: in})
	m := Message{ID: "stored-42-abc", ContentType: "message/sip", Body: []byte("MESSAGE sip:bob@example.com SIP/2.0\r\n\r\n")}
	for range 2 {
		if err := a.Send(context.Background(), m); err != nil {
			t.Fatal(err)
		}
		if got := in.next(t); got.ID != m.ID {
			t.Errorf("got Message-ID %q, want %q", got.ID, m.ID)
		}
	}
}

func TestCloseFailsPendingSend(t *testing.T) {
	l := startListener(t, ListenerConfig{})
	a := newSession(t, Config{Local: URI{Host: "127.0.0.1", Port: 9}})
	b := newSession(t, Config{Local: l.URI()})
	if err := l.Add(b, nil); err != nil {
		t.Fatal(err)
	}
	// b is passive and nobody connects: Send waits until Close.
	errc := make(chan error, 1)
	go func() { errc <- b.Send(context.Background(), Message{ContentType: "text/plain", Body: []byte("x")}) }()
	b.Close()
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Errorf("got %v, want ErrClosed", err)
	}
	_ = a
}

func TestSendContextCanceled(t *testing.T) {
	l := startListener(t, ListenerConfig{})
	b := newSession(t, Config{Local: l.URI()})
	if err := l.Add(b, nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := b.Send(ctx, Message{ContentType: "text/plain", Body: []byte("x")})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("got %v, want context.Canceled", err)
	}
}

// rawPeer is a hand-driven MSRP peer on a plain TCP connection.
type rawPeer struct {
	t  testing.TB
	nc net.Conn
	r  *Reader
}

func dialRaw(t testing.TB, l *Listener) *rawPeer {
	t.Helper()
	nc, err := net.Dial("tcp", l.URI().Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	return &rawPeer{t: t, nc: nc, r: NewReader(nc, Limits{})}
}

func (p *rawPeer) write(s string) {
	p.t.Helper()
	if _, err := p.nc.Write([]byte(s)); err != nil {
		p.t.Fatal(err)
	}
}

func (p *rawPeer) read() *Frame {
	p.t.Helper()
	f, err := p.r.ReadFrame()
	if err != nil {
		p.t.Fatalf("read: %v", err)
	}
	return f
}

// expectClosed checks that the endpoint closed the connection.
func (p *rawPeer) expectClosed() {
	p.t.Helper()
	f, err := p.r.ReadFrame()
	if err == nil {
		p.t.Fatalf("got frame %q, want the connection closed", f.String())
	}
}

func send(tid, to, from, extra, body string) string {
	s := "MSRP " + tid + " SEND\r\nTo-Path: " + to + "\r\nFrom-Path: " + from + "\r\n" + extra
	if body != "" {
		s += "Content-Type: text/plain\r\n\r\n" + body + "\r\n"
	}
	return s + "-------" + tid + "$\r\n"
}

// TestListenerBadInput sends malformed and misrouted frames to a listener
// and checks each answer, while another session on the same listener keeps
// working. Each answer comes from the URI the request was sent to, the
// first of its To-Path (RFC 4975 §7.2), session id included, and from the
// listener's URI only when there is no To-Path to read it from.
func TestListenerBadInput(t *testing.T) {
	l := startListener(t, ListenerConfig{Limits: Limits{MaxChunk: 4096}})
	goodIn := newInbox()
	good, _ := pair(t, l, Config{}, Config{Handler: goodIn})
	checkGood := func(t *testing.T) {
		t.Helper()
		body := randomBody(5000)
		if err := good.Send(context.Background(), Message{ContentType: "text/plain", Body: body}); err != nil {
			t.Fatalf("other session: %v", err)
		}
		if got := goodIn.next(t); !bytes.Equal(got.Body, body) {
			t.Fatal("other session: body differs")
		}
	}

	peerURI := "msrp://127.0.0.1:9/peer1234;tcp"
	nosuch := l.URI().String()[:len(l.URI().String())-4] + "/nosuchsession;tcp"
	tests := []struct {
		name   string
		frame  func(to string) string
		code   int // 0: no answer, connection closed
		closed bool
	}{
		{"unknown session", func(string) string {
			return send("t0001", nosuch, peerURI, "", "")
		}, 481, false},
		{"unknown session, bad Message-ID", func(string) string {
			return send("t0015", nosuch, peerURI, "Message-ID: m1\r\n", "hello")
		}, 400, false},
		{"To-Path of two URIs", func(to string) string {
			return send("t0016", nosuch+" "+to, peerURI, "Message-ID: m0016\r\n", "hello")
		}, 481, false},
		{"unknown method", func(to string) string {
			return "MSRP t0002 FOO\r\nTo-Path: " + to + "\r\nFrom-Path: " + peerURI + "\r\n-------t0002$\r\n"
		}, 501, false},
		{"bad Byte-Range", func(to string) string {
			return send("t0003", to, peerURI, "Message-ID: m0003\r\nByte-Range: 9-3/5\r\n", "hello")
		}, 400, false},
		{"paths out of order", func(to string) string {
			return "MSRP t0005 SEND\r\nFrom-Path: " + peerURI + "\r\nTo-Path: " + to + "\r\n-------t0005$\r\n"
		}, 400, false},
		{"To-Path missing", func(to string) string {
			return "MSRP t0006 SEND\r\nFrom-Path: " + peerURI + "\r\n-------t0006$\r\n"
		}, 400, false},
		{"oversize chunk", func(to string) string {
			return send("t0007", to, peerURI, "Message-ID: m0007\r\n", strings.Repeat("z", 5000))
		}, 413, false},
		{"oversize header", func(to string) string {
			return send("t0008", to, peerURI, "X-Big: "+strings.Repeat("h", 5000)+"\r\n", "")
		}, 400, false},
		{"no Message-ID", func(to string) string {
			return send("t0009", to, peerURI, "", "hello")
		}, 400, false},
		{"bodiless, no Message-ID", func(to string) string {
			return send("t0014", to, peerURI, "", "")
		}, 400, false},
		{"mismatched end-line", func(to string) string {
			return "MSRP t0010 SEND\r\nTo-Path: " + to + "\r\nFrom-Path: " + peerURI + "\r\n-------t9999$\r\n"
		}, 400, true},
		{"From-Path missing", func(to string) string {
			return "MSRP t0011 SEND\r\nTo-Path: " + to + "\r\n-------t0011$\r\n"
		}, 0, true},
		{"LF-only", func(to string) string {
			return strings.ReplaceAll(send("t0012", to, peerURI, "", ""), "\r\n", "\n")
		}, 0, true},
		{"missing end-line then close", func(to string) string {
			return "MSRP t0013 SEND\r\nTo-Path: " + to + "\r\nFrom-Path: " + peerURI + "\r\nMessage-ID: m0013\r\nContent-Type: text/plain\r\n\r\nno end"
		}, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSession(t, Config{Local: l.URI(), Handler: newInbox()})
			if err := l.Add(s, nil); err != nil {
				t.Fatal(err)
			}
			to := s.URI().String()
			p := dialRaw(t, l)
			p.write(tt.frame(to))
			if tt.name == "missing end-line then close" {
				p.nc.(*net.TCPConn).CloseWrite()
			}
			if tt.code != 0 {
				f := p.read()
				if f.IsRequest() || f.Status != tt.code {
					t.Errorf("got %q, want status %d", f.String(), tt.code)
				}
				if f.Value(HeaderToPath) != peerURI && tt.name != "unknown session" {
					t.Errorf("answer To-Path = %q, want %q", f.Value(HeaderToPath), peerURI)
				}
				want := to
				switch tt.name {
				case "To-Path missing":
					want = l.URI().String()
				case "unknown session", "unknown session, bad Message-ID", "To-Path of two URIs":
					want = nosuch
				}
				if got := f.Value(HeaderFromPath); got != want {
					t.Errorf("answer From-Path = %q, want %q", got, want)
				}
			}
			if tt.closed {
				p.expectClosed()
			} else {
				// The connection still serves: a good message now gets 200.
				p.write(send("t0100", to, peerURI, "Message-ID: m0100\r\n", "still here"))
				if f := p.read(); f.Status != StatusOK || f.TID != "t0100" {
					t.Errorf("after bad frame: got %q, want 200", f.String())
				}
			}
			checkGood(t)
		})
	}
}

func TestSessionAlreadyBound(t *testing.T) {
	l := startListener(t, ListenerConfig{})
	in := newInbox()
	_, b := pair(t, l, Config{}, Config{Handler: in})
	p := dialRaw(t, l)
	p.write(send("t0200", b.URI().String(), "msrp://127.0.0.1:9/other;tcp", "", ""))
	if f := p.read(); f.Status != StatusSessionAlreadyBound {
		t.Errorf("got %q, want 506", f.String())
	}
}

func TestReportsAreNeverAnswered(t *testing.T) {
	l := startListener(t, ListenerConfig{})
	s := newSession(t, Config{Local: l.URI(), Handler: newInbox()})
	if err := l.Add(s, nil); err != nil {
		t.Fatal(err)
	}
	p := dialRaw(t, l)
	peer := "msrp://127.0.0.1:9/peer1234;tcp"
	// A REPORT for an unknown session, a bad REPORT, then a SEND: only the
	// SEND is answered.
	p.write("MSRP r0001 REPORT\r\nTo-Path: msrp://127.0.0.1:9/nosession;tcp\r\nFrom-Path: " + peer + "\r\nMessage-ID: m0001\r\nStatus: 000 200 OK\r\n-------r0001$\r\n")
	p.write("MSRP r0002 REPORT\r\nTo-Path: " + s.URI().String() + "\r\nFrom-Path: " + peer + "\r\nMessage-ID: m0001\r\nStatus: bogus\r\n-------r0002$\r\n")
	p.write("MSRP r0003 REPORT\r\nFrom-Path: " + peer + "\r\n-------r0003$\r\n")
	p.write(send("t0300", s.URI().String(), peer, "Message-ID: m0300\r\n", ""))
	if f := p.read(); f.TID != "t0300" || f.Status != StatusOK {
		t.Errorf("got %q, want the SEND's 200", f.String())
	}
}

func TestFailureReportNo(t *testing.T) {
	l := startListener(t, ListenerConfig{})
	in := newInbox()
	s := newSession(t, Config{Local: l.URI(), Handler: in})
	if err := l.Add(s, nil); err != nil {
		t.Fatal(err)
	}
	p := dialRaw(t, l)
	peer := "msrp://127.0.0.1:9/peer1234;tcp"
	p.write(send("t0400", s.URI().String(), peer, "Message-ID: m0400\r\nFailure-Report: no\r\n", "quiet"))
	p.write(send("t0401", s.URI().String(), peer, "Message-ID: m0401\r\n", ""))
	if f := p.read(); f.TID != "t0401" {
		t.Errorf("got %q, want only the answer to t0401", f.String())
	}
	if m := in.next(t); string(m.Body) != "quiet" {
		t.Errorf("got body %q", m.Body)
	}
}

func TestDuplicateResponsesIgnored(t *testing.T) {
	// A relay answers a SEND and so may the far end: the second answer
	// must be dropped quietly.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		r := NewReader(nc, Limits{})
		for {
			f, err := r.ReadFrame()
			if err != nil {
				return
			}
			ok := "MSRP " + f.TID + " 200 OK\r\nTo-Path: msrp://127.0.0.1:9/a;tcp\r\nFrom-Path: msrp://relay:1/r;tcp\r\n-------" + f.TID + "$\r\n"
			nc.Write([]byte(ok + ok))
		}
	}()
	addr := ln.Addr().(*net.TCPAddr)
	a := newSession(t, Config{Local: URI{Host: "127.0.0.1", Port: 9}})
	if err := a.Connect(context.Background(), []URI{{Host: "127.0.0.1", Port: addr.Port, SessionID: "farend", Transport: "tcp"}}); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := a.Send(context.Background(), Message{ContentType: "text/plain", Body: randomBody(5000)}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestUnboundConnectionTimesOut(t *testing.T) {
	l := startListener(t, ListenerConfig{Timeout: 200 * time.Millisecond})
	p := dialRaw(t, l)
	p.expectClosed()
}
