package test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/deferpush/deferpush/test/harness"
)

// TestOpenSIPSConfigChecks renders adapters/opensips/opensips.cfg with m4
// as its header says, with the defaults and with every setting given, and
// has OpenSIPS 3.4 check it (opensips -C: parse, load the modules, fix up
// every call). A script with an error is refused by the same check.
func TestOpenSIPSConfigChecks(t *testing.T) {
	inst := harness.RequireOpenSIPS(t)
	mpath := map[string]string{}
	if inst.ModulesDir != "" {
		mpath["MPATH"] = `"` + inst.ModulesDir + `/"`
	}
	with := func(defs map[string]string) map[string]string {
		out := map[string]string{}
		for k, v := range mpath {
			out[k] = v
		}
		for k, v := range defs {
			out[k] = v
		}
		return out
	}
	for name, defs := range map[string]map[string]string{
		"defaults": with(nil),
		"every setting": with(map[string]string{
			"SIP_ADDR": "127.0.0.1", "SIP_PORT": "15060", "INTERNAL_PORT": "15062",
			"DOMAIN": `"im.example.net"`, "DP_ADDR": `"127.0.0.2"`,
			"DP_SIP": `"sip:127.0.0.2:5070;transport=tcp"`, "DP_HOOKS": `"https://127.0.0.2:8710"`,
			"DP_TOKEN": `"0123456789abcdef0123456789abcdef"`, "MESSAGE_TIMEOUT": "3",
			"MIN_EXPIRES": "30", "TIMER_INTERVAL": "5", "HOOK_TIMEOUT": "2",
		}),
		// The Redis mode: cachedb_redis instead of rest_client and json.
		"redis direct": with(map[string]string{
			"REDIS_DIRECT": "1", "REDIS_ADDR": ":secret@127.0.0.2:6380,127.0.0.3:6381", "REDIS_TIMEOUT": "500",
		}),
	} {
		t.Run(name, func(t *testing.T) {
			script := harness.RenderOpenSIPSConfig(t, shippedOpenSIPSCfg, defs)
			if regexp.MustCompile(`m4_(ifdef|define|divert|dnl)`).Match(script) {
				t.Fatalf("an m4 macro was left unexpanded:\n%s", script)
			}
			// Each mode has its own routes; the Redis mode makes no HTTP call.
			hooks, direct := regexp.MustCompile(`(?m)^[^#\n]*(rest_post|/hooks/)`).Match(script), strings.Contains(string(script), "FCALL dp_store ")
			if _, redis := defs["REDIS_DIRECT"]; hooks == redis || direct != redis {
				t.Fatalf("REDIS_DIRECT set: %v; the script posts to hooks: %v, calls dp_store: %v", redis, hooks, direct)
			}
			path := filepath.Join(t.TempDir(), "opensips.cfg")
			if err := os.WriteFile(path, script, 0o644); err != nil {
				t.Fatal(err)
			}
			if out, err := harness.CheckOpenSIPSConfig(t, path); err != nil || !strings.Contains(out, "config file ok") {
				t.Fatalf("opensips -C refused the script (%v):\n%s", err, out)
			}
			// The check itself can fail: the same script with a call
			// that takes no expression as an argument.
			bad := append(script, []byte("\nroute[BROKEN] {\n\tappend_hf(\"a\" + \"b\");\n}\n")...)
			if err := os.WriteFile(path, bad, 0o644); err != nil {
				t.Fatal(err)
			}
			if out, err := harness.CheckOpenSIPSConfig(t, path); err == nil {
				t.Fatalf("opensips -C took a script with a concatenation inside a call:\n%s", out)
			}
		})
	}
}
