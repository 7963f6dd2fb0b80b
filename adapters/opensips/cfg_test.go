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
