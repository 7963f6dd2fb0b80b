package test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/test/harness"
)

// The registration rows' baseline: Kamailio with the registrar alone.
const systemRegistrar = "plain registrar"

// registerSystem is one row of the registration table: Run measures one
// run of REG_N REGISTERs. The baseline and msilo are on msilo's side for
// BENCH_ONLY.
type registerSystem = rowSystem[regRow]

// registerSystems are the rows of the registration table: plain Kamailio
// (the registrar alone), Kamailio with msilo (m_dump on REGISTER), and
// Kamailio with each deferpush mode that is built (messageSystems lists
// the others in rep.Missing for both tables).
func registerSystems(rep *benchReport) []registerSystem {
	out := []registerSystem{
		{Name: systemRegistrar, Side: sideMsilo, Run: runRegistrarRegister},
		{Name: systemMsilo, Side: sideMsilo, Run: runMsiloRegister},
	}
	for _, mode := range kamailioModes() {
		if mode.Missing != "" {
			continue
		}
		out = append(out, registerSystem{Name: mode.System, Side: sideDeferpush, Run: func(b *testing.B, p benchParams) regRow {
			return runDeferpushRegister(b, p, mode)
		}})
	}
	return out
}

// regRow is one run of one registration row.
type regRow struct {
	System string
	Run    int
	// N REGISTERs were sent, OK of them answered 200.
	N, OK int
	// Time runs from the first REGISTER sent to the last 200 (SIPp's
	// timestamps); Done to the moment the server side had handled them
	// all: the same for Kamailio alone, later for deferpush, which hears
	// of each registration from Kamailio's hook after the 200.
	Time, Done     time.Duration
	Rate, DoneRate float64
	// Recorded is how many registrations deferpush recorded (-1: not a
	// deferpush row).
	Recorded int
	// Server and client CPU seconds from the first REGISTER until the
	// servers were idle again; ClientBusy as in benchRow.
	CPU, ClientCPU, ClientBusy float64
	// Err says what went wrong (the run fails).
	Err string
}

// CPUPerReg is the server CPU microseconds per REGISTER answered.
func (r regRow) CPUPerReg() float64 { return perItemMicros(r.CPU, r.OK) }

func (r regRow) summary() string {
	return fmt.Sprintf("%-27s %d REGISTERs: %7.0f/s (200s), %7.0f/s (handled)  %6.1f µs CPU/REGISTER  clients %3.0f%%  %s",
		r.System, r.N, r.Rate, r.DoneRate, r.CPUPerReg(), 100*r.ClientBusy, r.Err)
}

// runRegistrarRegister is the baseline: test/testdata/bench/kamailio-registrar.cfg.
func runRegistrarRegister(b *testing.B, p benchParams) regRow {
	b.Helper()
	k := harness.Kamailio(b, harness.KamailioConfig{
		ConfigFile: "testdata/bench/kamailio-registrar.cfg",
		// UDP only (no -N), as the clients.
		ExtraArgs: []string{"-m", "1024", "-n", strconv.Itoa(p.Workers)},
	})
	row := measureRegisters(b, p, "registrar", k.SIPAddr, []int{k.PID()}, nil)
	k.Stop()
	return row
}

// runMsiloRegister is Kamailio with msilo on an empty database: each
// REGISTER's m_dump finds nothing to send.
func runMsiloRegister(b *testing.B, p benchParams) regRow {
	b.Helper()
	k, db, _ := startMsilo(b, memTempDir(b), proxyKamailio)
	row := measureRegisters(b, p, "msilo", k.SIPAddr, []int{k.PID()}, nil)
	if n, err := sqliteCount(db, "SELECT count(*) FROM silo"); err != nil || n != 0 {
		row.Err = join(row.Err, fmt.Sprintf("msilo's database holds %d messages (%v), want none", n, err))
	}
	k.Stop()
	return row
}

// runDeferpushRegister is Kamailio with the shipped kamailio.cfg in mode,
// deferpush and redis-server: each REGISTER is saved and answered by
// Kamailio, then reported to deferpush, which records the registration
// and finds the mailbox empty. The row ends once deferpush has recorded
// every registration (one key each in Redis: DBSIZE), and checks each
// one through the store afterwards. In the Redis-direct mode Kamailio's
// cache of the users who may have messages lets no REGISTER of these
// empty mailboxes through to Redis: the row waits for the cache to be
// loaded, its "handled" are the 200s, and it checks that Redis ran no
// dp_register (MONITOR) and recorded nothing.
func runDeferpushRegister(b *testing.B, p benchParams, mode deferpushMode) regRow {
	b.Helper()
	s := startDeferpushStack(b, p, deferpushSide{proxy: proxyKamailio, mode: mode})
	defer s.stop(b)
	ctx := context.Background()
	if mode.System == systemDeferpushRedis {
		waitWarm(b, s.proxy, 1)
		mon := monitorRegisters(b, s.redis.Addr)
		row := measureRegisters(b, p, mode.Profile, s.proxy.SIPAddr, s.servers(), nil)
		if n := mon.total(); n != 0 {
			row.Err = join(row.Err, fmt.Sprintf("Redis ran %d dp_register calls for empty mailboxes, want none", n))
		}
		row.Recorded = countContacts(ctx, s.st, p.RegUsers)
		if row.Recorded != 0 {
			row.Err = join(row.Err, fmt.Sprintf("%d registrations recorded, want none (empty mailboxes)", row.Recorded))
		}
		return row
	}
	keys0, err := redisDBSize(ctx, s.redis.Addr)
	if err != nil {
		b.Fatal(err)
	}
	row := measureRegisters(b, p, mode.Profile, s.proxy.SIPAddr, s.servers(), func(ctx context.Context) (int, error) {
		n, err := redisDBSize(ctx, s.redis.Addr)
		return n - keys0, err
	})
	row.Recorded = countContacts(ctx, s.st, p.RegUsers)
	if row.Recorded != row.N {
		row.Err = join(row.Err, fmt.Sprintf("deferpush recorded %d of %d registrations", row.Recorded, row.N))
	}
	return row
}

// measureRegisters sends REG_N REGISTERs of REG_N users through the proxy
// at addr with SIPp (the same scenario for every row, Concurrency in
// flight) and measures the rate and the CPU of the server processes
// (servers and their children) until they are idle again. handled, when
// set, says how many registrations the server side has handled; the row
// waits (bounded by Phase) until it says all. With BENCH_PROFILE=1 the
// servers are profiled meanwhile (profile-register-NAME.txt).
func measureRegisters(b *testing.B, p benchParams, name, addr string, servers []int, handled func(context.Context) (int, error)) regRow {
	b.Helper()
	row := regRow{N: p.RegUsers, Recorded: -1}
	dir := b.TempDir()
	users := writeUsersCSV(b, dir, p.RegUsers)
	logPath := filepath.Join(dir, "reg.log")
	meter := cpuMeter{servers: servers}
	prof := startProfile(b, p.OutDir, "register-"+name, procTree(servers...))
	r0 := meter.start()
	res := harness.RunSIPp(b, harness.SIPpConfig{
		Scenario: "testdata/bench/register-uac.xml",
		Remote:   addr,
		Args: []string{"-inf", users, "-m", strconv.Itoa(p.RegUsers), "-r", "100000", "-l", strconv.Itoa(p.Concurrency),
			// The mailboxes are empty: nothing is ever sent to the contact.
			"-key", "uas_port", strconv.Itoa(harness.FreePort(b)), "-trace_logs", "-log_file", logPath},
		Timeout: p.Phase,
	})
	if res.Err != nil {
		row.Err = "REGISTER: " + firstLine(res.Log)
	}
	var doneAt time.Time
	if handled != nil {
		deadline := time.Now().Add(p.Phase)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			n, err := handled(ctx)
			cancel()
			if err == nil && n >= row.N {
				doneAt = time.Now()
				break
			}
			if time.Now().After(deadline) {
				row.Err = join(row.Err, fmt.Sprintf("%d of %d registrations handled after %v (%v)", n, row.N, p.Phase, err))
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	settleCPU(servers...)
	cpu := between(r0, meter.read())
	prof.stop(b)
	row.CPU, row.ClientCPU, row.ClientBusy = cpu.Server, cpu.Client, cpu.clientBusy(p.CPUs)
	row.Err = join(row.Err, checkServersPinned(p.CPUs, servers...))

	var first, last time.Time
	for _, l := range readLog(logPath) {
		switch l.kind {
		case "REGISTER":
			if first.IsZero() || l.at.Before(first) {
				first = l.at
			}
		case "REGISTERED":
			row.OK++
			if l.at.After(last) {
				last = l.at
			}
		}
	}
	if row.OK != row.N {
		row.Err = join(row.Err, fmt.Sprintf("%d of %d REGISTERs answered 200", row.OK, row.N))
	}
	if first.IsZero() || last.IsZero() {
		return row
	}
	row.Time = last.Sub(first)
	row.Rate = rate(row.OK, row.Time)
	row.Done, row.DoneRate = row.Time, row.Rate
	if !doneAt.IsZero() && doneAt.After(last) {
		row.Done = doneAt.Sub(first)
		row.DoneRate = rate(row.OK, row.Done)
	}
	return row
}

// redisDBSize is DBSIZE of the server's database 0.
func redisDBSize(ctx context.Context, addr string) (int, error) {
	v, err := harness.RedisDo(ctx, addr, "DBSIZE")
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(v))
}

// countContacts counts the bench users 0..n-1 whose registration the
// store holds (Settings.Contact), 16 lookups at a time.
func countContacts(ctx context.Context, st plugin.Settings, n int) int {
	var found atomic.Int64
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				aor := plugin.MustParseAOR("sip:" + benchUser(i) + "@" + benchDomain)
				if _, err := st.Contact(ctx, aor); err == nil {
					found.Add(1)
				} else if !errors.Is(err, plugin.ErrNotFound) {
					return
				}
			}
		})
	}
	wg.Wait()
	return int(found.Load())
}
