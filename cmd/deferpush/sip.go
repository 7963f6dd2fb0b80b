package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	ingress "github.com/deferpush/deferpush/adapters/sip"
	"github.com/deferpush/deferpush/plugin/push"
)

// sipStack is deferpush's SIP user agent: one listener for UDP and TCP on
// the same port, a client for the INVITEs it sends, and the routing of
// in-dialog requests to the pusher.
type sipStack struct {
	ua     *sipgo.UserAgent
	srv    *sipgo.Server
	client *sipgo.Client
	tcp    net.Listener
	udp    net.PacketConn
	host   string // advertised host
	port   int
}

func newSIPStack(cfg SIPConfig, log *slog.Logger) (*sipStack, error) {
	host, _, _ := net.SplitHostPort(cfg.Listen)
	tcp, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("sip listener: %w", err)
	}
	port := tcp.Addr().(*net.TCPAddr).Port
	udp, err := net.ListenPacket("udp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		tcp.Close()
		return nil, fmt.Errorf("sip listener: %w", err)
	}
	s := &sipStack{tcp: tcp, udp: udp, host: host, port: port}
	if cfg.Advertise != "" {
		s.host = cfg.Advertise
		if h, p, err := net.SplitHostPort(cfg.Advertise); err == nil {
			s.host = h
			s.port, _ = strconv.Atoi(p)
		}
	}
	s.ua, err = sipgo.NewUA(sipgo.WithUserAgent("deferpush"), sipgo.WithUserAgentHostname(s.host))
	if err == nil {
		s.srv, err = sipgo.NewServer(s.ua, sipgo.WithServerLogger(log))
	}
	if err == nil {
		s.client, err = sipgo.NewClient(s.ua, sipgo.WithClientHostname(s.host), sipgo.WithClientLogger(log))
	}
	if err != nil {
		s.close()
		return nil, fmt.Errorf("sip: %w", err)
	}
	return s, nil
}

// contact is our Contact URI: where in-dialog requests reach us.
func (s *sipStack) contact() string {
	return fmt.Sprintf("sip:deferpush@%s;transport=tcp", net.JoinHostPort(s.host, strconv.Itoa(s.port)))
}

// route sends the requests deferpush serves to their handlers: in-dialog
// requests of push sessions to the pusher, and what the proxy relays for
// offline users (MESSAGE, session-mode INVITE and its ACK and BYE) to the
// ingress.
func (s *sipStack) route(p *push.Pusher, in *ingress.Ingress) {
	s.srv.OnBye(func(req *sip.Request, tx sip.ServerTransaction) {
		err := p.ReadBye(req, tx)
		if errors.Is(err, sipgo.ErrDialogDoesNotExists) || errors.Is(err, sipgo.ErrDialogOutsideDialog) {
			err = in.ReadBye(req, tx)
		}
		if errors.Is(err, sipgo.ErrDialogDoesNotExists) || errors.Is(err, sipgo.ErrDialogOutsideDialog) {
			_ = tx.Respond(sip.NewResponseFromRequest(req, 481, "Call/Transaction Does Not Exist", nil))
		}
	})
	s.srv.OnMessage(in.OnMessage)
	s.srv.OnInvite(func(req *sip.Request, tx sip.ServerTransaction) {
		// A re-INVITE (a To tag: inside a dialog, e.g. a session refresh)
		// is not a new session to store; deferpush changes nothing in its
		// short sessions, and a refused re-INVITE leaves the dialog as it
		// was (RFC 3261 §14.2).
		if to := req.To(); to != nil && to.Params.Has("tag") {
			_ = tx.Respond(sip.NewResponseFromRequest(req, 488, "Not Acceptable Here", nil))
			return
		}
		in.OnInvite(req, tx)
	})
	// An ACK confirms an ingress session; a stray one (after a non-2xx,
	// which the transaction layer absorbs) matches nothing and is ignored,
	// as RFC 3261 has no response to ACK.
	s.srv.OnAck(func(req *sip.Request, tx sip.ServerTransaction) { _ = in.ReadAck(req, tx) })
	s.srv.OnOptions(func(req *sip.Request, tx sip.ServerTransaction) {
		res := sip.NewResponseFromRequest(req, 200, "OK", nil)
		res.AppendHeader(sip.NewHeader("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, MESSAGE"))
		_ = tx.Respond(res)
	})
}

// run serves both listeners until ctx ends.
func (s *sipStack) run(ctx context.Context) error {
	errc := make(chan error, 2)
	go func() { errc <- s.srv.ServeTCP(s.tcp) }()
	go func() { errc <- s.srv.ServeUDP(s.udp) }()
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	s.close()
	return err
}

func (s *sipStack) close() {
	s.tcp.Close()
	s.udp.Close()
	if s.srv != nil {
		s.srv.Close()
	}
	if s.ua != nil {
		s.ua.Close()
	}
}
