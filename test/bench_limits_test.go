package test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/deferpush/deferpush/test/harness"
)

var rpushRate = regexp.MustCompile(`RPUSH: ([0-9.]+) requests per second`)

// redisRPUSHLimit is the physical limit of the store path: redis-benchmark
// RPUSH, unpipelined (-P 1), at the store phase's concurrency, against a
// harness redis-server started the way deferpush's is.
func redisRPUSHLimit(b *testing.B, p benchParams) benchLimit {
	b.Helper()
	l := benchLimit{Name: "redis-rpush", What: fmt.Sprintf("redis-benchmark -t rpush -P 1 -c %d", p.Concurrency)}
	r := harness.Redis(b)
	host, port, _ := strings.Cut(r.Addr, ":")
	n := 200000
	if p.Quick {
		n = 20000
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "redis-benchmark", "-h", host, "-p", port, "-t", "rpush",
		"-P", "1", "-c", strconv.Itoa(p.Concurrency), "-n", strconv.Itoa(n), "-q").CombinedOutput()
	m := rpushRate.FindSubmatch(out)
	if err != nil || m == nil {
		l.Err = fmt.Sprintf("redis-benchmark: %v: %s", err, tail(string(out), 300))
		return l
	}
	l.Rate, _ = strconv.ParseFloat(string(m[1]), 64)
	return l
}

var msgsPerSec = regexp.MustCompile(`\s([0-9.]+) msgs/s`)

// msrpSendLimit is the physical limit of the push path: plugin/msrp alone,
// SEND→200 over one loopback TCP connection with 32 messages in flight
// (BenchmarkPipelinedStart, the pusher's pattern), run as its own go test.
func msrpSendLimit(b *testing.B, p benchParams) benchLimit {
	b.Helper()
	l := benchLimit{Name: "msrp-send", What: "plugin/msrp SEND→200, loopback TCP, 32 in flight (BenchmarkPipelinedStart)"}
	benchtime := "3s"
	if p.Quick {
		benchtime = "300ms"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "test", "-run", "^$", "-bench", "^BenchmarkPipelinedStart$",
		"-benchtime", benchtime, "-count", "1", "../plugin/msrp")
	cmd.Env = append(os.Environ(), "GOMAXPROCS="+strconv.Itoa(runtime.NumCPU()))
	out, err := cmd.CombinedOutput()
	m := msgsPerSec.FindSubmatch(out)
	if err != nil || m == nil {
		l.Err = fmt.Sprintf("go test -bench BenchmarkPipelinedStart: %v: %s", err, tail(string(out), 300))
		return l
	}
	l.Rate, _ = strconv.ParseFloat(string(m[1]), 64)
	return l
}
