package msrp

import (
	"errors"
	"fmt"
)

// ErrClosed is returned by operations on a closed Session, Listener or
// connection.
var ErrClosed = errors.New("msrp: closed")

// ErrNoReport is returned by Send (and Start's wait) when every chunk of a
// message that asked for a success REPORT was answered 200 but the REPORT
// did not come within Config.Timeout: the next hop took the message, the
// far end's confirmation never arrived (a relay that drops REPORTs, or a
// peer that never sends them).
var ErrNoReport = errors.New("msrp: no success report in time")

// Status codes used by this package (RFC 4975 §10).
const (
	StatusOK                  = 200
	StatusBadRequest          = 400
	StatusForbidden           = 403
	StatusTimeout             = 408 // never sent on the wire: a local timeout
	StatusStopSending         = 413
	StatusUnsupportedMedia    = 415
	StatusOutOfBounds         = 423
	StatusNoSession           = 481
	StatusUnknownMethod       = 501
	StatusSessionAlreadyBound = 506
)

// StatusText returns the RFC 4975 comment for a status code, or "" when the
// code is not one of RFC 4975's.
func StatusText(code int) string {
	switch code {
	case StatusOK:
		return "OK"
	case StatusBadRequest:
		return "Bad Request"
	case StatusForbidden:
		return "Forbidden"
	case StatusTimeout:
		return "Request Timeout"
	case StatusStopSending:
		return "Stop Sending Message"
	case StatusUnsupportedMedia:
		return "Unsupported Media Type"
	case StatusOutOfBounds:
		return "Interval Out-of-Bounds"
	case StatusNoSession:
		return "Session Does Not Exist"
	case StatusUnknownMethod:
		return "Method Not Implemented"
	case StatusSessionAlreadyBound:
		return "Session Already Bound"
	}
	return ""
}

// StatusError is an MSRP status other than 200: the answer of a peer to a
// request, a failure REPORT, or a local 408 when no answer came in time. A
// Handler returns one to choose the status it answers with.
type StatusError struct {
	Code    int
	Comment string // the peer's comment; may be empty
}

func (e *StatusError) Error() string {
	c := e.Comment
	if c == "" {
		c = StatusText(e.Code)
	}
	return fmt.Sprintf("msrp: status %03d %s", e.Code, c)
}

// Status returns a *StatusError carrying code and its RFC comment.
func Status(code int) error {
	return &StatusError{Code: code, Comment: StatusText(code)}
}

// SyntaxError reports a frame the Reader could not accept. Code is the status
// to answer it with (400, 413 or 501). When Resync is true, the whole frame
// was consumed and the stream can carry on with the next frame; otherwise
// framing is lost and the connection must be closed.
type SyntaxError struct {
	Code   int
	Resync bool
	Reason string
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("msrp: %s (%03d)", e.Reason, e.Code)
}
