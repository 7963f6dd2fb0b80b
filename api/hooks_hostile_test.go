package api

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/deferpush/deferpush/plugin"
)

// hookResult is what one hook call got.
type hookResult struct {
	http   int
	header http.Header
	body   []byte
	reply  map[string]any // nil when the body is not JSON
}

// callHook posts body to url with the hooks token from a client bound to
// the source address src ("" for any), with extra headers.
func callHook(t *testing.T, url, src string, body io.Reader, hdr map[string]string) hookResult {
	t.Helper()
	d := &net.Dialer{}
	if src != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	cl := &http.Client{Transport: &http.Transport{DialContext: d.DialContext}, Timeout: 10 * time.Second}
	defer cl.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodPost, url, body)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(TokenHeader, testHooksToken)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := cl.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	r := hookResult{http: res.StatusCode, header: res.Header, body: b}
	if json.Unmarshal(b, &r.reply) != nil {
		r.reply = nil
	}
	return r
}

// TestHookHostileInput sends what a hostile or broken caller might to the
// message hook, over real HTTP, and checks the answer each gets: the HTTP
// status, the hook status and the SIP reply the route script sends, and an
// error message that says what is wrong. Nothing reaches the engine.
func TestHookHostileInput(t *testing.T) {
	msg := func(raw string) string { return `{"raw":` + jsonString(raw) + `,"aor":"sip:user2@example.com"}` }
	replace := func(old, new string) string { return strings.Replace(rawMessage, old, new, 1) }
	const via = "Via: SIP/2.0/TCP 192.0.2.4:5060;branch=z9hG4bK776sgdkse\r\n"
	tests := []struct {
		name    string
		body    string
		http    int
		status  string
		sipCode float64
		says    string
	}{
		{"JSON nesting bomb", `{"raw":` + strings.Repeat("[", 100000) + strings.Repeat("]", 100000) + `}`,
			400, "malformed", 400, "JSON nested deeper than 8 levels"},
		{"unclosed nesting bomb", strings.Repeat(`{"a":`, 200000), 400, "malformed", 400, "JSON nested deeper than 8 levels"},
		{"two JSON values", msg(rawMessage) + msg(rawMessage), 400, "malformed", 400, "more than one JSON value"},
		{"a member twice", `{"raw":` + jsonString(rawMessage) + `,"aor":"sip:user2@example.com","aor":"sip:user3@example.com"}`, 400, "malformed", 400, "aor: given twice"},
		{"a member twice, in another case", `{"raw":` + jsonString(rawMessage) + `,"aor":"sip:user2@example.com","AOR":"sip:user3@example.com"}`, 400, "malformed", 400, "AOR: given twice"},
		{"raw not a string", `{"raw":{"a":1}}`, 400, "malformed", 400, "not the expected JSON object"},
		{"two To headers with empty tags (CVE-2018-14767)", msg(replace("To: <sip:user2@example.com>\r\n",
			"To: <sip:user2@example.com>;tag=\r\nTo: <sip:user3@example.com>;tag=\r\n")), 400, "malformed", 400, "more than one To header"},
		{"Via without host (CVE-2018-16657)", msg(replace(via, "Via: SIP/2.0/TCP ;branch=z9hG4bK1\r\n")), 400, "malformed", 400, "bad Via header"},
		{"Via not SIP", msg(replace(via, "Via: garbage;;;branch\r\n")), 400, "malformed", 400, "Via"},
		{"no Via", msg(replace(via, "")), 400, "malformed", 400, "no Via header"},
		{"NUL in a header", msg(replace("tag=49583", "tag=49\x0083")), 400, "malformed", 400, "control character 0x00"},
		{"huge header", msg(replace("CSeq: 1 MESSAGE", "CSeq: 1 MESSAGE\r\nX-Junk: "+strings.Repeat("j", 20000))), 413, "too_large", 513, `header "X-Junk" over 8192 octets`},
		{"too many headers", msg(replace("CSeq: 1 MESSAGE", "CSeq: 1 MESSAGE"+strings.Repeat("\r\nX-A: b", 300))), 413, "too_large", 513, "more than 256 headers"},
		{"Content-Length over the body", msg(replace("Content-Length: 18", "Content-Length: 99")), 400, "malformed", 400, "Content-Length is 99 but the body has 18 octets"},
		{"Content-Length short of the body", msg(replace("Content-Length: 18", "Content-Length: 5")), 400, "malformed", 400, "Content-Length is 5 but the body has 18 octets"},
		{"two Content-Lengths", msg(replace("Content-Length: 18", "Content-Length: 18\r\nContent-Length: 0")), 400, "malformed", 400, "more than one Content-Length header"},
		{"negative Content-Length", msg(replace("Content-Length: 18", "Content-Length: -1")), 400, "malformed", 400, `Content-Length "-1" is not a number of octets`},
	}
	eng := &hookEngine{policy: hookPolicy()}
	base := startHooks(t, eng)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			r := callHook(t, base+"/hooks/kamailio/message", "", strings.NewReader(tt.body), nil)
			if r.http != tt.http || r.reply == nil || r.reply["status"] != tt.status || r.reply["sip_code"] != tt.sipCode {
				t.Fatalf("got HTTP %d %s, want %d status %s sip_code %v", r.http, r.body, tt.http, tt.status, tt.sipCode)
			}
			e, _ := r.reply["error"].(map[string]any)
			if msg, _ := e["message"].(string); e["code"] != tt.status || !strings.Contains(msg, tt.says) {
				t.Errorf("error %v, want code %s and a message saying %q", e, tt.status, tt.says)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("answered after %v", d)
			}
		})
	}
	if n := eng.calls(); n != 0 {
		t.Errorf("engine called %d times by refused hook calls", n)
	}
}

// TestHookOversizeRequests: a body over MaxBodySize or an HTTP header
// section over hertz's limit is refused by the HTTP layer before any hook
// code runs, with 413 or 431, and the connection closed without a reset
// (the server drains what the client still sends before it closes: run
// with -count=300 to see it hold).
func TestHookOversizeRequests(t *testing.T) {
	eng := &hookEngine{policy: hookPolicy()}
	base := startHooksWith(t, eng, func(c *Config) { c.MaxBodySize = 64 << 10 })
	big := `{"raw":"` + strings.Repeat("a", 100<<10) + `"}`
	tests := []struct {
		name string
		body io.Reader
		hdr  map[string]string
		http int
	}{
		{"body over the limit", strings.NewReader(big), nil, 413},
		{"chunked body over the limit", io.MultiReader(strings.NewReader(big)), nil, 413},
		{"huge HTTP header", strings.NewReader(`{}`), map[string]string{"X-Junk": strings.Repeat("j", 1<<20)}, 431},
		{"header section over 16 KiB", strings.NewReader(`{}`), map[string]string{"X-Junk": strings.Repeat("j", 17<<10)}, 431},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := callHook(t, base+"/hooks/kamailio/message", "", tt.body, tt.hdr)
			if r.http != tt.http {
				t.Errorf("got HTTP %d %q, want %d", r.http, r.body, tt.http)
			}
		})
	}
	if n := eng.calls(); n != 0 {
		t.Errorf("engine called %d times", n)
	}
	// The listener still serves, a header of 8 KiB too.
	if r := callHook(t, base+"/hooks/kamailio/message", "", strings.NewReader(`{"raw":`+jsonString(rawMessage)+`}`),
		map[string]string{"X-Padding": strings.Repeat("p", 8<<10)}); r.http != 200 {
		t.Errorf("after the oversize requests: %d %s", r.http, r.body)
	}
}

// TestHookRateLimit: a source past its burst gets 429, rate_limited, the
// SIP reply 503 and a Retry-After; another source is not affected, and
// the refused calls change nothing.
func TestHookRateLimit(t *testing.T) {
	eng := &hookEngine{policy: hookPolicy()}
	base := startHooksWith(t, eng, func(c *Config) { c.HooksRateLimit, c.HooksRateBurst = 0.5, 3 })
	body := `{"raw":` + jsonString(rawMessage) + `}`
	post := func(src string) hookResult {
		return callHook(t, base+"/hooks/kamailio/message", src, strings.NewReader(body), nil)
	}
	for i := range 3 {
		if r := post("127.0.0.1"); r.http != 200 {
			t.Fatalf("call %d within the burst: %d %s", i+1, r.http, r.body)
		}
	}
	r := post("127.0.0.1")
	if r.http != 429 || r.reply["status"] != "rate_limited" || r.reply["sip_code"] != 503.0 || r.reply["sip_reason"] != "Service Unavailable" {
		t.Fatalf("call over the burst: %d %s, want 429 rate_limited 503", r.http, r.body)
	}
	if ra, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || ra < 1 || ra > 2 {
		t.Errorf("Retry-After = %q, want 1 or 2 seconds", r.header.Get("Retry-After"))
	}
	if e, _ := r.reply["error"].(map[string]any); !strings.Contains(e["message"].(string), "more than 0.5 hook calls a second (burst 3) from 127.0.0.1") {
		t.Errorf("error %v", e)
	}
	// The limit counts before the token: a guesser is limited too.
	req, _ := http.NewRequest(http.MethodPost, base+"/hooks/kamailio/message", strings.NewReader(body))
	req.Header.Set(TokenHeader, "guessing-the-token-000")
	if res, err := http.DefaultClient.Do(req); err != nil || res.StatusCode != 429 {
		t.Errorf("wrong token over the limit: %v %v, want 429", res.StatusCode, err)
	} else {
		res.Body.Close()
	}
	if r := post("127.0.0.2"); r.http != 200 {
		t.Errorf("another source: %d %s, want 200", r.http, r.body)
	}
	if n := len(eng.stored); n != 4 {
		t.Errorf("stored %d messages, want the 4 allowed", n)
	}
}

func TestJSONDepth(t *testing.T) {
	tests := []struct {
		in   string
		want int
	}{
		{`{}`, 1}, {`{"a":[1,{"b":2}]}`, 3}, {`"[[[["`, 0}, {`{"a":"\"[[["}`, 1},
		{`[[[]]]`, 3}, {strings.Repeat("[", 1000), maxHookDepth + 1},
	}
	for _, tt := range tests {
		if got := jsonDepth([]byte(tt.in), maxHookDepth); got != tt.want {
			t.Errorf("jsonDepth(%.20q) = %d, want %d", tt.in, got, tt.want)
		}
	}
}

func hookPolicy() plugin.Policy { return plugin.DefaultPolicy() }

// TestHookContentType: a hook body declared of another type than JSON is
// refused 415 unsupported_media_type, naming the type to send, with
// Accept (RFC 9110 §15.5.16) and the SIP reply 500 for the route script,
// and nothing reaches the engine; JSON with parameters, a +json type and a
// call without Content-Type are read as JSON.
func TestHookContentType(t *testing.T) {
	body := `{"raw":` + jsonString(rawMessage) + `,"aor":"sip:user2@example.com"}`
	eng := &hookEngine{policy: hookPolicy()}
	base := startHooks(t, eng)
	for _, ct := range []string{"text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/json-patch", "not a type"} {
		r := callHook(t, base+"/hooks/kamailio/message", "", strings.NewReader(body), map[string]string{"Content-Type": ct})
		if r.http != 415 || r.reply == nil || r.reply["status"] != "unsupported_media_type" || r.reply["sip_code"] != 500.0 {
			t.Errorf("Content-Type %q: HTTP %d %s, want 415 unsupported_media_type sip_code 500", ct, r.http, r.body)
			continue
		}
		if a := r.header.Get("Accept"); a != "application/json" {
			t.Errorf("Content-Type %q: Accept %q, want application/json", ct, a)
		}
		if e, _ := r.reply["error"].(map[string]any); !strings.Contains(e["message"].(string), "send application/json") {
			t.Errorf("Content-Type %q: error %v does not say what to send", ct, e)
		}
	}
	if n := eng.calls(); n != 0 {
		t.Fatalf("engine called %d times by refused hook calls", n)
	}
	for i, ct := range []string{"application/json; charset=utf-8", "Application/JSON", "application/vnd.deferpush+json", ""} {
		r := callHook(t, base+"/hooks/kamailio/message", "", strings.NewReader(body), map[string]string{"Content-Type": ct})
		if r.http != 200 || r.reply["status"] != "stored" {
			t.Errorf("Content-Type %q: HTTP %d %s, want 200 stored", ct, r.http, r.body)
		}
		if n := eng.calls(); n != i+1 {
			t.Errorf("Content-Type %q: %d messages stored, want %d", ct, n, i+1)
		}
	}
}

// TestHookBodyEncoding: a hook body in another charset than UTF-8 or
// with a content coding is 415, one whose bytes are not UTF-8 400
// naming the body (encoding/json would store U+FFFD in their place under
// a 202); the engine is never called. UTF-8 outside ASCII is taken.
func TestHookBodyEncoding(t *testing.T) {
	eng := &hookEngine{policy: hookPolicy()}
	base := startHooks(t, eng)
	latin1 := strings.Replace(rawMessage, "Content-Length:", "Subject: caf\xe9\r\nContent-Length:", 1)
	body := func(raw string) string {
		// jsonString would escape the invalid byte: splice it in raw.
		return `{"raw":` + strings.Replace(jsonString(strings.Replace(raw, "\xe9", "@E9@", 1)), "@E9@", "\xe9", 1) + `,"aor":"sip:user2@example.com"}`
	}
	ok := `{"raw":` + jsonString(rawMessage) + `,"aor":"sip:user2@example.com"}`
	for _, tc := range []struct {
		name, body string
		hdr        map[string]string
		http       int
		status     string
		sip        float64
	}{
		{"charset ISO-8859-1", ok, map[string]string{"Content-Type": "application/json; charset=iso-8859-1"}, 415, "unsupported_media_type", 500},
		{"gzip coding", ok, map[string]string{"Content-Type": "application/json", "Content-Encoding": "gzip"}, 415, "unsupported_media_type", 500},
		{"a byte that is not UTF-8", body(latin1), map[string]string{"Content-Type": "application/json"}, 400, "malformed", 400},
	} {
		r := callHook(t, base+"/hooks/kamailio/message", "", strings.NewReader(tc.body), tc.hdr)
		if r.http != tc.http || r.reply == nil || r.reply["status"] != tc.status || r.reply["sip_code"] != tc.sip {
			t.Errorf("%s: HTTP %d %s, want %d %s sip_code %v", tc.name, r.http, r.body, tc.http, tc.status, tc.sip)
		}
	}
	if n := eng.calls(); n != 0 {
		t.Fatalf("engine called %d times by refused hook calls", n)
	}
	utf := strings.Replace(latin1, "\xe9", "é", 1)
	if r := callHook(t, base+"/hooks/kamailio/message", "", strings.NewReader(body(utf)), map[string]string{"Content-Type": "application/json; charset=UTF-8"}); r.http != 200 {
		t.Errorf("UTF-8 Subject: HTTP %d %s, want 200", r.http, r.body)
	}
}
