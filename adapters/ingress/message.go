package ingress

import (
	"bytes"
	"errors"
	"fmt"
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
// header is added when it has none) and every other byte kept, so the
// Call-ID and identity headers reach the client intact. recipient, when
// not empty, is the AOR the proxy looked up; otherwise the Request-URI
// names the recipient, or the To header when the Request-URI has no user.
//
// An error wraps plugin.ErrMalformed and says why (see encap.ReadMessage;
// also: not a MESSAGE, no recipient); a header section over headLimits
// wraps plugin.ErrTooLarge instead.
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
	aor, err := recipientOf(recipient, in, rules)
	if err != nil {
		return nil, fmt.Errorf("%w: no recipient: %v", plugin.ErrMalformed, err)
	}
	return &plugin.Message{
		Recipient:   aor,
		Sender:      in.FromURI,
		Received:    now,
		Kind:        plugin.KindSIPMessage,
		Raw:         in.Dated,
		CallID:      in.CallID,
		ContentType: in.ContentType,
	}, nil
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
			return raw
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
		name, value, ok := bytes.Cut(head[start:end], []byte(":"))
		if n := string(bytes.TrimSpace(name)); ok && (strings.EqualFold(n, "Via") || strings.EqualFold(n, "v")) {
			out := make([]byte, 0, len(raw))
			out = append(out, raw[:start]...)
			if _, rest, several := cutViaValue(value); several {
				out = append(out, name...)
				out = append(out, ':', ' ')
				out = append(out, bytes.TrimLeft(rest, " \t\r\n")...)
				out = append(out, raw[end:]...)
				return out
			}
			return append(out, raw[end+2:]...)
		}
		pos = end
	}
	return raw
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
