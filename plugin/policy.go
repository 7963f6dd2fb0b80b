package plugin

import (
	"encoding/json"
	"fmt"
	"time"
)

// Duration is a time.Duration written in JSON as a Go duration string
// ("72h", "30s"). A JSON number is refused: it has no unit, and an
// operator's 3600 meant as seconds would otherwise be read as 3.6 µs.
type Duration time.Duration

// MarshalJSON writes d as a duration string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON reads a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("must be a duration string with a unit, like \"30s\" or \"72h\", not %s", b)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("must be a duration with a unit, like \"30s\" or \"72h\", not %q", s)
	}
	*d = Duration(v)
	return nil
}

// PushMode is whether deferred messages are pushed to a user.
type PushMode string

const (
	PushOn   PushMode = "on"   // push when the user registers
	PushOff  PushMode = "off"  // never push; messages wait until they expire or an operator acts
	PushHold PushMode = "hold" // keep messages and do not push for now (a temporary stop)
)

// Valid reports whether m is one of the declared modes.
func (m PushMode) Valid() bool { return m == PushOn || m == PushOff || m == PushHold }

// Encapsulation is the operator's preferred payload type for pushed
// messages. Auto picks by the client's accept-types and the message kind.
type Encapsulation string

const (
	EncapAuto      Encapsulation = "auto"
	EncapSIP       Encapsulation = "message/sip"
	EncapSIPFrag   Encapsulation = "message/sipfrag"
	EncapCPIM      Encapsulation = "message/cpim"
	EncapMSRP      Encapsulation = "message/msrp"
	EncapMultipart Encapsulation = "multipart/mixed"
)

// Fallback when the client's MSRP answer takes none of a message's
// encapsulations (its a=accept-types, a=accept-wrapped-types and
// a=max-size). A push none of whose first messages the answer takes at
// all is an MSRP refusal (Target.Messages): pager mode under delivery
// auto. The fallback decides for the messages of a session that carries
// others.
const (
	FallbackHold = "hold" // keep the message stored, no attempt charged
	FallbackBare = "bare" // send the bare body with its own Content-Type, when the client takes it
)

// Push targets.
const (
	TargetContact = "contact" // INVITE the registered Contact (through the proxy)
	TargetAOR     = "aor"     // INVITE the AOR; the proxy forks to all contacts
)

// Policy is the operator policy, shared by all deferpush instances through
// the store. JSON names are the admin API's.
type Policy struct {
	// StoreEnabled: store messages for offline users at all; when false
	// the ingress answers StoreDisabledReply.
	StoreEnabled bool `json:"store_enabled"`
	// PushEnabled is the global switch for pushing.
	PushEnabled bool `json:"push_enabled"`
	// DefaultPush applies to users without settings: on, off or hold.
	DefaultPush PushMode `json:"default_push"`
	// MaxPerSession bounds the messages sent in one push session.
	MaxPerSession int `json:"max_per_session"`
	// MessageTTL is how long a message is kept undelivered.
	MessageTTL Duration `json:"message_ttl"`
	// MaxMailbox bounds the messages stored per recipient (pending,
	// in flight and dead-lettered together).
	MaxMailbox int `json:"max_mailbox"`
	// MaxMessageSize bounds the stored bytes of one message (Message.Size).
	MaxMessageSize int `json:"max_message_size"`
	// Encapsulation is the preferred payload type.
	Encapsulation Encapsulation `json:"encapsulation"`
	// NoEncapFallback is FallbackHold or FallbackBare.
	NoEncapFallback string `json:"no_encap_fallback"`
	// PushTarget is TargetContact or TargetAOR.
	PushTarget string `json:"push_target"`
	// InviteTimeout bounds the wait for the client's answer.
	InviteTimeout Duration `json:"invite_timeout"`
	// RetryBackoff is the wait before pushing again after a failed session.
	RetryBackoff Duration `json:"retry_backoff"`
	// MaxAttempts is the failed attempts after which a message is
	// dead-lettered.
	MaxAttempts int `json:"max_attempts"`
	// SuccessReports asks the client for MSRP success REPORTs and acks a
	// message only on its REPORT instead of the 200.
	SuccessReports bool `json:"success_reports"`
	// FullMailboxReply is the SIP status for a full mailbox: 486 or 480.
	FullMailboxReply int `json:"full_mailbox_reply"`
	// StoreDisabledReply is the SIP status when storing is off: 403 or 480.
	StoreDisabledReply int `json:"store_disabled_reply"`
	// Delivery is how messages reach a client (delivery.go): an MSRP
	// session, SIP MESSAGEs (pager mode), or auto, MSRP first and pager
	// mode for a client that refuses MSRP.
	Delivery Delivery `json:"delivery"`
	// PagerBelow sends a mailbox of at most this many messages by SIP
	// MESSAGE even to an MSRP client, under Delivery auto; 0 never does.
	PagerBelow int `json:"pager_below"`
}

// DefaultPolicy is the policy of a fresh store: store and push on, 72 h
// TTL like Kamailio msilo, 1000 messages of at most 64 KiB per recipient,
// 50 messages per push session, 5 attempts.
func DefaultPolicy() Policy {
	return Policy{
		StoreEnabled:       true,
		PushEnabled:        true,
		DefaultPush:        PushOn,
		MaxPerSession:      50,
		MessageTTL:         Duration(72 * time.Hour),
		MaxMailbox:         1000,
		MaxMessageSize:     64 << 10,
		Encapsulation:      EncapAuto,
		NoEncapFallback:    FallbackHold,
		PushTarget:         TargetContact,
		InviteTimeout:      Duration(32 * time.Second),
		RetryBackoff:       Duration(time.Minute),
		MaxAttempts:        5,
		SuccessReports:     false,
		FullMailboxReply:   486,
		StoreDisabledReply: 480,
		Delivery:           DeliveryAuto,
		PagerBelow:         0,
	}
}

// Bounds of the policy's fields, beyond which a value is refused (400
// from the admin API): each is far past any sane setting and well below
// what would overflow a counter, a timer or a Redis expiry.
const (
	MaxPerSessionLimit  = 10000                // max_per_session
	MaxMessageTTL       = 365 * 24 * time.Hour // message_ttl
	MaxMailboxLimit     = 1000000              // max_mailbox
	MaxMessageSizeLimit = 16 << 20             // max_message_size (octets)
	MinInviteTimeout    = time.Second          // invite_timeout
	MaxInviteTimeout    = 5 * time.Minute      // invite_timeout
	MaxRetryBackoff     = 24 * time.Hour       // retry_backoff
	MaxAttemptsLimit    = 100                  // max_attempts
)

// Validate returns a *FieldError naming the first invalid field.
func (p Policy) Validate() error {
	bad := func(field, problem string) error { return &FieldError{Field: field, Problem: problem} }
	switch {
	case !p.DefaultPush.Valid():
		return bad("default_push", `must be "on", "off" or "hold"`)
	case p.MaxPerSession < 1 || p.MaxPerSession > MaxPerSessionLimit:
		return bad("max_per_session", fmt.Sprintf("must be between 1 and %d", MaxPerSessionLimit))
	case p.MessageTTL < Duration(time.Second) || p.MessageTTL > Duration(MaxMessageTTL):
		return bad("message_ttl", "must be between 1s and 8760h (a year)")
	case p.MaxMailbox < 1 || p.MaxMailbox > MaxMailboxLimit:
		return bad("max_mailbox", fmt.Sprintf("must be between 1 and %d", MaxMailboxLimit))
	case p.MaxMessageSize < 1 || p.MaxMessageSize > MaxMessageSizeLimit:
		return bad("max_message_size", fmt.Sprintf("must be between 1 and %d octets (16 MiB)", MaxMessageSizeLimit))
	case !p.Encapsulation.valid():
		return bad("encapsulation", "unknown type "+string(p.Encapsulation))
	case p.NoEncapFallback != FallbackHold && p.NoEncapFallback != FallbackBare:
		return bad("no_encap_fallback", `must be "hold" or "bare"`)
	case p.PushTarget != TargetContact && p.PushTarget != TargetAOR:
		return bad("push_target", `must be "contact" or "aor"`)
	case p.InviteTimeout < Duration(MinInviteTimeout) || p.InviteTimeout > Duration(MaxInviteTimeout):
		return bad("invite_timeout", "must be between 1s and 5m")
	case p.RetryBackoff < 0 || p.RetryBackoff > Duration(MaxRetryBackoff):
		return bad("retry_backoff", "must be between 0s and 24h")
	case p.MaxAttempts < 1 || p.MaxAttempts > MaxAttemptsLimit:
		return bad("max_attempts", fmt.Sprintf("must be between 1 and %d", MaxAttemptsLimit))
	case p.FullMailboxReply != 486 && p.FullMailboxReply != 480:
		return bad("full_mailbox_reply", "must be 486 or 480")
	case p.StoreDisabledReply != 403 && p.StoreDisabledReply != 480:
		return bad("store_disabled_reply", "must be 403 or 480")
	}
	return validateDelivery(p.Delivery, p.PagerBelow, false)
}

func (e Encapsulation) valid() bool {
	switch e {
	case EncapAuto, EncapSIP, EncapSIPFrag, EncapCPIM, EncapMSRP, EncapMultipart:
		return true
	}
	return false
}

// Limits returns the store limits the policy sets.
func (p Policy) Limits() Limits {
	return Limits{MaxMailbox: p.MaxMailbox, MaxMessageSize: p.MaxMessageSize, TTL: time.Duration(p.MessageTTL)}
}

// Push returns the effective push mode for a user: PushOff when the
// operator switched pushing off, else the user's mode, else DefaultPush.
func (p Policy) Push(u UserSettings) PushMode {
	switch {
	case !p.PushEnabled:
		return PushOff
	case u.Push != "":
		return u.Push
	}
	return p.DefaultPush
}

// SessionLimit returns the messages to send in one push session to a user.
func (p Policy) SessionLimit(u UserSettings) int {
	if u.MaxPerSession > 0 && u.MaxPerSession < p.MaxPerSession {
		return u.MaxPerSession
	}
	return p.MaxPerSession
}

// UserSettings are one user's choices. The zero value means "follow the
// operator policy".
type UserSettings struct {
	// Push is on, off or hold; empty means Policy.DefaultPush.
	Push PushMode `json:"push,omitempty"`
	// MaxPerSession lowers Policy.MaxPerSession for this user; 0 keeps it.
	MaxPerSession int `json:"max_per_session,omitempty"`
	// Delivery replaces Policy.Delivery for this user; empty keeps it.
	Delivery Delivery `json:"delivery,omitempty"`
	// PagerBelow replaces Policy.PagerBelow for this user; 0 keeps it.
	PagerBelow int `json:"pager_below,omitempty"`
}

// Validate returns a *FieldError naming the first invalid field.
func (u UserSettings) Validate() error {
	switch {
	case u.Push != "" && !u.Push.Valid():
		return &FieldError{Field: "push", Problem: `must be "on", "off" or "hold"`}
	case u.MaxPerSession < 0 || u.MaxPerSession > MaxPerSessionLimit:
		return &FieldError{Field: "max_per_session", Problem: fmt.Sprintf("must be between 0 and %d", MaxPerSessionLimit)}
	}
	return validateDelivery(u.Delivery, u.PagerBelow, true)
}
