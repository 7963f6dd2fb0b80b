package imclient

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/deferpush/deferpush/plugin/msrp"
	"github.com/deferpush/deferpush/plugin/sdp"
)

// The sender role: the client sends a SIP MESSAGE, or opens an MSRP session
// (INVITE with an offer through the proxy, SENDs, BYE), to a user who may be
// offline.

// SendMessage sends a MESSAGE from the client's AOR to the AOR to, through
// the proxy, and returns the final response. Extra headers (Subject,
// P-Asserted-Identity, Call-ID ...) are added as given.
func (c *Client) SendMessage(ctx context.Context, to, contentType string, body []byte, hdrs ...sip.Header) (*sip.Response, error) {
	req, err := c.newRequest(sip.MESSAGE, to, contentType, body, hdrs)
	if err != nil {
		return nil, err
	}
	res, err := c.cli.Do(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("imclient: message: %w", err)
	}
	return res, nil
}

// newRequest builds an out-of-dialog request from the client's AOR to the
// AOR to, with the extra headers and the body, routed through the proxy.
func (c *Client) newRequest(method sip.RequestMethod, to, contentType string, body []byte, hdrs []sip.Header) (*sip.Request, error) {
	var ruri sip.Uri
	if err := sip.ParseUri(to, &ruri); err != nil {
		return nil, fmt.Errorf("imclient: to %q: %w", to, err)
	}
	req := sip.NewRequest(method, ruri)
	req.AppendHeader(&sip.ToHeader{Address: ruri, Params: sip.NewParams()})
	from := &sip.FromHeader{Address: c.aor, Params: sip.NewParams()}
	from.Params.Add("tag", sip.GenerateTagN(10))
	req.AppendHeader(from)
	for _, h := range hdrs {
		req.AppendHeader(h)
	}
	req.AppendHeader(sip.NewHeader("Content-Type", contentType))
	req.SetBody(body)
	c.route(req)
	return req, nil
}

// Session is an MSRP session the client opened as the sender.
type Session struct {
	dlg *sipgo.DialogClientSession
	ms  *msrp.Session
}

// OpenSession sends an INVITE with an MSRP offer (a=setup:actpass) to the
// AOR to through the proxy, ACKs the 200 and binds the MSRP session: it
// connects to the answer's path unless the answer says a=setup:active.
// Extra headers (Subject, P-Asserted-Identity ...) go on the INVITE.
func (c *Client) OpenSession(ctx context.Context, to string, hdrs ...sip.Header) (*Session, error) {
	c.senderOnce.Do(func() { c.senderDialogs = sipgo.NewDialogClientCache(c.cli, c.contact) })
	local := c.msrpL.URI()
	local.SessionID = msrp.NewSessionID()
	ms, err := msrp.NewSession(msrp.Config{Local: local, Logger: c.log})
	if err != nil {
		return nil, err
	}
	// Registered first: an answer with a=setup:active connects at once.
	if err := c.msrpL.Add(ms, nil); err != nil {
		ms.Close()
		return nil, err
	}
	offer, err := sdp.Build(sdp.Media{Path: []msrp.URI{local}, AcceptTypes: []string{"text/plain", "*"}, Setup: sdp.SetupActPass})
	if err != nil {
		ms.Close()
		return nil, err
	}
	req, err := c.newRequest(sip.INVITE, to, "application/sdp", offer, hdrs)
	if err != nil {
		ms.Close()
		return nil, err
	}
	dlg, err := c.senderDialogs.WriteInvite(ctx, req)
	if err != nil {
		ms.Close()
		return nil, fmt.Errorf("imclient: invite: %w", err)
	}
	if err := dlg.WaitAnswer(ctx, sipgo.AnswerOptions{}); err != nil {
		ms.Close()
		dlg.Close()
		return nil, fmt.Errorf("imclient: invite: %w", err)
	}
	s := &Session{dlg: dlg}
	if err := dlg.Ack(ctx); err != nil {
		ms.Close()
		s.bye(ctx)
		return nil, fmt.Errorf("imclient: ack: %w", err)
	}
	ans, err := sdp.Parse(dlg.InviteResponse.Body())
	if err == nil && sdp.OffererConnects(ans) {
		// Our passive registration is not needed: connect instead.
		ms.Close()
		ms, err = msrp.NewSession(msrp.Config{Local: local, Logger: c.log})
		if err == nil {
			if err = ms.Connect(ctx, ans.Path); err != nil {
				ms.Close()
			}
		}
	}
	if err != nil {
		s.bye(ctx)
		return nil, fmt.Errorf("imclient: msrp: %w", err)
	}
	s.ms = ms
	return s, nil
}

// Send sends one message with the given Message-ID and waits for its 200.
func (s *Session) Send(ctx context.Context, messageID, contentType string, body []byte) error {
	return s.ms.Send(ctx, msrp.Message{ID: messageID, ContentType: contentType, Body: body})
}

// CallID is the Call-ID of the session's INVITE.
func (s *Session) CallID() string { return s.dlg.InviteRequest.CallID().Value() }

// Close sends the BYE through the proxy and closes the MSRP session.
func (s *Session) Close(ctx context.Context) error {
	err := s.bye(ctx)
	if s.ms != nil {
		if cerr := s.ms.Close(); err == nil && cerr != nil && !errors.Is(cerr, msrp.ErrClosed) {
			err = cerr
		}
	}
	return err
}

func (s *Session) bye(ctx context.Context) error {
	defer s.dlg.Close()
	return s.dlg.Bye(ctx)
}

// senderState is what the sender role adds to a Client.
type senderState struct {
	senderOnce    sync.Once
	senderDialogs *sipgo.DialogClientCache
}
