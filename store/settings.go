package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/deferpush/deferpush/plugin"
)

// policyRecord is what dp:policy holds: the policy and who set it when.
type policyRecord struct {
	Policy    plugin.Policy `json:"policy"`
	UpdatedBy string        `json:"updated_by"`
	UpdatedAt time.Time     `json:"updated_at"`
}

// policyPoll is how often WatchPolicy re-reads the policy besides
// listening on pub/sub, in case a notification was lost on a reconnect.
const policyPoll = 10 * time.Second

// Policy implements plugin.Settings. A Redis that lost the policy
// (restarted without persistence, flushed) gets back the one this
// instance knew (knownPolicy), not the defaults, which would switch
// storing and pushing back on against the operator.
func (r *Redis) Policy(ctx context.Context) (plugin.Policy, error) {
	b, err := r.c.Get(ctx, policyKey).Bytes()
	if errors.Is(err, redis.Nil) {
		if known := r.knownPolicy.Load(); known != nil {
			// NX: another instance may have put its own back first.
			if err := r.c.SetNX(ctx, policyKey, *known, 0).Err(); err != nil {
				return plugin.Policy{}, fmt.Errorf("store: restore policy: %w", err)
			}
			r.log.Warn("policy missing from Redis (restarted empty?): put back the one in force")
			b, err = r.c.Get(ctx, policyKey).Bytes()
		}
	}
	p, err := r.policyOf(b, err)
	if err != nil {
		return plugin.Policy{}, fmt.Errorf("store: read policy: %w", err)
	}
	return p, nil
}

// SetPolicy implements plugin.Settings.
func (r *Redis) SetPolicy(ctx context.Context, p plugin.Policy, who string) error {
	if err := p.Validate(); err != nil {
		return fmt.Errorf("store: set policy: %w", err)
	}
	b, err := json.Marshal(policyRecord{Policy: p, UpdatedBy: who, UpdatedAt: r.now().UTC()})
	if err != nil {
		return fmt.Errorf("store: set policy: %w", err)
	}
	_, err = r.c.TxPipelined(ctx, func(tx redis.Pipeliner) error { return r.queuePolicy(ctx, tx, b, p) })
	if err == nil {
		r.knownPolicy.Store(&b)
		err = r.afterPolicy(ctx, p)
	}
	if err != nil {
		return fmt.Errorf("store: set policy: %w", err)
	}
	// A lost notification is caught by the watchers' poll.
	if err := r.c.Publish(ctx, changesChannel, "policy").Err(); err != nil {
		return fmt.Errorf("store: notify policy change: %w", err)
	}
	return nil
}

// queuePolicy queues on tx (a MULTI) the policy record b of p and the
// mirror of p's limits in dp:limits, so both change together. A cluster
// keeps the two keys in two slots, which one transaction cannot hold:
// there the caller writes the limits right after (afterPolicy), and a
// crash between the two leaves dp:limits behind until the next change.
func (r *Redis) queuePolicy(ctx context.Context, tx redis.Pipeliner, b []byte, p plugin.Policy) error {
	tx.Set(ctx, policyKey, b, 0)
	if r.cluster() {
		return nil
	}
	return r.writeLimits(ctx, tx, p)
}

// afterPolicy writes dp:limits after the transaction of queuePolicy, in a
// cluster.
func (r *Redis) afterPolicy(ctx context.Context, p plugin.Policy) error {
	if !r.cluster() {
		return nil
	}
	return r.writeLimits(ctx, r.c, p)
}

// writeLimits writes dp:limits, the policy's part a proxy that calls the
// library itself (dp_store, dp_register) applies, and the registrar's AOR
// rules (keys.go).
func (r *Redis) writeLimits(ctx context.Context, c redis.Cmdable, p plugin.Policy) error {
	return c.HSet(ctx, limitsKey,
		"store_enabled", flag(p.StoreEnabled),
		"max_message_size", p.MaxMessageSize,
		"max_mailbox", p.MaxMailbox,
		"ttl_ms", time.Duration(p.MessageTTL).Milliseconds(),
		"full_mailbox_reply", p.FullMailboxReply,
		"store_disabled_reply", p.StoreDisabledReply,
		"push_enabled", flag(p.PushEnabled),
		"default_push", string(p.DefaultPush),
		"delivery", string(p.Delivery),
		"pager_below", p.PagerBelow,
		"case_sensitive_user", flag(r.rules.CaseSensitiveUser),
	).Err()
}

// flag is a boolean as dp:limits writes it.
func flag(b bool) int {
	if b {
		return 1
	}
	return 0
}

// initLimits writes dp:limits from the policy in force when it misses a
// field (a Redis last written by an earlier release), and this
// instance's AOR rules in any case: they are configuration, not policy.
func (r *Redis) initLimits(ctx context.Context) error {
	n, err := r.c.HExists(ctx, limitsKey, "pager_below").Result()
	if err == nil && n {
		err = r.c.HSet(ctx, limitsKey, "case_sensitive_user", flag(r.rules.CaseSensitiveUser)).Err()
	} else if err == nil {
		var p plugin.Policy
		if p, err = r.Policy(ctx); err == nil {
			err = r.writeLimits(ctx, r.c, p)
		}
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", limitsKey, err)
	}
	return nil
}

func (r *Redis) cluster() bool {
	_, ok := r.c.(*redis.ClusterClient)
	return ok
}

// maxTxTries bounds the optimistic transactions of UpdatePolicy and
// UpdateUserSettings: each try that loses to a concurrent change runs
// change again on the newer value.
const maxTxTries = 50

// UpdatePolicy implements plugin.Settings: WATCH the policy, read it, let
// change edit it, and write it in MULTI/EXEC, again when another writer
// got there first.
func (r *Redis) UpdatePolicy(ctx context.Context, who string, change func(*plugin.Policy) error) (old, updated plugin.Policy, err error) {
	var written []byte
	err = r.optimistic(ctx, []string{policyKey}, func(tx *redis.Tx) (func(redis.Pipeliner) error, error) {
		b, err := tx.Get(ctx, policyKey).Bytes()
		if errors.Is(err, redis.Nil) {
			if known := r.knownPolicy.Load(); known != nil {
				// Lost from Redis: change the one in force, not the defaults.
				b, err = *known, nil
			}
		}
		if old, err = r.policyOf(b, err); err != nil {
			return nil, err
		}
		updated = old
		if err := change(&updated); err != nil {
			return nil, err
		}
		if err := updated.Validate(); err != nil {
			return nil, err
		}
		if written, err = json.Marshal(policyRecord{Policy: updated, UpdatedBy: who, UpdatedAt: r.now().UTC()}); err != nil {
			return nil, err
		}
		return func(tx redis.Pipeliner) error { return r.queuePolicy(ctx, tx, written, updated) }, nil
	})
	if err == nil {
		r.knownPolicy.Store(&written)
		err = r.afterPolicy(ctx, updated)
	}
	if err != nil {
		return old, old, fmt.Errorf("store: update policy: %w", err)
	}
	// A lost notification is caught by the watchers' poll.
	if err := r.c.Publish(ctx, changesChannel, "policy").Err(); err != nil {
		r.log.Warn("notify policy change", "err", err)
	}
	return old, updated, nil
}

// optimistic runs one WATCH/MULTI/EXEC transaction on keys (one slot):
// read returns the write to make (or an error that ends it); a
// transaction that loses to a concurrent write is tried again.
func (r *Redis) optimistic(ctx context.Context, keys []string, read func(*redis.Tx) (func(redis.Pipeliner) error, error)) error {
	for range maxTxTries {
		err := r.c.Watch(ctx, func(tx *redis.Tx) error {
			write, err := read(tx)
			if err != nil {
				return err
			}
			_, err = tx.TxPipelined(ctx, write)
			return err
		}, keys...)
		if !errors.Is(err, redis.TxFailedErr) {
			return err
		}
	}
	return fmt.Errorf("%d concurrent changes in a row; try again", maxTxTries)
}

// policyOf reads a stored policy record; DefaultPolicy when there is none.
// policyOf reads the policy record b (with GET's error err: redis.Nil
// is no record, the defaults) and remembers it as the one in force.
func (r *Redis) policyOf(b []byte, err error) (plugin.Policy, error) {
	if errors.Is(err, redis.Nil) {
		return plugin.DefaultPolicy(), nil
	}
	if err != nil {
		return plugin.Policy{}, err
	}
	// Start from the default so fields added later get their defaults.
	rec := policyRecord{Policy: plugin.DefaultPolicy()}
	if err := json.Unmarshal(b, &rec); err != nil {
		return plugin.Policy{}, err
	}
	r.knownPolicy.Store(&b)
	return rec.Policy, nil
}

// WatchPolicy implements plugin.Settings.
func (r *Redis) WatchPolicy(ctx context.Context, fn func(plugin.Policy)) error {
	sub := r.c.Subscribe(ctx, changesChannel)
	defer sub.Close()
	// Subscribe first, read second: a change between the two is seen.
	if _, err := sub.Receive(ctx); err != nil {
		return fmt.Errorf("store: watch policy: %w", err)
	}
	last, err := r.Policy(ctx)
	if err != nil {
		return fmt.Errorf("store: watch policy: %w", err)
	}
	fn(last)
	ch := sub.Channel()
	tick := time.NewTicker(policyPoll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		case <-tick.C:
		}
		p, err := r.Policy(ctx)
		if err != nil {
			if ctx.Err() == nil {
				r.log.Warn("policy reload failed", "err", err)
			}
			continue
		}
		if p != last {
			last = p
			fn(p)
		}
	}
}

// WatchCancels implements plugin.CancelWatcher: each unregistration any
// instance or proxy recorded (dp_delete_contact, dp_unregister publish
// it on dp:cancel, with its time when it has one) reaches fn until ctx
// ends. go-redis resubscribes after a lost connection; an
// unregistration published meanwhile is missed there (that push then runs
// to its end or to its timeouts).
func (r *Redis) WatchCancels(ctx context.Context, fn func(aor plugin.AOR, contact string, at time.Time)) error {
	sub := r.c.Subscribe(ctx, cancelChannel)
	defer sub.Close()
	ch := sub.Channel()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case msg, ok := <-ch:
			if !ok {
				return nil
			}
			// "<aor>\n<contact>\n<at µs, or empty>"
			f := strings.Split(msg.Payload, "\n")
			var aor plugin.AOR
			if len(f) != 3 || aor.UnmarshalText([]byte(f[0])) != nil || aor.IsZero() {
				continue
			}
			var at time.Time
			if us, err := strconv.ParseInt(f[2], 10, 64); err == nil {
				at = time.UnixMicro(us)
			}
			fn(aor, f[1], at)
		}
	}
}

// UserSettings implements plugin.Settings.
func (r *Redis) UserSettings(ctx context.Context, aor plugin.AOR) (plugin.UserSettings, error) {
	var u plugin.UserSettings
	if err := r.getJSON(ctx, aor, settingsKey(aor), &u); err != nil && !errors.Is(err, plugin.ErrNotFound) {
		return u, fmt.Errorf("store: user settings %s: %w", aor, err)
	}
	return u, nil
}

// UpdateUserSettings implements plugin.Settings, as UpdatePolicy does;
// settings changed to the zero value are deleted in the same transaction,
// so that a conditional DELETE of them is one atomic step too.
func (r *Redis) UpdateUserSettings(ctx context.Context, aor plugin.AOR, change func(*plugin.UserSettings) error) (old, updated plugin.UserSettings, err error) {
	if err := errors.Join(checkAOR(aor), r.ready(ctx)); err != nil {
		return old, old, err
	}
	key := settingsKey(aor)
	err = r.optimistic(ctx, []string{key}, func(tx *redis.Tx) (func(redis.Pipeliner) error, error) {
		old = plugin.UserSettings{}
		b, err := tx.Get(ctx, key).Bytes()
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, err
		}
		if err == nil {
			if err := json.Unmarshal(b, &old); err != nil {
				return nil, err
			}
		}
		updated = old
		if err := change(&updated); err != nil {
			return nil, err
		}
		if err := updated.Validate(); err != nil {
			return nil, err
		}
		if updated == (plugin.UserSettings{}) {
			return func(p redis.Pipeliner) error { return p.Del(ctx, key).Err() }, nil
		}
		nb, err := json.Marshal(updated)
		if err != nil {
			return nil, err
		}
		return func(p redis.Pipeliner) error { return p.Set(ctx, key, nb, 0).Err() }, nil
	})
	if err != nil {
		return old, old, fmt.Errorf("store: update user settings %s: %w", aor, err)
	}
	return old, updated, nil
}

// SetUserSettings implements plugin.Settings.
func (r *Redis) SetUserSettings(ctx context.Context, aor plugin.AOR, u plugin.UserSettings) error {
	err := errors.Join(checkAOR(aor), u.Validate())
	if err == nil {
		err = r.setJSON(ctx, settingsKey(aor), u, 0)
	}
	if err != nil {
		return fmt.Errorf("store: set user settings %s: %w", aor, err)
	}
	return nil
}

// DeleteUserSettings implements plugin.Settings.
func (r *Redis) DeleteUserSettings(ctx context.Context, aor plugin.AOR) error {
	err := checkAOR(aor)
	if err == nil {
		err = r.ready(ctx)
	}
	if err == nil {
		err = r.c.Del(ctx, settingsKey(aor)).Err()
	}
	if err != nil {
		return fmt.Errorf("store: delete user settings %s: %w", aor, err)
	}
	return nil
}

// contactGrace keeps a registration key a while after it expired, for
// diagnostics; Contact stops returning it at Expires.
const contactGrace = time.Hour

// SetContact implements plugin.Settings.
func (r *Redis) SetContact(ctx context.Context, reg plugin.Registration) error {
	err := checkAOR(reg.AOR)
	if err == nil && reg.Contact == "" {
		err = &plugin.FieldError{Field: "contact", Problem: "empty"}
	}
	if err == nil {
		ttl := time.Duration(0)
		if !reg.Expires.IsZero() {
			ttl = max(reg.Expires.Sub(r.now())+contactGrace, time.Second)
		}
		err = r.setContact(ctx, reg, ttl)
	}
	if err != nil {
		return fmt.Errorf("store: set contact %s: %w", reg.AOR, err)
	}
	return nil
}

// setContact writes reg with dp_set_contact, which keeps pager_only for
// the same binding.
func (r *Redis) setContact(ctx context.Context, reg plugin.Registration, ttl time.Duration) error {
	if err := r.ready(ctx); err != nil {
		return err
	}
	b, err := json.Marshal(reg)
	if err != nil {
		return err
	}
	keep := reg.Binding()
	if reg.PagerOnly {
		keep = "" // nothing to keep: it says so itself
	}
	n, err := r.fn.run(ctx, "dp_set_contact", []string{contactKey(reg.AOR), orderKey(reg.AOR)},
		b, keep, ttl.Milliseconds(), reg.Contact, atArg(reg.At)).Int()
	if err == nil && n == 0 {
		err = plugin.ErrSuperseded
	}
	return err
}

// atArg is a proxy's time of a registration event as dp_set_contact and
// dp_delete_contact take it: integer microseconds, or "" when unknown.
func atArg(at time.Time) string {
	if at.IsZero() {
		return ""
	}
	return strconv.FormatInt(at.UnixMicro(), 10)
}

// SetPagerOnly implements plugin.Settings: dp_set_pager_only marks the
// stored registration if its binding is still binding.
func (r *Redis) SetPagerOnly(ctx context.Context, aor plugin.AOR, binding string) error {
	err := checkAOR(aor)
	if err == nil {
		err = r.ready(ctx)
	}
	if err == nil {
		err = r.fn.run(ctx, "dp_set_pager_only", []string{contactKey(aor)}, binding).Err()
	}
	if err != nil {
		return fmt.Errorf("store: set pager-only %s: %w", aor, err)
	}
	return nil
}

// DeleteContact implements plugin.Settings: one function compares the
// stored contact and deletes it, so a registration that lands meanwhile
// from another device is not deleted with it, and orders it after the
// registrations of the same contact by at (dp_unregister's rule).
func (r *Redis) DeleteContact(ctx context.Context, aor plugin.AOR, contact string, at time.Time) error {
	err := checkAOR(aor)
	if err == nil {
		err = r.ready(ctx)
	}
	if err == nil {
		var n int64
		n, err = r.fn.run(ctx, "dp_delete_contact", []string{contactKey(aor), orderKey(aor)}, contact, atArg(at)).Int64()
		if err == nil && n < 0 {
			err = plugin.ErrSuperseded
		}
	}
	if err != nil {
		return fmt.Errorf("store: delete contact %s: %w", aor, err)
	}
	return nil
}

// Contact implements plugin.Settings.
func (r *Redis) Contact(ctx context.Context, aor plugin.AOR) (plugin.Registration, error) {
	var reg plugin.Registration
	err := r.getJSON(ctx, aor, contactKey(aor), &reg)
	if err == nil && !reg.Expires.IsZero() && !reg.Expires.After(r.now()) {
		err = plugin.ErrNotFound
	}
	if err != nil {
		return plugin.Registration{}, fmt.Errorf("store: contact %s: %w", aor, err)
	}
	return reg, nil
}

// ContactAndSettings implements plugin.Settings: one round trip, both
// GETs pipelined (one slot: the keys share the recipient's hash tag).
func (r *Redis) ContactAndSettings(ctx context.Context, aor plugin.AOR) (plugin.Registration, plugin.UserSettings, error) {
	reg, u, err := r.contactAndSettings(ctx, aor)
	if err != nil {
		return plugin.Registration{}, plugin.UserSettings{}, fmt.Errorf("store: contact and settings %s: %w", aor, err)
	}
	return reg, u, nil
}

func (r *Redis) contactAndSettings(ctx context.Context, aor plugin.AOR) (reg plugin.Registration, u plugin.UserSettings, err error) {
	if err := errors.Join(checkAOR(aor), r.ready(ctx)); err != nil {
		return reg, u, err
	}
	pipe := r.c.Pipeline()
	c, s := pipe.Get(ctx, contactKey(aor)), pipe.Get(ctx, settingsKey(aor))
	_, _ = pipe.Exec(ctx) // errors are per command
	return r.decodeContactAndSettings(c, s)
}

// decodeContactAndSettings reads the answers to the GETs of a contact
// and of settings: ErrNotFound when no registration is stored or it has
// expired.
func (r *Redis) decodeContactAndSettings(c, s *redis.StringCmd) (reg plugin.Registration, u plugin.UserSettings, err error) {
	b, err := c.Bytes()
	switch {
	case errors.Is(err, redis.Nil):
		return reg, u, plugin.ErrNotFound
	case err != nil:
		return reg, u, err
	}
	if err := json.Unmarshal(b, &reg); err != nil {
		return reg, u, err
	}
	if !reg.Expires.IsZero() && !reg.Expires.After(r.now()) {
		return plugin.Registration{}, u, plugin.ErrNotFound
	}
	b, err = s.Bytes()
	switch {
	case errors.Is(err, redis.Nil):
		return reg, u, nil
	case err != nil:
		return reg, u, err
	}
	return reg, u, json.Unmarshal(b, &u)
}

func (r *Redis) getJSON(ctx context.Context, aor plugin.AOR, key string, v any) error {
	if err := checkAOR(aor); err != nil {
		return err
	}
	if err := r.ready(ctx); err != nil {
		return err
	}
	b, err := r.c.Get(ctx, key).Bytes()
	if errors.Is(err, redis.Nil) {
		return plugin.ErrNotFound
	}
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

func (r *Redis) setJSON(ctx context.Context, key string, v any, ttl time.Duration) error {
	if err := r.ready(ctx); err != nil {
		return err
	}
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return r.c.Set(ctx, key, b, ttl).Err()
}
