package encap_test

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestImports keeps the package on the standard library, so that every
// part of deferpush can use it without pulling anything in; tests may add
// go-cmp.
func TestImports(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, file := range files {
		f, err := parser.ParseFile(fset, file, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			std := !strings.Contains(strings.Split(path, "/")[0], ".")
			test := strings.HasSuffix(file, "_test.go")
			if std || test && (path == "github.com/google/go-cmp/cmp" || path == "github.com/deferpush/deferpush/plugin/encap") {
				continue
			}
			t.Errorf("%s imports %s: only the standard library is allowed", file, path)
		}
	}
}
