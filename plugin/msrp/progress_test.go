package msrp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"
)

// connectRaw connects a new session over loopback TCP to a peer driven by
// hand: the peer answers the binding SEND 200 and then runs behave, which
// may read (r) and write (nc, w) as it likes. The connection closes with
// the session.
func connectRaw(t *testing.T, cfg Config, behave func(nc net.Conn, r *Reader, w *Writer, bind *Frame)) *Session {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		r, w := NewReader(nc, Limits{}), NewWriter(nc)
		bind, err := r.ReadFrame()
		if err != nil {
			return
		}
		if err := w.WriteFrame(answer(bind, StatusOK)); err != nil {
			return
		}
		behave(nc, r, w, bind)
	}()
	cfg.Local = URI{Host: "127.0.0.1", Port: 9, Transport: "tcp"}
	s := newSession(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	peer := URI{Host: "127.0.0.1", Port: ln.Addr().(*net.TCPAddr).Port, SessionID: "peer1234", Transport: "tcp"}
	if err := s.Connect(ctx, []URI{peer}); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestTimeoutCountsOnlyOurProgress: a SEND's local 408 comes once none of
// our transactions has moved for the timeout, whatever the peer sends of
// its own meanwhile. PROBE5 F3: a client that never answered a SEND and
// trickled a SEND of its own, a body byte every third of the timeout,
// held the transaction (and the push) for as long as it trickled, as
// every byte read counted as progress. Requests of its own sent whole, or
// REPORTs about nothing in flight, did the same. The peer's answers to
// our chunks are progress, so a message answered chunk by chunk slowly
// still goes through, however long it takes in all.
func TestTimeoutCountsOnlyOurProgress(t *testing.T) {
	const (
		timeout = 500 * time.Millisecond
		// hostile is how long a hostile peer keeps it up: without the fix
		// the 408 came only after it.
		hostile = 12 * timeout
		step    = timeout / 4
	)
	// request is the start of a request of the peer's own, with a body.
	request := func(bind *Frame, tid, method string, extra string) string {
		return fmt.Sprintf("MSRP %s %s\r\nTo-Path: %s\r\nFrom-Path: %s\r\n%s", tid, method,
			bind.Value(HeaderFromPath), bind.Value(HeaderToPath), extra)
	}
	tests := []struct {
		name string
		// behave runs once the peer has read our SEND's first chunk, f.
		behave func(nc net.Conn, w *Writer, bind, f *Frame)
		want   int // 0: Send succeeds; else the status
	}{
		{
			name: "a SEND of its own trickled a body byte at a time",
			behave: func(nc net.Conn, _ *Writer, bind, _ *Frame) {
				head := request(bind, "trk1abcdef12", "SEND", "Message-ID: trk1msg\r\nByte-Range: 1-*/*\r\nContent-Type: text/plain\r\n\r\n")
				if _, err := nc.Write([]byte(head)); err != nil {
					return
				}
				for end := time.Now().Add(hostile); time.Now().Before(end); {
					time.Sleep(step)
					if _, err := nc.Write([]byte("x")); err != nil {
						return
					}
				}
			},
			want: StatusTimeout,
		},
		{
			name: "whole SENDs of its own, one after another",
			behave: func(nc net.Conn, _ *Writer, bind, _ *Frame) {
				for i := 0; time.Duration(i)*step < hostile; i++ {
					tid := fmt.Sprintf("own%08d", i)
					f := request(bind, tid, "SEND", fmt.Sprintf("Message-ID: m%08d\r\nByte-Range: 1-1/1\r\nContent-Type: text/plain\r\n\r\nx\r\n-------%s$\r\n", i, tid))
					if _, err := nc.Write([]byte(f)); err != nil {
						return
					}
					time.Sleep(step)
				}
			},
			want: StatusTimeout,
		},
		{
			name: "REPORTs about no message in flight",
			behave: func(nc net.Conn, _ *Writer, bind, _ *Frame) {
				for i := 0; time.Duration(i)*step < hostile; i++ {
					tid := fmt.Sprintf("rep%08d", i)
					f := request(bind, tid, "REPORT", fmt.Sprintf("Message-ID: nosuchmsg1\r\nByte-Range: 1-5/5\r\nStatus: 000 200 OK\r\n-------%s$\r\n", tid))
					if _, err := nc.Write([]byte(f)); err != nil {
						return
					}
					time.Sleep(step)
				}
			},
			want: StatusTimeout,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			first := make(chan struct{})
			s := connectRaw(t, Config{Timeout: timeout}, func(nc net.Conn, r *Reader, w *Writer, bind *Frame) {
				f, err := r.ReadFrame()
				if err != nil {
					return
				}
				close(first)
				go func() { // take our answers to its requests, never answering ours
					for {
						if _, err := r.ReadFrame(); err != nil {
							return
						}
					}
				}()
				tt.behave(nc, w, bind, f)
			})
			errc := make(chan error, 1)
			go func() {
				errc <- s.Send(context.Background(), Message{ContentType: "text/plain", Body: []byte("hello")})
			}()
			select {
			case <-first:
			case <-time.After(10 * time.Second):
				t.Fatal("our SEND did not reach the peer")
			}
			start := time.Now()
			var err error
			select {
			case err = <-errc:
			case <-time.After(hostile + 2*timeout):
				t.Fatalf("Send still waiting after %v: the peer's own traffic held it", time.Since(start))
			}
			took := time.Since(start)
			var se *StatusError
			if !errors.As(err, &se) || se.Code != tt.want {
				t.Fatalf("Send = %v, want a local %d", err, tt.want)
			}
			// The 408 comes one timeout after our SEND was written; on a
			// loaded machine a little later, never about the peer's pace.
			if took < timeout*9/10 || took > 3*timeout {
				t.Errorf("408 after %v, want after the %v timeout (the peer kept sending for %v)", took, timeout, hostile)
			}
		})
	}
}

// TestSlowAnswersAreProgress: over loopback TCP, a peer that answers each
// chunk of a message half a timeout after reading it takes three
// timeouts in all for six chunks, and the message goes through: each
// answer is progress of ours. (TestSlowLinkFollowsProgress does the same
// over net.Pipe with a window of 16.)
func TestSlowAnswersAreProgress(t *testing.T) {
	const timeout = 500 * time.Millisecond
	s := connectRaw(t, Config{Timeout: timeout, ChunkSize: 64}, func(_ net.Conn, r *Reader, w *Writer, _ *Frame) {
		for {
			f, err := r.ReadFrame()
			if err != nil {
				return
			}
			time.Sleep(timeout / 2)
			if err := w.WriteFrame(answer(f, StatusOK)); err != nil {
				return
			}
		}
	})
	start := time.Now()
	if err := s.Send(context.Background(), Message{ContentType: "text/plain", Body: make([]byte, 6*64)}); err != nil {
		t.Fatalf("six chunks answered half a timeout apart: %v after %v", err, time.Since(start))
	}
	if took := time.Since(start); took < 5*timeout/2 {
		t.Errorf("sent in %v; six answers half a timeout apart take about %v", took, 3*timeout)
	}
}

// TestBindCountsOnlyOurProgress: the binding SEND is a transaction of
// ours like any other: a peer that reads it and, instead of answering,
// trickles a SEND of its own fails Connect with a local 408 one timeout
// after the binding SEND went, where each byte of its used to hold
// Connect (and the push waiting on it) open.
func TestBindCountsOnlyOurProgress(t *testing.T) {
	const timeout = 500 * time.Millisecond
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		bind, err := NewReader(nc, Limits{}).ReadFrame()
		if err != nil {
			return
		}
		head := fmt.Sprintf("MSRP trk1abcdef12 SEND\r\nTo-Path: %s\r\nFrom-Path: %s\r\nMessage-ID: trk1msg\r\n"+
			"Byte-Range: 1-*/*\r\nContent-Type: text/plain\r\n\r\n", bind.Value(HeaderFromPath), bind.Value(HeaderToPath))
		if _, err := nc.Write([]byte(head)); err != nil {
			return
		}
		for end := time.Now().Add(12 * timeout); time.Now().Before(end); {
			time.Sleep(timeout / 4)
			if _, err := nc.Write([]byte("x")); err != nil {
				return
			}
		}
	}()
	s := newSession(t, Config{Local: URI{Host: "127.0.0.1", Port: 9, Transport: "tcp"}, Timeout: timeout})
	peer := URI{Host: "127.0.0.1", Port: ln.Addr().(*net.TCPAddr).Port, SessionID: "peer1234", Transport: "tcp"}
	start := time.Now()
	err = s.Connect(context.Background(), []URI{peer})
	took := time.Since(start)
	var se *StatusError
	if !errors.As(err, &se) || se.Code != StatusTimeout {
		t.Fatalf("Connect = %v after %v, want a local 408", err, took)
	}
	if took > 3*timeout {
		t.Errorf("408 after %v, want after the %v timeout (the peer kept trickling for %v)", took, timeout, 12*timeout)
	}
}
