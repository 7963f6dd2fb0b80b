package api

import (
	"context"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/deferpush/deferpush/api/console"
)

// TestOpenAPIDocument: the document is valid OpenAPI 3 and describes
// every admin route the server registers, and nothing else.
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
	for _, r := range s.admin.Routes() {
		// The console's page and files are no part of the API.
		if strings.HasPrefix(r.Path, "/v1/users/") || r.Path == "/" || strings.HasPrefix(r.Path, console.Prefix) {
			continue
		}
		served[r.Method+" "+r.Path] = true
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
