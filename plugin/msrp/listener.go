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
	// without binding a session: 30 s.
	Timeout time.Duration
	// Logger receives debug and warning logs. Nil discards them.
	Logger *slog.Logger
}

// Listener is the passive side (RFC 4975 §5.4): it accepts connections and
// hands each to the session named by the To-Path of its first request.
// A request for a session it does not serve is answered 481; one for a
// session already bound to another connection, 506.
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
	if cfg.TLS != nil {
		ln = tls.NewListener(ln, cfg.TLS)
	}
	return &Listener{
		cfg:      cfg,
		ln:       ln,
		uri:      URI{Secure: cfg.TLS != nil, Host: host, Port: addr.Port, Transport: "tcp"},
		log:      cfg.Logger,
		sessions: make(map[string]*Session),
		conns:    make(map[*conn]struct{}),
	}, nil
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
	if s.closed || s.conn != nil || s.lis != nil {
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

func (l *Listener) remove(s *Session) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.sessions[s.local.SessionID] == s {
		delete(l.sessions, s.local.SessionID)
	}
}

// route finds the session of a request that arrived on c, binding it to c
// when it is unbound.
func (l *Listener) route(c *conn, f *Frame, id string) (*Session, int) {
	l.mu.Lock()
	s := l.sessions[id]
	l.mu.Unlock()
	if s == nil {
		return nil, StatusNoSession
	}
	if code := s.attach(c, f); code != 0 {
		return nil, code
	}
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
		c.idle = l.cfg.Timeout
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
