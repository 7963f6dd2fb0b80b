package encap

import (
	"bytes"
	"strings"
	"time"

	"github.com/deferpush/deferpush/plugin/abnf"
)

// CPIM (RFC 3862) has headers for From, To, DateTime and Subject but none
// for a SIP Call-ID, an MSRP Message-ID or a P-Asserted-Identity. They go in
// a namespace of our own, declared with NS as RFC 3862 §3.3 provides:
//
//	NS: dp <https://github.com/deferpush/deferpush/plugin/encap>
//	dp.Call-ID: asd88asd77a@1.2.3.4
//
// The URI is only a name (RFC 3862 never dereferences it); this package's
// import path makes it unique. The IMDN namespace (RFC 5438) has a
// Message-ID, but using it would ask the client for IMDN semantics.
const (
	cpimNS     = "https://github.com/deferpush/deferpush/plugin/encap"
	cpimPrefix = "dp"
)

// cpimFields is what a message/cpim wrapper carries.
type cpimFields struct {
	from, to    string // CPIM form: [Formal-name] "<" URI ">"
	date        time.Time
	subject     string
	callID      string
	messageID   string
	pai         string
	contentType string
	body        []byte
}

// writeCPIM returns the message/cpim body for f: message headers, a blank
// line, the encapsulated MIME headers (Content-Type only), a blank line, the
// body. DateTime is RFC 3339 in UTC, as RFC 3862 §4.4 requires.
func writeCPIM(f cpimFields) []byte {
	var b bytes.Buffer
	b.Grow(256 + len(f.body))
	b.WriteString("From: " + f.from + "\r\n")
	b.WriteString("To: " + f.to + "\r\n")
	if !f.date.IsZero() {
		b.WriteString("DateTime: " + f.date.UTC().Format(time.RFC3339) + "\r\n")
	}
	if f.subject != "" {
		b.WriteString("Subject: " + f.subject + "\r\n")
	}
	b.WriteString("NS: " + cpimPrefix + " <" + cpimNS + ">\r\n")
	for _, h := range [...][2]string{{keyCallID, f.callID}, {"Message-ID", f.messageID}, {keyPAI, f.pai}} {
		if h[1] != "" {
			b.WriteString(cpimPrefix + "." + h[0] + ": " + h[1] + "\r\n")
		}
	}
	b.WriteString("\r\nContent-Type: " + f.contentType + "\r\n\r\n")
	b.Write(f.body)
	return b.Bytes()
}

// cpimAddress turns a SIP From or To value (name-addr or addr-spec, with
// header parameters such as tag) into a CPIM From or To value: the display
// name, if any, and the URI in angle brackets. The tag has no meaning
// outside the SIP dialog and CPIM has no place for it.
func cpimAddress(v string) (string, error) {
	display, uri, err := splitAddress(v)
	if err != nil {
		return "", err
	}
	if display == "" {
		return "<" + uri + ">", nil
	}
	return display + " <" + uri + ">", nil
}

// splitAddress splits a SIP From or To value (name-addr or addr-spec, with
// header parameters) into its display name, as written, and its URI.
func splitAddress(v string) (display, uri string, err error) {
	v = strings.TrimSpace(v)
	rest := v
	if strings.HasPrefix(v, `"`) {
		end := abnf.ClosingQuote(v)
		if end < 0 {
			return "", "", malformed("unterminated display name in %q", v)
		}
		display, rest = v[:end+1], v[end+1:]
	}
	if lt := strings.IndexByte(rest, '<'); lt >= 0 {
		gt := strings.IndexByte(rest[lt:], '>')
		if gt < 0 {
			return "", "", malformed("address %q lacks '>'", v)
		}
		if display == "" {
			display = strings.TrimSpace(rest[:lt])
		}
		uri = rest[lt+1 : lt+gt]
	} else if display == "" {
		// addr-spec: what follows ';' are header parameters (RFC 3261 §20.10).
		uri, _, _ = strings.Cut(rest, ";")
		uri = strings.TrimSpace(uri)
	}
	if !strings.Contains(uri, ":") || hasCTL(uri) || strings.ContainsAny(uri, "<>") {
		return "", "", malformed("address %q has no URI", v)
	}
	return display, uri, nil
}

// parseCPIM parses a message/cpim body. Unknown headers and namespaces are
// skipped, as RFC 3862 §3.3 lets a receiver do.
func parseCPIM(body []byte) (cpimFields, error) {
	var f cpimFields
	hdrs, rest, err := cpimHeaders(body)
	if err != nil {
		return f, err
	}
	prefix := ""
	for _, h := range hdrs {
		if h[0] == "NS" {
			name, uri, ok := strings.Cut(h[1], "<")
			if ok && strings.TrimSuffix(strings.TrimSpace(uri), ">") == cpimNS {
				prefix = strings.TrimSpace(name) + "."
			}
		}
	}
	for _, h := range hdrs {
		name, v := h[0], h[1]
		if prefix != "" && strings.HasPrefix(name, prefix) {
			switch strings.TrimPrefix(name, prefix) {
			case keyCallID:
				f.callID = v
			case "Message-ID":
				f.messageID = v
			case keyPAI:
				f.pai = v
			}
			continue
		}
		switch name {
		case "From":
			f.from = v
		case "To":
			if f.to == "" {
				f.to = v
			}
		case "Subject":
			if f.subject == "" {
				f.subject = v
			}
		case "DateTime":
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				return f, malformed("DateTime %q is not RFC 3339", v)
			}
			f.date = t
		}
	}
	mimeHdrs, content, err := cpimHeaders(rest)
	if err != nil {
		return f, err
	}
	for _, h := range mimeHdrs {
		if strings.EqualFold(h[0], keyContentType) {
			f.contentType = h[1]
		}
	}
	if f.contentType == "" {
		return f, malformed("message/cpim without an encapsulated Content-Type")
	}
	f.body = content
	return f, nil
}

// cpimHeaders reads "Name: value" lines up to a blank line and returns them
// with what follows the blank line. CPIM has no line folding.
func cpimHeaders(b []byte) ([][2]string, []byte, error) {
	var hs [][2]string
	for off := 0; ; {
		i := bytes.Index(b[off:], []byte("\r\n"))
		if i < 0 {
			return nil, nil, malformed("message/cpim header section not ended by a blank line")
		}
		line := b[off : off+i]
		off += i + 2
		if len(line) == 0 {
			return hs, b[off:], nil
		}
		c := bytes.IndexByte(line, ':')
		if c <= 0 || bytes.ContainsAny(line, "\r\n") {
			return nil, nil, malformed("message/cpim header line %q", clip(line))
		}
		hs = append(hs, [2]string{string(line[:c]), strings.Trim(string(line[c+1:]), " \t")})
	}
}
