package test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/redis/go-redis/v9"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/plugin/encap"
	"github.com/deferpush/deferpush/plugin/msrp"
	"github.com/deferpush/deferpush/plugin/push"
	"github.com/deferpush/deferpush/store"
)

// core is deferpush's push side assembled in-process the way cmd/deferpush
// assembles it: store, engine, pusher on a real SIP UA and MSRP listener.
type core struct {
	st      *store.Redis
	eng     *plugin.Engine
	pusher  *push.Pusher
	sipAddr string
	reports chan plugin.PushReport
}

type coreOptions struct {
	outboundProxy string
	policy        func(*plugin.Policy)
	msrpTimeout   time.Duration
	// redisHook, when set, sees every command the store sends.
	redisHook redis.Hook
	// sweepInterval is the engine's; zero means its default.
	sweepInterval time.Duration
	// logger replaces testLogger's.
	logger *slog.Logger
	// events has the engine read registration events from the store's
	// stream (Redis-direct mode: the proxy's dp_register writes them).
	events bool
	// maxConcurrent is the engine's push.max_concurrent; zero means its
	// default.
	maxConcurrent int
}

func (c *core) PushDone(r plugin.PushReport) {
	select {
	case c.reports <- r:
	default:
	}
}

func (c *core) Notified(plugin.Disposition, error) {}

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() || os.Getenv("DEFERPUSH_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func startCore(t testing.TB, redisURL string, o coreOptions) *core {
	t.Helper()
	log := testLogger(t)
	if o.logger != nil {
		log = o.logger
	}
	st, err := store.New(store.Config{URL: redisURL, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if o.redisHook != nil {
		st.Client().AddHook(o.redisHook)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if o.policy != nil {
		p, err := st.Policy(ctx)
		if err != nil {
			t.Fatal(err)
		}
		o.policy(&p)
		if err := st.SetPolicy(ctx, p, "test"); err != nil {
			t.Fatal(err)
		}
	}

	ua, err := sipgo.NewUA(sipgo.WithUserAgent("deferpush"), sipgo.WithUserAgentHostname("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := sipgo.NewServer(ua)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := tl.Addr().(*net.TCPAddr).Port
	ml, err := msrp.NewListener(msrp.ListenerConfig{Addr: "127.0.0.1:0", Host: "127.0.0.1", Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	c := &core{st: st, sipAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), reports: make(chan plugin.PushReport, 1000)}
	c.pusher, err = push.New(push.Config{
		Client:        cli,
		Contact:       fmt.Sprintf("sip:deferpush@127.0.0.1:%d;transport=tcp", port),
		OutboundProxy: o.outboundProxy,
		MSRP:          ml,
		MSRPTimeout:   o.msrpTimeout,
		Logger:        log,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv.OnBye(func(req *sip.Request, tx sip.ServerTransaction) {
		if err := c.pusher.ReadBye(req, tx); err != nil {
			_ = tx.Respond(sip.NewResponseFromRequest(req, 481, "Call/Transaction Does Not Exist", nil))
		}
	})
	srv.OnAck(func(req *sip.Request, tx sip.ServerTransaction) {})
	scanned := make(chan struct{})
	engLog := slog.New(&onMessage{Handler: log.Handler(), msg: "start-up scan done", ch: scanned, once: new(sync.Once)})
	cfg := plugin.EngineConfig{Store: st, Pusher: c.pusher, Observer: c, Logger: engLog, LockTTL: 10 * time.Second,
		SweepInterval: o.sweepInterval, MaxConcurrent: o.maxConcurrent}
	if o.events {
		cfg.Events = st
	}
	c.eng, err = plugin.NewEngine(cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{}, 3)
	go func() { _ = srv.ServeTCP(tl); done <- struct{}{} }()
	go func() { _ = ml.Run(ctx); done <- struct{}{} }()
	go func() { _ = c.eng.Run(ctx); done <- struct{}{} }()
	t.Cleanup(func() {
		cancel()
		tl.Close()
		for range 3 {
			select {
			case <-done:
			case <-time.After(15 * time.Second):
				t.Error("core did not stop within 15 s")
				return
			}
		}
		srv.Close()
		ua.Close()
	})
	// Run reads the policy first; wait until it takes registrations.
	waitFor(t, 5*time.Second, "engine running", func() bool {
		_, err := c.eng.Policy(ctx)
		return err == nil && c.eng.Registered(ctx, plugin.Registration{AOR: plugin.MustParseAOR("sip:probe@invalid"), Contact: "sip:probe@127.0.0.1:9", Expires: time.Now().Add(time.Second)}) == nil
	})
	// And until its start-up scan is over: a scan that runs late finds the
	// test's messages and registration and pushes once more on its own.
	select {
	case <-scanned:
	case <-time.After(10 * time.Second):
		t.Fatal("the engine's start-up scan did not end within 10 s")
	}
	return c
}

// onMessage is a slog.Handler that closes ch when a record with message
// msg passes through it (once), and hands every record on.
type onMessage struct {
	slog.Handler
	msg  string
	ch   chan struct{}
	once *sync.Once
}

func (h *onMessage) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.once.Do(func() { close(h.ch) })
	}
	if !h.Handler.Enabled(ctx, r.Level) {
		return nil
	}
	return h.Handler.Handle(ctx, r)
}

// Enabled lets records of level info and above through whatever the level
// of the handler behind (Handle must see msg, an info record), and the
// others as that handler would, so that the engine builds no debug
// record the handler drops, as it runs in deferpush.
func (h *onMessage) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelInfo || h.Handler.Enabled(ctx, l)
}

func (h *onMessage) WithAttrs(as []slog.Attr) slog.Handler {
	return &onMessage{Handler: h.Handler.WithAttrs(as), msg: h.msg, ch: h.ch, once: h.once}
}

func (h *onMessage) WithGroup(name string) slog.Handler {
	return &onMessage{Handler: h.Handler.WithGroup(name), msg: h.msg, ch: h.ch, once: h.once}
}

// register tells the engine that client cl registered, as the proxy hook
// would.
func (c *core) register(t testing.TB, aor plugin.AOR, contact string) {
	t.Helper()
	err := c.eng.Registered(context.Background(), plugin.Registration{AOR: aor, Contact: contact, Expires: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatalf("register %s: %v", aor, err)
	}
}

func (c *core) report(t testing.TB) plugin.PushReport {
	t.Helper()
	select {
	case r := <-c.reports:
		return r
	case <-time.After(45 * time.Second):
		t.Fatal("no push report within 45 s")
	}
	return plugin.PushReport{}
}

func (c *core) counts(t testing.TB, aor plugin.AOR) plugin.Counts {
	t.Helper()
	n, err := c.st.Count(context.Background(), aor)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// storeSIP stores a SIP MESSAGE from alice to aor with the given Call-ID,
// as the hook does: Date added, kept whole.
func (c *core) storeSIP(t testing.TB, aor plugin.AOR, callID, text string) *plugin.Message {
	t.Helper()
	raw := fmt.Sprintf("MESSAGE %s SIP/2.0\r\n"+
		"Via: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bK%s\r\n"+
		"Max-Forwards: 70\r\n"+
		"From: <sip:alice@example.com>;tag=a1\r\n"+
		"To: <%s>\r\n"+
		"Call-ID: %s\r\n"+
		"CSeq: 1 MESSAGE\r\n"+
		"Content-Type: text/plain\r\n"+
		"Content-Length: %d\r\n\r\n%s", aor, callID, aor, callID, len(text), text)
	dated, err := encap.AddDate([]byte(raw), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	m := &plugin.Message{Recipient: aor, Sender: "sip:alice@example.com", Received: time.Now(),
		Kind: plugin.KindSIPMessage, Raw: dated, CallID: callID, ContentType: "text/plain"}
	if err := c.eng.Store(context.Background(), m); err != nil {
		t.Fatalf("store: %v", err)
	}
	return m
}

func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
