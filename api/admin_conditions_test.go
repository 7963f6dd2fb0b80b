package api

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/plugin/plugintest"
)

const (
	condBob  = "/v1/users/sip:bob@example.com"
	condDave = "/v1/users/sip:dave@example.com"
)

// startConditions serves the admin API on an in-memory store holding
// three messages of bob and one dead letter of dave, and returns the
// admin listener's address, the store and bob's message ids.
func startConditions(t *testing.T) (string, *plugintest.Store, []string) {
	t.Helper()
	var addr string
	var st *plugintest.Store
	startHooksWith(t, &hookEngine{policy: plugin.DefaultPolicy()}, func(c *Config) {
		addr, st = c.AdminListener.Addr().String(), c.Store.(*plugintest.Store)
	})
	ctx := context.Background()
	bob, dave := plugin.MustParseAOR("sip:bob@example.com"), plugin.MustParseAOR("sip:dave@example.com")
	var ids []string
	for i := range 3 {
		ids = append(ids, condAppend(t, st, bob, fmt.Sprint("m", i)))
	}
	dead := condAppend(t, st, dave, "dead")
	if _, err := st.Claim(ctx, dave, "tok", 1, time.Minute); err != nil {
		t.Fatal(err)
	}
	if d, err := st.Fail(ctx, dave, "tok", dead, "test", 1); !d || err != nil {
		t.Fatalf("Fail = %v, %v; want dead-lettered", d, err)
	}
	if err := st.Unlock(ctx, dave, "tok"); err != nil {
		t.Fatal(err)
	}
	return addr, st, ids
}

func condAppend(t *testing.T, st *plugintest.Store, to plugin.AOR, body string) string {
	t.Helper()
	m := &plugin.Message{Recipient: to, Kind: plugin.KindSIPMessage, Raw: []byte("MESSAGE " + body), Received: time.Now()}
	if err := st.Append(context.Background(), m, plugin.Limits{}); err != nil {
		t.Fatal(err)
	}
	return m.ID
}

// TestAdminConditionsOnEveryGet: every admin resource evaluates If-Match
// and If-None-Match (RFC 9110 §13.1), each the list all its field lines
// give (§5.3). A stale or unknown tag in If-Match is 412, also where the
// resource has no ETag (the statistics, the dead letters, ...), where
// only "*" holds; If-None-Match "*" is 304 on any; the resources with an
// ETag (the policy, settings, the messages of a mailbox, one message)
// compare it, weakly for If-None-Match and strongly for If-Match. They
// used to be ignored where there was no ETag, and only the first line of
// each was read.
func TestAdminConditionsOnEveryGet(t *testing.T) {
	addr, _, ids := startConditions(t)
	for _, path := range []string{"/v1/policy", "/v1/stats", "/v1/whoami", "/metrics", condBob + "/settings",
		condBob + "/messages", condBob + "/messages?offset=1&limit=1&body=true", condBob + "/messages/" + ids[0],
		condBob + "/messages/" + ids[0] + "?body=true", condDave + "/dead-letters"} {
		t.Run(path, func(t *testing.T) {
			first := adminRaw(t, addr, "GET", path, "", "")
			if first.status != 200 {
				t.Fatalf("GET: %d %s", first.status, first.body)
			}
			tag := first.etag
			tagged := !strings.Contains(path, "/stats") && !strings.Contains(path, "whoami") &&
				!strings.Contains(path, "metrics") && !strings.Contains(path, "dead-letters")
			if tagged != (tag != "") {
				t.Fatalf("ETag %q; want one: %v", tag, tagged)
			}
			cases := []struct {
				hdr  string
				want int
			}{
				{"If-Match: \"nope\"\r\n", 412},
				{"If-Match: \"nope\"\r\nIf-Match: \"other\"\r\n", 412},
				{"If-Match: *\r\n", 200},
				{"If-None-Match: *\r\n", 304},
				{"If-None-Match: \"nope\"\r\n", 200},
			}
			if tagged {
				cases = append(cases, []struct {
					hdr  string
					want int
				}{
					{"If-Match: " + tag + "\r\n", 200},
					{"If-Match: \"nope\"\r\nIf-Match: " + tag + "\r\n", 200}, // every line counts
					{"If-Match: \"a,b\", " + tag + "\r\n", 200},              // a tag may hold a comma
					{"If-Match: W/" + tag + "\r\n", 412},                     // strong comparison
					{"If-None-Match: \"nope\"\r\nIf-None-Match: " + tag + "\r\n", 304},
					{"If-None-Match: W/" + tag + "\r\n", 304}, // weak comparison
				}...)
			}
			for _, c := range cases {
				got, want := adminRaw(t, addr, "GET", path, c.hdr, ""), c.want
				switch {
				case got.status != want:
					t.Errorf("%q: %d %s, want %d", c.hdr, got.status, got.body, want)
				case want == 304 && (got.etag != tag || len(got.body) != 0):
					t.Errorf("%q: 304 with ETag %q and body %q, want ETag %q and none", c.hdr, got.etag, got.body, tag)
				case want == 412 && (got.code != "precondition_failed" || got.etag != ""):
					t.Errorf("%q: 412 %s with ETag %q, want precondition_failed without an ETag", c.hdr, got.body, got.etag)
				}
			}
		})
	}
}

// TestAdminConditionalWrites: a write with If-Match changes only what the
// client read, atomically: a mailbox's messages (a DELETE after one came
// is 412 and deletes nothing), one message (a DELETE after it went in
// flight is 412), settings with the current tag on a later field line;
// If-None-Match "*" refuses every write to an existing resource; the POST
// actions have no representation, so If-Match "*" is 412 there and
// If-None-Match "*" holds. A request that is refused without its
// conditions (400, 404) is refused so with them. Before, DELETE of
// messages took any If-Match, and settings read only the first line.
func TestAdminConditionalWrites(t *testing.T) {
	addr, st, ids := startConditions(t)
	ctx := context.Background()
	bob := plugin.MustParseAOR("sip:bob@example.com")
	do := func(method, path, hdr, body string, want int) adminAnswer {
		t.Helper()
		got := adminRaw(t, addr, method, path, hdr, body)
		if got.status != want {
			t.Fatalf("%s %s %q: %d %s, want %d", method, path, hdr, got.status, got.body, want)
		}
		return got
	}

	// One message: its tag changes when it goes in flight.
	msg := condBob + "/messages/" + ids[0]
	read := do("GET", msg, "", "", 200).etag
	if _, err := st.Claim(ctx, bob, "push", 1, time.Minute); err != nil {
		t.Fatal(err)
	}
	do("DELETE", msg, "If-Match: "+read+"\r\n", "", 412)
	do("DELETE", msg, "If-None-Match: *\r\n", "", 412)
	now := do("GET", msg, "", "", 200).etag
	if now == read {
		t.Fatalf("message ETag %s unchanged by a claim", now)
	}
	do("DELETE", msg, "If-Match: \"nope\"\r\nIf-Match: "+now+"\r\n", "", 204)
	do("DELETE", msg, "If-Match: \"nope\"\r\n", "", 404)
	if err := st.Unlock(ctx, bob, "push"); err != nil {
		t.Fatal(err)
	}

	// The mailbox: a message arriving after the listing makes its tag stale.
	list := condBob + "/messages"
	read = do("GET", list+"?limit=1", "", "", 200).etag
	if again := do("GET", list+"?offset=1&limit=1", "", "", 200).etag; again != read {
		t.Errorf("the second page's ETag %s differs from the first's %s", again, read)
	}
	condAppend(t, st, bob, "late")
	do("DELETE", list, "If-Match: "+read+"\r\n", "", 412)
	do("DELETE", list, "If-None-Match: *\r\n", "", 412)
	if c, _ := st.Count(ctx, bob); c.Pending != 3 {
		t.Fatalf("after refused deletes: %+v, want 3 pending", c)
	}
	now = do("GET", list, "", "", 200).etag
	if got := do("DELETE", list, "If-Match: \"nope\", "+now+"\r\n", "", 200); string(got.body) != `{"deleted":3}` {
		t.Errorf("DELETE with the current tag: %s, want 3 deleted", got.body)
	}

	// Settings: every line of If-Match and If-None-Match counts.
	settings := condBob + "/settings"
	tag := do("PUT", settings, "", `{"push":"hold"}`, 200).etag
	do("PUT", settings, "If-None-Match: \"old\"\r\nIf-None-Match: "+tag+"\r\n", `{"push":"off"}`, 412)
	tag = do("PUT", settings, "If-Match: \"old\"\r\nIf-Match: "+tag+"\r\n", `{"push":"off"}`, 200).etag
	do("DELETE", settings, "If-Match: \"old\"\r\nIf-Match: "+tag+"\r\n", "", 204)
	if got := do("GET", settings, "", "", 200); string(got.body) != `{}` {
		t.Errorf("settings after DELETE: %s", got.body)
	}

	// Actions.
	requeue := condDave + "/dead-letters/requeue"
	do("POST", requeue, "If-Match: *\r\n", "", 412)
	do("POST", condBob+"/push", "If-Match: *\r\n", "", 412)
	if got := do("POST", requeue, "If-None-Match: *\r\n", "", 200); string(got.body) != `{"requeued":1}` {
		t.Errorf("requeue: %s", got.body)
	}
	do("POST", condBob+"/push", "If-None-Match: *\r\n", "", 409) // not registered

	// Refused without the conditions: refused so with them.
	do("GET", list+"?limit=0", "If-None-Match: *\r\n", "", 400)
	do("GET", condBob+"/messages/01J00000000000000000000000", "If-Match: \"nope\"\r\n", "", 404)
	do("GET", "/v1/stats?x=1", "If-Match: \"nope\"\r\n", "", 400)
}
