package ingress

import (
	"bytes"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/deferpush/deferpush/plugin/abnf"
)

// Answering what sipgo cannot parse. sipgo drops a UDP datagram its parser
// refuses (a CSeq number of 2^31 or more, Max-Forwards "abc", a From
// without a URI, a header line without a colon, a Content-Length past the
// datagram's end) and logs it: the sender hears nothing and retransmits
// for 32 s, then reports a timeout, a transient error that invites a
// retry of a request that can never succeed. RFC 3261 §21.4.1 and §18.3
// want a 400. The stack reads each UDP datagram with sipgo's parser first
// (sipgo's read filter); one that does not parse but whose start line is
// a request's and whose Via, From, To, Call-ID and CSeq can still be read
// is answered 400 with a Warning saying why, and dropped. Over TCP sipgo
// closes the connection; the framer (sipframe.go) answers first.

// udpRefuser is the read filter that answers unparsable UDP requests.
type udpRefuser struct {
	conn   net.PacketConn
	parser *sip.Parser
	log    *slog.Logger // SIPLogger's: the record of the drop, bounded

	mu     sync.Mutex
	tokens float64
	last   time.Time
}

// The rate of 400s to unparsable datagrams: a source can spoof its
// address, so the answers are bounded, whoever asks.
const (
	refuseRate  = 50 // a second
	refuseBurst = 100
)

func newUDPRefuser(conn net.PacketConn, log *slog.Logger) *udpRefuser {
	return &udpRefuser{conn: conn, parser: sip.NewParser(), log: log, tokens: refuseBurst}
}

// filter is a sip.TransportReadFilter: it passes what parses, and answers
// and drops the UDP requests that do not.
func (r *udpRefuser) filter(p sip.TransportReadProps, data []byte) ([]byte, error) {
	if !strings.EqualFold(p.Transport, "udp") || len(bytes.Trim(data, "\r\n")) == 0 {
		return data, nil
	}
	code, reason, why := 513, "Message Too Large", "datagram over "+strconv.Itoa(int(sip.TransportBufferReadSize)-1)+" octets; send it over TCP"
	// sipgo reads a datagram into a buffer of this size: one that fills it
	// came cut short, and without a Content-Length (optional over UDP) it
	// would parse, its body cut (RFC 3261 §21.5.14).
	if len(data) < int(sip.TransportBufferReadSize) {
		_, err := r.parser.ParseSIP(data)
		if err == nil {
			return data, nil
		}
		code, reason, why = 400, "Bad Request", "malformed request: "+err.Error()
	}
	// The record sipgo would write, through SIPLogger.
	r.log.Error("failed to parse", "data", string(data), "error", why)
	if res := answerUnparsable(data, p.RemoteAddr, code, reason, why); res != nil && r.allow() {
		_, _ = r.conn.WriteTo(res, p.RemoteAddr)
	}
	return nil, nil
}

func (r *udpRefuser) allow() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	r.tokens = min(refuseBurst, r.tokens+now.Sub(r.last).Seconds()*refuseRate)
	r.last = now
	if r.tokens < 1 {
		return false
	}
	r.tokens--
	return true
}

// badRequest is the 400 answering raw, a request sipgo's parser refused
// for why, received from src.
func badRequest(raw []byte, src net.Addr, why string) []byte {
	return answerUnparsable(raw, src, 400, "Bad Request", "malformed request: "+why)
}

// answerUnparsable is the answer code (reason) to raw, a request sipgo's
// parser refused, received from src: its Vias (the top one with received
// and rport, RFC 3581), From, To (with a tag), Call-ID and CSeq as sent,
// a Warning saying why. Nil when raw is no request or lacks one of those
// headers, or is an ACK (never answered).
func answerUnparsable(raw []byte, src net.Addr, code int, reason, why string) []byte {
	head, _, _ := bytes.Cut(raw, []byte("\r\n\r\n"))
	lines := strings.Split(string(head), "\r\n")
	start := strings.Fields(lines[0])
	if len(start) != 3 || start[2] != "SIP/2.0" || !abnf.IsSIPToken(start[0]) || strings.EqualFold(start[0], "ACK") {
		return nil
	}
	// Unfold continuation lines (RFC 3261 §7.3.1).
	var fields []string
	for _, l := range lines[1:] {
		if (strings.HasPrefix(l, " ") || strings.HasPrefix(l, "\t")) && len(fields) > 0 {
			fields[len(fields)-1] += " " + strings.TrimSpace(l)
			continue
		}
		fields = append(fields, l)
	}
	// Vias are echoed a header line for a line, as sent (a list is not
	// split: the answer is no larger than the request); a request with
	// two From, To, Call-ID or CSeq headers is past answering.
	var vias []string
	one := map[string]string{}
	for _, f := range fields {
		name, value, ok := strings.Cut(f, ":")
		if !ok {
			continue
		}
		value = strings.TrimSpace(value)
		var single string
		switch strings.ToLower(strings.TrimSpace(name)) {
		case "via", "v":
			if value != "" {
				vias = append(vias, value)
			}
		case "from", "f":
			single = "From"
		case "to", "t":
			single = "To"
		case "call-id", "i":
			single = "Call-ID"
		case "cseq":
			single = "CSeq"
		}
		if single != "" {
			if _, twice := one[single]; twice {
				return nil
			}
			one[single] = value
		}
	}
	if len(vias) == 0 || one["From"] == "" || one["To"] == "" || one["Call-ID"] == "" || one["CSeq"] == "" {
		return nil
	}
	// The sender matches the answer by its CSeq: a number (RFC 3261
	// §8.1.1.5 wants one below 2^31; up to 2^32-1 is still matched) and
	// the method.
	n, m, _ := strings.Cut(one["CSeq"], " ")
	if _, err := strconv.ParseUint(n, 10, 32); err != nil || strings.TrimSpace(m) != start[0] {
		return nil
	}
	// Echoed values must not break the answer's framing.
	for _, v := range append(vias, one["From"], one["To"], one["Call-ID"], one["CSeq"]) {
		if strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 && r != '\t' || r == 0x7f }) {
			return nil
		}
	}
	// The top Via value (the first of a list) gets received and rport
	// (RFC 3581) unless it has them.
	if host, port, err := net.SplitHostPort(src.String()); err == nil {
		first, rest, list := strings.Cut(vias[0], ",")
		lower := strings.ToLower(first)
		if i := strings.Index(lower, ";rport"); i >= 0 && (len(first) == i+6 || first[i+6] == ';' || first[i+6] == ' ') {
			first = first[:i+6] + "=" + port + first[i+6:]
		}
		if !strings.Contains(lower, ";received=") {
			first += ";received=" + host
		}
		if list {
			first += "," + rest
		}
		vias[0] = first
	}
	to := one["To"]
	if !strings.Contains(strings.ToLower(to), ";tag=") {
		to += ";tag=" + sip.GenerateTagN(16)
	}
	var b bytes.Buffer
	b.WriteString("SIP/2.0 " + strconv.Itoa(code) + " " + reason + "\r\n")
	for _, v := range vias {
		b.WriteString("Via: " + v + "\r\n")
	}
	b.WriteString("From: " + one["From"] + "\r\nTo: " + to + "\r\nCall-ID: " + one["Call-ID"] + "\r\nCSeq: " + one["CSeq"] + "\r\n")
	b.WriteString(`Warning: 399 deferpush "` + sanitize(why) + "\"\r\n")
	b.WriteString("Content-Length: 0\r\n\r\n")
	return b.Bytes()
}
