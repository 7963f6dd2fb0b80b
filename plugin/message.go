package plugin

import (
	"time"

	"github.com/oklog/ulid/v2"
)

// Kind says how a deferred message reached deferpush, which decides how it
// is encapsulated when pushed.
type Kind string

const (
	// KindSIPMessage: stored from a SIP MESSAGE; Raw is the whole request
	// (start line, headers with Date added at store time, body).
	KindSIPMessage Kind = "sip-message"
	// KindMSRPSession: stored from an MSRP session; Raw is the complete,
	// reassembled MSRP SEND and Invite the session's INVITE headers.
	KindMSRPSession Kind = "msrp-session"
)

// Valid reports whether k is one of the declared kinds.
func (k Kind) Valid() bool { return k == KindSIPMessage || k == KindMSRPSession }

// State is where a stored message is in its life.
type State string

const (
	StatePending  State = "pending"  // waiting for a push
	StateInFlight State = "inflight" // claimed by a push, not yet acked
	StateDead     State = "dead"     // dead-lettered after too many failed attempts
)

// Message is the envelope of one deferred message. Raw (and Invite) are
// the exact bytes pushed later: they are never re-serialised, so Call-ID,
// Message-ID and identity headers stay intact.
type Message struct {
	// ID is a ULID (see NewID): unique, and sorting ids sorts messages by
	// arrival. Append fills it in when empty.
	ID        string    `json:"id"`
	Recipient AOR       `json:"recipient"`
	Sender    string    `json:"sender"` // From URI as received (not canonicalised)
	Received  time.Time `json:"received"`
	// Expires is when the message is dropped undelivered. Append sets it
	// from Limits.TTL when zero.
	Expires time.Time `json:"expires"`
	Kind    Kind      `json:"kind"`
	// Raw is the stored SIP MESSAGE or MSRP SEND, byte for byte.
	Raw []byte `json:"raw"`
	// Invite, for KindMSRPSession, is the session INVITE's start line and
	// headers To, From, Call-ID, Date, P-Asserted-Identity and Subject,
	// CRLF-terminated, without SDP.
	Invite      []byte `json:"invite,omitempty"`
	CallID      string `json:"call_id,omitempty"`    // SIP Call-ID of the MESSAGE or session
	MessageID   string `json:"message_id,omitempty"` // MSRP Message-ID of the stored SEND
	ContentType string `json:"content_type,omitempty"`

	// Attempts counts failed push attempts (Store.Fail); LastError is the
	// reason given with the last one. Both are kept by the store.
	Attempts  int    `json:"attempts"`
	LastError string `json:"last_error,omitempty"`
	// State is filled in by Store.Get, List and DeadLetters; Append ignores it.
	State State `json:"state,omitempty"`
	// Omitted is the size of the Raw and Invite a listing left out
	// (ListQuery.Body false); 0 when they are there.
	Omitted int `json:"-"`
	// NotifyFailure says the sender asked to be told when the message is
	// not delivered (an RFC 5438 negative-delivery request, see
	// Notifier). Append records it, so that the Sweep that drops the
	// message on expiry reports it (SweepStats.Undelivered); messages
	// read back from a store have it false.
	NotifyFailure bool `json:"-"`
	// Added counts the octets of Raw deferpush added to what the sender
	// sent (the Date header of a MESSAGE that had none). They do not count
	// against Limits.MaxMessageSize: a MESSAGE of exactly the limit is
	// taken. Not stored.
	Added int `json:"-"`
}

// Size is the stored bytes (those a listing left out included).
func (m *Message) Size() int { return len(m.Raw) + len(m.Invite) + m.Omitted }

// Counted is what Limits.MaxMessageSize is checked against: the stored
// bytes less those deferpush added.
func (m *Message) Counted() int { return m.Size() - m.Added }

// NewID returns a new ULID string for a message received at now. Ids sort
// by now to the millisecond; within one millisecond, ids made one after
// another sort in creation order (unless ids for another millisecond are
// made in between, which restarts the random part).
func NewID(now time.Time) string {
	return ulid.MustNew(ulid.Timestamp(now), ulid.DefaultEntropy()).String()
}

// Validate checks what a store needs before storing m: a valid kind,
// recipient, received time and body. The error is a *FieldError.
func (m *Message) Validate() error {
	switch {
	case m.Recipient.IsZero():
		return &FieldError{Field: "recipient", Problem: "missing"}
	case !m.Kind.Valid():
		return &FieldError{Field: "kind", Problem: "unknown kind " + string(m.Kind)}
	case len(m.Raw) == 0:
		return &FieldError{Field: "raw", Problem: "empty"}
	case m.Received.IsZero():
		return &FieldError{Field: "received", Problem: "missing"}
	case m.ID != "" && !IsID(m.ID):
		return &FieldError{Field: "id", Problem: "not a ULID"}
	}
	return nil
}

// IsID reports whether id can be a message's id: a ULID (NewID).
func IsID(id string) bool {
	_, err := ulid.ParseStrict(id)
	return err == nil
}
