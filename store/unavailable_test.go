package store

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/test/harness"
)

// TestUnavailableMarked: with redis-server stopped, or stalled past the
// client's read timeout, the store's errors are plugin.ErrStoreUnavailable
// (which the admin API answers 503), whichever method, Lua function or
// transaction met it, and still read as Redis's own error; Redis's
// answers (an unknown message) are not.
func TestUnavailableMarked(t *testing.T) {
	srv := harness.Redis(t)
	// A short read timeout, and no retry, for a quick test.
	s, err := New(Config{URL: srv.URL() + "?read_timeout=200ms&max_retries=-1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx := context.Background()
	if err := s.Append(ctx, libMessage("MESSAGE a"), plugin.Limits{}); err != nil {
		t.Fatal(err)
	}
	calls := []struct {
		name string
		call func(context.Context) error
	}{
		{"Ping", s.Ping},
		{"Append", func(ctx context.Context) error { return s.Append(ctx, libMessage("MESSAGE b"), plugin.Limits{}) }},
		{"List", func(ctx context.Context) error {
			_, err := s.List(ctx, libBob, plugin.ListQuery{Limit: 10})
			return err
		}},
		{"Get", func(ctx context.Context) error {
			_, err := s.Get(ctx, libBob, "01J00000000000000000000000")
			return err
		}},
		{"Version", func(ctx context.Context) error { _, err := s.Version(ctx, libBob); return err }},
		{"DeleteAllIf", func(ctx context.Context) error {
			_, err := s.DeleteAllIf(ctx, libBob, func(string) error { return nil })
			return err
		}},
		{"Totals", func(ctx context.Context) error { _, err := s.Totals(ctx); return err }},
		{"UserSettings", func(ctx context.Context) error { _, err := s.UserSettings(ctx, libBob); return err }},
		{"UpdateUserSettings", func(ctx context.Context) error {
			_, _, err := s.UpdateUserSettings(ctx, libBob, func(u *plugin.UserSettings) error { u.Push = plugin.PushHold; return nil })
			return err
		}},
		{"Policy", func(ctx context.Context) error { _, err := s.Policy(ctx); return err }},
	}
	check := func(t *testing.T, why string) {
		t.Helper()
		for _, c := range calls {
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := c.call(cctx)
			cancel()
			if !errors.Is(err, plugin.ErrStoreUnavailable) {
				t.Errorf("%s, %s: %v, want plugin.ErrStoreUnavailable", why, c.name, err)
			} else if strings.Contains(err.Error(), plugin.ErrStoreUnavailable.Error()) {
				t.Errorf("%s, %s: %q names the mark rather than Redis's error", why, c.name, err)
			}
		}
	}

	const pause = 8 * time.Second
	paused := time.Now()
	if _, err := harness.RedisDo(ctx, srv.Addr, "CLIENT", "PAUSE", strconv.Itoa(int(pause.Milliseconds())), "ALL"); err != nil {
		t.Fatal(err)
	}
	check(t, "Redis paused")
	if time.Since(paused) >= pause {
		t.Fatal("the calls outlasted the pause: the test proves nothing")
	}
	time.Sleep(pause - time.Since(paused))

	srv.Kill()
	check(t, "Redis stopped")
	srv.Start(t)
	// The client's pool dials again within a second or so.
	deadline := time.Now().Add(10 * time.Second)
	for s.Ping(ctx) != nil && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	_, err = s.Get(ctx, libBob, "01J00000000000000000000000")
	if !errors.Is(err, plugin.ErrNotFound) || errors.Is(err, plugin.ErrStoreUnavailable) {
		t.Errorf("Get of an unknown id: %v, want ErrNotFound only", err)
	}
}
