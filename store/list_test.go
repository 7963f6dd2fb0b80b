package store

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/test/harness"
)

// TestListReadsHeads: a listing without bodies gets from Redis each
// record's head, not the message's bytes: dp_list's answer for 20
// messages of 64 KiB holds a few KiB (it held every record whole, 1.3
// MB), and the messages listed are what Get reads less Raw and Invite,
// whose size is in Omitted, for records of every form (v2, and v1 and
// JSON as earlier releases wrote them). A page with bodies ends at
// MaxBytes. A page whose ids have lost their records (dp_expire drops a
// record before its id) is empty but moves on: Next counts the ids read.
// On redis-server and on the embedded store, whose Lua is another
// interpreter's.
func TestListReadsHeads(t *testing.T) {
	for _, tc := range []struct {
		name string
		open func(t *testing.T) *Redis
	}{
		{"redis-server", func(t *testing.T) *Redis {
			s, err := New(Config{URL: harness.Redis(t).URL()})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		}},
		{"embedded", func(t *testing.T) *Redis {
			s, err := NewEmbedded(Config{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		}},
	} {
		t.Run(tc.name, func(t *testing.T) { testListReadsHeads(t, tc.open(t)) })
	}
}

func testListReadsHeads(t *testing.T, s *Redis) {
	ctx := context.Background()
	const n, size = 20, 64 << 10
	lim := plugin.Limits{MaxMailbox: 100, MaxMessageSize: 1 << 20, TTL: time.Hour}
	var ids []string
	for range n {
		m := libMessage(strings.Repeat("x", size))
		m.Sender, m.CallID, m.ContentType = "sip:alice@example.com", "c-"+plugin.NewID(time.Now()), "text/plain"
		if err := s.Append(ctx, m, lim); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, m.ID)
	}
	// Two records of earlier releases' forms, at the tail.
	keys := mailboxKeys(libBob)
	old := *recordMsg
	old.Recipient, old.Expires = libBob, time.Now().Add(time.Hour).Round(time.Millisecond)
	js, err := json.Marshal(record{Sender: old.Sender, Received: old.Received, Expires: old.Expires, Kind: old.Kind,
		Raw: old.Raw, Invite: old.Invite, CallID: old.CallID, MessageID: old.MessageID, ContentType: old.ContentType})
	if err != nil {
		t.Fatal(err)
	}
	for _, rec := range []string{encodeV1(&old), string(js)} {
		id := plugin.NewID(time.Now())
		if err := s.c.HSet(ctx, keys[1], id, rec).Err(); err != nil {
			t.Fatal(err)
		}
		if err := s.c.RPush(ctx, keys[0], id).Err(); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}

	// What Redis answers: heads, not the stored bytes.
	answered := func(body string, budget int) (strs, records int) {
		t.Helper()
		res, err := s.fn.run(ctx, "dp_list", keys, "q", 0, 0, "", body, budget).Slice()
		if err != nil {
			t.Fatal(err)
		}
		for i, v := range res {
			if str, ok := v.(string); ok {
				strs += len(str)
				if i >= 4 && (i-4)%5 == 1 {
					records++
				}
			}
		}
		return strs, records
	}
	if got, records := answered("", 0); records != n+2 || got > 8<<10 {
		t.Errorf("dp_list without bodies answered %d records in %d bytes of strings, want %d in at most 8 KiB (the messages hold %d)",
			records, got, n+2, n*size)
	}
	if got, records := answered("body", 3*size+100); records != 3 || got < 3*size || got > 3*size+2<<10 {
		t.Errorf("dp_list with bodies and a budget of 3 messages answered %d records in %d bytes of strings", records, got)
	}

	page, err := s.List(ctx, libBob, plugin.ListQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if page.Total != n+2 || len(page.Messages) != n+2 || page.Next != 0 {
		t.Fatalf("listed %d of %d, next %d; want all %d", len(page.Messages), page.Total, page.Next, n+2)
	}
	for i, m := range page.Messages {
		want, err := s.Get(ctx, libBob, ids[i])
		if err != nil {
			t.Fatal(err)
		}
		want.Omitted, want.Raw, want.Invite = want.Size(), nil, nil
		if d := cmp.Diff(want, m); d != "" || m.Raw != nil || m.Invite != nil {
			t.Errorf("message %d listed without bodies (-got by Get less its bytes +listed):\n%s", i, d)
		}
	}
	if page.Messages[0].Size() != size || page.Messages[n].Size() != len(old.Raw)+len(old.Invite) {
		t.Errorf("sizes %d, %d; want %d, %d", page.Messages[0].Size(), page.Messages[n].Size(), size, len(old.Raw)+len(old.Invite))
	}

	page, err = s.List(ctx, libBob, plugin.ListQuery{Body: true, MaxBytes: 3*size + 100})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Messages) != 3 || page.Next != 3 || page.NextAfter != ids[2] || len(page.Messages[2].Raw) != size {
		t.Errorf("page with bodies = %d messages, next %d after %s; want 3, next 3 after %s", len(page.Messages), page.Next, page.NextAfter, ids[2])
	}

	// Records gone, their ids left behind.
	if err := s.c.HDel(ctx, keys[1], ids[5], ids[6], ids[7]).Err(); err != nil {
		t.Fatal(err)
	}
	page, err = s.List(ctx, libBob, plugin.ListQuery{Offset: 5, Limit: 3})
	if err != nil || len(page.Messages) != 0 || page.Next != 8 || page.NextAfter != ids[7] {
		t.Errorf("page of gone records = %+v, %v; want none, next 8 after %s", page, err, ids[7])
	}
	var walked []string
	for q, pages := (plugin.ListQuery{Limit: 3}), 0; ; pages++ {
		if pages > n {
			t.Fatal("the walk by next does not end")
		}
		page, err := s.List(ctx, libBob, q)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range page.Messages {
			walked = append(walked, m.ID)
		}
		if page.Next == 0 {
			break
		}
		q.Offset = page.Next
	}
	want := append(append([]string{}, ids[:5]...), ids[8:]...)
	if d := cmp.Diff(want, walked, cmpopts.EquateEmpty()); d != "" {
		t.Errorf("walk by next (-want +got):\n%s", d)
	}
}
