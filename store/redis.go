package store

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/deferpush/deferpush/plugin"
)

var _ plugin.Store = (*Redis)(nil)

// Config configures a Redis store.
type Config struct {
	// Client is the Redis client to use: *redis.Client, a Sentinel
	// failover client or *redis.ClusterClient. Close leaves a given
	// client open. New adds a hook to it that marks the errors of a
	// Redis that cannot be reached with plugin.ErrStoreUnavailable. If
	// nil, New dials URL.
	Client redis.UniversalClient
	// URL is used when Client is nil. Accepted forms:
	//
	//	redis://[[user]:password@]host:port[/db]        standalone
	//	rediss://...                                    standalone over TLS
	//	unix://[[user]:password@]/path/redis.sock[?db=N] standalone over
	//	                                                a Unix socket
	//	redis+sentinel://[[user]:password@]h1:p1,h2:p2/master[?db=N]
	//	redis+cluster://[[user]:password@]h1:p1,h2:p2
	//	(rediss+sentinel and rediss+cluster: the same over TLS)
	//
	// redis://, rediss:// and unix:// accept go-redis's query options
	// (dial_timeout=, pool_size=, ...).
	URL string
	// Logger receives warnings from background work (WatchPolicy); nil
	// discards them.
	Logger *slog.Logger
	// MinReplicas, when above zero, makes Append answer only once that many
	// replicas have the message (Redis WAIT on the connection that wrote
	// it), within ReplicaTimeout: a store acknowledged to its sender then
	// survives the loss of the master (a Sentinel or Cluster failover).
	// Fewer replicas in time is an error (ErrNotReplicated), which the
	// sender gets like any store error — although the master holds the
	// message, and may push it. Zero answers as soon as the master has
	// it: a failover may lose what its replicas had not yet received.
	MinReplicas int
	// ReplicaTimeout bounds the wait for MinReplicas. Zero means 1 s.
	ReplicaTimeout time.Duration
	// AORRules are the registrar's rules the hooks and the SIP ingress
	// parse AORs with. The store mirrors CaseSensitiveUser in dp:limits,
	// where the library's dp_store and dp_register (called by a proxy
	// itself) canonicalise AORs the same way.
	AORRules plugin.AORRules
	// Now is the clock for leases and expiry; nil means time.Now. All
	// instances sharing a Redis should have synchronised clocks (NTP):
	// leases are compared against the caller's clock, not Redis's.
	Now func() time.Time
}

// Redis is the Redis implementation of plugin.Store. Its methods are safe
// for concurrent use.
type Redis struct {
	c   redis.UniversalClient
	log *slog.Logger
	now func() time.Time
	// replicas and replicaTimeout are Config.MinReplicas and
	// ReplicaTimeout.
	replicas       int
	replicaTimeout time.Duration
	// rules are Config.AORRules.
	rules   plugin.AORRules
	closers []func() error
	// batch carries the commands of Append and Ack: go-redis's
	// autopipeliner writes those of concurrent callers to Redis together,
	// one ordered stream, which cuts the syscalls and CPU of each (see
	// Append). Nil for a client that has none. Closing the client stops it.
	batch *redis.AutoPipeliner
	// fn runs the function library (library.go).
	fn functions
	// recent is whether a proxy polls dp:recent (recent.go).
	recent recentSign
	// prepared is set once ready's work succeeded; preparing is the
	// attempt under way, if any (under prepareMu).
	prepared  atomic.Bool
	prepareMu sync.Mutex
	preparing *attempt
	// knownPolicy is the last policy record read from Redis or written
	// to it (settings.go): what a Redis that lost it gets back.
	knownPolicy atomic.Pointer[[]byte]
}

// attempt is one run of ready's work: err is set before done closes.
type attempt struct {
	done chan struct{}
	err  error
}

// New returns a store on cfg.Client or cfg.URL. It does not contact Redis:
// use Ping for readiness.
func New(cfg Config) (*Redis, error) {
	if cfg.MinReplicas < 0 || cfg.ReplicaTimeout < 0 {
		return nil, errors.New("store: MinReplicas and ReplicaTimeout must not be negative")
	}
	if cfg.ReplicaTimeout == 0 {
		cfg.ReplicaTimeout = time.Second
	}
	r := &Redis{c: cfg.Client, log: cfg.Logger, now: cfg.Now, replicas: cfg.MinReplicas, replicaTimeout: cfg.ReplicaTimeout,
		rules: cfg.AORRules}
	if r.log == nil {
		r.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if r.now == nil {
		r.now = time.Now
	}
	if r.c == nil {
		if cfg.URL == "" {
			return nil, errors.New("store: neither Client nor URL configured")
		}
		opts, err := ParseURL(cfg.URL)
		if err != nil {
			return nil, err
		}
		r.c = redis.NewUniversalClient(opts)
		r.closers = append(r.closers, r.c.Close)
	}
	r.c.AddHook(unavailableHook{})
	r.fn.c = r.c
	if c, ok := r.c.(interface {
		AsyncAutoPipelineWithOptions(*redis.AutoPipelineOptions) (*redis.AutoPipeliner, error)
	}); ok {
		o := redis.DefaultAutoPipelineOptions()
		o.FullDuplex = true
		ap, err := c.AsyncAutoPipelineWithOptions(o)
		if err != nil {
			return nil, fmt.Errorf("store: autopipeline: %w", err)
		}
		r.batch = ap
	}
	return r, nil
}

// NewEmbedded starts an in-process, in-memory Redis (miniredis) on a
// loopback port and returns a store on it, for `make run` and tests. Data
// is lost at Close. cfg.Client and cfg.URL must be empty.
func NewEmbedded(cfg Config) (*Redis, error) {
	if cfg.Client != nil || cfg.URL != "" {
		return nil, errors.New("store: embedded store takes no Client or URL")
	}
	m := miniredis.NewMiniRedis()
	if err := m.StartAddr("127.0.0.1:0"); err != nil {
		return nil, fmt.Errorf("start embedded redis: %w", err)
	}
	cfg.Client = redis.NewClient(&redis.Options{Addr: m.Addr()})
	r, err := New(cfg)
	if err != nil {
		m.Close()
		return nil, err
	}
	r.closers = append(r.closers, cfg.Client.Close, func() error { m.Close(); return nil })
	return r, nil
}

// Close closes the client if New dialled it, and stops an embedded Redis.
func (r *Redis) Close() error {
	var errs []error
	for _, c := range r.closers {
		errs = append(errs, c())
	}
	return errors.Join(errs...)
}

// Client returns the underlying client (for tests and diagnostics).
func (r *Redis) Client() redis.UniversalClient { return r.c }

// Ping reports whether Redis answers and the store is ready for it: the
// function library loaded and what an earlier release stored converted
// (see ready).
func (r *Redis) Ping(ctx context.Context) error {
	err := r.c.Ping(ctx).Err()
	if err == nil {
		err = r.ready(ctx)
	}
	if err != nil {
		return fmt.Errorf("store: ping: %w", err)
	}
	return nil
}

// ready makes Redis ready for this release, once per Redis value, before
// the first operation that needs it (and in Ping, which cmd/deferpush
// calls at start): it loads the function library where the server runs
// another version of it, converts what an earlier release stored in its
// layout (migrate.go), creates the consumer group of the registration
// events (events.go), and writes dp:limits if it is missing. The work
// runs on its own, whatever happens to the context of the call that
// started it (a large keyspace takes longer to convert than a hook call
// may wait); every caller waits for it, or for its own context. Until it
// succeeded every operation fails with its error, and the next one tries
// again. It is safe from several instances at once.
func (r *Redis) ready(ctx context.Context) error {
	if r.prepared.Load() {
		return nil
	}
	r.prepareMu.Lock()
	a := r.preparing
	if a == nil {
		a = &attempt{done: make(chan struct{})}
		r.preparing = a
		go func() {
			a.err = r.prepare(context.WithoutCancel(ctx))
			r.prepareMu.Lock()
			r.prepared.Store(a.err == nil)
			r.preparing = nil
			r.prepareMu.Unlock()
			close(a.done)
		}()
	}
	r.prepareMu.Unlock()
	select {
	case <-a.done:
		return a.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (r *Redis) prepare(ctx context.Context) error {
	if err := r.fn.prepare(ctx); err != nil {
		return err
	}
	r.checkEviction(ctx)
	if err := r.migrate(ctx); err != nil {
		return err
	}
	if err := r.createGroup(ctx); err != nil {
		return err
	}
	return r.initLimits(ctx)
}

// checkEviction says loudly when Redis may evict keys under memory
// pressure: a maxmemory-policy other than noeviction drops whole
// mailboxes, messages answered "stored" included, without a word to
// deferpush. Managed Redis services often default to one. A Redis that
// does not tell (INFO refused, the embedded store) is not judged.
func (r *Redis) checkEviction(ctx context.Context) {
	info, err := r.c.Info(ctx, "memory").Result()
	if err != nil {
		return
	}
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "maxmemory_policy:"); ok && v != "noeviction" {
			r.log.Error("Redis may evict stored messages: set maxmemory-policy to noeviction", "maxmemory_policy", v)
		}
	}
}

// ParseURL turns one of the URL forms of Config.URL into client options.
func ParseURL(raw string) (*redis.UniversalOptions, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("store: bad redis URL: %w", err)
	}
	switch u.Scheme {
	case "redis", "rediss", "unix":
		o, err := redis.ParseURL(raw)
		if err != nil {
			return nil, fmt.Errorf("store: bad redis URL: %w", err)
		}
		uo := &redis.UniversalOptions{
			Addrs: []string{o.Addr}, DB: o.DB, Username: o.Username, Password: o.Password,
			TLSConfig: o.TLSConfig, Protocol: o.Protocol, ClientName: o.ClientName,
			DialTimeout: o.DialTimeout, ReadTimeout: o.ReadTimeout, WriteTimeout: o.WriteTimeout,
			PoolSize: o.PoolSize, MinIdleConns: o.MinIdleConns, MaxRetries: o.MaxRetries,
		}
		if o.Network == "unix" {
			// UniversalOptions has no network: its dialer names it. A
			// Redis beside the proxy and deferpush skips TCP's work on
			// every round trip.
			path := o.Addr
			uo.Dialer = func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", path)
			}
		}
		return uo, nil
	case "redis+sentinel", "rediss+sentinel", "redis+cluster", "rediss+cluster":
	default:
		return nil, fmt.Errorf("store: bad redis URL: unsupported scheme %q", u.Scheme)
	}
	o := &redis.UniversalOptions{Addrs: strings.Split(u.Host, ",")}
	for _, a := range o.Addrs {
		if _, _, ok := strings.Cut(a, ":"); !ok || a == "" {
			return nil, fmt.Errorf("store: bad redis URL: address %q needs host:port", a)
		}
	}
	if u.User != nil {
		o.Username = u.User.Username()
		o.Password, _ = u.User.Password()
	}
	if strings.HasPrefix(u.Scheme, "rediss") {
		o.TLSConfig = tlsConfig(o.Addrs[0])
	}
	if strings.HasSuffix(u.Scheme, "+cluster") {
		if p := strings.Trim(u.Path, "/"); p != "" {
			return nil, fmt.Errorf("store: bad redis URL: cluster URL takes no path (got %q)", p)
		}
		o.IsClusterMode = true
		return o, nil
	}
	o.MasterName = strings.Trim(u.Path, "/")
	if o.MasterName == "" {
		return nil, errors.New("store: bad redis URL: sentinel URL needs /master-name")
	}
	if db := u.Query().Get("db"); db != "" {
		if o.DB, err = strconv.Atoi(db); err != nil {
			return nil, fmt.Errorf("store: bad redis URL: db %q", db)
		}
	}
	return o, nil
}

// tlsConfig verifies the server certificate against the first address's
// host name.
func tlsConfig(addr string) *tls.Config {
	host, _, _ := net.SplitHostPort(addr)
	return &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
}
