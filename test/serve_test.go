package test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/deferpush/deferpush/test/harness"
)

func TestServeDefaultsHealthAndCleanStop(t *testing.T) {
	p := startDeferpush(t, nil)
	if !strings.Contains(p.Log(), "embedded in-memory store") {
		t.Error("no warning about the embedded store at start")
	}
	if p.HooksToken == "" || p.AdminToken == "" || p.HooksToken == p.AdminToken {
		t.Errorf("generated tokens: hooks %q, admin %q; want two different ones printed", p.HooksToken, p.AdminToken)
	}
	for _, addr := range []string{p.HooksAddr, p.AdminAddr} {
		if code, body := httpGet(t, "http://"+addr+"/healthz"); code != 200 {
			t.Errorf("GET %s/healthz = %d %s, want 200", addr, code, body)
		}
		if code, body := httpGet(t, "http://"+addr+"/readyz"); code != 200 {
			t.Errorf("GET %s/readyz = %d %s, want 200", addr, code, body)
		}
	}
	start := time.Now()
	if err := p.Stop(t); err != nil {
		t.Errorf("exit after SIGTERM: %v, want 0", err)
	}
	if d := time.Since(start); d > 12*time.Second {
		t.Errorf("stopping took %v, want within the 10 s shutdown timeout", d)
	}
	if !strings.Contains(p.Log(), "deferpush stopped") {
		t.Error(`no "deferpush stopped" in the log`)
	}
}

func TestServeReadyzFollowsRedis(t *testing.T) {
	r := harness.Redis(t)
	p := startDeferpush(t, []string{"DEFERPUSH_REDIS_URL=" + r.URL()})
	if strings.Contains(p.Log(), "embedded") {
		t.Error("embedded store used although redis.url is set")
	}
	if code, _ := httpGet(t, "http://"+p.AdminAddr+"/readyz"); code != 200 {
		t.Fatalf("readyz = %d with Redis up, want 200", code)
	}
	r.Kill()
	if code, body := httpGet(t, "http://"+p.AdminAddr+"/readyz"); code != 503 || !strings.Contains(body, "store_unavailable") {
		t.Errorf("readyz = %d %s with Redis down, want 503 store_unavailable", code, body)
	}
	if code, _ := httpGet(t, "http://"+p.AdminAddr+"/healthz"); code != 200 {
		t.Errorf("healthz = %d with Redis down, want 200 (the process is alive)", code)
	}
	r.Start(t)
	waitFor(t, 10*time.Second, "readyz back to 200", func() bool {
		code, _ := httpGet(t, "http://"+p.AdminAddr+"/readyz")
		return code == 200
	})
}

func TestServeMalformedConfigNamesFileLineAndField(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "deferpush.yaml")
	body := "hooks:\n  listen: 127.0.0.1:8710\nmsrp:\n  chunk_size: 20000\n"
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := runDeferpush(t, "serve", "--config", path)
	if err == nil {
		t.Fatalf("serve with a bad config exited 0:\n%s", out)
	}
	for _, want := range []string{path + ":4", "msrp.chunk_size", "20000"} {
		if !strings.Contains(out, want) {
			t.Errorf("error output lacks %q:\n%s", want, out)
		}
	}
}

// TestServeStopsWithRedisStalled: SIGTERM while Redis is stalled (SIGSTOP)
// under hook load ends the process within shutdown.timeout (10 s) and a
// few seconds: the store's close is bounded (storeCloseBound). go-redis
// drained its pipelines for 30 s, and the process took up to 30 s
// (PROBE5 F4).
func TestServeStopsWithRedisStalled(t *testing.T) {
	r := harness.Redis(t)
	p := startDeferpush(t, []string{"DEFERPUSH_REDIS_URL=" + r.URL()})
	var stop atomic.Bool
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 20 * time.Second}
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; !stop.Load(); n++ {
				user := fmt.Sprintf("sip:stall%d@example.com", w)
				raw := "MESSAGE " + user + " SIP/2.0\r\nVia: SIP/2.0/TCP 192.0.2.1;branch=z9hG4bK" + fmt.Sprint(w, "x", n) +
					"\r\nFrom: <sip:sender@example.com>;tag=1\r\nTo: <" + user + ">\r\nCall-ID: " + fmt.Sprint("stall-", w, "-", n) +
					"\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi"
				body, _ := json.Marshal(map[string]string{"raw": raw, "aor": user})
				req, _ := http.NewRequest(http.MethodPost, "http://"+p.HooksAddr+"/hooks/kamailio/message", bytes.NewReader(body))
				req.Header.Set("X-Deferpush-Token", p.HooksToken)
				req.Header.Set("Content-Type", "application/json")
				if res, err := client.Do(req); err == nil {
					_, _ = io.Copy(io.Discard, res.Body)
					res.Body.Close()
				} else {
					time.Sleep(20 * time.Millisecond)
				}
			}
		}()
	}
	time.Sleep(500 * time.Millisecond)
	pid := r.Proc().PID()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = syscall.Kill(pid, syscall.SIGCONT) }()
	time.Sleep(2 * time.Second) // commands queue up in the stalled client
	start := time.Now()
	err := p.Stop(t)
	d := time.Since(start)
	stop.Store(true)
	_ = syscall.Kill(pid, syscall.SIGCONT)
	wg.Wait()
	if d > 15*time.Second {
		t.Errorf("stopping with Redis stalled took %v, want within the 10 s shutdown timeout and the 2 s store bound", d)
	}
	t.Logf("stopped in %v (%v)", d.Round(100*time.Millisecond), err)
}
