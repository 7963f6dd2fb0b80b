package msrp

import (
	"context"
	"io"
	"runtime"
	"sync"
	"testing"
	"time"
)

// benchFrames returns the frames of one message of size octets cut in
// chunks of 2048, as Send builds them.
func benchFrames(size int) []*Frame {
	s := &Session{local: URI{Host: "192.0.2.1", Port: 2855, SessionID: "jshA7weztas", Transport: "tcp"},
		remote: []URI{{Host: "192.0.2.2", Port: 2855, SessionID: "kjhd37s2s20w2a", Transport: "tcp"}}}
	m := Message{ID: "87652491", ContentType: "message/sip", Body: randomBody(size)}
	var frames []*Frame
	for off := 0; off < size; off += 2048 {
		end := min(off+2048, size)
		flag := byte(FlagMore)
		if end == size {
			flag = FlagEnd
		}
		frames = append(frames, s.chunk(m, int64(off), int64(end), int64(size), flag))
	}
	return frames
}

// loopReader yields data over and over.
type loopReader struct {
	data []byte
	pos  int
}

func (l *loopReader) Read(p []byte) (int, error) {
	n := copy(p, l.data[l.pos:])
	l.pos = (l.pos + n) % len(l.data)
	return n, nil
}

func allocsPerFrame(b *testing.B, frames int, run func()) {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	run()
	b.StopTimer()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(after.Mallocs-before.Mallocs)/float64(b.N*frames), "allocs/frame")
}

func BenchmarkReadFrame(b *testing.B) {
	for _, bc := range []struct {
		name string
		size int
	}{{"small-100B", 100}, {"large-64KiB", 64 << 10}} {
		b.Run(bc.name, func(b *testing.B) {
			frames := benchFrames(bc.size)
			var wire []byte
			for _, f := range frames {
				wire = f.AppendTo(wire)
			}
			r := NewReader(&loopReader{data: wire}, Limits{})
			b.SetBytes(int64(len(wire)))
			b.ReportAllocs()
			allocsPerFrame(b, len(frames), func() {
				for range b.N {
					for range frames {
						if _, err := r.ReadFrame(); err != nil {
							b.Fatal(err)
						}
					}
				}
			})
		})
	}
}

func BenchmarkWriteFrame(b *testing.B) {
	for _, bc := range []struct {
		name string
		size int
	}{{"small-100B", 100}, {"large-64KiB", 64 << 10}} {
		b.Run(bc.name, func(b *testing.B) {
			frames := benchFrames(bc.size)
			n := 0
			for _, f := range frames {
				n += len(f.AppendTo(nil))
			}
			w := NewWriter(io.Discard)
			b.SetBytes(int64(n))
			b.ReportAllocs()
			allocsPerFrame(b, len(frames), func() {
				for range b.N {
					for _, f := range frames {
						if err := w.WriteFrame(f); err != nil {
							b.Fatal(err)
						}
					}
				}
			})
		})
	}
}

// BenchmarkSendLoopback measures SEND→200 over a loopback TCP session:
// "serial" waits for each answer before the next message, "pipelined" keeps
// up to 32 messages in flight.
func BenchmarkSendLoopback(b *testing.B) {
	for _, bc := range []struct {
		name    string
		senders int
	}{{"serial", 1}, {"pipelined", 32}} {
		b.Run(bc.name, func(b *testing.B) {
			l := startListener(b, ListenerConfig{})
			handler := HandlerFunc(func(context.Context, *Session, *Message) error { return nil })
			a, _ := pair(b, l, Config{Window: 64}, Config{Handler: handler})
			m := Message{ContentType: "text/plain", Body: randomBody(100)}
			b.SetBytes(100)
			b.ReportAllocs()
			next := make(chan struct{}, b.N)
			for range b.N {
				next <- struct{}{}
			}
			close(next)
			start := time.Now()
			b.ResetTimer()
			var wg sync.WaitGroup
			for range bc.senders {
				wg.Go(func() {
					for range next {
						if err := a.Send(context.Background(), m); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
		})
	}
}

// BenchmarkPipelinedStart measures SEND→200 over a loopback TCP session
// from one goroutine that starts messages in order and keeps up to 32 of
// them in flight, waiting for the oldest when the window is full: the
// pusher's pattern.
func BenchmarkPipelinedStart(b *testing.B) {
	const inFlight = 32
	l := startListener(b, ListenerConfig{})
	handler := HandlerFunc(func(context.Context, *Session, *Message) error { return nil })
	a, _ := pair(b, l, Config{Window: 64}, Config{Handler: handler})
	m := Message{ContentType: "text/plain", Body: randomBody(100)}
	b.SetBytes(100)
	b.ReportAllocs()
	waits := make([]func() error, 0, inFlight)
	start := time.Now()
	b.ResetTimer()
	for range b.N {
		if len(waits) == inFlight {
			if err := waits[0](); err != nil {
				b.Fatal(err)
			}
			waits = append(waits[:0], waits[1:]...)
		}
		wait, err := a.Start(context.Background(), m)
		if err != nil {
			b.Fatal(err)
		}
		waits = append(waits, wait)
	}
	for _, wait := range waits {
		if err := wait(); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}
