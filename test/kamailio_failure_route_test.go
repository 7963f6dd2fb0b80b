package test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/deferpush/deferpush/adapters/imclient"
)

// slowMessageHook is a hooks URL in front of deferpush's that holds every
// message hook for delay before passing it on, and counts the calls in
// progress and the most at once.
type slowMessageHook struct {
	delay         time.Duration
	now, most     atomic.Int32
	calls, passed atomic.Int32
}

func (h *slowMessageHook) front(t *testing.T) func(string) string {
	return func(dp string) string {
		u, err := url.Parse(dp)
		if err != nil {
			t.Fatal(err)
		}
		rp := httputil.NewSingleHostReverseProxy(u)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasSuffix(r.URL.Path, "/message") {
				h.calls.Add(1)
				n := h.now.Add(1)
				for m := h.most.Load(); n > m && !h.most.CompareAndSwap(m, n); m = h.most.Load() {
				}
				time.Sleep(h.delay) // the slow deferpush under test, not a wait for a condition
				h.now.Add(-1)
				defer h.passed.Add(1)
			}
			rp.ServeHTTP(w, r)
		}))
		t.Cleanup(srv.Close)
		return srv.URL
	}
}

// refusingContact is a registered client reached over UDP that answers
// every request 480 at once: its MESSAGEs end in Kamailio's
// failure_route, run by the SIP worker that read the 480.
func refusingContact(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if res := answer480(buf[:n]); res != nil {
				_, _ = pc.WriteTo(res, from)
			}
		}
	}()
	return pc.LocalAddr().String()
}

// answer480 is the 480 to a SIP request (nil for anything else): the
// headers a response copies (RFC 3261 §8.2.6.2), a To tag.
func answer480(req []byte) []byte {
	head, _, _ := strings.Cut(string(req), "\r\n\r\n")
	lines := strings.Split(head, "\r\n")
	if len(lines) == 0 || strings.HasPrefix(lines[0], "SIP/2.0") || strings.HasPrefix(lines[0], "ACK ") {
		return nil
	}
	var b strings.Builder
	b.WriteString("SIP/2.0 480 Temporarily Unavailable\r\n")
	for _, l := range lines[1:] {
		name, _, _ := strings.Cut(l, ":")
		switch strings.ToLower(strings.TrimSpace(name)) {
		case "via", "v", "from", "f", "call-id", "i", "cseq":
			b.WriteString(l + "\r\n")
		case "to", "t":
			b.WriteString(l + ";tag=refuser\r\n")
		}
	}
	b.WriteString("Content-Length: 0\r\n\r\n")
	return []byte(b.String())
}

// silentContacts is a TCP listener that takes connections and never
// answers: registered clients that do not take a MESSAGE, whose
// transactions end in the failure_route when MESSAGE_TIMEOUT fires.
func silentContacts(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	return ln.Addr().String()
}

// TestKamailioFailureRouteAsync: the failure_route of a MESSAGE to a
// registered user who refuses it (480) or never answers
// (MESSAGE_TIMEOUT) stores it from Kamailio's async workers, as the other
// hooks do, so that a slow deferpush holds up neither the SIP workers nor
// the process that saw the timeouts. With every message hook taking 2 s:
// REGISTERs over UDP and TCP are answered at once while more failure
// routes wait on the hook than Kamailio has UDP workers, several failure
// routes' hooks run at once, and every sender still gets 202 and its
// message is stored. (With the hook posted from the failure_route itself,
// the REGISTERs wait for the hook and the timeouts' hooks run one at a
// time.)
func TestKamailioFailureRouteAsync(t *testing.T) {
	const delay = 2 * time.Second
	hook := &slowMessageHook{delay: delay}
	s := startKamailioStack(t, stackOptions{messageTimeout: 1000, hooks: hook.front(t)})
	sender := s.client(t, "sender", imclient.Config{})

	send := func(users []string) <-chan error {
		errs := make(chan error, len(users))
		for _, u := range users {
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				res, err := sender.SendMessage(ctx, "sip:"+u+"@"+domain, "text/plain", []byte("stored by the failure route for "+u),
					sip.NewHeader("Call-ID", "failure-route-"+u+"@test"))
				switch {
				case err != nil:
					errs <- fmt.Errorf("MESSAGE to %s: %w", u, err)
				case res.StatusCode != 202:
					errs <- fmt.Errorf("MESSAGE to %s: %d %s, want 202 from the failure route", u, res.StatusCode, res.Reason)
				default:
					errs <- nil
				}
			}()
		}
		return errs
	}
	waitSent := func(t *testing.T, users []string, errs <-chan error) {
		t.Helper()
		for range users {
			if err := <-errs; err != nil {
				t.Error(err)
			}
		}
		for _, u := range users {
			s.waitPending(t, u, 1)
		}
	}
	// fast registers a new user over UDP and over TCP and fails the test
	// when a REGISTER waits for the hook.
	fast := func(t *testing.T, what string) {
		t.Helper()
		for _, transport := range []string{"udp", "tcp"} {
			c := s.client(t, fmt.Sprintf("fast-%s-%s", what, transport), imclient.Config{Transport: transport})
			start := time.Now()
			s.register(t, c)
			if took := time.Since(start); took > delay/4 {
				t.Errorf("%s: REGISTER over %s took %v while %d failure-route hooks wait %v each: a SIP worker waits for the hook",
					what, transport, took, hook.now.Load(), delay)
			}
		}
	}

	t.Run("refused", func(t *testing.T) {
		// More refusals than Kamailio's 4 UDP workers (children=4).
		refuser := refusingContact(t)
		var users []string
		for i := range 8 {
			u := fmt.Sprintf("refuser%d", i)
			rawRegister(t, s.k.SIPAddr, u, "sip:"+u+"@"+refuser, 300)
			users = append(users, u)
		}
		errs := send(users)
		waitFor(t, 10*time.Second, "4 failure-route hooks in progress", func() bool { return hook.now.Load() >= 4 })
		fast(t, "refused")
		waitSent(t, users, errs)
	})

	t.Run("timeout", func(t *testing.T) {
		silent := silentContacts(t)
		var users []string
		for i := range 4 {
			u := fmt.Sprintf("silent%d", i)
			rawRegister(t, s.k.SIPAddr, u, "sip:"+u+"@"+silent+";transport=tcp", 300)
			users = append(users, u)
		}
		hook.most.Store(0)
		errs := send(users)
		waitFor(t, 10*time.Second, "a failure-route hook in progress", func() bool { return hook.now.Load() >= 1 })
		fast(t, "timeout")
		waitSent(t, users, errs)
		if most := hook.most.Load(); most < 2 {
			t.Errorf("the 4 timed-out MESSAGEs' hooks ran %d at a time, want them in parallel (async workers)", most)
		}
	})

	// Each message is pushed when its user comes back.
	u := s.client(t, "refuser0", imclient.Config{})
	s.register(t, u)
	waitClient(t, u, "BYE", func(st imclient.Stats) bool { return st.Byes == 1 })
	if got := u.Received(); len(got) != 1 || string(got[0].Decoded.Body) != "stored by the failure route for refuser0" {
		t.Errorf("refuser0 received %+v, want its stored message", got)
	}
}
