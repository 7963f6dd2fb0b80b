package ingress

import (
	"bytes"
	"strconv"

	"github.com/deferpush/deferpush/plugin/guard"
)

// maxFrameHeader bounds the header section a sipFramer keeps to find
// Content-Length: sipgo refuses a message past 65,535 octets
// (sip.ParseMaxMessageLength) and ends the connection.
const maxFrameHeader = 64 << 10

// sipFramer follows a SIP stream (RFC 3261 §18.3) as sipgo's stream
// parser frames it: CRLFs between messages (RFC 5626 keep-alives) are
// skipped, a message's header section ends at the first empty line, and
// its body is Content-Length octets (compact form l; the last one, as
// sipgo takes). It tells the guard where each message begins and ends,
// for sip.request_timeout.
type sipFramer struct {
	state int
	// head is the header section read so far (stateHead); body counts
	// the body octets still to come (stateBody).
	head []byte
	body int64
}

const (
	stateBetween = iota
	stateHead
	stateBody
	// stateOverflow: a header section past maxFrameHeader, which sipgo
	// refuses; the message stays open until the connection ends.
	stateOverflow
)

var emptyLine = []byte("\r\n\r\n")

func newSIPFramer() guard.Framer { return &sipFramer{} }

func (f *sipFramer) Feed(p []byte) (open, began bool) {
	for len(p) > 0 {
		switch f.state {
		case stateBetween:
			i := 0
			for i < len(p) && (p[i] == '\r' || p[i] == '\n') {
				i++
			}
			if p = p[i:]; len(p) > 0 {
				f.state, f.head, began = stateHead, f.head[:0], true
			}
		case stateHead:
			kept := len(f.head)
			f.head = append(f.head, p[:min(len(p), maxFrameHeader-kept)]...)
			// The empty line may straddle two reads.
			from := max(kept-3, 0)
			i := bytes.Index(f.head[from:], emptyLine)
			if i < 0 {
				if len(f.head) >= maxFrameHeader {
					f.state, f.head = stateOverflow, nil
				}
				return true, began
			}
			end := from + i + len(emptyLine)
			f.body = contentLength(f.head[:end])
			f.state = stateBody
			p = p[end-kept:]
		case stateBody:
			if int64(len(p)) < f.body {
				f.body -= int64(len(p))
				return true, began
			}
			p = p[f.body:]
			f.state, f.body, began = stateBetween, 0, false
		default: // stateOverflow
			return true, began
		}
	}
	if f.state == stateBody && f.body == 0 {
		f.state, began = stateBetween, false
	}
	return f.state != stateBetween, began
}

// contentLength is the value of the last Content-Length (or l) field of
// a header section; zero when there is none or it does not parse (sipgo
// then refuses the message).
func contentLength(head []byte) int64 {
	var n int64
	_, rest, _ := bytes.Cut(head, []byte("\r\n")) // the start line
	for len(rest) > 0 {
		var line []byte
		line, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		name = bytes.TrimRight(name, " \t")
		if !bytes.EqualFold(name, []byte("Content-Length")) && !bytes.EqualFold(name, []byte("l")) {
			continue
		}
		v, err := strconv.ParseInt(string(bytes.TrimSpace(value)), 10, 64)
		if err != nil || v < 0 {
			v = 0
		}
		n = v
	}
	return n
}
