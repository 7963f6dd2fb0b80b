package msrp

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/deferpush/deferpush/plugin/abnf"
)

// DefaultPort is the port of an MSRP URI without one (RFC 4975 §15.5).
const DefaultPort = 2855

// URI is an MSRP URI (RFC 4975 §6):
//
//	msrp://host:port/session-id;tcp
//	msrps://user@host:port/session-id;tcp;param=value
type URI struct {
	Secure    bool   // scheme msrps (TLS) instead of msrp
	User      string // userinfo, rarely used; ignored by Equal
	Host      string // host name or IP address, without IPv6 brackets
	Port      int    // 0 when absent: DefaultPort applies
	SessionID string // empty only in a relay's or listener's URI
	Transport string // "tcp" when empty
	Params    []string
}

// ParseURI parses one MSRP URI.
func ParseURI(s string) (URI, error) {
	var u URI
	rest, ok := cutPrefixFold(s, "msrps://")
	if ok {
		u.Secure = true
	} else if rest, ok = cutPrefixFold(s, "msrp://"); !ok {
		return URI{}, fmt.Errorf("msrp: uri %q: scheme is not msrp or msrps", s)
	}
	// authority ["/" session-id] ";" transport *( ";" param )
	semi := strings.IndexByte(rest, ';')
	if semi < 0 {
		return URI{}, fmt.Errorf("msrp: uri %q: no transport", s)
	}
	hier, params := rest[:semi], rest[semi+1:]
	authority := hier
	if slash := strings.IndexByte(hier, '/'); slash >= 0 {
		authority, u.SessionID = hier[:slash], hier[slash+1:]
		if u.SessionID == "" {
			return URI{}, fmt.Errorf("msrp: uri %q: empty session id", s)
		}
		for i := 0; i < len(u.SessionID); i++ {
			if !isSessionIDChar(u.SessionID[i]) {
				return URI{}, fmt.Errorf("msrp: uri %q: bad session id", s)
			}
		}
	}
	if at := strings.LastIndexByte(authority, '@'); at >= 0 {
		u.User, authority = authority[:at], authority[at+1:]
	}
	host, port := authority, ""
	if strings.HasPrefix(authority, "[") {
		end := strings.IndexByte(authority, ']')
		if end < 0 {
			return URI{}, fmt.Errorf("msrp: uri %q: bad IPv6 literal", s)
		}
		host = authority[1:end]
		if ip := net.ParseIP(host); ip == nil || ip.To4() != nil {
			return URI{}, fmt.Errorf("msrp: uri %q: bad IPv6 literal", s)
		}
		switch after := authority[end+1:]; {
		case after == "":
		case after[0] == ':':
			port = after[1:]
			if port == "" {
				return URI{}, fmt.Errorf("msrp: uri %q: empty port", s)
			}
		default:
			return URI{}, fmt.Errorf("msrp: uri %q: bad authority", s)
		}
	} else if colon := strings.LastIndexByte(authority, ':'); colon >= 0 {
		host, port = authority[:colon], authority[colon+1:]
		if port == "" {
			return URI{}, fmt.Errorf("msrp: uri %q: empty port", s)
		}
	}
	if host == "" {
		return URI{}, fmt.Errorf("msrp: uri %q: empty host", s)
	}
	if !strings.HasPrefix(authority, "[") {
		for i := 0; i < len(host); i++ {
			c := host[i]
			if !(abnf.IsAlnum(c) || c == '-' || c == '.') {
				return URI{}, fmt.Errorf("msrp: uri %q: bad host", s)
			}
		}
	}
	u.Host = host
	if port != "" {
		p, err := strconv.Atoi(port)
		if err != nil || p <= 0 || p > 65535 || port[0] == '+' {
			return URI{}, fmt.Errorf("msrp: uri %q: bad port", s)
		}
		u.Port = p
	}
	transport, params, more := strings.Cut(params, ";")
	u.Transport = transport
	if u.Transport == "" {
		return URI{}, fmt.Errorf("msrp: uri %q: empty transport", s)
	}
	for i := 0; i < len(u.Transport); i++ {
		if !abnf.IsAlnum(u.Transport[i]) {
			return URI{}, fmt.Errorf("msrp: uri %q: bad transport", s)
		}
	}
	for more {
		var p string
		p, params, more = strings.Cut(params, ";")
		if p == "" {
			return URI{}, fmt.Errorf("msrp: uri %q: empty parameter", s)
		}
		for i := 0; i < len(p); i++ {
			if c := p[i]; c <= ' ' || c >= 0x7f {
				return URI{}, fmt.Errorf("msrp: uri %q: bad parameter", s)
			}
		}
		u.Params = append(u.Params, p)
	}
	return u, nil
}

// String formats u; ParseURI(u.String()) == u for any parsed u.
func (u URI) String() string {
	var b strings.Builder
	b.Grow(len("msrps://@[]:65535/;") + len(u.User) + len(u.Host) + len(u.SessionID) + max(len(u.Transport), 3))
	if u.Secure {
		b.WriteString("msrps://")
	} else {
		b.WriteString("msrp://")
	}
	if u.User != "" {
		b.WriteString(u.User)
		b.WriteByte('@')
	}
	if strings.IndexByte(u.Host, ':') >= 0 {
		b.WriteByte('[')
		b.WriteString(u.Host)
		b.WriteByte(']')
	} else {
		b.WriteString(u.Host)
	}
	if u.Port != 0 {
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(u.Port))
	}
	if u.SessionID != "" {
		b.WriteByte('/')
		b.WriteString(u.SessionID)
	}
	b.WriteByte(';')
	if u.Transport == "" {
		b.WriteString("tcp")
	} else {
		b.WriteString(u.Transport)
	}
	for _, p := range u.Params {
		b.WriteByte(';')
		b.WriteString(p)
	}
	return b.String()
}

// Equal compares two URIs as RFC 4975 §6.1 asks: scheme, host and transport
// without regard to case (IP addresses by value), ports with an absent port
// taken as DefaultPort, and session ids exactly. Userinfo and URI parameters
// do not take part.
func (u URI) Equal(v URI) bool {
	if u.Secure != v.Secure || u.SessionID != v.SessionID {
		return false
	}
	if u.port() != v.port() || !strings.EqualFold(u.transport(), v.transport()) {
		return false
	}
	if strings.EqualFold(u.Host, v.Host) {
		return true
	}
	a, b := net.ParseIP(u.Host), net.ParseIP(v.Host)
	return a != nil && a.Equal(b)
}

// Addr returns the host:port to connect to for u.
func (u URI) Addr() string {
	return net.JoinHostPort(u.Host, strconv.Itoa(u.port()))
}

func (u URI) port() int {
	if u.Port == 0 {
		return DefaultPort
	}
	return u.Port
}

func (u URI) transport() string {
	if u.Transport == "" {
		return "tcp"
	}
	return u.Transport
}

// ParsePath parses the value of a To-Path or From-Path header: URIs
// separated by single spaces.
func ParsePath(s string) ([]URI, error) {
	if s == "" {
		return nil, errors.New("msrp: empty path")
	}
	fields := strings.Split(s, " ")
	path := make([]URI, 0, len(fields))
	for _, f := range fields {
		u, err := ParseURI(f)
		if err != nil {
			return nil, err
		}
		path = append(path, u)
	}
	return path, nil
}

// validPath reports whether ParsePath would accept s, without allocating
// for a well-formed path.
func validPath(s string) bool {
	if s == "" {
		return false
	}
	for more := true; more; {
		var f string
		f, s, more = strings.Cut(s, " ")
		if _, err := ParseURI(f); err != nil {
			return false
		}
	}
	return true
}

// FormatPath formats a path as a To-Path or From-Path value.
func FormatPath(path []URI) string {
	var b strings.Builder
	for i, u := range path {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(u.String())
	}
	return b.String()
}

// NewSessionID returns a session id of 128 random bits (RFC 4975 §14.1 asks
// for at least 80), 26 base32 characters.
func NewSessionID() string { return rand.Text() }

// newIdent returns a random ident (RFC 4975 §9: 4 to 32 characters) for
// transaction ids and Message-IDs: 26 base32 characters, 128 bits.
func newIdent() string { return rand.Text() }

// isSessionIDChar reports whether c may appear in a session-id:
// unreserved / "+" / "=" / "/" (RFC 4975 §9).
func isSessionIDChar(c byte) bool {
	return abnf.IsAlnum(c) || strings.IndexByte("-._~+=/", c) >= 0
}

// IsIdent reports whether s is an RFC 4975 ident (alphanum 3*31ident-char,
// the syntax of transaction ids and Message-IDs), allowing it to be as
// short as min characters instead of four (an encapsulated Message-ID is
// kept as the sender's endpoint chose it).
func IsIdent(s string, min int) bool {
	if len(s) < min || len(s) > 32 || len(s) == 0 || !abnf.IsAlnum(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !abnf.IsAlnum(c) && c != '.' && c != '-' && c != '+' && c != '%' && c != '=' {
			return false
		}
	}
	return true
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
		return s[len(prefix):], true
	}
	return s, false
}
