package test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deferpush/deferpush/adapters/imclient"
	"github.com/deferpush/deferpush/plugin"
)

// hookCall is one hook call a recorder saw: what the proxy posted and how
// deferpush answered.
type hookCall struct {
	Path   string
	Body   string
	Status int
}

// hookRecorder sits between the proxy and deferpush's hooks, passes every
// call on and records it with deferpush's HTTP status.
type hookRecorder struct {
	mu    sync.Mutex
	calls []hookCall
}

func (h *hookRecorder) front(t *testing.T) func(string) string {
	return func(dp string) string {
		u, err := url.Parse(dp)
		if err != nil {
			t.Fatal(err)
		}
		rp := httputil.NewSingleHostReverseProxy(u)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(b))
			rec := httptest.NewRecorder()
			rp.ServeHTTP(rec, r)
			h.mu.Lock()
			h.calls = append(h.calls, hookCall{Path: r.URL.Path, Body: string(b), Status: rec.Code})
			h.mu.Unlock()
			for k, v := range rec.Header() {
				w.Header()[k] = v
			}
			w.WriteHeader(rec.Code)
			_, _ = w.Write(rec.Body.Bytes())
		}))
		t.Cleanup(srv.Close)
		return srv.URL
	}
}

// wait returns the first recorded call to path for which match holds,
// waiting up to 20 s.
func (h *hookRecorder) wait(t *testing.T, path string, match func(map[string]any) bool) (hookCall, map[string]any) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		h.mu.Lock()
		calls := append([]hookCall(nil), h.calls...)
		h.mu.Unlock()
		for _, c := range calls {
			if !strings.HasSuffix(c.Path, path) {
				continue
			}
			var v map[string]any
			if err := json.Unmarshal([]byte(c.Body), &v); err != nil {
				t.Fatalf("%s hook body is not a JSON object: %v\n%s", path, err, c.Body)
			}
			if match(v) {
				return c, v
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no matching %s hook call within 20 s; calls: %+v", path, calls)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (h *hookRecorder) count(path string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, c := range h.calls {
		if strings.HasSuffix(c.Path, path) {
			n++
		}
	}
	return n
}

// TestOpenSIPSHooks checks every hook OpenSIPS posts, as deferpush reads
// it: a registration with a Path, a +sip.instance and no User-Agent
// (usrloc's "n/a"), a refresh with a User-Agent, an unregistration, a
// timer expiry, and an offline MESSAGE. Each is answered 200 and leaves
// the binding deferpush records right. A REGISTER for another domain is
// refused and reported to nobody. The bodies are the ones of the golden
// files in adapters/opensips/testdata (live-*.txt): the same members;
// DEFERPUSH_CAPTURE_GOLDEN=1 rewrites those files' input halves with
// what OpenSIPS posted (then go test ./adapters/opensips -update).
func TestOpenSIPSHooks(t *testing.T) {
	var rec hookRecorder
	s := startOpenSIPSStack(t, stackOptions{hooks: rec.front(t)})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	aor := plugin.MustParseAOR("sip:user5@" + domain)
	const instance = `"<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>"`
	// OpenSIPS's {param.value} unquotes it (Kamailio's keeps the quotes).
	const instanceID = "<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>"
	const contact = "sip:user5@127.0.0.1:9;transport=tcp"
	captured := map[string]string{}

	// A registration through an edge proxy (Path), with an instance, no
	// User-Agent.
	status := rawRegisterStatus(t, "tcp", s.proxyAddr, aor.String(), "<"+contact+">;+sip.instance="+instance, 300,
		"Path: <sip:edge1.example.net;lr>", "Supported: path")
	if !strings.HasPrefix(status, "SIP/2.0 200") {
		t.Fatalf("REGISTER with Path: %q, want 200", status)
	}
	call, body := rec.wait(t, "/hooks/opensips/registered", func(v map[string]any) bool { return v["uri"] == contact })
	captured["registered-live-insert"] = call.Body
	if call.Status != 200 {
		t.Errorf("registered hook answered %d, want 200: %s", call.Status, call.Body)
	}
	if body["aor"] != "user5" || body["domain"] != domain || body["user_agent"] != "n/a" {
		t.Errorf("registered hook body %v: want aor user5, domain %s, usrloc's user_agent n/a", body, domain)
	}
	reg, err := s.st.Contact(ctx, aor)
	if err != nil {
		t.Fatalf("deferpush recorded no binding for %s: %v", aor, err)
	}
	if reg.Contact != contact || reg.Instance != instanceID || reg.UserAgent != "" ||
		!reflect.DeepEqual(reg.Path, []string{"sip:edge1.example.net;lr"}) {
		t.Errorf("binding %+v: want contact %s, instance %s, no user agent, path edge1", reg, contact, instanceID)
	}
	if left := time.Until(reg.Expires); left < 290*time.Second || left > 301*time.Second {
		t.Errorf("binding expires in %v, want about 300 s", left)
	}

	// A refresh from a client that names itself.
	status = rawRegisterStatus(t, "tcp", s.proxyAddr, aor.String(), contact, 600, "User-Agent: tester/1.0 (raw)")
	if !strings.HasPrefix(status, "SIP/2.0 200") {
		t.Fatalf("REGISTER refresh: %q, want 200", status)
	}
	call, _ = rec.wait(t, "/hooks/opensips/registered", func(v map[string]any) bool { return v["user_agent"] == "tester/1.0 (raw)" })
	captured["registered-live-update"] = call.Body
	if call.Status != 200 {
		t.Errorf("registered hook (refresh) answered %d, want 200: %s", call.Status, call.Body)
	}
	if reg, err := s.st.Contact(ctx, aor); err != nil || reg.UserAgent != "tester/1.0 (raw)" || time.Until(reg.Expires) < 590*time.Second {
		t.Errorf("binding after the refresh %+v (%v): want the user agent and 600 s", reg, err)
	}

	// Unregistration.
	status = rawRegisterStatus(t, "tcp", s.proxyAddr, aor.String(), contact, 0)
	if !strings.HasPrefix(status, "SIP/2.0 200") {
		t.Fatalf("unREGISTER: %q, want 200", status)
	}
	call, body = rec.wait(t, "/hooks/opensips/unregistered", func(v map[string]any) bool { return v["uri"] == contact })
	captured["unregistered-live"] = call.Body
	if call.Status != 200 || body["aor"] != "user5" {
		t.Errorf("unregistered hook %d %s: want 200 and aor user5", call.Status, call.Body)
	}

	// Expiry: usrloc's timer (every second here) removes it.
	const shortContact = "sip:user6@127.0.0.1:9;transport=tcp"
	rawRegisterTCP(t, s.proxyAddr, "user6", shortContact, 2)
	call, body = rec.wait(t, "/hooks/opensips/expired", func(v map[string]any) bool { return v["uri"] == shortContact })
	captured["expired-live"] = call.Body
	if call.Status != 200 || body["aor"] != "user6" {
		t.Errorf("expired hook %d %s: want 200 and aor user6", call.Status, call.Body)
	}

	// An offline MESSAGE.
	user1 := s.client(t, "user1", imclient.Config{})
	if code := sendMessage(t, user1, "user5", []byte("while you were out")); code != 202 {
		t.Errorf("MESSAGE to offline user5: %d, want 202", code)
	}
	call, body = rec.wait(t, "/hooks/opensips/message", func(map[string]any) bool { return true })
	captured["message-live"] = call.Body
	if call.Status != 200 || body["aor"] != aor.String() || !strings.HasPrefix(body["raw"].(string), "MESSAGE sip:user5@"+domain+" SIP/2.0\r\n") {
		t.Errorf("message hook %d %s: want 200, aor %s and the raw MESSAGE", call.Status, call.Body, aor)
	}

	// Another domain is not served: refused, and no hook.
	before := rec.count("/hooks/opensips/registered")
	if status := rawRegisterStatus(t, "tcp", s.proxyAddr, "sip:user7@elsewhere.example.org", "sip:user7@127.0.0.1:9;transport=tcp", 300); !strings.HasPrefix(status, "SIP/2.0 403") {
		t.Errorf("REGISTER for another domain: %q, want 403", status)
	}
	if after := rec.count("/hooks/opensips/registered"); after != before {
		t.Errorf("a REGISTER for another domain reached the registered hook")
	}

	compareGolden(t, captured)
}

// compareGolden checks that each captured body sets the same members as
// the input half of adapters/opensips/testdata/<name>.txt, or rewrites
// that file when DEFERPUSH_CAPTURE_GOLDEN=1.
func compareGolden(t *testing.T, captured map[string]string) {
	t.Helper()
	const sep = "\n----------\n"
	for name, body := range captured {
		path := filepath.Join("..", "adapters", "opensips", "testdata", name+".txt")
		if os.Getenv("DEFERPUSH_CAPTURE_GOLDEN") == "1" {
			if err := os.WriteFile(path, []byte(body+sep+"(run go test ./adapters/opensips -update)\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Errorf("golden file for the live %s body: %v (DEFERPUSH_CAPTURE_GOLDEN=1 writes it)", name, err)
			continue
		}
		in, _, _ := strings.Cut(string(b), sep)
		if got, want := jsonKeys(t, body), jsonKeys(t, in); !reflect.DeepEqual(got, want) {
			t.Errorf("OpenSIPS posted %s with members %v; %s has %v: recapture it (DEFERPUSH_CAPTURE_GOLDEN=1)",
				name, got, path, want)
		}
	}
}

func jsonKeys(t *testing.T, body string) []string {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	keys := make([]string, 0, len(v))
	for k := range v {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// TestOpenSIPSHookFailuresLogged: when deferpush refuses OpenSIPS's hook
// calls (here: a wrong token), OpenSIPS logs it — the message hook with
// the HTTP status and deferpush's answer, the registration hook from
// route HOOK_DONE, which launch() runs with the answer — and the sender
// gets 500.
func TestOpenSIPSHookFailuresLogged(t *testing.T) {
	const wrong = "not-the-hooks-token-at-all"
	s := startOpenSIPSStack(t, stackOptions{token: wrong})
	user1 := s.client(t, "user1", imclient.Config{})
	if code := sendMessage(t, user1, "user2", []byte("hello")); code != 500 {
		t.Errorf("MESSAGE with a wrong hook token: %d, want 500", code)
	}
	s.register(t, user1)
	waitFor(t, 10*time.Second, "both failures in OpenSIPS's log", func() bool {
		log := s.o.Log()
		return strings.Contains(log, "deferpush message hook for user2 refused: http 401") &&
			strings.Contains(log, "deferpush registration hook failed: rc 1, http 401")
	})
	if strings.Contains(s.o.Log(), wrong) {
		t.Errorf("the token OpenSIPS sends is in its log")
	}
}
