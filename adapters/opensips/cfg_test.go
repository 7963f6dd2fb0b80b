package opensips

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/deferpush/deferpush/test/harness"
)

// TestConfigMatchesDecoder keeps opensips.cfg and this package in step:
// every member the script sets in $json(ev) is one the event decoder
// reads, the message hook's members are the message decoder's, every hook
// it posts to is served, and it sends the token. Whether OpenSIPS takes
// the script is TestConfigChecks'; what it posts is
// test/opensips_hooks_test.go's.
func TestConfigMatchesDecoder(t *testing.T) {
	b, err := os.ReadFile("opensips.cfg")
	if err != nil {
		t.Fatal(err)
	}
	cfg := string(b)
	tags := map[string]bool{}
	et := reflect.TypeOf(event{})
	for i := range et.NumField() {
		name, _, _ := strings.Cut(et.Field(i).Tag.Get("json"), ",")
		tags[name] = true
	}
	for _, m := range regexp.MustCompile(`\$json\(ev/([a-z_]+)\)`).FindAllStringSubmatch(cfg, -1) {
		if !tags[m[1]] {
			t.Errorf("the event JSON sets %q, which the decoder does not read", m[1])
		}
	}
	for _, m := range regexp.MustCompile(`\$json\(req/([a-z_]+)\)`).FindAllStringSubmatch(cfg, -1) {
		if m[1] != "raw" && m[1] != "aor" && m[1] != "source" {
			t.Errorf("the message JSON sets %q, which the decoder does not read", m[1])
		}
	}
	for _, s := range []string{"/hooks/opensips/registered", "/hooks/opensips/unregistered", "/hooks/opensips/expired",
		"/hooks/opensips/message", "X-Deferpush-Token: ", "E_UL_CONTACT_INSERT", "E_UL_CONTACT_UPDATE", "E_UL_CONTACT_DELETE",
		"failure_route[", "record_route()",
		// Without it 200 clients registering at once over TCP wait
		// seconds for their SYNs to be retried (make bench shows it).
		"tcp_socket_backlog="} {
		if !strings.Contains(cfg, s) {
			t.Errorf("opensips.cfg lacks %q", s)
		}
	}
}

// TestConfigChecks renders opensips.cfg with m4 as its header says, with
// the defaults and with every setting given, and has OpenSIPS 3.4 check it
// (opensips -C: parse, load the modules, fix up every call). A script
// with an error is refused by the same check.
func TestConfigChecks(t *testing.T) {
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
	} {
		t.Run(name, func(t *testing.T) {
			script := harness.RenderOpenSIPSConfig(t, "opensips.cfg", defs)
			if regexp.MustCompile(`m4_(ifdef|define|divert|dnl)`).Match(script) {
				t.Fatalf("an m4 macro was left unexpanded:\n%s", script)
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
			bad := append(script, []byte("\nroute[BROKEN] {\n\trest_append_hf(\"a\" + \"b\");\n}\n")...)
			if err := os.WriteFile(path, bad, 0o644); err != nil {
				t.Fatal(err)
			}
			if out, err := harness.CheckOpenSIPSConfig(t, path); err == nil {
				t.Fatalf("opensips -C took a script with a concatenation inside a call:\n%s", out)
			}
		})
	}
}
