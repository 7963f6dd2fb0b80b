package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/deferpush/deferpush/adapters/ingress"
	"github.com/deferpush/deferpush/api"
	"github.com/deferpush/deferpush/cmd/internal/config"
)

// serve runs deferpush until ctx ends (SIGINT or SIGTERM), then shuts down
// within cfg.Shutdown.Timeout.
func serve(ctx context.Context, cfg *config.Config, path string, stderr io.Writer) error {
	log := newLogger(cfg.Log, stderr)
	routeHertzLogs(log)
	// What of sipgo is not built by the SIP stack (which gives each of its
	// layers this logger) logs through a global; ingress.SIPLogger keeps
	// raw SIP, secrets included, out of its records.
	sip.SetDefaultLogger(ingress.SIPLogger(log.With("component", "sip")))
	if path != "" {
		log.Info("configuration loaded", "file", path)
	}
	generateSecrets(cfg, stderr)
	s := &server{cfg: cfg, log: log}
	if err := s.wire(ctx); err != nil {
		s.close()
		return err
	}
	// The components close their own listeners when they stop; what
	// outlives them is closed here: the ingress's sessions, then the store.
	defer func() {
		s.ingress.Close()
		closeWithin(storeCloseBound, s.store.Close, log)
	}()
	s.logListening()
	// Everything runs until ctx ends, then stops in reverse order: the
	// engine first. The store closes only after every component returned.
	return runAll(ctx, log, cfg.Shutdown.Timeout,
		component{"api", s.api.Run},
		component{"sip", s.stack.Run},
		component{"msrp", s.msrp.Run},
		component{"engine", s.engine.Run},
	)
}

// storeCloseBound bounds the store's close at shutdown: go-redis drains
// its pipelines for up to 30 s when Redis stalls, past any grace period
// an orchestrator gives (Kubernetes' default is 30 s in all). A command
// still queued then was answered to nobody: dropping it loses nothing
// acknowledged.
const storeCloseBound = 2 * time.Second

// closeWithin runs closer and waits for it at most d.
func closeWithin(d time.Duration, closer func() error, log *slog.Logger) {
	done := make(chan struct{})
	go func() {
		_ = closer()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(d):
		log.Warn("store not closed in time: exiting without it", "waited", d)
	}
}

// generateSecrets makes the tokens nobody configured and shows them once:
// the operator copies them into the proxy's script and their API client.
func generateSecrets(cfg *config.Config, stderr io.Writer) {
	if cfg.Hooks.Token == "" {
		cfg.Hooks.Token = rand.Text()
		fmt.Fprintf(stderr, "deferpush: no hooks.token configured; generated for this run (shown once): %s\n", cfg.Hooks.Token)
	}
	if cfg.Admin.Token == "" && len(cfg.Admin.Tokens) == 0 {
		cfg.Admin.Token = rand.Text()
		fmt.Fprintf(stderr, "deferpush: no admin token configured; generated for this run (shown once): %s\n", cfg.Admin.Token)
	}
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
