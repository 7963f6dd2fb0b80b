package push

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/plugin/msrp"
	"github.com/deferpush/deferpush/plugin/sdp"
)

// Steps 2–7 of the seed's Figure 2: the INVITE with an MSRP offer
// through the proxy, the client's 200, our ACK (dialog.go), and the MSRP
// connection.

// Open sends the INVITE and sets up the MSRP session (steps 2–7); with
// t.Pager it returns a pager-mode session (pager.go) and sends nothing.
func (p *Pusher) Open(ctx context.Context, t plugin.Target) (plugin.PushSession, error) {
	var ruri sip.Uri
	if err := sip.ParseUri(t.URI, &ruri); err != nil {
		return nil, &plugin.SessionError{Op: "invite", Err: fmt.Errorf("request-uri %q: %w", t.URI, err)}
	}
	if t.Pager {
		return p.openPager(t, ruri), nil
	}
	local := p.cfg.MSRP.URI()
	local.SessionID = msrp.NewSessionID()
	routes := &imdnRoutes{}
	mcfg := p.sessionConfig(local, t.AOR, routes)
	// Registered before the INVITE leaves: a client answering
	// a=setup:active may connect as soon as it sends its 200.
	passive, err := msrp.NewSession(mcfg)
	if err != nil {
		return nil, &plugin.SessionError{Op: "msrp", Err: err}
	}
	if err := p.cfg.MSRP.Add(passive, nil); err != nil {
		passive.Close()
		return nil, &plugin.SessionError{Op: "msrp", Err: err}
	}
	dlg, err := p.invite(ctx, t, ruri, local)
	if err != nil {
		passive.Close()
		return nil, err
	}
	s := &session{p: p, dlg: dlg, policy: t.Policy, aor: t.AOR, imdn: routes}
	err = s.readAnswer()
	if err == nil {
		err = s.carries(t.Messages)
	}
	if err != nil {
		passive.Close()
		s.bye()
		return nil, err
	}
	if !sdp.OffererConnects(s.answer) {
		// Only the client the answer names may bind the session: a
		// connection that claimed it first from another path (it knew
		// the session id from our offer) is dropped, having got nothing.
		if err := passive.Expect(s.answer.Path); err != nil {
			p.log.Warn("msrp session claimed by another peer", "aor", t.AOR, "err", err)
		}
		s.ms = passive // the client connects to our listener
		s.awaiting = true
		return s, nil
	}
	if s.ms, err = p.connect(ctx, mcfg, passive, s.answer); err != nil {
		s.bye()
		return nil, &plugin.SessionError{Op: "msrp", Err: err}
	}
	return s, nil
}

// invite sends the INVITE with our offer (step 2), waits for the
// client's final answer (steps 3–5) and ACKs a 2xx (step 6), within the
// policy's invite_timeout: the INVITE is CANCELled after it, once a
// provisional answer came (RFC 3261 §9.1 forbids a CANCEL before one: a
// proxy's 100 Trying is one; without any, the INVITE runs to its
// transaction timeout, Timer B).
func (p *Pusher) invite(ctx context.Context, t plugin.Target, ruri sip.Uri, local msrp.URI) (*dialog, error) {
	offer, err := sdp.Build(sdp.Media{Path: []msrp.URI{local}, AcceptTypes: acceptTypes, AcceptWrappedTypes: acceptWrappedTypes, Setup: sdp.SetupActPass})
	if err != nil {
		return nil, &plugin.SessionError{Op: "invite", Err: err}
	}
	ictx, cancel := context.WithTimeout(ctx, time.Duration(t.Policy.InviteTimeout))
	defer cancel()
	d, err := p.startInvite(ictx, p.newInvite(ruri, t, offer))
	if err != nil {
		return nil, &plugin.SessionError{Op: "invite", Err: err}
	}
	res, provisional, cancelled, err := d.wait(ictx)
	timeout := time.Duration(t.Policy.InviteTimeout)
	switch {
	case res != nil && res.IsSuccess():
		if err := d.answered(res); err != nil {
			d.close()
			return nil, &plugin.SessionError{Op: "ack", Err: err}
		}
		if !cancelled {
			return d, nil
		}
		// Answered while being cancelled: the client set up a session
		// the push gave up on; end it rather than leave it to the
		// client's 2xx retransmissions to time out.
		p.endLate(d)
		return nil, &plugin.SessionError{Op: "invite", Err: fmt.Errorf("answered %d after invite_timeout %v, while cancelling: session ended (ACK, BYE): %w",
			res.StatusCode, timeout, ictx.Err())}
	case res != nil && (!cancelled || !provisional):
		// A refusal, or one that came past the timeout before anything
		// let the INVITE be cancelled: the client's answer all the same.
		d.close()
		reason := errors.New(res.Reason)
		if refusesMSRP(res.StatusCode) {
			reason = fmt.Errorf("%w: %s", plugin.ErrMSRPRefused, res.Reason)
		}
		return nil, &plugin.SessionError{Op: "invite", Status: res.StatusCode, Err: reason}
	}
	d.close()
	switch {
	case !cancelled:
	case ctx.Err() != nil:
		err = errors.Join(ctx.Err(), err)
	case provisional:
		err = fmt.Errorf("no answer within %v (cancelled): %w", timeout, errors.Join(ictx.Err(), err))
	default:
		err = fmt.Errorf("no answer within %v, and no provisional one: not cancellable (RFC 3261 §9.1), ended at the INVITE's timeout: %w",
			timeout, errors.Join(ictx.Err(), err))
	}
	return nil, &plugin.SessionError{Op: "invite", Err: err}
}

// endLate sends BYE in a dialog the push gave up on (best effort, within
// a few seconds).
func (p *Pusher) endLate(d *dialog) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = p.sendBye(ctx, newInDialog(sip.BYE, d.invite, d.res))
	d.close()
}

// refusesMSRP reports whether a final answer to the INVITE refuses the
// MSRP session rather than the push: 415 Unsupported Media Type (no SDP,
// or no MSRP), 488 Not Acceptable Here (no acceptable media), 606 Not
// Acceptable (RFC 3261 §21.6.4). Busy Here and Decline refuse the push.
func refusesMSRP(status int) bool { return status == 415 || status == 488 || status == 606 }

// readAnswer reads the client's SDP answer from its 2xx.
func (s *session) readAnswer() error {
	// RFC 3261 §13.2.1: the answer is the 2xx's application/sdp body; a
	// body of another type is no answer, whatever it looks like.
	var err error
	var ans sdp.Media
	if ct := s.dlg.res.ContentType(); ct == nil || !sdp.IsType(ct.Value()) {
		err = errors.New("the 2xx has no application/sdp body")
	} else {
		ans, err = sdp.Parse(s.dlg.res.Body())
	}
	if secure := s.p.cfg.MSRP.URI().Secure; err == nil && ans.Path[0].Secure != secure { // the offer's transport (RFC 3264 §6)
		err = fmt.Errorf("MSRP over TLS %v, the offer's %v", ans.Path[0].Secure, secure)
	}
	// To our actpass the answer says active, passive or nothing (RFC 4145
	// §4.1: actpass is no answer's; holdconn opens no connection now).
	if err == nil && ans.Setup != "" && ans.Setup != sdp.SetupActive && ans.Setup != sdp.SetupPassive {
		err = fmt.Errorf("a=setup:%s", ans.Setup)
	}
	if err != nil {
		// No usable MSRP m-line: the client took the call but not MSRP.
		return &plugin.SessionError{Op: "invite", Err: fmt.Errorf("%w: answer: %w", plugin.ErrMSRPRefused, err)}
	}
	s.answer = ans
	return nil
}

// connect opens the MSRP connection to the client's path (step 7). The
// session registered for a client that would have connected (passive)
// becomes the active one: the listener keeps routing it the REPORTs a
// relay on the client's path brings over a connection of its own. Should
// a connection have bound it meanwhile (a peer that read the session id
// in our offer), it is closed, that connection with it, and a new
// session with the same URI connects.
func (p *Pusher) connect(ctx context.Context, mcfg msrp.Config, passive *msrp.Session, ans sdp.Media) (*msrp.Session, error) {
	active := passive
	err := p.cfg.MSRP.Activate(passive)
	if err != nil {
		passive.Close()
		if active, err = msrp.NewSession(mcfg); err != nil {
			return nil, err
		}
		err = p.cfg.MSRP.AddActive(active)
	}
	if err == nil {
		err = active.Connect(ctx, ans.Path)
	}
	if err != nil {
		active.Close()
		return nil, err
	}
	return active, nil
}

// newInvite builds the INVITE of step 2.
func (p *Pusher) newInvite(ruri sip.Uri, t plugin.Target, offer []byte) *sip.Request {
	req := sip.NewRequest(sip.INVITE, ruri)
	for _, r := range p.routes(t, t.Policy.PushTarget != plugin.TargetAOR) {
		req.AppendHeader(sip.NewHeader("Route", r))
	}
	from := &sip.FromHeader{Address: p.from, Params: sip.NewParams()}
	from.Params.Add("tag", sip.GenerateTagN(16))
	req.AppendHeader(from)
	var to sip.Uri
	if err := sip.ParseUri(t.AOR.String(), &to); err != nil {
		to = ruri
	}
	req.AppendHeader(&sip.ToHeader{Address: to, Params: sip.NewParams()})
	req.AppendHeader(sip.NewHeader("Subject", "deferred messages"))
	req.AppendHeader(sip.NewHeader("User-Agent", "deferpush"))
	// RFC 3261 §13.2.1 (SHOULDs): Allow lists what the stack serves in
	// the dialog (a BYE, a refused re-INVITE, OPTIONS; adapters/ingress
	// Stack.Route); Supported, empty, says no extension is.
	req.AppendHeader(sip.NewHeader("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS"))
	req.AppendHeader(sip.NewHeader("Supported", ""))
	req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	req.SetBody(offer)
	req.AppendHeader(sip.HeaderClone(&p.contact))
	p.setTransport(req)
	return req
}

// routes are the Route values of a request to t: the outbound proxy,
// then, when we target the contact ourselves (toContact), the edge
// proxies it registered through (RFC 3327 Path), each in angle brackets.
func (p *Pusher) routes(t plugin.Target, toContact bool) []string {
	var routes []string
	if p.route != nil {
		routes = append(routes, p.route.String())
	}
	if toContact {
		routes = append(routes, t.Registration.Path...)
	}
	for i, r := range routes {
		if !strings.HasPrefix(r, "<") {
			routes[i] = "<" + r + ">"
		}
	}
	return routes
}

// setTransport sends req over the outbound proxy's transport; a request
// that would go over UDP but is larger than 1300 octets with its Via goes
// over TCP (RFC 3261 §18.1.1: the path MTU is unknown), where sipgo would
// refuse to send it. Call it once req is complete but for its Via.
func (p *Pusher) setTransport(req *sip.Request) {
	if p.route != nil {
		if tp, ok := p.route.UriParams.Get("transport"); ok && tp != "" {
			req.SetTransport(strings.ToUpper(tp))
		}
	}
	if strings.EqualFold(req.Transport(), "UDP") && len(req.String())+viaRoom > maxUDPRequest {
		req.SetTransport("TCP")
	}
}

const (
	// maxUDPRequest is the largest request sent over UDP (RFC 3261
	// §18.1.1); viaRoom what the Via sipgo adds takes of it.
	maxUDPRequest = 1300
	viaRoom       = 120
)
