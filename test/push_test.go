package test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/deferpush/deferpush/adapters/imclient"
	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/plugin/msrp"
	"github.com/deferpush/deferpush/test/harness"
)

func newClient(t testing.TB, aor string, cfg imclient.Config) *imclient.Client {
	t.Helper()
	cfg.AOR = aor
	cfg.Logger = testLogger(t)
	c, err := imclient.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func callIDs(rs []imclient.Received) []string {
	var ids []string
	for _, r := range rs {
		ids = append(ids, r.Decoded.CallID)
	}
	return ids
}

func waitClient(t testing.TB, c *imclient.Client, what string, cond func(imclient.Stats) bool) imclient.Stats {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	st, err := c.Wait(ctx, cond)
	if err != nil {
		t.Fatalf("waiting for %s: %v (client saw %+v)", what, err, st)
	}
	return st
}

func TestPushDeliversAllInOrder(t *testing.T) {
	r := harness.Redis(t)
	c := startCore(t, r.URL(), coreOptions{})
	var aor = plugin.MustParseAOR("sip:user2@example.com")
	var want []string
	for i := range 12 {
		m := c.storeSIP(t, aor, fmt.Sprintf("call-%02d@example.com", i), fmt.Sprintf("message %d", i))
		want = append(want, m.CallID)
	}
	cl := newClient(t, aor.String(), imclient.Config{})
	c.register(t, aor, cl.Contact())
	st := waitClient(t, cl, "BYE", func(s imclient.Stats) bool { return s.Byes == 1 })
	rep := c.report(t)
	if rep.Outcome != "delivered" || rep.Delivered != 12 {
		t.Errorf("push report = %+v, want 12 delivered", rep)
	}
	if diff := cmp.Diff(want, callIDs(cl.Received())); diff != "" {
		t.Errorf("Call-IDs received (-want +got):\n%s", diff)
	}
	if st.Invites != 1 || st.Acks != 1 {
		t.Errorf("client saw %d INVITEs and %d ACKs, want exactly one each", st.Invites, st.Acks)
	}
	for _, m := range cl.Received() {
		if m.ContentType != "message/sip" || m.DecodeErr != nil {
			t.Errorf("received %s (%v), want message/sip that decodes", m.ContentType, m.DecodeErr)
		}
		if m.Decoded.Date.IsZero() {
			t.Errorf("message %s has no Date", m.Decoded.CallID)
		}
	}
	if n := c.counts(t, aor); n != (plugin.Counts{}) {
		t.Errorf("store after the push = %+v, want empty", n)
	}
}

// noBackoff lets a test register again right after a failed push.
func noBackoff(p *plugin.Policy) { p.RetryBackoff = 0 }

func storeN(t testing.TB, c *core, aor plugin.AOR, n int) []string {
	t.Helper()
	var ids []string
	for i := range n {
		m := c.storeSIP(t, aor, fmt.Sprintf("%s-call-%02d", aor.User(), i), fmt.Sprintf("message %d", i))
		ids = append(ids, m.CallID)
	}
	return ids
}

func pendingCallIDs(t testing.TB, c *core, aor plugin.AOR) []string {
	t.Helper()
	page, err := c.st.List(context.Background(), aor, plugin.ListQuery{})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range page.Messages {
		ids = append(ids, m.CallID)
	}
	return ids
}

func TestPushInviteRefusedKeepsMessages(t *testing.T) {
	r := harness.Redis(t)
	c := startCore(t, r.URL(), coreOptions{policy: noBackoff})
	var aor = plugin.MustParseAOR("sip:busy@example.com")
	want := storeN(t, c, aor, 3)
	busy := newClient(t, aor.String(), imclient.Config{InviteStatus: 486})
	c.register(t, aor, busy.Contact())
	rep := c.report(t)
	var se *plugin.SessionError
	if rep.Outcome != "failed" || !errors.As(rep.Err, &se) || se.Status != 486 {
		t.Fatalf("report = %+v, want failed with SIP 486", rep)
	}
	if got := pendingCallIDs(t, c, aor); !cmp.Equal(got, want) {
		t.Errorf("stored after 486 = %v, want %v", got, want)
	}
	ok := newClient(t, aor.String(), imclient.Config{})
	c.register(t, aor, ok.Contact())
	waitClient(t, ok, "BYE", func(s imclient.Stats) bool { return s.Byes == 1 })
	if diff := cmp.Diff(want, callIDs(ok.Received())); diff != "" {
		t.Errorf("delivered on the next registration (-want +got):\n%s", diff)
	}
}

func TestPushInviteTimeoutCancels(t *testing.T) {
	r := harness.Redis(t)
	c := startCore(t, r.URL(), coreOptions{policy: func(p *plugin.Policy) {
		p.InviteTimeout = plugin.Duration(time.Second)
		p.RetryBackoff = 0
	}})
	var aor = plugin.MustParseAOR("sip:away@example.com")
	want := storeN(t, c, aor, 2)
	silent := newClient(t, aor.String(), imclient.Config{InviteStatus: -1})
	start := time.Now()
	c.register(t, aor, silent.Contact())
	waitClient(t, silent, "CANCEL", func(s imclient.Stats) bool { return s.Cancels == 1 })
	rep := c.report(t)
	if rep.Outcome != "failed" {
		t.Errorf("report = %+v, want failed", rep)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("push ended after %v; want about the 1 s INVITE timeout", d)
	}
	if got := pendingCallIDs(t, c, aor); !cmp.Equal(got, want) {
		t.Errorf("stored after the timeout = %v, want %v", got, want)
	}
}

func TestPushClientDropsConnectionMidSession(t *testing.T) {
	r := harness.Redis(t)
	c := startCore(t, r.URL(), coreOptions{policy: noBackoff})
	var aor = plugin.MustParseAOR("sip:flaky@example.com")
	want := storeN(t, c, aor, 6)
	// The client takes the third SEND and closes TCP without answering it.
	flaky := newClient(t, aor.String(), imclient.Config{DropAt: 3})
	c.register(t, aor, flaky.Contact())
	rep := c.report(t)
	if rep.Outcome != "failed" || rep.Delivered != 2 {
		t.Errorf("report = %+v, want failed after 2 delivered", rep)
	}
	// The message the session broke on (charged an attempt) goes behind
	// the others, which it must not hold back.
	left := append(append([]string(nil), want[3:]...), want[2])
	if got := pendingCallIDs(t, c, aor); !cmp.Equal(got, left) {
		t.Errorf("stored after the drop = %v, want %v", got, left)
	}
	ok := newClient(t, aor.String(), imclient.Config{})
	c.register(t, aor, ok.Contact())
	waitClient(t, ok, "BYE", func(s imclient.Stats) bool { return s.Byes == 1 })

	// Every message arrived; the only duplicate is the one whose
	// confirmation was lost, and it carries the same Call-ID and outer
	// Message-ID both times.
	all := append(flaky.Received(), ok.Received()...)
	seen := map[string][]string{}
	for _, m := range all {
		seen[m.Decoded.CallID] = append(seen[m.Decoded.CallID], m.OuterID)
	}
	for _, id := range want {
		if len(seen[id]) == 0 {
			t.Errorf("%s never delivered", id)
		}
	}
	for id, outer := range seen {
		switch {
		case id == want[2]:
			if len(outer) != 2 || outer[0] != outer[1] {
				t.Errorf("%s delivered with outer Message-IDs %v, want twice with the same id", id, outer)
			}
		case len(outer) != 1:
			t.Errorf("%s delivered %d times, want once", id, len(outer))
		}
	}
	if n := c.counts(t, aor); n != (plugin.Counts{}) {
		t.Errorf("store after both pushes = %+v, want empty", n)
	}
}

// TestPushClientRefuses415TriesAnother: a client that answers 415 to a
// message's encapsulation gets it again in the same session in the next
// encapsulation it accepts (message/sip refused: message/cpim), the
// message counted delivered, nothing charged.
func TestPushClientRefuses415TriesAnother(t *testing.T) {
	r := harness.Redis(t)
	c := startCore(t, r.URL(), coreOptions{policy: noBackoff})
	aor := plugin.MustParseAOR("sip:picky415@example.com")
	want := storeN(t, c, aor, 4)
	picky := newClient(t, aor.String(), imclient.Config{Answer: func(n int, m *msrp.Message) error {
		if n == 2 {
			return msrp.Status(msrp.StatusUnsupportedMedia)
		}
		return nil
	}})
	c.register(t, aor, picky.Contact())
	rep := c.report(t)
	if rep.Outcome != "delivered" || rep.Delivered != 4 || rep.Failed != 0 {
		t.Errorf("report = %+v, want delivered: 4", rep)
	}
	got := picky.Received()
	if len(got) != 5 {
		t.Fatalf("client received %d messages, want 5 (the second twice)", len(got))
	}
	if got[1].Decoded.CallID != want[1] || got[1].Answered != 415 {
		t.Errorf("second received %s answered %d, want %s refused 415", got[1].Decoded.CallID, got[1].Answered, want[1])
	}
	var again *imclient.Received
	for i := 2; i < len(got); i++ {
		if got[i].Decoded.CallID == want[1] {
			again = &got[i]
		}
	}
	if again == nil || again.ContentType == got[1].ContentType || again.Answered != 200 {
		t.Errorf("the refused message again: %+v, want it in another encapsulation than %s, answered 200", again, got[1].ContentType)
	}
	if n := c.counts(t, aor); n != (plugin.Counts{}) {
		t.Errorf("store after the push = %+v, want empty", n)
	}
}

func TestPushClientRefusesOneMessage(t *testing.T) {
	for _, code := range []int{msrp.StatusStopSending} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			r := harness.Redis(t)
			c := startCore(t, r.URL(), coreOptions{policy: noBackoff})
			aor := plugin.MustParseAOR(fmt.Sprintf("sip:picky%d@example.com", code))
			want := storeN(t, c, aor, 4)
			picky := newClient(t, aor.String(), imclient.Config{Answer: func(n int, m *msrp.Message) error {
				if n == 2 {
					return msrp.Status(code)
				}
				return nil
			}})
			c.register(t, aor, picky.Contact())
			rep := c.report(t)
			if rep.Outcome != "partial" || rep.Delivered != 3 || rep.Failed != 1 {
				t.Errorf("report = %+v, want partial: 3 delivered, 1 failed", rep)
			}
			m, err := c.st.List(context.Background(), aor, plugin.ListQuery{})
			if err != nil {
				t.Fatal(err)
			}
			if len(m.Messages) != 1 || m.Messages[0].CallID != want[1] || m.Messages[0].Attempts != 1 {
				t.Fatalf("stored after the refusal = %+v, want only %s with 1 attempt", m.Messages, want[1])
			}
			ok := newClient(t, aor.String(), imclient.Config{})
			c.register(t, aor, ok.Contact())
			waitClient(t, ok, "BYE", func(s imclient.Stats) bool { return s.Byes == 1 })
			if got := callIDs(ok.Received()); !cmp.Equal(got, want[1:2]) {
				t.Errorf("next registration delivered %v, want %v", got, want[1:2])
			}
		})
	}
}

func TestPushClientConnectsActive(t *testing.T) {
	r := harness.Redis(t)
	c := startCore(t, r.URL(), coreOptions{})
	var aor = plugin.MustParseAOR("sip:active@example.com")
	want := storeN(t, c, aor, 5)
	cl := newClient(t, aor.String(), imclient.Config{Setup: "active"})
	c.register(t, aor, cl.Contact())
	waitClient(t, cl, "BYE", func(s imclient.Stats) bool { return s.Byes == 1 })
	if diff := cmp.Diff(want, callIDs(cl.Received())); diff != "" {
		t.Errorf("delivered with a=setup:active (-want +got):\n%s", diff)
	}
}

func TestPushRetriesAfterBackoff(t *testing.T) {
	r := harness.Redis(t)
	c := startCore(t, r.URL(), coreOptions{msrpTimeout: time.Second, policy: func(p *plugin.Policy) {
		p.RetryBackoff = plugin.Duration(time.Second)
	}})
	var aor = plugin.MustParseAOR("sip:later@example.com")
	want := storeN(t, c, aor, 2)
	// Refuses the first message once; the engine retries by itself after
	// the backoff while the registration lasts.
	cl := newClient(t, aor.String(), imclient.Config{Answer: func(n int, m *msrp.Message) error {
		if n == 1 {
			return msrp.Status(msrp.StatusStopSending)
		}
		return nil
	}})
	c.register(t, aor, cl.Contact())
	first := c.report(t)
	if first.Outcome != "partial" || first.Delivered != 1 || first.Failed != 1 {
		t.Fatalf("first push = %+v, want partial: 1 delivered, 1 failed", first)
	}
	firstEnd := time.Now()
	second := c.report(t)
	if second.Outcome != "delivered" || second.Delivered != 1 {
		t.Errorf("second push = %+v, want the refused message delivered", second)
	}
	// The engine waited for the backoff before trying again: a lower
	// bound, which load cannot break (the first report reached the test
	// a little after the push ended, hence the slack).
	if gap := time.Since(firstEnd) - second.Duration; gap < 800*time.Millisecond {
		t.Errorf("second push began %v after the first ended, want the 1 s backoff", gap)
	}
	waitClient(t, cl, "second delivery", func(s imclient.Stats) bool { return s.Received == 3 && s.Byes == 2 })
	// The client took message 1 (refused), message 2, then message 1 again
	// with the same outer Message-ID, and nothing more.
	got := cl.Received()
	var calls []string
	var answers []int
	for _, r := range got {
		calls = append(calls, r.Decoded.CallID)
		answers = append(answers, r.Answered)
	}
	if diff := cmp.Diff([]string{want[0], want[1], want[0]}, calls); diff != "" {
		t.Errorf("Call-IDs received (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]int{413, 200, 200}, answers); diff != "" {
		t.Errorf("answers (-want +got):\n%s", diff)
	}
	if len(got) == 3 && got[0].OuterID != got[2].OuterID {
		t.Errorf("the retry of %s came with Message-ID %s, the first try with %s: want the same", want[0], got[2].OuterID, got[0].OuterID)
	}
	if n := c.counts(t, aor); n != (plugin.Counts{}) {
		t.Errorf("store after the retry = %+v, want empty", n)
	}
}

func TestPushClientNeverOpensMSRP(t *testing.T) {
	r := harness.Redis(t)
	c := startCore(t, r.URL(), coreOptions{msrpTimeout: 2 * time.Second})
	var aor = plugin.MustParseAOR("sip:mute@example.com")
	want := storeN(t, c, aor, 3)
	cl := newClient(t, aor.String(), imclient.Config{Setup: "active", NeverConnect: true})
	start := time.Now()
	c.register(t, aor, cl.Contact())
	rep := c.report(t)
	if rep.Outcome != "failed" || rep.Delivered != 0 {
		t.Errorf("report = %+v, want failed", rep)
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("push took %v, want it bounded by the 2 s MSRP timeout", d)
	}
	waitClient(t, cl, "BYE", func(s imclient.Stats) bool { return s.Byes == 1 })
	if got := pendingCallIDs(t, c, aor); !cmp.Equal(got, want) {
		t.Errorf("stored = %v, want %v", got, want)
	}
}
