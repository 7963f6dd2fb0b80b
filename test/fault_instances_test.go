package test

import (
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/deferpush/deferpush/adapters/imclient"
	"github.com/deferpush/deferpush/plugin"
)

// TestFaultTwoInstances runs two deferpush instances on one Redis. The one
// Kamailio posts to pushes; it is killed (SIGKILL) while it holds the push
// lock, in the middle of the session. The other instance, told of the
// registration at once, leaves the recipient alone while the lease lives,
// then takes over (its sweeper requeues the dead instance's messages) and
// delivers the rest: nothing lost; the only duplicates are the messages
// the client confirmed before the kill, whose ack waited for their window
// (16) to fill.
func TestFaultTwoInstances(t *testing.T) {
	faultTwoInstances(t, 1).report(t)
}

func faultTwoInstances(t *testing.T, rounds int) faultRow {
	s := startFaultStack(t)
	sender := s.client(t, "sender", imclient.Config{})
	other := s.otherInstance(t)
	row := faultRow{Fault: "two instances, kill -9 of the one holding the push lock"}
	for r := range rounds {
		if r > 0 {
			// The killed instance is the one Kamailio posts to.
			s.restartDeferpush(t)
		}
		faultTwoInstancesRound(t, s, other, sender, &row, fmt.Sprintf("twin%d", r))
		if t.Failed() {
			break
		}
	}
	return row
}

func faultTwoInstancesRound(t *testing.T, s *kamailioStack, other *deferpushProc, sender *imclient.Client, row *faultRow, user string) {
	t.Helper()
	const n, k = 8, 3
	ids := storeCalls(t, sender, user, "twin-"+user, n, nil)
	s.waitPending(t, user, n)

	a := s.dp
	var (
		mu       sync.Mutex
		until    time.Time // lease end of the killed instance
		killedAt time.Time
		invites  []time.Time
	)
	killed := make(chan struct{})
	rcv := s.client(t, user, imclient.Config{OnEvent: func(ev imclient.Event) error {
		switch {
		case ev.Kind == imclient.EventInvite:
			mu.Lock()
			invites = append(invites, time.Now())
			mu.Unlock()
		case ev.Kind == imclient.EventMessage && ev.N == k:
			if !s.unacked(user, n) {
				t.Errorf("messages 1..%d acked before their window filled", k-1)
			}
			u := s.leaseUntil(t, user)
			a.Kill(t)
			mu.Lock()
			until, killedAt = u, time.Now()
			mu.Unlock()
			close(killed)
			return errDrop
		}
		return nil
	}})
	s.register(t, rcv)
	select {
	case <-killed:
	case <-time.After(30 * time.Second):
		t.Fatalf("message %d never arrived (client saw %+v)", k, rcv.Stats())
	}
	mu.Lock()
	if until.IsZero() {
		t.Errorf("no push lock held at the kill")
	}
	mu.Unlock()
	// The registration reaches the other instance while the lease lives.
	postRegistered(t, other, s.token, user, rcv.Contact())

	waitFor(t, faultLockTTL+15*time.Second, "the other instance to deliver the rest", func() bool {
		return len(missing(ids, rcv.Received())) == 0 && s.counts(t, user) == (plugin.Counts{})
	})
	mu.Lock()
	defer mu.Unlock()
	if len(invites) != 2 {
		t.Fatalf("%d INVITEs, want 2 (the killed instance's, the other's)", len(invites))
	}
	if invites[1].Before(until) {
		t.Errorf("the other instance pushed at %v, before the lease ran out at %v", invites[1], until)
	}
	_, otherPort, _ := net.SplitHostPort(other.SIPAddr)
	if c := rcv.LastInvite().Contact(); c == nil || fmt.Sprint(c.Address.Port) != otherPort {
		t.Errorf("second INVITE's Contact %v, want the other instance (port %s)", c, otherPort)
	}
	t.Logf("%s: lease ran out %v after the kill; the other instance's INVITE came %v after the kill",
		user, until.Sub(killedAt).Round(time.Millisecond), invites[1].Sub(killedAt).Round(time.Millisecond))
	dups := row.add(t, ids, rcv.Received())
	wantDups(t, "two instances", dups, ids[:k-1]...)
}

// TestStoredDuringPushOnOtherInstance: two instances on one Redis; the
// one Kamailio posts the registration to pushes a user's 3 messages, and
// while it does, a fourth is stored through the other instance's message
// hook (whose nudge reaches only its own scheduler, where no push runs).
// The pushing instance's dp_finish finds the mark the store left and it
// claims once more: all 4 delivered without a new REGISTER (PROBE8 F1:
// the fourth waited for the next registration).
func TestStoredDuringPushOnOtherInstance(t *testing.T) {
	s := startFaultStack(t)
	sender := s.client(t, "sender", imclient.Config{})
	other := s.otherInstance(t)
	const user = "midpush"
	ids := storeCalls(t, sender, user, "mid-"+user, 3, nil)
	s.waitPending(t, user, 3)
	extra := "mid-extra@fault.test"
	var once sync.Once
	rcv := s.client(t, user, imclient.Config{OnEvent: func(ev imclient.Event) error {
		if ev.Kind == imclient.EventMessage && ev.N == 1 {
			once.Do(func() {
				postMessageTo(t, other, s.token, s.proxy, user, fmt.Sprintf("MESSAGE sip:%[1]s@%[2]s SIP/2.0\r\n"+
					"Via: SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bKmidpush\r\nFrom: <sip:sender@%[2]s>;tag=mid1\r\n"+
					"To: <sip:%[1]s@%[2]s>\r\nCall-ID: %[3]s\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\n"+
					"Content-Length: 9\r\n\r\nmid-push!", user, domain, extra))
			})
		}
		return nil
	}})
	s.register(t, rcv)
	all := append(ids, extra)
	waitFor(t, 20*time.Second, "all 4 messages delivered without a new REGISTER", func() bool {
		return len(missing(all, rcv.Received())) == 0 && s.counts(t, user) == (plugin.Counts{})
	})
}

// TestUnregisteredOnOtherInstanceEndsPush: two instances on one Redis;
// the one Kamailio posts the registration to pushes 6 messages to a
// client slow to answer the first; the client's unregistration reaches
// the other instance. The push ends at once (BYE) on the instance that
// runs it, which hears of the unregistration from Redis (dp:cancel),
// and what the client did not confirm stays stored (PROBE8 F3: the push
// went on through the whole mailbox).
func TestUnregisteredOnOtherInstanceEndsPush(t *testing.T) {
	s := startFaultStack(t)
	sender := s.client(t, "sender", imclient.Config{})
	other := s.otherInstance(t)
	const user = "unregelse"
	storeCalls(t, sender, user, "ue-"+user, 6, nil)
	s.waitPending(t, user, 6)
	var once sync.Once
	var rcv *imclient.Client
	unregistered := make(chan time.Time, 1)
	rcv = s.client(t, user, imclient.Config{OnEvent: func(ev imclient.Event) error {
		if ev.Kind == imclient.EventMessage && ev.N == 1 {
			once.Do(func() {
				postUnregistered(t, other, s.token, user, rcv.Contact())
				unregistered <- time.Now()
				time.Sleep(1500 * time.Millisecond) // then answers 200
			})
		}
		return nil
	}})
	s.register(t, rcv)
	var at time.Time
	select {
	case at = <-unregistered:
	case <-time.After(20 * time.Second):
		t.Fatal("the first message never arrived")
	}
	waitClient(t, rcv, "BYE", func(st imclient.Stats) bool { return st.Byes == 1 })
	if d := time.Since(at); d > faultMSRPTimeout {
		t.Errorf("BYE %v after the unregistration", d)
	}
	if got := len(rcv.Received()); got > 1 {
		t.Errorf("the client received %d messages, want the push ended after the first", got)
	}
	waitFor(t, 5*time.Second, "the unconfirmed messages back in the mailbox", func() bool {
		c := s.counts(t, user)
		return c.InFlight == 0 && c.Pending >= 5
	})
}

// postUnregistered posts an unregistration to deferpush's Kamailio hook,
// as kamailio.cfg's route REGISTRATION_REMOVED does.
func postUnregistered(t *testing.T, dp *deferpushProc, token, user, contact string) {
	t.Helper()
	body := fmt.Sprintf(`{"aor":"sip:%s@%s","contact":%q,"at":"%d"}`, user, domain, contact, time.Now().UnixMicro())
	if code, b, err := postKamailioHook(dp, token, "unregistered", body); err != nil || code != 200 {
		t.Errorf("unregistered hook: %d %s %v", code, b, err)
	}
}
