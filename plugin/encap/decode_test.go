package encap_test

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/deferpush/deferpush/plugin/encap"
)

func TestDecode(t *testing.T) {
	const send = "MSRP abcd SEND\nMessage-ID: m1\nContent-Type: text/plain\n\nhi\n-------abcd$\n"
	tests := []struct {
		name    string
		ct      string
		body    string // LF here, CRLF on the wire
		want    encap.Decoded
		wantErr error
	}{
		{name: "sipfrag without start line", ct: "message/sipfrag", body: "Call-ID: c1\nFrom: <sip:a@x>\n",
			want: encap.Decoded{Encapsulation: "message/sipfrag", CallID: "c1", From: "<sip:a@x>", Body: []byte{}}},
		{name: "sipfrag status line only", ct: "message/sipfrag", body: "SIP/2.0 200 OK\n",
			want: encap.Decoded{Encapsulation: "message/sipfrag", Body: []byte{}}},
		{name: "sip response", ct: "Message/SIP", body: "SIP/2.0 404 Not Found\nCall-ID: c1\n\n",
			want: encap.Decoded{Encapsulation: "message/sip", CallID: "c1", Body: []byte{}}},
		{name: "msrp without CRLF after the end-line", ct: "message/msrp", body: send[:len(send)-1],
			want: encap.Decoded{Encapsulation: "message/msrp", MessageID: "m1", ContentType: "text/plain", Body: []byte("hi")}},
		{name: "msrp bodiless", ct: "message/msrp", body: "MSRP abcd SEND\nMessage-ID: m1\n-------abcd$\n",
			want: encap.Decoded{Encapsulation: "message/msrp", MessageID: "m1"}},
		{name: "msrp empty data", ct: "message/msrp", body: "MSRP abcd SEND\nMessage-ID: m1\nContent-Type: text/plain\n\n\n-------abcd$\n",
			want: encap.Decoded{Encapsulation: "message/msrp", MessageID: "m1", ContentType: "text/plain", Body: []byte{}}},
		{name: "msrp star byte range", ct: "message/msrp", body: "MSRP abcd SEND\nMessage-ID: m1\nByte-Range: 1-*/*\nContent-Type: text/plain\n\nhi\n-------abcd$\n",
			want: encap.Decoded{Encapsulation: "message/msrp", MessageID: "m1", ContentType: "text/plain", Body: []byte("hi")}},
		{name: "cpim foreign namespace", ct: "message/cpim",
			body: "From: <im:a@x>\nNS: dp <urn:other>\ndp.Call-ID: no\nDateTime: 2000-12-13T13:40:00-08:00\n\nContent-type: text/plain\n\nhi",
			want: encap.Decoded{Encapsulation: "message/cpim", From: "<im:a@x>", Date: time.Date(2000, 12, 13, 21, 40, 0, 0, time.UTC),
				ContentType: "text/plain", Body: []byte("hi")}},
		{name: "bare", ct: "text/plain; charset=utf-8", body: "hi",
			want: encap.Decoded{Encapsulation: "text/plain", ContentType: "text/plain; charset=utf-8", Body: []byte("hi")}},

		{name: "bad content type", ct: "message/", body: "x", wantErr: encap.ErrMalformed},
		{name: "sip bad Date", ct: "message/sip", body: "MESSAGE sip:a@x SIP/2.0\nDate: yesterday\n\n", wantErr: encap.ErrMalformed},
		{name: "sip no start line", ct: "message/sip", body: "Call-ID: c1\n\n", wantErr: encap.ErrMalformed},
		{name: "sipfrag unterminated", ct: "message/sipfrag", body: "Call-ID: c1\nFrom: x", wantErr: encap.ErrMalformed},
		{name: "msrp chunk", ct: "message/msrp", body: "MSRP abcd SEND\nMessage-ID: m1\nContent-Type: text/plain\n\nhi\n-------abcd+\n", wantErr: encap.ErrMalformed},
		{name: "msrp wrong tid", ct: "message/msrp", body: "MSRP abcd SEND\nMessage-ID: m1\nContent-Type: text/plain\n\nhi\n-------abce$\n", wantErr: encap.ErrMalformed},
		{name: "msrp not SEND", ct: "message/msrp", body: "MSRP abcd REPORT\nMessage-ID: m1\n-------abcd$\n", wantErr: encap.ErrMalformed},
		{name: "msrp no Message-ID", ct: "message/msrp", body: "MSRP abcd SEND\nContent-Type: text/plain\n\nhi\n-------abcd$\n", wantErr: encap.ErrMalformed},
		{name: "msrp body without type", ct: "message/msrp", body: "MSRP abcd SEND\nMessage-ID: m1\n\nhi\n-------abcd$\n", wantErr: encap.ErrMalformed},
		{name: "msrp short range", ct: "message/msrp", body: "MSRP abcd SEND\nMessage-ID: m1\nByte-Range: 1-5/5\nContent-Type: text/plain\n\nhi\n-------abcd$\n", wantErr: encap.ErrMalformed},
		{name: "msrp no CRLF before end-line", ct: "message/msrp", body: "MSRP abcd SEND\nMessage-ID: m1-------abcd$", wantErr: encap.ErrMalformed},
		{name: "msrp blank line then end-line", ct: "message/msrp", body: "MSRP abcd SEND\nMessage-ID: m1\nContent-Type: a/b\n\n-------abcd$", wantErr: encap.ErrMalformed},
		{name: "msrp two Message-IDs", ct: "message/msrp", body: "MSRP abcd SEND\nMessage-ID: m1\nmessage-id: m2\n-------abcd$\n", wantErr: encap.ErrMalformed},
		{name: "multipart no boundary", ct: "multipart/mixed", body: "--b\n\n--b--\n", wantErr: encap.ErrMalformed},
		{name: "multipart without msrp part", ct: `multipart/mixed; boundary="b"`, body: "--b\nContent-Type: message/sip\n\nSIP/2.0 200 OK\n\n\n--b--\n", wantErr: encap.ErrMalformed},
		{name: "multipart other part", ct: `multipart/mixed; boundary="b"`, body: "--b\nContent-Type: text/plain\n\nhi\n--b--\n", wantErr: encap.ErrMalformed},
		{name: "multipart two msrp parts", ct: `multipart/mixed; boundary=b`, body: "--b\nContent-Type: message/msrp\n\n" + send + "\n--b\nContent-Type: message/msrp\n\n" + send + "\n--b--\n", wantErr: encap.ErrMalformed},
		{name: "multipart truncated", ct: `multipart/mixed; boundary=b`, body: "--b\nContent-Type: message/msrp\n\n" + send, wantErr: encap.ErrMalformed},
		{name: "cpim no blank line", ct: "message/cpim", body: "From: <im:a@x>\n", wantErr: encap.ErrMalformed},
		{name: "cpim no content type", ct: "message/cpim", body: "From: <im:a@x>\n\n\nhi", wantErr: encap.ErrMalformed},
		{name: "cpim bad DateTime", ct: "message/cpim", body: "DateTime: Thu, 21 Feb 2002 13:02:03 GMT\n\nContent-Type: text/plain\n\nhi", wantErr: encap.ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := encap.Decode(tt.ct, crlf(tt.body))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Decode error = %v, want %v", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Decode (-want +got):\n%s", diff)
			}
		})
	}
}
