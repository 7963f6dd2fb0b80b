package ingress

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/plugin/encap"
	"github.com/deferpush/deferpush/plugin/msrp"
	"github.com/deferpush/deferpush/plugin/sdp"
)

// Engine is what the ingress asks of the push engine (*plugin.Engine).
type Engine interface {
	// Store keeps a deferred message under the operator policy.
	Store(ctx context.Context, m *plugin.Message) error
	// Policy is the operator policy in force.
	Policy(ctx context.Context) (plugin.Policy, error)
}

var _ Engine = (*plugin.Engine)(nil)

// Config configures an Ingress.
type Config struct {
	// Engine stores the messages. Required.
	Engine Engine
	// Client answers INVITEs within dialogs. Required.
	Client *sipgo.Client
	// Contact is our Contact URI, where the sender's ACK and BYE reach us.
	// Required.
	Contact string
	// MSRP is the listener the senders of session-mode messages connect
	// to: its URI is the path we answer with. Required.
	MSRP *msrp.Listener
	// MaxMessageSize bounds one message received over MSRP (413 beyond).
	// Zero means msrp's default; the policy's max_message_size still
	// applies when it is stored.
	MaxMessageSize int64
	// Timeout bounds each store and MSRP response. Zero means 10 s.
	Timeout time.Duration
	// IdleTimeout ends (BYE) a session in which nothing arrived for this
	// long, so that a sender that never connects or never hangs up holds
	// nothing for ever. Zero means 5 minutes.
	IdleTimeout time.Duration
	// AORRules are the registrar's rules for comparing addresses of
	// record; the zero value folds the user part's case.
	AORRules plugin.AORRules
	// Trust says whom MESSAGE and INVITE are taken from; the zero value
	// takes them from anyone.
	Trust Trust
	// Logger; nil discards.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Ingress takes deferred messages that the proxy relays to deferpush's SIP
// listener because their recipient is offline: MESSAGE requests, and MSRP
// sessions opened by session-mode INVITEs. Route the requests of the SIP
// server to OnMessage, OnInvite, ReadAck and ReadBye.
type Ingress struct {
	cfg     Config
	log     *slog.Logger
	dialogs *sipgo.DialogServerCache

	merged *merged // the MESSAGE transactions going on (merged.go)

	mu       sync.Mutex
	sessions map[*msrp.Session]struct{}
	closed   bool
}

// New returns an Ingress.
func New(cfg Config) (*Ingress, error) {
	if cfg.Engine == nil || cfg.Client == nil || cfg.MSRP == nil || cfg.Contact == "" {
		return nil, errors.New("ingress: Engine, Client, Contact and MSRP are required")
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = 5 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	var contact sip.ContactHeader
	if err := sip.ParseUri(cfg.Contact, &contact.Address); err != nil {
		return nil, fmt.Errorf("ingress: contact %q: %w", cfg.Contact, err)
	}
	return &Ingress{
		cfg:      cfg,
		log:      cfg.Logger,
		dialogs:  sipgo.NewDialogServerCache(cfg.Client, contact),
		merged:   newMerged(),
		sessions: map[*msrp.Session]struct{}{},
	}, nil
}

// OnMessage stores a MESSAGE for an offline user and answers 202, or the
// reply OutcomeOf gives for the refusal.
//
// What is stored is the MESSAGE as sipgo re-serialises it (header order,
// values, Call-ID and body kept; compact names written in full and
// "Name: value" spacing), less the topmost Via when the request carries
// more than one: the proxy that relayed it (kamailio.cfg's STORE_VIA_SIP
// adds exactly one Via) is a hop of the store path, not of the message the
// sender sent. A request with a single Via came straight from its sender
// and keeps it.
func (in *Ingress) OnMessage(req *sip.Request, tx sip.ServerTransaction) {
	if retry, err := in.cfg.Trust.admit(req); err != nil {
		in.refuse(req, tx, retry, err)
		return
	}
	if refuseExtensions(in.log, req, tx) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), in.cfg.Timeout)
	defer cancel()
	// A MESSAGE with a To tag belongs to a dialog (RFC 3428 §4), and
	// deferpush has none that takes one: 481 (RFC 3261 §12.2.2), never a
	// deferred message of a dialog its recipient is not in.
	if to := req.To(); to != nil && to.Params.Has("tag") {
		in.reply(ctx, req, tx, fmt.Errorf("%w: a MESSAGE with a To tag", plugin.ErrNoDialog), "message")
		return
	}
	isMerged, done := in.merged.begin(req, in.cfg.Now())
	defer done()
	if isMerged {
		in.log.Info("deferred message refused", "call_id", callID(req), "status", "merged", "err", "a copy of a transaction going on (another Via branch)")
		respond(in.log, req, tx, plugin.Outcome{SIPCode: 482, SIPReason: "Loop Detected"}, nil)
		return
	}
	raw := []byte(req.String())
	if len(req.GetHeaders("Via")) > 1 {
		raw = dropTopVia(raw)
	}
	m, err := Deferred(raw, "", in.cfg.Now(), in.cfg.AORRules)
	if err == nil {
		err = in.cfg.Engine.Store(ctx, m)
	}
	in.reply(ctx, req, tx, err, "message")
}

// reply answers req with the outcome of err (nil: stored).
func (in *Ingress) reply(ctx context.Context, req *sip.Request, tx sip.ServerTransaction, err error, what string) {
	o := in.outcome(ctx, err)
	if err != nil {
		in.log.Info("deferred "+what+" refused", "call_id", callID(req), "status", o.Status, "err", err)
	}
	respond(in.log, req, tx, o, err)
}

// outcome is plugin.OutcomeOf under the policy in force.
func (in *Ingress) outcome(ctx context.Context, err error) plugin.Outcome {
	p, perr := in.cfg.Engine.Policy(ctx)
	if perr != nil {
		p = plugin.DefaultPolicy()
	}
	return plugin.OutcomeOf(err, p)
}

// respond answers req with o and the extra headers; a malformed or
// untrusted request, or an offer refused 488, also gets a Warning saying
// why.
func respond(log *slog.Logger, req *sip.Request, tx sip.ServerTransaction, o plugin.Outcome, err error, extra ...sip.Header) {
	res := sip.NewResponseFromRequest(req, o.SIPCode, o.SIPReason, nil)
	for _, h := range extra {
		res.AppendHeader(h)
	}
	switch o.Status {
	case plugin.StatusMalformed, plugin.StatusNotTrusted, plugin.StatusNotServed, plugin.StatusNotAcceptable:
		if err != nil {
			res.AppendHeader(sip.NewHeader("Warning", `399 deferpush "`+sanitize(err.Error())+`"`))
		}
	}
	if werr := tx.Respond(res); werr != nil {
		log.Warn("respond failed", "call_id", callID(req), "err", werr)
	}
}

// OnInvite answers a session-mode INVITE with an MSRP offer for an offline
// user: deferpush becomes the far end of the MSRP session and stores each
// message received in it.
func (in *Ingress) OnInvite(req *sip.Request, tx sip.ServerTransaction) {
	// sipgo's INVITE transaction reads the request from a goroutine of its
	// own (its 100 Trying after 200 ms): admit removes the secret from a
	// copy, the request everything below reads, as sipgo's dialogs do.
	req = req.Clone()
	if retry, err := in.cfg.Trust.admit(req); err != nil {
		in.refuse(req, tx, retry, err)
		return
	}
	if refuseExtensions(in.log, req, tx) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), in.cfg.Timeout)
	defer cancel()
	st, offer, err := in.newSessionStore(ctx, req)
	if errors.Is(err, plugin.ErrMediaType) {
		in.log.Info("deferred session refused", "call_id", callID(req), "status", plugin.StatusMediaType, "err", err)
		respond(in.log, req, tx, plugin.Outcome{SIPCode: 415, SIPReason: "Unsupported Media Type"}, err,
			sip.NewHeader("Accept", "application/sdp"))
		return
	}
	if err != nil {
		in.reply(ctx, req, tx, err, "session")
		return
	}
	dlg, err := in.dialogs.ReadInvite(req, tx)
	if err != nil {
		in.reply(ctx, req, tx, fmt.Errorf("%w: %v", plugin.ErrMalformed, err), "session")
		return
	}
	if err := in.answer(dlg, st, offer); err != nil {
		in.log.Warn("answer session invite", "call_id", st.callID, "err", err)
		o := in.outcome(ctx, err)
		_ = dlg.Respond(o.SIPCode, o.SIPReason, nil) // fails when already answered: closed all the same
		dlg.Close()
	}
}

// newSessionStore checks a session INVITE: an MSRP offer, a recipient,
// the head of the INVITE to store with each message, storing switched on.
func (in *Ingress) newSessionStore(ctx context.Context, req *sip.Request) (*sessionStore, sdp.Media, error) {
	// checkCSeq's rule, on what sipgo parsed (a number below 2^32; the
	// method is what follows the first blank, blanks and all).
	cs := req.CSeq()
	switch {
	case len(req.GetHeaders("CSeq")) != 1 || cs == nil:
		return nil, sdp.Media{}, fmt.Errorf("%w: not one CSeq header", plugin.ErrMalformed)
	case cs.SeqNo > 1<<31-1:
		return nil, sdp.Media{}, fmt.Errorf("%w: CSeq number %d is not 0 to 2147483647", plugin.ErrMalformed, cs.SeqNo)
	case strings.Trim(string(cs.MethodName), " \t") != string(req.Method):
		return nil, sdp.Media{}, fmt.Errorf("%w: the CSeq method is not INVITE", plugin.ErrMalformed)
	}
	// The offer is an application/sdp body (RFC 3261 §13.2.1); one of
	// another type is refused 415 with Accept (§8.2.3), whatever it holds.
	// An INVITE without a body (an offer awaited in the 2xx, which
	// deferpush does not make) is refused 488 by Parse below.
	if ct := req.ContentType(); len(req.Body()) > 0 && (ct == nil || !sdp.IsType(ct.Value())) {
		return nil, sdp.Media{}, fmt.Errorf("%w: the INVITE's body is not application/sdp", plugin.ErrMediaType)
	}
	offer, err := sdp.Parse(req.Body())
	if err != nil {
		return nil, offer, fmt.Errorf("%w: %v", plugin.ErrNotAcceptable, err)
	}
	// The answer's transport is the offer's (RFC 3264 §6): MSRP over TLS
	// only where the listener speaks it, plain MSRP only where it does not.
	if secure := in.cfg.MSRP.URI().Secure; offer.Path[len(offer.Path)-1].Secure != secure {
		return nil, offer, fmt.Errorf("%w: the offer's MSRP transport is not the listener's (TLS %v)", plugin.ErrNotAcceptable, secure)
	}
	if err := usableOffer(offer); err != nil {
		return nil, offer, err
	}
	aor, err := in.cfg.AORRules.Parse(req.Recipient.String())
	if err != nil || req.Recipient.User == "" {
		if to := req.To(); to != nil {
			aor, err = in.cfg.AORRules.Parse(to.Address.String())
		}
	}
	if err != nil {
		return nil, offer, fmt.Errorf("%w: no recipient: %v", plugin.ErrMalformed, err)
	}
	head, err := encap.SessionHead([]byte(req.String()), in.cfg.Now())
	if err != nil {
		return nil, offer, fmt.Errorf("%w: %v", plugin.ErrMalformed, err)
	}
	p, err := in.cfg.Engine.Policy(ctx)
	if err != nil {
		return nil, offer, err
	}
	if !p.StoreEnabled {
		return nil, offer, plugin.ErrStoreDisabled
	}
	sender := ""
	if from := req.From(); from != nil {
		sender = from.Address.String()
	}
	// A message body past the policy's max_message_size could never be
	// stored (its stored form is larger still): 413 at its first chunk.
	limit := int64(p.MaxMessageSize)
	if in.cfg.MaxMessageSize > 0 {
		limit = min(limit, in.cfg.MaxMessageSize)
	}
	return &sessionStore{in: in, aor: aor, sender: sender, callID: callID(req), head: head, limit: limit}, offer, nil
}

// usableOffer refuses (plugin.ErrNotAcceptable, saying why) an MSRP offer
// that carries no message to deferpush now. deferpush takes no re-INVITE
// (one is answered 488), so a session that carries nothing now never
// will: answering it would only hold a session until IdleTimeout. That
// is an offer that holds the connection back (a=setup:holdconn, RFC 4145
// §4: the answer could only be holdconn), an inactive stream (RFC 3264
// §6.1: the answer could only be inactive) and a recvonly one (§5.1: the
// offerer only receives, and deferpush sends nothing in these sessions).
// A sendonly offer, the offerer only sending, is what deferpush wants:
// answered recvonly (§6.1).
func usableOffer(offer sdp.Media) error {
	switch {
	case offer.Setup == sdp.SetupHoldConn:
		return fmt.Errorf("%w: a=setup:holdconn opens no MSRP connection, and deferpush takes no re-INVITE to open one later", plugin.ErrNotAcceptable)
	case offer.Direction == sdp.Inactive:
		return fmt.Errorf("%w: an inactive MSRP stream carries no message, and deferpush takes no re-INVITE to resume it", plugin.ErrNotAcceptable)
	case offer.Direction == sdp.RecvOnly:
		return fmt.Errorf("%w: a recvonly MSRP stream sends deferpush no message to store", plugin.ErrNotAcceptable)
	}
	return nil
}

// answer opens the MSRP session of st and answers the INVITE with it; the
// session ends with the dialog, or after IdleTimeout without a message.
func (in *Ingress) answer(dlg *sipgo.DialogServerSession, st *sessionStore, offer sdp.Media) error {
	// Set before the session exists, so its handler always finds it.
	st.idle = time.AfterFunc(in.cfg.IdleTimeout, st.expire)
	ms, setup, err := in.openMSRP(st, offer)
	if err != nil {
		st.idle.Stop()
		return err
	}
	st.setEnd(func() {
		in.log.Info("deferred session idle; ending it", "aor", st.aor, "call_id", st.callID)
		bctx, cancel := context.WithTimeout(context.Background(), in.cfg.Timeout)
		defer cancel()
		_ = dlg.Bye(bctx) // fails when the sender never ACKed: closed all the same
		in.untrack(ms)
		dlg.Close()
	})
	media := sdp.Media{Path: []msrp.URI{ms.URI()}, AcceptTypes: []string{"*"}, Setup: setup}
	if offer.Direction == sdp.SendOnly {
		media.Direction = sdp.RecvOnly // RFC 3264 §6.1: recvonly or inactive
	}
	answer, err := sdp.Answer(dlg.InviteRequest.Body(), media)
	if err == nil {
		err = dlg.RespondSDP(answer)
	}
	if err != nil {
		st.idle.Stop()
		in.untrack(ms)
		return err
	}
	in.log.Info("deferred session opened", "aor", st.aor, "call_id", st.callID)
	// The session ends with the dialog: a BYE from either side, or the
	// dialog's failure (no ACK).
	context.AfterFunc(dlg.Context(), func() {
		st.idle.Stop()
		in.untrack(ms)
		dlg.Close()
		in.log.Info("deferred session ended", "aor", st.aor, "call_id", st.callID)
	})
	if setup == sdp.SetupActive {
		go func() {
			cctx, cancel := context.WithTimeout(dlg.Context(), in.cfg.Timeout)
			defer cancel()
			if err := ms.Connect(cctx, offer.Path); err != nil {
				in.log.Warn("connect to session sender", "call_id", st.callID, "err", err)
			}
		}()
	}
	return nil
}

// openMSRP creates the session that stores into st and registers it with
// the listener unless deferpush is the side that connects (the offer asked
// to be passive). It returns the setup role of our answer.
func (in *Ingress) openMSRP(st *sessionStore, offer sdp.Media) (*msrp.Session, string, error) {
	local := in.cfg.MSRP.URI()
	local.SessionID = msrp.NewSessionID()
	ms, err := msrp.NewSession(msrp.Config{
		Local: local, Handler: st, MaxMessageSize: st.limit,
		Timeout: in.cfg.Timeout, Logger: in.log,
	})
	if err != nil {
		return nil, "", err
	}
	// The offerer connects unless it asked to be the passive side.
	setup := sdp.SetupPassive
	if offer.Setup == sdp.SetupPassive {
		setup = sdp.SetupActive
	} else if err := in.cfg.MSRP.Add(ms, offer.Path); err != nil {
		ms.Close()
		return nil, "", err
	}
	if !in.track(ms) {
		ms.Close()
		return nil, "", fmt.Errorf("%w: shutting down", plugin.ErrUnavailable)
	}
	return ms, setup, nil
}

// ReadAck takes the ACK of a session INVITE we answered.
func (in *Ingress) ReadAck(req *sip.Request, tx sip.ServerTransaction) error {
	return in.dialogs.ReadAck(req, tx)
}

// ReadBye answers the BYE ending a session we answered; it returns
// sipgo.ErrDialogDoesNotExists when the BYE is for no such session.
func (in *Ingress) ReadBye(req *sip.Request, tx sip.ServerTransaction) error {
	return in.dialogs.ReadBye(req, tx)
}

// HasDialog reports whether req belongs to a session we answered that
// has not ended.
func (in *Ingress) HasDialog(req *sip.Request) bool {
	_, err := in.dialogs.MatchDialogRequest(req)
	return err == nil
}

// Close ends every open session; their unfinished messages are lost to us
// (the sender got no 200 for them).
func (in *Ingress) Close() {
	in.mu.Lock()
	in.closed = true
	ss := in.sessions
	in.sessions = map[*msrp.Session]struct{}{}
	in.mu.Unlock()
	for s := range ss {
		s.Close()
	}
}

func (in *Ingress) track(s *msrp.Session) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.closed {
		return false
	}
	in.sessions[s] = struct{}{}
	return true
}

func (in *Ingress) untrack(s *msrp.Session) {
	in.mu.Lock()
	delete(in.sessions, s)
	in.mu.Unlock()
	s.Close()
}

// maxStoredIDs bounds the Message-IDs one session remembers as stored:
// a sender resends a message whose 200 it did not get at once, not after
// thousands more (each at most 32 octets: about 200 KiB at the bound).
const maxStoredIDs = 4096

// sessionStore stores each message of one MSRP session.
type sessionStore struct {
	in     *Ingress
	aor    plugin.AOR
	sender string
	callID string
	head   []byte
	limit  int64       // the largest message body taken (413 past it, at its first chunk)
	idle   *time.Timer // ends the session when nothing arrives

	mu  sync.Mutex
	end func() // what idle does, once the session is answered
	// stored holds the Message-IDs of the messages stored in this
	// session, the last maxStoredIDs of them; storedOrder lists them
	// oldest first, to forget the oldest at the bound.
	stored      map[string]struct{}
	storedOrder []string
}

// wasStored reports whether the message id was stored in this session.
func (s *sessionStore) wasStored(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.stored[id]
	return ok
}

// markStored remembers that the message id was stored, forgetting the
// oldest id at maxStoredIDs.
func (s *sessionStore) markStored(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stored == nil {
		s.stored = make(map[string]struct{})
	}
	if len(s.storedOrder) >= maxStoredIDs {
		delete(s.stored, s.storedOrder[0])
		s.storedOrder = s.storedOrder[1:]
	}
	s.stored[id] = struct{}{}
	s.storedOrder = append(s.storedOrder, id)
}

func (s *sessionStore) setEnd(f func()) {
	s.mu.Lock()
	s.end = f
	s.mu.Unlock()
}

func (s *sessionStore) expire() {
	s.mu.Lock()
	end := s.end
	s.mu.Unlock()
	if end != nil {
		end()
	}
}

var _ msrp.Handler = (*sessionStore)(nil)

// ServeMSRP stores one complete message; the 200 goes out only once it is
// stored. A refusal is answered with the MSRP status plugin.OutcomeOf
// gives it.
//
// A Message-ID names one message within its session (RFC 4975 §7.1.1): a
// message whose id was stored in this session already (a sender that
// sends it again because the 200 was lost) is answered 200 again and not
// stored twice. Only stored ids count: a message refused (mailbox full,
// store down) may be sent again and stored then. msrp calls ServeMSRP
// for one message at a time per session, so the check and the store
// cannot interleave with the same message's resending.
func (s *sessionStore) ServeMSRP(ctx context.Context, _ *msrp.Session, m *msrp.Message) error {
	s.idle.Reset(s.in.cfg.IdleTimeout)
	if len(m.Body) == 0 {
		return nil // the binding SEND, or an empty keep-alive
	}
	if s.wasStored(m.ID) {
		s.in.log.Info("session message already stored", "aor", s.aor, "call_id", s.callID, "msg_id", m.ID)
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.in.cfg.Timeout)
	defer cancel()
	err := s.store(ctx, m)
	if err == nil {
		s.markStored(m.ID)
		return nil
	}
	o := s.in.outcome(ctx, err)
	s.in.log.Info("session message refused", "aor", s.aor, "call_id", s.callID, "msg_id", m.ID, "status", o.Status, "err", err)
	return msrp.Status(o.MSRP)
}

func (s *sessionStore) store(ctx context.Context, m *msrp.Message) error {
	now := s.in.cfg.Now()
	raw, err := encap.StoredSEND(msrp.NewSessionID(), m.ID, m.ContentType, m.Body, now)
	if err != nil {
		return fmt.Errorf("%w: %v", plugin.ErrMalformed, err)
	}
	return s.in.cfg.Engine.Store(ctx, &plugin.Message{
		Recipient:   s.aor,
		Sender:      s.sender,
		Received:    now,
		Kind:        plugin.KindMSRPSession,
		Raw:         raw,
		Invite:      s.head,
		CallID:      s.callID,
		MessageID:   m.ID,
		ContentType: m.ContentType,
	})
}

func callID(req *sip.Request) string {
	if h := req.CallID(); h != nil {
		return h.Value()
	}
	return ""
}

// sanitize keeps a reason printable inside a quoted Warning text.
func sanitize(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c < 0x20 || c == '"' || c == '\\' || c >= 0x7f {
			b[i] = ' '
		}
	}
	if len(b) > 200 {
		b = b[:200]
	}
	return string(b)
}
