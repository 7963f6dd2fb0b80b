package msrp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/deferpush/deferpush/plugin/guard"
)

// ListenerConfig configures a Listener. The zero value of each field
// selects the default documented on it.
type ListenerConfig struct {
	// Addr is the TCP address to listen on: ":2855".
	Addr string
	// Host is the host put in the URIs of the sessions served: the IP the
	// listener is bound to, or "localhost" when that is unspecified.
	Host string
	// TLS, when set, makes the listener serve msrps over TLS.
	TLS *tls.Config
	// Limits bounds the frames read on accepted connections.
	Limits Limits
	// Timeout bounds each write, and the time a connection may stay open
	// without binding a session, counted from its accept: 30 s.
	Timeout time.Duration
	// MaxConns bounds the connections open at once: 4096.
	// MaxConnsPerHost bounds those from one IP address (IPv6: one /64):
	// 1024 (a relay such as Kamailio's msrp module brings many senders
	// from one address). At either bound the connection that has sent
	// nothing for longest is closed to make room, else one that has sent
	// something but bound no session guard.DefaultBusyGrace after its
	// first byte (a peer trickling a request, or idling after a 481), the
	// oldest first (past a quarter of that, one of the address holding
	// the most connections when the new one's holds two fewer); one that
	// carries a session never is. A relay's connection that only brings
	// REPORTs binds none: under a flood it may go too, and a REPORT it
	// had yet to bring with it (the message is then pushed again, never
	// lost). When none may go, the new connection is refused: its first
	// request is answered 403 and it is closed.
	MaxConns        int
	MaxConnsPerHost int
	// Budget, when set, bounds the connections accepted together with
	// the process's other listeners (the open-file limit): at it, the
	// oldest connection that has sent nothing is closed to make room.
	Budget *guard.Budget
	// Logger receives debug and warning logs. Nil discards them.
	Logger *slog.Logger
}

// Listener is the passive side (RFC 4975 §5.4): it accepts connections and
// hands each to the session named by the To-Path of its first request.
// A request for a session it does not serve is answered 481; one for a
// session already bound to another connection, 506. A REPORT binds no
// session: it goes to the session it names, wherever it came from, and
// the session decides whether it counts (relays open connections of their
// own to bring REPORTs, see AddActive).
type Listener struct {
	cfg ListenerConfig
	ln  net.Listener
	uri URI
	log *slog.Logger

	mu       sync.Mutex
	sessions map[string]*Session
	conns    map[*conn]struct{}
	closed   bool
	wg       sync.WaitGroup
}

// NewListener binds the listening socket; Run serves it.
func NewListener(cfg ListenerConfig) (*Listener, error) {
	if cfg.Addr == "" {
		cfg.Addr = ":" + strconv.Itoa(DefaultPort)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = 4096
	}
	if cfg.MaxConnsPerHost <= 0 {
		cfg.MaxConnsPerHost = 1024
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("msrp: listen: %w", err)
	}
	addr := ln.Addr().(*net.TCPAddr)
	host := cfg.Host
	if host == "" {
		host = addr.IP.String()
		if addr.IP.IsUnspecified() {
			host = "localhost"
		}
	}
	l := &Listener{
		cfg:      cfg,
		uri:      URI{Secure: cfg.TLS != nil, Host: host, Port: addr.Port, Transport: "tcp"},
		log:      cfg.Logger,
		sessions: make(map[string]*Session),
		conns:    make(map[*conn]struct{}),
	}
	// The guard keeps the bounds and the budget: at a bound it closes the
	// connection that has sent nothing for longest, which no session can
	// be bound to (a session is bound by a request the peer sent), so
	// that a flood of silent connections from a host does not lock out
	// the working peers behind the same address; then one that has not
	// bound a session within the grace of its first byte (UntilProtected:
	// route protects a connection once a session is bound to it), so
	// that a flood trickling requests does not either. An idle
	// connection is not closed for room as such (EvictIdle false): one
	// bound to a session waits between messages. The guard also retries
	// a failed accept (descriptors exhausted) with backoff instead of
	// ending Run.
	ln = guard.Listen(ln, guard.Config{
		Name: "msrp", MaxConns: cfg.MaxConns, MaxConnsPerHost: cfg.MaxConnsPerHost,
		BusyGrace: guard.DefaultBusyGrace, UntilProtected: true,
		Budget: cfg.Budget, Refuse: l.refuse, Logger: cfg.Logger,
	})
	if cfg.TLS != nil {
		ln = tls.NewListener(ln, cfg.TLS)
	}
	l.ln = ln
	return l, nil
}

// URI returns the listener's URI without a session id: the Config.Local
// of the sessions it serves.
func (l *Listener) URI() URI { return l.uri }

// Add makes s a passive session of l: the peer connects to l and binds s
// with its first request. remote is the peer's path from SDP; its last
// URI's session id must match the binding request's From-Path. A nil
// remote accepts any peer.
func (l *Listener) Add(s *Session, remote []URI) error {
	s.mu.Lock()
	if s.closed || s.conn != nil || s.lis != nil || s.relay != nil || s.active {
		s.mu.Unlock()
		return errors.New("msrp: add: session closed, bound or already added")
	}
	s.lis = l
	s.remote = remote
	s.mu.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	if _, dup := l.sessions[s.local.SessionID]; dup {
		return fmt.Errorf("msrp: add: session id %s in use", s.local.SessionID)
	}
	l.sessions[s.local.SessionID] = s
	return nil
}

// AddActive makes l route to s, a session that connects itself (Connect,
// before or after AddActive), the REPORTs naming it that arrive on
// connections l accepts. A relay on s's path that has no connection to us
// opens one to send a REPORT along its To-Path (RFC 4975 §5.4, RFC 4976
// §7.3): Session.onReport documents what such a REPORT must satisfy to
// count. Any other request naming s on such a connection is answered 506
// (481 before s is connected): its data travels only on its own
// connection. s is forgotten when it closes.
func (l *Listener) AddActive(s *Session) error {
	s.mu.Lock()
	if s.closed || s.lis != nil || s.relay != nil {
		s.mu.Unlock()
		return errors.New("msrp: add: session closed, added or on a relay")
	}
	s.lis = l
	s.active = true
	s.mu.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	if _, dup := l.sessions[s.local.SessionID]; dup {
		return fmt.Errorf("msrp: add: session id %s in use", s.local.SessionID)
	}
	l.sessions[s.local.SessionID] = s
	return nil
}

// Activate turns s, a session added to l (Add) that no connection has
// bound yet, into one that connects itself (Connect), as AddActive adds
// it: an offerer that registered its session before the answer said
// which side connects (a=setup:actpass, RFC 6135) keeps it when the
// answer makes it the active side. From then on no peer's connection
// binds s (481). It fails, changing nothing, when s is not such a
// session: closed, bound, active already, or not added to l.
func (l *Listener) Activate(s *Session) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.lis != l || s.active || s.conn != nil || s.relay != nil {
		return errors.New("msrp: activate: session closed, bound, active or not added here")
	}
	s.active = true
	s.remote = nil
	return nil
}

func (l *Listener) remove(s *Session) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.sessions[s.local.SessionID] == s {
		delete(l.sessions, s.local.SessionID)
	}
}

// Expect names the peer of a passive session added with a nil remote, once
// its path is known (from the SDP answer): from then on only a connection
// whose binding request's From-Path ends with the session id of remote's
// last URI binds s, others get 481. A connection that bound s before,
// from another peer, is dropped from s and Expect returns an error: that
// peer got nothing of s yet if Expect is called before the first Send.
func (s *Session) Expect(remote []URI) error {
	if len(remote) == 0 {
		return errors.New("msrp: expect: empty path")
	}
	s.mu.Lock()
	want := remote[len(remote)-1].SessionID
	c := s.conn
	var got string
	if len(s.remote) > 0 {
		got = s.remote[len(s.remote)-1].SessionID
	}
	s.remote = remote
	if c == nil || got == want {
		s.mu.Unlock()
		return nil
	}
	s.conn = nil
	s.bound = make(chan struct{})
	s.partials = make(map[string]*partial)
	s.mu.Unlock()
	c.detach(s)
	return fmt.Errorf("msrp: expect: session was bound by %q, not the peer %q: dropped", got, want)
}

// route finds the session of a request that arrived on c, binding it to c
// when it is unbound. to must be the session's URI, host and port
// included: the peer copied it from our a=path.
func (l *Listener) route(c *conn, f *Frame, to URI) (*Session, int) {
	l.mu.Lock()
	s := l.sessions[to.SessionID]
	l.mu.Unlock()
	if s == nil || !to.Equal(s.local) {
		return nil, StatusNoSession
	}
	if f.Method == "REPORT" {
		// A REPORT binds nothing: it may come from a relay on the
		// session's path over a connection of its own (Session.onReport
		// checks it).
		return s, 0
	}
	if code := s.attach(c, f); code != 0 {
		return nil, code
	}
	// A connection that carries a session is never closed for room.
	guard.Protect(c.nc)
	return s, 0
}

// Run accepts connections until ctx ends or Close is called, then closes
// the listener and every connection it accepted, and returns once their
// goroutines have exited. It returns nil after Close or ctx's end.
func (l *Listener) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	defer l.wg.Wait()
	defer l.Close()
	for {
		nc, err := l.ln.Accept()
		if err != nil {
			l.mu.Lock()
			closed := l.closed
			l.mu.Unlock()
			if closed {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("msrp: accept: %w", err)
		}
		c := newConn(nc, l.cfg.Limits, l.cfg.Timeout, l.log)
		c.route = l.route
		c.self = l.uri
		c.bindBy = time.Now().Add(l.cfg.Timeout)
		// The TLS handshake runs within the first read, under bindBy; its
		// writes get the same deadline (conn.write sets its own later).
		nc.SetWriteDeadline(c.bindBy)
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			nc.Close()
			return nil
		}
		l.conns[c] = struct{}{}
		l.wg.Add(1)
		l.mu.Unlock()
		go func() {
			defer l.wg.Done()
			c.readLoop()
			l.mu.Lock()
			delete(l.conns, c)
			l.mu.Unlock()
		}()
	}
}

// refuse answers the first request of a connection over the bounds 403
// and closes it: the guard calls it (at most 16 at once, closing the
// others silently) for a connection it could not make room for (why is
// guard.ErrBusy: the listener refuses no source). The deadline bounds
// the TLS handshake too. Run waits for it.
func (l *Listener) refuse(nc net.Conn, _ error) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		nc.Close()
		return
	}
	l.wg.Add(1) // under l.mu before Close: Run's Wait comes after
	l.mu.Unlock()
	defer l.wg.Done()
	l.log.Warn("msrp connection refused: too many connections", "remote", nc.RemoteAddr().String())
	if l.cfg.TLS != nil {
		nc = tls.Server(nc, l.cfg.TLS)
	}
	c := newConn(nc, l.cfg.Limits, l.cfg.Timeout, l.log)
	c.self = l.uri
	nc.SetDeadline(time.Now().Add(min(l.cfg.Timeout, 2*time.Second)))
	if f, err := c.r.ReadFrame(); err == nil && f.IsRequest() {
		c.reply(c.responder(f), f, StatusForbidden, "Too many connections")
	}
	c.close(errors.New("msrp: too many connections"))
}

// Close stops accepting and closes every accepted connection. Sessions
// stay registered until they are closed themselves.
func (l *Listener) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	conns := make([]*conn, 0, len(l.conns))
	for c := range l.conns {
		conns = append(conns, c)
	}
	l.mu.Unlock()
	err := l.ln.Close()
	for _, c := range conns {
		c.close(ErrClosed)
	}
	return err
}
