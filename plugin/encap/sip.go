package encap

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/deferpush/deferpush/plugin/abnf"
)

// dateLayout is the rfc1123-date of RFC 3261 §20.17: always GMT. The
// standard library's time.RFC1123 would print "UTC" for a UTC time.
const dateLayout = "Mon, 02 Jan 2006 15:04:05 GMT"

var crlf2 = []byte("\r\n\r\n")

// Canonical keys of the headers this package reads. Every other header is
// kept as bytes and never interpreted.
const (
	keyCallID        = "Call-ID"
	keyFrom          = "From"
	keyTo            = "To"
	keyDate          = "Date"
	keyPAI           = "P-Asserted-Identity"
	keySubject       = "Subject"
	keyContentType   = "Content-Type"
	keyContentLength = "Content-Length"
	keyVia           = "Via"
)

// sipKey maps a header name as written, long or compact (RFC 3261 §7.3.3),
// to its canonical key; "" for headers this package does not read.
func sipKey(name []byte) string {
	if len(name) == 1 {
		switch name[0] | 0x20 {
		case 'i':
			return keyCallID
		case 'f':
			return keyFrom
		case 't':
			return keyTo
		case 's':
			return keySubject
		case 'c':
			return keyContentType
		case 'l':
			return keyContentLength
		case 'v':
			return keyVia
		}
		return ""
	}
	for _, k := range [...]string{keyCallID, keyFrom, keyTo, keyDate, keyPAI, keySubject, keyContentType, keyContentLength, keyVia} {
		if equalFold(k, name) {
			return k
		}
	}
	return ""
}

// equalFold is strings.EqualFold for ASCII header names, without
// converting name to a string.
func equalFold(k string, name []byte) bool {
	if len(k) != len(name) {
		return false
	}
	for i := range len(k) {
		a, b := k[i], name[i]
		if 'A' <= a && a <= 'Z' {
			a += 'a' - 'A'
		}
		if 'A' <= b && b <= 'Z' {
			b += 'a' - 'A'
		}
		if a != b {
			return false
		}
	}
	return true
}

// singleValued says which read headers may appear only once: two Call-IDs
// or two Content-Lengths are how messages get smuggled past a check.
func singleValued(key string) bool { return key != keyPAI && key != keyVia }

// startMode says what the first line of a SIP text must be.
type startMode int

const (
	startRequest  startMode = iota // a request line (a stored MESSAGE, an INVITE)
	startAny                       // a request or status line (message/sip)
	startOptional                  // a start line or none (message/sipfrag, RFC 3420)
)

// sipHeader is one header field of a parsed SIP text.
type sipHeader struct {
	key        string // canonical key, "" when not read
	value      string // unfolded and trimmed; only when key != ""
	start, end int    // span in the input, continuation lines and CRLF included
}

// sipMsg is a parsed SIP message or sipfrag. Body aliases the input.
type sipMsg struct {
	start   string // start line without CRLF; "" for a sipfrag without one
	method  string // of a request line
	uri     string // of a request line
	headers []sipHeader
	body    []byte
}

// get returns the value of a single-valued header.
func (m *sipMsg) get(key string) (string, bool) {
	for _, h := range m.headers {
		if h.key == key {
			return h.value, true
		}
	}
	return "", false
}

// joined returns the values of a multi-valued header joined by ", ", the
// equivalence RFC 3261 §7.3 allows for comma-separated lists.
func (m *sipMsg) joined(key string) string {
	var vs []string
	for _, h := range m.headers {
		if h.key == key {
			vs = append(vs, h.value)
		}
	}
	return strings.Join(vs, ", ")
}

// date parses the Date header, if any.
func (m *sipMsg) date() (time.Time, bool, error) {
	v, ok := m.get(keyDate)
	if !ok {
		return time.Time{}, false, nil
	}
	t, err := parseDate(v)
	return t, true, err
}

func parseDate(v string) (time.Time, error) {
	t, err := time.Parse(dateLayout, v)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: Date %q is not in RFC 1123 GMT form", ErrMalformed, v)
	}
	return t, nil
}

// HeadLimits bound the header section of a request ReadMessage takes: a
// client parses a stored message again, and a header no client would take
// is refused before it is stored. A zero field is no limit.
type HeadLimits struct {
	MaxLine    int // one header, its continuation lines included, CRLFs included
	MaxHead    int // the start line and every header
	MaxHeaders int // header fields
}

// parseSIP parses a SIP message (RFC 3261 §7) or sipfrag (RFC 3420). Lines
// must end in CRLF; a control character other than HTAB in the header
// section is refused. A Content-Length, when present, must equal the length
// of what follows the blank line; when absent, the body is all that follows
// (the enclosing frame delimits it, as for UDP). lim bounds the header
// section (ErrTooLarge beyond).
func parseSIP(raw []byte, mode startMode, lim HeadLimits) (*sipMsg, error) {
	m := &sipMsg{headers: make([]sipHeader, 0, 16)}
	head, bodyOff := raw, len(raw)
	if i := bytes.Index(raw, crlf2); i >= 0 {
		head, bodyOff = raw[:i+2], i+4
	} else if mode != startOptional {
		if lim.MaxHead > 0 && len(raw) > lim.MaxHead {
			return nil, tooLarge("header section over %d octets", lim.MaxHead)
		}
		return nil, malformed("no blank line after the headers")
	}
	if len(head) == 0 && mode != startOptional {
		return nil, malformed("empty message")
	}
	if lim.MaxHead > 0 && len(head) > lim.MaxHead {
		return nil, tooLarge("header section over %d octets", lim.MaxHead)
	}
	first := true
	for off := 0; off < len(head); {
		i := bytes.IndexByte(head[off:], '\n')
		if i < 0 {
			return nil, malformed("line %q not ended by CRLF", clip(head[off:]))
		}
		if i == 0 || head[off+i-1] != '\r' {
			return nil, malformed("bare LF in the headers")
		}
		line, next := head[off:off+i-1], off+i+1
		if err := checkLine(line); err != nil {
			return nil, err
		}
		switch {
		case first && (mode != startOptional || !isHeaderLine(line)):
			if err := m.parseStart(line, mode); err != nil {
				return nil, err
			}
		case line[0] == ' ' || line[0] == '\t':
			if len(m.headers) == 0 {
				return nil, malformed("continuation line before any header")
			}
			h := &m.headers[len(m.headers)-1]
			h.end = next
			if h.key != "" {
				h.value = strings.TrimSpace(h.value + " " + strings.Trim(string(line), " \t"))
			}
		default:
			if err := m.addHeader(line, off, next, lim); err != nil {
				return nil, err
			}
		}
		if n := len(m.headers); n > 0 && lim.MaxLine > 0 && m.headers[n-1].end-m.headers[n-1].start > lim.MaxLine {
			name, _, _ := bytes.Cut(head[m.headers[n-1].start:min(m.headers[n-1].start+64, len(head))], []byte(":"))
			return nil, tooLarge("header %q over %d octets", clip(name), lim.MaxLine)
		}
		first = false
		off = next
	}
	m.body = raw[bodyOff:]
	if v, ok := m.get(keyContentLength); ok {
		n, err := strconv.ParseUint(v, 10, 31)
		if err != nil {
			return nil, malformed("Content-Length %q is not a number of octets", clip([]byte(v)))
		}
		if int(n) != len(m.body) {
			return nil, malformed("Content-Length is %d but the body has %d octets", n, len(m.body))
		}
	}
	return m, nil
}

// checkLine refuses a bare CR and control characters other than HTAB.
func checkLine(line []byte) error {
	for _, c := range line {
		switch {
		case c == '\r':
			return malformed("bare CR in the headers")
		case c < 0x20 && c != '\t' || c == 0x7f:
			return malformed("control character 0x%02x in the header section", c)
		}
	}
	return nil
}

// addHeader parses one header line spanning [start, end) of the input.
func (m *sipMsg) addHeader(line []byte, start, end int, lim HeadLimits) error {
	h, err := parseSIPHeader(line)
	if err != nil {
		return err
	}
	if h.key != "" && singleValued(h.key) {
		if _, dup := m.get(h.key); dup {
			return malformed("more than one %s header", h.key)
		}
	}
	if lim.MaxHeaders > 0 && len(m.headers) >= lim.MaxHeaders {
		return tooLarge("more than %d headers", lim.MaxHeaders)
	}
	h.start, h.end = start, end
	m.headers = append(m.headers, h)
	return nil
}

func (m *sipMsg) parseStart(line []byte, mode startMode) error {
	m.start = string(line)
	f := strings.Split(m.start, " ")
	if mode != startRequest && len(f) >= 3 && strings.EqualFold(f[0], "SIP/2.0") {
		if len(f[1]) != 3 || strings.Trim(f[1], "0123456789") != "" {
			return malformed("status line %q", clip(line))
		}
		return nil
	}
	if len(f) != 3 || !abnf.IsSIPToken(f[0]) || f[1] == "" || !strings.EqualFold(f[2], "SIP/2.0") || hasCTL(f[1]) {
		return malformed("not a SIP message: request line %q is not \"Method SP Request-URI SP SIP/2.0\"", clip(line))
	}
	m.method, m.uri = f[0], f[1]
	return nil
}

// isHeaderLine reports whether a sipfrag's first line is a header rather
// than a start line: a start line has a space or a '/' before any colon.
func isHeaderLine(line []byte) bool {
	c := bytes.IndexByte(line, ':')
	return c > 0 && abnf.IsSIPToken(bytes.TrimRight(line[:c], " \t"))
}

func parseSIPHeader(line []byte) (sipHeader, error) {
	c := bytes.IndexByte(line, ':')
	if c < 0 {
		return sipHeader{}, malformed("header line %q has no colon", clip(line))
	}
	name := bytes.TrimRight(line[:c], " \t")
	if !abnf.IsSIPToken(name) {
		return sipHeader{}, malformed("header name %q", clip(name))
	}
	h := sipHeader{key: sipKey(name)}
	if h.key != "" {
		h.value = strings.Trim(string(line[c+1:]), " \t")
	}
	return h, nil
}

func hasCTL(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] == 0x7f {
			return true
		}
	}
	return false
}

// clip shortens input quoted in an error message.
func clip(b []byte) string {
	const max = 40
	if len(b) > max {
		return string(b[:max]) + "..."
	}
	return string(b)
}

// Request is what the store needs to know of an incoming SIP request.
type Request struct {
	Method      string
	RequestURI  string
	CallID      string
	From        string    // header value as written, tag included
	To          string    // header value as written
	ContentType string    // "" when there is no body
	Date        time.Time // zero when the request has no Date header
	Body        []byte    // aliases the input
}

// ParseRequest checks that raw is one SIP request, CRLF-delimited, with
// Call-ID, From and To (each From and To an address with a URI), a valid
// Content-Type when it has a body, a Content-Length
// (when present) equal to the body's length and a Date (when present) in
// RFC 1123 GMT form, and returns what the store needs of it. Errors wrap
// ErrMalformed.
func ParseRequest(raw []byte) (Request, error) {
	m, err := parseRequest(raw)
	if err != nil {
		return Request{}, err
	}
	r := Request{Method: m.method, RequestURI: m.uri, Body: m.body}
	r.CallID, _ = m.get(keyCallID)
	r.From, _ = m.get(keyFrom)
	r.To, _ = m.get(keyTo)
	r.ContentType, _ = m.get(keyContentType)
	r.Date, _, _ = m.date()
	return r, nil
}

// parseRequest is ParseRequest's check, keeping the parsed form.
func parseRequest(raw []byte) (*sipMsg, error) {
	m, err := parseSIP(raw, startRequest, HeadLimits{})
	if err != nil {
		return nil, err
	}
	return m, m.checkRequest()
}

// checkRequest checks what a request to store must have: Call-ID, From
// and To (addresses with a URI), a Content-Type when there is a body, a
// Date (when present) in RFC 1123 GMT form.
func (m *sipMsg) checkRequest() error {
	for _, k := range [...]string{keyCallID, keyFrom, keyTo} {
		v, ok := m.get(k)
		if !ok || v == "" {
			return malformed("no %s header", k)
		}
		if k != keyCallID {
			if _, err := cpimAddress(v); err != nil {
				return fmt.Errorf("%s: %w", k, err)
			}
		}
	}
	ct, ok := m.get(keyContentType)
	if len(m.body) > 0 && !ok {
		return malformed("a body without Content-Type")
	}
	if ok && !validMediaType(ct) {
		return malformed("Content-Type %q is not a media type", clip([]byte(ct)))
	}
	_, _, err := m.date()
	return err
}

// Incoming is a SIP request read for storing by ReadMessage.
type Incoming struct {
	Request
	// Vias are the Via header values, in order, one per hop.
	Vias []string
	// FromURI is the URI of the From header, without display name or tag.
	FromURI string
	// ToURI is the URI of the To header.
	ToURI string
	// Stored is the request as the store keeps it: with a Date header
	// added when it had none (AddDate) and without the sender's
	// Authorization and Proxy-Authorization; the input itself when
	// neither applies.
	Stored []byte
	// Added counts the octets of the Date header Stored has and the
	// request had not: deferpush's, not the sender's.
	Added int
}

// ReadMessage reads a SIP request to store, in one pass over raw: the
// header section within lim (ErrTooLarge beyond), CRLF line ends and no
// control characters, a request line (a response is refused), one Call-ID,
// From, To, CSeq and Content-Length at most, a Content-Length equal to the
// body's length, at least one Via and each naming a transport and a host
// (RFC 3261 §20.42), From and To addresses with a URI, a Content-Type for a
// body, a Date (when present) in RFC 1123 GMT form. It returns what the
// store needs, and the request dated with now when it had no Date. Errors
// wrap ErrMalformed or ErrTooLarge and say what is wrong.
func ReadMessage(raw []byte, now time.Time, lim HeadLimits) (Incoming, error) {
	if len(raw) == 0 {
		return Incoming{}, malformed("empty")
	}
	m, err := parseSIP(raw, startAny, lim)
	if err != nil {
		return Incoming{}, err
	}
	if m.method == "" {
		return Incoming{}, malformed("a response, not a request")
	}
	in := Incoming{Request: Request{Method: m.method, RequestURI: m.uri, Body: m.body}}
	for _, h := range m.headers {
		if h.key == keyVia {
			for v := range strings.SplitSeq(h.value, ",") {
				in.Vias = append(in.Vias, strings.TrimSpace(v))
			}
		}
	}
	if len(in.Vias) == 0 {
		return Incoming{}, malformed("no Via header")
	}
	for _, v := range in.Vias {
		if !validVia(v) {
			return Incoming{}, malformed("bad Via header %q", clip([]byte(v)))
		}
	}
	if err := m.checkRequest(); err != nil {
		return Incoming{}, err
	}
	in.CallID, _ = m.get(keyCallID)
	in.From, _ = m.get(keyFrom)
	in.To, _ = m.get(keyTo)
	in.ContentType, _ = m.get(keyContentType)
	in.Date, _, _ = m.date()
	_, in.FromURI, _ = splitAddress(in.From)
	_, in.ToURI, _ = splitAddress(in.To)
	in.Stored = m.storedForm(raw, now)
	if _, dated := m.get(keyDate); !dated {
		in.Added = len("Date: " + dateLayout + "\r\n")
	}
	return in, nil
}

// validVia reports whether v is a via-parm: "SIP/2.0/" transport, white
// space, then a sent-by host (RFC 3261 §20.42, §25.1).
func validVia(v string) bool {
	proto, rest, ok := strings.Cut(v, "/")
	if !ok || !strings.EqualFold(strings.TrimSpace(proto), "SIP") {
		return false
	}
	version, rest, ok := strings.Cut(rest, "/")
	if !ok || strings.TrimSpace(version) != "2.0" {
		return false
	}
	rest = strings.TrimLeft(rest, " \t")
	i := strings.IndexAny(rest, " \t")
	if i <= 0 || !abnf.IsSIPToken(rest[:i]) {
		return false
	}
	host := strings.TrimLeft(rest[i:], " \t")
	host, _, _ = strings.Cut(host, ";")
	host = strings.TrimSpace(host)
	return host != "" && !hasCTL(host)
}

// AddDate returns the SIP request raw with a Date header (RFC 3261 §20.17)
// holding now, inserted right after the Call-ID header as in the seed's
// first example. Every other byte is kept, so Content-Length stays right.
// A request that already has a Date is returned as is: raw itself, not a
// copy. raw is checked as by ParseRequest.
func AddDate(raw []byte, now time.Time) ([]byte, error) {
	m, err := parseRequest(raw)
	if err != nil {
		return nil, err
	}
	return m.dated(raw, now), nil
}

// dated is AddDate on a parsed request.
func (m *sipMsg) dated(raw []byte, now time.Time) []byte {
	return m.rewrite(raw, nil, m.missingDate(now))
}

// missingDate is the Date header line holding now when m has none, ""
// when it has one.
func (m *sipMsg) missingDate(now time.Time) string {
	if _, ok := m.get(keyDate); ok {
		return ""
	}
	return "Date: " + now.UTC().Format(dateLayout) + "\r\n"
}

// rewrite returns raw, m's bytes, less the header lines whose name drop
// reports (drop nil: none), with the line insert (when not "") after the
// last Call-ID header. Every other byte is kept, so Content-Length stays
// right; raw itself, not a copy, when nothing changes.
func (m *sipMsg) rewrite(raw []byte, drop func(name []byte) bool, insert string) []byte {
	if len(m.headers) == 0 {
		return raw
	}
	at, dropped := -1, false
	for i, h := range m.headers {
		if h.key == keyCallID {
			at = i
		}
		dropped = dropped || drop != nil && drop(headerName(raw[h.start:h.end]))
	}
	if !dropped && (insert == "" || at < 0) {
		return raw
	}
	out := make([]byte, 0, len(raw)+len(insert))
	out = append(out, raw[:m.headers[0].start]...)
	for i, h := range m.headers {
		if line := raw[h.start:h.end]; drop == nil || !drop(headerName(line)) {
			out = append(out, line...)
		}
		if i == at {
			out = append(out, insert...)
		}
	}
	// The blank line and the body.
	return append(out, raw[m.headers[len(m.headers)-1].end:]...)
}

// storedForm is dated, less the sender's credentials (isCredentials):
// the proxy that asked for them has checked them, and kept they would sit
// in the store for the message's lifetime, readable by whoever reads the
// database (and replayable while their nonce lives). Every other byte is
// kept, so Content-Length stays right; raw itself when nothing changes.
func (m *sipMsg) storedForm(raw []byte, now time.Time) []byte {
	return m.rewrite(raw, isCredentials, m.missingDate(now))
}

// headHeaders are the INVITE headers a session head keeps, in the seed's
// order. Via, Contact, Content-* and the SDP are left out: they describe
// the sender's session, which the push does not recreate.
var headHeaders = [...]string{keyTo, keyFrom, keyCallID, keyDate, keyPAI, keySubject}

// SessionHead returns the part of the INVITE of an MSRP session that is
// stored with each message received in it: the request line, then To,
// From, Call-ID, Date, P-Asserted-Identity and Subject (those present, in
// this order, values unfolded), then the blank line ending a SIP header
// section. A Date holding now is added when the INVITE has none. rawInvite
// is checked as by ParseRequest and must be an INVITE.
func SessionHead(rawInvite []byte, now time.Time) ([]byte, error) {
	m, err := parseRequest(rawInvite)
	if err != nil {
		return nil, err
	}
	if m.method != "INVITE" {
		return nil, malformed("session head from a %s, not an INVITE", m.method)
	}
	var b bytes.Buffer
	b.Grow(256)
	b.WriteString("INVITE " + m.uri + " SIP/2.0\r\n")
	for _, k := range headHeaders {
		n := 0
		for _, h := range m.headers {
			if h.key == k {
				b.WriteString(k + ": " + h.value + "\r\n")
				n++
			}
		}
		if k == keyDate && n == 0 {
			b.WriteString("Date: " + now.UTC().Format(dateLayout) + "\r\n")
		}
	}
	b.WriteString("\r\n")
	return b.Bytes(), nil
}
