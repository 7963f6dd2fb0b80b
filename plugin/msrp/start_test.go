package msrp

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestStartOrder checks that messages started one after another from one
// goroutine, without waiting in between, reach the receiver whole and in
// that order, multi-chunk ones included.
func TestStartOrder(t *testing.T) {
	l := startListener(t, ListenerConfig{})
	in := newInbox()
	a, _ := pair(t, l, Config{Window: 4, ChunkSize: 512}, Config{Handler: in})
	const n = 60
	var want []string
	var waits []func() error
	for i := range n {
		m := Message{ID: fmt.Sprintf("ordered%03d", i), ContentType: "text/plain", Body: randomBody(100 + i*61)}
		wait, err := a.Start(context.Background(), m)
		if err != nil {
			t.Fatalf("Start %s: %v", m.ID, err)
		}
		want = append(want, m.ID)
		waits = append(waits, wait)
	}
	for i, wait := range waits {
		if err := wait(); err != nil {
			t.Errorf("wait %s: %v", want[i], err)
		}
	}
	var got []string
	for range n {
		got = append(got, in.next(t).ID)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("order received (-want +got):\n%s", diff)
	}
}

// readFrames reads the peer's side of a pipePeer into a channel.
func readFrames(r *Reader) <-chan *Frame {
	frames := make(chan *Frame, 100)
	go func() {
		defer close(frames)
		for {
			f, err := r.ReadFrame()
			if err != nil {
				return
			}
			frames <- f
		}
	}()
	return frames
}

// TestStartWindow checks that Start blocks while Config.Window
// transactions of earlier messages await their answers, and goes on as
// they are answered.
func TestStartWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const window, n = 3, 8
		s, r, w := pipePeer(t, Config{Window: window})
		frames := readFrames(r)
		started := make(chan func() error, n)
		go func() {
			for i := range n {
				wait, err := s.Start(context.Background(), Message{ID: fmt.Sprintf("window%03d", i), ContentType: "text/plain", Body: []byte("hi")})
				if err != nil {
					t.Errorf("Start %d: %v", i, err)
					close(started)
					return
				}
				started <- wait
			}
			close(started)
		}()
		var waits []func() error
		for answered := 0; answered < n; answered++ {
			synctest.Wait() // the starter waits for the window, or is done
			if got, want := len(frames), min(window, n-answered); got != want {
				t.Fatalf("after %d answers: %d transactions outstanding, want %d", answered, got, want)
			}
			if got, want := len(started)+len(waits), min(answered+window, n); got != want {
				t.Fatalf("after %d answers: %d messages started, want %d", answered, got, want)
			}
			f := <-frames
			if want := fmt.Sprintf("window%03d", answered); f.Value(HeaderMessageID) != want {
				t.Fatalf("got %s on the wire, want %s", f.Value(HeaderMessageID), want)
			}
			w.WriteFrame(answer(f, StatusOK))
			for len(started) > 0 {
				waits = append(waits, <-started)
			}
		}
		for wait := range started {
			waits = append(waits, wait)
		}
		for i, wait := range waits {
			if err := wait(); err != nil {
				t.Errorf("wait %d: %v", i, err)
			}
		}
	})
}

// TestStartFailureIsolated checks that the failure of one pipelined
// message (a 413, a local 408, a failure REPORT, a cancelled context)
// is its own: the messages around it are delivered.
func TestStartFailureIsolated(t *testing.T) {
	tests := []struct {
		name string
		// answer answers the frame of the middle message (nil: none) and
		// may send a REPORT for it.
		answer func(f *Frame, w *Writer)
		report bool
		cancel bool // cancel the middle message's context once started
		want   func(err error) bool
		after  time.Duration // when wait of the middle message returns
	}{
		{
			name:   "413",
			answer: func(f *Frame, w *Writer) { w.WriteFrame(answer(f, StatusStopSending)) },
			want:   isStatus(StatusStopSending),
		},
		{
			name:  "local 408",
			want:  isStatus(StatusTimeout),
			after: 30 * time.Second,
		},
		{
			name:   "failure REPORT",
			report: true,
			answer: func(f *Frame, w *Writer) {
				w.WriteFrame(answer(f, StatusOK))
				w.WriteFrame(&Frame{TID: "rep00001", Method: "REPORT", Header: []Header{
					{HeaderToPath, f.Value(HeaderFromPath)}, {HeaderFromPath, f.Value(HeaderToPath)},
					{HeaderMessageID, f.Value(HeaderMessageID)}, {HeaderByteRange, "1-6/6"},
					{HeaderStatus, "000 415 Unsupported Media Type"}}})
			},
			want: isStatus(StatusUnsupportedMedia),
		},
		{
			name:   "context cancelled",
			cancel: true,
			want:   func(err error) bool { return errors.Is(err, context.Canceled) },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s, r, w := pipePeer(t, Config{})
				frames := readFrames(r)
				ctxs := []context.Context{context.Background(), nil, context.Background()}
				mctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				ctxs[1] = mctx
				var waits []func() error
				for i, ctx := range ctxs {
					m := Message{ID: fmt.Sprintf("isolated%d", i), ContentType: "text/plain", Body: []byte("hello!")}
					m.SuccessReport = i == 1 && tt.report
					wait, err := s.Start(ctx, m)
					if err != nil {
						t.Fatalf("Start %d: %v", i, err)
					}
					waits = append(waits, wait)
				}
				if tt.cancel {
					cancel()
				}
				start := time.Now()
				for i := range ctxs {
					f := <-frames
					if want := fmt.Sprintf("isolated%d", i); f.Value(HeaderMessageID) != want {
						t.Fatalf("got %s on the wire, want %s", f.Value(HeaderMessageID), want)
					}
					switch {
					case i != 1:
						w.WriteFrame(answer(f, StatusOK))
					case tt.answer != nil:
						tt.answer(f, w)
					}
				}
				for i, wait := range waits {
					err := wait()
					switch {
					case i != 1 && err != nil:
						t.Errorf("message %d: got %v, want success", i, err)
					case i == 1 && !tt.want(err):
						t.Errorf("message 1: got %v", err)
					case i == 1 && time.Since(start) != tt.after:
						t.Errorf("message 1 failed after %v, want %v", time.Since(start), tt.after)
					}
				}
				if err := waits[1](); !tt.want(err) {
					t.Errorf("second wait: got %v, want the same error", err)
				}
			})
		})
	}
}

func isStatus(code int) func(error) bool {
	return func(err error) bool {
		var se *StatusError
		return errors.As(err, &se) && se.Code == code
	}
}

// TestStartNothingSent checks that an error from Start means that nothing
// of the message was written.
func TestStartNothingSent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, r, _ := pipePeer(t, Config{Window: 1})
		frames := readFrames(r)
		done, cancel := context.WithCancel(context.Background())
		cancel()
		for range 20 { // the selects inside Start pick at random
			if _, err := s.Start(done, Message{ContentType: "text/plain", Body: []byte("x")}); !errors.Is(err, context.Canceled) {
				t.Fatalf("Start with an ended context: got %v, want context.Canceled", err)
			}
		}
		synctest.Wait()
		if got := len(frames); got != 0 {
			t.Fatalf("%d frames on the wire after Starts with an ended context, want 0", got)
		}
		wait, err := s.Start(context.Background(), Message{ID: "fills0001", ContentType: "text/plain", Body: []byte("a")})
		if err != nil {
			t.Fatal(err)
		}
		// The window is full: the next Start waits until its context ends.
		ctx, stop := context.WithTimeout(context.Background(), time.Second)
		defer stop()
		if _, err := s.Start(ctx, Message{ID: "blocked01", ContentType: "text/plain", Body: []byte("b")}); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Start with a full window: got %v, want context.DeadlineExceeded", err)
		}
		synctest.Wait()
		if got := len(frames); got != 1 {
			t.Errorf("%d frames on the wire, want 1", got)
		}
		if err := wait(); !isStatus(StatusTimeout)(err) {
			t.Errorf("wait: got %v, want local 408", err)
		}
	})
}
