package ingress_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/deferpush/deferpush/adapters/ingress"
	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/plugin/encap"
)

var now = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

const seed = "MESSAGE sip:user2@imserver.com SIP/2.0\r\n" +
	"Via: SIP/2.0/TCP user1pc.imserver.com;branch=z9hG4bK776sgdkse\r\n" +
	"Max-Forwards: 70\r\n" +
	"From: sip:user1@imserver.com;tag=49583\r\n" +
	"To: sip:user2@imserver.com\r\n" +
	"Call-ID: asd88asd77a@1.2.3.4\r\n" +
	"CSeq: 1 MESSAGE\r\n" +
	"Content-Type: text/plain\r\n" +
	"Content-Length: 18\r\n" +
	"\r\n" +
	"Watson, come here."

func TestDeferred(t *testing.T) {
	m, err := ingress.Deferred([]byte(seed), "", now, plugin.AORRules{})
	if err != nil {
		t.Fatal(err)
	}
	wantRaw := strings.Replace(seed, "Call-ID: asd88asd77a@1.2.3.4\r\n",
		"Call-ID: asd88asd77a@1.2.3.4\r\nDate: Fri, 02 Jan 2026 03:04:05 GMT\r\n", 1)
	if string(m.Raw) != wantRaw {
		t.Errorf("Raw =\n%q\nwant\n%q", m.Raw, wantRaw)
	}
	if m.Recipient.String() != "sip:user2@imserver.com" || m.Sender != "sip:user1@imserver.com" || m.Kind != plugin.KindSIPMessage ||
		m.CallID != "asd88asd77a@1.2.3.4" || m.ContentType != "text/plain" || !m.Received.Equal(now) {
		t.Errorf("envelope = %+v", m)
	}
	m, err = ingress.Deferred([]byte(seed), "sip:User2@IMSERVER.com;transport=tcp", now, plugin.AORRules{})
	if err != nil || m.Recipient.String() != "sip:user2@imserver.com" {
		t.Errorf("with the proxy's AOR: recipient %q, %v", m.Recipient, err)
	}
	// A CSeq at the bounds, in any case of its name, with more white space.
	for _, cseq := range []string{"CSeq: 2147483647 MESSAGE", "cseq:  1\t MESSAGE ", "CSEQ: 0001 MESSAGE", "CSeq: 1\r\n MESSAGE"} {
		if _, err := ingress.Deferred([]byte(strings.Replace(seed, "CSeq: 1 MESSAGE", cseq, 1)), "", now, plugin.AORRules{}); err != nil {
			t.Errorf("%q: %v", cseq, err)
		}
	}
}

func TestDeferredRefuses(t *testing.T) {
	tests := []struct {
		name, raw, aor, reason string
	}{
		{"empty", "", "", "empty"},
		{"not SIP", "hello world\r\n\r\n", "", "not a SIP message"},
		{"response", "SIP/2.0 200 OK\r\nCall-ID: x\r\nContent-Length: 0\r\n\r\n", "", "a response"},
		{"INVITE", strings.Replace(seed, "MESSAGE sip:", "INVITE sip:", 1), "", "method INVITE"},
		{"no recipient", strings.Replace(strings.Replace(seed, "MESSAGE sip:user2@imserver.com", "MESSAGE sip:imserver.com", 1),
			"To: sip:user2@imserver.com\r\n", "To: sip:imserver.com\r\n", 1), "", "no recipient"},
		{"no To", strings.Replace(seed, "To: sip:user2@imserver.com\r\n", "", 1), "", "no To header"},
		{"bad AOR", seed, "user2", "no recipient"},
		{"bad Content-Length", strings.Replace(seed, "Content-Length: 18", "Content-Length: 99", 1), "", "Content-Length is 99 but the body has 18 octets"},
		{"bare LF", strings.ReplaceAll(seed, "\r\n", "\n"), "", ""},
		// The hostile inputs of issue 9: the parser bugs behind Kamailio's
		// CVE-2018-14767 (two To headers, an empty to-tag) and
		// CVE-2018-16657 (a bad Via), smuggling with two Content-Lengths.
		{"two To headers with empty tags", strings.Replace(seed, "To: sip:user2@imserver.com\r\n",
			"To: sip:user2@imserver.com;tag=\r\nTo: sip:user3@imserver.com;tag=\r\n", 1), "", "more than one To header"},
		{"compact second To", strings.Replace(seed, "CSeq: 1 MESSAGE", "CSeq: 1 MESSAGE\r\nt: sip:user3@imserver.com", 1), "", "more than one To header"},
		{"two From headers", strings.Replace(seed, "CSeq: 1 MESSAGE", "CSeq: 1 MESSAGE\r\nFrom: sip:eve@imserver.com", 1), "", "more than one From header"},
		{"two Call-IDs", strings.Replace(seed, "CSeq: 1 MESSAGE", "CSeq: 1 MESSAGE\r\ni: other@1.2.3.4", 1), "", "more than one Call-ID header"},
		{"Via without transport", strings.Replace(seed, "SIP/2.0/TCP user1pc.imserver.com;branch=z9hG4bK776sgdkse", "SIP/2.0/", 1), "", "Via"},
		{"Via not SIP", strings.Replace(seed, "SIP/2.0/TCP user1pc.imserver.com;branch=z9hG4bK776sgdkse", "garbage;;;branch", 1), "", "Via"},
		{"Via without host", strings.Replace(seed, "SIP/2.0/TCP user1pc.imserver.com;branch=z9hG4bK776sgdkse", "SIP/2.0/TCP ;branch=", 1), "", "bad Via header"},
		{"no Via", strings.Replace(seed, "Via: SIP/2.0/TCP user1pc.imserver.com;branch=z9hG4bK776sgdkse\r\n", "", 1), "", "no Via header"},
		{"NUL in a header", strings.Replace(seed, "branch=z9hG4bK776sgdkse", "branch=z9hG4bK\x00", 1), "", "control character 0x00"},
		{"Content-Length short of the body", strings.Replace(seed, "Content-Length: 18", "Content-Length: 5", 1), "", "Content-Length is 5 but the body has 18 octets"},
		{"negative Content-Length", strings.Replace(seed, "Content-Length: 18", "Content-Length: -5", 1), "", `Content-Length "-5" is not a number of octets`},
		{"Content-Length over 64 bits", strings.Replace(seed, "Content-Length: 18", "Content-Length: 99999999999999999999", 1), "", `Content-Length "99999999999999999999" is not a number of octets`},
		{"two Content-Lengths", strings.Replace(seed, "Content-Length: 18", "Content-Length: 18\r\nContent-Length: 0", 1), "", "more than one Content-Length header"},
		// RFC 3261 §8.1.1.5, §20.16: a number below 2^31 (0 is one), the
		// request's method, one CSeq.
		{"CSeq of another method", strings.Replace(seed, "CSeq: 1 MESSAGE", "CSeq: 1 INVITE", 1), "", `CSeq method "INVITE" is not the request's, MESSAGE`},
		{"CSeq method in lower case", strings.Replace(seed, "CSeq: 1 MESSAGE", "CSeq: 1 message", 1), "", `CSeq method "message"`},
		{"CSeq not a number", strings.Replace(seed, "CSeq: 1 MESSAGE", "CSeq: abc MESSAGE", 1), "", `CSeq number "abc"`},
		{"CSeq over 64 bits", strings.Replace(seed, "CSeq: 1 MESSAGE", "CSeq: 99999999999999999999 MESSAGE", 1), "", `CSeq number "99999999999999999999"`},
		{"CSeq 2^31", strings.Replace(seed, "CSeq: 1 MESSAGE", "CSeq: 2147483648 MESSAGE", 1), "", `CSeq number "2147483648"`},
		{"CSeq negative", strings.Replace(seed, "CSeq: 1 MESSAGE", "CSeq: -1 MESSAGE", 1), "", `CSeq number "-1"`},
		{"CSeq without method", strings.Replace(seed, "CSeq: 1 MESSAGE", "CSeq: 1", 1), "", "is not a number and a method"},
		{"CSeq with more", strings.Replace(seed, "CSeq: 1 MESSAGE", "CSeq: 1 MESSAGE x", 1), "", "is not a number and a method"},
		{"no CSeq", strings.Replace(seed, "CSeq: 1 MESSAGE\r\n", "", 1), "", "no CSeq header"},
		{"two CSeqs", strings.Replace(seed, "CSeq: 1 MESSAGE", "CSeq: 1 MESSAGE\r\ncseq: 2 MESSAGE", 1), "", "more than one CSeq header"},
		// Methods are case-sensitive (RFC 3261 §7.1).
		{"method in lower case", strings.Replace(strings.Replace(seed, "MESSAGE sip:", "message sip:", 1), "CSeq: 1 MESSAGE", "CSeq: 1 message", 1), "", "method message, not MESSAGE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ingress.Deferred([]byte(tt.raw), tt.aor, now, plugin.AORRules{})
			if !errors.Is(err, plugin.ErrMalformed) || !strings.Contains(err.Error(), tt.reason) {
				t.Errorf("Deferred = %v, want ErrMalformed saying %q", err, tt.reason)
			}
			if o := plugin.OutcomeOf(err, plugin.DefaultPolicy()); o.SIPCode != 400 {
				t.Errorf("outcome %+v, want 400", o)
			}
		})
	}
}

// TestDeferredHugeHeaders: a header section no client would take is
// refused as too large (513), whatever the operator's max_message_size.
func TestDeferredHugeHeaders(t *testing.T) {
	tests := []struct{ name, raw, reason string }{
		{"one huge header", strings.Replace(seed, "Max-Forwards: 70", "X-Big: "+strings.Repeat("a", 9000), 1), `header "X-Big" over 8192 octets`},
		{"huge folded header", strings.Replace(seed, "Max-Forwards: 70", "Subject: a"+strings.Repeat("\r\n bcdefgh", 1200), 1), `header "Subject" over 8192 octets`},
		{"too many headers", strings.Replace(seed, "Max-Forwards: 70", strings.Repeat("X-A: b\r\n", 300)+"Max-Forwards: 70", 1), "more than 256 headers"},
		{"huge header section", strings.Replace(seed, "Max-Forwards: 70", strings.Repeat("X-A: "+strings.Repeat("b", 4000)+"\r\n", 20)+"Max-Forwards: 70", 1), "header section over 65536 octets"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ingress.Deferred([]byte(tt.raw), "", now, plugin.AORRules{})
			if !errors.Is(err, plugin.ErrTooLarge) || !strings.Contains(err.Error(), tt.reason) {
				t.Fatalf("Deferred = %v, want ErrTooLarge saying %q", err, tt.reason)
			}
			if o := plugin.OutcomeOf(err, plugin.DefaultPolicy()); o.SIPCode != 513 || o.Status != plugin.StatusTooLarge {
				t.Errorf("outcome %+v, want too_large 513", o)
			}
		})
	}
	// At the bounds, a request is taken.
	ok := strings.Replace(seed, "Max-Forwards: 70", "X-Big: "+strings.Repeat("a", 8000)+"\r\n"+strings.Repeat("X-A: b\r\n", 240)+"Max-Forwards: 70", 1)
	if _, err := ingress.Deferred([]byte(ok), "", now, plugin.AORRules{}); err != nil {
		t.Errorf("request within the bounds: %v", err)
	}
}

// FuzzDeferred feeds raw SIP from the hooks to the decoding: it must not
// panic, and what it accepts is a dated MESSAGE that encap reads back.
func FuzzDeferred(f *testing.F) {
	f.Add([]byte(seed), "")
	f.Add([]byte(seed), "sip:user2@imserver.com")
	f.Fuzz(func(t *testing.T, raw []byte, aor string) {
		m, err := ingress.Deferred(raw, aor, now, plugin.AORRules{})
		if err != nil {
			if !errors.Is(err, plugin.ErrMalformed) && !errors.Is(err, plugin.ErrTooLarge) {
				t.Fatalf("error %v wraps neither ErrMalformed nor plugin.ErrTooLarge", err)
			}
			return
		}
		req, err := encap.ParseRequest(m.Raw)
		if err != nil {
			t.Fatalf("accepted a message encap cannot read back: %v", err)
		}
		if req.Method != "MESSAGE" || req.Date.IsZero() || m.Recipient.String() == "" {
			t.Fatalf("accepted %+v (recipient %q)", req, m.Recipient)
		}
	})
}
