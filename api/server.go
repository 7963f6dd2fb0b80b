package api

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/cloudwego/hertz/pkg/app"
	"github.com/cloudwego/hertz/pkg/app/server"
	"github.com/cloudwego/hertz/pkg/common/config"
	"github.com/cloudwego/hertz/pkg/protocol/consts"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/plugin/guard"
)

// Engine is what the API asks of the push engine (*plugin.Engine).
type Engine interface {
	// Store keeps a deferred message under the operator policy.
	Store(ctx context.Context, m *plugin.Message) error
	// Registered reports a registration (Expires in the past: removal).
	Registered(ctx context.Context, r plugin.Registration) error
	// Unregistered reports a removed contact (empty: every contact).
	Unregistered(ctx context.Context, u plugin.Unregistration) error
	// PushNow pushes to the last known contact; plugin.ErrNotFound if none.
	PushNow(ctx context.Context, aor plugin.AOR) error
	// Active is the number of pushes queued or running on this instance.
	Active() int
	// Policy is the operator policy in force.
	Policy(ctx context.Context) (plugin.Policy, error)
	// UpdatePolicy changes the policy through the one in force: change
	// edits a copy of the stored one; the result is validated, stored and
	// applied. It returns the policy before and after.
	UpdatePolicy(ctx context.Context, who string, change func(*plugin.Policy) error) (old, updated plugin.Policy, err error)
}

var _ Engine = (*plugin.Engine)(nil)

// maxHeaderBytes bounds the header section of a hook or admin request.
const maxHeaderBytes = 16 << 10

// Role is what an admin API token may do.
type Role string

const (
	RoleAdmin  Role = "admin"  // read and write
	RoleViewer Role = "viewer" // read only
)

// Token is one admin API bearer token.
type Token struct {
	Name  string // who holds it: logged, never the token itself
	Token string
	Role  Role
}

// Config configures a Server.
type Config struct {
	// HooksListener and AdminListener are the bound sockets to serve. Taking
	// listeners rather than addresses lets the caller bind port 0 and learn
	// the port, and report a bind error before anything starts.
	HooksListener net.Listener
	AdminListener net.Listener

	// HooksTLS and AdminTLS, when not nil, serve that listener over TLS.
	HooksTLS *tls.Config
	AdminTLS *tls.Config

	// Store keeps the messages and settings; /readyz pings it. Required.
	Store plugin.Store
	// Engine takes hook events and the admin API's push requests.
	// Required.
	Engine Engine

	// HooksToken is the shared secret the proxy sends in the
	// X-Deferpush-Token header. Required.
	HooksToken string
	// HooksAllow, when not empty, refuses connections to the hooks
	// listener from other sources at their accept, before they count
	// against any bound: they are answered 403 forbidden (over TLS, just
	// closed), whatever they ask for, /healthz included.
	HooksAllow []netip.Prefix
	// HooksRateLimit is how many hook calls a second one source address
	// may make in the long run, HooksRateBurst how many at once (a token
	// bucket per address; IPv6 per /64). A call over it gets 429. Zero
	// HooksRateLimit: no limit; zero HooksRateBurst: the rate, rounded up.
	HooksRateLimit float64
	HooksRateBurst int
	// AORRules are the registrar's rules for comparing addresses of
	// record, applied to every AOR a hook or the admin API is given. The
	// zero value folds the user part's case.
	AORRules plugin.AORRules

	// HooksConns and AdminConns bound each listener's connections; Budget,
	// when set, bounds them together with the process's other listeners.
	// At a bound, a connection that never sent a request is closed to
	// make room, else the one idle longest, else one in the middle of a
	// request past guard.DefaultBusyGrace (past a quarter of it, one of
	// the source holding the most connections when the new one's holds
	// two fewer), as guard.Config says; a request counts from its first
	// byte until its answer is written. When none may go, the new
	// connection gets 503 and is closed. After the first request (see FirstRequestTimeout), hertz's
	// read timeout (30 s) and idle timeout (2 minutes) bound a
	// connection.
	HooksConns ConnLimits
	AdminConns ConnLimits
	Budget     *guard.Budget
	// FirstRequestTimeout bounds the wait for a new connection's first
	// request (header and body): hertz sets no deadline before it. Zero
	// means 10 s.
	FirstRequestTimeout time.Duration

	// AdminTokens are the admin API's bearer tokens. At least one.
	AdminTokens []Token

	// ShutdownTimeout bounds the graceful shutdown once Run's context ends.
	// Zero means 10 s.
	ShutdownTimeout time.Duration

	// MaxBodySize bounds request bodies on both listeners. Zero means 1 MiB.
	MaxBodySize int

	// Metrics is served at /metrics on the admin listener, with the
	// store's totals; give the same Metrics to the engine as its Observer.
	// Nil serves a fresh one without push observations.
	Metrics *Metrics

	// Logger receives request errors. Nil discards them.
	Logger *slog.Logger
}

// ConnLimits bounds the connections of one listener: Max at once, PerHost
// from one source address (IPv6: one /64). Zero means the defaults: 1024
// and 256 for the hooks, 256 and 64 for the admin API.
type ConnLimits struct {
	Max     int
	PerHost int
}

// Server serves the hooks and the admin API.
type Server struct {
	cfg       Config
	limiter   *guard.RateLimiter // nil: hooks not rate-limited
	hooks     *server.Hertz
	admin     *server.Hertz
	listeners []*trackingListener
}

// New returns a Server ready to Run.
func New(cfg Config) (*Server, error) {
	if cfg.HooksListener == nil || cfg.AdminListener == nil {
		return nil, errors.New("api: hooks and admin listeners are required")
	}
	if cfg.Store == nil || cfg.Engine == nil {
		return nil, errors.New("api: a store and an engine are required")
	}
	if cfg.HooksToken == "" || len(cfg.AdminTokens) == 0 {
		return nil, errors.New("api: a hooks token and an admin token are required")
	}
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = 10 * time.Second
	}
	if cfg.MaxBodySize == 0 {
		cfg.MaxBodySize = 1 << 20
	}
	if cfg.FirstRequestTimeout == 0 {
		cfg.FirstRequestTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg}
	if cfg.HooksRateLimit > 0 {
		s.limiter = guard.NewRateLimiter(cfg.HooksRateLimit, cfg.HooksRateBurst, time.Now)
	}
	hooks, admin := &routes{}, &routes{}
	s.hooks = s.newHertz("hooks", cfg.HooksListener, cfg.HooksTLS, withDefaults(cfg.HooksConns, 1024, 256), hooks)
	s.admin = s.newHertz("admin", cfg.AdminListener, cfg.AdminTLS, withDefaults(cfg.AdminConns, 256, 64), admin)
	for _, l := range []struct {
		h  *server.Hertz
		rt *routes
	}{{s.hooks, hooks}, {s.admin, admin}} {
		l.rt.handle(l.h, consts.MethodGet, "/healthz", s.healthz)
		l.rt.handle(l.h, consts.MethodGet, "/readyz", s.readyz)
	}
	s.routeHooks(s.hooks, hooks)
	s.routeAdmin(s.admin, admin)
	return s, nil
}

func withDefaults(l ConnLimits, max, perHost int) ConnLimits {
	if l.Max == 0 {
		l.Max = max
	}
	if l.PerHost == 0 {
		l.PerHost = perHost
	}
	return l
}

// newHertz builds one listener's server; rt is where its routes are
// registered, which its 405 answers read.
func (s *Server) newHertz(name string, ln net.Listener, tlsCfg *tls.Config, limits ConnLimits, rt *routes) *server.Hertz {
	gc := guard.Config{
		Name: name, MaxConns: limits.Max, MaxConnsPerHost: limits.PerHost,
		Budget: s.cfg.Budget, EvictIdle: true, BusyGrace: guard.DefaultBusyGrace, Logger: s.cfg.Logger,
	}
	if name == "hooks" && len(s.cfg.HooksAllow) > 0 {
		gc.Trusted, gc.OnlyTrusted = s.cfg.HooksAllow, true
	}
	if tlsCfg == nil {
		// A TLS client would not read a plain answer: it is just closed.
		gc.Refuse = refuseHTTP()
	}
	tl := newTrackingListener(guard.Listen(ln, gc), s.cfg.FirstRequestTimeout)
	s.listeners = append(s.listeners, tl)
	opts := []config.Option{
		server.WithListener(tl),
		// The standard transport serves any net.Listener and TLS; netpoll
		// would need its own listener. It is wrapped to refuse request
		// framing hertz would accept (framing.go).
		server.WithTransport(newFramingTransport(s.cfg.Logger, name == "hooks")),
		server.WithMaxRequestBodySize(s.cfg.MaxBodySize),
		// A hook or admin request's header section is a few hundred
		// octets (a browser's at the console a few KiB): hertz's default
		// (1 MiB) let each connection pin megabytes of read buffers before
		// any token is checked. Larger ones get 431.
		server.WithMaxHeaderBytes(maxHeaderBytes),
		server.WithExitWaitTime(s.cfg.ShutdownTimeout),
		server.WithReadTimeout(30 * time.Second),
		server.WithIdleTimeout(2 * time.Minute),
		server.WithDisablePrintRoute(true),
		server.WithHandleMethodNotAllowed(true),
		// A multipart body is no hook or admin body: refused 415 by the
		// handlers, not parsed (and answered in plain text) by hertz.
		server.WithDisablePreParseMultipartForm(true),
	}
	if tlsCfg != nil {
		opts = append(opts, server.WithTLS(tlsCfg))
	}
	h := server.New(opts...)
	h.Use(checkPath)
	h.NoRoute(func(ctx context.Context, c *app.RequestContext) {
		if unknownMethod(c) {
			return
		}
		writeError(c, consts.StatusNotFound, "not_found", "no such resource: "+string(c.Path()))
	})
	h.NoMethod(rt.noMethod)
	return h
}

// Run serves both listeners until ctx ends, then shuts both down within
// ShutdownTimeout. It returns nil after a clean shutdown, or the first
// error of a listener that failed.
func (s *Server) Run(ctx context.Context) error {
	errc := make(chan error, 2)
	var wg sync.WaitGroup
	for name, h := range map[string]*server.Hertz{"hooks": s.hooks, "admin": s.admin} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := h.Run(); err != nil {
				errc <- fmt.Errorf("%s listener: %w", name, err)
			}
		}()
	}
	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	var sg sync.WaitGroup
	for _, h := range []*server.Hertz{s.hooks, s.admin} {
		sg.Add(1)
		go func() {
			defer sg.Done()
			// A listener that already failed is not running: ignore that.
			_ = h.Shutdown(sctx)
		}()
	}
	// No new connections (Shutdown closes the listeners too; twice is
	// harmless), then idle keep-alive connections are told to go.
	for _, l := range s.listeners {
		_ = l.Listener.Close()
		l.expireReads()
	}
	sg.Wait()
	wg.Wait()
	return runErr
}

func (s *Server) healthz(ctx context.Context, c *app.RequestContext) {
	c.JSON(consts.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) readyz(ctx context.Context, c *app.RequestContext) {
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := s.cfg.Store.Ping(pctx); err != nil {
		s.cfg.Logger.Warn("not ready", "err", err)
		writeError(c, consts.StatusServiceUnavailable, "store_unavailable", "store does not answer: "+err.Error())
		return
	}
	c.JSON(consts.StatusOK, map[string]string{"status": "ready"})
}
