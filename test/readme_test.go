package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/deferpush/deferpush/test/harness"
)

// TestReadmeConfigExample keeps the README's configuration reference true:
// its YAML block is a configuration `deferpush config check` accepts, and
// every flag it lists exists.
func TestReadmeConfigExample(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n## Configuration\n")
	if !ok {
		t.Fatal("README has no Configuration section")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	_, block, ok := strings.Cut(section, "```yaml\n")
	if !ok {
		t.Fatal("the Configuration section has no yaml block")
	}
	block, _, _ = strings.Cut(block, "```")
	path := filepath.Join(t.TempDir(), "readme.yaml")
	if err := os.WriteFile(path, []byte(block), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := runDeferpush(t, "config", "check", path); err != nil {
		t.Errorf("the README's configuration does not check: %v\n%s", err, out)
	}

	help, _ := runDeferpush(t, "serve", "-h")
	for _, m := range regexp.MustCompile("`(--[a-z-]+)`").FindAllStringSubmatch(section, -1) {
		if !strings.Contains(help, "-"+strings.TrimPrefix(m[1], "--")+" ") {
			t.Errorf("README lists the flag %s, which serve -h does not know", m[1])
		}
	}
}

// TestReadmeOpenSIPSRecipe keeps "Attaching OpenSIPS" a tested recipe: its
// m4 line, run as written (the output path aside, plus MPATH for the test
// build), renders a script that opensips -C accepts; every setting it
// gives is one opensips.cfg has and one the end-to-end stack sets; and
// the settings the stack adds are the ones the README names as the
// tests' own.
func TestReadmeOpenSIPSRecipe(t *testing.T) {
	inst := harness.RequireOpenSIPS(t)
	harness.Require(t, "m4", "m4")
	section, block := readmeShBlock(t, "\n## Attaching OpenSIPS\n")
	m4Line, rest, ok := strings.Cut(block, "> /etc/opensips/opensips.cfg\n")
	if !ok || !strings.HasPrefix(m4Line, "m4 -P ") {
		t.Fatalf("the recipe does not start with m4 -P ... > /etc/opensips/opensips.cfg:\n%s", block)
	}
	for _, want := range []string{"opensips -C -f /etc/opensips/opensips.cfg", "opensips -F -f /etc/opensips/opensips.cfg",
		`deferpush serve --outbound-proxy "sip:192.0.2.10:5062;transport=tcp"`} {
		if !strings.Contains(rest, want) {
			t.Errorf("the recipe lacks %q", want)
		}
	}

	cfg, err := os.ReadFile("../adapters/opensips/opensips.cfg")
	if err != nil {
		t.Fatal(err)
	}
	stack := opensipsDefines(&dpStack{dp: &deferpushProc{}}, stackOptions{}, 5062)
	testsOwn := map[string]bool{"MESSAGE_TIMEOUT": true, "HOOK_TIMEOUT": true, "MIN_EXPIRES": true, "TIMER_INTERVAL": true}
	given := map[string]bool{}
	for _, m := range regexp.MustCompile(`-D([A-Z_]+)=`).FindAllStringSubmatch(m4Line, -1) {
		given[m[1]] = true
		if !strings.Contains(string(cfg), "m4_ifdef(`"+m[1]+"'") {
			t.Errorf("the recipe sets %s, which opensips.cfg does not take", m[1])
		}
		if _, ok := stack[m[1]]; !ok && m[1] != "SIP_ADDR" && m[1] != "SIP_PORT" {
			t.Errorf("the recipe sets %s, which the tests' stack does not", m[1])
		}
	}
	for name := range stack {
		if !given[name] && !testsOwn[name] {
			t.Errorf("the tests set %s, which the recipe does not", name)
		}
		if testsOwn[name] && !strings.Contains(section, "-D"+name+"=") {
			t.Errorf("the README does not name the tests' own setting %s", name)
		}
	}

	out := filepath.Join(t.TempDir(), "opensips.cfg")
	line := m4Line
	if inst.ModulesDir != "" {
		line = strings.Replace(line, "m4 -P ", "m4 -P -DMPATH='\""+inst.ModulesDir+"/\"' ", 1)
	}
	cmd := exec.Command("bash", "-c", line+"> "+out)
	cmd.Dir = ".."
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the recipe's m4 line: %v\n%s", err, b)
	}
	if b, err := harness.CheckOpenSIPSConfig(t, out); err != nil {
		t.Fatalf("opensips -C refused the script the recipe renders: %v\n%s", err, b)
	}
	rendered, _ := os.ReadFile(out)
	for _, want := range []string{"socket=tcp:192.0.2.10:5062", `alias="example.com"`, `"X-Deferpush-Token: " + "<hooks.token>"`,
		`"http://192.0.2.20:8710" + "/hooks/opensips/message"`} {
		if !strings.Contains(string(rendered), want) {
			t.Errorf("the rendered script lacks %q", want)
		}
	}
}

// TestReadmeOpenSIPSRedisRecipe runs the m4 line of the README's
// OpenSIPS Redis mode as written (its modules folder added) and has
// OpenSIPS check the script: cachedb_redis pointed at REDIS_ADDR, and the
// settings the tests' Redis-mode stack gives are the ones it gives.
func TestReadmeOpenSIPSRedisRecipe(t *testing.T) {
	inst := harness.RequireOpenSIPS(t)
	harness.Require(t, "m4", "m4")
	section, block := readmeShBlock(t, "\n### OpenSIPS talking to Redis directly (`REDIS_DIRECT`)\n")
	m4Line, rest, ok := strings.Cut(block, "> /etc/opensips/opensips.cfg\n")
	if !ok || !strings.HasPrefix(m4Line, "m4 -P -DREDIS_DIRECT=1 ") {
		t.Fatalf("the recipe does not start with m4 -P -DREDIS_DIRECT=1 ... > /etc/opensips/opensips.cfg:\n%s", block)
	}
	if !strings.Contains(rest, "deferpush serve --redis redis://192.0.2.30:6379/0 ") {
		t.Errorf("the recipe does not start deferpush on the Redis it gives OpenSIPS:\n%s", rest)
	}
	given := map[string]bool{}
	for _, m := range regexp.MustCompile(`-D([A-Z_]+)=`).FindAllStringSubmatch(m4Line, -1) {
		given[m[1]] = true
	}
	// The stack's own: timeouts that take seconds, and the hooks URL,
	// which this mode does not use.
	testsOwn := map[string]bool{"MESSAGE_TIMEOUT": true, "HOOK_TIMEOUT": true, "MIN_EXPIRES": true, "TIMER_INTERVAL": true,
		"REDIS_TIMEOUT": true, "DP_HOOKS": true}
	for name := range opensipsDefines(&dpStack{dp: &deferpushProc{}}, stackOptions{}, 5062) {
		if !given[name] && !testsOwn[name] {
			t.Errorf("the tests set %s, which the recipe does not", name)
		}
	}
	if !strings.Contains(section, "`REDIS_TIMEOUT`") {
		t.Error("the README does not name REDIS_TIMEOUT, which the tests set")
	}

	out := filepath.Join(t.TempDir(), "opensips.cfg")
	line := m4Line
	if inst.ModulesDir != "" {
		line = strings.Replace(line, "m4 -P ", "m4 -P -DMPATH='\""+inst.ModulesDir+"/\"' ", 1)
	}
	cmd := exec.Command("bash", "-c", line+"> "+out)
	cmd.Dir = ".."
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the recipe's m4 line: %v\n%s", err, b)
	}
	if b, err := harness.CheckOpenSIPSConfig(t, out); err != nil {
		t.Fatalf("opensips -C refused the script the recipe renders: %v\n%s", err, b)
	}
	rendered, _ := os.ReadFile(out)
	for _, want := range []string{`"redis:dp://192.0.2.30:6379/"`, `loadmodule "cachedb_redis.so"`, "FCALL dp_store 0 "} {
		if !strings.Contains(string(rendered), want) {
			t.Errorf("the rendered script lacks %q", want)
		}
	}
}

// readmeShBlock returns the README section whose heading line is heading
// (with its newlines), up to the next "## " heading, and its first sh
// code block.
func readmeShBlock(t *testing.T, heading string) (section, block string) {
	t.Helper()
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), heading)
	if !ok {
		t.Fatalf("README has no section %q", strings.TrimSpace(heading))
	}
	section, _, _ = strings.Cut(section, "\n## ")
	_, block, ok = strings.Cut(section, "```sh\n")
	if !ok {
		t.Fatalf("README section %q has no sh block", strings.TrimSpace(heading))
	}
	block, _, _ = strings.Cut(block, "```")
	return section, block
}
