package api

import (
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"
)

// FuzzAdminJSON sends fuzzed bodies (and AORs) to every admin endpoint
// that decodes JSON or an AOR: whatever arrives, the answer is never a
// 5xx, and an error is always the one JSON shape.
func FuzzAdminJSON(f *testing.F) {
	s := newTestServer(f, nil)
	for _, seed := range []struct {
		route uint8
		ctype uint8
		aor   string
		body  string
	}{
		{0, 0, "sip:bob@example.com", `{"store_enabled":true,"push_enabled":true,"default_push":"on","max_per_session":50,"message_ttl":"72h","max_mailbox":1000,"max_message_size":65536,"encapsulation":"auto","no_encap_fallback":"hold","push_target":"contact","invite_timeout":"32s","retry_backoff":"1m","max_attempts":5,"success_reports":false,"full_mailbox_reply":486,"store_disabled_reply":480,"delivery":"auto","pager_below":0}`},
		{1, 1, "sip:bob@example.com", `{"max_per_session":7,"message_ttl":null}`},
		{1, 0, "sip:bob@example.com", `{"message_ttl":1e400}`},
		{1, 0, "sip:bob@example.com", `{"max_mailbox":-1}`},
		{1, 0, "sip:bob@example.com", `{"invite_timeout":"-5s"}`},
		{1, 2, "sip:bob@example.com", `{}`},
		{2, 0, "sip:bob@example.com", `{"push":"hold","max_per_session":3}`},
		{2, 0, `"Bob" <sip:bob@EXAMPLE.com;transport=tcp>`, `{"push":null}`},
		{2, 0, "tel:+15551234", `[1,2]`},
		{2, 0, "sip:@", `{"push":"on"}`},
		{3, 0, "sip:carol@example.com", ``},
		{4, 0, "sips:dave@example.com:5061", `null`},
		{0, 0, "x", "{\"store_enabled\":tru"},
		{1, 0, "x", "\xff\xfe{}"},
	} {
		f.Add(seed.route, seed.ctype, seed.aor, []byte(seed.body))
	}
	routes := []struct{ method, path string }{
		{"PUT", "/v1/policy"},
		{"PATCH", "/v1/policy"},
		{"PUT", "/v1/users/{aor}/settings"},
		{"POST", "/v1/users/{aor}/push"},
		{"POST", "/v1/users/{aor}/dead-letters/requeue"},
		{"GET", "/v1/users/{aor}/messages"},
	}
	ctypes := []string{"application/json", "application/merge-patch+json", "text/plain", ""}
	f.Fuzz(func(t *testing.T, route, ctype uint8, aor string, body []byte) {
		r := routes[int(route)%len(routes)]
		path := strings.ReplaceAll(r.path, "{aor}", url.PathEscape(aor))
		start := time.Now()
		res := perform(s, r.method, path, testAdminToken, ctypes[int(ctype)%len(ctypes)], body)
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("%s %s with %q took %v", r.method, path, body, d)
		}
		if res.Code >= 500 {
			t.Fatalf("%s %s with %q: %d %s", r.method, path, body, res.Code, res.Body.Bytes())
		}
		if res.Code >= 400 {
			checkErrorShape(t, res.Body.Bytes())
		}
	})
}

// checkErrorShape fails unless body is exactly {"error":{"code","message"[,"field"]}}.
func checkErrorShape(t *testing.T, body []byte) {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	var e errorBody
	if err := dec.Decode(&e); err != nil || e.Error.Code == "" || e.Error.Message == "" {
		t.Fatalf("error body %s is not the error shape (%v)", body, err)
	}
}
