package store

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/deferpush/deferpush/plugin"
	"github.com/redis/go-redis/v9"
)

// dpRecent calls dp_recent as kamailio.cfg's cache does and returns its
// answer: next (Redis's clock, or the scan cursor) and the AORs.
func dpRecent(t *testing.T, c redis.UniversalClient, args ...any) (string, []string) {
	t.Helper()
	res, err := c.FCall(context.Background(), "dp_recent", nil, args...).StringSlice()
	if err != nil {
		t.Fatalf("FCALL dp_recent %v: %v", args, err)
	}
	if len(res) == 0 {
		t.Fatalf("dp_recent %v answered nothing, want at least next", args)
	}
	aors := res[1:]
	slices.Sort(aors)
	return res[0], aors
}

// TestDirectRecent: while a proxy polls (dp_recent set dp:recent:on),
// every way a mailbox gets something to push adds its AOR to dp:recent
// (dp_store, the Go store's Append, a requeue of dead letters), and
// nothing does before; dp_recent returns those stored since a time it
// gave (with its slack before), drops entries older than a minute,
// refuses a since older than that, and pages through dp:mailboxes with
// "scan".
func TestDirectRecent(t *testing.T) {
	s, c := directStore(t, plugin.DefaultPolicy(), plugin.AORRules{})
	ctx := context.Background()

	// No proxy polls yet: stores leave dp:recent alone.
	if code, _, _ := dpStore(t, c, "sip:early@example.com", directMessages[0].raw); code != 202 {
		t.Fatalf("dp_store = %d", code)
	}
	if err := s.Append(ctx, &plugin.Message{Recipient: plugin.MustParseAOR("sip:early2@example.com"), Kind: plugin.KindSIPMessage,
		Raw: []byte(directMessages[0].raw), Received: time.Now()}, plugin.Limits{}); err != nil {
		t.Fatal(err)
	}
	if n, _ := c.Exists(ctx, "dp:recent").Result(); n != 0 {
		t.Errorf("dp:recent written while no proxy polls it")
	}

	since, aors := dpRecent(t, c, "0")
	if len(aors) != 0 {
		t.Fatalf("nothing stored since a proxy polls: dp_recent = %v, want none", aors)
	}
	if ttl, _ := c.PTTL(ctx, "dp:recent:on").Result(); ttl <= 0 {
		t.Fatalf("dp_recent did not set dp:recent:on (PTTL %v)", ttl)
	}
	redisNow, err := strconv.ParseInt(since, 10, 64)
	if err != nil || time.Since(time.UnixMilli(redisNow)).Abs() > time.Minute {
		t.Fatalf("dp_recent's next = %q, want Redis's clock in ms", since)
	}
	// The Go store reads dp:recent:on at most once per recentCheck.
	time.Sleep(recentCheck + 100*time.Millisecond)
	if code, _, _ := dpStore(t, c, "sip:Bob@example.com", directMessages[0].raw); code != 202 {
		t.Fatalf("dp_store = %d", code)
	}
	carol := plugin.MustParseAOR("sip:carol@example.com")
	m := &plugin.Message{Recipient: carol, Kind: plugin.KindSIPMessage, Raw: []byte(directMessages[0].raw), Received: time.Now()}
	if err := s.Append(ctx, m, plugin.Limits{}); err != nil {
		t.Fatal(err)
	}
	_, aors = dpRecent(t, c, since)
	if want := []string{"sip:bob@example.com", "sip:carol@example.com"}; !slices.Equal(aors, want) {
		t.Errorf("after two stores: dp_recent = %v, want %v", aors, want)
	}

	// Older than since minus the slack: not returned; older than a
	// minute: dropped.
	old := float64(redisNow - 3*60*1000)
	c.ZAdd(ctx, "dp:recent", redis.Z{Score: old, Member: "sip:old@example.com"})
	c.ZAdd(ctx, "dp:recent", redis.Z{Score: float64(redisNow - 30*1000), Member: "sip:earlier@example.com"})
	if _, aors = dpRecent(t, c, since); slices.Contains(aors, "sip:old@example.com") || slices.Contains(aors, "sip:earlier@example.com") {
		t.Errorf("dp_recent since %s = %v, want nothing from before it", since, aors)
	}
	if n, _ := c.ZScore(ctx, "dp:recent", "sip:old@example.com").Result(); n != 0 {
		t.Errorf("an entry of 3 min ago is still in dp:recent")
	}
	if _, aors = dpRecent(t, c, fmt.Sprint(redisNow-50*1000)); !slices.Contains(aors, "sip:earlier@example.com") {
		t.Errorf("dp_recent 50 s back = %v, want the entry of 30 s ago", aors)
	}
	if err := c.FCall(ctx, "dp_recent", nil, fmt.Sprint(redisNow-2*60*1000)).Err(); err == nil {
		t.Errorf("dp_recent since 2 min ago: no error, want one (dp:recent keeps a minute: the proxy must load again)")
	}

	// A requeue of dead letters makes the mailbox pending again: listed.
	dave := plugin.MustParseAOR("sip:dave@example.com")
	c.RPush(ctx, "dp:{sip:dave@example.com}:d", "01J0000000000000000000000")
	next, _ := dpRecent(t, c, "0")
	if n, err := s.RequeueDeadLetters(ctx, dave); err != nil || n != 1 {
		t.Fatalf("RequeueDeadLetters = %d, %v", n, err)
	}
	if _, aors = dpRecent(t, c, next); !slices.Contains(aors, "sip:dave@example.com") {
		t.Errorf("after a requeue of dead letters: dp_recent = %v, want dave", aors)
	}

	// scan pages through dp:mailboxes until the cursor is 0 again.
	for i := range 1200 {
		c.ZAdd(ctx, "dp:mailboxes", redis.Z{Score: 1, Member: fmt.Sprintf("sip:u%d@example.com", i)})
	}
	want, _ := c.ZRange(ctx, "dp:mailboxes", 0, -1).Result()
	slices.Sort(want)
	var got []string
	cursor, pages := "0", 0
	for {
		var page []string
		cursor, page = dpRecent(t, c, "scan", cursor)
		got, pages = append(got, page...), pages+1
		if cursor == "0" {
			break
		}
	}
	slices.Sort(got)
	got = slices.Compact(got)
	if !slices.Equal(got, want) || pages < 2 {
		t.Errorf("scan: %d AORs in %d pages, want the %d of dp:mailboxes in more than one page", len(got), pages, len(want))
	}
	if err := c.FCall(ctx, "dp_recent", nil, "soon").Err(); err == nil {
		t.Errorf("dp_recent with a bad since: no error")
	}
}
