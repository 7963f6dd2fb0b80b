package plugin

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/deferpush/deferpush/plugin/abnf"
)

// AOR is a canonical address of record: "sip:user@host[:port]",
// "sips:user@host[:port]" or "tel:+number". It names one recipient's
// mailbox, so two spellings of the same address must give the same AOR:
// the scheme and host are lower-cased, the user part is kept
// case-sensitive (RFC 3261 §19.1.4) with needless %-escapes decoded, and
// the display name, URI parameters, headers and header parameters are
// dropped. It can only be built by ParseAOR (or read back from text), so
// an AOR is canonical wherever it is found: the store builds keys from it
// without checking it again. The zero AOR is invalid (IsZero).
type AOR struct{ s string }

// ParseAOR canonicalises a SIP or tel address given as an addr-spec
// ("sip:bob@example.com;transport=tcp") or a name-addr as found in To and
// From headers (`"Bob" <sip:bob@Example.COM>;tag=x`). An error wraps
// ErrBadAOR.
func ParseAOR(s string) (AOR, error) {
	a, err := parseAOR(s)
	if err != nil {
		return AOR{}, fmt.Errorf("%w: %q: %s", ErrBadAOR, s, err)
	}
	return a, nil
}

// MustParseAOR is ParseAOR for addresses known to be valid (constants in
// tests and examples); it panics on an invalid one.
func MustParseAOR(s string) AOR {
	a, err := ParseAOR(s)
	if err != nil {
		panic(err)
	}
	return a
}

// String returns the canonical form.
func (a AOR) String() string { return a.s }

// Equal reports whether a and b name the same mailbox (go-cmp uses it).
func (a AOR) Equal(b AOR) bool { return a == b }

// IsZero reports whether a is the zero, invalid AOR.
func (a AOR) IsZero() bool { return a.s == "" }

// MarshalText writes the canonical form (JSON strings, log values).
func (a AOR) MarshalText() ([]byte, error) { return []byte(a.s), nil }

// UnmarshalText parses text as ParseAOR does; empty text gives the zero
// AOR.
func (a *AOR) UnmarshalText(text []byte) error {
	if len(text) == 0 {
		*a = AOR{}
		return nil
	}
	v, err := ParseAOR(string(text))
	if err != nil {
		return err
	}
	*a = v
	return nil
}

// Scheme returns "sip", "sips" or "tel".
func (a AOR) Scheme() string {
	s, _, _ := strings.Cut(a.s, ":")
	return s
}

// User returns the user part (the number for tel).
func (a AOR) User() string {
	_, rest, _ := strings.Cut(a.s, ":")
	u, _, _ := strings.Cut(rest, "@")
	return u
}

// Host returns host[:port], empty for tel.
func (a AOR) Host() string {
	_, h, _ := strings.Cut(a.s, "@")
	return h
}

type aorError string

func (e aorError) Error() string { return string(e) }

func parseAOR(s string) (AOR, error) {
	s = strings.TrimSpace(s)
	// name-addr: optional display name (token or quoted string) then <uri>.
	if i := strings.IndexAny(s, `<"`); i >= 0 {
		rest := s[i:]
		if rest[0] == '"' {
			end := abnf.ClosingQuote(rest)
			if end < 0 {
				return AOR{}, aorError("unterminated display name")
			}
			rest = strings.TrimSpace(rest[end+1:])
			if !strings.HasPrefix(rest, "<") {
				return AOR{}, aorError("missing <uri> after display name")
			}
		}
		end := strings.IndexByte(rest, '>')
		if end < 0 {
			return AOR{}, aorError("missing '>'")
		}
		s = strings.TrimSpace(rest[1:end])
	} else if i := strings.IndexByte(s, ' '); i >= 0 {
		return AOR{}, aorError("space in address")
	}
	scheme, rest, ok := strings.Cut(s, ":")
	if !ok {
		return AOR{}, aorError("missing scheme")
	}
	scheme = strings.ToLower(scheme)
	switch scheme {
	case "sip", "sips":
		return parseSIP(scheme, rest)
	case "tel":
		return parseTel(rest)
	}
	return AOR{}, aorError("unsupported scheme " + strconv.Quote(scheme))
}

func parseSIP(scheme, rest string) (AOR, error) {
	at := strings.LastIndexByte(rest, '@')
	if at < 0 {
		return AOR{}, aorError("missing user part")
	}
	userinfo, hostport := rest[:at], rest[at+1:]
	user, _, _ := strings.Cut(userinfo, ":") // drop a password
	user, err := canonUser(user)
	if err != nil {
		return AOR{}, err
	}
	if i := strings.IndexAny(hostport, ";?"); i >= 0 {
		hostport = hostport[:i]
	}
	hostport, err = canonHostPort(hostport)
	if err != nil {
		return AOR{}, err
	}
	return AOR{scheme + ":" + user + "@" + hostport}, nil
}

// canonUser validates the user part against RFC 3261 "user" and decodes
// %-escapes of unreserved characters (they compare equal to the plain
// character); other escapes keep upper-case hex.
func canonUser(u string) (string, error) {
	if u == "" {
		return "", aorError("empty user part")
	}
	var b strings.Builder
	for i := 0; i < len(u); i++ {
		c := u[i]
		switch {
		case c == '%':
			if i+2 >= len(u) || !abnf.IsHex(u[i+1]) || !abnf.IsHex(u[i+2]) {
				return "", aorError("bad %-escape in user part")
			}
			v, _ := strconv.ParseUint(u[i+1:i+3], 16, 8)
			if isUnreserved(byte(v)) {
				b.WriteByte(byte(v))
			} else {
				b.WriteString("%" + strings.ToUpper(u[i+1:i+3]))
			}
			i += 2
		case isUnreserved(c) || strings.IndexByte("&=+$,;?/", c) >= 0:
			b.WriteByte(c)
		default:
			return "", aorError(fmt.Sprintf("character %q not allowed in user part", c))
		}
	}
	return b.String(), nil
}

func canonHostPort(hp string) (string, error) {
	host, port, hasPort := hp, "", false
	if strings.HasPrefix(hp, "[") {
		end := strings.IndexByte(hp, ']')
		if end < 0 {
			return "", aorError("unterminated IPv6 reference")
		}
		host = hp[:end+1]
		if end == 1 {
			return "", aorError("empty host")
		}
		for i := 1; i < end; i++ {
			if c := hp[i]; !abnf.IsHex(c) && c != ':' && c != '.' {
				return "", aorError("bad IPv6 reference")
			}
		}
		switch after := hp[end+1:]; {
		case after == "":
		case after[0] == ':':
			port, hasPort = after[1:], true
		default:
			return "", aorError("junk after IPv6 reference")
		}
	} else {
		host, port, hasPort = strings.Cut(hp, ":")
		if host == "" {
			return "", aorError("empty host")
		}
		for i := 0; i < len(host); i++ {
			if c := host[i]; !abnf.IsAlnum(c) && c != '-' && c != '.' {
				return "", aorError(fmt.Sprintf("character %q not allowed in host", c))
			}
		}
	}
	host = strings.ToLower(host)
	if !hasPort {
		return host, nil
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 || port[0] == '0' || port[0] == '+' {
		return "", aorError("bad port " + strconv.Quote(port))
	}
	return host + ":" + port, nil
}

// parseTel keeps the number of a tel URI (RFC 3966) without visual
// separators or parameters: "tel:+1-201-555-0123;ext=1" -> "tel:+12015550123".
func parseTel(rest string) (AOR, error) {
	num, _, _ := strings.Cut(rest, ";")
	var b strings.Builder
	for i := 0; i < len(num); i++ {
		c := num[i]
		switch {
		case c >= '0' && c <= '9', c == '*', c == '#':
			b.WriteByte(c)
		case c == '+' && i == 0:
			b.WriteByte(c)
		case c == '-' || c == '.' || c == '(' || c == ')':
		default:
			return AOR{}, aorError(fmt.Sprintf("character %q not allowed in telephone number", c))
		}
	}
	n := b.String()
	if n == "" || n == "+" {
		return AOR{}, aorError("empty telephone number")
	}
	return AOR{"tel:" + n}, nil
}

func isUnreserved(c byte) bool {
	return abnf.IsAlnum(c) || strings.IndexByte("-_.!~*'()", c) >= 0
}

// Registration is the last known binding of an AOR to a contact, as the
// proxy reported it. The admin "push now" reuses it.
type Registration struct {
	AOR       AOR       `json:"aor"`
	Contact   string    `json:"contact"`              // Contact URI
	Expires   time.Time `json:"expires"`              // when the binding ends
	Received  string    `json:"received,omitempty"`   // source address the REGISTER came from
	Instance  string    `json:"instance,omitempty"`   // +sip.instance
	UserAgent string    `json:"user_agent,omitempty"` // User-Agent header
	Path      []string  `json:"path,omitempty"`       // Path header URIs, in order
}
