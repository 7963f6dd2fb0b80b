package test

import (
	"bytes"
	"context"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/test/harness"
)

// adminStep is one request of TestAdminAPI and what it must get.
type adminStep struct {
	name          string
	method, path  string
	token         string
	ctype         string
	body          []byte
	want          int
	code, field   string // of an error response
	check         func(t *testing.T, r adminResponse)
	allowedHeader string
}

// TestAdminAPI runs every admin endpoint with every role and every error
// status over real HTTP against a server on a real redis-server, checks
// each response against openapi.json, and then that every documented
// response was seen.
func TestAdminAPI(t *testing.T) {
	r := harness.Redis(t)
	c := startCore(t, r.URL(), coreOptions{})
	con := newContract(t)
	a := startAdmin(t, c, con)
	ctx := context.Background()

	var bob, dave, carol = plugin.MustParseAOR("sip:bob@example.com"), plugin.MustParseAOR("sip:dave@example.com"), plugin.MustParseAOR("sip:carol@example.com")
	var bobMsgs []*plugin.Message
	for i, id := range []string{"b1@example.com", "b2@example.com", "b3@example.com"} {
		bobMsgs = append(bobMsgs, c.storeSIP(t, bob, id, "hello "+string(rune('a'+i))))
	}
	dead := c.storeSIP(t, dave, "d1@example.com", "undeliverable")
	if ok, err := c.st.Lock(ctx, dave, "tok", time.Minute); !ok || err != nil {
		t.Fatalf("lock: %v %v", ok, err)
	}
	if _, err := c.st.Claim(ctx, dave, "tok", 1, time.Minute); err != nil {
		t.Fatal(err)
	}
	if d, err := c.st.Fail(ctx, dave, "tok", dead.ID, "test", 1); !d || err != nil {
		t.Fatalf("fail: %v %v", d, err)
	}
	if err := c.st.Unlock(ctx, dave, "tok"); err != nil {
		t.Fatal(err)
	}
	if err := c.eng.Registered(ctx, plugin.Registration{AOR: carol, Contact: "sip:carol@127.0.0.1:9", Expires: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}

	policy := plugin.DefaultPolicy()
	policy.MaxPerSession = 20
	policy.Delivery, policy.PagerBelow = plugin.DeliveryPager, 2
	policyBody := mustJSON(t, policy)
	big := append([]byte(`{"max_per_session":1,"x":"`), bytes.Repeat([]byte("a"), 70<<10)...)
	big = append(big, `"}`...)
	const ctJSON, ctPatch = "application/json", "application/merge-patch+json"
	bobP, bobE := "/v1/users/sip:bob@example.com", "/v1/users/"+escapeAOR("sip:bob@Example.COM")
	badP := "/v1/users/bob-without-scheme"

	// Every protected operation: 401 without a token and with a wrong one,
	// 403 for a viewer where it writes, 400 for a malformed AOR.
	ops := []struct {
		method, path string
		write        bool
	}{
		{"GET", "/metrics", false}, {"GET", "/v1/stats", false}, {"GET", "/v1/whoami", false},
		{"GET", "/v1/policy", false}, {"PUT", "/v1/policy", true}, {"PATCH", "/v1/policy", true},
		{"GET", "{u}/settings", false}, {"PUT", "{u}/settings", true}, {"DELETE", "{u}/settings", true},
		{"GET", "{u}/messages", false}, {"DELETE", "{u}/messages", true},
		{"GET", "{u}/messages/01J00000000000000000000000", false}, {"DELETE", "{u}/messages/01J00000000000000000000000", true},
		{"GET", "{u}/dead-letters", false}, {"POST", "{u}/dead-letters/requeue", true}, {"POST", "{u}/push", true},
	}
	var steps []adminStep
	for _, op := range ops {
		p := strings.ReplaceAll(op.path, "{u}", bobP)
		name := op.method + " " + op.path
		steps = append(steps,
			adminStep{name: name + " without token", method: op.method, path: p, want: 401, code: "unauthorized"},
			adminStep{name: name + " with a wrong token", method: op.method, path: p, token: "not-a-token-0123456789", want: 401, code: "unauthorized"})
		if op.write {
			steps = append(steps, adminStep{name: name + " as viewer", method: op.method, path: p, token: viewerToken, ctype: ctJSON, body: []byte(`{}`), want: 403, code: "forbidden"})
		}
		if strings.Contains(op.path, "{u}") {
			steps = append(steps, adminStep{name: name + " malformed AOR", method: op.method, path: strings.ReplaceAll(op.path, "{u}", badP),
				token: adminToken, ctype: ctJSON, body: []byte(`{}`), want: 400, code: "invalid_aor", field: "aor"})
		}
	}

	steps = append(steps, []adminStep{
		// Public and health endpoints.
		{name: "healthz", method: "GET", path: "/healthz", want: 200},
		{name: "readyz", method: "GET", path: "/readyz", want: 200},
		{name: "openapi without token", method: "GET", path: "/v1/openapi.json", want: 200, check: func(t *testing.T, r adminResponse) {
			if !bytes.Equal(r.Body, con.docBytes()) {
				t.Error("served document differs from api.OpenAPI()")
			}
		}},
		{name: "metrics as viewer", method: "GET", path: "/metrics", token: viewerToken, want: 200, check: func(t *testing.T, r adminResponse) {
			for _, m := range []string{"deferpush_messages_stored_total 4", "deferpush_mailboxes 2", "deferpush_queued_messages 4",
				"deferpush_push_duration_seconds_count", "deferpush_registration_to_first_send_seconds_count", "deferpush_pushes_in_progress"} {
				if !strings.Contains(string(r.Body), m) {
					t.Errorf("/metrics lacks %q", m)
				}
			}
		}},
		{name: "stats as viewer", method: "GET", path: "/v1/stats", token: viewerToken, want: 200, check: func(t *testing.T, r adminResponse) {
			var s map[string]int
			r.JSON(t, &s)
			if s["stored"] != 4 || s["dead_lettered"] != 1 || s["mailboxes"] != 2 {
				t.Errorf("stats = %v, want stored 4, dead_lettered 1, mailboxes 2", s)
			}
		}},
		{name: "stats unknown query", method: "GET", path: "/v1/stats?verbose=1", token: viewerToken, want: 400, code: "invalid_query", field: "verbose"},
		{name: "whoami as viewer", method: "GET", path: "/v1/whoami", token: viewerToken, want: 200, check: wantBody(`{"name":"noc","role":"viewer"}`)},
		{name: "whoami unknown query", method: "GET", path: "/v1/whoami?x=1", token: adminToken, want: 400, code: "invalid_query", field: "x"},

		// Policy.
		{name: "get policy as viewer", method: "GET", path: "/v1/policy", token: viewerToken, want: 200, check: wantPolicy(plugin.DefaultPolicy())},
		{name: "get policy unknown query", method: "GET", path: "/v1/policy?x=1", token: viewerToken, want: 400, code: "invalid_query", field: "x"},
		{name: "put policy", method: "PUT", path: "/v1/policy", token: adminToken, ctype: ctJSON, body: policyBody, want: 200, check: wantPolicy(policy)},
		{name: "put policy missing field", method: "PUT", path: "/v1/policy", token: adminToken, ctype: ctJSON, body: []byte(`{"push_enabled":false}`), want: 400, code: "missing_field", field: "store_enabled"},
		{name: "put policy unknown field", method: "PUT", path: "/v1/policy", token: adminToken, ctype: ctJSON,
			body: bytes.Replace(policyBody, []byte(`{`), []byte(`{"bogus":1,`), 1), want: 400, code: "unknown_field", field: "bogus"},
		{name: "put policy invalid value", method: "PUT", path: "/v1/policy", token: adminToken, ctype: ctJSON,
			body: bytes.Replace(policyBody, []byte(`"max_mailbox":1000`), []byte(`"max_mailbox":0`), 1), want: 400, code: "invalid_value", field: "max_mailbox"},
		{name: "put policy wrong type", method: "PUT", path: "/v1/policy", token: adminToken, ctype: ctJSON,
			body: bytes.Replace(policyBody, []byte(`"push_enabled":true`), []byte(`"push_enabled":"yes"`), 1), want: 400, code: "invalid_value", field: "push_enabled"},
		{name: "put policy malformed JSON", method: "PUT", path: "/v1/policy", token: adminToken, ctype: ctJSON, body: []byte(`{"push_enabled":`), want: 400, code: "invalid_json"},
		{name: "put policy text/plain", method: "PUT", path: "/v1/policy", token: adminToken, ctype: "text/plain", body: policyBody, want: 415, code: "unsupported_media_type"},
		{name: "put policy no content type", method: "PUT", path: "/v1/policy", token: adminToken, body: policyBody, want: 415, code: "unsupported_media_type"},
		{name: "put policy too large", method: "PUT", path: "/v1/policy", token: adminToken, ctype: ctJSON, body: big, want: 413, code: "body_too_large"},
		{name: "patch policy", method: "PATCH", path: "/v1/policy", token: adminToken, ctype: ctPatch, body: []byte(`{"max_per_session":30,"message_ttl":"1h"}`), want: 200,
			check: wantPolicy(func() plugin.Policy {
				p := policy
				p.MaxPerSession = 30
				p.MessageTTL = plugin.Duration(time.Hour)
				return p
			}())},
		{name: "patch policy null resets to default", method: "PATCH", path: "/v1/policy", token: adminToken, ctype: ctJSON, body: []byte(`{"max_per_session":null,"message_ttl":null}`), want: 200,
			check: wantPolicy(func() plugin.Policy { p := policy; p.MaxPerSession = 50; return p }())},
		{name: "patch policy delivery", method: "PATCH", path: "/v1/policy", token: adminToken, ctype: ctPatch, body: []byte(`{"delivery":"auto","pager_below":1}`), want: 200,
			check: wantPolicy(func() plugin.Policy {
				p := policy
				p.MaxPerSession = 50
				p.Delivery, p.PagerBelow = plugin.DeliveryAuto, 1
				return p
			}())},
		{name: "patch policy delivery null resets to default", method: "PATCH", path: "/v1/policy", token: adminToken, ctype: ctPatch, body: []byte(`{"delivery":null,"pager_below":null}`), want: 200,
			check: wantPolicy(func() plugin.Policy {
				p := policy
				p.MaxPerSession = 50
				p.Delivery, p.PagerBelow = plugin.DeliveryAuto, 0
				return p
			}())},
		{name: "patch policy unknown delivery", method: "PATCH", path: "/v1/policy", token: adminToken, ctype: ctPatch, body: []byte(`{"delivery":"sms"}`), want: 400, code: "invalid_value", field: "delivery"},
		{name: "patch policy pager_below too large", method: "PATCH", path: "/v1/policy", token: adminToken, ctype: ctPatch, body: []byte(`{"pager_below":1001}`), want: 400, code: "invalid_value", field: "pager_below"},
		{name: "patch policy pager_below negative", method: "PATCH", path: "/v1/policy", token: adminToken, ctype: ctPatch, body: []byte(`{"pager_below":-1}`), want: 400, code: "invalid_value", field: "pager_below"},
		{name: "patch policy invalid duration", method: "PATCH", path: "/v1/policy", token: adminToken, ctype: ctPatch, body: []byte(`{"invite_timeout":"soon"}`), want: 400, code: "invalid_value", field: "invite_timeout"},
		{name: "patch policy text/plain", method: "PATCH", path: "/v1/policy", token: adminToken, ctype: "text/plain", body: []byte(`{}`), want: 415, code: "unsupported_media_type"},
		{name: "patch policy too large", method: "PATCH", path: "/v1/policy", token: adminToken, ctype: ctPatch, body: big, want: 413, code: "body_too_large"},
		{name: "delete policy", method: "DELETE", path: "/v1/policy", token: adminToken, want: 405, code: "method_not_allowed"},

		// User settings, by raw and by escaped AOR.
		{name: "get settings none", method: "GET", path: bobP + "/settings", token: viewerToken, want: 200, check: wantBody(`{}`)},
		{name: "put settings hold", method: "PUT", path: bobP + "/settings", token: adminToken, ctype: ctJSON, body: []byte(`{"push":"hold","max_per_session":5}`), want: 200, check: wantBody(`{"push":"hold","max_per_session":5}`)},
		{name: "get settings escaped AOR", method: "GET", path: bobE + "/settings", token: viewerToken, want: 200, check: wantBody(`{"push":"hold","max_per_session":5}`)},
		{name: "put settings delivery", method: "PUT", path: "/v1/users/sip:erin@example.com/settings", token: adminToken, ctype: ctJSON, body: []byte(`{"delivery":"msrp","pager_below":4}`), want: 200, check: wantBody(`{"delivery":"msrp","pager_below":4}`)},
		{name: "put settings bad delivery", method: "PUT", path: "/v1/users/sip:erin@example.com/settings", token: adminToken, ctype: ctJSON, body: []byte(`{"delivery":"MSRP"}`), want: 400, code: "invalid_value", field: "delivery"},
		{name: "put settings bad pager_below", method: "PUT", path: "/v1/users/sip:erin@example.com/settings", token: adminToken, ctype: ctJSON, body: []byte(`{"pager_below":-3}`), want: 400, code: "invalid_value", field: "pager_below"},
		{name: "put settings bad mode", method: "PUT", path: bobP + "/settings", token: adminToken, ctype: ctJSON, body: []byte(`{"push":"maybe"}`), want: 400, code: "invalid_value", field: "push"},
		{name: "put settings unknown field", method: "PUT", path: bobP + "/settings", token: adminToken, ctype: ctJSON, body: []byte(`{"pushh":"on"}`), want: 400, code: "unknown_field", field: "pushh"},
		{name: "put settings above policy", method: "PUT", path: bobP + "/settings", token: adminToken, ctype: ctJSON, body: []byte(`{"max_per_session":51}`), want: 422, code: "exceeds_policy", field: "max_per_session"},
		{name: "put settings form body", method: "PUT", path: bobP + "/settings", token: adminToken, ctype: "application/x-www-form-urlencoded", body: []byte(`push=on`), want: 415, code: "unsupported_media_type"},
		{name: "put settings in Latin-1", method: "PUT", path: bobP + "/settings", token: adminToken, ctype: "application/json; charset=iso-8859-1", body: []byte(`{"push":"on"}`), want: 415, code: "unsupported_media_type"},
		{name: "put settings not UTF-8", method: "PUT", path: bobP + "/settings", token: adminToken, ctype: ctJSON, body: []byte("{\"push\":\"on\xe9\"}"), want: 400, code: "invalid_json"},
		{name: "put settings too large", method: "PUT", path: bobP + "/settings", token: adminToken, ctype: ctJSON, body: big, want: 413, code: "body_too_large"},
		{name: "post settings", method: "POST", path: bobP + "/settings", token: adminToken, want: 405, code: "method_not_allowed", allowedHeader: "GET, HEAD, PUT, DELETE"},
		{name: "unknown user resource", method: "GET", path: bobP + "/nothing", token: adminToken, want: 404, code: "not_found"},
		{name: "unknown resource", method: "GET", path: "/v1/nothing", token: adminToken, want: 404, code: "not_found"},

		// Push now: refused while on hold, then without a registration;
		// accepted for a registered user.
		{name: "push on hold", method: "POST", path: bobP + "/push", token: adminToken, want: 409, code: "push_hold"},
		{name: "delete settings", method: "DELETE", path: bobE + "/settings", token: adminToken, want: 204},
		{name: "push unregistered", method: "POST", path: bobP + "/push", token: adminToken, want: 409, code: "not_registered"},
		{name: "push registered", method: "POST", path: "/v1/users/sip:carol@example.com/push", token: adminToken, want: 202,
			check: wantBody(`{"aor":"sip:carol@example.com","contact":"sip:carol@127.0.0.1:9"}`)},

		// Messages.
		{name: "list messages", method: "GET", path: bobP + "/messages", token: viewerToken, want: 200, check: func(t *testing.T, r adminResponse) {
			p := decodePage(t, r)
			if p.Total != 3 || len(p.Messages) != 3 || p.Next != nil || p.Messages[0].Raw != "" {
				t.Errorf("page = %+v, want 3 messages, metadata only, no next", p)
			}
			for i, m := range p.Messages {
				if m.ID != bobMsgs[i].ID || m.CallID != bobMsgs[i].CallID || m.State != "pending" || m.Size != len(bobMsgs[i].Raw) {
					t.Errorf("message %d = %+v, want %s pending", i, m, bobMsgs[i].ID)
				}
			}
		}},
		{name: "list messages paged with bodies", method: "GET", path: bobE + "/messages?offset=1&limit=1&body=true", token: viewerToken, want: 200, check: func(t *testing.T, r adminResponse) {
			p := decodePage(t, r)
			if p.Total != 3 || len(p.Messages) != 1 || p.Next == nil || *p.Next != 2 || p.NextAfter != bobMsgs[1].ID || p.Messages[0].ID != bobMsgs[1].ID {
				t.Fatalf("page = %+v, want message 2 of 3, next 2 after %s", p, bobMsgs[1].ID)
			}
			if raw, _ := base64.StdEncoding.DecodeString(p.Messages[0].Raw); !bytes.Equal(raw, bobMsgs[1].Raw) {
				t.Errorf("raw = %q, want the stored MESSAGE", raw)
			}
		}},
		{name: "list messages after one", method: "GET", path: bobP + "/messages?after=" + strings.ToLower(bobMsgs[0].ID) + "&limit=1", token: viewerToken, want: 200, check: func(t *testing.T, r adminResponse) {
			p := decodePage(t, r)
			if p.Offset != 1 || len(p.Messages) != 1 || p.Messages[0].ID != bobMsgs[1].ID || p.Next == nil || *p.Next != 2 || p.NextAfter != bobMsgs[1].ID {
				t.Errorf("page = %+v, want message 2 of 3 at offset 1, next 2 after %s", p, bobMsgs[1].ID)
			}
		}},
		{name: "list messages after the last", method: "GET", path: bobP + "/messages?after=" + bobMsgs[2].ID, token: viewerToken, want: 200,
			check: wantBody(`{"messages":[],"total":3,"offset":3,"limit":50}`)},
		{name: "list messages after and offset", method: "GET", path: bobP + "/messages?offset=1&after=" + bobMsgs[0].ID, token: viewerToken, want: 400, code: "invalid_query", field: "after"},
		{name: "list messages after no id", method: "GET", path: bobP + "/messages?after=b1@example.com", token: viewerToken, want: 400, code: "invalid_query", field: "after"},
		{name: "list messages 1000 without bodies", method: "GET", path: bobP + "/messages?limit=1000", token: viewerToken, want: 200},
		{name: "list messages 51 with bodies", method: "GET", path: bobP + "/messages?limit=51&body=true", token: viewerToken, want: 400, code: "invalid_query", field: "limit",
			check: wantBody(`{"error":{"code":"invalid_query","message":"query parameter limit: must be an integer from 1 to 50 with body=true (to 1000 without)","field":"limit"}}`)},
		{name: "list dead letters 51 with bodies", method: "GET", path: "/v1/users/sip:dave@example.com/dead-letters?body=true&limit=51", token: viewerToken, want: 400, code: "invalid_query", field: "limit"},
		{name: "list messages bad limit", method: "GET", path: bobP + "/messages?limit=0", token: viewerToken, want: 400, code: "invalid_query", field: "limit"},
		{name: "list messages limit twice", method: "GET", path: bobP + "/messages?limit=1&limit=2", token: viewerToken, want: 400, code: "invalid_query", field: "limit",
			check: wantBody(`{"error":{"code":"invalid_query","message":"query parameter limit: given twice","field":"limit"}}`)},
		{name: "list messages value without a name", method: "GET", path: bobP + "/messages?limit=1&=2", token: viewerToken, want: 400, code: "invalid_query",
			check: wantBody(`{"error":{"code":"invalid_query","message":"query: a value without a parameter name (\"=value\")"}}`)},
		{name: "policy value without a name", method: "GET", path: "/v1/policy?=1", token: viewerToken, want: 400, code: "invalid_query"},
		{name: "policy empty query segments", method: "GET", path: "/v1/policy?&", token: viewerToken, want: 200},
		{name: "list messages bad body flag", method: "GET", path: bobP + "/messages?body=maybe", token: viewerToken, want: 400, code: "invalid_query", field: "body"},
		{name: "get message", method: "GET", path: bobP + "/messages/" + bobMsgs[0].ID, token: viewerToken, want: 200, check: func(t *testing.T, r adminResponse) {
			var m pagedMessage
			r.JSON(t, &m)
			if m.ID != bobMsgs[0].ID || m.Raw != "" || m.Kind != "sip-message" {
				t.Errorf("message = %+v", m)
			}
		}},
		{name: "get message, id in lower case", method: "GET", path: bobP + "/messages/" + strings.ToLower(bobMsgs[0].ID), token: viewerToken, want: 200, check: func(t *testing.T, r adminResponse) {
			var m pagedMessage
			r.JSON(t, &m)
			if m.ID != bobMsgs[0].ID {
				t.Errorf("message = %+v, want %s", m, bobMsgs[0].ID)
			}
		}},
		{name: "get unknown message", method: "GET", path: bobP + "/messages/01J00000000000000000000000", token: viewerToken, want: 404, code: "not_found",
			check: wantBody(`{"error":{"code":"not_found","message":"no message 01J00000000000000000000000 in the mailbox of sip:bob@example.com"}}`)},
		{name: "delete message", method: "DELETE", path: bobE + "/messages/" + bobMsgs[0].ID, token: adminToken, want: 204},
		{name: "delete message again", method: "DELETE", path: bobP + "/messages/" + bobMsgs[0].ID, token: adminToken, want: 404, code: "not_found"},
		{name: "delete all messages", method: "DELETE", path: bobP + "/messages", token: adminToken, want: 200, check: wantBody(`{"deleted":2}`)},
		{name: "list after delete", method: "GET", path: bobP + "/messages", token: viewerToken, want: 200, check: wantBody(`{"messages":[],"total":0,"offset":0,"limit":50}`)},

		// Dead letters.
		{name: "list dead letters", method: "GET", path: "/v1/users/sip:dave@example.com/dead-letters", token: viewerToken, want: 200, check: func(t *testing.T, r adminResponse) {
			p := decodePage(t, r)
			if p.Total != 1 || p.Messages[0].ID != dead.ID || p.Messages[0].State != "dead" || p.Messages[0].Attempts != 1 {
				t.Errorf("dead letters = %+v", p)
			}
		}},
		{name: "requeue dead letters", method: "POST", path: "/v1/users/sip%3Adave%40example.com/dead-letters/requeue", token: adminToken, want: 200, check: wantBody(`{"requeued":1}`)},
		{name: "messages after requeue", method: "GET", path: "/v1/users/sip:dave@example.com/messages", token: viewerToken, want: 200, check: func(t *testing.T, r adminResponse) {
			if p := decodePage(t, r); p.Total != 1 || p.Messages[0].State != "pending" || p.Messages[0].Attempts != 0 {
				t.Errorf("after requeue = %+v, want 1 pending with attempts reset", p)
			}
		}},
	}...)

	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			res := a.do(t, s.method, s.path, s.token, s.ctype, s.body)
			if res.Status != s.want {
				t.Fatalf("%s %s = %d %s, want %d", s.method, s.path, res.Status, res.Body, s.want)
			}
			if s.code != "" {
				code, field := res.ErrorCode(t)
				if code != s.code || field != s.field {
					t.Errorf("error code, field = %q, %q, want %q, %q (%s)", code, field, s.code, s.field, res.Body)
				}
			}
			if s.want == 401 && !strings.HasPrefix(res.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("401 without WWW-Authenticate: Bearer")
			}
			if s.allowedHeader != "" && res.Header.Get("Allow") != s.allowedHeader {
				t.Errorf("Allow = %q, want %q", res.Header.Get("Allow"), s.allowedHeader)
			}
			if s.check != nil {
				s.check(t, res)
			}
		})
	}

	t.Run("policy in force on the engine", func(t *testing.T) {
		want := policy // after the PATCHes that reset max_per_session, message_ttl, delivery and pager_below
		want.MaxPerSession = 50
		want.Delivery, want.PagerBelow = plugin.DeliveryAuto, 0
		waitFor(t, time.Second, "engine policy", func() bool {
			p, err := c.eng.Policy(ctx)
			return err == nil && p == want
		})
	})
	waitFor(t, 5*time.Second, "the requested push done", func() bool { return c.eng.Active() == 0 })
	t.Run("If-Match", func(t *testing.T) { testAdminIfMatch(t, a) })
	t.Run("conditions everywhere", func(t *testing.T) { testAdminConditions(t, a, dead.ID) })
	t.Run("Redis down", func(t *testing.T) { testAdminStoreDown(t, a, r) })
	t.Run("every documented response seen", func(t *testing.T) {
		// 503 of /readyz needs Redis down: TestServeReadyzFollowsRedis.
		// GET /v1/policy answers from the engine's copy of the policy
		// (503 only before it read one). A 500 is a bug no test makes.
		skip := []string{"ready 503", "getPolicy 503"}
		for _, item := range con.doc.Paths.Map() {
			for _, op := range item.Operations() {
				skip = append(skip, op.OperationID+" 500")
			}
		}
		if missing := con.unseen(skip...); len(missing) > 0 {
			t.Errorf("no test got these documented responses:\n%s", strings.Join(missing, "\n"))
		}
	})
}

func wantPolicy(want plugin.Policy) func(t *testing.T, r adminResponse) {
	return func(t *testing.T, r adminResponse) {
		var got plugin.Policy
		r.JSON(t, &got)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("policy (-want +got):\n%s", diff)
		}
	}
}

func wantBody(want string) func(t *testing.T, r adminResponse) {
	return func(t *testing.T, r adminResponse) {
		if got := string(r.Body); got != want {
			t.Errorf("body = %s, want %s", got, want)
		}
	}
}

// pagedMessage is the API's message view, as a client reads it.
type pagedMessage struct {
	ID, State, Kind, Raw string
	CallID               string `json:"call_id"`
	Size, Attempts       int
}

type messagePage struct {
	Messages  []pagedMessage
	Total     int
	Offset    int
	Next      *int
	NextAfter string `json:"next_after"`
}

func decodePage(t *testing.T, r adminResponse) messagePage {
	t.Helper()
	var p messagePage
	r.JSON(t, &p)
	return p
}

// testAdminIfMatch: the policy and a user's settings carry an ETag; a
// write with a stale If-Match gets 412 and changes nothing, one with the
// current tag goes through and returns the new tag. If-None-Match with
// the current tag gets 304 on a GET, 412 on a write.
func testAdminIfMatch(t *testing.T, a adminClient) {
	const ctJSON, ctPatch = "application/json", "application/merge-patch+json"
	etag := func(r adminResponse) string {
		t.Helper()
		e := r.Header.Get("ETag")
		if !strings.HasPrefix(e, `"`) || len(e) < 10 {
			t.Fatalf("ETag %q, want a strong tag", e)
		}
		return e
	}
	must := func(r adminResponse, want int) adminResponse {
		t.Helper()
		if r.Status != want {
			t.Fatalf("got %d %s, want %d", r.Status, r.Body, want)
		}
		return r
	}
	stale := func(r adminResponse) {
		t.Helper()
		must(r, 412)
		if code, _ := r.ErrorCode(t); code != "precondition_failed" {
			t.Errorf("code %q, want precondition_failed", code)
		}
	}
	get := must(a.do(t, "GET", "/v1/policy", adminToken, "", nil), 200)
	old := etag(get)
	patched := must(a.doWith(t, "PATCH", "/v1/policy", adminToken, ctPatch, []byte(`{"max_attempts":7}`), map[string]string{"If-Match": old}), 200)
	cur := etag(patched)
	if cur == old {
		t.Fatalf("ETag unchanged by a change: %s", cur)
	}
	if again := etag(must(a.do(t, "GET", "/v1/policy", adminToken, "", nil), 200)); again != cur {
		t.Errorf("GET after PATCH: ETag %s, the PATCH said %s", again, cur)
	}
	stale(a.doWith(t, "PATCH", "/v1/policy", adminToken, ctPatch, []byte(`{"push_enabled":false}`), map[string]string{"If-Match": old}))
	var p plugin.Policy
	get.JSON(t, &p)
	p.PushEnabled = false
	stale(a.doWith(t, "PUT", "/v1/policy", adminToken, ctJSON, mustJSON(t, p), map[string]string{"If-Match": old}))
	if r := must(a.do(t, "GET", "/v1/policy", adminToken, "", nil), 200); etag(r) != cur || !strings.Contains(string(r.Body), `"push_enabled":true`) {
		t.Errorf("a refused write changed the policy: %s %s", r.Header.Get("ETag"), r.Body)
	}
	must(a.doWith(t, "PATCH", "/v1/policy", adminToken, ctPatch, []byte(`{"max_attempts":null}`), map[string]string{"If-Match": "*"}), 200)

	const u = "/v1/users/sip:frank@example.com/settings"
	before := etag(must(a.do(t, "GET", u, adminToken, "", nil), 200))
	put := must(a.doWith(t, "PUT", u, adminToken, ctJSON, []byte(`{"push":"hold"}`), map[string]string{"If-Match": before}), 200)
	after := etag(put)
	stale(a.doWith(t, "PUT", u, adminToken, ctJSON, []byte(`{"push":"off"}`), map[string]string{"If-Match": before}))
	stale(a.doWith(t, "DELETE", u, adminToken, "", nil, map[string]string{"If-Match": before}))
	if r := must(a.do(t, "GET", u, adminToken, "", nil), 200); string(r.Body) != `{"push":"hold"}` || etag(r) != after {
		t.Errorf("settings after refused writes: %s %s", r.Header.Get("ETag"), r.Body)
	}
	// If-None-Match (RFC 9110 §13.1.2): the current tag gets 304 with it
	// on a GET, 412 on a write.
	for _, path := range []string{"/v1/policy", u} {
		tag := etag(must(a.do(t, "GET", path, adminToken, "", nil), 200))
		if r := must(a.doWith(t, "GET", path, adminToken, "", nil, map[string]string{"If-None-Match": tag}), 304); r.Header.Get("ETag") != tag || len(r.Body) != 0 {
			t.Errorf("GET %s If-None-Match: ETag %q body %q, want %s and none", path, r.Header.Get("ETag"), r.Body, tag)
		}
	}
	stale(a.doWith(t, "PUT", u, adminToken, ctJSON, []byte(`{"push":"off"}`), map[string]string{"If-None-Match": "*"}))
	must(a.doWith(t, "DELETE", u, adminToken, "", nil, map[string]string{"If-Match": after}), 204)
}
