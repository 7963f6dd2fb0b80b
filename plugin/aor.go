package plugin

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/deferpush/deferpush/plugin/abnf"
)

// AOR is a canonical address of record: "sip:user@host[:port]",
// "sips:user@host[:port]" or "tel:+number[;ext=..][;isub=..][;phone-context=..]".
// It names one recipient's mailbox, so two spellings of the same address
// must give the same AOR: the scheme and host are lower-cased, needless
// %-escapes in the user part are decoded, the display name, URI
// parameters, headers and header parameters are dropped, and the user part
// is compared as the registrar compares it (AORRules). It can only be built
// by parsing (ParseAOR, AORRules.Parse, or reading text back), so an AOR is
// canonical wherever it is found: the store builds keys from it without
// checking it again. The zero AOR is invalid (IsZero).
type AOR struct{ s string }

// MaxAORLength bounds the canonical form of an AOR: it names Redis keys
// and every log line of its user, and no registrar keeps longer ones.
const MaxAORLength = 512

// AORRules say how the registrar of the proxy deferpush serves compares
// addresses of record, which deferpush must follow: a message stored for
// one spelling is pushed at the registration of another only if both give
// the same AOR. The zero value is Kamailio's and OpenSIPS's usrloc
// default: the user part of a SIP AOR compares without case ("Carol" and
// "carol" are one user), although RFC 3261 §19.1.4 makes it
// case-sensitive.
type AORRules struct {
	// CaseSensitiveUser keeps the user part's case, for a registrar that
	// compares it case-sensitively (Kamailio usrloc case_sensitive=1).
	CaseSensitiveUser bool
}

// ParseAOR is AORRules{}.Parse: the user part compares without case.
func ParseAOR(s string) (AOR, error) { return AORRules{}.Parse(s) }

// Parse canonicalises a SIP or tel address given as an addr-spec
// ("sip:bob@example.com;transport=tcp") or a name-addr as found in To and
// From headers (`"Bob" <sip:bob@Example.COM>;tag=x`). An error wraps
// ErrBadAOR and says what is wrong.
func (r AORRules) Parse(s string) (AOR, error) {
	if len(s) > MaxAORLength*4 {
		// Far too long to be an address, whatever it would canonicalise to.
		return AOR{}, fmt.Errorf("%w: %d octets, over %d", ErrBadAOR, len(s), MaxAORLength)
	}
	a, err := parseAOR(s)
	if err == nil && len(a.s) > MaxAORLength {
		err = aorError(fmt.Sprintf("%d octets, over %d", len(a.s), MaxAORLength))
	}
	if err != nil {
		return AOR{}, fmt.Errorf("%w: %q: %s", ErrBadAOR, clipAOR(s), err)
	}
	if !r.CaseSensitiveUser {
		a = a.foldUser()
	}
	return a, nil
}

// foldUser lower-cases the user part of a SIP AOR, but for the hex digits
// of %-escapes, which the canonical form keeps upper-case.
func (a AOR) foldUser() AOR {
	if s := a.Scheme(); s != "sip" && s != "sips" {
		return a
	}
	b := []byte(a.s)
	end := strings.LastIndexByte(a.s, '@')
	for i := strings.IndexByte(a.s, ':') + 1; i < end; i++ {
		switch c := b[i]; {
		case c == '%':
			i += 2
		case 'A' <= c && c <= 'Z':
			b[i] = c + 'a' - 'A'
		}
	}
	return AOR{string(b)}
}

// clipAOR shortens an address quoted in an error.
func clipAOR(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
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

// UnmarshalText reads an AOR written by MarshalText (a store's record, a
// JSON document): it is parsed again but its user part keeps its case, as
// whatever AORRules made it; empty text gives the zero AOR.
func (a *AOR) UnmarshalText(text []byte) error {
	if len(text) == 0 {
		*a = AOR{}
		return nil
	}
	v, err := AORRules{CaseSensitiveUser: true}.Parse(string(text))
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

// parseTel canonicalises a tel URI (RFC 3966): the number without visual
// separators, then the parameters that are part of its identity, in a
// fixed order: ext (an extension), isub (an ISDN subaddress) and
// phone-context (the context of a local number: a domain, lower-cased, or
// a global number prefix). "tel:+1-201-555-0123;ext=1" is
// "tel:+12015550123;ext=1", another user than "tel:+12015550123;ext=2".
// Other parameters are dropped.
func parseTel(rest string) (AOR, error) {
	num, params, _ := strings.Cut(rest, ";")
	n, err := telDigits(num, true)
	if err != nil {
		return AOR{}, err
	}
	var ext, isub, ctx string
	for p := range strings.SplitSeq(params, ";") {
		name, value, _ := strings.Cut(p, "=")
		switch strings.ToLower(strings.TrimSpace(name)) {
		case "ext":
			ext, err = telDigits(value, false)
		case "isub":
			isub, err = telToken(value)
		case "phone-context":
			ctx, err = telContext(value)
		}
		if err != nil {
			return AOR{}, fmt.Errorf("%s: %w", name, err)
		}
	}
	if ext != "" {
		n += ";ext=" + ext
	}
	if isub != "" {
		n += ";isub=" + isub
	}
	if ctx != "" {
		n += ";phone-context=" + ctx
	}
	return AOR{"tel:" + n}, nil
}

// telDigits removes visual separators from a number (a leading '+' only
// when global is allowed).
func telDigits(num string, global bool) (string, error) {
	var b strings.Builder
	for i := 0; i < len(num); i++ {
		c := num[i]
		switch {
		case c >= '0' && c <= '9', c == '*', c == '#':
			b.WriteByte(c)
		case c == '+' && i == 0 && global:
			b.WriteByte(c)
		case c == '-' || c == '.' || c == '(' || c == ')':
		default:
			return "", aorError(fmt.Sprintf("character %q not allowed in telephone number", c))
		}
	}
	n := b.String()
	if n == "" || n == "+" {
		return "", aorError("empty telephone number")
	}
	return n, nil
}

// telToken checks an isub value (uric characters), lower-casing escapes.
func telToken(v string) (string, error) {
	if v == "" {
		return "", aorError("empty value")
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; !isUnreserved(c) && strings.IndexByte("%;/?:@&=+$,", c) < 0 {
			return "", aorError(fmt.Sprintf("character %q not allowed", c))
		}
	}
	return v, nil
}

// telContext is a phone-context: a global number prefix, or a domain name
// (compared without case).
func telContext(v string) (string, error) {
	if strings.HasPrefix(v, "+") {
		return telDigits(v, true)
	}
	if v == "" {
		return "", aorError("empty phone-context")
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; !abnf.IsAlnum(c) && c != '-' && c != '.' {
			return "", aorError(fmt.Sprintf("character %q not allowed in phone-context", c))
		}
	}
	return strings.ToLower(v), nil
}

func isUnreserved(c byte) bool {
	return abnf.IsAlnum(c) || strings.IndexByte("-_.!~*'()", c) >= 0
}

// MaxExpires bounds how far ahead a registration may end: hook decoders
// refuse an expiry beyond it (a registrar grants an hour or so; past a
// year the value is an error, and past 292 years it overflows a
// time.Duration).
const MaxExpires = 365 * 24 * time.Hour

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
	// PagerOnly says that the client refused an MSRP session during this
	// registration (415, 488 or 606 to the push's INVITE, or an answer
	// without a usable MSRP m-line): under delivery auto its pushes go
	// straight to pager mode. Settings.SetPagerOnly sets it; SetContact
	// keeps it while the binding (Binding) stays the same, so a refresh
	// keeps it and a new device or contact starts without it.
	PagerOnly bool `json:"pager_only,omitempty"`
	// At is when the proxy handled the REGISTER, by the proxy's clock
	// (the hook's "at"); Settings.SetContact orders one contact's
	// registrations by it. Zero: unknown, not ordered. Not stored.
	At time.Time `json:"-"`
}

// Unregistration is a contact the proxy removed: the client unregistered
// it, or it expired.
type Unregistration struct {
	AOR     AOR
	Contact string    // the contact removed; "" for every contact of AOR
	At      time.Time // as Registration.At; zero: unknown, not ordered
}

// Binding names the device behind a registration: its +sip.instance
// (RFC 5626) when it has one, which survives a change of contact
// address, else its contact URI.
func (r Registration) Binding() string {
	if r.Instance != "" {
		return r.Instance
	}
	return r.Contact
}
