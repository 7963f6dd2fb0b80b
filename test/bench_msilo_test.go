package test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/deferpush/deferpush/test/harness"
)

// BenchmarkVsMsilo is `make bench`: deferpush beside msilo, the offline
// message store of Kamailio and of OpenSIPS, on the same machine, in one
// run, on the same workload (issue 8), and beside the machine's physical
// limits. It writes report.md, report.csv and delivery.svg under
// results/<date>-<host>/ (QUICK=1: results/tmp/).
//
// Workload: U users x M messages each (env U, default 200; M, a
// comma-separated list, default 1,10,50), sent by SIPp through the proxy
// while the users are offline; then all U users register, and the clock
// runs until every message is confirmed by its client. QUICK=1 runs U=20,
// M=1,5. Run it with -benchtime 1x: one call does the whole run.
//
// Each M has five rows: Kamailio msilo, deferpush attached to Kamailio
// (the shipped kamailio.cfg, then with STORE_VIA_SIP), OpenSIPS msilo, and
// deferpush attached to OpenSIPS (the shipped opensips.cfg). Without
// OpenSIPS (not built, see scripts/install-test-deps.sh) its rows are left
// out and the report says why; under CI=true that fails the run.
func BenchmarkVsMsilo(b *testing.B) {
	p := benchParamsFromEnv(b)
	for _, bin := range [][2]string{{"kamailio", "kamailio"}, {"sipp", "sip-tester"},
		{"sqlite3", "sqlite3"}, {"redis-server", "redis-server"}, {"redis-benchmark", "redis-tools"}} {
		harness.Require(b, bin[0], bin[1])
	}
	start := time.Now()
	rep := &benchReport{Params: p, Machine: machineInfo(), Started: start}
	if _, err := harness.FindOpenSIPS(); err != nil {
		if harness.InCI() {
			b.Fatalf("OpenSIPS 3.4 not found (%v): scripts/install-test-deps.sh builds it", err)
		}
		rep.OpenSIPSMissing = err.Error()
	}
	rep.Limits = append(rep.Limits, redisRPUSHLimit(b, p), msrpSendLimit(b, p))
	only := os.Getenv("BENCH_ONLY") // msilo or deferpush, to look into one side
	for _, m := range p.Ms {
		for _, proxy := range []string{proxyKamailio, proxyOpenSIPS} {
			if proxy == proxyOpenSIPS && rep.OpenSIPSMissing != "" {
				continue
			}
			if only != "deferpush" {
				rep.Rows = append(rep.Rows, runMsilo(b, p, m, proxy))
			}
			if only == "msilo" {
				continue
			}
			sides := []deferpushSide{{proxy: proxy}}
			if proxy == proxyKamailio {
				sides = append(sides, deferpushSide{proxy: proxy, viaSIP: true})
			}
			for _, side := range sides {
				if row, ok := runDeferpushSide(b, p, m, side); ok {
					rep.Rows = append(rep.Rows, row)
				} else {
					rep.DeferpushMissing = row.Err
					break
				}
			}
		}
		if m == 1 && only != "msilo" && rep.DeferpushMissing == "" {
			if row, ok := runDeferpushPager(b, p, m); ok {
				rep.Rows = append(rep.Rows, row)
			}
		}
	}
	rep.Elapsed = time.Since(start)
	if err := rep.write(p.OutDir); err != nil {
		b.Fatal(err)
	}
	b.Logf("report written to %s in %v", p.OutDir, rep.Elapsed.Round(time.Second))
	for _, r := range rep.Rows {
		b.Logf("%-25s M=%-3d store %8.0f msgs/s  deliver %8.0f msgs/s  p50 %7.1f ms  p99 %7.1f ms  cpu %5.2f+%5.2f s  %6.0f B/msg  %s",
			r.System, r.M, r.StoreRate, r.DeliverRate, ms(r.P50), ms(r.P99), r.CPUStore, r.CPUDeliver, r.BytesPerMsg, join(r.Err, r.Note))
	}
	// The report is written either way; a row with problems fails the run
	// so that the servers' logs are shown and CI notices.
	for _, r := range rep.Rows {
		if r.Err != "" {
			b.Errorf("%s at M=%d: %s", r.System, r.M, r.Err)
		}
	}
	b.ReportMetric(0, "ns/op")
}

// benchParams are the knobs of one run.
type benchParams struct {
	Users int
	Ms    []int
	// Concurrency is the number of MESSAGEs in flight in the store phase
	// (SIPp -l) and redis-benchmark's -c.
	Concurrency int
	Quick       bool
	OutDir      string
	// Phase bounds the wait for one phase to complete.
	Phase time.Duration
}

func benchParamsFromEnv(b *testing.B) benchParams {
	b.Helper()
	p := benchParams{Users: 200, Ms: []int{1, 10, 50}, Concurrency: 50, Phase: 2 * time.Minute}
	p.Quick, _ = strconv.ParseBool(os.Getenv("QUICK"))
	if p.Quick {
		p.Users, p.Ms, p.Phase = 20, []int{1, 5}, 20*time.Second
	}
	if v := os.Getenv("U"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 10000 {
			b.Fatalf("U=%q: want a number of users from 1 to 10000", v)
		}
		p.Users = n
	}
	if v := os.Getenv("M"); v != "" {
		p.Ms = nil
		for f := range strings.SplitSeq(v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 || n > 1000 {
				b.Fatalf("M=%q: want a comma-separated list of messages per user, each from 1 to 1000", v)
			}
			p.Ms = append(p.Ms, n)
		}
	}
	if v := os.Getenv("BENCH_CONCURRENCY"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("BENCH_CONCURRENCY=%q: want a positive number", v)
		}
		p.Concurrency = n
	}
	host, _ := os.Hostname()
	name := time.Now().Format("2006-01-02") + "-" + host
	p.OutDir = filepath.Join("..", "results", name)
	if p.Quick {
		// CI runs the quick variant so that the harness cannot rot; its
		// figures are not the committed ones.
		p.OutDir = filepath.Join("..", "results", "tmp", "quick-"+name)
	}
	if v := os.Getenv("BENCH_OUT"); v != "" {
		p.OutDir = v
	}
	return p
}

// benchRow is one system at one M.
type benchRow struct {
	System string
	Users  int
	M      int
	// Stored is how many messages the store confirmed (202/200 to SIPp
	// and found in the database afterwards).
	Stored    int
	StoreTime time.Duration
	StoreRate float64
	// Delivered counts distinct messages confirmed by their client;
	// Duplicates the further deliveries of a message already confirmed.
	Delivered   int
	Duplicates  int
	DeliverTime time.Duration
	DeliverRate float64
	// P50 and P99 are over users: from the user's REGISTER to the
	// confirmation of its last message.
	P50, P99 time.Duration
	// CPU seconds of the server-side processes in each phase.
	CPUStore, CPUDeliver float64
	// BytesPerMsg is the growth of the database (SQLite file after a
	// checkpoint; Redis used_memory) per stored message.
	BytesPerMsg float64
	// Err says what went wrong (the run fails); Note is an observation.
	Err, Note string
}

// benchLimit is one physical-limit figure.
type benchLimit struct {
	Name, What string
	Rate       float64
	Err        string
}

// The proxies of the bench.
const (
	proxyKamailio = "kamailio"
	proxyOpenSIPS = "opensips"
)

// The msilo rows of the report.
const (
	systemMsilo         = "msilo"
	systemMsiloOpenSIPS = "msilo (OpenSIPS)"
)

// runMsilo measures msilo on db_sqlite in Kamailio or in OpenSIPS (proxy)
// at M messages per user: SIPp sends the MESSAGEs, SIPp REGISTERs every
// user with its contact on one SIPp UAS that answers 200 to each dumped
// MESSAGE.
func runMsilo(b *testing.B, p benchParams, m int, proxy string) benchRow {
	b.Helper()
	row := benchRow{System: systemMsilo, Users: p.Users, M: m}
	if proxy == proxyOpenSIPS {
		row.System = systemMsiloOpenSIPS
	}
	dir := memTempDir(b)
	db := filepath.Join(dir, "msilo.db")
	schemaDir := sqliteSchemaDir
	if proxy == proxyOpenSIPS {
		inst := harness.RequireOpenSIPS(b)
		if inst.DataDir == "" {
			b.Fatalf("OpenSIPS %s has no share/opensips folder with the SQLite schemas", inst.Binary)
		}
		schemaDir = filepath.Join(inst.DataDir, "sqlite")
	}
	// WAL stays with the file: OpenSIPS's db_sqlite has no journal
	// setting, and Kamailio's (DB_JOURNAL), which switches every new
	// connection, then has nothing to switch; switching needs the file to
	// itself, and Kamailio's processes connecting at once at start failed
	// it with "database is locked".
	if err := createMsiloDB(db, schemaDir); err != nil {
		b.Fatal(err)
	}
	size0, err := sqliteSize(db)
	if err != nil {
		b.Fatal(err)
	}
	users := writeUsersCSV(b, dir, p.Users)
	port := harness.FreePort(b)
	var k benchProxy
	if proxy == proxyOpenSIPS {
		o := harness.OpenSIPS(b, harness.OpenSIPSConfig{
			ConfigFile: "testdata/opensips-msilo.cfg",
			SIPPort:    port,
			Defines: map[string]string{
				"DB_URL":      strconv.Quote("sqlite://" + db),
				"MSILO_PROXY": strconv.Quote(fmt.Sprintf("sip:127.0.0.1:%d", port)),
			},
			ExtraArgs: []string{"-m", "1024"},
		})
		k = benchProxy{Proc: o.Proc, SIPAddr: o.SIPAddr}
	} else {
		kp := harness.Kamailio(b, harness.KamailioConfig{
			ConfigFile: "testdata/kamailio-msilo.cfg",
			SIPPort:    port,
			Defines: map[string]string{
				"DB_URL":      strconv.Quote("sqlite:///" + db),
				"DB_JOURNAL":  strconv.Quote(db + "=WAL;"),
				"MSILO_PROXY": strconv.Quote(fmt.Sprintf("sip:127.0.0.1:%d", port)),
			},
			// Every dumped message is a transaction in shared memory at
			// once (U x M of them when all users register together).
			ExtraArgs: []string{"-m", "1024"},
		})
		k = benchProxy{Proc: kp.Proc, SIPAddr: kp.SIPAddr}
	}
	server := func() float64 { return groupCPUSeconds(k.PID()) }

	total := p.Users * m
	cpu0 := server()
	row.StoreTime, row.Err = sippStore(b, p, k.SIPAddr, users, dir, total)
	row.CPUStore = server() - cpu0
	if n, err := sqliteCount(db, "SELECT count(*) FROM silo"); err != nil {
		row.Err = join(row.Err, err.Error())
	} else {
		row.Stored = n
	}
	if row.Stored != total {
		row.Err = join(row.Err, fmt.Sprintf("%d of %d stored", row.Stored, total))
	}
	row.StoreRate = rate(row.Stored, row.StoreTime)
	if size1, err := sqliteSize(db); err == nil && row.Stored > 0 {
		row.BytesPerMsg = float64(size1-size0) / float64(row.Stored)
	}

	uasLog := filepath.Join(dir, "uas.log")
	uas, uasPort := harness.StartSIPp(b, harness.SIPpConfig{
		Scenario: "testdata/bench/message-uas.xml",
		Args:     []string{"-trace_logs", "-log_file", uasLog, "-buff_size", "4194304"},
		Timeout:  10 * time.Minute,
	})
	waitUDPBound(b, uas, uasPort)
	regLog := filepath.Join(dir, "reg.log")
	cpu1 := server()
	res := harness.RunSIPp(b, harness.SIPpConfig{
		Scenario: "testdata/bench/register-uac.xml",
		Remote:   k.SIPAddr,
		Args: []string{"-inf", users, "-m", strconv.Itoa(p.Users), "-r", "100000", "-l", strconv.Itoa(p.Users),
			"-key", "uas_port", strconv.Itoa(uasPort), "-trace_logs", "-log_file", regLog},
		Timeout: p.Phase,
	})
	if res.Err != nil {
		row.Err = join(row.Err, "REGISTER: "+firstLine(res.Log))
	}
	want := row.Stored
	deadline := time.Now().Add(p.Phase)
	var del deliveries
	for {
		del = parseDeliveries(uasLog)
		if del.distinct() >= want || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	// msilo deletes a message when its 200 came back, on its check_time
	// timer: that work is part of delivering, so wait for it (bounded).
	for range 50 {
		if n, err := sqliteCount(db, "SELECT count(*) FROM silo"); err == nil && n == 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	row.CPUDeliver = server() - cpu1
	if n, err := sqliteCount(db, "SELECT count(*) FROM silo"); err == nil && n > 0 {
		// msilo's behaviour, not the harness's: they will be dumped again
		// at the next REGISTER (duplicates).
		row.Note = fmt.Sprintf("%d confirmed messages still in the database 5 s after the last confirmation", n)
	}
	regs := parseRegisters(regLog)
	row.fillDelivery(regs, del, want)
	uas.Stop()
	k.Stop()
	return row
}

// fillDelivery computes the delivery figures from when each user
// registered and when each message was first confirmed.
func (row *benchRow) fillDelivery(regs map[string]time.Time, del deliveries, want int) {
	row.Delivered = del.distinct()
	row.Duplicates = del.lines - row.Delivered
	if row.Delivered < want {
		row.Err = join(row.Err, fmt.Sprintf("%d of %d delivered", row.Delivered, want))
	}
	var first, last time.Time
	var perUser []time.Duration
	for user, at := range regs {
		if first.IsZero() || at.Before(first) {
			first = at
		}
		done, ok := del.lastByUser[user]
		if !ok {
			continue
		}
		if done.After(last) {
			last = done
		}
		perUser = append(perUser, done.Sub(at))
	}
	if len(perUser) == 0 || first.IsZero() {
		return
	}
	row.DeliverTime = last.Sub(first)
	row.DeliverRate = rate(row.Delivered, row.DeliverTime)
	row.P50, row.P99 = percentile(perUser, 50), percentile(perUser, 99)
}

// sippStore sends total MESSAGEs through the proxy at addr with SIPp,
// Concurrency in flight, and returns the time from the first sent to
// the last answered.
func sippStore(b *testing.B, p benchParams, addr, users, dir string, total int) (time.Duration, string) {
	b.Helper()
	logPath := filepath.Join(dir, "store.log")
	res := harness.RunSIPp(b, harness.SIPpConfig{
		Scenario: "testdata/bench/store-uac.xml",
		Remote:   addr,
		Args: []string{"-inf", users, "-m", strconv.Itoa(total), "-r", "100000", "-l", strconv.Itoa(p.Concurrency),
			"-trace_logs", "-log_file", logPath},
		Timeout: p.Phase,
	})
	var errs string
	if res.Err != nil {
		errs = "store: " + firstLine(res.Log)
	}
	var first, last time.Time
	for _, l := range readLog(logPath) {
		if first.IsZero() || l.at.Before(first) {
			first = l.at
		}
		if l.kind == "STORED" && l.at.After(last) {
			last = l.at
		}
	}
	if first.IsZero() || last.IsZero() {
		return 0, join(errs, "store: no timestamps in the SIPp log")
	}
	return last.Sub(first), errs
}

// logLine is one -trace_logs line of the bench scenarios:
// "DATE\tTIME\tEPOCH.USEC KIND ARGS...".
type logLine struct {
	at   time.Time
	kind string
	args []string
}

func readLog(path string) []logLine {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []logLine
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 4 {
			continue // a line being written
		}
		sec, err := strconv.ParseFloat(fs[2], 64)
		if err != nil {
			continue
		}
		whole := math.Floor(sec)
		out = append(out, logLine{at: time.Unix(int64(whole), int64(math.Round((sec-whole)*1e6))*1e3), kind: fs[3], args: fs[4:]})
	}
	return out
}

// deliveries are the confirmations a client logged.
type deliveries struct {
	lines      int
	seen       map[string]bool
	lastByUser map[string]time.Time
}

func (d deliveries) distinct() int { return len(d.seen) }

// parseDeliveries reads the UAS log: "... DELIVERED user number".
func parseDeliveries(path string) deliveries {
	d := deliveries{seen: map[string]bool{}, lastByUser: map[string]time.Time{}}
	for _, l := range readLog(path) {
		if l.kind != "DELIVERED" || len(l.args) < 2 {
			continue
		}
		d.lines++
		if d.seen[l.args[1]] {
			continue
		}
		d.seen[l.args[1]] = true
		if l.at.After(d.lastByUser[l.args[0]]) {
			d.lastByUser[l.args[0]] = l.at
		}
	}
	return d
}

// parseRegisters reads the REGISTER UAC log: "... REGISTER user".
func parseRegisters(path string) map[string]time.Time {
	regs := map[string]time.Time{}
	for _, l := range readLog(path) {
		if l.kind == "REGISTER" && len(l.args) >= 1 {
			regs[l.args[0]] = l.at
		}
	}
	return regs
}

// benchDomain is the domain of the bench users, sip:userNNNN@example.com.
const benchDomain = "example.com"

// benchUser is the user part of the i-th user's AOR.
func benchUser(i int) string { return fmt.Sprintf("user%04d", i) }

// writeUsersCSV writes the SIPp injection file of the users.
func writeUsersCSV(b *testing.B, dir string, users int) string {
	b.Helper()
	var buf bytes.Buffer
	buf.WriteString("SEQUENTIAL\n")
	for i := range users {
		fmt.Fprintf(&buf, "%s;%s;\n", benchUser(i), benchDomain)
	}
	path := filepath.Join(dir, "users.csv")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		b.Fatal(err)
	}
	return path
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

const sqliteSchemaDir = "/usr/share/kamailio/db_sqlite"

// benchProxy is the proxy process of one row, Kamailio or OpenSIPS.
type benchProxy struct {
	*harness.Proc
	SIPAddr string
}

// createMsiloDB creates the msilo database in WAL mode from the proxy's
// schema files in dir (Debian's kamailio-sqlite-modules ships Kamailio's;
// OpenSIPS installs its own).
func createMsiloDB(path, dir string) error {
	schema := []byte("PRAGMA journal_mode=WAL;\n")
	for _, f := range []string{"standard-create.sql", "msilo-create.sql"} {
		s, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			return fmt.Errorf("msilo schema: %w", err)
		}
		schema = append(schema, s...)
	}
	cmd := exec.Command("sqlite3", path)
	cmd.Stdin = bytes.NewReader(schema)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("sqlite3 %s: %v\n%s", path, err, out)
	}
	return nil
}

func sqliteCount(db, query string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "sqlite3", "-cmd", ".timeout 5000", db, query).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("sqlite3 %q: %v: %s", query, err, bytes.TrimSpace(out))
	}
	return strconv.Atoi(strings.TrimSpace(string(out)))
}

// sqliteSize checkpoints the write-ahead log into the database file and
// returns the file's size.
func sqliteSize(db string) (int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "sqlite3", "-cmd", ".timeout 5000", db, "PRAGMA wal_checkpoint(TRUNCATE);").CombinedOutput(); err != nil {
		return 0, fmt.Errorf("sqlite3 checkpoint: %v: %s", err, out)
	}
	st, err := os.Stat(db)
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

// waitUDPBound waits until a process has bound the UDP port.
func waitUDPBound(b *testing.B, p *harness.Proc, port int) {
	b.Helper()
	p.WaitFor(b, 10*time.Second, "UDP port bound", func(context.Context) error {
		c, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			return nil // taken: the process listens
		}
		c.Close()
		return fmt.Errorf("port %d not bound yet", port)
	})
}

// groupCPUSeconds is the user+system CPU time of every live process in
// the process group pgid (Kamailio's workers are in its group).
func groupCPUSeconds(pgid int) float64 {
	entries, _ := os.ReadDir("/proc")
	var ticks int64
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, ok := procStat(pid)
		if ok && st.pgrp == pgid {
			ticks += st.utime + st.stime
		}
	}
	return float64(ticks) / clockTicks
}

// processCPUSeconds is the user+system CPU time of one process.
func processCPUSeconds(pid int) float64 {
	st, _ := procStat(pid)
	return float64(st.utime+st.stime) / clockTicks
}

// clockTicks is USER_HZ, 100 on every Linux architecture Go supports.
const clockTicks = 100

type statFields struct {
	pgrp         int
	utime, stime int64
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
	// fs[0] is field 3 (state): pgrp is field 5, utime 14, stime 15.
	if len(fs) < 13 {
		return statFields{}, false
	}
	pgrp, _ := strconv.Atoi(fs[2])
	ut, _ := strconv.ParseInt(fs[11], 10, 64)
	stt, _ := strconv.ParseInt(fs[12], 10, 64)
	return statFields{pgrp: pgrp, utime: ut, stime: stt}, true
}

func rate(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

func percentile(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[max(0, min(len(s)-1, i-1))]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func join(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

// firstLine is the first line of SIPp's output that says what failed.
func firstLine(log string) string {
	for l := range strings.SplitSeq(log, "\n") {
		l = strings.TrimSpace(l)
		if l != "" && !strings.HasPrefix(l, "-") && !strings.HasPrefix(l, "Resolving") {
			return l
		}
	}
	return "failed"
}
