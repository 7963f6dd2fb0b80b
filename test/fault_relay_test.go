package test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/deferpush/deferpush/adapters/imclient"
	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/test/harness"
)

// TestFaultRelayRestartMidPush: the client sits behind Kamailio's MSRP relay
// and the relay is killed (SIGKILL) and started again while the client
// holds the 3rd of 6 messages (the first two confirmed through it). The
// push ends within the MSRP timeout and a
// margin, nothing is lost: what the client had confirmed before the kill
// left the store, the rest stays stored; the client authenticates to the
// restarted relay afresh (a new Use-Path) and the next registration gets
// the rest. The only duplicates are messages the client answered 200 that
// never reached deferpush, confirmed.
func TestFaultRelayRestartMidPush(t *testing.T) {
	faultRelayRounds(t, 1).report(t)
}

func faultRelayRounds(t *testing.T, rounds int) faultRow {
	s := startFaultStack(t)
	relayProc, relay := kamailioRelay(t, nil)
	sender := s.client(t, "sender", imclient.Config{})
	row := faultRow{Fault: "restart the MSRP relay (Kamailio msrp, kill -9) mid-push"}
	for r := range rounds {
		faultRelayRound(t, s, relayProc, relay, sender, &row, fmt.Sprintf("relayed%d", r))
		if t.Failed() {
			break
		}
	}
	return row
}

func faultRelayRound(t *testing.T, s *kamailioStack, relayProc interface {
	Kill()
	Start(harness.T)
}, relayURI interface{ String() string }, sender *imclient.Client, row *faultRow, user string) {
	t.Helper()
	const n, at = 6, 3
	ids := storeCalls(t, sender, user, "relay-"+user, n, nil)
	s.waitPending(t, user, n)

	killed, restarted := make(chan struct{}), make(chan struct{})
	timer := &pushTimer{}
	onEvent := func(ev imclient.Event) error {
		_ = timer.onEvent(ev)
		if ev.Kind == imclient.EventMessage && ev.N == at {
			// Once the REPORTs of the messages before it came back
			// through the relay and deferpush removed them.
			pollUntil(5*time.Second, func() bool { return s.unacked(user, n-at+1) })
			relayProc.Kill()
			close(killed)
			select {
			case <-restarted:
			case <-time.After(30 * time.Second):
			}
		}
		return nil
	}
	c := s.client(t, user, imclient.Config{OnEvent: onEvent, Relay: relayURI.String(), RelayUser: user, RelayPassword: relayPassword})
	s.register(t, c)
	select {
	case <-killed:
	case <-time.After(30 * time.Second):
		t.Fatalf("the client never got message %d", at)
	}
	relayProc.Start(t)
	close(restarted)

	// The push ends (BYE, nothing in flight) within the MSRP timeout and
	// a margin.
	bound := faultMSRPTimeout + 5*time.Second
	waitFor(t, bound+10*time.Second, "the push to end", func() bool {
		return c.Stats().Byes > 0 && s.counts(t, user).InFlight == 0
	})
	if took := timer.took(); took > bound {
		t.Errorf("the push took %v from its INVITE to its end, want at most %v", took, bound)
	}
	stored := s.storedCallIDs(t, user)
	confirmed := map[string]bool{}
	for _, r := range c.Received() {
		if r.Answered == 200 {
			confirmed[r.Decoded.CallID] = true
		}
	}
	var inDoubt []string
	for _, id := range ids {
		switch {
		case !confirmed[id] && !stored[id]:
			t.Errorf("%s neither confirmed nor stored after the push", id)
		case confirmed[id] && stored[id]:
			inDoubt = append(inDoubt, id)
		}
	}
	// A REPORT that does not come charges no attempt: every message left
	// has none (a dead-letter count could not show it, with max_attempts
	// 5 after one push).
	page, err := s.st.List(context.Background(), plugin.MustParseAOR("sip:"+user+"@"+domain), plugin.ListQuery{})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range page.Messages {
		if m.Attempts != 0 {
			t.Errorf("%s has %d attempts after the relay's restart, want none charged", m.CallID, m.Attempts)
		}
	}
	if cn := s.counts(t, user); cn.Dead != 0 {
		t.Errorf("%d dead letters after the relay's restart", cn.Dead)
	}
	t.Logf("relay killed at message %d: push ended %v after its INVITE; %d of %d answered by the client, %d stored",
		at, timer.took().Round(time.Millisecond), len(confirmed), n, len(stored))

	// The client authenticates to the restarted relay and gets the rest.
	s.deliverAll(t, c, user, ids)
	dups := row.add(t, ids, c.Received())
	// A message the client confirmed while deferpush still held it after
	// the push is sent again; one deferpush had removed never is. The
	// client may confirm SENDs of the dead session it had read before the
	// kill only after the check above (once its event handler returns):
	// those were still held too, and their duplicates are as legitimate.
	for id := range dups {
		if !stored[id] {
			t.Errorf("relay restart: %s duplicated, but deferpush had removed it after the first push", id)
		}
	}
	for _, id := range inDoubt {
		if !dups[id] {
			t.Errorf("relay restart: %s was confirmed and still stored after the first push, but not sent again", id)
		}
	}
}
