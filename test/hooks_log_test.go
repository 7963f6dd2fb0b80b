package test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestHookRefusalLogged: a hook call deferpush refuses is a warning in its
// log with the reason — the event body OpenSIPS posted before issue 16's
// fix ({"domain":…} only), a body that is not JSON, a wrong token — and
// neither the right token nor the wrong one is ever in the log.
func TestHookRefusalLogged(t *testing.T) {
	const token = "hooks-token-never-logged-0123456789"
	const wrong = "wrong-token-never-logged-9876543210"
	dp := startDeferpush(t, []string{"DEFERPUSH_HOOKS_TOKEN=" + token})
	post := func(path, tok, body string) int {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, "http://"+dp.HooksAddr+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Deferpush-Token", tok)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	for _, c := range []struct {
		path, tok, body string
		status          int
		reason          string
	}{
		{"/hooks/opensips/registered", token, `{"domain":"example.com"}`, 400, "aor"},
		{"/hooks/kamailio/message", token, `{"raw":`, 400, "body"},
		{"/hooks/opensips/unregistered", wrong, `{"aor":"user2","domain":"example.com"}`, 401, ""},
	} {
		if got := post(c.path, c.tok, c.body); got != c.status {
			t.Errorf("POST %s %s: %d, want %d", c.path, c.body, got, c.status)
		}
	}
	waitFor(t, 5*time.Second, "the refusals in deferpush's log", func() bool {
		return strings.Count(dp.Log(), `"msg":"hook call refused"`) == 2 && strings.Contains(dp.Log(), `"msg":"hook call with a wrong token"`)
	})
	for _, line := range strings.Split(dp.Log(), "\n") {
		if !strings.Contains(line, `"msg":"hook call refused"`) {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if rec["level"] != "WARN" || rec["reason"] == "" || rec["path"] == "" || rec["status"] != "malformed" {
			t.Errorf("refusal logged as %v: want a WARN with path, status malformed and the reason", rec)
		}
	}
	if !strings.Contains(dp.Log(), `"reason":"invalid aor: missing"`) {
		t.Errorf("the missing aor is not the logged reason:\n%s", dp.Log())
	}
	if strings.Contains(dp.Log(), token) || strings.Contains(dp.Log(), wrong) {
		t.Errorf("a hooks token is in deferpush's log")
	}
}
