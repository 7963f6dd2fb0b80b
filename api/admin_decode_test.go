package api

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/deferpush/deferpush/plugin"
)

func TestSetFieldsPolicy(t *testing.T) {
	full := `{"store_enabled":true,"push_enabled":false,"default_push":"hold","max_per_session":10,
		"message_ttl":"1h","max_mailbox":5,"max_message_size":100,"encapsulation":"message/cpim",
		"no_encap_fallback":"bare","push_target":"aor","invite_timeout":"5s","retry_backoff":"0s",
		"max_attempts":2,"success_reports":true,"full_mailbox_reply":480,"store_disabled_reply":403,"delivery":"pager","pager_below":3}`
	want := plugin.Policy{StoreEnabled: true, DefaultPush: plugin.PushHold, MaxPerSession: 10,
		MessageTTL: plugin.Duration(time.Hour), MaxMailbox: 5, MaxMessageSize: 100, Encapsulation: plugin.EncapCPIM,
		NoEncapFallback: plugin.FallbackBare, PushTarget: plugin.TargetAOR, InviteTimeout: plugin.Duration(5 * time.Second),
		MaxAttempts: 2, SuccessReports: true, FullMailboxReply: 480, StoreDisabledReply: 403, Delivery: plugin.DeliveryPager, PagerBelow: 3}
	patched := plugin.DefaultPolicy()
	patched.MaxPerSession = 3
	patched.PushEnabled = false

	start := plugin.DefaultPolicy()
	start.MaxPerSession = 9
	start.PushEnabled = false
	for _, tc := range []struct {
		name      string
		body      string
		mode      fieldMode
		start     plugin.Policy
		want      plugin.Policy
		wantCode  string
		wantField string
	}{
		{name: "put whole", body: full, mode: replaceAll, want: want},
		{name: "put missing field", body: `{"store_enabled":true}`, mode: replaceAll, wantCode: "missing_field", wantField: "push_enabled"},
		{name: "put null", body: `{"store_enabled":null}`, mode: replaceAll, wantCode: "invalid_value", wantField: "store_enabled"},
		{name: "unknown field", body: `{"max_per_session":1,"bogus":2}`, mode: mergePatch, start: start, wantCode: "unknown_field", wantField: "bogus"},
		{name: "field names match exactly", body: `{"Max_Per_Session":1}`, mode: mergePatch, start: start, wantCode: "unknown_field", wantField: "Max_Per_Session"},
		{name: "wrong type", body: `{"push_enabled":"yes"}`, mode: mergePatch, start: start, wantCode: "invalid_value", wantField: "push_enabled"},
		{name: "float for int", body: `{"max_mailbox":1.5}`, mode: mergePatch, start: start, wantCode: "invalid_value", wantField: "max_mailbox"},
		{name: "bad duration", body: `{"message_ttl":"soon"}`, mode: mergePatch, start: start, wantCode: "invalid_value", wantField: "message_ttl"},
		{name: "duration without unit", body: `{"retry_backoff":60}`, mode: mergePatch, start: start, wantCode: "invalid_value", wantField: "retry_backoff"},
		{name: "patch keeps absent fields", body: `{"max_per_session":3}`, mode: mergePatch, start: start, want: patched},
		{name: "patch null resets to default", body: `{"max_per_session":null}`, mode: mergePatch, start: start,
			want: func() plugin.Policy { p := start; p.MaxPerSession = 50; return p }()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			obj, err := parseObject([]byte(tc.body))
			if err != nil {
				t.Fatalf("parseObject: %v", err)
			}
			got := tc.start
			err = setFields(&got, obj, plugin.DefaultPolicy(), tc.mode)
			if tc.wantCode != "" {
				var ae *apiError
				if !errors.As(err, &ae) || ae.code != tc.wantCode || ae.field != tc.wantField {
					t.Fatalf("setFields error = %v, want code %s field %s", err, tc.wantCode, tc.wantField)
				}
				return
			}
			if err != nil {
				t.Fatalf("setFields: %v", err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("policy (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseObject(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		ok         bool
	}{
		{"object", `{"a":1}`, true},
		{"empty object", ` {} `, true},
		{"empty", "  ", false},
		{"null", "null", false},
		{"array", "[1]", false},
		{"string", `"x"`, false},
		{"two objects", `{}{}`, false},
		{"trailing garbage", `{} x`, false},
		{"truncated", `{"a":`, false},
		{"member twice", `{"a":1,"b":2,"a":3}`, false},
		{"same member in two objects", `{"a":{"x":1},"b":{"x":2}}`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseObject([]byte(tc.body))
			if got := err == nil; got != tc.ok {
				t.Fatalf("parseObject(%q) error = %v, want ok %v", tc.body, err, tc.ok)
			}
			var ae *apiError
			if err != nil && (!errors.As(err, &ae) || ae.code != "invalid_json" || ae.status != 400) {
				t.Errorf("error = %#v, want a 400 invalid_json", err)
			}
		})
	}
}

func TestChangedFields(t *testing.T) {
	a := plugin.DefaultPolicy()
	b := a
	b.PushEnabled = false
	b.MessageTTL = plugin.Duration(time.Hour)
	if diff := cmp.Diff([]string{"push_enabled", "message_ttl"}, changedFields(a, b)); diff != "" {
		t.Errorf("changedFields (-want +got):\n%s", diff)
	}
}

// TestViewMessageWithoutPrivate: a stored MESSAGE shown with its body
// leaves out the sender's credentials and routing, as a push would; the
// rest of it is as stored.
func TestViewMessageWithoutPrivate(t *testing.T) {
	raw := "MESSAGE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n" +
		"Proxy-Authorization: Digest username=\"alice\", response=\"0123\"\r\nRoute: <sip:10.1.2.3;lr>\r\n" +
		"From: <sip:alice@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\nCall-ID: c1\r\nCSeq: 1 MESSAGE\r\n" +
		"Content-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi"
	m := &plugin.Message{ID: plugin.NewID(time.Now()), Recipient: plugin.MustParseAOR("sip:bob@example.com"),
		Kind: plugin.KindSIPMessage, Raw: []byte(raw), CallID: "c1"}
	v := viewMessage(m, true)
	got := string(v.Raw)
	if strings.Contains(got, "Proxy-Authorization") || strings.Contains(got, "Route:") {
		t.Errorf("shown with the sender's credentials or routing:\n%s", got)
	}
	if want := strings.Replace(strings.Replace(raw, "Proxy-Authorization: Digest username=\"alice\", response=\"0123\"\r\n", "", 1),
		"Route: <sip:10.1.2.3;lr>\r\n", "", 1); got != want {
		t.Errorf("shown:\n%q\nwant the rest as stored:\n%q", got, want)
	}
	if string(m.Raw) != raw {
		t.Error("the stored message changed")
	}
	if v := viewMessage(m, false); v.Raw != nil {
		t.Errorf("without body: %q", v.Raw)
	}
}
