package encap_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/deferpush/deferpush/plugin/encap"
)

// crlf turns a readable test message into wire text.
func crlf(s string) []byte { return []byte(strings.ReplaceAll(s, "\n", "\r\n")) }

var storeTime = time.Date(2002, 2, 21, 13, 2, 3, 0, time.UTC)

const message = `MESSAGE sip:user2@imserver.com SIP/2.0
Via: SIP/2.0/TCP user1pc.imserver.com;branch=z9hG4bK776sgdkse
Max-Forwards: 70
From: sip:user1@imserver.com;tag=49583
To: sip:user2@imserver.com
Call-ID: asd88asd77a@1.2.3.4
CSeq: 1 MESSAGE
Content-Type: text/plain
Content-Length: 18

Watson, come here.`

func TestParseRequest(t *testing.T) {
	tests := []struct {
		name string
		raw  []byte
		want encap.Request
		err  error
	}{
		{
			name: "seed MESSAGE",
			raw:  crlf(message),
			want: encap.Request{Method: "MESSAGE", RequestURI: "sip:user2@imserver.com", CallID: "asd88asd77a@1.2.3.4",
				From: "sip:user1@imserver.com;tag=49583", To: "sip:user2@imserver.com", ContentType: "text/plain",
				Body: []byte("Watson, come here.")},
		},
		{
			name: "compact forms, folding, Date, no Content-Length",
			raw: crlf("MESSAGE sip:b@x SIP/2.0\ni: abc\nf: \"Al <ice>\" <sip:a@x>;tag=1\nt:\n <sip:b@x>\n" +
				"date: Thu, 21 Feb 2002 13:02:03 GMT\nc: text/plain;charset=utf-8\n\nhé"),
			want: encap.Request{Method: "MESSAGE", RequestURI: "sip:b@x", CallID: "abc", From: `"Al <ice>" <sip:a@x>;tag=1`,
				To: "<sip:b@x>", ContentType: "text/plain;charset=utf-8", Date: storeTime, Body: []byte("hé")},
		},
		{name: "no Call-ID", raw: crlf("MESSAGE sip:b@x SIP/2.0\nFrom: <sip:a@x>\nTo: <sip:b@x>\n\n"), err: encap.ErrMalformed},
		{name: "From without URI", raw: crlf("MESSAGE sip:b@x SIP/2.0\nCall-ID: 1\nFrom: alice\nTo: <sip:b@x>\n\n"), err: encap.ErrMalformed},
		{name: "Content-Length too big", raw: crlf(strings.Replace(message, "18", "19", 1)), err: encap.ErrMalformed},
		{name: "Content-Length too small", raw: crlf(strings.Replace(message, "18", "5", 1)), err: encap.ErrMalformed},
		{name: "Content-Length not a number", raw: crlf(strings.Replace(message, "18", "-1", 1)), err: encap.ErrMalformed},
		{name: "two Content-Lengths", raw: crlf(strings.Replace(message, "CSeq", "l: 5\nCSeq", 1)), err: encap.ErrMalformed},
		{name: "two Call-IDs", raw: crlf(strings.Replace(message, "CSeq", "i: 5\nCSeq", 1)), err: encap.ErrMalformed},
		{name: "bare LF", raw: []byte(message), err: encap.ErrMalformed},
		{name: "bare CR", raw: crlf(strings.Replace(message, "Max-Forwards", "Max\rForwards", 1)), err: encap.ErrMalformed},
		{name: "body without Content-Type", raw: crlf("MESSAGE sip:b@x SIP/2.0\nCall-ID: 1\nFrom: <sip:a@x>\nTo: <sip:b@x>\n\nhi"), err: encap.ErrMalformed},
		{name: "Date not RFC 1123", raw: crlf(strings.Replace(message, "CSeq", "Date: 2002-02-21\nCSeq", 1)), err: encap.ErrMalformed},
		{name: "status line", raw: crlf("SIP/2.0 200 OK\nCall-ID: 1\nFrom: <sip:a@x>\nTo: <sip:b@x>\n\n"), err: encap.ErrMalformed},
		{name: "stray space in request URI", raw: crlf(strings.Replace(message, "sip:user2", "sip: user2", 1)), err: encap.ErrMalformed},
		{name: "no blank line", raw: crlf("MESSAGE sip:b@x SIP/2.0\nCall-ID: 1\n"), err: encap.ErrMalformed},
		{name: "header without colon", raw: crlf(strings.Replace(message, "Max-Forwards:", "Max-Forwards", 1)), err: encap.ErrMalformed},
		{name: "continuation first", raw: crlf("MESSAGE sip:b@x SIP/2.0\n folded\n\n"), err: encap.ErrMalformed},
		{name: "empty", raw: nil, err: encap.ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := encap.ParseRequest(tt.raw)
			if !errors.Is(err, tt.err) {
				t.Fatalf("ParseRequest error = %v, want %v", err, tt.err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseRequest (-want +got):\n%s", diff)
			}
		})
	}
}

func TestAddDate(t *testing.T) {
	const date = "Date: Thu, 21 Feb 2002 13:02:03 GMT\n"
	tests := []struct {
		name, raw, want string
		err             error
	}{
		{name: "after Call-ID", raw: message, want: strings.Replace(message, "CSeq", date+"CSeq", 1)},
		{name: "already dated", raw: strings.Replace(message, "CSeq", "DATE: Fri, 01 Mar 2002 00:00:00 GMT\nCSeq", 1),
			want: strings.Replace(message, "CSeq", "DATE: Fri, 01 Mar 2002 00:00:00 GMT\nCSeq", 1)},
		{name: "after a folded compact Call-ID", raw: "MESSAGE sip:b@x SIP/2.0\ni: a\n\tb\nf: <sip:a@x>\nt: <sip:b@x>\n\n",
			want: "MESSAGE sip:b@x SIP/2.0\ni: a\n\tb\n" + date + "f: <sip:a@x>\nt: <sip:b@x>\n\n"},
		{name: "Call-ID last", raw: "MESSAGE sip:b@x SIP/2.0\nf: <sip:a@x>\nt: <sip:b@x>\ni: a\n\n",
			want: "MESSAGE sip:b@x SIP/2.0\nf: <sip:a@x>\nt: <sip:b@x>\ni: a\n" + date + "\n"},
		{name: "malformed", raw: strings.Replace(message, "18", "17", 1), err: encap.ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A zone other than UTC must still give GMT on the wire.
			got, err := encap.AddDate(crlf(tt.raw), storeTime.In(time.FixedZone("X", -5*3600)))
			if !errors.Is(err, tt.err) {
				t.Fatalf("AddDate error = %v, want %v", err, tt.err)
			}
			if tt.err != nil {
				return
			}
			if diff := cmp.Diff(string(crlf(tt.want)), string(got)); diff != "" {
				t.Errorf("AddDate (-want +got):\n%s", diff)
			}
			if _, err := encap.ParseRequest(got); err != nil {
				t.Errorf("AddDate output does not parse: %v", err)
			}
		})
	}
}

// TestReadMessageStoredForm: the stored form of a MESSAGE is the dated
// request less its Authorization and Proxy-Authorization headers (any
// case, folded lines and all); every other byte is kept, and a request
// without them and with a Date is stored as it came.
func TestReadMessageStoredForm(t *testing.T) {
	const date = "Date: Thu, 21 Feb 2002 13:02:03 GMT\n"
	lim := encap.HeadLimits{MaxLine: 8 << 10, MaxHead: 64 << 10, MaxHeaders: 256}
	creds := "Proxy-Authorization: Digest username=\"user1\",\n response=\"6629fae49393a05397450978507c4ef1\"\n"
	tests := []struct{ name, raw, want string }{
		{"no credentials", message, strings.Replace(message, "CSeq", date+"CSeq", 1)},
		{"credentials before Call-ID", strings.Replace(message, "From:", creds+"From:", 1), strings.Replace(message, "CSeq", date+"CSeq", 1)},
		{"credentials after Call-ID, lower case", strings.Replace(message, "CSeq", "authorization: Digest response=\"x\"\nCSeq", 1),
			strings.Replace(message, "CSeq", date+"CSeq", 1)},
		{"dated, credentials first", strings.Replace(strings.Replace(message, "Via:", creds+"Via:", 1), "CSeq", date+"CSeq", 1),
			strings.Replace(message, "CSeq", date+"CSeq", 1)},
	}
	for _, tt := range tests {
		in, err := encap.ReadMessage(crlf(tt.raw), storeTime, lim)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if d := cmp.Diff(string(crlf(tt.want)), string(in.Stored)); d != "" {
			t.Errorf("%s: stored form (-want +got):\n%s", tt.name, d)
		}
	}
	dated := crlf(strings.Replace(message, "CSeq", date+"CSeq", 1))
	if in, _ := encap.ReadMessage(dated, storeTime, lim); &in.Stored[0] != &dated[0] {
		t.Error("a dated request without credentials was copied")
	}
}

func TestSessionHead(t *testing.T) {
	tests := []struct {
		name, raw, want string
		err             error
	}{
		{
			name: "keeps identity headers, drops the rest",
			raw: "INVITE sip:b@x SIP/2.0\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\ns: hi\ni: c1\nP-Asserted-Identity: <sip:a@x>\n" +
				"p-asserted-identity: <tel:+1555>\nt: <sip:b@x>\nf: \"A\" <sip:a@x>;tag=9\nContact: <sip:a@h>\nCSeq: 1 INVITE\n" +
				"c: application/sdp\nl: 5\n\nv=0\n",
			want: "INVITE sip:b@x SIP/2.0\nTo: <sip:b@x>\nFrom: \"A\" <sip:a@x>;tag=9\nCall-ID: c1\n" +
				"Date: Thu, 21 Feb 2002 13:02:03 GMT\nP-Asserted-Identity: <sip:a@x>\nP-Asserted-Identity: <tel:+1555>\nSubject: hi\n\n",
		},
		{
			name: "keeps the INVITE's Date",
			raw:  "INVITE sip:b@x SIP/2.0\nTo: <sip:b@x>\nFrom: <sip:a@x>\nCall-ID: c1\nDate: Fri, 01 Mar 2002 00:00:00 GMT\n\n",
			want: "INVITE sip:b@x SIP/2.0\nTo: <sip:b@x>\nFrom: <sip:a@x>\nCall-ID: c1\nDate: Fri, 01 Mar 2002 00:00:00 GMT\n\n",
		},
		{name: "not an INVITE", raw: message, err: encap.ErrMalformed},
		{name: "no From", raw: "INVITE sip:b@x SIP/2.0\nTo: <sip:b@x>\nCall-ID: c1\n\n", err: encap.ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := encap.SessionHead(crlf(tt.raw), storeTime)
			if !errors.Is(err, tt.err) {
				t.Fatalf("SessionHead error = %v, want %v", err, tt.err)
			}
			if tt.err == nil {
				if diff := cmp.Diff(string(crlf(tt.want)), string(got)); diff != "" {
					t.Errorf("SessionHead (-want +got):\n%s", diff)
				}
			}
		})
	}
}

func TestStoredSEND(t *testing.T) {
	date := time.Date(2005, 2, 21, 13, 2, 4, 0, time.UTC)
	tests := []struct {
		name, tid, msgID, ct, body string
		want                       string
		err                        error
	}{
		{name: "octets, not characters", tid: "a1b2", msgID: "m.1-2+3%4=5", ct: "text/plain; charset=utf-8", body: "héllo",
			want: "MSRP a1b2 SEND\nMessage-ID: m.1-2+3%4=5\nDate: Mon, 21 Feb 2005 13:02:04 GMT\nByte-Range: 1-6/6\n" +
				"Content-Type: text/plain; charset=utf-8\n\nhéllo\n-------a1b2$\n"},
		{name: "tid too short", tid: "abc", msgID: "m1", ct: "text/plain", body: "x", err: encap.ErrInvalid},
		{name: "tid too long", tid: strings.Repeat("a", 33), msgID: "m1", ct: "text/plain", body: "x", err: encap.ErrInvalid},
		{name: "tid starts with a dash", tid: "-abcd", msgID: "m1", ct: "text/plain", body: "x", err: encap.ErrInvalid},
		{name: "Message-ID with a space", tid: "abcd", msgID: "m 1", ct: "text/plain", body: "x", err: encap.ErrInvalid},
		{name: "empty Message-ID", tid: "abcd", msgID: "", ct: "text/plain", body: "x", err: encap.ErrInvalid},
		{name: "empty body", tid: "abcd", msgID: "m1", ct: "text/plain", body: "", err: encap.ErrInvalid},
		{name: "end-line in body", tid: "abcd", msgID: "m1", ct: "text/plain", body: "a\r\n-------abcd$\r\n", err: encap.ErrInvalid},
		{name: "bad Content-Type", tid: "abcd", msgID: "m1", ct: "text", body: "x", err: encap.ErrInvalid},
		{name: "Content-Type with CRLF", tid: "abcd", msgID: "m1", ct: "text/plain\r\nX: y", body: "x", err: encap.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := encap.StoredSEND(tt.tid, tt.msgID, tt.ct, []byte(tt.body), date)
			if !errors.Is(err, tt.err) {
				t.Fatalf("StoredSEND error = %v, want %v", err, tt.err)
			}
			if tt.err == nil {
				if diff := cmp.Diff(string(crlf(tt.want)), string(got)); diff != "" {
					t.Errorf("StoredSEND (-want +got):\n%s", diff)
				}
			}
		})
	}
}
