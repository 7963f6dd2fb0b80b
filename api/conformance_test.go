package api

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/deferpush/deferpush/plugin"
)

// startBoth serves the hooks and the admin API on loopback sockets and
// returns their base URLs.
func startBoth(t *testing.T) (hooks, admin string) {
	t.Helper()
	hooks = startHooksWith(t, &hookEngine{policy: plugin.DefaultPolicy()}, func(c *Config) {
		admin = "http://" + c.AdminListener.Addr().String()
	})
	return hooks, admin
}

// do sends one request with the admin token (when token) and returns the
// response with its body read.
func do(t *testing.T, method, url string, token bool) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token {
		req.Header.Set("Authorization", "Bearer "+testAdminToken)
	}
	cl := &http.Client{Timeout: 10 * time.Second}
	res, err := cl.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: body: %v", method, url, err)
	}
	return res, b
}

// TestMethodNotAllowedAllow: every 405, on either listener, lists the
// methods the path takes in Allow (RFC 9110 §15.5.6), HEAD beside every
// GET; hertz's own 405s carried none. Methods hertz does not route
// (FOO) get the same answer.
func TestMethodNotAllowedAllow(t *testing.T) {
	hooks, admin := startBoth(t)
	const bob = "/v1/users/sip:bob@example.com"
	for _, tt := range []struct {
		base, method, path, allow string
	}{
		{hooks, "GET", "/hooks/kamailio/registered", "POST"},
		{hooks, "HEAD", "/hooks/kamailio/message", "POST"},
		{hooks, "PUT", "/hooks/opensips/expired", "POST"},
		{hooks, "POST", "/healthz", "GET, HEAD"},
		{admin, "POST", "/readyz", "GET, HEAD"},
		{admin, "DELETE", "/v1/policy", "GET, HEAD, PUT, PATCH"},
		{admin, "POST", "/v1/stats", "GET, HEAD"},
		{admin, "PUT", "/v1/whoami", "GET, HEAD"},
		{admin, "POST", "/metrics", "GET, HEAD"},
		{admin, "DELETE", "/v1/openapi.json", "GET, HEAD"},
		{admin, "POST", "/", "GET, HEAD"},
		{admin, "POST", "/console/app.js", "GET, HEAD"},
		{admin, "POST", bob + "/settings", "GET, HEAD, PUT, DELETE"},
		{admin, "PATCH", bob + "/settings", "GET, HEAD, PUT, DELETE"},
		{admin, "PUT", bob + "/messages", "GET, HEAD, DELETE"},
		{admin, "POST", bob + "/messages/01J0000000000000000000000", "GET, HEAD, DELETE"},
		{admin, "DELETE", bob + "/dead-letters", "GET, HEAD"},
		{admin, "GET", bob + "/dead-letters/requeue", "POST"},
		{admin, "OPTIONS", bob + "/push", "POST"},
	} {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			res, b := do(t, tt.method, tt.base+tt.path, true)
			if res.StatusCode != http.StatusMethodNotAllowed {
				t.Fatalf("%d %s, want 405", res.StatusCode, b)
			}
			if got := res.Header.Get("Allow"); got != tt.allow {
				t.Errorf("Allow %q, want %q", got, tt.allow)
			}
			if tt.method == "HEAD" {
				return
			}
			var e errorBody
			if err := json.Unmarshal(b, &e); err != nil || e.Error.Code != "method_not_allowed" {
				t.Errorf("body %s, want error code method_not_allowed", b)
			}
		})
	}
}

// TestUnknownMethod: a method the server does not know at all is 501
// (RFC 9110 §15.6.2), on either listener, on any path; one it knows but
// the resource does not take stays 405 (TestMethodNotAllowed).
func TestUnknownMethod(t *testing.T) {
	hooks, admin := startBoth(t)
	for _, tt := range []struct{ base, method, path string }{
		{hooks, "FOO", "/hooks/opensips/unregistered"},
		{admin, "FOO", "/v1/policy"},
		{admin, "PROPFIND", "/v1/users/sip:bob@example.com/settings"},
		{admin, "FOO", "/no/such/path"},
	} {
		res, b := do(t, tt.method, tt.base+tt.path, true)
		var e errorBody
		if res.StatusCode != http.StatusNotImplemented || json.Unmarshal(b, &e) != nil || e.Error.Code != "not_implemented" {
			t.Errorf("%s %s: %d %s, want 501 not_implemented", tt.method, tt.path, res.StatusCode, b)
		}
	}
}

// TestHeadAsGet: HEAD is served wherever GET is (RFC 9110 §9.1), with
// GET's status and headers (Content-Type, Content-Length, ETag) and no
// body; it was 405.
func TestHeadAsGet(t *testing.T) {
	hooks, admin := startBoth(t)
	const bob = "/v1/users/sip:bob@example.com"
	for _, tt := range []struct {
		base, path string
		token      bool
		status     int
		// same: the body is the same from one GET to the next, so that
		// HEAD's Content-Length must be GET's.
		same bool
	}{
		{hooks, "/healthz", false, 200, true},
		{hooks, "/readyz", false, 200, true},
		{admin, "/healthz", false, 200, true},
		{admin, "/v1/policy", true, 200, true},
		{admin, "/v1/policy", false, 401, true},
		{admin, "/v1/policy?x=1", true, 400, true},
		{admin, "/v1/stats", true, 200, true},
		{admin, "/v1/whoami", true, 200, true},
		{admin, "/v1/openapi.json", false, 200, true},
		{admin, "/metrics", true, 200, false},
		{admin, "/", false, 200, true},
		{admin, "/console/app.js", false, 200, true},
		{admin, "/console/nope.js", false, 404, true},
		{admin, bob + "/settings", true, 200, true},
		{admin, bob + "/messages", true, 200, true},
		{admin, bob + "/dead-letters", true, 200, true},
		{admin, "/v1/users/bob/settings", true, 400, true},
	} {
		t.Run(tt.path, func(t *testing.T) {
			get, body := do(t, "GET", tt.base+tt.path, tt.token)
			head, hb := do(t, "HEAD", tt.base+tt.path, tt.token)
			if get.StatusCode != tt.status || head.StatusCode != tt.status {
				t.Fatalf("GET %d, HEAD %d %s; want %d for both", get.StatusCode, head.StatusCode, hb, tt.status)
			}
			if len(hb) != 0 {
				t.Errorf("HEAD has a body: %q", hb)
			}
			for _, h := range []string{"Content-Type", "ETag", "WWW-Authenticate"} {
				if g, h2 := get.Header.Get(h), head.Header.Get(h); g != h2 {
					t.Errorf("%s: GET %q, HEAD %q", h, g, h2)
				}
			}
			if tt.same && head.ContentLength != int64(len(body)) {
				t.Errorf("HEAD Content-Length %d, GET's body %d octets", head.ContentLength, len(body))
			}
		})
	}
	// ETag: a HEAD tells whether the policy changed without reading it.
	res, _ := do(t, "HEAD", admin+"/v1/policy", true)
	if !strings.HasPrefix(res.Header.Get("ETag"), `"`) {
		t.Errorf("HEAD /v1/policy: ETag %q, want a strong tag", res.Header.Get("ETag"))
	}
}

// TestHookChallenge: a hook call refused 401 carries WWW-Authenticate
// (RFC 9110 §15.5.2), naming Basic, the HTTP scheme the hooks take the
// token in; other answers carry none.
func TestHookChallenge(t *testing.T) {
	base := startHooks(t, &hookEngine{policy: plugin.DefaultPolicy()}, "127.0.0.0/8")
	basic := func(cred string) string { return "Basic " + base64.StdEncoding.EncodeToString([]byte(cred)) }
	for _, tt := range []struct {
		name, token, authorization string
		http                       int
	}{
		{"no token", "", "", 401},
		{"wrong token", "hooks-token-0123456788", "", 401},
		{"wrong basic password", "", basic("kamailio:nope"), 401},
		{"bearer", "", "Bearer " + testHooksToken, 401},
		{"token", testHooksToken, "", 400},
		{"basic", "", basic("kamailio:" + testHooksToken), 400},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, base+"/hooks/kamailio/registered", strings.NewReader(`{}`))
			req.Header.Set("Content-Type", "application/json")
			if tt.token != "" {
				req.Header.Set(TokenHeader, tt.token)
			}
			if tt.authorization != "" {
				req.Header.Set("Authorization", tt.authorization)
			}
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			got := res.Header.Get("WWW-Authenticate")
			switch {
			case res.StatusCode != tt.http:
				t.Errorf("%d, want %d", res.StatusCode, tt.http)
			case tt.http == 401 && got != `Basic realm="deferpush hooks", charset="UTF-8"`:
				t.Errorf("WWW-Authenticate %q, want the Basic challenge", got)
			case tt.http != 401 && got != "":
				t.Errorf("WWW-Authenticate %q on a %d", got, res.StatusCode)
			}
		})
	}
}

// TestPolicyMediaTypeCase: media types compare without case (RFC 9110
// §8.3.1): "MESSAGE/SIP" as the policy's encapsulation is taken, and kept
// as "message/sip" (it was 400). Keywords still match exactly.
func TestPolicyMediaTypeCase(t *testing.T) {
	s := newTestServer(t, nil)
	full, _ := json.Marshal(plugin.DefaultPolicy())
	put := strings.Replace(string(full), `"encapsulation":"auto"`, `"encapsulation":"Message/CPIM"`, 1)
	for _, tt := range []struct {
		method, body string
		http         int
		want         plugin.Encapsulation // after the change
	}{
		{"PATCH", `{"encapsulation":"MESSAGE/SIP"}`, 200, plugin.EncapSIP},
		{"PATCH", `{"encapsulation":"Multipart/Mixed"}`, 200, plugin.EncapMultipart},
		{"PUT", put, 200, plugin.EncapCPIM},
		{"PATCH", `{"encapsulation":"message/sip"}`, 200, plugin.EncapSIP},
		{"PATCH", `{"encapsulation":"MESSAGE/NOPE"}`, 400, plugin.EncapSIP},
		{"PATCH", `{"encapsulation":"AUTO"}`, 400, plugin.EncapSIP},
	} {
		ct := "application/merge-patch+json"
		if tt.method == "PUT" {
			ct = "application/json"
		}
		res := perform(s, tt.method, "/v1/policy", testAdminToken, ct, []byte(tt.body))
		if res.Code != tt.http {
			t.Errorf("%s %s: %d %s, want %d", tt.method, tt.body, res.Code, res.Body.Bytes(), tt.http)
		}
		res = perform(s, "GET", "/v1/policy", testAdminToken, "", nil)
		var p plugin.Policy
		if err := json.Unmarshal(res.Body.Bytes(), &p); err != nil || p.Encapsulation != tt.want {
			t.Errorf("after %s %s: encapsulation %q (%v), want %q", tt.method, tt.body, p.Encapsulation, err, tt.want)
		}
	}
}
