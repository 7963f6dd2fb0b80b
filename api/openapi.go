package api

import (
	"context"
	_ "embed"

	"github.com/cloudwego/hertz/pkg/app"
	"github.com/cloudwego/hertz/pkg/protocol/consts"
)

// openAPI is the OpenAPI 3 document of the admin API. The test suite
// checks every response it gets against it.
//
//go:embed openapi.json
var openAPI []byte

// OpenAPI returns the admin API's OpenAPI 3 document (JSON).
func OpenAPI() []byte { return append([]byte(nil), openAPI...) }

// serveOpenAPI serves the document without authentication: it holds no
// secrets, and tools load it before they are given a token.
func serveOpenAPI(ctx context.Context, c *app.RequestContext) {
	c.Data(consts.StatusOK, "application/json; charset=utf-8", openAPI)
}
