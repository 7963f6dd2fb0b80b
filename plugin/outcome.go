package plugin

import (
	"errors"
	"net/http"
)

// Errors the edges report for a request deferpush refuses before the core
// sees it; OutcomeOf maps them with the core's own.
var (
	// ErrMalformed reports a request that cannot be taken as it is: it
	// does not parse, is not the method it should be, or names no
	// recipient. The sender gets 400.
	ErrMalformed = errors.New("plugin: malformed request")
	// ErrUnauthorized reports a caller without the right credentials.
	ErrUnauthorized = errors.New("plugin: unauthorized")
	// ErrForbidden reports a caller from a source that is not allowed.
	ErrForbidden = errors.New("plugin: forbidden")
	// ErrRateLimited reports a caller over its rate limit.
	ErrRateLimited = errors.New("plugin: rate limited")
	// ErrNotAcceptable reports a session offer deferpush cannot take (no
	// usable MSRP media, or a re-INVITE inside a dialog).
	ErrNotAcceptable = errors.New("plugin: offer not acceptable")
	// ErrNoDialog reports an in-dialog request that matches no dialog.
	ErrNoDialog = errors.New("plugin: no such dialog")
	// ErrUnavailable reports a request refused for now (shutting down).
	ErrUnavailable = errors.New("plugin: unavailable")
	// ErrNotTrusted reports a request that reached the SIP ingress from a
	// peer that is not one of the proxies it serves (a source outside its
	// networks, or without the shared secret). The sender gets 403.
	ErrNotTrusted = errors.New("plugin: not a trusted peer")
	// ErrNotServed reports a request for a service switched off (the SIP
	// ingress, when the hooks store messages). The sender gets 405.
	ErrNotServed = errors.New("plugin: not served")
	// ErrMediaType: a body declared of a media type deferpush does not take.
	ErrMediaType = errors.New("plugin: unsupported media type")
)

// Status names how a request to deferpush ended, in the hooks' JSON, the
// logs and the metrics.
type Status string

const (
	StatusStored        Status = "stored"
	StatusRegistered    Status = "registered"
	StatusUnregistered  Status = "unregistered"
	StatusMalformed     Status = "malformed"
	StatusTooLarge      Status = "too_large"
	StatusMailboxFull   Status = "mailbox_full"
	StatusStoreDisabled Status = "store_disabled"
	StatusUnauthorized  Status = "unauthorized"
	StatusForbidden     Status = "forbidden"
	StatusRateLimited   Status = "rate_limited"
	StatusNotAcceptable Status = "not_acceptable"
	StatusNoDialog      Status = "no_dialog"
	StatusUnavailable   Status = "unavailable"
	StatusNotTrusted    Status = "not_trusted"
	StatusNotServed     Status = "not_served"
	StatusMediaType     Status = "unsupported_media_type"
	StatusError         Status = "error"
)

// Outcome is the answer every edge gives for one Status: the SIP reply
// (to the sender, directly from the ingress or through the route script
// of the hooks), the HTTP status of the hook call, and the MSRP status for
// a message inside a session. A zero code means the edge has no answer of
// that kind for it (a registration has no SIP reply of ours).
type Outcome struct {
	Status    Status
	SIPCode   int
	SIPReason string
	HTTP      int
	MSRP      int
}

// outcomes is the one table from status to answers. Refusals stay below
// HTTP 500 except the store's own failure, because Kamailio's http_client
// hands the route script the body of 2xx to 4xx replies only; the script
// answers 480 when it gets no body. The replies for a full mailbox and for
// storing switched off come from the policy (OutcomeOf).
//
// The store's failure is 480 Temporarily Unavailable to the sender, as
// the shipped scripts answer any 5xx hook reply and every other path
// answers a store that does not answer (dp_store from the proxy, the
// SIP ingress): a temporary failure the sender may retry (RFC 3261
// §21.4.18), not a 500 that says deferpush is broken.
var outcomes = map[Status]Outcome{
	StatusStored:        {SIPCode: 202, SIPReason: "Accepted", HTTP: http.StatusOK, MSRP: 200},
	StatusRegistered:    {HTTP: http.StatusOK},
	StatusUnregistered:  {HTTP: http.StatusOK},
	StatusMalformed:     {SIPCode: 400, SIPReason: "Bad Request", HTTP: http.StatusBadRequest, MSRP: 400},
	StatusTooLarge:      {SIPCode: 513, SIPReason: "Message Too Large", HTTP: http.StatusRequestEntityTooLarge, MSRP: 413},
	StatusMailboxFull:   {HTTP: http.StatusConflict, MSRP: 403},
	StatusStoreDisabled: {HTTP: http.StatusForbidden, MSRP: 403},
	StatusUnauthorized:  {SIPCode: 500, SIPReason: "Server Internal Error", HTTP: http.StatusUnauthorized, MSRP: 403},
	StatusForbidden:     {SIPCode: 500, SIPReason: "Server Internal Error", HTTP: http.StatusForbidden, MSRP: 403},
	// The sender may try again later (RFC 3261 §21.5.4).
	StatusRateLimited:   {SIPCode: 503, SIPReason: "Service Unavailable", HTTP: http.StatusTooManyRequests, MSRP: 403},
	StatusNotAcceptable: {SIPCode: 488, SIPReason: "Not Acceptable Here", HTTP: http.StatusBadRequest, MSRP: 415},
	StatusNoDialog:      {SIPCode: 481, SIPReason: "Call/Transaction Does Not Exist", HTTP: http.StatusNotFound, MSRP: 481},
	StatusUnavailable:   {SIPCode: 503, SIPReason: "Service Unavailable", HTTP: http.StatusServiceUnavailable, MSRP: 403},
	StatusNotTrusted:    {SIPCode: 403, SIPReason: "Forbidden", HTTP: http.StatusForbidden, MSRP: 403},
	StatusNotServed:     {SIPCode: 405, SIPReason: "Method Not Allowed", HTTP: http.StatusMethodNotAllowed, MSRP: 501},
	// A hook call whose body is declared as something else than JSON: the
	// route script's fault, not the sender's.
	StatusMediaType: {SIPCode: 500, SIPReason: "Server Internal Error", HTTP: http.StatusUnsupportedMediaType, MSRP: 415},
	StatusError:     {SIPCode: 480, SIPReason: "Temporarily Unavailable", HTTP: http.StatusServiceUnavailable, MSRP: 403},
}

// StatusOf names the outcome of err: nil is StatusStored; an error the
// core does not know is StatusError.
func StatusOf(err error) Status {
	for _, c := range []struct {
		err error
		s   Status
	}{
		{ErrTooLarge, StatusTooLarge},
		{ErrMailboxFull, StatusMailboxFull},
		{ErrStoreDisabled, StatusStoreDisabled},
		{ErrMalformed, StatusMalformed},
		{ErrInvalid, StatusMalformed},
		{ErrBadAOR, StatusMalformed},
		{ErrUnauthorized, StatusUnauthorized},
		{ErrForbidden, StatusForbidden},
		{ErrRateLimited, StatusRateLimited},
		{ErrNotAcceptable, StatusNotAcceptable},
		{ErrNoDialog, StatusNoDialog},
		{ErrUnavailable, StatusUnavailable},
		{ErrNotTrusted, StatusNotTrusted},
		{ErrNotServed, StatusNotServed},
		{ErrMediaType, StatusMediaType},
		{ErrStoreUnavailable, StatusError},
	} {
		if errors.Is(err, c.err) {
			return c.s
		}
	}
	if err == nil {
		return StatusStored
	}
	return StatusError
}

// OutcomeOf is the answer to a request that ended with err (nil: a
// message stored) under policy p, which chooses the SIP replies for a full
// mailbox and for storing switched off. It is the only place where errors
// become SIP, HTTP and MSRP codes.
func OutcomeOf(err error, p Policy) Outcome {
	return OutcomeFor(StatusOf(err), p)
}

// OutcomeFor is the answer for status s under policy p.
func OutcomeFor(s Status, p Policy) Outcome {
	o := outcomes[s]
	o.Status = s
	switch s {
	case StatusMailboxFull:
		o.SIPCode = p.FullMailboxReply
	case StatusStoreDisabled:
		o.SIPCode = p.StoreDisabledReply
	default:
		return o
	}
	o.SIPReason = sipReason(o.SIPCode)
	return o
}

func sipReason(code int) string {
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
