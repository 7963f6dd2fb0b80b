package main

import (
	"bytes"
	"log/slog"

	"github.com/cloudwego/hertz/pkg/common/hlog"
)

// routeHertzLogs sends hertz's own log lines (it logs through a global
// logger of its own) into ours, keeping only warnings and errors.
func routeHertzLogs(log *slog.Logger) {
	hlog.SetLevel(hlog.LevelWarn)
	hlog.SetOutput(hertzWriter{log})
}

type hertzWriter struct{ log *slog.Logger }

func (w hertzWriter) Write(p []byte) (int, error) {
	w.log.Warn("hertz", "line", string(bytes.TrimSpace(p)))
	return len(p), nil
}
