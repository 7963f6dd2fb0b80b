package api

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/deferpush/deferpush/plugin"
)

// rawGET sends GET path as written (no client cleans it) to addr with the
// admin token, and returns the status and the error code of the answer.
func rawGET(t *testing.T, addr, path string) (int, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nConnection: close\r\n\r\n", path, testAdminToken)
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer res.Body.Close()
	var body errorBody
	b, _ := io.ReadAll(res.Body)
	_ = json.Unmarshal(b, &body)
	return res.StatusCode, body.Error.Code
}

// TestAdminPathDotSegments: hertz resolves "." and ".." (also %-encoded,
// and behind a %2F) before it routes, so these paths reached other
// resources (/v1/users/x/../../policy served the policy); each is refused
// with 400 invalid_path. An AOR whose user part holds %2F still works.
func TestAdminPathDotSegments(t *testing.T) {
	var admin string
	startHooksWith(t, &hookEngine{policy: plugin.DefaultPolicy()}, func(c *Config) { admin = c.AdminListener.Addr().String() })
	for _, tt := range []struct {
		path string
		want int
		code string
	}{
		{"/v1/users/sip:a@b/../../policy", 400, "invalid_path"},
		{"/v1/users/sip:a@b/%2e%2e/%2E%2E/policy", 400, "invalid_path"},
		{"/v1/users/../stats", 400, "invalid_path"},
		{"/v1/users/sip:a%2F..%2F..%2Fpolicy/settings", 400, "invalid_path"},
		{"/v1/stats%2F..%2Fpolicy", 400, "invalid_path"},
		{"/v1/policy/%2E%2E/stats", 400, "invalid_path"},
		{"/v1/users/sip:a@b/./settings", 400, "invalid_path"},
		{"/v1/users/sip:a@b/messages%2Fx", 400, "invalid_path"},
		{"/v1/./policy", 400, "invalid_path"},
		// Still served: dots inside a segment, %2F inside the AOR.
		{"/v1/users/sip:a.b@example.com/settings", 200, ""},
		{"/v1/users/sip:a%2Fb@example.com/settings", 200, ""},
		{"/v1/policy", 200, ""},
	} {
		if got, code := rawGET(t, admin, tt.path); got != tt.want || code != tt.code {
			t.Errorf("GET %s: %d %q, want %d %q", tt.path, got, code, tt.want, tt.code)
		}
	}
}

// TestHookExpiresBounds: a registration that ends more than a year ahead
// (9223372036 s overflowed to a contact that expired in a second) is
// refused with 400 naming expires; a year is taken.
func TestHookExpiresBounds(t *testing.T) {
	eng := &hookEngine{policy: plugin.DefaultPolicy()}
	base := startHooks(t, eng)
	year := int64(plugin.MaxExpires / time.Second)
	for _, tt := range []struct {
		proxy, expires string
		want           int
	}{
		{"kamailio", "9223372036", 400},
		{"kamailio", "9223372037", 400},
		{"kamailio", fmt.Sprint(year + 1), 400},
		{"kamailio", fmt.Sprint(year), 200},
		{"opensips", "9223372036854775807", 400},
		{"opensips", fmt.Sprint(time.Now().Add(plugin.MaxExpires + time.Hour).Unix()), 400},
		{"opensips", fmt.Sprint(time.Now().Add(time.Hour).Unix()), 200},
	} {
		body := fmt.Sprintf(`{"aor":"sip:bob@example.com","contact":"sip:bob@192.0.2.1","uri":"sip:bob@192.0.2.1","expires":%s}`, tt.expires)
		code, v := postHook(t, base+"/hooks/"+tt.proxy+"/registered", testHooksToken, body)
		if code != tt.want {
			t.Errorf("%s expires %s: %d %v, want %d", tt.proxy, tt.expires, code, v, tt.want)
			continue
		}
		if code == 400 {
			if e, _ := v["error"].(map[string]any); e == nil || !strings.Contains(fmt.Sprint(e["message"]), "expires") {
				t.Errorf("%s expires %s: error %v does not name expires", tt.proxy, tt.expires, v["error"])
			}
		}
	}
	if n := len(eng.regs); n != 2 {
		t.Errorf("%d registrations reached the engine, want the 2 in bounds", n)
	}
}

// TestPolicyBoundsAnswered400: the admin API refuses out-of-bound policy
// values with 400 invalid_value naming the field, and the policy stays.
func TestPolicyBoundsAnswered400(t *testing.T) {
	s := newTestServer(t, nil)
	for _, tt := range []struct{ body, field string }{
		{`{"invite_timeout":"1ns"}`, "invite_timeout"},
		{`{"invite_timeout":"2562047h"}`, "invite_timeout"},
		{`{"invite_timeout":1}`, "invite_timeout"},
		{`{"message_ttl":"2562047h"}`, "message_ttl"},
		{`{"message_ttl":"8761h"}`, "message_ttl"},
		{`{"retry_backoff":"25h"}`, "retry_backoff"},
		{`{"max_per_session":9223372036854775807}`, "max_per_session"},
		{`{"max_per_session":10001}`, "max_per_session"},
		{`{"max_mailbox":1000001}`, "max_mailbox"},
		{`{"max_message_size":16777217}`, "max_message_size"},
		{`{"max_attempts":101}`, "max_attempts"},
	} {
		res := perform(s, "PATCH", "/v1/policy", testAdminToken, "application/merge-patch+json", []byte(tt.body))
		var body errorBody
		_ = json.Unmarshal(res.Body.Bytes(), &body)
		if res.Code != 400 || body.Error.Code != "invalid_value" || body.Error.Field != tt.field {
			t.Errorf("PATCH %s: %d %s, want 400 invalid_value for %s", tt.body, res.Code, res.Body.Bytes(), tt.field)
		}
	}
	res := perform(s, "GET", "/v1/policy", testAdminToken, "", nil)
	var p plugin.Policy
	if err := json.Unmarshal(res.Body.Bytes(), &p); err != nil || p != plugin.DefaultPolicy() {
		t.Errorf("policy after the refusals: %s (%v), want the default", res.Body.Bytes(), err)
	}
}

// TestHTTPConnectionBounds: a connection that sends nothing gets 408 and
// is closed after FirstRequestTimeout (main: never), and at the hooks' connection bound with
// every connection busy a new one gets 503 too_many_connections.
func TestHTTPConnectionBounds(t *testing.T) {
	eng := &hookEngine{policy: plugin.DefaultPolicy()}
	var hooks string
	startHooksWith(t, eng, func(c *Config) {
		hooks = c.HooksListener.Addr().String()
		c.FirstRequestTimeout = 300 * time.Millisecond
		c.HooksConns = ConnLimits{Max: 2}
	})
	silent, err := net.Dial("tcp", hooks)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	start := time.Now()
	_ = silent.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(silent)
	if err != nil {
		t.Fatalf("a silent connection still open after 5 s: %v", err)
	}
	if !strings.HasPrefix(string(got), "HTTP/1.1 408 ") {
		t.Errorf("a silent connection got %q, want 408 Request Timeout and the close", got)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("a silent connection was closed after %v, want about 300 ms", d)
	}

	// Two connections in the middle of a request (headers unfinished,
	// within the timeout) fill the bound.
	for range 2 {
		c, err := net.Dial("tcp", hooks)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "POST /hooks/kamailio/message HTTP/1.1\r\nHost: x\r\n")
	}
	time.Sleep(50 * time.Millisecond)
	c, err := net.Dial("tcp", hooks)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("connection past the bound: %v, want a 503", err)
	}
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != 503 || !strings.Contains(string(b), "too_many_connections") || res.Header.Get("Retry-After") != "1" {
		t.Errorf("connection past the bound: %d %v %s, want 503 too_many_connections with Retry-After", res.StatusCode, res.Header, b)
	}
}
