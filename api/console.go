package api

import (
	"context"

	"github.com/cloudwego/hertz/pkg/app"
	"github.com/cloudwego/hertz/pkg/app/server"
	"github.com/cloudwego/hertz/pkg/protocol/consts"

	"github.com/deferpush/deferpush/api/console"
)

// routeConsole serves the operators' console (package console) at / and
// its files under /console/. They need no token: they hold no secret; the
// page asks for the token and sends it to /v1 in the Authorization header
// only.
func routeConsole(h *server.Hertz, rt *routes) {
	rt.handle(h, consts.MethodGet, "/", serveConsole)
	rt.handle(h, consts.MethodGet, console.Prefix+"*file", serveConsole)
}

func serveConsole(ctx context.Context, c *app.RequestContext) {
	f, ok := console.Lookup(string(c.Path()))
	if !ok {
		writeError(c, consts.StatusNotFound, "not_found", "no such resource: "+string(c.Path()))
		return
	}
	for _, kv := range console.Headers() {
		c.Response.Header.Set(kv[0], kv[1])
	}
	c.Data(consts.StatusOK, f.ContentType, f.Body)
}

// whoamiView answers GET /v1/whoami: the caller's token name and role, so
// that the console shows a viewer read-only controls.
type whoamiView struct {
	Name string `json:"name"`
	Role Role   `json:"role"`
}

func (a *admin) whoami(ctx context.Context, c *app.RequestContext, who *adminToken) error {
	if err := noQuery(c); err != nil {
		return err
	}
	if done, err := readConditions(c).read(c, "caller's identity", ""); done || err != nil {
		return err
	}
	return reply(c, consts.StatusOK, whoamiView{Name: who.name, Role: who.role})
}
