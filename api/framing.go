package api

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cloudwego/hertz/pkg/common/config"
	errs "github.com/cloudwego/hertz/pkg/common/errors"
	"github.com/cloudwego/hertz/pkg/network"
	"github.com/cloudwego/hertz/pkg/network/standard"
	"github.com/cloudwego/hertz/pkg/protocol/consts"

	"github.com/deferpush/deferpush/plugin"
)

// hertz frames requests more loosely than RFC 9112 allows, and where two
// parties frame one byte stream differently a request can be smuggled
// past whatever sits in front of deferpush: it takes the last of two
// different Content-Length values, reads a body chunked when
// Transfer-Encoding names any coding (and also carries a Content-Length),
// takes the last of two Host fields, and serves "HTTP/2.0" or "HTTP/3.0"
// request lines as HTTP/1.0. Its parser collapses all of that before a
// handler could see it, so each request's header section is checked here,
// on the bytes hertz is about to parse: framedConn wraps the connection
// hertz reads from, and before the first read of every request looks at
// the whole header section; what RFC 9112 refuses is answered in the
// API's error shape and the connection closed, before hertz reads a byte
// of it.

// framingTransport is hertz's standard transport with every connection it
// serves wrapped in a framedConn.
// A body declared larger than the server reads is refused here too, in
// the listener's own shape: hertz's answer would be plain text, which a
// route script reads as no answer at all (a temporary failure, retried
// for a message that can never be stored).
type framingTransport struct {
	network.Transporter
	maxHeader int
	maxBody   int
	hooks     bool // answers in the hooks' shape (status, sip_code)
	logger    *slog.Logger
}

func newFramingTransport(logger *slog.Logger, hooks bool) func(*config.Options) network.Transporter {
	return func(o *config.Options) network.Transporter {
		return framingTransport{Transporter: standard.NewTransporter(o), maxHeader: o.MaxHeaderBytes,
			maxBody: o.MaxRequestBodySize, hooks: hooks, logger: logger}
	}
}

func (t framingTransport) ListenAndServe(onData network.OnData) error {
	return t.Transporter.ListenAndServe(func(ctx context.Context, conn any) error {
		if c, ok := conn.(network.Conn); ok {
			fc := &framedConn{Conn: c, maxHeader: t.maxHeader, maxBody: t.maxBody, hooks: t.hooks, logger: t.logger}
			// hertz finds TLS (for ALPN) by this interface.
			if tc, ok := c.(network.ConnTLSer); ok {
				return onData(ctx, &framedTLSConn{framedConn: fc, tls: tc})
			}
			conn = fc
		}
		return onData(ctx, conn)
	})
}

// Listener is the bound socket: hertz's IsRunning asks the transport for
// it.
func (t framingTransport) Listener() net.Listener {
	if l, ok := t.Transporter.(interface{ Listener() net.Listener }); ok {
		return l.Listener()
	}
	return nil
}

// framedConn checks each request's header section before hertz reads it.
// hertz's HTTP/1 server reads a request's header starting with Peek(1),
// its body after, and calls Release once the response is written, before
// it reads the next request; a keep-alive connection is first waited on
// with Peek(4) under the idle timeout (the check is left to the header
// read that follows, under the read timeout).
type framedConn struct {
	network.Conn
	maxHeader int
	maxBody   int
	hooks     bool
	logger    *slog.Logger
	pending   bool // the next request's header is not checked yet
	served    int  // requests whose header was checked
}

func (c *framedConn) Peek(n int) ([]byte, error) {
	if !(n == 4 && c.served > 0) {
		if err := c.check(); err != nil {
			return nil, err
		}
	}
	return c.Conn.Peek(n)
}

func (c *framedConn) Skip(n int) error {
	if err := c.check(); err != nil {
		return err
	}
	return c.Conn.Skip(n)
}

func (c *framedConn) ReadByte() (byte, error) {
	if err := c.check(); err != nil {
		return 0, err
	}
	return c.Conn.ReadByte()
}

func (c *framedConn) ReadBinary(n int) ([]byte, error) {
	if err := c.check(); err != nil {
		return nil, err
	}
	return c.Conn.ReadBinary(n)
}

func (c *framedConn) Release() error {
	c.pending = true
	return c.Conn.Release()
}

// HandleSpecificError lets the standard connection keep quiet about the
// errors it knows to be harmless.
func (c *framedConn) HandleSpecificError(err error, rip string) bool {
	h, ok := c.Conn.(network.HandleSpecificError)
	return ok && h.HandleSpecificError(err, rip)
}

type framedTLSConn struct {
	*framedConn
	tls network.ConnTLSer
}

func (c *framedTLSConn) Handshake() error                     { return c.tls.Handshake() }
func (c *framedTLSConn) ConnectionState() tls.ConnectionState { return c.tls.ConnectionState() }

// check reads ahead to the end of the next request's header section, once
// per request, and answers and refuses the request when its framing is
// one RFC 9112 rejects. The error it then returns makes hertz close the
// connection without an answer of its own. A header section hertz itself
// refuses (read error, timeout, over its size bound) is left to hertz.
func (c *framedConn) check() error {
	if c.served > 0 && !c.pending {
		return nil
	}
	c.pending = false
	c.served++
	var (
		b    []byte
		err  error
		end  = -1
		from = 0
	)
	for n := 1; ; n = max(len(b)+1, c.Conn.Len()) {
		if b, err = c.Conn.Peek(min(n, c.maxHeader)); err != nil {
			return nil
		}
		if end = headerEnd(b, from); end >= 0 || len(b) >= c.maxHeader {
			break
		}
		from = max(0, len(b)-3)
	}
	if end < 0 {
		return nil
	}
	r := checkFraming(b[:end], c.maxBody)
	if r == nil {
		return nil
	}
	c.logger.Debug("request framing refused", "remote", c.RemoteAddr().String(), "status", r.status, "err", r.msg)
	body, _ := json.Marshal(errorBody{Error: errorDetail{Code: r.code, Message: r.msg}})
	if c.hooks {
		class := plugin.ErrMalformed
		if r.status == consts.StatusRequestEntityTooLarge {
			class = plugin.ErrTooLarge
		}
		o := plugin.OutcomeOf(class, plugin.Policy{})
		body, _ = json.Marshal(hookReply{Status: o.Status, SIPCode: o.SIPCode, SIPReason: o.SIPReason,
			Error: &errorDetail{Code: r.code, Message: r.msg}})
	}
	head := fmt.Sprintf("HTTP/1.1 %d %s\r\nDate: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n",
		r.status, r.reason, time.Now().UTC().Format(httpDate), len(body))
	out := []byte(head)
	if !r.head {
		out = append(out, body...)
	}
	if _, err := c.Conn.WriteBinary(out); err == nil {
		_ = c.Conn.Flush()
	}
	// hertz ends the connection quietly on "nothing read".
	return errs.ErrNothingRead
}

const httpDate = "Mon, 02 Jan 2006 15:04:05 GMT"

// headerEnd is the length of the header section at the start of b (empty
// lines before the request line, which RFC 9112 §2.2 lets a server
// ignore, included), or -1 when b holds no complete one. The search
// starts at from.
func headerEnd(b []byte, from int) int {
	lead := 0
	for lead < len(b) && (b[lead] == '\r' || b[lead] == '\n') {
		lead++
	}
	from = max(from, lead)
	for i := from; i < len(b); i++ {
		if b[i] != '\n' {
			continue
		}
		// i ends a line: is the next one empty?
		if i+1 < len(b) && b[i+1] == '\n' {
			return i + 2
		}
		if i+2 < len(b) && b[i+1] == '\r' && b[i+2] == '\n' {
			return i + 3
		}
	}
	return -1
}

// framingRefusal is the answer to a request whose framing is refused.
type framingRefusal struct {
	status       int
	reason, code string
	msg          string
	head         bool // a HEAD request: no body in the answer
}

func badFraming(msg string) *framingRefusal {
	return &framingRefusal{status: 400, reason: "Bad Request", code: "invalid_request", msg: msg}
}

// checkFraming returns why RFC 9112 refuses the request whose header
// section is hdr, or why it is not read (a Content-Length over maxBody),
// or nil. What hertz refuses itself (a malformed request line or field
// line) is left to it.
func checkFraming(hdr []byte, maxBody int) *framingRefusal {
	lines := strings.Split(strings.TrimLeft(string(hdr), "\r\n"), "\n")
	reqLine := strings.Fields(strings.TrimSuffix(lines[0], "\r"))
	if len(reqLine) != 3 {
		return nil
	}
	r := refuseFraming(reqLine[2], lines[1:], maxBody)
	if r != nil && reqLine[0] == "HEAD" {
		r.head = true
	}
	return r
}

func refuseFraming(version string, lines []string, maxBody int) *framingRefusal {
	// RFC 9110 §2.5: a major version is a single digit; 2 and 3 are not
	// sent in this syntax at all, and the server does not speak them.
	if len(version) == 8 && strings.HasPrefix(version, "HTTP/") && version[5] >= '2' && version[5] <= '9' && version[6] == '.' {
		return &framingRefusal{status: 505, reason: "HTTP Version Not Supported", code: "http_version_not_supported",
			msg: version + " is not spoken here: send HTTP/1.1"}
	}
	var hosts, auths, tokens, types int
	var lengths, codings []string
	for _, l := range lines {
		l = strings.TrimSuffix(l, "\r")
		name, value, ok := strings.Cut(l, ":")
		if !ok || name == "" || name[0] == ' ' || name[0] == '\t' {
			continue
		}
		value = strings.Trim(value, " \t")
		switch strings.ToLower(name) {
		case "host":
			hosts++
		case "authorization":
			auths++
		case strings.ToLower(TokenHeader):
			tokens++
		case "content-type":
			types++
		case "content-length":
			lengths = append(lengths, value)
		case "transfer-encoding":
			for c := range strings.SplitSeq(value, ",") {
				if c = strings.ToLower(strings.Trim(c, " \t")); c != "" {
					codings = append(codings, c)
				}
			}
		}
	}
	switch {
	case hosts > 1:
		return badFraming("more than one Host field (RFC 9112 §3.2)")
	case hosts == 0 && version == "HTTP/1.1":
		return badFraming("no Host field in an HTTP/1.1 request (RFC 9112 §3.2)")
	case auths > 1:
		return badFraming("more than one Authorization field")
	case tokens > 1:
		return badFraming("more than one " + TokenHeader + " field")
	case types > 1:
		// One reader would take the first, another the last (RFC 9110
		// §8.3: Content-Type is a singleton).
		return badFraming("more than one Content-Type field")
	}
	if len(codings) > 0 {
		return refuseCodings(version, codings, len(lengths) > 0)
	}
	for _, v := range lengths {
		if v == "" || strings.Trim(v, "0123456789") != "" {
			return badFraming("Content-Length " + v + " is not one decimal number (RFC 9110 §8.6)")
		}
		if v != lengths[0] {
			return badFraming("two different Content-Length values, " + lengths[0] + " and " + v + " (RFC 9112 §6.3)")
		}
	}
	if len(lengths) > 0 && maxBody > 0 {
		if n, err := strconv.ParseInt(lengths[0], 10, 64); err != nil || n > int64(maxBody) {
			return &framingRefusal{status: consts.StatusRequestEntityTooLarge, reason: "Content Too Large", code: "body_too_large",
				msg: fmt.Sprintf("a body of %s octets: at most %d are read", lengths[0], maxBody)}
		}
	}
	return nil
}

// refuseCodings judges a request that carries Transfer-Encoding (codings,
// in order, lower-cased); hasLength: it also carries Content-Length.
func refuseCodings(version string, codings []string, hasLength bool) *framingRefusal {
	switch {
	case version != "HTTP/1.1":
		// RFC 9112 §6.1: Transfer-Encoding came with HTTP/1.1; in an
		// older message the framing is faulty.
		return badFraming("Transfer-Encoding in an " + version + " request (RFC 9112 §6.1)")
	case hasLength:
		return badFraming("both Transfer-Encoding and Content-Length (RFC 9112 §6.1): send one")
	case codings[len(codings)-1] != "chunked":
		return badFraming("Transfer-Encoding does not end in chunked: the body's length cannot be known (RFC 9112 §6.3)")
	}
	if len(codings) == 1 {
		return nil
	}
	if slices.Contains(codings[:len(codings)-1], "chunked") {
		return badFraming("chunked applied more than once (RFC 9112 §7)")
	}
	// RFC 9112 §6.1: a coding the server does not understand is a 501.
	return &framingRefusal{status: 501, reason: "Not Implemented", code: "unsupported_transfer_coding",
		msg: "transfer coding " + codings[0] + " is not supported: send the body chunked only, or with Content-Length"}
}
