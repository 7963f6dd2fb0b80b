package test

import (
	"bytes"
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/deferpush/deferpush/adapters/imclient"
	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/plugin/encap"
)

// The proxy's pages (kamailio.cfg's PROXY_PAGES, on in REDIS_DIRECT): a
// push that the policy sends by SIP MESSAGE is sent by Kamailio itself,
// from the REGISTER's dp_register and each answer's dp_page, without
// deferpush on the path.

// pageVia matches the one Via of a page Kamailio sent itself: its branch
// is z9hG4bKdp<nonce>x<id>.
var pageVia = regexp.MustCompile(`(?m)^Via: SIP/2\.0/TCP [^;\r\n]+;branch=z9hG4bKdp[0-9a-f]{32}x([0-9A-Z]{26});rport\r$`)

// proxyPage checks that the request r came from Kamailio's page session
// (one Via, the session's branch, naming message id) and that it is the
// stored MESSAGE re-sent as deferpush's pager mode sends it: every kept
// header line of the stored request, in order, the stored CSeq number,
// the stored body.
func proxyPage(t *testing.T, r imclient.Received, stored *plugin.Message) {
	t.Helper()
	if !r.Pager {
		t.Errorf("message %s came by MSRP", stored.ID)
		return
	}
	if n := bytes.Count(r.Body, []byte("\r\nVia:")); n != 1 {
		t.Errorf("page of %s has %d Vias, want Kamailio's alone:\n%s", stored.ID, n, r.Body)
	}
	m := pageVia.FindSubmatch(r.Body)
	if m == nil || string(m[1]) != stored.ID {
		t.Errorf("page of %s: no Via of the proxy's page session naming it:\n%s", stored.ID, r.Body)
	}
	pg, err := encap.PageOf(encap.Deferred{Kind: encap.KindSIP, Stored: stored.Raw})
	if err != nil {
		t.Fatal(err)
	}
	head, body, _ := bytes.Cut(r.Body, []byte("\r\n\r\n"))
	if !bytes.Contains(head, bytes.TrimSuffix(pg.Head, []byte("\r\n"))) {
		t.Errorf("page of %s lacks the stored header lines, in order:\n%s\nwant within it:\n%s", stored.ID, head, pg.Head)
	}
	if want := "\r\nCSeq: " + strconv.FormatUint(uint64(pg.CSeq), 10) + " MESSAGE\r\n"; !bytes.Contains(head, []byte(want)) {
		t.Errorf("page of %s: no %q", stored.ID, strings.TrimSpace(want))
	}
	if !bytes.Equal(body, pg.Body) {
		t.Errorf("page of %s: body %q, want %q", stored.ID, body, pg.Body)
	}
}

// storedOf lists user's stored messages, in delivery order.
func storedOf(t *testing.T, s *dpStack, user string) []*plugin.Message {
	t.Helper()
	pg, err := s.st.List(context.Background(), plugin.MustParseAOR("sip:"+user+"@"+domain), plugin.ListQuery{Limit: 100, Body: true})
	if err != nil {
		t.Fatal(err)
	}
	return pg.Messages
}

// TestKamailioDirectProxyPages: with pager_below 3, a mailbox of three
// goes from Kamailio to the client as three MESSAGEs, one after the
// other's 200, in order, each the stored request re-sent (Call-ID, From
// with its display name and tag, To, Date, CSeq, body), no INVITE; the
// messages leave Redis and count as pushed; deferpush read no event. A
// mailbox of four (above pager_below) goes by MSRP, as before.
func TestKamailioDirectProxyPages(t *testing.T) {
	s := kamailioDirectStarter(t, stackOptions{policy: func(p *plugin.Policy) { p.PagerBelow = 3 }})
	user1 := s.client(t, "user1", imclient.Config{})
	for i := range 3 {
		if code := sendMessage(t, user1, "user2", []byte(fmt.Sprint("page ", i))); code != 202 {
			t.Fatalf("MESSAGE %d: %d, want 202", i, code)
		}
	}
	s.waitPending(t, "user2", 3)
	stored := storedOf(t, s, "user2")
	if len(stored) != 3 {
		t.Fatalf("%d stored, want 3", len(stored))
	}
	user2 := s.client(t, "user2", imclient.Config{})
	s.register(t, user2)
	waitClient(t, user2, "three pages", func(st imclient.Stats) bool { return st.Received == 3 })
	waitFor(t, 10*time.Second, "user2's mailbox empty", func() bool { return s.counts(t, "user2") == plugin.Counts{} })
	for i, r := range user2.Received() {
		proxyPage(t, r, stored[i])
		if got := string(r.Decoded.Body); got != fmt.Sprint("page ", i) {
			t.Errorf("page %d: body %q, out of order", i, got)
		}
	}
	if st := user2.Stats(); st.Invites != 0 {
		t.Errorf("user2 got %d INVITEs, want none", st.Invites)
	}
	tot, err := s.st.Totals(context.Background())
	if err != nil || tot.Pushed != 3 {
		t.Errorf("totals %+v, %v; want 3 pushed", tot, err)
	}
	if n, _ := s.events(t); n != 0 {
		t.Errorf("dp:events holds %d events; the proxy's pages need none", n)
	}

	for i := range 4 {
		if code := sendMessage(t, user1, "user3", []byte(fmt.Sprint("msrp ", i))); code != 202 {
			t.Fatalf("MESSAGE: %d, want 202", code)
		}
	}
	s.waitPending(t, "user3", 4)
	user3 := s.client(t, "user3", imclient.Config{})
	s.register(t, user3)
	st := waitClient(t, user3, "the BYE", func(st imclient.Stats) bool { return st.Byes == 1 })
	if st.Invites != 1 || st.Received != 4 {
		t.Errorf("user3 saw %+v; want one MSRP session of four messages", st)
	}
}

// TestKamailioDirectProxyPagesHandOff: a page answered 480 is put back,
// uncharged, and deferpush takes the push over (its registration event):
// the client gets that message and the rest, in order, by deferpush's
// own pager mode; a page that gets no answer within PAGE_TIMEOUT is
// handed over the same way.
func TestKamailioDirectProxyPagesHandOff(t *testing.T) {
	s := kamailioDirectStarter(t, stackOptions{
		policy:       func(p *plugin.Policy) { p.Delivery = plugin.DeliveryPager },
		kamailioArgs: []string{"-A", "PAGE_TIMEOUT=2"},
	})
	user1 := s.client(t, "user1", imclient.Config{})
	for _, b := range []string{"one", "two", "three"} {
		if code := sendMessage(t, user1, "user2", []byte(b)); code != 202 {
			t.Fatalf("MESSAGE: %d, want 202", code)
		}
	}
	s.waitPending(t, "user2", 3)
	// The second message it gets is refused once.
	user2 := s.client(t, "user2", imclient.Config{MessageStatus: func(n int, _ *sip.Request) int {
		if n == 2 {
			return 480
		}
		return 200
	}})
	s.register(t, user2)
	waitFor(t, 15*time.Second, "user2's mailbox empty", func() bool { return s.counts(t, "user2") == plugin.Counts{} })
	var bodies []string
	var fromProxy int
	for _, r := range user2.Received() {
		bodies = append(bodies, string(r.Decoded.Body))
		if pageVia.Match(r.Body) {
			fromProxy++
		}
	}
	if want := "one two two three"; strings.Join(bodies, " ") != want {
		t.Errorf("received %q, want %q (the refused one again, then the rest)", bodies, want)
	}
	if fromProxy != 2 {
		t.Errorf("%d of the pages came from the proxy's session, want 2 (one, and two refused)", fromProxy)
	}
	// The event is acked once its push has started, with the reader's
	// next read.
	waitFor(t, 5*time.Second, "the hand-off's event acked", func() bool {
		n, pending := s.events(t)
		return n == 1 && pending == 0
	})

	// No answer at all: the proxy's page times out, deferpush sends again.
	if code := sendMessage(t, user1, "user3", []byte("silence")); code != 202 {
		t.Fatalf("MESSAGE: %d, want 202", code)
	}
	s.waitPending(t, "user3", 1)
	user3 := s.client(t, "user3", imclient.Config{MessageStatus: func(n int, _ *sip.Request) int {
		if n == 1 {
			return -1
		}
		return 200
	}})
	s.register(t, user3)
	waitFor(t, 20*time.Second, "user3's mailbox empty", func() bool { return s.counts(t, "user3") == plugin.Counts{} })
	rs := user3.Received()
	if len(rs) != 2 || !pageVia.Match(rs[0].Body) || pageVia.Match(rs[1].Body) || string(rs[1].Decoded.Body) != "silence" {
		t.Errorf("user3 received %d (%v); want the proxy's unanswered page, then deferpush's", len(rs), rs)
	}
}
