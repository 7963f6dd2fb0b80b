package test

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/deferpush/deferpush/adapters/imclient"
	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/store"
	"github.com/deferpush/deferpush/test/harness"
)

// kamailioStack is the whole deployment of the README's "Attaching
// Kamailio": redis-server, the deferpush binary, and Kamailio running the
// shipped adapters/kamailio/kamailio.cfg, all on free loopback ports.
type kamailioStack struct {
	redis *harness.RedisServer
	dp    *deferpushProc
	k     *harness.KamailioProc
	st    *store.Redis
	token string
	// dpEnv and dpArgs start deferpush (again, after a kill), with the
	// open-file limit dpNofile (0: unchanged).
	dpEnv, dpArgs []string
	dpNofile      int
}

type stackOptions struct {
	// policy edits the operator policy before deferpush starts.
	policy func(*plugin.Policy)
	// hooks, when set, is the hooks URL Kamailio posts to instead of
	// deferpush's, given deferpush's: a test puts a slow proxy there.
	hooks func(dpHooks string) string
	// token is the token Kamailio sends; empty: deferpush's.
	token string
	// messageTimeout is the cfg's MESSAGE_TIMEOUT (ms); zero: 1500.
	messageTimeout int
	// redis are options of the redis-server (harness.WithAOF()).
	redis []harness.RedisOption
	// dpEnv and dpArgs are more environment and flags for deferpush
	// (fixed ports, a short lease).
	dpEnv, dpArgs []string
	// storeViaSIP runs the cfg with STORE_VIA_SIP: MESSAGEs to store are
	// relayed to deferpush's SIP ingress instead of the message hook.
	storeViaSIP bool
	// kamailioArgs are more Kamailio command-line arguments (-m for the
	// shared memory of thousands of users).
	kamailioArgs []string
	// dpNofile, when set, is deferpush's open-file limit (ulimit -n).
	dpNofile int
}

const domain = "example.com"

func startKamailioStack(t *testing.T, o stackOptions) *kamailioStack {
	t.Helper()
	s := &kamailioStack{redis: harness.Redis(t, o.redis...), token: "kamailio-test-token-0123456789"}
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
	sipPort, internalPort := harness.FreePort(t), harness.FreePort(t)
	for internalPort == sipPort {
		internalPort = harness.FreePort(t)
	}
	s.dpEnv = append([]string{"DEFERPUSH_HOOKS_TOKEN=" + s.token}, o.dpEnv...)
	s.dpArgs = append([]string{"--redis", s.redis.URL(),
		"--outbound-proxy", fmt.Sprintf("sip:127.0.0.1:%d;transport=tcp", internalPort)}, o.dpArgs...)
	s.dpNofile = o.dpNofile
	s.dp = startDeferpushLimited(t, s.dpNofile, s.dpEnv, s.dpArgs...)
	hooks := "http://" + s.dp.HooksAddr
	if o.hooks != nil {
		hooks = o.hooks(hooks)
	}
	token := s.token
	if o.token != "" {
		token = o.token
	}
	if o.messageTimeout == 0 {
		o.messageTimeout = 1500
	}
	defines := map[string]string{
		"INTERNAL_PORT":   strconv.Itoa(internalPort),
		"DOMAIN":          strconv.Quote(domain),
		"DP_ADDR":         `"127.0.0.1"`,
		"DP_SIP":          strconv.Quote("sip:" + s.dp.SIPAddr + ";transport=tcp"),
		"DP_HOOKS":        strconv.Quote(hooks),
		"DP_TOKEN":        strconv.Quote(token),
		"MESSAGE_TIMEOUT": strconv.Itoa(o.messageTimeout),
		"HOOK_TIMEOUT":    "10",
		"MIN_EXPIRES":     "1",
		"TIMER_INTERVAL":  "1",
	}
	if o.storeViaSIP {
		defines["STORE_VIA_SIP"] = "1"
	}
	s.k = harness.Kamailio(t, harness.KamailioConfig{
		ConfigFile: "../adapters/kamailio/kamailio.cfg",
		SIPPort:    sipPort,
		Defines:    defines,
		ExtraArgs:  o.kamailioArgs,
	})
	return s
}

// client starts a reference client for user (sip:user@example.com) whose
// requests go through Kamailio.
func (s *kamailioStack) client(t *testing.T, user string, cfg imclient.Config) *imclient.Client {
	t.Helper()
	cfg.Proxy = s.k.SIPAddr
	return newClient(t, "sip:"+user+"@"+domain, cfg)
}

// register registers c through Kamailio and fails the test unless 200.
func (s *kamailioStack) register(t *testing.T, c *imclient.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	code, err := c.Register(ctx, 300)
	if err != nil || code != 200 {
		t.Fatalf("REGISTER through Kamailio = %d, %v; want 200", code, err)
	}
}

func (s *kamailioStack) counts(t *testing.T, user string) plugin.Counts {
	t.Helper()
	n, err := s.st.Count(context.Background(), plugin.MustParseAOR("sip:"+user+"@"+domain))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// waitPending polls until user has n pending messages.
func (s *kamailioStack) waitPending(t *testing.T, user string, n int) {
	t.Helper()
	waitFor(t, 15*time.Second, fmt.Sprintf("%d pending for %s", n, user), func() bool {
		return s.counts(t, user).Pending == n
	})
}
