package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/cloudwego/hertz/pkg/app"
	"github.com/cloudwego/hertz/pkg/app/server"
	"github.com/cloudwego/hertz/pkg/protocol/consts"

	"github.com/deferpush/deferpush/plugin"
)

// admin serves the operators' REST API (/v1/...), /metrics and the
// OpenAPI document on the admin listener.
type admin struct {
	store    plugin.Store
	engine   Engine
	log      *slog.Logger
	tokens   []adminToken
	metrics  app.HandlerFunc
	aorRules plugin.AORRules
	users    []userRoute
}

// adminToken is a configured bearer token; only its SHA-256 is kept, so
// that comparisons run over equal lengths in constant time.
type adminToken struct {
	sum  [sha256.Size]byte
	name string
	role Role
}

// may reports whether the token's role allows what need requires.
func (t *adminToken) may(need Role) bool {
	return t.role == RoleAdmin || need == RoleViewer && t.role == RoleViewer
}

// adminHandler serves one admin request for an authenticated caller.
type adminHandler func(ctx context.Context, c *app.RequestContext, who *adminToken) error

// adminTimeout bounds an admin request's work, its store calls above all:
// while Redis stalls (a long command, a fork, CLIENT PAUSE) or cannot be
// reached, the request is answered 503 unavailable at this deadline, not
// when Redis wakes or go-redis gives up. It is the Redis client's read
// timeout, the longest a hook's store call waits too.
const adminTimeout = 3 * time.Second

// bounded runs h on a copy of c within adminTimeout, and answers what h
// answered; past the deadline it returns the context's error (which fail
// answers 503 unavailable) without waiting for h. go-redis does not read
// a context's deadline on its sockets (a command waits for its reply
// until the client's read timeout, a new connection's handshake until
// its dial timeout, then it tries again), so a context alone would not
// bound the wait. h goes on alone with its copy, which nothing reads, and
// ends when go-redis gives up; a write it sent may still be done, as a
// write sent to a Redis that stalls always may.
func bounded(ctx context.Context, c *app.RequestContext, h func(context.Context, *app.RequestContext) error) error {
	ctx, cancel := context.WithTimeout(ctx, adminTimeout)
	cc := c.Copy()
	done := make(chan error, 1)
	go func() {
		defer cancel()
		done <- h(ctx, cc)
	}()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		select {
		case err = <-done: // both at once: the answer
		default:
			return ctx.Err()
		}
	}
	cc.Response.CopyTo(&c.Response)
	return err
}

// routeAdmin registers the admin API (/v1/...), /metrics, the OpenAPI
// document and the console.
func (s *Server) routeAdmin(h *server.Hertz, rt *routes) {
	a := &admin{store: s.cfg.Store, engine: s.cfg.Engine, log: s.cfg.Logger, aorRules: s.cfg.AORRules}
	for _, t := range s.cfg.AdminTokens {
		a.tokens = append(a.tokens, adminToken{sum: sha256.Sum256([]byte(t.Token)), name: t.Name, role: t.Role})
	}
	a.metrics = s.cfg.Metrics.handler(s.cfg.Store, s.cfg.Engine)
	a.users = a.userRoutes()

	const get, put, patch = consts.MethodGet, consts.MethodPut, consts.MethodPatch
	rt.handle(h, get, "/v1/openapi.json", serveOpenAPI)
	// Not bounded: a scrape bounds its store query itself, and answers
	// deferpush_store_up 0 rather than failing while Redis does not answer.
	rt.handle(h, get, "/metrics", a.serve(RoleViewer, func(ctx context.Context, c *app.RequestContext, _ *adminToken) error {
		if done, err := readConditions(c).read(c, "metrics", ""); done || err != nil {
			return err
		}
		a.metrics(ctx, c)
		return nil
	}))
	rt.handle(h, get, "/v1/policy", a.handle(RoleViewer, a.getPolicy))
	rt.handle(h, put, "/v1/policy", a.handle(RoleAdmin, a.putPolicy))
	rt.handle(h, patch, "/v1/policy", a.handle(RoleAdmin, a.patchPolicy))
	rt.handle(h, get, "/v1/stats", a.handle(RoleViewer, a.stats))
	rt.handle(h, get, "/v1/whoami", a.handle(RoleViewer, a.whoami))
	routeConsole(h, rt)
	// The AOR in /v1/users/{aor}/... holds ':' and '@', and may arrive
	// %-escaped (even a '/' of its user part as %2F): one catch-all route
	// for every method, and the rest of the path is parsed from the raw
	// request path, which also says which methods each resource takes.
	rt.handleAll(h, "/v1/users/*rest", a.serveUsers)
}

// handle is serve with h bounded.
func (a *admin) handle(need Role, h adminHandler) app.HandlerFunc {
	return a.serve(need, func(ctx context.Context, c *app.RequestContext, who *adminToken) error {
		return bounded(ctx, c, func(ctx context.Context, c *app.RequestContext) error { return h(ctx, c, who) })
	})
}

// serve authenticates the caller, checks its role and runs h.
func (a *admin) serve(need Role, h adminHandler) app.HandlerFunc {
	return func(ctx context.Context, c *app.RequestContext) {
		who, err := a.authenticate(c)
		if err == nil && !who.may(need) {
			err = errForbidden("token " + who.name + " has the " + string(who.role) + " role; this needs " + string(need))
		}
		if err == nil {
			err = h(ctx, c, who)
		}
		if err != nil {
			a.fail(ctx, c, err)
		}
	}
}

// authenticate finds the caller's bearer token. Every configured token is
// compared, in constant time, whatever matched before.
func (a *admin) authenticate(c *app.RequestContext) (*adminToken, error) {
	scheme, cred, _ := strings.Cut(string(c.Request.Header.Peek("Authorization")), " ")
	cred = strings.TrimSpace(cred)
	if !strings.EqualFold(scheme, "Bearer") || cred == "" {
		return nil, errUnauthorized("an Authorization: Bearer <token> header is required")
	}
	sum := sha256.Sum256([]byte(cred))
	var found *adminToken
	for i := range a.tokens {
		if subtle.ConstantTimeCompare(sum[:], a.tokens[i].sum[:]) == 1 {
			found = &a.tokens[i]
		}
	}
	if found == nil {
		return nil, errUnauthorized("the bearer token is not valid")
	}
	return found, nil
}

// reply writes v as JSON with status.
func reply(c *app.RequestContext, status int, v any) error {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false) // messages quote <token>, AORs hold '&'
	if err := enc.Encode(v); err != nil {
		return err
	}
	c.Data(status, "application/json; charset=utf-8", bytes.TrimSuffix(b.Bytes(), []byte("\n")))
	return nil
}

// noQuery refuses query parameters other than allowed (none: the
// endpoint takes none), and one given twice (which one would count is
// for each reader to guess).
func noQuery(c *app.RequestContext, allowed ...string) error {
	var bad, problem string
	var seen []string
	c.QueryArgs().VisitAll(func(k, _ []byte) {
		switch {
		case bad != "":
		case !slices.Contains(allowed, string(k)):
			bad, problem = string(k), "unknown parameter"
		case slices.Contains(seen, string(k)):
			bad, problem = string(k), "given twice"
		default:
			seen = append(seen, string(k))
		}
	})
	if bad != "" {
		return errInvalidQuery(bad, problem)
	}
	if namelessValue(c.URI().QueryString()) {
		return &apiError{status: consts.StatusBadRequest, code: "invalid_query",
			msg: "query: a value without a parameter name (\"=value\")"}
	}
	return nil
}

// namelessValue reports whether a raw query string holds a value without
// a name ("=1"), which hertz's parser drops without a word. Empty
// segments ("a=1&&b=2", a trailing "&" or a lone "=") carry nothing and
// pass.
func namelessValue(q []byte) bool {
	for seg := range bytes.SplitSeq(q, []byte("&")) {
		if len(seg) > 1 && seg[0] == '=' {
			return true
		}
	}
	return false
}

// ---- /v1/policy ----

func (a *admin) getPolicy(ctx context.Context, c *app.RequestContext, _ *adminToken) error {
	if err := noQuery(c); err != nil {
		return err
	}
	p, err := a.engine.Policy(ctx)
	if err != nil {
		return err
	}
	tag := etagOf(p)
	if done, err := readConditions(c).read(c, "policy", tag); done || err != nil {
		return err
	}
	c.Response.Header.Set("ETag", tag)
	return reply(c, consts.StatusOK, p)
}

// putPolicy replaces the policy: every field must be given, so that a
// client written against an older document cannot reset a newer field
// to a zero value by leaving it out.
func (a *admin) putPolicy(ctx context.Context, c *app.RequestContext, who *adminToken) error {
	if err := noQuery(c); err != nil {
		return err
	}
	obj, err := readObject(c, mimeJSON)
	if err != nil {
		return err
	}
	return a.setPolicy(ctx, c, who, func(p *plugin.Policy) error {
		*p = plugin.Policy{}
		return setFields(p, obj, plugin.DefaultPolicy(), replaceAll)
	})
}

// patchPolicy applies a JSON merge patch (RFC 7396): given fields change,
// null resets a field to its default, others stay.
func (a *admin) patchPolicy(ctx context.Context, c *app.RequestContext, who *adminToken) error {
	if err := noQuery(c); err != nil {
		return err
	}
	obj, err := readObject(c, mimeMergePatch, mimeJSON)
	if err != nil {
		return err
	}
	return a.setPolicy(ctx, c, who, func(p *plugin.Policy) error {
		return setFields(p, obj, plugin.DefaultPolicy(), mergePatch)
	})
}

// setPolicy writes a change through the engine's policy in force (the
// store, atomically, then this instance at once; other instances through
// the store), if the policy is still the one the request's If-Match
// names and not one its If-None-Match names.
func (a *admin) setPolicy(ctx context.Context, c *app.RequestContext, who *adminToken, change func(*plugin.Policy) error) error {
	cs := readConditions(c)
	old, p, err := a.engine.UpdatePolicy(ctx, who.name, func(p *plugin.Policy) error {
		if err := cs.write("policy", true, etagOf(*p)); err != nil {
			return err
		}
		if err := change(p); err != nil {
			return err
		}
		p.Encapsulation = foldMediaType(p.Encapsulation)
		return nil
	})
	if err != nil {
		return err
	}
	c.Response.Header.Set("ETag", etagOf(p))
	a.log.InfoContext(ctx, "policy changed", "changed_by", who.name, "fields", changedFields(old, p),
		"push_enabled", p.PushEnabled, "store_enabled", p.StoreEnabled)
	return reply(c, consts.StatusOK, p)
}

// foldMediaType lower-cases an encapsulation that is a media type
// ("MESSAGE/SIP"): type and subtype compare without case (RFC 9110
// §8.3.1), and the policy keeps the canonical form. The keyword "auto"
// matches exactly, as every other keyword of the policy does.
func foldMediaType(e plugin.Encapsulation) plugin.Encapsulation {
	if strings.Contains(string(e), "/") {
		return plugin.Encapsulation(strings.ToLower(string(e)))
	}
	return e
}

// ---- /v1/stats ----

// statsView is GET /v1/stats: the store-wide totals and this instance's
// pushes.
type statsView struct {
	plugin.Totals
	PushesInProgress int `json:"pushes_in_progress"`
}

func (a *admin) stats(ctx context.Context, c *app.RequestContext, _ *adminToken) error {
	if err := noQuery(c); err != nil {
		return err
	}
	if done, err := readConditions(c).read(c, "statistics", ""); done || err != nil {
		return err
	}
	t, err := a.store.Totals(ctx)
	if err != nil {
		return err
	}
	return reply(c, consts.StatusOK, statsView{Totals: t, PushesInProgress: a.engine.Active()})
}

// ---- /v1/users/{aor}/... ----

// userRoute is one method on one resource under /v1/users/{aor}.
type userRoute struct {
	method string
	path   []string // segments after the AOR; "{id}" matches any one
	role   Role
	handle func(ctx context.Context, c *app.RequestContext, u userRequest) error
}

// userRequest is a parsed request on a user's resource.
type userRequest struct {
	aor plugin.AOR
	id  string // the {id} segment, if the route has one
	who *adminToken
}

func (a *admin) userRoutes() []userRoute {
	return []userRoute{
		{consts.MethodGet, []string{"settings"}, RoleViewer, a.getSettings},
		{consts.MethodPut, []string{"settings"}, RoleAdmin, a.putSettings},
		{consts.MethodDelete, []string{"settings"}, RoleAdmin, a.deleteSettings},
		{consts.MethodGet, []string{"messages"}, RoleViewer, a.getMessages},
		{consts.MethodDelete, []string{"messages"}, RoleAdmin, a.deleteMessages},
		{consts.MethodGet, []string{"messages", "{id}"}, RoleViewer, a.getMessage},
		{consts.MethodDelete, []string{"messages", "{id}"}, RoleAdmin, a.deleteMessage},
		{consts.MethodGet, []string{"dead-letters"}, RoleViewer, a.getDeadLetters},
		{consts.MethodPost, []string{"dead-letters", "requeue"}, RoleAdmin, a.requeue},
		{consts.MethodPost, []string{"push"}, RoleAdmin, a.push},
	}
}

// match reports whether segs is r's path, and the {id} it holds.
func (r userRoute) match(segs []string) (id string, ok bool) {
	if len(segs) != len(r.path) {
		return "", false
	}
	for i, p := range r.path {
		switch {
		case p == "{id}" && segs[i] != "":
			id = segs[i]
		case p != segs[i]:
			return "", false
		}
	}
	return id, true
}

func (a *admin) serveUsers(ctx context.Context, c *app.RequestContext) {
	who, err := a.authenticate(c)
	if err == nil {
		err = bounded(ctx, c, func(ctx context.Context, c *app.RequestContext) error { return a.routeUser(ctx, c, who) })
	}
	if err != nil {
		a.fail(ctx, c, err)
	}
}

func (a *admin) routeUser(ctx context.Context, c *app.RequestContext, who *adminToken) error {
	raw := string(c.Request.URI().PathOriginal())
	rest, ok := strings.CutPrefix(raw, "/v1/users/")
	rawAOR, sub, _ := strings.Cut(rest, "/")
	if !ok || rawAOR == "" || sub == "" {
		return errNoResource(raw)
	}
	segs := strings.Split(sub, "/")
	for i, s := range segs {
		u, err := url.PathUnescape(s)
		if err != nil {
			return errNoResource(raw)
		}
		segs[i] = u
	}
	method := string(c.Method())
	var allowed []string
	for _, r := range a.users {
		id, ok := r.match(segs)
		if !ok {
			continue
		}
		allowed = append(allowed, r.method)
		// HEAD is GET without the body (hertz leaves it out).
		if r.method != method && (method != consts.MethodHead || r.method != consts.MethodGet) {
			continue
		}
		if !who.may(r.role) {
			return errForbidden("token " + who.name + " has the " + string(who.role) + " role; this needs " + string(r.role))
		}
		s, err := url.PathUnescape(rawAOR)
		if err != nil {
			return errInvalidAOR(err)
		}
		aor, err := a.aorRules.Parse(s)
		if err != nil {
			return errInvalidAOR(err)
		}
		// A message id is a ULID, Crockford base32: its letters are
		// read in either case.
		return r.handle(ctx, c, userRequest{aor: aor, id: strings.ToUpper(id), who: who})
	}
	if len(allowed) == 0 {
		return errNoResource(raw)
	}
	c.Response.Header.Set(consts.HeaderAllow, strings.Join(allowHead(allowed), ", "))
	return errMethod(method, raw)
}
