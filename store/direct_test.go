package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/deferpush/deferpush/adapters/ingress"
	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/test/harness"
)

// directStore is a store on a fresh real redis-server with the library
// loaded and dp:limits written from p, as deferpush leaves them at start.
func directStore(t *testing.T, p plugin.Policy, rules plugin.AORRules) (*Redis, redis.UniversalClient) {
	t.Helper()
	srv := harness.Redis(t)
	s, err := New(Config{URL: srv.URL(), AORRules: rules})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx := context.Background()
	if err := s.SetPolicy(ctx, p, "test"); err != nil {
		t.Fatal(err)
	}
	if err := s.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	return s, s.Client()
}

// dpStore calls dp_store as a proxy does: FCALL dp_store 0 aor raw.
func dpStore(t *testing.T, c redis.UniversalClient, aor, raw string) (code int64, reason, id string) {
	t.Helper()
	res, err := c.FCall(context.Background(), "dp_store", nil, aor, raw).Slice()
	if err != nil {
		t.Fatalf("FCALL dp_store: %v", err)
	}
	if len(res) != 3 {
		t.Fatalf("dp_store returned %v, want [code reason id]", res)
	}
	return res[0].(int64), res[1].(string), res[2].(string)
}

// sipMessage is a MESSAGE to bob, CRLF-delimited, with extra headers
// before Call-ID's line and the body given.
func sipMessage(headers, body string) string {
	return "MESSAGE sip:bob@example.com SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK776sgdkse\r\n" +
		"Max-Forwards: 70\r\n" +
		headers +
		"CSeq: 1 MESSAGE\r\n" +
		fmt.Sprintf("Content-Length: %d\r\n\r\n", len(body)) + body
}

var directMessages = []struct{ name, raw string }{
	{"seed-like", sipMessage("From: <sip:alice@example.com>;tag=49583\r\nTo: <sip:bob@example.com>\r\n"+
		"Call-ID: asd88asd77a@1.2.3.4\r\nContent-Type: text/plain\r\n", "Watson, come here.")},
	{"dated by the sender", sipMessage("From: \"Alice\" <sip:alice@example.com>;tag=1\r\nTo: sip:bob@example.com\r\n"+
		"Call-ID: c2@x\r\nDate: Sat, 13 Nov 2010 23:29:00 GMT\r\nContent-Type: text/plain;charset=utf-8\r\n", "hi")},
	{"compact names", sipMessage("f: sip:alice@example.com;tag=2\r\nt: <sip:bob@example.com>\r\n"+
		"i: compact-3@host\r\nc: message/cpim\r\n", "Content-Type: text/plain\r\n\r\nhello")},
	{"folded From, odd case", sipMessage("FROM: \"A, \\\"quoted\\\"\"\r\n <sips:alice@example.com>;tag=3\r\nTo: <sip:bob@example.com>\r\n"+
		"CALL-ID: folded-4\r\ncontent-TYPE :  text/plain \r\n", "body")},
	{"no body", sipMessage("From: <sip:alice@example.com>;tag=5\r\nTo: <sip:bob@example.com>\r\nCall-ID: empty-5\r\n", "")},
	{"folded Call-ID, two Vias, tab", sipMessage("Via: SIP/2.0/TCP h2;branch=z9hG4bK2, SIP/2.0/UDP h3\r\nFrom: <sip:alice@example.com>;tag=6\r\n"+
		"To: <sip:bob@example.com>\r\ncall-id:\tfolded\r\n\t-6 \r\n  @h\r\nContent-Type: text/plain\r\n", "x")},
	// The sender's credentials are not stored (before and after the
	// Call-ID the Date goes after, folded, in another case).
	{"credentials", sipMessage("Proxy-Authorization: Digest username=\"alice\", realm=\"example.com\",\r\n nonce=\"n1\", response=\"r1\"\r\n"+
		"From: <sip:alice@example.com>;tag=7\r\nTo: <sip:bob@example.com>\r\nCall-ID: cred-7\r\n"+
		"authorization: Digest username=\"alice\", response=\"r2\"\r\nContent-Type: text/plain\r\n", "secret-free")},
	{"credentials, dated", sipMessage("From: <sip:alice@example.com>;tag=8\r\nTo: <sip:bob@example.com>\r\nCall-ID: cred-8\r\n"+
		"Date: Sat, 13 Nov 2010 23:29:00 GMT\r\nPROXY-AUTHORIZATION: Digest response=\"r3\"\r\nContent-Type: text/plain\r\n", "x")},
}

// TestDirectStoreRecord: the record dp_store writes for a MESSAGE is
// byte for byte the one the Go store writes for the same MESSAGE stored
// through the hook (ingress.Deferred, then Append) at the same instant:
// kind, sender, Call-ID, Content-Type, the Date added after Call-ID
// when there is none, no Authorization or Proxy-Authorization, received
// and expires; its id is a ULID
// (plugin.Message.Validate), and ids sort by arrival.
func TestDirectStoreRecord(t *testing.T) {
	p := plugin.DefaultPolicy()
	s, c := directStore(t, p, plugin.AORRules{})
	ctx := context.Background()
	bob := plugin.MustParseAOR("sip:bob@example.com")
	for _, tc := range directMessages {
		t.Run(tc.name, func(t *testing.T) {
			code, reason, id := dpStore(t, c, "sip:bob@example.com", tc.raw)
			if code != 202 || reason != "Accepted" {
				t.Fatalf("dp_store = %d %q, want 202 Accepted", code, reason)
			}
			got, err := c.HGet(ctx, "dp:{sip:bob@example.com}:m", id).Result()
			if err != nil {
				t.Fatal(err)
			}
			r, err := decodeRecord(got)
			if err != nil {
				t.Fatal(err)
			}
			// The hook's path at the instant dp_store took.
			m, err := ingress.Deferred([]byte(tc.raw), "sip:bob@example.com", r.Received, plugin.AORRules{})
			if err != nil {
				t.Fatal(err)
			}
			m.ID = id
			m.Expires = m.Received.Add(time.Duration(p.MessageTTL))
			if want := encode(m); got != want {
				t.Errorf("record differs from the hook's:\n got %q\nwant %q", got, want)
			}
			if strings.Contains(got, "response=") || strings.Contains(strings.ToLower(got), "authorization") {
				t.Errorf("the sender's credentials stored: %q", got)
			}
			if err := m.Validate(); err != nil {
				t.Errorf("id %q: %v", id, err)
			}
			if d := time.Since(r.Received); d < 0 || d > time.Minute {
				t.Errorf("received %v, not now", r.Received)
			}
		})
	}
	// Delivered, counted and indexed as the Go store's are.
	msgs, err := s.Claim(ctx, bob, "tok", 100, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != len(directMessages) {
		t.Fatalf("claimed %d, want %d", len(msgs), len(directMessages))
	}
	for i, m := range msgs {
		if m.CallID == "" || m.Kind != plugin.KindSIPMessage || i > 0 && m.ID <= msgs[i-1].ID {
			t.Errorf("message %d: id %s call-id %q kind %s (ids must sort by arrival)", i, m.ID, m.CallID, m.Kind)
		}
	}
	tot, err := s.Totals(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if tot.Stored != int64(len(directMessages)) || tot.Mailboxes != 1 {
		t.Errorf("totals %+v, want %d stored in 1 mailbox", tot, len(directMessages))
	}
	// Many in the same millisecond still sort by arrival.
	var ids []string
	for range 200 {
		_, _, id := dpStore(t, c, "sip:carol@example.com", directMessages[0].raw)
		ids = append(ids, id)
	}
	if !slices.IsSorted(ids) || len(slices.Compact(slices.Clone(ids))) != len(ids) {
		t.Errorf("ids of one mailbox are not unique and in arrival order: %v", ids[:5])
	}
	q, _ := c.LRange(ctx, "dp:{sip:carol@example.com}:q", 0, -1).Result()
	if d := cmp.Diff(ids, q); d != "" {
		t.Errorf("q (-stored +q):\n%s", d)
	}
}

// TestDirectStoreRefusals: every refusal of dp_store, with the SIP answer
// the hook gives for the same case (plugin.OutcomeOf), and nothing stored.
func TestDirectStoreRefusals(t *testing.T) {
	ok := directMessages[0].raw
	big := sipMessage("From: <sip:alice@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\nCall-ID: big\r\n"+
		"X-Long: "+strings.Repeat("a", 9000)+"\r\nContent-Type: text/plain\r\n", "x")
	for _, tc := range []struct {
		name   string
		policy func(*plugin.Policy)
		aor    string
		raw    string
		fill   int // messages stored first
		code   int64
		reason string
		// hookErr, when set, is what the hook's path gives for the case:
		// the code must be its SIP answer.
		hookErr bool
	}{
		{name: "store disabled 480", policy: func(p *plugin.Policy) { p.StoreEnabled = false }, code: 480, reason: "Temporarily Unavailable"},
		{name: "store disabled 403", policy: func(p *plugin.Policy) { p.StoreEnabled, p.StoreDisabledReply = false, 403 }, code: 403, reason: "Forbidden"},
		{name: "over max_message_size", policy: func(p *plugin.Policy) { p.MaxMessageSize = 200 }, code: 513, reason: "Message Too Large", hookErr: true},
		{name: "header line over 8 KB", raw: big, code: 513, reason: "Message Too Large", hookErr: true},
		{name: "mailbox full 486", policy: func(p *plugin.Policy) { p.MaxMailbox = 2 }, fill: 2, code: 486, reason: "Busy Here"},
		{name: "mailbox full 480", policy: func(p *plugin.Policy) { p.MaxMailbox, p.FullMailboxReply = 2, 480 }, fill: 2, code: 480, reason: "Temporarily Unavailable"},
		{name: "tel AOR", aor: "tel:+12015550123", code: 400, reason: "Bad Request"},
		{name: "no user", aor: "sip:example.com", code: 400, reason: "Bad Request", hookErr: true},
		{name: "bad host", aor: "sip:bob@exa_mple.com", code: 400, reason: "Bad Request", hookErr: true},
		{name: "not a MESSAGE", raw: strings.Replace(ok, "MESSAGE sip:", "INVITE sip:", 1), code: 400, reason: "Bad Request", hookErr: true},
		{name: "no Call-ID", raw: strings.Replace(ok, "Call-ID: asd88asd77a@1.2.3.4\r\n", "", 1), code: 400, reason: "Bad Request", hookErr: true},
		{name: "two Call-IDs", raw: strings.Replace(ok, "Call-ID:", "i: x\r\nCall-ID:", 1), code: 400, reason: "Bad Request", hookErr: true},
		{name: "no Via", raw: strings.Replace(ok, "Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK776sgdkse\r\n", "", 1), code: 400, reason: "Bad Request", hookErr: true},
		{name: "wrong Content-Length", raw: strings.Replace(ok, "Content-Length: 18", "Content-Length: 99", 1), code: 400, reason: "Bad Request", hookErr: true},
		{name: "bare CR", raw: strings.Replace(ok, "Max-Forwards: 70\r\n", "Max-Forwards: 7\r0\r\n", 1), code: 400, reason: "Bad Request", hookErr: true},
		{name: "control character", raw: strings.Replace(ok, "Max-Forwards: 70\r\n", "Max-Forwards: 7\x010\r\n", 1), code: 400, reason: "Bad Request", hookErr: true},
		{name: "header without colon", raw: strings.Replace(ok, "Max-Forwards: 70\r\n", "Max-Forwards 70\r\n", 1), code: 400, reason: "Bad Request", hookErr: true},
		{name: "continuation first", raw: strings.Replace(ok, "Via:", " folded\r\nVia:", 1), code: 400, reason: "Bad Request", hookErr: true},
		{name: "bare LF", raw: strings.Replace(ok, "Max-Forwards: 70\r\n", "Max-Forwards: 70\n", 1), code: 400, reason: "Bad Request", hookErr: true},
		{name: "no blank line", raw: "MESSAGE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h\r\n", code: 400, reason: "Bad Request", hookErr: true},
		{name: "no CSeq", raw: strings.Replace(ok, "CSeq: 1 MESSAGE\r\n", "", 1), code: 400, reason: "Bad Request", hookErr: true},
		{name: "two CSeqs", raw: strings.Replace(ok, "CSeq: 1 MESSAGE\r\n", "CSeq: 1 MESSAGE\r\ncseq: 1 MESSAGE\r\n", 1), code: 400, reason: "Bad Request", hookErr: true},
		{name: "CSeq of another method", raw: strings.Replace(ok, "CSeq: 1 MESSAGE", "CSeq: 1 INVITE", 1), code: 400, reason: "Bad Request", hookErr: true},
		{name: "CSeq method in lower case", raw: strings.Replace(ok, "CSeq: 1 MESSAGE", "CSeq: 1 message", 1), code: 400, reason: "Bad Request", hookErr: true},
		{name: "CSeq not a number", raw: strings.Replace(ok, "CSeq: 1 MESSAGE", "CSeq: abc MESSAGE", 1), code: 400, reason: "Bad Request", hookErr: true},
		{name: "CSeq over 2^31-1", raw: strings.Replace(ok, "CSeq: 1 MESSAGE", "CSeq: 2147483648 MESSAGE", 1), code: 400, reason: "Bad Request", hookErr: true},
		{name: "CSeq of 20 digits", raw: strings.Replace(ok, "CSeq: 1 MESSAGE", "CSeq: 99999999999999999999 MESSAGE", 1), code: 400, reason: "Bad Request", hookErr: true},
		{name: "CSeq without a method", raw: strings.Replace(ok, "CSeq: 1 MESSAGE", "CSeq: 1", 1), code: 400, reason: "Bad Request", hookErr: true},
		{name: "CSeq split at a no-break space", raw: strings.Replace(ok, "CSeq: 1 MESSAGE", "CSeq: 1\u00a0MESSAGE", 1), code: 400, reason: "Bad Request", hookErr: true},
		{name: "bad Date", raw: strings.Replace(ok, "Call-ID:", "Date: yesterday\r\nCall-ID:", 1), code: 400, reason: "Bad Request", hookErr: true},
		// A run of blanks inside a value: refused as the hook refuses it,
		// in time linear in the run (a pattern trim took 0.3 s of Redis
		// for this one).
		{name: "blanks inside a Via host", raw: strings.Replace(ok, "127.0.0.1:5062", "127.0.0.1"+strings.Repeat(" ", 4000)+"x", 1), code: 400, reason: "Bad Request", hookErr: true},
		{name: "empty Via part", raw: strings.Replace(ok, "branch=z9hG4bK776sgdkse\r\n", "branch=z9hG4bK776sgdkse, \r\n", 1), code: 400, reason: "Bad Request", hookErr: true},
		// The order of the checks is the hook's: a line, then the header it
		// belongs to, line after line; Via, Content-Length and the others
		// after the whole header section.
		{name: "bad Via, then a line over 8 KB", raw: strings.Replace(big, "SIP/2.0/UDP", "SIP/2.0/", 1), code: 513, reason: "Message Too Large", hookErr: true},
		{name: "line over 8 KB, then a control character", raw: strings.Replace(big, "CSeq: 1", "CSeq: \x01", 1), code: 513, reason: "Message Too Large", hookErr: true},
		{name: "control character, then a line over 8 KB", raw: strings.Replace(big, "Max-Forwards: 70", "Max-Forwards: \x7f", 1), code: 400, reason: "Bad Request", hookErr: true},
		{name: "body without Content-Type", raw: strings.Replace(ok, "Content-Type: text/plain\r\n", "", 1), code: 400, reason: "Bad Request", hookErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := plugin.DefaultPolicy()
			if tc.policy != nil {
				tc.policy(&p)
			}
			s, c := directStore(t, p, plugin.AORRules{})
			ctx := context.Background()
			aor, raw := "sip:bob@example.com", ok
			if tc.aor != "" {
				aor = tc.aor
			}
			if tc.raw != "" {
				raw = tc.raw
			}
			for range tc.fill {
				if code, _, _ := dpStore(t, c, aor, ok); code != 202 {
					t.Fatalf("filling: %d", code)
				}
			}
			code, reason, id := dpStore(t, c, aor, raw)
			if code != tc.code || reason != tc.reason || id != "" {
				t.Errorf("dp_store = %d %q %q, want %d %q and no id", code, reason, id, tc.code, tc.reason)
			}
			if tc.hookErr {
				m, err := ingress.Deferred([]byte(raw), aor, time.Now(), plugin.AORRules{})
				if err == nil {
					err = s.Append(ctx, m, p.Limits())
				}
				if got := plugin.OutcomeOf(err, p).SIPCode; int64(got) != tc.code {
					t.Errorf("the hook answers %d (%v), dp_store %d", got, err, tc.code)
				}
			}
			if n, _ := c.HGet(ctx, "dp:stats", "stored").Int(); n != tc.fill {
				t.Errorf("stats stored = %d, want %d", n, tc.fill)
			}
		})
	}
}

// TestDirectAORs: the AOR dp_store files a message under is the one
// plugin.AORRules.Parse makes of what the proxy built, with the user
// part's case folded or kept as dp:limits' case_sensitive_user says; what
// the Go rules refuse, dp_store refuses (400).
func TestDirectAORs(t *testing.T) {
	inputs := []string{
		"sip:bob@example.com", "sip:Bob@Example.COM", "SIP:bob@example.com", "sips:bob@example.com",
		"sip:b%6Fb@example.com", "sip:%41lice@example.com", "sip:a%2fb@example.com", "sip:a%2Fb@example.com",
		"sip:+1-555;phone-context=x@example.com", "sip:bob@example.com:5060", "sip:bob@EXAMPLE.com:05060",
		"sip:bob@[::1]:5060", "sip:bob@[::1]", "sip:bob@[]", "sip:bob@[::1]x", "sip:bob@127.0.0.1",
		"sip:bob@example.com;transport=tcp", "sip:bob@example.com:0", "sip:bob@example.com:65536",
		"sip:bo b@example.com", "sip:bob@", "sip:@example.com", "sip:bob", "sip:b%zzob@example.com",
		"sip:bob@exam_ple.com", "sip:bob:secret@example.com", "sip:" + strings.Repeat("a", 600) + "@example.com",
		"sip:a&b=c+d$e,f?g/h@example.com", "sip:it's(ok)!~*@example.com", "sip:ÿ@example.com",
	}
	for _, sensitive := range []bool{false, true} {
		t.Run(fmt.Sprintf("case_sensitive_user=%v", sensitive), func(t *testing.T) {
			rules := plugin.AORRules{CaseSensitiveUser: sensitive}
			_, c := directStore(t, plugin.DefaultPolicy(), rules)
			ctx := context.Background()
			for _, in := range inputs {
				want, werr := rules.Parse(in)
				code, _, id := dpStore(t, c, in, directMessages[0].raw)
				switch {
				case werr != nil && code != 400:
					t.Errorf("%q: Go refuses it (%v), dp_store answers %d", in, werr, code)
				case werr == nil && code != 202:
					t.Errorf("%q: Go takes it as %s, dp_store answers %d", in, want, code)
				case werr == nil:
					if n, err := c.HExists(ctx, tagOf(want.String())+"m", id).Result(); err != nil || !n {
						t.Errorf("%q: not filed under %s", in, want)
					}
				}
			}
		})
	}
}

// dpRegister calls dp_register as a proxy does.
func dpRegister(t *testing.T, c redis.UniversalClient, args ...any) int64 {
	t.Helper()
	n, err := c.FCall(context.Background(), "dp_register", nil, args...).Int64()
	if err != nil {
		t.Fatalf("FCALL dp_register %v: %v", args, err)
	}
	return n
}

func dpUnregister(t *testing.T, c redis.UniversalClient, args ...any) int64 {
	t.Helper()
	n, err := c.FCall(context.Background(), "dp_unregister", nil, args...).Int64()
	if err != nil {
		t.Fatalf("FCALL dp_unregister %v: %v", args, err)
	}
	return n
}

// TestDirectRegister: dp_register records the registration as the JSON
// plugin.Registration marshals to (what Contact reads back, pager_only
// kept for the same binding), and writes an event to dp:events only when
// the mailbox holds something and the policy allows a push; an older
// registration of the same contact than the last one recorded is
// ignored; an expiry of 0 unregisters.
func TestDirectRegister(t *testing.T) {
	s, c := directStore(t, plugin.DefaultPolicy(), plugin.AORRules{})
	ctx := context.Background()
	bob := plugin.MustParseAOR("sip:bob@example.com")
	const contact = "sip:bob@127.0.0.1:5099;transport=tcp"
	events := func() int64 { n, _ := c.XLen(ctx, "dp:events").Result(); return n }
	us := func(d time.Duration) string { return fmt.Sprint(time.Now().Add(d).UnixMicro()) }

	// Nothing stored: the contact is recorded, no event, and 2 says the
	// mailbox is empty.
	if n := dpRegister(t, c, "sip:Bob@example.com", contact, 3600, us(0), "sip:127.0.0.1:5099;transport=tcp",
		"imclient/1 <test> & \"q\"", "<urn:uuid:1>", "<sip:p1@x;lr>, \"n,ame\" <sip:p2@y;lr>"); n != 2 || events() != 0 {
		t.Fatalf("empty mailbox: dp_register = %d, %d events; want 2, 0", n, events())
	}
	raw, err := c.Get(ctx, "dp:{sip:bob@example.com}:c").Result()
	if err != nil {
		t.Fatal(err)
	}
	reg, err := s.Contact(ctx, bob)
	if err != nil {
		t.Fatal(err)
	}
	want := plugin.Registration{AOR: bob, Contact: contact, Received: "sip:127.0.0.1:5099;transport=tcp",
		Instance: "<urn:uuid:1>", UserAgent: "imclient/1 <test> & \"q\"", Path: []string{"sip:p1@x;lr", "sip:p2@y;lr"}}
	if d := time.Until(reg.Expires); d < 3590*time.Second || d > 3601*time.Second {
		t.Errorf("expires in %v, want 1 h", d)
	}
	want.Expires = reg.Expires
	if d := cmp.Diff(want, reg); d != "" {
		t.Errorf("registration (-want +got):\n%s", d)
	}
	gob, _ := json.Marshal(reg)
	if string(gob) != raw {
		t.Errorf("stored JSON is not Go's:\n got %s\nwant %s", raw, gob)
	}
	if ttl := c.PTTL(ctx, "dp:{sip:bob@example.com}:c").Val(); ttl < 7190*time.Second || ttl > 7200*time.Second {
		t.Errorf("contact TTL %v, want 1 h + the grace hour", ttl)
	}
	// pager_only learnt for this binding is kept by a refresh.
	if err := s.SetPagerOnly(ctx, bob, "<urn:uuid:1>"); err != nil {
		t.Fatal(err)
	}
	// Something stored: an event.
	if code, _, _ := dpStore(t, c, "sip:bob@example.com", directMessages[0].raw); code != 202 {
		t.Fatal(code)
	}
	at := us(0)
	if n := dpRegister(t, c, "sip:bob@example.com", contact, 600, at, "", "", "<urn:uuid:1>", "<null>"); n != 1 || events() != 1 {
		t.Fatalf("dp_register = %d, %d events; want 1, 1", n, events())
	}
	if reg, _ := s.Contact(ctx, bob); !reg.PagerOnly {
		t.Errorf("pager_only lost by a refresh of the same binding")
	}
	ev, _ := c.XRange(ctx, "dp:events", "-", "+").Result()
	if v := ev[0].Values; v["kind"] != "registered" || v["aor"] != "sip:bob@example.com" || v["contact"] != contact || v["at"] != at {
		t.Errorf("event %v", v)
	}
	// An older REGISTER of the same contact, run late: ignored.
	if n := dpRegister(t, c, "sip:bob@example.com", contact, 7200, us(-time.Second), "", "", "", ""); n != 0 {
		t.Errorf("stale dp_register wrote an event")
	}
	if reg, _ := s.Contact(ctx, bob); time.Until(reg.Expires) > time.Hour {
		t.Errorf("stale registration recorded: expires %v", reg.Expires)
	}
	// An older unregistration: ignored too.
	if dpUnregister(t, c, "sip:bob@example.com", contact, us(-time.Second), "unregistered"); true {
		if _, err := s.Contact(ctx, bob); err != nil {
			t.Errorf("stale unregistration removed the contact: %v", err)
		}
	}
	// Policy: no event when pushing is off for the user, held by default,
	// or switched off.
	for _, tc := range []struct {
		name string
		set  func() error
	}{
		{"user push off", func() error { return s.SetUserSettings(ctx, bob, plugin.UserSettings{Push: plugin.PushOff}) }},
		{"default hold", func() error {
			if err := s.DeleteUserSettings(ctx, bob); err != nil {
				return err
			}
			_, _, err := s.UpdatePolicy(ctx, "t", func(p *plugin.Policy) error { p.DefaultPush = plugin.PushHold; return nil })
			return err
		}},
		{"push disabled", func() error {
			_, _, err := s.UpdatePolicy(ctx, "t", func(p *plugin.Policy) error {
				p.DefaultPush, p.PushEnabled = plugin.PushOn, false
				return nil
			})
			return err
		}},
	} {
		if err := tc.set(); err != nil {
			t.Fatal(err)
		}
		before := events()
		if n := dpRegister(t, c, "sip:bob@example.com", contact, 600, us(0), "", "", "", ""); n != 0 || events() != before {
			t.Errorf("%s: dp_register = %d, events %d -> %d", tc.name, n, before, events())
		}
	}
	// The user's own "on" wins over a default of hold.
	if _, _, err := s.UpdatePolicy(ctx, "t", func(p *plugin.Policy) error {
		p.DefaultPush, p.PushEnabled = plugin.PushHold, true
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetUserSettings(ctx, bob, plugin.UserSettings{Push: plugin.PushOn}); err != nil {
		t.Fatal(err)
	}
	if n := dpRegister(t, c, "sip:bob@example.com", contact, 600, us(0), "", "", "", ""); n != 1 {
		t.Errorf("user on, default hold: dp_register = %d, want 1", n)
	}
	// Expires 0 is an unregistration (no push running: no event).
	before := events()
	if n := dpRegister(t, c, "sip:bob@example.com", contact, 0, us(0), "", "", "", ""); n != 0 || events() != before {
		t.Errorf("expires 0: %d, events %d -> %d", n, before, events())
	}
	if _, err := s.Contact(ctx, bob); !errors.Is(err, plugin.ErrNotFound) {
		t.Errorf("contact after expires 0: %v, want not found", err)
	}
	// Bad arguments are errors, not silent.
	for _, args := range [][]any{
		{"tel:+1", contact, 60, us(0), "", "", "", ""},
		{"sip:bob@example.com", "", 60, us(0), "", "", "", ""},
		{"sip:bob@example.com", contact, "soon", us(0), "", "", "", ""},
		{"sip:bob@example.com", contact, 60, "now", "", "", "", ""},
		// A control character (the probe's header injection through the
		// hook's contact): in the contact, the received, the user agent,
		// the instance, the Path; %-escaped too.
		{"sip:bob@example.com", contact + "\r\nX-Evil: yes", 60, us(0), "", "", "", ""},
		{"sip:bob@example.com", contact, 60, us(0), "sip:1.2.3.4\n", "", "", ""},
		{"sip:bob@example.com", contact, 60, us(0), "", "UA\x00", "", ""},
		{"sip:bob@example.com", contact, 60, us(0), "", "", "<urn:uuid:1>\r", ""},
		{"sip:bob@example.com", contact, 60, us(0), "", "", "", "<sip:p@h;lr>\r\nX: y"},
		{"sip:bob@example.com", "sip:bob@127.0.0.1:5099%0D%0AX-Evil:%20yes", 60, us(0), "", "", "", "", "pct"},
	} {
		if err := c.FCall(ctx, "dp_register", nil, args...).Err(); err == nil {
			t.Errorf("dp_register %q: no error", args)
		}
	}
	if reg, err := s.Contact(ctx, bob); err == nil && strings.ContainsAny(reg.Contact+reg.Received+reg.UserAgent+reg.Instance+strings.Join(reg.Path, ""), "\r\n\x00") {
		t.Errorf("a control character was recorded: %+v", reg)
	}
	if err := c.FCall(ctx, "dp_unregister", nil, "sip:bob@example.com", contact+"\r\n", us(0), "unregistered").Err(); err == nil {
		t.Errorf("dp_unregister with a CRLF in the contact: no error")
	}
}

// TestDirectUnregister: dp_unregister deletes the recorded contact when
// it is the one given (or "*"), and writes an event of its kind only when
// a push may be running (the mailbox's lease is live); a registration
// that comes late, older than the unregistration, is ignored.
func TestDirectUnregister(t *testing.T) {
	s, c := directStore(t, plugin.DefaultPolicy(), plugin.AORRules{})
	ctx := context.Background()
	bob := plugin.MustParseAOR("sip:bob@example.com")
	const contact = "sip:bob@127.0.0.1:5099"
	us := func(d time.Duration) string { return fmt.Sprint(time.Now().Add(d).UnixMicro()) }
	events := func() int64 { n, _ := c.XLen(ctx, "dp:events").Result(); return n }
	dpRegister(t, c, "sip:bob@example.com", contact, 600, us(-2*time.Second), "", "", "", "")
	// Another contact: nothing deleted.
	if dpUnregister(t, c, "sip:bob@example.com", "sip:other@h", us(0), "unregistered"); true {
		if _, err := s.Contact(ctx, bob); err != nil {
			t.Errorf("another contact's unregistration deleted bob's: %v", err)
		}
	}
	// No push running: deleted, no event.
	if n := dpUnregister(t, c, "sip:bob@example.com", contact, us(-time.Second), "expired"); n != 0 || events() != 0 {
		t.Errorf("no lease: dp_unregister = %d, %d events", n, events())
	}
	if _, err := s.Contact(ctx, bob); !errors.Is(err, plugin.ErrNotFound) {
		t.Errorf("contact after dp_unregister: %v", err)
	}
	// The REGISTER that came before it, run late: ignored.
	dpRegister(t, c, "sip:bob@example.com", contact, 600, us(-1500*time.Millisecond), "", "", "", "")
	if _, err := s.Contact(ctx, bob); !errors.Is(err, plugin.ErrNotFound) {
		t.Errorf("a registration older than the unregistration was recorded: %v", err)
	}
	// A push running (lease live): an event, with "*" for every contact.
	dpRegister(t, c, "sip:bob@example.com", contact, 600, us(0), "", "", "", "")
	if ok, err := s.Lock(ctx, bob, "push", time.Minute); err != nil || !ok {
		t.Fatal(ok, err)
	}
	if n := dpUnregister(t, c, "sip:bob@example.com", "*", us(time.Millisecond), "unregistered"); n != 1 || events() != 1 {
		t.Errorf("lease live: dp_unregister = %d, %d events", n, events())
	}
	ev, _ := c.XRange(ctx, "dp:events", "-", "+").Result()
	if v := ev[0].Values; v["kind"] != "unregistered" || v["aor"] != "sip:bob@example.com" || v["contact"] != "" {
		t.Errorf("event %v", v)
	}
	if err := c.FCall(ctx, "dp_unregister", nil, "sip:bob@example.com", contact, us(0), "gone").Err(); err == nil {
		t.Errorf("kind gone: no error")
	}
}

// TestDirectNotInCluster: the proxy's functions refuse to run on a Redis
// Cluster (flag no-cluster), with Redis's own error, instead of touching
// keys of several slots.
func TestDirectNotInCluster(t *testing.T) {
	cl := harness.RedisCluster(t)
	s, err := New(Config{URL: cl.URL()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	if err := s.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	cc := s.Client().(*redis.ClusterClient)
	err = cc.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		err := m.FCall(ctx, "dp_store", nil, "sip:bob@example.com", directMessages[0].raw).Err()
		if err == nil || !strings.Contains(err.Error(), "cluster") {
			return fmt.Errorf("dp_store on a cluster node: %v, want a no-cluster error", err)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}

// TestDirectStoreDuringPush: dp_store writes a "stored" event only while
// a push to the recipient runs (its lease is live), for the push to claim
// once more; otherwise none (the next registration pushes).
func TestDirectStoreDuringPush(t *testing.T) {
	s, c := directStore(t, plugin.DefaultPolicy(), plugin.AORRules{})
	ctx := context.Background()
	bob := plugin.MustParseAOR("sip:bob@example.com")
	events := func() int64 { n, _ := c.XLen(ctx, "dp:events").Result(); return n }
	dpStore(t, c, "sip:bob@example.com", directMessages[0].raw)
	if n := events(); n != 0 {
		t.Fatalf("%d events without a push running, want 0", n)
	}
	if ok, err := s.Lock(ctx, bob, "push", time.Minute); err != nil || !ok {
		t.Fatal(ok, err)
	}
	dpStore(t, c, "sip:bob@example.com", directMessages[1].raw)
	evs, err := s.ReadEvents(ctx, "a", 10, 100*time.Millisecond)
	if err != nil || len(evs) != 1 || evs[0].Kind != plugin.EventStored || evs[0].AOR != bob {
		t.Fatalf("events %+v, %v; want one stored event for bob", evs, err)
	}
	if err := s.Unlock(ctx, bob, "push"); err != nil {
		t.Fatal(err)
	}
	dpStore(t, c, "sip:bob@example.com", directMessages[2].raw)
	if n := events(); n != 1 {
		t.Errorf("%d events after the push ended, want still 1", n)
	}
}

// pctEscape is what the OpenSIPS script does before a raw query: every
// '%' and every character a query cannot carry as %XX.
func pctEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '%', '"', '\'', ' ', '\t', '\r', '\n', 0:
			fmt.Fprintf(&b, "%%%02X", c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// TestDirectPct: with the trailing "pct" argument (a proxy whose raw
// queries cannot carry quotes or white space), the functions decode
// their %-escaped arguments first: dp_store stores exactly what the
// unescaped call stores, and refuses a raw whose decoded length is not
// the one the proxy gives (its escaping cut it); dp_register and
// dp_unregister record the same as unescaped.
func TestDirectPct(t *testing.T) {
	s, c := directStore(t, plugin.DefaultPolicy(), plugin.AORRules{})
	ctx := context.Background()
	raw := directMessages[3].raw // quoted display name with escaped quotes, folded
	res, err := c.FCall(ctx, "dp_store", nil, pctEscape("sip:bob@example.com"), pctEscape(raw), "pct", len(raw)).Slice()
	if err != nil || res[0].(int64) != 202 {
		t.Fatalf("dp_store pct = %v, %v", res, err)
	}
	got, _ := c.HGet(ctx, "dp:{sip:bob@example.com}:m", res[2].(string)).Result()
	r, err := decodeRecord(got)
	if err != nil {
		t.Fatal(err)
	}
	m, err := ingress.Deferred([]byte(raw), "sip:bob@example.com", r.Received, plugin.AORRules{})
	if err != nil {
		t.Fatal(err)
	}
	m.ID, m.Expires = res[2].(string), r.Expires
	if want := encode(m); got != want {
		t.Errorf("pct record differs from the hook's:\n got %q\nwant %q", got, want)
	}
	// Cut at a NUL by the proxy's escaping: refused, nothing stored.
	cut := raw[:40]
	if res, err := c.FCall(ctx, "dp_store", nil, "sip:bob@example.com", pctEscape(cut), "pct", len(raw)).Slice(); err != nil ||
		res[0].(int64) != 400 || res[1] != "Bad Request" {
		t.Errorf("dp_store of a cut raw = %v, %v; want 400", res, err)
	}
	if res, err := c.FCall(ctx, "dp_store", nil, "sip:bob@example.com", pctEscape(raw), "pct").Slice(); err != nil || res[0].(int64) != 400 {
		t.Errorf("dp_store pct without a length = %v, %v; want 400", res, err)
	}
	if n, _ := c.LLen(ctx, "dp:{sip:bob@example.com}:q").Result(); n != 1 {
		t.Errorf("%d stored, want 1", n)
	}
	// dp_register: a user agent with spaces and quotes, a contact with
	// its own %-escape.
	const contact = "sip:b%40b@127.0.0.1:5099"
	ua := `Some "client" 1.0 'x'`
	if err := c.FCall(ctx, "dp_register", nil, pctEscape("sip:bob@example.com"), pctEscape(contact), "600",
		pctEscape(fmt.Sprint(time.Now().UnixMicro())), "", pctEscape(ua), "", "", "pct").Err(); err != nil {
		t.Fatal(err)
	}
	reg, err := s.Contact(ctx, plugin.MustParseAOR("sip:bob@example.com"))
	if err != nil || reg.Contact != contact || reg.UserAgent != ua {
		t.Fatalf("registration %+v, %v; want contact %q and user agent %q", reg, err, contact, ua)
	}
	if err := c.FCall(ctx, "dp_unregister", nil, pctEscape("sip:bob@example.com"), pctEscape(contact),
		fmt.Sprint(time.Now().Add(time.Second).UnixMicro()), "unregistered", "pct").Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Contact(ctx, plugin.MustParseAOR("sip:bob@example.com")); !errors.Is(err, plugin.ErrNotFound) {
		t.Errorf("after dp_unregister pct: %v, want not found", err)
	}
}

// TestDirectStoreCSeqForms: the CSeq forms the SIP ingress takes
// (ingress.Deferred's checkCSeq), dp_store takes too.
func TestDirectStoreCSeqForms(t *testing.T) {
	_, c := directStore(t, plugin.DefaultPolicy(), plugin.AORRules{})
	ok := directMessages[0].raw
	for _, cseq := range []string{"CSeq: 2147483647 MESSAGE", "cseq:  1\t MESSAGE ", "CSEQ: 0001 MESSAGE", "CSeq: 0 MESSAGE", "CSeq: 000 MESSAGE", "CSeq: 1\r\n MESSAGE", "CSeq: 000000000002147483647 MESSAGE"} {
		raw := strings.Replace(ok, "CSeq: 1 MESSAGE", cseq, 1)
		if raw == ok && cseq != "CSeq: 1 MESSAGE" {
			t.Fatalf("the test message has no CSeq: 1 MESSAGE")
		}
		if _, err := ingress.Deferred([]byte(raw), "sip:bob@example.com", time.Now(), plugin.AORRules{}); err != nil {
			t.Errorf("%q: the ingress refuses it: %v", cseq, err)
		}
		if code, reason, _ := dpStore(t, c, "sip:bob@example.com", raw); code != 202 {
			t.Errorf("%q: dp_store = %d %s, want 202", cseq, code, reason)
		}
	}
}

// TestMaxMessageSizeExact: a MESSAGE of exactly max_message_size octets
// is stored, with or without a Date of its own (the Date deferpush adds
// is not the sender's and does not count), one octet over is refused
// 513; by dp_store and by the hook's path alike.
func TestMaxMessageSizeExact(t *testing.T) {
	undated := directMessages[0].raw
	dated := directMessages[1].raw
	for _, tc := range []struct {
		name, raw string
	}{{"undated", undated}, {"dated", dated}} {
		for _, over := range []int{0, 1} {
			p := plugin.DefaultPolicy()
			p.MaxMessageSize = len(tc.raw) - over
			s, c := directStore(t, p, plugin.AORRules{})
			want := int64(202)
			if over > 0 {
				want = 513
			}
			if code, _, _ := dpStore(t, c, "sip:bob@example.com", tc.raw); code != want {
				t.Errorf("%s, limit %d for %d octets: dp_store %d, want %d", tc.name, p.MaxMessageSize, len(tc.raw), code, want)
			}
			m, err := ingress.Deferred([]byte(tc.raw), "sip:bob@example.com", time.Now(), plugin.AORRules{})
			if err == nil {
				err = s.Append(context.Background(), m, p.Limits())
			}
			if got := plugin.OutcomeOf(err, p).SIPCode; int64(got) != want {
				t.Errorf("%s, limit %d for %d octets: the hook's path %d (%v), want %d", tc.name, p.MaxMessageSize, len(tc.raw), got, err, want)
			}
		}
	}
}
