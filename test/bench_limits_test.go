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
	defer r.Proc().Stop()
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
// Both ends are in that process, which may use every CPU of the machine
// (taskset over the union of the server and client CPUs).
func msrpSendLimit(b *testing.B, p benchParams) benchLimit {
	b.Helper()
	l := benchLimit{Name: "msrp-send", What: "plugin/msrp SEND→200, loopback TCP, 32 in flight (BenchmarkPipelinedStart), both ends on every CPU"}
	benchtime := "3s"
	if p.Quick {
		benchtime = "300ms"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	args := []string{"go", "test", "-run", "^$", "-bench", "^BenchmarkPipelinedStart$",
		"-benchtime", benchtime, "-count", "1", "../plugin/msrp"}
	procs := runtime.NumCPU()
	if p.CPUs.pinned() {
		all := p.CPUs.Servers + "," + p.CPUs.Clients
		if cpus, err := parseCPUList(all); err == nil {
			procs = len(cpus)
		}
		args = append([]string{"taskset", "-c", all}, args...)
	}
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Env = append(os.Environ(), "GOMAXPROCS="+strconv.Itoa(procs))
	out, err := cmd.CombinedOutput()
	m := msgsPerSec.FindSubmatch(out)
	if err != nil || m == nil {
		l.Err = fmt.Sprintf("go test -bench BenchmarkPipelinedStart: %v: %s", err, tail(string(out), 300))
		return l
	}
	l.Rate, _ = strconv.ParseFloat(string(m[1]), 64)
	return l
}

var (
	appendLine = regexp.MustCompile(`(?m)^BenchmarkAppend(?:-[0-9]+)?\s.*$`)
	rpushPerS  = regexp.MustCompile(`\s([0-9.]+) rpush/s`)
)

// storeAppendLimit is the Go benchmark of the store's append
// (store.BenchmarkAppend: Redis.Append from Concurrency goroutines, spread
// over 1,000 recipients, against a harness redis-server) beside raw
// unpipelined RPUSH (redis-benchmark -P 1 -c 50) on the same server right
// after, which the benchmark runs itself. The go test process is the
// client: it runs on the client CPUs like the bench, its redis-server on
// the server CPUs (harness.ServerCPUsEnv is inherited).
func storeAppendLimit(b *testing.B, p benchParams) benchLimit {
	b.Helper()
	l := benchLimit{Name: "store-append", What: fmt.Sprintf("store.Redis Append, %d goroutines (store BenchmarkAppend), vs redis-benchmark -t rpush -P 1 -c %d right after", p.Concurrency, p.Concurrency)}
	if p.Concurrency != 50 {
		l.Err = fmt.Sprintf("BenchmarkAppend runs 50 clients, the bench %d (BENCH_CONCURRENCY)", p.Concurrency)
		return l
	}
	// At least 10,000 appends: below that the benchmark skips RPUSH.
	n := "50000x"
	if p.Quick {
		n = "10000x"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "test", "-run", "^$", "-bench", "^BenchmarkAppend$",
		"-benchtime", n, "-count", "1", "../store").CombinedOutput()
	line := appendLine.Find(out)
	if err != nil || line == nil {
		l.Err = fmt.Sprintf("go test -bench BenchmarkAppend: %v: %s", err, tail(string(out), 300))
		return l
	}
	m, r := msgsPerSec.FindSubmatch(line), rpushPerS.FindSubmatch(line)
	if m == nil || r == nil {
		l.Err = fmt.Sprintf("BenchmarkAppend reported no msgs/s or no rpush/s (is redis-benchmark installed?): %s", line)
		return l
	}
	l.Rate, _ = strconv.ParseFloat(string(m[1]), 64)
	l.Ref, _ = strconv.ParseFloat(string(r[1]), 64)
	return l
}
