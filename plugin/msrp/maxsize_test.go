package msrp

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

// TestMaxMessageSizeBoundaries: Config.MaxMessageSize is the largest
// message taken. A first chunk whose Byte-Range announces a larger total
// is refused 413 at once, and so is every later chunk of that message; a
// total of exactly the limit is taken; without a total, the chunk that
// goes past the limit is refused, one that ends on it is taken. A total
// past any int64 is too large as well, not malformed.
func TestMaxMessageSizeBoundaries(t *testing.T) {
	const limit = 100
	l := startListener(t, ListenerConfig{})
	in := newInbox()
	s := newSession(t, Config{Local: l.URI(), Handler: in, MaxMessageSize: limit})
	if err := l.Add(s, nil); err != nil {
		t.Fatal(err)
	}
	to, from := s.URI().String(), "msrp://127.0.0.1:9/peer1234;tcp"
	p := dialRaw(t, l)
	tids := 0
	// chunk sends one chunk of message id and returns the status of its
	// answer.
	chunk := func(id string, start int, body string, total string, flag byte) int {
		t.Helper()
		tids++
		tid := fmt.Sprintf("tid%05d", tids)
		p.write("MSRP " + tid + " SEND\r\nTo-Path: " + to + "\r\nFrom-Path: " + from + "\r\n" +
			"Message-ID: " + id + "\r\n" +
			fmt.Sprintf("Byte-Range: %d-%d/%s\r\n", start, start+len(body)-1, total) +
			"Content-Type: text/plain\r\n\r\n" + body + "\r\n-------" + tid + string(flag) + "\r\n")
		f := p.read()
		if f.IsRequest() || f.TID != tid {
			t.Fatalf("%s: got %q, want the answer to %s", id, f.String(), tid)
		}
		return f.Status
	}
	body := func(n int) string { return strings.Repeat("x", n) }
	want := func(what string, got, want int) {
		t.Helper()
		if got != want {
			t.Errorf("%s: %d, want %d", what, got, want)
		}
	}
	delivered := func(what string, n int) {
		t.Helper()
		if m := in.next(t); len(m.Body) != n || !bytes.Equal(m.Body, []byte(body(n))) {
			t.Errorf("%s: delivered %d octets, want %d", what, len(m.Body), n)
		}
	}

	want("first chunk announcing limit+1 octets", chunk("over1", 1, body(10), fmt.Sprint(limit+1), FlagMore), StatusStopSending)
	want("the next chunk of that message", chunk("over1", 11, body(10), fmt.Sprint(limit+1), FlagMore), StatusStopSending)

	// RFC 4975's grammar bounds no count (1*DIGIT): a total larger than
	// any int64 is as valid as 10^15, and as much too large (413); only
	// a total that is not a count is malformed (400).
	for _, total := range []string{"1000000000000000", "4611686018427387904", "9223372036854775808", "000000000000000000000000000001000", strings.Repeat("9", 40)} {
		want("first chunk announcing a total of "+total, chunk("huge"+total[:3], 1, body(5), total, FlagMore), StatusStopSending)
	}
	for _, total := range []string{"1e9", "-3", "+5", "5 ", ""} {
		want(fmt.Sprintf("first chunk announcing a total of %q", total), chunk("bad1", 1, body(5), total, FlagMore), StatusBadRequest)
	}

	want("first chunk announcing exactly the limit", chunk("exact1", 1, body(50), fmt.Sprint(limit), FlagMore), StatusOK)
	want("last chunk of exactly the limit", chunk("exact1", 51, body(50), fmt.Sprint(limit), FlagEnd), StatusOK)
	delivered("a message of exactly the limit", limit)

	want("first chunk, total unknown", chunk("open1", 1, body(60), "*", FlagMore), StatusOK)
	want("a chunk past the limit, total unknown", chunk("open1", 61, body(60), "*", FlagEnd), StatusStopSending)

	want("first chunk, total unknown", chunk("open2", 1, body(60), "*", FlagMore), StatusOK)
	want("a chunk ending on the limit, total unknown", chunk("open2", 61, body(40), "*", FlagEnd), StatusOK)
	delivered("a message of exactly the limit, total unknown", limit)

	select {
	case m := <-in.got:
		t.Errorf("a refused message was delivered: %s, %d octets", m.ID, len(m.Body))
	default:
	}
}
