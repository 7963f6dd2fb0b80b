package test

import (
	"context"
	"sync"
	"testing"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/store"
	"github.com/deferpush/deferpush/test/harness"
)

// racingStore is the Redis store with a write landing at the worst moment
// of the admin API's next conditional write of settings: during, inside
// its check (after the store read what it checks, before it writes), or
// after, once the store's call returned.
type racingStore struct {
	*store.Redis
	mu            sync.Mutex
	during, after func()
}

// once runs *f, if set, and clears it.
func (s *racingStore) once(f *func()) {
	s.mu.Lock()
	g := *f
	*f = nil
	s.mu.Unlock()
	if g != nil {
		g()
	}
}

func (s *racingStore) UpdateUserSettings(ctx context.Context, aor plugin.AOR, change func(*plugin.UserSettings) error) (plugin.UserSettings, plugin.UserSettings, error) {
	old, updated, err := s.Redis.UpdateUserSettings(ctx, aor, func(u *plugin.UserSettings) error {
		s.once(&s.during)
		return change(u)
	})
	s.once(&s.after)
	return old, updated, err
}

// TestAdminConditionalDeleteRaces: a DELETE with the If-Match of what the
// operator read removes nothing that changed or came after the read,
// whenever the concurrent write lands (a real redis-server, the API over
// HTTP). A PUT of settings landing right after the check of a
// conditional DELETE of them used to be deleted by its second,
// unconditional step (PROBE6 finding 3: 1 round in ~3000 of a race).
func TestAdminConditionalDeleteRaces(t *testing.T) {
	r := harness.Redis(t)
	c := startCore(t, r.URL(), coreOptions{})
	st := &racingStore{Redis: c.st}
	a := startAdminOn(t, c, newContract(t), st)
	ctx := context.Background()
	bob := plugin.MustParseAOR("sip:bob@example.com")
	const u = "/v1/users/sip:bob@example.com"
	putOff := func() {
		if err := c.st.SetUserSettings(ctx, bob, plugin.UserSettings{Push: plugin.PushOff}); err != nil {
			t.Error(err)
		}
	}
	hold := func(t *testing.T) string {
		t.Helper()
		res := a.do(t, "PUT", u+"/settings", adminToken, "application/json", []byte(`{"push":"hold"}`))
		if res.Status != 200 {
			t.Fatalf("PUT settings: %d %s", res.Status, res.Body)
		}
		return res.Header.Get("ETag")
	}
	settings := func(t *testing.T) string {
		t.Helper()
		return string(a.do(t, "GET", u+"/settings", adminToken, "", nil).Body)
	}
	deleteIf := func(t *testing.T, path, tag string, want int) {
		t.Helper()
		if res := a.doWith(t, "DELETE", path, adminToken, "", nil, map[string]string{"If-Match": tag}); res.Status != want {
			t.Fatalf("DELETE %s If-Match %s: %d %s, want %d", path, tag, res.Status, res.Body, want)
		}
	}

	t.Run("settings, a PUT after the check", func(t *testing.T) {
		tag := hold(t)
		st.after = putOff
		deleteIf(t, u+"/settings", tag, 204)
		if got := settings(t); got != `{"push":"off"}` {
			t.Errorf("settings %s, want the PUT that came after the DELETE", got)
		}
	})
	t.Run("settings, a PUT between the check and the delete", func(t *testing.T) {
		tag := hold(t)
		st.during = putOff
		deleteIf(t, u+"/settings", tag, 412)
		if got := settings(t); got != `{"push":"off"}` {
			t.Errorf("settings %s, want the PUT the DELETE did not see", got)
		}
	})
}
