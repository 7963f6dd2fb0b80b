package msrp

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// FuzzReader feeds arbitrary bytes to the Reader. It must never panic or
// loop, every frame it accepts must write back to bytes that parse to the
// same frame, and no body may exceed the chunk limit. The committed corpus
// under testdata/fuzz/FuzzReader runs with every go test.
func FuzzReader(f *testing.F) {
	f.Add([]byte("MSRP a786hjs2 SEND\r\nTo-Path: msrp://b.example.com:2855/s2;tcp\r\nFrom-Path: msrp://a.example.com/s1;tcp\r\nMessage-ID: 87652491\r\nByte-Range: 1-5/5\r\nContent-Type: text/plain\r\n\r\nhello\r\n-------a786hjs2$\r\n"))
	lim := Limits{MaxLine: 256, MaxHeaders: 8, MaxHeaderBytes: 1024, MaxChunk: 512}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReader(bytes.NewReader(data), lim)
		for range len(data) + 1 { // each frame consumes at least one byte
			fr, err := r.ReadFrame()
			var se *SyntaxError
			if errors.As(err, &se) {
				if se.Code != StatusBadRequest && se.Code != StatusStopSending {
					t.Fatalf("syntax error with code %d", se.Code)
				}
				if se.Resync {
					continue
				}
				return
			}
			if err != nil {
				if err != io.EOF && err != io.ErrUnexpectedEOF {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if len(fr.Body) > lim.MaxChunk {
				t.Fatalf("body of %d octets passed a %d limit", len(fr.Body), lim.MaxChunk)
			}
			wire := fr.AppendTo(nil)
			again, err := NewReader(bytes.NewReader(wire), Limits{}).ReadFrame()
			if err != nil {
				t.Fatalf("re-reading %q: %v", wire, err)
			}
			if diff := cmp.Diff(fr, again); diff != "" {
				t.Fatalf("round trip of %q (-first +second):\n%s", wire, diff)
			}
		}
		t.Fatal("reader made no progress")
	})
}
