package encap_test

import (
	"encoding/xml"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/deferpush/deferpush/plugin/encap"
)

// cpimMessage is a stored MESSAGE carrying body as message/cpim.
func cpimMessage(body string) []byte {
	b := crlf(body)
	return append(crlf("MESSAGE sip:bob@example.com SIP/2.0\nVia: SIP/2.0/UDP a.example.com;branch=z9hG4bK1\n"+
		"From: <sip:alice@example.com>;tag=1\nTo: <sip:bob@example.com>\nCall-ID: c1\nCSeq: 1 MESSAGE\n"+
		"Date: Fri, 04 Apr 2008 17:16:49 GMT\nContent-Type: message/cpim\nContent-Length: "+strconv.Itoa(len(b))+"\n\n"), b...)
}

// The request of RFC 5438 §9's example, with processing added and the
// namespace under another prefix.
const imdnIM = `From: Alice <im:alice@example.com>
To: Bob <im:bob@example.com>
NS: n <urn:ietf:params:imdn>
n.Message-ID: 34jk324j
DateTime: 2006-04-04T12:16:49-05:00
n.Disposition-Notification: positive-delivery, Negative-Delivery, processing
n.IMDN-Record-Route: <sip:im.example.com;lr>
n.Original-To: <sip:bob@example.org>

Content-type: text/plain
Content-length: 12

Hello World
`

func TestReadIMDNRequest(t *testing.T) {
	r, ok, err := encap.ReadIMDNRequest(cpimMessage(imdnIM))
	if err != nil || !ok {
		t.Fatalf("ReadIMDNRequest = %v, %v", ok, err)
	}
	want := encap.IMDNRequest{MessageID: "34jk324j", DateTime: "2006-04-04T12:16:49-05:00", From: "im:alice@example.com",
		To: "im:bob@example.com", OriginalTo: "sip:bob@example.org", RecordRoute: []string{"sip:im.example.com;lr"},
		Processing: true, NegativeDelivery: true, PositiveDelivery: true}
	if diff := cmp.Diff(want, r); diff != "" {
		t.Errorf("request (-want +got):\n%s", diff)
	}
	if r.Target() != "sip:im.example.com;lr" {
		t.Errorf("target %q, want the first IMDN-Record-Route", r.Target())
	}

	for name, body := range map[string]string{
		"only positive":  strings.Replace(imdnIM, "positive-delivery, Negative-Delivery, processing", "positive-delivery, display", 1),
		"no namespace":   strings.Replace(imdnIM, "NS: n <urn:ietf:params:imdn>\n", "", 1),
		"other ns":       strings.Replace(imdnIM, "urn:ietf:params:imdn", "urn:example:other", 1),
		"no Message-ID":  strings.Replace(imdnIM, "n.Message-ID: 34jk324j\n", "", 1),
		"no DateTime":    strings.Replace(imdnIM, "DateTime: 2006-04-04T12:16:49-05:00\n", "", 1),
		"a notification": strings.Replace(imdnIM, "Content-type: text/plain", "Content-type: message/imdn+xml", 1),
		"disposition":    strings.Replace(imdnIM, "Content-type: text/plain", "Content-Disposition: notification\nContent-type: text/plain", 1),
	} {
		if _, ok, err := encap.ReadIMDNRequest(cpimMessage(body)); ok || err != nil {
			t.Errorf("%s: ok %v, err %v; want no request", name, ok, err)
		}
	}
	plain := crlf("MESSAGE sip:bob@example.com SIP/2.0\nFrom: <sip:a@x>;tag=1\nTo: <sip:b@x>\nCall-ID: c\nContent-Type: text/plain\n\nhi")
	if _, ok, err := encap.ReadIMDNRequest(plain); ok || err != nil {
		t.Errorf("text/plain: ok %v, err %v", ok, err)
	}
	if _, _, err := encap.ReadIMDNRequest(cpimMessage("From: <im:a@x>\nno blank line")); !errors.Is(err, encap.ErrMalformed) {
		t.Errorf("broken CPIM: %v; want ErrMalformed", err)
	}
}

// imdnDoc is the message/imdn+xml document (RFC 5438 §8).
type imdnDoc struct {
	XMLName    xml.Name `xml:"urn:ietf:params:xml:ns:imdn imdn"`
	MessageID  string   `xml:"message-id"`
	DateTime   string   `xml:"datetime"`
	Recipient  string   `xml:"recipient-uri"`
	OrigRecip  string   `xml:"original-recipient-uri"`
	Processing *status  `xml:"processing-notification>status"`
	Delivery   *status  `xml:"delivery-notification>status"`
}

type status struct {
	Stored *struct{} `xml:"stored"`
	Failed *struct{} `xml:"failed"`
}

func TestBuildNotification(t *testing.T) {
	r, _, err := encap.ReadIMDNRequest(cpimMessage(strings.Replace(imdnIM, "34jk324j", "a<b&c", 1)))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	for _, st := range []string{encap.IMDNStored, encap.IMDNFailed} {
		ct, body := encap.BuildNotification(r, encap.Notification{Status: st, Recipient: "sip:bob@example.com", MessageID: "n1", Now: now})
		if ct != encap.TypeCPIM {
			t.Fatalf("Content-Type %q", ct)
		}
		d, err := encap.Decode(ct, body)
		if err != nil {
			t.Fatalf("%s: the CPIM does not decode: %v\n%s", st, err, body)
		}
		if d.ContentType != encap.TypeIMDN || d.From != "<sip:bob@example.com>" || d.To != "<im:alice@example.com>" || !d.Date.Equal(now) {
			t.Errorf("%s: CPIM %+v", st, d)
		}
		for _, h := range []string{"NS: imdn <urn:ietf:params:imdn>\r\n", "imdn.Message-ID: n1\r\n", "imdn.IMDN-Route: <sip:im.example.com;lr>\r\n",
			"Content-Disposition: notification\r\n"} {
			if !strings.Contains(string(body), h) {
				t.Errorf("%s: no %q in\n%s", st, h, body)
			}
		}
		if strings.Contains(string(body), "Disposition-Notification") {
			t.Errorf("%s: the notification asks for notifications:\n%s", st, body)
		}
		var doc imdnDoc
		if err := xml.Unmarshal(d.Body, &doc); err != nil {
			t.Fatalf("%s: not XML: %v\n%s", st, err, d.Body)
		}
		if doc.MessageID != "a<b&c" || doc.DateTime != "2006-04-04T12:16:49-05:00" || doc.Recipient != "sip:bob@example.com" || doc.OrigRecip != "sip:bob@example.org" {
			t.Errorf("%s: document %+v", st, doc)
		}
		switch st {
		case encap.IMDNStored:
			if doc.Processing == nil || doc.Processing.Stored == nil || doc.Delivery != nil {
				t.Errorf("stored: %+v", doc)
			}
		case encap.IMDNFailed:
			if doc.Delivery == nil || doc.Delivery.Failed == nil || doc.Processing != nil {
				t.Errorf("failed: %+v", doc)
			}
		}
		// Stored in turn (the sender is offline), it asks for nothing.
		if _, ok, err := encap.ReadIMDNRequest(cpimMessage(strings.ReplaceAll(string(body), "\r\n", "\n"))); ok || err != nil {
			t.Errorf("%s: a stored notification asks for notifications: %v %v", st, ok, err)
		}
	}
}

// TestIMDNHeadersSurviveEncapsulation: positive delivery is the client's
// to send, so every encapsulation of a CPIM message brings it the IMDN
// headers as the sender wrote them: inside message/sip and sipfrag, and
// as the payload itself for a client that takes message/cpim (never in a
// second CPIM envelope, where an RCS client would not look for them).
func TestIMDNHeadersSurviveEncapsulation(t *testing.T) {
	stored := cpimMessage(imdnIM)
	want := crlf(imdnIM)
	for _, pref := range []encap.Preference{encap.PreferSIP, encap.PreferSIPFrag, encap.PreferCPIM} {
		pl, err := encap.Build(encap.Deferred{Kind: encap.KindSIP, Stored: stored},
			encap.Options{AcceptTypes: []string{string(pref)}, Preference: pref})
		if err != nil {
			t.Fatalf("%s: %v", pref, err)
		}
		if pref == encap.PreferCPIM {
			if pl.ContentType != encap.TypeCPIM || string(pl.Body) != string(want) {
				t.Errorf("%s: pushed %s %q; want the stored CPIM as it is", pref, pl.ContentType, pl.Body)
			}
			continue
		}
		d, err := encap.Decode(pl.ContentType, pl.Body)
		if err != nil {
			t.Fatalf("%s: %v", pref, err)
		}
		if d.ContentType != encap.TypeCPIM || string(d.Body) != string(want) {
			t.Errorf("%s: the client gets %s %q; want the stored CPIM whole", pref, d.ContentType, d.Body)
		}
	}
	p, err := encap.PageOf(encap.Deferred{Kind: encap.KindSIP, Stored: stored})
	if err != nil || string(p.Body) != string(want) {
		t.Errorf("page: %v, body %q", err, p.Body)
	}
}
