package test

import (
	"context"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deferpush/deferpush/adapters/imclient"
	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/plugin/msrp"
	"github.com/deferpush/deferpush/plugin/sdp"
)

// relayClient starts a reference client for user that sits behind the MSRP
// relay at relay (it AUTHs to it and answers with the relay's Use-Path in
// its a=path), and registers through the stack's Kamailio.
func (s *kamailioStack) relayClient(t *testing.T, user string, relay msrp.URI, cfg imclient.Config) *imclient.Client {
	t.Helper()
	cfg.Relay, cfg.RelayUser, cfg.RelayPassword = relay.String(), user, relayPassword
	return s.client(t, user, cfg)
}

// pushTimer records when the client got its first INVITE and its first BYE.
type pushTimer struct {
	mu          sync.Mutex
	invite, bye time.Time
	storedAtBye int // messages still stored when the BYE arrived
	countsAtBye func() int
}

func (p *pushTimer) onEvent(ev imclient.Event) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case ev.Kind == imclient.EventInvite && p.invite.IsZero():
		p.invite = time.Now()
	case ev.Kind == imclient.EventBye && p.bye.IsZero():
		p.bye = time.Now()
		if p.countsAtBye != nil {
			p.storedAtBye = p.countsAtBye()
		}
	}
	return nil
}

func (p *pushTimer) took() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.bye.Sub(p.invite)
}

// TestKamailioRelayPush: the client sits behind a real MSRP relay
// (Kamailio's msrp module, digest AUTH, Use-Path) and deferpush pushes to it
// through the shipped kamailio.cfg. The relay answers each SEND 200 itself
// and brings the client's success REPORTs over a connection it opens to
// deferpush's MSRP listener. Both messages are delivered once, asked for a
// REPORT, and removed from the mailbox by the time the BYE comes, which is
// well under the MSRP timeout (30 s, the default); a second registration
// pushes nothing again.
func TestKamailioRelayPush(t *testing.T) {
	s := startKamailioStack(t, stackOptions{})
	_, relay := kamailioRelay(t, nil)
	const user = "behindrelay"
	sender := s.client(t, "sender", imclient.Config{})
	ids := storeCalls(t, sender, user, "relay-push", 2, nil)
	s.waitPending(t, user, 2)

	timer := &pushTimer{countsAtBye: func() int { return s.storedCount(user) }}
	c := s.relayClient(t, user, relay, imclient.Config{OnEvent: timer.onEvent})
	s.register(t, c)
	waitClient(t, c, "the push's BYE", func(st imclient.Stats) bool { return st.Byes > 0 })

	offer, err := sdp.Parse(c.LastInvite().Body())
	if err != nil {
		t.Fatal(err)
	}
	if len(offer.Path) != 1 {
		t.Fatalf("deferpush's offer path %v, want its own URI", offer.Path)
	}
	rs := c.Received()
	if got := callIDs(rs); strings.Join(got, " ") != strings.Join(ids, " ") {
		t.Errorf("received %v, want %v once each", got, ids)
	}
	for _, r := range rs {
		if !r.ReportAsked || r.Answered != 200 {
			t.Errorf("%s: report asked %v, answered %d; want a success REPORT asked through the relay, 200", r.Decoded.CallID, r.ReportAsked, r.Answered)
		}
	}
	timer.mu.Lock()
	atBye := timer.storedAtBye
	timer.mu.Unlock()
	if atBye != 0 {
		t.Errorf("%d messages still stored when the BYE came, want the mailbox empty", atBye)
	}
	if n := s.counts(t, user); n != (plugin.Counts{}) {
		t.Errorf("mailbox after the push: %+v, want empty", n)
	}
	took := timer.took()
	if took > 5*time.Second {
		t.Errorf("the push took %v from INVITE to BYE, want well under the 30 s MSRP timeout", took)
	}
	t.Logf("pushed 2 messages through the relay: INVITE to BYE in %v", took.Round(time.Millisecond))

	// Nothing is delivered twice: a new registration finds nothing to push.
	s.register(t, c)
	time.Sleep(time.Second)
	if st := c.Stats(); st.Invites != 1 || st.Received != 2 {
		t.Errorf("after a second registration: %+v, want no second push", st)
	}
}

// storedCount is user's pending plus in-flight messages; -1 on error. It
// does not fail the test, so that client hooks can call it.
func (s *kamailioStack) storedCount(user string) int {
	c, err := s.st.Count(context.Background(), plugin.MustParseAOR("sip:"+user+"@"+domain))
	if err != nil {
		return -1
	}
	return c.Pending + c.InFlight
}

// TestKamailioRelayDropsReports: a relay that drops REPORTs. The client gets
// both messages and answers 200, but no confirmation reaches deferpush: the
// push ends within the MSRP timeout (3 s here) and a margin, both messages
// stay stored with no attempt charged, and deferpush logs why, once. With
// msrp.trusted_relays naming the relay's network, its 200 is taken as the
// confirmation: no REPORT is asked for and the mailbox empties.
func TestKamailioRelayDropsReports(t *testing.T) {
	_, relay := kamailioRelay(t, map[string]string{"DROP_REPORTS": "1"})
	for _, trusted := range []bool{false, true} {
		name := map[bool]string{false: "untrusted", true: "trusted"}[trusted]
		t.Run(name, func(t *testing.T) {
			env := []string{"DEFERPUSH_MSRP_TIMEOUT=3s"}
			if trusted {
				env = append(env, "DEFERPUSH_MSRP_TRUSTED_RELAYS=10.0.0.0/8,127.0.0.0/8")
			}
			s := startKamailioStack(t, stackOptions{dpEnv: env})
			user := "dropper" + name
			sender := s.client(t, "sender", imclient.Config{})
			ids := storeCalls(t, sender, user, "relay-drop-"+name, 2, nil)
			s.waitPending(t, user, 2)
			timer := &pushTimer{}
			c := s.relayClient(t, user, relay, imclient.Config{OnEvent: timer.onEvent})
			s.register(t, c)
			waitClient(t, c, "the push's BYE", func(st imclient.Stats) bool { return st.Byes > 0 })
			waitFor(t, 5*time.Second, "nothing in flight", func() bool { return s.counts(t, user).InFlight == 0 })
			// The relay answers each SEND hop by hop as it takes it (RFC
			// 4976): trusted, that 200 ends the message, and the BYE,
			// through the proxy, may reach the client before the relay
			// has passed it the last message.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			st, _ := c.Wait(ctx, func(st imclient.Stats) bool { return st.Received >= 2 })
			cancel()
			if st.Received != 2 {
				t.Errorf("the client got %d messages, want both", st.Received)
			}
			for _, r := range c.Received() {
				if r.ReportAsked == trusted {
					t.Errorf("%s: success report asked = %v with the relay trusted = %v", r.Decoded.CallID, r.ReportAsked, trusted)
				}
			}
			n := s.counts(t, user)
			if trusted {
				if n != (plugin.Counts{}) {
					t.Errorf("mailbox after the push: %+v, want empty: the trusted relay's 200 confirms", n)
				}
				return
			}
			if took := timer.took(); took > 3*time.Second+3*time.Second {
				t.Errorf("the push took %v from INVITE to BYE, want the 3 s MSRP timeout and a margin", took)
			}
			stored := s.storedCallIDs(t, user)
			for _, id := range ids {
				if !stored[id] {
					t.Errorf("%s left the store though its delivery was never confirmed", id)
				}
			}
			if n.Pending != 2 || n.Dead != 0 {
				t.Errorf("mailbox after the push: %+v, want both pending, none dead", n)
			}
			page, err := s.st.List(context.Background(), plugin.MustParseAOR("sip:"+user+"@"+domain), plugin.ListQuery{Limit: 10})
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range page.Messages {
				if m.Attempts != 0 {
					t.Errorf("%s charged %d attempts, want none", m.CallID, m.Attempts)
				}
			}
			const reason = "no success REPORT came back through the MSRP relay"
			waitFor(t, 5*time.Second, "the reason in deferpush's log", func() bool { return strings.Contains(s.dp.Log(), reason) })
			if k := strings.Count(s.dp.Log(), reason); k != 1 {
				t.Errorf("the reason is logged %d times, want once", k)
			}
			t.Logf("push through a relay that drops REPORTs ended after %v", timer.took().Round(time.Millisecond))
		})
	}
}

// TestKamailioRelayForgedReports: while the client behind the relay holds
// the first message, forged success REPORTs for it reach deferpush's MSRP
// listener: with the right session id and Message-ID from another address
// (127.0.0.2), from the relay's address for a message not in flight, and
// from the relay's address with a From-Path that is not the session's.
// None confirms anything: the client then drops the message unanswered and
// both messages stay stored.
func TestKamailioRelayForgedReports(t *testing.T) {
	s := startKamailioStack(t, stackOptions{dpEnv: []string{"DEFERPUSH_MSRP_TIMEOUT=3s"}})
	_, relay := kamailioRelay(t, nil)
	const user = "forged"
	sender := s.client(t, "sender", imclient.Config{})
	ids := storeCalls(t, sender, user, "relay-forged", 2, nil)
	s.waitPending(t, user, 2)

	var c *imclient.Client
	forged := make(chan error, 1)
	onEvent := func(ev imclient.Event) error {
		if ev.Kind != imclient.EventMessage || ev.N != 1 {
			return nil
		}
		offer, err := sdp.Parse(c.LastInvite().Body())
		if err != nil {
			forged <- err
			return errDrop
		}
		answer, err := sdp.Parse(c.LastAnswer())
		if err != nil {
			forged <- err
			return errDrop
		}
		forged <- forgeReports(offer.Path[0], answer.Path, ev.Message)
		// The real client never confirms: it drops the message.
		return errDrop
	}
	c = s.relayClient(t, user, relay, imclient.Config{OnEvent: onEvent})
	s.register(t, c)
	select {
	case err := <-forged:
		if err != nil {
			t.Fatalf("forging: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the first message never reached the client")
	}
	waitClient(t, c, "the push's BYE", func(st imclient.Stats) bool { return st.Byes > 0 })
	waitFor(t, 5*time.Second, "nothing in flight", func() bool { return s.counts(t, user).InFlight == 0 })
	stored := s.storedCallIDs(t, user)
	for _, id := range ids {
		if !stored[id] {
			t.Errorf("%s left the store on a forged REPORT", id)
		}
	}
	// Each forgery was turned away for its own reason.
	log := s.dp.Log()
	for _, want := range []string{
		`"msg":"msrp report ignored"` + `.*"remote":"127\.0\.0\.2:[0-9]+","reason":"source 127\.0\.0\.2 is not the relay 127\.0\.0\.1"`,
		`"msg":"report for no message in flight".*"msg_id":"notinflight0001"`,
		`"msg":"msrp report ignored".*"reason":"From-Path [^"]*notthesessionsrelay[^"]* is not the session's path`,
	} {
		if !regexp.MustCompile(want).MatchString(log) {
			t.Errorf("deferpush's log has no line matching %s", want)
		}
	}
}

// forgeReports sends deferpush three success REPORTs for m that must not
// count, each on a new connection to its MSRP listener dp, as a relay
// would: path is the client's a=path (its relay, then itself), the
// session's path as the relay stamps it on the REPORT's From-Path.
func forgeReports(dp msrp.URI, path []msrp.URI, m *msrp.Message) error {
	n := strconv.Itoa(len(m.Body))
	send := func(src, from, id string) error {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
		nc, err := d.Dial("tcp", dp.Addr())
		if err != nil {
			return err
		}
		defer nc.Close()
		f := &msrp.Frame{TID: msrp.NewSessionID(), Method: "REPORT", Header: []msrp.Header{
			{Name: msrp.HeaderToPath, Value: dp.String()}, {Name: msrp.HeaderFromPath, Value: from},
			{Name: msrp.HeaderMessageID, Value: id}, {Name: msrp.HeaderByteRange, Value: "1-" + n + "/" + n},
			{Name: msrp.HeaderStatus, Value: "000 200 OK"}}, Flag: msrp.FlagEnd}
		if err := msrp.NewWriter(nc).WriteFrame(f); err != nil {
			return err
		}
		// Let deferpush read it before the connection closes.
		time.Sleep(100 * time.Millisecond)
		return nil
	}
	other := append([]msrp.URI(nil), path...)
	other[0].SessionID = "notthesessionsrelay"
	for _, r := range []struct{ src, from, id string }{
		// Everything right but the source address.
		{"127.0.0.2", msrp.FormatPath(path), m.ID},
		// From the relay's address, for a message not in flight.
		{"127.0.0.1", msrp.FormatPath(path), "notinflight0001"},
		// From the relay's address, along another path.
		{"127.0.0.1", msrp.FormatPath(other), m.ID},
	} {
		if err := send(r.src, r.from, r.id); err != nil {
			return err
		}
	}
	return nil
}

// TestOpenSIPSRelayPush is TestKamailioRelayPush with OpenSIPS's
// msrp_relay (RFC 4976) as the client's relay: a second, independent MSRP
// relay. OpenSIPS forwards to the client by the address in the client's
// path, so the client advertises the address of the connection it opened
// for AUTH (msrp.RelayConfig.Local); the success REPORTs come back the way
// the relay chooses. Both messages are delivered once and confirmed, and
// the mailbox is empty when the BYE comes.
func TestOpenSIPSRelayPush(t *testing.T) {
	s := startKamailioStack(t, stackOptions{})
	relay := opensipsRelay(t)
	const user = "behindopensips"
	sender := s.client(t, "sender", imclient.Config{})
	ids := storeCalls(t, sender, user, "osrelay-push", 2, nil)
	s.waitPending(t, user, 2)

	timer := &pushTimer{countsAtBye: func() int { return s.storedCount(user) }}
	c := s.relayClient(t, user, relay, imclient.Config{OnEvent: timer.onEvent})
	s.register(t, c)
	waitClient(t, c, "the push's BYE", func(st imclient.Stats) bool { return st.Byes > 0 })
	rs := c.Received()
	if got := callIDs(rs); strings.Join(got, " ") != strings.Join(ids, " ") {
		t.Errorf("received %v, want %v once each", got, ids)
	}
	for _, r := range rs {
		if !r.ReportAsked || r.Answered != 200 {
			t.Errorf("%s: report asked %v, answered %d; want a success REPORT asked through the relay, 200", r.Decoded.CallID, r.ReportAsked, r.Answered)
		}
	}
	timer.mu.Lock()
	atBye := timer.storedAtBye
	timer.mu.Unlock()
	if atBye != 0 {
		t.Errorf("%d messages still stored when the BYE came, want the mailbox empty", atBye)
	}
	if n := s.counts(t, user); n != (plugin.Counts{}) {
		t.Errorf("mailbox after the push: %+v, want empty", n)
	}
	t.Logf("pushed 2 messages through OpenSIPS's msrp_relay: INVITE to BYE in %v", timer.took().Round(time.Millisecond))
}
