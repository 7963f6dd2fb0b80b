package kamailio

import (
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// jsonTags returns the JSON member names the decoder of v reads.
func jsonTags(v any) map[string]bool {
	tags := map[string]bool{}
	t := reflect.TypeOf(v)
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		tags[name] = true
	}
	return tags
}

// TestConfigMatchesDecoder keeps kamailio.cfg and this package in step:
// every member the script sets with jansson_set is one the decoder of that
// hook reads, every hook it posts to is served, and it sends the token
// (the HTTP Basic password of its kept-alive connection dp, which the
// hooks take as X-Deferpush-Token) over that connection.
func TestConfigMatchesDecoder(t *testing.T) {
	b, err := os.ReadFile("kamailio.cfg")
	if err != nil {
		t.Fatal(err)
	}
	cfg := string(b)
	routes := map[string]any{
		"REGISTRATION_SAVED":     registration{},
		"REGISTRATION_REMOVED":   binding{},
		"STORE_MESSAGE":          message{},
		"usrloc:contact-expired": binding{},
	}
	set := regexp.MustCompile(`jansson_set\("[a-z]+", "([a-z_]+)"`)
	for name, v := range routes {
		body := routeBody(t, cfg, name)
		keys := set.FindAllStringSubmatch(body, -1)
		if len(keys) == 0 {
			t.Errorf("route %s sets no JSON member", name)
		}
		tags := jsonTags(v)
		for _, k := range keys {
			if !tags[k[1]] {
				t.Errorf("route %s sets %q, which the decoder does not read", name, k[1])
			}
		}
	}
	// http_client_query makes a curl handle, so a TCP connection, per call.
	if strings.Contains(cfg, "http_client_query(") {
		t.Errorf("kamailio.cfg calls http_client_query: a new TCP connection per hook call")
	}
	for _, s := range []string{"/hooks/kamailio/registered", "/hooks/kamailio/unregistered", "/hooks/kamailio/expired",
		"/hooks/kamailio/message", "://kamailio:$(def(DP_TOKEN){s.unquote})@", `http_connect("dp", `, "pv_buffer_size=", "tcp_rd_buf_size=",
		`modparam("http_client", "query_result", 0)`, "async_workers=", "record_route()"} {
		if !strings.Contains(cfg, s) {
			t.Errorf("kamailio.cfg lacks %q", s)
		}
	}
}

// routeBody returns the text of route[name] (or event_route[name]) up to
// the next top-level closing brace.
func routeBody(t *testing.T, cfg, name string) string {
	t.Helper()
	i := strings.Index(cfg, "route["+name+"]")
	if i < 0 {
		t.Fatalf("no route[%s] in kamailio.cfg", name)
	}
	end := strings.Index(cfg[i:], "\n}")
	return cfg[i : i+end]
}
