package console

import (
	"io/fs"
	"regexp"
	"strings"
	"testing"
)

func files(t *testing.T, ext string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := fs.WalkDir(static, "static", func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ext) {
			b, err := fs.ReadFile(static, p)
			if err != nil {
				return err
			}
			out[strings.TrimPrefix(p, "static/")] = string(b)
		}
		return err
	})
	if err != nil || len(out) == 0 {
		t.Fatalf("no %s files: %v", ext, err)
	}
	return out
}

// TestPageNeedsNoInlineCode: the page runs under CSP with no inline
// script or style, so it must have none, and everything it loads exists.
func TestPageNeedsNoInlineCode(t *testing.T) {
	page, ok := Lookup("/")
	if !ok {
		t.Fatal("no page at /")
	}
	html := string(page.Body)
	for _, bad := range []*regexp.Regexp{
		regexp.MustCompile(`<script(?:\s[^>]*)?>\s*[^<\s]`),    // an inline script
		regexp.MustCompile(`(?i)\son[a-z]+\s*=`),               // an event handler attribute
		regexp.MustCompile(`(?i)\sstyle\s*=`),                  // an inline style
		regexp.MustCompile(`(?i)<style`),                       // a style element
		regexp.MustCompile(`(?i)javascript:`),                  // a script URL
		regexp.MustCompile(`(?i)(?:src|href)="(?:https?:)?//`), // anything from elsewhere
	} {
		for _, m := range bad.FindAllString(html, -1) {
			t.Errorf("index.html has %q, which the CSP forbids", m)
		}
	}
	for _, m := range regexp.MustCompile(`<script[^>]*>`).FindAllString(html, -1) {
		if !strings.Contains(m, ` src="`) || !strings.Contains(m, `type="module"`) {
			t.Errorf("index.html has %q: want only module scripts loaded by src", m)
		}
	}
	refs := regexp.MustCompile(`(?:src|href)="(/[^"]*)"`).FindAllStringSubmatch(html, -1)
	if len(refs) < 3 {
		t.Fatalf("index.html loads %d files; want the script, the style sheet and the icon", len(refs))
	}
	for _, r := range refs {
		if _, ok := Lookup(r[1]); !ok {
			t.Errorf("index.html loads %s, which is not served", r[1])
		}
	}
}

// TestScriptsWriteOnlyText: the scripts never turn a string into markup
// or code, their imports exist, and every element id they look up is in
// the page.
func TestScriptsWriteOnlyText(t *testing.T) {
	page, _ := Lookup("/")
	ids := map[string]bool{}
	for _, m := range regexp.MustCompile(`\sid="([^"]+)"`).FindAllStringSubmatch(string(page.Body), -1) {
		ids[m[1]] = true
	}
	forbidden := regexp.MustCompile(`\.innerHTML|\.outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|createContextualFragment|DOMParser|srcdoc`)
	imports := regexp.MustCompile(`from '\./([a-z]+\.js)'`)
	lookups := regexp.MustCompile(`\$\('([a-z0-9-]+)'\)`)
	for name, src := range files(t, ".js") {
		for _, m := range forbidden.FindAllString(src, -1) {
			t.Errorf("%s uses %s: write server data with textContent only", name, m)
		}
		for _, m := range imports.FindAllStringSubmatch(src, -1) {
			if _, ok := Lookup(Prefix + m[1]); !ok {
				t.Errorf("%s imports %s, which is not served", name, m[1])
			}
		}
		for _, m := range lookups.FindAllStringSubmatch(src, -1) {
			if !ids[m[1]] {
				t.Errorf("%s looks up #%s, which index.html does not have", name, m[1])
			}
		}
	}
}

func TestLookup(t *testing.T) {
	for _, tt := range []struct {
		path string
		ok   bool
	}{
		{"/", true}, {"/console/app.js", true}, {"/console/dom.js", true}, {"/console/console.css", true},
		{"/console/", false}, {"/console/../console.go", false}, {"/console/static/app.js", false},
		{"/app.js", false}, {"/console/console.go", false}, {"/console/nope.js", false},
	} {
		if _, ok := Lookup(tt.path); ok != tt.ok {
			t.Errorf("Lookup(%q) found %v, want %v", tt.path, ok, tt.ok)
		}
	}
}
