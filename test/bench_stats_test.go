package test

import (
	"math"
	"slices"
	"strings"
	"testing"
	"time"
)

// The arithmetic of make bench's report, on made-up rows: medians and
// spreads, the fit of bytes per mailbox, each goal's verdict, and what
// fails the run. The bench itself (BenchmarkVsMsilo) runs under make bench.

func TestBenchStatOf(t *testing.T) {
	for _, c := range []struct {
		in            []float64
		med, min, max float64
		cell          string
	}{
		{[]float64{3, 1, 2}, 2, 1, 3, "2 (1–3)"},
		{[]float64{4, 1, 3, 2}, 2.5, 1, 4, "2 (1–4)"}, // 2.5 rounds to even
		{[]float64{8403}, 8403, 8403, 8403, "8,403"},
		{[]float64{1234567, 1000, 2000}, 2000, 1000, 1234567, "2,000 (1,000–1,234,567)"},
	} {
		s := statOf(c.in)
		if s.Med != c.med || s.Min != c.min || s.Max != c.max || s.N != len(c.in) {
			t.Errorf("statOf(%v) = %+v, want median %v, %v–%v", c.in, s, c.med, c.min, c.max)
		}
		if got := s.cell(0); got != c.cell {
			t.Errorf("statOf(%v).cell(0) = %q, want %q", c.in, got, c.cell)
		}
	}
	if got := statOf(nil).cell(1); got != "–" {
		t.Errorf("no runs: cell %q, want –", got)
	}
	if got := num(-1234.5, 1); got != "-1,234.5" {
		t.Errorf("num(-1234.5, 1) = %q", got)
	}
}

func TestBenchParseCPUList(t *testing.T) {
	for in, want := range map[string][]int{"0": {0}, "1": {1}, "0-2,5": {0, 1, 2, 5}, "3,1,1-2": {1, 2, 3}} {
		got, err := parseCPUList(in)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("parseCPUList(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "a", "2-1", "-1", "0,"} {
		if got, err := parseCPUList(in); err == nil {
			t.Errorf("parseCPUList(%q) = %v, want an error", in, got)
		}
	}
	if got := cpuListString([]int{0, 2}); got != "0,2" {
		t.Errorf("cpuListString = %q", got)
	}
}

func TestBenchLinearFit(t *testing.T) {
	xs := []float64{1, 10, 50}
	ys := []float64{500 + 300*1, 500 + 300*10, 500 + 300*50}
	a, b, ok := linearFit(xs, ys)
	if !ok || math.Abs(a-500) > 1e-9 || math.Abs(b-300) > 1e-9 {
		t.Errorf("linearFit = %v, %v, %v; want 500, 300", a, b, ok)
	}
	if _, _, ok := linearFit([]float64{10}, []float64{1}); ok {
		t.Error("linearFit of one point: ok")
	}
	if _, _, ok := linearFit([]float64{10, 10}, []float64{1, 2}); ok {
		t.Error("linearFit of one x twice: ok")
	}
}

// fakeReport is a run of three runs per row at M=1, 10, 50 where:
// msilo stores 1,000 msgs/s at 100 µs/msg and delivers 1,000 msgs/s with
// a p99 of 100 ms; the hook stores 700 msgs/s at 200 µs/msg; STORE_VIA_SIP
// stores 1,600 msgs/s at 60 µs/msg (both goals at M=10 and 50, not the CPU
// goal at M=1, where it costs 80 µs); deferpush delivers 600, 2,500 and
// 4,000 msgs/s at M=1, 10, 50 with a p99 of 90 ms; Redis holds 500 B per
// mailbox and 700 B per message of 400 B; the registrar costs 100 µs per
// REGISTER, deferpush 115 µs (hook) and 130 µs (via SIP); the append
// benchmark runs at 45% of RPUSH; the floors of the store cost 40 µs
// (202 alone) and 75 µs (one RPUSH) per message, at 5,000 msgs/s.
func fakeReport() *benchReport {
	r := &benchReport{Params: benchParams{Users: 200, Ms: []int{1, 10, 50}, Runs: 3, RegUsers: 1000, Concurrency: 50}}
	deliver := map[int]float64{1: 600, 10: 2500, 50: 4000}
	for run := 1; run <= 3; run++ {
		jitter := float64(run-2) * 0.01 // -1%, 0, +1%: the median is the middle run
		for _, m := range []int{1, 10, 50} {
			n := 200 * m
			secs := func(rate float64) time.Duration {
				return time.Duration(float64(n) / rate * float64(time.Second))
			}
			row := func(sys string, storeRate, storeCPU, deliverRate float64) benchRow {
				storeRate *= 1 + jitter
				return benchRow{System: sys, Run: run, Users: 200, M: m, Stored: n, Delivered: n,
					StoreRate: storeRate, StoreTime: secs(storeRate), CPUStore: storeCPU * float64(n) / 1e6,
					DeliverRate: deliverRate, DeliverTime: secs(deliverRate), CPUDeliver: 100 * float64(n) / 1e6,
					P99: 100 * time.Millisecond, BytesPerMsg: 230}
			}
			r.Rows = append(r.Rows, row(systemMsilo, 1000, 100, 1000))
			hook := row(systemDeferpush, 700, 200, deliver[m])
			via := row(systemDeferpushViaSIP, 1600, 60, deliver[m])
			if m == 1 {
				via.CPUStore = 80 * float64(n) / 1e6
			}
			for _, dp := range []*benchRow{&hook, &via} {
				dp.P99 = 90 * time.Millisecond
				dp.BytesPerMsg = (500 + 700*float64(m)) / float64(m)
				dp.MsgSize = 400
			}
			r.Rows = append(r.Rows, hook, via)
			if m == 1 {
				r.Rows = append(r.Rows, row(systemDeferpushPager, 700, 200, 500), row(systemDeferpushPagerRedis, 1600, 60, 1100))
			}
		}
		for sys, cpu := range map[string]float64{systemFloor202: 40, systemFloorRPUSH: 75} {
			r.FloorRows = append(r.FloorRows, floorRow{System: sys, Run: run, N: 10000, Stored: 10000,
				Time: 2 * time.Second, CPU: cpu * (1 + jitter) * 10000 / 1e6})
		}
		for sys, cpu := range map[string]float64{systemRegistrar: 100, systemMsilo: 180, systemDeferpush: 115, systemDeferpushViaSIP: 130} {
			r.RegRows = append(r.RegRows, regRow{System: sys, Run: run, N: 1000, OK: 1000, CPU: cpu * 1000 / 1e6, Recorded: -1,
				Rate: 5000, DoneRate: 5000})
		}
	}
	r.Missing = []missingSystem{{Name: systemDeferpushRedis, Why: "not built yet"}}
	r.Limits = []benchLimit{{Name: "store-append", Rate: 45000, Ref: 100000}}
	return r
}

func findGoal(t *testing.T, goals []goal, prefix string) goal {
	t.Helper()
	for _, g := range goals {
		if strings.HasPrefix(g.Text, prefix) {
			return g
		}
	}
	t.Fatalf("no goal %q among %v", prefix, goals)
	return goal{}
}

func TestBenchGoals(t *testing.T) {
	goals := fakeReport().goals()
	for _, c := range []struct {
		prefix   string
		met      bool
		inDetail []string
	}{
		{"store rate ≥ 1.5× msilo's and server CPU per stored message ≤ 0.7× msilo's at M=1 ", false,
			[]string{"HTTP hook: 0.70× the rate (700 vs 1,000 msgs/s), 2.00× the CPU", "STORE_VIA_SIP: 1.60× the rate", "0.80× the CPU", "Redis direct: not built yet"}},
		{"store rate ≥ 1.5× msilo's and server CPU per stored message ≤ 0.7× msilo's at M=10 ", true, []string{"0.60× the CPU (60.0 vs 100.0 µs/msg)"}},
		{"store rate through the HTTP hook ≥ 0.6× msilo's at M=50", true, []string{"0.70× (700 vs 1,000 msgs/s)"}},
		{"a REGISTER with an empty mailbox", true, []string{"HTTP hook: 1.15×", "STORE_VIA_SIP: 1.30×", "msilo for reference: 1.80×"}},
		{"delivery rate ≥ 0.5× msilo's at M=1", true, []string{"0.60× (600 vs 1,000 msgs/s)"}},
		{"delivery rate ≥ 2.0× msilo's at M=10", true, []string{"2.50×"}},
		{"delivery rate ≥ 5.0× msilo's at M=50", false, []string{"4.00× (4,000 vs 1,000 msgs/s)"}},
		{"REGISTER→last message p99 at M=10", true, []string{"90.0 vs 100.0 ms"}},
		{"Redis bytes per deferred message at M=10", true, []string{"1.88× (750 B per message, the message 400 B)"}},
		{"Redis per-mailbox overhead ≤ 600 B", true, []string{"500 B per mailbox, 700 B per message"}},
		{"delivery rate with pager_below ≥ msilo's at M=1", true, []string{"hooks: 0.50× (500 vs 1,000 msgs/s)", "Redis direct: 1.10× (1,100 vs 1,000 msgs/s)"}},
		{"the Go benchmark of the store's append", false, []string{"45% (45,000 appends/s vs 100,000 RPUSH/s, 50 clients)"}},
	} {
		t.Run(c.prefix, func(t *testing.T) {
			g := findGoal(t, goals, c.prefix)
			if !g.Measured || g.Met != c.met {
				t.Errorf("measured %v met %v, want measured, met %v (%s)", g.Measured, g.Met, c.met, g.Detail)
			}
			for _, s := range c.inDetail {
				if !strings.Contains(g.Detail, s) {
					t.Errorf("detail %q lacks %q", g.Detail, s)
				}
			}
			verdict := "**missed**"
			if c.met {
				verdict = "**met**"
			}
			if !strings.Contains(g.String(), verdict) {
				t.Errorf("printed as %q, want %s", g.String(), verdict)
			}
		})
	}
}

func TestBenchGoalsNotMeasured(t *testing.T) {
	r := fakeReport()
	r.Params.Ms = []int{1, 5}
	var keep []benchRow
	for _, row := range r.Rows {
		if row.M == 1 && row.System != systemDeferpushPager && row.System != systemDeferpushPagerRedis {
			keep = append(keep, row)
		}
	}
	r.Rows, r.RegRows, r.Limits = keep, nil, []benchLimit{{Name: "store-append", Err: "redis-benchmark missing"}}
	goals := r.goals()
	for _, prefix := range []string{"delivery rate ≥ 2.0× msilo's at M=10", "Redis bytes per deferred message at M=10",
		"a REGISTER with an empty mailbox", "Redis per-mailbox overhead", "the Go benchmark of the store's append",
		"delivery rate with pager_below"} {
		g := findGoal(t, goals, prefix)
		if g.Measured || g.Met || !strings.Contains(g.String(), "not measured in this run") {
			t.Errorf("%s: %s, want not measured", prefix, g)
		}
	}
}

func TestBenchFailures(t *testing.T) {
	r := fakeReport()
	if f := r.failures(false); len(f) != 0 {
		t.Fatalf("a clean run fails: %v (a system not built yet must not fail it)", f)
	}
	r.Limits = append(r.Limits, benchLimit{Name: "msrp-send", Err: "go test failed"})
	r.RegRows[0].Err = "3 of 1000 REGISTERs answered 200"
	r.FloorRows[1].Err = "Redis holds 9999 messages"
	r.DeferpushMissing = "adapters/kamailio/kamailio.cfg is not committed yet"
	got := strings.Join(r.failures(false), "\n")
	for _, want := range []string{"physical limit msrp-send not measured: go test failed", "3 of 1000 REGISTERs answered 200",
		"the deferpush side did not run", "Redis holds 9999 messages"} {
		if !strings.Contains(got, want) {
			t.Errorf("failures lack %q:\n%s", want, got)
		}
	}
	if got := strings.Join(r.failures(true), "\n"); strings.Contains(got, "deferpush side") {
		t.Errorf("BENCH_DEFERPUSH=0 still fails on the deferpush side:\n%s", got)
	}
}

func TestBenchReportMarkdown(t *testing.T) {
	r := fakeReport()
	r.Params.CPUs = benchCPUs{Servers: "0", Clients: "1"}
	md, err := r.markdown()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"| deferpush (Redis direct) | 10 | – | not built yet |",
		"| deferpush (Redis direct) | not built yet |",
		// The hook's store rate at M=1 over its three runs: median, spread.
		"| deferpush | 1 | 200 | 700 (693–707) |",
		"| plain registrar | 5,000 | 5,000 | 100.0 | 1.00× |",
		"servers on CPU 0, clients on CPU 1",
		// The floors at 10,000 messages beside msilo's store CPU at M=50
		// (100 µs), and what the goal allows.
		"| Kamailio, 202 without storing | 5,000 | 40.0 (39.6–40.4) | 0.40× |",
		"| Kamailio, 202 after one RPUSH | 5,000 | 75.0 (74.2–75.8) | 0.75× |",
		"at most 0.7× msilo's CPU per stored message: 70.0 µs at M=50",
	} {
		if !strings.Contains(string(md), want) {
			t.Errorf("report.md lacks %q", want)
		}
	}
}
