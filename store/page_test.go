package store

import (
	"context"
	"fmt"
	"math/rand/v2"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/plugin/encap"
)

// The proxy's pages (library.lua, "Pages sent by the proxy"): dp_register
// with the "page" flag answers the first page of a pager-mode push, and
// dp_page acks each final 2xx and answers the next, or hands the push to
// deferpush.

const (
	pageContact = "sip:bob@127.0.0.1:5099;transport=tcp"
	pageVia     = "SIP/2.0/TCP 127.0.0.1:5060"
)

// pagerPolicy is the default policy with delivery auto and pager_below n.
func pagerPolicy(n int) plugin.Policy {
	p := plugin.DefaultPolicy()
	p.Delivery, p.PagerBelow = plugin.DeliveryAuto, n
	return p
}

// dpRegisterPage calls dp_register as Kamailio's Redis-direct mode does
// when it sends pages itself: no Path, the "page" flag, the nonce, the
// Via's transport and host:port.
func dpRegisterPage(t *testing.T, c redis.UniversalClient, aor, nonce, path string) any {
	t.Helper()
	res, err := c.FCall(context.Background(), "dp_register", nil, aor, pageContact, 3600,
		fmt.Sprint(time.Now().UnixMicro()), "sip:127.0.0.1:5099;transport=tcp", "<null>", "<null>", path,
		"page", nonce, "TCP", "127.0.0.1:5060", 60000).Result()
	if err != nil {
		t.Fatalf("FCALL dp_register: %v", err)
	}
	return res
}

// dpPage reports a page's final answer as the proxy does.
func dpPage(t *testing.T, c redis.UniversalClient, aor, nonce, id string, code int) any {
	t.Helper()
	res, err := c.FCall(context.Background(), "dp_page", nil, aor, nonce, id, code, "TCP", "127.0.0.1:5060", pageContact, 60000).Result()
	if err != nil {
		t.Fatalf("FCALL dp_page: %v", err)
	}
	return res
}

// pageOf reads a {3, request, id, aor} answer; ok false for another.
func pageOf(res any) (req, id, aor string, ok bool) {
	a, isSlice := res.([]any)
	if !isSlice || len(a) != 4 || a[0] != int64(3) {
		return "", "", "", false
	}
	return a[1].(string), a[2].(string), a[3].(string), true
}

// wantPage is the request the Go pager sends for the stored raw (encap's
// page), with the proxy's request line and Via.
func wantPage(t *testing.T, raw, nonce, id string) string {
	t.Helper()
	pg, err := encap.PageOf(encap.Deferred{Kind: encap.KindSIP, Stored: []byte(raw)})
	if err != nil {
		t.Fatal(err)
	}
	return "MESSAGE " + pageContact + " SIP/2.0\r\n" +
		"Via: " + pageVia + ";branch=z9hG4bKdp" + nonce + "x" + id + ";rport\r\n" +
		"Max-Forwards: 70\r\n" + string(pg.Head) +
		"CSeq: " + strconv.FormatUint(uint64(pg.CSeq), 10) + " MESSAGE\r\n" +
		"Content-Length: " + strconv.Itoa(len(pg.Body)) + "\r\n\r\n" + string(pg.Body)
}

// TestDirectPageRequest: the page dp_register answers for each stored
// MESSAGE is byte for byte the request the Go pager builds from the same
// record (encap.PageOf: the stored header lines in order, but the hop's
// and the credentials; CSeq with the stored number; the body), behind
// the proxy's request line to the contact and its Via; a 2xx through
// dp_page acks it and counts it pushed.
func TestDirectPageRequest(t *testing.T) {
	s, c := directStore(t, pagerPolicy(1), plugin.AORRules{})
	ctx := context.Background()
	bob := plugin.MustParseAOR("sip:bob@example.com")
	for i, tc := range directMessages {
		t.Run(tc.name, func(t *testing.T) {
			if code, _, _ := dpStore(t, c, "sip:Bob@example.com", tc.raw); code != 202 {
				t.Fatalf("dp_store = %d", code)
			}
			pg, err := s.List(ctx, bob, plugin.ListQuery{Limit: 10, Body: true})
			if err != nil || len(pg.Messages) != 1 {
				t.Fatal(pg, err)
			}
			stored := pg.Messages
			nonce := fmt.Sprintf("n%d", i)
			req, id, aor, ok := pageOf(dpRegisterPage(t, c, "sip:Bob@example.com", nonce, "<null>"))
			if !ok {
				t.Fatal("dp_register answered no page")
			}
			if aor != "sip:bob@example.com" || id != stored[0].ID {
				t.Errorf("page of %s %s, want sip:bob@example.com %s", aor, id, stored[0].ID)
			}
			if want := wantPage(t, string(stored[0].Raw), nonce, id); req != want {
				t.Errorf("page differs from the Go pager's:\n got %q\nwant %q", req, want)
			}
			if n, err := s.Count(ctx, bob); err != nil || n.InFlight != 1 {
				t.Errorf("counts %+v, %v; want 1 in flight", n, err)
			}
			if res := dpPage(t, c, aor, nonce, id, 200); res != int64(1) {
				t.Fatalf("dp_page 200 = %v, want 1 (done)", res)
			}
			if n, err := s.Count(ctx, bob); err != nil || n != (plugin.Counts{}) {
				t.Errorf("counts %+v, %v after the 200; want an empty mailbox", n, err)
			}
			if c.HExists(ctx, "dp:{sip:bob@example.com}:m", "lock").Val() {
				t.Error("the lease is still held after the session ended")
			}
		})
	}
	tot, err := s.Totals(ctx)
	if err != nil || tot.Pushed != int64(len(directMessages)) {
		t.Errorf("totals %+v, %v; want %d pushed", tot, err, len(directMessages))
	}
	if n := c.XLen(ctx, "dp:events").Val(); n != 0 {
		t.Errorf("%d events: the proxy's pages need none", n)
	}
}

// TestDirectPageSession: a session sends a mailbox one page at a time,
// in order, each after the previous one's 2xx; a failure answer (or the
// proxy's timeout) puts the message back, uncharged, drops the lease and
// hands the push to deferpush with a registered event; a report for a
// session whose lease is gone does nothing.
func TestDirectPageSession(t *testing.T) {
	s, c := directStore(t, pagerPolicy(5), plugin.AORRules{})
	ctx := context.Background()
	bob := plugin.MustParseAOR("sip:bob@example.com")
	var ids []string
	for i := range 4 {
		raw := sipMessage(fmt.Sprintf("From: <sip:alice@example.com>;tag=%d\r\nTo: <sip:bob@example.com>\r\nCall-ID: seq-%d\r\nContent-Type: text/plain\r\n", i, i), fmt.Sprint("m", i))
		_, _, id := dpStore(t, c, "sip:bob@example.com", raw)
		ids = append(ids, id)
	}
	_, id, aor, ok := pageOf(dpRegisterPage(t, c, "sip:bob@example.com", "abc", "<null>"))
	if !ok || id != ids[0] {
		t.Fatalf("first page %q (%v), want %q", id, ok, ids[0])
	}
	// The lease is the proxy's (60 s here), for its token.
	lock := strings.Fields(c.HGet(ctx, "dp:{sip:bob@example.com}:m", "lock").Val())
	if until, _ := strconv.ParseInt(lock[len(lock)-1], 10, 64); lock[0] != "pg:abc" ||
		time.Until(time.UnixMilli(until)) < 55*time.Second || time.Until(time.UnixMilli(until)) > time.Minute {
		t.Errorf("lease %q, want pg:abc's for a minute", lock)
	}
	// A second REGISTER while the session runs: the lease is live, so the
	// event path (deferpush sees the lease and waits).
	if res := dpRegisterPage(t, c, "sip:bob@example.com", "other", "<null>"); res != int64(1) {
		t.Errorf("dp_register during a session = %v, want 1 (an event)", res)
	}
	c.Del(ctx, "dp:events")
	for i := 1; i < 3; i++ {
		_, next, _, ok := pageOf(dpPage(t, c, aor, "abc", id, 202))
		if !ok || next != ids[i] {
			t.Fatalf("page %d: %q (%v), want %q", i, next, ok, ids[i])
		}
		id = next
	}
	// A report with another nonce: not the lease's owner.
	if res := dpPage(t, c, aor, "zzz", id, 200); res != int64(-1) {
		t.Errorf("dp_page of a stranger = %v, want -1", res)
	}
	// The third page fails (408: no answer): back to pending, first in
	// line, no attempt charged, lease dropped, event written.
	if res := dpPage(t, c, aor, "abc", id, 408); res != int64(0) {
		t.Fatalf("dp_page 408 = %v, want 0 (handed off)", res)
	}
	n, err := s.Count(ctx, bob)
	if err != nil || n != (plugin.Counts{Pending: 2}) {
		t.Errorf("counts %+v, %v; want 2 pending", n, err)
	}
	left, err := s.List(ctx, bob, plugin.ListQuery{Limit: 10})
	if err != nil || len(left.Messages) != 2 || left.Messages[0].ID != ids[2] || left.Messages[0].Attempts != 0 {
		t.Errorf("left %+v, %v; want %s first, no attempt", left, err, ids[2])
	}
	if c.HExists(ctx, "dp:{sip:bob@example.com}:m", "lock").Val() {
		t.Error("lease still held after the hand-off")
	}
	evs, err := s.ReadEvents(ctx, "a", 10, 100*time.Millisecond)
	if err != nil || len(evs) != 1 || evs[0].Kind != plugin.EventRegistered || evs[0].AOR != bob ||
		evs[0].Contact != pageContact || time.Until(evs[0].Expires) < 59*time.Minute {
		t.Errorf("events %+v, %v; want one registered event for bob's contact", evs, err)
	}
	// A late report of the same page finds no lease.
	if res := dpPage(t, c, aor, "abc", id, 200); res != int64(-1) {
		t.Errorf("late dp_page = %v, want -1", res)
	}
	if tot, _ := s.Totals(ctx); tot.Pushed != 2 {
		t.Errorf("%d pushed, want 2", tot.Pushed)
	}
	// dp:leases lists the mailbox, for the sweeper should the proxy die.
	if _, err := c.ZScore(ctx, "dp:leases", "sip:bob@example.com").Result(); err != nil {
		t.Errorf("dp:leases: %v", err)
	}
}

// TestDirectPageWhenNot: the proxy gets no page, and the event path is
// taken, when the policy does not send the mailbox by SIP MESSAGE, when
// the registration came through a Path, when another push holds the
// lease, or when the message cannot be paged by the proxy (not a stored
// SIP MESSAGE); pager_only learnt for the binding, delivery pager and the
// user's settings do page.
func TestDirectPageWhenNot(t *testing.T) {
	s, c := directStore(t, pagerPolicy(1), plugin.AORRules{})
	ctx := context.Background()
	bob := plugin.MustParseAOR("sip:bob@example.com")
	dpStore(t, c, "sip:bob@example.com", directMessages[0].raw)
	dpStore(t, c, "sip:bob@example.com", directMessages[1].raw)
	event := func(name string, res any) {
		t.Helper()
		if res != int64(1) {
			t.Errorf("%s: dp_register = %v, want 1 (an event)", name, res)
		}
		if c.HExists(ctx, "dp:{sip:bob@example.com}:m", "lock").Val() {
			t.Errorf("%s: a lease is left", name)
		}
	}
	page := func(name string, res any) {
		t.Helper()
		_, id, aor, ok := pageOf(res)
		if !ok {
			t.Fatalf("%s: dp_register = %v, want a page", name, res)
		}
		if r := dpPage(t, c, aor, "p", id, 503); r != int64(0) {
			t.Fatalf("%s: dp_page 503 = %v", name, r)
		}
	}
	event("two messages, pager_below 1", dpRegisterPage(t, c, "sip:bob@example.com", "p", "<null>"))
	if err := s.SetUserSettings(ctx, bob, plugin.UserSettings{PagerBelow: 2}); err != nil {
		t.Fatal(err)
	}
	page("the user's pager_below 2", dpRegisterPage(t, c, "sip:bob@example.com", "p", "<null>"))
	event("through a Path", dpRegisterPage(t, c, "sip:bob@example.com", "p", "<sip:edge@x;lr>"))
	if err := s.SetUserSettings(ctx, bob, plugin.UserSettings{Delivery: plugin.DeliveryMSRP, PagerBelow: 2}); err != nil {
		t.Fatal(err)
	}
	event("the user's delivery msrp", dpRegisterPage(t, c, "sip:bob@example.com", "p", "<null>"))
	if err := s.SetUserSettings(ctx, bob, plugin.UserSettings{}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetPagerOnly(ctx, bob, pageContact); err != nil {
		t.Fatal(err)
	}
	page("pager_only learnt", dpRegisterPage(t, c, "sip:bob@example.com", "p", "<null>"))
	p := pagerPolicy(0)
	p.Delivery = plugin.DeliveryPager
	if err := s.SetPolicy(ctx, p, "test"); err != nil {
		t.Fatal(err)
	}
	page("delivery pager", dpRegisterPage(t, c, "sip:bob@example.com", "p", "<null>"))
	if ok, err := s.Lock(ctx, bob, "push", time.Minute); err != nil || !ok {
		t.Fatal(ok, err)
	}
	if res := dpRegisterPage(t, c, "sip:bob@example.com", "p", "<null>"); res != int64(1) {
		t.Errorf("a push holds the lease: dp_register = %v, want 1", res)
	}
	if err := s.Unlock(ctx, bob, "push"); err != nil {
		t.Fatal(err)
	}
	// An MSRP-kind message first: the proxy cannot page it.
	if _, err := s.DeleteAll(ctx, bob); err != nil {
		t.Fatal(err)
	}
	m := &plugin.Message{ID: "01JDZV0000000000000000000A", Recipient: bob, Kind: plugin.KindMSRPSession, Received: time.Now(),
		Raw: []byte("MSRP a SEND\r\nTo-Path: msrp://x:1/a;tcp\r\nFrom-Path: msrp://y:2/b;tcp\r\nMessage-ID: 1\r\nByte-Range: 1-2/2\r\nContent-Type: text/plain\r\n\r\nhi\r\n-------a$\r\n")}
	if err := s.Append(ctx, m, plugin.Limits{}); err != nil {
		t.Fatal(err)
	}
	event("an MSRP message", dpRegisterPage(t, c, "sip:bob@example.com", "p", "<null>"))
	if n, err := s.Count(ctx, bob); err != nil || n != (plugin.Counts{Pending: 1}) {
		t.Errorf("counts %+v, %v; want the message pending", n, err)
	}
}

// pageMutations are header lines one mutation puts into a stored MESSAGE:
// duplicates and odd spellings of what a page keeps, drops or rewrites.
var pageMutations = []string{
	"CSeq: 2 MESSAGE", "CSeq:   7    MESSAGE  ", "CSeq: 0 MESSAGE", "CSeq: 2147483647 MESSAGE", "CSeq: 2147483648 MESSAGE",
	"CSeq: 12 MESSAGE extra", "CSeq: 007 MESSAGE", "CSeq: 3\r\n MESSAGE", "cseq: 9 message", "CSeq : 4 MESSAGE",
	"Route: <sip:x.example.com;lr>", "route: <sip:y;lr>", "Record-Route: <sip:rr;lr>", "Max-Forwards: 1", "max-forwards : 9",
	"Content-Length: 999", "l: 3", "v: SIP/2.0/UDP h;branch=z9hG4bKx", "Via: SIP/2.0/TCP h2;branch=z9hG4bKy",
	"Authorization: Digest username=\"a\"", "Proxy-Authorization: Digest x", "Proxy-Require: foo",
	"Subject: a!!b", "Subject:", "Subject :  spaced ", "X-Folded: one\r\n two\r\n\tthree", "P-Asserted-Identity: \"A\" <sip:a@x>",
	"Identity: abc;info=<https://x/y>", "X-Colon: a:b:c", "X-Empty:", "Supported: norefersub",
}

// contentLength is the Content-Length line of sipMessage's MESSAGEs.
var contentLength = regexp.MustCompile(`(?m)^Content-Length: \d+\r$`)

// TestDirectPageMatchesGo: for MESSAGEs with header lines added, dropped,
// folded and misspelt and bodies of any bytes, every page the library
// answers is byte for byte what the Go pager sends for the same stored
// record, and a record the Go pager cannot page (encap.PageOf's error)
// gets no page from the library either (deferpush then pushes it, and
// fails it as the Go path does). The library may decline more (a body
// with a NUL, a folded CSeq): those go to deferpush, which pages them.
func TestDirectPageMatchesGo(t *testing.T) {
	s, c := directStore(t, pagerPolicy(1), plugin.AORRules{})
	ctx := context.Background()
	bob := plugin.MustParseAOR("sip:bob@example.com")
	rnd := rand.New(rand.NewPCG(15, 7))
	var paged, declined, refused int
	for i := range 1500 {
		base := directMessages[rnd.IntN(len(directMessages))].raw
		head, body, _ := strings.Cut(base, "\r\n\r\n")
		lines := strings.Split(head, "\r\n")
		for range 1 + rnd.IntN(3) {
			at := 1 + rnd.IntN(len(lines))
			lines = slices.Insert(lines, at, pageMutations[rnd.IntN(len(pageMutations))])
		}
		if rnd.IntN(4) == 0 {
			b := make([]byte, rnd.IntN(40))
			for j := range b {
				b[j] = byte(rnd.IntN(256))
			}
			body = string(b)
		}
		raw := strings.Join(lines, "\r\n") + "\r\n\r\n" + body
		raw = contentLength.ReplaceAllString(raw, fmt.Sprintf("Content-Length: %d\r", len(body)))
		if code, _, _ := dpStore(t, c, "sip:bob@example.com", raw); code != 202 {
			refused++
			continue
		}
		pg, err := s.List(ctx, bob, plugin.ListQuery{Limit: 1, Body: true})
		if err != nil || len(pg.Messages) != 1 {
			t.Fatal(pg, err)
		}
		stored := pg.Messages[0]
		nonce := fmt.Sprint("m", i)
		res := dpRegisterPage(t, c, "sip:bob@example.com", nonce, "<null>")
		_, goErr := encap.PageOf(encap.Deferred{Kind: encap.KindSIP, Stored: stored.Raw})
		req, id, aor, ok := pageOf(res)
		switch {
		case ok && goErr != nil:
			t.Errorf("%d: the library paged what the Go pager cannot (%v):\n%q", i, goErr, stored.Raw)
		case ok:
			paged++
			if w := wantPage(t, string(stored.Raw), nonce, id); req != w {
				t.Errorf("%d: page differs from the Go pager's:\n got %q\nwant %q", i, req, w)
			}
			dpPage(t, c, aor, nonce, id, 503)
		default:
			declined++
		}
		if _, err := s.DeleteAll(ctx, bob); err != nil {
			t.Fatal(err)
		}
		c.Del(ctx, "dp:events")
		if t.Failed() {
			break
		}
	}
	t.Logf("%d paged as the Go pager pages them, %d left to deferpush, %d refused by dp_store", paged, declined, refused)
	if paged < 500 {
		t.Errorf("only %d of 1500 mutated MESSAGEs paged: the comparison covers too little", paged)
	}
}
