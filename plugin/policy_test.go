package plugin

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestDefaultPolicyValid(t *testing.T) {
	if err := DefaultPolicy().Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestPolicyValidate(t *testing.T) {
	tests := []struct {
		field string
		edit  func(*Policy)
	}{
		{"default_push", func(p *Policy) { p.DefaultPush = "maybe" }},
		{"max_per_session", func(p *Policy) { p.MaxPerSession = 0 }},
		{"message_ttl", func(p *Policy) { p.MessageTTL = Duration(time.Millisecond) }},
		{"max_mailbox", func(p *Policy) { p.MaxMailbox = -1 }},
		{"max_message_size", func(p *Policy) { p.MaxMessageSize = 0 }},
		{"encapsulation", func(p *Policy) { p.Encapsulation = "text/plain" }},
		{"no_encap_fallback", func(p *Policy) { p.NoEncapFallback = "drop" }},
		{"push_target", func(p *Policy) { p.PushTarget = "all" }},
		{"invite_timeout", func(p *Policy) { p.InviteTimeout = 0 }},
		{"retry_backoff", func(p *Policy) { p.RetryBackoff = -1 }},
		{"max_attempts", func(p *Policy) { p.MaxAttempts = 0 }},
		{"full_mailbox_reply", func(p *Policy) { p.FullMailboxReply = 500 }},
		{"store_disabled_reply", func(p *Policy) { p.StoreDisabledReply = 404 }},
	}
	for _, tt := range tests {
		t.Run(tt.field, func(t *testing.T) {
			p := DefaultPolicy()
			tt.edit(&p)
			err := p.Validate()
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tt.field || !errors.Is(err, ErrInvalid) {
				t.Fatalf("Validate() = %v; want FieldError for %s", err, tt.field)
			}
		})
	}
}

func TestPolicyJSON(t *testing.T) {
	p := DefaultPolicy()
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if got, want := m["message_ttl"], "72h0m0s"; got != want {
		t.Errorf("message_ttl = %v, want %v", got, want)
	}
	var back Policy
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(p, back); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
	if err := json.Unmarshal([]byte(`{"message_ttl":"1h30m","invite_timeout":"1s"}`), &back); err != nil {
		t.Fatal(err)
	}
	if back.MessageTTL != Duration(90*time.Minute) || back.InviteTimeout != Duration(time.Second) {
		t.Errorf("got ttl %v timeout %v", back.MessageTTL, back.InviteTimeout)
	}
	// A duration without a unit is refused, not read as nanoseconds: an
	// operator's 3600 meant as seconds would be 3.6 µs.
	for _, bad := range []string{`"soon"`, `3600`, `1000000000`, `"3600"`, `1.5`, `true`} {
		var d Duration
		err := json.Unmarshal([]byte(bad), &d)
		if err == nil {
			t.Errorf("duration %s accepted as %v", bad, time.Duration(d))
			continue
		}
		if !strings.Contains(err.Error(), "unit") {
			t.Errorf("duration %s: error %q does not ask for a unit", bad, err)
		}
	}
}

func TestPolicyPushDecision(t *testing.T) {
	tests := []struct {
		name        string
		enabled     bool
		def, user   PushMode
		want        PushMode
		userMax     int
		wantSession int
	}{
		{"default on", true, PushOn, "", PushOn, 0, 50},
		{"default off", true, PushOff, "", PushOff, 0, 50},
		{"user on over default off", true, PushOff, PushOn, PushOn, 10, 10},
		{"user hold", true, PushOn, PushHold, PushHold, 0, 50},
		{"operator off wins", false, PushOn, PushOn, PushOff, 0, 50},
		{"user cannot raise limit", true, PushOn, "", PushOn, 500, 50},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := DefaultPolicy()
			p.PushEnabled, p.DefaultPush = tt.enabled, tt.def
			u := UserSettings{Push: tt.user, MaxPerSession: tt.userMax}
			if got := p.Push(u); got != tt.want {
				t.Errorf("Push = %q, want %q", got, tt.want)
			}
			if got := p.SessionLimit(u); got != tt.wantSession {
				t.Errorf("SessionLimit = %d, want %d", got, tt.wantSession)
			}
		})
	}
}

func TestUserSettingsValidate(t *testing.T) {
	for _, u := range []UserSettings{{Push: "sometimes"}, {MaxPerSession: -1}} {
		if err := u.Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: Validate() = %v, want ErrInvalid", u, err)
		}
	}
	if err := (UserSettings{Push: PushHold, MaxPerSession: 3}).Validate(); err != nil {
		t.Error(err)
	}
}

// TestPolicyBounds: every bounded field takes its bounds and refuses the
// values just past them and the ones a probe sent (an invite timeout of
// 1ns or 2562047h, a TTL of 292 years, 2^63-1 messages a session).
func TestPolicyBounds(t *testing.T) {
	const maxInt = int(^uint(0) >> 1)
	huge := Duration(2562047 * time.Hour) // time.Duration's largest hour count
	tests := []struct {
		field string
		edit  func(*Policy)
		ok    bool
	}{
		{"max_per_session", func(p *Policy) { p.MaxPerSession = MaxPerSessionLimit }, true},
		{"max_per_session", func(p *Policy) { p.MaxPerSession = MaxPerSessionLimit + 1 }, false},
		{"max_per_session", func(p *Policy) { p.MaxPerSession = maxInt }, false},
		{"message_ttl", func(p *Policy) { p.MessageTTL = Duration(MaxMessageTTL) }, true},
		{"message_ttl", func(p *Policy) { p.MessageTTL = Duration(MaxMessageTTL + time.Second) }, false},
		{"message_ttl", func(p *Policy) { p.MessageTTL = huge }, false},
		{"max_mailbox", func(p *Policy) { p.MaxMailbox = MaxMailboxLimit }, true},
		{"max_mailbox", func(p *Policy) { p.MaxMailbox = MaxMailboxLimit + 1 }, false},
		{"max_message_size", func(p *Policy) { p.MaxMessageSize = MaxMessageSizeLimit }, true},
		{"max_message_size", func(p *Policy) { p.MaxMessageSize = MaxMessageSizeLimit + 1 }, false},
		{"invite_timeout", func(p *Policy) { p.InviteTimeout = Duration(time.Second) }, true},
		{"invite_timeout", func(p *Policy) { p.InviteTimeout = Duration(5 * time.Minute) }, true},
		{"invite_timeout", func(p *Policy) { p.InviteTimeout = 1 }, false},
		{"invite_timeout", func(p *Policy) { p.InviteTimeout = Duration(5*time.Minute + 1) }, false},
		{"invite_timeout", func(p *Policy) { p.InviteTimeout = huge }, false},
		{"retry_backoff", func(p *Policy) { p.RetryBackoff = 0 }, true},
		{"retry_backoff", func(p *Policy) { p.RetryBackoff = Duration(MaxRetryBackoff) }, true},
		{"retry_backoff", func(p *Policy) { p.RetryBackoff = Duration(MaxRetryBackoff + time.Second) }, false},
		{"max_attempts", func(p *Policy) { p.MaxAttempts = MaxAttemptsLimit }, true},
		{"max_attempts", func(p *Policy) { p.MaxAttempts = MaxAttemptsLimit + 1 }, false},
	}
	for _, tt := range tests {
		p := DefaultPolicy()
		tt.edit(&p)
		err := p.Validate()
		var fe *FieldError
		switch {
		case tt.ok && err != nil:
			t.Errorf("%s at its bound: %v, want valid", tt.field, err)
		case !tt.ok && (!errors.As(err, &fe) || fe.Field != tt.field):
			t.Errorf("%s out of bounds (%+v): Validate() = %v, want a FieldError for it", tt.field, p, err)
		}
	}
	if err := (UserSettings{MaxPerSession: MaxPerSessionLimit + 1}).Validate(); err == nil {
		t.Error("user settings max_per_session past the bound accepted")
	}
}
