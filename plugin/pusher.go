package plugin

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Pusher opens push sessions to registered clients: steps 2–7 of the seed's
// Figure 2 (INVITE through the proxy, 200, ACK, MSRP connected).
// plugin/push implements it over SIP and MSRP.
type Pusher interface {
	// Open sets up a session to t and returns when it can carry messages.
	// An INVITE that is refused or not answered in time returns an error
	// (a *SessionError when the peer answered with a status); nothing has
	// been sent then. Open honours ctx: a cancelled INVITE is CANCELled.
	Open(ctx context.Context, t Target) (PushSession, error)
}

// PushSession is an open session to one client: steps 8–13 of Figure 2.
type PushSession interface {
	// Deliver sends msgs in order, pipelined, and calls done exactly once
	// for each message, in order, as soon as its fate is known: a nil
	// error when the client confirmed it (MSRP 200 to its last chunk, and
	// the success REPORT when one was asked for); ErrHeld when it cannot be
	// encapsulated in a type the client accepts and the policy says hold;
	// a *RejectedError when the client refused that message; ErrNotSent
	// for a message not sent because the session broke first;
	// ErrUnconfirmed for one the next hop took but whose success REPORT
	// never came (the session then ends); any other error when the
	// session broke after the message was sent but before it was
	// confirmed.
	// done calls never overlap.
	// Deliver returns nil when every message was answered by the client,
	// or the error that broke the session (the session is then unusable,
	// but Close must still be called).
	Deliver(ctx context.Context, msgs []*Message, done func(m *Message, err error)) error
	// Close ends the session (SIP BYE) and frees it. It is safe to call
	// after a failed Deliver.
	Close(ctx context.Context) error
}

// Target is where and how to push.
type Target struct {
	AOR AOR
	// URI is the Request-URI of the INVITE: the registered contact, or the
	// AOR when the policy's push_target is "aor".
	URI string
	// Registration is the registration that triggered the push.
	Registration Registration
	// Policy is the operator policy in force when the push started
	// (encapsulation, fallback, INVITE timeout, success reports).
	Policy Policy
	// Pager delivers each message as a SIP MESSAGE to URI (pager mode,
	// RFC 3428) instead of in an MSRP session: Open sends nothing then.
	Pager bool
	// Messages are the messages the push claimed first, the session's
	// first Deliver. Open refuses an MSRP answer that can carry none of
	// them — the client's a=accept-types, a=accept-wrapped-types and
	// a=max-size take none of their encapsulations, and the policy's
	// no_encap_fallback sends no bare body — as it refuses an answer
	// without MSRP (ErrMSRPRefused, the session ended with BYE): an
	// INVITE that would carry nothing, at every push, is no session.
	// Nil: no such check.
	Messages []*Message
}

// ErrMSRPRefused reports a client that refused the MSRP session itself:
// it answered the INVITE 415, 488 or 606, or answered 2xx without a
// usable MSRP m-line, or with one that takes none of Target.Messages (the
// session is then ended with BYE). It is not a
// refusal of the push (486 Busy Here, 603 Decline): under delivery auto
// the push goes on in pager mode. A *SessionError wraps it.
var ErrMSRPRefused = errors.New("plugin: the client refused an MSRP session")

// ErrHeld reports a message that was not sent because the client accepts
// no type it can be encapsulated in and the policy says to hold it. It is
// not a failure: the message stays stored.
var ErrHeld = errors.New("plugin: message held: the client accepts none of its encapsulations")

// ErrNotSent reports a message that was not sent because the session broke
// before its turn. It is not a failed attempt: the message stays stored.
var ErrNotSent = errors.New("plugin: message not sent: the session ended first")

// ErrUnconfirmed reports a message that was sent and taken by the next hop
// (an MSRP relay's 200) but whose delivery the client never confirmed: the
// success REPORT asked for did not come. It is not a failed attempt — the
// client may well have it — and the message stays stored; it may come to
// the client again, with the same Message-ID.
var ErrUnconfirmed = errors.New("plugin: message unconfirmed: no success report from the client")

// RejectedError reports that the client refused one message (e.g. MSRP 413
// or 415). The session may still carry the next ones.
type RejectedError struct {
	Status int    // MSRP status code
	Reason string // its comment
}

func (e *RejectedError) Error() string {
	return fmt.Sprintf("client refused the message: %d %s", e.Status, e.Reason)
}

// SessionError reports a push session that could not be set up or was
// ended by the peer, with the SIP status when there was one.
type SessionError struct {
	Op     string // "invite", "msrp", "bye", "message" (pager mode)
	Status int    // SIP status code; 0 when none (timeout, network)
	Err    error
}

func (e *SessionError) Error() string {
	if e.Status != 0 {
		return fmt.Sprintf("push %s: SIP %d: %v", e.Op, e.Status, e.Err)
	}
	return fmt.Sprintf("push %s: %v", e.Op, e.Err)
}

func (e *SessionError) Unwrap() error { return e.Err }

// Observer receives what the engine did, for metrics. Implementations must
// be fast and safe for concurrent use.
type Observer interface {
	// PushDone is called once per push run that opened a session or tried
	// to.
	PushDone(r PushReport)
	// Notified is called once per notification sent to a sender (RFC
	// 5438), with the error that kept it from going out, if any.
	Notified(d Disposition, err error)
}

// PushOutcome is how a push run ended; its value is the metrics label.
type PushOutcome string

const (
	// OutcomeNone: nothing to push (empty mailbox, push not allowed, or
	// another push holds the recipient). Not reported.
	OutcomeNone PushOutcome = ""
	// OutcomeDelivered: the mailbox was emptied or the session limit reached.
	OutcomeDelivered PushOutcome = "delivered"
	// OutcomePartial: some messages were left, e.g. refused or held.
	OutcomePartial PushOutcome = "partial"
	// OutcomeFailed: no session could be set up, or it broke.
	OutcomeFailed PushOutcome = "failed"
	// OutcomeCancelled: an unregistration or the shutdown ended it.
	OutcomeCancelled PushOutcome = "cancelled"
)

// PushReport describes one push run.
type PushReport struct {
	AOR          AOR
	Outcome      PushOutcome
	Delivered    int
	Failed       int
	DeadLettered int
	// ToFirstSend is the time from the registration event to the first
	// message handed to the session; zero when none was.
	ToFirstSend time.Duration
	// Duration is the whole run, lock to unlock.
	Duration time.Duration
	// Pager says the messages went by SIP MESSAGE (pager mode).
	Pager bool
	Err   error
}
