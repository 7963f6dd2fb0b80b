package ingress

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// SIPLogger returns the logger to give sipgo (its transport, transaction
// and server layers, and sip.SetDefaultLogger): log, with what sipgo puts
// in its records made safe to write.
//
// sipgo logs the whole datagram or TCP read it cannot parse, at Error
// ("failed to parse", attribute "data": sip/transport_udp.go,
// transport_tcp.go, transport_ws.go in v1.7): the proxy's
// X-Deferpush-Secret and the sender's body with it,
// a read of up to 32 KB in one line, for anyone who can send a bad
// request. Through SIPLogger:
//
//   - an attribute "data" becomes "data_len", its length only;
//   - any other text that spans lines (a SIP message, a header section) is
//     replaced by its length, and a single line is cut to 200 octets;
//   - "failed to parse" is logged at Warn as "unparsable sip message
//     dropped": the sender's fault, not deferpush's;
//   - a record at Warn or above is written at most 10 times a minute for
//     each message; the next one written after some were dropped says how
//     many ("suppressed").
func SIPLogger(log *slog.Logger) *slog.Logger {
	return slog.New(&sipLogHandler{next: log.Handler(), limit: &logLimit{windows: map[string]*logWindow{}}})
}

// The bounds of SIPLogger's records.
const (
	logTextMax    = 200         // octets of a one-line text attribute
	logLimitPer   = time.Minute // the window of the rate limit
	logLimitLines = 10          // records of one message a window
	logLimitMsgs  = 64          // messages tracked one by one; the rest share one budget
)

// sipLogHandler is SIPLogger's handler: it rewrites sipgo's records and
// hands them to next.
type sipLogHandler struct {
	next  slog.Handler
	limit *logLimit // shared by the handlers WithAttrs and WithGroup derive
}

func (h *sipLogHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.next.Enabled(ctx, level)
}

func (h *sipLogHandler) Handle(ctx context.Context, r slog.Record) error {
	level, msg := r.Level, r.Message
	if msg == "failed to parse" {
		level, msg = slog.LevelWarn, "unparsable sip message dropped"
	}
	if !h.next.Enabled(ctx, level) {
		return nil
	}
	suppressed := 0
	if level >= slog.LevelWarn {
		at := r.Time
		if at.IsZero() {
			at = time.Now()
		}
		ok, n := h.limit.allow(msg, at)
		if !ok {
			return nil
		}
		suppressed = n
	}
	out := slog.NewRecord(r.Time, level, msg, r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(redact(a))
		return true
	})
	if suppressed > 0 {
		out.AddAttrs(slog.Int("suppressed", suppressed))
	}
	return h.next.Handle(ctx, out)
}

func (h *sipLogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	safe := make([]slog.Attr, len(as))
	for i, a := range as {
		safe[i] = redact(a)
	}
	return &sipLogHandler{next: h.next.WithAttrs(safe), limit: h.limit}
}

func (h *sipLogHandler) WithGroup(name string) slog.Handler {
	return &sipLogHandler{next: h.next.WithGroup(name), limit: h.limit}
}

var _ slog.Handler = (*sipLogHandler)(nil)

// redact returns a with any raw SIP taken out (see SIPLogger).
func redact(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	if a.Key == "data" {
		return slog.Int("data_len", textLen(v))
	}
	switch v.Kind() {
	case slog.KindGroup:
		g := v.Group()
		safe := make([]any, len(g))
		for i, ga := range g {
			safe[i] = redact(ga)
		}
		return slog.Group(a.Key, safe...)
	case slog.KindString:
		return slog.String(a.Key, safeText(v.String()))
	case slog.KindAny:
		switch x := v.Any().(type) {
		case error:
			return slog.String(a.Key, safeText(x.Error()))
		case fmt.Stringer:
			return slog.String(a.Key, safeText(x.String()))
		case []byte:
			return slog.String(a.Key, safeText(string(x)))
		}
	}
	return slog.Attr{Key: a.Key, Value: v}
}

// textLen is the length of a text value, or of how it prints.
func textLen(v slog.Value) int {
	switch x := v.Any().(type) {
	case string:
		return len(x)
	case []byte:
		return len(x)
	}
	return len(v.String())
}

// safeText is s when it is one short line; its length when it spans lines
// (a message or a piece of one); its first logTextMax octets otherwise.
func safeText(s string) string {
	if strings.ContainsAny(s, "\r\n") {
		return fmt.Sprintf("[%d octets of SIP withheld]", len(s))
	}
	if len(s) > logTextMax {
		return s[:logTextMax] + "..."
	}
	return s
}

// logLimit bounds the records of each message to logLimitLines a
// logLimitPer window.
type logLimit struct {
	mu      sync.Mutex
	windows map[string]*logWindow
}

type logWindow struct {
	start   time.Time
	n       int // records written in the window
	dropped int // records dropped since the last one written
}

// allow reports whether a record of msg at t is written, and how many of
// msg's records were dropped before it.
func (l *logLimit) allow(msg string, t time.Time) (ok bool, dropped int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.windows[msg]
	if w == nil {
		if len(l.windows) >= logLimitMsgs {
			msg = "" // sipgo's messages are constants: this is a safety net
			w = l.windows[msg]
		}
		if w == nil {
			w = &logWindow{start: t}
			l.windows[msg] = w
		}
	}
	if t.Sub(w.start) >= logLimitPer || t.Before(w.start) {
		w.start, w.n = t, 0
	}
	if w.n >= logLimitLines {
		w.dropped++
		return false, 0
	}
	w.n++
	dropped, w.dropped = w.dropped, 0
	return true, dropped
}
