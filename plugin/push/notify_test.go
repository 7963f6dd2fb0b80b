package push

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/plugin/encap"
)

// imdnMessage is a stored MESSAGE whose CPIM body asks for notifications.
func imdnMessage(t *testing.T, dispositions, cpimFrom string) *plugin.Message {
	t.Helper()
	body := strings.ReplaceAll("From: <"+cpimFrom+">\nTo: <sip:bob@example.com>\nNS: imdn <urn:ietf:params:imdn>\n"+
		"imdn.Message-ID: m-42\nDateTime: 2026-12-06T10:00:00Z\nimdn.Disposition-Notification: "+dispositions+"\n\n"+
		"Content-Type: text/plain\n\nhello", "\n", "\r\n")
	raw := "MESSAGE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/TCP 192.0.2.1;branch=z9hG4bK1\r\nFrom: <sip:alice@example.com>;tag=1\r\n" +
		"To: <sip:bob@example.com>\r\nCall-ID: imdn-1\r\nCSeq: 1 MESSAGE\r\nContent-Type: message/cpim\r\nContent-Length: " +
		strconv.Itoa(len(body)) + "\r\n\r\n" + body
	return &plugin.Message{ID: plugin.NewID(time.Now()), Recipient: plugin.MustParseAOR("sip:bob@example.com"), Sender: "sip:alice@example.com",
		Kind: plugin.KindSIPMessage, Raw: []byte(raw), CallID: "imdn-1"}
}

// TestNotify: a notification is a MESSAGE through the outbound proxy to
// the sender, from the recipient, holding the IMDN document in CPIM.
func TestNotify(t *testing.T) {
	peer := startPagerPeer(t, nil)
	p := newTestPusher(t, "sip:"+peer.addr+";transport=tcp")
	m := imdnMessage(t, "positive-delivery, negative-delivery, processing", "sip:alice@example.com")
	if stored, failed := p.Requests(m); !stored || !failed {
		t.Fatalf("Requests = %v, %v; want both", stored, failed)
	}
	if stored, failed := p.Requests(imdnMessage(t, "positive-delivery", "sip:alice@example.com")); stored || failed {
		t.Errorf("positive-delivery only: Requests = %v, %v; want none", stored, failed)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, d := range []plugin.Disposition{plugin.DispositionStored, plugin.DispositionFailed} {
		if err := p.Notify(ctx, m, d); err != nil {
			t.Fatalf("Notify %s: %v", d, err)
		}
	}
	// An im: CPIM From goes to the SIP From instead.
	if err := p.Notify(ctx, imdnMessage(t, "processing", "im:alice@example.com"), plugin.DispositionStored); err != nil {
		t.Fatalf("Notify with an im: From: %v", err)
	}
	got := peer.requests()
	if len(got) != 3 {
		t.Fatalf("%d MESSAGEs, want 3", len(got))
	}
	for i, want := range []string{"stored", "failed", "stored"} {
		r := got[i]
		if r.Recipient.String() != "sip:alice@example.com" || r.To().Address.String() != "sip:alice@example.com" ||
			r.From().Address.String() != "sip:bob@example.com" {
			t.Errorf("%s: %s to %s from %s", want, r.Recipient.String(), r.To().Address.String(), r.From().Address.String())
		}
		if h := r.GetHeader("Route"); h == nil || !strings.Contains(h.Value(), peer.addr) {
			t.Errorf("%s: Route %v; want the outbound proxy", want, h)
		}
		d, err := encap.Decode(r.ContentType().Value(), r.Body())
		if err != nil || d.ContentType != encap.TypeIMDN || !strings.Contains(string(d.Body), "<"+want+"/>") ||
			!strings.Contains(string(d.Body), "<message-id>m-42</message-id>") {
			t.Errorf("%s: %v\n%s", want, err, r.Body())
		}
		if strings.Contains(string(r.Body()), "Disposition-Notification") {
			t.Errorf("%s: the notification asks for notifications", want)
		}
	}
}
