package test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/deferpush/deferpush/adapters/imclient"
	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/test/harness"
)

// The fault suite (issue 9): real redis-server with AOF and appendfsync
// always, real Kamailio with the shipped kamailio.cfg, deferpush as its own
// process, reference clients. Each scenario injects one fault a number of
// times ("rounds": 1 in `make test`, DEFERPUSH_SOAK_ROUNDS under `make
// soak`) and accounts, by Call-ID, for every message stored: delivered
// (the client answered 200), duplicated (answered 200 more than once; both
// copies must carry the same Call-ID and outer Message-ID) and lost.

const (
	// faultLockTTL is deferpush's push.lock_ttl in the fault tests: a
	// killed instance's lease runs out quickly.
	faultLockTTL = 2 * time.Second
	// faultMSRPTimeout is its msrp.timeout: a client that never answers a
	// SEND, or never connects, holds a push this long.
	faultMSRPTimeout = 3 * time.Second
)

// errDrop, returned from an imclient OnEvent at a message, makes the client
// drop its connection without answering.
var errDrop = errors.New("fault test: drop the connection")

// startFaultStack starts the whole deployment for the fault tests:
// redis-server with AOF, Kamailio, and deferpush with a short lease and MSRP
// timeout. env overrides deferpush's environment.
func startFaultStack(t *testing.T, env ...string) *kamailioStack {
	t.Helper()
	return startKamailioStack(t, stackOptions{
		redis: []harness.RedisOption{harness.WithAOF()},
		// No backoff: a client that registers after a failed push gets a
		// push at once.
		policy: noBackoff,
		dpEnv: append([]string{
			"DEFERPUSH_PUSH_LOCK_TTL=" + faultLockTTL.String(),
			"DEFERPUSH_MSRP_TIMEOUT=" + faultMSRPTimeout.String(),
		}, env...),
	})
}

// restartDeferpush starts deferpush again with the same configuration after
// s.dp was killed, its hooks and SIP on the ports the killed process had
// bound (port 0 the first time, so that no other process can have taken
// them in between), where Kamailio expects them.
func (s *kamailioStack) restartDeferpush(t *testing.T) {
	t.Helper()
	args := append(append([]string(nil), s.dpArgs...), "--hooks-listen", s.dp.HooksAddr, "--sip-listen", s.dp.SIPAddr)
	s.dp = startDeferpush(t, s.dpEnv, args...)
}

// otherInstance starts a second deferpush on the same Redis, on its own
// ports, sending its INVITEs through the same Kamailio.
func (s *kamailioStack) otherInstance(t *testing.T) *deferpushProc {
	t.Helper()
	return startDeferpush(t, s.dpEnv, s.dpArgs...)
}

// storeCalls sends n MESSAGEs from sender to user through Kamailio, each
// with its own Call-ID prefix-<i>@fault.test, and fails the test unless
// each is stored (202). It returns the Call-IDs in order.
func storeCalls(t *testing.T, sender *imclient.Client, user, prefix string, n int, body func(i int) []byte) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var ids []string
	for i := range n {
		id := fmt.Sprintf("%s-%d@fault.test", prefix, i)
		b := []byte(fmt.Sprintf("fault message %s", id))
		if body != nil {
			b = body(i)
		}
		res, err := sender.SendMessage(ctx, "sip:"+user+"@"+domain, "text/plain", b, sip.NewHeader("Call-ID", id))
		if err != nil || res.StatusCode != 202 {
			t.Fatalf("MESSAGE %s to %s: %v %v, want 202", id, user, res, err)
		}
		ids = append(ids, id)
	}
	return ids
}

// storedCallIDs lists the Call-IDs of user's stored messages (pending, in
// flight and dead).
func (s *kamailioStack) storedCallIDs(t *testing.T, user string) map[string]bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	aor := plugin.MustParseAOR("sip:" + user + "@" + domain)
	out := map[string]bool{}
	for _, list := range []func(context.Context, plugin.AOR, plugin.ListQuery) (plugin.Page, error){s.st.List, s.st.DeadLetters} {
		p, err := list(ctx, aor, plugin.ListQuery{})
		if err != nil {
			t.Fatalf("list %s: %v", aor, err)
		}
		for _, m := range p.Messages {
			out[m.CallID] = true
		}
	}
	return out
}

// unacked reports whether user has exactly n messages still stored
// (pending or in flight). It does not fail the test, so that imclient
// hooks, which run outside the test's goroutine, can poll it.
func (s *kamailioStack) unacked(user string, n int) bool {
	c, err := s.st.Count(context.Background(), plugin.MustParseAOR("sip:"+user+"@"+domain))
	return err == nil && c.Pending+c.InFlight == n
}

// waitLeaseOver polls until user's push lock, if any, has run out: a new
// push may take it then, and requeues what the dead owner left in flight.
func (s *kamailioStack) waitLeaseOver(t *testing.T, user string) {
	t.Helper()
	waitFor(t, faultLockTTL+5*time.Second, "the lease of "+user+" to run out", func() bool {
		until := s.leaseUntil(t, user)
		return until.IsZero() || time.Now().After(until)
	})
}

// leaseUntil is when user's push lock runs out; zero when none is held.
func (s *kamailioStack) leaseUntil(t *testing.T, user string) time.Time {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	// The lease is the field lock of the mailbox's hash: "<token> <until ms>".
	v, err := harness.RedisDo(ctx, s.redis.Addr, "HGET", "dp:{sip:"+user+"@"+domain+"}:m", "lock")
	if err != nil {
		t.Fatalf("read the lock of %s: %v", user, err)
	}
	_, until, _ := strings.Cut(v, " ")
	ms, err := strconv.ParseInt(until, 10, 64)
	if v == "" || err != nil {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

// deliverAll registers c until every Call-ID in want was answered 200 and
// user's mailbox is empty. It registers again whenever messages wait with
// none in flight (a push stopped at max_per_session, or broke off): a
// registration during a push only asks for one more run, so that is safe.
func (s *kamailioStack) deliverAll(t *testing.T, c *imclient.Client, user string, want []string) {
	t.Helper()
	s.register(t, c)
	registrations, idleSince := 1, time.Time{}
	deadline := time.Now().Add(60 * time.Second)
	for {
		n := s.counts(t, user)
		if len(missing(want, c.Received())) == 0 && n == (plugin.Counts{}) {
			return
		}
		if time.Now().After(deadline) || registrations > 20 {
			t.Fatalf("after %d registrations %s still misses %v; stored %+v", registrations, user,
				missing(want, c.Received()), n)
		}
		switch {
		case n.InFlight > 0 || n.Pending == 0:
			idleSince = time.Time{}
		case idleSince.IsZero():
			idleSince = time.Now()
		case time.Since(idleSince) > 500*time.Millisecond:
			s.register(t, c)
			registrations++
			idleSince = time.Time{}
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// missing lists the Call-IDs of want no receipt answered 200.
func missing(want []string, rs []imclient.Received) []string {
	got := map[string]bool{}
	for _, r := range rs {
		if r.Answered == 200 {
			got[r.Decoded.CallID] = true
		}
	}
	var out []string
	for _, id := range want {
		if !got[id] {
			out = append(out, id)
		}
	}
	return out
}

// faultRow is one line of the reliability table.
type faultRow struct {
	Fault                                         string
	Injected, Stored, Delivered, Duplicated, Lost int
}

// add accounts for one round: stored are the Call-IDs stored (acknowledged
// to their sender), rs what the clients received. Duplicates are Call-IDs
// answered 200 more than once; every copy of one must carry the same outer
// Message-ID (the stored message's id), so the client can tell. It returns
// the duplicated Call-IDs.
func (row *faultRow) add(t *testing.T, stored []string, rs ...[]imclient.Received) map[string]bool {
	t.Helper()
	row.Injected++
	row.Stored += len(stored)
	want := map[string]bool{}
	for _, id := range stored {
		want[id] = true
	}
	confirmed := map[string]int{}
	outer := map[string]string{}
	for _, list := range rs {
		for _, r := range list {
			id := r.Decoded.CallID
			if r.DecodeErr != nil || !want[id] {
				t.Errorf("%s: received a message nobody stored: Call-ID %q (%v)", row.Fault, id, r.DecodeErr)
				continue
			}
			if o, ok := outer[id]; ok && o != r.OuterID {
				t.Errorf("%s: %s came with Message-IDs %s and %s; a duplicate must carry the same", row.Fault, id, o, r.OuterID)
			}
			outer[id] = r.OuterID
			if r.Answered == 200 {
				confirmed[id]++
			}
		}
	}
	dups := map[string]bool{}
	for _, id := range stored {
		switch n := confirmed[id]; {
		case n == 0:
			row.Lost++
			t.Errorf("%s: %s was stored but never delivered", row.Fault, id)
		case n > 1:
			dups[id] = true
			row.Duplicated++
			row.Delivered++
		default:
			row.Delivered++
		}
	}
	return dups
}

// String is the row in the README's table format.
func (row faultRow) String() string {
	return fmt.Sprintf("| %s | %d | %d | %d | %d | %d |", row.Fault, row.Injected, row.Stored, row.Delivered, row.Duplicated, row.Lost)
}

// report logs the row and fails the test if a message was lost.
func (row faultRow) report(t *testing.T) {
	t.Helper()
	t.Log("reliability: " + row.String())
	if row.Lost != 0 {
		t.Errorf("%s: %d messages lost, want 0", row.Fault, row.Lost)
	}
}

// wantDups fails the test unless the duplicated Call-IDs are exactly want.
func wantDups(t *testing.T, what string, got map[string]bool, want ...string) {
	t.Helper()
	var g []string
	for id := range got {
		g = append(g, id)
	}
	sort.Strings(g)
	sort.Strings(want)
	if fmt.Sprint(g) != fmt.Sprint(want) {
		t.Errorf("%s: duplicated %v, want %v", what, g, want)
	}
}

// readyz returns the status of GET /readyz on deferpush's admin listener,
// 0 when it does not answer.
func readyz(addr string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/readyz", nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	defer res.Body.Close()
	_, _ = io.Copy(io.Discard, res.Body)
	return res.StatusCode
}

// postRegistered posts a registration to deferpush's Kamailio hook, as
// kamailio.cfg does after save("location").
func postRegistered(t *testing.T, dp *deferpushProc, token, user, contact string) {
	t.Helper()
	body := fmt.Sprintf(`{"aor":"sip:%s@%s","contact":%q,"expires":300,"received":"<null>","instance":"<null>","user_agent":"fault-test","path":"<null>"}`,
		user, domain, contact)
	if code, b, err := postKamailioHook(dp, token, "registered", body); err != nil || code != 200 || !bytes.Contains(b, []byte(`"registered"`)) {
		t.Fatalf("registered hook: %d %s %v", code, b, err)
	}
}

// postKamailioHook posts body to dp's Kamailio hook /hooks/kamailio/<hook>
// as the script does, and returns the status and body of the answer (it
// may run outside the test's goroutine: it fails nothing itself).
func postKamailioHook(dp *deferpushProc, token, hook, body string) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+dp.HooksAddr+"/hooks/kamailio/"+hook, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Deferpush-Token", token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res.StatusCode, b, err
}

// resetRelay is a TCP relay in front of a client's MSRP listener. The first
// connection through it is reset (RST, SO_LINGER 0) towards deferpush once
// resetAfter bytes of deferpush's went through and the client's answers to
// every complete frame among them went back; later connections pass
// untouched.
type resetRelay struct {
	ln         net.Listener
	resetAfter int

	mu     sync.Mutex
	target string // the client's MSRP listener: set once the client runs
	conns  int
	reset  chan struct{} // closed when the reset happened
	// resetAt is when the reset was sent; read it once reset is closed.
	resetAt time.Time
	wg      sync.WaitGroup
}

func startResetRelay(t *testing.T, resetAfter int) *resetRelay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &resetRelay{ln: ln, resetAfter: resetAfter, reset: make(chan struct{})}
	r.wg.Add(1)
	go r.serve()
	t.Cleanup(func() {
		ln.Close()
		r.wg.Wait()
	})
	return r
}

// msrpEndLine matches the end-line of an MSRP frame (RFC 4975 §7.1).
var msrpEndLine = regexp.MustCompile(`\r\n-------[A-Za-z0-9.+%=-]{3,32}[$+#]\r\n`)

func (r *resetRelay) Addr() string { return r.ln.Addr().String() }

// relayTo sets the address connections are relayed to.
func (r *resetRelay) relayTo(target string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.target = target
}

func (r *resetRelay) serve() {
	defer r.wg.Done()
	var open []net.Conn
	defer func() {
		for _, c := range open {
			c.Close()
		}
	}()
	for {
		in, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.mu.Lock()
		target := r.target
		r.mu.Unlock()
		out, err := net.DialTimeout("tcp", target, 5*time.Second)
		if err != nil {
			in.Close()
			continue
		}
		open = append(open, in, out)
		r.mu.Lock()
		r.conns++
		first := r.conns == 1
		r.mu.Unlock()
		var answers atomic.Int64 // end-lines the client sent back
		r.wg.Add(2)
		go func() {
			defer r.wg.Done()
			defer in.Close()
			// carry holds the last bytes, for an end-line split across reads.
			buf, carry := make([]byte, 32<<10), []byte(nil)
			for {
				n, err := out.Read(buf)
				if n > 0 {
					if _, werr := in.Write(buf[:n]); werr != nil {
						return
					}
					data := append(carry, buf[:n]...)
					k := len(msrpEndLine.FindAll(data, -1))
					if len(carry) > 0 && msrpEndLine.Match(carry) {
						k-- // counted with the previous read
					}
					answers.Add(int64(k))
					carry = append([]byte(nil), data[max(0, len(data)-64):]...)
				}
				if err != nil {
					return
				}
			}
		}()
		go func() {
			defer r.wg.Done()
			if !first {
				_, _ = io.Copy(out, in)
				out.Close()
				return
			}
			// Forward exactly resetAfter bytes, let the client's answers
			// to the complete frames among them through, then reset both
			// sides.
			var sent bytes.Buffer
			_, _ = io.CopyN(out, io.TeeReader(in, &sent), int64(r.resetAfter))
			want := int64(len(msrpEndLine.FindAll(sent.Bytes(), -1)))
			pollUntil(5*time.Second, func() bool { return answers.Load() >= want })
			in.(*net.TCPConn).SetLinger(0)
			r.resetAt = time.Now()
			in.Close()
			out.(*net.TCPConn).SetLinger(0)
			out.Close()
			close(r.reset)
		}()
	}
}
