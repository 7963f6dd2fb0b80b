package ingress

import (
	"errors"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/plugin/encap"
)

// Statuses of an attempt to store a deferred message, as the hooks' JSON
// carries them.
const (
	StatusStored        = "stored"
	StatusMalformed     = "malformed"
	StatusTooLarge      = "too_large"
	StatusMailboxFull   = "mailbox_full"
	StatusStoreDisabled = "store_disabled"
	StatusError         = "error"
)

// Outcome is how an attempt to store a deferred message ended, and the SIP
// reply the sender gets for it.
type Outcome struct {
	Status string
	Code   int    // SIP status code
	Reason string // SIP reason phrase
}

// OutcomeOf maps the result of storing a message (nil: stored) to its
// outcome under policy p, which chooses the replies for a full mailbox and
// for storing switched off. It is the only place where these errors become
// SIP codes.
func OutcomeOf(err error, p plugin.Policy) Outcome {
	switch {
	case err == nil:
		return Outcome{StatusStored, 202, "Accepted"}
	case errors.Is(err, plugin.ErrTooLarge):
		return Outcome{StatusTooLarge, 513, "Message Too Large"}
	case errors.Is(err, plugin.ErrMailboxFull):
		return Outcome{StatusMailboxFull, p.FullMailboxReply, reason(p.FullMailboxReply)}
	case errors.Is(err, plugin.ErrStoreDisabled):
		return Outcome{StatusStoreDisabled, p.StoreDisabledReply, reason(p.StoreDisabledReply)}
	case errors.Is(err, ErrMalformed), errors.Is(err, encap.ErrMalformed),
		errors.Is(err, plugin.ErrInvalid), errors.Is(err, plugin.ErrBadAOR):
		return Outcome{StatusMalformed, 400, "Bad Request"}
	}
	return Outcome{StatusError, 500, "Server Internal Error"}
}

func reason(code int) string {
	switch code {
	case 403:
		return "Forbidden"
	case 480:
		return "Temporarily Unavailable"
	case 486:
		return "Busy Here"
	}
	return "Not Stored"
}
