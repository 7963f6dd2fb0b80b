package ingress

import (
	"bufio"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// frameStream is SIP over TCP as a proxy may send it: keep-alives
// between messages (RFC 5626), a body holding an empty line, the
// compact form of Content-Length, spaces before its colon, a response.
// spans are the messages' [start, end) offsets.
func frameStream() (stream string, spans [][2]int) {
	parts := []struct {
		text string
		msg  bool
	}{
		{"\r\n\r\n", false},
		{request("TCP", "f1"), true},
		{"SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bKx\r\nCSeq: 1 INVITE\r\nl: 0\r\n\r\n", true},
		{"\r\n", false},
		{"MESSAGE sip:u@h SIP/2.0\r\nCSeq: 2 MESSAGE\r\ncontent-length : 12\r\n\r\nab\r\n\r\ncdefgh", true},
		{"ACK sip:u@h SIP/2.0\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n", true},
		{"\r\n\r\n", false},
		{"MESSAGE sip:u@h SIP/2.0\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", true},
	}
	for _, p := range parts {
		if p.msg {
			spans = append(spans, [2]int{len(stream), len(stream) + len(p.text)})
		}
		stream += p.text
	}
	return stream, spans
}

// TestSIPFramer feeds the stream in every split into two reads, byte by
// byte, and in random reads: after each read the framer says a message
// is open exactly when the offset is inside one, and that it began in
// that read exactly when its first octet was in it.
func TestSIPFramer(t *testing.T) {
	stream, spans := frameStream()
	want := func(from, to int) (open, began bool) {
		for _, s := range spans {
			if s[0] < to && to < s[1] {
				return true, from <= s[0]
			}
		}
		return false, false
	}
	check := func(t *testing.T, cuts []int) {
		t.Helper()
		f := newSIPFramer()
		from := 0
		for _, to := range append(cuts, len(stream)) {
			if to <= from {
				continue
			}
			open, began := f.Feed([]byte(stream[from:to]))
			if wo, wb := want(from, to); open != wo || began != wb {
				t.Fatalf("cuts %v: read [%d,%d) %q: open %v began %v, want %v %v", cuts, from, to, stream[from:to], open, began, wo, wb)
			}
			from = to
		}
	}
	for i := 0; i <= len(stream); i++ {
		check(t, []int{i})
	}
	var every []int
	for i := 1; i < len(stream); i++ {
		every = append(every, i)
	}
	check(t, every)
	rng := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		var cuts []int
		for at := 0; at < len(stream); at += 1 + rng.IntN(40) {
			cuts = append(cuts, at)
		}
		check(t, cuts)
	}
}

// TestSIPFramerOverflow: a header section past the bound stays open (sipgo
// refuses the message; the request timeout ends the connection).
func TestSIPFramerOverflow(t *testing.T) {
	f := newSIPFramer()
	if open, began := f.Feed([]byte("MESSAGE sip:u@h SIP/2.0\r\n")); !open || !began {
		t.Fatalf("start: open %v began %v", open, began)
	}
	line := []byte("X-Pad: " + strings.Repeat("a", 1000) + "\r\n")
	for range maxFrameHeader/len(line) + 1 {
		if open, began := f.Feed(line); !open || began {
			t.Fatalf("header: open %v began %v", open, began)
		}
	}
	if open, _ := f.Feed([]byte("Content-Length: 0\r\n\r\n")); !open {
		t.Fatal("a header section past the bound ended a message")
	}
}

// TestStackRequestTimeout: a TCP connection whose request trickles in
// past sip.request_timeout is closed; one between requests is not, even
// past that time after a request that gets no answer (an ACK), and a
// request in two reads within the time is answered.
func TestStackRequestTimeout(t *testing.T) {
	const timeout = time.Second
	s := startStackConfig(t, StackConfig{RequestTimeout: timeout, IdleTimeout: time.Minute}, Trust{Secret: testSecret}, nil)
	dial := func(t *testing.T) (net.Conn, *bufio.Reader) {
		t.Helper()
		c, err := net.Dial("tcp", s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c, bufio.NewReader(c)
	}
	options := other("OPTIONS", "opt")

	t.Run("trickle closed", func(t *testing.T) {
		c, br := dial(t)
		start := time.Now()
		closed := make(chan time.Duration, 1)
		go func() {
			_, err := br.ReadByte()
			if !errors.Is(err, io.EOF) {
				t.Errorf("read: %v, want EOF", err)
			}
			closed <- time.Since(start)
		}()
		for i := 0; ; i++ {
			select {
			case d := <-closed:
				if d < timeout || d > timeout+2*time.Second {
					t.Errorf("closed after %v, want %v from the first octet", d, timeout)
				}
				if lines := logLines(t, s.log.String(), "connection closed: a message still incomplete after the request timeout"); len(lines) != 1 {
					t.Errorf("%d log lines of the close, want 1", len(lines))
				}
				return
			case <-time.After(100 * time.Millisecond):
			}
			if time.Since(start) > 5*time.Second {
				t.Fatal("a trickling request held its connection past 5 s")
			}
			_, _ = c.Write([]byte{options[i%len(options)]})
		}
	})

	t.Run("idle after ACK kept", func(t *testing.T) {
		c, br := dial(t)
		ack := strings.NewReplacer("OPTIONS sip:", "ACK sip:", "CSeq: 1 OPTIONS", "CSeq: 1 ACK").Replace(options)
		if _, err := c.Write([]byte(ack)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(timeout + timeout/2)
		if _, err := c.Write([]byte(options)); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if res := readTCP(t, br); res == nil || res.StatusCode != 200 {
			t.Fatalf("OPTIONS after an ACK and %v: %v, want 200 on the same connection", timeout+timeout/2, res)
		}
	})

	t.Run("request in two reads answered", func(t *testing.T) {
		c, br := dial(t)
		half := len(options) / 2
		if _, err := c.Write([]byte(options[:half])); err != nil {
			t.Fatal(err)
		}
		time.Sleep(timeout / 2)
		if _, err := c.Write([]byte(options[half:])); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if res := readTCP(t, br); res == nil || res.StatusCode != 200 {
			t.Fatalf("OPTIONS in two reads %v apart: %v, want 200", timeout/2, res)
		}
	})
}

// TestSIPFramerRefusal: the framer answers only what sipgo refuses: a
// message declared past 65,535 octets at once, a header section that
// does not parse only when the server closed on it, a good one never,
// and the last message's header section, not an earlier one's.
func TestSIPFramerRefusal(t *testing.T) {
	src := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5999}
	msg := func(branch, extra, body string) string {
		return "MESSAGE sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bK" + branch + "\r\n" + extra +
			"From: <sip:c@d>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: " + branch + "\r\nCSeq: 1 MESSAGE\r\n" +
			"Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
	}
	feed := func(raw string) *sipFramer {
		f := newSIPFramer().(*sipFramer)
		f.Feed([]byte(raw))
		return f
	}
	first := func(b []byte) string { l, _, _ := strings.Cut(string(b), "\r\n"); return l }

	good := feed(msg("good", "", "hello"))
	if a := good.Refusal(src, true); a != nil {
		t.Errorf("a good message: answered %q", first(a))
	}
	bad := msg("bad", "Max-Forwards: abc\r\n", "hello")
	if a := feed(bad).Refusal(src, false); a != nil {
		t.Errorf("a bad header section before the server closed: answered %q", first(a))
	}
	if a := feed(bad).Refusal(src, true); first(a) != "SIP/2.0 400 Bad Request" || !strings.Contains(string(a), "Call-ID: bad\r\n") {
		t.Errorf("a bad header section: answered\n%s", a)
	}
	// Only the last header section is kept: a bad one followed in the same
	// read by a good one goes unanswered rather than answered wrongly.
	if a := feed(bad+msg("after", "", "hi")).Refusal(src, true); a != nil {
		t.Errorf("a good message after a bad one: answered the bad one's %q", first(a))
	}
	big := strings.Replace(msg("big", "", ""), "Content-Length: 0", "Content-Length: 65536", 1)
	if a := feed(big).Refusal(src, false); first(a) != "SIP/2.0 513 Message Too Large" || !strings.Contains(string(a), "Call-ID: big\r\n") {
		t.Errorf("a message declared too large: answered\n%s", a)
	}
	head := strings.Replace(msg("head", "", ""), "Content-Length: 0\r\n\r\n", strings.Repeat("X-Pad: "+strings.Repeat("a", 1000)+"\r\n", 70), 1)
	if a := feed(head).Refusal(src, false); first(a) != "SIP/2.0 513 Message Too Large" || !strings.Contains(string(a), "Call-ID: head\r\n") {
		t.Errorf("a header section past 64 KiB: answered\n%s", a)
	}
}
