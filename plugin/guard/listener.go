// Package guard keeps deferpush's network edges up under floods and
// failures: a Listener wrapper that bounds the connections open at once
// (per listener, per source address, and for the whole process through a
// shared Budget), closes the connections that sit idle longest to make
// room, ends connections that send nothing, and retries a failed accept
// with backoff instead of returning the error; and a RateLimiter (a token
// bucket per source address) for the requests themselves. It uses the
// standard library only, so that plugin/msrp can use it too.
package guard

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Config bounds the connections of one Listener. The zero value of each
// field means no bound of that kind.
type Config struct {
	// Name names the listener in the logs ("hooks", "sip").
	Name string
	// MaxConns bounds the connections open at once, MaxConnsPerHost
	// those from one source address (IPv6: one /64).
	MaxConns        int
	MaxConnsPerHost int
	// Budget, when set, is shared with the process's other listeners and
	// bounds their connections together (the open-file limit).
	Budget *Budget
	// EvictIdle lets a connection that is waiting for its next request
	// (it has read nothing since its last write: an idle HTTP keep-alive
	// or SIP connection) be closed to make room for a new one. A
	// connection that has sent nothing at all may always be closed for
	// room; one that is reading a request or carries a session (MSRP:
	// EvictIdle false) never is.
	EvictIdle bool
	// FirstByteTimeout closes a connection that sends nothing for this
	// long after its accept, and IdleTimeout one that then sends nothing
	// for this long; either makes the Listener set the read deadline
	// before every Read, so leave both zero for a server that sets its
	// own (hertz). A Read that times out this way returns io.EOF, as if
	// the peer had closed.
	FirstByteTimeout time.Duration
	IdleTimeout      time.Duration
	// NewFramer, when set, gives each connection a Framer that reads its
	// byte stream as the protocol frames it, and RequestTimeout closes a
	// connection whose message has been arriving for this long (from its
	// first byte; a peer trickling a request a byte at a time holds its
	// connection no longer). Between messages IdleTimeout applies, as
	// without a Framer. RequestTimeout needs a Framer.
	NewFramer      func() Framer
	RequestTimeout time.Duration
	// Refuse, when set, answers a connection that cannot be admitted
	// (every connection in its way is busy) before it is closed, in a
	// goroutine of its own (at most 16 at once; past that, closed
	// silently). It must close c and bound its own time.
	Refuse func(c net.Conn)
	// Logger; nil discards.
	Logger *slog.Logger
}

// A Framer follows one connection's byte stream as its protocol frames
// messages, so that the Listener can tell a connection that is between
// messages from one in the middle of one.
type Framer interface {
	// Feed takes the bytes next read. open reports whether they end
	// inside a message (one has begun and not ended); began, whether that
	// open message began within them.
	Feed(p []byte) (open, began bool)
}

// A Refuser is a Framer that can answer a message the server will not
// take before the connection ends, so the peer learns why instead of
// seeing the connection drop (SIP over TCP: 400 or 513, RFC 3261 §18.3,
// §21.4.1). Refusal is asked after each Feed with closing false: an
// answer then (a message already known too large) is written, the bytes
// just read are still handed to the server and the next Read reports the
// end of the stream. It is asked again with closing true when the server
// closes the connection right after a Read that returned bytes (its
// parser gave up on them): the Framer may then look at what it kept.
// Nil is no answer. A connection that was answered is closed the
// lingering way (what the peer still sends is read and dropped for up to
// a second before the socket closes), so the answer is not lost to a
// reset. The answers to messages read before the refused one may still
// be written meanwhile.
type Refuser interface {
	Framer
	Refusal(remote net.Addr, closing bool) []byte
}

// lingerTime bounds the lingering close of an answered connection and
// the write of its answer; lingerBytes, what is read and dropped.
const (
	lingerTime  = time.Second
	lingerBytes = 1 << 20
)

// Budget bounds the connections of several Listeners together, so that
// a flood on one cannot take the file descriptors the others (and the
// process's own outgoing connections) need. A nil *Budget bounds nothing.
type Budget struct {
	max int

	mu    sync.Mutex
	conns map[*conn]struct{}
}

// NewBudget returns a Budget of max connections; zero or less means none.
func NewBudget(max int) *Budget {
	return &Budget{max: max, conns: make(map[*conn]struct{})}
}

// Max is the budget's bound; zero means none.
func (b *Budget) Max() int { return b.max }

// Open is the number of connections open under the budget.
func (b *Budget) Open() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.conns)
}

// FileBudget is the connections a process may accept with the open-file
// limit it runs with, keeping reserve descriptors (at least half the
// limit) for its own files and outgoing connections; zero when the limit
// cannot be read or is unlimited.
func FileBudget(reserve int) int {
	limit := openFileLimit()
	if limit <= 0 {
		return 0
	}
	return max(limit/2, limit-reserve)
}

// Listener wraps a net.Listener with the bounds of its Config. Accept
// never returns a temporary error (descriptors exhausted, an aborted
// connection): it logs it at most once a second and tries again after a
// backoff of 5 ms doubling to 1 s, closing the connection idle longest
// when descriptors ran out. It returns an error only once the listener
// is closed, or for an error no retry can mend.
type Listener struct {
	net.Listener
	cfg    Config
	b      *Budget
	log    *slog.Logger
	done   chan struct{}
	closed sync.Once
	// refusing bounds the goroutines of cfg.Refuse.
	refusing chan struct{}

	// Under b.mu:
	n     int
	hosts map[netip.Addr]int

	lastLog atomic.Int64 // unix nano of the last throttled log
	evicted atomic.Int64 // closed for room since that log
}

// Listen wraps ln.
func Listen(ln net.Listener, cfg Config) *Listener {
	b := cfg.Budget
	if b == nil {
		b = NewBudget(0)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Listener{
		Listener: ln, cfg: cfg, b: b, log: log.With("listener", cfg.Name),
		done: make(chan struct{}), refusing: make(chan struct{}, 16),
		hosts: make(map[netip.Addr]int),
	}
}

// Open is the number of connections of l open now.
func (l *Listener) Open() int {
	l.b.mu.Lock()
	defer l.b.mu.Unlock()
	return l.n
}

// Close closes the listening socket; open connections stay open.
func (l *Listener) Close() error {
	l.closed.Do(func() { close(l.done) })
	return l.Listener.Close()
}

const (
	minBackoff = 5 * time.Millisecond
	maxBackoff = time.Second
)

// Accept waits for a connection it can admit.
func (l *Listener) Accept() (net.Conn, error) {
	var delay time.Duration
	for {
		nc, err := l.Listener.Accept()
		if err != nil {
			if !retryable(err) {
				return nil, err
			}
			if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				// Free a descriptor for the connection waiting.
				l.b.evictAny()
			}
			delay = min(max(2*delay, minBackoff), maxBackoff)
			if l.throttle() {
				l.log.Warn("accept failed; retrying", "err", err, "retry_in", delay, "open", l.b.Open())
			}
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-l.done:
				t.Stop()
				return nil, net.ErrClosed
			}
			continue
		}
		delay = 0
		c := &conn{Conn: nc, l: l, src: sourceKey(SourceOf(nc.RemoteAddr())), accepted: time.Now()}
		if l.cfg.NewFramer != nil {
			c.framer = l.cfg.NewFramer()
			c.refuser, _ = c.framer.(Refuser)
		}
		c.last.Store(c.accepted.UnixNano())
		victims, ok := l.b.admit(c)
		l.closeVictims(victims)
		if ok {
			return c, nil
		}
		l.refuse(nc)
	}
}

func (l *Listener) closeVictims(vs []*conn) {
	for _, v := range vs {
		_ = v.Conn.Close()
	}
	if len(vs) == 0 {
		return
	}
	n := l.evicted.Add(int64(len(vs)))
	if l.throttle() {
		l.evicted.Add(-n)
		l.log.Info("idle connections closed to make room", "closed", n, "open", l.Open(), "max", l.cfg.MaxConns, "budget", l.b.max)
	}
}

// refuse answers and closes a connection that cannot be admitted.
func (l *Listener) refuse(nc net.Conn) {
	if l.throttle() {
		l.log.Warn("connection refused: every connection is busy", "remote", nc.RemoteAddr().String(),
			"open", l.Open(), "max", l.cfg.MaxConns, "per_host", l.cfg.MaxConnsPerHost, "budget", l.b.max)
	}
	if l.cfg.Refuse == nil {
		_ = nc.Close()
		return
	}
	select {
	case l.refusing <- struct{}{}:
	default:
		_ = nc.Close()
		return
	}
	go func() {
		defer func() { <-l.refusing }()
		l.cfg.Refuse(nc)
	}()
}

// throttle reports whether a log line may be written now: at most one a
// second per listener, so that a flood does not flood the log too.
func (l *Listener) throttle() bool {
	now := time.Now().UnixNano()
	last := l.lastLog.Load()
	return now-last >= int64(time.Second) && l.lastLog.CompareAndSwap(last, now)
}

// retryable reports whether Accept may succeed again after err: the
// process or system ran out of descriptors or buffers, or the one
// connection failed before it was accepted.
func retryable(err error) bool {
	if errors.Is(err, net.ErrClosed) {
		return false
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	for _, e := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM,
		syscall.ECONNABORTED, syscall.ECONNRESET, syscall.EAGAIN, syscall.EINTR, syscall.EPROTO, syscall.EPERM} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// admit counts c in, closing (returning, for the caller to close outside
// the lock) what must make room; false when nothing may.
func (b *Budget) admit(c *conn) ([]*conn, bool) {
	l := c.l
	b.mu.Lock()
	defer b.mu.Unlock()
	var victims []*conn
	for {
		var v *conn
		switch {
		case l.cfg.MaxConnsPerHost > 0 && l.hosts[c.src] >= l.cfg.MaxConnsPerHost:
			v = b.victim(func(o *conn) bool { return o.l == l && o.src == c.src })
		case l.cfg.MaxConns > 0 && l.n >= l.cfg.MaxConns:
			v = b.victim(func(o *conn) bool { return o.l == l })
		case b.max > 0 && len(b.conns) >= b.max:
			v = b.victim(nil)
		default:
			b.conns[c] = struct{}{}
			l.n++
			l.hosts[c.src]++
			return victims, true
		}
		if v == nil {
			return victims, false
		}
		b.remove(v)
		victims = append(victims, v)
	}
}

// evictAny closes the connection of any listener that is idle longest.
func (b *Budget) evictAny() {
	b.mu.Lock()
	v := b.victim(nil)
	if v != nil {
		b.remove(v)
	}
	b.mu.Unlock()
	if v != nil {
		_ = v.Conn.Close()
		v.l.evicted.Add(1)
	}
}

// victim picks the connection to close for room among those in (nil:
// all): the oldest that has sent nothing, else, where its listener lets
// idle ones go, the one idle longest. Nil when every one is busy.
func (b *Budget) victim(in func(*conn) bool) *conn {
	var unused, idle *conn
	for o := range b.conns {
		if in != nil && !in(o) {
			continue
		}
		switch {
		case !o.used.Load():
			if unused == nil || o.accepted.Before(unused.accepted) {
				unused = o
			}
		case o.l.cfg.EvictIdle && !o.busy.Load():
			if idle == nil || o.last.Load() < idle.last.Load() {
				idle = o
			}
		}
	}
	if unused != nil {
		return unused
	}
	return idle
}

// remove forgets c; under b.mu.
func (b *Budget) remove(c *conn) {
	if c.removed {
		return
	}
	c.removed = true
	delete(b.conns, c)
	l := c.l
	l.n--
	if l.hosts[c.src]--; l.hosts[c.src] <= 0 {
		delete(l.hosts, c.src)
	}
}

// conn is an admitted connection: it counts against its listener's and
// budget's bounds until closed, and tracks whether it is busy with a
// request (read since its last write) for the choice of what to close.
type conn struct {
	net.Conn
	l        *Listener
	src      netip.Addr
	accepted time.Time
	used     atomic.Bool  // has read a byte
	busy     atomic.Bool  // has read since its last write
	last     atomic.Int64 // unix nano of the last read or write
	removed  bool         // under l.b.mu

	// Read's own, when the listener has a Framer: the time the message
	// arriving began (zero between messages).
	framer   Framer
	msgStart time.Time

	// When the Framer is a Refuser: mu orders Read's Feed with Close's
	// Refusal; lastRead is whether the last Read returned bytes and no
	// error, refused whether an answer was written (the stream ends).
	refuser  Refuser
	mu       sync.Mutex
	lastRead bool
	refused  bool
	closed   bool
}

func (c *conn) Read(p []byte) (int, error) {
	cfg := &c.l.cfg
	timed := cfg.FirstByteTimeout > 0 || cfg.IdleTimeout > 0 || cfg.RequestTimeout > 0
	inRequest := false
	if timed {
		var d time.Time
		switch {
		case !c.used.Load() && cfg.FirstByteTimeout > 0:
			d = c.accepted.Add(cfg.FirstByteTimeout)
		case !c.msgStart.IsZero() && cfg.RequestTimeout > 0:
			d = c.msgStart.Add(cfg.RequestTimeout)
			inRequest = true
		case cfg.IdleTimeout > 0:
			d = time.Now().Add(cfg.IdleTimeout)
		}
		_ = c.Conn.SetReadDeadline(d)
	}
	if c.refuser != nil {
		c.mu.Lock()
		refused := c.refused
		c.mu.Unlock()
		if refused {
			return 0, io.EOF
		}
	}
	n, err := c.Conn.Read(p)
	if n > 0 {
		now := time.Now()
		c.used.Store(true)
		c.busy.Store(true)
		c.last.Store(now.UnixNano())
		if c.framer != nil {
			c.mu.Lock()
			switch open, began := c.framer.Feed(p[:n]); {
			case !open:
				c.msgStart = time.Time{}
			case began:
				c.msgStart = now
			}
			if c.refuser != nil {
				c.lastRead = err == nil
				c.answer(c.refuser.Refusal(c.RemoteAddr(), false))
			}
			c.mu.Unlock()
		}
	} else if c.refuser != nil {
		c.mu.Lock()
		c.lastRead = false
		c.mu.Unlock()
	}
	if timed && err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		if inRequest && c.l.throttle() {
			c.l.log.Info("connection closed: a message still incomplete after the request timeout",
				"remote", c.RemoteAddr().String(), "timeout", cfg.RequestTimeout)
		} else if !inRequest {
			c.l.log.Debug("idle connection closed", "remote", c.RemoteAddr().String())
		}
		return n, io.EOF
	}
	return n, err
}

func (c *conn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if n > 0 {
		c.busy.Store(false)
		c.last.Store(time.Now().UnixNano())
	}
	return n, err
}

// CloseWrite half-closes a TCP connection (for a lingering close).
func (c *conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// answer writes a Refuser's answer, once; c.mu is held.
func (c *conn) answer(a []byte) {
	if a == nil || c.refused {
		return
	}
	c.refused = true
	_ = c.Conn.SetWriteDeadline(time.Now().Add(lingerTime))
	_, _ = c.Conn.Write(a)
	if line, _, _ := bytes.Cut(a, []byte("\r\n")); c.l.throttle() {
		c.l.log.Info("connection answered and closed: a message the server does not take",
			"remote", c.RemoteAddr().String(), "answer", string(line))
	}
}

func (c *conn) Close() error {
	c.l.b.mu.Lock()
	c.l.b.remove(c)
	c.l.b.mu.Unlock()
	if c.refuser == nil {
		return c.Conn.Close()
	}
	c.mu.Lock()
	first := !c.closed
	c.closed = true
	if first && c.lastRead {
		c.answer(c.refuser.Refusal(c.RemoteAddr(), true))
	}
	linger := first && c.refused
	c.mu.Unlock()
	if !first {
		// The lingering close below owns the socket.
		return nil
	}
	if !linger {
		return c.Conn.Close()
	}
	// The write side stays open while the peer's bytes are drained: the
	// answers to messages read before the refused one may still be on
	// their way (a server answers them from other goroutines).
	go func() {
		_ = c.Conn.SetReadDeadline(time.Now().Add(lingerTime))
		_, _ = io.CopyN(io.Discard, c.Conn, lingerBytes)
		_ = c.Conn.Close()
	}()
	return nil
}
