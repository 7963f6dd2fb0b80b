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
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/deferpush/deferpush/test/harness"
)

// BenchmarkVsMsilo is `make bench`: deferpush beside msilo, the offline
// message store of Kamailio and of OpenSIPS, on the same machine, in one
// run, on the same workload (issues 8 and 14), and beside the machine's
// physical limits. It writes report.md, report.csv, report-register.csv
// and delivery.svg under results/<date>-<host>/ (QUICK=1: results/tmp/).
//
// The bench is fair by construction (issue 14, item 6): the servers run
// on one set of CPUs and the load generators on another (pinBench); every
// client speaks SIP over UDP to the proxy; Kamailio runs the same number
// of SIP workers in every row where the modules allow it (BENCH_WORKERS,
// default 1, the most msilo's db_sqlite takes); and each row reports the
// server CPU per message beside its rates.
//
// Message rows: U users x M messages each (env U, default 200; M, a
// comma-separated list, default 1,10,50), sent by SIPp through the proxy
// while the users are offline; then all U users register, and the clock
// runs until every message is confirmed by its client. Each M has a row
// per system of messageSystems.
//
// Registration rows: REG_N REGISTERs (default 10,000) of REG_N users with
// empty mailboxes, by one SIPp scenario, through each system of
// registerSystems: plain Kamailio (the registrar alone), Kamailio with
// msilo, and Kamailio with each deferpush mode.
//
// Every row runs RUNS times (default 3; the runs of all rows interleave,
// so that a noisy minute spreads over every system), and the report gives
// the median and the spread. QUICK=1 runs U=20, M=1,5, REG_N=1000 and one
// run. Run it with -benchtime 1x: one call does the whole run.
//
// Without OpenSIPS (not built, see scripts/install-test-deps.sh) its rows
// are left out and the report says why; under CI=true that fails the run.
// A row with a problem, a physical limit that could not be measured and a
// deferpush side that could not run (unless BENCH_DEFERPUSH=0) fail the
// run once the report is written. A system that is not built yet (the
// Redis-direct mode) is listed as such and fails nothing.
func BenchmarkVsMsilo(b *testing.B) {
	p := benchParamsFromEnv(b)
	for _, bin := range [][2]string{{"kamailio", "kamailio"}, {"sipp", "sip-tester"},
		{"sqlite3", "sqlite3"}, {"redis-server", "redis-server"}, {"redis-benchmark", "redis-tools"}} {
		harness.Require(b, bin[0], bin[1])
	}
	start := time.Now()
	p.CPUs = pinBench(b)
	rep := &benchReport{Params: p, Machine: machineInfo(), Started: start}
	if _, err := harness.FindOpenSIPS(); err != nil {
		if harness.InCI() {
			b.Fatalf("OpenSIPS 3.4 not found (%v): scripts/install-test-deps.sh builds it", err)
		}
		rep.OpenSIPSMissing = err.Error()
	}
	rep.DeferpushMissing = deferpushSideMissing()
	for _, limit := range []func(*testing.B, benchParams) benchLimit{redisRPUSHLimit, storeAppendLimit, msrpSendLimit} {
		t0 := time.Now()
		l := limit(b, p)
		rep.Limits = append(rep.Limits, l)
		b.Logf("limit %s (%4.1f s): %.0f/s %s", l.Name, time.Since(t0).Seconds(), l.Rate, l.Err)
	}
	systems := selectSystems(rep, messageSystems(rep))
	regs := selectSystems(rep, registerSystems(rep))
	floors := selectSystems(rep, floorSystems())
	for run := 1; run <= p.Runs; run++ {
		for _, m := range p.Ms {
			for _, sys := range systems {
				if !sys.runsAt(m) {
					continue
				}
				t0 := time.Now()
				row := sys.Run(b, p, m)
				row.System, row.Run = sys.Name, run
				rep.Rows = append(rep.Rows, row)
				b.Logf("run %d (%4.1f s): %s", run, time.Since(t0).Seconds(), row.summary())
			}
		}
		rep.FloorRows = append(rep.FloorRows, runEach(b, p, run, floors)...)
		if p.RegUsers > 0 {
			rep.RegRows = append(rep.RegRows, runEach(b, p, run, regs)...)
		}
	}
	rep.Elapsed = time.Since(start)
	rep.Machine.LoadEnd = loadAverage()
	if err := rep.write(p.OutDir); err != nil {
		b.Fatal(err)
	}
	b.Logf("report written to %s in %v", p.OutDir, rep.Elapsed.Round(time.Second))
	for _, g := range rep.goals() {
		b.Log("goal: " + g.String())
	}
	// The report is written either way; what failures lists fails the
	// run, so that the servers' logs are shown and CI notices.
	for _, f := range rep.failures(os.Getenv("BENCH_DEFERPUSH") == "0") {
		b.Error(f)
	}
	b.ReportMetric(0, "ns/op")
}

// failures are what makes the run fail once the report is written: a row
// with a problem, a physical limit that could not be measured, and a
// deferpush side that could not run unless skipped on purpose
// (BENCH_DEFERPUSH=0). A system not built yet fails nothing: its rows say
// so in the report.
func (r *benchReport) failures(deferpushSkipped bool) []string {
	var out []string
	for _, row := range r.Rows {
		if row.Err != "" {
			out = append(out, fmt.Sprintf("%s at M=%d, run %d: %s", row.System, row.M, row.Run, row.Err))
		}
	}
	for _, row := range r.RegRows {
		if row.Err != "" {
			out = append(out, fmt.Sprintf("%s, %d REGISTERs, run %d: %s", row.System, row.N, row.Run, row.Err))
		}
	}
	for _, row := range r.FloorRows {
		if row.Err != "" {
			out = append(out, fmt.Sprintf("%s, run %d: %s", row.System, row.Run, row.Err))
		}
	}
	for _, l := range r.Limits {
		if l.Err != "" {
			out = append(out, fmt.Sprintf("physical limit %s not measured: %s", l.Name, l.Err))
		}
	}
	if r.DeferpushMissing != "" && !deferpushSkipped {
		out = append(out, "the deferpush side did not run: "+r.DeferpushMissing)
	}
	return out
}

// benchParams are the knobs of one run.
type benchParams struct {
	Users int
	Ms    []int
	// Runs is how many times each row runs (median and spread).
	Runs int
	// RegUsers is the number of REGISTERs (one per user) of the
	// registration rows; 0 leaves them out.
	RegUsers int
	// Concurrency is the number of MESSAGEs (REGISTERs) in flight in the
	// store phase and the registration rows (SIPp -l), and redis-benchmark's
	// and the store benchmark's -c.
	Concurrency int
	// Workers is Kamailio's children and tcp_children (-n, -N) in every row
	// but msilo's, which runs one (db_sqlite), and OpenSIPS's udp_workers
	// and tcp_workers in the shipped opensips.cfg's row.
	Workers int
	Quick   bool
	OutDir  string
	// Phase bounds the wait for one phase to complete.
	Phase time.Duration
	// CPUs is how the machine is split between servers and clients.
	CPUs benchCPUs
	// RedisUnix (BENCH_REDIS_UNIX=1): deferpush and Kamailio's ndb_redis
	// reach the deferpush rows' and the floors' redis-server over a Unix
	// socket instead of TCP on 127.0.0.1.
	RedisUnix bool
}

func benchParamsFromEnv(b *testing.B) benchParams {
	b.Helper()
	p := benchParams{Users: 200, Ms: []int{1, 10, 50}, Runs: 3, RegUsers: 10000, Concurrency: 50, Workers: 1, Phase: 2 * time.Minute}
	p.Quick, _ = strconv.ParseBool(os.Getenv("QUICK"))
	p.RedisUnix, _ = strconv.ParseBool(os.Getenv("BENCH_REDIS_UNIX"))
	if p.Quick {
		p.Users, p.Ms, p.Runs, p.RegUsers, p.Phase = 20, []int{1, 5}, 1, 1000, 20*time.Second
	}
	envInt := func(name string, lo, hi int, dst *int) {
		v := os.Getenv(name)
		if v == "" {
			return
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < lo || n > hi {
			b.Fatalf("%s=%q: want a number from %d to %d", name, v, lo, hi)
		}
		*dst = n
	}
	envInt("U", 1, 10000, &p.Users)
	envInt("RUNS", 1, 20, &p.Runs)
	envInt("REG_N", 0, 100000, &p.RegUsers)
	envInt("BENCH_CONCURRENCY", 1, 1000, &p.Concurrency)
	envInt("BENCH_WORKERS", 1, 32, &p.Workers)
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

// messageSystem is one kind of row of the message table: Run measures one
// run of it at M messages per user and returns the row (System and Run
// are filled in by the caller). Each system's function stands alone, so
// that a branch adding a row adds a system here and its own function.
type messageSystem struct {
	Name string
	// Side is "msilo" or "deferpush" (BENCH_ONLY selects one).
	Side string
	// OnlyM, when set, are the only M the row runs at.
	OnlyM []int
	Run   func(b *testing.B, p benchParams, m int) benchRow
}

func (s messageSystem) runsAt(m int) bool { return len(s.OnlyM) == 0 || slices.Contains(s.OnlyM, m) }

// messageSystems are the rows of the message table, in the report's
// order. A deferpush mode that is not built yet is recorded in
// rep.Missing instead.
func messageSystems(rep *benchReport) []messageSystem {
	kamailio := []messageSystem{{Name: systemMsilo, Side: sideMsilo, Run: func(b *testing.B, p benchParams, m int) benchRow {
		return runMsilo(b, p, m, proxyKamailio)
	}}}
	for _, mode := range kamailioModes() {
		if mode.Missing != "" {
			rep.Missing = append(rep.Missing, missingSystem{Name: mode.System, Why: mode.Missing})
			continue
		}
		kamailio = append(kamailio, messageSystem{Name: mode.System, Side: sideDeferpush, Run: func(b *testing.B, p benchParams, m int) benchRow {
			return runDeferpushSide(b, p, m, deferpushSide{proxy: proxyKamailio, mode: mode})
		}})
	}
	out := append(kamailio,
		messageSystem{Name: systemDeferpushPager, Side: sideDeferpush, OnlyM: []int{1}, Run: func(b *testing.B, p benchParams, m int) benchRow {
			return runDeferpushPager(b, p, m, false)
		}},
		messageSystem{Name: systemDeferpushPagerRedis, Side: sideDeferpush, OnlyM: []int{1}, Run: func(b *testing.B, p benchParams, m int) benchRow {
			return runDeferpushPager(b, p, m, true)
		}})
	if rep.OpenSIPSMissing == "" {
		out = append(out,
			messageSystem{Name: systemMsiloOpenSIPS, Side: sideMsilo, Run: func(b *testing.B, p benchParams, m int) benchRow {
				return runMsilo(b, p, m, proxyOpenSIPS)
			}},
			messageSystem{Name: systemDeferpushOpenSIPS, Side: sideDeferpush, Run: func(b *testing.B, p benchParams, m int) benchRow {
				return runDeferpushSide(b, p, m, deferpushSide{proxy: proxyOpenSIPS, mode: openSIPSHookMode()})
			}})
	}
	return out
}

// The sides of the bench (BENCH_ONLY=msilo or deferpush runs one; the
// registration rows' baseline runs with msilo's side).
const (
	sideMsilo     = "msilo"
	sideDeferpush = "deferpush"
)

// benchSystem is a row of one of the report's tables, to run.
type benchSystem interface {
	// nameSide is the row's system name and its side (BENCH_ONLY).
	nameSide() (name, side string)
}

func (s messageSystem) nameSide() (string, string) { return s.Name, s.Side }

// selectSystems keeps the systems BENCH_ONLY and BENCH_ROWS ask for, and
// none of deferpush's when its side cannot run.
func selectSystems[S benchSystem](r *benchReport, all []S) []S {
	var out []S
	for _, s := range all {
		if name, side := s.nameSide(); r.keep(side) && rowWanted(name) {
			out = append(out, s)
		}
	}
	return out
}

// rowSystem is one row of a table whose rows run once a run of the bench,
// whatever M (the registrations, the floors of the store).
type rowSystem[R runRow[R]] struct {
	Name string
	// Side is msilo's or deferpush's, for BENCH_ONLY.
	Side string
	// Run measures one run (runEach names it).
	Run func(b *testing.B, p benchParams) R
}

func (s rowSystem[R]) nameSide() (string, string) { return s.Name, s.Side }

// runEach runs each of systems once, as the bench's run number run, and
// returns their rows, named and logged.
func runEach[R runRow[R]](b *testing.B, p benchParams, run int, systems []rowSystem[R]) []R {
	var rows []R
	for _, sys := range systems {
		t0 := time.Now()
		row := sys.Run(b, p).named(sys.Name, run)
		rows = append(rows, row)
		b.Logf("run %d (%4.1f s): %s", run, time.Since(t0).Seconds(), row.summary())
	}
	return rows
}

// rowWanted reports whether BENCH_ROWS, a regular expression matched
// against the row's system name (e.g. "^msilo$|Redis direct"), keeps the
// row; every row when it is unset. It is for looking into a few rows: the
// goals of a report missing rows are not judged.
func rowWanted(name string) bool {
	expr := os.Getenv("BENCH_ROWS")
	if expr == "" {
		return true
	}
	re, err := regexp.Compile(expr)
	if err != nil {
		panic(fmt.Sprintf("BENCH_ROWS=%q: %v", expr, err))
	}
	return re.MatchString(name)
}

func (r *benchReport) keep(side string) bool {
	if side == sideDeferpush && r.DeferpushMissing != "" {
		return false
	}
	only := os.Getenv("BENCH_ONLY") // msilo or deferpush, to look into one side
	return only == "" || only == side
}

// missingSystem is a row that could not be measured because what it
// measures does not exist yet.
type missingSystem struct {
	Name, Why string
}

// benchRow is one run of one system at one M.
type benchRow struct {
	System string
	Run    int
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
	// CPU seconds of the server-side processes in each phase, and of the
	// clients (the bench process and the SIPp it runs).
	CPUStore, CPUDeliver             float64
	ClientCPUStore, ClientCPUDeliver float64
	// ClientBusyStore and ClientBusyDeliver are the share of the client
	// CPUs the clients used in each phase (near 1: the rate may be the
	// clients' limit, not the server's).
	ClientBusyStore, ClientBusyDeliver float64
	// BytesPerMsg is the growth of the database per stored message: the
	// SQLite file after a checkpoint; Redis's keys (redisKeysMemory).
	// UsedMemPerMsg is Redis's used_memory growth less the clients'
	// memory (redisDataMemory), for comparison.
	BytesPerMsg, UsedMemPerMsg float64
	// MsgSize is the mean size of a stored message as the store holds it
	// (deferpush: plugin.Message.Size of a sample), 0 when not measured.
	MsgSize float64
	// Err says what went wrong (the run fails); Note is an observation.
	Err, Note string
}

// StoreCPUPerMsg and DeliverCPUPerMsg are server CPU microseconds per
// stored and per delivered message.
func (r benchRow) StoreCPUPerMsg() float64 { return perItemMicros(r.CPUStore, r.Stored) }

func (r benchRow) DeliverCPUPerMsg() float64 { return perItemMicros(r.CPUDeliver, r.Delivered) }

func perItemMicros(seconds float64, n int) float64 {
	if n <= 0 {
		return 0
	}
	return seconds * 1e6 / float64(n)
}

func (r benchRow) summary() string {
	return fmt.Sprintf("%-27s M=%-3d store %7.0f msgs/s %6.1f µs/msg  deliver %7.0f msgs/s %6.1f µs/msg  p50 %7.1f ms  p99 %7.1f ms  %6.0f B/msg  clients %3.0f%%/%3.0f%%  %s",
		r.System, r.M, r.StoreRate, r.StoreCPUPerMsg(), r.DeliverRate, r.DeliverCPUPerMsg(), ms(r.P50), ms(r.P99), r.BytesPerMsg,
		100*r.ClientBusyStore, 100*r.ClientBusyDeliver, join(r.Err, r.Note))
}

// benchLimit is one physical-limit figure.
type benchLimit struct {
	Name, What string
	Rate       float64
	// Ref is the figure Rate is compared with (store-append: raw RPUSH
	// right after, same server, same concurrency), 0 when none.
	Ref float64
	Err string
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
// MESSAGE. All over UDP; one SIP worker (db_sqlite sets no busy timeout).
func runMsilo(b *testing.B, p benchParams, m int, proxy string) benchRow {
	b.Helper()
	row := benchRow{Users: p.Users, M: m}
	dir := memTempDir(b)
	users := writeUsersCSV(b, dir, p.Users)
	k, db, size0 := startMsilo(b, dir, proxy)

	total := p.Users * m
	meter := cpuMeter{servers: []int{k.PID()}}
	r0 := meter.start()
	sr := sippStore(b, p, k.SIPAddr, users, dir, total)
	row.StoreTime, row.Err = sr.Time, sr.Err
	settleCPU(meter.servers...)
	store := between(r0, meter.read())
	row.CPUStore, row.ClientCPUStore, row.ClientBusyStore = store.Server, store.Client, store.clientBusy(p.CPUs)
	if n, err := sqliteCount(db, "SELECT count(*) FROM silo"); err != nil {
		row.Err = join(row.Err, err.Error())
	} else {
		row.Stored = n
	}
	switch {
	case row.Stored == total:
	case sr.Refused > 0 && row.Stored+sr.Refused == total:
		// msilo's answer, not the harness's: the sender was told (503)
		// and nothing it was told is stored is missing.
		why := ""
		if strings.Contains(k.Log(), "database is locked") {
			why = ": SQLite was busy (\"database is locked\" in Kamailio's log; db_sqlite sets no busy timeout)"
		}
		row.Note = join(row.Note, fmt.Sprintf("%d of %d MESSAGEs refused by msilo with an error%s", sr.Refused, total, why))
	default:
		row.Err = join(row.Err, fmt.Sprintf("%d of %d stored, %d refused", row.Stored, total, sr.Refused))
	}
	row.StoreRate = rate(row.Stored, row.StoreTime)
	if size1, err := sqliteSize(db); err == nil && row.Stored > 0 {
		row.BytesPerMsg = float64(size1-size0) / float64(row.Stored)
	}

	// msilo deletes a message when its 200 came back, on its check_time
	// timer: that work is part of delivering, so the phase waits for it.
	drained := func() bool {
		n, err := sqliteCount(db, "SELECT count(*) FROM silo")
		return err == nil && n == 0
	}
	sippDeliveryPhase(b, p, &row, k.SIPAddr, users, dir, meter, drained, "")
	if n, err := sqliteCount(db, "SELECT count(*) FROM silo"); err == nil && n > 0 {
		// They will be dumped again at the next REGISTER (duplicates).
		// message-uas.xml keeps each call 32 s after its 200, so a MESSAGE
		// retransmitted after its 200 was lost (UDP drops at M=50) gets
		// the 200 again: rows left are msilo's own. (A UAS that ended its
		// calls at once left up to half of them, issue 19.)
		row.Note = join(row.Note, fmt.Sprintf("%d confirmed messages still in the database 5 s after the last confirmation", n))
	}
	row.Err = join(row.Err, checkServersPinned(p.CPUs, k.PID()))
	k.Stop()
	return row
}

// sippDeliveryPhase is the delivery phase of the rows whose users' client
// is SIPp (msilo's, and deferpush's in pager mode): one SIPp UAS answers
// 200 to every MESSAGE for every user (testdata/bench/message-uas.xml),
// and SIPp registers every user at once (testdata/bench/register-uac.xml)
// with that UAS as its contact, over UDP. The phase lasts until every
// stored message was confirmed and drained reports the server done with
// them (at most 5 s more; the store forgets a message after its 200),
// and fills in row's delivery figures and CPU. profile names its perf
// profile ("" for none).
func sippDeliveryPhase(b *testing.B, p benchParams, row *benchRow, addr, users, dir string, meter cpuMeter, drained func() bool, profile string) {
	b.Helper()
	uasLog := filepath.Join(dir, "uas.log")
	uas, uasPort := harness.StartSIPp(b, harness.SIPpConfig{
		Scenario: "testdata/bench/message-uas.xml",
		Args:     []string{"-trace_logs", "-log_file", uasLog, "-buff_size", "4194304"},
		Timeout:  10 * time.Minute,
	})
	defer uas.Stop()
	waitUDPBound(b, uas, uasPort)
	regLog := filepath.Join(dir, "reg.log")
	meter.clients = []int{uas.PID()}
	var prof *phaseProfile
	if profile != "" {
		prof = startProfile(b, p.OutDir, profile, procTree(meter.servers...))
	}
	r1 := meter.start()
	res := harness.RunSIPp(b, harness.SIPpConfig{
		Scenario: "testdata/bench/register-uac.xml",
		Remote:   addr,
		Args: []string{"-inf", users, "-m", strconv.Itoa(row.Users), "-r", "100000", "-l", strconv.Itoa(row.Users),
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
	for range 50 {
		if drained() {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	settleCPU(meter.servers...)
	deliver := between(r1, meter.read())
	prof.stop(b)
	row.CPUDeliver, row.ClientCPUDeliver, row.ClientBusyDeliver = deliver.Server, deliver.Client, deliver.clientBusy(p.CPUs)
	row.fillDelivery(parseRegisters(regLog), del, want)
}

// startMsilo creates an empty msilo database in dir and starts Kamailio
// or OpenSIPS with its msilo configuration on it, one SIP worker (UDP).
// It returns the proxy, the database and its size.
func startMsilo(b *testing.B, dir, proxy string) (benchProxy, string, int64) {
	b.Helper()
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
	port := harness.FreePort(b)
	if proxy == proxyOpenSIPS {
		// udp_workers=1 is in the script (OpenSIPS's script overrides -n).
		o := harness.OpenSIPS(b, harness.OpenSIPSConfig{
			ConfigFile: "testdata/opensips-msilo.cfg",
			SIPPort:    port,
			Defines: map[string]string{
				"DB_URL":      strconv.Quote("sqlite://" + db),
				"MSILO_PROXY": strconv.Quote(fmt.Sprintf("sip:127.0.0.1:%d", port)),
			},
			ExtraArgs: []string{"-m", "1024"},
		})
		return benchProxy{Proc: o.Proc, SIPAddr: o.SIPAddr}, db, size0
	}
	kp := harness.Kamailio(b, harness.KamailioConfig{
		ConfigFile: "testdata/kamailio-msilo.cfg",
		SIPPort:    port,
		Defines: map[string]string{
			"DB_URL":      strconv.Quote("sqlite:///" + db),
			"DB_JOURNAL":  strconv.Quote(db + "=WAL;"),
			"MSILO_PROXY": strconv.Quote(fmt.Sprintf("sip:127.0.0.1:%d", port)),
		},
		// Every dumped message is a transaction in shared memory at
		// once (U x M of them when all users register together). One
		// SIP worker: db_sqlite sets no busy timeout, and a second
		// worker's stores fail with "database is locked".
		ExtraArgs: []string{"-m", "1024", "-n", "1"},
	})
	return benchProxy{Proc: kp.Proc, SIPAddr: kp.SIPAddr}, db, size0
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

// storeRun is what SIPp saw of a store phase.
type storeRun struct {
	// Time runs from the first MESSAGE sent to the last 2xx.
	Time time.Duration
	// Stored counts the MESSAGEs the proxy answered 2xx, Refused those it
	// answered 480, 500 or 503.
	Stored, Refused int
	Err             string
}

// sippStore sends total MESSAGEs through the proxy at addr with SIPp,
// Concurrency in flight.
func sippStore(b *testing.B, p benchParams, addr, users, dir string, total int) storeRun {
	b.Helper()
	logPath := filepath.Join(dir, "store.log")
	res := harness.RunSIPp(b, harness.SIPpConfig{
		Scenario: "testdata/bench/store-uac.xml",
		Remote:   addr,
		Args: []string{"-inf", users, "-m", strconv.Itoa(total), "-r", "100000", "-l", strconv.Itoa(p.Concurrency),
			"-trace_logs", "-log_file", logPath},
		Timeout: p.Phase,
	})
	var run storeRun
	if res.Err != nil {
		run.Err = "store: " + firstLine(res.Log)
	}
	var first, last time.Time
	for _, l := range readLog(logPath) {
		if first.IsZero() || l.at.Before(first) {
			first = l.at
		}
		switch l.kind {
		case "STORED":
			run.Stored++
			if l.at.After(last) {
				last = l.at
			}
		case "REFUSED":
			run.Refused++
		}
	}
	if first.IsZero() || last.IsZero() {
		run.Err = join(run.Err, "store: no timestamps in the SIPp log")
		return run
	}
	run.Time = last.Sub(first)
	return run
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
