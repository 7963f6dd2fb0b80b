package test

import (
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/deferpush/deferpush/test/harness"
)

// benchReport is everything one `make bench` run writes.
type benchReport struct {
	Params  benchParams
	Machine machine
	Started time.Time
	Elapsed time.Duration
	Limits  []benchLimit
	// Rows are the message rows, RegRows the registration rows: one per
	// run of each system.
	Rows    []benchRow
	RegRows []regRow
	// FloorRows are the floors of the store: one per run of each.
	FloorRows []floorRow
	// Missing are systems not built yet: listed, not measured.
	Missing []missingSystem
	// DeferpushMissing says why the deferpush side did not run.
	DeferpushMissing string
	// OpenSIPSMissing says why the OpenSIPS rows did not run.
	OpenSIPSMissing string
}

// machine describes where the run ran.
type machine struct {
	Host, CPU, Kernel                           string
	Load, LoadEnd                               string // load average at the start and at the end
	Cores                                       int
	Go, Kamailio, OpenSIPS, Redis, SIPp, SQLite string
}

func machineInfo() machine {
	m := machine{Cores: runtime.NumCPU(), Go: runtime.Version()}
	m.Host, _ = os.Hostname()
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for l := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	m.Kernel = strings.TrimSpace(readFileString("/proc/sys/kernel/osrelease"))
	m.Load = loadAverage()
	m.Kamailio = strings.TrimPrefix(firstOutputLine("kamailio", "-v"), "version: ")
	m.OpenSIPS = "OpenSIPS not found"
	if inst, err := harness.FindOpenSIPS(); err == nil {
		m.OpenSIPS = strings.TrimPrefix(inst.Version, "version: ")
	}
	m.Redis, _, _ = strings.Cut(firstOutputLine("redis-server", "--version"), " sha=")
	m.SIPp = firstOutputLine("sipp", "-v")
	m.SQLite, _, _ = strings.Cut(firstOutputLine("sqlite3", "--version"), " ")
	return m
}

// loadAverage is /proc/loadavg's 1, 5 and 15 minute figures.
func loadAverage() string {
	if f := strings.Fields(readFileString("/proc/loadavg")); len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "unknown"
}

func readFileString(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

func firstOutputLine(bin string, args ...string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	path := bin
	if bin == "kamailio" {
		path = "/usr/sbin/kamailio"
	}
	out, _ := exec.CommandContext(ctx, path, args...).CombinedOutput()
	for l := range strings.SplitSeq(string(out), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			return l
		}
	}
	return "unknown"
}

// stat is the median and the spread (min–max) of one figure over the runs
// of a row.
type stat struct {
	Med, Min, Max float64
	N             int
}

func statOf(vs []float64) stat {
	if len(vs) == 0 {
		return stat{}
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	st := stat{Min: s[0], Max: s[len(s)-1], N: len(s)}
	if n := len(s); n%2 == 1 {
		st.Med = s[n/2]
	} else {
		st.Med = (s[n/2-1] + s[n/2]) / 2
	}
	return st
}

// cell prints a stat as "median (min–max)", or the one value of one run,
// with prec decimals and thousands separators.
func (s stat) cell(prec int) string {
	if s.N == 0 {
		return "–"
	}
	if s.N == 1 || num(s.Min, prec) == num(s.Max, prec) {
		return num(s.Med, prec)
	}
	return fmt.Sprintf("%s (%s–%s)", num(s.Med, prec), num(s.Min, prec), num(s.Max, prec))
}

// num prints v with prec decimals and a comma every three digits.
func num(v float64, prec int) string {
	s := strconv.FormatFloat(v, 'f', prec, 64)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	whole, frac, hasFrac := strings.Cut(s, ".")
	var b strings.Builder
	for i, c := range whole {
		if i > 0 && (len(whole)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	out := b.String()
	if hasFrac {
		out += "." + frac
	}
	if neg {
		out = "-" + out
	}
	return out
}

// rowGroup is every run of one system at one M.
type rowGroup struct {
	System string
	M      int
	Runs   []benchRow
}

func (g rowGroup) stat(f func(benchRow) float64) stat {
	vs := make([]float64, len(g.Runs))
	for i, r := range g.Runs {
		vs[i] = f(r)
	}
	return statOf(vs)
}

// problems joins the distinct problems and notes of the runs.
func (g rowGroup) problems() string {
	var out []string
	for _, r := range g.Runs {
		for _, p := range []string{r.Err, r.Note} {
			if p == "" {
				continue
			}
			if g.runs() > 1 {
				p = fmt.Sprintf("run %d: %s", r.Run, p)
			}
			out = append(out, p)
		}
	}
	return strings.Join(out, "; ")
}

func (g rowGroup) runs() int { return len(g.Runs) }

// groups are the message rows by system and M, in the order of the first
// run.
func (r *benchReport) groups() []rowGroup {
	var out []rowGroup
	for _, row := range r.Rows {
		i := slices.IndexFunc(out, func(g rowGroup) bool { return g.System == row.System && g.M == row.M })
		if i < 0 {
			out = append(out, rowGroup{System: row.System, M: row.M})
			i = len(out) - 1
		}
		out[i].Runs = append(out[i].Runs, row)
	}
	return out
}

func (r *benchReport) group(system string, m int) (rowGroup, bool) {
	for _, g := range r.groups() {
		if g.System == system && g.M == m {
			return g, true
		}
	}
	return rowGroup{}, false
}

// runRow is one run of a row of a table whose rows are grouped by system
// over the runs (the registration rows, the floors); R is its own type.
type runRow[R any] interface {
	system() string
	// run is the row's run and what went wrong in it ("" when nothing).
	run() (int, string)
	// named is the row as the run number run of system.
	named(system string, run int) R
	summary() string
}

// runGroup is every run of one such row.
type runGroup[R runRow[R]] struct {
	System string
	Runs   []R
}

func (g runGroup[R]) stat(f func(R) float64) stat {
	vs := make([]float64, len(g.Runs))
	for i, r := range g.Runs {
		vs[i] = f(r)
	}
	return statOf(vs)
}

func (g runGroup[R]) problems() string {
	var out []string
	for _, r := range g.Runs {
		n, err := r.run()
		switch {
		case err == "":
		case len(g.Runs) > 1:
			out = append(out, fmt.Sprintf("run %d: %s", n, err))
		default:
			out = append(out, err)
		}
	}
	return strings.Join(out, "; ")
}

// groupRuns groups rows by system, in the order they first ran.
func groupRuns[R runRow[R]](rows []R) []runGroup[R] {
	var out []runGroup[R]
	for _, row := range rows {
		i := slices.IndexFunc(out, func(g runGroup[R]) bool { return g.System == row.system() })
		if i < 0 {
			out = append(out, runGroup[R]{System: row.system()})
			i = len(out) - 1
		}
		out[i].Runs = append(out[i].Runs, row)
	}
	return out
}

// regGroup is every run of one registration row.
type regGroup = runGroup[regRow]

func (r regRow) system() string     { return r.System }
func (r regRow) run() (int, string) { return r.Run, r.Err }
func (r regRow) named(system string, run int) regRow {
	r.System, r.Run = system, run
	return r
}

func (r *benchReport) regGroups() []regGroup { return groupRuns(r.RegRows) }

func (r *benchReport) regGroup(system string) (regGroup, bool) {
	for _, g := range r.regGroups() {
		if g.System == system {
			return g, true
		}
	}
	return regGroup{}, false
}

func (r *benchReport) limit(name string) benchLimit {
	for _, l := range r.Limits {
		if l.Name == name {
			return l
		}
	}
	return benchLimit{}
}

// write writes report.md, report.csv, report-register.csv,
// report-floors.csv and delivery.svg into dir.
func (r *benchReport) write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for name, f := range map[string]func() ([]byte, error){
		"report.md":           r.markdown,
		"report.csv":          r.csv,
		"report-register.csv": r.regCSV,
		"report-floors.csv":   r.floorCSV,
		"delivery.svg":        r.svg,
	} {
		b, err := f()
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func fmtF(v float64, prec int) string { return strconv.FormatFloat(v, 'f', prec, 64) }

// csv is one line per run of each message row, then the physical limits.
func (r *benchReport) csv() ([]byte, error) {
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	_ = w.Write([]string{"system", "run", "users", "msgs_per_user", "stored", "store_s", "store_msgs_per_s",
		"store_cpu_s", "store_cpu_us_per_msg", "store_client_cpu_s",
		"delivered", "duplicates", "deliver_s", "deliver_msgs_per_s", "deliver_cpu_s", "deliver_cpu_us_per_msg", "deliver_client_cpu_s",
		"reg_to_last_p50_ms", "reg_to_last_p99_ms", "db_bytes_per_msg", "redis_used_memory_per_msg", "stored_msg_bytes", "problems"})
	for _, row := range r.Rows {
		_ = w.Write([]string{row.System, strconv.Itoa(row.Run), strconv.Itoa(row.Users), strconv.Itoa(row.M), strconv.Itoa(row.Stored),
			fmtF(row.StoreTime.Seconds(), 3), fmtF(row.StoreRate, 0), fmtF(row.CPUStore, 2), fmtF(row.StoreCPUPerMsg(), 1), fmtF(row.ClientCPUStore, 2),
			strconv.Itoa(row.Delivered), strconv.Itoa(row.Duplicates), fmtF(row.DeliverTime.Seconds(), 3), fmtF(row.DeliverRate, 0),
			fmtF(row.CPUDeliver, 2), fmtF(row.DeliverCPUPerMsg(), 1), fmtF(row.ClientCPUDeliver, 2),
			fmtF(ms(row.P50), 1), fmtF(ms(row.P99), 1), fmtF(row.BytesPerMsg, 0), fmtF(row.UsedMemPerMsg, 0), fmtF(row.MsgSize, 0), join(row.Err, row.Note)})
	}
	for _, l := range r.Limits {
		// Physical limits: the rate goes in the column of the phase it
		// bounds.
		store, deliver := "", ""
		if l.Name == "msrp-send" {
			deliver = fmtF(l.Rate, 0)
		} else {
			store = fmtF(l.Rate, 0)
		}
		_ = w.Write([]string{"limit:" + l.Name, "", "", "", "", "", store, "", "", "", "", "", "", deliver, "", "", "", "", "", "", "", "", l.Err})
	}
	w.Flush()
	return buf.Bytes(), w.Error()
}

// regCSV is one line per run of each registration row.
func (r *benchReport) regCSV() ([]byte, error) {
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	_ = w.Write([]string{"system", "run", "registers", "answered_200", "recorded", "to_last_200_s", "registers_per_s",
		"to_handled_s", "handled_per_s", "cpu_s", "cpu_us_per_register", "client_cpu_s", "problems"})
	for _, row := range r.RegRows {
		rec := ""
		if row.Recorded >= 0 {
			rec = strconv.Itoa(row.Recorded)
		}
		_ = w.Write([]string{row.System, strconv.Itoa(row.Run), strconv.Itoa(row.N), strconv.Itoa(row.OK), rec,
			fmtF(row.Time.Seconds(), 3), fmtF(row.Rate, 0), fmtF(row.Done.Seconds(), 3), fmtF(row.DoneRate, 0),
			fmtF(row.CPU, 2), fmtF(row.CPUPerReg(), 1), fmtF(row.ClientCPU, 2), row.Err})
	}
	w.Flush()
	return buf.Bytes(), w.Error()
}

func (r *benchReport) markdown() ([]byte, error) {
	var b bytes.Buffer
	p, m := r.Params, r.Machine
	fmt.Fprintf(&b, "# deferpush beside Kamailio msilo and OpenSIPS msilo — %s, %s\n\n", r.Started.Format("2006-01-02 15:04 MST"), m.Host)
	mode := "`make bench`"
	if p.Quick {
		mode = "`QUICK=1 make bench` (the CI variant: small, not the committed figures)"
	}
	runs := "once"
	if p.Runs > 1 {
		runs = fmt.Sprintf("%d times, the runs of all rows interleaved; figures are the median with the spread (min–max) in brackets", p.Runs)
	}
	fmt.Fprintf(&b, "%s: %d users × M messages (M = %s) and %s REGISTERs of users with empty mailboxes; "+
		"every row ran %s. %d MESSAGEs (REGISTERs) in flight; the whole run took %v.\n\n",
		mode, p.Users, intsString(p.Ms), num(float64(p.RegUsers), 0), runs, p.Concurrency, r.Elapsed.Round(time.Second))
	fmt.Fprintf(&b, "**Machine:** %d cores, %s; Linux %s; load average %s at the start, %s at the end.  \n", m.Cores, m.CPU, m.Kernel, m.Load, m.LoadEnd)
	fmt.Fprintf(&b, "**Software:** %s · %s · %s · %s · SQLite %s · %s.  \n", m.Kamailio, m.OpenSIPS, m.Redis, m.SIPp, m.SQLite, m.Go)
	if p.CPUs.pinned() {
		fmt.Fprintf(&b, "**CPUs:** servers on CPU %s, clients on CPU %s (taskset; see below).\n\n", p.CPUs.Servers, p.CPUs.Clients)
	} else {
		fmt.Fprintf(&b, "**CPUs:** not pinned (%s): servers and clients share every CPU.\n\n", p.CPUs.Why)
	}

	b.WriteString("## Goals (issue 14; 2-core machine)\n\n")
	b.WriteString("A goal on deferpush is met when one shipped Kamailio mode meets it (the operator picks the mode); " +
		"each line gives every mode's figures. The HTTP hook's own goal is the hook's alone. Medians of the runs.\n\n")
	for _, g := range r.goals() {
		fmt.Fprintf(&b, "- %s\n", g)
	}

	b.WriteString("\n## Messages\n\n")
	b.WriteString("| system | M | messages | store msgs/s | store CPU µs/msg | delivery msgs/s | delivery CPU µs/msg | REGISTER→last p50 ms | p99 ms | DB bytes/msg | stored msg bytes | duplicates | clients' CPU store / deliver | problems and notes |\n")
	b.WriteString("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|\n")
	lastM := -1
	for _, g := range r.groups() {
		if g.M != lastM && lastM >= 0 {
			r.missingRows(&b, lastM)
		}
		lastM = g.M
		size := "–"
		if g.Runs[0].MsgSize > 0 {
			size = g.stat(func(r benchRow) float64 { return r.MsgSize }).cell(0)
		}
		fmt.Fprintf(&b, "| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s / %s | %s |\n",
			g.System, g.M, num(float64(g.Runs[0].Users*g.M), 0),
			g.stat(func(r benchRow) float64 { return r.StoreRate }).cell(0),
			g.stat(benchRow.StoreCPUPerMsg).cell(1),
			g.stat(func(r benchRow) float64 { return r.DeliverRate }).cell(0),
			g.stat(benchRow.DeliverCPUPerMsg).cell(1),
			g.stat(func(r benchRow) float64 { return ms(r.P50) }).cell(1),
			g.stat(func(r benchRow) float64 { return ms(r.P99) }).cell(1),
			g.stat(func(r benchRow) float64 { return r.BytesPerMsg }).cell(0),
			size,
			g.stat(func(r benchRow) float64 { return float64(r.Duplicates) }).cell(0),
			pct(g.stat(func(r benchRow) float64 { return r.ClientBusyStore }).Med),
			pct(g.stat(func(r benchRow) float64 { return r.ClientBusyDeliver }).Med),
			orDash(g.problems()))
	}
	if lastM >= 0 {
		r.missingRows(&b, lastM)
	}
	if r.DeferpushMissing != "" {
		fmt.Fprintf(&b, "\ndeferpush side not measured: %s.\n", r.DeferpushMissing)
	}
	if r.OpenSIPSMissing != "" {
		fmt.Fprintf(&b, "\nOpenSIPS rows not measured: %s.\n", r.OpenSIPSMissing)
	}

	b.WriteString("\n### Ratios (deferpush ÷ msilo of the same proxy, medians)\n\n")
	b.WriteString("Above 1× is better for the rates, below 1× for the CPU and the p99.\n\n")
	b.WriteString("| M | deferpush mode | store rate | store CPU/msg | delivery rate | delivery CPU/msg | REGISTER→last p99 |\n|--:|---|--:|--:|--:|--:|--:|\n")
	for _, mm := range p.Ms {
		for _, pair := range r.pairs() {
			ref, ok1 := r.group(pair.msilo, mm)
			dp, ok2 := r.group(pair.system, mm)
			if !ok1 || !ok2 {
				continue
			}
			med := func(g rowGroup, f func(benchRow) float64) float64 { return g.stat(f).Med }
			fmt.Fprintf(&b, "| %d | %s | %s | %s | %s | %s | %s |\n", mm, pair.system,
				ratio(med(dp, func(r benchRow) float64 { return r.StoreRate }), med(ref, func(r benchRow) float64 { return r.StoreRate })),
				ratio(med(dp, benchRow.StoreCPUPerMsg), med(ref, benchRow.StoreCPUPerMsg)),
				ratio(med(dp, func(r benchRow) float64 { return r.DeliverRate }), med(ref, func(r benchRow) float64 { return r.DeliverRate })),
				ratio(med(dp, benchRow.DeliverCPUPerMsg), med(ref, benchRow.DeliverCPUPerMsg)),
				ratio(med(dp, func(r benchRow) float64 { return ms(r.P99) }), med(ref, func(r benchRow) float64 { return ms(r.P99) })))
		}
	}

	b.WriteString("\n## Registrations with empty mailboxes\n\n")
	if p.RegUsers == 0 {
		b.WriteString("Not run (REG_N=0).\n")
	} else {
		fmt.Fprintf(&b, "%s REGISTERs, one per user, through Kamailio (the same SIPp scenario for every row).\n\n", num(float64(p.RegUsers), 0))
		b.WriteString("| system | REGISTERs/s (200s) | REGISTERs/s (handled) | server CPU µs/REGISTER | CPU ÷ plain registrar's | clients' CPU | problems and notes |\n")
		b.WriteString("|---|--:|--:|--:|--:|--:|---|\n")
		base, hasBase := r.regGroup(systemRegistrar)
		for _, g := range r.regGroups() {
			x := "–"
			if hasBase {
				x = ratio(g.stat(regRow.CPUPerReg).Med, base.stat(regRow.CPUPerReg).Med)
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n", g.System,
				g.stat(func(r regRow) float64 { return r.Rate }).cell(0),
				g.stat(func(r regRow) float64 { return r.DoneRate }).cell(0),
				g.stat(regRow.CPUPerReg).cell(1), x,
				pct(g.stat(func(r regRow) float64 { return r.ClientBusy }).Med),
				orDash(g.problems()))
		}
		for _, ms := range r.Missing {
			fmt.Fprintf(&b, "| %s | %s | – | – | – | – | – |\n", ms.Name, ms.Why)
		}
	}

	r.floorsMarkdown(&b)

	b.WriteString("\n## Physical limits (same machine, same run)\n\n| limit | what | per second |\n|---|---|--:|\n")
	for _, l := range r.Limits {
		v := num(l.Rate, 0)
		if l.Ref > 0 {
			v += fmt.Sprintf(" (RPUSH %s: %.0f%%)", num(l.Ref, 0), 100*l.Rate/l.Ref)
		}
		if l.Err != "" {
			v = "failed: " + l.Err
		}
		fmt.Fprintf(&b, "| %s | %s | %s |\n", l.Name, l.What, v)
	}

	r.howMeasured(&b)
	return b.Bytes(), nil
}

// missingRows lists, after M's rows, the systems not built yet.
func (r *benchReport) missingRows(b *bytes.Buffer, m int) {
	for _, ms := range r.Missing {
		fmt.Fprintf(b, "| %s | %d | – | %s | – | – | – | – | – | – | – | – | – | – |\n", ms.Name, m, ms.Why)
	}
}

// pair is a deferpush row and the msilo row it is compared with.
type pair struct{ system, msilo string }

func (r *benchReport) pairs() []pair {
	var out []pair
	for _, mode := range kamailioModes() {
		out = append(out, pair{mode.System, systemMsilo})
	}
	return append(out, pair{systemDeferpushPager, systemMsilo}, pair{systemDeferpushPagerRedis, systemMsilo},
		pair{systemDeferpushOpenSIPS, systemMsiloOpenSIPS})
}

func pct(v float64) string { return fmt.Sprintf("%.0f%%", 100*v) }

func (r *benchReport) howMeasured(b *bytes.Buffer) {
	p := r.Params
	b.WriteString("\n## How it was measured\n\n")
	if p.CPUs.pinned() {
		fmt.Fprintf(b, "- **CPUs (taskset):** on CPU %s the servers: every Kamailio and OpenSIPS process (started under `taskset -c %s`, "+
			"their workers inherit it), redis-server (likewise) and deferpush (pinned with `taskset -a -p` right after it starts, every thread). "+
			"On CPU %s the clients: the bench process itself (`taskset -a -p`, GOMAXPROCS %d), where the %d reference clients of the deferpush rows run, "+
			"and everything it starts that is not a server: SIPp (every UAC and msilo's UAS), redis-benchmark, sqlite3 and the `go test` of the store's "+
			"append benchmark (whose redis-server is on CPU %s). The MSRP limit's `go test` runs on CPUs %s,%s (both ends in one process). "+
			"Every row checks, after its phases, that every thread of every server is on CPU %s and every thread of the bench on CPU %s.\n",
			p.CPUs.Servers, p.CPUs.Servers, p.CPUs.Clients, runtime.GOMAXPROCS(0), p.Users, p.CPUs.Servers,
			p.CPUs.Servers, p.CPUs.Clients, p.CPUs.Servers, p.CPUs.Clients)
	} else {
		fmt.Fprintf(b, "- **CPUs:** not pinned (%s).\n", p.CPUs.Why)
	}
	b.WriteString("- **Transport:** every client speaks SIP over UDP to the proxy: SIPp's MESSAGEs and REGISTERs, msilo's SIPp UAS, and deferpush's " +
		"reference clients (`Transport: udp`, their Contact `;transport=udp`). What differs by nature: msilo delivers each stored message " +
		"as a SIP MESSAGE over that UDP contact (one transaction per message); deferpush pushes an INVITE over that UDP contact, then the messages over " +
		"one MSRP connection (TCP, RFC 4975 has no UDP), then BYE; between Kamailio and deferpush (hooks over HTTP, `STORE_VIA_SIP`, " +
		"deferpush's INVITEs to the internal port) it is TCP, server side.\n")
	if p.RedisUnix {
		b.WriteString("- **Redis:** deferpush and Kamailio's ndb_redis reach redis-server over a Unix socket (`BENCH_REDIS_UNIX=1`; " +
			"the bench's own clients over TCP).\n")
	} else {
		b.WriteString("- **Redis:** deferpush and Kamailio's ndb_redis reach redis-server over TCP on 127.0.0.1 (`BENCH_REDIS_UNIX=1`: " +
			"over a Unix socket).\n")
	}
	fmt.Fprintf(b, "- **Workers:** Kamailio runs `-n %d -N %d` (children, tcp_children) in the plain-registrar row and every deferpush row, "+
		"overriding the shipped kamailio.cfg's 4 and 4 (its async_workers, 4, which run the hooks, stay); msilo runs one SIP worker "+
		"(`-n 1`, UDP only): db_sqlite sets no busy timeout and a second worker's writes fail with \"database is locked\"", p.Workers, p.Workers)
	if p.Workers == 1 {
		b.WriteString(", so one is the count every row can have.")
	} else {
		b.WriteString(": the counts differ in this run, both as run.")
	}
	fmt.Fprintf(b, " OpenSIPS: msilo's script has udp_workers=1; the shipped opensips.cfg runs with udp_workers=%d and tcp_workers=%d appended "+
		"to a copy (its script overrides -n).\n", p.Workers, p.Workers)
	b.WriteString("- **Store:** SIPp sends U×M MESSAGEs (one per call, -inf users.csv cycling through the users, " +
		"a ~90-byte text/plain body) to the proxy while no user is registered; the rate is messages ÷ (first sent → last 2xx), " +
		"from SIPp's own timestamps. Every message is checked to be in the store afterwards.\n")
	b.WriteString("- **Delivery:** all U users register at once; the clock runs from the first REGISTER sent to the last message " +
		"confirmed by its client (the 200 to the MESSAGE for msilo, the 200 to the MSRP SEND for deferpush). A message confirmed " +
		"again (retransmission, second dump) counts once, as a duplicate. p50/p99 are over users: their REGISTER → their last message.\n")
	b.WriteString("- **Server CPU:** the time on CPU of every thread of every server process and all its descendants (Kamailio's and OpenSIPS's " +
		"workers), from /proc/PID/task/TID/schedstat in nanoseconds (/proc/PID/stat's utime+stime is the same time in 10 ms ticks, too " +
		"coarse for M=1's 200 messages), read before and after each phase; a phase starts once the servers have been idle (under 5 ms " +
		"of CPU in 200 ms: what they still did after starting or after the last phase is not its work) and ends when its last answer is in and the " +
		"servers have been idle (under 5 ms of CPU in 200 ms; work queued behind the answers — Kamailio's async hooks, deferpush's acks — is counted). " +
		"msilo: the proxy's processes (SQLite runs inside them); deferpush: deferpush, redis-server and the proxy's processes. " +
		"Per message: store CPU ÷ messages stored, delivery CPU ÷ messages delivered; per REGISTER: CPU ÷ REGISTERs answered.\n")
	b.WriteString("- **Clients' CPU:** the bench process's and SIPp's CPU in the phase, as a share of the client CPUs; near 100% the rate may be " +
		"the clients' limit rather than the server's.\n")
	b.WriteString("- **Registrations:** REG_N users, each registering once (Expires 3600) with an empty mailbox, by " +
		"`test/testdata/bench/register-uac.xml` through SIPp (-l as above), into: **plain registrar** " +
		"(`test/testdata/bench/kamailio-registrar.cfg`: save() and nothing else), **msilo** (`test/testdata/kamailio-msilo.cfg`, " +
		"save() then m_dump, which queries SQLite and finds nothing), and each deferpush mode (the shipped kamailio.cfg: save(), then the " +
		"registered hook from an async worker; deferpush records the registration and finds the mailbox empty). \"200s\" is REGISTERs ÷ (first sent → " +
		"last 200); \"handled\" runs until deferpush has recorded every registration (Redis DBSIZE, polled every 20 ms; each one is then " +
		"checked with Settings.Contact), the same as 200s for Kamailio alone and for the Redis-direct mode, whose cache of the users who may " +
		"have messages (loaded before the run) lets none of these REGISTERs through to Redis: its row checks that Redis ran no dp_register " +
		"(MONITOR) and recorded nothing.\n")
	b.WriteString("- **Bytes per message:** msilo: growth of the SQLite file after a WAL checkpoint; deferpush: growth of the memory of Redis's keys, " +
		"`MEMORY USAGE key SAMPLES 0` summed over every key (the key, its value and its keyspace entry, exactly; `used_memory` also " +
		"moves with the clients' buffers, 16 KB and more per connection, which INFO accounts for a second late: report.csv has its " +
		"growth less `mem_clients_normal` as `redis_used_memory_per_msg`), " +
		"compared with the mean size of a stored message (plugin.Message.Size of the first message of 20 users). Per-mailbox overhead: " +
		"the intercept of a least-squares fit of bytes per user against M over the M of the run.\n")
	b.WriteString("- **msilo** runs `test/testdata/kamailio-msilo.cfg`: usrloc in memory, m_store on an offline MESSAGE (202), m_dump on REGISTER, " +
		"each stored message re-sent as its own SIP MESSAGE through the same Kamailio to the SIPp UAS (`test/testdata/bench/message-uas.xml`). " +
		"Backend db_sqlite in WAL mode, in /dev/shm: db_redis cannot back msilo (BLOB columns, SQL auto-increment ids: every m_store fails), " +
		"and the other Debian backends need a database server; the file lives in memory so that SQLite pays no fsync, as the harness's redis-server runs without persistence.\n")
	b.WriteString("- **deferpush** runs the shipped `adapters/kamailio/kamailio.cfg` and the real binary against redis-server; the clients are " +
		"the reference client (`adapters/imclient`), confirming each MSRP SEND. **deferpush (store via SIP)** is the same with " +
		"`-A STORE_VIA_SIP=1`: Kamailio relays each offline MESSAGE over one TCP connection to deferpush's SIP ingress instead of posting " +
		"it to the message hook from an async worker. **deferpush (Redis direct)** is the mode in which Kamailio writes to Redis itself " +
		"(`test/bench_redisdirect_test.go`); rows marked \"not built yet\" have no figure.\n")
	b.WriteString("- **deferpush (pager_below)** (M=1 only) runs the shipped kamailio.cfg as shipped with the policy's `delivery` auto and " +
		"`pager_below` M: each user's messages go as SIP MESSAGEs (pager mode) through Kamailio to msilo's own client, the SIPp UAS, " +
		"registered by the same SIPp scenario as msilo's; its store phase is the hook row's, and each REGISTER reaches deferpush " +
		"through the registered hook (an async worker, libcurl, HTTP). **deferpush (pager_below, Redis direct)** is the same in " +
		"kamailio.cfg's Redis-direct mode: Kamailio stores with dp_store, and each REGISTER's dp_register answers the first page, " +
		"which Kamailio sends itself (the proxy's own pages), each 200 going to dp_page for the next; deferpush is not on the path. " +
		"Its store phase is the Redis-direct row's.\n")
	b.WriteString("- **OpenSIPS 3.4:** **msilo (OpenSIPS)** runs `test/testdata/opensips-msilo.cfg`, the same registrar and msilo setup " +
		"(db_sqlite in WAL mode, in /dev/shm, the SIPp UAS); **deferpush (OpenSIPS)** runs the shipped `adapters/opensips/opensips.cfg` " +
		"(the message hook through rest_client's async rest_post, the registration hooks from the usrloc events).\n")
	b.WriteString("- **Physical limits:** redis-benchmark's unpipelined RPUSH against a harness redis-server (server CPUs) from the client CPUs; " +
		"the store's append benchmark (`store` BenchmarkAppend) beside the same RPUSH figure taken on its own server right after; plugin/msrp alone.\n")
	b.WriteString("- **Go benchmarks** of the hot paths are in `results/go-bench.txt` (benchstat input).\n")
}

func ratio(a, b float64) string {
	if b == 0 || a == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

func orDash(s string) string {
	if s == "" {
		return "–"
	}
	return strings.ReplaceAll(s, "|", "/")
}

func intsString(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ", ")
}

// svg draws delivery rate against messages per user, one line per
// system through the medians, a bar for the spread, by hand: no plotting
// dependency for one chart.
func (r *benchReport) svg() ([]byte, error) {
	const (
		w, h                     = 640, 400
		left, right, top, bottom = 80, 190, 40, 60
	)
	ms := r.Params.Ms
	systems := []struct{ name, color string }{{systemDeferpush, "#1f77b4"}, {systemDeferpushViaSIP, "#9467bd"},
		{systemDeferpushRedis, "#2ca02c"}, {systemDeferpushPager, "#8c564b"}, {systemDeferpushPagerRedis, "#e377c2"}, {systemMsilo, "#d62728"},
		{systemDeferpushOpenSIPS, "#17becf"}, {systemMsiloOpenSIPS, "#ff7f0e"}}
	maxY := 0.0
	for _, row := range r.Rows {
		maxY = math.Max(maxY, row.DeliverRate)
	}
	deliver := func(r benchRow) float64 { return r.DeliverRate }
	if maxY == 0 {
		maxY = 1
	}
	step := niceStep(maxY / 5)
	top_ := math.Ceil(maxY/step) * step
	x := func(i int) float64 {
		if len(ms) == 1 {
			return left + float64(w-left-right)/2
		}
		return left + float64(i)*float64(w-left-right)/float64(len(ms)-1)
	}
	y := func(v float64) float64 { return float64(h-bottom) - v/top_*float64(h-top-bottom) }
	var b bytes.Buffer
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", w, h, w, h)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", w, h)
	fmt.Fprintf(&b, `<text x="%d" y="22" font-size="14" font-weight="bold">Delivery rate after registration, %d users (median, min–max)</text>`+"\n", left, r.Params.Users)
	for v := 0.0; v <= top_+step/2; v += step {
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>`+"\n", left, y(v), w-right, y(v))
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", left-6, y(v)+4, humanInt(v))
	}
	for i, m := range ms {
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%d</text>`+"\n", x(i), h-bottom+18, m)
	}
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", left, h-bottom, w-right, h-bottom)
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", left, top, left, h-bottom)
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">messages per user (M)</text>`+"\n", left+(w-left-right)/2, h-bottom+40)
	fmt.Fprintf(&b, `<text transform="translate(18,%d) rotate(-90)" text-anchor="middle">delivered messages / s</text>`+"\n", top+(h-top-bottom)/2)
	for si, s := range systems {
		var pts []string
		for i, m := range ms {
			g, ok := r.group(s.name, m)
			if !ok {
				continue
			}
			st := g.stat(deliver)
			if st.Med == 0 {
				continue
			}
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(i), y(st.Med)))
			if st.Max > st.Min {
				fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s"/>`+"\n", x(i), y(st.Min), x(i), y(st.Max), s.color)
			}
			fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="4" fill="%s"/>`+"\n", x(i), y(st.Med), s.color)
			fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" fill="%s" text-anchor="middle">%s</text>`+"\n", x(i)+18, y(st.Med)-6, s.color, humanInt(st.Med))
		}
		if len(pts) > 1 {
			fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"/>`+"\n", strings.Join(pts, " "), s.color)
		}
		ly := top + 20 + si*22
		label := s.name
		if len(pts) == 0 {
			label += " (not measured)"
		}
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"/>`+"\n", w-right+15, ly, w-right+40, ly, s.color)
		fmt.Fprintf(&b, `<text x="%d" y="%d">%s</text>`+"\n", w-right+46, ly+4, label)
	}
	b.WriteString("</svg>\n")
	return b.Bytes(), nil
}

// niceStep rounds v up to 1, 2 or 5 times a power of ten.
func niceStep(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, f := range []float64{1, 2, 5, 10} {
		if f*p >= v {
			return f * p
		}
	}
	return 10 * p
}

func humanInt(v float64) string {
	if v >= 10000 {
		return fmt.Sprintf("%.0fk", v/1000)
	}
	if v >= 1000 {
		return fmt.Sprintf("%.1fk", v/1000)
	}
	return fmt.Sprintf("%.0f", v)
}
