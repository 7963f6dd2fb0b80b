package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/netip"

	"github.com/deferpush/deferpush/adapters/ingress"
	"github.com/deferpush/deferpush/api"
	"github.com/deferpush/deferpush/cmd/internal/config"
	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/plugin/guard"
	"github.com/deferpush/deferpush/plugin/msrp"
	"github.com/deferpush/deferpush/plugin/push"
	"github.com/deferpush/deferpush/store"
)

// server is deferpush assembled from its parts, in the order of the
// seed's flow: the store, the SIP stack and MSRP listener, the pusher, the
// engine, the ingress, then the HTTP edge (hooks and admin API).
type server struct {
	cfg *config.Config
	log *slog.Logger

	tls     map[string]*tls.Config // by listener: hooks, admin, msrp
	budget  *guard.Budget          // the listeners' connections together
	closers []func()               // what to close, in the order opened
	store   *store.Redis
	stack   *ingress.Stack
	msrp    *msrp.Listener
	pusher  *push.Pusher
	metrics *api.Metrics
	engine  *plugin.Engine
	ingress *ingress.Ingress
	api     *api.Server
	hooksLn net.Listener
	adminLn net.Listener
}

// wire builds every part; on an error the caller closes what was opened.
func (s *server) wire(ctx context.Context) error {
	for _, step := range []func(context.Context) error{
		s.openStore, s.loadTLS, s.newBudget, s.openSIP, s.openMSRP, s.newPusher, s.newEngine, s.newIngress, s.newAPI,
	} {
		if err := step(ctx); err != nil {
			return err
		}
	}
	return nil
}

// close closes what wire opened, last first.
func (s *server) close() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
	s.closers = nil
}

// openStore connects to the configured Redis, or starts the embedded
// in-memory one when none is configured, and says so loudly.
func (s *server) openStore(ctx context.Context) error {
	var err error
	if s.cfg.Redis.URL == "" {
		s.log.Warn("no redis configured: using the embedded in-memory store; deferred messages do NOT survive a restart (set --redis or redis.url)")
		s.store, err = store.NewEmbedded(store.Config{Logger: s.log, AORRules: s.aorRules()})
	} else if s.store, err = store.New(store.Config{URL: s.cfg.Redis.URL, Logger: s.log, AORRules: s.aorRules(),
		MinReplicas: s.cfg.Redis.MinReplicas, ReplicaTimeout: s.cfg.Redis.ReplicaTimeout}); err != nil {
		err = fmt.Errorf("redis: %w", err)
	} else if perr := s.store.Ping(ctx); perr != nil {
		// Not fatal: /readyz reports the outage and the client reconnects.
		s.log.Warn("redis does not answer yet", "err", perr)
	}
	if err != nil {
		return err
	}
	s.closers = append(s.closers, func() { s.store.Close() })
	return nil
}

// loadTLS reads the certificates of the listeners that have them.
func (s *server) loadTLS(context.Context) error {
	s.tls = map[string]*tls.Config{}
	for _, l := range []struct{ name, cert, key string }{
		{"hooks", s.cfg.Hooks.TLSCert, s.cfg.Hooks.TLSKey},
		{"admin", s.cfg.Admin.TLSCert, s.cfg.Admin.TLSKey},
		{"msrp", s.cfg.MSRP.TLSCert, s.cfg.MSRP.TLSKey},
	} {
		c, err := loadTLS(l.cert, l.key)
		if err != nil {
			return fmt.Errorf("%s.tls_cert: %w", l.name, err)
		}
		s.tls[l.name] = c
	}
	return nil
}

// newBudget bounds the connections all listeners accept together by the
// process's open-file limit, less a reserve for what deferpush opens
// itself: a descriptor per push in progress (its MSRP connection), Redis's
// connection pool, the SIP client's connections, logs. A flood of idle
// connections then closes the longest idle of them, never a failed accept.
func (s *server) newBudget(context.Context) error {
	n := guard.FileBudget(fileReserve + s.cfg.Push.MaxConcurrent)
	s.budget = guard.NewBudget(n)
	if n > 0 {
		s.log.Debug("connection budget", "max", n)
	}
	return nil
}

// fileReserve is the descriptors kept for deferpush's own use besides one
// per concurrent push.
const fileReserve = 128

func (s *server) openSIP(context.Context) error {
	stack, err := ingress.NewStack(ingress.StackConfig{
		Listen: s.cfg.SIP.Listen, Advertise: s.cfg.SIP.Advertise,
		MaxConns: s.cfg.SIP.MaxConnections, MaxConnsPerHost: s.cfg.SIP.MaxConnectionsPerHost,
		IdleTimeout: s.cfg.SIP.IdleTimeout, RequestTimeout: s.cfg.SIP.RequestTimeout,
		Trusted: s.sipTrusted(), Budget: s.budget, Logger: s.log,
	})
	if err != nil {
		return err
	}
	s.stack = stack
	s.closers = append(s.closers, stack.Close)
	return nil
}

func (s *server) openMSRP(context.Context) error {
	host := s.cfg.MSRP.Advertise
	if host == "" {
		host, _, _ = net.SplitHostPort(s.cfg.MSRP.Listen)
	}
	ml, err := msrp.NewListener(msrp.ListenerConfig{
		Addr: s.cfg.MSRP.Listen, Host: host, TLS: s.tls["msrp"],
		MaxConns: s.cfg.MSRP.MaxConnections, MaxConnsPerHost: s.cfg.MSRP.MaxConnectionsPerHost,
		Budget: s.budget, Logger: s.log,
	})
	if err != nil {
		return fmt.Errorf("msrp listener: %w", err)
	}
	s.msrp = ml
	s.closers = append(s.closers, func() { ml.Close() })
	return nil
}

func (s *server) newPusher(context.Context) error {
	var trusted []netip.Prefix
	for _, c := range s.cfg.MSRP.TrustedRelays {
		trusted = append(trusted, netip.MustParsePrefix(c)) // validated with the config
	}
	var err error
	s.pusher, err = push.New(push.Config{
		Client:        s.stack.Client(),
		Contact:       s.stack.Contact(),
		OutboundProxy: s.cfg.SIP.OutboundProxy,
		MSRP:          s.msrp,
		ChunkSize:     s.cfg.MSRP.ChunkSize,
		MSRPTimeout:   s.cfg.MSRP.Timeout,
		TrustedRelays: trusted,
		Logger:        s.log,
	})
	return err
}

func (s *server) newEngine(context.Context) error {
	s.metrics = api.NewMetrics()
	// Notifications go to senders through the proxy, which delivers or
	// stores them; without one there is nowhere to send them.
	var notifier plugin.Notifier
	if s.cfg.SIP.OutboundProxy != "" {
		notifier = s.pusher
	}
	var err error
	s.engine, err = plugin.NewEngine(plugin.EngineConfig{
		Store:         s.store,
		Pusher:        s.pusher,
		MaxConcurrent: s.cfg.Push.MaxConcurrent,
		LockTTL:       s.cfg.Push.LockTTL,
		Observer:      s.metrics,
		Notifier:      notifier,
		// What a proxy that calls the store's library itself
		// (kamailio.cfg's REDIS_DIRECT) writes instead of the hooks.
		Events: s.store,
		Logger: s.log,
	})
	return err
}

func (s *server) newIngress(context.Context) error {
	in, err := ingress.New(ingress.Config{
		Engine:  s.engine,
		Client:  s.stack.Client(),
		Contact: s.stack.Contact(),
		MSRP:    s.msrp,
		// The hooks' body limit: what a sender may make deferpush hold
		// in reassembly, whatever the policy's max_message_size.
		MaxMessageSize: 1 << 20,
		AORRules:       s.aorRules(),
		Trust:          s.ingressTrust(),
		Logger:         s.log,
	})
	if err != nil {
		return err
	}
	s.ingress = in
	s.closers = append(s.closers, in.Close)
	s.stack.Route(s.pusher, in)
	return nil
}

// ingressTrust is whom the SIP ingress takes requests from.
func (s *server) ingressTrust() ingress.Trust {
	t := ingress.Trust{Off: !s.cfg.SIP.IngressOn(), Secret: s.cfg.SIP.IngressSecret}
	if t.Secret == "" {
		t.Secret = s.cfg.Hooks.Token // configured or generated by now
	}
	t.Sources = s.sipTrusted()
	if s.cfg.SIP.RateLimit > 0 {
		t.Limiter = guard.NewRateLimiter(float64(s.cfg.SIP.RateLimit), s.cfg.SIP.RateBurst, nil)
	}
	return t
}

// sipTrusted is sip.trusted_sources: the proxies the ingress takes
// requests from, and whose connections the SIP listener keeps first.
func (s *server) sipTrusted() []netip.Prefix {
	var ps []netip.Prefix
	for _, c := range s.cfg.SIP.TrustedSources {
		ps = append(ps, netip.MustParsePrefix(c)) // validated with the config
	}
	return ps
}

// newAPI binds the hooks and admin listeners and builds the HTTP edge.
func (s *server) newAPI(context.Context) error {
	var allow []netip.Prefix
	for _, c := range s.cfg.Hooks.AllowCIDRs {
		allow = append(allow, netip.MustParsePrefix(c)) // validated with the config
	}
	var err error
	if s.hooksLn, err = s.listen("hooks", s.cfg.Hooks.Listen); err != nil {
		return err
	}
	if s.adminLn, err = s.listen("admin", s.cfg.Admin.Listen); err != nil {
		return err
	}
	s.api, err = api.New(api.Config{
		HooksListener:   s.hooksLn,
		AdminListener:   s.adminLn,
		Store:           s.store,
		Engine:          s.engine,
		HooksTLS:        s.tls["hooks"],
		AdminTLS:        s.tls["admin"],
		HooksToken:      s.cfg.Hooks.Token,
		HooksAllow:      allow,
		HooksRateLimit:  float64(max(s.cfg.Hooks.RateLimit, 0)),
		HooksRateBurst:  s.cfg.Hooks.RateBurst,
		HooksConns:      api.ConnLimits{Max: s.cfg.Hooks.MaxConnections, PerHost: s.cfg.Hooks.MaxConnectionsPerHost},
		AdminConns:      api.ConnLimits{Max: s.cfg.Admin.MaxConnections, PerHost: s.cfg.Admin.MaxConnectionsPerHost},
		Budget:          s.budget,
		AdminTokens:     adminTokens(s.cfg.Admin),
		AORRules:        s.aorRules(),
		ShutdownTimeout: s.cfg.Shutdown.Timeout,
		Metrics:         s.metrics,
		Logger:          s.log,
	})
	return err
}

func (s *server) aorRules() plugin.AORRules {
	return plugin.AORRules{CaseSensitiveUser: s.cfg.AOR.CaseSensitiveUser}
}

func (s *server) listen(name, addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s listener: %w", name, err)
	}
	s.closers = append(s.closers, func() { ln.Close() })
	return ln, nil
}

func (s *server) logListening() {
	s.log.Info("hooks listening", "addr", s.hooksLn.Addr().String(), "tls", s.tls["hooks"] != nil)
	s.log.Info("admin api listening", "addr", s.adminLn.Addr().String(), "tls", s.tls["admin"] != nil)
	s.log.Info("sip listening", "addr", s.stack.Addr().String(), "transports", "udp,tcp", "contact", s.stack.Contact())
	s.log.Info("msrp listening", "uri", s.msrp.URI().String())
	s.log.Info("deferpush started", "version", versionString())
}
