package harness

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Proc is a server process started by the harness. Its combined stdout and
// stderr go to a log file that is printed when the test fails.
type Proc struct {
	Name    string
	LogPath string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// startProc starts name with args, logging to a file in dir. The process is
// put in its own process group so that stopping it also stops its children
// (Kamailio forks its workers).
func startProc(t T, dir, name, bin string, args ...string) *Proc {
	t.Helper()
	p := &Proc{Name: name, LogPath: filepath.Join(dir, name+".log")}
	if err := p.start(bin, args...); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			p.dumpLog(t)
		}
	})
	return p
}

func (p *Proc) start(bin string, args ...string) error {
	f, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout = f
	cmd.Stderr = f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	fmt.Fprintf(f, "### %s %s\n", bin, strings.Join(args, " "))
	if err := cmd.Start(); err != nil {
		f.Close()
		return err
	}
	done := make(chan struct{})
	p.mu.Lock()
	p.cmd, p.done = cmd, done
	p.mu.Unlock()
	go func() {
		err := cmd.Wait()
		f.Close()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(done)
	}()
	return nil
}

// PID is the process id of the running process.
func (p *Proc) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd.Process.Pid
}

// Exited reports whether the process has ended, and how.
func (p *Proc) Exited() (bool, error) {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	select {
	case <-done:
		p.mu.Lock()
		defer p.mu.Unlock()
		return true, p.err
	default:
		return false, nil
	}
}

// Stop sends SIGTERM to the process group and SIGKILL after 5 s, and waits
// for the process to end. It is safe to call more than once.
func (p *Proc) Stop() { p.signal(syscall.SIGTERM, 5*time.Second) }

// Kill sends SIGKILL to the process group at once, as a crash would, and
// waits for the process to end.
func (p *Proc) Kill() { p.signal(syscall.SIGKILL, 0) }

func (p *Proc) signal(sig syscall.Signal, grace time.Duration) {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	select {
	case <-done:
		return
	default:
	}
	pgid := cmd.Process.Pid
	_ = syscall.Kill(-pgid, sig)
	if grace > 0 {
		select {
		case <-done:
			waitGroupGone(pgid)
			return
		case <-time.After(grace):
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
		}
	}
	<-done
	waitGroupGone(pgid)
}

// waitGroupGone waits (up to 5 s) until no process of group pgid is left:
// the leader's exit does not wait for its children (Kamailio's workers),
// and one still exiting holds the listening sockets a restart on the same
// ports must bind.
func waitGroupGone(pgid int) {
	deadline := time.Now().Add(5 * time.Second)
	for syscall.Kill(-pgid, 0) == nil && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
}

// Log returns what the process has written so far.
func (p *Proc) Log() string {
	b, _ := os.ReadFile(p.LogPath)
	return string(b)
}

func (p *Proc) dumpLog(t T) {
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		t.Logf("%s log: %v", p.Name, err)
		return
	}
	const max = 16 << 10
	if len(b) > max {
		b = append([]byte("...\n"), b[len(b)-max:]...)
	}
	t.Logf("----- %s log (%s) -----\n%s\n----- end of %s log -----", p.Name, p.LogPath, bytes.TrimSpace(b), p.Name)
}

// WaitFor polls ready every 20 ms until it returns nil, the process exits,
// or timeout passes; the last error is in the failure message.
func (p *Proc) WaitFor(t T, timeout time.Duration, what string, ready func(ctx context.Context) error) {
	t.Helper()
	if err := p.poll(timeout, ready); err != nil {
		// The log is printed by the cleanup registered in startProc.
		t.Fatalf("%s: waiting for %s: %v", p.Name, what, err)
	}
}

func (p *Proc) poll(timeout time.Duration, ready func(ctx context.Context) error) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		if exited, err := p.Exited(); exited {
			return fmt.Errorf("process exited (%v)", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		last = ready(ctx)
		cancel()
		if last == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %v: %w", timeout, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func randUint32() uint32 {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return binary.BigEndian.Uint32(b[:])
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

func tail(s string, n int) string {
	if len(s) > n {
		return "...\n" + s[len(s)-n:]
	}
	return s
}
