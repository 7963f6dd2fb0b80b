package ingress

import "errors"

// ErrMalformed reports a request that cannot be stored as it is: it does not
// parse, is not a MESSAGE, or names no recipient. The sender gets 400.
var ErrMalformed = errors.New("ingress: malformed request")
