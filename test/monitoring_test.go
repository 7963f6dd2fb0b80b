package test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/goccy/go-yaml"

	"github.com/deferpush/deferpush/adapters/imclient"
	"github.com/deferpush/deferpush/test/harness"
)

// The monitoring files shipped for operators (README, "Dashboard and
// alerts").
const (
	monitoringDir = "../adapters/monitoring"
	dashboardFile = monitoringDir + "/grafana-dashboard.json"
	alertsFile    = monitoringDir + "/alerts.yml"
	alertsTest    = monitoringDir + "/alerts_test.yml"
)

// TestMonitoringRulesPromtool: promtool accepts the alert rules, and
// their unit tests (each alert fires on the series that should fire it,
// and not on a healthy instance) pass.
func TestMonitoringRulesPromtool(t *testing.T) {
	promtool := harness.Require(t, "promtool", "prometheus")
	for _, args := range [][]string{{"check", "rules", alertsFile}, {"test", "rules", alertsTest}} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := exec.CommandContext(ctx, promtool, args...).CombinedOutput()
		cancel()
		if err != nil || !strings.Contains(string(out), "SUCCESS") {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// dashboardExprs returns every PromQL expression of the Grafana
// dashboard (panel targets and template variables), by panel title.
func dashboardExprs(t *testing.T) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
		Templating struct {
			List []struct {
				Name, Definition string
			}
		}
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	out := map[string][]string{}
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			out[p.Title] = append(out[p.Title], tg.Expr)
		}
		if len(p.Targets) == 0 {
			t.Errorf("dashboard panel %q has no query", p.Title)
		}
	}
	for _, v := range d.Templating.List {
		if v.Definition != "" {
			out["variable "+v.Name] = append(out["variable "+v.Name], v.Definition)
		}
	}
	if len(out) < 10 {
		t.Fatalf("dashboard has %d panels with queries; want the ten of the README", len(out))
	}
	return out
}

// ruleExprs returns the alert rules' expressions by alert name, and the
// series the rules' unit tests feed them.
func ruleExprs(t *testing.T) (rules map[string]string, series []string) {
	t.Helper()
	var f struct {
		Groups []struct {
			Rules []struct{ Alert, Expr string }
		}
	}
	b, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatalf("%s: %v", alertsFile, err)
	}
	rules = map[string]string{}
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			rules[r.Alert] = r.Expr
		}
	}
	var tf struct {
		Tests []struct {
			InputSeries []struct{ Series string } `yaml:"input_series"`
		}
	}
	if b, err = os.ReadFile(alertsTest); err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &tf); err != nil {
		t.Fatalf("%s: %v", alertsTest, err)
	}
	for _, tt := range tf.Tests {
		for _, s := range tt.InputSeries {
			series = append(series, s.Series)
		}
	}
	return rules, series
}

var metricName = regexp.MustCompile(`\bdeferpush_[a-z_]+\b`)

// promQL fills the Grafana variables of a dashboard query for a plain
// Prometheus query.
func promQL(expr string) string {
	return strings.NewReplacer(`$__rate_interval`, "1m", `$job`, ".*").Replace(expr)
}

// TestMonitoringAgainstPrometheus runs the deferpush binary on a real
// redis-server, makes it store and push a message, and scrapes it with a
// real Prometheus loaded with the alert rules: every metric name the
// dashboard and the rules use is one deferpush serves, every deferpush
// metric has a dashboard panel, every dashboard query parses and returns
// data, and Prometheus evaluates every rule without an error.
func TestMonitoringAgainstPrometheus(t *testing.T) {
	r := harness.Redis(t)
	cfg := filepath.Join(t.TempDir(), "deferpush.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("hooks:\n  token: %s\nadmin:\n  token: %s\n", consoleHooksToken, consoleAdminToken)), 0o600); err != nil {
		t.Fatal(err)
	}
	dp := startDeferpush(t, nil, "--config", cfg, "--redis", r.URL())
	s := &consoleStack{dp: dp, base: "http://" + dp.AdminAddr}

	// One message stored and pushed, so that the push metrics have their
	// labelled series and the histograms an observation.
	const bob = "sip:bob@example.com"
	s.storeMessage(t, bob, "<sip:alice@example.com>", "monitoring-1@example.com", nil, "to be pushed")
	c := newClient(t, bob, imclient.Config{Proxy: dp.SIPAddr})
	reg, _ := json.Marshal(map[string]any{"aor": bob, "contact": c.Contact(), "expires": 300})
	req, _ := http.NewRequest(http.MethodPost, "http://"+dp.HooksAddr+"/hooks/kamailio/registered", strings.NewReader(string(reg)))
	req.Header.Set("X-Deferpush-Token", consoleHooksToken)
	req.Header.Set("Content-Type", "application/json")
	if res, err := http.DefaultClient.Do(req); err != nil || res.StatusCode != 200 {
		t.Fatalf("registered hook: %v %v", res, err)
	}
	waitClient(t, c, "the pushed message", func(st imclient.Stats) bool { return st.Received == 1 })
	waitFor(t, 10*time.Second, "the push's report", func() bool {
		return strings.Contains(scrape(t, s), `deferpush_push_sessions_total{mode="msrp",outcome="delivered"} 1`)
	})

	served := map[string]bool{}
	families := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(scrape(t, s)))
	for sc.Scan() {
		line := sc.Text()
		if f, ok := strings.CutPrefix(line, "# TYPE "); ok {
			families[strings.Fields(f)[0]] = true
		}
		if line == "" || line[0] == '#' {
			continue
		}
		served[strings.FieldsFunc(line, func(r rune) bool { return r == '{' || r == ' ' })[0]] = true
	}

	dash := dashboardExprs(t)
	rules, series := ruleExprs(t)
	used := map[string]string{} // metric -> where
	for title, exprs := range dash {
		for _, e := range exprs {
			for _, m := range metricName.FindAllString(e, -1) {
				used[m] = "dashboard panel " + title
			}
		}
	}
	for name, e := range rules {
		for _, m := range metricName.FindAllString(e, -1) {
			used[m] = "alert " + name
		}
	}
	for _, s := range series {
		for _, m := range metricName.FindAllString(s, -1) {
			used[m] = "alerts_test.yml series " + s
		}
	}
	if len(used) < 10 {
		t.Fatalf("found %d metric names in the dashboard and rules: %v", len(used), used)
	}
	for m, where := range used {
		if !served[m] {
			t.Errorf("%s uses %s, which deferpush does not serve", where, m)
		}
	}
	for f := range families {
		if !strings.HasPrefix(f, "deferpush_") {
			continue
		}
		found := false
		for m := range used {
			if m == f || strings.HasPrefix(m, f+"_") {
				found = true
			}
		}
		if !found {
			t.Errorf("deferpush serves %s, and no dashboard panel or alert uses it", f)
		}
	}

	abs, err := filepath.Abs(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	prom := harness.Prometheus(t, fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [%q]
scrape_configs:
  - job_name: deferpush
    authorization: {credentials: %q}
    static_configs: [{targets: [%q]}]
`, abs, consoleAdminToken, dp.AdminAddr))
	// Three scrapes, so that rate() has points.
	waitFor(t, 30*time.Second, "three scrapes of deferpush", func() bool {
		res := promQuery(t, prom, `count_over_time(deferpush_store_up{job="deferpush"}[1m])`)
		if len(res) != 1 {
			return false
		}
		n, err := strconv.Atoi(res[0].Value)
		return err == nil && n >= 3
	})
	for title, exprs := range dash {
		for _, e := range exprs {
			if strings.HasPrefix(e, "label_values(") {
				continue // a Grafana function, not PromQL; its metric is checked above
			}
			if res := promQuery(t, prom, promQL(e)); len(res) == 0 {
				t.Errorf("dashboard panel %q: %s returns nothing from a live deferpush", title, promQL(e))
			}
		}
	}
	waitFor(t, 10*time.Second, "every rule evaluated", func() bool {
		health := promRules(t, prom)
		if len(health) != len(rules) {
			return false
		}
		for name := range rules {
			if health[name] != "ok" {
				return false
			}
		}
		return true
	})
}

// scrape returns deferpush's /metrics.
func scrape(t *testing.T, s *consoleStack) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, s.base+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+consoleAdminToken)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 {
		t.Fatalf("GET /metrics = %d %s", res.StatusCode, b)
	}
	return string(b)
}

// promSample is one series of an instant query's answer.
type promSample struct {
	Metric map[string]string
	Value  string // as Prometheus formats it: "3", "0.25", "NaN"
}

// promQuery runs an instant query; a query Prometheus refuses fails the
// test.
func promQuery(t *testing.T, p *harness.PrometheusProc, q string) []promSample {
	t.Helper()
	res, err := http.Get(p.URL + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var ans struct {
		Status string
		Data   struct {
			Result []struct {
				Metric map[string]string
				Value  [2]any
			}
		}
	}
	b, _ := io.ReadAll(res.Body)
	if err := json.Unmarshal(b, &ans); err != nil || ans.Status != "success" {
		t.Fatalf("query %s: %d %s", q, res.StatusCode, b)
	}
	out := make([]promSample, 0, len(ans.Data.Result))
	for _, r := range ans.Data.Result {
		v, _ := r.Value[1].(string)
		out = append(out, promSample{Metric: r.Metric, Value: v})
	}
	return out
}

// promRules returns the health of each alert rule Prometheus loaded.
func promRules(t *testing.T, p *harness.PrometheusProc) map[string]string {
	t.Helper()
	res, err := http.Get(p.URL + "/api/v1/rules")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var ans struct {
		Data struct {
			Groups []struct {
				Rules []struct{ Name, Health, LastError string }
			}
		}
	}
	if err := json.NewDecoder(res.Body).Decode(&ans); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, g := range ans.Data.Groups {
		for _, r := range g.Rules {
			out[r.Name] = r.Health
			if r.LastError != "" {
				t.Errorf("alert %s: %s", r.Name, r.LastError)
			}
		}
	}
	return out
}
