package api

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/deferpush/deferpush/plugin"
)

// adminAnswer is one admin API answer read off a raw connection.
type adminAnswer struct {
	status int
	etag   string
	code   string // the JSON error code, if any
	body   []byte
	extra  []byte // bytes after the response: none, if its framing is right
	header http.Header
}

// adminRaw sends one request with the admin token and hdr (name: value
// lines) on its own connection and reads the answer and whatever follows
// it until the server closes.
func adminRaw(t *testing.T, addr, method, path, hdr, body string) adminAnswer {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if body != "" {
		hdr += fmt.Sprintf("Content-Type: application/json\r\nContent-Length: %d\r\n", len(body))
	}
	fmt.Fprintf(c, "%s %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nConnection: close\r\n%s\r\n%s",
		method, path, testAdminToken, hdr, body)
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	extra, _ := io.ReadAll(br)
	var e errorBody
	_ = json.Unmarshal(b, &e)
	return adminAnswer{res.StatusCode, res.Header.Get("ETag"), e.Error.Code, b, extra, res.Header}
}

// TestAdminIfNoneMatch: a GET whose If-None-Match names the current tag
// (weakly compared, in a list, or "*") is answered 304 with the ETag and
// no body; a write with an If-None-Match that matches (or "*": the policy
// and settings always exist) is refused 412 and changes nothing. Both
// used to be ignored: 200 with the body, and the write applied.
func TestAdminIfNoneMatch(t *testing.T) {
	var admin string
	startHooksWith(t, &hookEngine{policy: plugin.DefaultPolicy()}, func(c *Config) { admin = c.AdminListener.Addr().String() })
	const settings = "/v1/users/sip:bob@example.com/settings"
	for _, path := range []string{"/v1/policy", settings} {
		t.Run(path, func(t *testing.T) {
			first := adminRaw(t, admin, "GET", path, "", "")
			tag := first.etag
			if first.status != 200 || tag == "" {
				t.Fatalf("GET: %d, ETag %q", first.status, tag)
			}
			for _, tt := range []struct{ method, inm string }{
				{"GET", tag},
				{"GET", "W/" + tag},
				{"GET", `"other", ` + tag},
				{"GET", "*"},
				{"HEAD", tag},
			} {
				got := adminRaw(t, admin, tt.method, path, "If-None-Match: "+tt.inm+"\r\n", "")
				if got.status != 304 || got.etag != tag || len(got.body) != 0 || len(got.extra) != 0 {
					t.Errorf("%s If-None-Match %s: %d, ETag %q, body %q then %q; want 304, ETag %s, no body",
						tt.method, tt.inm, got.status, got.etag, got.body, got.extra, tag)
				}
			}
			if got := adminRaw(t, admin, "GET", path, "If-None-Match: \"other\"\r\n", ""); got.status != 200 || len(got.body) == 0 {
				t.Errorf("GET If-None-Match \"other\": %d %q, want 200 with the body", got.status, got.body)
			}

			method, change := "PATCH", `{"max_attempts":9}`
			if path == settings {
				method, change = "PUT", `{"push":"hold"}`
			}
			for _, inm := range []string{"*", tag, "W/" + tag} {
				got := adminRaw(t, admin, method, path, "If-None-Match: "+inm+"\r\n", change)
				if got.status != 412 || got.code != "precondition_failed" {
					t.Errorf("%s If-None-Match %s: %d %q, want 412 precondition_failed", method, inm, got.status, got.code)
				}
			}
			if path == settings {
				if got := adminRaw(t, admin, "DELETE", path, "If-None-Match: *\r\n", ""); got.status != 412 {
					t.Errorf("DELETE If-None-Match *: %d, want 412", got.status)
				}
			}
			if now := adminRaw(t, admin, "GET", path, "", ""); now.etag != tag {
				t.Fatalf("refused writes changed the %s: ETag %s, was %s", path, now.etag, tag)
			}
			got := adminRaw(t, admin, method, path, "If-None-Match: \"other\"\r\n", change)
			if got.status != 200 || got.etag == tag {
				t.Errorf("%s If-None-Match \"other\": %d, ETag %q; want 200 and a new tag", method, got.status, got.etag)
			}
			if !strings.Contains(string(got.body), strings.Trim(change, "{}")) {
				t.Errorf("%s: body %s, want the change %s", method, got.body, change)
			}
		})
	}
}
