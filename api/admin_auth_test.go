package api

import (
	"encoding/json"
	"testing"
)

// TestAdminAuth: no token, a wrong one or one that only shares a prefix
// with a configured token is 401 unauthorized; a viewer reads, and every
// write it tries is 403 forbidden and changes nothing; an admin writes.
func TestAdminAuth(t *testing.T) {
	s := newTestServer(t, nil)
	const (
		patch = "application/merge-patch+json"
		bob   = "/v1/users/sip:bob@example.com"
	)
	maxMailbox := func() float64 {
		t.Helper()
		res := perform(s, "GET", "/v1/policy", testAdminToken, "", nil)
		var p map[string]any
		if err := json.Unmarshal(res.Body.Bytes(), &p); res.Code != 200 || err != nil {
			t.Fatalf("GET /v1/policy as admin: %d %s", res.Code, res.Body.Bytes())
		}
		return p["max_mailbox"].(float64)
	}
	before := maxMailbox()

	for _, tc := range []struct {
		name, method, path, token, ctype, body string
		want                                   int
		code                                   string
	}{
		{"no token", "GET", "/v1/policy", "", "", "", 401, "unauthorized"},
		{"unknown token", "GET", "/v1/policy", "not-a-token-0123456789", "", "", 401, "unauthorized"},
		{"a configured token's prefix", "GET", "/v1/policy", testAdminToken[:12], "", "", 401, "unauthorized"},
		{"a configured token and more", "GET", "/v1/policy", testViewerToken + "x", "", "", 401, "unauthorized"},
		{"viewer reads the policy", "GET", "/v1/policy", testViewerToken, "", "", 200, ""},
		{"viewer reads a mailbox", "GET", bob + "/messages", testViewerToken, "", "", 200, ""},
		{"viewer patches the policy", "PATCH", "/v1/policy", testViewerToken, patch, `{"max_mailbox":7}`, 403, "forbidden"},
		{"viewer sets a user's push", "PUT", bob + "/settings", testViewerToken, "application/json", `{"push":"off"}`, 403, "forbidden"},
		{"viewer deletes a mailbox", "DELETE", bob + "/messages", testViewerToken, "", "", 403, "forbidden"},
		{"viewer requeues dead letters", "POST", bob + "/dead-letters/requeue", testViewerToken, "", "", 403, "forbidden"},
		{"viewer pushes now", "POST", bob + "/push", testViewerToken, "", "", 403, "forbidden"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := perform(s, tc.method, tc.path, tc.token, tc.ctype, []byte(tc.body))
			if res.Code != tc.want {
				t.Fatalf("%s %s: %d %s, want %d", tc.method, tc.path, res.Code, res.Body.Bytes(), tc.want)
			}
			if tc.code == "" {
				return
			}
			var e struct {
				Error struct{ Code string } `json:"error"`
			}
			if err := json.Unmarshal(res.Body.Bytes(), &e); err != nil || e.Error.Code != tc.code {
				t.Errorf("%s %s: body %s, want error code %q", tc.method, tc.path, res.Body.Bytes(), tc.code)
			}
		})
	}
	if got := maxMailbox(); got != before {
		t.Errorf("max_mailbox %v after the viewer's patch, want %v unchanged", got, before)
	}
	if res := perform(s, "PATCH", "/v1/policy", testAdminToken, patch, []byte(`{"max_mailbox":7}`)); res.Code != 200 {
		t.Fatalf("admin patches the policy: %d %s", res.Code, res.Body.Bytes())
	}
	if got := maxMailbox(); got != 7 {
		t.Errorf("max_mailbox %v after the admin's patch, want 7", got)
	}
}
