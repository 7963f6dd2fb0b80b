package msrp

import (
	"context"
	"crypto/md5"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Header names of RFC 4976 (relays).
const (
	HeaderUsePath         = "Use-Path"
	HeaderExpires         = "Expires"
	HeaderWWWAuthenticate = "WWW-Authenticate"
	HeaderAuthorization   = "Authorization"
)

// RelayConfig configures DialRelay. The zero value of each field selects
// the default documented on it; URI and Local.Host are required.
type RelayConfig struct {
	// URI is the relay's URI, without a session id:
	// msrps://relay.example.com:2855;tcp.
	URI URI
	// Local is this client's URI, the From-Path of the AUTH request. With
	// Port zero, its host and port become the connection's own local
	// address: a relay that forwards to the client by the address in its
	// path (OpenSIPS's msrp_relay) then finds the connection the client
	// opened, where one that routes by session id (Kamailio's msrp) does
	// not care; a client behind NAT has no other address the relay could
	// reach anyway.
	Local URI
	// Username and Password answer the relay's digest challenge (a 401
	// to AUTH, RFC 4976 §5). Empty: no credentials are offered.
	Username, Password string
	// Expires is the lifetime asked for the authorisation (the Expires
	// header of AUTH). Zero asks for none: the relay picks.
	Expires time.Duration
	// Timeout bounds the AUTH exchange and each write: 30 s.
	Timeout time.Duration
	// Limits bounds the frames read on the connection.
	Limits Limits
	// TLS configures an msrps connection. Nil uses the system roots and
	// the host of URI.
	TLS *tls.Config
	// Logger receives debug and warning logs. Nil discards them.
	Logger *slog.Logger
}

// Relay is a client's authenticated connection to its MSRP relay (RFC 4976
// §5): the client connects to its relay and sends AUTH, answering a digest
// challenge, and the relay's 200 names the Use-Path, the relay URIs to put
// before the client's own in its SDP a=path. Sessions added to the Relay
// send and receive over this one connection; the relay brings them what
// peers send along that path.
type Relay struct {
	cfg     RelayConfig
	c       *conn
	path    []URI
	expires time.Time
	wg      sync.WaitGroup

	mu       sync.Mutex
	sessions map[string]*Session
}

// DialRelay connects to the relay of cfg.URI and authenticates (AUTH,
// RFC 4976 §5). It returns once the relay granted a Use-Path.
func DialRelay(ctx context.Context, cfg RelayConfig) (*Relay, error) {
	if cfg.URI.Host == "" || cfg.Local.Host == "" {
		return nil, errors.New("msrp: relay: URI and Local are required")
	}
	if cfg.Local.SessionID == "" {
		cfg.Local.SessionID = NewSessionID()
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	d := &net.Dialer{}
	var nc net.Conn
	var err error
	if cfg.URI.Secure {
		tcfg := cfg.TLS
		if tcfg == nil {
			tcfg = &tls.Config{ServerName: cfg.URI.Host}
		}
		nc, err = (&tls.Dialer{NetDialer: d, Config: tcfg}).DialContext(ctx, "tcp", cfg.URI.Addr())
	} else {
		nc, err = d.DialContext(ctx, "tcp", cfg.URI.Addr())
	}
	if err != nil {
		return nil, fmt.Errorf("msrp: relay %s: %w", cfg.URI.Addr(), err)
	}
	if cfg.Local.Port == 0 {
		if a, ok := nc.LocalAddr().(*net.TCPAddr); ok {
			cfg.Local.Host, cfg.Local.Port = a.IP.String(), a.Port
		}
	}
	r := &Relay{cfg: cfg, sessions: make(map[string]*Session)}
	r.c = newConn(nc, cfg.Limits, cfg.Timeout, cfg.Logger.With("relay", cfg.URI.String()))
	r.c.self = cfg.Local
	r.c.keep = true
	r.c.route = func(_ *conn, _ *Frame, to URI) (*Session, int) {
		r.mu.Lock()
		defer r.mu.Unlock()
		if s := r.sessions[to.SessionID]; s != nil && to.Equal(s.local) {
			return s, 0
		}
		return nil, StatusNoSession
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.c.readLoop()
	}()
	if err := r.auth(ctx); err != nil {
		r.Close()
		return nil, fmt.Errorf("msrp: relay %s: %w", cfg.URI, err)
	}
	return r, nil
}

// auth sends AUTH, answers one digest challenge, and takes the Use-Path
// and Expires of the 200.
func (r *Relay) auth(ctx context.Context) error {
	var authorization string
	for try := 0; ; try++ {
		h := []Header{{HeaderToPath, r.cfg.URI.String()}, {HeaderFromPath, r.cfg.Local.String()}}
		if r.cfg.Expires > 0 {
			h = append(h, Header{HeaderExpires, strconv.Itoa(int(r.cfg.Expires / time.Second))})
		}
		if authorization != "" {
			h = append(h, Header{HeaderAuthorization, authorization})
		}
		resp, err := r.roundTrip(ctx, &Frame{TID: newIdent(), Method: "AUTH", Header: h, Flag: FlagEnd})
		var se *StatusError
		switch {
		case errors.As(err, &se) && se.Code == 401 && try == 0 && resp != nil:
			ch, ok := resp.Get(HeaderWWWAuthenticate)
			if !ok || r.cfg.Username == "" {
				return fmt.Errorf("auth: %w (no credentials to answer it with)", err)
			}
			authorization, err = digestAuthorization(ch, "AUTH", r.cfg.URI.String(), r.cfg.Username, r.cfg.Password, rand.Text())
			if err != nil {
				return fmt.Errorf("auth: %w", err)
			}
			continue
		case err != nil:
			return fmt.Errorf("auth: %w", err)
		}
		path, perr := ParsePath(resp.Value(HeaderUsePath))
		if perr != nil {
			return fmt.Errorf("auth: Use-Path of the 200: %w", perr)
		}
		r.path = path
		if v, ok := resp.Get(HeaderExpires); ok {
			if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && n > 0 {
				r.expires = time.Now().Add(time.Duration(n) * time.Second)
			}
		}
		return nil
	}
}

// roundTrip sends request f on the relay connection and returns its
// response: the frame (when one came) and the error for a non-2xx.
func (r *Relay) roundTrip(ctx context.Context, f *Frame) (*Frame, error) {
	var resp *Frame
	errc := make(chan error, 1)
	if err := r.c.requestResp(f, func(fr *Frame) { resp = fr }, func(err error) { errc <- err }); err != nil {
		return nil, err
	}
	select {
	case err := <-errc:
		return resp, err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Path is the Use-Path the relay granted: the URIs a session through it
// puts before its own in its SDP a=path.
func (r *Relay) Path() []URI { return slices.Clone(r.path) }

// Local is the client's URI as the relay knows it (RelayConfig.Local,
// with the connection's address when its port was zero): the last hop of
// the path a client behind the relay answers with, with its own session
// id.
func (r *Relay) Local() URI { return r.cfg.Local }

// Expires is when the relay's authorisation ends; zero when the relay
// did not say. Dial again before then: Relay does not refresh it.
func (r *Relay) Expires() time.Time { return r.expires }

// Done is closed when the connection to the relay is gone (the relay
// closed or restarted, or Close was called): dial again then.
func (r *Relay) Done() <-chan struct{} { return r.c.done }

// Add makes s a session through the relay: remote is the peer's path
// (from its SDP), s's requests go to the Use-Path followed by it, and the
// requests the relay brings for s's session id reach it. s's a=path is
// Path() followed by s.URI().
func (r *Relay) Add(s *Session, remote []URI) error {
	if len(remote) == 0 {
		return errors.New("msrp: relay add: empty path")
	}
	s.mu.Lock()
	if s.closed || s.conn != nil || s.lis != nil || s.relay != nil || s.active {
		s.mu.Unlock()
		return errors.New("msrp: relay add: session closed, bound or already added")
	}
	s.relay = r
	s.remote = append(r.Path(), remote...)
	s.mu.Unlock()
	r.mu.Lock()
	if _, dup := r.sessions[s.local.SessionID]; dup {
		r.mu.Unlock()
		return fmt.Errorf("msrp: relay add: session id %s in use", s.local.SessionID)
	}
	r.sessions[s.local.SessionID] = s
	r.mu.Unlock()
	if code := s.attach(r.c, nil); code != 0 {
		r.remove(s)
		return fmt.Errorf("msrp: relay add: %w", r.c.closedErr())
	}
	return nil
}

func (r *Relay) remove(s *Session) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sessions[s.local.SessionID] == s {
		delete(r.sessions, s.local.SessionID)
	}
}

// Close closes the connection to the relay; the sessions on it can send
// no more. It returns once the connection's reader has exited.
func (r *Relay) Close() error {
	r.c.close(ErrClosed)
	r.wg.Wait()
	return nil
}

// digestAuthorization answers an HTTP digest challenge (RFC 2617, as RFC
// 4976 §5 uses it: the method is AUTH, the uri the relay's URI) with MD5
// and qop=auth when the challenge offers it; cnonce is the client nonce.
func digestAuthorization(challenge, method, uri, user, password, cnonce string) (string, error) {
	scheme, rest, _ := strings.Cut(strings.TrimSpace(challenge), " ")
	if !strings.EqualFold(scheme, "Digest") {
		return "", fmt.Errorf("challenge scheme %q is not Digest", scheme)
	}
	p := digestParams(rest)
	realm, nonce := p["realm"], p["nonce"]
	if nonce == "" {
		return "", errors.New("digest challenge without a nonce")
	}
	if a := p["algorithm"]; a != "" && !strings.EqualFold(a, "MD5") {
		return "", fmt.Errorf("digest algorithm %q is not MD5", a)
	}
	hash := func(s string) string {
		sum := md5.Sum([]byte(s))
		return hex.EncodeToString(sum[:])
	}
	ha1 := hash(user + ":" + realm + ":" + password)
	ha2 := hash(method + ":" + uri)
	var b strings.Builder
	fmt.Fprintf(&b, "Digest username=%q, realm=%q, nonce=%q, uri=%q", user, realm, nonce, uri)
	qops := strings.Split(p["qop"], ",")
	if slices.ContainsFunc(qops, func(q string) bool { return strings.TrimSpace(q) == "auth" }) {
		const nc = "00000001"
		fmt.Fprintf(&b, ", response=%q, cnonce=%q, nc=%s, qop=auth", hash(ha1+":"+nonce+":"+nc+":"+cnonce+":auth:"+ha2), cnonce, nc)
	} else {
		fmt.Fprintf(&b, ", response=%q", hash(ha1+":"+nonce+":"+ha2))
	}
	b.WriteString(", algorithm=MD5")
	if o, ok := p["opaque"]; ok {
		fmt.Fprintf(&b, ", opaque=%q", o)
	}
	return b.String(), nil
}

// digestParams parses the comma-separated name=value pairs of a digest
// challenge; quoted values lose their quotes.
func digestParams(s string) map[string]string {
	out := map[string]string{}
	for s = strings.TrimSpace(s); s != ""; s = strings.TrimSpace(s) {
		name, rest, ok := strings.Cut(s, "=")
		if !ok {
			break
		}
		name = strings.ToLower(strings.TrimSpace(name))
		rest = strings.TrimSpace(rest)
		var val string
		if strings.HasPrefix(rest, `"`) {
			end := strings.IndexByte(rest[1:], '"')
			if end < 0 {
				break
			}
			val, rest = rest[1:1+end], rest[2+end:]
		} else {
			val, rest, _ = strings.Cut(rest, ",")
			val = strings.TrimSpace(val)
			rest = "," + rest
		}
		out[name] = val
		_, rest, _ = strings.Cut(rest, ",")
		s = rest
	}
	return out
}
