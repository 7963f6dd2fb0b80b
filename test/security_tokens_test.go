package test

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSecurityTokensNeverLogged runs the binary with debug logging and
// configured tokens (a generated one is printed once by design), uses the
// hooks and the admin API with right and wrong tokens, and checks that no
// token, right or wrong, appears in the log.
func TestSecurityTokensNeverLogged(t *testing.T) {
	const (
		hooksTok  = "hooks-secret-AAAA-0123456789"
		adminTok  = "admin-secret-BBBB-0123456789"
		viewerTok = "viewer-secret-CCCC-0123456789"
		wrongHook = "wrong-hooks-DDDD-0123456789"
		wrongAdm  = "wrong-admin-EEEE-0123456789"
	)
	cfg := filepath.Join(t.TempDir(), "deferpush.yaml")
	yaml := "hooks:\n  token: " + hooksTok + "\nadmin:\n  token: " + adminTok +
		"\n  tokens:\n    - {name: noc, token: " + viewerTok + ", role: viewer}\n"
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	dp := startDeferpush(t, nil, "--config", cfg)
	call := func(method, url, header, value, body string) int {
		req, _ := http.NewRequest(method, url, strings.NewReader(body))
		req.Header.Set(header, value)
		req.Header.Set("Content-Type", "application/json")
		res, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, url, err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	hooks, admin := "http://"+dp.HooksAddr, "http://"+dp.AdminAddr
	reg := `{"aor":"sip:user9@example.com","contact":"sip:user9@127.0.0.1:9;transport=tcp","expires":0}`
	for _, c := range []struct {
		method, url, header, value, body string
		want                             int
	}{
		{"POST", hooks + "/hooks/kamailio/registered", "X-Deferpush-Token", hooksTok, reg, 200},
		{"POST", hooks + "/hooks/kamailio/registered", "X-Deferpush-Token", wrongHook, reg, 401},
		{"POST", hooks + "/hooks/kamailio/message", "X-Deferpush-Token", hooksTok, `{"raw":"not SIP"}`, 400},
		{"GET", admin + "/v1/policy", "Authorization", "Bearer " + adminTok, "", 200},
		{"GET", admin + "/v1/policy", "Authorization", "Bearer " + wrongAdm, "", 401},
		{"PATCH", admin + "/v1/policy", "Authorization", "Bearer " + adminTok, `{"max_per_session":40}`, 200},
		{"PATCH", admin + "/v1/policy", "Authorization", "Bearer " + viewerTok, `{"max_per_session":41}`, 403},
		{"GET", admin + "/v1/stats", "Authorization", "Bearer " + viewerTok, "", 200},
		{"GET", admin + "/v1/stats", "Authorization", "Basic " + adminTok, "", 401},
	} {
		if got := call(c.method, c.url, c.header, c.value, c.body); got != c.want {
			t.Errorf("%s %s with %s: %d, want %d", c.method, c.url, c.header, got, c.want)
		}
	}
	if err := dp.Stop(t); err != nil {
		t.Errorf("stop: %v", err)
	}
	log := dp.Log()
	if !strings.Contains(log, `"level":"DEBUG"`) || !strings.Contains(log, "hook call with a wrong token") || !strings.Contains(log, "policy changed") {
		t.Fatalf("the log lacks the debug, wrong-token and policy lines this test relies on:\n%s", tail(log, 8<<10))
	}
	for _, tok := range []string{hooksTok, adminTok, viewerTok, wrongHook, wrongAdm, "AAAA", "BBBB", "CCCC", "DDDD", "EEEE"} {
		if strings.Contains(log, tok) {
			t.Errorf("the log shows %q", tok)
		}
	}
}
