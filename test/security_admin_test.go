package test

import (
	"bytes"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/test/harness"
)

// TestSecurityAdminEveryRoute walks every operation of the OpenAPI
// document, so that a route added later is covered too: without a token,
// with an empty or a non-Bearer one, every protected operation gets 401;
// a viewer reads (never 401 or 403) and every write gets 403 and changes
// nothing.
func TestSecurityAdminEveryRoute(t *testing.T) {
	r := harness.Redis(t)
	c := startCore(t, r.URL(), coreOptions{})
	con := newContract(t)
	a := startAdmin(t, c, con)
	public := []string{"/healthz", "/readyz", "/v1/openapi.json"}
	fill := strings.NewReplacer("{aor}", "sip:bob@example.com", "{id}", "01J00000000000000000000000")
	before := a.do(t, "GET", "/v1/policy", adminToken, "", nil)

	n := 0
	for path, item := range con.doc.Paths.Map() {
		for method := range item.Operations() {
			n++
			p := fill.Replace(path)
			name := method + " " + path
			if slices.Contains(public, path) {
				if res := a.do(t, method, p, "", "", nil); res.Status == 401 || res.Status == 403 {
					t.Errorf("%s without a token: %d, want it public", name, res.Status)
				}
				continue
			}
			t.Run(name, func(t *testing.T) {
				body, ctype := []byte(nil), ""
				if method != "GET" && method != "DELETE" {
					body, ctype = []byte(`{"push":"off","store_enabled":false}`), "application/json"
				}
				for _, auth := range []string{"", "Bearer ", "Basic " + adminToken, "Token " + adminToken, "Bearer " + adminToken + "x"} {
					res := a.doAuth(t, method, p, auth, ctype, body)
					if res.Status != 401 {
						t.Errorf("Authorization %q: %d, want 401", auth, res.Status)
					}
				}
				res := a.do(t, method, p, viewerToken, ctype, body)
				switch {
				case method == "GET" && (res.Status == 401 || res.Status == 403):
					t.Errorf("viewer reading: %d %s", res.Status, res.Body)
				case method != "GET" && res.Status != 403:
					t.Errorf("viewer writing: %d %s, want 403", res.Status, res.Body)
				}
			})
		}
	}
	if n < 18 {
		t.Errorf("walked %d operations; the document has more", n)
	}
	if after := a.do(t, "GET", "/v1/policy", adminToken, "", nil); !bytes.Equal(before.Body, after.Body) {
		t.Errorf("refused calls changed the policy:\n%s\n%s", before.Body, after.Body)
	}
	if p := c.counts(t, plugin.MustParseAOR("sip:bob@example.com")); p.Pending != 0 {
		t.Errorf("refused calls stored something: %+v", p)
	}
}

// doAuth is do with a raw Authorization header ("" sends none).
func (a adminClient) doAuth(t testing.TB, method, path, auth, contentType string, body []byte) adminResponse {
	t.Helper()
	req, err := http.NewRequest(method, a.base+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(res.Body)
	a.c.check(t, req, res, b.Bytes())
	return adminResponse{Status: res.StatusCode, Header: res.Header, Body: b.Bytes()}
}
