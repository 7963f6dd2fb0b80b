package msrp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// reportingPeer is a hand-driven MSRP peer on a loopback TCP listener: it
// answers every SEND 200 and, once the last chunk of a message is in,
// sends the REPORTs of plan for it, in that order, on the same connection.
// It returns the URI to connect to and a function that, once the
// session's connection is closed, returns the Byte-Ranges of the chunks
// the peer got.
func reportingPeer(t *testing.T, plan []peerReport) (URI, func() []string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	done := make(chan struct{})
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	go func() {
		defer close(done)
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		ln.Close()
		r, w := NewReader(nc, Limits{}), NewWriter(nc)
		for {
			f, err := r.ReadFrame()
			if err != nil {
				return
			}
			if !f.IsRequest() || f.Method != "SEND" {
				continue
			}
			if f.Body != nil { // not the binding SEND
				got = append(got, f.Value(HeaderByteRange))
			}
			if err := w.WriteFrame(answer(f, StatusOK)); err != nil {
				return
			}
			if f.Body == nil || f.Flag != FlagEnd {
				continue
			}
			for _, p := range plan {
				status := p.status
				if status == "" {
					status = "000 200 OK"
				}
				rep := &Frame{TID: newIdent(), Method: "REPORT", Flag: FlagEnd, Header: []Header{
					{HeaderToPath, f.Value(HeaderFromPath)}, {HeaderFromPath, f.Value(HeaderToPath)},
					{HeaderMessageID, f.Value(HeaderMessageID)}, {HeaderByteRange, p.rng}, {HeaderStatus, status}}}
				if err := w.WriteFrame(rep); err != nil {
					return
				}
			}
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	return URI{Host: "127.0.0.1", Port: port, SessionID: "peer1234", Transport: "tcp"}, func() []string {
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("the peer did not see the connection close")
		}
		return got
	}
}

// peerReport is one REPORT a reportingPeer sends: its Byte-Range and
// Status ("" is 000 200 OK).
type peerReport struct{ rng, status string }

// TestPerChunkSuccessReports: a receiver may send a success REPORT per
// chunk, each naming the octets it covers (RFC 4975 §7.1.2, §7.3); Send
// adds them up and returns nil once they cover the whole message, in
// order, out of order, overlapping or repeated. REPORTs that leave a gap,
// or whose total is not the message's size, confirm nothing (ErrNoReport
// after the timeout); a failure REPORT for one chunk fails the message at
// once. Before, only a REPORT of 1-N/N confirmed, so a client reporting
// per chunk never had a message over the chunk size confirmed.
func TestPerChunkSuccessReports(t *testing.T) {
	const timeout = time.Second
	const size = 5327 // three chunks of 2048: 1-2048, 2049-4096, 4097-5327
	ok := func(rng string) peerReport { return peerReport{rng: rng} }
	tests := []struct {
		name string
		plan []peerReport
		want int // 0: success; -1: ErrNoReport; else a failure REPORT's status
	}{
		{"per chunk in order", []peerReport{ok("1-2048/5327"), ok("2049-4096/5327"), ok("4097-5327/5327")}, 0},
		{"per chunk out of order", []peerReport{ok("4097-5327/5327"), ok("1-2048/5327"), ok("2049-4096/5327")}, 0},
		{"last first, then middle, then first", []peerReport{ok("4097-5327/5327"), ok("2049-4096/5327"), ok("1-2048/5327")}, 0},
		{"overlapping and repeated", []peerReport{
			ok("1-3000/5327"), ok("2049-4096/5327"), ok("2049-4096/5327"), ok("1-2048/5327"), ok("3000-5327/5327"),
		}, 0},
		{"cumulative", []peerReport{ok("1-2048/5327"), ok("1-4096/5327"), ok("1-5327/5327")}, 0},
		{"whole", []peerReport{ok("1-5327/5327")}, 0},
		{"a chunk never reported", []peerReport{ok("1-2048/5327"), ok("4097-5327/5327")}, -1},
		{"one octet missing", []peerReport{ok("1-2048/5327"), ok("2050-4096/5327"), ok("4097-5327/5327")}, -1},
		{"last octet missing", []peerReport{ok("1-2048/5327"), ok("2049-4096/5327"), ok("4097-5326/5327")}, -1},
		{"a chunk reported with another total", []peerReport{ok("1-2048/5327"), ok("2049-4096/5328"), ok("4097-5327/5327")}, -1},
		{"a chunk reported with an unknown end", []peerReport{ok("1-2048/5327"), ok("2049-*/5327"), ok("4097-5327/5327")}, -1},
		{"one chunk failed", []peerReport{
			ok("1-2048/5327"), {"2049-4096/5327", "000 415 Unsupported Media Type"}, ok("4097-5327/5327"),
		}, StatusUnsupportedMedia},
		{"failure after the rest succeeded", []peerReport{
			ok("4097-5327/5327"), ok("2049-4096/5327"), {"1-2048/5327", "000 415 Unsupported Media Type"},
		}, StatusUnsupportedMedia},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			peer, chunks := reportingPeer(t, tt.plan)
			a := newSession(t, Config{Local: URI{Host: "127.0.0.1", Port: 9}, Timeout: timeout})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := a.Connect(ctx, []URI{peer}); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			err := a.Send(ctx, Message{ID: "perchunk1", ContentType: "text/plain", Body: randomBody(size), SuccessReport: true})
			elapsed := time.Since(start)
			var se *StatusError
			switch {
			case tt.want == 0 && err != nil:
				t.Errorf("Send = %v, want nil: the REPORTs cover the message", err)
			case tt.want == -1 && !errors.Is(err, ErrNoReport):
				t.Errorf("Send = %v, want ErrNoReport: the REPORTs leave part of the message unconfirmed", err)
			case tt.want > 0 && (!errors.As(err, &se) || se.Code != tt.want):
				t.Errorf("Send = %v, want the failure REPORT's %d", err, tt.want)
			case tt.want >= 0 && elapsed >= timeout:
				t.Errorf("Send took %v, want it done at the last REPORT, before the %v timeout", elapsed, timeout)
			}
			a.Close()
			want := []string{"1-2048/5327", "2049-4096/5327", "4097-5327/5327"}
			if diff := cmp.Diff(want, chunks()); diff != "" {
				t.Errorf("chunks the peer got (-want +got):\n%s", diff)
			}
		})
	}
}

// TestReportCover checks the union of the ranges success REPORTs
// confirm: merged as they come, never more than maxReportSpans separate
// ranges (a REPORT that would make one more is ignored, one that joins
// ranges still counts), ranges of another total ignored.
func TestReportCover(t *testing.T) {
	type step struct {
		rng    string
		whole  bool
		refuse bool
	}
	many := make([]step, 0, maxReportSpans+3)
	for i := range maxReportSpans {
		o := 2*i + 1 // odd octets, each a range of its own
		many = append(many, step{rng: fmt.Sprintf("%d-%d/1000", o, o)})
	}
	many = append(many,
		step{rng: "600-700/1000", refuse: true}, // one range too many
		step{rng: "2-2/1000"},                   // joins 1 and 3: one fewer
		step{rng: "600-700/1000"},               // room again
		step{rng: "1-1000/1000", whole: true},
	)
	tests := []struct {
		name  string
		size  int64
		steps []step
		want  []span // covered at the end
	}{
		{"in order", 10, []step{{rng: "1-4/10"}, {rng: "5-8/10"}, {rng: "9-10/10", whole: true}}, []span{{0, 10}}},
		{"out of order", 10, []step{{rng: "9-10/10"}, {rng: "1-4/10"}, {rng: "5-8/10", whole: true}}, []span{{0, 10}}},
		{"overlapping", 10, []step{{rng: "3-7/10"}, {rng: "1-4/10"}, {rng: "3-7/10"}, {rng: "6-10/10", whole: true}}, []span{{0, 10}}},
		{"inside one", 10, []step{{rng: "1-8/10"}, {rng: "2-3/10"}}, []span{{0, 8}}},
		{"gap", 10, []step{{rng: "1-4/10"}, {rng: "6-10/10"}, {rng: "1-4/10"}}, []span{{0, 4}, {5, 10}}},
		{"bridging several", 20, []step{{rng: "2-3/20"}, {rng: "6-7/20"}, {rng: "10-11/20"}, {rng: "15-20/20"}, {rng: "3-10/20"}}, []span{{1, 11}, {14, 20}}},
		{"empty range", 10, []step{{rng: "5-4/10"}}, nil},
		{"other total", 10, []step{{rng: "1-4/10"}, {rng: "5-11/11", refuse: true}, {rng: "5-*/10", refuse: true}}, []span{{0, 4}}},
		{"empty message", 0, []step{{rng: "1-0/0", whole: true}}, nil},
		{"many tiny ranges", 1000, many, []span{{0, 1000}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := &reportWait{size: tt.size}
			for _, s := range tt.steps {
				br, err := ParseByteRange(s.rng)
				if err != nil {
					t.Fatal(err)
				}
				whole, reason := w.cover(br)
				if whole != s.whole || (reason != "") != s.refuse {
					t.Errorf("%s: got whole %v, reason %q; want whole %v, refused %v", s.rng, whole, reason, s.whole, s.refuse)
				}
				if len(w.covered) > maxReportSpans {
					t.Fatalf("%s: %d ranges kept, want at most %d", s.rng, len(w.covered), maxReportSpans)
				}
			}
			if diff := cmp.Diff(tt.want, w.covered, cmp.AllowUnexported(span{})); diff != "" {
				t.Errorf("covered (-want +got):\n%s", diff)
			}
		})
	}
}
