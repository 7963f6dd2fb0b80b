package test

import (
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"path"
	"strings"
	"testing"
)

const module = "github.com/deferpush/deferpush"

// goPackage is the part of `go list -json` these rules read.
type goPackage struct {
	ImportPath string
	Doc        string
	Imports    []string
	Standard   bool
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
// the standard library.
type importRule struct {
	own         []string // allowed packages of ours; "x/..." allows a subtree
	thirdParty  []string // allowed module path prefixes outside the module
	anyExternal bool
}

// rules are DESIGN.md's dependency directions. The first rule whose key is a
// prefix of the package path (longest first) applies.
var rules = map[string]importRule{
	"plugin":          {own: []string{"plugin/abnf"}, thirdParty: []string{"github.com/oklog/ulid"}},
	"plugin/abnf":     {},
	"plugin/guard":    {},
	"plugin/msrp":     {own: []string{"plugin/abnf", "plugin/guard"}},
	"plugin/encap":    {own: []string{"plugin/abnf", "plugin/msrp"}},
	"plugin/sdp":      {own: []string{"plugin/msrp"}, thirdParty: []string{"github.com/pion/sdp"}},
	"plugin/push":     {own: []string{"plugin", "plugin/msrp", "plugin/encap", "plugin/sdp"}, thirdParty: []string{"github.com/emiago/sipgo"}},
	"adapters":        {own: []string{"plugin", "plugin/guard", "plugin/msrp", "plugin/encap", "plugin/sdp", "adapters/hookjson"}, thirdParty: []string{"github.com/emiago/sipgo"}},
	"store":           {own: []string{"plugin", "store/..."}, thirdParty: []string{"github.com/redis/go-redis", "github.com/alicebob/miniredis"}},
	"api":             {own: []string{"plugin", "plugin/guard", "adapters/..."}, thirdParty: []string{"github.com/cloudwego/hertz", "github.com/prometheus/client_golang"}},
	"cmd":             {anyExternal: true, own: []string{"..."}},
	"test":            {anyExternal: true, own: []string{"..."}},
	"store/storetest": {own: []string{"plugin"}, thirdParty: []string{"github.com/google/go-cmp"}},
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

func allowedOwn(r importRule, rel string) bool {
	for _, a := range r.own {
		switch {
		case a == "...":
			return true
		case strings.HasSuffix(a, "/..."):
			base := strings.TrimSuffix(a, "/...")
			if rel == base || strings.HasPrefix(rel, base+"/") {
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

// TestImportRules enforces DESIGN.md's dependency direction: plugin and
// plugin/msrp import no other package of ours, the store imports plugin and
// go-redis, and so on. Only cmd chooses implementations.
func TestImportRules(t *testing.T) {
	for _, p := range listPackages(t) {
		rel := strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, module), "/")
		key, r, ok := ruleFor(rel)
		if !ok {
			t.Errorf("%s: no import rule covers this package; add one to rules in %s", p.ImportPath, "test/imports_test.go")
			continue
		}
		for _, imp := range p.Imports {
			switch {
			case imp == module || strings.HasPrefix(imp, module+"/"):
				irel := strings.TrimPrefix(strings.TrimPrefix(imp, module), "/")
				if !allowedOwn(r, irel) {
					t.Errorf("%s imports %s: the %q rule does not allow it", rel, irel, key)
				}
			case isStandard(imp):
			case r.anyExternal:
			default:
				ok := false
				for _, tp := range r.thirdParty {
					if imp == tp || strings.HasPrefix(imp, tp+"/") {
						ok = true
					}
				}
				if !ok {
					t.Errorf("%s imports %s: the %q rule allows only %v outside the standard library", rel, imp, key, r.thirdParty)
				}
			}
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
