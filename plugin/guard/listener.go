// Package guard keeps deferpush's network edges up under floods and
// failures: a Listener wrapper that bounds the connections open at once
// (per listener, per source address, and for the whole process through a
// shared Budget), refuses sources it is told to at accept, closes the
// connections that sit idle longest or hold a request the longest to make
// room (never a trusted source's for another's), ends connections that
// send nothing, and retries a failed accept with backoff instead of
// returning the error; and a RateLimiter (a token bucket per source
// address) for the requests themselves. It uses the standard library
// only, so that plugin/msrp can use it too.
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
	// connection that has sent nothing at all may always be; one that is
	// reading a request only as BusyGrace allows; one its server
	// protected (Protect: an MSRP session) never. Either of the first two
	// goes only for a new connection from a source that holds no more
	// connections than its own: a flood from a few addresses does not
	// take the proxy's kept-alive connection, nor the one it just opened.
	// (What a source holds is its connections in the way of the new one,
	// not counting those its server protected.)
	EvictIdle bool
	// BusyGrace, when not zero, lets a connection in the middle of a
	// request be closed to make room when no connection is unused or
	// idle: one whose request began more than BusyGrace ago, for a new
	// connection from a source that holds no more connections than its
	// own; and one whose request began more than a quarter of BusyGrace
	// ago, of the source that holds the most, for a new connection from
	// a source that holds at least two fewer, so that a source reopening
	// each connection closed cannot keep every slot young and lock the
	// others out. The source holding the most loses first, then the
	// request that began first. With a Framer a request begins at its
	// message's first byte and ends with its last; without one, at the
	// first byte read since the last write, ending with the next write
	// (an HTTP server's answer: the time the server takes to answer
	// counts too). Zero: a busy connection is never closed for room.
	BusyGrace time.Duration
	// UntilProtected makes a connection's first request last until its
	// server calls Protect on it, whatever is written meanwhile: a peer
	// that has not established what it connected for (MSRP: bound a
	// session) BusyGrace after its first byte may be closed for room.
	UntilProtected bool
	// Trusted are the networks of the peers the listener is for (the
	// proxies). A connection from one of them that has sent something is
	// never closed to make room for one from elsewhere (of this listener
	// or another of the Budget); a new one from one of them may close
	// any connection of this listener from elsewhere that is in the
	// middle of a request, however young (where BusyGrace is set), and
	// takes what may make room from elsewhere before a trusted peer's.
	// Empty: no source is preferred.
	Trusted []netip.Prefix
	// OnlyTrusted refuses a connection from outside Trusted at its
	// accept, before it counts against any bound: Refuse answers it
	// with ErrSource. It needs Trusted.
	OnlyTrusted bool
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
	// Refuse, when set, answers a connection that is not admitted
	// before it is closed, why saying for what: ErrBusy (every
	// connection in its way is busy) or ErrSource (OnlyTrusted). It runs
	// in a goroutine of its own (at most 16 at once; past that, the
	// connection is closed silently), must close c and bound its own
	// time.
	Refuse func(c net.Conn, why error)
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

// DefaultBusyGrace is the BusyGrace of deferpush's listeners: a proxy's
// request arrives whole within milliseconds, and one still arriving after
// this long is a slow or hostile peer's.
const DefaultBusyGrace = 2 * time.Second

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
	evicted atomic.Int64 // idle or unused, closed for room since that log
	cut     atomic.Int64 // busy, closed for room since that log
	refused atomic.Int64 // refused for their source since that log
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
		addr := SourceOf(nc.RemoteAddr())
		trusted := contains(l.cfg.Trusted, addr)
		if l.cfg.OnlyTrusted && !trusted {
			l.refuseSource(nc)
			continue
		}
		c := &conn{Conn: nc, l: l, src: sourceKey(addr), trusted: trusted, accepted: time.Now()}
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
		if l.throttle() {
			l.log.Warn("connection refused: every connection is busy", "remote", nc.RemoteAddr().String(),
				"open", l.Open(), "max", l.cfg.MaxConns, "per_host", l.cfg.MaxConnsPerHost, "budget", l.b.max)
		}
		l.refuse(nc, ErrBusy)
	}
}

// closeVictims closes what admit chose to make room, and says so at most
// once a second.
func (l *Listener) closeVictims(vs []*conn) {
	var idle, busy int64
	for _, v := range vs {
		_ = v.Conn.Close()
		if v.cutBusy {
			busy++
		} else {
			idle++
		}
	}
	if len(vs) == 0 {
		return
	}
	idle, busy = l.evicted.Add(idle), l.cut.Add(busy)
	if !l.throttle() {
		return
	}
	l.evicted.Add(-idle)
	l.cut.Add(-busy)
	if idle > 0 {
		l.log.Info("idle connections closed to make room", "closed", idle, "open", l.Open(), "max", l.cfg.MaxConns, "budget", l.b.max)
	}
	if busy > 0 {
		l.log.Info("connections holding a request closed to make room", "closed", busy, "grace", l.cfg.BusyGrace,
			"open", l.Open(), "max", l.cfg.MaxConns, "budget", l.b.max)
	}
}

// refuseSource refuses a connection from a source the listener does not
// take; it counts against nothing.
func (l *Listener) refuseSource(nc net.Conn) {
	n := l.refused.Add(1)
	if l.throttle() {
		l.refused.Add(-n)
		l.log.Warn("connection refused: source not allowed", "remote", nc.RemoteAddr().String(), "refused", n)
	}
	l.refuse(nc, ErrSource)
}

// refuse answers and closes a connection that is not admitted.
func (l *Listener) refuse(nc net.Conn, why error) {
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
		l.cfg.Refuse(nc, why)
	}()
}

func contains(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
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
			v = b.victim(c, func(o *conn) bool { return o.l == l && o.src == c.src })
		case l.cfg.MaxConns > 0 && l.n >= l.cfg.MaxConns:
			v = b.victim(c, func(o *conn) bool { return o.l == l })
		case b.max > 0 && len(b.conns) >= b.max:
			v = b.victim(c, nil)
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

// evictAny closes a connection of any listener to free a descriptor for
// the one waiting to be accepted, chosen as for a newcomer of a source
// that holds none.
func (b *Budget) evictAny() {
	b.mu.Lock()
	v := b.victim(nil, nil)
	if v != nil {
		b.remove(v)
	}
	b.mu.Unlock()
	if v == nil {
		return
	}
	_ = v.Conn.Close()
	if v.cutBusy {
		v.l.cut.Add(1)
	} else {
		v.l.evicted.Add(1)
	}
}

// victim picks the connection to close to make room for c (nil: a
// connection not accepted yet, of unknown source) among those in (nil:
// all); nil when none may be. A connection of a trusted source that has
// sent something is a candidate only for a trusted c, and then only once
// no other is; one its server protected never is. In order:
//
//   - the oldest that has sent nothing, of a source holding at least as
//     many connections as c's;
//   - where its listener lets idle ones go, the one idle longest, of such
//     a source;
//   - where its listener sets a BusyGrace, one in the middle of a request:
//     past the grace, of a source holding at least as many as c's; past
//     a quarter of it, of a source holding at least two more; or, for a
//     trusted c, of an untrusted source on c's listener, whatever its
//     age. The source holding the most first, then the oldest request.
func (b *Budget) victim(c *conn, in func(*conn) bool) *conn {
	if c != nil && c.trusted {
		if v := b.victimAmong(c, func(o *conn) bool { return !o.trusted && (in == nil || in(o)) }); v != nil {
			return v
		}
		return b.victimAmong(c, in)
	}
	// A trusted source's connection that has sent nothing yet is no
	// proxy's working connection: a local flood within a broad trusted
	// range (the loopback default of sip.trusted_sources) must not keep
	// the Budget's descriptors from the other listeners.
	return b.victimAmong(c, func(o *conn) bool { return (!o.trusted || !o.used.Load()) && (in == nil || in(o)) })
}

// victimAmong is victim among the connections in holds.
func (b *Budget) victimAmong(c *conn, in func(*conn) bool) *conn {
	// Each source's share of the candidates, not counting the connections
	// its server protected: a relay's sessions do not make it the source
	// a flood takes from.
	held := make(map[netip.Addr]int)
	for o := range b.conns {
		if (in == nil || in(o)) && !o.protected.Load() {
			held[o.src]++
		}
	}
	mine := 0
	if c != nil {
		mine = held[c.src]
	}
	now := time.Now().UnixNano()
	var unused, idle, busy *conn
	for o := range b.conns {
		if in != nil && !in(o) || o.protected.Load() {
			continue
		}
		theirs := held[o.src]
		switch {
		case !o.used.Load():
			// A source's connection just accepted, its request not read
			// yet, is not one a heavier source's reconnects take.
			if theirs >= mine && (unused == nil || o.accepted.Before(unused.accepted)) {
				unused = o
			}
		case !o.busy.Load() && o.l.cfg.EvictIdle:
			if theirs >= mine && (idle == nil || o.last.Load() < idle.last.Load()) {
				idle = o
			}
		default:
			start := o.reqStart.Load()
			grace := o.l.cfg.BusyGrace
			if start == 0 || grace <= 0 {
				continue // answering, or its listener keeps busy ones
			}
			age := now - start
			stale := age > int64(grace) && theirs >= mine
			fair := age > int64(grace/4) && theirs >= mine+2
			displace := c != nil && c.trusted && !o.trusted && o.l == c.l
			if !stale && !fair && !displace {
				continue
			}
			if busy == nil || theirs > held[busy.src] || theirs == held[busy.src] && start < busy.reqStart.Load() {
				busy = o
			}
		}
	}
	switch {
	case unused != nil:
		return unused
	case idle != nil:
		return idle
	case busy != nil:
		busy.cutBusy = true
	}
	return busy
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
// request (read since its last write), and since when, for the choice
// of what to close.
type conn struct {
	net.Conn
	l         *Listener
	src       netip.Addr // sourceKey
	trusted   bool       // from Config.Trusted
	accepted  time.Time
	used      atomic.Bool  // has read a byte
	busy      atomic.Bool  // has read since its last write
	last      atomic.Int64 // unix nano of the last read or write
	reqStart  atomic.Int64 // unix nano the request being read began; 0: none
	protected atomic.Bool  // see Protect
	removed   bool         // under l.b.mu
	cutBusy   bool         // chosen for room while busy (for the log); set under l.b.mu before removal

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
		if c.framer == nil && c.reqStart.Load() == 0 {
			c.reqStart.Store(now.UnixNano())
		}
		if c.framer != nil {
			c.mu.Lock()
			switch open, began := c.framer.Feed(p[:n]); {
			case !open:
				c.msgStart = time.Time{}
				c.reqStart.Store(0)
			case began:
				c.msgStart = now
				c.reqStart.Store(now.UnixNano())
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
		if c.framer == nil && !c.l.cfg.UntilProtected {
			c.reqStart.Store(0) // answered
		}
	}
	return n, err
}

// Protect marks c, a connection a Listener accepted (or one wrapping it,
// such as a *tls.Conn), as carrying what its server cannot lose (an MSRP
// session bound to it): from then on it is never closed to make room. It
// does nothing to another connection.
func Protect(c net.Conn) {
	for {
		switch x := c.(type) {
		case *conn:
			x.protected.Store(true)
			return
		case interface{ NetConn() net.Conn }:
			c = x.NetConn()
		default:
			return
		}
	}
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
