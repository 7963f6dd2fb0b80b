package test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// phaseProfile is a perf(1) CPU profile of the server processes during
// one phase of the deferpush side (BENCH_PROFILE=1): where the time goes
// when a goal is missed. perf samples every process, Go, C and kernel
// alike, which a pprof endpoint could not.
type phaseProfile struct {
	cmd  *exec.Cmd
	data string
	out  string
}

// startProfile starts perf record on pids, or returns nil when profiling
// is off or perf is missing.
func startProfile(b *testing.B, dir, name string, pids []int) *phaseProfile {
	b.Helper()
	if v, _ := strconv.ParseBool(os.Getenv("BENCH_PROFILE")); !v {
		return nil
	}
	perf, err := exec.LookPath("perf")
	if err != nil {
		b.Logf("BENCH_PROFILE: perf not found (Debian package linux-perf): no profile")
		return nil
	}
	ps := make([]string, len(pids))
	for i, p := range pids {
		ps[i] = strconv.Itoa(p)
	}
	tmp := b.TempDir()
	p := &phaseProfile{data: filepath.Join(tmp, name+".data"), out: filepath.Join(dir, "profile-"+name+".txt")}
	p.cmd = exec.Command(perf, "record", "-q", "-F", "999", "-o", p.data, "-p", strings.Join(ps, ","))
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		b.Logf("BENCH_PROFILE: %v", err)
		return nil
	}
	// perf needs a moment to attach before the phase starts.
	time.Sleep(300 * time.Millisecond)
	return p
}

// stop ends the recording and writes the summary: share of samples by
// process and library, then the hottest functions.
func (p *phaseProfile) stop(b *testing.B) {
	b.Helper()
	if p == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
	}
	var sb strings.Builder
	for _, sort := range []string{"comm,dso", "comm,dso,sym"} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		out, err := exec.CommandContext(ctx, "perf", "report", "-i", p.data, "--no-children", "-g", "none",
			"--percent-limit", "0.5", "--sort", sort, "--stdio").Output()
		cancel()
		if err != nil {
			fmt.Fprintf(&sb, "perf report --sort %s: %v\n", sort, err)
			continue
		}
		fmt.Fprintf(&sb, "==== perf report --sort %s (samples >= 0.5%%) ====\n", sort)
		for l := range strings.SplitSeq(string(out), "\n") {
			if strings.TrimSpace(l) != "" && !strings.HasPrefix(l, "#") {
				sb.WriteString(l + "\n")
			}
		}
	}
	if err := os.MkdirAll(filepath.Dir(p.out), 0o755); err == nil {
		_ = os.WriteFile(p.out, []byte(sb.String()), 0o644)
	}
}
