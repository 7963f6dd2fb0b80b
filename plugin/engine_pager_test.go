package plugin_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/deferpush/deferpush/plugin"
)

// modes are the sessions a fake pusher was asked to open, in order:
// "msrp" or "pager".
func (p *fakePusher) modes() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := []string{}
	for _, t := range p.targets {
		if t.Pager {
			out = append(out, "pager")
		} else {
			out = append(out, "msrp")
		}
	}
	return out
}

func (e *engineEnv) registerAt(t *testing.T, contact, instance string) {
	t.Helper()
	err := e.eng.Registered(context.Background(), plugin.Registration{AOR: bob, Contact: contact, Instance: instance, Expires: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
}

// TestEnginePagerFallback: under delivery auto (the default), a client
// that refuses MSRP gets its messages by pager mode in the same push, and
// its next push (a refresh of the same registration) goes straight to
// pager mode; a new binding is asked for MSRP again.
func TestEnginePagerFallback(t *testing.T) {
	p := &fakePusher{refuseMSRP: true}
	e := newEngine(t, p, nil)
	want := e.store(t, 3)
	e.registerAt(t, "sip:bob@127.0.0.1:5099", "")
	if rep := e.report(t); rep.Outcome != plugin.OutcomeDelivered || rep.Delivered != 3 || !rep.Pager {
		t.Fatalf("report = %+v; want 3 delivered by pager mode", rep)
	}
	if diff := cmp.Diff([]string{"msrp", "pager"}, p.modes()); diff != "" {
		t.Errorf("sessions (-want +got):\n%s", diff)
	}
	reg, err := e.st.Contact(context.Background(), bob)
	if err != nil || !reg.PagerOnly {
		t.Fatalf("stored registration %+v, %v; want PagerOnly", reg, err)
	}
	if tg := p.targets[1]; tg.URI != "sip:bob@127.0.0.1:5099" {
		t.Errorf("pager mode to %q, want the contact", tg.URI)
	}
	// The MSRP Open is given the claimed messages, to refuse an answer
	// that can carry none of them (Target.Messages).
	var offered []string
	for _, m := range p.targets[0].Messages {
		offered = append(offered, m.CallID)
	}
	if diff := cmp.Diff(want, offered); diff != "" {
		t.Errorf("messages given to the MSRP Open (-want +got):\n%s", diff)
	}

	// A refresh: the event from the proxy does not know; the store does.
	want = append(want, e.store(t, 1)...)
	e.registerAt(t, "sip:bob@127.0.0.1:5099", "")
	e.report(t)
	if diff := cmp.Diff([]string{"msrp", "pager", "pager"}, p.modes()); diff != "" {
		t.Errorf("sessions after the refresh (-want +got):\n%s", diff)
	}
	// Another contact: MSRP first again.
	want = append(want, e.store(t, 1)...)
	e.registerAt(t, "sip:bob@127.0.0.1:6000", "")
	e.report(t)
	if diff := cmp.Diff([]string{"msrp", "pager", "pager", "msrp", "pager"}, p.modes()); diff != "" {
		t.Errorf("sessions after a new contact (-want +got):\n%s", diff)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if diff := cmp.Diff(want, p.got); diff != "" {
		t.Errorf("delivered (-want +got):\n%s", diff)
	}
}

// TestEnginePagerByInstance: a device with +sip.instance keeps pager mode
// when its contact address changes.
func TestEnginePagerByInstance(t *testing.T) {
	p := &fakePusher{refuseMSRP: true}
	e := newEngine(t, p, nil)
	e.store(t, 1)
	e.registerAt(t, "sip:bob@127.0.0.1:5099", "<urn:uuid:b0b>")
	e.report(t)
	e.store(t, 1)
	e.registerAt(t, "sip:bob@127.0.0.1:7000", "<urn:uuid:b0b>")
	e.report(t)
	if diff := cmp.Diff([]string{"msrp", "pager", "pager"}, p.modes()); diff != "" {
		t.Errorf("sessions (-want +got):\n%s", diff)
	}
}

// TestEngineDeliveryModes: msrp never falls back (the refusal is a failed
// push), pager never INVITEs, and pager_below sends small mailboxes by
// pager mode to a client that takes MSRP.
func TestEngineDeliveryModes(t *testing.T) {
	for _, tt := range []struct {
		name    string
		policy  func(*plugin.Policy)
		user    plugin.UserSettings
		refuse  bool
		stored  int
		modes   []string
		outcome plugin.PushOutcome
	}{
		{name: "msrp refused", policy: func(p *plugin.Policy) { p.Delivery = plugin.DeliveryMSRP }, refuse: true, stored: 2,
			modes: []string{"msrp"}, outcome: plugin.OutcomeFailed},
		{name: "pager", policy: func(p *plugin.Policy) { p.Delivery = plugin.DeliveryPager }, stored: 2,
			modes: []string{"pager"}, outcome: plugin.OutcomeDelivered},
		{name: "pager_below at the bound", policy: func(p *plugin.Policy) { p.PagerBelow = 2 }, stored: 2,
			modes: []string{"pager"}, outcome: plugin.OutcomeDelivered},
		{name: "pager_below under the mailbox", policy: func(p *plugin.Policy) { p.PagerBelow = 2 }, stored: 3,
			modes: []string{"msrp"}, outcome: plugin.OutcomeDelivered},
		// The claim takes a batch (4 here): the mailbox's size is counted.
		{name: "pager_below over a batch", policy: func(p *plugin.Policy) { p.PagerBelow = 6 }, stored: 6,
			modes: []string{"pager"}, outcome: plugin.OutcomeDelivered},
		{name: "pager_below at a batch", policy: func(p *plugin.Policy) { p.PagerBelow = 4 }, stored: 5,
			modes: []string{"msrp"}, outcome: plugin.OutcomeDelivered},
		{name: "pager_below at the session limit", policy: func(p *plugin.Policy) { p.PagerBelow = 2 },
			user: plugin.UserSettings{MaxPerSession: 2}, stored: 3, modes: []string{"msrp"}, outcome: plugin.OutcomeDelivered},
		{name: "pager_below under msrp", policy: func(p *plugin.Policy) { p.Delivery, p.PagerBelow = plugin.DeliveryMSRP, 5 }, stored: 1,
			modes: []string{"msrp"}, outcome: plugin.OutcomeDelivered},
		{name: "user pager", user: plugin.UserSettings{Delivery: plugin.DeliveryPager}, stored: 3,
			modes: []string{"pager"}, outcome: plugin.OutcomeDelivered},
		{name: "user pager_below", user: plugin.UserSettings{PagerBelow: 3}, stored: 3,
			modes: []string{"pager"}, outcome: plugin.OutcomeDelivered},
		{name: "user msrp over policy pager", policy: func(p *plugin.Policy) { p.Delivery = plugin.DeliveryPager },
			user: plugin.UserSettings{Delivery: plugin.DeliveryMSRP}, stored: 1, modes: []string{"msrp"}, outcome: plugin.OutcomeDelivered},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := &fakePusher{refuseMSRP: tt.refuse}
			e := newEngine(t, p, tt.policy)
			if err := e.st.SetUserSettings(context.Background(), bob, tt.user); err != nil {
				t.Fatal(err)
			}
			e.store(t, tt.stored)
			e.register(t)
			rep := e.report(t)
			if rep.Outcome != tt.outcome {
				t.Errorf("outcome %s (%v), want %s", rep.Outcome, rep.Err, tt.outcome)
			}
			if diff := cmp.Diff(tt.modes, p.modes()); diff != "" {
				t.Errorf("sessions (-want +got):\n%s", diff)
			}
			if reg, _ := e.st.Contact(context.Background(), bob); reg.PagerOnly {
				t.Error("registration marked PagerOnly, though no fallback happened")
			}
		})
	}
}
