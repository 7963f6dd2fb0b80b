package ingress

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestSIPLoggerRedacts: what sipgo could put in a record (the raw request
// as "data", as a string, an error, a fmt.Stringer, in a group or in
// attributes given With) leaves only its length; a long single line is
// cut; other values pass.
func TestSIPLoggerRedacts(t *testing.T) {
	raw := request("UDP", "x", "X-Deferpush-Secret: "+testSecret)
	var buf bytes.Buffer
	log := SIPLogger(slog.New(slog.NewTextHandler(&buf, nil))).With("req", raw)
	log.Error("failed to parse", "data", raw, "error", errors.New("bad:\r\n"+raw), "msg", parseRequest(t, raw),
		slog.Group("g", "raw", []byte(raw)), "long", strings.Repeat("a", 1000), "n", 7)
	got := buf.String()
	if strings.Contains(got, testSecret) || strings.Contains(got, "hello") {
		t.Fatalf("the record holds the request:\n%s", got)
	}
	for _, want := range []string{"level=WARN", `msg="unparsable sip message dropped"`, "data_len=", "n=7",
		`req="[`, `error="[`, `g.raw="[`, "long=" + strings.Repeat("a", logTextMax) + "...", "octets of SIP withheld]"} {
		if !strings.Contains(got, want) {
			t.Errorf("record without %q:\n%s", want, got)
		}
	}
}

// TestSIPLoggerLimit: at most logLimitLines records of one message at Warn
// and above a window, the first of the next window counting those
// dropped; Info and Debug are not limited, nor other messages.
func TestSIPLoggerLimit(t *testing.T) {
	var buf bytes.Buffer
	h := SIPLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))).Handler()
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	emit := func(level slog.Level, msg string, at time.Time) {
		if err := h.Handle(context.Background(), slog.NewRecord(at, level, msg, 0)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 * logLimitLines {
		emit(slog.LevelError, "failed to parse", at.Add(time.Duration(i)*time.Millisecond))
		emit(slog.LevelDebug, "debug line", at)
	}
	emit(slog.LevelError, "other", at)
	emit(slog.LevelError, "failed to parse", at.Add(logLimitPer))
	got := buf.String()
	if n := strings.Count(got, "unparsable sip message dropped"); n != logLimitLines+1 {
		t.Errorf("%d records of the flood, want %d", n, logLimitLines+1)
	}
	if n := strings.Count(got, "debug line"); n != 3*logLimitLines {
		t.Errorf("%d debug records, want all %d", n, 3*logLimitLines)
	}
	if !strings.Contains(got, "msg=other") {
		t.Errorf("another message was limited with the flood")
	}
	if !strings.Contains(got, "suppressed=20") {
		t.Errorf("the next window's first record does not count the 20 dropped:\n%s", got)
	}
}
