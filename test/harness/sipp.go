package harness

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// SIPpConfig says how to run SIPp.
type SIPpConfig struct {
	// Scenario is the path of the XML scenario file (-sf).
	Scenario string
	// Remote is host:port of the peer; empty for a UAS.
	Remote string
	// Args are further SIPp arguments (-m, -r, -s, -inf, -key ...).
	Args []string
	// Timeout bounds the whole run (-timeout, and a kill after it).
	// Zero means 60 s.
	Timeout time.Duration
}

// SIPpResult is the outcome of a SIPp run that ran to its end.
type SIPpResult struct {
	// Err is nil when SIPp exited 0 (every call succeeded).
	Err error
	// Log is what SIPp printed, with its error trace.
	Log string
}

// StartSIPp starts SIPp in the background (typically a UAS) on a free
// loopback port and returns the process and the port. It is stopped when the
// test ends.
func StartSIPp(t testing.TB, cfg SIPpConfig) (*Proc, int) {
	t.Helper()
	bin := Require(t, "sipp", "sip-tester")
	port := FreePort(t)
	dir := t.TempDir()
	args := sippArgs(cfg, dir, port)
	p := startProc(t, dir, fmt.Sprintf("sipp-%d", port), bin, args...)
	return p, port
}

// RunSIPp runs SIPp to completion and returns its result; the log is shown
// when the test fails.
func RunSIPp(t testing.TB, cfg SIPpConfig) SIPpResult {
	t.Helper()
	bin := Require(t, "sipp", "sip-tester")
	if cfg.Timeout == 0 {
		cfg.Timeout = 60 * time.Second
	}
	port := FreePort(t)
	dir := t.TempDir()
	args := sippArgs(cfg, dir, port)
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Timeout+10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	log := string(out)
	if errs, _ := filepath.Glob(filepath.Join(dir, "*_errors.log")); len(errs) > 0 {
		for _, e := range errs {
			log += "\n" + readFile(e)
		}
	}
	res := SIPpResult{Err: err, Log: log}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("----- sipp %s -----\n%s\n----- end of sipp -----", filepath.Base(cfg.Scenario), tail(log, 16<<10))
		}
	})
	return res
}

func sippArgs(cfg SIPpConfig, dir string, port int) []string {
	// SIPp runs in its own directory (it writes trace files there), so the
	// scenario path must not be relative to the caller's.
	if abs, err := filepath.Abs(cfg.Scenario); err == nil {
		cfg.Scenario = abs
	}
	timeout := cfg.Timeout
	if timeout == 0 {
		timeout = 60 * time.Second
	}
	args := []string{
		"-sf", cfg.Scenario, "-i", "127.0.0.1", "-p", fmt.Sprint(port),
		"-nostdin", "-trace_err", "-error_file", filepath.Join(dir, "sipp_errors.log"),
		"-timeout", fmt.Sprintf("%ds", int(timeout.Seconds())), "-timeout_error",
	}
	args = append(args, cfg.Args...)
	if cfg.Remote != "" {
		args = append(args, cfg.Remote)
	}
	return args
}
