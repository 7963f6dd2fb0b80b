package kamailio_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/deferpush/deferpush/adapters/ingress"
	"github.com/deferpush/deferpush/adapters/kamailio"
	"github.com/deferpush/deferpush/plugin"
)

// FuzzHook feeds one hook body to every decoder of the kamailio hooks, and
// the raw SIP of a message body on to ingress.Deferred, as the hook does: none
// may panic, and every refusal is one the hook maps to 400 (or 513 for a
// header section too large).
func FuzzHook(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.txt")
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		in, _, _ := strings.Cut(string(b), separator)
		f.Add([]byte(in))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		check := func(what string, err error) {
			if err != nil && !errors.Is(err, plugin.ErrInvalid) {
				t.Fatalf("%s: error %v does not wrap plugin.ErrInvalid", what, err)
			}
		}
		_, err := kamailio.DecodeRegistration(body, now, plugin.AORRules{})
		check("registration", err)
		_, err = kamailio.DecodeUnregistration(body, plugin.AORRules{})
		check("unregistration", err)
		m, err := kamailio.DecodeMessage(body)
		check("message", err)
		if err != nil {
			return
		}
		if _, err := ingress.Deferred(m.Raw, m.AOR, now, plugin.AORRules{}); err != nil && !errors.Is(err, plugin.ErrMalformed) && !errors.Is(err, plugin.ErrTooLarge) {
			t.Fatalf("raw SIP: error %v wraps neither plugin.ErrMalformed nor plugin.ErrTooLarge", err)
		}
	})
}
