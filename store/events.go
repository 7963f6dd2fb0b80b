package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/deferpush/deferpush/plugin"
)

var _ plugin.Events = (*Redis)(nil)

// The stream of registration events (keys.go) and its one consumer group.
const (
	eventsKey   = "dp:events"
	eventsGroup = "deferpush"
)

// createGroup creates the consumer group of dp:events (and the stream),
// reading from the start of the stream: events a proxy wrote before
// deferpush first started are read too. A group that exists is kept.
func (r *Redis) createGroup(ctx context.Context) error {
	err := r.c.XGroupCreateMkStream(ctx, eventsKey, eventsGroup, "0").Err()
	if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
		return fmt.Errorf("create consumer group of %s: %w", eventsKey, err)
	}
	return nil
}

// restore puts back, when the group is gone, what a proxy calling the
// library itself needs and a Redis restarted without persistence (or
// flushed) lost with it: the library, dp:limits and the group. Until
// then its calls fail (no function) or answer 480 (no dp:limits); the
// events reader's next read, within a second or so, gets here.
func (r *Redis) restore(ctx context.Context) error {
	if err := r.fn.prepare(ctx); err != nil {
		return err
	}
	r.checkEviction(ctx)
	if err := r.initLimits(ctx); err != nil {
		return err
	}
	return r.createGroup(ctx)
}

func isNoGroup(err error) bool { return err != nil && strings.HasPrefix(err.Error(), "NOGROUP") }

// ReadEvents implements plugin.Events: XREADGROUP of new entries. A
// group lost since start (a Redis restarted without persistence) is
// created again.
func (r *Redis) ReadEvents(ctx context.Context, consumer string, n int, block time.Duration) ([]plugin.RegistrationEvent, error) {
	evs, err := r.readEvents(ctx, consumer, n, block)
	if err != nil {
		return nil, fmt.Errorf("store: read events: %w", err)
	}
	return evs, nil
}

func (r *Redis) readEvents(ctx context.Context, consumer string, n int, block time.Duration) ([]plugin.RegistrationEvent, error) {
	if err := r.ready(ctx); err != nil {
		return nil, err
	}
	args := &redis.XReadGroupArgs{Group: eventsGroup, Consumer: consumer, Streams: []string{eventsKey, ">"}, Count: int64(n), Block: block}
	res, err := r.c.XReadGroup(ctx, args).Result()
	if isNoGroup(err) {
		if err = r.restore(ctx); err == nil {
			res, err = r.c.XReadGroup(ctx, args).Result()
		}
	}
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var evs []plugin.RegistrationEvent
	for _, s := range res {
		evs = append(evs, r.eventsOf(s.Messages)...)
	}
	return evs, nil
}

// AckAndReadEvents implements plugin.Events: [XACK, XREADGROUP without
// BLOCK] pipelined.
func (r *Redis) AckAndReadEvents(ctx context.Context, consumer string, ack []string, n int) ([]plugin.RegistrationEvent, error) {
	evs, err := r.ackAndReadEvents(ctx, consumer, ack, n)
	if err != nil {
		return nil, fmt.Errorf("store: ack %d events and read: %w", len(ack), err)
	}
	return evs, nil
}

func (r *Redis) ackAndReadEvents(ctx context.Context, consumer string, ack []string, n int) ([]plugin.RegistrationEvent, error) {
	if len(ack) == 0 {
		return r.readEvents(ctx, consumer, n, -1)
	}
	if err := r.ready(ctx); err != nil {
		return nil, err
	}
	pipe := r.c.Pipeline()
	acked := pipe.XAck(ctx, eventsKey, eventsGroup, ack...)
	read := pipe.XReadGroup(ctx, &redis.XReadGroupArgs{Group: eventsGroup, Consumer: consumer, Streams: []string{eventsKey, ">"},
		Count: int64(n), Block: -1})
	_, _ = pipe.Exec(ctx) // errors are per command
	res, err := read.Result()
	switch {
	case isNoGroup(err):
		// Lost with Redis's data: nothing to ack; read in the new group.
		return r.readEvents(ctx, consumer, n, -1)
	case errors.Is(err, redis.Nil):
		err = nil
	}
	if err = errors.Join(acked.Err(), err); err != nil {
		return nil, err
	}
	var evs []plugin.RegistrationEvent
	for _, s := range res {
		evs = append(evs, r.eventsOf(s.Messages)...)
	}
	return evs, nil
}

// ClaimEvents implements plugin.Events: XAUTOCLAIM from the start of the
// pending entries.
func (r *Redis) ClaimEvents(ctx context.Context, consumer string, idle time.Duration, n int) ([]plugin.RegistrationEvent, error) {
	err := r.ready(ctx)
	var msgs []redis.XMessage
	if err == nil {
		msgs, _, err = r.c.XAutoClaim(ctx, &redis.XAutoClaimArgs{Stream: eventsKey, Group: eventsGroup,
			MinIdle: idle, Start: "0-0", Count: int64(n), Consumer: consumer}).Result()
	}
	if isNoGroup(err) {
		return nil, nil // nothing was read in a group that is gone
	}
	if err != nil {
		return nil, fmt.Errorf("store: claim events: %w", err)
	}
	return r.eventsOf(msgs), nil
}

// AckEvents implements plugin.Events.
func (r *Redis) AckEvents(ctx context.Context, ids ...string) error {
	if len(ids) == 0 {
		return nil
	}
	if err := r.c.XAck(ctx, eventsKey, eventsGroup, ids...).Err(); err != nil {
		return fmt.Errorf("store: ack events: %w", err)
	}
	return nil
}

// eventsOf reads stream entries as written by the library's event():
// kind, aor, contact, expires (ms, 0: none), at (µs), and a registered
// one's instance and received when it has them. An entry whose AOR
// does not parse keeps the zero AOR, for the reader to drop.
func (r *Redis) eventsOf(msgs []redis.XMessage) []plugin.RegistrationEvent {
	evs := make([]plugin.RegistrationEvent, 0, len(msgs))
	for _, m := range msgs {
		str := func(k string) string { s, _ := m.Values[k].(string); return s }
		ev := plugin.RegistrationEvent{ID: m.ID, Kind: str("kind"), Contact: str("contact"),
			Instance: str("instance"), Received: str("received")}
		// The library wrote the canonical form: read it back as is.
		if aor, err := (plugin.AORRules{CaseSensitiveUser: true}).Parse(str("aor")); err == nil && aor.String() == str("aor") {
			ev.AOR = aor
		}
		if ms, _ := strconv.ParseInt(str("expires"), 10, 64); ms > 0 {
			ev.Expires = time.UnixMilli(ms)
		}
		if us, _ := strconv.ParseInt(str("at"), 10, 64); us > 0 {
			ev.At = time.UnixMicro(us)
		}
		evs = append(evs, ev)
	}
	return evs
}

// PruneConsumers implements plugin.ConsumerPruner: XGROUP DELCONSUMER of
// every consumer of the events' group that holds no event and has been
// idle (no read, no claim) for at least idle. A consumer holding events
// is kept whatever its idle time: deleting it would leave them
// unclaimable.
func (r *Redis) PruneConsumers(ctx context.Context, idle time.Duration) (int, error) {
	cs, err := r.c.XInfoConsumers(ctx, eventsKey, eventsGroup).Result()
	if err != nil {
		return 0, fmt.Errorf("store: event consumers: %w", err)
	}
	n := 0
	for _, c := range cs {
		if c.Pending != 0 || c.Idle < idle {
			continue
		}
		if err := r.c.XGroupDelConsumer(ctx, eventsKey, eventsGroup, c.Name).Err(); err != nil {
			return n, fmt.Errorf("store: forget event consumer %s: %w", c.Name, err)
		}
		n++
	}
	return n, nil
}
