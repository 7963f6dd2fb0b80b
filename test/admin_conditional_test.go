package test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

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

// TestAdminRedisStalled: while Redis answers nothing (CLIENT PAUSE), an
// admin read or write is answered 503 unavailable with Retry-After at
// the admin deadline (3 s), not when Redis wakes (PROBE6 finding 8: a
// listing waited out a 5 s pause).
func TestAdminRedisStalled(t *testing.T) {
	r := harness.Redis(t)
	c := startCore(t, r.URL(), coreOptions{})
	a := startAdmin(t, c, newContract(t))
	c.storeSIP(t, plugin.MustParseAOR("sip:bob@example.com"), "stall@example.com", "hi")
	const pause = 9 * time.Second
	paused := time.Now()
	if _, err := harness.RedisDo(context.Background(), r.Addr, "CLIENT", "PAUSE", "9000", "ALL"); err != nil {
		t.Fatal(err)
	}
	// Let Redis wake before the servers stop.
	defer func() { time.Sleep(time.Until(paused.Add(pause))) }()
	requests := []struct {
		method, path, ctype string
		body                []byte
	}{
		{"GET", "/v1/users/sip:bob@example.com/messages", "", nil},
		{"GET", "/v1/users/sip:bob@example.com/settings", "", nil},
		{"PUT", "/v1/users/sip:bob@example.com/settings", "application/json", []byte(`{"push":"hold"}`)},
		{"PATCH", "/v1/policy", "application/merge-patch+json", []byte(`{"max_attempts":4}`)},
		{"GET", "/v1/stats", "", nil},
	}
	var wg sync.WaitGroup
	for _, q := range requests {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			res, err := a.send(t, q.method, q.path, adminToken, q.ctype, q.body, nil)
			took := time.Since(start)
			if err != nil {
				t.Error(err)
				return
			}
			if code := errorCode(res); res.Status != http.StatusServiceUnavailable || code != "unavailable" || res.Header.Get("Retry-After") == "" {
				t.Errorf("%s %s during the stall: %d %s, Retry-After %q; want 503 unavailable with Retry-After",
					q.method, q.path, res.Status, res.Body, res.Header.Get("Retry-After"))
			}
			if took > 5*time.Second {
				t.Errorf("%s %s answered after %v, want within the 3 s deadline", q.method, q.path, took.Round(time.Millisecond))
			}
		}()
	}
	wg.Wait()
	if time.Since(paused) >= pause {
		t.Fatal("the requests outlasted the pause: the test proves nothing")
	}
}

// testAdminStoreDown stops Redis and sends every operation that reads or
// writes the store: each is 503 unavailable with Retry-After, which the
// contract sees (it was a 500 internal). GET /v1/policy answers from the
// instance's copy of the policy.
func testAdminStoreDown(t *testing.T, a adminClient, r *harness.RedisServer) {
	r.Kill()
	const u = "/v1/users/sip:dave@example.com"
	var wg sync.WaitGroup
	for _, q := range []struct{ method, path, ctype, body string }{
		{"GET", "/v1/stats", "", ""},
		{"PUT", "/v1/policy", "application/json", string(mustJSON(t, plugin.DefaultPolicy()))},
		{"PATCH", "/v1/policy", "application/merge-patch+json", `{"max_attempts":3}`},
		{"GET", u + "/settings", "", ""},
		{"PUT", u + "/settings", "application/json", `{"push":"hold"}`},
		{"DELETE", u + "/settings", "", ""},
		{"GET", u + "/messages", "", ""},
		{"DELETE", u + "/messages", "", ""},
		{"GET", u + "/messages/01J00000000000000000000000", "", ""},
		{"DELETE", u + "/messages/01J00000000000000000000000", "", ""},
		{"GET", u + "/dead-letters", "", ""},
		{"POST", u + "/dead-letters/requeue", "", ""},
		{"POST", u + "/push", "", ""},
	} {
		var body []byte
		if q.body != "" {
			body = []byte(q.body)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := a.send(t, q.method, q.path, adminToken, q.ctype, body, nil)
			if err != nil {
				t.Error(err)
				return
			}
			if res.Status != 503 || errorCode(res) != "unavailable" || res.Header.Get("Retry-After") != "1" || strings.Contains(string(res.Body), r.Addr) {
				t.Errorf("%s %s with Redis down: %d %s, Retry-After %q; want 503 unavailable, Retry-After 1, no address",
					q.method, q.path, res.Status, res.Body, res.Header.Get("Retry-After"))
			}
		}()
	}
	wg.Wait()
	if res := a.do(t, "GET", "/v1/policy", viewerToken, "", nil); res.Status != 200 {
		t.Errorf("GET /v1/policy with Redis down: %d %s, want 200 from the instance's copy", res.Status, res.Body)
	}
}

// errorCode is the error code of an admin API answer, "" when it has none.
func errorCode(r adminResponse) string {
	var e struct{ Error struct{ Code string } }
	_ = json.Unmarshal(r.Body, &e)
	return e.Error.Code
}
