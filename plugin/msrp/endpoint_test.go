package msrp

import (
	"context"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestToPathMatches: a request reaches a session only when its To-Path is
// exactly one URI equal to the session's (RFC 4975 §7.3, compared as
// §6.1 says); anything else is 481, on the connection's first request as
// on a bound one. A 200 comes from the session's URI, not an echo of the
// To-Path; a 481 from the URI the request was sent to, the first of its
// To-Path (RFC 4975 §7.2), parsed and written again. Before the fix, the
// session id alone routed the request: the wrong host, port, scheme or
// transport got 200, a two-URI path was routed by its first URI, and the
// 200 named whatever the peer wrote.
func TestToPathMatches(t *testing.T) {
	l := startListener(t, ListenerConfig{})
	peer := "msrp://127.0.0.1:9/peer1234;tcp"
	tests := []struct {
		name string
		to   func(own URI) string
		code int
	}{
		{"exact", func(u URI) string { return u.String() }, StatusOK},
		{"scheme and transport in capitals", func(u URI) string {
			return "MSRP://" + u.Host + ":" + strconv.Itoa(u.Port) + "/" + u.SessionID + ";TCP"
		}, StatusOK},
		{"another host", func(u URI) string { u.Host = "192.0.2.99"; return u.String() }, StatusNoSession},
		{"another port", func(u URI) string { u.Port++; return u.String() }, StatusNoSession},
		{"no port (2855)", func(u URI) string { u.Port = 0; return u.String() }, StatusNoSession},
		{"msrps", func(u URI) string { u.Secure = true; return u.String() }, StatusNoSession},
		{"another transport", func(u URI) string { u.Transport = "sctp"; return u.String() }, StatusNoSession},
		{"session id in other case", func(u URI) string { u.SessionID = strings.ToLower(u.SessionID); return u.String() }, StatusNoSession},
		{"two URIs, ours first", func(u URI) string { return u.String() + " " + peer }, StatusNoSession},
		{"two URIs, ours last", func(u URI) string { return "msrp://192.0.2.1:2855/relay01;tcp " + u.String() }, StatusNoSession},
		{"ours twice", func(u URI) string { return u.String() + " " + u.String() }, StatusNoSession},
	}
	for _, tt := range tests {
		for _, bound := range []bool{false, true} {
			name := tt.name + ", first request"
			if bound {
				name = tt.name + ", bound connection"
			}
			t.Run(name, func(t *testing.T) {
				s := newSession(t, Config{Local: l.URI(), Handler: newInbox()})
				if err := l.Add(s, nil); err != nil {
					t.Fatal(err)
				}
				p := dialRaw(t, l)
				if bound {
					p.write(send("b0001", s.URI().String(), peer, "Message-ID: m0001\r\n", ""))
					if f := p.read(); f.Status != StatusOK {
						t.Fatalf("binding SEND: got %q, want 200", f.String())
					}
				}
				p.write(send("t0001", tt.to(s.URI()), peer, "Message-ID: m0002\r\n", "hello"))
				f := p.read()
				if f.Status != tt.code {
					t.Fatalf("got %q, want %d", f.String(), tt.code)
				}
				// 200 comes from the session, 481 from the URI the
				// request was sent to (no session is ours by that path).
				want := s.URI().String()
				if tt.code != StatusOK {
					first, _, _ := strings.Cut(tt.to(s.URI()), " ")
					u, err := ParseURI(first)
					if err != nil {
						t.Fatal(err)
					}
					want = u.String()
				}
				if got := f.Value(HeaderFromPath); got != want {
					t.Errorf("answer From-Path = %q, want %q", got, want)
				}
				if got := f.Value(HeaderToPath); got != peer {
					t.Errorf("answer To-Path = %q, want %q", got, peer)
				}
			})
		}
	}
}

// TestActiveToPath: on a connection a session opened itself (Connect), a
// request must name the session's URI too; the binding SEND it sends has
// a Message-ID and Byte-Range 1-0/0.
func TestActiveToPath(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		accepted <- nc
	}()
	a := newSession(t, Config{Local: URI{Host: "127.0.0.1", Port: 9}, Handler: newInbox()})
	far := URI{Host: "127.0.0.1", Port: ln.Addr().(*net.TCPAddr).Port, SessionID: "farend01", Transport: "tcp"}
	errc := make(chan error, 1)
	go func() { errc <- a.Connect(context.Background(), []URI{far}) }()
	var nc net.Conn
	select {
	case nc = <-accepted:
	case <-time.After(10 * time.Second):
		t.Fatal("no connection")
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	p := &rawPeer{t: t, nc: nc, r: NewReader(nc, Limits{})}
	bind := p.read()
	if bind.Value(HeaderMessageID) == "" || bind.Value(HeaderByteRange) != "1-0/0" || bind.Body != nil {
		t.Errorf("binding SEND %q: want a Message-ID, Byte-Range 1-0/0 and no body", bind.String())
	}
	p.write("MSRP " + bind.TID + " 200 OK\r\nTo-Path: " + a.URI().String() + "\r\nFrom-Path: " + far.String() + "\r\n-------" + bind.TID + "$\r\n")
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	wrong := a.URI()
	wrong.Port = 10
	p.write(send("t0001", wrong.String(), far.String(), "Message-ID: m0001\r\n", "hello"))
	if f := p.read(); f.Status != StatusNoSession || f.Value(HeaderFromPath) != wrong.String() {
		t.Errorf("To-Path with another port: got %q, want 481 from %s (the URI it was sent to)", f.String(), wrong)
	}
	p.write(send("t0002", a.URI().String(), far.String(), "Message-ID: m0002\r\n", "hello"))
	if f := p.read(); f.Status != StatusOK || f.Value(HeaderFromPath) != a.URI().String() {
		t.Errorf("To-Path of the session: got %q, want 200 from %s", f.String(), a.URI())
	}
}

// TestAccept: with Config.Accept, a SEND of a type it takes is delivered
// (200, and the success REPORT asked for); any other type is answered 415
// at its first chunk and never reaches the Handler. Without the check a
// wrong type reached the Handler (or got 403 without one).
func TestAccept(t *testing.T) {
	l := startListener(t, ListenerConfig{})
	in := newInbox()
	s := newSession(t, Config{Local: l.URI(), Handler: in,
		Accept: func(ct string) bool { return strings.HasPrefix(strings.ToLower(ct), "message/cpim") }})
	if err := l.Add(s, nil); err != nil {
		t.Fatal(err)
	}
	p := dialRaw(t, l)
	peer := "msrp://127.0.0.1:9/peer1234;tcp"
	to := s.URI().String()
	frame := func(tid, ct, extra, body string) string {
		return "MSRP " + tid + " SEND\r\nTo-Path: " + to + "\r\nFrom-Path: " + peer + "\r\n" + extra +
			"Content-Type: " + ct + "\r\n\r\n" + body + "\r\n-------" + tid + "$\r\n"
	}

	// A type not taken, in one chunk and as the first of several.
	p.write(frame("t0001", "text/plain", "Message-ID: m0001\r\n", "hello"))
	p.write(strings.TrimSuffix(frame("t0002", "text/plain", "Message-ID: m0002\r\nByte-Range: 1-5/10\r\n", "hello"), "$\r\n") + "+\r\n")
	for _, tid := range []string{"t0001", "t0002"} {
		if f := p.read(); f.TID != tid || f.Status != StatusUnsupportedMedia || f.Value(HeaderFromPath) != to {
			t.Errorf("got %q, want %s answered 415 from %s", f.String(), tid, to)
		}
	}
	// A type taken, asking for a success REPORT.
	p.write(frame("t0003", "Message/CPIM", "Message-ID: m0003\r\nSuccess-Report: yes\r\n", "imdn"))
	if f := p.read(); f.TID != "t0003" || f.Status != StatusOK {
		t.Errorf("got %q, want t0003 answered 200", f.String())
	}
	if f := p.read(); f.Method != "REPORT" || f.Value(HeaderMessageID) != "m0003" || f.Value(HeaderStatus) != "000 200 OK" {
		t.Errorf("got %q, want the success REPORT of m0003", f.String())
	}
	if m := in.next(t); m.ID != "m0003" {
		t.Errorf("handler got %s, want only m0003", m.ID)
	}
	select {
	case m := <-in.got:
		t.Errorf("handler got %s too", m.ID)
	default:
	}
}
