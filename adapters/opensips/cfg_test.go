package opensips

import (
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// TestConfigMatchesDecoder keeps opensips.cfg and this package in step:
// every member the script sets in $json(ev) is one the event decoder
// reads, the message hook's members are the message decoder's, every hook
// it posts to is served, and it sends the token. Whether OpenSIPS takes
// the script is test.TestOpenSIPSConfigChecks'; what it posts is
// test.TestOpenSIPSHooks'.
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

// TestConfigRedisQueries keeps the Redis mode's raw queries in step with
// the functions' arguments (store/library.lua): FCALL name 0, the fixed
// arguments, each one double-quoted or a single script variable, then
// "pct" (every argument percent-escaped), and for dp_store the message
// length. cachedb_redis splits a query on whitespace, keeping a
// double-quoted argument whole; the split here is the same.
func TestConfigRedisQueries(t *testing.T) {
	b, err := os.ReadFile("opensips.cfg")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"dp_store":      {`"$var(aor)"`, `"$var(raw)"`, "pct", "$ml"},
		"dp_register":   {`"$var(aor)"`, `"$var(ct)"`, "$var(exp)", "$var(at_s)$(var(at_us){s.fill.left,0,6})", `"$var(rcv)"`, `"$var(ua)"`, `"$var(inst)"`, `"$var(path)"`, "pct"},
		"dp_unregister": {`"$var(aor)"`, `"$var(ct)"`, "$var(at_s)$(var(at_us){s.fill.left,0,6})", "$param(3)", "pct"},
	}
	seen := map[string]bool{}
	for _, m := range regexp.MustCompile(`cache_raw_query\("redis:dp", "FCALL ((?:[^"\\]|\\.)*)"`).FindAllStringSubmatch(string(b), -1) {
		query := strings.ReplaceAll(m[1], `\"`, `"`)
		var args []string
		for rest := strings.TrimSpace(query); rest != ""; rest = strings.TrimSpace(rest) {
			end := strings.IndexAny(rest, " \t")
			if rest[0] == '"' {
				end = strings.IndexByte(rest[1:], '"') + 2
			}
			if end < 0 {
				end = len(rest)
			}
			args = append(args, rest[:end])
			rest = rest[end:]
		}
		if len(args) < 2 || args[1] != "0" {
			t.Errorf("FCALL %s: want a function name and 0 keys", query)
			continue
		}
		fn := args[0]
		seen[fn] = true
		if !reflect.DeepEqual(args[2:], want[fn]) {
			t.Errorf("FCALL %s passes\n%q\nwant\n%q", fn, args[2:], want[fn])
		}
	}
	for fn := range want {
		if !seen[fn] {
			t.Errorf("opensips.cfg never calls %s", fn)
		}
	}
}
