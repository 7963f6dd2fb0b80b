package test

import (
	"fmt"
	"strings"
)

// goal is one of issue 14's goals as one run measured it.
type goal struct {
	Text     string
	Measured bool
	Met      bool
	// Detail gives the figures, or why the goal was not measured.
	Detail string
}

func (g goal) String() string {
	switch {
	case !g.Measured:
		return fmt.Sprintf("%s: not measured in this run (%s)", g.Text, g.Detail)
	case g.Met:
		return fmt.Sprintf("%s: **met** — %s", g.Text, g.Detail)
	default:
		return fmt.Sprintf("%s: **missed** — %s", g.Text, g.Detail)
	}
}

// modeFigure is one deferpush mode's figure for a goal.
type modeFigure struct {
	mode string
	ok   bool
	text string
}

// verdict makes a goal met when one mode's figure meets it; modes not
// built yet are listed as such.
func (r *benchReport) verdict(text string, figs []modeFigure, unmeasured string) goal {
	g := goal{Text: text}
	var parts []string
	for _, f := range figs {
		g.Measured = true
		g.Met = g.Met || f.ok
		parts = append(parts, f.mode+": "+f.text)
	}
	for _, m := range r.Missing {
		if strings.HasPrefix(m.Name, systemDeferpush) {
			parts = append(parts, modeLabel(m.Name)+": "+m.Why)
		}
	}
	if !g.Measured {
		g.Detail = unmeasured
		if len(parts) > 0 {
			g.Detail += "; " + strings.Join(parts, "; ")
		}
		return g
	}
	g.Detail = strings.Join(parts, "; ")
	return g
}

// modeLabel is a deferpush row's name as the goals name its mode.
func modeLabel(system string) string {
	switch system {
	case systemDeferpush:
		return "HTTP hook"
	case systemDeferpushViaSIP:
		return "STORE_VIA_SIP"
	case systemDeferpushRedis:
		return "Redis direct"
	}
	return system
}

// med is the median of a figure of a message row, and whether the row ran.
func (r *benchReport) med(system string, m int, f func(benchRow) float64) (float64, bool) {
	g, ok := r.group(system, m)
	if !ok {
		return 0, false
	}
	return g.stat(f).Med, true
}

// builtModes are the shipped Kamailio modes the run measured.
func (r *benchReport) builtModes() []string {
	var out []string
	for _, mode := range kamailioModes() {
		if mode.Missing == "" {
			out = append(out, mode.System)
		}
	}
	return out
}

func storeRate(r benchRow) float64   { return r.StoreRate }
func deliverRate(r benchRow) float64 { return r.DeliverRate }
func p99ms(r benchRow) float64       { return ms(r.P99) }
func bytesPerMsg(r benchRow) float64 { return r.BytesPerMsg }
func msgSize(r benchRow) float64     { return r.MsgSize }

// goals checks issue 14's goals against the medians of this run and
// says, for each, met or missed with the figures (or why not measured).
func (r *benchReport) goals() []goal {
	var out []goal
	for _, m := range r.Params.Ms {
		out = append(out, r.storeGoal(m), r.hookStoreGoal(m))
	}
	out = append(out, r.registerGoal())
	for _, dg := range []struct {
		m int
		x float64
	}{{1, 0.5}, {10, 2}, {50, 5}} {
		out = append(out, r.deliveryGoal(dg.m, dg.x))
	}
	out = append(out, r.latencyGoal(10), r.bytesGoal(10), r.mailboxGoal(), r.appendGoal(), r.pagerGoal())
	return out
}

// storeGoal: store rate ≥ 1.5× msilo's and server CPU per stored message
// ≤ 0.7× msilo's, in one mode.
func (r *benchReport) storeGoal(m int) goal {
	text := fmt.Sprintf("store rate ≥ 1.5× msilo's and server CPU per stored message ≤ 0.7× msilo's at M=%d (best shipped mode)", m)
	refRate, ok := r.med(systemMsilo, m, storeRate)
	refCPU, _ := r.med(systemMsilo, m, benchRow.StoreCPUPerMsg)
	if !ok || refRate == 0 || refCPU == 0 {
		return r.verdict(text, nil, "no msilo figure")
	}
	var figs []modeFigure
	for _, sys := range r.builtModes() {
		rate, ok := r.med(sys, m, storeRate)
		cpu, _ := r.med(sys, m, benchRow.StoreCPUPerMsg)
		if !ok {
			continue
		}
		figs = append(figs, modeFigure{modeLabel(sys), rate >= 1.5*refRate && cpu <= 0.7*refCPU,
			fmt.Sprintf("%.2f× the rate (%s vs %s msgs/s), %.2f× the CPU (%s vs %s µs/msg)",
				rate/refRate, num(rate, 0), num(refRate, 0), cpu/refCPU, num(cpu, 1), num(refCPU, 1))})
	}
	return r.verdict(text, figs, "no deferpush row")
}

// hookStoreGoal: through the HTTP hook the store rate stays ≥ 0.6× msilo's.
func (r *benchReport) hookStoreGoal(m int) goal {
	text := fmt.Sprintf("store rate through the HTTP hook ≥ 0.6× msilo's at M=%d", m)
	g := goal{Text: text}
	ref, ok1 := r.med(systemMsilo, m, storeRate)
	rate, ok2 := r.med(systemDeferpush, m, storeRate)
	if !ok1 || !ok2 || ref == 0 {
		g.Detail = "no msilo or no hook row"
		return g
	}
	g.Measured, g.Met = true, rate >= 0.6*ref
	g.Detail = fmt.Sprintf("%.2f× (%s vs %s msgs/s)", rate/ref, num(rate, 0), num(ref, 0))
	return g
}

// registerGoal: a REGISTER with an empty mailbox costs at most 1.2× the
// server CPU of the plain registrar.
func (r *benchReport) registerGoal() goal {
	text := "a REGISTER with an empty mailbox costs ≤ 1.2× the server CPU of the plain-registrar baseline"
	base, ok := r.regGroup(systemRegistrar)
	if !ok {
		return r.verdict(text, nil, "no registration rows")
	}
	ref := base.stat(regRow.CPUPerReg).Med
	if ref == 0 {
		return r.verdict(text, nil, "no baseline CPU figure")
	}
	var figs []modeFigure
	for _, sys := range r.builtModes() {
		g, ok := r.regGroup(sys)
		if !ok {
			continue
		}
		cpu := g.stat(regRow.CPUPerReg).Med
		figs = append(figs, modeFigure{modeLabel(sys), cpu <= 1.2*ref,
			fmt.Sprintf("%.2f× (%s vs %s µs/REGISTER)", cpu/ref, num(cpu, 1), num(ref, 1))})
	}
	gl := r.verdict(text, figs, "no deferpush registration row")
	if ms, ok := r.regGroup(systemMsilo); ok && gl.Measured {
		cpu := ms.stat(regRow.CPUPerReg).Med
		gl.Detail += fmt.Sprintf("; msilo for reference: %.2f× (%s µs)", cpu/ref, num(cpu, 1))
	}
	return gl
}

// deliveryGoal: delivery rate ≥ x× msilo's at M=m.
func (r *benchReport) deliveryGoal(m int, x float64) goal {
	text := fmt.Sprintf("delivery rate ≥ %s× msilo's at M=%d", num(x, 1), m)
	ref, ok := r.med(systemMsilo, m, deliverRate)
	if !ok || ref == 0 {
		return r.verdict(text, nil, fmt.Sprintf("M=%d not run or no msilo figure", m))
	}
	var figs []modeFigure
	for _, sys := range r.builtModes() {
		rate, ok := r.med(sys, m, deliverRate)
		if !ok {
			continue
		}
		figs = append(figs, modeFigure{modeLabel(sys), rate >= x*ref,
			fmt.Sprintf("%.2f× (%s vs %s msgs/s)", rate/ref, num(rate, 0), num(ref, 0))})
	}
	return r.verdict(text, figs, "no deferpush row")
}

// latencyGoal: REGISTER→last message p99 at M=m no worse than msilo's.
func (r *benchReport) latencyGoal(m int) goal {
	text := fmt.Sprintf("REGISTER→last message p99 at M=%d no worse than msilo's", m)
	ref, ok := r.med(systemMsilo, m, p99ms)
	if !ok || ref == 0 {
		return r.verdict(text, nil, fmt.Sprintf("M=%d not run or no msilo figure", m))
	}
	var figs []modeFigure
	for _, sys := range r.builtModes() {
		p99, ok := r.med(sys, m, p99ms)
		if !ok {
			continue
		}
		figs = append(figs, modeFigure{modeLabel(sys), p99 > 0 && p99 <= ref,
			fmt.Sprintf("%s vs %s ms", num(p99, 1), num(ref, 1))})
	}
	return r.verdict(text, figs, "no deferpush row")
}

// bytesGoal: Redis bytes per deferred message at M=m ≤ 2× the stored SIP
// message's own size.
func (r *benchReport) bytesGoal(m int) goal {
	text := fmt.Sprintf("Redis bytes per deferred message at M=%d ≤ 2× the stored SIP message's own size", m)
	var figs []modeFigure
	for _, sys := range r.builtModes() {
		per, ok := r.med(sys, m, bytesPerMsg)
		size, _ := r.med(sys, m, msgSize)
		if !ok || size == 0 {
			continue
		}
		figs = append(figs, modeFigure{modeLabel(sys), per <= 2*size,
			fmt.Sprintf("%.2f× (%s B per message, the message %s B)", per/size, num(per, 0), num(size, 0))})
	}
	return r.verdict(text, figs, fmt.Sprintf("M=%d not run", m))
}

// mailboxGoal: per-mailbox overhead ≤ 600 B, the intercept of bytes per
// user against M.
func (r *benchReport) mailboxGoal() goal {
	text := "Redis per-mailbox overhead ≤ 600 B"
	var figs []modeFigure
	for _, sys := range r.builtModes() {
		var xs, ys []float64
		for _, m := range r.Params.Ms {
			if per, ok := r.med(sys, m, bytesPerMsg); ok {
				xs, ys = append(xs, float64(m)), append(ys, per*float64(m))
			}
		}
		a, slope, ok := linearFit(xs, ys)
		if !ok {
			continue
		}
		figs = append(figs, modeFigure{modeLabel(sys), a <= 600,
			fmt.Sprintf("%s B per mailbox, %s B per message (bytes per user against M=%s)", num(a, 0), num(slope, 0), floatsString(xs))})
	}
	return r.verdict(text, figs, "needs two M or more")
}

// appendGoal: the Go benchmark of the store's append ≥ 50% of raw
// unpipelined RPUSH at the same concurrency.
func (r *benchReport) appendGoal() goal {
	g := goal{Text: "the Go benchmark of the store's append ≥ 50% of raw unpipelined RPUSH at the same concurrency"}
	l := r.limit("store-append")
	if l.Name == "" || l.Err != "" || l.Ref == 0 {
		g.Detail = "store-append limit not measured"
		if l.Err != "" {
			g.Detail += ": " + l.Err
		}
		return g
	}
	g.Measured, g.Met = true, l.Rate >= l.Ref/2
	g.Detail = fmt.Sprintf("%.0f%% (%s appends/s vs %s RPUSH/s, %d clients)", 100*l.Rate/l.Ref, num(l.Rate, 0), num(l.Ref, 0), r.Params.Concurrency)
	return g
}

// linearFit is the least-squares line y = a + b·x through the points;
// ok is false with fewer than two distinct x.
func linearFit(xs, ys []float64) (a, b float64, ok bool) {
	n := float64(len(xs))
	if len(xs) < 2 {
		return 0, 0, false
	}
	var sx, sy, sxx, sxy float64
	for i := range xs {
		sx += xs[i]
		sy += ys[i]
		sxx += xs[i] * xs[i]
		sxy += xs[i] * ys[i]
	}
	d := n*sxx - sx*sx
	if d == 0 {
		return 0, 0, false
	}
	b = (n*sxy - sx*sy) / d
	a = (sy - b*sx) / n
	return a, b, true
}

func floatsString(v []float64) string {
	s := make([]string, len(v))
	for i, f := range v {
		s[i] = num(f, 0)
	}
	return strings.Join(s, ",")
}
