// Package config reads deferpush's configuration: a YAML file, then
// DEFERPUSH_ environment variables, then flags, each overriding the one
// before; it fills the documented defaults and validates every field,
// naming the file and line, the variable or the flag a wrong value came
// from. cmd/deferpush wires the parts from what Load returns.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/goccy/go-yaml"

	"github.com/deferpush/deferpush/store"
)

// Config is deferpush's configuration: a YAML file (--config), then
// environment variables, then flags, each overriding the one before.
//
// Every scalar field has an environment variable named DEFERPUSH_ followed by
// its YAML path in upper case with "_" between the parts: hooks.listen is
// DEFERPUSH_HOOKS_LISTEN. Lists of strings take a comma-separated value.
type Config struct {
	Log      LogConfig      `yaml:"log"`
	Hooks    HooksConfig    `yaml:"hooks"`
	Admin    AdminConfig    `yaml:"admin"`
	Redis    RedisConfig    `yaml:"redis"`
	SIP      SIPConfig      `yaml:"sip"`
	MSRP     MSRPConfig     `yaml:"msrp"`
	Push     PushConfig     `yaml:"push"`
	AOR      AORConfig      `yaml:"aor"`
	Shutdown ShutdownConfig `yaml:"shutdown"`
}

// LogConfig configures logging.
type LogConfig struct {
	// Level is debug, info, warn or error. Empty means info.
	Level string `yaml:"level"`
	// Format is text, json or auto (text on a terminal, JSON otherwise).
	// Empty means auto.
	Format string `yaml:"format"`
}

// HooksConfig configures the listener the proxy's route script calls.
type HooksConfig struct {
	// Listen is host:port. Empty means 127.0.0.1:8710.
	Listen string `yaml:"listen"`
	// Token is the shared secret the proxy sends in the X-Deferpush-Token
	// header. Empty means one is generated at start and printed once.
	Token string `yaml:"token"`
	// AllowCIDRs, when not empty, refuses connections from other sources
	// to the hooks listener as they are accepted (403), before they count
	// against MaxConnections.
	AllowCIDRs []string `yaml:"allow_cidrs"`
	// TLSCert and TLSKey, both set, serve the hooks over HTTPS.
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
	// RateLimit is how many hook calls a second one source address may
	// make in the long run, RateBurst how many at once; a call over it
	// gets 429 (the script replies 503). Zero means 10000 a second with a
	// burst of 20000: about three times what one Kamailio sent at most in
	// make bench (~3,400 stores a second), so a proxy is never limited and
	// a runaway source is. Negative: no limit.
	RateLimit int `yaml:"rate_limit"`
	RateBurst int `yaml:"rate_burst"`
	// MaxConnections bounds the hook connections open at once, and
	// MaxConnectionsPerHost those from one address. At a bound a
	// connection that sent nothing, is idle, or is stuck in a slow request
	// is closed to make room (README, Security: Connections); when none
	// may be, the new one gets 503. Zero means 1024 and 256.
	MaxConnections        int `yaml:"max_connections"`
	MaxConnectionsPerHost int `yaml:"max_connections_per_host"`
}

// AdminConfig configures the operators' REST API listener.
type AdminConfig struct {
	// Listen is host:port. Empty means 127.0.0.1:8711.
	Listen string `yaml:"listen"`
	// Token is a bearer token with the admin role. When neither Token nor
	// Tokens is set, an admin token is generated at start and printed once.
	Token string `yaml:"token"`
	// Tokens are further bearer tokens, each with a role (admin or viewer).
	Tokens []TokenConfig `yaml:"tokens"`
	// TLSCert and TLSKey, both set, serve the admin API over HTTPS.
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
	// MaxConnections and MaxConnectionsPerHost bound the admin API's
	// connections as the hooks' are. Zero means 256 and 64.
	MaxConnections        int `yaml:"max_connections"`
	MaxConnectionsPerHost int `yaml:"max_connections_per_host"`
}

// TokenConfig is one admin API bearer token.
type TokenConfig struct {
	// Name says whose token it is; it is what the logs show, never the token.
	Name  string `yaml:"name"`
	Token string `yaml:"token"`
	// Role is admin (read and write) or viewer (read only).
	Role string `yaml:"role"`
}

// RedisConfig selects the store.
type RedisConfig struct {
	// URL is redis://, rediss://, unix://, redis+sentinel:// or
	// redis+cluster://.
	// Empty means the embedded in-memory store: nothing survives a restart.
	URL string `yaml:"url"`
	// MinReplicas, above zero, answers "stored" only once that many
	// replicas have the message (Redis WAIT), so that a failover loses no
	// message its sender was told was stored; zero answers as soon as the
	// master has it.
	MinReplicas int `yaml:"min_replicas"`
	// ReplicaTimeout bounds that wait; past it the sender gets the store
	// error's reply. Zero means 1s; at most 2s.
	ReplicaTimeout time.Duration `yaml:"replica_timeout"`
}

// SIPConfig configures deferpush's SIP user agent.
type SIPConfig struct {
	// Listen is host:port for SIP over UDP and TCP. Empty means
	// 127.0.0.1:5070.
	Listen string `yaml:"listen"`
	// Advertise is the host (and port) put in Contact and Via, for when
	// Listen is a wildcard address. Empty means the Listen address.
	Advertise string `yaml:"advertise"`
	// OutboundProxy is the SIP URI of the proxy INVITEs go through, e.g.
	// sip:127.0.0.1:5060;transport=tcp. Empty sends them to the target
	// directly.
	OutboundProxy string `yaml:"outbound_proxy"`
	// Ingress switches the SIP ingress (MESSAGE and session INVITE relayed
	// by the proxy, kamailio.cfg's STORE_VIA_SIP) on or off; off, they get
	// 405 and only the hooks store messages. Unset means on.
	Ingress *bool `yaml:"ingress"`
	// TrustedSources are the networks (CIDR prefixes) of the proxies the
	// ingress takes MESSAGE and INVITE from; others get 403. Their TCP
	// connections are kept first at the connection bounds. Empty means
	// loopback only (127.0.0.0/8 and ::1/128): a proxy on the same host.
	TrustedSources []string `yaml:"trusted_sources"`
	// IngressSecret is the shared secret the proxy adds to what it relays
	// to the ingress, in the X-Deferpush-Secret header (the shipped
	// kamailio.cfg adds DP_SIP_SECRET, by default DP_TOKEN); a request
	// without it gets 403. Empty means hooks.token.
	IngressSecret string `yaml:"ingress_secret"`
	// RateLimit and RateBurst bound the ingress's MESSAGE and INVITE
	// requests per source address as the hooks' rate limit does (503
	// with Retry-After over it). Zero means 10000 a second with a burst
	// of 20000; negative: no limit.
	RateLimit int `yaml:"rate_limit"`
	RateBurst int `yaml:"rate_burst"`
	// MaxConnections and MaxConnectionsPerHost bound the TCP connections
	// accepted at once, as the hooks' are. Zero means 1024 and 256.
	MaxConnections        int `yaml:"max_connections"`
	MaxConnectionsPerHost int `yaml:"max_connections_per_host"`
	// IdleTimeout closes an accepted TCP connection that sends nothing for
	// this long (the proxy reconnects for its next request); one that
	// sends nothing at all is closed after 30 s. Zero means 5m.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// RequestTimeout closes a TCP connection whose SIP message has been
	// arriving for this long from its first octet (a peer trickling a
	// request holds its connection no longer). Zero means 20s, as
	// Kamailio's tcp_msg_read_timeout.
	RequestTimeout time.Duration `yaml:"request_timeout"`
}

// IngressOn reports whether the SIP ingress is on.
func (c SIPConfig) IngressOn() bool { return c.Ingress == nil || *c.Ingress }

// MSRPConfig configures deferpush's MSRP endpoint.
type MSRPConfig struct {
	// Listen is host:port. Empty means 127.0.0.1:2855.
	Listen string `yaml:"listen"`
	// Advertise is the host put in our MSRP path. Empty means the Listen
	// host.
	Advertise string `yaml:"advertise"`
	// ChunkSize is the largest body of one SEND, in octets: 64 to 2048.
	// Zero means 2048.
	ChunkSize int `yaml:"chunk_size"`
	// Timeout bounds the wait for each response to a SEND in a push (a
	// local 408 after it) and for a client that connects to us to do so.
	// Zero means 30s (RFC 4975).
	Timeout time.Duration `yaml:"timeout"`
	// TLSCert and TLSKey, both set, serve msrps:// (TCP/TLS/MSRP).
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
	// MaxConnections bounds the MSRP connections open at once, and
	// MaxConnectionsPerHost those from one address (a relay brings many
	// senders from one). Zero means 4096 and 1024.
	MaxConnections        int `yaml:"max_connections"`
	MaxConnectionsPerHost int `yaml:"max_connections_per_host"`
	// TrustedRelays are networks (CIDR prefixes) of MSRP relays whose 200
	// to a SEND is taken as the client's confirmation: relays the operator
	// runs. Empty trusts none: a client whose path goes through a relay is
	// asked for success REPORTs, and a message counts as delivered only
	// once its REPORT is in.
	TrustedRelays []string `yaml:"trusted_relays"`
}

// PushConfig bounds the push engine of this instance.
type PushConfig struct {
	// MaxConcurrent is the most pushes this instance runs at once. Zero
	// means 256.
	MaxConcurrent int `yaml:"max_concurrent"`
	// LockTTL is the lease of a recipient's push lock; a crashed instance's
	// lock frees itself after it. Zero means 30s.
	LockTTL time.Duration `yaml:"lock_ttl"`
}

// AORConfig says how the proxy's registrar compares addresses of record,
// which deferpush must follow: a message stored for one spelling is pushed
// at the registration of another only if both are the same AOR.
type AORConfig struct {
	// CaseSensitiveUser keeps the case of the user part (a registrar with
	// Kamailio's usrloc case_sensitive=1). False, the default, compares it
	// without case, as Kamailio's and OpenSIPS's usrloc do by default.
	CaseSensitiveUser bool `yaml:"case_sensitive_user"`
}

// ShutdownConfig bounds the graceful shutdown.
type ShutdownConfig struct {
	// Timeout is how long in-flight work may take to finish after SIGINT or
	// SIGTERM. Zero means 10s.
	Timeout time.Duration `yaml:"timeout"`
}

const envPrefix = "DEFERPUSH_"

// Load builds the configuration from the file (when path is not empty),
// the environment (lookup, e.g. os.LookupEnv) and the flag values (YAML
// path -> value), then fills defaults and validates. A wrong field is a
// *FieldError that says where its value came from.
func Load(path string, flags map[string]string, lookup func(string) (string, bool)) (*Config, error) {
	var cfg Config
	if path != "" {
		if err := loadFile(path, &cfg); err != nil {
			return nil, err
		}
	}
	if err := applyEnv(&cfg, lookup); err != nil {
		return nil, err
	}
	if err := applyFlags(&cfg, flags); err != nil {
		return nil, err
	}
	cfg.defaults()
	if err := cfg.validate(); err != nil {
		return nil, locate(err, path, flags, lookup)
	}
	return &cfg, nil
}

// applyFlags sets fields named by YAML path, reusing the environment's
// parsing so that a flag and its variable accept the same values.
func applyFlags(c *Config, flags map[string]string) error {
	lookup := func(name string) (string, bool) {
		for field, v := range flags {
			if EnvName(field) == name {
				return v, true
			}
		}
		return "", false
	}
	err := applyEnv(c, lookup)
	var fe *FieldError
	if errors.As(err, &fe) {
		fe.Source = "flag"
	}
	return err
}

// EnvName is the environment variable of a field given by its YAML path:
// hooks.listen is DEFERPUSH_HOOKS_LISTEN.
func EnvName(field string) string {
	b := []byte(envPrefix)
	for _, r := range field {
		switch {
		case r == '.':
			b = append(b, '_')
		case r >= 'a' && r <= 'z':
			b = append(b, byte(r-'a'+'A'))
		default:
			b = append(b, byte(r))
		}
	}
	return string(b)
}

// defaults fills the zero values documented on each field.
func (c *Config) defaults() {
	set := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	set(&c.Log.Level, "info")
	set(&c.Log.Format, "auto")
	set(&c.Hooks.Listen, "127.0.0.1:8710")
	set(&c.Admin.Listen, "127.0.0.1:8711")
	set(&c.SIP.Listen, "127.0.0.1:5070")
	set(&c.MSRP.Listen, "127.0.0.1:2855")
	if c.MSRP.ChunkSize == 0 {
		c.MSRP.ChunkSize = 2048
	}
	if c.Hooks.RateLimit == 0 {
		c.Hooks.RateLimit = 10000
	}
	if c.Hooks.RateBurst == 0 {
		c.Hooks.RateBurst = 2 * max(c.Hooks.RateLimit, 0)
	}
	if c.SIP.RateLimit == 0 {
		c.SIP.RateLimit = 10000
	}
	if c.SIP.RateBurst == 0 {
		c.SIP.RateBurst = 2 * max(c.SIP.RateLimit, 0)
	}
	if len(c.SIP.TrustedSources) == 0 {
		c.SIP.TrustedSources = []string{"127.0.0.0/8", "::1/128"}
	}
	if c.SIP.IdleTimeout == 0 {
		c.SIP.IdleTimeout = 5 * time.Minute
	}
	if c.SIP.RequestTimeout == 0 {
		c.SIP.RequestTimeout = 20 * time.Second
	}
	if c.MSRP.Timeout == 0 {
		c.MSRP.Timeout = 30 * time.Second
	}
	if c.Push.MaxConcurrent == 0 {
		c.Push.MaxConcurrent = 256
	}
	if c.Push.LockTTL == 0 {
		c.Push.LockTTL = 30 * time.Second
	}
	if c.Shutdown.Timeout == 0 {
		c.Shutdown.Timeout = 10 * time.Second
	}
}

// FieldError says which field of the configuration is wrong, and where.
type FieldError struct {
	// Field is the YAML path, e.g. hooks.listen.
	Field string
	// Source is where the value came from: a file name with its line
	// (config.yaml:12), an environment variable, or a flag.
	Source string
	Msg    string
}

func (e *FieldError) Error() string {
	if e.Source != "" {
		return fmt.Sprintf("%s: %s: %s", e.Source, e.Field, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.Field, e.Msg)
}

// validate checks every section and returns the first wrong field.
func (c *Config) validate() error {
	for _, check := range []func() error{
		c.Log.validate, c.validateListeners, c.Hooks.validate, c.Admin.validate,
		c.Redis.validate, c.SIP.validate, c.MSRP.validate, c.Push.validate, c.Shutdown.validate,
	} {
		if err := check(); err != nil {
			return err
		}
	}
	return nil
}

func bad(field, format string, args ...any) error {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

func (c LogConfig) validate() error {
	switch c.Level {
	case "debug", "info", "warn", "error":
	default:
		return bad("log.level", "%q is not one of debug, info, warn, error", c.Level)
	}
	switch c.Format {
	case "auto", "text", "json":
	default:
		return bad("log.format", "%q is not one of auto, text, json", c.Format)
	}
	return nil
}

// validateListeners checks what the listeners have in common: host:port
// addresses, an advertised address for a wildcard, TLS files in pairs.
func (c *Config) validateListeners() error {
	for _, f := range []struct{ name, v string }{
		{"hooks.listen", c.Hooks.Listen}, {"admin.listen", c.Admin.Listen},
		{"sip.listen", c.SIP.Listen}, {"msrp.listen", c.MSRP.Listen},
	} {
		if _, port, err := net.SplitHostPort(f.v); err != nil {
			return bad(f.name, "%q is not host:port: %v", f.v, err)
		} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			return bad(f.name, "%q has no valid port", f.v)
		}
	}
	for _, f := range []struct{ name, listen, advertise string }{
		{"sip", c.SIP.Listen, c.SIP.Advertise}, {"msrp", c.MSRP.Listen, c.MSRP.Advertise},
	} {
		host, _, _ := net.SplitHostPort(f.listen)
		if ip, err := netip.ParseAddr(host); (host == "" || err == nil && ip.IsUnspecified()) && f.advertise == "" {
			return bad(f.name+".advertise", "is required when %s.listen (%s) is a wildcard address: peers need an address to reach", f.name, f.listen)
		}
	}
	if c.Hooks.Listen == c.Admin.Listen && !strings.HasSuffix(c.Hooks.Listen, ":0") {
		return bad("admin.listen", "must differ from hooks.listen (%s): the admin API and the hooks are served apart", c.Hooks.Listen)
	}
	for _, p := range []struct{ name, cert, key string }{
		{"hooks", c.Hooks.TLSCert, c.Hooks.TLSKey},
		{"admin", c.Admin.TLSCert, c.Admin.TLSKey},
		{"msrp", c.MSRP.TLSCert, c.MSRP.TLSKey},
	} {
		if (p.cert == "") != (p.key == "") {
			return bad(p.name+".tls_key", "tls_cert and tls_key must be set together")
		}
	}
	return nil
}

func (c HooksConfig) validate() error {
	for i, cidr := range c.AllowCIDRs {
		if _, err := netip.ParsePrefix(cidr); err != nil {
			return bad(fmt.Sprintf("hooks.allow_cidrs[%d]", i), "%q is not a CIDR prefix", cidr)
		}
	}
	if c.Token != "" && len(c.Token) < 16 {
		return bad("hooks.token", "must be at least 16 characters")
	}
	if c.RateLimit > 0 && c.RateBurst < 1 {
		return bad("hooks.rate_burst", "must be at least 1 when hooks.rate_limit is set")
	}
	return validConns("hooks", c.MaxConnections, c.MaxConnectionsPerHost)
}

// validConns checks a listener's connection bounds.
func validConns(section string, max, perHost int) error {
	switch {
	case max < 0:
		return bad(section+".max_connections", "must not be negative")
	case perHost < 0:
		return bad(section+".max_connections_per_host", "must not be negative")
	}
	return nil
}

func (c AdminConfig) validate() error {
	seen := map[string]bool{}
	for i, tk := range c.Tokens {
		field := fmt.Sprintf("admin.tokens[%d]", i)
		switch {
		case tk.Name == "":
			return bad(field+".name", "is required")
		case len(tk.Token) < 16:
			return bad(field+".token", "must be at least 16 characters")
		case tk.Role != "admin" && tk.Role != "viewer":
			return bad(field+".role", "%q is not admin or viewer", tk.Role)
		case seen[tk.Token]:
			return bad(field+".token", "is used twice")
		}
		seen[tk.Token] = true
	}
	if c.Token != "" && len(c.Token) < 16 {
		return bad("admin.token", "must be at least 16 characters")
	}
	return validConns("admin", c.MaxConnections, c.MaxConnectionsPerHost)
}

func (c RedisConfig) validate() error {
	if c.URL != "" {
		if _, err := store.ParseURL(c.URL); err != nil {
			return bad("redis.url", "%v", err)
		}
	}
	switch {
	case c.MinReplicas < 0 || c.MinReplicas > 16:
		return bad("redis.min_replicas", "%d is not between 0 and 16", c.MinReplicas)
	case c.MinReplicas > 0 && c.URL == "":
		return bad("redis.min_replicas", "needs redis.url: the embedded store has no replicas")
	case c.ReplicaTimeout < 0 || c.ReplicaTimeout > 2*time.Second:
		// Longer would outlast the Redis client's 3 s read timeout.
		return bad("redis.replica_timeout", "%v is not between 0 and 2s", c.ReplicaTimeout)
	}
	return nil
}

func (c SIPConfig) validate() error {
	if p := c.OutboundProxy; p != "" && !strings.HasPrefix(p, "sip:") && !strings.HasPrefix(p, "sips:") {
		return bad("sip.outbound_proxy", "%q is not a sip: or sips: URI", p)
	}
	for i, cidr := range c.TrustedSources {
		if _, err := netip.ParsePrefix(cidr); err != nil {
			return bad(fmt.Sprintf("sip.trusted_sources[%d]", i), "%q is not a CIDR prefix", cidr)
		}
	}
	switch {
	case c.IngressSecret != "" && len(c.IngressSecret) < 16:
		return bad("sip.ingress_secret", "must be at least 16 characters")
	case c.RateLimit > 0 && c.RateBurst < 1:
		return bad("sip.rate_burst", "must be at least 1 when sip.rate_limit is set")
	case c.IdleTimeout < time.Second:
		return bad("sip.idle_timeout", "must be at least 1s")
	case c.RequestTimeout < time.Second:
		return bad("sip.request_timeout", "must be at least 1s")
	}
	return validConns("sip", c.MaxConnections, c.MaxConnectionsPerHost)
}

func (c MSRPConfig) validate() error {
	// The SDP offer carries the MSRP host in its c= line, which takes an
	// address (plugin/sdp): a name would fail every push.
	if host := c.Advertise; host != "" {
		if _, err := netip.ParseAddr(host); err != nil {
			return bad("msrp.advertise", "%q is not an IP address (it goes in the SDP c= line)", host)
		}
	} else if host, _, _ := net.SplitHostPort(c.Listen); host != "" {
		if _, err := netip.ParseAddr(host); err != nil {
			return bad("msrp.listen", "host %q is not an IP address; set msrp.advertise to the address peers reach", host)
		}
	}
	switch {
	case c.ChunkSize < 64 || c.ChunkSize > 2048:
		// Chunks go out whole with a known range end, which RFC 4975
		// §7.1.1 allows only up to 2048 octets: a larger chunk must be
		// interruptible, and receivers and relays need take no more.
		return bad("msrp.chunk_size", "%d is not between 64 and 2048 octets (RFC 4975 §7.1.1)", c.ChunkSize)
	case c.Timeout < time.Second:
		return bad("msrp.timeout", "must be at least 1s")
	case c.MaxConnections < 0 || c.MaxConnectionsPerHost < 0:
		return bad("msrp.max_connections", "must not be negative")
	}
	for i, cidr := range c.TrustedRelays {
		if _, err := netip.ParsePrefix(cidr); err != nil {
			return bad(fmt.Sprintf("msrp.trusted_relays[%d]", i), "%q is not a CIDR prefix", cidr)
		}
	}
	return nil
}

func (c PushConfig) validate() error {
	switch {
	case c.MaxConcurrent < 1:
		return bad("push.max_concurrent", "must be at least 1")
	case c.LockTTL < time.Second:
		return bad("push.lock_ttl", "must be at least 1s")
	}
	return nil
}

func (c ShutdownConfig) validate() error {
	if c.Timeout < 0 {
		return bad("shutdown.timeout", "must not be negative")
	}
	return nil
}

// loadFile decodes a YAML file strictly: an unknown field, a wrong type or a
// field that fails validation is reported with the file, line and field.
func loadFile(path string, c *Config) error {
	src, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if err := yaml.UnmarshalWithOptions(src, c, yaml.Strict()); err != nil {
		return fmt.Errorf("config %s: %s", path, yaml.FormatError(err, false, true))
	}
	return nil
}

// locate says where the value of a FieldError's field came from: a flag,
// an environment variable, or the file and line, in that order of
// precedence.
func locate(err error, path string, flags map[string]string, lookup func(string) (string, bool)) error {
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Source != "" {
		return err
	}
	if _, ok := flags[fe.Field]; ok {
		fe.Source = "flag"
		return fe
	}
	if _, ok := lookup(EnvName(fe.Field)); ok {
		fe.Source = "environment " + EnvName(fe.Field)
		return fe
	}
	if path == "" {
		return err
	}
	src, rerr := os.ReadFile(path)
	if rerr != nil {
		return err
	}
	yp, perr := yaml.PathString("$." + fe.Field)
	if perr != nil {
		return err
	}
	node, nerr := yp.ReadNode(bytes.NewReader(src))
	if nerr != nil || node == nil {
		return err
	}
	fe.Source = fmt.Sprintf("%s:%d", path, node.GetToken().Position.Line)
	return fe
}

// applyEnv sets every field that has its DEFERPUSH_ variable set.
func applyEnv(c *Config, lookup func(string) (string, bool)) error {
	return walkEnv(reflect.ValueOf(c).Elem(), envPrefix, "", lookup)
}

func walkEnv(v reflect.Value, prefix, path string, lookup func(string) (string, bool)) error {
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if tag == "" || tag == "-" {
			continue
		}
		name := prefix + strings.ToUpper(tag)
		field := tag
		if path != "" {
			field = path + "." + tag
		}
		fv := v.Field(i)
		if fv.Kind() == reflect.Struct {
			if err := walkEnv(fv, name+"_", field, lookup); err != nil {
				return err
			}
			continue
		}
		raw, ok := lookup(name)
		if !ok {
			continue
		}
		if err := setScalar(fv, raw); err != nil {
			return &FieldError{Field: field, Source: "environment " + name, Msg: err.Error()}
		}
	}
	return nil
}

// setScalar parses raw into v, for the kinds a Config holds.
func setScalar(v reflect.Value, raw string) error {
	switch {
	case v.Type() == reflect.TypeFor[time.Duration]():
		d, err := time.ParseDuration(raw)
		if err != nil {
			return fmt.Errorf("%q is not a duration like 30s or 5m", raw)
		}
		v.SetInt(int64(d))
	case v.Kind() == reflect.String:
		v.SetString(raw)
	case v.Kind() == reflect.Int:
		n, err := strconv.Atoi(raw)
		if err != nil {
			return fmt.Errorf("%q is not an integer", raw)
		}
		v.SetInt(int64(n))
	case v.Kind() == reflect.Bool || v.Type() == reflect.TypeFor[*bool]():
		b, err := strconv.ParseBool(raw)
		if err != nil {
			return fmt.Errorf("%q is not true or false", raw)
		}
		if v.Kind() == reflect.Pointer {
			v.Set(reflect.ValueOf(&b))
		} else {
			v.SetBool(b)
		}
	case v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.String:
		var parts []string
		for p := range strings.SplitSeq(raw, ",") {
			if p = strings.TrimSpace(p); p != "" {
				parts = append(parts, p)
			}
		}
		v.Set(reflect.ValueOf(parts))
	default:
		return fmt.Errorf("cannot be set from the environment; use the config file")
	}
	return nil
}
