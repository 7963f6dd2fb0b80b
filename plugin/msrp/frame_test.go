package msrp

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite golden files")

// readAll parses every frame of data.
func readAll(t *testing.T, data []byte) []*Frame {
	t.Helper()
	r := NewReader(bytes.NewReader(data), Limits{})
	var frames []*Frame
	for {
		f, err := r.ReadFrame()
		if err == io.EOF {
			return frames
		}
		if err != nil {
			t.Fatalf("frame %d: %v", len(frames)+1, err)
		}
		frames = append(frames, f)
	}
}

// goldenFrame is the readable form of a frame kept in the .json files.
type goldenFrame struct {
	TID     string      `json:"tid"`
	Method  string      `json:"method,omitempty"`
	Status  int         `json:"status,omitempty"`
	Comment string      `json:"comment,omitempty"`
	Header  [][2]string `json:"header"`
	Body    *string     `json:"body,omitempty"`
	Flag    string      `json:"flag"`
}

func toGolden(f *Frame) goldenFrame {
	g := goldenFrame{TID: f.TID, Method: f.Method, Status: f.Status, Comment: f.Comment, Flag: string(f.Flag)}
	for _, h := range f.Header {
		g.Header = append(g.Header, [2]string{h.Name, h.Value})
	}
	if f.Body != nil {
		b := string(f.Body)
		g.Body = &b
	}
	return g
}

// TestGolden parses the RFC 4975 §7 examples and the seed's two pushes,
// compares them with their golden parse and writes them back byte for byte.
func TestGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/golden/*.msrp")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden inputs: %v", err)
	}
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".msrp")
		t.Run(name, func(t *testing.T) {
			in, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			frames := readAll(t, in)
			var out []byte
			var got []goldenFrame
			for _, f := range frames {
				out = f.AppendTo(out)
				got = append(got, toGolden(f))
			}
			if !bytes.Equal(out, in) {
				t.Errorf("re-serialised frames differ from input:\n got %q\nwant %q", out, in)
			}
			gotJSON, _ := json.MarshalIndent(got, "", "  ")
			gotJSON = append(gotJSON, '\n')
			goldenFile := strings.TrimSuffix(file, ".msrp") + ".json"
			if *update {
				if err := os.WriteFile(goldenFile, gotJSON, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(goldenFile)
			if err != nil {
				t.Fatalf("%v (run go test -update)", err)
			}
			if diff := cmp.Diff(string(want), string(gotJSON)); diff != "" {
				t.Errorf("parse differs from %s (-want +got):\n%s", goldenFile, diff)
			}
		})
	}
}

func TestSeedEncapsulatedEndLineIsBody(t *testing.T) {
	in, err := os.ReadFile("testdata/golden/seed-2-multipart.msrp")
	if err != nil {
		t.Fatal(err)
	}
	frames := readAll(t, in)
	if len(frames) != 1 {
		t.Fatalf("got %d frames, want 1", len(frames))
	}
	if !bytes.Contains(frames[0].Body, []byte("-------dkei38sd$\r\n--boundary42--")) {
		t.Errorf("inner end-line not kept in body: %q", frames[0].Body)
	}
}

const (
	hdrs = "To-Path: msrp://b.example.com:2855/s2;tcp\r\nFrom-Path: msrp://a.example.com:2855/s1;tcp\r\n"
)

func TestReaderMalformed(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		code   int  // 0: a non-syntax error (stream ended)
		resync bool // the stream carries on
	}{
		{"missing end-line", "MSRP abcd SEND\r\n" + hdrs + "Message-ID: m123\r\nContent-Type: text/plain\r\n\r\nhello\r\n", 0, false},
		{"mismatched end-line no body", "MSRP abcd SEND\r\n" + hdrs + "-------wxyz$\r\n", 400, false},
		{"missing To-Path", "MSRP abcd SEND\r\nFrom-Path: msrp://a.example.com/s1;tcp\r\n-------abcd$\r\n", 400, true},
		{"missing From-Path", "MSRP abcd SEND\r\nTo-Path: msrp://a.example.com/s1;tcp\r\n-------abcd$\r\n", 400, true},
		{"paths out of order", "MSRP abcd SEND\r\nFrom-Path: msrp://a.example.com:2855/s1;tcp\r\nTo-Path: msrp://b.example.com:2855/s2;tcp\r\n-------abcd$\r\n", 400, true},
		{"bad path uri", "MSRP abcd SEND\r\nTo-Path: http://x/y\r\nFrom-Path: msrp://a.example.com/s1;tcp\r\n-------abcd$\r\n", 400, true},
		{"bad Byte-Range", "MSRP abcd SEND\r\n" + hdrs + "Message-ID: m123\r\nByte-Range: 5-2/10\r\nContent-Type: text/plain\r\n\r\nhello\r\n-------abcd$\r\n", 400, true},
		{"Byte-Range not a number", "MSRP abcd SEND\r\n" + hdrs + "Message-ID: m123\r\nByte-Range: x-5/5\r\nContent-Type: text/plain\r\n\r\nhello\r\n-------abcd$\r\n", 400, true},
		{"Byte-Range beyond total", "MSRP abcd SEND\r\n" + hdrs + "Message-ID: m123\r\nByte-Range: 1-5/3\r\nContent-Type: text/plain\r\n\r\nhello\r\n-------abcd$\r\n", 400, true},
		{"short Message-ID", "MSRP abcd SEND\r\n" + hdrs + "Message-ID: 452\r\n-------abcd$\r\n", 400, true},
		{"oversize header line", "MSRP abcd SEND\r\n" + hdrs + "X-Big: " + strings.Repeat("x", 5000) + "\r\n-------abcd$\r\n", 400, true},
		{"too many headers", "MSRP abcd SEND\r\n" + hdrs + strings.Repeat("X-H: v\r\n", 40) + "-------abcd$\r\n", 400, true},
		{"oversize chunk", "MSRP abcd SEND\r\n" + hdrs + "Message-ID: m123\r\nContent-Type: text/plain\r\n\r\n" + strings.Repeat("y", 3000) + "\r\n-------abcd$\r\n", 413, true},
		{"LF-only", strings.ReplaceAll("MSRP abcd SEND\r\n"+hdrs+"-------abcd$\r\n", "\r\n", "\n"), 400, false},
		{"LF-only header", "MSRP abcd SEND\r\nTo-Path: msrp://b.example.com/s2;tcp\n-------abcd$\r\n", 400, false},
		{"short transaction id", "MSRP ab SEND\r\n" + hdrs + "-------ab$\r\n", 400, false},
		{"not MSRP", "HTTP/1.1 200 OK\r\n\r\n", 400, false},
		{"header without colon", "MSRP abcd SEND\r\n" + hdrs + "MSRP efgh SEND\r\n-------abcd$\r\n", 400, false},
		{"lower-case method", "MSRP abcd send\r\n" + hdrs + "-------abcd$\r\n", 400, true},
		{"bad flag", "MSRP abcd SEND\r\n" + hdrs + "-------abcd!\r\n", 400, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			next := "MSRP zzzz 200 OK\r\n" + hdrs + "-------zzzz$\r\n"
			r := NewReader(strings.NewReader(tt.in+next), Limits{MaxChunk: 2048})
			_, err := r.ReadFrame()
			var se *SyntaxError
			if tt.code == 0 {
				if errors.As(err, &se) || err == nil {
					t.Fatalf("got %v, want a stream error", err)
				}
				return
			}
			if !errors.As(err, &se) {
				t.Fatalf("got %v, want *SyntaxError", err)
			}
			if se.Code != tt.code || se.Resync != tt.resync {
				t.Errorf("got code %d resync %v, want %d %v (%v)", se.Code, se.Resync, tt.code, tt.resync, err)
			}
			if !se.Resync {
				return
			}
			f, err := r.ReadFrame()
			if err != nil || f.TID != "zzzz" {
				t.Errorf("next frame: got %v, %v; want zzzz", f, err)
			}
		})
	}
}

// TestReaderChunked feeds frames one byte at a time, then in odd sizes.
func TestReaderSplitReads(t *testing.T) {
	in, err := os.ReadFile("testdata/golden/rfc4975-7.3-chunked.msrp")
	if err != nil {
		t.Fatal(err)
	}
	want := readAll(t, in)
	for _, n := range []int{1, 2, 7, 64} {
		r := NewReader(&slowReader{data: in, n: n}, Limits{})
		for i, w := range want {
			got, err := r.ReadFrame()
			if err != nil {
				t.Fatalf("read %d bytes at a time, frame %d: %v", n, i, err)
			}
			if diff := cmp.Diff(w, got); diff != "" {
				t.Errorf("read %d bytes at a time, frame %d (-want +got):\n%s", n, i, diff)
			}
		}
	}
}

type slowReader struct {
	data []byte
	n    int
}

func (s *slowReader) Read(p []byte) (int, error) {
	if len(s.data) == 0 {
		return 0, io.EOF
	}
	n := min(len(p), s.n, len(s.data))
	copy(p, s.data[:n])
	s.data = s.data[n:]
	return n, nil
}

func TestBodyEndLineNeedsLineStart(t *testing.T) {
	// An end-line that is not at the start of a line is body.
	body := "x-------abcd$\r\nmore"
	in := "MSRP abcd SEND\r\n" + hdrs + "Message-ID: m123\r\nContent-Type: text/plain\r\n\r\n" + body + "\r\n-------abcd$\r\n"
	f := readAll(t, []byte(in))[0]
	if string(f.Body) != body {
		t.Errorf("got body %q, want %q", f.Body, body)
	}
}

func TestByteRange(t *testing.T) {
	tests := []struct {
		in      string
		want    ByteRange
		wantErr bool
	}{
		{"1-25/25", ByteRange{1, 25, 25}, false},
		{"1-*/*", ByteRange{1, -1, -1}, false},
		{"2049-4096/*", ByteRange{2049, 4096, -1}, false},
		{"1-0/0", ByteRange{1, 0, 0}, false},
		{"0-5/5", ByteRange{}, true},
		{"3-1/5", ByteRange{}, true},
		{"1-6/5", ByteRange{}, true},
		{"1-5", ByteRange{}, true},
		{"-1-5/5", ByteRange{}, true},
		{"1-+5/5", ByteRange{}, true},
		{"1-", ByteRange{}, true},
		{"1-5/", ByteRange{}, true},
		{"1-5/ 5", ByteRange{}, true},
		// The grammar bounds no count (1*DIGIT): a count over 2^62 is
		// valid, held as 2^62 (String writes that).
		{"1-5/4611686018427387903", ByteRange{1, 5, 4611686018427387903}, false},
		{"1-5/4611686018427387904", ByteRange{1, 5, 1 << 62}, false},
		{"1-5/99999999999999999999999999", ByteRange{1, 5, 1 << 62}, false},
		{"1-99999999999999999999/*", ByteRange{1, 1 << 62, -1}, false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseByteRange(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
			if err == nil && got.Total < 1<<62 && got.End < 1<<62 && got.String() != tt.in {
				t.Errorf("String() = %q, want %q", got.String(), tt.in)
			}
		})
	}
}
