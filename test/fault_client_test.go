package test

import (
	"bytes"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/deferpush/deferpush/adapters/imclient"
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
// but never opens its MSRP connection. Each push ends within the MSRP
// timeout (msrp.timeout, 3 s here) plus a margin, with a BYE; the messages
// the client did not confirm stay stored, and a well-behaved registration
// gets them all.
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

	var (
		mu      sync.Mutex
		invited time.Time
	)
	onEvent := func(ev imclient.Event) error {
		if ev.Kind == imclient.EventInvite {
			mu.Lock()
			if invited.IsZero() {
				invited = time.Now()
			}
			mu.Unlock()
		}
		return nil
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

	// The push ends (BYE from deferpush, nothing left in flight) within the
	// MSRP timeout and a margin.
	bound := faultMSRPTimeout + 5*time.Second
	waitFor(t, bound+10*time.Second, "the push to end", func() bool {
		return bad.Stats().Byes > 0 && s.counts(t, user).InFlight == 0
	})
	mu.Lock()
	took := time.Since(invited)
	mu.Unlock()
	if took > bound {
		t.Errorf("%s: the push took %v from its INVITE to its end, want at most %v", fault, took, bound)
	}
	if relay != nil {
		select {
		case <-relay.reset:
		default:
			t.Errorf("reset: the relay never reset the connection")
		}
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
	if c := s.counts(t, user); c.Dead != 0 {
		t.Errorf("%s: %d dead letters after one failed push", fault, c.Dead)
	}
	t.Logf("%s: push ended %v after its INVITE; %d of %d confirmed, %d stored", fault, took.Round(time.Millisecond),
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
