package msrp

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// conn is one TCP or TLS connection and the sessions bound to it. One
// goroutine reads it (readLoop); any goroutine writes whole frames.
//
// Its deadlines follow the progress of our own transactions: a
// transaction times out only when none of ours has moved for timeout — no
// request of ours written, no response to one read — not a fixed time
// after the request, so a slow link that keeps moving (a large message
// at a few KB/s, the chunks of a pipeline queued behind each other) is
// waited for, and a peer that stops is given up on after timeout. What
// the peer sends of its own (requests, their bytes as they trickle in,
// REPORTs for nothing in flight) is no progress of ours: a peer that
// stops answering and keeps sending is given up on all the same.
type conn struct {
	nc  net.Conn
	r   *Reader
	log *slog.Logger // see debug
	// warnedResponse: an unreadable response was logged (readLoop only).
	warnedResponse bool
	// logSession is the session id its records name, for a connection a
	// session opened (Connect).
	logSession string
	timeout    time.Duration // write deadline and idle time before a local 408
	// moved is when a transaction of ours last moved (UnixNano): a
	// request of ours written, a response to one read (see touch).
	moved atomic.Int64
	// route finds the session a request is for, named by to, the one URI
	// of its To-Path: a status other than 0 is the answer to give instead
	// (481, 506). A session matches only when to equals its URI (RFC 4975
	// §6.1 comparison), not by session id alone.
	route func(c *conn, f *Frame, to URI) (*Session, int)
	// self is this end's URI, the From-Path of answers to requests whose
	// To-Path names no session of the connection and does not parse.
	self URI
	// bindBy, when set, closes the connection if no session is bound to
	// it by then (connections a Listener accepts): a peer cannot keep an
	// unbound connection open by trickling frames. Only readLoop's
	// goroutine touches it (a relay's REPORTs push it back).
	bindBy time.Time
	// keep leaves the connection open when its last session leaves it: a
	// client's connection to its relay outlives its sessions.
	keep bool

	wmu sync.Mutex
	w   *Writer

	mu       sync.Mutex
	txns     map[string]*txn
	sessions map[*Session]struct{}
	err      error // set when closed
	// werr is set when a write failed: nothing more is written, and the
	// connection closes once the reader has taken what the peer sent
	// before it went (see writeFailed).
	werr error
	done chan struct{}
}

// drainGrace bounds how long a connection whose write failed waits for
// its reader to reach the end of what the peer sent.
const drainGrace = 500 * time.Millisecond

// txn is a request waiting for its response.
type txn struct {
	timer *time.Timer
	done  func(error)
	// resp, when set, gets the response frame before done is called.
	resp func(*Frame)
}

func newConn(nc net.Conn, lim Limits, timeout time.Duration, log *slog.Logger) *conn {
	c := &conn{
		nc:       nc,
		w:        NewWriter(nc),
		log:      log,
		timeout:  timeout,
		txns:     make(map[string]*txn),
		sessions: make(map[*Session]struct{}),
		done:     make(chan struct{}),
	}
	c.r = NewReader(nc, lim)
	c.touch()
	return c
}

// debug logs at debug level with the connection's remote address (and
// its session's id): built only for a record that is logged, rather than
// with Logger.With for every connection, which a JSON handler formats at
// once, records or not.
func (c *conn) debug(msg string, args ...any) {
	if !c.log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	attrs := []any{"remote", c.nc.RemoteAddr().String()}
	if c.logSession != "" {
		attrs = append(attrs, "session", c.logSession)
	}
	c.log.Debug(msg, append(attrs, args...)...)
}

// touch records progress of our transactions now. It is called for a
// request of ours written whole, a response that completes one of ours
// and a REPORT that completes a message of ours: each happens once per
// transaction or message, so a peer cannot make progress out of nothing
// by repeating itself. Bytes the peer sends are not progress in
// themselves: a request of its own that trickles in a byte at a time
// would otherwise hold our transactions open for as long as it trickles
// (PROBE5 F3), and the response a transaction waits for is read only
// after it, frames never interleaving.
func (c *conn) touch() { c.moved.Store(time.Now().UnixNano()) }

// lastMoved is when a transaction of ours last moved.
func (c *conn) lastMoved() time.Time { return time.Unix(0, c.moved.Load()) }

// write writes one frame; a failed write closes the connection.
func (c *conn) write(f *Frame) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	select {
	case <-c.done:
		return c.closedErr()
	default:
	}
	c.mu.Lock()
	werr := c.werr
	c.mu.Unlock()
	if werr != nil {
		return werr
	}
	c.nc.SetWriteDeadline(time.Now().Add(c.timeout))
	if err := c.w.WriteFrame(f); err != nil {
		return c.writeFailed(fmt.Errorf("msrp: write: %w", err))
	}
	return nil
}

// writeFailed stops c's writes after a failed one, and returns err. The
// connection is not closed at once: a peer that answered some SENDs and
// then went (a client that closed after its 200s, its socket reset by
// our next write) left those answers in our receive buffer, and they
// confirm messages. The reader takes them and closes the connection at
// the end of the stream; a peer that sends nothing more is closed on
// after drainGrace. The transactions still waiting then fail with err.
func (c *conn) writeFailed(err error) error {
	c.mu.Lock()
	if c.werr == nil && c.err == nil {
		c.werr = err
		time.AfterFunc(drainGrace, func() { c.close(err) })
	}
	c.mu.Unlock()
	return err
}

// request registers a transaction for f and writes f. done is called
// exactly once: with nil for a 2xx response, a *StatusError for another
// response or a local 408, or the connection's error.
func (c *conn) request(f *Frame, done func(error)) error {
	return c.requestResp(f, nil, done)
}

// requestResp is request that also hands the response frame, when one
// comes, to resp.
func (c *conn) requestResp(f *Frame, resp func(*Frame), done func(error)) error {
	t := &txn{done: done, resp: resp}
	c.mu.Lock()
	if err := cmp.Or(c.err, c.werr); err != nil {
		c.mu.Unlock()
		done(err)
		return err
	}
	c.txns[f.TID] = t
	tid := f.TID
	t.timer = time.AfterFunc(c.timeout, func() { c.expire(tid) })
	c.mu.Unlock()
	if err := c.write(f); err != nil {
		c.complete(tid, nil, err)
		return err
	}
	c.touch()
	return nil
}

// expire times out transaction tid with a local 408 when no transaction
// of ours has moved for timeout; while ours still move, it waits again.
func (c *conn) expire(tid string) {
	c.mu.Lock()
	t := c.txns[tid]
	if t != nil {
		if idle := time.Since(c.lastMoved()); idle < c.timeout {
			t.timer.Reset(c.timeout - idle)
			c.mu.Unlock()
			return
		}
	}
	c.mu.Unlock()
	c.complete(tid, nil, Status(StatusTimeout))
}

// complete ends the transaction tid, if it is still waiting; resp is
// the response that ends it, nil for a local failure. A second response
// to one transaction (a relay and the far end both answering) finds
// nothing and is dropped.
func (c *conn) complete(tid string, resp *Frame, err error) bool {
	c.mu.Lock()
	t := c.txns[tid]
	delete(c.txns, tid)
	c.mu.Unlock()
	if t == nil {
		return false
	}
	if resp != nil {
		c.touch()
	}
	t.timer.Stop()
	if t.resp != nil && resp != nil {
		t.resp(resp)
	}
	t.done(err)
	return true
}

func (c *conn) closedErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		return ErrClosed
	}
	return c.err
}

// close closes the connection once, fails its transactions and tells its
// sessions.
func (c *conn) close(cause error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	if cause == nil {
		cause = ErrClosed
	}
	c.err = cause
	txns := c.txns
	c.txns = nil
	sessions := c.sessions
	c.sessions = nil
	c.mu.Unlock()
	close(c.done)
	c.nc.Close()
	for _, t := range txns {
		t.timer.Stop()
		t.done(cause)
	}
	for s := range sessions {
		s.lost(c, cause)
	}
}

// attach records that s is bound to c.
func (c *conn) attach(s *Session) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return false
	}
	c.sessions[s] = struct{}{}
	return true
}

// detach forgets s and closes the connection when no session is left.
func (c *conn) detach(s *Session) {
	c.mu.Lock()
	delete(c.sessions, s)
	empty := len(c.sessions) == 0 && c.err == nil && !c.keep
	c.mu.Unlock()
	if empty {
		c.close(ErrClosed)
	}
}

// readLoop reads frames until the connection fails or closes.
func (c *conn) readLoop() {
	for {
		if !c.bindBy.IsZero() {
			c.mu.Lock()
			unbound := len(c.sessions) == 0
			c.mu.Unlock()
			if unbound {
				c.nc.SetReadDeadline(c.bindBy)
			} else {
				c.nc.SetReadDeadline(time.Time{})
			}
		}
		f, err := c.r.ReadFrame()
		if err != nil {
			var se *SyntaxError
			if !errors.As(err, &se) {
				c.mu.Lock()
				cause := cmp.Or(c.werr, err) // the write failed first
				c.mu.Unlock()
				c.close(cause)
				return
			}
			c.debug("bad frame", "err", err)
			if f != nil && f.IsRequest() {
				c.reply(c.responder(f), f, se.Code, "")
			} else if f != nil && !c.warnedResponse {
				// An answer to our SEND that cannot be read leaves the
				// SEND to its timeout (and its message charged an
				// attempt): say so once per connection, not at debug.
				c.warnedResponse = true
				c.log.Warn("msrp: unreadable response dropped", "remote", c.nc.RemoteAddr().String(),
					"tid", f.TID, "status", f.Status, "err", err)
			}
			if !se.Resync {
				c.close(err)
				return
			}
			continue
		}
		if !f.IsRequest() {
			if !c.complete(f.TID, f, responseError(f)) {
				c.debug("response to no transaction", "tid", f.TID, "status", f.Status)
			}
			continue
		}
		c.serve(f)
	}
}

func responseError(f *Frame) error {
	if f.Status >= 200 && f.Status < 300 {
		return nil
	}
	return &StatusError{Code: f.Status, Comment: f.Comment}
}

// serve handles one well-formed request. At an endpoint the To-Path has
// exactly one URI, which must be that of a session associated with the
// connection; otherwise the answer is 481 (RFC 4975 §7.3). A relay on
// the way has removed itself from the To-Path (RFC 4976 §7.2), so a
// longer one is not for us: it is not routed by its first URI.
func (c *conn) serve(f *Frame) {
	if f.Method != "SEND" && f.Method != "REPORT" {
		c.reply(c.responder(f), f, StatusUnknownMethod, "")
		return
	}
	to, _ := ParsePath(f.Header[0].Value) // checked by the Reader
	if len(to) != 1 {
		c.reply(c.responder(f), f, StatusNoSession, "")
		return
	}
	s, code := c.route(c, f, to[0])
	if code != 0 {
		c.reply(c.responder(f), f, code, "")
		return
	}
	if f.Method == "REPORT" {
		s.onReport(c, f)
		return
	}
	s.onSend(c, f)
}

// responder is the URI that answers f when no session does (a frame the
// Reader refused, an unknown method, a request for no session): the
// session of this connection its To-Path names, when it names one; else
// the first URI of its To-Path, the URI the request was sent to, which
// is the responder's (RFC 4975 §7.2), when that parses; else c.self,
// which has no session id. That URI is parsed and written again, never
// copied: what goes out is a well-formed MSRP URI.
func (c *conn) responder(f *Frame) URI {
	first, _, _ := strings.Cut(f.Value(HeaderToPath), " ")
	to, err := ParseURI(first)
	if err != nil {
		return c.self
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for s := range c.sessions {
		if to.Equal(s.local) {
			return s.local
		}
	}
	return to
}

// reply answers request f with code, from the URI self. REPORTs are never
// answered, and the request's Failure-Report says which answers are
// wanted (RFC 4975 §7.1.2). A request without a From-Path cannot be
// answered: it is dropped.
func (c *conn) reply(self URI, f *Frame, code int, comment string) {
	if f.Method == "REPORT" {
		return
	}
	switch strings.ToLower(f.Value(HeaderFailureReport)) {
	case "no":
		return
	case "partial":
		if code == StatusOK {
			return
		}
	}
	to, ok := f.Get(HeaderFromPath)
	if !ok {
		// Nobody to address an answer to (RFC 4975 §7.2 sends it to the
		// From-Path): the request is dropped unanswered. It was
		// delimited, so the connection and the session's other
		// messages, whole or in reassembly, go on.
		c.debug("request without From-Path dropped", "tid", f.TID)
		return
	}
	// A response goes to the previous hop only (RFC 4975 §7.2).
	to, _, _ = strings.Cut(to, " ")
	if comment == "" {
		comment = StatusText(code)
	}
	r := &Frame{
		TID:     f.TID,
		Status:  code,
		Comment: comment,
		Header:  []Header{{HeaderToPath, to}, {HeaderFromPath, self.String()}},
		Flag:    FlagEnd,
	}
	if err := c.write(r); err != nil {
		c.debug("write response", "err", err)
	}
}
