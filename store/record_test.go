package store

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/deferpush/deferpush/plugin"
)

var recordMsg = &plugin.Message{
	ID: "01J00000000000000000000000", Recipient: plugin.MustParseAOR("sip:bob@example.com"), Sender: "sip:carol@example.org",
	Received: time.Date(2026, 11, 26, 10, 0, 0, 123456789, time.FixedZone("X", 3600)),
	Expires:  time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC),
	Kind:     plugin.KindMSRPSession, Raw: []byte("MSRP a SEND\r\n\x00\xff\r\n-------a$\r\n"),
	Invite: []byte("INVITE sip:bob@example.com SIP/2.0\r\n"), CallID: "c1", MessageID: "m-123456", ContentType: "message/cpim",
}

func TestRecordRoundTrip(t *testing.T) {
	zero := *recordMsg
	zero.Expires, zero.Sender, zero.Invite, zero.Raw = time.Time{}, "", nil, []byte{}
	for _, m := range []*plugin.Message{recordMsg, &zero} {
		rec, err := encode(m)
		if err != nil {
			t.Fatal(err)
		}
		got, err := decode(m.Recipient, m.ID, rec, "2 timeout")
		if err != nil {
			t.Fatal(err)
		}
		want := *m
		want.Attempts, want.LastError = 2, "timeout"
		if d := cmp.Diff(&want, got, cmpopts.EquateEmpty()); d != "" {
			t.Errorf("decode(encode(m)) (-want +got):\n%s", d)
		}
	}
}

// TestRecordJSON checks that records stored as JSON by earlier versions
// are still read.
func TestRecordJSON(t *testing.T) {
	m := recordMsg
	b, err := json.Marshal(record{Sender: m.Sender, Received: m.Received, Expires: m.Expires, Kind: m.Kind,
		Raw: m.Raw, Invite: m.Invite, CallID: m.CallID, MessageID: m.MessageID, ContentType: m.ContentType})
	if err != nil {
		t.Fatal(err)
	}
	got, err := decode(m.Recipient, m.ID, string(b), "")
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(m, got); d != "" {
		t.Errorf("decode of a JSON record (-want +got):\n%s", d)
	}
}

func TestRecordCorrupt(t *testing.T) {
	rec, err := encode(recordMsg)
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"", "\x02", rec[:len(rec)-1], rec + "x", "\x01\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", "{"} {
		if _, err := decode(recordMsg.Recipient, recordMsg.ID, bad, ""); err == nil {
			t.Errorf("decode(%q) succeeded", bad)
		}
	}
}

func FuzzDecodeRecord(f *testing.F) {
	rec, _ := encode(recordMsg)
	f.Add(rec)
	f.Add(`{"k":"sip-message","b":"eA=="}`)
	f.Fuzz(func(t *testing.T, rec string) {
		m, err := decode(plugin.MustParseAOR("sip:bob@example.com"), "id", rec, "")
		if err != nil {
			return
		}
		again, err := encode(m)
		if err != nil {
			return // a time MarshalBinary refuses (odd zone offsets)
		}
		if _, err := decode(plugin.MustParseAOR("sip:bob@example.com"), "id", again, ""); err != nil {
			t.Errorf("re-encoded record does not decode: %v", err)
		}
	})
}

func BenchmarkEncodeRecord(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := encode(recordMsg); err != nil {
			b.Fatal(err)
		}
	}
}
