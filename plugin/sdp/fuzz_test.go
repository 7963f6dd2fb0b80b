package sdp

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse: Parse reads the SDP of a peer's offer or answer, outside
// input. Whatever it accepts, Build writes back, and that parses to the
// same media.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.sdp")
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Parse(b)
		if err != nil || len(m.Path) == 0 {
			return
		}
		out, err := Build(m)
		if err != nil {
			return // e.g. a host name in the last path URI: Build needs an IP
		}
		again, err := Parse(out)
		if err != nil {
			t.Fatalf("Build output does not parse: %v\n%s", err, out)
		}
		if len(again.Path) != len(m.Path) || len(again.AcceptTypes) != len(m.AcceptTypes) {
			t.Fatalf("round trip changed the media: %+v -> %+v", m, again)
		}
	})
}
