package plugin

import (
	"errors"
	"fmt"
	"testing"
)

// TestOutcomeOf is the one table from errors to answers, whole: every
// status with its SIP, HTTP and MSRP code, and the policy's choices for a
// full mailbox and for storing switched off.
func TestOutcomeOf(t *testing.T) {
	p := DefaultPolicy()
	p.FullMailboxReply, p.StoreDisabledReply = 480, 403
	tests := []struct {
		err  error
		want Outcome
	}{
		{nil, Outcome{StatusStored, 202, "Accepted", 200, 200}},
		{fmt.Errorf("append: %w", &LimitError{Err: ErrMailboxFull}), Outcome{StatusMailboxFull, 480, "Temporarily Unavailable", 409, 403}},
		{&LimitError{Err: ErrTooLarge}, Outcome{StatusTooLarge, 513, "Message Too Large", 413, 413}},
		{ErrStoreDisabled, Outcome{StatusStoreDisabled, 403, "Forbidden", 403, 403}},
		{&FieldError{Field: "aor", Problem: "missing"}, Outcome{StatusMalformed, 400, "Bad Request", 400, 400}},
		{fmt.Errorf("x: %w", ErrMalformed), Outcome{StatusMalformed, 400, "Bad Request", 400, 400}},
		{fmt.Errorf("%w: %q", ErrBadAOR, "x"), Outcome{StatusMalformed, 400, "Bad Request", 400, 400}},
		{ErrUnauthorized, Outcome{StatusUnauthorized, 500, "Server Internal Error", 401, 403}},
		{ErrForbidden, Outcome{StatusForbidden, 500, "Server Internal Error", 403, 403}},
		{ErrRateLimited, Outcome{StatusRateLimited, 503, "Service Unavailable", 429, 403}},
		{ErrNotAcceptable, Outcome{StatusNotAcceptable, 488, "Not Acceptable Here", 400, 415}},
		{ErrNoDialog, Outcome{StatusNoDialog, 481, "Call/Transaction Does Not Exist", 404, 481}},
		{ErrUnavailable, Outcome{StatusUnavailable, 503, "Service Unavailable", 503, 403}},
		{fmt.Errorf("%w: source 192.0.2.1", ErrNotTrusted), Outcome{StatusNotTrusted, 403, "Forbidden", 403, 403}},
		{ErrNotServed, Outcome{StatusNotServed, 405, "Method Not Allowed", 405, 501}},
		{fmt.Errorf("%w: text/plain", ErrMediaType), Outcome{StatusMediaType, 500, "Server Internal Error", 415, 415}},
		{errors.New("redis down"), Outcome{StatusError, 480, "Temporarily Unavailable", 503, 403}},
		{fmt.Errorf("store: get: %w", ErrStoreUnavailable), Outcome{StatusError, 480, "Temporarily Unavailable", 503, 403}},
	}
	for _, tt := range tests {
		if got := OutcomeOf(tt.err, p); got != tt.want {
			t.Errorf("OutcomeOf(%v) = %+v, want %+v", tt.err, got, tt.want)
		}
	}
	p.FullMailboxReply, p.StoreDisabledReply = 486, 480
	if got := OutcomeOf(ErrMailboxFull, p); got.SIPCode != 486 || got.SIPReason != "Busy Here" {
		t.Errorf("full mailbox with a 486 policy: %+v", got)
	}
	if got := OutcomeOf(ErrStoreDisabled, p); got.SIPCode != 480 || got.SIPReason != "Temporarily Unavailable" {
		t.Errorf("storing off with a 480 policy: %+v", got)
	}
	for s := range outcomes {
		if o := OutcomeFor(s, p); o.HTTP == 0 {
			t.Errorf("status %s has no HTTP status", s)
		}
	}
	for _, s := range []Status{StatusRegistered, StatusUnregistered} {
		if o := OutcomeFor(s, p); o.SIPCode != 0 || o.HTTP != 200 {
			t.Errorf("%s: %+v, want HTTP 200 and no SIP reply", s, o)
		}
	}
}
