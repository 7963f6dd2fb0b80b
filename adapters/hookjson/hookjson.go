// Package hookjson reads the JSON values that the proxies' route scripts
// (adapters/kamailio, adapters/opensips) write into hook bodies: a script
// variable may be unset (Kamailio prints "<null>" for it inside a
// string), a number may come as a string (a value copied through a string
// variable), and a member may be missing. Each reads as "absent" the same
// way for every proxy. Text and SIPURI check the members that deferpush
// copies into the SIP requests it sends, for every proxy alike.
package hookjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/emiago/sipgo/sip"
)

// Null is how Kamailio prints an unset variable inside a string.
const Null = "<null>"

// String is a string member: surrounding white space is dropped, and
// Null reads as absent (empty).
type String string

// String returns the value, or "" when it is Null.
func (s String) String() string {
	v := strings.TrimSpace(string(s))
	if v == Null {
		return ""
	}
	return v
}

// Int is an integer given as a JSON number or a numeric string; null, ""
// and Null leave it unset.
type Int struct {
	Set bool
	N   int64
}

// UnmarshalJSON reads a number, a numeric string or an absent value.
func (i *Int) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if string(b) == "null" {
		return nil
	}
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		if s = strings.TrimSpace(s); s == "" || s == Null {
			return nil
		}
		b = []byte(s)
	}
	n, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil {
		return fmt.Errorf("not an integer: %s", b)
	}
	i.Set, i.N = true, n
	return nil
}

// At is the proxy's time of a registration event, which the store orders
// one contact's registrations by: "<seconds>.<microseconds>", where the
// part after the dot is an integer count of microseconds, zero-padded or
// not (Kamailio's $TV(s).$TV(u)), or integer microseconds since the epoch
// (OpenSIPS's $Ts with $Tsm padded to six digits), as a string or a JSON
// number; the same forms the Redis functions dp_register and
// dp_unregister take. null, "" and Null leave it unset.
type At struct {
	Set bool
	T   time.Time
}

// maxAt bounds At at the year 9999, far below int64 microseconds.
const maxAt = 253402300799 * 1000000

// UnmarshalJSON reads a time in one of At's forms or an absent value.
func (a *At) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if string(b) == "null" {
		return nil
	}
	s := string(b)
	if len(b) > 0 && b[0] == '"' {
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		if s = strings.TrimSpace(s); s == "" || s == Null {
			return nil
		}
	}
	us, ok := micros(s)
	if !ok || us > maxAt {
		return fmt.Errorf("at: not a time (<seconds>.<microseconds> or integer microseconds): %.40q", s)
	}
	a.Set, a.T = true, time.UnixMicro(us).UTC()
	return nil
}

// micros reads At's two forms as library.lua's micros does.
func micros(s string) (int64, bool) {
	sec, us, dotted := strings.Cut(s, ".")
	if !dotted {
		if !digits(s, 17) {
			return 0, false
		}
		n, err := strconv.ParseInt(s, 10, 64)
		return n, err == nil
	}
	if !digits(sec, 12) || !digits(us, 6) {
		return 0, false
	}
	n, _ := strconv.ParseInt(sec, 10, 64)
	u, _ := strconv.ParseInt(us, 10, 64)
	return n*1000000 + u, true
}

// digits reports whether s is 1 to max ASCII digits.
func digits(s string, max int) bool {
	if s == "" || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// Text checks a member that deferpush may copy into a SIP message it
// sends (a Route from a Path, a Request-URI from a contact) or into the
// store: a control character (an octet below 0x20, or DEL) would end a
// header line there and start another. No proxy puts one in these
// values; a body that has one is not the proxy's.
func Text(s string) error {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			return fmt.Errorf("control character %#02x at offset %d", c, i)
		}
	}
	return nil
}

// Texts checks fields given as name, value pairs with Text, and returns
// the name of the first that fails, with Text's error.
func Texts(nameValues ...string) (string, error) {
	for i := 0; i+1 < len(nameValues); i += 2 {
		if err := Text(nameValues[i+1]); err != nil {
			return nameValues[i], err
		}
	}
	return "", nil
}

// SIPURI checks a contact URI of a registration, which the push sends
// its INVITE or MESSAGE to: no control characters (Text), a sip: or
// sips: URI that sipgo parses (as the push does), with a host (a name,
// an IPv4 address or an [IPv6] reference) and, when it names a port, one
// from 1 to 65535.
func SIPURI(s string) error {
	if err := Text(s); err != nil {
		return err
	}
	// RFC 3261 §25.1: a URI is ASCII without blanks; other octets are
	// %-escaped. sipgo parses them, and the push would send them.
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 0x80 || c == ' ' {
			return fmt.Errorf("octet %#02x at offset %d: a SIP URI is ASCII without blanks (RFC 3261 §25.1; escape others as %%XX)", c, i)
		}
	}
	var u sip.Uri
	if err := sip.ParseUri(s, &u); err != nil {
		return fmt.Errorf("not a SIP URI: %v", err)
	}
	scheme, rest, _ := strings.Cut(s, ":")
	if !strings.EqualFold(scheme, "sip") && !strings.EqualFold(scheme, "sips") {
		return fmt.Errorf("scheme %.20q: want sip or sips", scheme)
	}
	// The user part may hold ';' and '?' but never '@' (RFC 3261 §25.1),
	// and neither may the parameters or headers: the host starts after
	// the last '@' and ends at the first ';' or '?' after it.
	hostport := rest[strings.LastIndexByte(rest, '@')+1:]
	// A headers component (?name=value) is not allowed in a Request-URI
	// (RFC 3261 §19.1.1, Table 1), and a request built from the URI would
	// take its headers as header fields (§19.1.5): a client could steer
	// the push's requests (?Route=...).
	if strings.IndexByte(hostport, '?') >= 0 {
		return errors.New("a URI headers component (?...) is not allowed in a contact")
	}
	if i := strings.IndexByte(hostport, ';'); i >= 0 {
		hostport = hostport[:i]
	}
	return checkHostPort(hostport)
}

// Path checks the URIs of a registration's Path (RFC 3327), which become
// the Route of the push's requests: each a SIP URI as SIPURI checks a
// contact. One that is not would leave the push without its route: sent
// to the contact directly, past the edge proxy the client registered
// through.
func Path(uris []string) error {
	for i, u := range uris {
		if err := SIPURI(u); err != nil {
			return fmt.Errorf("element %d (%.60q): %v", i+1, u, err)
		}
	}
	return nil
}

// checkHostPort checks RFC 3261's hostport: a host name or IPv4 address
// (letters, digits, '-' and '.') or an IPv6 reference, and an optional
// port from 1 to 65535.
func checkHostPort(hp string) error {
	host, port, hasPort := hp, "", false
	if strings.HasPrefix(hp, "[") {
		end := strings.IndexByte(hp, ']')
		if end < 0 {
			return errors.New("unterminated IPv6 reference")
		}
		if a, err := netip.ParseAddr(hp[1:end]); err != nil || !a.Is6() || a.Zone() != "" {
			return fmt.Errorf("bad IPv6 reference %.50q", hp[:end+1])
		}
		switch after := hp[end+1:]; {
		case after == "":
		case after[0] == ':':
			port, hasPort = after[1:], true
		default:
			return fmt.Errorf("junk %.20q after the IPv6 reference", after)
		}
	} else {
		host, port, hasPort = strings.Cut(hp, ":")
		if host == "" {
			return errors.New("no host")
		}
		for i := 0; i < len(host); i++ {
			if c := host[i]; !isAlnum(c) && c != '-' && c != '.' {
				return fmt.Errorf("character %q not allowed in the host", string(rune(c)))
			}
		}
	}
	if !hasPort {
		return nil
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 || port[0] == '+' || port[0] == '-' {
		return fmt.Errorf("port %.20q: want 1 to 65535", port)
	}
	return nil
}

// isAlnum is plugin/abnf's IsAlnum, which the import rules keep out of
// the adapters.
func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// foldKey is k case-folded as bytes.EqualFold compares: each rune
// replaced by the least of its simple case folding orbit (K, k and the
// Kelvin sign alike).
func foldKey(k []byte) string {
	var b strings.Builder
	b.Grow(len(k))
	for _, r := range string(k) {
		least := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			least = min(least, f)
		}
		b.WriteRune(least)
	}
	return b.String()
}

// DuplicateKey returns the first member name that appears twice in one
// object of the JSON text b — twice as encoding/json matches names to
// fields, without regard to case (bytes.EqualFold: "aor" and "AOR",
// "source" and "ſource") — and whether there is one. encoding/json keeps
// the last of them silently, another reader may keep the first (RFC 8259
// §4: names SHOULD be unique, behaviour is unpredictable otherwise), so a
// body with one is refused rather than read one way. b is expected to be
// valid JSON (decode it first); on other input the answer means nothing.
func DuplicateKey(b []byte) (string, bool) {
	// One stack of open values and one of the member names seen in them:
	// a frame's names are keys[base:] while it is the innermost; an
	// object with many names moves them to a set.
	type frame struct {
		object, wantKey bool
		base            int
		set             map[string]struct{}
	}
	var frames [8]frame
	var names [32][]byte
	stack, keys := frames[:0], names[:0]
	for i := 0; i < len(b); i++ {
		switch c := b[i]; c {
		case '{', '[':
			stack = append(stack, frame{object: c == '{', wantKey: c == '{', base: len(keys)})
		case '}', ']':
			if n := len(stack); n > 0 {
				keys = keys[:stack[n-1].base]
				stack = stack[:n-1]
			}
		case ',':
			if n := len(stack); n > 0 && stack[n-1].object {
				stack[n-1].wantKey = true
			}
		case ':':
			if n := len(stack); n > 0 {
				stack[n-1].wantKey = false
			}
		case '"':
			start := i + 1
			escaped := false
			for i++; i < len(b) && b[i] != '"'; i++ {
				if b[i] == '\\' {
					escaped = true
					i++
				}
			}
			n := len(stack)
			if n == 0 || !stack[n-1].wantKey || i >= len(b) {
				continue
			}
			f := &stack[n-1]
			key := b[start:i]
			if escaped {
				var s string
				if json.Unmarshal(b[start-1:i+1], &s) == nil {
					key = []byte(s)
				}
			}
			if f.set != nil {
				folded := foldKey(key)
				if _, dup := f.set[folded]; dup {
					return string(key), true
				}
				f.set[folded] = struct{}{}
				continue
			}
			for _, k := range keys[f.base:] {
				if bytes.EqualFold(k, key) {
					return string(key), true
				}
			}
			keys = append(keys, key)
			if len(keys)-f.base > 16 {
				f.set = make(map[string]struct{}, 2*(len(keys)-f.base))
				for _, k := range keys[f.base:] {
					f.set[foldKey(k)] = struct{}{}
				}
				keys = keys[:f.base]
			}
		}
	}
	return "", false
}
