package msrp

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

// fakeRelay is the relay first on a push session's path, driven by hand:
// the session under test connects to it, and the test answers its SENDs
// and plays the REPORTs a relay would bring, on that connection or on new
// ones it opens to the session's listener.
type fakeRelay struct {
	uri    URI
	client URI // the client behind the relay, last on the path
	r      *Reader
	w      *Writer
	lis    *Listener
}

// startRelayed returns an active session s of a Listener (AddActive),
// connected through a fake relay to a client behind it. remote is the
// session's path: the relay's URI then the client's, or the client's
// alone when direct is set (the session then connects to the "relay" as
// if it were the client).
func startRelayed(t *testing.T, timeout time.Duration, direct bool) (*Session, *fakeRelay) {
	t.Helper()
	l := startListener(t, ListenerConfig{Timeout: 5 * time.Second})
	rl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rl.Close() })
	fr := &fakeRelay{
		uri:    URI{Host: "127.0.0.1", Port: rl.Addr().(*net.TCPAddr).Port, SessionID: "relaysess01", Transport: "tcp"},
		client: URI{Host: "client.invalid", Port: 2855, SessionID: "clientsess01", Transport: "tcp"},
		lis:    l,
	}
	remote := []URI{fr.uri, fr.client}
	if direct {
		fr.client = URI{Host: "127.0.0.1", Port: fr.uri.Port, SessionID: "clientsess01", Transport: "tcp"}
		remote = []URI{fr.client}
	}
	local := l.URI()
	local.SessionID = NewSessionID()
	s := newSession(t, Config{Local: local, Timeout: timeout})
	if err := l.AddActive(s); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.Connect(context.Background(), remote) }()
	nc, err := rl.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	fr.r, fr.w = NewReader(nc, Limits{}), NewWriter(nc)
	bind := fr.read(t)
	fr.w.WriteFrame(answer(bind, StatusOK))
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	return s, fr
}

func (fr *fakeRelay) read(t *testing.T) *Frame {
	t.Helper()
	f, err := fr.r.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// dial opens a connection to the session's listener from source address
// ip, as a relay does to bring a REPORT.
func (fr *fakeRelay) dial(t *testing.T, ip string) (*Reader, *Writer) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	nc, err := d.Dial("tcp", fr.lis.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return NewReader(nc, Limits{}), NewWriter(nc)
}

// report builds the REPORT the relay forwards for message id: To-Path the
// session, From-Path as given.
func report(s *Session, from, id, byteRange, status string) *Frame {
	h := []Header{{HeaderToPath, s.URI().String()}, {HeaderFromPath, from},
		{HeaderMessageID, id}, {HeaderByteRange, byteRange}, {HeaderStatus, status}}
	return &Frame{TID: newIdent(), Method: "REPORT", Header: h, Flag: FlagEnd}
}

// TestRelayedReports: a success REPORT counts on the session's own
// connection, or on a new connection from the relay first on its path;
// from anywhere else, for a message not in flight, with another From-Path
// or a partial Byte-Range, it confirms nothing. A failure REPORT from the
// relay fails the message.
func TestRelayedReports(t *testing.T) {
	const timeout = 400 * time.Millisecond
	tests := []struct {
		name string
		// direct puts no relay on the session's path.
		direct bool
		// conn is where the REPORT comes: "own" (the session's
		// connection), or a new one from this source address.
		conn   string
		from   string // From-Path; "" is the relay then the client
		id     string // Message-ID; "" is the message's
		rng    string // Byte-Range; "" is the whole message
		status string // "" is 000 200 OK
		want   string // "ok", "no report" or "failed"
	}{
		{name: "own connection", conn: "own", want: "ok"},
		{name: "new connection from the relay", conn: "127.0.0.1", want: "ok"},
		{name: "new connection from another address", conn: "127.0.0.2", want: "no report"},
		{name: "no relay on the path", direct: true, conn: "127.0.0.1", from: "client", want: "no report"},
		{name: "message not in flight", conn: "127.0.0.1", id: "someothermessage", want: "no report"},
		{name: "partial Byte-Range", conn: "127.0.0.1", rng: "1-3/11", want: "no report"},
		{name: "partial Byte-Range on own connection", conn: "own", rng: "1-3/11", want: "no report"},
		{name: "From-Path without the relay", conn: "127.0.0.1", from: "client", want: "no report"},
		{name: "From-Path through another relay", conn: "127.0.0.1", from: "other", want: "no report"},
		{name: "success from the relay alone", conn: "127.0.0.1", from: "relay", want: "no report"},
		{name: "failure from the relay", conn: "127.0.0.1", from: "relay", status: "000 408 Request Timeout", want: "failed"},
		{name: "failure from another address", conn: "127.0.0.2", status: "000 415 Unsupported Media Type", want: "no report"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, fr := startRelayed(t, timeout, tt.direct)
			const id = "relayedreport01"
			errc := make(chan error, 1)
			go func() {
				errc <- s.Send(context.Background(), Message{ID: id, ContentType: "text/plain", Body: []byte("hello world"), SuccessReport: true})
			}()
			send := fr.read(t)
			if send.Value(HeaderSuccessReport) != "yes" {
				t.Fatalf("Success-Report = %q, want yes", send.Value(HeaderSuccessReport))
			}
			if got, want := send.Value(HeaderToPath), FormatPath(s.remote); got != want {
				t.Errorf("To-Path = %q, want %q", got, want)
			}
			// The relay's own 200: the next hop's, not the client's.
			fr.w.WriteFrame(answer(send, StatusOK))

			from := map[string]string{
				"":       FormatPath([]URI{fr.uri, fr.client}),
				"client": fr.client.String(),
				"relay":  fr.uri.String(),
				"other":  FormatPath([]URI{{Host: "127.0.0.1", Port: 1, SessionID: "otherrelay", Transport: "tcp"}, fr.client}),
			}[tt.from]
			mid, rng, status := tt.id, tt.rng, tt.status
			if mid == "" {
				mid = id
			}
			if rng == "" {
				rng = "1-11/11"
			}
			if status == "" {
				status = "000 200 OK"
			}
			rep := report(s, from, mid, rng, status)
			if tt.conn == "own" {
				fr.w.WriteFrame(rep)
			} else {
				r, w := fr.dial(t, tt.conn)
				w.WriteFrame(rep)
				// Never answered: the next frame on this connection is
				// its end, when the listener gives up on it.
				go func() {
					if f, err := r.ReadFrame(); err == nil {
						t.Errorf("the REPORT was answered: %q", f.String())
					}
				}()
			}
			start := time.Now()
			err := <-errc
			var se *StatusError
			switch tt.want {
			case "ok":
				if err != nil {
					t.Errorf("Send = %v, want the REPORT to confirm the message", err)
				}
			case "no report":
				if !errors.Is(err, ErrNoReport) {
					t.Errorf("Send = %v, want ErrNoReport: the REPORT must confirm nothing", err)
				}
			case "failed":
				if !errors.As(err, &se) || se.Code != StatusTimeout {
					t.Errorf("Send = %v, want the failure REPORT's 408", err)
				}
				if d := time.Since(start); d >= timeout {
					t.Errorf("the failure REPORT took %v to count, want it at once", d)
				}
			}
		})
	}
}

// TestRelayConnectionCarriesReports: a relay keeps the connection it
// opened and brings the REPORTs of later messages on it.
func TestRelayConnectionCarriesReports(t *testing.T) {
	s, fr := startRelayed(t, 2*time.Second, false)
	r, w := fr.dial(t, "127.0.0.1")
	go func() {
		for {
			if _, err := r.ReadFrame(); err != nil {
				return
			}
		}
	}()
	for _, id := range []string{"carried0001", "carried0002", "carried0003"} {
		errc := make(chan error, 1)
		go func() {
			errc <- s.Send(context.Background(), Message{ID: id, ContentType: "text/plain", Body: []byte("hi"), SuccessReport: true})
		}()
		send := fr.read(t)
		fr.w.WriteFrame(answer(send, StatusOK))
		w.WriteFrame(report(s, FormatPath([]URI{fr.uri, fr.client}), id, "1-2/2", "000 200 OK"))
		if err := <-errc; err != nil {
			t.Fatalf("%s: %v", id, err)
		}
	}
}

// TestRelayConnectionCarriesNoData: a SEND naming an active session on a
// connection the relay opened is refused — 481 before the session is
// connected, 506 after: only REPORTs may come that way.
func TestRelayConnectionCarriesNoData(t *testing.T) {
	l := startListener(t, ListenerConfig{Timeout: 5 * time.Second})
	local := l.URI()
	local.SessionID = NewSessionID()
	s := newSession(t, Config{Local: local})
	if err := l.AddActive(s); err != nil {
		t.Fatal(err)
	}
	fr := &fakeRelay{lis: l}
	sendOn := func(want int) {
		t.Helper()
		r, w := fr.dial(t, "127.0.0.1")
		w.WriteFrame(&Frame{TID: newIdent(), Method: "SEND", Header: []Header{{HeaderToPath, s.URI().String()},
			{HeaderFromPath, "msrp://127.0.0.1:9/intruder;tcp"}, {HeaderMessageID, "intruder01"}}, Flag: FlagEnd})
		f, err := r.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		if f.Status != want {
			t.Errorf("SEND on a relay's connection: %d, want %d", f.Status, want)
		}
	}
	sendOn(StatusNoSession)

	rl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer rl.Close()
	go func() {
		nc, err := rl.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		r, w := NewReader(nc, Limits{}), NewWriter(nc)
		for {
			f, err := r.ReadFrame()
			if err != nil {
				return
			}
			w.WriteFrame(answer(f, StatusOK))
		}
	}()
	hop := URI{Host: "127.0.0.1", Port: rl.Addr().(*net.TCPAddr).Port, SessionID: "relaysess01", Transport: "tcp"}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Connect(ctx, []URI{hop, {Host: "client.invalid", SessionID: "c1", Transport: "tcp"}}); err != nil {
		t.Fatal(err)
	}
	sendOn(StatusSessionAlreadyBound)
}

// TestRelayAuth: a client authenticates to its relay (AUTH, digest
// challenge, Use-Path), receives through it and sends its REPORTs and
// requests along Use-Path + the peer's path.
func TestRelayAuth(t *testing.T) {
	rl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer rl.Close()
	relayURI := URI{Host: "127.0.0.1", Port: rl.Addr().(*net.TCPAddr).Port, Transport: "tcp"}
	usePath := URI{Host: "127.0.0.1", Port: relayURI.Port, SessionID: "granted-0001", Transport: "tcp"}
	peer := URI{Host: "192.0.2.1", Port: 2855, SessionID: "pushsess01", Transport: "tcp"}
	frames := make(chan *Frame, 16)
	var rw *Writer
	ready := make(chan struct{})
	go func() {
		nc, err := rl.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		r, w := NewReader(nc, Limits{}), NewWriter(nc)
		rw = w
		for n := 0; ; n++ {
			f, err := r.ReadFrame()
			if err != nil {
				close(frames)
				return
			}
			switch {
			case f.Method == "AUTH" && n == 0:
				a := answer(f, 401)
				a.Header = append(a.Header, Header{HeaderWWWAuthenticate, `Digest realm="relay.test", nonce="n0nce", qop="auth"`})
				w.WriteFrame(a)
			case f.Method == "AUTH":
				a := answer(f, StatusOK)
				a.Header = append(a.Header, Header{HeaderUsePath, usePath.String()}, Header{HeaderExpires, "600"})
				w.WriteFrame(a)
				frames <- f
				close(ready)
			default:
				frames <- f
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rel, err := DialRelay(ctx, RelayConfig{URI: relayURI, Local: URI{Host: "127.0.0.1", Port: 9},
		Username: "alice", Password: "secret", Expires: 10 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer rel.Close()
	auth := <-frames
	<-ready
	authz := auth.Value(HeaderAuthorization)
	p := digestParams(strings.TrimPrefix(authz, "Digest "))
	if p["username"] != "alice" || p["realm"] != "relay.test" || p["nonce"] != "n0nce" || p["uri"] != relayURI.String() || p["qop"] != "auth" {
		t.Errorf("Authorization = %q", authz)
	}
	if auth.Value(HeaderExpires) != "600" {
		t.Errorf("Expires = %q, want 600", auth.Value(HeaderExpires))
	}
	if got := rel.Path(); len(got) != 1 || !got[0].Equal(usePath) {
		t.Errorf("Path = %v, want the Use-Path %v", got, usePath)
	}
	if d := time.Until(rel.Expires()); d < 590*time.Second || d > 600*time.Second {
		t.Errorf("Expires in %v, want 600s", d)
	}

	box := newInbox()
	s := newSession(t, Config{Local: URI{Host: "127.0.0.1", Port: 9}, Handler: box})
	if err := rel.Add(s, []URI{peer}); err != nil {
		t.Fatal(err)
	}
	// The relay brings the peer's SEND, From-Path stamped with itself.
	rw.WriteFrame(&Frame{TID: "relayed1", Method: "SEND", Header: []Header{{HeaderToPath, s.URI().String()},
		{HeaderFromPath, FormatPath([]URI{usePath, peer})}, {HeaderMessageID, "pushed01"}, {HeaderByteRange, "1-5/5"},
		{HeaderSuccessReport, "yes"}, {HeaderContentType, "text/plain"}}, Body: []byte("hello"), Flag: FlagEnd})
	if m := box.next(t); string(m.Body) != "hello" {
		t.Errorf("got %q", m.Body)
	}
	ok, rep := <-frames, <-frames
	if ok.Status != StatusOK || ok.Value(HeaderToPath) != usePath.String() {
		t.Errorf("answer %q, want 200 to the relay", ok.String())
	}
	if rep.Method != "REPORT" || rep.Value(HeaderToPath) != FormatPath([]URI{usePath, peer}) || rep.Value(HeaderStatus) != "000 200 OK" ||
		rep.Value(HeaderByteRange) != "1-5/5" {
		t.Errorf("report %q, want a success REPORT along the SEND's From-Path", rep.String())
	}
	// A request of the session goes to the relay, then the peer's path.
	go s.Send(ctx, Message{ContentType: "text/plain", Body: []byte("up")})
	if up := <-frames; up.Method != "SEND" || up.Value(HeaderToPath) != FormatPath([]URI{usePath, peer}) {
		t.Errorf("SEND %q, want To-Path Use-Path + peer", up.String())
	}
}

// TestDigestAuthorization checks the digest answer against RFC 2617's own
// example (§3.5).
func TestDigestAuthorization(t *testing.T) {
	got, err := digestAuthorization(`Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"`,
		"GET", "/dir/index.html", "Mufasa", "Circle Of Life", "0a4f113b")
	if err != nil {
		t.Fatal(err)
	}
	p := digestParams(strings.TrimPrefix(got, "Digest "))
	if p["response"] != "6629fae49393a05397450978507c4ef1" || p["opaque"] != "5ccc069c403ebaf9f0171e9517f40e41" || p["nc"] != "00000001" {
		t.Errorf("got %s", got)
	}
	if _, err := digestAuthorization(`Basic realm="x"`, "AUTH", "u", "a", "b", "c"); err == nil {
		t.Error("a Basic challenge was answered")
	}
}
