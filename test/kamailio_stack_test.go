package test

import (
	"strconv"
	"strings"
	"testing"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/test/harness"
)

// kamailioStack is the whole deployment of the README's "Attaching
// Kamailio": redis-server, the deferpush binary, and Kamailio running the
// shipped adapters/kamailio/kamailio.cfg, all on free loopback ports.
type kamailioStack struct {
	*dpStack
	k *harness.KamailioProc
	// defines are the -A defines k runs with (a second proxy on the same
	// deferpush and Redis starts from them).
	defines map[string]string
}

type stackOptions struct {
	// policy edits the operator policy before deferpush starts.
	policy func(*plugin.Policy)
	// hooks, when set, is the hooks URL the proxy posts to instead of
	// deferpush's, given deferpush's: a test puts a slow proxy there.
	hooks func(dpHooks string) string
	// token is the token the proxy sends; empty: deferpush's.
	token string
	// messageTimeout is how long the proxy waits for a registered
	// contact to answer a MESSAGE before storing it (Kamailio's
	// MESSAGE_TIMEOUT in ms; OpenSIPS's in whole seconds, rounded up);
	// zero: 1500 ms.
	messageTimeout int
	// redis are options of the redis-server (harness.WithAOF()).
	redis []harness.RedisOption
	// dpEnv and dpArgs are more environment and flags for deferpush
	// (fixed ports, a short lease).
	dpEnv, dpArgs []string
	// storeViaSIP runs the cfg with STORE_VIA_SIP: MESSAGEs to store are
	// relayed to deferpush's SIP ingress instead of the message hook
	// (Kamailio only).
	storeViaSIP bool
	// redisDirect runs the cfg with REDIS_DIRECT: MESSAGEs are stored and
	// registrations reported through deferpush's Redis functions
	// (Kamailio's ndb_redis, OpenSIPS's cachedb_redis) instead of the
	// hooks.
	redisDirect bool
	// kamailioArgs are more Kamailio command-line arguments (-m for the
	// shared memory of thousands of users).
	kamailioArgs []string
	// dpNofile, when set, is deferpush's open-file limit (ulimit -n).
	dpNofile int
}

const domain = "example.com"

func startKamailioStack(t *testing.T, o stackOptions) *kamailioStack {
	t.Helper()
	sipPort, internalPort := harness.FreePort(t), harness.FreePort(t)
	for internalPort == sipPort {
		internalPort = harness.FreePort(t)
	}
	s := &kamailioStack{dpStack: startDeferpushSide(t, o, "Kamailio", internalPort)}
	if o.messageTimeout == 0 {
		o.messageTimeout = 1500
	}
	defines := map[string]string{
		"INTERNAL_PORT":   strconv.Itoa(internalPort),
		"DOMAIN":          strconv.Quote(domain),
		"DP_ADDR":         `"127.0.0.1"`,
		"DP_SIP":          strconv.Quote("sip:" + s.dp.SIPAddr + ";transport=tcp"),
		"DP_HOOKS":        strconv.Quote(s.hooksURL(o)),
		"DP_TOKEN":        strconv.Quote(s.proxyToken(o)),
		"MESSAGE_TIMEOUT": strconv.Itoa(o.messageTimeout),
		"HOOK_TIMEOUT":    "10",
		"MIN_EXPIRES":     "1",
		"TIMER_INTERVAL":  "1",
	}
	if o.storeViaSIP {
		defines["STORE_VIA_SIP"] = "1"
	}
	if o.redisDirect {
		host, port, _ := strings.Cut(s.redis.Addr, ":")
		defines["REDIS_DIRECT"] = "1"
		defines["REDIS_SERVER"] = strconv.Quote("name=dp;addr=" + host + ";port=" + port)
	}
	s.defines = defines
	s.k = harness.Kamailio(t, harness.KamailioConfig{
		ConfigFile: "../adapters/kamailio/kamailio.cfg",
		SIPPort:    sipPort,
		Defines:    defines,
		ExtraArgs:  o.kamailioArgs,
	})
	s.proxyAddr = s.k.SIPAddr
	return s
}

// kamailioStarter is startKamailioStack for the shared flows.
func kamailioStarter(t *testing.T, o stackOptions) *dpStack {
	t.Helper()
	return startKamailioStack(t, o).dpStack
}
