package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/deferpush/deferpush/adapters/ingress"
	"github.com/deferpush/deferpush/api"
	"github.com/deferpush/deferpush/cmd/internal/config"
	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/plugin/msrp"
	"github.com/deferpush/deferpush/plugin/push"
	"github.com/deferpush/deferpush/store"
)

// serve runs deferpush until ctx ends (SIGINT or SIGTERM), then shuts down
// within cfg.Shutdown.Timeout.
func serve(ctx context.Context, cfg *config.Config, path string, stderr io.Writer) error {
	log := newLogger(cfg.Log, stderr)
	routeHertzLogs(log)
	// sipgo's transport and transaction layers log through a global.
	sip.SetDefaultLogger(log.With("component", "sip"))
	if path != "" {
		log.Info("configuration loaded", "file", path)
	}

	// Secrets nobody configured are generated and shown once: the operator
	// copies them into the proxy's script and their API client.
	if cfg.Hooks.Token == "" {
		cfg.Hooks.Token = rand.Text()
		fmt.Fprintf(stderr, "deferpush: no hooks.token configured; generated for this run (shown once): %s\n", cfg.Hooks.Token)
	}
	if cfg.Admin.Token == "" && len(cfg.Admin.Tokens) == 0 {
		cfg.Admin.Token = rand.Text()
		fmt.Fprintf(stderr, "deferpush: no admin token configured; generated for this run (shown once): %s\n", cfg.Admin.Token)
	}

	st, err := openStore(ctx, cfg.Redis, log)
	if err != nil {
		return err
	}
	defer st.Close()

	// Until everything runs, a failure closes what was opened so far.
	var opened []func()
	fail := func(err error) error {
		for i := len(opened) - 1; i >= 0; i-- {
			opened[i]()
		}
		return err
	}

	stack, err := ingress.NewStack(ingress.StackConfig{Listen: cfg.SIP.Listen, Advertise: cfg.SIP.Advertise, Logger: log})
	if err != nil {
		return err
	}
	opened = append(opened, stack.Close)
	msrpHost := cfg.MSRP.Advertise
	if msrpHost == "" {
		msrpHost, _, _ = net.SplitHostPort(cfg.MSRP.Listen)
	}
	tlsCfgs := map[string]*tls.Config{}
	for _, l := range []struct{ name, cert, key string }{
		{"hooks", cfg.Hooks.TLSCert, cfg.Hooks.TLSKey},
		{"admin", cfg.Admin.TLSCert, cfg.Admin.TLSKey},
		{"msrp", cfg.MSRP.TLSCert, cfg.MSRP.TLSKey},
	} {
		if tlsCfgs[l.name], err = loadTLS(l.cert, l.key); err != nil {
			return fail(fmt.Errorf("%s.tls_cert: %w", l.name, err))
		}
	}
	ml, err := msrp.NewListener(msrp.ListenerConfig{
		Addr: cfg.MSRP.Listen, Host: msrpHost, TLS: tlsCfgs["msrp"],
		MaxConns: cfg.MSRP.MaxConnections, MaxConnsPerHost: cfg.MSRP.MaxConnectionsPerHost,
		Logger: log,
	})
	if err != nil {
		return fail(fmt.Errorf("msrp listener: %w", err))
	}
	opened = append(opened, func() { ml.Close() })
	var trusted []netip.Prefix
	for _, c := range cfg.MSRP.TrustedRelays {
		trusted = append(trusted, netip.MustParsePrefix(c)) // validated with the config
	}
	pusher, err := push.New(push.Config{
		Client:        stack.Client(),
		Contact:       stack.Contact(),
		OutboundProxy: cfg.SIP.OutboundProxy,
		MSRP:          ml,
		ChunkSize:     cfg.MSRP.ChunkSize,
		MSRPTimeout:   cfg.MSRP.Timeout,
		TrustedRelays: trusted,
		Logger:        log,
	})
	if err != nil {
		return fail(err)
	}
	metrics := api.NewMetrics()
	eng, err := plugin.NewEngine(plugin.EngineConfig{
		Store:         st,
		Pusher:        pusher,
		MaxConcurrent: cfg.Push.MaxConcurrent,
		LockTTL:       cfg.Push.LockTTL,
		Observer:      metrics,
		Logger:        log,
	})
	if err != nil {
		return fail(err)
	}
	in, err := ingress.New(ingress.Config{
		Engine:  eng,
		Client:  stack.Client(),
		Contact: stack.Contact(),
		MSRP:    ml,
		// The hooks' body limit: what a sender may make deferpush hold
		// in reassembly, whatever the policy's max_message_size.
		MaxMessageSize: 1 << 20,
		Logger:         log,
	})
	if err != nil {
		return fail(err)
	}
	defer in.Close()
	stack.Route(pusher, in)

	var allow []netip.Prefix
	for _, c := range cfg.Hooks.AllowCIDRs {
		allow = append(allow, netip.MustParsePrefix(c)) // validated with the config
	}
	hooksLn, err := net.Listen("tcp", cfg.Hooks.Listen)
	if err != nil {
		return fail(fmt.Errorf("hooks listener: %w", err))
	}
	opened = append(opened, func() { hooksLn.Close() })
	adminLn, err := net.Listen("tcp", cfg.Admin.Listen)
	if err != nil {
		return fail(fmt.Errorf("admin listener: %w", err))
	}
	opened = append(opened, func() { adminLn.Close() })
	srv, err := api.New(api.Config{
		HooksListener:   hooksLn,
		AdminListener:   adminLn,
		Store:           st,
		Engine:          eng,
		HooksTLS:        tlsCfgs["hooks"],
		AdminTLS:        tlsCfgs["admin"],
		HooksToken:      cfg.Hooks.Token,
		HooksAllow:      allow,
		HooksRateLimit:  float64(max(cfg.Hooks.RateLimit, 0)),
		HooksRateBurst:  cfg.Hooks.RateBurst,
		AdminTokens:     adminTokens(cfg.Admin),
		ShutdownTimeout: cfg.Shutdown.Timeout,
		Metrics:         metrics,
		Logger:          log,
	})
	if err != nil {
		return fail(err)
	}
	log.Info("hooks listening", "addr", hooksLn.Addr().String(), "tls", tlsCfgs["hooks"] != nil)
	log.Info("admin api listening", "addr", adminLn.Addr().String(), "tls", tlsCfgs["admin"] != nil)
	log.Info("sip listening", "addr", stack.Addr().String(), "transports", "udp,tcp", "contact", stack.Contact())
	log.Info("msrp listening", "uri", ml.URI().String())
	log.Info("deferpush started", "version", versionString())

	// Everything runs until ctx ends, then stops in reverse order: the
	// engine first. The store closes only after every component returned.
	return runAll(ctx, log, cfg.Shutdown.Timeout,
		component{"api", srv.Run},
		component{"sip", stack.Run},
		component{"msrp", ml.Run},
		component{"engine", eng.Run},
	)
}

// component is a long-running part of the server.
type component struct {
	name string
	run  func(ctx context.Context) error
}

// runAll runs every component until ctx ends or one fails, then stops
// them one at a time in reverse order, each waiting for the one before:
// the engine (listed last) cancels its pushes while SIP and MSRP still
// carry their BYEs and put their messages back, and nothing is cut by a
// listener closing under it. All of it takes at most timeout (plus a
// grace second).
func runAll(ctx context.Context, log *slog.Logger, timeout time.Duration, cs ...component) error {
	type running struct {
		cancel context.CancelFunc
		done   chan error
	}
	rs := make([]running, len(cs))
	failed := make(chan struct{}, len(cs))
	for i, c := range cs {
		cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		rs[i] = running{cancel: cancel, done: make(chan error, 1)}
		go func() {
			err := c.run(cctx)
			rs[i].done <- err
			failed <- struct{}{}
		}()
	}
	select {
	case <-ctx.Done():
	case <-failed: // a component ended by itself: stop the rest
	}
	deadline := time.After(timeout + time.Second)
	var first error
	for i := len(cs) - 1; i >= 0; i-- {
		rs[i].cancel()
		select {
		case err := <-rs[i].done:
			if err != nil && !errors.Is(err, context.Canceled) && first == nil {
				first = fmt.Errorf("%s: %w", cs[i].name, err)
				log.Error("component failed", "component", cs[i].name, "err", err)
			}
		case <-deadline:
			for _, r := range rs[:i] {
				r.cancel()
			}
			return fmt.Errorf("shutdown: %s and %d more still running after %v", cs[i].name, i, timeout)
		}
	}
	log.Info("deferpush stopped")
	return first
}

// openStore connects to the configured Redis, or starts the embedded
// in-memory one when none is configured, and says so loudly.
func openStore(ctx context.Context, cfg config.RedisConfig, log *slog.Logger) (*store.Redis, error) {
	if cfg.URL == "" {
		log.Warn("no redis configured: using the embedded in-memory store; deferred messages do NOT survive a restart (set --redis or redis.url)")
		return store.NewEmbedded(store.Config{Logger: log})
	}
	st, err := store.New(store.Config{URL: cfg.URL, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("redis: %w", err)
	}
	if err := st.Ping(ctx); err != nil {
		// Not fatal: /readyz reports the outage and the client reconnects.
		log.Warn("redis does not answer yet", "err", err)
	}
	return st, nil
}

// loadTLS returns the TLS configuration of a listener serving the
// certificate and key in these PEM files, or nil when neither is set.
func loadTLS(certFile, keyFile string) (*tls.Config, error) {
	if certFile == "" && keyFile == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// adminTokens lists the configured admin API tokens with their roles.
func adminTokens(cfg config.AdminConfig) []api.Token {
	var ts []api.Token
	if cfg.Token != "" {
		ts = append(ts, api.Token{Name: "admin", Token: cfg.Token, Role: api.RoleAdmin})
	}
	for _, t := range cfg.Tokens {
		ts = append(ts, api.Token{Name: t.Name, Token: t.Token, Role: api.Role(t.Role)})
	}
	return ts
}

// newLogger builds the process logger: text on a terminal, JSON otherwise,
// unless the configuration says which.
func newLogger(cfg config.LogConfig, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.Level))
	opts := &slog.HandlerOptions{Level: level}
	format := cfg.Format
	if format == "auto" {
		format = "json"
		if f, ok := w.(*os.File); ok {
			if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
				format = "text"
			}
		}
	}
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}
