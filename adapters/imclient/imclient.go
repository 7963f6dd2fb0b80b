// Package imclient is deferpush's reference IM client: a SIP user agent
// (sipgo) with an MSRP endpoint (plugin/msrp) that registers through a
// proxy, answers deferpush's INVITE with an MSRP SDP answer, takes the
// SENDs, answers each (200 or a chosen error), decodes the encapsulation
// (plugin/encap) and reports what it received. It can also send: a SIP
// MESSAGE, or messages in an MSRP session, to a user who is offline.
//
// The end-to-end tests use it as the client; cmd/imclient runs it as a
// command so an operator can probe a deployment.
package imclient

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/deferpush/deferpush/plugin/encap"
	"github.com/deferpush/deferpush/plugin/guard"
	"github.com/deferpush/deferpush/plugin/msrp"
	"github.com/deferpush/deferpush/plugin/sdp"
)

// Config configures a Client. Zero values are documented per field.
type Config struct {
	// AOR is the user's address of record, e.g. sip:user2@example.com.
	// Required.
	AOR string
	// Proxy is host:port of the SIP proxy REGISTER and outgoing requests go
	// to. Empty: requests go to their Request-URI.
	Proxy string
	// Transport is "tcp" or "udp" for SIP. Empty means tcp.
	Transport string
	// Host is the loopback address to listen on. Empty means 127.0.0.1.
	Host string
	// AcceptTypes is a=accept-types of our answers. Nil means message/sip,
	// message/msrp, multipart/mixed, message/cpim and text/plain.
	AcceptTypes []string
	// AcceptWrappedTypes is a=accept-wrapped-types; nil leaves it out.
	AcceptWrappedTypes []string
	// Setup is our a=setup answer: "passive" (deferpush connects to us,
	// the RFC 4975 default) or "active" (we connect). Empty means passive.
	Setup string
	// InviteStatus is our final answer to an INVITE. Zero means 200. A
	// negative value means never answer finally (only 180 Ringing). A
	// client without MSRP (a pager-only softphone) answers 488 or 415.
	InviteStatus int
	// NoMSRPAnswer answers the INVITE 200 with the MSRP stream refused
	// (m=message port 0, RFC 3264): a client that took the call but not
	// MSRP.
	NoMSRPAnswer bool
	// MessageStatus chooses our final answer to the n-th received message
	// when it comes as a SIP MESSAGE (pager mode; n counts MSRP messages
	// too). Nil answers 200; a negative answer never answers.
	MessageStatus func(n int, req *sip.Request) int
	// Instance, when set, is the +sip.instance of our Contact in
	// REGISTER (RFC 5626), e.g. "<urn:uuid:...>".
	Instance string
	// NeverConnect with Setup "active": answer 200 but never open MSRP.
	NeverConnect bool
	// Answer chooses the MSRP answer to the n-th received message (from
	// 1, over the client's life): nil answers 200; a *msrp.StatusError
	// answers its code. Nil Answer answers 200 to everything.
	Answer func(n int, m *msrp.Message) error
	// DropAt closes the MSRP connection when the DropAt-th message arrives,
	// without answering it (the message counts as received, unconfirmed).
	// Zero never drops.
	DropAt int
	// OnEvent, when set, is called synchronously at each step of a push
	// session, before the client goes on, so that a test can inject a
	// fault (kill deferpush, pause Redis) at a precise point. A non-nil
	// error at EventMessage drops the connection without answering, as
	// DropAt does (in pager mode: leaves the MESSAGE unanswered); at the
	// other events it is ignored.
	OnEvent func(ev Event) error
	// PathAddr, when set, is the host:port put in our a=path instead of
	// the MSRP listener's: a relay in front of the listener, which routes
	// by session id alone. Empty: the listener's.
	PathAddr string
	// Relay, when set, is the MSRP relay (RFC 4976) the client sits
	// behind, e.g. msrp://192.0.2.5:2855;tcp. The client authenticates
	// to it (AUTH, answering its digest challenge with RelayUser and
	// RelayPassword) at the first INVITE and again whenever the relay's
	// connection went away or its authorisation ran out; it answers with
	// a=path = the relay's Use-Path then its own URI and a=setup:passive
	// (deferpush connects to the relay), receives through the relay, and
	// sends its success REPORTs back through it. Setup, PathAddr and the
	// MSRP listener play no part then.
	Relay                    string
	RelayUser, RelayPassword string
	// Delivered: after answering a pushed message (message/sip) whose
	// CPIM asks for positive-delivery (RFC 5438), send the "delivered"
	// notification back in the push session as message/cpim, as an RCS
	// client does; deferpush forwards it to the sender.
	Delivered bool
	// Logger; nil discards.
	Logger *slog.Logger
}

// EventKind names a step of a push session (Config.OnEvent).
type EventKind string

const (
	// EventInvite: an INVITE arrived; our final answer is not sent yet.
	EventInvite EventKind = "invite"
	// EventInviteAnswered: our 200 to the INVITE went out.
	EventInviteAnswered EventKind = "invite-answered"
	// EventAck: the ACK of our 200 arrived.
	EventAck EventKind = "ack"
	// EventMessage: the N-th message (from 1, over the client's life) is
	// complete, in an MSRP SEND or a SIP MESSAGE; it is not answered yet.
	EventMessage EventKind = "message"
	// EventBye: a BYE arrived; it is not answered yet.
	EventBye EventKind = "bye"
)

// Event is one step of a push session.
type Event struct {
	Kind EventKind
	// N is set for EventMessage, and Message for one in an MSRP SEND
	// (Request for one in a SIP MESSAGE).
	N       int
	Message *msrp.Message
	Request *sip.Request
}

// event calls Config.OnEvent, if set.
func (c *Client) event(ev Event) error {
	if c.cfg.OnEvent == nil {
		return nil
	}
	return c.cfg.OnEvent(ev)
}

// Received is one message the client took, decoded.
type Received struct {
	// Pager says it came as a SIP MESSAGE (pager mode): ContentType is
	// then message/sip and Body the whole request as received, so that
	// Decoded holds its Call-ID, From, To, Date, identity headers, and
	// its own Content-Type and body.
	Pager bool
	// OuterID is the Message-ID of the SEND that carried it ("" in pager
	// mode).
	OuterID string
	// CSeq is the CSeq number of the MESSAGE that carried it (pager mode).
	CSeq        uint32
	ContentType string
	Body        []byte
	// Decoded is Body unwrapped; DecodeErr says why not when it failed.
	Decoded   encap.Decoded
	DecodeErr error
	// Answered is the MSRP status we answered; 0 when we dropped it.
	Answered int
	// ReportAsked says that the SEND asked for a success REPORT (which
	// the client sends when it answers 200).
	ReportAsked bool
}

// Client is a running reference client.
type Client struct {
	cfg     Config
	log     *slog.Logger
	aor     sip.Uri
	ua      *sipgo.UserAgent
	srv     *sipgo.Server
	cli     *sipgo.Client
	dialogs *sipgo.DialogServerCache
	contact sip.ContactHeader
	sipAddr string
	msrpL   *msrp.Listener

	cancel context.CancelFunc
	wg     sync.WaitGroup
	// relayMu serialises the dialling of the relay between INVITEs.
	relayMu sync.Mutex

	mu       sync.Mutex
	received []Received
	n        int
	invites  int
	cancels  int
	byes     int
	acks     int
	sessions []*msrp.Session
	changed  chan struct{} // closed and replaced on every change
	relay    *msrp.Relay   // the authenticated relay connection, if any

	senderState // send.go

	lastInvite, lastBye *sip.Request
	lastAnswer          []byte
}

// LastInvite and LastBye return the last INVITE and BYE received (nil
// before the first), so a test can see the path they took.
func (c *Client) LastInvite() *sip.Request {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastInvite
}

func (c *Client) LastBye() *sip.Request {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastBye
}

// LastAnswer returns the SDP of the last 200 the client sent to an
// INVITE (nil before the first).
func (c *Client) LastAnswer() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastAnswer
}

// New starts a client listening for SIP (TCP and UDP) and MSRP on free
// loopback ports. Close stops it.
func New(cfg Config) (*Client, error) {
	if cfg.Transport == "" {
		cfg.Transport = "tcp"
	}
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	if cfg.AcceptTypes == nil {
		cfg.AcceptTypes = []string{encap.TypeSIP, encap.TypeMSRP, encap.TypeMultipart, encap.TypeCPIM, "text/plain"}
	}
	if cfg.Setup == "" {
		cfg.Setup = sdp.SetupPassive
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Client{cfg: cfg, log: cfg.Logger, changed: make(chan struct{})}
	if err := sip.ParseUri(cfg.AOR, &c.aor); err != nil {
		return nil, fmt.Errorf("imclient: AOR %q: %w", cfg.AOR, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	if err := c.start(ctx); err != nil {
		cancel()
		c.Close()
		return nil, err
	}
	return c, nil
}

func (c *Client) start(ctx context.Context) error {
	var err error
	c.ua, err = sipgo.NewUA(sipgo.WithUserAgent("deferpush-imclient"), sipgo.WithUserAgentHostname(c.cfg.Host))
	if err != nil {
		return err
	}
	c.srv, err = sipgo.NewServer(c.ua, sipgo.WithServerLogger(c.log))
	if err != nil {
		return err
	}
	tl, ul, err := guard.ListenTCPAndUDP(net.JoinHostPort(c.cfg.Host, "0"))
	if err != nil {
		return err
	}
	port := tl.Addr().(*net.TCPAddr).Port
	c.sipAddr = net.JoinHostPort(c.cfg.Host, strconv.Itoa(port))
	c.cli, err = sipgo.NewClient(c.ua, sipgo.WithClientHostname(c.cfg.Host), sipgo.WithClientLogger(c.log))
	if err != nil {
		return err
	}
	c.contact = sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: c.aor.User, Host: c.cfg.Host, Port: port,
		UriParams: sip.HeaderParams{{K: "transport", V: c.cfg.Transport}}}}
	c.dialogs = sipgo.NewDialogServerCache(c.cli, c.contact)
	c.srv.OnInvite(c.onInvite)
	c.srv.OnAck(c.onAck)
	c.srv.OnBye(c.onBye)
	// A CANCEL matching an INVITE is answered by sipgo's transaction layer
	// (counted in onInvite); one that matches none reaches this handler.
	c.srv.OnCancel(func(req *sip.Request, tx sip.ServerTransaction) {
		_ = tx.Respond(sip.NewResponseFromRequest(req, 481, "Call/Transaction Does Not Exist", nil))
	})
	c.srv.OnMessage(c.onMessage)
	c.srv.OnOptions(func(req *sip.Request, tx sip.ServerTransaction) {
		_ = tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
	})
	c.wg.Add(2)
	go func() { defer c.wg.Done(); _ = c.srv.ServeTCP(tl) }()
	go func() { defer c.wg.Done(); _ = c.srv.ServeUDP(ul) }()
	go func() { <-ctx.Done(); tl.Close(); ul.Close() }()

	c.msrpL, err = msrp.NewListener(msrp.ListenerConfig{Addr: net.JoinHostPort(c.cfg.Host, "0"), Host: c.cfg.Host, Logger: c.log})
	if err != nil {
		return err
	}
	c.wg.Add(1)
	go func() { defer c.wg.Done(); _ = c.msrpL.Run(ctx) }()
	return nil
}

// SIPAddr is host:port of the client's SIP listener (TCP and UDP).
func (c *Client) SIPAddr() string { return c.sipAddr }

// MSRPAddr is host:port of the client's MSRP listener.
func (c *Client) MSRPAddr() string {
	u := c.msrpL.URI()
	return net.JoinHostPort(u.Host, strconv.Itoa(u.Port))
}

// Contact is the client's Contact URI.
func (c *Client) Contact() string { return c.contact.Address.String() }

// Register sends REGISTER for the AOR with this Contact through the proxy
// and returns the final status code. expires 0 unregisters.
func (c *Client) Register(ctx context.Context, expires int) (int, error) {
	ruri := sip.Uri{Scheme: "sip", Host: c.aor.Host, Port: c.aor.Port}
	req := sip.NewRequest(sip.REGISTER, ruri)
	req.AppendHeader(&sip.ToHeader{Address: c.aor, Params: sip.NewParams()})
	from := &sip.FromHeader{Address: c.aor, Params: sip.NewParams()}
	from.Params.Add("tag", sip.GenerateTagN(10))
	req.AppendHeader(from)
	contact := sip.HeaderClone(&c.contact).(*sip.ContactHeader)
	if c.cfg.Instance != "" {
		if contact.Params == nil {
			contact.Params = sip.NewParams()
		}
		contact.Params.Add("+sip.instance", `"`+c.cfg.Instance+`"`)
	}
	req.AppendHeader(contact)
	req.AppendHeader(sip.NewHeader("Expires", strconv.Itoa(expires)))
	c.route(req)
	res, err := c.cli.Do(ctx, req, sipgo.ClientRequestRegisterBuild)
	if err != nil {
		return 0, fmt.Errorf("imclient: register: %w", err)
	}
	return res.StatusCode, nil
}

// route sends req to the proxy, over the configured transport.
func (c *Client) route(req *sip.Request) {
	req.SetTransport(strings.ToUpper(c.cfg.Transport))
	if c.cfg.Proxy != "" {
		req.SetDestination(c.cfg.Proxy)
	}
}

func (c *Client) onInvite(req *sip.Request, tx sip.ServerTransaction) {
	inv := req.Clone()
	c.bump(func() { c.invites++; c.lastInvite = inv })
	_ = c.event(Event{Kind: EventInvite})
	dlg, err := c.dialogs.ReadInvite(req, tx)
	if err != nil {
		_ = tx.Respond(sip.NewResponseFromRequest(req, 400, err.Error(), nil))
		return
	}
	if c.refuseInvite(dlg, tx) {
		return
	}
	offer, err := sdp.Parse(req.Body())
	if err != nil {
		_ = dlg.Respond(488, "Not Acceptable Here", nil)
		return
	}
	local := c.msrpL.URI()
	local.SessionID = msrp.NewSessionID()
	if c.cfg.Relay != "" {
		c.answerViaRelay(req, dlg, offer, local)
		return
	}
	ms, err := c.newSession(local, offer)
	if err == nil {
		err = c.answer(dlg, ms)
	}
	if err != nil {
		c.log.Warn("imclient: answer", "err", err)
		_ = dlg.Respond(500, err.Error(), nil) // fails when answered already
		return
	}
	_ = c.event(Event{Kind: EventInviteAnswered})
	if c.cfg.Setup == sdp.SetupActive && !c.cfg.NeverConnect {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := ms.Connect(ctx, offer.Path); err != nil {
				c.log.Warn("imclient: msrp connect", "err", err)
			}
		}()
	}
}

// refuseInvite answers the INVITE as Config says when it is not to be
// taken: never finally (InviteStatus < 0, until a CANCEL), with an error
// status, or with the MSRP stream refused (NoMSRPAnswer). It reports
// whether it answered.
func (c *Client) refuseInvite(dlg *sipgo.DialogServerSession, tx sip.ServerTransaction) bool {
	switch status := c.cfg.InviteStatus; {
	case status < 0:
		_ = dlg.Respond(180, "Ringing", nil)
		// sipgo's transaction layer answers a CANCEL itself (200, then 487
		// to the INVITE); the dialog ends with ErrTransactionCanceled.
		select {
		case <-dlg.Context().Done():
		case <-tx.Done():
		}
		if errors.Is(context.Cause(dlg.Context()), sip.ErrTransactionCanceled) || errors.Is(tx.Err(), sip.ErrTransactionCanceled) {
			c.bump(func() { c.cancels++ })
		}
		return true
	case status != 0 && status != 200:
		_ = dlg.Respond(status, "Refused by test client", nil)
		return true
	case c.cfg.NoMSRPAnswer:
		// The MSRP stream refused (port 0, RFC 3264 §6): nothing to use.
		refused := "v=0\r\no=- 1 1 IN IP4 " + c.cfg.Host + "\r\ns=-\r\nc=IN IP4 " + c.cfg.Host + "\r\nt=0 0\r\nm=message 0 TCP/MSRP *\r\n"
		_ = dlg.RespondSDP([]byte(refused))
		return true
	}
	return false
}

// newSession makes the MSRP session of an answer, at PathAddr when set,
// and registers it with the listener when the client is the passive side.
func (c *Client) newSession(local msrp.URI, offer sdp.Media) (*msrp.Session, error) {
	if c.cfg.PathAddr != "" {
		host, port, err := net.SplitHostPort(c.cfg.PathAddr)
		if err != nil {
			return nil, err
		}
		local.Host = host
		local.Port, _ = strconv.Atoi(port)
	}
	ms, err := msrp.NewSession(msrp.Config{Local: local, Handler: msrp.HandlerFunc(c.serveMSRP), Logger: c.log})
	if err != nil {
		return nil, err
	}
	if c.cfg.Setup == sdp.SetupPassive {
		if err := c.msrpL.Add(ms, offer.Path); err != nil {
			return nil, err
		}
	}
	c.mu.Lock()
	c.sessions = append(c.sessions, ms)
	c.mu.Unlock()
	return ms, nil
}

// answer sends the 200 with our SDP for ms.
func (c *Client) answer(dlg *sipgo.DialogServerSession, ms *msrp.Session) error {
	answer, err := sdp.Build(sdp.Media{Path: []msrp.URI{ms.URI()}, AcceptTypes: c.cfg.AcceptTypes,
		AcceptWrappedTypes: c.cfg.AcceptWrappedTypes, Setup: c.cfg.Setup})
	if err != nil {
		return err
	}
	c.bump(func() { c.lastAnswer = answer })
	return dlg.RespondSDP(answer)
}

// answerViaRelay answers an INVITE from behind the relay: the session
// receives through the relay's connection, and the answer's path is the
// relay's Use-Path followed by local.
func (c *Client) answerViaRelay(req *sip.Request, dlg *sipgo.DialogServerSession, offer sdp.Media, local msrp.URI) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rel, err := c.relayConn(ctx)
	if err != nil {
		c.log.Warn("imclient: msrp relay", "err", err)
		_ = dlg.Respond(500, "MSRP relay unavailable", nil)
		return
	}
	// Behind the relay the client is at its connection's address.
	local.Host, local.Port = rel.Local().Host, rel.Local().Port
	ms, err := msrp.NewSession(msrp.Config{Local: local, Handler: msrp.HandlerFunc(c.serveMSRP), Logger: c.log})
	if err != nil {
		_ = dlg.Respond(500, err.Error(), nil)
		return
	}
	if err := rel.Add(ms, offer.Path); err != nil {
		ms.Close()
		_ = dlg.Respond(500, err.Error(), nil)
		return
	}
	c.mu.Lock()
	c.sessions = append(c.sessions, ms)
	c.mu.Unlock()
	answer, err := sdp.Build(sdp.Media{Path: append(rel.Path(), local), AcceptTypes: c.cfg.AcceptTypes,
		AcceptWrappedTypes: c.cfg.AcceptWrappedTypes, Setup: sdp.SetupPassive})
	if err != nil {
		_ = dlg.Respond(500, err.Error(), nil)
		return
	}
	c.bump(func() { c.lastAnswer = answer })
	if err := dlg.RespondSDP(answer); err != nil {
		c.log.Warn("imclient: respond", "err", err)
		return
	}
	_ = c.event(Event{Kind: EventInviteAnswered})
}

// relayConn returns the client's authenticated connection to its relay,
// dialling and authenticating again when there is none, it went away or
// its authorisation runs out within a minute.
func (c *Client) relayConn(ctx context.Context) (*msrp.Relay, error) {
	c.relayMu.Lock()
	defer c.relayMu.Unlock()
	c.mu.Lock()
	rel := c.relay
	c.mu.Unlock()
	if rel != nil {
		select {
		case <-rel.Done():
		default:
			if exp := rel.Expires(); exp.IsZero() || time.Until(exp) > time.Minute {
				return rel, nil
			}
		}
		rel.Close()
	}
	uri, err := msrp.ParseURI(c.cfg.Relay)
	if err != nil {
		return nil, fmt.Errorf("imclient: relay: %w", err)
	}
	// Port 0: the client is known to the relay at the address of the
	// connection it opens (msrp.RelayConfig.Local).
	local := msrp.URI{Host: c.msrpL.URI().Host, Transport: "tcp", SessionID: msrp.NewSessionID()}
	rel, err = msrp.DialRelay(ctx, msrp.RelayConfig{URI: uri, Local: local, Username: c.cfg.RelayUser,
		Password: c.cfg.RelayPassword, Logger: c.log})
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.relay = rel
	c.mu.Unlock()
	return rel, nil
}

func (c *Client) onAck(req *sip.Request, tx sip.ServerTransaction) {
	c.bump(func() { c.acks++ })
	_ = c.event(Event{Kind: EventAck})
	_ = c.dialogs.ReadAck(req, tx) // a stray ACK (after a 486) matches no dialog
}

func (c *Client) onBye(req *sip.Request, tx sip.ServerTransaction) {
	_ = c.event(Event{Kind: EventBye})
	if err := c.dialogs.ReadBye(req, tx); err != nil {
		_ = tx.Respond(sip.NewResponseFromRequest(req, 481, "Call/Transaction Does Not Exist", nil))
		return
	}
	bye := req.Clone()
	c.bump(func() { c.byes++; c.lastBye = bye })
}

func (c *Client) serveMSRP(ctx context.Context, s *msrp.Session, m *msrp.Message) error {
	c.mu.Lock()
	c.n++
	n := c.n
	c.mu.Unlock()
	r := Received{OuterID: m.ID, ContentType: m.ContentType, Body: m.Body, ReportAsked: m.SuccessReport}
	r.Decoded, r.DecodeErr = encap.Decode(m.ContentType, m.Body)
	if c.cfg.DropAt == n || c.event(Event{Kind: EventMessage, N: n, Message: m}) != nil {
		c.bump(func() { c.received = append(c.received, r) })
		go s.Close()
		<-ctx.Done()
		return ctx.Err()
	}
	var err error
	if c.cfg.Answer != nil {
		err = c.cfg.Answer(n, m)
	}
	r.Answered = 200
	var se *msrp.StatusError
	if errors.As(err, &se) {
		r.Answered = se.Code
	}
	c.bump(func() { c.received = append(c.received, r) })
	if err == nil && c.cfg.Delivered && r.DecodeErr == nil && r.Decoded.Encapsulation == encap.TypeSIP {
		c.sendDelivered(s, m.Body)
	}
	return err
}

// sendDelivered sends, after our answer to it, the "delivered"
// notification of raw (a SIP MESSAGE) in session s, when raw asks for it.
func (c *Client) sendDelivered(s *msrp.Session, raw []byte) {
	r, _, err := encap.ReadIMDNRequest(raw)
	if err != nil || !r.PositiveDelivery || r.MessageID == "" || r.DateTime == "" || r.From == "" {
		return
	}
	ct, body := encap.BuildNotification(r, encap.Notification{Status: encap.IMDNDelivered, Recipient: c.cfg.AOR,
		MessageID: rand.Text()[:20], Now: time.Now()})
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Send(ctx, msrp.Message{ContentType: ct, Body: body}); err != nil {
			c.log.Warn("delivered notification not sent", "imdn_message_id", r.MessageID, "err", err)
		}
	}()
}

// onMessage takes a message in pager mode: a SIP MESSAGE, received as
// Received with the whole request as its message/sip body.
func (c *Client) onMessage(req *sip.Request, tx sip.ServerTransaction) {
	c.mu.Lock()
	c.n++
	n := c.n
	c.mu.Unlock()
	raw := []byte(req.String())
	r := Received{Pager: true, ContentType: encap.TypeSIP, Body: raw}
	if cs := req.CSeq(); cs != nil {
		r.CSeq = cs.SeqNo
	}
	r.Decoded, r.DecodeErr = encap.Decode(encap.TypeSIP, raw)
	status := 200
	if c.cfg.MessageStatus != nil {
		status = c.cfg.MessageStatus(n, req)
	}
	if c.event(Event{Kind: EventMessage, N: n, Request: req}) != nil {
		status = -1
	}
	if status < 0 {
		c.bump(func() { c.received = append(c.received, r) })
		return
	}
	r.Answered = status
	c.bump(func() { c.received = append(c.received, r) })
	reason := "OK"
	if status >= 300 {
		reason = "Refused by test client"
	}
	_ = tx.Respond(sip.NewResponseFromRequest(req, status, reason, nil))
}

// bump applies a change under the lock and wakes the waiters.
func (c *Client) bump(f func()) {
	c.mu.Lock()
	f()
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
}

// Stats counts what the client saw.
type Stats struct {
	Invites, Acks, Cancels, Byes int
	Received                     int
}

// Stats returns the counts so far.
func (c *Client) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Stats{Invites: c.invites, Acks: c.acks, Cancels: c.cancels, Byes: c.byes, Received: len(c.received)}
}

// Received returns the messages received so far, in arrival order.
func (c *Client) Received() []Received {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Received(nil), c.received...)
}

// Wait blocks until cond holds for the client's stats, or ctx ends.
func (c *Client) Wait(ctx context.Context, cond func(Stats) bool) (Stats, error) {
	for {
		c.mu.Lock()
		ch := c.changed
		c.mu.Unlock()
		st := c.Stats()
		if cond(st) {
			return st, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return st, ctx.Err()
		}
	}
}

// Close stops the client.
func (c *Client) Close() {
	if c.cancel != nil {
		c.cancel()
	}
	c.mu.Lock()
	sessions, rel := c.sessions, c.relay
	c.sessions, c.relay = nil, nil
	c.mu.Unlock()
	for _, s := range sessions {
		s.Close()
	}
	if rel != nil {
		rel.Close()
	}
	if c.srv != nil {
		c.srv.Close()
	}
	if c.ua != nil {
		c.ua.Close()
	}
	c.wg.Wait()
}
