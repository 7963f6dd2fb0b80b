package encap

import (
	"errors"
	"fmt"
)

// Errors returned by this package. They are wrapped with the detail of what
// was wrong; test with errors.Is.
var (
	// ErrMalformed reports input that is not the SIP, MSRP, CPIM or
	// multipart text it claims to be. At the SIP ingress it becomes a 400.
	ErrMalformed = errors.New("encap: malformed message")

	// ErrInvalid reports a bad argument from the caller: a transaction id
	// or boundary out of syntax, an unknown Preference, an empty body.
	ErrInvalid = errors.New("encap: invalid argument")

	// ErrTooLarge reports a header section over the HeadLimits given to
	// ReadMessage. At the SIP ingress it becomes a 513.
	ErrTooLarge = errors.New("encap: header section too large")

	// ErrHold reports that the client accepts no encapsulation the policy
	// allows, or none within its a=max-size: the message stays stored for
	// a later push.
	ErrHold = errors.New("encap: no acceptable encapsulation, hold the message")
)

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
}

func tooLarge(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrTooLarge}, args...)...)
}
