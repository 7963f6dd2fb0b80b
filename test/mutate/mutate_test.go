package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestMutationsApply keeps the list of `make mutate` true to the code: each
// mutation still finds its line, once, and changes it; each names tests
// in a package that exists. (make mutate itself runs the tests; it is not
// part of make test.)
func TestMutationsApply(t *testing.T) {
	names := map[string]bool{}
	for _, m := range mutations {
		t.Run(m.Name, func(t *testing.T) {
			if names[m.Name] {
				t.Errorf("two mutations named %q", m.Name)
			}
			names[m.Name] = true
			src, err := os.ReadFile(filepath.Join("..", "..", m.File))
			if err != nil {
				t.Fatal(err)
			}
			got, err := m.apply(src)
			if err != nil {
				t.Fatalf("%s: %v", m.File, err)
			}
			if string(got) == string(src) {
				t.Errorf("%s: the mutation changes nothing", m.File)
			}
			if len(m.Tests) == 0 {
				t.Error("no tests named")
			}
			for _, spec := range m.Tests {
				pkg, _, _ := strings.Cut(spec, ":")
				if fi, err := os.Stat(filepath.Join("..", "..", pkg)); err != nil || !fi.IsDir() || !strings.HasPrefix(pkg, "./") {
					t.Errorf("test spec %q: %q is not a package directory of the module (%v)", spec, pkg, err)
				}
			}
		})
	}
}

func TestApply(t *testing.T) {
	src := []byte("a\nx := 1\nb\nx := 1\n")
	m := mutation{After: "b\n", From: "x := 1\n", To: "x := 2\n"}
	got, err := m.apply(src)
	if err != nil || string(got) != "a\nx := 1\nb\nx := 2\n" {
		t.Errorf("apply after the anchor = %q, %v", got, err)
	}
	if _, err := (mutation{From: "x := 1\n", To: "y"}).apply(src); err == nil {
		t.Error("an ambiguous From applied; want an error asking for After")
	}
	if _, err := (mutation{From: "z", To: "y"}).apply(src); err == nil {
		t.Error("a From that is not there applied")
	}
}
