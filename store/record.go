package store

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/deferpush/deferpush/plugin"
)

// record is the stored, immutable part of a plugin.Message. ID and
// Recipient are the hash field and the key; attempts live in tries.
type record struct {
	Sender      string      `json:"s,omitempty"`
	Received    time.Time   `json:"r"`
	Expires     time.Time   `json:"x"`
	Kind        plugin.Kind `json:"k"`
	Raw         []byte      `json:"b"`
	Invite      []byte      `json:"i,omitempty"`
	CallID      string      `json:"c,omitempty"`
	MessageID   string      `json:"m,omitempty"`
	ContentType string      `json:"t,omitempty"`
}

func encode(m *plugin.Message) (string, error) {
	b, err := json.Marshal(record{
		Sender: m.Sender, Received: m.Received, Expires: m.Expires, Kind: m.Kind,
		Raw: m.Raw, Invite: m.Invite, CallID: m.CallID, MessageID: m.MessageID, ContentType: m.ContentType,
	})
	return string(b), err
}

// decode rebuilds a message from its record and tries value
// ("<attempts> <last error>" or "").
func decode(aor plugin.AOR, id, rec, tries string) (*plugin.Message, error) {
	var r record
	if err := json.Unmarshal([]byte(rec), &r); err != nil {
		return nil, fmt.Errorf("decode message %s: %w", id, err)
	}
	m := &plugin.Message{
		ID: id, Recipient: aor, Sender: r.Sender, Received: r.Received, Expires: r.Expires, Kind: r.Kind,
		Raw: r.Raw, Invite: r.Invite, CallID: r.CallID, MessageID: r.MessageID, ContentType: r.ContentType,
	}
	if n, reason, ok := strings.Cut(tries, " "); ok {
		m.Attempts, _ = strconv.Atoi(n)
		m.LastError = reason
	}
	return m, nil
}

func ms(t time.Time) int64 { return t.UnixMilli() }
