package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/plugin/guard"
)

// A connection the server closes is closed in two steps, as net/http does:
// first the write side (the client reads the whole answer and the FIN),
// then, after reading and discarding what the client still sends, the
// socket. Closing at once with unread request bytes in the kernel's buffer
// makes it send a reset, and a client still writing a refused body (413,
// 431) sees "connection reset by peer" instead of the answer.
const (
	lingerTime  = time.Second
	lingerBytes = 8 << 20
)

// trackingListener remembers the connections it accepted, so that a
// shutdown can end idle keep-alive connections at once: hertz waits for
// every open connection to close, and an idle client would otherwise hold
// the shutdown for the whole timeout.
type trackingListener struct {
	net.Listener
	// firstRequest bounds the wait for a new connection's first request;
	// hertz sets no read deadline before it (its ReadTimeout and
	// IdleTimeout apply from the second request on), and overrides this
	// one from then on.
	firstRequest time.Duration
	mu           sync.Mutex
	conns        map[*trackedConn]struct{}
}

func newTrackingListener(l net.Listener, firstRequest time.Duration) *trackingListener {
	return &trackingListener{Listener: l, firstRequest: firstRequest, conns: map[*trackedConn]struct{}{}}
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	_ = c.SetReadDeadline(time.Now().Add(l.firstRequest))
	tc := &trackedConn{Conn: c, l: l}
	l.mu.Lock()
	l.conns[tc] = struct{}{}
	l.mu.Unlock()
	return tc, nil
}

// expireReads makes every open connection's pending and next read fail, so
// that connections waiting for a request close. A request already read is
// still answered: writes are not affected.
func (l *trackingListener) expireReads() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for c := range l.conns {
		_ = c.SetReadDeadline(time.Now())
	}
}

type trackedConn struct {
	net.Conn
	l    *trackingListener
	once sync.Once
}

func (c *trackedConn) Close() error {
	first := false
	c.once.Do(func() {
		first = true
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
	})
	hc, ok := c.Conn.(interface{ CloseWrite() error })
	if !first || !ok || hc.CloseWrite() != nil {
		return c.Conn.Close()
	}
	go func() {
		_ = c.Conn.SetReadDeadline(time.Now().Add(lingerTime))
		_, _ = io.CopyN(io.Discard, c.Conn, lingerBytes)
		_ = c.Conn.Close()
	}()
	return nil
}

// busyAnswer is what a connection gets when every connection in its way
// is busy (guard.ErrBusy).
const busyAnswer = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n" +
	"Retry-After: 1\r\nConnection: close\r\nContent-Length: 89\r\n\r\n" +
	`{"error":{"code":"too_many_connections","message":"too many connections; retry shortly"}}`

// sourceAnswer is what a connection to the hooks from outside HooksAllow
// gets at its accept (guard.ErrSource), before it sends anything: the
// answer a hook call from there got when the source was checked per
// request (403 forbidden, SIP 500), so that a proxy left out of the list
// says why.
func sourceAnswer() string {
	err := fmt.Errorf("%w: source address not allowed (hooks.allow_cidrs)", plugin.ErrForbidden)
	o := plugin.OutcomeOf(err, plugin.Policy{})
	body, _ := json.Marshal(hookReply{Status: o.Status, SIPCode: o.SIPCode, SIPReason: o.SIPReason,
		Error: &errorDetail{Code: string(o.Status), Message: err.Error()}})
	return fmt.Sprintf("HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s",
		o.HTTP, http.StatusText(o.HTTP), len(body), body)
}

// refuseHTTP returns the guard's Refuse for a listener: it answers a
// connection that is not admitted, for why, and closes it the lingering
// way.
func refuseHTTP() func(c net.Conn, why error) {
	forbidden := sourceAnswer()
	return func(c net.Conn, why error) {
		answer := busyAnswer
		if errors.Is(why, guard.ErrSource) {
			answer = forbidden
		}
		_ = c.SetWriteDeadline(time.Now().Add(lingerTime))
		_, _ = io.WriteString(c, answer)
		if hc, ok := c.(interface{ CloseWrite() error }); ok && hc.CloseWrite() == nil {
			_ = c.SetReadDeadline(time.Now().Add(lingerTime))
			_, _ = io.CopyN(io.Discard, c, lingerBytes)
		}
		_ = c.Close()
	}
}
