package push

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/plugin/encap"
)

// Disposition notifications (RFC 5438): the Pusher is also the engine's
// plugin.Notifier. deferpush speaks as the intermediary that stores the
// message for its recipient: a notification is a SIP MESSAGE through the
// outbound proxy, from the recipient's AOR (the mailbox it speaks for) to
// the sender — the first imdn.IMDN-Record-Route when the message has
// one, else the CPIM From, else (an im: URI, say) the SIP From — carrying
// encap.BuildNotification's message/cpim. The proxy delivers it, or
// stores it when the sender is offline (the shipped kamailio.cfg does);
// it asks for no notification, so it never causes one.

var _ plugin.Notifier = (*Pusher)(nil)

// Requests implements plugin.Notifier: what a stored SIP MESSAGE's CPIM
// body asks for. A message from an MSRP session asks for nothing here
// (RFC 5438 is page mode's).
func (p *Pusher) Requests(m *plugin.Message) (stored, failed bool) {
	if m.Kind != plugin.KindSIPMessage {
		return false, false
	}
	r, ok, err := encap.ReadIMDNRequest(m.Raw)
	if err != nil || !ok {
		return false, false
	}
	return r.Processing, r.NegativeDelivery
}

// Notify implements plugin.Notifier.
func (p *Pusher) Notify(ctx context.Context, m *plugin.Message, d plugin.Disposition) error {
	r, ok, err := encap.ReadIMDNRequest(m.Raw)
	if err != nil || !ok {
		return fmt.Errorf("notify %s: the message asks for no notification (%v)", m.ID, err)
	}
	var target sip.Uri
	if !sipURI(r.Target(), &target) && !sipURI(r.From, &target) && !sipURI(m.Sender, &target) {
		return fmt.Errorf("notify %s: no SIP URI to send it to (CPIM From %q, SIP From %q)", m.ID, r.From, m.Sender)
	}
	status := encap.IMDNStored
	if d == plugin.DispositionFailed {
		status = encap.IMDNFailed
	}
	ct, body := encap.BuildNotification(r, encap.Notification{Status: status, Recipient: m.Recipient.String(),
		MessageID: rand.Text()[:20], Now: time.Now()})
	req, err := p.notification(m.Recipient, target, ct, body)
	if err != nil {
		return fmt.Errorf("notify %s: %w", m.ID, err)
	}
	res, err := p.cfg.Client.Do(ctx, req, sipgo.ClientRequestBuild)
	if err != nil {
		return fmt.Errorf("notify %s: %w", m.ID, err)
	}
	if !res.IsSuccess() {
		return fmt.Errorf("notify %s: %w", m.ID, errors.New(res.StartLine()))
	}
	p.log.Debug("notification sent", "aor", m.Recipient, "msg_id", m.ID, "status", status, "to", target.String(), "answer", res.StatusCode)
	return nil
}

// notification is the MESSAGE carrying a notification (contentType,
// body) from the mailbox of aor to target, through the outbound proxy.
func (p *Pusher) notification(aor plugin.AOR, target sip.Uri, contentType string, body []byte) (*sip.Request, error) {
	var from sip.Uri
	if err := sip.ParseUri(aor.String(), &from); err != nil {
		return nil, fmt.Errorf("recipient %s: %w", aor, err)
	}
	req := sip.NewRequest(sip.MESSAGE, target)
	if p.route != nil {
		req.AppendHeader(sip.NewHeader("Route", "<"+p.route.String()+">"))
	}
	fh := &sip.FromHeader{Address: from, Params: sip.NewParams()}
	fh.Params.Add("tag", sip.GenerateTagN(16))
	req.AppendHeader(fh)
	req.AppendHeader(&sip.ToHeader{Address: target, Params: sip.NewParams()})
	req.AppendHeader(sip.NewHeader("Content-Type", contentType))
	req.SetBody(body)
	p.setTransport(req)
	return req, nil
}

// sipURI parses s into u when it is a sip: or sips: URI.
func sipURI(s string, u *sip.Uri) bool {
	if s == "" || sip.ParseUri(s, u) != nil {
		return false
	}
	return u.Scheme == "sip" || u.Scheme == "sips"
}

// forwardIMDN sends a notification a client gave back in its push session
// (cpim, a message/cpim body holding message/imdn+xml) on to target, the
// sender of the message it is about, as a SIP MESSAGE through the
// outbound proxy from the client's AOR, the body as the client wrote it.
// It returns at once: the MESSAGE goes out in the background, at most
// maxForwards at a time (more are dropped and logged), each waiting
// forwardTimeout for its answer. Best effort, as deferpush's own
// notifications: without an outbound proxy, or when the proxy refuses
// it, the notification is logged and dropped.
func (p *Pusher) forwardIMDN(aor plugin.AOR, target sip.Uri, cpim []byte) {
	if p.route == nil {
		p.log.Debug("notification from client not forwarded", "aor", aor, "err", "no sip.outbound_proxy")
		return
	}
	select {
	case p.forwards <- struct{}{}:
	default:
		p.log.Warn("notification from client dropped", "aor", aor, "to", target.String(),
			"err", fmt.Sprintf("%d forwards in flight", cap(p.forwards)))
		return
	}
	// cpim is the handler's to keep (msrp.Handler).
	req, err := p.notification(aor, target, encap.TypeCPIM, cpim)
	if err != nil {
		<-p.forwards
		p.log.Warn("notification from client not forwarded", "aor", aor, "err", err)
		return
	}
	go func() {
		defer func() { <-p.forwards }()
		ctx, cancel := context.WithTimeout(context.Background(), forwardTimeout)
		defer cancel()
		res, err := p.cfg.Client.Do(ctx, req, sipgo.ClientRequestBuild)
		switch {
		case err != nil:
			p.log.Warn("notification from client not forwarded", "aor", aor, "to", target.String(), "err", err)
		case !res.IsSuccess():
			p.log.Warn("notification from client not forwarded", "aor", aor, "to", target.String(), "answer", res.StartLine())
		default:
			p.log.Debug("notification from client forwarded", "aor", aor, "to", target.String(), "answer", res.StatusCode)
		}
	}()
}

const (
	// maxForwards bounds the client notifications being forwarded at
	// once; forwardTimeout the wait for the proxy's final answer to each.
	maxForwards    = 64
	forwardTimeout = 10 * time.Second
)
