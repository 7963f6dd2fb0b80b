package plugin

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"time"
)

// Kinds of registration events (RegistrationEvent.Kind).
const (
	EventRegistered   = "registered"   // the proxy saved a registration; the user has messages
	EventUnregistered = "unregistered" // the client unregistered while a push may run
	EventExpired      = "expired"      // the proxy's registrar let the contact expire
	// EventStored: the proxy stored a message while a push to the user
	// runs (which then claims once more, as after Engine.Store).
	EventStored = "stored"
)

// RegistrationEvent is one event of a proxy's registrar that the proxy
// wrote into the store itself (store/library.lua's dp_register and
// dp_unregister; dp_store's "stored"): the registration or
// unregistration (or the message) is already recorded (Settings.Contact
// reads it); what is left is the push to start, cancel or prolong.
type RegistrationEvent struct {
	// ID names the event for AckEvents.
	ID   string
	Kind string // EventRegistered, EventUnregistered or EventExpired
	// AOR is the recipient; the zero AOR for an event that could not be
	// read (it is dropped).
	AOR     AOR
	Contact string    // the contact URI; "" for every contact of AOR
	Expires time.Time // EventRegistered: when the registration ends
	At      time.Time // when the proxy handled the REGISTER
	// EventRegistered: the registration's +sip.instance and the address
	// its REGISTER came from, when it has them (a push's backoff compares
	// them, Registration.Binding and Received).
	Instance, Received string
}

// Events is a durable log of registration events that every deferpush
// instance reads as one group: each event goes to one reader, and stays
// pending for it until acked, so that another reader can take it over
// when that one died (at-least-once). store.Redis implements it with a
// Redis stream and a consumer group.
type Events interface {
	// ReadEvents returns up to n events no reader of the group has read
	// yet, delivered to consumer, waiting up to block for the first one;
	// none (and no error) when block passed.
	ReadEvents(ctx context.Context, consumer string, n int, block time.Duration) ([]RegistrationEvent, error)
	// AckAndReadEvents acks ack (as AckEvents), then returns up to n
	// events as ReadEvents does but without waiting: none when there
	// are none now. Both in one call, so that a reader busy with events
	// pays one round trip per batch. After an error ack may or may not
	// be acked (acking again is harmless), and what was read stays
	// pending for consumer, taken over once idle (ClaimEvents).
	AckAndReadEvents(ctx context.Context, consumer string, ack []string, n int) ([]RegistrationEvent, error)
	// ClaimEvents takes over, for consumer, up to n events another
	// reader (or consumer itself) read and has not acked for at least
	// idle.
	ClaimEvents(ctx context.Context, consumer string, idle time.Duration, n int) ([]RegistrationEvent, error)
	// AckEvents marks events handled: no reader gets them again.
	AckEvents(ctx context.Context, ids ...string) error
}

// Defaults of the events reader.
const (
	eventsBatch = 100
	eventsBlock = time.Second
)

// eventReader is the engine component that reads the registration events
// a proxy writes into the store (EngineConfig.Events) and handles each as
// the hooks' calls are handled: a registration kicks a push unless it has
// expired, an unregistration or expiry cancels the push in progress. It
// acks an event once handled; one whose handling failed (the store or the
// scheduler not answering) stays pending, and a reader takes it over once
// it has been idle for idle (every idle/3, each reader claims what is
// idle: the events of an instance that died holding them, or its own).
type eventReader struct {
	events   Events
	consumer string
	idle     time.Duration
	log      *slog.Logger
	// handle handles an event; started, when handle uses it for a
	// registration, is what to call once the push has started, and the
	// event is acked then rather than once handle returns.
	handle func(ctx context.Context, ev RegistrationEvent, started func()) error
	pruned time.Time // the last prune (ConsumerPruner)
	// started carries the ids of events whose push started, to ack
	// (ackStarted).
	started chan string
}

// startedAckDelay is how long the ids of events whose push started are
// gathered before one XACK acks them: a burst of registrations costs a
// few acks, and an idle instance none.
const startedAckDelay = 20 * time.Millisecond

// ConsumerPruner is Events that can forget the group's consumers that
// hold no event and have read nothing for idle: the instances that
// stopped (each joins as a new consumer, consumerName). A live reader
// pruned by mistake joins again with its next read.
type ConsumerPruner interface {
	PruneConsumers(ctx context.Context, idle time.Duration) (int, error)
}

// Consumers idle this long, holding no event, are pruned, at most once
// per pruneEvery by each reader.
const (
	pruneIdle  = time.Hour
	pruneEvery = 10 * time.Minute
)

// prune forgets the stopped instances' consumers (ConsumerPruner), at
// most once per pruneEvery.
func (r *eventReader) prune(ctx context.Context) {
	p, ok := r.events.(ConsumerPruner)
	if !ok || time.Since(r.pruned) < pruneEvery {
		return
	}
	r.pruned = time.Now()
	if n, err := p.PruneConsumers(ctx, pruneIdle); err != nil {
		r.log.Debug("prune event consumers", "err", err)
	} else if n > 0 {
		r.log.Info("stopped readers forgotten from the events' group", "count", n)
	}
}

// consumerName names this process in the events' group: host, process id
// and random, so that a restarted instance is another reader (what the
// one before held is claimed when idle).
func consumerName() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "deferpush"
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b))
}

// Run reads and handles events until ctx ends. The events of a batch
// are acked with the read of the next (AckAndReadEvents), which does
// not wait; once that finds none, the reader waits for more (ReadEvents).
func (r *eventReader) Run(ctx context.Context) error {
	claim := time.NewTicker(max(r.idle/3, time.Millisecond))
	defer claim.Stop()
	var handled []string // handled, not acked yet
	defer func() { r.ack(ctx, handled) }()
	if r.started != nil {
		acking := make(chan struct{})
		go func() { defer close(acking); r.ackStarted(ctx) }()
		defer func() { <-acking }()
	}
	failures := 0
	for ctx.Err() == nil {
		var evs []RegistrationEvent
		var err error
		select {
		case <-claim.C:
			r.ack(ctx, handled)
			handled = handled[:0]
			evs, err = r.events.ClaimEvents(ctx, r.consumer, r.idle, eventsBatch)
			if err == nil && len(evs) > 0 {
				r.log.Info("registration events taken over", "count", len(evs))
			}
			r.prune(ctx)
		default:
			if len(handled) == 0 {
				evs, err = r.events.ReadEvents(ctx, r.consumer, eventsBatch, eventsBlock)
				break
			}
			if evs, err = r.events.AckAndReadEvents(ctx, r.consumer, handled, eventsBatch); err == nil {
				handled = handled[:0]
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			// The store is down: wait a little, more each time, up to 5 s.
			failures++
			r.log.Warn("read registration events", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(min(time.Duration(failures)*200*time.Millisecond, 5*time.Second)):
			}
			continue
		}
		failures = 0
		handled = r.handleAll(ctx, evs, handled)
	}
	return nil
}

// handleAll handles evs in order and returns done with the ids of those
// handled appended, to be acked.
func (r *eventReader) handleAll(ctx context.Context, evs []RegistrationEvent, done []string) []string {
	for _, ev := range evs {
		var started func()
		if ev.Kind == EventRegistered && r.started != nil {
			id := ev.ID
			started = func() {
				select {
				case r.started <- id:
				default: // full: left pending, handled again once idle
				}
			}
		}
		if err := r.handle(ctx, ev, started); err != nil {
			// Left pending: claimed again once idle.
			r.log.Warn("registration event not handled", "aor", ev.AOR, "kind", ev.Kind, "event_id", ev.ID, "err", err)
			continue
		}
		if started == nil {
			done = append(done, ev.ID)
		}
	}
	return done
}

// ackStarted acks the events whose push started (r.started), those that
// come within startedAckDelay of each other in one call, until ctx ends
// and what came before is acked.
func (r *eventReader) ackStarted(ctx context.Context) {
	for {
		var ids []string
		select {
		case id := <-r.started:
			ids = append(ids, id)
		case <-ctx.Done():
			for {
				select {
				case id := <-r.started:
					ids = append(ids, id)
				default:
					r.ack(ctx, ids)
					return
				}
			}
		}
		t := time.NewTimer(startedAckDelay)
	gather:
		for len(ids) < eventsBatch {
			select {
			case id := <-r.started:
				ids = append(ids, id)
			case <-t.C:
				break gather
			}
		}
		t.Stop()
		r.ack(ctx, ids)
	}
}

// ack acks the events handled (done) on their own: before a claim, and
// when the reader stops.
func (r *eventReader) ack(ctx context.Context, done []string) {
	if len(done) == 0 {
		return
	}
	if err := r.events.AckEvents(context.WithoutCancel(ctx), done...); err != nil {
		// Handled but not acked: handled again later, which a push
		// tolerates (a kick of a push in progress, a cancel of none).
		r.log.Warn("ack registration events", "count", len(done), "err", err)
	}
}

// registrationEvent handles one event read from EngineConfig.Events, as
// Registered and Unregistered handle the hooks' calls; the store holds
// the registration's change already.
func (e *Engine) registrationEvent(ctx context.Context, ev RegistrationEvent, started func()) error {
	// An event dropped is acked at once (started, when given, is the ack).
	dropped := func() {
		if started != nil {
			started()
		}
	}
	if ev.AOR.IsZero() {
		e.log.Warn("registration event dropped", "event_id", ev.ID, "kind", ev.Kind, "reason", "no valid aor")
		dropped()
		return nil
	}
	switch ev.Kind {
	case EventRegistered:
		if !ev.Expires.After(e.cfg.Now()) {
			e.log.Debug("registration event dropped", "aor", ev.AOR, "event_id", ev.ID, "reason", "registration expired")
			dropped()
			return nil
		}
		// dp_register wrote the event having applied the policy to the
		// user's settings: the push reads them again, with the
		// registration recorded now, in its first claim's round trip
		// (pushRun.claimReading), and goes only if that registration is
		// still this contact's.
		reg := Registration{AOR: ev.AOR, Contact: ev.Contact, Expires: ev.Expires, Instance: ev.Instance,
			Received: ev.Received, At: ev.At}
		// Acked once the push has started (started): an instance that
		// dies with it queued leaves it pending, for another to take
		// over.
		return e.sched.kickStarted(reg, e.cfg.Now(), started)
	case EventUnregistered, EventExpired:
		return e.sched.cancel(ev.AOR, ev.Contact)
	case EventStored:
		e.sched.nudge(ev.AOR)
		return nil
	}
	e.log.Warn("registration event dropped", "aor", ev.AOR, "event_id", ev.ID, "reason", "unknown kind "+ev.Kind)
	return nil
}
