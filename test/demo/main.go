// Command demo is `make demo`: the seed's flow on this machine, with real
// parts. It starts redis-server, deferpush and Kamailio running the
// shipped kamailio.cfg on free loopback ports, sends three messages to a
// user who is offline (one SIP MESSAGE, one MSRP session of two
// messages), registers the reference client as that user and prints the
// messages deferpush pushes to it as they arrive, then stops everything
// it started. While it runs, the console's URL and an admin token are on
// screen; --stay keeps the servers up after the push until Ctrl-C.
//
// It needs what `make test` installs (redis-server, kamailio) and a built
// deferpush (make demo builds it):
//
//	go run ./test/demo [--deferpush bin/deferpush] [--stay]
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/deferpush/deferpush/adapters/imclient"
	"github.com/deferpush/deferpush/test/harness"
)

const (
	domain    = "example.com"
	sender    = "sip:alice@" + domain
	recipient = "sip:bob@" + domain
)

func main() {
	var o options
	flag.StringVar(&o.deferpush, "deferpush", "bin/deferpush", "the deferpush binary to run")
	flag.StringVar(&o.kamailioCfg, "kamailio-cfg", "adapters/kamailio/kamailio.cfg", "the Kamailio routing script to run")
	flag.BoolVar(&o.stay, "stay", false, "keep the servers running after the push, until Ctrl-C (to look around in the console)")
	flag.Parse()
	// sipgo logs through the default logger: only its errors, please.
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))

	dir, err := os.MkdirTemp("", "deferpush-demo-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
	r := &runner{dir: dir, out: os.Stdout}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sig
		code := 130
		if r.isDone() {
			code = 0
		}
		r.say("interrupted: stopping what the demo started")
		r.stop()
		os.Exit(code)
	}()
	o.run(r)
	r.stop()
	os.RemoveAll(dir)
	os.Exit(0)
}

type options struct {
	deferpush, kamailioCfg string
	stay                   bool
}

func (o options) run(r *runner) {
	start := time.Now()
	if _, err := os.Stat(o.deferpush); err != nil {
		r.Fatalf("no deferpush binary at %s: run `make build` first (make demo does)", o.deferpush)
	}
	r.say("starting redis-server, deferpush and Kamailio (the shipped kamailio.cfg) on loopback; logs in %s", r.dir)
	redis := harness.Redis(r)

	hooksToken, adminToken := token(), token()
	hooks, admin := free(r), free(r)
	sipPort, msrpPort, kamPort, internalPort := harness.FreePort(r), harness.FreePort(r), harness.FreePort(r), harness.FreePort(r)
	cfg := filepath.Join(r.TempDir(), "deferpush.yaml")
	yaml := fmt.Sprintf(`log: {level: info, format: json}
hooks: {listen: %q, token: %q}
admin: {listen: %q, token: %q}
redis: {url: %q}
sip: {listen: "127.0.0.1:%d", outbound_proxy: "sip:127.0.0.1:%d;transport=tcp"}
msrp: {listen: "127.0.0.1:%d"}
`, hooks, hooksToken, admin, adminToken, redis.URL(), sipPort, internalPort, msrpPort)
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		r.Fatal(err)
	}
	dp := harness.Start(r, "deferpush", o.deferpush, "serve", "--config", cfg)
	dp.WaitFor(r, 20*time.Second, "/readyz", func(ctx context.Context) error {
		_, err := get(ctx, "http://"+admin+"/readyz", "")
		return err
	})
	k := harness.Kamailio(r, harness.KamailioConfig{
		ConfigFile: o.kamailioCfg,
		SIPPort:    kamPort,
		Defines: map[string]string{
			"INTERNAL_PORT": strconv.Itoa(internalPort),
			"DOMAIN":        strconv.Quote(domain),
			"DP_ADDR":       `"127.0.0.1"`,
			"DP_SIP":        strconv.Quote(fmt.Sprintf("sip:127.0.0.1:%d;transport=tcp", sipPort)),
			"DP_HOOKS":      strconv.Quote("http://" + hooks),
			"DP_TOKEN":      strconv.Quote(hooksToken),
		},
	})
	r.say("")
	r.say("  console      http://%s/", admin)
	r.say("  admin token  %s", adminToken)
	r.say("  Kamailio     %s (SIP, UDP and TCP), domain %s", k.SIPAddr, domain)
	r.say("")

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	alice := client(r, sender, k.SIPAddr)
	r.say("%s sends to %s, who is offline:", sender, recipient)
	res, err := alice.SendMessage(ctx, recipient, "text/plain", []byte("Hello Bob! This is a SIP MESSAGE, kept while you were offline."))
	if err != nil || res.StatusCode != 202 {
		r.Fatalf("MESSAGE to %s: %v %v, want 202 Accepted", recipient, res, err)
	}
	r.say("  %-21s -> %d %s (stored)", "SIP MESSAGE", res.StatusCode, res.Reason)
	sess, err := alice.OpenSession(ctx, recipient)
	if err != nil {
		r.Fatalf("MSRP session to %s: %v", recipient, err)
	}
	for i, text := range []string{"First message of an MSRP session.", "Second message of the same session."} {
		if err := sess.Send(ctx, fmt.Sprintf("demo%08d", i+1), "text/plain", []byte(text)); err != nil {
			r.Fatalf("MSRP SEND %d: %v", i+1, err)
		}
		r.say("  %-21s -> 200 OK (stored)", fmt.Sprintf("MSRP session, SEND %d", i+1))
	}
	if err := sess.Close(ctx); err != nil {
		r.Fatalf("BYE of the MSRP session: %v", err)
	}
	var page struct{ Total int }
	for {
		b, err := get(ctx, "http://"+admin+"/v1/users/"+recipient+"/messages?limit=1", adminToken)
		if err == nil && json.Unmarshal(b, &page) == nil && page.Total == 3 {
			break
		}
		if ctx.Err() != nil {
			r.Fatalf("the store holds %d messages for %s, want 3 (%v)", page.Total, recipient, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	r.say("deferpush holds 3 messages for %s (GET /v1/users/%s/messages)", recipient, recipient)
	r.say("")

	bob := client(r, recipient, k.SIPAddr)
	if code, err := bob.Register(ctx, 300); err != nil || code != 200 {
		r.Fatalf("REGISTER %s: %d %v", recipient, code, err)
	}
	r.say("%s registers with the reference client (contact %s); deferpush pushes:", recipient, bob.Contact())
	printed := 0
	for printed < 3 {
		if _, err := bob.Wait(ctx, func(s imclient.Stats) bool { return s.Received > printed }); err != nil {
			r.Fatalf("%d of 3 messages pushed after %v: %v", printed, time.Since(start).Round(time.Millisecond), err)
		}
		for _, m := range bob.Received()[printed:] {
			printed++
			ct, _, _ := strings.Cut(m.ContentType, ";")
			from, _, _ := strings.Cut(m.Decoded.From, ";")
			r.say("  pushed %d/3  %-16s from %s  %q", printed, ct, from, m.Decoded.Body)
		}
	}
	r.say("")
	r.say("all 3 messages delivered %v after the demo started", time.Since(start).Round(time.Millisecond))
	r.setDone()
	if _, err := bob.Register(ctx, 0); err != nil {
		r.Logf("unregister %s: %v", recipient, err)
	}
	if o.stay {
		r.say("the servers stay up: log in to the console above with the admin token; Ctrl-C stops everything")
		select {}
	}
	r.say("stopping redis-server, deferpush and Kamailio")
}

// client starts a reference client for aor that sends through the proxy;
// it closes before the servers stop.
func client(r *runner, aor, proxy string) *imclient.Client {
	c, err := imclient.New(imclient.Config{AOR: aor, Proxy: proxy})
	if err != nil {
		r.Fatal(err)
	}
	r.Cleanup(c.Close)
	return c
}

// get fetches url with a bearer token (if any) and wants 200.
func get(ctx context.Context, url, token string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err == nil && res.StatusCode != http.StatusOK {
		err = errors.New(res.Status)
	}
	return b, err
}

func token() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func free(r *runner) string { return "127.0.0.1:" + strconv.Itoa(harness.FreePort(r)) }

// runner is the harness.T of the demo: it keeps the cleanups of what was
// started and runs them at the end, on Ctrl-C or on a fatal error (which
// also prints the servers' logs and exits 1).
type runner struct {
	dir string
	out io.Writer

	mu       sync.Mutex
	cleanups []func()
	failed   bool
	stopping bool
	done     bool
	n        int
}

var _ harness.T = (*runner)(nil)

func (r *runner) say(format string, args ...any) {
	fmt.Fprintf(r.out, "demo: "+format+"\n", args...)
}

func (r *runner) Helper() {}

func (r *runner) Cleanup(f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cleanups = append(r.cleanups, f)
}

func (r *runner) TempDir() string {
	r.mu.Lock()
	r.n++
	d := filepath.Join(r.dir, strconv.Itoa(r.n))
	r.mu.Unlock()
	if err := os.MkdirAll(d, 0o755); err != nil {
		r.Fatal(err)
	}
	return d
}

func (r *runner) Failed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failed
}

func (r *runner) Logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
}

func (r *runner) Fatal(args ...any) { r.fail(fmt.Sprint(args...)) }

func (r *runner) Fatalf(format string, args ...any) { r.fail(fmt.Sprintf(format, args...)) }

// Skip is what the harness does when a server is not installed: here that
// is an error.
func (r *runner) Skip(args ...any) {
	r.fail(fmt.Sprint(args...) + "; `make test` (or `make deps`) installs it")
}

func (r *runner) fail(msg string) {
	r.mu.Lock()
	r.failed = true
	stopping := r.stopping
	r.mu.Unlock()
	if stopping {
		select {} // Ctrl-C is stopping everything and decides the exit
	}
	fmt.Fprintln(os.Stderr, "demo: "+strings.TrimSpace(msg))
	r.stop()
	fmt.Fprintln(os.Stderr, "demo: failed; the logs are in "+r.dir)
	os.Exit(1)
}

// stop runs the cleanups, the last registered first, each once.
func (r *runner) stop() {
	r.mu.Lock()
	r.stopping = true
	r.mu.Unlock()
	for {
		r.mu.Lock()
		if len(r.cleanups) == 0 {
			r.mu.Unlock()
			return
		}
		f := r.cleanups[len(r.cleanups)-1]
		r.cleanups = r.cleanups[:len(r.cleanups)-1]
		r.mu.Unlock()
		f()
	}
}

func (r *runner) setDone() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.done = true
}

func (r *runner) isDone() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.done
}
