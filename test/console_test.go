package test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/store"
	"github.com/deferpush/deferpush/test/harness"
)

// The tokens of the console tests' deferpush.
const (
	consoleAdminToken  = "console-admin-token-0123456789"
	consoleViewerToken = "console-viewer-token-0123456789"
	consoleHooksToken  = "console-hooks-token-0123456789"
)

// consoleStack is the deferpush binary on a real redis-server, a store
// client on the same Redis to seed and check state, and a headless
// Chromium.
type consoleStack struct {
	dp      *deferpushProc
	st      *store.Redis
	base    string // http://admin-listener
	browser context.Context
}

func startConsoleStack(t *testing.T) *consoleStack {
	t.Helper()
	chromium := harness.Require(t, "chromium", "chromium")
	r := harness.Redis(t)
	cfg := filepath.Join(t.TempDir(), "deferpush.yaml")
	yaml := fmt.Sprintf("hooks:\n  token: %s\nadmin:\n  token: %s\n  tokens:\n    - {name: noc, token: %s, role: viewer}\n",
		consoleHooksToken, consoleAdminToken, consoleViewerToken)
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	s := &consoleStack{dp: startDeferpush(t, nil, "--config", cfg, "--redis", r.URL())}
	s.base = "http://" + s.dp.AdminAddr
	var err error
	s.st, err = store.New(store.Config{URL: r.URL()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.st.Close() })
	s.browser = startBrowser(t, chromium)
	t.Cleanup(func() {
		// Whatever the pages did, neither the log nor a request line
		// carries a token.
		for _, tok := range []string{consoleAdminToken, consoleViewerToken} {
			if strings.Contains(s.dp.Log(), tok) {
				t.Errorf("deferpush's log holds a token")
			}
		}
	})
	return s
}

// startBrowser starts headless Chromium for the test. The flags keep it
// off the network (which is closed here) and out of the machine's state.
func startBrowser(t *testing.T, bin string) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin),
		chromedp.NoSandbox, // as root
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("no-proxy-server", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, cancelBrowser := chromedp.NewContext(actx, chromedp.WithErrorf(t.Logf))
	t.Cleanup(func() { cancelBrowser(); cancelAlloc() })
	// The first action starts the browser, which lives as long as bctx:
	// no timeout on it.
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return bctx
}

// tab is one browser tab of a test: its own sessionStorage. It records
// every request URL, script exception and Content-Security-Policy report,
// and fails the test on the last two.
type tab struct {
	t      *testing.T
	ctx    context.Context
	cancel context.CancelFunc

	mu       sync.Mutex
	urls     []string
	problems []string
}

func (s *consoleStack) newTab(t *testing.T) *tab {
	t.Helper()
	tb := &tab{t: t}
	ctx, cancel := chromedp.NewContext(s.browser, chromedp.WithListener(tb.listen))
	// A tab lives for its test; a first action opens it.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("open tab: %v", err)
	}
	tb.ctx, tb.cancel = context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(func() {
		tb.mu.Lock()
		for _, p := range tb.problems {
			t.Errorf("page: %s", p)
		}
		for _, u := range tb.urls {
			if strings.Contains(u, consoleAdminToken) || strings.Contains(u, consoleViewerToken) {
				t.Errorf("a request URL holds the token: %s", u)
			}
		}
		tb.mu.Unlock()
		tb.cancel()
		cancel()
	})
	return tb
}

// listen records what the tab's page does; it runs in chromedp's event
// loop, so it only appends.
func (tb *tab) listen(ev any) {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	switch ev := ev.(type) {
	case *network.EventRequestWillBeSent:
		tb.urls = append(tb.urls, ev.Request.URL)
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		desc := d.Text
		if d.Exception != nil {
			desc += " " + d.Exception.Description
		}
		tb.problems = append(tb.problems, fmt.Sprintf("exception at %s:%d: %s", d.URL, d.LineNumber+1, desc))
	case *cdplog.EventEntryAdded:
		if strings.Contains(ev.Entry.Text, "Content Security Policy") {
			tb.problems = append(tb.problems, "CSP: "+ev.Entry.Text)
		}
	}
}

// run runs browser actions, failing the test with what stage failed.
func (tb *tab) run(what string, actions ...chromedp.Action[chromedp.Void]) {
	tb.t.Helper()
	if err := chromedp.Do(tb.ctx, actions...); err != nil {
		tb.t.Fatalf("%s: %v", what, err)
	}
}

// eval evaluates a JavaScript expression in the page.
func eval[T any](tb *tab, expr string) T {
	tb.t.Helper()
	v, err := chromedp.Run(tb.ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		tb.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// waitText waits until sel's text contains want.
func (tb *tab) waitText(sel, want string) {
	tb.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var s string
	for time.Now().Before(deadline) {
		var err error
		s, err = chromedp.Run(tb.ctx, chromedp.Evaluate[string](fmt.Sprintf(`document.querySelector(%q)?.textContent ?? ''`, sel)))
		if err == nil && strings.Contains(s, want) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	tb.t.Fatalf("%s says %q, want it to contain %q", sel, s, want)
}

// waitValue waits until the form control sel holds want.
func (tb *tab) waitValue(sel, want string) {
	tb.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var v string
	for time.Now().Before(deadline) {
		var err error
		v, err = chromedp.Run(tb.ctx, chromedp.Evaluate[string](fmt.Sprintf(`document.querySelector(%q)?.value ?? ''`, sel)))
		if err == nil && v == want {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	tb.t.Fatalf("%s holds %q, want %q", sel, v, want)
}

// disabled reports whether the element matching sel is disabled.
func (tb *tab) disabled(sel string) bool {
	tb.t.Helper()
	tb.run("find "+sel, chromedp.WaitReady(chromedp.CSS(sel)))
	return eval[bool](tb, fmt.Sprintf(`document.querySelector(%q).disabled`, sel))
}

// login opens the console at base and logs in with token.
func (tb *tab) login(base, token string) {
	tb.t.Helper()
	tb.run("log in",
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.CSS("#token")),
		chromedp.SendKeys(chromedp.CSS("#token"), token),
		chromedp.Click(chromedp.CSS("#login-submit")),
		chromedp.WaitVisible(chromedp.CSS("#overview")),
	)
}

// selectValue picks v in the select sel as a user would: the value
// changes and the change event fires.
func selectValue(sel, v string) chromedp.Action[chromedp.Void] {
	return chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`(() => { const e = document.querySelector(%q); e.value = %q; e.dispatchEvent(new Event('input')); e.dispatchEvent(new Event('change')); })()`, sel, v))
}

// setInput replaces the text of the input sel as a user would.
func setInput(sel, v string) chromedp.Action[chromedp.Void] {
	return chromedp.Steps(
		chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`document.querySelector(%q).value = ''`, sel)),
		chromedp.SendKeys(chromedp.CSS(sel), v),
	)
}

// api sends one admin API request with the admin token and decodes the
// JSON answer into out (when not nil); it returns the status.
func (s *consoleStack) api(t *testing.T, method, path string, body any, out any) int {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, s.base+path, rd)
	req.Header.Set("Authorization", "Bearer "+consoleAdminToken)
	if body != nil {
		req.Header.Set("Content-Type", "application/merge-patch+json")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %d %s: %v", method, path, res.StatusCode, b, err)
		}
	}
	return res.StatusCode
}

func (s *consoleStack) policy(t *testing.T) plugin.Policy {
	t.Helper()
	var p plugin.Policy
	if code := s.api(t, "GET", "/v1/policy", nil, &p); code != 200 {
		t.Fatalf("GET /v1/policy = %d", code)
	}
	return p
}

// storeMessage stores a SIP MESSAGE for aor through the real message hook
// and returns its id.
func (s *consoleStack) storeMessage(t *testing.T, aor, from, callID string, extra []string, body string) string {
	t.Helper()
	lines := []string{
		"MESSAGE " + aor + " SIP/2.0",
		"Via: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bK" + strings.ReplaceAll(callID, "@", "."),
		"From: " + from + ";tag=1",
		"To: <" + aor + ">",
		"Call-ID: " + callID,
		"CSeq: 1 MESSAGE",
	}
	lines = append(lines, extra...)
	lines = append(lines, "Content-Type: text/plain", fmt.Sprintf("Content-Length: %d", len(body)), "", body)
	hook, _ := json.Marshal(map[string]string{"raw": strings.Join(lines, "\r\n"), "aor": aor})
	req, _ := http.NewRequest("POST", "http://"+s.dp.HooksAddr+"/hooks/kamailio/message", bytes.NewReader(hook))
	req.Header.Set("X-Deferpush-Token", consoleHooksToken)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var ans struct{ Status, ID string }
	b, _ := io.ReadAll(res.Body)
	if err := json.Unmarshal(b, &ans); err != nil || ans.Status != "stored" {
		t.Fatalf("message hook: %d %s", res.StatusCode, b)
	}
	return ans.ID
}

// deadLetter moves the oldest message of aor to its dead letters, the way
// a push that failed its last attempt does.
func (s *consoleStack) deadLetter(t *testing.T, aor plugin.AOR) {
	t.Helper()
	ctx := context.Background()
	if ok, err := s.st.Lock(ctx, aor, "console-test", time.Minute); !ok || err != nil {
		t.Fatalf("lock: %v %v", ok, err)
	}
	ms, err := s.st.Claim(ctx, aor, "console-test", 1, time.Minute)
	if err != nil || len(ms) != 1 {
		t.Fatalf("claim: %v %v", ms, err)
	}
	if d, err := s.st.Fail(ctx, aor, "console-test", ms[0].ID, "415 Unsupported Media Type", 1); !d || err != nil {
		t.Fatalf("fail: %v %v", d, err)
	}
	if err := s.st.Unlock(ctx, aor, "console-test"); err != nil {
		t.Fatal(err)
	}
}

// screenshot saves the page as results/console/name.png when
// DEFERPUSH_SCREENSHOTS is set (the README shows them).
func (tb *tab) screenshot(name string) {
	tb.t.Helper()
	if os.Getenv("DEFERPUSH_SCREENSHOTS") == "" {
		return
	}
	tb.run("settle", chromedp.Sleep(300*time.Millisecond))
	shot, err := chromedp.Run(tb.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		tb.t.Fatalf("screenshot: %v", err)
	}

	dir := filepath.Join("..", "results", "console")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), shot, 0o644); err != nil {
		tb.t.Fatal(err)
	}
}

// TestConsoleAdmin drives the console in Chromium with an admin token:
// log in, flip the global switch and default_push, edit the policy (and
// see a validation message), put a user on hold, page a mailbox, inspect
// and delete a message, requeue dead letters, push now. Each change is
// checked through the API.
func TestConsoleAdmin(t *testing.T) {
	s := startConsoleStack(t)
	const bob = "sip:bob@example.com"
	var ids []string
	for i := range 3 {
		ids = append(ids, s.storeMessage(t, bob, `"Alice" <sip:alice@example.com>`, fmt.Sprintf("console-%d@example.com", i),
			[]string{"Subject: lunch?"}, fmt.Sprintf("Hello Bob, message %d", i+1)))
	}
	s.storeMessage(t, bob, "<sip:carol@example.com>", "console-dead@example.com", nil, "this one will not go")
	tb := s.newTab(t)

	tb.login(s.base, consoleAdminToken)
	tb.waitText("#who", "admin (admin)")
	if tb.disabled("#push-switch") {
		t.Fatal("the push switch is disabled for an admin")
	}
	// Each section runs as a subtest on the same tab.
	section := func(name string, f func(t *testing.T)) {
		t.Run(name, func(st *testing.T) {
			tb.t = st
			defer func() { tb.t = t }()
			f(st)
		})
	}

	section("global switch", func(t *testing.T) {
		tb.waitText("#push-switch", "Pushing is ON")
		tb.waitText("#stats", "Messages stored4")
		tb.screenshot("overview")
		tb.run("switch off", chromedp.Click(chromedp.CSS("#push-switch")))
		tb.waitText("#push-switch", "Pushing is OFF")
		if p := s.policy(t); p.PushEnabled {
			t.Error("the API says push_enabled true after the console switched it off")
		}
		tb.run("switch on", chromedp.Click(chromedp.CSS("#push-switch")))
		tb.waitText("#push-switch", "Pushing is ON")
		if p := s.policy(t); !p.PushEnabled {
			t.Error("the API says push_enabled false after the console switched it on")
		}
		// A change made elsewhere shows without a reload.
		s.api(t, "PATCH", "/v1/policy", map[string]any{"push_enabled": false}, nil)
		tb.waitText("#push-switch", "Pushing is OFF")
		s.api(t, "PATCH", "/v1/policy", map[string]any{"push_enabled": true}, nil)
		tb.waitText("#push-switch", "Pushing is ON")

		tb.run("default push hold", selectValue("#default-push", "hold"))
		tb.waitText("#overview-msg", `default push "hold"`)
		if p := s.policy(t); p.DefaultPush != plugin.PushHold {
			t.Errorf("default_push = %q after the console set hold", p.DefaultPush)
		}
		tb.run("default push on", selectValue("#default-push", "on"))
		tb.waitText("#overview-msg", `default push "on"`)
	})

	section("policy fields", func(t *testing.T) {
		tb.run("open the policy", chromedp.Click(chromedp.CSS("#nav-policy")), chromedp.WaitVisible(chromedp.CSS("#policy-fields")))
		tb.run("bad max_mailbox", setInput("#policy-max_mailbox", "0"), chromedp.Click(chromedp.CSS("#policy-save")))
		tb.waitText("#policy-max_mailbox-error", "invalid max_mailbox")
		tb.waitText("#policy-msg", "invalid_value")
		if p := s.policy(t); p.MaxMailbox != plugin.DefaultPolicy().MaxMailbox {
			t.Errorf("max_mailbox = %d after a refused change", p.MaxMailbox)
		}
		tb.run("bad ttl", setInput("#policy-max_mailbox", "200"), setInput("#policy-message_ttl", "soon"),
			chromedp.Click(chromedp.CSS("#policy-save")))
		tb.waitText("#policy-message_ttl-error", "message_ttl")
		tb.screenshot("policy")
		tb.run("good values", setInput("#policy-message_ttl", "24h"), chromedp.Click(chromedp.CSS("#policy-save")))
		tb.waitText("#policy-msg", "Saved: message_ttl, max_mailbox.")
		if p := s.policy(t); p.MaxMailbox != 200 || time.Duration(p.MessageTTL) != 24*time.Hour {
			t.Errorf("policy after save: max_mailbox %d, message_ttl %v; want 200, 24h", p.MaxMailbox, time.Duration(p.MessageTTL))
		}
	})

	section("user", func(t *testing.T) {
		tb.run("look up bob", chromedp.Click(chromedp.CSS("#nav-users")), chromedp.WaitVisible(chromedp.CSS("#aor")),
			chromedp.SendKeys(chromedp.CSS("#aor"), bob), chromedp.Click(chromedp.CSS("#user-load")),
			chromedp.WaitVisible(chromedp.CSS("#user")))
		tb.waitText("#mailbox-count", "(4)")
		tb.waitText("#user-effective", "Push is on (the policy default)")

		tb.run("hold", selectValue("#user-push", "hold"), chromedp.Click(chromedp.CSS("#settings-save")))
		tb.waitText("#user-msg", "push hold")
		var u plugin.UserSettings
		if s.api(t, "GET", "/v1/users/"+bob+"/settings", nil, &u); u.Push != plugin.PushHold {
			t.Errorf("settings after hold: %+v", u)
		}
		tb.waitText("#user-effective", "Push is hold (set for this user)")
		tb.run("push now", chromedp.Click(chromedp.CSS("#push-now")))
		tb.waitText("#user-msg", "push_hold")

		// Inspect the first message: its headers and body, decoded.
		tb.run("view", chromedp.Click(chromedp.CSS(fmt.Sprintf(`tr[data-id="%s"] button.view`, ids[0]))),
			chromedp.WaitVisible(chromedp.CSS("#message")))
		tb.waitText("#message-id", ids[0])
		tb.waitText("#message-parts", "MESSAGE sip:bob@example.com SIP/2.0")
		tb.waitText("#message-parts .headers", "Call-IDconsole-0@example.com")
		tb.waitText("#message-parts .headers", "Subjectlunch?")
		tb.waitText("#message-parts pre.body", "Hello Bob, message 1")
		tb.screenshot("user")
		tb.run("delete", chromedp.Click(chromedp.CSS("#message-delete")))
		tb.waitText("#message-delete", "Click again to confirm")
		tb.run("confirm", chromedp.Click(chromedp.CSS("#message-delete")))
		tb.waitText("#user-msg", "Deleted message "+ids[0])
		tb.waitText("#mailbox-count", "(3)")
		if code := s.api(t, "GET", "/v1/users/"+bob+"/messages/"+ids[0], nil, nil); code != 404 {
			t.Errorf("GET the deleted message = %d, want 404", code)
		}

		// Dead letters: requeue puts them back in the mailbox.
		s.deadLetter(t, plugin.MustParseAOR(bob))
		tb.waitText("#dead-count", "(1)")
		tb.waitText("#dead", "415 Unsupported Media Type")
		tb.run("requeue", chromedp.Click(chromedp.CSS("#dead-requeue")))
		tb.waitText("#user-msg", "Requeued 1 dead letters")
		tb.waitText("#dead-count", "(0)")
		var page struct{ Total int }
		if s.api(t, "GET", "/v1/users/"+bob+"/dead-letters", nil, &page); page.Total != 0 {
			t.Errorf("dead letters after requeue: %d", page.Total)
		}
		if n, _ := s.st.Count(context.Background(), plugin.MustParseAOR(bob)); n.Pending != 3 {
			t.Errorf("pending after requeue: %+v, want 3", n)
		}

		tb.run("back to the policy", chromedp.Click(chromedp.CSS("#settings-reset")))
		tb.waitText("#user-effective", "(the policy default)")
		var after plugin.UserSettings
		if s.api(t, "GET", "/v1/users/"+bob+"/settings", nil, &after); after.Push != "" {
			t.Errorf("settings after reset: %+v", after)
		}
	})

	section("paging", func(t *testing.T) {
		const dave = "sip:dave@example.com"
		for i := range 25 {
			s.storeMessage(t, dave, "<sip:alice@example.com>", fmt.Sprintf("page-%d@example.com", i), nil, fmt.Sprintf("page message %d", i))
		}
		tb.run("look up dave", setInput("#aor", dave), chromedp.Click(chromedp.CSS("#user-load")))
		tb.waitText("#mailbox-page", "1–20 of 25")
		tb.run("next", chromedp.Click(chromedp.CSS("#mailbox-next")))
		tb.waitText("#mailbox-page", "21–25 of 25")
		if !tb.disabled("#mailbox-next") {
			t.Error("next is enabled on the last page")
		}
		tb.run("previous", chromedp.Click(chromedp.CSS("#mailbox-prev")))
		tb.waitText("#mailbox-page", "1–20 of 25")
	})
}

// TestConsoleViewer: a viewer's token gets read-only controls, still
// reads everything, and a write the page is made to send anyway is
// refused (403) and changes nothing.
func TestConsoleViewer(t *testing.T) {
	s := startConsoleStack(t)
	const bob = "sip:bob@example.com"
	id := s.storeMessage(t, bob, "<sip:alice@example.com>", "viewer-1@example.com", nil, "for the viewer's eyes")
	tb := s.newTab(t)
	// A token the server does not know is refused on the page.
	tb.run("bad token", chromedp.Navigate(s.base+"/"), chromedp.WaitVisible(chromedp.CSS("#token")),
		chromedp.SendKeys(chromedp.CSS("#token"), "not-a-token-of-this-server"), chromedp.Click(chromedp.CSS("#login-submit")))
	tb.waitText("#login-error", "This token is not valid.")
	tb.login(s.base, consoleViewerToken)
	tb.waitText("#who", "noc (viewer)")
	tb.waitText("#push-switch", "Pushing is ON")
	if !eval[bool](tb, `!document.getElementById('readonly-banner').hidden`) {
		t.Error("no read-only banner for a viewer")
	}
	for _, sel := range []string{"#push-switch", "#default-push", "#policy-max_mailbox", "#policy-store_enabled", "#policy-save"} {
		if !tb.disabled(sel) {
			t.Errorf("%s is enabled for a viewer", sel)
		}
	}
	tb.run("look up bob", chromedp.Click(chromedp.CSS("#nav-users")), chromedp.WaitVisible(chromedp.CSS("#aor")),
		chromedp.SendKeys(chromedp.CSS("#aor"), bob), chromedp.Click(chromedp.CSS("#user-load")))
	tb.waitText("#mailbox-count", "(1)")
	tb.run("view", chromedp.Click(chromedp.CSS(fmt.Sprintf(`tr[data-id="%s"] button.view`, id))))
	tb.waitText("#message-parts pre.body", "for the viewer's eyes")
	for _, sel := range []string{"#user-push", "#user-max", "#settings-save", "#settings-reset", "#push-now", "#mailbox-delete-all", "#dead-requeue", "#message-delete"} {
		if !tb.disabled(sel) {
			t.Errorf("%s is enabled for a viewer", sel)
		}
	}
	tb.screenshot("viewer")

	// Enabled by force, the controls still cannot write: the API says 403.
	tb.run("force delete", chromedp.Evaluate[chromedp.Void](`(() => { const b = document.getElementById('message-delete'); b.disabled = false; b.click(); b.click(); })()`))
	tb.waitText("#user-msg", "403 forbidden")
	if code := s.api(t, "GET", "/v1/users/"+bob+"/messages/"+id, nil, nil); code != 200 {
		t.Errorf("the message is gone (%d) after a viewer's delete", code)
	}
	tb.run("force switch", chromedp.Click(chromedp.CSS("#nav-overview")), chromedp.WaitVisible(chromedp.CSS("#push-switch")))
	tb.waitText("#push-switch", "Pushing is ON")
	tb.run("click", chromedp.Evaluate[chromedp.Void](`(() => { const b = document.getElementById('push-switch'); b.disabled = false; b.click(); })()`))
	tb.waitText("#overview-msg", "403 forbidden")
	if p := s.policy(t); !p.PushEnabled {
		t.Error("a viewer switched pushing off")
	}

	// The tab keeps the token across a reload, and forgets it on log out.
	tb.run("reload", chromedp.Navigate(s.base+"/"))
	tb.waitText("#who", "noc (viewer)")
	tb.run("log out", chromedp.Click(chromedp.CSS("#logout")), chromedp.WaitVisible(chromedp.CSS("#token")))
	if n := eval[int](tb, `sessionStorage.length + localStorage.length`); n != 0 {
		t.Errorf("%d items in the browser's storage after logging out", n)
	}
}

// TestConsoleMarkupShowsAsText: a stored message whose body, headers and
// sender hold markup shows them as text, and nothing in them runs.
func TestConsoleMarkupShowsAsText(t *testing.T) {
	s := startConsoleStack(t)
	const mallory = "sip:mallory@example.com"
	const body = `<img src=x onerror="window.pwned='body'"><script>window.pwned='script'</script>`
	id := s.storeMessage(t, mallory, `"<img src=y onerror=window.pwned='from'>" <sip:eve@example.com>`, "xss-1@example.com",
		[]string{`Subject: <b onmouseover="window.pwned='subject'">hi</b><img src=z onerror="window.pwned='subject'">`}, body)
	tb := s.newTab(t)
	tb.login(s.base, consoleAdminToken)
	tb.run("look up", chromedp.Click(chromedp.CSS("#nav-users")), chromedp.WaitVisible(chromedp.CSS("#aor")),
		chromedp.SendKeys(chromedp.CSS("#aor"), mallory), chromedp.Click(chromedp.CSS("#user-load")))
	tb.waitText("#mailbox-count", "(1)")
	tb.run("view", chromedp.Click(chromedp.CSS(fmt.Sprintf(`tr[data-id="%s"] button.view`, id))))
	tb.waitText("#message-parts pre.body", body)
	tb.waitText("#message-parts .headers", `"<img src=y onerror=window.pwned='from'>" <sip:eve@example.com>`)
	tb.waitText("#message-parts .headers", `<b onmouseover="window.pwned='subject'">hi</b>`)
	// Let a refresh cycle redraw everything once more.
	tb.run("wait", chromedp.Sleep(2500*time.Millisecond))
	pwned := eval[string](tb, `String(window.pwned)`)
	elements := eval[int](tb, `document.querySelectorAll('main img, main script, main b').length`)
	if pwned != "undefined" {
		t.Errorf("markup in a stored message ran: window.pwned = %q", pwned)
	}
	if elements != 0 {
		t.Errorf("%d img/script/b elements in the page: markup of a stored message became elements", elements)
	}
}

// etagProxy stands in front of the admin API and gives the policy and the
// user settings ETag / If-Match semantics: a GET answers an ETag (a hash
// of the body), and a PUT, PATCH or DELETE whose If-Match is not the
// current ETag gets 412. The admin API is getting the same; until it
// has it, this proxy lets the test drive the console's side of it.
type etagProxy struct {
	url      string
	mu       sync.Mutex
	ifMatch  []string // the If-Match of each write, in order
	upstream string
}

func startETagProxy(t *testing.T, upstream string) *etagProxy {
	t.Helper()
	p := &etagProxy{upstream: upstream}
	target, _ := url.Parse(upstream)
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ModifyResponse = func(res *http.Response) error {
		if res.Request.Method != http.MethodGet || !etagged(res.Request.URL.Path) || res.StatusCode != 200 {
			return nil
		}
		b, err := io.ReadAll(res.Body)
		if err != nil {
			return err
		}
		res.Body = io.NopCloser(bytes.NewReader(b))
		res.Header.Set("ETag", etagOf(b))
		return nil
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && etagged(r.URL.Path) {
			im := r.Header.Get("If-Match")
			p.mu.Lock()
			p.ifMatch = append(p.ifMatch, im)
			p.mu.Unlock()
			if im != "" && im != p.current(r) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusPreconditionFailed)
				_, _ = io.WriteString(w, `{"error":{"code":"precondition_failed","message":"the resource changed since it was read"}}`)
				return
			}
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	p.url = srv.URL
	return p
}

func etagged(path string) bool {
	return path == "/v1/policy" || strings.HasPrefix(path, "/v1/users/") && strings.HasSuffix(path, "/settings")
}

func etagOf(b []byte) string {
	sum := sha256.Sum256(b)
	return `"` + hex.EncodeToString(sum[:8]) + `"`
}

// current is the ETag of what the upstream holds now.
func (p *etagProxy) current(r *http.Request) string {
	req, _ := http.NewRequest(http.MethodGet, p.upstream+r.URL.EscapedPath(), nil)
	req.Header.Set("Authorization", r.Header.Get("Authorization"))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return ""
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return etagOf(b)
}

func (p *etagProxy) writes() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.ifMatch)
}

// TestConsoleStaleWrite: the console's writes carry the ETag of what it
// read in If-Match; when someone else changed the policy or the user's
// settings meanwhile, the write is refused (412), the console says so and
// offers a reload, and nothing the other operator set is overwritten.
func TestConsoleStaleWrite(t *testing.T) {
	s := startConsoleStack(t)
	base := s.base
	var proxy *etagProxy
	req, _ := http.NewRequest(http.MethodGet, s.base+"/v1/policy", nil)
	req.Header.Set("Authorization", "Bearer "+consoleAdminToken)
	if res, err := http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	} else if res.Body.Close(); res.Header.Get("ETag") == "" {
		proxy = startETagProxy(t, s.base)
		base = proxy.url
	}
	const bob = "sip:bob@example.com"
	s.storeMessage(t, bob, "<sip:alice@example.com>", "stale-1@example.com", nil, "hi")
	tb := s.newTab(t)
	tb.login(base, consoleAdminToken)

	// The policy: edited here, changed elsewhere, saved here.
	tb.run("open the policy", chromedp.Click(chromedp.CSS("#nav-policy")), chromedp.WaitVisible(chromedp.CSS("#policy-fields")))
	tb.waitValue("#policy-max_attempts", "5") // the form is filled
	tb.run("edit", setInput("#policy-max_attempts", "7"))
	s.api(t, "PATCH", "/v1/policy", map[string]any{"max_attempts": 9}, nil)
	tb.run("save", chromedp.Click(chromedp.CSS("#policy-save")))
	tb.waitText("#policy-msg", "Changed by someone else")
	if p := s.policy(t); p.MaxAttempts != 9 {
		t.Errorf("max_attempts = %d after a stale save, want the other operator's 9", p.MaxAttempts)
	}
	tb.run("reload", chromedp.Click(chromedp.CSS("#policy-msg button.reload")))
	tb.waitValue("#policy-max_attempts", "9")
	tb.run("edit again", setInput("#policy-max_attempts", "7"), chromedp.Click(chromedp.CSS("#policy-save")))
	tb.waitText("#policy-msg", "Saved: max_attempts.")
	if p := s.policy(t); p.MaxAttempts != 7 {
		t.Errorf("max_attempts = %d after the save, want 7", p.MaxAttempts)
	}

	// A user's settings, the same way.
	tb.run("look up bob", chromedp.Click(chromedp.CSS("#nav-users")), chromedp.WaitVisible(chromedp.CSS("#aor")),
		chromedp.SendKeys(chromedp.CSS("#aor"), bob), chromedp.Click(chromedp.CSS("#user-load")))
	tb.waitText("#mailbox-count", "(1)")
	tb.run("edit", selectValue("#user-push", "off"))
	req, _ = http.NewRequest(http.MethodPut, s.base+"/v1/users/"+bob+"/settings", strings.NewReader(`{"push":"hold"}`))
	req.Header.Set("Authorization", "Bearer "+consoleAdminToken)
	req.Header.Set("Content-Type", "application/json")
	if res, err := http.DefaultClient.Do(req); err != nil || res.StatusCode != 200 {
		t.Fatalf("PUT settings: %v %v", res, err)
	}
	tb.run("save", chromedp.Click(chromedp.CSS("#settings-save")))
	tb.waitText("#user-msg", "Changed by someone else")
	var u plugin.UserSettings
	if s.api(t, "GET", "/v1/users/"+bob+"/settings", nil, &u); u.Push != plugin.PushHold {
		t.Errorf("settings after a stale save: %+v, want the other operator's hold", u)
	}
	tb.run("reload", chromedp.Click(chromedp.CSS("#user-msg button.reload")))
	tb.waitText("#user-effective", "Push is hold")
	tb.waitValue("#user-push", "hold")

	// Delete all: a message that arrived after the listing is not deleted
	// unseen (the listing's ETag in If-Match).
	s.storeMessage(t, bob, "<sip:alice@example.com>", "stale-2@example.com", nil, "came later")
	tb.run("delete all", chromedp.Click(chromedp.CSS("#mailbox-delete-all")))
	tb.waitText("#mailbox-delete-all", "Click again to confirm")
	tb.run("confirm", chromedp.Click(chromedp.CSS("#mailbox-delete-all")))
	tb.waitText("#user-msg", "Changed by someone else")
	var page struct{ Total int }
	if s.api(t, "GET", "/v1/users/"+bob+"/messages", nil, &page); page.Total != 2 {
		t.Errorf("mailbox after a stale Delete all: %d messages, want both", page.Total)
	}
	tb.run("reload", chromedp.Click(chromedp.CSS("#user-msg button.reload")))
	tb.waitText("#mailbox-count", "(2)")
	tb.run("delete all", chromedp.Click(chromedp.CSS("#mailbox-delete-all")))
	tb.waitText("#mailbox-delete-all", "Click again to confirm")
	tb.run("confirm", chromedp.Click(chromedp.CSS("#mailbox-delete-all")))
	tb.waitText("#user-msg", "Deleted 2 messages")

	if proxy != nil {
		w := proxy.writes()
		if len(w) < 3 || slices.Contains(w, "") {
			t.Errorf("If-Match of the console's writes: %q; want an ETag on each", w)
		}
	}
}
