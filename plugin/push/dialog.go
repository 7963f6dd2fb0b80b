package push

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// The UAC side of a push dialog, on sipgo's transaction layer. sipgo's
// dialog client (v1.7.3) is not used: it puts a Contact in BYE and CANCEL,
// which RFC 3261 §20 (Table 3) does not allow; it gives the CANCEL the
// early dialog's route set instead of the INVITE's Route (§9.1); and it
// answers a 2xx from another fork with the first dialog's ACK and never
// ends that dialog (§13.2.2.4).

// dialog is one push's INVITE and the dialog its first 2xx set up.
type dialog struct {
	p      *Pusher
	invite *sip.Request
	tx     sip.ClientTransaction
	// bye is closed when the client's BYE ended the dialog (ReadBye).
	bye     chan struct{}
	byeOnce sync.Once

	mu    sync.Mutex
	res   *sip.Response // the 2xx of the push's dialog; nil before it
	id    string        // its dialog ID (sip.DialogIDFromResponse)
	tag   string        // its To tag
	ack   *sip.Request  // its ACK as sent, sent again for a retransmitted 2xx
	forks map[string]bool
}

// prebuilt is the client option for a request that is complete as it is
// (an ACK sent again): sipgo adds nothing to it.
func prebuilt(*sipgo.Client, *sip.Request) error { return nil }

// startInvite sends the INVITE. Every 2xx that comes after the first —
// retransmissions and other forks' answers, which sipgo's transaction
// hands to its retransmission hook, not up — is ACKed (answered).
func (p *Pusher) startInvite(ctx context.Context, invite *sip.Request) (*dialog, error) {
	tx, err := p.cfg.Client.TransactionRequest(ctx, invite)
	if err != nil {
		return nil, err
	}
	d := &dialog{p: p, invite: invite, tx: tx, bye: make(chan struct{}), forks: map[string]bool{}}
	tx.OnRetransmission(func(r *sip.Response) {
		if !r.IsSuccess() {
			return
		}
		if err := d.answered(r); err != nil {
			p.log.Warn("ack failed", "call_id", invite.CallID().Value(), "status", r.StatusCode, "err", err)
		}
	})
	return d, nil
}

// wait waits for the INVITE's final answer. Once ctx is done, the INVITE
// is cancelled (cancel) and wait returns the final answer the CANCEL
// brought, if any, with cancelled set; provisional tells whether any
// provisional answer came. err is set when the transaction ended
// without a final answer.
func (d *dialog) wait(ctx context.Context) (res *sip.Response, provisional, cancelled bool, err error) {
	for {
		select {
		case r := <-d.tx.Responses():
			if r.IsProvisional() {
				provisional = true
				continue
			}
			return r, provisional, false, nil
		case <-d.tx.Done():
			return nil, provisional, false, d.txErr()
		case <-ctx.Done():
			res, provisional, err = d.cancel(provisional)
			return res, provisional, true, err
		}
	}
}

func (d *dialog) txErr() error {
	err := d.tx.Err()
	if err == nil {
		err = sip.ErrTransactionTerminated
	}
	return fmt.Errorf("transaction ended without a final answer: %w", err)
}

// cancel CANCELs the INVITE (RFC 3261 §9.1) and returns its final answer:
// a 487, or a 2xx that crossed the CANCEL, or nil when none came within
// 64·T1 of the CANCEL. A CANCEL must wait for a provisional answer: until
// one comes, a final answer ends the wait instead, or the INVITE's own
// timeout (Timer B) does.
func (d *dialog) cancel(provisional bool) (*sip.Response, bool, error) {
	for !provisional {
		select {
		case r := <-d.tx.Responses():
			if !r.IsProvisional() {
				return r, false, nil
			}
			provisional = true
		case <-d.tx.Done():
			return nil, false, d.txErr()
		}
	}
	ctx, stop := context.WithTimeout(context.Background(), 64*sip.T1)
	defer stop()
	cancelTx, err := d.p.cfg.Client.TransactionRequest(ctx, newCancel(d.invite))
	if err != nil {
		return nil, true, fmt.Errorf("cancel: %w", err)
	}
	defer cancelTx.Terminate()
	// The CANCEL's own answer (200, or 481 when the INVITE was answered
	// meanwhile) is read so that its transaction does not block; the
	// INVITE's final answer is what counts.
	canceled := cancelTx.Responses()
	for {
		select {
		case <-canceled:
		case r := <-d.tx.Responses():
			if !r.IsProvisional() {
				return r, true, nil
			}
		case <-d.tx.Done():
			return nil, true, d.txErr()
		case <-ctx.Done():
			// RFC 3261 §9.1: a UAS of RFC 2543 sends no 487.
			return nil, true, nil
		}
	}
}

// answered ACKs a 2xx to the INVITE, which RFC 3261 §13.2.2.4 requires
// for each one, retransmissions included. The first 2xx sets up the
// push's dialog; a retransmission of it gets the same ACK again. A 2xx
// with another To tag is another device's (the proxy forked the INVITE):
// it gets an ACK built from it and its dialog a BYE, once, as a push
// keeps one dialog.
func (d *dialog) answered(r *sip.Response) error {
	tag, _ := r.To().Params.Get("tag")
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case d.res == nil:
		id, err := sip.DialogIDFromResponse(r)
		if err != nil {
			return err
		}
		ack := newInDialog(sip.ACK, d.invite, r)
		// The ACK is written under the lock: a retransmitted 2xx then
		// finds the ACK as sent (its Via added) to send again.
		if err := d.p.cfg.Client.WriteRequest(ack); err != nil {
			return err
		}
		d.res, d.id, d.tag, d.ack = r, id, tag, ack
		d.p.dialogs.Store(id, d)
		return nil
	case tag == d.tag:
		return d.p.cfg.Client.WriteRequest(d.ack.Clone(), prebuilt)
	}
	err := d.p.cfg.Client.WriteRequest(newInDialog(sip.ACK, d.invite, r))
	if !d.forks[tag] && tag != "" {
		d.forks[tag] = true
		// Not on this goroutine: the BYE's answer comes through the
		// transaction layer, which is waiting for this hook to return.
		go d.endFork(r)
	}
	return err
}

// endFork ends another device's dialog with BYE (best effort, within a
// few seconds).
func (d *dialog) endFork(r *sip.Response) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.p.sendBye(ctx, newInDialog(sip.BYE, d.invite, r)); err != nil {
		d.p.log.Warn("bye to forked answer failed", "call_id", d.invite.CallID().Value(), "err", err)
		return
	}
	d.p.log.Info("forked answer ended", "call_id", d.invite.CallID().Value())
}

// ended reports whether the client's BYE ended the dialog.
func (d *dialog) ended() bool {
	select {
	case <-d.bye:
		return true
	default:
		return false
	}
}

// close forgets the dialog: a BYE for it from now on is none of ours. The
// INVITE's transaction ends with it: RFC 6026 would keep it to Timer M
// (32 s) to ACK a fork's 2xx that comes later still, but at a thousand
// pushes a second that is some 30,000 transactions held, each with its
// INVITE and 2xx; a fork's 2xx during the session is ACKed and BYEd, and
// one after it goes unanswered (its UAS gives up after 64·T1).
func (d *dialog) close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.id != "" {
		d.p.dialogs.CompareAndDelete(d.id, d)
	}
	d.tx.Terminate()
}

// readBye answers a BYE from the client in d and ends d.
func (d *dialog) readBye(req *sip.Request, tx sip.ServerTransaction) error {
	d.byeOnce.Do(func() { close(d.bye) })
	d.close()
	return tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
}

// sendBye sends a BYE and waits for its final answer within ctx.
func (p *Pusher) sendBye(ctx context.Context, bye *sip.Request) error {
	res, err := p.cfg.Client.Do(ctx, bye)
	if err != nil {
		return err
	}
	if !res.IsSuccess() {
		return fmt.Errorf("%d %s", res.StatusCode, res.Reason)
	}
	return nil
}

// ReadBye answers a BYE from a client in one of our push dialogs and ends
// that session. It returns sipgo.ErrDialogDoesNotExists when the BYE
// belongs to no push dialog, so the caller can hand it to someone else.
func (p *Pusher) ReadBye(req *sip.Request, tx sip.ServerTransaction) error {
	id, err := sip.DialogIDFromRequestUAC(req)
	if err != nil {
		return errors.Join(err, sipgo.ErrDialogOutsideDialog)
	}
	d, ok := p.dialogs.Load(id)
	if !ok {
		return sipgo.ErrDialogDoesNotExists
	}
	return d.(*dialog).readBye(req, tx)
}

// HasDialog reports whether req, received, belongs to one of the
// pusher's open push dialogs.
func (p *Pusher) HasDialog(req *sip.Request) bool {
	id, err := sip.DialogIDFromRequestUAC(req)
	if err != nil {
		return false
	}
	_, ok := p.dialogs.Load(id)
	return ok
}

// newCancel builds the CANCEL of invite (RFC 3261 §9.1): its Request-URI,
// top Via (the server matches the INVITE by its branch), Route,
// Max-Forwards, From, To, Call-ID and CSeq number, to its destination.
func newCancel(invite *sip.Request) *sip.Request {
	req := sip.NewRequest(sip.CANCEL, *invite.Recipient.Clone())
	req.SipVersion = invite.SipVersion
	req.AppendHeader(sip.HeaderClone(invite.Via()))
	sip.CopyHeaders("Route", invite, req)
	if mf := invite.MaxForwards(); mf != nil {
		req.AppendHeader(sip.HeaderClone(mf))
	}
	req.AppendHeader(sip.HeaderClone(invite.From()))
	req.AppendHeader(sip.HeaderClone(invite.To()))
	req.AppendHeader(sip.HeaderClone(invite.CallID()))
	req.AppendHeader(&sip.CSeqHeader{SeqNo: invite.CSeq().SeqNo, MethodName: sip.CANCEL})
	req.SetBody(nil)
	req.SetTransport(invite.Transport())
	req.SetDestination(invite.Destination())
	return req
}

// newInDialog builds the ACK or the BYE of the dialog a 2xx to invite set
// up (RFC 3261 §12.2.1.1, §13.2.2.4, §15.1.1): the 2xx's Contact as
// Request-URI, its Record-Route reversed as Route, From and Call-ID of
// the INVITE, To of the 2xx; CSeq the INVITE's number for the ACK, the
// next one for the BYE, the only request deferpush sends in a dialog
// after it. The ACK keeps the INVITE's Contact (optional in it); a BYE
// has none (Table 3). sipgo adds the Via.
func newInDialog(method sip.RequestMethod, invite *sip.Request, res *sip.Response) *sip.Request {
	target := invite.Recipient
	if c := res.Contact(); c != nil {
		target = c.Address
	}
	rr := res.GetHeaders("Record-Route")
	routes := make([]string, 0, len(rr)+1)
	for i := len(rr) - 1; i >= 0; i-- {
		routes = append(routes, rr[i].Value())
	}
	req := sip.NewRequest(method, *target.Clone())
	// next is the URI the request goes to: the first route, else the
	// remote target (RFC 3261 §8.1.2).
	next, strict := target, false
	if len(routes) > 0 {
		var first sip.Uri
		if _, err := sip.ParseAddressValue(routes[0], &first, nil); err == nil {
			next = first
			// A first route without lr is a strict router (RFC 2543): it
			// takes the Request-URI, and the remote target goes last in
			// Route.
			if !first.UriParams.Has("lr") {
				req.Recipient, strict = first, true
				routes = append(routes[1:], "<"+target.String()+">")
			}
		}
	}
	req.SipVersion = invite.SipVersion
	for _, r := range routes {
		req.AppendHeader(sip.NewHeader("Route", r))
	}
	mf := sip.MaxForwardsHeader(70)
	req.AppendHeader(&mf)
	req.AppendHeader(sip.HeaderClone(invite.From()))
	req.AppendHeader(sip.HeaderClone(res.To()))
	req.AppendHeader(sip.HeaderClone(invite.CallID()))
	cseq := &sip.CSeqHeader{SeqNo: invite.CSeq().SeqNo, MethodName: method}
	if method == sip.BYE {
		cseq.SeqNo++
	}
	req.AppendHeader(cseq)
	if c := invite.Contact(); c != nil && method == sip.ACK {
		req.AppendHeader(sip.HeaderClone(c))
	}
	req.SetBody(nil)
	// The transport is the one next names (RFC 3263 §4.1: a Record-Route
	// of a proxy bridging transports, a Contact with ;transport=); a URI
	// naming none keeps the INVITE's, where RFC 3263 would pick UDP for
	// a sip: URI of a numeric address: the proxy took the INVITE on it.
	tp := invite.Transport()
	if v, ok := next.UriParams.Get("transport"); ok && v != "" {
		tp = strings.ToUpper(v)
	}
	req.SetTransport(tp)
	if strict {
		// sipgo sends to the first Route, which is now the remote target:
		// the request goes to the strict router, its Request-URI.
		req.SetDestination(hostPort(next))
	}
	return req
}

// hostPort is u's host and port, the port SIP's default for u's scheme
// when u gives none.
func hostPort(u sip.Uri) string {
	port := u.Port
	if port == 0 {
		port = 5060
		if u.IsEncrypted() {
			port = 5061
		}
	}
	return net.JoinHostPort(strings.Trim(u.Host, "[]"), strconv.Itoa(port))
}
