package plugin_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/deferpush/deferpush/plugin"
)

// TestEnginePromptRetry: with an hour of retry_backoff, a registration
// that follows a push broken by the transport, or comes from a new
// contact or flow, pushes at once; one that follows the client's refusal
// from the same contact and flow waits.
func TestEnginePromptRetry(t *testing.T) {
	reg := func(contact, received string) plugin.Registration {
		return plugin.Registration{AOR: bob, Contact: contact, Received: received, Expires: time.Now().Add(time.Hour)}
	}
	const a, b = "sip:bob@127.0.0.1:5099;transport=tcp", "sip:bob@127.0.0.1:6000;transport=tcp"
	busy := &plugin.SessionError{Op: "invite", Status: 486, Err: errors.New("Busy Here")}
	timeout := &plugin.SessionError{Op: "invite", Status: 408, Err: errors.New("Request Timeout")}
	noAnswer := &plugin.SessionError{Op: "invite", Err: errors.New("no answer within 32s (cancelled)")}
	decline := &plugin.SessionError{Op: "invite", Status: 603, Err: errors.New("Decline")}
	for _, tt := range []struct {
		name     string
		openErr  error  // the first push's
		breakAt  string // or: the first push breaks at this message
		again    plugin.Registration
		wantPush bool
	}{
		{name: "reset mid-push, same contact", breakAt: "call-1", again: reg(a, "tcp:127.0.0.1:40000"), wantPush: true},
		{name: "no answer, same contact", openErr: noAnswer, again: reg(a, "tcp:127.0.0.1:40000"), wantPush: true},
		{name: "408, same contact", openErr: timeout, again: reg(a, "tcp:127.0.0.1:40000"), wantPush: true},
		{name: "486, same contact and flow", openErr: busy, again: reg(a, "tcp:127.0.0.1:40000"), wantPush: false},
		{name: "603, same contact and flow", openErr: decline, again: reg(a, "tcp:127.0.0.1:40000"), wantPush: false},
		{name: "486, new flow", openErr: busy, again: reg(a, "tcp:127.0.0.1:40001"), wantPush: true},
		{name: "486, new contact", openErr: busy, again: reg(b, "tcp:127.0.0.1:40000"), wantPush: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := &fakePusher{openErr: tt.openErr, breakAt: tt.breakAt}
			e := newEngine(t, p, func(p *plugin.Policy) { p.RetryBackoff = plugin.Duration(time.Hour) })
			e.store(t, 3)
			ctx := context.Background()
			if err := e.eng.Registered(ctx, reg(a, "tcp:127.0.0.1:40000")); err != nil {
				t.Fatal(err)
			}
			if rep := e.report(t); rep.Outcome != plugin.OutcomeFailed {
				t.Fatalf("first push %+v; want failed", rep)
			}
			p.mu.Lock()
			p.openErr, p.breakAt = nil, ""
			p.mu.Unlock()
			if err := e.eng.Registered(ctx, tt.again); err != nil {
				t.Fatal(err)
			}
			select {
			case rep := <-e.rec.ch:
				if !tt.wantPush {
					t.Fatalf("pushed during the backoff: %+v", rep)
				}
				if rep.Outcome != plugin.OutcomeDelivered {
					t.Errorf("second push %+v; want the rest delivered", rep)
				}
			case <-time.After(300 * time.Millisecond):
				if tt.wantPush {
					t.Fatal("no push within 300 ms of the registration")
				}
			}
		})
	}
}

// TestEngineRefusalHoldsWhatArrivedMeanwhile: a registration that comes
// while a push runs runs it again at its end — unless the client refused
// it (486): then it waits for the backoff like a later one.
func TestEngineRefusalHoldsWhatArrivedMeanwhile(t *testing.T) {
	for _, tt := range []struct {
		name     string
		openErr  error
		wantPush bool
	}{
		{"486", &plugin.SessionError{Op: "invite", Status: 486, Err: errors.New("Busy Here")}, false},
		{"no answer", &plugin.SessionError{Op: "invite", Err: errors.New("no answer within 32s (cancelled)")}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := &fakePusher{openErr: tt.openErr, openGate: make(chan struct{}), openStarted: make(chan struct{}, 10)}
			e := newEngine(t, p, func(p *plugin.Policy) { p.RetryBackoff = plugin.Duration(time.Hour) })
			e.store(t, 1)
			r := plugin.Registration{AOR: bob, Contact: "sip:bob@127.0.0.1:5099", Received: "tcp:127.0.0.1:40000", Expires: time.Now().Add(time.Hour)}
			ctx := context.Background()
			if err := e.eng.Registered(ctx, r); err != nil {
				t.Fatal(err)
			}
			<-p.openStarted
			if err := e.eng.Registered(ctx, r); err != nil { // a refresh during the push
				t.Fatal(err)
			}
			time.Sleep(50 * time.Millisecond) // the scheduler takes the event
			close(p.openGate)
			if rep := e.report(t); rep.Outcome != plugin.OutcomeFailed {
				t.Fatalf("first push %+v", rep)
			}
			select {
			case rep := <-e.rec.ch:
				if !tt.wantPush {
					t.Fatalf("ran again during the backoff: %+v", rep)
				}
			case <-time.After(300 * time.Millisecond):
				if tt.wantPush {
					t.Fatal("did not run again")
				}
			}
		})
	}
}

// TestEngineRetryGoesToNewerContact: the client refuses a push (486: a
// backoff and a retry), then the same device registers again at another
// contact from the same source, which the backoff holds back; the retry
// goes to that newer registration (the push goes only to the one
// recorded now) and delivers.
func TestEngineRetryGoesToNewerContact(t *testing.T) {
	p := &fakePusher{openErr: &plugin.SessionError{Op: "invite", Status: 486, Err: errors.New("Busy Here")}}
	e := newEngine(t, p, func(pol *plugin.Policy) { pol.RetryBackoff = plugin.Duration(300 * time.Millisecond) })
	want := e.store(t, 1)
	ctx := context.Background()
	reg := func(contact string) plugin.Registration {
		return plugin.Registration{AOR: bob, Contact: contact, Instance: "<urn:uuid:b0b>", Received: "127.0.0.1:5099",
			Expires: time.Now().Add(time.Hour)}
	}
	if err := e.eng.Registered(ctx, reg("sip:bob@127.0.0.1:5099")); err != nil {
		t.Fatal(err)
	}
	if rep := e.report(t); rep.Outcome != plugin.OutcomeFailed {
		t.Fatalf("report %+v, want the refused push", rep)
	}
	p.mu.Lock()
	p.openErr = nil
	p.mu.Unlock()
	newer := reg("sip:bob@127.0.0.1:5098;ob")
	if err := e.eng.Registered(ctx, newer); err != nil { // held back by the backoff
		t.Fatal(err)
	}
	rep := e.report(t)
	if rep.Delivered != 1 {
		t.Fatalf("report %+v, want the retry to deliver 1", rep)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if n := len(p.targets); n != 2 || p.targets[1].Registration.Contact != newer.Contact {
		t.Errorf("sessions opened to %v, want the retry's to %s", p.targets, newer.Contact)
	}
	if len(p.got) != 1 || p.got[0] != want[0] {
		t.Errorf("delivered %v, want %v", p.got, want)
	}
}

// TestEngineCancelKeepsNewerContact: while a push to contact A runs, the
// user registers contact B (the push runs once more, for B), then A
// unregisters: the push to A ends, the one for B still runs and
// delivers.
func TestEngineCancelKeepsNewerContact(t *testing.T) {
	p := &fakePusher{gate: make(chan struct{}), started: make(chan struct{})}
	e := newEngine(t, p, nil)
	want := e.store(t, 2)
	ctx := context.Background()
	a := plugin.Registration{AOR: bob, Contact: "sip:bob@127.0.0.1:5097", Expires: time.Now().Add(time.Hour)}
	b := plugin.Registration{AOR: bob, Contact: "sip:bob@127.0.0.1:5096", Expires: time.Now().Add(time.Hour)}
	if err := e.eng.Registered(ctx, a); err != nil {
		t.Fatal(err)
	}
	<-p.started // the push to A holds its messages
	if err := e.eng.Registered(ctx, b); err != nil {
		t.Fatal(err)
	}
	if err := e.eng.Unregistered(ctx, plugin.Unregistration{AOR: bob, Contact: a.Contact}); err != nil {
		t.Fatal(err)
	}
	if rep := e.report(t); rep.Outcome != plugin.OutcomeCancelled {
		t.Fatalf("report %+v, want the push to A cancelled", rep)
	}
	close(p.gate)
	if rep := e.report(t); rep.Delivered != 2 {
		t.Fatalf("report %+v, want the push to B to deliver 2", rep)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if last := p.targets[len(p.targets)-1].Registration.Contact; last != b.Contact || len(p.got) != len(want) {
		t.Errorf("delivered %v to %s, want %v to %s", p.got, last, want, b.Contact)
	}
}

// TestEngineRetriesStopAfterMaxAttempts: timed retries back off
// (doubling) and stop after max_attempts failed pushes in a row; the
// next registration from a new contact tries again at once.
func TestEngineRetriesStopAfterMaxAttempts(t *testing.T) {
	p := &fakePusher{openErr: &plugin.SessionError{Op: "invite", Status: 408, Err: errors.New("Request Timeout")}}
	e := newEngine(t, p, func(pol *plugin.Policy) {
		pol.RetryBackoff = plugin.Duration(20 * time.Millisecond)
		pol.MaxAttempts = 3
	})
	e.store(t, 1)
	ctx := context.Background()
	reg := plugin.Registration{AOR: bob, Contact: "sip:bob@127.0.0.1:5099", Expires: time.Now().Add(time.Hour)}
	if err := e.eng.Registered(ctx, reg); err != nil {
		t.Fatal(err)
	}
	for i := range 3 { // the push, then two timed retries (20, 40 ms)
		if rep := e.report(t); rep.Outcome != plugin.OutcomeFailed {
			t.Fatalf("push %d: %+v, want failed", i+1, rep)
		}
	}
	select {
	case rep := <-e.rec.ch: // a fourth would come 80 ms after the third
		t.Fatalf("a push after %d failures in a row: %+v", 3, rep)
	case <-time.After(500 * time.Millisecond):
	}
	reg.Contact = "sip:bob@127.0.0.1:5098"
	if err := e.eng.Registered(ctx, reg); err != nil {
		t.Fatal(err)
	}
	if rep := e.report(t); rep.Outcome != plugin.OutcomeFailed {
		t.Fatalf("the push of the new registration: %+v", rep)
	}
}

// TestEngineNewFlowPreemptsPush: while a push runs to a device (its
// +sip.instance), the same device registers again from a new flow (a
// network change: another contact): the push to the old flow ends at once
// and the messages go to the new one, rather than after the old one's
// timeouts (PROBE7 finding 10: 9 s with msrp.timeout 10 s). Another
// device registering does not end it.
func TestEngineNewFlowPreemptsPush(t *testing.T) {
	p := &fakePusher{gate: make(chan struct{}), started: make(chan struct{})}
	e := newEngine(t, p, nil)
	want := e.store(t, 2)
	ctx := context.Background()
	reg := func(contact, instance string) plugin.Registration {
		return plugin.Registration{AOR: bob, Contact: contact, Instance: instance, Expires: time.Now().Add(time.Hour)}
	}
	old := reg("sip:bob@127.0.0.1:5097", "<urn:uuid:dev1>")
	if err := e.eng.Registered(ctx, old); err != nil {
		t.Fatal(err)
	}
	<-p.started // the push to the old flow holds its messages
	if err := e.eng.Registered(ctx, reg("sip:bob@127.0.0.1:5095", "<urn:uuid:dev2>")); err != nil {
		t.Fatal(err)
	}
	select {
	case rep := <-e.rec.ch:
		t.Fatalf("another device's registration ended the push: %+v", rep)
	case <-time.After(200 * time.Millisecond):
	}
	moved := reg("sip:bob@127.0.0.1:5096", "<urn:uuid:dev1>")
	if err := e.eng.Registered(ctx, moved); err != nil {
		t.Fatal(err)
	}
	if rep := e.report(t); rep.Outcome != plugin.OutcomeCancelled {
		t.Fatalf("report %+v, want the push to the old flow ended", rep)
	}
	close(p.gate)
	if rep := e.report(t); rep.Delivered != 2 {
		t.Fatalf("report %+v, want the push to the new flow to deliver 2", rep)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if last := p.targets[len(p.targets)-1].Registration.Contact; last != moved.Contact || len(p.got) != len(want) {
		t.Errorf("delivered %v to %s, want %v to %s", p.got, last, want, moved.Contact)
	}
}
