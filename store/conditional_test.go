package store

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/test/harness"
)

// TestConditionalInterleaved: a change that lands between a conditional
// write's check and its write (here, made from inside the check, on
// another connection) makes Redis refuse the transaction, and the check
// runs again on what is stored now: a DELETE conditional on what an
// operator read never removes what came after.
func TestConditionalInterleaved(t *testing.T) {
	srv := harness.Redis(t)
	s, err := New(Config{URL: srv.URL()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx := context.Background()
	stale := errors.New("stale")

	t.Run("DeleteAllIf", func(t *testing.T) {
		if err := s.Append(ctx, libMessage("MESSAGE a"), plugin.Limits{}); err != nil {
			t.Fatal(err)
		}
		var versions []string
		late := libMessage("MESSAGE late")
		_, err := s.DeleteAllIf(ctx, libBob, func(v string) error {
			versions = append(versions, v)
			if len(versions) == 1 {
				if err := s.Append(ctx, late, plugin.Limits{}); err != nil {
					t.Fatal(err)
				}
				return nil
			}
			if v != versions[0] {
				return stale
			}
			return nil
		})
		if !errors.Is(err, stale) || len(versions) != 2 || versions[1] == versions[0] {
			t.Fatalf("DeleteAllIf = %v after checks of %q; want the second check to see another version and refuse", err, versions)
		}
		if c, _ := s.Count(ctx, libBob); c.Pending != 2 {
			t.Errorf("after the refused delete: %+v, want both messages", c)
		}
		if _, err := s.DeleteAll(ctx, libBob); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("DeleteIf", func(t *testing.T) {
		m := libMessage("MESSAGE b")
		if err := s.Append(ctx, m, plugin.Limits{}); err != nil {
			t.Fatal(err)
		}
		var states []plugin.State
		err := s.DeleteIf(ctx, libBob, m.ID, func(got *plugin.Message) error {
			states = append(states, got.State)
			if len(states) == 1 {
				if _, err := s.Claim(ctx, libBob, "push", 1, time.Minute); err != nil {
					t.Fatal(err)
				}
				return nil
			}
			if got.State != plugin.StatePending {
				return stale
			}
			return nil
		})
		if !errors.Is(err, stale) || len(states) != 2 || states[1] != plugin.StateInFlight {
			t.Fatalf("DeleteIf = %v after checks of %v; want the second to see it in flight and refuse", err, states)
		}
		if _, err := s.Get(ctx, libBob, m.ID); err != nil {
			t.Errorf("the refused delete removed the message: %v", err)
		}
	})

	t.Run("UpdateUserSettings to none", func(t *testing.T) {
		if err := s.SetUserSettings(ctx, libBob, plugin.UserSettings{Push: plugin.PushHold}); err != nil {
			t.Fatal(err)
		}
		calls := 0
		_, _, err := s.UpdateUserSettings(ctx, libBob, func(u *plugin.UserSettings) error {
			calls++
			if calls == 1 {
				if err := s.SetUserSettings(ctx, libBob, plugin.UserSettings{Push: plugin.PushOff}); err != nil {
					t.Fatal(err)
				}
			} else if u.Push != plugin.PushHold {
				return stale
			}
			*u = plugin.UserSettings{}
			return nil
		})
		if !errors.Is(err, stale) || calls != 2 {
			t.Fatalf("UpdateUserSettings = %v after %d calls; want the second to see push off and refuse", err, calls)
		}
		if u, _ := s.UserSettings(ctx, libBob); u.Push != plugin.PushOff {
			t.Errorf("settings %+v, want the concurrent push off", u)
		}
		// Settings changed to none are removed, not stored as {}.
		if _, _, err := s.UpdateUserSettings(ctx, libBob, func(u *plugin.UserSettings) error { *u = plugin.UserSettings{}; return nil }); err != nil {
			t.Fatal(err)
		}
		if n, err := s.Client().Exists(ctx, settingsKey(libBob)).Result(); err != nil || n != 0 {
			t.Errorf("EXISTS %s = %d, %v after settings changed to none; want 0", settingsKey(libBob), n, err)
		}
	})
}
