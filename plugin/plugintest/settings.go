package plugintest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/deferpush/deferpush/plugin"
)

// Policy implements plugin.Settings.
func (s *Store) Policy(ctx context.Context) (plugin.Policy, error) {
	if err := ctx.Err(); err != nil {
		return plugin.Policy{}, fmt.Errorf("plugintest: read policy: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.policy, nil
}

// SetPolicy implements plugin.Settings. who is not kept: nothing in
// plugin.Store reads it back.
func (s *Store) SetPolicy(ctx context.Context, p plugin.Policy, who string) error {
	if err := errors.Join(ctx.Err(), p.Validate()); err != nil {
		return fmt.Errorf("plugintest: set policy: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.policy = p
	close(s.changed) // wakes every WatchPolicy
	s.changed = make(chan struct{})
	return nil
}

// UpdatePolicy implements plugin.Settings: the read, change and write
// happen under the store's lock, so concurrent updates run one after
// another and none is lost.
func (s *Store) UpdatePolicy(ctx context.Context, who string, change func(*plugin.Policy) error) (old, updated plugin.Policy, err error) {
	if err := ctx.Err(); err != nil {
		return old, old, fmt.Errorf("plugintest: update policy: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old, updated = s.policy, s.policy
	if err := change(&updated); err != nil {
		return old, old, fmt.Errorf("plugintest: update policy: %w", err)
	}
	if err := updated.Validate(); err != nil {
		return old, old, fmt.Errorf("plugintest: update policy: %w", err)
	}
	s.policy = updated
	close(s.changed) // wakes every WatchPolicy
	s.changed = make(chan struct{})
	return old, updated, nil
}

// WatchPolicy implements plugin.Settings. A change reaches fn as soon as
// SetPolicy returns; like the Redis store's, fn sees only policies that
// differ from the last one it saw.
func (s *Store) WatchPolicy(ctx context.Context, fn func(plugin.Policy)) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("plugintest: watch policy: %w", err)
	}
	s.mu.Lock()
	last, changed := s.policy, s.changed
	s.mu.Unlock()
	fn(last)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		}
		s.mu.Lock()
		p := s.policy
		changed = s.changed
		s.mu.Unlock()
		if p != last {
			last = p
			fn(p)
		}
	}
}

// UserSettings implements plugin.Settings.
func (s *Store) UserSettings(ctx context.Context, aor plugin.AOR) (plugin.UserSettings, error) {
	if err := errors.Join(ctx.Err(), checkAOR(aor)); err != nil {
		return plugin.UserSettings{}, fmt.Errorf("plugintest: user settings %s: %w", aor, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.settings[aor], nil
}

// UpdateUserSettings implements plugin.Settings, as UpdatePolicy does.
func (s *Store) UpdateUserSettings(ctx context.Context, aor plugin.AOR, change func(*plugin.UserSettings) error) (old, updated plugin.UserSettings, err error) {
	if err := errors.Join(ctx.Err(), checkAOR(aor)); err != nil {
		return old, old, fmt.Errorf("plugintest: update user settings %s: %w", aor, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old = s.settings[aor]
	updated = old
	if err := change(&updated); err != nil {
		return old, old, fmt.Errorf("plugintest: update user settings %s: %w", aor, err)
	}
	if err := updated.Validate(); err != nil {
		return old, old, fmt.Errorf("plugintest: update user settings %s: %w", aor, err)
	}
	if updated == (plugin.UserSettings{}) {
		delete(s.settings, aor) // none set, as DeleteUserSettings leaves it
	} else {
		s.settings[aor] = updated
	}
	return old, updated, nil
}

// SetUserSettings implements plugin.Settings.
func (s *Store) SetUserSettings(ctx context.Context, aor plugin.AOR, u plugin.UserSettings) error {
	if err := errors.Join(ctx.Err(), checkAOR(aor), u.Validate()); err != nil {
		return fmt.Errorf("plugintest: set user settings %s: %w", aor, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settings[aor] = u
	return nil
}

// DeleteUserSettings implements plugin.Settings.
func (s *Store) DeleteUserSettings(ctx context.Context, aor plugin.AOR) error {
	if err := errors.Join(ctx.Err(), checkAOR(aor)); err != nil {
		return fmt.Errorf("plugintest: delete user settings %s: %w", aor, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.settings, aor)
	return nil
}

// SetContact implements plugin.Settings.
func (s *Store) SetContact(ctx context.Context, r plugin.Registration) error {
	err := errors.Join(ctx.Err(), checkAOR(r.AOR))
	if err == nil && r.Contact == "" {
		err = &plugin.FieldError{Field: "contact", Problem: "empty"}
	}
	if err != nil {
		return fmt.Errorf("plugintest: set contact %s: %w", r.AOR, err)
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	at, timed := r.At.UnixMicro(), !r.At.IsZero()
	last, ok := s.last(r.AOR, now)
	if timed && ok && last.contact == r.Contact && last.at > at {
		return fmt.Errorf("plugintest: set contact %s: %w", r.AOR, plugin.ErrSuperseded)
	}
	if old, ok := s.contacts[r.AOR]; ok && old.PagerOnly && old.Binding() == r.Binding() {
		r.PagerOnly = true
	}
	r.At = time.Time{} // not stored, as in Redis
	s.contacts[r.AOR] = cloneRegistration(r)
	if timed {
		e := lastEvent{at: at, registered: true, contact: r.Contact}
		if !r.Expires.IsZero() {
			e.until = r.Expires.Add(time.Hour) // the contact's grace
		}
		s.lasts[r.AOR] = e
	}
	return nil
}

// last returns aor's last timed registration event while it is kept.
// The caller holds s.mu.
func (s *Store) last(aor plugin.AOR, now time.Time) (lastEvent, bool) {
	e, ok := s.lasts[aor]
	if ok && !e.until.IsZero() && !e.until.After(now) {
		delete(s.lasts, aor)
		return lastEvent{}, false
	}
	return e, ok
}

// SetPagerOnly implements plugin.Settings.
func (s *Store) SetPagerOnly(ctx context.Context, aor plugin.AOR, binding string) error {
	if err := errors.Join(ctx.Err(), checkAOR(aor)); err != nil {
		return fmt.Errorf("plugintest: set pager-only %s: %w", aor, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if r, ok := s.contacts[aor]; ok && r.Binding() == binding {
		r.PagerOnly = true
		s.contacts[aor] = r
	}
	return nil
}

// DeleteContact implements plugin.Settings.
func (s *Store) DeleteContact(ctx context.Context, aor plugin.AOR, contact string, at time.Time) error {
	if err := errors.Join(ctx.Err(), checkAOR(aor)); err != nil {
		return fmt.Errorf("plugintest: delete contact %s: %w", aor, err)
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	timed := !at.IsZero()
	last, haveLast := s.last(aor, now)
	if timed && haveLast && last.registered && last.at > at.UnixMicro() && (contact == "" || last.contact == contact) {
		return fmt.Errorf("plugintest: delete contact %s: %w", aor, plugin.ErrSuperseded)
	}
	deleted := false
	if r, ok := s.contacts[aor]; ok && (contact == "" || r.Contact == contact) {
		delete(s.contacts, aor)
		deleted = true
	}
	if timed && (deleted || !haveLast || last.contact == contact) {
		s.lasts[aor] = lastEvent{at: at.UnixMicro(), contact: contact, until: now.Add(time.Hour)}
	}
	return nil
}

// Contact implements plugin.Settings. A registration has expired when its
// Expires is not after the store's clock.
func (s *Store) Contact(ctx context.Context, aor plugin.AOR) (plugin.Registration, error) {
	if err := errors.Join(ctx.Err(), checkAOR(aor)); err != nil {
		return plugin.Registration{}, fmt.Errorf("plugintest: contact %s: %w", aor, err)
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.contacts[aor]
	if !ok || !r.Expires.IsZero() && !r.Expires.After(now) {
		return plugin.Registration{}, fmt.Errorf("plugintest: contact %s: %w", aor, plugin.ErrNotFound)
	}
	return cloneRegistration(r), nil
}

// cloneRegistration returns a copy of r that shares no memory with it.
func cloneRegistration(r plugin.Registration) plugin.Registration {
	r.Path = slices.Clone(r.Path)
	r.Expires = r.Expires.Round(0)
	return r
}

// ContactAndSettings implements plugin.Settings.
func (s *Store) ContactAndSettings(ctx context.Context, aor plugin.AOR) (plugin.Registration, plugin.UserSettings, error) {
	r, err := s.Contact(ctx, aor)
	if err != nil {
		return r, plugin.UserSettings{}, err
	}
	u, err := s.UserSettings(ctx, aor)
	return r, u, err
}
