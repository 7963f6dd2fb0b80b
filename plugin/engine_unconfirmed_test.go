package plugin_test

import (
	"context"
	"testing"

	"github.com/deferpush/deferpush/plugin"
)

// TestEngineUnconfirmedNotCharged: a message the next hop took but whose
// success REPORT never came (plugin.ErrUnconfirmed) stays stored and is
// charged no attempt, even with max_attempts 1: the client may have it.
func TestEngineUnconfirmedNotCharged(t *testing.T) {
	p := &fakePusher{failAt: map[string]error{"call-1": plugin.ErrUnconfirmed}}
	e := newEngine(t, p, func(p *plugin.Policy) { p.MaxAttempts = 1 })
	e.store(t, 3)
	e.register(t)
	if rep := e.report(t); rep.Delivered != 2 || rep.Failed != 0 || rep.DeadLettered != 0 {
		t.Errorf("report = %+v, want 2 delivered, none failed", rep)
	}
	page, err := e.st.List(context.Background(), bob, plugin.ListQuery{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Messages) != 1 || page.Messages[0].CallID != "call-1" || page.Messages[0].Attempts != 0 {
		t.Errorf("stored after the push: %+v, want call-1 alone with no attempt", page.Messages)
	}
	if c := e.counts(t); c.Dead != 0 {
		t.Errorf("counts = %+v, want no dead letter", c)
	}
}
