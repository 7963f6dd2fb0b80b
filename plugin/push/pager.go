package push

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/plugin/encap"
)

// Pager mode: for a client that takes no MSRP, each stored message goes
// as a SIP MESSAGE (RFC 3428) to its registered contact, through the
// outbound proxy (and the Path it registered through), one at a time and
// in order. The request is the stored one re-sent (encap.PageOf): a new
// request line, Route, Via and Max-Forwards, the stored CSeq number, and
// the stored headers and body.
//
// A 2xx confirms the message. 408, 477 (the proxy could not reach the
// client), 480 and 5xx, or no final answer within the policy's
// invite_timeout, break the session as a broken MSRP connection does:
// the ones after that message are not sent, and the message is charged
// an attempt once the client has confirmed a page of this session. The
// session's first page is also its INVITE: failing so, it says the
// client cannot be reached now (a registered phone asleep, its
// connection gone), not that the message is at fault, and is charged
// nothing, as a failed INVITE in MSRP mode; else a client unreachable
// for a quarter of an hour would see its messages dead-lettered.
// A 3xx, 401 or 407 also breaks it, charging nothing: it is about the
// route or deferpush's credentials (which it has none of), not about the
// message, and would come back for every message (the push is retried
// after retry_backoff; message_ttl bounds the retries). Any other final
// answer refuses that message only (as an MSRP 4xx does), and the session
// goes on with the next.

// errNotTheMessage marks a page's answer that says nothing about the
// message (3xx, 401, 407): no attempt at it is charged.
var errNotTheMessage = errors.New("an answer about the route, not the message")

// pagerSession is a push session in pager mode. Open sends nothing: each
// message is its own transaction.
type pagerSession struct {
	p       *Pusher
	ruri    sip.Uri
	routes  []string
	timeout time.Duration
	reached bool // the client confirmed a page of this session
}

var _ plugin.PushSession = (*pagerSession)(nil)

// openPager returns a pager-mode session to t. Pager mode always targets
// the registered contact, which is the client whose answer chose it.
func (p *Pusher) openPager(t plugin.Target, ruri sip.Uri) *pagerSession {
	return &pagerSession{p: p, ruri: ruri, routes: p.routes(t, true), timeout: time.Duration(t.Policy.InviteTimeout)}
}

// Deliver sends one MESSAGE per message, each after the previous one's
// final answer.
func (s *pagerSession) Deliver(ctx context.Context, msgs []*plugin.Message, done func(*plugin.Message, error)) error {
	var broken error
	for _, m := range msgs {
		if broken == nil && ctx.Err() != nil {
			broken = &plugin.SessionError{Op: "message", Err: context.Cause(ctx)}
		}
		if broken != nil {
			done(m, plugin.ErrNotSent)
			continue
		}
		err := s.send(ctx, m)
		var se *plugin.SessionError
		switch {
		case err == nil:
			s.reached = true
			done(m, nil)
		case ctx.Err() != nil:
			// Cut short (an unregistration, the shutdown): the client may
			// have it, but that is no attempt at it.
			broken = &plugin.SessionError{Op: "message", Err: context.Cause(ctx)}
			done(m, plugin.ErrNotSent)
		case errors.As(err, &se):
			broken = se
			if errors.Is(err, errNotTheMessage) || !s.reached {
				done(m, plugin.ErrNotSent)
				continue
			}
			done(m, err)
		default:
			done(m, err)
		}
	}
	return broken
}

// Close implements plugin.PushSession: pager mode holds nothing open.
func (s *pagerSession) Close(context.Context) error { return nil }

// send sends m and waits for the final answer. It returns nil for a 2xx,
// a *plugin.RejectedError for a refusal of this message, a
// *plugin.SessionError when the client cannot be reached, and another
// error when m cannot be made a MESSAGE.
func (s *pagerSession) send(ctx context.Context, m *plugin.Message) error {
	req, err := s.request(m)
	if err != nil {
		return fmt.Errorf("page: %w", err)
	}
	tctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	res, err := s.p.cfg.Client.Do(tctx, req, sipgo.ClientRequestBuild)
	switch {
	case err != nil && tctx.Err() != nil && ctx.Err() == nil:
		return &plugin.SessionError{Op: "message", Err: fmt.Errorf("no final answer within %v", s.timeout)}
	case err != nil:
		return &plugin.SessionError{Op: "message", Err: err}
	case res.IsSuccess():
		return nil
	case res.StatusCode == 408 || res.StatusCode == 477 || res.StatusCode == 480 || res.StatusCode >= 500 && res.StatusCode < 600:
		return &plugin.SessionError{Op: "message", Status: res.StatusCode, Err: errors.New(res.Reason)}
	case res.StatusCode < 400 || res.StatusCode == 401 || res.StatusCode == 407:
		return &plugin.SessionError{Op: "message", Status: res.StatusCode, Err: fmt.Errorf("%w: %s", errNotTheMessage, res.Reason)}
	}
	// The push's reports and the message's last_error say it in SIP's
	// terms; RejectedError carries the code.
	return &plugin.RejectedError{Status: res.StatusCode, Reason: res.Reason}
}

// pageParser reads the requests built below; stored messages may exceed
// the 64 KiB of sipgo's default parser, so the head is parsed without the
// body, which is set afterwards.
var pageParser = sip.NewParser()

// request builds the MESSAGE of m: the request line to the contact, the
// Route set, Max-Forwards, the page's stored headers, the CSeq, and the
// body (SetBody writes Content-Length); ClientRequestBuild adds the Via.
func (s *pagerSession) request(m *plugin.Message) (*sip.Request, error) {
	pg, err := encap.PageOf(deferred(m))
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.Grow(256 + len(pg.Head))
	b.WriteString("MESSAGE " + s.ruri.String() + " SIP/2.0\r\n")
	for _, r := range s.routes {
		b.WriteString("Route: " + r + "\r\n")
	}
	b.WriteString("Max-Forwards: 70\r\n")
	b.Write(pg.Head)
	b.WriteString("CSeq: " + strconv.FormatUint(uint64(pg.CSeq), 10) + " MESSAGE\r\n")
	b.WriteString("Content-Length: 0\r\n\r\n")
	msg, err := pageParser.ParseSIP(b.Bytes())
	if err != nil {
		return nil, fmt.Errorf("SIP parser: %w", err)
	}
	req, ok := msg.(*sip.Request)
	if !ok || req.From() == nil || req.To() == nil || req.CallID() == nil {
		return nil, errors.New("not a request with From, To and Call-ID")
	}
	req.SetBody(pg.Body)
	s.p.setTransport(req)
	return req, nil
}
