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
	Rows    []benchRow
	// DeferpushMissing says why the deferpush side did not run.
	DeferpushMissing string
	// OpenSIPSMissing says why the OpenSIPS rows did not run.
	OpenSIPSMissing string
}

// machine describes where the run ran.
type machine struct {
	Host, CPU, Kernel, Load                     string
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
	if f := strings.Fields(readFileString("/proc/loadavg")); len(f) >= 3 {
		m.Load = strings.Join(f[:3], " ")
	}
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

func (r *benchReport) row(system string, m int) (benchRow, bool) {
	for _, row := range r.Rows {
		if row.System == system && row.M == m {
			return row, true
		}
	}
	return benchRow{}, false
}

func (r *benchReport) limit(name string) benchLimit {
	for _, l := range r.Limits {
		if l.Name == name {
			return l
		}
	}
	return benchLimit{}
}

// write writes report.md, report.csv and delivery.svg into dir.
func (r *benchReport) write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for name, f := range map[string]func() ([]byte, error){
		"report.md":    r.markdown,
		"report.csv":   r.csv,
		"delivery.svg": r.svg,
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

func (r *benchReport) csv() ([]byte, error) {
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	_ = w.Write([]string{"system", "users", "msgs_per_user", "stored", "store_s", "store_msgs_per_s",
		"delivered", "duplicates", "deliver_s", "deliver_msgs_per_s", "reg_to_last_p50_ms", "reg_to_last_p99_ms",
		"cpu_store_s", "cpu_deliver_s", "db_bytes_per_msg", "problems"})
	f := func(v float64, prec int) string { return strconv.FormatFloat(v, 'f', prec, 64) }
	for _, row := range r.Rows {
		_ = w.Write([]string{row.System, strconv.Itoa(row.Users), strconv.Itoa(row.M), strconv.Itoa(row.Stored),
			f(row.StoreTime.Seconds(), 3), f(row.StoreRate, 0), strconv.Itoa(row.Delivered), strconv.Itoa(row.Duplicates),
			f(row.DeliverTime.Seconds(), 3), f(row.DeliverRate, 0), f(ms(row.P50), 1), f(ms(row.P99), 1),
			f(row.CPUStore, 2), f(row.CPUDeliver, 2), f(row.BytesPerMsg, 0), join(row.Err, row.Note)})
	}
	for _, l := range r.Limits {
		// Physical limits: the rate goes in the column of the phase it
		// bounds.
		store, deliver := "", ""
		if l.Name == "redis-rpush" {
			store = f(l.Rate, 0)
		} else {
			deliver = f(l.Rate, 0)
		}
		_ = w.Write([]string{"limit:" + l.Name, "", "", "", "", store, "", "", "", deliver, "", "", "", "", "", l.Err})
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
	fmt.Fprintf(&b, "One run of %s: %d users × M messages (M = %s), %d MESSAGEs in flight while storing; "+
		"the whole run took %v.\n\n", mode, p.Users, intsString(p.Ms), p.Concurrency, r.Elapsed.Round(time.Second))
	fmt.Fprintf(&b, "**Machine:** %d cores, %s; Linux %s; load average at start %s (the machine is shared).  \n", m.Cores, m.CPU, m.Kernel, m.Load)
	fmt.Fprintf(&b, "**Software:** %s · %s · %s · %s · SQLite %s · %s.\n\n", m.Kamailio, m.OpenSIPS, m.Redis, m.SIPp, m.SQLite, m.Go)

	b.WriteString("## Results\n\n")
	b.WriteString("| system | M | messages | store msgs/s | delivery msgs/s | REGISTER→last p50 ms | p99 ms | server CPU s (store + deliver) | DB bytes/msg | duplicates | problems and notes |\n")
	b.WriteString("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|\n")
	for _, row := range r.Rows {
		fmt.Fprintf(&b, "| %s | %d | %d | %.0f | %.0f | %.1f | %.1f | %.2f + %.2f | %.0f | %d | %s |\n",
			row.System, row.M, row.Users*row.M, row.StoreRate, row.DeliverRate, ms(row.P50), ms(row.P99),
			row.CPUStore, row.CPUDeliver, row.BytesPerMsg, row.Duplicates, orDash(join(row.Err, row.Note)))
	}
	if r.DeferpushMissing != "" {
		fmt.Fprintf(&b, "\ndeferpush side not measured: %s.\n", r.DeferpushMissing)
	}
	if r.OpenSIPSMissing != "" {
		fmt.Fprintf(&b, "\nOpenSIPS rows not measured: %s.\n", r.OpenSIPSMissing)
	}

	b.WriteString("\n## Ratios (deferpush ÷ msilo of the same proxy)\n\n")
	b.WriteString("| M | store rate | delivery rate | REGISTER→last p99 (msilo ÷ deferpush) | CPU s per message (msilo ÷ deferpush) |\n|--:|--:|--:|--:|--:|\n")
	for _, pair := range []struct{ sys, msilo, label string }{
		{systemDeferpush, systemMsilo, ""},
		{systemDeferpushViaSIP, systemMsilo, " (store via SIP)"},
		{systemDeferpushOpenSIPS, systemMsiloOpenSIPS, " (OpenSIPS)"},
		{systemDeferpushPager, systemMsilo, " (pager_below)"},
	} {
		sys, label := pair.sys, pair.label
		for _, mm := range p.Ms {
			ms_, ok1 := r.row(pair.msilo, mm)
			dp, ok2 := r.row(sys, mm)
			if !ok1 || !ok2 {
				if sys == systemDeferpush {
					fmt.Fprintf(&b, "| %d | – | – | – | – |\n", mm)
				}
				continue
			}
			cpuPer := func(row benchRow) float64 {
				return (row.CPUStore + row.CPUDeliver) / float64(max(1, row.Users*row.M))
			}
			fmt.Fprintf(&b, "| %d%s | %s | %s | %s | %s |\n", mm, label, ratio(dp.StoreRate, ms_.StoreRate), ratio(dp.DeliverRate, ms_.DeliverRate),
				ratio(ms_.P99.Seconds(), dp.P99.Seconds()), ratio(cpuPer(ms_), cpuPer(dp)))
		}
	}

	b.WriteString("\n## Physical limits (same machine, same run)\n\n| limit | what | msgs/s |\n|---|---|--:|\n")
	for _, l := range r.Limits {
		v := fmt.Sprintf("%.0f", l.Rate)
		if l.Err != "" {
			v = "failed: " + l.Err
		}
		fmt.Fprintf(&b, "| %s | %s | %s |\n", l.Name, l.What, v)
	}

	b.WriteString("\n## Goals (2-core machine)\n\n")
	for _, g := range r.goals() {
		fmt.Fprintf(&b, "- %s\n", g)
	}

	b.WriteString("\n## How it was measured\n\n")
	b.WriteString(`- **Store:** SIPp sends U×M MESSAGEs (one per call, -inf users.csv cycling through the users, ` +
		"a ~90-byte text/plain body) to Kamailio while no user is registered; the rate is messages ÷ (first sent → last 2xx), " +
		"from SIPp's own timestamps. Every message is checked to be in the store afterwards.\n")
	b.WriteString("- **Delivery:** all U users register at once; the clock runs from the first REGISTER sent to the last message " +
		"confirmed by its client (the 200 to the MESSAGE for msilo, the 200 to the MSRP SEND for deferpush). A message confirmed " +
		"again (retransmission, second dump) counts once, as a duplicate. p50/p99 are over users: their REGISTER → their last message.\n")
	b.WriteString("- **CPU:** utime+stime from /proc of the server side — msilo: every Kamailio process (SQLite runs inside it); " +
		"deferpush: the deferpush process, redis-server and every Kamailio process — before and after each phase. Clients (SIPp, the reference client) are not counted.\n")
	b.WriteString("- **Bytes per message:** msilo: growth of the SQLite file after a WAL checkpoint; deferpush: growth of Redis `used_memory`.\n")
	b.WriteString("- **msilo** runs `test/testdata/kamailio-msilo.cfg`: usrloc in memory, m_store on an offline MESSAGE (202), m_dump on REGISTER, " +
		"each stored message re-sent as its own SIP MESSAGE through the same Kamailio to the SIPp UAS (`test/testdata/bench/message-uas.xml`), all UDP. " +
		"Backend db_sqlite in WAL mode, one SIP worker, in /dev/shm: db_redis cannot back msilo (BLOB columns, SQL auto-increment ids: every m_store fails), " +
		"and the other Debian backends need a database server; the file lives in memory so that SQLite pays no fsync, as the harness's redis-server runs without persistence.\n")
	b.WriteString("- **deferpush** runs the shipped `adapters/kamailio/kamailio.cfg` and the real binary against redis-server; the clients are " +
		"the reference client (`adapters/imclient`), registering over TCP through Kamailio and confirming each MSRP SEND. " +
		"**deferpush (store via SIP)** is the same with `-A STORE_VIA_SIP=1`: Kamailio relays each offline MESSAGE over one TCP " +
		"connection to deferpush's SIP ingress instead of posting it to the message hook from an async worker; its delivery phase is the same as the first row's.\n")
	b.WriteString("- **deferpush (pager_below)** (M=1 only) runs with the policy's `pager_below` at M: each user's messages go as SIP MESSAGEs " +
		"(pager mode) through the shipped kamailio.cfg to msilo's own client, the SIPp UAS, registered by the same SIPp REGISTER scenario as msilo's; " +
		"its store phase is the first row's.\n")
	b.WriteString("- **OpenSIPS 3.4:** **msilo (OpenSIPS)** runs `test/testdata/opensips-msilo.cfg`, the same registrar and msilo setup as the Kamailio one " +
		"(db_sqlite in WAL mode, one SIP worker, in /dev/shm, UDP, the SIPp UAS); **deferpush (OpenSIPS)** runs the shipped " +
		"`adapters/opensips/opensips.cfg` (the message hook through rest_client's async rest_post, the registration hooks from the usrloc events) " +
		"with the same binary, redis-server and reference clients as the Kamailio rows.\n")
	b.WriteString("- **Go benchmarks** of the hot paths are in `results/go-bench.txt` (benchstat input).\n")
	return b.Bytes(), nil
}

// goals checks the goals and says, for each, met or missed.
func (r *benchReport) goals() []string {
	var out []string
	verdict := func(ok bool) string {
		if ok {
			return "**met**"
		}
		return "**missed**"
	}
	for _, mm := range []int{10, 50} {
		ms_, ok1 := r.row("msilo", mm)
		dp, ok2 := r.row("deferpush", mm)
		if !ok1 || !ok2 {
			out = append(out, fmt.Sprintf("delivery rate ≥ 5× msilo's at M=%d: not measured in this run", mm))
			continue
		}
		x := dp.DeliverRate / ms_.DeliverRate
		out = append(out, fmt.Sprintf("delivery rate ≥ 5× msilo's at M=%d: %s (%.2f×: %.0f vs %.0f msgs/s)", mm, verdict(x >= 5), x, dp.DeliverRate, ms_.DeliverRate))
	}
	rpush := r.limit("redis-rpush")
	for _, sys := range []string{systemDeferpush, systemDeferpushViaSIP} {
		label := ""
		if sys != systemDeferpush {
			label = " (store via SIP)"
		}
		for _, mm := range r.Params.Ms {
			ms_, ok1 := r.row("msilo", mm)
			dp, ok2 := r.row(sys, mm)
			if !ok1 || !ok2 {
				continue
			}
			out = append(out, fmt.Sprintf("store rate%s ≥ msilo's at M=%d: %s (%.0f vs %.0f msgs/s)", label, mm, verdict(dp.StoreRate >= ms_.StoreRate), dp.StoreRate, ms_.StoreRate))
			if rpush.Rate > 0 {
				out = append(out, fmt.Sprintf("store rate%s ≥ 50%% of raw unpipelined RPUSH at M=%d: %s (%.0f%%: %.0f vs %.0f/s)", label, mm,
					verdict(dp.StoreRate >= rpush.Rate/2), 100*dp.StoreRate/rpush.Rate, dp.StoreRate, rpush.Rate))
			}
		}
	}
	if len(out) == 2 && r.DeferpushMissing != "" {
		out = append(out, "store-rate goals: not measured in this run")
	}
	return append(out, r.pagerGoal())
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
// system, by hand: no plotting dependency for one chart.
func (r *benchReport) svg() ([]byte, error) {
	const (
		w, h                     = 640, 400
		left, right, top, bottom = 80, 190, 40, 60
	)
	ms := r.Params.Ms
	systems := []struct{ name, color string }{{systemDeferpush, "#1f77b4"}, {systemMsilo, "#d62728"},
		{systemDeferpushOpenSIPS, "#17becf"}, {systemMsiloOpenSIPS, "#ff7f0e"}}
	maxY := 0.0
	for _, row := range r.Rows {
		maxY = math.Max(maxY, row.DeliverRate)
	}
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
	fmt.Fprintf(&b, `<text x="%d" y="22" font-size="14" font-weight="bold">Delivery rate after registration, %d users</text>`+"\n", left, r.Params.Users)
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
			row, ok := r.row(s.name, m)
			if !ok || row.DeliverRate == 0 {
				continue
			}
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(i), y(row.DeliverRate)))
			fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="4" fill="%s"/>`+"\n", x(i), y(row.DeliverRate), s.color)
			fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" fill="%s" text-anchor="middle">%s</text>`+"\n", x(i), y(row.DeliverRate)-8, s.color, humanInt(row.DeliverRate))
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
