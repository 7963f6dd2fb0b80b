package msrp

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Config configures a Session. The zero value of each field selects the
// default documented on it; Local.Host is the only required field.
type Config struct {
	// Local is this end's URI, the one put in a=path and From-Path. For a
	// session served by a Listener use the Listener's URI. An empty
	// SessionID is filled with NewSessionID; an empty Transport with "tcp".
	Local URI
	// Handler receives the messages the peer sends. Nil answers them 403.
	Handler Handler
	// Accept, when set, says whether the session takes a message of the
	// given Content-Type (its a=accept-types, RFC 4975 §8.6). A chunk of
	// another type is answered 415 at once, before it is reassembled or
	// the Handler sees it. Nil leaves every type to the Handler.
	Accept func(contentType string) bool
	// ChunkSize is the largest body of one SEND: 2048 octets. Chunks are
	// written whole with a known range end, which RFC 4975 §7.1.1 allows
	// only up to 2048 octets (a larger chunk must be interruptible): keep
	// it at most that.
	ChunkSize int
	// Window is the number of transactions that may await their response
	// at once (pipelining): 32.
	Window int
	// Timeout bounds the wait for a response or a success REPORT (a local
	// 408 after it) and each write: 30 s.
	Timeout time.Duration
	// MaxMessageSize bounds a received message; larger ones are answered
	// 413: 16 MiB.
	MaxMessageSize int64
	// MaxPartial bounds the messages being reassembled at once; a chunk of
	// one more is answered 413: 8.
	MaxPartial int
	// Limits bounds the frames read on a connection Connect opens
	// (connections a Listener accepts use the Listener's).
	Limits Limits
	// TLS configures msrps connections Connect opens. Nil uses the
	// system roots and the host of the remote URI.
	TLS *tls.Config
	// Logger receives debug and warning logs. Nil discards them.
	Logger *slog.Logger
}

// Session is one MSRP session: a local URI, the path to the peer and the
// connection it is bound to. It sends messages (Send) and receives them
// (Config.Handler) over the same connection, whichever side opened it.
type Session struct {
	cfg    Config
	local  URI
	log    *slog.Logger
	window chan struct{}
	// sending lets one message at a time put its chunks on the wire, so
	// that the peer reassembles one message at a time per session; the
	// answers of one message may still be awaited while the next goes.
	sending chan struct{}

	// base is the context handlers get: it ends when the session closes,
	// as http.Server.BaseContext does for requests.
	base     context.Context
	cancel   context.CancelFunc
	done     chan struct{}
	delivery chan delivery
	wg       sync.WaitGroup

	mu      sync.Mutex
	remote  []URI // To-Path of our requests
	conn    *conn
	bound   chan struct{} // closed once conn is set
	lostErr error         // why the connection went, for active sessions
	lis     *Listener
	// active is set for a session that connects itself (Connect) while a
	// Listener routes it the REPORTs a relay brings on connections of its
	// own (Listener.AddActive).
	active bool
	// relay is the client's relay connection the session is attached to
	// (Relay.Add); nil otherwise.
	relay    *Relay
	closed   bool
	reports  map[string]*reportWait
	partials map[string]*partial
	refused  []string // Message-IDs recently answered 413
	// hopIPs are the addresses of the first hop of remote, resolved when
	// the first relayed REPORT arrives.
	hopIPs []netip.Addr

	// dial replaces the network dial in tests (net.Pipe under synctest).
	dial func(ctx context.Context, addr string) (net.Conn, error)
}

// delivery is a reassembled message waiting for the handler.
type delivery struct {
	c    *conn
	last *Frame // the last chunk, answered once the handler returns
	m    *Message
}

// NewSession returns an unbound session. Bind it with Connect (active) or
// Listener.Add (passive).
func NewSession(cfg Config) (*Session, error) {
	if cfg.Local.Host == "" {
		return nil, errors.New("msrp: Config.Local has no host")
	}
	if cfg.Local.SessionID == "" {
		cfg.Local.SessionID = NewSessionID()
	}
	if cfg.Local.Transport == "" {
		cfg.Local.Transport = "tcp"
	}
	if cfg.ChunkSize <= 0 {
		cfg.ChunkSize = 2048
	}
	if cfg.Window <= 0 {
		cfg.Window = 32
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.MaxMessageSize <= 0 {
		cfg.MaxMessageSize = 16 << 20
	}
	if cfg.MaxPartial <= 0 {
		cfg.MaxPartial = 8
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Session{
		cfg:      cfg,
		local:    cfg.Local,
		log:      cfg.Logger,
		window:   make(chan struct{}, cfg.Window),
		sending:  make(chan struct{}, 1),
		done:     make(chan struct{}),
		delivery: make(chan delivery, cfg.Window),
		bound:    make(chan struct{}),
		reports:  make(map[string]*reportWait),
		partials: make(map[string]*partial),
	}
	s.base, s.cancel = context.WithCancel(context.Background())
	s.wg.Add(1)
	go s.deliverLoop()
	return s, nil
}

// URI returns the session's local URI.
func (s *Session) URI() URI { return s.local }

// Connect makes s the active side (RFC 4975 §5.4, RFC 6135): it connects to
// the first hop of remote, the peer's path from SDP, and binds the session
// with a bodiless SEND. It returns once that SEND is answered.
func (s *Session) Connect(ctx context.Context, remote []URI) error {
	if len(remote) == 0 {
		return errors.New("msrp: connect: empty path")
	}
	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		return ErrClosed
	case s.conn != nil || s.relay != nil || s.lis != nil && !s.active:
		s.mu.Unlock()
		return errors.New("msrp: connect: session already bound or listening")
	}
	s.remote = remote
	s.active = true
	s.mu.Unlock()

	nc, err := s.dialHop(ctx, remote[0])
	if err != nil {
		return fmt.Errorf("msrp: connect %s: %w", remote[0].Addr(), err)
	}
	c := newConn(nc, s.cfg.Limits, s.cfg.Timeout, s.log)
	c.self = s.local
	c.logSession = s.local.SessionID
	c.route = func(c *conn, f *Frame, to URI) (*Session, int) {
		if !to.Equal(s.local) {
			return nil, StatusNoSession
		}
		return s, 0
	}
	if code := s.attach(c, nil); code != 0 {
		nc.Close()
		if code == StatusSessionAlreadyBound {
			return errors.New("msrp: connect: session already bound")
		}
		return ErrClosed
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		c.readLoop()
	}()
	if err := s.bind(ctx, c); err != nil {
		c.close(err)
		return fmt.Errorf("msrp: connect: bind: %w", err)
	}
	return nil
}

// dialHop opens the TCP or TLS connection to the first hop of the path,
// within Config.Timeout: nothing moves while it connects, so it gets the
// timeout of any step without progress. Without it a path whose address
// drops SYNs (a client behind NAT or a firewall) holds the caller for the
// kernel's retries, about 2 minutes, and a peer that accepts and never
// answers the TLS handshake, for as long as it likes.
func (s *Session) dialHop(ctx context.Context, hop URI) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	d := &net.Dialer{}
	switch {
	case s.dial != nil:
		return s.dial(ctx, hop.Addr())
	case hop.Secure:
		cfg := s.cfg.TLS
		if cfg == nil {
			cfg = &tls.Config{ServerName: hop.Host}
		}
		td := &tls.Dialer{NetDialer: d, Config: cfg}
		return td.DialContext(ctx, "tcp", hop.Addr())
	}
	return d.DialContext(ctx, "tcp", hop.Addr())
}

// bind sends the bodiless SEND that binds the session to c (RFC 4975
// §5.4: whoever connects sends first) and waits for its answer. It has a
// Message-ID, as every SEND must, and Byte-Range 1-0/0: RFC 4975 §7.1.1
// lets a message in one chunk leave Byte-Range out, but strict receivers
// want it on every SEND.
func (s *Session) bind(ctx context.Context, c *conn) error {
	req := s.request("SEND", newIdent(), []Header{
		{HeaderMessageID, newIdent()},
		{HeaderByteRange, ByteRange{Start: 1, End: 0, Total: 0}.String()},
	})
	errc := make(chan error, 1)
	if err := c.request(req, func(err error) { errc <- err }); err != nil {
		return err
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-s.done:
		return ErrClosed
	}
}

// attach binds s to c: 0 on success, else the status to answer with. f is
// the binding request, nil on the active side.
func (s *Session) attach(c *conn, f *Frame) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return StatusNoSession
	case s.conn == c:
		return 0
	case s.conn != nil:
		return StatusSessionAlreadyBound
	case f != nil && s.active:
		// A session that connects itself is bound by its own connection
		// only; until it is, nobody else may claim it.
		return StatusNoSession
	}
	var from []URI
	if f != nil {
		from, _ = ParsePath(f.Value(HeaderFromPath)) // checked by the Reader
		if len(s.remote) > 0 && from[len(from)-1].SessionID != s.remote[len(s.remote)-1].SessionID {
			return StatusNoSession // not the peer the SDP named
		}
	}
	if !c.attach(s) {
		return StatusNoSession
	}
	if len(s.remote) == 0 && from != nil {
		s.remote = from // a passive session that took any peer answers along its path
	}
	s.conn = c
	s.lostErr = nil
	close(s.bound)
	return 0
}

// lost is called when s's connection closes. A passive session may be
// bound again by a new connection; an active one stays unusable.
func (s *Session) lost(c *conn, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != c {
		return
	}
	s.conn = nil
	s.bound = make(chan struct{})
	if s.lis == nil || s.active {
		s.lostErr = err
	}
	s.partials = make(map[string]*partial)
}

// LastProgress is when a transaction of ours last moved on the session's
// connection (a request written, a response to one read, a REPORT that
// completed a message); zero before it has one. What the peer sends of its
// own is not progress. A caller waiting on the session (for window room,
// for answers) gives up only when it stopped moving.
func (s *Session) LastProgress() time.Time {
	s.mu.Lock()
	c := s.conn
	s.mu.Unlock()
	if c == nil {
		return time.Time{}
	}
	return c.lastMoved()
}

// waitConn returns the bound connection, waiting for the peer to connect
// on a passive session.
func (s *Session) waitConn(ctx context.Context) (*conn, error) {
	for {
		s.mu.Lock()
		c, bound, lostErr, closed := s.conn, s.bound, s.lostErr, s.closed
		s.mu.Unlock()
		switch {
		case closed:
			return nil, ErrClosed
		case c != nil:
			return c, nil
		case lostErr != nil:
			return nil, lostErr
		}
		select {
		case <-bound:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-s.done:
			return nil, ErrClosed
		}
	}
}

// request builds a request of s with the standard header order.
func (s *Session) request(method, tid string, extra []Header) *Frame {
	s.mu.Lock()
	to := FormatPath(s.remote)
	s.mu.Unlock()
	h := make([]Header, 0, 2+len(extra))
	h = append(h, Header{HeaderToPath, to}, Header{HeaderFromPath, s.local.String()})
	return &Frame{TID: tid, Method: method, Header: append(h, extra...), Flag: FlagEnd}
}

// sendState tracks the chunks of one message in flight.
type sendState struct {
	mu          sync.Mutex
	outstanding int
	sentAll     bool
	err         error
	failed      chan struct{} // closed on the first failure
	idle        chan struct{} // closed when all is sent and answered
	stopped     chan struct{} // closed when the message was cut short
}

func (st *sendState) finish(err error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.outstanding--
	if err != nil {
		st.failLocked(err)
	}
	if st.sentAll && st.outstanding == 0 {
		close(st.idle)
	}
}

// stop records that the message ends before its last chunk, for cause.
func (st *sendState) stop(cause error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.failLocked(cause)
	close(st.stopped)
}

func (st *sendState) failLocked(err error) {
	if st.err == nil {
		st.err = err
		close(st.failed)
	}
}

// Send sends m in chunks of Config.ChunkSize, pipelined within the window,
// and returns once every chunk is answered 200 and, when m.SuccessReport is
// set, success REPORTs covering the whole of m have arrived: one for all
// of it, or several for its parts, in any order. A non-200 answer (413:
// the peer wants no more of it) stops the message: the rest is not sent,
// and the answer is returned as a *StatusError. So is a local 408 when no
// answer comes within Config.Timeout, and a failure REPORT. When the
// success REPORTs do not cover m within Config.Timeout after the last
// answer (none came, or they leave a gap), Send returns ErrNoReport. When
// ctx ends, the message is stopped the same way and ctx.Err() returned.
// On a passive session Send first waits for the peer to connect.
//
// Send is Start followed by its wait.
func (s *Session) Send(ctx context.Context, m Message) error {
	wait, err := s.Start(ctx, m)
	if err != nil {
		return err
	}
	return wait()
}

// Start puts m on the wire and returns without waiting for the answers:
// wait then blocks until m is acknowledged, with the results and errors of
// Send. Messages started one after another from one goroutine go on the
// wire in that order, whole (one message's chunks are never interleaved
// with another's), so a caller pipelines several messages by starting
// them in turn and waiting for each afterwards, in any order.
//
// Start returns once every chunk of m is written, or stopped after a
// non-200 answer to an early chunk, which wait then reports; it blocks
// while the window of outstanding transactions is full, and on a passive
// session until the peer connects. An error from Start means that nothing
// of m went on the wire: ctx ended first, the session closed or the
// connection failed, or m is invalid.
//
// ctx bounds the whole of m, wait included: when it ends, wait returns
// ctx.Err(). wait may be called more than once and returns the same
// result; it should be called at least once, as it also forgets the
// success REPORT m asked for.
func (s *Session) Start(ctx context.Context, m Message) (wait func() error, err error) {
	if m.ContentType == "" {
		return nil, errors.New("msrp: send: message has no content type")
	}
	if m.ID == "" {
		m.ID = newIdent()
	} else if !IsIdent(m.ID, 4) {
		return nil, fmt.Errorf("msrp: send: bad Message-ID %q", m.ID)
	}
	if err := ctx.Err(); err != nil {
		// Checked first: the selects below pick at random among ready
		// cases, and might write the message all the same.
		return nil, fmt.Errorf("msrp: send %s: %w", m.ID, err)
	}
	c, err := s.waitConn(ctx)
	if err != nil {
		return nil, fmt.Errorf("msrp: send %s: %w", m.ID, err)
	}
	report, forget := s.expectReport(m)
	st, err := s.writeChunks(ctx, c, m)
	if err != nil {
		forget()
		return nil, fmt.Errorf("msrp: send %s: %w", m.ID, err)
	}
	return sync.OnceValue(func() error {
		defer forget()
		if err := s.await(ctx, st, report); err != nil {
			return fmt.Errorf("msrp: send %s: %w", m.ID, err)
		}
		return nil
	}), nil
}

// expectReport registers the wait for m's success REPORT, when m asks for
// one; forget drops it.
func (s *Session) expectReport(m Message) (report *reportWait, forget func()) {
	if !m.SuccessReport {
		return nil, func() {}
	}
	report = &reportWait{ch: make(chan error, 1), size: int64(len(m.Body))}
	s.mu.Lock()
	s.reports[m.ID] = report
	s.mu.Unlock()
	return report, func() {
		s.mu.Lock()
		if s.reports[m.ID] == report {
			delete(s.reports, m.ID)
		}
		s.mu.Unlock()
	}
}

// await waits for the answers to a message's chunks and then, when one
// was asked for, its success REPORT (ErrNoReport after the timeout).
func (s *Session) await(ctx context.Context, st *sendState, report *reportWait) error {
	if err := s.awaitAnswers(ctx, st); err != nil {
		return err
	}
	if report == nil {
		return nil
	}
	t := time.NewTimer(s.cfg.Timeout)
	defer t.Stop()
	var err error
	select {
	case err = <-report.ch:
	case <-t.C:
		err = ErrNoReport
	case <-ctx.Done():
		err = ctx.Err()
	case <-s.done:
		err = ErrClosed
	}
	if err != nil {
		return fmt.Errorf("report: %w", err)
	}
	return nil
}

// writeChunks writes the chunks of m, each once the window has room, and
// returns the state their answers will complete. It returns an error only
// when no chunk was written. A failure answer to a written chunk stops the
// message: the rest is not sent, and the state carries the failure.
func (s *Session) writeChunks(ctx context.Context, c *conn, m Message) (*sendState, error) {
	st := &sendState{failed: make(chan struct{}), idle: make(chan struct{}), stopped: make(chan struct{})}
	total := int64(len(m.Body))
	size := int64(s.cfg.ChunkSize)
	var off int64
	select {
	case s.sending <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-s.done:
		return nil, ErrClosed
	}
	defer func() { <-s.sending }()
	// stop ends the message early: nil error when some chunk was written,
	// so that the caller's wait reports what happened. Chunks go out whole,
	// so there is no interrupted chunk to end with "#": the rest of the
	// message is simply not sent (RFC 4975 §7.1.1), and the receiver drops
	// what it holds of it after its own timeout.
	stop := func(cause error) (*sendState, error) {
		if off == 0 {
			return nil, cause
		}
		st.stop(cause)
		return st, nil
	}
	for first := true; first || off < total; first = false {
		if err := s.windowSlot(ctx, st); err != nil {
			return stop(err)
		}
		end := min(off+size, total)
		flag := byte(FlagMore)
		if end == total {
			flag = FlagEnd
		}
		f := s.chunk(m, off, end, total, flag)
		st.mu.Lock()
		st.outstanding++
		st.sentAll = flag == FlagEnd
		st.mu.Unlock()
		err := c.request(f, func(err error) {
			st.finish(err) // before the slot frees, so the loop sees the failure
			<-s.window
		})
		if err != nil {
			// The connection failed, and with it every transaction on
			// it: nothing more can go.
			return stop(err)
		}
		off = end
	}
	return st, nil
}

// windowSlot waits for room in the window for one more chunk; it returns
// why not when the message failed, ctx ended or the session closed.
func (s *Session) windowSlot(ctx context.Context, st *sendState) error {
	select {
	case s.window <- struct{}{}:
	case <-st.failed:
		return st.errNow()
	case <-ctx.Done():
		return ctx.Err()
	case <-s.done:
		return ErrClosed
	}
	select {
	case <-st.failed:
		<-s.window
		return st.errNow()
	default:
		return nil
	}
}

// awaitAnswers waits until every chunk written is answered, and returns
// the first failure.
func (s *Session) awaitAnswers(ctx context.Context, st *sendState) error {
	select {
	case <-st.idle:
	case <-st.stopped:
	case <-ctx.Done():
		return ctx.Err()
	case <-s.done:
		return ErrClosed
	}
	return st.errNow()
}

func (st *sendState) errNow() error {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.err
}

// chunk builds the SEND carrying m.Body[off:end].
func (s *Session) chunk(m Message, off, end, total int64, flag byte) *Frame {
	body := m.Body[off:end]
	h := []Header{
		{HeaderMessageID, m.ID},
		{HeaderByteRange, ByteRange{Start: off + 1, End: end, Total: total}.String()},
	}
	if m.SuccessReport {
		h = append(h, Header{HeaderSuccessReport, "yes"})
	}
	h = append(h, Header{HeaderContentType, m.ContentType})
	f := s.request("SEND", newTID(body), h)
	f.Body = body
	if f.Body == nil {
		f.Body = []byte{}
	}
	f.Flag = flag
	return f
}

// newTID returns a transaction id whose end-line does not occur in body
// (RFC 4975 §7.1).
func newTID(body []byte) string {
	for {
		tid := newIdent()
		if !bytes.Contains(body, []byte(endLinePrefix+tid)) {
			return tid
		}
	}
}

// onSend handles a SEND routed to s.
func (s *Session) onSend(c *conn, f *Frame) {
	id := f.Value(HeaderMessageID)
	if id == "" {
		// Every SEND has one, the bodiless one too (RFC 4975 §7.1.1).
		c.reply(s.local, f, StatusBadRequest, "no Message-ID")
		return
	}
	if f.Body == nil {
		// A bodiless SEND binds the session or keeps it alive.
		c.reply(s.local, f, StatusOK, "")
		return
	}
	n := int64(len(f.Body))
	br := ByteRange{Start: 1, End: n, Total: n}
	if v, ok := f.Get(HeaderByteRange); ok {
		br, _ = ParseByteRange(v) // checked by the Reader
	}
	// The end-line delimits the chunk; its Byte-Range must describe it
	// all the same (RFC 4975 §7.1.1), else the message is not what the
	// sender declared and a malformed request is answered 400 (§7.3):
	// a range end that is a number is the chunk's last octet (RFC 4975's
	// own §7.1 example, whose 23-octet body is counted 25, is refused
	// too), no chunk reaches past the total, and the last chunk ("$")
	// ends at it. An aborted chunk ("#") is dropped whatever it says.
	off := br.Start - 1
	if br.Total > s.cfg.MaxMessageSize || off+n > s.cfg.MaxMessageSize {
		s.refuse(c, f, id)
		return
	}
	// Checked after the size: a total we would never take is 413
	// whatever the chunk, so that the sender stops the whole message.
	if f.Flag != FlagAbort {
		if reason := rangeMismatch(br, off+n, f.Flag == FlagEnd); reason != "" {
			s.dropPartial(id)
			c.reply(s.local, f, StatusBadRequest, reason)
			return
		}
	}
	// Every chunk with a body names its type (RFC 4975 §7.1's
	// content-stuff); a later chunk that leaves it out was checked with
	// the first one.
	if ct := f.Value(HeaderContentType); s.cfg.Accept != nil && (ct != "" || off == 0) && !s.cfg.Accept(ct) {
		s.mu.Lock()
		delete(s.partials, id)
		s.mu.Unlock()
		c.reply(s.local, f, StatusUnsupportedMedia, "")
		return
	}
	switch m, verdict := s.reassemble(f, id, off, br.Total); verdict {
	case chunkBadTotal:
		c.reply(s.local, f, StatusBadRequest, "Byte-Range total differs from the first chunk's")
	case chunkRefused:
		c.reply(s.local, f, StatusStopSending, "")
	case chunkTooMany:
		s.refuse(c, f, id)
	case chunkComplete:
		s.deliver(c, f, m)
	default:
		c.reply(s.local, f, StatusOK, "")
	}
}

// What reassemble made of a chunk.
const (
	chunkTaken    = iota // kept; more chunks to come (or an abort): 200
	chunkComplete        // the message is whole: deliver it
	chunkRefused         // its message was refused before: 413 again
	chunkTooMany         // too many messages in reassembly: refuse it
	chunkBadTotal        // its total is not the message's: 400, message dropped
)

// rangeMismatch says why br does not describe a chunk whose body ends at
// the 0-based offset end ("" when it does); last is set for the chunk
// that ends the message.
func rangeMismatch(br ByteRange, end int64, last bool) string {
	switch {
	case last && br.Start == 1 && br.End == br.Total && br.Total == end+2:
		// A whole message in one chunk counted with the CRLF before its
		// end-line, as RFC 4975 §7.1's own example does (23 octets,
		// 1-25/25): the end-line delimits the body, which is whole.
		return ""
	case br.End >= 0 && br.End != end:
		return "Byte-Range end is not the chunk's"
	case br.Total >= 0 && end > br.Total:
		return "chunk reaches past the Byte-Range total"
	case br.Total >= 0 && last && end != br.Total:
		return "last chunk ends before the Byte-Range total"
	}
	return ""
}

// dropPartial forgets what was reassembled of message id.
func (s *Session) dropPartial(id string) {
	s.mu.Lock()
	delete(s.partials, id)
	s.mu.Unlock()
}

// reassemble adds the chunk f (at offset off of message id, whose total
// it says is total, -1 unknown) to its message, and returns the message
// when it is complete.
func (s *Session) reassemble(f *Frame, id string, off, total int64) (*Message, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if slices.Contains(s.refused, id) {
		return nil, chunkRefused
	}
	p := s.partials[id]
	switch {
	case f.Flag == FlagAbort:
		delete(s.partials, id)
		return nil, chunkTaken
	case p == nil && off == 0 && f.Flag == FlagEnd:
		// The whole message in one chunk (onSend checked that it ends at
		// the total): no reassembly.
		return &Message{ID: id, ContentType: f.Value(HeaderContentType), Body: f.Body}, chunkComplete
	case p == nil:
		if p = s.newPartial(id); p == nil {
			return nil, chunkTooMany
		}
	}
	// The total is the size of the whole message (RFC 4975 §7.1.1): it
	// cannot change from chunk to chunk; the first that names it fixes it.
	switch {
	case total < 0:
	case p.total < 0:
		p.total = total
	case total != p.total:
		delete(s.partials, id)
		return nil, chunkBadTotal
	}
	if p.contentType == "" {
		p.contentType = f.Value(HeaderContentType)
	}
	p.updated = time.Now()
	if p.held+int64(len(f.Body)) > s.cfg.MaxMessageSize {
		// Only chunks sent again over each other hold more than the
		// message may be.
		delete(s.partials, id)
		return nil, chunkTooMany
	}
	p.add(off, f.Body)
	if f.Flag == FlagEnd {
		p.last, p.lastEnd = true, off+int64(len(f.Body))
	}
	if !p.complete() {
		return nil, chunkTaken
	}
	delete(s.partials, id)
	return &Message{ID: id, ContentType: p.contentType, Body: p.body(p.lastEnd)}, chunkComplete
}

// newPartial starts the reassembly of message id, unless MaxPartial are in
// reassembly already (after forgetting those whose sender went quiet for a
// whole timeout). s.mu is held.
func (s *Session) newPartial(id string) *partial {
	if len(s.partials) >= s.cfg.MaxPartial {
		for pid, old := range s.partials {
			if time.Since(old.updated) > s.cfg.Timeout {
				delete(s.partials, pid)
			}
		}
	}
	if len(s.partials) >= s.cfg.MaxPartial {
		return nil
	}
	p := &partial{total: -1}
	s.partials[id] = p
	return p
}

// refuse answers 413 and remembers id so that its later chunks get 413 too.
func (s *Session) refuse(c *conn, f *Frame, id string) {
	s.mu.Lock()
	delete(s.partials, id)
	if len(s.refused) >= 2*s.cfg.MaxPartial {
		s.refused = s.refused[1:]
	}
	s.refused = append(s.refused, id)
	s.mu.Unlock()
	c.reply(s.local, f, StatusStopSending, "")
}

func (s *Session) deliver(c *conn, last *Frame, m *Message) {
	m.SuccessReport = strings.EqualFold(last.Value(HeaderSuccessReport), "yes")
	select {
	case s.delivery <- delivery{c: c, last: last, m: m}:
	case <-s.done:
	}
}

// deliverLoop hands complete messages to the handler one at a time, so
// that a slow handler never stalls the connection's reader for longer than
// the delivery queue takes to fill.
func (s *Session) deliverLoop() {
	defer s.wg.Done()
	for {
		// A closed session serves nothing more, even if messages are
		// queued: select alone would pick at random.
		select {
		case <-s.done:
			return
		default:
		}
		select {
		case d := <-s.delivery:
			s.serve(d)
		case <-s.done:
			return
		}
	}
}

func (s *Session) serve(d delivery) {
	code, comment := StatusForbidden, ""
	if s.cfg.Handler != nil {
		err := s.cfg.Handler.ServeMSRP(s.base, s, d.m)
		var se *StatusError
		switch {
		case err == nil:
			code = StatusOK
		case errors.As(err, &se):
			code, comment = se.Code, se.Comment
		}
	}
	d.c.reply(s.local, d.last, code, comment)
	if code != StatusOK || !d.m.SuccessReport {
		return
	}
	// The success REPORT goes back along the SEND's whole From-Path.
	n := len(d.m.Body)
	r := &Frame{
		TID:    newIdent(),
		Method: "REPORT",
		Header: []Header{
			{HeaderToPath, d.last.Value(HeaderFromPath)},
			{HeaderFromPath, s.local.String()},
			{HeaderMessageID, d.m.ID},
			{HeaderByteRange, ByteRange{Start: 1, End: int64(n), Total: int64(n)}.String()},
			{HeaderStatus, "000 200 OK"},
		},
		Flag: FlagEnd,
	}
	if err := d.c.write(r); err != nil {
		s.log.Debug("write report", "session", s.local.SessionID, "msg_id", d.m.ID, "err", err)
	}
}

// maxReportSpans bounds the separate ranges the success REPORTs of one
// message may leave confirmed at once. A receiver reporting per chunk, in
// order or not, leaves a few gaps at most (about the window); a relay that
// re-chunks a message may leave more. A REPORT that would leave one more
// is ignored, so that a peer sending many tiny ranges holds at most
// maxReportSpans spans per message (16 octets each).
const maxReportSpans = 256

// reportWait is a message in flight whose success REPORT is awaited.
type reportWait struct {
	ch   chan error // the outcome: nil for success, a *StatusError for failure
	size int64      // the message's size, which success REPORTs must cover
	// settled is set once the outcome went to ch: later REPORTs for the
	// message change nothing.
	settled atomic.Bool

	// mu guards covered: REPORTs for one message may come on the
	// session's connection and on a relay's at once.
	mu sync.Mutex
	// covered is what the success REPORTs so far confirm, 0-based, sorted,
	// merged (see touching).
	covered []span
}

// cover adds the octets of br, from a success REPORT, to what the
// message's success REPORTs confirm, and says whether they now cover it
// whole. It refuses a range that is not of this message (its total is
// not the message's size, or its end is unknown) and one that would leave
// more than maxReportSpans separate ranges: nothing is added, and reason
// says why.
func (w *reportWait) cover(br ByteRange) (whole bool, reason string) {
	if br.Total != w.size || br.End < 0 {
		// ParseByteRange checked the rest: 1 <= Start <= End+1 <= Total+1.
		return false, "Byte-Range total is not the message's size, or its end is unknown"
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if s := (span{br.Start - 1, br.End}); s.start < s.end {
		i, j := touching(w.covered, s)
		if len(w.covered)-(j-i) >= maxReportSpans {
			return false, "too many separate Byte-Ranges reported"
		}
		w.covered = mergeSpan(w.covered, i, j, s)
	}
	return w.size == 0 || len(w.covered) == 1 && w.covered[0].start == 0 && w.covered[0].end == w.size, ""
}

// onReport consumes a REPORT that arrived on c: it completes the Send
// waiting for it, if the REPORT checks out. REPORTs are never answered
// (RFC 4975 §7.1.2), whatever is wrong with them.
//
// A REPORT is routed by its To-Path, so it may come on the session's own
// connection or, when a relay on the session's path has no connection to
// us, on one the relay opened (RFC 4976 §6). What a REPORT must satisfy
// to count, beside naming this session in its To-Path:
//
//   - its Message-ID is a message of the session awaiting its success
//     REPORT (sent with Success-Report: yes, its REPORT not yet in);
//   - its Status parses; a success (2xx) has no Byte-Range, which
//     covers the whole message, or one whose total is N, the message's
//     size (a receiver may report each chunk or what it has so far, RFC
//     4975 §7.1.2);
//   - on another connection than the session's own (see relayed): the
//     session's path goes through a relay, the connection comes from an
//     address of that first hop, and the From-Path is the session's path,
//     hop by hop (RFC 4975 §6.1 comparison) — a failure REPORT may come
//     from a relay on it, so its From-Path may be a leading part of it.
//
// The message is confirmed once the success REPORTs that count cover
// 1..N between them, in whatever order, overlapping or not; a failure
// REPORT for any part of it fails it. Whatever fails a check confirms
// nothing: the message then stays unconfirmed until its own timeout.
func (s *Session) onReport(c *conn, f *Frame) {
	id := f.Value(HeaderMessageID)
	s.mu.Lock()
	w := s.reports[id]
	own := s.conn == c
	remote := s.remote
	s.mu.Unlock()
	if w == nil {
		s.log.Debug("report for no message in flight", "session", s.local.SessionID, "msg_id", id)
		return
	}
	code, comment, ok := parseStatus(f.Value(HeaderStatus))
	if !ok {
		s.log.Debug("bad report status", "session", s.local.SessionID, "msg_id", id)
		return
	}
	success := code >= 200 && code < 300
	if !own {
		if err := s.relayed(c, f, remote, success); err != nil {
			s.log.Warn("msrp report ignored", "session", s.local.SessionID, "msg_id", id, "remote", c.nc.RemoteAddr().String(), "reason", err.Error())
			return
		}
	}
	var err error
	done := true
	if !success {
		err = &StatusError{Code: code, Comment: comment}
	} else if v, has := f.Get(HeaderByteRange); has {
		// A success REPORT may cover one chunk, or the chunks received so
		// far (RFC 4975 §7.1.2): the message is delivered once those that
		// came cover it between them.
		reason := "bad Byte-Range"
		if br, berr := ParseByteRange(v); berr == nil {
			done, reason = w.cover(br)
		}
		if reason != "" {
			s.log.Debug("success report ignored", "session", s.local.SessionID, "msg_id", id, "byte_range", v, "size", w.size, "reason", reason)
			return
		}
	}
	if !own {
		// A relay's connection that brings good REPORTs, a part of a
		// message's or the whole, stays open while it does.
		c.bindBy = time.Now().Add(c.timeout)
	}
	if !done {
		s.log.Debug("success report for part of the message", "session", s.local.SessionID, "msg_id", id, "byte_range", f.Value(HeaderByteRange), "size", w.size)
		return
	}
	if w.settled.CompareAndSwap(false, true) {
		w.ch <- err // never blocks: the first outcome is the only one sent
		// Progress of ours, once per message however many REPORTs
		// repeat it.
		c.touch()
	}
}

// relayed checks a REPORT that came on c, a connection other than the
// session's own: it must come from the relay first on the session's
// path, along that path. remote is the session's path.
func (s *Session) relayed(c *conn, f *Frame, remote []URI, success bool) error {
	if len(remote) < 2 {
		return errors.New("another connection than the session's, and no relay on its path")
	}
	from, err := ParsePath(f.Value(HeaderFromPath))
	if err != nil || len(from) > len(remote) || success && len(from) != len(remote) {
		return fmt.Errorf("From-Path %s is not the session's path %s", f.Value(HeaderFromPath), FormatPath(remote))
	}
	for i, u := range from {
		if !u.Equal(remote[i]) {
			return fmt.Errorf("From-Path %s is not the session's path %s", f.Value(HeaderFromPath), FormatPath(remote))
		}
	}
	src, err := netip.ParseAddrPort(c.nc.RemoteAddr().String())
	if err != nil {
		return fmt.Errorf("source address: %w", err)
	}
	ips, err := s.firstHopIPs(remote[0])
	if err != nil {
		return err
	}
	if !slices.Contains(ips, src.Addr().Unmap()) {
		return fmt.Errorf("source %s is not the relay %s", src.Addr(), remote[0].Host)
	}
	return nil
}

// firstHopIPs returns the addresses of hop, the first of the session's
// path, resolving its name once.
func (s *Session) firstHopIPs(hop URI) ([]netip.Addr, error) {
	if ip, err := netip.ParseAddr(hop.Host); err == nil {
		return []netip.Addr{ip.Unmap()}, nil
	}
	s.mu.Lock()
	ips := s.hopIPs
	s.mu.Unlock()
	if ips != nil {
		return ips, nil
	}
	ctx, cancel := context.WithTimeout(s.base, min(s.cfg.Timeout, 5*time.Second))
	defer cancel()
	found, err := net.DefaultResolver.LookupNetIP(ctx, "ip", hop.Host)
	if err != nil {
		return nil, fmt.Errorf("resolve the relay %s: %w", hop.Host, err)
	}
	for i := range found {
		found[i] = found[i].Unmap()
	}
	s.mu.Lock()
	s.hopIPs = found
	s.mu.Unlock()
	return found, nil
}

// parseStatus parses a Status header: "000 200 OK" (namespace, code,
// optional comment).
func parseStatus(v string) (code int, comment string, ok bool) {
	ns, rest, found := strings.Cut(v, " ")
	if !found || len(ns) != 3 || !isDigits(ns) || len(rest) < 3 || !isDigits(rest[:3]) {
		return 0, "", false
	}
	if len(rest) > 3 && rest[3] != ' ' {
		return 0, "", false
	}
	code, _ = strconv.Atoi(rest[:3])
	if len(rest) > 4 {
		comment = rest[4:]
	}
	return code, comment, true
}

// Close ends the session: pending Sends fail with ErrClosed, the
// connection is closed unless another session still uses it, and Close
// returns once the handler and the goroutines of the session have
// returned. A Handler must not call Close of its own session.
func (s *Session) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	c, lis, relay := s.conn, s.lis, s.relay
	s.conn = nil
	s.mu.Unlock()
	close(s.done)
	s.cancel()
	if lis != nil {
		lis.remove(s)
	}
	if relay != nil {
		relay.remove(s)
	}
	if c != nil {
		c.detach(s)
	}
	s.wg.Wait()
	return nil
}
