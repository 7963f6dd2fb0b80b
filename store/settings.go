package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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

// Policy implements plugin.Settings.
func (r *Redis) Policy(ctx context.Context) (plugin.Policy, error) {
	b, err := r.c.Get(ctx, policyKey).Bytes()
	if errors.Is(err, redis.Nil) {
		return plugin.DefaultPolicy(), nil
	}
	if err != nil {
		return plugin.Policy{}, fmt.Errorf("store: read policy: %w", err)
	}
	// Start from the default so fields added later get their defaults.
	rec := policyRecord{Policy: plugin.DefaultPolicy()}
	if err := json.Unmarshal(b, &rec); err != nil {
		return plugin.Policy{}, fmt.Errorf("store: read policy: %w", err)
	}
	return rec.Policy, nil
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
	if err := r.c.Set(ctx, policyKey, b, 0).Err(); err != nil {
		return fmt.Errorf("store: set policy: %w", err)
	}
	// A lost notification is caught by the watchers' poll.
	if err := r.c.Publish(ctx, changesChannel, "policy").Err(); err != nil {
		return fmt.Errorf("store: notify policy change: %w", err)
	}
	return nil
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

// UserSettings implements plugin.Settings.
func (r *Redis) UserSettings(ctx context.Context, aor plugin.AOR) (plugin.UserSettings, error) {
	var u plugin.UserSettings
	if err := r.getJSON(ctx, aor, settingsKey(aor), &u); err != nil && !errors.Is(err, plugin.ErrNotFound) {
		return u, fmt.Errorf("store: user settings %s: %w", aor, err)
	}
	return u, nil
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
		err = r.setJSON(ctx, contactKey(reg.AOR), reg, ttl)
	}
	if err != nil {
		return fmt.Errorf("store: set contact %s: %w", reg.AOR, err)
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

func (r *Redis) getJSON(ctx context.Context, aor plugin.AOR, key string, v any) error {
	if err := checkAOR(aor); err != nil {
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
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return r.c.Set(ctx, key, b, ttl).Err()
}
