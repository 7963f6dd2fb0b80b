package test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/deferpush/deferpush"

// goPackage is the part of `go list -json` these rules read.
type goPackage struct {
	ImportPath   string
	Doc          string
	Imports      []string
	TestImports  []string // of the package's _test.go files in the package
	XTestImports []string // of its package x_test files
	Standard     bool
}

func listPackages(t *testing.T) []goPackage {
	t.Helper()
	out, err := exec.Command("go", "list", "-json", module+"/...").Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("go list: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	var pkgs []goPackage
	for {
		var p goPackage
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) < 5 {
		t.Fatalf("go list found %d packages; the rules below would check nothing", len(pkgs))
	}
	return pkgs
}

// importRule says which of the module's packages (by path relative to the
// module) a package may import, and whether it may import anything outside
// the standard library. Its tests may import the same, the package itself
// (an x_test package), and what testOwn and testThirdParty add.
type importRule struct {
	own         []string // allowed packages of ours; "x/..." allows a subtree
	thirdParty  []string // allowed module path prefixes outside the module
	anyExternal bool

	testOwn        []string // more packages of ours for the tests
	testThirdParty []string // more module path prefixes for the tests
}

// goCmp is what every test diffs with (STYLE.md); the packages whose tests
// use it list it.
const goCmp = "github.com/google/go-cmp"

// rules are DESIGN.md's dependency directions. The first rule whose key is a
// prefix of the package path (longest first) applies.
//
// The tests keep the same directions plus what each needs (testOwn,
// testThirdParty): the core's tests (plugin, api) run on plugin/plugintest's
// in-memory store, never on store; the store's tests start a real
// redis-server with test/harness; store/storetest is imported by the tests
// of the stores it checks. No package's tests import the cmd or test trees
// from outside them (testImportProblem).
var rules = map[string]importRule{
	"plugin": {own: []string{"plugin/abnf"}, thirdParty: []string{"github.com/oklog/ulid"},
		testOwn: []string{"plugin/plugintest"}, testThirdParty: []string{goCmp}},
	"plugin/abnf":       {},
	"plugin/guard":      {},
	"plugin/plugintest": {own: []string{"plugin"}, testOwn: []string{"store/storetest"}},
	"plugin/msrp":       {own: []string{"plugin/abnf", "plugin/guard"}, testOwn: []string{"plugin/guard/guardtest"}, testThirdParty: []string{goCmp}},
	"plugin/encap":      {own: []string{"plugin/abnf", "plugin/msrp"}, testThirdParty: []string{goCmp}},
	"plugin/sdp":        {own: []string{"plugin/msrp"}, thirdParty: []string{"github.com/pion/sdp"}, testThirdParty: []string{goCmp}},
	"plugin/push": {own: []string{"plugin", "plugin/msrp", "plugin/encap", "plugin/sdp"}, thirdParty: []string{"github.com/emiago/sipgo"},
		testThirdParty: []string{goCmp}},
	// The proxies' hook tests hand the stored raw SIP on to
	// ingress.Deferred, as the hook does.
	"adapters": {own: []string{"plugin", "plugin/abnf", "plugin/guard", "plugin/msrp", "plugin/encap", "plugin/sdp", "adapters/hookjson"}, thirdParty: []string{"github.com/emiago/sipgo"},
		testOwn: []string{"adapters/ingress", "plugin/guard/guardtest"}, testThirdParty: []string{goCmp}},
	// The store's tests compare what the library's dp_store writes for a
	// proxy with what the hook stores (ingress.Deferred), and the pages it
	// answers a proxy with what the Go pager sends (encap.PageOf).
	"store": {own: []string{"plugin", "store/..."}, thirdParty: []string{"github.com/redis/go-redis", "github.com/alicebob/miniredis"},
		testOwn: []string{"test/harness", "adapters/ingress", "plugin/encap"}, testThirdParty: []string{goCmp}},
	// hertz's ut (in-process requests) comes with hertz; kin-openapi
	// checks the served OpenAPI document.
	"api": {own: []string{"plugin", "plugin/guard", "adapters/...", "api/console"}, thirdParty: []string{"github.com/cloudwego/hertz", "github.com/prometheus/client_golang"},
		testOwn: []string{"plugin/plugintest", "plugin/guard/guardtest"}, testThirdParty: []string{goCmp, "github.com/getkin/kin-openapi"}},
	"api/console":     {},
	"cmd":             {anyExternal: true, own: []string{"..."}},
	"test":            {anyExternal: true, own: []string{"..."}},
	"store/storetest": {own: []string{"plugin"}, thirdParty: []string{goCmp}},
}

func ruleFor(rel string) (string, importRule, bool) {
	best := ""
	for k := range rules {
		if (rel == k || strings.HasPrefix(rel, k+"/")) && len(k) > len(best) {
			best = k
		}
	}
	r, ok := rules[best]
	return best, r, ok
}

// inTree reports whether rel is root or a package below it.
func inTree(rel, root string) bool { return rel == root || strings.HasPrefix(rel, root+"/") }

func allowedOwn(own []string, rel string) bool {
	for _, a := range own {
		switch {
		case a == "...":
			return true
		case strings.HasSuffix(a, "/..."):
			if inTree(rel, strings.TrimSuffix(a, "/...")) {
				return true
			}
		case a == rel:
			return true
		}
	}
	return false
}

func isStandard(imp string) bool {
	first, _, _ := strings.Cut(imp, "/")
	return !strings.Contains(first, ".")
}

// importProblem says why the rule key, r forbids package rel to import
// imp, or returns "".
func importProblem(key string, r importRule, rel, imp string) string {
	switch {
	case imp == module || strings.HasPrefix(imp, module+"/"):
		irel := strings.TrimPrefix(strings.TrimPrefix(imp, module), "/")
		if !allowedOwn(r.own, irel) {
			return fmt.Sprintf("the %q rule does not allow it", key)
		}
	case isStandard(imp), r.anyExternal:
	default:
		for _, tp := range r.thirdParty {
			if imp == tp || strings.HasPrefix(imp, tp+"/") {
				return ""
			}
		}
		return fmt.Sprintf("the %q rule allows only %v outside the standard library", key, r.thirdParty)
	}
	return ""
}

// testImportProblem is importProblem for the package's tests: they may
// also import the package itself and what the rule's test fields add, and
// never the cmd tree (from outside it) or the test tree (from outside it,
// unless testOwn names the package).
func testImportProblem(key string, r importRule, rel, imp string) string {
	if imp == module || strings.HasPrefix(imp, module+"/") {
		irel := strings.TrimPrefix(strings.TrimPrefix(imp, module), "/")
		switch {
		case irel == rel:
			return ""
		case inTree(irel, "cmd") && !inTree(rel, "cmd"):
			return "no package's tests import cmd"
		case inTree(irel, "test") && !inTree(rel, "test") && !slices.Contains(r.testOwn, irel):
			return fmt.Sprintf("the %q rule does not let the tests import the end-to-end tree", key)
		}
	}
	r.own = append(slices.Clone(r.own), r.testOwn...)
	r.thirdParty = append(slices.Clone(r.thirdParty), r.testThirdParty...)
	return importProblem(key, r, rel, imp)
}

// TestImportRules enforces DESIGN.md's dependency direction: plugin and
// plugin/msrp import no other package of ours, the store imports plugin and
// go-redis, and so on. Only cmd chooses implementations. The tests of each
// package keep the same directions (rules).
func TestImportRules(t *testing.T) {
	for _, p := range listPackages(t) {
		rel := strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, module), "/")
		key, r, ok := ruleFor(rel)
		if !ok {
			t.Errorf("%s: no import rule covers this package; add one to rules in %s", p.ImportPath, "test/imports_test.go")
			continue
		}
		for _, imp := range p.Imports {
			if problem := importProblem(key, r, rel, imp); problem != "" {
				t.Errorf("%s imports %s: %s", rel, imp, problem)
			}
		}
		for _, imp := range slices.Concat(p.TestImports, p.XTestImports) {
			if problem := testImportProblem(key, r, rel, imp); problem != "" {
				t.Errorf("the tests of %s import %s: %s", rel, imp, problem)
			}
		}
	}
}

// TestImportRulesRefuse: the rules refuse what they are for, whatever the
// tree holds today.
func TestImportRulesRefuse(t *testing.T) {
	for _, tc := range []struct {
		pkg, imp string
		test     bool
		ok       bool
	}{
		{"plugin", "store", false, false},
		{"plugin", "store", true, false},
		{"plugin", "plugin/plugintest", false, false},
		{"plugin", "plugin/plugintest", true, true},
		{"plugin", "plugin", true, true},
		{"plugin", goCmp + "/cmp", true, true},
		{"plugin", goCmp + "/cmp", false, false},
		{"api", "store", true, false},
		{"api", "plugin/plugintest", true, true},
		{"api", "github.com/getkin/kin-openapi/openapi3", true, true},
		{"api", "github.com/cloudwego/hertz/pkg/common/ut", true, true},
		{"api", "test/harness", true, false},
		{"plugin/plugintest", "store", false, false},
		{"plugin/plugintest", "store/storetest", false, false},
		{"plugin/plugintest", "store/storetest", true, true},
		{"plugin/plugintest", goCmp + "/cmp", false, false},
		{"store", "test/harness", true, true},
		{"store", "test", true, false},
		{"store", "test/harness", false, false},
		{"adapters/kamailio", "adapters/ingress", true, true},
		{"adapters/kamailio", "api", true, false},
		{"cmd/deferpush", "cmd/internal/config", true, true},
		{"cmd/deferpush", "test/harness", true, false},
		{"test", "cmd/deferpush", true, false},
		{"test", "test/harness", true, true},
	} {
		key, r, _ := ruleFor(tc.pkg)
		imp := tc.imp
		if isStandard(imp) { // a path of ours, relative to the module
			imp = module + "/" + imp
		}
		problem := importProblem(key, r, tc.pkg, imp)
		if tc.test {
			problem = testImportProblem(key, r, tc.pkg, imp)
		}
		if got := problem == ""; got != tc.ok {
			t.Errorf("%s (tests: %v) importing %s: allowed = %v (%q), want %v", tc.pkg, tc.test, tc.imp, got, problem, tc.ok)
		}
	}
}

// TestPackageDocs: every package says what it is for.
func TestPackageDocs(t *testing.T) {
	for _, p := range listPackages(t) {
		if strings.TrimSpace(p.Doc) == "" {
			t.Errorf("%s has no package comment", p.ImportPath)
		}
		if path.Base(p.ImportPath) != strings.ToLower(path.Base(p.ImportPath)) {
			t.Errorf("%s: package directories are lower case", p.ImportPath)
		}
	}
}
