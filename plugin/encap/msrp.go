package encap

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/deferpush/deferpush/plugin/msrp"
)

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
	case !msrp.IsIdent(tid, 4):
		return nil, invalid("transaction id %q is not a 4 to 32 character ident", tid)
	case !msrp.IsIdent(messageID, 1):
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

// parseSEND parses one complete MSRP SEND request (RFC 4975 §7) with
// plugin/msrp's frame reader: one chunk holding the whole message, ended
// by "$", with a Message-ID and, when it has data, a Content-Type. A frame
// may lack the CRLF after its end-line, as a multipart part ends where its
// delimiter begins.
func parseSEND(frame []byte) (sendFrame, error) {
	var f sendFrame
	fr, err := msrp.ParseEncapsulated(frame)
	if err != nil {
		return f, malformed("MSRP frame: %v", err)
	}
	switch {
	case fr.Method != "SEND":
		return f, malformed("MSRP %s, not SEND", clip([]byte(fr.Method+fmt.Sprint(fr.Status))))
	case fr.Flag != msrp.FlagEnd:
		return f, malformed("MSRP chunk with flag %q: not a whole message", fr.Flag)
	}
	f.tid, f.body = fr.TID, fr.Body
	var byteRange string
	seen := map[string]bool{}
	for _, h := range fr.Header {
		name := strings.ToLower(h.Name)
		switch name {
		case "message-id", "content-type", "byte-range", "date":
			if seen[name] {
				return f, malformed("more than one %s header", name)
			}
			seen[name] = true
		}
		switch name {
		case "message-id":
			f.messageID = h.Value
		case "content-type":
			f.contentType = h.Value
		case "byte-range":
			byteRange = h.Value
		case "date":
			if f.date, err = parseDate(h.Value); err != nil {
				return f, err
			}
			f.hasDate = true
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
