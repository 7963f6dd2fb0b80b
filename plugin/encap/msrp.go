package encap

import (
	"bytes"
	"strconv"
	"strings"
	"time"
)

// isIdentChar reports whether c may appear in an RFC 4975 ident after its
// first character.
func isIdentChar(c byte) bool {
	return isAlnum(c) || c == '.' || c == '-' || c == '+' || c == '%' || c == '='
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// isIdent reports whether s is an RFC 4975 ident (ALPHANUM 3*31ident-char)
// but with at least min characters instead of four.
func isIdent(s string, min int) bool {
	if len(s) < min || len(s) > 32 || !isAlnum(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		if !isIdentChar(s[i]) {
			return false
		}
	}
	return true
}

// StoredSEND returns the MSRP SEND frame that stores one message received in
// an MSRP session, as in the seed's second example:
//
//	MSRP <tid> SEND
//	Message-ID: <messageID>
//	Date: <date, RFC 1123 GMT>
//	Byte-Range: 1-N/N
//	Content-Type: <contentType>
//
//	<body>
//	-------<tid>$
//
// The seed leaves out To-Path and From-Path: they name the hops of the
// sender's session, which the push does not recreate. Content-Type is the
// last header, as RFC 4975 requires.
//
// tid is an RFC 4975 transaction id (an ident of 4 to 32 characters); the
// caller picks it, so the output is deterministic. It must not occur in body
// after seven dashes, or the end-line would be ambiguous. messageID is the
// Message-ID as received and is kept unchanged; only its characters are
// checked (1 to 32 ident characters), because the length was the receiving
// endpoint's to police and the seed's own "456" is three characters long.
// contentType must be a valid media type and body must not be empty.
// Argument errors wrap ErrInvalid.
func StoredSEND(tid, messageID, contentType string, body []byte, date time.Time) ([]byte, error) {
	switch {
	case !isIdent(tid, 4):
		return nil, invalid("transaction id %q is not a 4 to 32 character ident", tid)
	case !isIdent(messageID, 1):
		return nil, invalid("Message-ID %q is not an ident", messageID)
	case len(body) == 0:
		return nil, invalid("empty body")
	case bytes.Contains(body, []byte("-------"+tid)):
		return nil, invalid("body contains the end-line of transaction %s", tid)
	}
	if !validMediaType(contentType) {
		return nil, invalid("Content-Type %q", contentType)
	}
	n := strconv.Itoa(len(body))
	var b bytes.Buffer
	b.Grow(128 + len(contentType) + len(body))
	b.WriteString("MSRP " + tid + " SEND\r\n")
	b.WriteString("Message-ID: " + messageID + "\r\n")
	b.WriteString("Date: " + date.UTC().Format(dateLayout) + "\r\n")
	b.WriteString("Byte-Range: 1-" + n + "/" + n + "\r\n")
	b.WriteString("Content-Type: " + contentType + "\r\n\r\n")
	b.Write(body)
	b.WriteString("\r\n-------" + tid + "$\r\n")
	return b.Bytes(), nil
}

// sendFrame is a parsed, complete MSRP SEND. Body aliases the input.
type sendFrame struct {
	tid         string
	messageID   string
	contentType string
	date        time.Time
	hasDate     bool
	body        []byte
}

// parseSEND parses one complete MSRP SEND request (RFC 4975 §7): one chunk
// holding the whole message, ended by "$". A frame may lack the CRLF after
// its end-line, as a multipart part ends where its delimiter begins.
func parseSEND(frame []byte) (sendFrame, error) {
	var f sendFrame
	i := bytes.Index(frame, []byte("\r\n"))
	if i < 0 {
		return f, malformed("MSRP frame without a CRLF")
	}
	words := strings.Split(string(frame[:i]), " ")
	if len(words) != 3 || words[0] != "MSRP" || !isIdent(words[1], 1) {
		return f, malformed("MSRP request line %q", clip(frame[:i]))
	}
	if words[2] != "SEND" {
		return f, malformed("MSRP %s, not SEND", clip([]byte(words[2])))
	}
	f.tid = words[1]
	// After the request line come the headers, each CRLF-ended, then
	// optionally an empty line, the data and a CRLF; then the end-line.
	rest := bytes.TrimSuffix(frame[i+2:], []byte("\r\n"))
	endLine := "-------" + f.tid
	if len(rest) < len(endLine)+1 || string(rest[len(rest)-len(endLine)-1:len(rest)-1]) != endLine {
		return f, malformed("MSRP frame does not end with the end-line of %s", f.tid)
	}
	switch flag := rest[len(rest)-1]; flag {
	case '$':
	case '+', '#':
		return f, malformed("MSRP chunk with flag %q: not a whole message", flag)
	default:
		return f, malformed("MSRP end-line flag %q", flag)
	}
	content := rest[:len(rest)-len(endLine)-1]
	var byteRange string
	seen := map[string]bool{}
	for off := 0; off < len(content); {
		j := bytes.Index(content[off:], []byte("\r\n"))
		if j < 0 {
			return f, malformed("MSRP header not ended by CRLF")
		}
		line := content[off : off+j]
		off += j + 2
		if len(line) == 0 {
			if len(content)-off < 2 || string(content[len(content)-2:]) != "\r\n" {
				return f, malformed("MSRP frame: no CRLF between data and end-line")
			}
			f.body = content[off : len(content)-2]
			break
		}
		if bytes.ContainsAny(line, "\r\n") {
			return f, malformed("bare CR or LF in MSRP header")
		}
		c := bytes.IndexByte(line, ':')
		if c <= 0 || !isToken(line[:c]) {
			return f, malformed("MSRP header line %q", clip(line))
		}
		name := strings.ToLower(string(line[:c]))
		value := strings.Trim(string(line[c+1:]), " \t")
		switch name {
		case "message-id", "content-type", "byte-range", "date":
			if seen[name] {
				return f, malformed("more than one %s header", name)
			}
			seen[name] = true
		}
		switch name {
		case "message-id":
			f.messageID = value
		case "content-type":
			f.contentType = value
		case "byte-range":
			byteRange = value
		case "date":
			t, err := parseDate(value)
			if err != nil {
				return f, err
			}
			f.date, f.hasDate = t, true
		}
	}
	if f.messageID == "" {
		return f, malformed("MSRP SEND without Message-ID")
	}
	if f.body != nil && f.contentType == "" {
		return f, malformed("MSRP SEND with a body but no Content-Type")
	}
	if byteRange != "" && !wholeRange(byteRange, len(f.body)) {
		return f, malformed("Byte-Range %q does not cover a %d-octet body whole", byteRange, len(f.body))
	}
	return f, nil
}

// wholeRange reports whether an RFC 4975 Byte-Range value (start-end/total,
// end and total possibly "*") describes one chunk holding all n octets.
func wholeRange(v string, n int) bool {
	se, total, ok := strings.Cut(v, "/")
	if !ok {
		return false
	}
	start, end, ok := strings.Cut(se, "-")
	ns := strconv.Itoa(n)
	return ok && start == "1" && (end == "*" || end == ns) && (total == "*" || total == ns)
}
