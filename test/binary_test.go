package test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// deferpushBinary builds cmd/deferpush once per test run.
func deferpushBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "deferpush-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "deferpush")
		out, err := exec.Command("go", "build", "-o", binPath, "../cmd/deferpush").CombinedOutput()
		if err != nil {
			buildErr = err
			binPath = string(out)
		}
	})
	if buildErr != nil {
		t.Fatalf("build deferpush: %v\n%s", buildErr, binPath)
	}
	return binPath
}

// deferpushProc is deferpush running as its own process, the way an
// operator runs it. Its JSON log is parsed for the addresses it bound.
type deferpushProc struct {
	cmd        *exec.Cmd
	done       chan error
	HooksAddr  string
	AdminAddr  string
	SIPAddr    string
	MSRPURI    string
	HooksToken string
	AdminToken string

	mu  sync.Mutex
	log strings.Builder
}

var tokenLine = regexp.MustCompile(`no (hooks|admin)[ .a-z]* configured; generated for this run \(shown once\): ([A-Za-z0-9]+)`)

// startDeferpush runs `deferpush serve` with args, every listener on a
// free loopback port unless args say otherwise, and waits until it logged
// "deferpush started".
func startDeferpush(t testing.TB, env []string, args ...string) *deferpushProc {
	t.Helper()
	return startDeferpushLimited(t, 0, env, args...)
}

// startDeferpushLimited is startDeferpush with the process's open-file
// limit (soft and hard) set to nofile, as `ulimit -n` would; zero leaves
// the limit as it is.
func startDeferpushLimited(t testing.TB, nofile int, env []string, args ...string) *deferpushProc {
	t.Helper()
	bin := deferpushBinary(t)
	full := append([]string{"serve", "--log-format", "json", "--log-level", "debug",
		"--hooks-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
		"--sip-listen", "127.0.0.1:0", "--msrp-listen", "127.0.0.1:0"}, args...)
	cmd := exec.Command(bin, full...)
	if nofile > 0 {
		// The shell sets the limit and becomes deferpush (exec): the
		// process signalled and waited for is deferpush itself.
		cmd = exec.Command("sh", append([]string{"-c", fmt.Sprintf(`ulimit -n %d && exec "$0" "$@"`, nofile), bin}, full...)...)
	}
	p := &deferpushProc{cmd: cmd, done: make(chan error, 1)}
	p.cmd.Env = append(os.Environ(), env...)
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stdout = io.Discard
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		once := sync.Once{}
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.log.WriteString(line + "\n")
			p.mu.Unlock()
			if m := tokenLine.FindStringSubmatch(line); m != nil {
				p.mu.Lock()
				if m[1] == "hooks" {
					p.HooksToken = m[2]
				} else {
					p.AdminToken = m[2]
				}
				p.mu.Unlock()
				continue
			}
			var rec map[string]any
			if json.Unmarshal([]byte(line), &rec) != nil {
				continue
			}
			addr, _ := rec["addr"].(string)
			p.mu.Lock()
			switch rec["msg"] {
			case "hooks listening":
				p.HooksAddr = addr
			case "admin api listening":
				p.AdminAddr = addr
			case "sip listening":
				p.SIPAddr = addr
			case "msrp listening":
				p.MSRPURI, _ = rec["uri"].(string)
			case "deferpush started":
				once.Do(func() { close(started) })
			}
			p.mu.Unlock()
		}
		p.done <- p.cmd.Wait()
	}()
	t.Cleanup(func() {
		p.Stop(t)
		if t.Failed() {
			t.Logf("----- deferpush log -----\n%s----- end of deferpush log -----", tail(p.Log(), 24<<10))
		}
	})
	select {
	case <-started:
	case err := <-p.done:
		p.done <- err
		t.Fatalf("deferpush exited before starting: %v\n%s", err, p.Log())
	case <-time.After(20 * time.Second):
		t.Fatalf("deferpush did not start within 20 s\n%s", p.Log())
	}
	return p
}

// Log returns what deferpush logged so far.
func (p *deferpushProc) Log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// Exited reports whether deferpush has ended, and how.
func (p *deferpushProc) Exited() (bool, error) {
	select {
	case err := <-p.done:
		p.done <- err
		return true, err
	default:
		return false, nil
	}
}

// Stop sends SIGTERM and waits for the exit; it returns the exit error.
func (p *deferpushProc) Stop(t testing.TB) error {
	t.Helper()
	return p.signal(syscall.SIGTERM)
}

// Kill ends deferpush with SIGKILL, as a crash would.
func (p *deferpushProc) Kill(t testing.TB) {
	t.Helper()
	_ = p.signal(syscall.SIGKILL)
}

func (p *deferpushProc) signal(sig syscall.Signal) error {
	if p.cmd.ProcessState != nil {
		return nil
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case err := <-p.done:
		p.done <- err
		return err
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		return <-p.done
	}
}

func httpGet(t testing.TB, url string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

func tail(s string, n int) string {
	if len(s) > n {
		return "...\n" + s[len(s)-n:]
	}
	return s
}

// runDeferpush runs the binary to completion and returns its output.
func runDeferpush(t testing.TB, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, deferpushBinary(t), args...).CombinedOutput()
	return string(out), err
}
