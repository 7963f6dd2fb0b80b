package opensips_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/deferpush/deferpush/adapters/opensips"
	"github.com/deferpush/deferpush/plugin"
)

var update = flag.Bool("update", false, "rewrite the expected part of the golden files")

// separator splits a golden file into the hook body OpenSIPS posts (as its documentation describes the event parameters) and the
// decoded result (or the error), as Caddy's adapter tests do.
const separator = "\n----------\n"

// TestGolden decodes every testdata/<hook>-*.txt with the decoder of that
// hook (registered, unregistered, expired, message).
func TestGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden files: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			in, want, ok := strings.Cut(string(b), separator)
			if !ok {
				t.Fatalf("no separator line in %s", f)
			}
			got := decode(t, strings.SplitN(filepath.Base(f), "-", 2)[0], []byte(in))
			if *update {
				if err := os.WriteFile(f, []byte(in+separator+got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("decoded (-want +got):\n%s", diff)
			}
		})
	}
}

// decodedRegistration shows a registration with its At, which
// plugin.Registration does not marshal.
type decodedRegistration struct {
	plugin.Registration
	At string `json:"at,omitempty"`
}

func decode(t *testing.T, hook string, body []byte) string {
	var v any
	var err error
	switch hook {
	case "registered":
		r, derr := opensips.DecodeRegistration(body, plugin.AORRules{})
		d := decodedRegistration{Registration: r}
		if !r.At.IsZero() {
			d.At = r.At.Format(time.RFC3339Nano)
		}
		v, err = d, derr
	case "unregistered", "expired":
		u, derr := opensips.DecodeUnregistration(body, plugin.AORRules{})
		m := map[string]string{"aor": u.AOR.String(), "contact": u.Contact}
		if !u.At.IsZero() {
			m["at"] = u.At.Format(time.RFC3339Nano)
		}
		v, err = m, derr
	case "message":
		m, derr := opensips.DecodeMessage(body)
		v, err = map[string]string{"raw": string(m.Raw), "aor": m.AOR, "source": m.Source}, derr
	default:
		t.Fatalf("unknown hook %q in the file name", hook)
	}
	if err != nil {
		v = map[string]string{"error": err.Error()}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}
