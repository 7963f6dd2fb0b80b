package msrp

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"
)

// connectWithin runs Connect to path (timeout 300ms, no deadline on the
// context) and fails the test unless it returns an error within 5 s.
func connectWithin(t *testing.T, path string) {
	t.Helper()
	hop, err := ParseURI(path)
	if err != nil {
		t.Fatal(err)
	}
	s := newSession(t, Config{Local: URI{Host: "127.0.0.1", Port: 9}, Timeout: 300 * time.Millisecond})
	errc := make(chan error, 1)
	start := time.Now()
	go func() { errc <- s.Connect(context.Background(), []URI{hop}) }()
	select {
	case err := <-errc:
		if err == nil {
			t.Fatal("Connect succeeded, want an error")
		}
		t.Logf("after %v: %v", time.Since(start).Round(time.Millisecond), err)
	case <-time.After(5 * time.Second):
		t.Fatal("Connect still waiting after 5 s with Timeout 300ms")
	}
}

// TestConnectTLSHandshakeTimeout: a first hop that accepts the TCP
// connection of an msrps path and never answers the TLS handshake is given
// up on after Config.Timeout, whatever the context.
func TestConnectTLSHandshakeTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	held := make(chan net.Conn, 1) // held open, silent
	t.Cleanup(func() {
		ln.Close()
		select {
		case nc := <-held:
			nc.Close()
		default:
		}
	})
	go func() {
		nc, err := ln.Accept()
		if err == nil {
			held <- nc
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	connectWithin(t, "msrps://127.0.0.1:"+strconv.Itoa(port)+"/silent01;tcp")
}
