package harness

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// PrometheusProc is a Prometheus server on a free loopback port with its
// data in a temporary directory.
type PrometheusProc struct {
	*Proc
	// URL is the base URL of its HTTP API (http://127.0.0.1:port).
	URL string
}

// Prometheus starts a Prometheus server with the configuration config (a
// prometheus.yml; relative rule_files are relative to the test's
// directory) and waits until it is ready.
func Prometheus(t testing.TB, config string) *PrometheusProc {
	t.Helper()
	bin := Require(t, "prometheus", "prometheus")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t)))
	p := &PrometheusProc{URL: "http://" + addr}
	p.Proc = startProc(t, dir, "prometheus", bin,
		"--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=warn")
	p.WaitFor(t, 20*time.Second, "/-/ready", func(ctx context.Context) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.URL+"/-/ready", nil)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			return fmt.Errorf("/-/ready answered %d", res.StatusCode)
		}
		return nil
	})
	return p
}
