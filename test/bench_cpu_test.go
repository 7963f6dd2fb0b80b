package test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/deferpush/deferpush/test/harness"
)

// benchCPUs is how make bench splits the machine (issue 14, item 6): the
// servers (Kamailio or OpenSIPS with every worker, redis-server, deferpush)
// on one set of CPUs, the load generators (the bench process itself, where
// the reference clients run, and what it starts: SIPp, redis-benchmark,
// the Go benchmark of the store) on the other, with taskset (util-linux).
type benchCPUs struct {
	// Servers and Clients are taskset CPU lists ("0", "1"); both empty
	// when the run is not pinned, and Why says why.
	Servers, Clients string
	Why              string
}

func (c benchCPUs) pinned() bool { return c.Servers != "" }

// pinBench pins the bench process to the client CPUs and makes the
// harness start every server on the server CPUs (harness.ServerCPUsEnv);
// deferpush, which the harness does not start, is pinned by pinServer
// right after it starts. On this machine's 2 cores: servers on CPU 0,
// clients on CPU 1. BENCH_SERVER_CPUS and BENCH_CLIENT_CPUS choose other
// lists; BENCH_PIN=0 turns pinning off (the report says so). Everything is
// put back when the benchmark ends.
func pinBench(b *testing.B) benchCPUs {
	b.Helper()
	if v, err := strconv.ParseBool(os.Getenv("BENCH_PIN")); err == nil && !v {
		return benchCPUs{Why: "BENCH_PIN=0"}
	}
	harness.Require(b, "taskset", "util-linux")
	allowed, err := allowedCPUs(os.Getpid())
	if err != nil {
		b.Fatal(err)
	}
	c := benchCPUs{Servers: os.Getenv("BENCH_SERVER_CPUS"), Clients: os.Getenv("BENCH_CLIENT_CPUS")}
	if c.Servers == "" || c.Clients == "" {
		if len(allowed) < 2 {
			return benchCPUs{Why: fmt.Sprintf("only %d CPU allowed to the bench (%s)", len(allowed), cpuListString(allowed))}
		}
		half := (len(allowed) + 1) / 2
		c.Servers, c.Clients = cpuListString(allowed[:half]), cpuListString(allowed[half:])
	}
	clients, err := parseCPUList(c.Clients)
	if err != nil {
		b.Fatalf("BENCH_CLIENT_CPUS: %v", err)
	}
	if _, err := parseCPUList(c.Servers); err != nil {
		b.Fatalf("BENCH_SERVER_CPUS: %v", err)
	}
	if err := pinProcess(os.Getpid(), c.Clients); err != nil {
		b.Fatal(err)
	}
	procs := runtime.GOMAXPROCS(len(clients))
	b.Setenv(harness.ServerCPUsEnv, c.Servers)
	b.Cleanup(func() {
		runtime.GOMAXPROCS(procs)
		_ = exec.Command("taskset", "-a", "-p", "-c", cpuListString(allowed), strconv.Itoa(os.Getpid())).Run()
	})
	return c
}

// pinServer pins a running server process (every thread; threads and
// children it makes later inherit it) to the server CPUs.
func pinServer(b *testing.B, c benchCPUs, pid int) {
	b.Helper()
	if !c.pinned() {
		return
	}
	if err := pinProcess(pid, c.Servers); err != nil {
		b.Fatal(err)
	}
}

// pinProcess runs taskset -a -p -c list pid until every thread of pid
// has the list (a thread created while taskset walks them may be missed
// once).
func pinProcess(pid int, list string) error {
	var last error
	for range 3 {
		out, err := exec.Command("taskset", "-a", "-p", "-c", list, strconv.Itoa(pid)).CombinedOutput()
		if err != nil {
			return fmt.Errorf("taskset -a -p -c %s %d: %v: %s", list, pid, err, bytes.TrimSpace(out))
		}
		if last = checkThreads([]int{pid}, list); last == nil {
			return nil
		}
	}
	return last
}

// checkPinned checks that every thread of the processes and of their
// descendants may run on exactly the CPUs of list.
func checkPinned(roots []int, list string) error {
	return checkThreads(procTree(roots...), list)
}

// checkThreads checks that every thread of the processes may run on
// exactly the CPUs of list.
func checkThreads(pids []int, list string) error {
	want, err := parseCPUList(list)
	if err != nil {
		return err
	}
	for _, pid := range pids {
		tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		for _, task := range tasks {
			tid, _ := strconv.Atoi(task.Name())
			got, err := allowedCPUs(tid)
			if err != nil {
				continue // ended meanwhile
			}
			if !slices.Equal(got, want) {
				return fmt.Errorf("process %d (%s) thread %d may run on CPUs %s, not %s",
					pid, procName(pid), tid, cpuListString(got), list)
			}
		}
	}
	return nil
}

// allowedCPUs reads Cpus_allowed_list of a process or thread.
func allowedCPUs(pid int) ([]int, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	for l := range strings.SplitSeq(string(raw), "\n") {
		if v, ok := strings.CutPrefix(l, "Cpus_allowed_list:"); ok {
			return parseCPUList(strings.TrimSpace(v))
		}
	}
	return nil, fmt.Errorf("/proc/%d/status: no Cpus_allowed_list", pid)
}

// parseCPUList reads taskset's list syntax: "0", "0-3", "0,2-3".
func parseCPUList(s string) ([]int, error) {
	var out []int
	for part := range strings.SplitSeq(s, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
		a, err := strconv.Atoi(lo)
		if err != nil || a < 0 {
			return nil, fmt.Errorf("CPU list %q: want e.g. 0 or 0-1,3", s)
		}
		z := a
		if isRange {
			if z, err = strconv.Atoi(hi); err != nil || z < a {
				return nil, fmt.Errorf("CPU list %q: want e.g. 0 or 0-1,3", s)
			}
		}
		for i := a; i <= z; i++ {
			out = append(out, i)
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

func cpuListString(cpus []int) string {
	s := make([]string, len(cpus))
	for i, c := range cpus {
		s[i] = strconv.Itoa(c)
	}
	return strings.Join(s, ",")
}

// procTree lists the live processes roots and all their descendants.
func procTree(roots ...int) []int {
	children := map[int][]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, ok := procStat(pid); ok {
			children[st.ppid] = append(children[st.ppid], pid)
		}
	}
	var out []int
	seen := map[int]bool{}
	var walk func(int)
	walk = func(pid int) {
		if seen[pid] {
			return
		}
		seen[pid] = true
		if _, ok := procStat(pid); ok {
			out = append(out, pid)
		}
		for _, c := range children[pid] {
			walk(c)
		}
	}
	for _, r := range roots {
		walk(r)
	}
	return out
}

// treeCPUSeconds is the CPU time of the processes roots and every live
// descendant: the server side of a phase is the difference of two
// readings. Each process counts the time on CPU of its threads from
// /proc/PID/task/TID/schedstat (nanoseconds; /proc/PID/stat's utime and
// stime come in 10 ms ticks, too coarse for the 200 messages of M=1),
// or its utime+stime when schedstat is missing. Threads that ended are
// not counted: none do in these servers (Kamailio's processes have one
// thread, redis-server and Go keep theirs).
func treeCPUSeconds(roots ...int) float64 {
	var total float64
	for _, pid := range procTree(roots...) {
		total += processCPUSeconds(pid)
	}
	return total
}

// processCPUSeconds is one process's CPU time, as treeCPUSeconds counts it.
func processCPUSeconds(pid int) float64 {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	var ns int64
	read := 0
	for _, t := range tasks {
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, t.Name()))
		if err != nil {
			continue
		}
		f := strings.Fields(string(raw))
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			continue
		}
		ns += v
		read++
	}
	if err == nil && read > 0 {
		return float64(ns) / 1e9
	}
	st, _ := procStat(pid)
	return float64(st.utime+st.stime) / clockTicks
}

// selfCPUSeconds is the bench process's own CPU time (the reference
// clients run in it) with that of the children it reaped (SIPp UACs run
// to completion): the client side of a phase, beside the live client
// processes. Its live children, the servers among them, are not in it.
func selfCPUSeconds() float64 {
	st, _ := procStat(os.Getpid())
	return processCPUSeconds(os.Getpid()) + float64(st.cutime+st.cstime)/clockTicks
}

// clockTicks is USER_HZ, 100 on every Linux architecture Go supports.
const clockTicks = 100

type statFields struct {
	ppid           int
	utime, stime   int64
	cutime, cstime int64
}

func procStat(pid int) (statFields, bool) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return statFields{}, false
	}
	// The command name is in parentheses and may hold spaces: the fields
	// that follow start after the last ')'.
	i := bytes.LastIndexByte(raw, ')')
	if i < 0 {
		return statFields{}, false
	}
	fs := strings.Fields(string(raw[i+1:]))
	// fs[0] is field 3 (state): ppid is field 4, utime 14, stime 15,
	// cutime 16, cstime 17.
	if len(fs) < 15 {
		return statFields{}, false
	}
	n := func(j int) int64 { v, _ := strconv.ParseInt(fs[j], 10, 64); return v }
	return statFields{ppid: int(n(1)), utime: n(11), stime: n(12), cutime: n(13), cstime: n(14)}, true
}

func procName(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return strings.TrimSpace(string(b))
}

// settleCPU waits until the processes have been idle (under 5 ms of CPU
// in 200 ms) or 5 s passed: work a phase queued (Kamailio's async hook
// calls, deferpush's push attempts) is counted in it.
func settleCPU(roots ...int) {
	deadline := time.Now().Add(5 * time.Second)
	last := treeCPUSeconds(roots...)
	for time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
		now := treeCPUSeconds(roots...)
		if now-last < 0.005 {
			return
		}
		last = now
	}
}

// cpuMeter reads the server side's and the client side's CPU seconds.
type cpuMeter struct {
	servers []int // roots of the server processes
	clients []int // client processes besides the bench process (a SIPp UAS)
}

// reading is one cpuMeter reading.
type reading struct {
	at             time.Time
	server, client float64
}

// start is the reading a phase starts from, once the servers have been
// idle (settleCPU): what they were still doing before it (start-up, the
// last phase) is not its work.
func (c cpuMeter) start() reading {
	settleCPU(c.servers...)
	return c.read()
}

func (c cpuMeter) read() reading {
	return reading{at: time.Now(), server: treeCPUSeconds(c.servers...), client: selfCPUSeconds() + treeCPUSeconds(c.clients...)}
}

// phaseCPU is what the servers and the clients used between two readings.
type phaseCPU struct {
	Server, Client float64 // seconds
	Wall           time.Duration
}

func between(a, b reading) phaseCPU {
	return phaseCPU{Server: b.server - a.server, Client: b.client - a.client, Wall: b.at.Sub(a.at)}
}

// clientBusy is the share of the client CPUs the clients used.
func (p phaseCPU) clientBusy(cpus benchCPUs) float64 {
	n := 1
	if l, err := parseCPUList(cpus.Clients); err == nil && len(l) > 0 {
		n = len(l)
	} else if !cpus.pinned() {
		n = runtime.NumCPU()
	}
	if p.Wall <= 0 {
		return 0
	}
	return p.Client / p.Wall.Seconds() / float64(n)
}

// checkServersPinned says, as a row problem, when a server thread is not
// on the server CPUs or the bench process not on the client CPUs.
func checkServersPinned(c benchCPUs, servers ...int) string {
	if !c.pinned() {
		return ""
	}
	if err := checkPinned(servers, c.Servers); err != nil {
		return "pinning: " + err.Error()
	}
	// The bench process's own threads; its children are the servers.
	if err := checkThreads([]int{os.Getpid()}, c.Clients); err != nil {
		return "pinning: " + err.Error()
	}
	return ""
}

// memTempDir is a temporary directory in memory (/dev/shm) when there is
// one: the SQLite database lives there, so that msilo pays no fsync, as
// the harness's redis-server, which runs without persistence, pays none.
func memTempDir(b *testing.B) string {
	b.Helper()
	dir, err := os.MkdirTemp("/dev/shm", "deferpush-bench-")
	if err != nil {
		return b.TempDir()
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}
