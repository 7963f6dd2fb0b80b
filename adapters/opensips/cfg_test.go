package opensips

import (
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// TestConfigMatchesDecoder keeps opensips.cfg and this package in step,
// since no OpenSIPS runs here: every member the script sets in $json(ev)
// is one the event decoder reads, the message hook's members are the
// message decoder's, every hook it posts to is served, and it sends the
// token.
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
	for _, s := range []string{"/hooks/opensips/registered", "/hooks/opensips/unregistered", "/hooks/opensips/message",
		"X-Deferpush-Token: ", "E_UL_CONTACT_INSERT", "E_UL_CONTACT_DELETE", "record_route()"} {
		if !strings.Contains(cfg, s) {
			t.Errorf("opensips.cfg lacks %q", s)
		}
	}
}
