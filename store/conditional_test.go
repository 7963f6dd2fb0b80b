package store

import (
	"context"
	"errors"
	"testing"

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
