package config

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "deferpush.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func noEnv(string) (string, bool) { return "", false }

func TestLoadConfigDefaults(t *testing.T) {
	cfg, err := Load("", nil, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Log:   LogConfig{Level: "info", Format: "auto"},
		Hooks: HooksConfig{Listen: "127.0.0.1:8710", RateLimit: 10000, RateBurst: 20000},
		Admin: AdminConfig{Listen: "127.0.0.1:8711"},
		SIP: SIPConfig{Listen: "127.0.0.1:5070", TrustedSources: []string{"127.0.0.0/8", "::1/128"},
			RateLimit: 10000, RateBurst: 20000, IdleTimeout: 5 * time.Minute, RequestTimeout: 20 * time.Second},
		MSRP:     MSRPConfig{Listen: "127.0.0.1:2855", ChunkSize: 2048, Timeout: 30 * time.Second},
		Push:     PushConfig{MaxConcurrent: 256, LockTTL: 30 * time.Second},
		Shutdown: ShutdownConfig{Timeout: 10 * time.Second},
	}
	if diff := cmp.Diff(want, *cfg); diff != "" {
		t.Errorf("defaults (-want +got):\n%s", diff)
	}
}

func TestLoadConfigPrecedence(t *testing.T) {
	path := writeFile(t, `
redis:
  url: redis://file:6379/0
hooks:
  listen: 127.0.0.1:9001
admin:
  listen: 127.0.0.1:9002
log:
  level: debug
`)
	env := map[string]string{
		"DEFERPUSH_HOOKS_LISTEN":        "127.0.0.1:9101",
		"DEFERPUSH_REDIS_URL":           "redis://env:6379/0",
		"DEFERPUSH_HOOKS_ALLOW_CIDRS":   "127.0.0.0/8, ::1/128",
		"DEFERPUSH_PUSH_LOCK_TTL":       "45s",
		"DEFERPUSH_MSRP_TIMEOUT":        "3s",
		"DEFERPUSH_MSRP_TRUSTED_RELAYS": "10.1.0.0/16,192.0.2.7/32",
		"DEFERPUSH_SIP_INGRESS":         "false",
	}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	cfg, err := Load(path, map[string]string{"redis.url": "redis://flag:6379/0"}, lookup)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ field, got, want string }{
		{"redis.url (flag over env over file)", cfg.Redis.URL, "redis://flag:6379/0"},
		{"hooks.listen (env over file)", cfg.Hooks.Listen, "127.0.0.1:9101"},
		{"admin.listen (file)", cfg.Admin.Listen, "127.0.0.1:9002"},
		{"log.level (file)", cfg.Log.Level, "debug"},
		{"push.lock_ttl (env)", cfg.Push.LockTTL.String(), "45s"},
		{"msrp.timeout (env)", cfg.MSRP.Timeout.String(), "3s"},
		{"hooks.allow_cidrs (env list)", strings.Join(cfg.Hooks.AllowCIDRs, "|"), "127.0.0.0/8|::1/128"},
		{"msrp.trusted_relays (env list)", strings.Join(cfg.MSRP.TrustedRelays, "|"), "10.1.0.0/16|192.0.2.7/32"},
		{"sip.ingress (env, a switch whose default is on)", strconv.FormatBool(cfg.SIP.IngressOn()), "false"},
	} {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.field, c.got, c.want)
		}
	}
}

func TestLoadConfigErrorsNameFileLineAndField(t *testing.T) {
	for _, tc := range []struct {
		name string
		body string
		env  map[string]string
		want []string // substrings of the error
	}{
		{
			name: "unknown field",
			body: "hooks:\n  listen: 127.0.0.1:1\n  lisen: x\n",
			want: []string{"deferpush.yaml", "[3:", "lisen"},
		},
		{
			name: "wrong type",
			body: "msrp:\n  chunk_size: lots\n",
			want: []string{"deferpush.yaml", "[2:", "chunk_size"},
		},
		{
			name: "not YAML",
			body: "hooks: [\n",
			want: []string{"deferpush.yaml"},
		},
		{
			name: "invalid value",
			body: "log:\n  level: info\nadmin:\n  listen: nowhere\n",
			want: []string{"deferpush.yaml:4", "admin.listen", `"nowhere" is not host:port`},
		},
		{
			name: "invalid list item",
			body: "hooks:\n  allow_cidrs:\n    - 127.0.0.0/8\n    - 10.0.0.300/8\n",
			want: []string{"deferpush.yaml:4", "hooks.allow_cidrs[1]", "not a CIDR"},
		},
		{
			name: "trusted relay not a network",
			body: "msrp:\n  trusted_relays: [10.0.0.0/8, relay.example.com]\n",
			want: []string{"deferpush.yaml:2", "msrp.trusted_relays[1]", "not a CIDR"},
		},
		{
			name: "token role",
			body: "admin:\n  tokens:\n    - name: ops\n      token: 0123456789abcdef0123\n      role: root\n",
			want: []string{"deferpush.yaml:5", "admin.tokens[0].role", `"root"`},
		},
		{
			name: "msrp host not an address",
			body: "msrp:\n  listen: 0.0.0.0:2855\n  advertise: msrp.example.com\n",
			want: []string{"deferpush.yaml:3", "msrp.advertise", "not an IP address"},
		},
		{
			// Larger chunks would have to be interruptible (RFC 4975 §7.1.1).
			name: "chunk size over 2048",
			body: "msrp:\n  chunk_size: 2049\n",
			want: []string{"deferpush.yaml:2", "msrp.chunk_size", "between 64 and 2048"},
		},
		{
			name: "trusted source not a network",
			body: "sip:\n  trusted_sources: [10.0.0.0/8, kamailio.example.com]\n",
			want: []string{"deferpush.yaml:2", "sip.trusted_sources[1]", "not a CIDR"},
		},
		{
			name: "short ingress secret",
			body: "sip:\n  ingress_secret: short\n",
			want: []string{"deferpush.yaml:2", "sip.ingress_secret", "at least 16"},
		},
		{
			name: "request timeout under a second",
			body: "sip:\n  request_timeout: 500ms\n",
			want: []string{"deferpush.yaml:2", "sip.request_timeout", "at least 1s"},
		},
		{
			name: "negative connection bound",
			body: "hooks:\n  max_connections: -1\n",
			want: []string{"deferpush.yaml:2", "hooks.max_connections", "negative"},
		},
		{
			name: "bad ingress switch",
			env:  map[string]string{"DEFERPUSH_SIP_INGRESS": "maybe"},
			want: []string{"environment DEFERPUSH_SIP_INGRESS", "sip.ingress", "not true or false"},
		},
		{
			name: "bad environment value",
			env:  map[string]string{"DEFERPUSH_PUSH_MAX_CONCURRENT": "many"},
			want: []string{"environment DEFERPUSH_PUSH_MAX_CONCURRENT", "push.max_concurrent", "not an integer"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := ""
			if tc.body != "" {
				path = writeFile(t, tc.body)
			}
			lookup := func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok }
			_, err := Load(path, nil, lookup)
			if err == nil {
				t.Fatal("loadConfig succeeded, want an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}
