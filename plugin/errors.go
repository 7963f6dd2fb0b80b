package plugin

import (
	"errors"
	"fmt"
)

// Sentinel errors shared by every Store implementation and their callers.
// The API layer maps each to exactly one wire status (HTTP, SIP); test with
// errors.Is.
var (
	// ErrBadAOR reports an address of record that cannot be parsed.
	ErrBadAOR = errors.New("plugin: malformed address of record")
	// ErrMailboxFull reports that the recipient already has the maximum
	// number of stored messages. Nothing was stored.
	ErrMailboxFull = errors.New("plugin: mailbox full")
	// ErrTooLarge reports a message larger than the per-message limit.
	// Nothing was stored.
	ErrTooLarge = errors.New("plugin: message too large")
	// ErrNotFound reports an unknown message id, recipient or record.
	ErrNotFound = errors.New("plugin: not found")
	// ErrLeaseLost reports that the push lock or claim lease is not (or no
	// longer) held by the caller's token: another push owns the recipient,
	// or the lease expired and its messages went back to pending.
	ErrLeaseLost = errors.New("plugin: lease lost")
	// ErrInvalid reports an invalid value (policy, settings, message
	// envelope). A *FieldError carries the offending field.
	ErrInvalid = errors.New("plugin: invalid value")
	// ErrSuperseded reports a registration or unregistration that the
	// store ignored because the proxy recorded a newer one of the same
	// contact (Registration.At): the proxy posted the two out of order.
	ErrSuperseded = errors.New("plugin: superseded by a newer registration event")
	// ErrStoreUnavailable reports a store that could not be reached or
	// could not serve the request now: the connection was refused or lost,
	// no answer came within the client's timeout, the server is loading
	// its data or has no master. The same request may succeed later.
	// What it asked for may still have been done (a command sent before
	// the connection was lost runs when the server gets it).
	ErrStoreUnavailable = errors.New("plugin: store unavailable")
)

// LimitError is returned when a limit refuses a message. It unwraps to
// ErrMailboxFull or ErrTooLarge, and carries the numbers for the error
// reply.
type LimitError struct {
	Err   error  // ErrMailboxFull or ErrTooLarge
	Limit string // policy field name: "max_mailbox" or "max_message_size"
	Max   int    // the configured limit
	Got   int    // the size or count that was refused
}

func (e *LimitError) Error() string {
	if errors.Is(e.Err, ErrMailboxFull) {
		return fmt.Sprintf("%v: %s is %d, %d stored", e.Err, e.Limit, e.Max, e.Got)
	}
	return fmt.Sprintf("%v: %s is %d, the message has %d octets", e.Err, e.Limit, e.Max, e.Got)
}

func (e *LimitError) Unwrap() error { return e.Err }

// FieldError names the field of a Policy, UserSettings or Message that
// failed validation. It unwraps to ErrInvalid.
type FieldError struct {
	Field   string // JSON name, e.g. "max_mailbox"
	Problem string // e.g. "must be at least 1"
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("invalid %s: %s", e.Field, e.Problem)
}

func (e *FieldError) Unwrap() error { return ErrInvalid }
