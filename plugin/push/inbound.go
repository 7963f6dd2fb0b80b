package push

import (
	"bytes"
	"context"
	"encoding/xml"
	"log/slog"
	"mime"
	"sync"

	"github.com/emiago/sipgo/sip"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/plugin/encap"
	"github.com/deferpush/deferpush/plugin/msrp"
	"github.com/deferpush/deferpush/plugin/sdp"
)

// What a client sends back in a push session. Our offer's a=accept-types
// lists what deferpush is willing to receive (RFC 4975 §8.6), and a client
// may send those in the session: an OMA/RCS client sends its IMDN
// "delivered" and "displayed" notifications there as message/cpim (RFC
// 5438 in session mode). They are taken (200, and the success REPORT when
// one is asked for) and forwarded to the sender of the message they are
// about as a SIP MESSAGE through the outbound proxy (forwardIMDN):
// deferpush stood in for that sender when it pushed the message, so the
// notification, addressed to the sender, would otherwise end here. (A
// message counts as delivered by the answer to our SEND, or its REPORT,
// not by an IMDN.) Our offer says so: a=accept-wrapped-types lists
// message/imdn+xml alone. Anything else is answered 415 (RFC 4975 §7.3):
// a type we did not offer before any of it is reassembled, another
// (message/cpim holding no notification, message/sip, ...) once whole,
// for deferpush has nowhere to deliver it.

// sessionConfig is the msrp.Config of a push session to aor at local;
// routes are the notifications its client may send back (nil: none).
func (p *Pusher) sessionConfig(local msrp.URI, aor plugin.AOR, routes *imdnRoutes) msrp.Config {
	offered := sdp.Media{AcceptTypes: acceptTypes}
	return msrp.Config{
		Local: local, ChunkSize: p.cfg.ChunkSize, Timeout: p.cfg.MSRPTimeout, TLS: p.cfg.TLS, Logger: p.log,
		Accept: offered.Accepts,
		// A notification is a few hundred octets. A chunk larger than
		// what the session takes is dropped as it is read (413), on the
		// connection the session opens (the listener's has its own
		// limits). That bounds memory, not time: a request of the
		// client's holds no step of ours however slowly it comes (msrp
		// counts only our transactions' progress).
		MaxMessageSize: maxInbound,
		Limits:         msrp.Limits{MaxChunk: maxInbound},
		Handler:        inbound{aor: aor, log: p.log, routes: routes, forward: p.forwardIMDN},
	}
}

// maxInbound bounds what a client sends in its push session.
const maxInbound = 64 << 10

// inbound takes what a client sends in its push session: a notification
// about a message the session pushed is forwarded to that message's
// sender, everything is logged at debug level (an IMDN by its message-id
// and status, never a body).
type inbound struct {
	aor     plugin.AOR
	log     *slog.Logger
	routes  *imdnRoutes
	forward func(aor plugin.AOR, target sip.Uri, cpim []byte)
}

// imdnRoutes are the notifications a push session's client may send
// back: for each message pushed in it whose sender asked the recipient
// for positive-delivery or display (RFC 5438), its imdn.Message-ID, where
// the notification goes (the sender's first IMDN-Record-Route, else its
// CPIM From: deferpush's choice, from the stored message, never the
// client's), and how many may still go (one per disposition asked).
// Only those are forwarded: the push session is no relay for whatever
// the client addresses.
type imdnRoutes struct {
	mu sync.Mutex
	m  map[string]*imdnRoute
}

type imdnRoute struct {
	target sip.Uri
	left   int
}

// add notes the messages of msgs that ask their recipient for
// notifications. A stored message without the IMDN namespace is not
// parsed.
func (r *imdnRoutes) add(msgs []*plugin.Message) {
	if r == nil {
		return
	}
	for _, m := range msgs {
		if m.Kind != plugin.KindSIPMessage || !bytes.Contains(m.Raw, []byte(encap.NamespaceIMDN)) {
			continue
		}
		req, _, err := encap.ReadIMDNRequest(m.Raw)
		n := 0
		if req.PositiveDelivery {
			n++
		}
		if req.Display {
			n++
		}
		var u sip.Uri
		if err != nil || n == 0 || req.MessageID == "" || !sipURI(req.Target(), &u) {
			continue
		}
		r.mu.Lock()
		if r.m == nil {
			r.m = map[string]*imdnRoute{}
		}
		r.m[req.MessageID] = &imdnRoute{target: u, left: n}
		r.mu.Unlock()
	}
}

// take returns where the notification about messageID goes, once per
// disposition asked; false when the session pushed no such message
// asking for one, or its notifications went already.
func (r *imdnRoutes) take(messageID string) (sip.Uri, bool) {
	if r == nil || messageID == "" {
		return sip.Uri{}, false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	rt, ok := r.m[messageID]
	if !ok || rt.left == 0 {
		return sip.Uri{}, false
	}
	rt.left--
	return rt.target, true
}

var _ msrp.Handler = inbound{}

// ServeMSRP takes m: a notification in message/cpim is taken (200) and,
// when it is about a message the session pushed that asked for it,
// forwarded to that message's sender; anything else is refused 415, as
// deferpush has nowhere to deliver it (RFC 4975 §7.2: a 200 would tell
// the client it was taken).
func (h inbound) ServeMSRP(ctx context.Context, s *msrp.Session, m *msrp.Message) error {
	mt, _, _ := mime.ParseMediaType(m.ContentType)
	if mt != encap.TypeCPIM {
		h.log.Debug("message from client refused", "aor", h.aor, "msg_id", m.ID, "content_type", m.ContentType, "size", len(m.Body))
		return errNotNotification
	}
	d, err := encap.Decode(m.ContentType, m.Body)
	if dt, _, _ := mime.ParseMediaType(d.ContentType); err != nil || dt != encap.TypeIMDN {
		h.log.Debug("message from client refused", "aor", h.aor, "msg_id", m.ID, "content_type", m.ContentType,
			"size", len(m.Body), "err", err)
		return errNotNotification
	}
	kind, status, id := readIMDN(d.Body)
	target, ok := h.routes.take(id)
	switch {
	case !ok:
		h.log.Debug("notification from client not forwarded", "aor", h.aor, "msg_id", m.ID, "imdn_message_id", id,
			"err", "about no message of this session that asked for one, or sent already")
	case h.forward != nil:
		h.forward(h.aor, target, m.Body)
	}
	h.log.Debug("imdn from client", "aor", h.aor, "msg_id", m.ID, "imdn_message_id", id, "notification", kind, "status", status)
	return nil
}

// errNotNotification answers what a client sends in its push session
// that is no notification.
var errNotNotification = &msrp.StatusError{Code: 415, Comment: "deferpush takes only IMDN notifications here"}

// imdnDoc is what readIMDN reads of an IMDN document (RFC 5438 §9).
type imdnDoc struct {
	MessageID  string      `xml:"message-id"`
	Delivery   *imdnStatus `xml:"delivery-notification"`
	Display    *imdnStatus `xml:"display-notification"`
	Processing *imdnStatus `xml:"processing-notification"`
}

// imdnStatus holds the status element, whose one child names the status
// (<delivered/>, <displayed/>, <failed/>, ...).
type imdnStatus struct {
	Status struct {
		Values []struct{ XMLName xml.Name } `xml:",any"`
	} `xml:"status"`
}

// readIMDN returns the notification's kind ("delivery", "display",
// "processing"), its status and the message-id it is about; empty strings
// for what the document does not say or when it does not parse.
func readIMDN(body []byte) (kind, status, messageID string) {
	var doc imdnDoc
	if xml.Unmarshal(body, &doc) != nil {
		return "", "", ""
	}
	for _, n := range []struct {
		kind string
		st   *imdnStatus
	}{{"delivery", doc.Delivery}, {"display", doc.Display}, {"processing", doc.Processing}} {
		if n.st != nil {
			kind = n.kind
			if len(n.st.Status.Values) > 0 {
				status = n.st.Status.Values[0].XMLName.Local
			}
			break
		}
	}
	return kind, status, doc.MessageID
}
