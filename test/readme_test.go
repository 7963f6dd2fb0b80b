package test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
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
