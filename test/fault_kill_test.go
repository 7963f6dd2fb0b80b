package test

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deferpush/deferpush/adapters/imclient"
)

// killPoints are the points of a push at which deferpush is killed with
// SIGKILL, driven from the client's side of the session.
var killPoints = []struct {
	name  string // the table's label
	point string
}{
	{"kill -9 deferpush after the INVITE's 200", "invite"},
	{"kill -9 deferpush between SENDs", "between"},
	{"kill -9 deferpush after the SENDs' 200s, before the store ack", "ack"},
	{"kill -9 deferpush during the BYE", "bye"},
}

// TestFaultKillDeferpush kills deferpush at each point of a push, starts it
// again on the same ports, and registers the client again: every message is
// delivered; the only duplicates are the messages whose 200 reached the
// client but whose ack never reached Redis, with the same Call-ID and
// Message-ID: deferpush acks confirmed messages a window (16) at a time,
// and when a batch of the session ends, so these are the confirmed
// messages of the window in progress — those before the k-th when killed
// between SENDs, all six when killed while their ack waits on Redis.
func TestFaultKillDeferpush(t *testing.T) {
	for _, kp := range killPoints {
		t.Run(kp.point, func(t *testing.T) {
			faultKillRounds(t, kp.name, kp.point, 1).report(t)
		})
	}
}

func faultKillRounds(t *testing.T, name, point string, rounds int) faultRow {
	s := startFaultStack(t)
	var front *redisFront
	if point == "ack" {
		// From now on deferpush reaches Redis through a front that can
		// hold one command (see faultKillRound).
		front = startRedisFront(t, s.redis.Addr)
		s.dpArgs = append(s.dpArgs, "--redis", front.URL())
		s.dp.Kill(t)
		s.restartDeferpush(t)
	}
	sender := s.client(t, "sender", imclient.Config{})
	row := faultRow{Fault: name}
	for r := range rounds {
		user := fmt.Sprintf("kill%d", r)
		faultKillRound(t, s, front, sender, &row, user, point)
		if t.Failed() {
			break
		}
	}
	return row
}

// pollUntil polls cond every 10 ms for at most d; it is the bounded wait
// of code that runs outside the test's goroutine (imclient hooks), where
// t.Fatal is not allowed.
func pollUntil(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

func faultKillRound(t *testing.T, s *kamailioStack, front *redisFront, sender *imclient.Client, row *faultRow, user, point string) {
	t.Helper()
	const n, k = 6, 3 // messages; the k-th is the one in play
	ids := storeCalls(t, sender, user, fmt.Sprintf("kill-%s-%s", point, user), n, nil)
	s.waitPending(t, user, n)

	dp := s.dp
	// stillStored checks that the confirmed messages before the one in play
	// wait for their ack (their window is not full, the batch not over):
	// they are the ones in doubt at the kill.
	stillStored := func(confirmed int) {
		if !s.unacked(user, n) {
			t.Errorf("%s: %d messages confirmed, some already acked before the window filled (stored %+v)", point, confirmed, s.counts(t, user))
		}
	}
	injected := make(chan struct{}) // closed once the fault is over
	var once sync.Once
	finish := func() { once.Do(func() { close(injected) }) }
	killed := make(chan struct{})
	var restarted atomic.Bool // the killed session is over

	var hook func(ev imclient.Event) error
	switch point {
	case "invite":
		// deferpush may ACK and send before the kill lands: the client
		// takes nothing until it did.
		hook = func(ev imclient.Event) error {
			switch ev.Kind {
			case imclient.EventInviteAnswered:
				once.Do(func() { dp.Kill(t); close(injected) })
			case imclient.EventMessage:
				if restarted.Load() {
					return nil
				}
				select {
				case <-injected:
				case <-time.After(15 * time.Second):
				}
				return errDrop
			}
			return nil
		}
	case "between":
		hook = func(ev imclient.Event) error {
			if ev.Kind == imclient.EventMessage && ev.N == k {
				stillStored(k - 1)
				dp.Kill(t)
				finish()
				return errDrop
			}
			return nil
		}
	case "ack":
		// deferpush reaches Redis through a front that holds the one
		// command naming the last message's id: the ack of the session's
		// batch, all n, sent once the client answered the last SEND 200.
		// deferpush is killed while the front holds it, so the ack never
		// lands.
		hook = func(ev imclient.Event) error {
			if ev.Kind != imclient.EventMessage {
				return nil
			}
			switch ev.N {
			case n:
				stillStored(n - 1)
				front.hold(ev.Message.ID) // the outer Message-ID is the stored id
				go func() {
					defer finish()
					select {
					case cmd := <-front.held:
						if len(cmd) == 0 || !strings.EqualFold(cmd[0], "fcall") {
							t.Errorf("held %v, want the ack function", cmd)
						}
					case <-time.After(10 * time.Second):
						t.Errorf("deferpush's ack of message %d never reached Redis's front", n)
					}
					dp.Kill(t)
					close(killed)
				}()
				return nil
			case n + 1: // pushed again before the kill: never
				select {
				case <-killed:
				case <-time.After(15 * time.Second):
				}
				return errDrop
			}
			return nil
		}
	case "bye":
		hook = func(ev imclient.Event) error {
			if ev.Kind == imclient.EventBye {
				once.Do(func() { dp.Kill(t); close(injected) })
			}
			return nil
		}
	default:
		t.Fatalf("unknown kill point %q", point)
	}
	rcv := s.client(t, user, imclient.Config{OnEvent: hook})
	s.register(t, rcv)
	select {
	case <-injected:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: the fault was never injected (client saw %+v)", point, rcv.Stats())
	}

	// What the client confirmed and Redis still holds is what must come
	// again, and nothing else.
	stored := s.storedCallIDs(t, user)
	inDoubt := map[string]bool{}
	for _, r := range rcv.Received() {
		if r.Answered == 200 && stored[r.Decoded.CallID] {
			inDoubt[r.Decoded.CallID] = true
		}
	}
	var want []string
	switch point {
	case "between":
		want = ids[:k-1]
	case "ack":
		want = ids
	}
	wantDups(t, point+": confirmed and still stored after the kill", inDoubt, want...)

	restarted.Store(true)
	s.restartDeferpush(t)
	s.waitLeaseOver(t, user)
	s.deliverAll(t, rcv, user, ids)
	dups := row.add(t, ids, rcv.Received())
	wantDups(t, point, dups, want...)
}
