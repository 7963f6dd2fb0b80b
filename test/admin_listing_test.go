package test

import (
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/test/harness"
)

// TestAdminListingBounded: a listing of large messages costs a bounded
// page, whatever senders stored (probe 6, finding 1). Ten MESSAGEs of 1
// MiB: a page ends before the message that would take its messages'
// sizes past 4 MiB, with the bytes (?body=true, at most 50 a page) and
// without them (the store reads records whole to list them), so both
// walks take pages of 3, 3, 3 and 1, each saying where the next starts;
// without the bytes a page holds no raw. Every answer is checked against
// openapi.json.
func TestAdminListingBounded(t *testing.T) {
	r := harness.Redis(t)
	c := startCore(t, r.URL(), coreOptions{policy: func(p *plugin.Policy) { p.MaxMessageSize = 2 << 20 }})
	a := startAdmin(t, c, newContract(t))
	bob := plugin.MustParseAOR("sip:bob@example.com")
	var stored []*plugin.Message
	for i := range 10 {
		stored = append(stored, c.storeSIP(t, bob, fmt.Sprintf("big%d@example.com", i), strings.Repeat(string(rune('a'+i)), 1<<20)))
	}
	const budget = 4 << 20
	for _, query := range []string{"limit=50&body=true", "limit=1000"} {
		t.Run(query, func(t *testing.T) {
			body := strings.Contains(query, "body=true")
			var walked []string
			offset, sizes := 0, []int{}
			for pages := 0; ; pages++ {
				if pages > 10 {
					t.Fatal("the walk does not end")
				}
				res := a.do(t, "GET", fmt.Sprintf("/v1/users/sip:bob@example.com/messages?%s&offset=%d", query, offset), viewerToken, "", nil)
				if res.Status != 200 {
					t.Fatalf("offset %d: %d %s", offset, res.Status, res.Body)
				}
				var p struct {
					Messages []struct {
						ID, Raw string
						Size    int
					}
					Total, Offset int
					Next          *int
					NextAfter     string `json:"next_after"`
				}
				res.JSON(t, &p)
				sum := 0
				for _, m := range p.Messages {
					i := len(walked)
					walked = append(walked, m.ID)
					sum += m.Size
					if m.Size != stored[i].Size() {
						t.Errorf("%s: size %d, want %d", m.ID, m.Size, stored[i].Size())
					}
					raw, err := base64.StdEncoding.DecodeString(m.Raw)
					if err != nil || body && string(raw) != string(stored[i].Raw) || !body && m.Raw != "" {
						t.Errorf("%s: raw of %d bytes (%v), want the stored bytes: %t", m.ID, len(raw), err, body)
					}
				}
				sizes = append(sizes, len(p.Messages))
				if sum > budget || len(res.Body) > budget*3/2 {
					t.Errorf("page at %d: %d messages of %d bytes in an answer of %d bytes; want at most %d bytes", offset, len(p.Messages), sum, len(res.Body), budget)
				}
				if p.Next == nil {
					if p.NextAfter != "" || len(walked) != p.Total {
						t.Errorf("last page: next_after %q, %d of %d walked", p.NextAfter, len(walked), p.Total)
					}
					break
				}
				if *p.Next != len(walked) || p.NextAfter != walked[len(walked)-1] {
					t.Errorf("page at %d: next %d after %s, want %d after %s", offset, *p.Next, p.NextAfter, len(walked), walked[len(walked)-1])
				}
				offset = *p.Next
			}
			if want := []int{3, 3, 3, 1}; !slices.Equal(sizes, want) {
				t.Errorf("pages of %v messages, want %v", sizes, want)
			}
			for i, m := range stored {
				if i >= len(walked) || walked[i] != m.ID {
					t.Fatalf("walked %v, want the stored order", walked)
				}
			}
		})
	}
}

// TestAdminListingAfter reproduces probe 6, finding 5: a walk through a
// mailbox with ?limit=10 while, between pages, its oldest message leaves
// (pushed) and a new one arrives. Following next (an offset) skips a
// message a page, as everything behind the reader moves up; following
// next_after (?after=) lists every message that stayed, once.
func TestAdminListingAfter(t *testing.T) {
	r := harness.Redis(t)
	c := startCore(t, r.URL(), coreOptions{})
	a := startAdmin(t, c, newContract(t))
	const path = "/v1/users/sip:carol@example.com/messages"
	carol := plugin.MustParseAOR("sip:carol@example.com")
	n := 0
	store := func() {
		c.storeSIP(t, carol, fmt.Sprintf("m%d@example.com", n), "hello")
		n++
	}
	for range 50 {
		store()
	}
	type page struct {
		Messages []struct{ ID string }
		Next     *int
		After    string `json:"next_after"`
	}
	walk := func(next func(p page) string) (walked []string, stayed []string) {
		left := map[string]bool{}
		query := ""
		for pages := 0; ; pages++ {
			if pages > 20 {
				t.Fatal("the walk does not end")
			}
			var p page
			a.do(t, "GET", path+"?limit=10"+query, viewerToken, "", nil).JSON(t, &p)
			for _, m := range p.Messages {
				walked = append(walked, m.ID)
			}
			if p.Next == nil {
				break
			}
			var head page
			a.do(t, "GET", path+"?limit=1", viewerToken, "", nil).JSON(t, &head)
			if res := a.do(t, "DELETE", path+"/"+head.Messages[0].ID, adminToken, "", nil); res.Status != 204 {
				t.Fatalf("delete: %d %s", res.Status, res.Body)
			}
			left[head.Messages[0].ID] = true
			store()
			query = next(p)
		}
		var all page
		a.do(t, "GET", path+"?limit=1000", viewerToken, "", nil).JSON(t, &all)
		for _, m := range all.Messages {
			stayed = append(stayed, m.ID)
		}
		return walked, stayed
	}
	missed := func(walked, stayed []string) (missed []string) {
		for _, id := range stayed {
			if !slices.Contains(walked, id) {
				missed = append(missed, id)
			}
		}
		return missed
	}

	walked, stayed := walk(func(p page) string { return "&after=" + p.After })
	if m := missed(walked, stayed); len(m) > 0 {
		t.Errorf("the walk by next_after missed %d messages that stayed: %v", len(m), m)
	}
	if len(slices.Compact(slices.Sorted(slices.Values(walked)))) != len(walked) {
		t.Errorf("the walk by next_after listed a message twice: %v", walked)
	}
	walked, stayed = walk(func(p page) string { return fmt.Sprintf("&offset=%d", *p.Next) })
	t.Logf("the walk by next (an offset) missed %d of the messages that stayed", len(missed(walked, stayed)))
}
