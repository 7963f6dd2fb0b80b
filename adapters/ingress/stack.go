package ingress

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/plugin/guard"
)

// StackConfig configures a Stack.
type StackConfig struct {
	// Listen is host:port for SIP over UDP and TCP; port 0 picks a free
	// port, the same for both. Required.
	Listen string
	// Advertise is the host[:port] put in Contact and Via, for when Listen
	// is a wildcard address. Empty means the Listen address.
	Advertise string
	// MaxConns and MaxConnsPerHost bound the TCP connections accepted at
	// once, all and from one source address; Budget, when set, bounds
	// them together with the process's other listeners. At a bound the
	// connection that sent nothing makes room, else the one idle longest,
	// else one whose message has been arriving for longer than
	// guard.DefaultBusyGrace (guard.Config.BusyGrace says which). Zero
	// means 1024 and 256.
	MaxConns        int
	MaxConnsPerHost int
	Budget          *guard.Budget
	// Trusted are the networks of the proxies (sip.trusted_sources): a
	// TCP connection from one is never closed to make room for one from
	// elsewhere, and a new one from one takes the place of a connection
	// from elsewhere whose message is still arriving. Connections from
	// elsewhere are still accepted: the listener serves more than the
	// ingress (a client's BYE to our Contact, OPTIONS).
	Trusted []netip.Prefix
	// IdleTimeout closes an accepted TCP connection that sends nothing
	// for this long (the proxy opens a new one for its next request); one
	// that sends nothing at all is closed after 30 s. Zero means 5
	// minutes.
	IdleTimeout time.Duration
	// RequestTimeout closes an accepted TCP connection whose message has
	// been arriving for this long from its first octet, whatever trickles
	// in meanwhile (as Kamailio's tcp_msg_read_timeout). Zero means 20 s.
	RequestTimeout time.Duration
	// Logger; nil discards.
	Logger *slog.Logger
}

func init() {
	// sipgo refuses to write any UDP datagram over UDPMTUSize-200 octets
	// (1300), responses included, and ends the transaction: a MESSAGE
	// with many Vias was stored, never answered, and stored again at
	// each retransmission. RFC 3261 §18.1.1's bound is for requests, and
	// deferpush's own go over TCP past it (push.Pusher.setTransport);
	// a response goes over UDP whatever its size (§18.2.2), up to what a
	// datagram holds.
	sip.UDPMTUSize = 65507 + 200
}

// firstByteTimeout closes a SIP connection that sends nothing at all.
const firstByteTimeout = 30 * time.Second

// Dialogs is what the stack asks of the pusher (*push.Pusher): the BYEs
// of its push sessions. ReadBye returns sipgo.ErrDialogDoesNotExists (or
// ErrDialogOutsideDialog) for a BYE that is none of its own; HasDialog
// reports whether an in-dialog request belongs to one of them.
type Dialogs interface {
	ReadBye(req *sip.Request, tx sip.ServerTransaction) error
	HasDialog(req *sip.Request) bool
}

// Stack is deferpush's SIP user agent: one listener for UDP and TCP on
// the same port, a client for the INVITEs the pusher sends, and the
// routing of incoming requests to the pusher's dialogs and the ingress.
type Stack struct {
	ua     *sipgo.UserAgent
	srv    *sipgo.Server
	client *sipgo.Client
	tcp    net.Listener
	udp    net.PacketConn
	log    *slog.Logger
	host   string // advertised host
	port   int
}

// NewStack binds the listeners; Serve routes and serves them.
func NewStack(cfg StackConfig) (*Stack, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	host, _, _ := net.SplitHostPort(cfg.Listen)
	raw, udp, err := guard.ListenTCPAndUDP(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("sip listener: %w", err)
	}
	port := raw.Addr().(*net.TCPAddr).Port
	if cfg.MaxConns == 0 {
		cfg.MaxConns = 1024
	}
	if cfg.MaxConnsPerHost == 0 {
		cfg.MaxConnsPerHost = 256
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = 5 * time.Minute
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = 20 * time.Second
	}
	// sipgo's accept loop returns on any error and sets no read deadline
	// of its own: the guard retries, bounds and times out for it.
	tcp := guard.Listen(raw, guard.Config{
		Name: "sip", MaxConns: cfg.MaxConns, MaxConnsPerHost: cfg.MaxConnsPerHost, Budget: cfg.Budget,
		EvictIdle: true, FirstByteTimeout: min(firstByteTimeout, cfg.IdleTimeout), IdleTimeout: cfg.IdleTimeout,
		NewFramer: newSIPFramer, RequestTimeout: cfg.RequestTimeout,
		BusyGrace: guard.DefaultBusyGrace, Trusted: cfg.Trusted,
		Logger: log,
	})
	s := &Stack{tcp: tcp, udp: udp, log: log, host: host, port: port}
	if cfg.Advertise != "" {
		s.host = cfg.Advertise
		if h, p, err := net.SplitHostPort(cfg.Advertise); err == nil {
			s.host = h
			s.port, _ = strconv.Atoi(p)
		}
	}
	// Every layer of sipgo logs through SIPLogger: its transport writes
	// the requests it cannot parse, secret and all, into its records.
	sipLog := SIPLogger(log.With("component", "sip"))
	// A UDP request sipgo cannot parse is answered 400 (badrequest.go).
	refuser := newUDPRefuser(udp, sipLog)
	s.ua, err = sipgo.NewUA(sipgo.WithUserAgent("deferpush"), sipgo.WithUserAgentHostname(s.host),
		sipgo.WithUserAgentTransportLayerOptions(sip.WithTransportLayerLogger(sipLog), sip.WithTransportLayerReadFilter(refuser.filter)),
		sipgo.WithUserAgentTransactionLayerOptions(sip.WithTransactionLayerLogger(sipLog)))
	if err == nil {
		s.srv, err = sipgo.NewServer(s.ua, sipgo.WithServerLogger(sipLog))
	}
	if err == nil {
		// Via sent-by is the listener's (advertised) address with rport
		// (RFC 3581), not the connection's ephemeral port: should the
		// connection a request went out on close before its response,
		// the proxy connects to the sent-by port (RFC 3261 §18.2.2), and
		// only the listener is there.
		s.client, err = sipgo.NewClient(s.ua, sipgo.WithClientHostname(s.host), sipgo.WithClientPort(s.port),
			sipgo.WithClientNAT(), sipgo.WithClientLogger(sipLog))
	}
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("sip: %w", err)
	}
	return s, nil
}

// Client sends the requests deferpush originates (the push INVITEs) and
// the ingress's in-dialog requests.
func (s *Stack) Client() *sipgo.Client { return s.client }

// Addr is the TCP listener's address.
func (s *Stack) Addr() net.Addr { return s.tcp.Addr() }

// Contact is our Contact URI: where in-dialog requests reach us.
func (s *Stack) Contact() string {
	return fmt.Sprintf("sip:deferpush@%s;transport=tcp", net.JoinHostPort(s.host, strconv.Itoa(s.port)))
}

// Route sends the requests deferpush serves to their handlers: BYEs of
// push sessions to the pusher's dialogs, and what the proxy relays for
// offline users (MESSAGE, session-mode INVITE and its ACK and BYE) to the
// ingress. What sipgo would otherwise answer on its own, in ways RFC 3261
// does not allow, is answered here: a request of another SIP version gets
// 505 (§8.2.2), a method deferpush does not serve 405 with Allow
// (§8.2.1), one it does not know 501 (§21.5.2), and a CANCEL matching no
// pending INVITE 481 (§9.2; one that matches is answered by sipgo's
// transaction layer before routing). Call it once, before Run.
func (s *Stack) Route(p Dialogs, in *Ingress) {
	allow := allowWithIngress
	if in.cfg.Trust.Off {
		allow = allowWithoutIngress
	}
	handle := func(method sip.RequestMethod, h sipgo.RequestHandler) {
		s.srv.OnRequest(method, s.sipVersion(s.requireNone(h)))
	}
	handle(sip.BYE, func(req *sip.Request, tx sip.ServerTransaction) {
		err := p.ReadBye(req, tx)
		if errors.Is(err, sipgo.ErrDialogDoesNotExists) || errors.Is(err, sipgo.ErrDialogOutsideDialog) {
			err = in.ReadBye(req, tx)
		}
		if errors.Is(err, sipgo.ErrDialogDoesNotExists) || errors.Is(err, sipgo.ErrDialogOutsideDialog) {
			respond(s.log, req, tx, plugin.OutcomeOf(plugin.ErrNoDialog, plugin.Policy{}), nil)
		}
	})
	handle(sip.MESSAGE, in.OnMessage)
	handle(sip.INVITE, func(req *sip.Request, tx sip.ServerTransaction) {
		// A re-INVITE (a To tag: inside a dialog, e.g. a session refresh)
		// is not a new session to store; deferpush changes nothing in its
		// short sessions, and a refused re-INVITE leaves the dialog as it
		// was (RFC 3261 §14.2). One whose dialog deferpush does not have
		// (ended, or never one of its own) gets 481 (§12.2.2).
		if to := req.To(); to != nil && to.Params.Has("tag") {
			err := plugin.ErrNotAcceptable
			if !p.HasDialog(req) && !in.HasDialog(req) {
				err = plugin.ErrNoDialog
			}
			respond(s.log, req, tx, plugin.OutcomeOf(err, plugin.Policy{}), nil)
			return
		}
		in.OnInvite(req, tx)
	})
	// An ACK confirms an ingress session; a stray one (after a non-2xx,
	// which the transaction layer absorbs) matches nothing and is ignored,
	// as RFC 3261 has no response to ACK.
	handle(sip.ACK, func(req *sip.Request, tx sip.ServerTransaction) { _ = in.ReadAck(req, tx) })
	// sipgo's transaction layer answers a CANCEL of a pending INVITE
	// itself (200, then 487 to the INVITE); what reaches here matches none.
	handle(sip.CANCEL, func(req *sip.Request, tx sip.ServerTransaction) {
		respond(s.log, req, tx, plugin.OutcomeOf(plugin.ErrNoDialog, plugin.Policy{}), nil)
	})
	// OPTIONS: what RFC 3261 §11.2 says an answer SHOULD carry — the
	// methods, the bodies taken (a MESSAGE's of any type, stored as it
	// is; an INVITE's SDP), no content coding, no extension.
	handle(sip.OPTIONS, func(req *sip.Request, tx sip.ServerTransaction) {
		res := sip.NewResponseFromRequest(req, 200, "OK", nil)
		res.AppendHeader(sip.NewHeader("Allow", allow))
		res.AppendHeader(sip.NewHeader("Accept", "application/sdp, */*"))
		res.AppendHeader(sip.NewHeader("Accept-Encoding", "identity"))
		res.AppendHeader(sip.NewHeader("Accept-Language", "en"))
		res.AppendHeader(sip.NewHeader("Supported", ""))
		_ = tx.Respond(res)
	})
	s.srv.OnNoRoute(s.sipVersion(func(req *sip.Request, tx sip.ServerTransaction) {
		o := plugin.Outcome{SIPCode: 501, SIPReason: "Not Implemented"}
		if knownMethod(req.Method) {
			o = plugin.Outcome{SIPCode: 405, SIPReason: "Method Not Allowed"}
		}
		respond(s.log, req, tx, o, nil, sip.NewHeader("Allow", allow))
	}))
}

// The methods the stack serves with the ingress on; allowWithoutIngress
// are those with it off.
const allowWithIngress = "INVITE, ACK, BYE, CANCEL, OPTIONS, MESSAGE"

// knownMethod reports whether m is a SIP method of the IETF's standards:
// deferpush serves some and answers the others 405 (RFC 3261 §21.4.6); a
// method not among them gets 501 (§21.5.2).
func knownMethod(m sip.RequestMethod) bool {
	switch m {
	case sip.INVITE, sip.ACK, sip.CANCEL, sip.BYE, sip.REGISTER, sip.OPTIONS, sip.SUBSCRIBE, sip.NOTIFY,
		sip.REFER, sip.INFO, sip.MESSAGE, sip.PRACK, sip.UPDATE, sip.PUBLISH:
		return true
	}
	return false
}

// requireNone answers a request that requires an extension (a Require
// header) 420 Bad Extension, listing them in Unsupported: deferpush
// supports none (RFC 3261 §8.2.2.3). An ACK or CANCEL is served whatever
// its Require says (§8.2.2.3: they must not be refused for it); a
// MESSAGE or INVITE is checked by the ingress, once its source is
// admitted (Ingress.OnMessage, OnInvite), so that a stranger hears 403.
func (s *Stack) requireNone(h sipgo.RequestHandler) sipgo.RequestHandler {
	return func(req *sip.Request, tx sip.ServerTransaction) {
		if req.IsAck() || req.IsCancel() || req.Method == sip.MESSAGE || req.Method == sip.INVITE {
			h(req, tx)
			return
		}
		if refuseExtensions(s.log, req, tx) {
			return
		}
		h(req, tx)
	}
}

// refuseExtensions answers req 420 Bad Extension when it has a Require
// header naming any option tag, and reports whether it did. Unsupported
// lists each tag once, at most maxUnsupported of them.
func refuseExtensions(log *slog.Logger, req *sip.Request, tx sip.ServerTransaction) bool {
	var tags []string
	for _, r := range req.GetHeaders("Require") {
		for tag := range strings.SplitSeq(r.Value(), ",") {
			if tag = strings.TrimSpace(tag); tag != "" && !slices.Contains(tags, tag) && len(tags) < maxUnsupported {
				tags = append(tags, tag)
			}
		}
	}
	if len(tags) == 0 {
		return false
	}
	res := sip.NewResponseFromRequest(req, 420, "Bad Extension", nil)
	res.AppendHeader(sip.NewHeader("Unsupported", strings.Join(tags, ", ")))
	if err := tx.Respond(res); err != nil {
		log.Warn("respond failed", "call_id", callID(req), "err", err)
	}
	return true
}

const maxUnsupported = 16

// sipVersion answers a request of another SIP version than 2.0 with 505
// Version Not Supported (RFC 3261 §8.2.2; an ACK gets nothing) and hands
// the others to h. sipgo's parser takes any version beginning "SIP".
func (s *Stack) sipVersion(h sipgo.RequestHandler) sipgo.RequestHandler {
	return func(req *sip.Request, tx sip.ServerTransaction) {
		if req.SipVersion == "SIP/2.0" {
			h(req, tx)
			return
		}
		if req.IsAck() {
			return
		}
		res := sip.NewResponseFromRequest(req, 505, "Version Not Supported", nil)
		res.SipVersion = "SIP/2.0"
		if err := tx.Respond(res); err != nil {
			s.log.Warn("respond failed", "call_id", callID(req), "err", err)
		}
	}
}

// Run serves both listeners until ctx ends, then closes the stack.
func (s *Stack) Run(ctx context.Context) error {
	errc := make(chan error, 2)
	go func() { errc <- s.srv.ServeTCP(s.tcp) }()
	go func() { errc <- s.srv.ServeUDP(s.udp) }()
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	s.Close()
	return err
}

// Close closes the listeners and the user agent; Run calls it.
func (s *Stack) Close() {
	s.tcp.Close()
	s.udp.Close()
	if s.srv != nil {
		s.srv.Close()
	}
	if s.ua != nil {
		s.ua.Close()
	}
}
