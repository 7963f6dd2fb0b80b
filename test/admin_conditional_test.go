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
// of the admin API's next conditional write: during, inside its check
// (after the store read what it checks, before it writes), or after, once
// the store's call returned.
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

func (s *racingStore) DeleteAllIf(ctx context.Context, aor plugin.AOR, check func(string) error) (int, error) {
	n, err := s.Redis.DeleteAllIf(ctx, aor, func(v string) error {
		s.once(&s.during)
		return check(v)
	})
	s.once(&s.after)
	return n, err
}

func (s *racingStore) DeleteIf(ctx context.Context, aor plugin.AOR, id string, check func(*plugin.Message) error) error {
	err := s.Redis.DeleteIf(ctx, aor, id, func(m *plugin.Message) error {
		s.once(&s.during)
		return check(m)
	})
	s.once(&s.after)
	return err
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
	t.Run("messages, one arriving between the check and the delete", func(t *testing.T) {
		c.storeSIP(t, bob, "race-1@example.com", "one")
		tag := a.do(t, "GET", u+"/messages", viewerToken, "", nil).Header.Get("ETag")
		st.during = func() { c.storeSIP(t, bob, "race-2@example.com", "two") }
		deleteIf(t, u+"/messages", tag, 412)
		if n, _ := c.st.Count(ctx, bob); n.Pending != 2 {
			t.Errorf("after the refused DELETE: %+v, want both messages", n)
		}
		tag = a.do(t, "GET", u+"/messages", viewerToken, "", nil).Header.Get("ETag")
		deleteIf(t, u+"/messages", tag, 200)
	})
	t.Run("a message, claimed by a push between the check and the delete", func(t *testing.T) {
		m := c.storeSIP(t, bob, "race-3@example.com", "three")
		path := u + "/messages/" + m.ID
		tag := a.do(t, "GET", path, viewerToken, "", nil).Header.Get("ETag")
		st.during = func() {
			if _, err := c.st.Claim(ctx, bob, "push", 1, time.Minute); err != nil {
				t.Error(err)
			}
		}
		deleteIf(t, path, tag, 412)
		if got, err := c.st.Get(ctx, bob, m.ID); err != nil || got.State != plugin.StateInFlight {
			t.Errorf("after the refused DELETE: %+v, %v; want it in flight", got, err)
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

// testAdminConditions sends If-Match and If-None-Match to every operation
// of the admin API that takes them: a tag the resource does not have is
// 412 on each (also where it has no ETag: the statistics, the dead
// letters, the POST actions, ...), If-None-Match "*" on a GET is 304.
// TestAdminAPI runs it so that the contract sees these answers of every
// operation.
func testAdminConditions(t *testing.T, a adminClient, msgID string) {
	const u = "/v1/users/sip:dave@example.com"
	gets := []string{"/v1/policy", "/v1/stats", "/v1/whoami", "/metrics", u + "/settings", u + "/messages",
		u + "/messages/" + msgID, u + "/dead-letters"}
	for _, p := range gets {
		if res := a.doWith(t, "GET", p, viewerToken, "", nil, map[string]string{"If-None-Match": "*"}); res.Status != 304 || len(res.Body) != 0 {
			t.Errorf("GET %s If-None-Match *: %d %q, want 304 and no body", p, res.Status, res.Body)
		}
	}
	writes := []struct{ method, path, ctype, body string }{
		{"PUT", "/v1/policy", "application/json", "{}"}, {"PATCH", "/v1/policy", "application/merge-patch+json", "{}"},
		{"PUT", u + "/settings", "application/json", "{}"}, {"DELETE", u + "/settings", "", ""},
		{"DELETE", u + "/messages", "", ""}, {"DELETE", u + "/messages/" + msgID, "", ""},
		{"POST", u + "/dead-letters/requeue", "", ""}, {"POST", u + "/push", "", ""},
	}
	for _, p := range gets {
		writes = append(writes, struct{ method, path, ctype, body string }{"GET", p, "", ""})
	}
	for _, w := range writes {
		var body []byte
		if w.body != "" {
			body = []byte(w.body)
		}
		res := a.doWith(t, w.method, w.path, adminToken, w.ctype, body, map[string]string{"If-Match": `"not-a-tag-of-it"`})
		if code, _ := res.ErrorCode(t); res.Status != 412 || code != "precondition_failed" {
			t.Errorf("%s %s If-Match a stale tag: %d %s, want 412 precondition_failed", w.method, w.path, res.Status, res.Body)
		}
	}
	if res := a.do(t, "GET", u+"/messages/"+msgID, viewerToken, "", nil); res.Status != 200 {
		t.Errorf("the message after refused deletes: %d %s", res.Status, res.Body)
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
