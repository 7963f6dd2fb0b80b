package plugin

import (
	"errors"
	"strings"
	"testing"
)

func TestParseAOR(t *testing.T) {
	tests := []struct {
		in   string
		want string // "" means ErrBadAOR
	}{
		{"sip:bob@example.com", "sip:bob@example.com"},
		{"  sip:bob@example.com  ", "sip:bob@example.com"},
		{"SIP:Bob@EXAMPLE.com", "sip:bob@example.com"},
		{"sip:B%2fOB@x.com", "sip:b%2Fob@x.com"},
		{"sip:bob@example.com:5060", "sip:bob@example.com:5060"},
		{"sip:bob@example.com;transport=tcp;lr", "sip:bob@example.com"},
		{"sip:bob@example.com?Subject=hi", "sip:bob@example.com"},
		{"sip:bob:secret@example.com", "sip:bob@example.com"},
		{"<sip:bob@example.com>;tag=x", "sip:bob@example.com"},
		{`"Bob" <sip:bob@example.com>`, "sip:bob@example.com"},
		{`"Smith, <Bob>" <sip:bob@example.com;user=phone>;tag=1`, "sip:bob@example.com"},
		{`Bob <sip:bob@example.com>`, "sip:bob@example.com"},
		{"sips:bob@Example.com", "sips:bob@example.com"},
		{"sip:%62ob@example.com", "sip:bob@example.com"},
		{"sip:b%2fob@example.com", "sip:b%2Fob@example.com"},
		{"sip:+4930123;npdi@example.com", "sip:+4930123;npdi@example.com"},
		{"sip:bob@[2001:DB8::1]", "sip:bob@[2001:db8::1]"},
		{"sip:bob@[::1]:5070", "sip:bob@[::1]:5070"},
		{"sip:bob@10.0.0.1:5080;transport=udp", "sip:bob@10.0.0.1:5080"},
		{"tel:+1-201-555-0123", "tel:+12015550123"},
		{"tel:7042;phone-context=Example.COM", "tel:7042;phone-context=example.com"},
		{"tel:7042;phone-context=+1-201", "tel:7042;phone-context=+1201"},
		{"tel:+1-201-555-0123;ext=1-2;foo=bar", "tel:+12015550123;ext=12"},
		{"tel:+1-201-555-0123;phone-context=x.com;ext=1", "tel:+12015550123;ext=1;phone-context=x.com"},
		{"tel:+12015550123;isub=abc", "tel:+12015550123;isub=abc"},

		{"", ""},
		{"bob@example.com", ""},
		{"http://example.com", ""},
		{"sip:example.com", ""},
		{"sip:@example.com", ""},
		{"sip:bob@", ""},
		{"sip:bob@:5060", ""},
		{"sip:bob@example.com:0", ""},
		{"sip:bob@example.com:65536", ""},
		{"sip:bob@example.com:x", ""},
		{"sip:bob@exa_mple.com", ""},
		{"sip:b{o}b@example.com", ""},
		{"sip:b%zzb@example.com", ""},
		{"sip:bob@[::1", ""},
		{"sip:bob@[]", ""},
		{"sip:bob@[::1]x", ""},
		{`"Bob <sip:bob@example.com>`, ""},
		{`"Bob" sip:bob@example.com`, ""},
		{"<sip:bob@example.com", ""},
		{"sip:bob @example.com", ""},
		{"tel:", ""},
		{"tel:+", ""},
		{"tel:12a4", ""},
		{"tel:+123;ext=", ""},
		{"tel:+123;ext=x", ""},
		{"tel:123;phone-context=a{b}", ""},
		{"sip:" + strings.Repeat("u", 600) + "@example.com", ""},
		{strings.Repeat("x", 10000), ""},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseAOR(tt.in)
			if tt.want == "" {
				if !errors.Is(err, ErrBadAOR) {
					t.Fatalf("ParseAOR(%q) = %q, %v; want ErrBadAOR", tt.in, got, err)
				}
				return
			}
			if err != nil || got.String() != tt.want {
				t.Fatalf("ParseAOR(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
			again, err := ParseAOR(got.String())
			if err != nil || again != got {
				t.Errorf("not idempotent: ParseAOR(%q) = %q, %v", got, again, err)
			}
		})
	}
}

func TestAORParts(t *testing.T) {
	tests := []struct {
		aor                string
		scheme, user, host string
	}{
		{"sip:bob@example.com:5060", "sip", "bob", "example.com:5060"},
		{"sips:alice@[::1]", "sips", "alice", "[::1]"},
		{"tel:+123", "tel", "+123", ""},
	}
	for _, tt := range tests {
		a := MustParseAOR(tt.aor)
		if s, u, h := a.Scheme(), a.User(), a.Host(); s != tt.scheme || u != tt.user || h != tt.host {
			t.Errorf("%s: got %q %q %q, want %q %q %q", tt.aor, s, u, h, tt.scheme, tt.user, tt.host)
		}
	}
}

func FuzzParseAOR(f *testing.F) {
	for _, s := range []string{"sip:bob@example.com", `"B" <sips:b@[::1]:5>;tag=1`, "tel:+1-2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseAOR(s)
		if err != nil {
			return
		}
		b, err := ParseAOR(a.String())
		if err != nil || a != b {
			t.Fatalf("ParseAOR(%q) = %q, then %q, %v", s, a, b, err)
		}
	})
}

// TestAORRules: a case-sensitive registrar keeps the user part's case;
// the default folds it (Kamailio's and OpenSIPS's usrloc); reading an AOR
// back from text keeps what the rules made of it.
func TestAORRules(t *testing.T) {
	for _, tt := range []struct {
		rules AORRules
		in    string
		want  string
	}{
		{AORRules{}, "sip:Carol@Example.com", "sip:carol@example.com"},
		{AORRules{CaseSensitiveUser: true}, "sip:Carol@Example.com", "sip:Carol@example.com"},
		{AORRules{}, "sips:%43arol%2f@x", "sips:carol%2F@x"},
		{AORRules{}, "tel:+1;phone-context=X.ORG", "tel:+1;phone-context=x.org"},
	} {
		got, err := tt.rules.Parse(tt.in)
		if err != nil || got.String() != tt.want {
			t.Errorf("%+v.Parse(%q) = %q, %v; want %q", tt.rules, tt.in, got, err, tt.want)
		}
		var back AOR
		if err := back.UnmarshalText([]byte(got.String())); err != nil || back != got {
			t.Errorf("UnmarshalText(%q) = %q, %v", got, back, err)
		}
	}
	if a, b := MustParseAOR("sip:Carol@x"), MustParseAOR("sip:carol@x"); a != b {
		t.Errorf("%q and %q differ by default", a, b)
	}
}
