package ingress

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strconv"

	"github.com/emiago/sipgo/sip"

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
	// head is the header section read so far (stateHead), kept until the
	// next message begins; body counts the body octets still to come
	// (stateBody). tooLarge: the message's header section and declared
	// body exceed what sipgo takes.
	head     []byte
	body     int64
	tooLarge bool
	parser   *sip.Parser
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

var _ guard.Refuser = (*sipFramer)(nil)

func (f *sipFramer) Feed(p []byte) (open, began bool) {
	for len(p) > 0 {
		switch f.state {
		case stateBetween:
			i := 0
			for i < len(p) && (p[i] == '\r' || p[i] == '\n') {
				i++
			}
			if p = p[i:]; len(p) > 0 {
				f.state, f.head, f.tooLarge, began = stateHead, f.head[:0], false, true
			}
		case stateHead:
			kept := len(f.head)
			f.head = append(f.head, p[:min(len(p), maxFrameHeader-kept)]...)
			// The empty line may straddle two reads.
			from := max(kept-3, 0)
			i := bytes.Index(f.head[from:], emptyLine)
			if i < 0 {
				if len(f.head) >= maxFrameHeader {
					f.state, f.tooLarge = stateOverflow, true
				}
				return true, began
			}
			end := from + i + len(emptyLine)
			f.body = contentLength(f.head[:end])
			f.head = f.head[:end]
			f.tooLarge = int64(end)+f.body > int64(sip.ParseMaxMessageLength) // sipgo's bound
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

// Refusal answers a request sipgo will not take (guard.Refuser): 513
// for one past sipgo's 65,535 octets, at once when its header section
// says so; 400 with sipgo's reason when sipgo closed the connection on
// the header section the framer kept (RFC 3261 §18.3 wants a 400 to a
// malformed request before a stream connection is closed). Nil when the
// request cannot be answered (no Via, From, To, Call-ID or CSeq to echo,
// an ACK, a response) or parses.
func (f *sipFramer) Refusal(remote net.Addr, closing bool) []byte {
	head := f.head
	if f.state == stateOverflow {
		// The last line may be cut short.
		if i := bytes.LastIndex(head, []byte("\r\n")); i >= 0 {
			head = head[:i+2]
		}
	}
	if f.tooLarge {
		return answerUnparsable(head, remote, 513, "Message Too Large",
			"message over "+strconv.Itoa(sip.ParseMaxMessageLength)+" octets")
	}
	if !closing || len(head) == 0 {
		return nil
	}
	if f.parser == nil {
		f.parser = sip.NewParser()
	}
	ps := f.parser.NewSIPStream()
	defer ps.Close()
	_, _ = ps.Write(head)
	_, _, err := ps.ParseNext()
	if err == nil || errors.Is(err, io.ErrUnexpectedEOF) {
		return nil
	}
	return badRequest(head, remote, err.Error())
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
