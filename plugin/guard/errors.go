package guard

import "errors"

// The reasons a Listener refuses a connection, handed to Config.Refuse.
var (
	// ErrBusy: every connection in its way is busy, and none may be
	// closed to make room.
	ErrBusy = errors.New("guard: every connection is busy")
	// ErrSource: its source address is outside Config.Trusted and the
	// listener takes no other (Config.OnlyTrusted).
	ErrSource = errors.New("guard: source address not allowed")
)
