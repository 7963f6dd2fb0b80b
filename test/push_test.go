package test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/test/harness"
	"github.com/deferpush/deferpush/test/imclient"
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
	const aor = plugin.AOR("sip:user2@example.com")
	var want []string
	for i := range 12 {
		m := c.storeSIP(t, aor, fmt.Sprintf("call-%02d@example.com", i), fmt.Sprintf("message %d", i))
		want = append(want, m.CallID)
	}
	cl := newClient(t, string(aor), imclient.Config{})
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
