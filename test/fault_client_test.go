package test

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/deferpush/deferpush/adapters/imclient"
	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/plugin/msrp"
	"github.com/deferpush/deferpush/plugin/sdp"
)

// clientFaults are clients that misbehave in a push through Kamailio.
var clientFaults = []struct {
	name  string // the table's label
	fault string
}{
	{"client resets TCP mid-chunk (60 KB message)", "reset"},
	{"client never answers a SEND", "silent"},
	{"client answers the INVITE, never opens MSRP", "noconnect"},
}

// TestFaultClient: a client that resets its MSRP connection in the middle
// of a chunk, one that never answers a SEND, and one that answers the INVITE
// but never opens its MSRP connection. The reset ends the push at once
// (its BYE well before the MSRP timeout could have); the silent client's
// and the unconnected one's pushes end once msrp.timeout (3 s here) has
// passed with nothing from the client, their BYE within 1.5 s more. Only
// the message a session broke on is charged an attempt; what the client
// did not confirm stays stored, and a well-behaved registration gets it.
func TestFaultClient(t *testing.T) {
	for _, cf := range clientFaults {
		t.Run(cf.fault, func(t *testing.T) {
			faultClientRounds(t, cf.name, cf.fault, 1).report(t)
		})
	}
}

// bigBody is a 60 KB text body: 30 MSRP chunks of 2 KB.
var bigBody = bytes.Repeat([]byte("0123456789abcdefghijklmnopqrstuvwxyz-._~ABCDEFGHIJKLMNOPQRSTUVW\r\n"), 60_000/64)

func faultClientRounds(t *testing.T, name, fault string, rounds int) faultRow {
	s := startFaultStack(t)
	sender := s.client(t, "sender", imclient.Config{})
	row := faultRow{Fault: name}
	for r := range rounds {
		faultClientRound(t, s, sender, &row, fmt.Sprintf("%s%d", fault, r), fault)
		if t.Failed() {
			break
		}
	}
	return row
}

func faultClientRound(t *testing.T, s *kamailioStack, sender *imclient.Client, row *faultRow, user, fault string) {
	t.Helper()
	const n = 3
	// The second message is the 60 KB one.
	ids := storeCalls(t, sender, user, "client-"+user, n, func(i int) []byte {
		if i == 1 {
			return bigBody
		}
		return []byte("small message " + user)
	})
	s.waitPending(t, user, n)

	// When the client saw each step first: the INVITE, its 200 going out,
	// the first message, the BYE.
	var (
		mu   sync.Mutex
		seen = map[imclient.EventKind]time.Time{}
	)
	onEvent := func(ev imclient.Event) error {
		mu.Lock()
		if _, ok := seen[ev.Kind]; !ok {
			seen[ev.Kind] = time.Now()
		}
		mu.Unlock()
		return nil
	}
	at := func(k imclient.EventKind) time.Time {
		mu.Lock()
		defer mu.Unlock()
		return seen[k]
	}
	release := make(chan struct{})
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	defer unblock()
	cfg := imclient.Config{OnEvent: onEvent}
	var relay *resetRelay
	switch fault {
	case "reset":
		// Past the first message and into the 60 KB one: the relay cuts
		// deferpush's bytes off inside a chunk, once the client's answers
		// to what came before went back.
		relay = startResetRelay(t, 10_000)
		cfg.PathAddr = relay.Addr()
	case "silent":
		cfg.Answer = func(int, *msrp.Message) error {
			select {
			case <-release:
			case <-time.After(4 * faultMSRPTimeout):
			}
			return &msrp.StatusError{Code: msrp.StatusTimeout, Comment: "never answered"}
		}
	case "noconnect":
		cfg.Setup, cfg.NeverConnect = sdp.SetupActive, true
	default:
		t.Fatalf("unknown client fault %q", fault)
	}
	bad := s.client(t, user, cfg)
	if relay != nil {
		relay.relayTo(bad.MSRPAddr())
	}
	s.register(t, bad)

	// The push ends: BYE from deferpush, nothing left in flight.
	waitFor(t, faultMSRPTimeout+20*time.Second, "the push to end", func() bool {
		return bad.Stats().Byes > 0 && s.counts(t, user).InFlight == 0
	})
	// From what the client last did to deferpush's BYE: the reset ends the
	// push at once, the silence and the missing connection once
	// msrp.timeout has passed; 1.5 s more is the BYE's way to the client.
	const byeWay = 1500 * time.Millisecond
	bye := at(imclient.EventBye)
	var (
		took  time.Duration
		since string
	)
	switch fault {
	case "reset":
		select {
		case <-relay.reset:
			took, since = bye.Sub(relay.resetAt), "the reset"
			if took > faultMSRPTimeout/3 {
				t.Errorf("reset: BYE %v after the reset, want it at once (the MSRP timeout is %v)", took, faultMSRPTimeout)
			}
		default:
			t.Errorf("reset: the relay never reset the connection")
		}
	case "silent":
		took, since = bye.Sub(at(imclient.EventMessage)), "the SEND it never answered"
	case "noconnect":
		took, since = bye.Sub(at(imclient.EventInviteAnswered)), "its 200 to the INVITE"
	}
	// (The lower bound, with some slack for the two paths' delays, says
	// that the timeout, not something else, ended the push.)
	if fault != "reset" && (took < faultMSRPTimeout-500*time.Millisecond || took > faultMSRPTimeout+byeWay) {
		t.Errorf("%s: BYE %v after %s, want msrp.timeout (%v) and at most %v more", fault, took, since, faultMSRPTimeout, byeWay)
	}
	unblock()

	// What the client did not confirm is still stored, and not dead.
	stored := s.storedCallIDs(t, user)
	confirmed := map[string]bool{}
	for _, r := range bad.Received() {
		if r.Answered == 200 {
			confirmed[r.Decoded.CallID] = true
		}
	}
	for _, id := range ids {
		if !confirmed[id] && !stored[id] {
			t.Errorf("%s: %s neither confirmed nor stored after the push", fault, id)
		}
	}
	// Only the message the session broke on is charged an attempt: the
	// 60 KB one under the reset, the first SEND the silent client held;
	// nothing when no SEND went out.
	brokeOn := map[string]string{"reset": ids[1], "silent": ids[0]}[fault]
	page, err := s.st.List(context.Background(), plugin.MustParseAOR("sip:"+user+"@"+domain), plugin.ListQuery{})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range page.Messages {
		want := 0
		if m.CallID == brokeOn {
			want = 1
		}
		if m.Attempts != want {
			t.Errorf("%s: %s has %d attempts after one broken push, want %d", fault, m.CallID, m.Attempts, want)
		}
	}
	if c := s.counts(t, user); c.Dead != 0 {
		t.Errorf("%s: %d dead letters after one failed push", fault, c.Dead)
	}
	t.Logf("%s: BYE %v after %s; %d of %d confirmed, %d stored", fault, took.Round(time.Millisecond), since,
		len(confirmed), n, len(stored))

	// A well-behaved registration gets the rest; the reset relay lets a
	// second connection through untouched.
	good := bad
	if relay == nil {
		good = s.client(t, user, imclient.Config{})
	}
	s.deliverAll(t, good, user, ids)
	var inDoubt []string
	for id := range confirmed {
		if stored[id] {
			inDoubt = append(inDoubt, id)
		}
	}
	dups := row.add(t, ids, bad.Received(), goodOnly(bad, good))
	wantDups(t, fault, dups, inDoubt...)
	for _, r := range good.Received() {
		if r.Decoded.CallID == ids[1] && r.Answered == 200 && !bytes.Equal(r.Decoded.Body, bigBody) {
			t.Errorf("%s: the 60 KB message arrived with %d body bytes, want %d intact", fault, len(r.Decoded.Body), len(bigBody))
		}
	}
}

// goodOnly is good's receipts when it is another client than bad, so that
// no receipt counts twice.
func goodOnly(bad, good *imclient.Client) []imclient.Received {
	if good == bad {
		return nil
	}
	return good.Received()
}
