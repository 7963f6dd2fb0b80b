package test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/deferpush/deferpush/adapters/imclient"
	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/store"
	"github.com/deferpush/deferpush/test/harness"
)

// dpStack is what an end-to-end deployment has whichever proxy runs in
// front: redis-server, the deferpush binary, a store client on the same
// Redis, the hooks token, and the proxy's SIP address. kamailioStack and
// opensipsStack embed it; the flows of proxy_flows_test.go take it.
type dpStack struct {
	redis *harness.RedisServer
	dp    *deferpushProc
	st    *store.Redis
	token string
	// dpEnv and dpArgs start deferpush (again, after a kill), with the
	// open-file limit dpNofile (0: unchanged).
	dpEnv, dpArgs []string
	dpNofile      int
	// proxy names the proxy in messages ("Kamailio", "OpenSIPS");
	// proxyAddr is host:port of its users' SIP listener (UDP and TCP).
	proxy, proxyAddr string
}

// startDeferpushSide starts redis-server, applies o.policy and starts
// deferpush with its outbound proxy on the proxy's internal port.
func startDeferpushSide(t *testing.T, o stackOptions, proxy string, internalPort int) *dpStack {
	t.Helper()
	s := &dpStack{redis: harness.Redis(t, o.redis...), token: strings.ToLower(proxy) + "-test-token-0123456789", proxy: proxy}
	var err error
	s.st, err = store.New(store.Config{URL: s.redis.URL()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.st.Close() })
	if o.policy != nil {
		ctx := context.Background()
		p, err := s.st.Policy(ctx)
		if err != nil {
			t.Fatal(err)
		}
		o.policy(&p)
		if err := s.st.SetPolicy(ctx, p, "test"); err != nil {
			t.Fatal(err)
		}
	}
	s.dpEnv = append([]string{"DEFERPUSH_HOOKS_TOKEN=" + s.token}, o.dpEnv...)
	s.dpArgs = append([]string{"--redis", s.redis.URL(),
		"--outbound-proxy", fmt.Sprintf("sip:127.0.0.1:%d;transport=tcp", internalPort)}, o.dpArgs...)
	s.dpNofile = o.dpNofile
	s.dp = startDeferpushLimited(t, s.dpNofile, s.dpEnv, s.dpArgs...)
	return s
}

// hooksURL is the hooks URL the proxy posts to: deferpush's, or what
// o.hooks puts in front of it.
func (s *dpStack) hooksURL(o stackOptions) string {
	hooks := "http://" + s.dp.HooksAddr
	if o.hooks != nil {
		hooks = o.hooks(hooks)
	}
	return hooks
}

// proxyToken is the token the proxy sends: deferpush's unless o.token.
func (s *dpStack) proxyToken(o stackOptions) string {
	if o.token != "" {
		return o.token
	}
	return s.token
}

// client starts a reference client for user (sip:user@example.com) whose
// requests go through the proxy.
func (s *dpStack) client(t *testing.T, user string, cfg imclient.Config) *imclient.Client {
	t.Helper()
	cfg.Proxy = s.proxyAddr
	return newClient(t, "sip:"+user+"@"+domain, cfg)
}

// register registers c through the proxy and fails the test unless 200.
func (s *dpStack) register(t *testing.T, c *imclient.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	code, err := c.Register(ctx, 300)
	if err != nil || code != 200 {
		t.Fatalf("REGISTER through %s = %d, %v; want 200", s.proxy, code, err)
	}
}

func (s *dpStack) counts(t *testing.T, user string) plugin.Counts {
	t.Helper()
	n, err := s.st.Count(context.Background(), plugin.MustParseAOR("sip:"+user+"@"+domain))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// waitPending polls until user has n pending messages.
func (s *dpStack) waitPending(t *testing.T, user string, n int) {
	t.Helper()
	waitFor(t, 15*time.Second, fmt.Sprintf("%d pending for %s", n, user), func() bool {
		return s.counts(t, user).Pending == n
	})
}

// startStack starts a whole deployment with one proxy; the flows take it
// to run the same test through Kamailio and through OpenSIPS.
type startStack func(t *testing.T, o stackOptions) *dpStack
