package encap_test

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/deferpush/deferpush/plugin/encap"
)

func TestPageOfMessage(t *testing.T) {
	// A stored MESSAGE with everything a page must drop: the sender's Via
	// (two, and one compact), a preloaded Route, its credentials, and a
	// folded identity header that must stay as written.
	stored := crlf(`MESSAGE sip:bob@example.com SIP/2.0
Via: SIP/2.0/TCP proxy.example.com;branch=z9hG4bKp1
v: SIP/2.0/UDP alicepc.example.com;branch=z9hG4bK776sgdkse
Max-Forwards: 69
Route: <sip:edge.example.com;lr>
From: "Alice" <sip:alice@example.com>;tag=49583
To: <sip:bob@example.com>
Call-ID: asd88asd77a@1.2.3.4
Date: Thu, 21 Feb 2002 13:02:03 GMT
CSeq: 7 MESSAGE
P-Asserted-Identity: <sip:alice@example.com>,
 <tel:+15141234567>
Identity: abc.def.ghi;info=<https://cert.example.org/a.cer>
Proxy-Authorization: Digest username="alice", response="x"
Record-Route: <sip:proxy.example.com;lr>
Subject: lunch
Content-Type: message/cpim
l: 122

From: <sip:alice@example.com>
To: <sip:bob@example.com>
NS: imdn <urn:ietf:params:imdn>
imdn.Message-ID: 34jk324j

Content-Type: text/plain

Hello
`)
	// Content-Length must match: compute it from the body.
	body := stored[strings.Index(string(stored), "\r\n\r\n")+4:]
	stored = []byte(strings.Replace(string(stored), "l: 122", "l: "+strconv.Itoa(len(body)), 1))

	p, err := encap.PageOf(encap.Deferred{Kind: encap.KindSIP, Stored: stored})
	if err != nil {
		t.Fatal(err)
	}
	wantHead := crlf(`From: "Alice" <sip:alice@example.com>;tag=49583
To: <sip:bob@example.com>
Call-ID: asd88asd77a@1.2.3.4
Date: Thu, 21 Feb 2002 13:02:03 GMT
P-Asserted-Identity: <sip:alice@example.com>,
 <tel:+15141234567>
Identity: abc.def.ghi;info=<https://cert.example.org/a.cer>
Subject: lunch
Content-Type: message/cpim
`)
	if diff := cmp.Diff(string(wantHead), string(p.Head)); diff != "" {
		t.Errorf("head (-want +got):\n%s", diff)
	}
	if p.CSeq != 7 || p.ContentType != "message/cpim" || string(p.Body) != string(body) {
		t.Errorf("CSeq %d, Content-Type %q, body %q; want 7, message/cpim and the stored body (IMDN headers intact)", p.CSeq, p.ContentType, p.Body)
	}
}

func TestPageOfMessageWithoutCSeq(t *testing.T) {
	stored := crlf("MESSAGE sip:bob@example.com SIP/2.0\nVia: SIP/2.0/UDP a.example.com;branch=z9hG4bK1\nFrom: <sip:alice@example.com>;tag=1\nTo: <sip:bob@example.com>\nCall-ID: c1\nContent-Type: text/plain\n\nhi")
	p, err := encap.PageOf(encap.Deferred{Kind: encap.KindSIP, Stored: stored})
	if err != nil {
		t.Fatal(err)
	}
	again, _ := encap.PageOf(encap.Deferred{Kind: encap.KindSIP, Stored: stored})
	if p.CSeq == 0 || p.CSeq >= 1<<31 || p.CSeq != again.CSeq {
		t.Errorf("CSeq %d then %d; want one number from 1 to 2^31-1", p.CSeq, again.CSeq)
	}
}

func TestPageOfSessionMessage(t *testing.T) {
	head, err := encap.SessionHead(crlf(`INVITE sip:user2@imserver.com SIP/2.0
Via: SIP/2.0/TCP user1pc.imserver.com;branch=z9hG4bK1
To: <sip:user2@imserver.com>
From: <sip:user1@imserver.com>;tag=786
Call-ID: 3413an89KU
CSeq: 1 INVITE
P-Asserted-Identity: <sip:user1@imserver.com>
Subject: this is a subject
Content-Type: application/sdp
Content-Length: 0

`), time.Date(2005, 2, 21, 13, 2, 3, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	send := func(id string) []byte {
		b, err := encap.StoredSEND("dkei38sd", id, "text/plain", []byte("Hi, Alice!  I'm Bob!"), time.Date(2005, 2, 21, 13, 2, 4, 0, time.UTC))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	p, err := encap.PageOf(encap.Deferred{Kind: encap.KindMSRP, Stored: send("456"), Head: head})
	if err != nil {
		t.Fatal(err)
	}
	wantHead := crlf(`From: <sip:user1@imserver.com>;tag=786
To: <sip:user2@imserver.com>
Call-ID: 3413an89KU
P-Asserted-Identity: <sip:user1@imserver.com>
Subject: this is a subject
Date: Mon, 21 Feb 2005 13:02:04 GMT
Content-Type: text/plain
`)
	if diff := cmp.Diff(string(wantHead), string(p.Head)); diff != "" {
		t.Errorf("head (-want +got):\n%s", diff)
	}
	if string(p.Body) != "Hi, Alice!  I'm Bob!" || p.ContentType != "text/plain" {
		t.Errorf("body %q (%s)", p.Body, p.ContentType)
	}
	other, err := encap.PageOf(encap.Deferred{Kind: encap.KindMSRP, Stored: send("457"), Head: head})
	if err != nil {
		t.Fatal(err)
	}
	same, _ := encap.PageOf(encap.Deferred{Kind: encap.KindMSRP, Stored: send("456"), Head: head})
	if p.CSeq == other.CSeq || p.CSeq != same.CSeq {
		t.Errorf("CSeq of 456: %d and %d, of 457: %d; want one per Message-ID", p.CSeq, same.CSeq, other.CSeq)
	}
}

func TestPageOfMalformed(t *testing.T) {
	for name, d := range map[string]encap.Deferred{
		"not a MESSAGE": {Kind: encap.KindSIP, Stored: crlf("INVITE sip:b@x SIP/2.0\nFrom: <sip:a@x>;tag=1\nTo: <sip:b@x>\nCall-ID: c\n\n")},
		"bad CSeq":      {Kind: encap.KindSIP, Stored: crlf("MESSAGE sip:b@x SIP/2.0\nFrom: <sip:a@x>;tag=1\nTo: <sip:b@x>\nCall-ID: c\nCSeq: x MESSAGE\n\n")},
		"no SEND":       {Kind: encap.KindMSRP, Stored: []byte("junk"), Head: crlf("INVITE sip:b@x SIP/2.0\nFrom: <sip:a@x>;tag=1\nTo: <sip:b@x>\nCall-ID: c\n\n")},
	} {
		if _, err := encap.PageOf(d); !errors.Is(err, encap.ErrMalformed) {
			t.Errorf("%s: PageOf = %v; want ErrMalformed", name, err)
		}
	}
}
