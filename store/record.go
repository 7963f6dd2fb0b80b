package store

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/deferpush/deferpush/plugin"
)

// record is the stored, immutable part of a plugin.Message. ID and
// Recipient are the hash field and the key; attempts live in tries.
//
// A record is written in a compact binary form (encode): the version byte
// recordV1, then each field in the order of this struct, times as
// time.Time.MarshalBinary, everything prefixed by its length as a uvarint.
// It costs less to build on every Append than JSON, whose base64 of the
// bodies also made the record a third larger. Records stored as JSON by
// earlier versions (they start with '{') are still read.
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

const recordV1 = 1

func encode(m *plugin.Message) (string, error) {
	received, err := m.Received.MarshalBinary()
	if err != nil {
		return "", fmt.Errorf("encode received time: %w", err)
	}
	expires, err := m.Expires.MarshalBinary()
	if err != nil {
		return "", fmt.Errorf("encode expiry: %w", err)
	}
	n := 1 + 9*binary.MaxVarintLen32 + len(m.Sender) + len(received) + len(expires) + len(m.Kind) +
		len(m.Raw) + len(m.Invite) + len(m.CallID) + len(m.MessageID) + len(m.ContentType)
	b := make([]byte, 1, n)
	b[0] = recordV1
	for _, f := range [...][]byte{
		[]byte(m.Sender), received, expires, []byte(m.Kind), m.Raw, m.Invite,
		[]byte(m.CallID), []byte(m.MessageID), []byte(m.ContentType),
	} {
		b = binary.AppendUvarint(b, uint64(len(f)))
		b = append(b, f...)
	}
	return string(b), nil
}

var errRecord = errors.New("truncated or unknown record")

// decodeRecord reads either form of a record.
func decodeRecord(rec string) (record, error) {
	var r record
	if strings.HasPrefix(rec, "{") {
		err := json.Unmarshal([]byte(rec), &r)
		return r, err
	}
	if len(rec) == 0 || rec[0] != recordV1 {
		return r, errRecord
	}
	rest := rec[1:]
	next := func() (string, error) {
		n, w := binary.Uvarint([]byte(rest[:min(len(rest), binary.MaxVarintLen64)]))
		if w <= 0 || n > uint64(len(rest)-w) {
			return "", errRecord
		}
		f := rest[w : w+int(n)]
		rest = rest[w+int(n):]
		return f, nil
	}
	var f [9]string
	for i := range f {
		var err error
		if f[i], err = next(); err != nil {
			return r, err
		}
	}
	if rest != "" {
		return r, errRecord
	}
	if err := r.Received.UnmarshalBinary([]byte(f[1])); err != nil {
		return r, err
	}
	if err := r.Expires.UnmarshalBinary([]byte(f[2])); err != nil {
		return r, err
	}
	r.Sender, r.Kind, r.CallID, r.MessageID, r.ContentType = f[0], plugin.Kind(f[3]), f[6], f[7], f[8]
	r.Raw = []byte(f[4])
	if f[5] != "" {
		r.Invite = []byte(f[5])
	}
	return r, nil
}

// decode rebuilds a message from its record and tries value
// ("<attempts> <last error>" or "").
func decode(aor plugin.AOR, id, rec, tries string) (*plugin.Message, error) {
	r, err := decodeRecord(rec)
	if err != nil {
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
