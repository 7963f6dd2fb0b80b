package test

import (
	"strconv"
	"testing"

	"github.com/deferpush/deferpush/test/harness"
)

// opensipsStack is the whole deployment of the README's "Attaching
// OpenSIPS": redis-server, the deferpush binary, and OpenSIPS 3.4 running
// the shipped adapters/opensips/opensips.cfg rendered with m4, all on free
// loopback ports.
type opensipsStack struct {
	*dpStack
	o *harness.OpenSIPSProc
}

// opensipsDefines are the m4 settings the stack renders opensips.cfg with,
// the way the README tells operators to.
func opensipsDefines(s *dpStack, o stackOptions, internalPort int) map[string]string {
	ms := o.messageTimeout
	if ms == 0 {
		ms = 1500
	}
	return map[string]string{
		"INTERNAL_PORT":   strconv.Itoa(internalPort),
		"DOMAIN":          strconv.Quote(domain),
		"DP_ADDR":         `"127.0.0.1"`,
		"DP_SIP":          strconv.Quote("sip:" + s.dp.SIPAddr + ";transport=tcp"),
		"DP_HOOKS":        strconv.Quote(s.hooksURL(o)),
		"DP_TOKEN":        strconv.Quote(s.proxyToken(o)),
		"MESSAGE_TIMEOUT": strconv.Itoa((ms + 999) / 1000),
		"HOOK_TIMEOUT":    "10",
		"MIN_EXPIRES":     "1",
		"TIMER_INTERVAL":  "1",
	}
}

func startOpenSIPSStack(t *testing.T, o stackOptions) *opensipsStack {
	t.Helper()
	if o.storeViaSIP || len(o.kamailioArgs) > 0 {
		t.Fatal("storeViaSIP and kamailioArgs are Kamailio's options")
	}
	// Before anything starts: skip (or fail under CI) without OpenSIPS.
	harness.RequireOpenSIPS(t)
	sipPort, internalPort := harness.FreePort(t), harness.FreePort(t)
	for internalPort == sipPort {
		internalPort = harness.FreePort(t)
	}
	s := &opensipsStack{dpStack: startDeferpushSide(t, o, "OpenSIPS", internalPort)}
	defs := opensipsDefines(s.dpStack, o, internalPort)
	if o.redisDirect {
		defs["REDIS_DIRECT"] = "1"
		defs["REDIS_ADDR"] = s.redis.Addr
		defs["REDIS_TIMEOUT"] = "1000"
	}
	s.o = harness.OpenSIPS(t, harness.OpenSIPSConfig{
		ConfigFile: "../adapters/opensips/opensips.cfg",
		SIPPort:    sipPort,
		Defines:    defs,
	})
	s.proxyAddr = s.o.SIPAddr
	return s
}

// opensipsStarter is startOpenSIPSStack for the shared flows.
func opensipsStarter(t *testing.T, o stackOptions) *dpStack {
	t.Helper()
	return startOpenSIPSStack(t, o).dpStack
}
