package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/deferpush/deferpush/api"
	"github.com/deferpush/deferpush/plugin"
)

// Admin API bearer tokens of the test servers.
const (
	adminToken  = "admin-token-0123456789abcdef"
	viewerToken = "viewer-token-0123456789abcdef"
)

// contract checks every admin API response a test gets against the
// OpenAPI document the server serves, and remembers which operation
// answered with which status, so a test can require that every documented
// response was seen.
type contract struct {
	doc    *openapi3.T
	router routers.Router

	mu   sync.Mutex
	seen map[string]bool // "operationId status"
}

func newContract(t testing.TB) *contract {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromData(api.OpenAPI())
	if err != nil {
		t.Fatalf("load openapi.json: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("openapi.json is not valid OpenAPI 3: %v", err)
	}
	doc.Servers = nil // match requests to any test server
	r, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	return &contract{doc: doc, router: r, seen: map[string]bool{}}
}

// adminResponse is what an admin API request got.
type adminResponse struct {
	Status int
	Header http.Header
	Body   []byte
}

// JSON decodes the body into v, failing the test if it is not JSON.
func (r adminResponse) JSON(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("response %d %s is not JSON: %v", r.Status, r.Body, err)
	}
}

// ErrorCode returns error.code and error.field of an error response.
func (r adminResponse) ErrorCode(t testing.TB) (code, field string) {
	t.Helper()
	var e struct {
		Error struct{ Code, Field string }
	}
	r.JSON(t, &e)
	return e.Error.Code, e.Error.Field
}

// adminClient sends requests to one admin listener, checking each
// response against the contract.
type adminClient struct {
	base string
	c    *contract
}

// do sends a request; body nil means none. contentType "" sends none.
func (a adminClient) do(t testing.TB, method, path, token, contentType string, body []byte) adminResponse {
	t.Helper()
	return a.doWith(t, method, path, token, contentType, body, nil)
}

// doWith is do with more request headers.
func (a adminClient) doWith(t testing.TB, method, path, token, contentType string, body []byte, header map[string]string) adminResponse {
	t.Helper()
	r, err := a.send(t, method, path, token, contentType, body, header)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// send is doWith for a goroutine other than the test's: a request that
// gets no answer is an error, not the end of the test.
func (a adminClient) send(t testing.TB, method, path, token, contentType string, body []byte, header map[string]string) (adminResponse, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, rd)
	if err != nil {
		return adminResponse{}, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return adminResponse{}, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return adminResponse{}, fmt.Errorf("%s %s: %w", method, path, err)
	}
	a.c.check(t, req, res, b)
	return adminResponse{Status: res.StatusCode, Header: res.Header, Body: b}, nil
}

// check validates one response against the document. A request the
// document has no operation for (an unknown path, a method a path does
// not take) must still get the error shape.
func (c *contract) check(t testing.TB, req *http.Request, res *http.Response, body []byte) {
	t.Helper()
	route, params, err := c.router.FindRoute(req)
	if err != nil {
		if res.StatusCode != http.StatusNotFound && res.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("contract: %s %s is not in openapi.json but answered %d", req.Method, req.URL.Path, res.StatusCode)
		}
		// components/responses/MethodNotAllowed: any path, with Allow.
		if res.StatusCode == http.StatusMethodNotAllowed && res.Header.Get("Allow") == "" {
			t.Errorf("contract: %s %s: 405 without Allow", req.Method, req.URL.Path)
		}
		var v any
		if err := json.Unmarshal(body, &v); err != nil {
			t.Errorf("contract: %s %s: error body %q is not JSON", req.Method, req.URL.Path, body)
			return
		}
		if err := c.doc.Components.Schemas["Error"].Value.VisitJSON(v); err != nil {
			t.Errorf("contract: %s %s: %d body is not the Error schema: %v\n%s", req.Method, req.URL.Path, res.StatusCode, err, body)
		}
		return
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{
			Request: req, PathParams: params, Route: route,
			Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc},
		},
		Status:  res.StatusCode,
		Header:  res.Header,
		Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
	}
	in.SetBodyBytes(body)
	if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
		t.Errorf("contract: %s %s -> %d violates openapi.json: %v\nbody: %s", req.Method, req.URL.Path, res.StatusCode, err, body)
	}
	c.mu.Lock()
	c.seen[fmt.Sprintf("%s %d", route.Operation.OperationID, res.StatusCode)] = true
	c.mu.Unlock()
}

// unseen lists the documented (operation, status) pairs no response
// showed, except those in skip.
func (c *contract) unseen(skip ...string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, item := range c.doc.Paths.Map() {
		for _, op := range item.Operations() {
			for status := range op.Responses.Map() {
				k := op.OperationID + " " + status
				if !c.seen[k] && !slices.Contains(skip, k) {
					out = append(out, k)
				}
			}
		}
	}
	slices.Sort(out)
	return out
}

// startAdmin serves the admin API (and hooks, unused) of core c on free
// loopback ports with the test tokens, and returns a client for it.
func startAdmin(t testing.TB, c *core, con *contract) adminClient {
	t.Helper()
	return startAdminOn(t, c, con, c.st)
}

// startAdminOn is startAdmin with the API on st, which stands for c's
// store.
func startAdminOn(t testing.TB, c *core, con *contract, st plugin.Store) adminClient {
	t.Helper()
	var lns []net.Listener
	for range 2 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
	}
	srv, err := api.New(api.Config{
		HooksListener: lns[0], AdminListener: lns[1],
		Store: st, Engine: c.eng, HooksToken: "hooks-token-0123456789abcdef",
		AdminTokens: []api.Token{
			{Name: "ops", Token: adminToken, Role: api.RoleAdmin},
			{Name: "noc", Token: viewerToken, Role: api.RoleViewer},
		},
		Logger: testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("admin server: %v", err)
		}
	})
	a := adminClient{base: "http://" + lns[1].Addr().String(), c: con}
	waitFor(t, 5*time.Second, "admin listener", func() bool {
		res, err := http.Get(a.base + "/healthz")
		if err == nil {
			res.Body.Close()
		}
		return err == nil && res.StatusCode == 200
	})
	return a
}

// mustJSON marshals v for a request body.
func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// escapeAOR is the AOR as a client that %-escapes path segments sends it.
func escapeAOR(aor string) string {
	return strings.NewReplacer(":", "%3A", "@", "%40", "+", "%2B").Replace(aor)
}

// docBytes is the document the server embeds.
func (c *contract) docBytes() []byte { return api.OpenAPI() }
