package api

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/deferpush/deferpush/plugin"
)

// rawAnswer is one response read off a raw connection.
type rawAnswer struct {
	Status int
	Code   string // the JSON error code, if any
}

// exchange writes req to addr as it is (no client normalises it) and
// reads every response until the server closes the connection or 3 s
// pass; closed tells which.
func exchange(t *testing.T, addr, req string) (got []rawAnswer, closed bool) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	for {
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			var ne net.Error
			return got, !errors.As(err, &ne) || !ne.Timeout()
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		var body errorBody
		_ = json.Unmarshal(b, &body)
		if res.StatusCode >= 400 && (body.Error.Code == "" || !strings.HasPrefix(res.Header.Get("Content-Type"), "application/json")) {
			t.Errorf("%d answer not in the API's error shape: %q", res.StatusCode, b)
		}
		got = append(got, rawAnswer{res.StatusCode, body.Error.Code})
	}
}

// TestRequestFraming sends request framing RFC 9112 refuses, which hertz
// used to accept (each of the first ones was served 200, the smuggled
// second request too): each is answered once in the API's error shape,
// the connection is closed, and nothing reaches the engine. Framing that
// is right on the same connections is still served.
func TestRequestFraming(t *testing.T) {
	eng := &hookEngine{policy: plugin.DefaultPolicy()}
	var admin string
	hooks := strings.TrimPrefix(startHooksWith(t, eng, func(c *Config) { admin = c.AdminListener.Addr().String() }), "http://")
	const reg = `{"aor":"sip:user2@example.com","contact":"sip:user2@192.0.2.9","expires":300}`
	head := "POST /hooks/kamailio/registered HTTP/1.1\r\nHost: x\r\n" + TokenHeader + ": " + testHooksToken +
		"\r\nContent-Type: application/json\r\n"
	chunked := fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(reg), reg)
	plain := fmt.Sprintf("Content-Length: %d\r\n\r\n%s", len(reg), reg)
	closing := strings.Replace(head, "Host: x\r\n", "Host: x\r\nConnection: close\r\n", 1)
	bad := func(code string) []rawAnswer { return []rawAnswer{{400, code}} }
	ok := rawAnswer{200, ""}
	for _, tt := range []struct {
		name   string
		addr   string
		req    string
		want   []rawAnswer
		closed bool
		calls  int // engine calls it makes
	}{
		{"Content-Length and Transfer-Encoding, then a second request", hooks,
			head + "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked + head + plain,
			bad("invalid_request"), true, 0},
		{"two Content-Length, the short one first", hooks,
			head + "Content-Length: 2\r\n" + plain, bad("invalid_request"), true, 0},
		{"two Content-Length, the short one last", hooks,
			head + fmt.Sprintf("Content-Length: %d\r\nContent-Length: 2\r\n\r\n%s", len(reg), reg),
			bad("invalid_request"), true, 0},
		{"a Content-Length list", hooks,
			head + fmt.Sprintf("Content-Length: %d, 2\r\n\r\n%s", len(reg), reg), bad("invalid_request"), true, 0},
		{"two Host fields", hooks,
			strings.Replace(head, "Host: x\r\n", "Host: x\r\nHost: y\r\n", 1) + plain, bad("invalid_request"), true, 0},
		{"no Host in HTTP/1.1", admin, "GET /healthz HTTP/1.1\r\n\r\n", bad("invalid_request"), true, 0},
		{"two hook tokens", hooks,
			strings.Replace(head, "Host: x\r\n", "Host: x\r\n"+TokenHeader+": nope\r\n", 1) + plain,
			bad("invalid_request"), true, 0},
		{"two Content-Type fields", hooks,
			strings.Replace(head, "Host: x\r\n", "Host: x\r\nContent-Type: text/plain\r\n", 1) + plain,
			bad("invalid_request"), true, 0},
		{"two Authorization fields", admin,
			"GET /v1/policy HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope\r\nAuthorization: Bearer " + testAdminToken + "\r\n\r\n",
			bad("invalid_request"), true, 0},
		{"a coding before chunked", hooks,
			head + "Transfer-Encoding: gzip, chunked\r\n\r\n" + chunked,
			[]rawAnswer{{501, "unsupported_transfer_coding"}}, true, 0},
		{"a coding before chunked, in two fields", hooks,
			head + "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked,
			[]rawAnswer{{501, "unsupported_transfer_coding"}}, true, 0},
		{"chunked not last", hooks, head + "Transfer-Encoding: chunked, gzip\r\n\r\n" + chunked, bad("invalid_request"), true, 0},
		{"chunked twice", hooks, head + "Transfer-Encoding: chunked, chunked\r\n\r\n" + chunked, bad("invalid_request"), true, 0},
		{"Transfer-Encoding in HTTP/1.0", hooks,
			strings.Replace(head, "HTTP/1.1", "HTTP/1.0", 1) + "Transfer-Encoding: chunked\r\n\r\n" + chunked,
			bad("invalid_request"), true, 0},
		{"HTTP/2.0 request line", admin, "GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n",
			[]rawAnswer{{505, "http_version_not_supported"}}, true, 0},
		{"HTTP/3.0 request line", hooks, "GET /healthz HTTP/3.0\r\nHost: x\r\n\r\n",
			[]rawAnswer{{505, "http_version_not_supported"}}, true, 0},
		// Every request on a connection is checked, not only the first.
		{"a good request, then a smuggling one", hooks,
			head + plain + head + "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked,
			[]rawAnswer{ok, {400, "invalid_request"}}, true, 1},
		// Still served.
		{"chunked", hooks, closing + "Transfer-Encoding: chunked\r\n\r\n" + chunked, []rawAnswer{ok}, true, 1},
		{"Transfer-Encoding case-insensitive", hooks, closing + "Transfer-Encoding: Chunked\r\n\r\n" + chunked, []rawAnswer{ok}, true, 1},
		{"one Content-Length twice", hooks, closing + fmt.Sprintf("Content-Length: %d\r\n", len(reg)) + plain, []rawAnswer{ok}, true, 1},
		{"three requests kept alive", hooks, head + plain + head + "Transfer-Encoding: chunked\r\n\r\n" + chunked + closing + plain,
			[]rawAnswer{ok, ok, ok}, true, 3},
		{"HTTP/1.0 without Host", admin, "GET /healthz HTTP/1.0\r\n\r\n", []rawAnswer{ok}, true, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := eng.calls()
			got, closed := exchange(t, tt.addr, tt.req)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("answers (-want +got):\n%s", diff)
			}
			if closed != tt.closed {
				t.Errorf("connection closed: %v, want %v", closed, tt.closed)
			}
			if n := eng.calls() - before; n != tt.calls {
				t.Errorf("engine calls: %d, want %d", n, tt.calls)
			}
		})
	}
}

// TestRequestFramingHead: a HEAD request refused for its framing gets the
// status and Content-Length of the error, but no body (RFC 9110 §9.3.2).
func TestRequestFramingHead(t *testing.T) {
	var admin string
	startHooksWith(t, &hookEngine{policy: plugin.DefaultPolicy()}, func(c *Config) { admin = c.AdminListener.Addr().String() })
	c, err := net.DialTimeout("tcp", admin, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	_, _ = io.WriteString(c, "HEAD /healthz HTTP/2.0\r\nHost: x\r\n\r\n")
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	hdr, body, _ := strings.Cut(string(b), "\r\n\r\n")
	if !strings.HasPrefix(hdr, "HTTP/1.1 505 ") || !strings.Contains(hdr, "\r\nContent-Length: ") || body != "" {
		t.Errorf("answer %q, want a 505 head with Content-Length and no body", b)
	}
}

// TestBodyTooLarge: a body declared larger than the listener reads
// (Config.MaxBodySize) is refused from its header section, before it is
// sent: 413 in the hooks' shape on the hooks listener (too_large, SIP
// 513: the route script answers the sender, who does not retry a message
// that can never be stored), in the admin API's on the admin listener.
// hertz's own answer was plain text, which the shipped scripts read as
// no answer (480, retried).
func TestBodyTooLarge(t *testing.T) {
	eng := &hookEngine{policy: plugin.DefaultPolicy()}
	var admin string
	hooks := strings.TrimPrefix(startHooksWith(t, eng, func(c *Config) { admin = c.AdminListener.Addr().String() }), "http://")
	for _, tt := range []struct {
		name, addr, req string
		want            string // in the answer's body
	}{
		{"hooks", hooks, "POST /hooks/kamailio/message HTTP/1.1\r\nHost: x\r\n" + TokenHeader + ": " + testHooksToken +
			"\r\nContent-Type: application/json\r\nContent-Length: 2000000\r\n\r\n",
			`{"status":"too_large","sip_code":513,"sip_reason":"Message Too Large","error":{"code":"body_too_large",`},
		{"admin", admin, "PUT /v1/policy HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + testAdminToken +
			"\r\nContent-Type: application/json\r\nContent-Length: 2000000\r\n\r\n",
			`{"error":{"code":"body_too_large",`},
	} {
		c, err := net.DialTimeout("tcp", tt.addr, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		_, _ = io.WriteString(c, tt.req)
		b, err := io.ReadAll(c)
		c.Close()
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		hdr, body, _ := strings.Cut(string(b), "\r\n\r\n")
		if !strings.HasPrefix(hdr, "HTTP/1.1 413 ") || !strings.Contains(hdr, "Content-Type: application/json") || !strings.HasPrefix(body, tt.want) {
			t.Errorf("%s: answer %q, want a JSON 413 starting %s", tt.name, b, tt.want)
		}
	}
	if n := eng.calls(); n != 0 {
		t.Errorf("engine called %d times", n)
	}
}
