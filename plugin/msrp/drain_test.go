package msrp

import (
	"bufio"
	"errors"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"
)

// gatedConn holds its reads until open is closed: the reader has not yet
// come round to what the peer sent when a write fails.
type gatedConn struct {
	net.Conn
	open chan struct{}
}

func (g gatedConn) Read(b []byte) (int, error) {
	<-g.open
	return g.Conn.Read(b)
}

// TestWriteFailureKeepsReceivedAnswers: a peer answers two SENDs 200 and
// closes its connection; our next writes fail (the peer's kernel resets
// the connection). The two 200s are in our receive buffer, not yet read:
// they still confirm their SENDs, and only the transactions without an
// answer fail, with the write error.
func TestWriteFailureKeepsReceivedAnswers(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peerDone := make(chan error, 1)
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			peerDone <- err
			return
		}
		defer nc.Close()
		r := NewReader(bufio.NewReader(nc), Limits{})
		for range 2 {
			f, err := r.ReadFrame()
			if err != nil {
				peerDone <- err
				return
			}
			ok := "MSRP " + f.TID + " 200 OK\r\nTo-Path: msrp://127.0.0.1:9/a;tcp\r\nFrom-Path: msrp://127.0.0.1:9/b;tcp\r\n-------" + f.TID + "$\r\n"
			if _, err := nc.Write([]byte(ok)); err != nil {
				peerDone <- err
				return
			}
		}
		peerDone <- nil
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	gate := gatedConn{Conn: nc, open: make(chan struct{})}
	c := newConn(gate, Limits{}, 5*time.Second, slog.New(slog.DiscardHandler))
	go c.readLoop()
	defer c.close(nil)

	send := func(tid string) *Frame {
		return &Frame{TID: tid, Method: "SEND", Flag: FlagEnd, Header: []Header{
			{"To-Path", "msrp://127.0.0.1:9/b;tcp"}, {"From-Path", "msrp://127.0.0.1:9/a;tcp"},
			{"Message-ID", "m" + tid}, {"Byte-Range", "1-5/5"}, {"Content-Type", "text/plain"},
		}, Body: []byte("hello")}
	}
	results := make([]chan error, 2)
	for i, tid := range []string{"t0001", "t0002"} {
		results[i] = make(chan error, 1)
		if err := c.request(send(tid), func(err error) { results[i] <- err }); err != nil {
			t.Fatalf("SEND %s: %v", tid, err)
		}
	}
	if err := <-peerDone; err != nil {
		t.Fatalf("peer: %v", err)
	}
	// Write until the reset shows (the first write after the peer's close
	// may still go out).
	var werr error
	for i := range 50 {
		werr = c.request(send("x"+strings.Repeat("0", 4)+string(rune('a'+i%26))), func(error) {})
		if werr != nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if werr == nil {
		t.Fatal("no write failed after the peer closed")
	}
	close(gate.open)
	for i, ch := range results {
		select {
		case err := <-ch:
			if err != nil {
				t.Errorf("SEND %d answered 200 before the peer went: %v, want nil", i+1, err)
			}
		case <-time.After(2 * time.Second):
			t.Fatalf("SEND %d: no outcome", i+1)
		}
	}
	// Later writes fail at once, with the write's error.
	if err := c.request(send("t0009"), func(error) {}); err == nil || !errors.Is(err, werr) && err.Error() != werr.Error() {
		t.Errorf("a write after the failure: %v, want %v", err, werr)
	}
	select {
	case <-c.done:
	case <-time.After(2 * drainGrace):
		t.Error("the connection did not close after the reader drained it")
	}
}
