package ingress

import (
	"bytes"
	"errors"
	"fmt"
	"iter"
	"strconv"
	"strings"
	"time"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/plugin/encap"
)

// headLimits bound a request's header section, whatever the operator's
// max_message_size: a stored message is parsed again by every client it
// is pushed to, and a header no client would take is refused here, with
// 513 Message Too Large.
var headLimits = encap.HeadLimits{
	MaxLine:    8 << 10,  // one header line, folded lines included
	MaxHead:    64 << 10, // the start line and every header
	MaxHeaders: 256,
}

// Deferred turns a raw SIP MESSAGE for an offline user into the message to
// store, read in one pass by encap.ReadMessage: checked, dated (a Date
// header is added when it has none), the sender's Authorization and
// Proxy-Authorization left out, and every other byte kept, so the
// Call-ID and identity headers reach the client intact. recipient, when
// not empty, is the AOR the proxy looked up; otherwise the Request-URI
// names the recipient, or the To header when the Request-URI has no user.
//
// An error wraps plugin.ErrMalformed and says why (see encap.ReadMessage;
// also: not a MESSAGE, no recipient, a CSeq that is not checkCSeq's); a
// header section over headLimits wraps plugin.ErrTooLarge instead.
func Deferred(raw []byte, recipient string, now time.Time, rules plugin.AORRules) (*plugin.Message, error) {
	in, err := encap.ReadMessage(raw, now, headLimits)
	switch {
	case errors.Is(err, encap.ErrTooLarge):
		return nil, fmt.Errorf("%w: %v", plugin.ErrTooLarge, err)
	case err != nil:
		return nil, fmt.Errorf("%w: %v", plugin.ErrMalformed, err)
	case in.Method != "MESSAGE":
		return nil, fmt.Errorf("%w: method %s, not MESSAGE", plugin.ErrMalformed, sanitize(in.Method))
	}
	if err := checkCSeq(raw, in.Method); err != nil {
		return nil, fmt.Errorf("%w: %v", plugin.ErrMalformed, err)
	}
	aor, err := recipientOf(recipient, in, rules)
	if err != nil {
		return nil, fmt.Errorf("%w: no recipient: %v", plugin.ErrMalformed, err)
	}
	return &plugin.Message{
		Recipient:   aor,
		Sender:      in.FromURI,
		Received:    now,
		Kind:        plugin.KindSIPMessage,
		Raw:         in.Stored,
		Added:       in.Added,
		CallID:      in.CallID,
		ContentType: in.ContentType,
	}, nil
}

// checkCSeq checks the CSeq of a request read by encap.ReadMessage (which
// refuses a second one): exactly one, its number 0 to 2^31-1 and its
// method the request's (RFC 3261 §8.1.1.5, §20.16: a UAS answers 400
// otherwise; the number may be 0). The pager mode takes the same numbers
// (encap.PageOf numbers the page it sends from the stored CSeq): a
// message taken here must not fail there, at every attempt, after its
// sender was told 202.
func checkCSeq(raw []byte, method string) error {
	var values []string
	for h := range headerLines(raw) {
		if h.colon && strings.EqualFold(string(bytes.TrimSpace(h.name)), "CSeq") {
			values = append(values, string(h.value))
		}
	}
	switch {
	case len(values) == 0:
		return errors.New("no CSeq header")
	case len(values) > 1:
		return errors.New("more than one CSeq header")
	}
	// Split at SP and HTAB, SIP's blanks, and the CRLF of a folded value
	// (ReadMessage refuses a bare CR or LF); strings.Fields would split at
	// U+00A0 too, where dp_store does not.
	f := strings.FieldsFunc(values[0], func(r rune) bool { return r == ' ' || r == '\t' || r == '\r' || r == '\n' })
	if len(f) != 2 {
		return fmt.Errorf("CSeq %q is not a number and a method", clip(values[0]))
	}
	// RFC 3261 §8.1.1.5: any number below 2^31, zero included.
	if _, err := strconv.ParseUint(f[0], 10, 31); err != nil {
		return fmt.Errorf("CSeq number %q is not 0 to 2147483647", clip(f[0]))
	}
	if f[1] != method {
		return fmt.Errorf("CSeq method %q is not the request's, %s", clip(f[1]), method)
	}
	return nil
}

// clip keeps a piece of a request short and printable in an error.
func clip(s string) string {
	if len(s) > 40 {
		s = s[:40] + "..."
	}
	return sanitize(s)
}

// recipientOf is the proxy's AOR when given, else the Request-URI's when
// it names a user, else the To URI's.
func recipientOf(proxy string, in encap.Incoming, rules plugin.AORRules) (plugin.AOR, error) {
	if proxy != "" {
		return rules.Parse(proxy)
	}
	if aor, err := rules.Parse(in.RequestURI); err == nil {
		return aor, nil
	}
	return rules.Parse(in.ToURI)
}

// dropTopVia returns raw without its first Via header line (full or
// compact name, any case). A line holding several comma-separated Via
// values loses only its first value. raw is returned unchanged when its
// header section has no Via.
func dropTopVia(raw []byte) []byte {
	for h := range headerLines(raw) {
		if n := string(bytes.TrimSpace(h.name)); !h.colon || !strings.EqualFold(n, "Via") && !strings.EqualFold(n, "v") {
			continue
		}
		out := make([]byte, 0, len(raw))
		out = append(out, raw[:h.start]...)
		if _, rest, several := cutViaValue(h.value); several {
			out = append(out, h.name...)
			out = append(out, ':', ' ')
			out = append(out, bytes.TrimLeft(rest, " \t\r\n")...)
			out = append(out, raw[h.end:]...)
			return out
		}
		return append(out, raw[h.end+2:]...)
	}
	return raw
}

// headerLine is one header of a raw request: raw[start:end] is the whole
// of it, folded continuation lines included, less its final CRLF; name
// and value are what is either side of its first colon, as written.
type headerLine struct {
	start, end  int
	name, value []byte
	colon       bool // false: a line without a colon, all of it in name
}

// headerLines yields the headers of raw's header section in order (the
// start line skipped).
func headerLines(raw []byte) iter.Seq[headerLine] {
	return func(yield func(headerLine) bool) {
		head := raw
		if i := bytes.Index(raw, []byte("\r\n\r\n")); i >= 0 {
			head = raw[:i+2]
		}
		// Skip the start line; then every line start is a header or a fold.
		pos := bytes.Index(head, []byte("\r\n"))
		for pos >= 0 && pos+2 < len(head) {
			start := pos + 2
			next := bytes.Index(head[start:], []byte("\r\n"))
			if next < 0 {
				return
			}
			end := start + next // the CRLF ending this physical line
			// The header's logical end: folded continuation lines belong to it.
			for end+2 < len(head) && (head[end+2] == ' ' || head[end+2] == '\t') {
				n := bytes.Index(head[end+2:], []byte("\r\n"))
				if n < 0 {
					break
				}
				end += 2 + n
			}
			name, value, colon := bytes.Cut(head[start:end], []byte(":"))
			if !yield(headerLine{start: start, end: end, name: name, value: value, colon: colon}) {
				return
			}
			pos = end
		}
	}
}

// cutViaValue splits a Via header value at its first comma outside quotes.
func cutViaValue(v []byte) (first, rest []byte, several bool) {
	quoted := false
	for i, c := range v {
		switch {
		case c == '"':
			quoted = !quoted
		case c == ',' && !quoted:
			return v[:i], v[i+1:], true
		}
	}
	return v, nil, false
}

// Shown is a stored MESSAGE as deferpush shows it to a reader (the admin
// API): as a push passes it on, less the sender's credentials and
// routing (Authorization, Proxy-Authorization, Proxy-Require, Route,
// Record-Route; encap.WithoutPrivate). raw is returned as it is when it
// has none of them, or does not parse.
func Shown(raw []byte) []byte { return encap.WithoutPrivate(raw) }
