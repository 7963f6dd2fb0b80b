package api

import (
	"strings"
	"testing"

	"github.com/deferpush/deferpush/api/console"
)

// TestConsoleServed: the page and its files need no token and come with
// the console's security headers; the API beside them still needs one.
func TestConsoleServed(t *testing.T) {
	s := newTestServer(t, nil)
	for _, tt := range []struct {
		path, ctype string
	}{
		{"/", "text/html; charset=utf-8"},
		{"/console/app.js", "text/javascript; charset=utf-8"},
		{"/console/console.css", "text/css; charset=utf-8"},
		{"/console/favicon.svg", "image/svg+xml"},
	} {
		res := perform(s, "GET", tt.path, "", "", nil)
		if res.Code != 200 {
			t.Errorf("GET %s without a token = %d %s, want 200", tt.path, res.Code, res.Body.Bytes())
			continue
		}
		h := res.Header()
		if got := h.Get("Content-Type"); got != tt.ctype {
			t.Errorf("GET %s: Content-Type %q, want %q", tt.path, got, tt.ctype)
		}
		if got := h.Get("Content-Security-Policy"); got != console.CSP {
			t.Errorf("GET %s: Content-Security-Policy %q, want %q", tt.path, got, console.CSP)
		}
		if got := h.Get("X-Content-Type-Options"); got != "nosniff" {
			t.Errorf("GET %s: X-Content-Type-Options %q, want nosniff", tt.path, got)
		}
	}
	// A dot segment is refused before routing (checkPath).
	if res := perform(s, "GET", "/console/../openapi.json", "", "", nil); res.Code != 400 || !strings.Contains(res.Body.String(), `"invalid_path"`) {
		t.Errorf("GET /console/../openapi.json = %d %s, want 400 invalid_path", res.Code, res.Body.Bytes())
	}
	for _, p := range []string{"/console/", "/console/nope.js", "/console/x/app.js", "/index.html"} {
		if res := perform(s, "GET", p, "", "", nil); res.Code != 404 || !strings.Contains(res.Body.String(), `"not_found"`) {
			t.Errorf("GET %s = %d %s, want 404 not_found", p, res.Code, res.Body.Bytes())
		}
	}
	for _, p := range []string{"/v1/policy", "/v1/whoami", "/metrics"} {
		if res := perform(s, "GET", p, "", "", nil); res.Code != 401 {
			t.Errorf("GET %s without a token = %d, want 401 beside the console", p, res.Code)
		}
	}
}

func TestWhoami(t *testing.T) {
	s := newTestServer(t, nil)
	for _, tt := range []struct{ token, want string }{
		{testAdminToken, `{"name":"ops","role":"admin"}`},
		{testViewerToken, `{"name":"noc","role":"viewer"}`},
	} {
		res := perform(s, "GET", "/v1/whoami", tt.token, "", nil)
		if res.Code != 200 || res.Body.String() != tt.want {
			t.Errorf("GET /v1/whoami = %d %s, want 200 %s", res.Code, res.Body.Bytes(), tt.want)
		}
	}
	if res := perform(s, "GET", "/v1/whoami?x=1", testAdminToken, "", nil); res.Code != 400 {
		t.Errorf("GET /v1/whoami?x=1 = %d, want 400", res.Code)
	}
}
