package api

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/cloudwego/hertz/pkg/route"
	"github.com/getkin/kin-openapi/openapi3"

	"github.com/deferpush/deferpush/api/console"
)

// TestOpenAPIDocument: the document is valid OpenAPI 3 and describes
// every admin route the server registers, and nothing else. HEAD is GET
// without the body (RFC 9110 §9.3.2), served for every GET and not
// described: each HEAD route must have its GET.
func TestOpenAPIDocument(t *testing.T) {
	doc, err := openapi3.NewLoader().LoadFromData(OpenAPI())
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("validate: %v", err)
	}
	s := newTestServer(t, nil)
	served := map[string]bool{}
	var heads []string
	for _, r := range s.admin.Routes() {
		if r.Method == "HEAD" {
			heads = append(heads, r.Path)
			continue
		}
		// The console's page and files are no part of the API.
		if strings.HasPrefix(r.Path, "/v1/users/") || r.Path == "/" || strings.HasPrefix(r.Path, console.Prefix) {
			continue
		}
		served[r.Method+" "+r.Path] = true
	}
	for _, p := range heads {
		if !slices.ContainsFunc(s.admin.Routes(), func(r route.RouteInfo) bool { return r.Method == "GET" && r.Path == p }) {
			t.Errorf("HEAD %s is served without a GET", p)
		}
	}
	a := &admin{}
	for _, r := range a.userRoutes() {
		p := "/v1/users/{aor}/" + strings.Join(r.path, "/")
		served[r.method+" "+p] = true
	}
	documented := map[string]bool{}
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			documented[method+" "+path] = true
		}
	}
	for k := range served {
		if !documented[k] {
			t.Errorf("%s is served but not in openapi.json", k)
		}
	}
	for k := range documented {
		if !served[k] {
			t.Errorf("%s is in openapi.json but not served", k)
		}
	}
}
