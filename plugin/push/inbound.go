package push

import (
	"context"
	"encoding/xml"
	"log/slog"
	"mime"

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

// sessionConfig is the msrp.Config of a push session to aor at local.
func (p *Pusher) sessionConfig(local msrp.URI, aor plugin.AOR) msrp.Config {
	offered := sdp.Media{AcceptTypes: acceptTypes}
	return msrp.Config{
		Local: local, ChunkSize: p.cfg.ChunkSize, Timeout: p.cfg.MSRPTimeout, TLS: p.cfg.TLS, Logger: p.log,
		Accept:  offered.Accepts,
		Handler: inbound{aor: aor, log: p.log, forward: p.forwardIMDN},
	}
}

// inbound takes what a client sends in its push session: a notification
// is forwarded, everything is logged at debug level (an IMDN by its
// message-id and status, never a body).
type inbound struct {
	aor     plugin.AOR
	log     *slog.Logger
	forward func(aor plugin.AOR, target sip.Uri, cpim []byte)
}

var _ msrp.Handler = inbound{}

// ServeMSRP takes m: a notification in message/cpim is forwarded to its
// target (200); anything else is refused 415, as deferpush has nowhere to
// deliver it (RFC 4975 §7.2: a 200 would tell the client it was taken).
func (h inbound) ServeMSRP(ctx context.Context, s *msrp.Session, m *msrp.Message) error {
	mt, _, _ := mime.ParseMediaType(m.ContentType)
	if mt != encap.TypeCPIM {
		h.log.Debug("message from client refused", "aor", h.aor, "msg_id", m.ID, "content_type", m.ContentType, "size", len(m.Body))
		return errNotNotification
	}
	target, ok, err := encap.NotificationTarget(m.Body)
	if err != nil || !ok {
		h.log.Debug("message from client refused", "aor", h.aor, "msg_id", m.ID, "content_type", m.ContentType,
			"size", len(m.Body), "err", err)
		return errNotNotification
	}
	var u sip.Uri
	if !sipURI(target, &u) {
		h.log.Debug("notification from client not forwarded", "aor", h.aor, "msg_id", m.ID,
			"err", "its target is no sip: or sips: URI", "target", target)
	} else if h.forward != nil {
		h.forward(h.aor, u, m.Body)
	}
	if h.log.Enabled(ctx, slog.LevelDebug) {
		if d, err := encap.Decode(m.ContentType, m.Body); err == nil {
			kind, status, id := readIMDN(d.Body)
			h.log.Debug("imdn from client", "aor", h.aor, "session", s.URI().SessionID, "msg_id", m.ID,
				"imdn_message_id", id, "notification", kind, "status", status)
		}
	}
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
