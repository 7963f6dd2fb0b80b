package plugin

import (
	"errors"
	"testing"
)

func TestParseAOR(t *testing.T) {
	tests := []struct {
		in   string
		want string // "" means ErrBadAOR
	}{
		{"sip:bob@example.com", "sip:bob@example.com"},
		{"  sip:bob@example.com  ", "sip:bob@example.com"},
		{"SIP:Bob@EXAMPLE.com", "sip:Bob@example.com"},
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
		{"tel:7042;phone-context=example.com", "tel:7042"},

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
