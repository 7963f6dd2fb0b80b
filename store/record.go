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
// Recipient are the hash field and the key; attempts live beside it (t:<id>).
//
// A record is written in the v2 form (encode), which Lua reads as well as
// Go (the sweeper's expiry check is one string.match; a proxy that stores
// into Redis itself writes it):
//
//	"\x02" <received ms> " " <expires ms> " " <kind> " " <len sender> " "
//	<len call-id> " " <len message-id> " " <len content-type> " "
//	<len invite> "\n" sender call-id message-id content-type invite raw
//
// with decimal numbers (expires 0: never) and raw the rest. Times keep
// the millisecond. Everything up to the invite is the record's head,
// which is all a listing without bodies reads: dp_list cuts it
// (library.lua's headlen) and decodeHead reads it, so that a mailbox of
// large messages is listed without copying their bytes out of Redis. Records written by earlier releases are still read:
// v1 (the byte 1, then each field prefixed by its length as a uvarint,
// times as time.Time.MarshalBinary) and JSON (they start with '{').
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

const (
	recordV1 = 1
	recordV2 = 2
)

// encode writes m's record in the v2 form.
func encode(m *plugin.Message) string {
	b := make([]byte, 0, 64+len(m.Sender)+len(m.CallID)+len(m.MessageID)+len(m.ContentType)+len(m.Invite)+len(m.Raw))
	b = append(b, recordV2)
	b = strconv.AppendInt(b, unixMilli(m.Received), 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, unixMilli(m.Expires), 10)
	b = append(b, ' ')
	b = append(b, m.Kind...)
	for _, n := range [...]int{len(m.Sender), len(m.CallID), len(m.MessageID), len(m.ContentType), len(m.Invite)} {
		b = append(b, ' ')
		b = strconv.AppendInt(b, int64(n), 10)
	}
	b = append(b, '\n')
	b = append(b, m.Sender...)
	b = append(b, m.CallID...)
	b = append(b, m.MessageID...)
	b = append(b, m.ContentType...)
	b = append(b, m.Invite...)
	b = append(b, m.Raw...)
	return string(b)
}

// unixMilli is t in Unix milliseconds, 0 for the zero time.
func unixMilli(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// fromMilli is the inverse of unixMilli.
func fromMilli(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

var errRecord = errors.New("truncated or unknown record")

// decodeRecord reads any form of a record.
func decodeRecord(rec string) (record, error) { return decodeForm(rec, false) }

// decodeForm reads a record, or with head what dp_list returns of it
// for a listing without bodies: a v2 record's head, whose Raw and Invite
// are then empty, or a record of an older form whole. A kind no release
// stores (plugin.Message.Validate refuses it) is an error: it could not
// be written back in the v2 form.
func decodeForm(rec string, head bool) (record, error) {
	r, err := decodeAny(rec, head)
	if err == nil && !r.Kind.Valid() {
		return r, fmt.Errorf("%w: unknown kind %q", errRecord, r.Kind)
	}
	return r, err
}

func decodeAny(rec string, head bool) (record, error) {
	var r record
	switch {
	case strings.HasPrefix(rec, "{"):
		err := json.Unmarshal([]byte(rec), &r)
		return r, err
	case len(rec) > 0 && rec[0] == recordV2:
		return decodeV2(rec[1:], head)
	case len(rec) == 0 || rec[0] != recordV1:
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

// decodeV2 reads a v2 record after its version byte; with head, only its
// head, which ends where the invite would begin.
func decodeV2(rec string, head bool) (record, error) {
	var r record
	header, body, ok := strings.Cut(rec, "\n")
	f := strings.Split(header, " ")
	if !ok || len(f) != 8 {
		return r, errRecord
	}
	var n [7]int64
	for i, s := range [...]string{f[0], f[1], f[3], f[4], f[5], f[6], f[7]} {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil || i >= 2 && v < 0 {
			return r, errRecord
		}
		n[i] = v
	}
	r.Received, r.Expires, r.Kind = fromMilli(n[0]), fromMilli(n[1]), plugin.Kind(f[2])
	fields := n[2:]
	if head {
		fields = n[2:6]
	}
	var parts [5]string
	for i, l := range fields {
		if l > int64(len(body)) {
			return r, errRecord
		}
		parts[i], body = body[:l], body[l:]
	}
	if head && body != "" {
		return r, errRecord
	}
	r.Sender, r.CallID, r.MessageID, r.ContentType = parts[0], parts[1], parts[2], parts[3]
	if parts[4] != "" {
		r.Invite = []byte(parts[4])
	}
	if !head {
		r.Raw = []byte(body)
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
	return message(aor, id, r, tries), nil
}

// decodeHead is decode for what a listing without bodies reads of a
// record of length octets (dp_list; decodeForm's head): Raw and Invite
// stay nil, and Omitted is their size.
func decodeHead(aor plugin.AOR, id, head, tries string, length int) (*plugin.Message, error) {
	r, err := decodeForm(head, true)
	if err != nil {
		return nil, fmt.Errorf("decode message %s: %w", id, err)
	}
	m := message(aor, id, r, tries)
	m.Omitted = len(m.Raw) + len(m.Invite) + length - len(head)
	m.Raw, m.Invite = nil, nil
	return m, nil
}

// message is the message of record r.
func message(aor plugin.AOR, id string, r record, tries string) *plugin.Message {
	m := &plugin.Message{
		ID: id, Recipient: aor, Sender: r.Sender, Received: r.Received, Expires: r.Expires, Kind: r.Kind,
		Raw: r.Raw, Invite: r.Invite, CallID: r.CallID, MessageID: r.MessageID, ContentType: r.ContentType,
	}
	if n, reason, ok := strings.Cut(tries, " "); ok {
		m.Attempts, _ = strconv.Atoi(n)
		m.LastError = reason
	}
	return m
}

func ms(t time.Time) int64 { return t.UnixMilli() }
