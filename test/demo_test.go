package test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
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

	"github.com/deferpush/deferpush/test/harness"
)

// demoRun is a run of the demo: its output lines, each with when it came.
type demoRun struct {
	cmd   *exec.Cmd
	start time.Time
	done  chan error

	mu    sync.Mutex
	lines []string
	at    []time.Duration
	seen  chan struct{} // a line came
}

func startDemo(t *testing.T, name string, args ...string) *demoRun {
	t.Helper()
	harness.Require(t, "redis-server", "redis-server")
	harness.Require(t, "kamailio", "kamailio")
	d := &demoRun{cmd: exec.Command(name, args...), done: make(chan error, 1), seen: make(chan struct{}, 1)}
	d.cmd.Dir = ".."
	// Its own process group, as a shell gives a command: Ctrl-C goes to
	// the group.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := d.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	d.cmd.Stderr = d.cmd.Stdout
	d.start = time.Now()
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			d.mu.Lock()
			d.lines = append(d.lines, sc.Text())
			d.at = append(d.at, time.Since(d.start))
			d.mu.Unlock()
			select {
			case d.seen <- struct{}{}:
			default:
			}
		}
		d.done <- d.cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
		if t.Failed() {
			t.Logf("----- demo output -----\n%s\n----- end of demo output -----", d.output())
		}
	})
	return d
}

func (d *demoRun) output() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return strings.Join(d.lines, "\n")
}

// waitLine waits for a line matching re and returns its submatches and
// when it came.
func (d *demoRun) waitLine(t *testing.T, re *regexp.Regexp, timeout time.Duration) ([]string, time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		d.mu.Lock()
		for i, l := range d.lines {
			if m := re.FindStringSubmatch(l); m != nil {
				d.mu.Unlock()
				return m, d.at[i]
			}
		}
		d.mu.Unlock()
		select {
		case <-d.seen:
		case err := <-d.done:
			d.done <- err
			d.mu.Lock()
			n := len(d.lines)
			d.mu.Unlock()
			select {
			case <-d.seen:
			default:
				if n == len(d.lines) {
					t.Fatalf("the demo ended (%v) without printing %s", err, re)
				}
			}
		case <-deadline:
			t.Fatalf("the demo printed no %s within %v", re, timeout)
		}
	}
}

// wait waits for the demo to exit and returns its exit code.
func (d *demoRun) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case err := <-d.done:
		d.done <- err
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		if err != nil {
			t.Fatalf("demo: %v", err)
		}
		return 0
	case <-time.After(timeout):
		t.Fatalf("the demo did not exit within %v", timeout)
		return -1
	}
}

var (
	demoLogs    = regexp.MustCompile(`logs in (\S+)`)
	demoConsole = regexp.MustCompile(`console\s+http://(\S+)/`)
	demoToken   = regexp.MustCompile(`admin token\s+(\S+)`)
	demoKam     = regexp.MustCompile(`Kamailio\s+(\S+) `)
)

// checkStopped fails the test if a server the demo started still runs:
// each has the demo's log directory on its command line; and its
// listeners are closed.
func checkStopped(t *testing.T, dir string, addrs ...string) {
	t.Helper()
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err == nil && strings.Contains(string(b), dir) {
			t.Errorf("still running after the demo: %s", strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
	for _, a := range addrs {
		if c, err := net.DialTimeout("tcp", a, time.Second); err == nil {
			c.Close()
			t.Errorf("%s still accepts connections after the demo", a)
		}
	}
}

// TestMakeDemo runs `make demo` as a newcomer would: the three messages
// come out within 30 s of its start, it exits 0, and nothing it started
// is left running.
func TestMakeDemo(t *testing.T) {
	d := startDemo(t, "make", "-s", "demo")
	logs, _ := d.waitLine(t, demoLogs, 90*time.Second)
	console, _ := d.waitLine(t, demoConsole, 30*time.Second)
	kam, _ := d.waitLine(t, demoKam, time.Second)
	for i, body := range []string{
		`pushed 1/3  message/sip +from <sip:alice@example\.com>  "Hello Bob! This is a SIP MESSAGE`,
		`pushed 2/3  multipart/mixed +from <sip:alice@example\.com>  "First message of an MSRP session\."`,
		`pushed 3/3  multipart/mixed +from <sip:alice@example\.com>  "Second message of the same session\."`,
	} {
		_, at := d.waitLine(t, regexp.MustCompile(body), 60*time.Second)
		if i == 2 && at > 30*time.Second {
			t.Errorf("the third message came %v after make demo started, want within 30 s", at.Round(time.Millisecond))
		}
		if i == 2 {
			t.Logf("the three messages were printed %v after make demo started", at.Round(time.Millisecond))
		}
	}
	if code := d.wait(t, 30*time.Second); code != 0 {
		t.Errorf("make demo exited %d, want 0", code)
	}
	checkStopped(t, logs[1], console[1], kam[1])
}

// TestDemoStayAndCtrlC: with --stay the console is up with the printed
// token after the push, and Ctrl-C stops everything and exits 0; Ctrl-C
// before the messages were pushed stops everything too and exits 130.
func TestDemoStayAndCtrlC(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "demo")
	if out, err := exec.Command("go", "build", "-o", bin, "./demo").CombinedOutput(); err != nil {
		t.Fatalf("build the demo: %v\n%s", err, out)
	}
	dp := deferpushBinary(t)
	args := []string{"--deferpush", dp, "--kamailio-cfg", "adapters/kamailio/kamailio.cfg"}

	t.Run("stay", func(t *testing.T) {
		d := startDemo(t, bin, append(args, "--stay")...)
		logs, _ := d.waitLine(t, demoLogs, 30*time.Second)
		console, _ := d.waitLine(t, demoConsole, 30*time.Second)
		token, _ := d.waitLine(t, demoToken, time.Second)
		d.waitLine(t, regexp.MustCompile(`the servers stay up`), 30*time.Second)
		if code, body := httpGet(t, "http://"+console[1]+"/"); code != 200 || !strings.Contains(body, "deferpush console") {
			t.Errorf("GET the console = %d", code)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		b, err := getWithToken(ctx, "http://"+console[1]+"/v1/whoami", token[1])
		if err != nil || !strings.Contains(string(b), `"role":"admin"`) {
			t.Errorf("the printed token on /v1/whoami: %s %v", b, err)
		}
		_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGINT)
		if code := d.wait(t, 30*time.Second); code != 0 {
			t.Errorf("Ctrl-C after the push: exit %d, want 0", code)
		}
		checkStopped(t, logs[1], console[1])
	})

	t.Run("interrupted", func(t *testing.T) {
		d := startDemo(t, bin, args...)
		// At its first line it is starting the servers.
		logs, _ := d.waitLine(t, demoLogs, 30*time.Second)
		_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGINT)
		if code := d.wait(t, 30*time.Second); code != 130 {
			t.Errorf("Ctrl-C while starting: exit %d, want 130", code)
		}
		checkStopped(t, logs[1])
	})
}

// getWithToken GETs url with a bearer token and wants 200.
func getWithToken(ctx context.Context, url, token string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err == nil && res.StatusCode != http.StatusOK {
		err = errors.New(res.Status)
	}
	return b, err
}
