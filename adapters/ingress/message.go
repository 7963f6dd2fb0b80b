package ingress

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/plugin/encap"
)

// maxRaw bounds what the parser reads; the operator's per-message limit is
// checked later by the engine, which answers too_large rather than
// malformed.
const maxRaw = 16 << 20

// Bounds of a request's header section, whatever the operator's
// max_message_size: a stored message is parsed again by every client it is
// pushed to, and a header no client would take is refused here, with
// 513 Message Too Large.
const (
	maxHeaderLine  = 8 << 10  // one header line, folded lines included
	maxHeaderBytes = 64 << 10 // the start line and every header
	maxHeaders     = 256
)

// Deferred turns a raw SIP MESSAGE for an offline user into the message to
// store: the request is checked with sipgo's parser and encap.ParseRequest,
// a Date header is added when it has none (encap.AddDate), and every other
// byte is kept, so the Call-ID and identity headers reach the client
// intact. recipient, when not empty, is the AOR the proxy looked up;
// otherwise the Request-URI names the recipient.
//
// An error wraps plugin.ErrMalformed and says why: the request does not parse, is
// not a MESSAGE, names no recipient, has no Via or one that names no host,
// a control character in a header, or more than one To, From, Call-ID,
// CSeq or Content-Length, or a Content-Length that is not the body's. A
// header section over the bounds above wraps plugin.ErrTooLarge instead.
func Deferred(raw []byte, recipient string, now time.Time) (*plugin.Message, error) {
	if len(raw) == 0 {
		return nil, fmt.Errorf("%w: empty", plugin.ErrMalformed)
	}
	if err := checkHead(raw); err != nil {
		return nil, err
	}
	p := sip.NewParser()
	p.MaxMessageLength = maxRaw
	msg, err := p.ParseSIP(raw)
	if err != nil {
		if v, body, ok := contentLength(raw); ok {
			n, cerr := strconv.ParseUint(v, 10, 31)
			switch {
			case cerr != nil:
				return nil, fmt.Errorf("%w: Content-Length %q is not a number of octets", plugin.ErrMalformed, sanitize(v))
			case int(n) != body:
				return nil, fmt.Errorf("%w: Content-Length is %d but the body has %d octets", plugin.ErrMalformed, n, body)
			}
		}
		return nil, fmt.Errorf("%w: %v", plugin.ErrMalformed, err)
	}
	req, ok := msg.(*sip.Request)
	if !ok {
		return nil, fmt.Errorf("%w: a response, not a request", plugin.ErrMalformed)
	}
	if req.Method != sip.MESSAGE {
		return nil, fmt.Errorf("%w: method %s, not MESSAGE", plugin.ErrMalformed, req.Method)
	}
	vias := req.GetHeaders("Via")
	if len(vias) == 0 {
		return nil, fmt.Errorf("%w: no Via header", plugin.ErrMalformed)
	}
	for _, h := range vias {
		if v, ok := h.(*sip.ViaHeader); !ok || v.Host == "" || v.Transport == "" {
			return nil, fmt.Errorf("%w: bad Via header %q", plugin.ErrMalformed, sanitize(h.Value()))
		}
	}
	if recipient == "" && (req.Recipient.User != "" || req.Recipient.Scheme == "tel") {
		recipient = req.Recipient.String()
	}
	if to := req.To(); recipient == "" && to != nil {
		recipient = to.Address.String()
	}
	aor, err := plugin.ParseAOR(recipient)
	if err != nil {
		return nil, fmt.Errorf("%w: no recipient: %v", plugin.ErrMalformed, err)
	}
	dated, err := encap.AddDate(raw, now)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", plugin.ErrMalformed, err)
	}
	parsed, err := encap.ParseRequest(dated)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", plugin.ErrMalformed, err)
	}
	sender := ""
	if from := req.From(); from != nil {
		sender = from.Address.String()
	}
	return &plugin.Message{
		Recipient:   aor,
		Sender:      sender,
		Received:    now,
		Kind:        plugin.KindSIPMessage,
		Raw:         dated,
		CallID:      parsed.CallID,
		ContentType: parsed.ContentType,
	}, nil
}

// checkHead bounds the header section of raw and refuses control
// characters in it, before any parser sees it.
func checkHead(raw []byte) error {
	head := raw
	if i := bytes.Index(raw, []byte("\r\n\r\n")); i >= 0 {
		head = raw[:i+2]
	}
	if len(head) > maxHeaderBytes {
		return fmt.Errorf("%w: header section over %d octets", plugin.ErrTooLarge, maxHeaderBytes)
	}
	n, lineStart := 0, 0
	for i := 0; i < len(head); i++ {
		c := head[i]
		switch {
		case c == '\n':
			// A line starting with white space continues the header
			// before it (RFC 3261 §7.3.1).
			if i+1 < len(head) && (head[i+1] == ' ' || head[i+1] == '\t') {
				continue
			}
			if i+1-lineStart > maxHeaderLine {
				name, _, _ := strings.Cut(string(head[lineStart:min(i, lineStart+64)]), ":")
				return fmt.Errorf("%w: header %q over %d octets", plugin.ErrTooLarge, sanitize(name), maxHeaderLine)
			}
			n++
			if n > maxHeaders+1 { // the start line is not a header
				return fmt.Errorf("%w: more than %d headers", plugin.ErrTooLarge, maxHeaders)
			}
			lineStart = i + 1
		case c == '\r' || c == '\t':
		case c < 0x20 || c == 0x7f:
			return fmt.Errorf("%w: control character 0x%02x in the header section", plugin.ErrMalformed, c)
		}
	}
	return nil
}

// contentLength returns the Content-Length raw declares and the length of
// its body, for a clear error when the parser refuses them.
func contentLength(raw []byte) (declared string, body int, ok bool) {
	head, rest, found := bytes.Cut(raw, []byte("\r\n\r\n"))
	if !found {
		return "", 0, false
	}
	for line := range bytes.SplitSeq(head, []byte("\r\n")) {
		name, value, found := bytes.Cut(line, []byte(":"))
		if !found {
			continue
		}
		if n := strings.TrimSpace(string(name)); strings.EqualFold(n, "Content-Length") || strings.EqualFold(n, "l") {
			return strings.TrimSpace(string(value)), len(rest), true
		}
	}
	return "", 0, false
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
