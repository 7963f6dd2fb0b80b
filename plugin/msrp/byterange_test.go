package msrp

import (
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestByteRangeMustDescribeChunk: a SEND whose Byte-Range does not
// describe its chunk is a malformed request, answered 400 (RFC 4975
// §7.1.1, §7.3), and its message is not delivered: a range end that is a
// number and is not the chunk's last octet, a chunk past the total, a last
// chunk ("$") ending before it, a total that changes between chunks, two
// Byte-Range headers. Well-formed messages on the same connection are
// delivered whole.
func TestByteRangeMustDescribeChunk(t *testing.T) {
	l := startListener(t, ListenerConfig{})
	in := newInbox()
	s := newSession(t, Config{Local: l.URI(), Handler: in})
	if err := l.Add(s, nil); err != nil {
		t.Fatal(err)
	}
	to, from := s.URI().String(), "msrp://127.0.0.1:9/peer1234;tcp"
	p := dialRaw(t, l)
	type chunk struct {
		ranges []string // Byte-Range values, in order
		body   string
		flag   byte
		want   int
	}
	tests := []struct {
		name   string
		chunks []chunk
		want   string // the body delivered, "" none
	}{
		{name: "end and total past the body", chunks: []chunk{{[]string{"1-100/100"}, "hello", '$', 400}}},
		{name: "end past the body, more to come", chunks: []chunk{{[]string{"1-10/20"}, "hello", '+', 400}}},
		{name: "end short of the body", chunks: []chunk{{[]string{"1-3/5"}, "hello", '$', 400}}},
		{name: "last chunk before the total", chunks: []chunk{{[]string{"1-*/10"}, "hello", '$', 400}}},
		{name: "body past the total", chunks: []chunk{{[]string{"1-*/3"}, "hello", '$', 400}}},
		{name: "total changes", chunks: []chunk{
			{[]string{"1-5/10"}, "hello", '+', 200},
			{[]string{"6-12/12"}, "world!!", '$', 400},
		}},
		{name: "two Byte-Range headers", chunks: []chunk{{[]string{"1-5/5", "1-3/3"}, "hello", '$', 400}}},
		{name: "two chunks", chunks: []chunk{
			{[]string{"1-5/10"}, "hello", '+', 200},
			{[]string{"6-10/10"}, "world", '$', 200},
		}, want: "helloworld"},
		{name: "unknown end and total", chunks: []chunk{{[]string{"1-*/*"}, "hello", '$', 200}}, want: "hello"},
		{name: "one chunk", chunks: []chunk{{[]string{"1-5/5"}, "hello", '$', 200}}, want: "hello"},
		// RFC 4975 §7.1's example counts the CRLF before the end-line: one
		// whole chunk 2 octets short of its range is taken as sent; 3 is not.
		{name: "the RFC's example count", chunks: []chunk{{[]string{"1-25/25"}, "Hey Bob, are you there?", '$', 200}}, want: "Hey Bob, are you there?"},
		{name: "3 octets short", chunks: []chunk{{[]string{"1-26/26"}, "Hey Bob, are you there?", '$', 400}}},
		{name: "2 short, more to come", chunks: []chunk{{[]string{"1-7/20"}, "hello", '+', 400}}},
	}
	tid := 0
	var want []string
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := fmt.Sprintf("msg%04d", i)
			for _, c := range tt.chunks {
				tid++
				tn := fmt.Sprintf("tid%05d", tid)
				req := "MSRP " + tn + " SEND\r\nTo-Path: " + to + "\r\nFrom-Path: " + from + "\r\nMessage-ID: " + id + "\r\n"
				for _, r := range c.ranges {
					req += "Byte-Range: " + r + "\r\n"
				}
				p.write(req + "Content-Type: text/plain\r\n\r\n" + c.body + "\r\n-------" + tn + string(c.flag) + "\r\n")
				if f := p.read(); f.TID != tn || f.Status != c.want {
					t.Errorf("Byte-Range %v, %q%c: got %q, want %d", c.ranges, c.body, c.flag, f.String(), c.want)
				}
			}
		})
		if tt.want != "" {
			want = append(want, tt.want)
		}
	}
	var got []string
	for range want {
		got = append(got, string(in.next(t).Body))
	}
	select {
	case m := <-in.got:
		got = append(got, string(m.Body))
	default:
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("delivered (-want +got):\n%s", diff)
	}
}
