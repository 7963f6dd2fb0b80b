package kamailio_test

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/deferpush/deferpush/adapters/ingress"
	"github.com/deferpush/deferpush/adapters/kamailio"
	"github.com/deferpush/deferpush/plugin"
)

// goldenInput is the request half of a golden file.
func goldenInput(b *testing.B, name string) []byte {
	b.Helper()
	raw, err := os.ReadFile("testdata/" + name)
	if err != nil {
		b.Fatal(err)
	}
	in, _, _ := strings.Cut(string(raw), "\n----------\n")
	return []byte(in)
}

// BenchmarkDecodeMessageHook is the hot path of the offline-MESSAGE hook:
// the JSON Kamailio posts, then the raw SIP checked and dated into the
// envelope the store keeps.
func BenchmarkDecodeMessageHook(b *testing.B) {
	body := goldenInput(b, "message-seed.txt")
	now := time.Now()
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		m, err := kamailio.DecodeMessage(body)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := ingress.Deferred(m.Raw, m.AOR, now, plugin.AORRules{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeRegistrationHook is the registration hook's decoding.
func BenchmarkDecodeRegistrationHook(b *testing.B) {
	body := goldenInput(b, "registered-full.txt")
	now := time.Now()
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := kamailio.DecodeRegistration(body, now, plugin.AORRules{}); err != nil {
			b.Fatal(err)
		}
	}
}
