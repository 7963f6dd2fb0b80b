package api

import (
	"context"
	"slices"
	"strings"

	"github.com/cloudwego/hertz/pkg/app"
	"github.com/cloudwego/hertz/pkg/protocol/consts"
	"github.com/cloudwego/hertz/pkg/route"
)

// routes registers one listener's routes and remembers the methods of
// each path pattern, which hertz does not tell: with
// WithHandleMethodNotAllowed it runs the NoMethod handlers for a method a
// path does not take, and a 405 must list the methods it does take
// (Allow, RFC 9110 §15.5.6). Every GET route answers HEAD too (RFC 9110
// §9.1): the same handler, whose body hertz leaves out of a HEAD answer
// while keeping its status and headers (Content-Length, ETag).
//
// Patterns are static paths or end in a catch-all segment ("/*rest");
// hertz's ":param" segments are not matched here and are refused when
// registered.
type routes struct {
	patterns []*pattern
}

// pattern is one registered path and what it serves.
type pattern struct {
	path    string
	methods []string
	// all, when set, serves every method of this path, those hertz does
	// not route included: it says itself what is allowed where.
	all app.HandlerFunc
}

// router is where routes are registered: a *server.Hertz or a group of
// it (whose path is the prefix of its routes').
type router interface {
	Handle(method, path string, handlers ...app.HandlerFunc) route.IRoutes
	Any(path string, handlers ...app.HandlerFunc) route.IRoutes
	BasePath() string
}

// handle registers h for method on path under g, and for HEAD when
// method is GET.
func (rt *routes) handle(g router, method, path string, h ...app.HandlerFunc) {
	g.Handle(method, path, h...)
	p := rt.pattern(joinPath(g.BasePath(), path))
	p.methods = append(p.methods, method)
	if method == consts.MethodGet {
		g.Handle(consts.MethodHead, path, h...)
		p.methods = append(p.methods, consts.MethodHead)
	}
}

// handleAll registers h for every method on path under g: h answers 405
// itself, with the methods of the resource it finds under path.
func (rt *routes) handleAll(g router, path string, h app.HandlerFunc) {
	g.Any(path, h)
	rt.pattern(joinPath(g.BasePath(), path)).all = h
}

func (rt *routes) pattern(path string) *pattern {
	if strings.Contains(path, "/:") {
		panic("api: routes cannot match the parameter segment of " + path)
	}
	for _, p := range rt.patterns {
		if p.path == path {
			return p
		}
	}
	p := &pattern{path: path}
	rt.patterns = append(rt.patterns, p)
	return p
}

// match returns the pattern that path (a request's path, as hertz routes
// it) falls under, or nil.
func (rt *routes) match(path string) *pattern {
	for _, p := range rt.patterns {
		if p.path == path {
			return p
		}
	}
	for _, p := range rt.patterns {
		if i := strings.Index(p.path, "/*"); i >= 0 && strings.HasPrefix(path, p.path[:i+1]) {
			return p
		}
	}
	return nil
}

// noMethod answers a request whose method its path does not take: 405
// with Allow, or the path's own handler when it serves every method.
func (rt *routes) noMethod(ctx context.Context, c *app.RequestContext) {
	if unknownMethod(c) {
		return
	}
	p := rt.match(string(c.Path()))
	if p != nil && p.all != nil {
		p.all(ctx, c)
		return
	}
	if p != nil {
		c.Response.Header.Set(consts.HeaderAllow, strings.Join(p.methods, ", "))
	}
	writeError(c, consts.StatusMethodNotAllowed, "method_not_allowed", "method "+string(c.Method())+" not allowed on "+string(c.Path()))
}

// unknownMethod answers 501 to a request whose method the server does not
// know at all (RFC 9110 §15.6.2; one it knows that a resource does not
// take is 405) and reports whether it did.
func unknownMethod(c *app.RequestContext) bool {
	if slices.Contains(knownMethods, string(c.Method())) {
		return false
	}
	writeError(c, consts.StatusNotImplemented, "not_implemented", "method "+string(c.Method())+" is not implemented")
	return true
}

// knownMethods are RFC 9110's methods and PATCH (RFC 5789).
var knownMethods = []string{consts.MethodGet, consts.MethodHead, consts.MethodPost, consts.MethodPut, consts.MethodDelete,
	consts.MethodConnect, consts.MethodOptions, consts.MethodTrace, consts.MethodPatch}

func joinPath(base, path string) string {
	if base == "/" || base == "" {
		return path
	}
	return strings.TrimSuffix(base, "/") + path
}

// allowHead adds HEAD after GET in a resource's methods, for its Allow
// header: every GET answers HEAD.
func allowHead(methods []string) []string {
	if i := slices.Index(methods, consts.MethodGet); i >= 0 && !slices.Contains(methods, consts.MethodHead) {
		return slices.Insert(methods, i+1, consts.MethodHead)
	}
	return methods
}
