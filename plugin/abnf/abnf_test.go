package abnf

import "testing"

func TestClosingQuote(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want int
	}{
		{`"Bob" <sip:b@x>`, 4},
		{`"a \" b" x`, 7},
		{`"a \\" x`, 5},
		{`"never closed`, -1},
		{`"trailing \`, -1},
		{`""`, 1},
	} {
		if got := ClosingQuote(tt.in); got != tt.want {
			t.Errorf("ClosingQuote(%q) = %d, want %d", tt.in, got, tt.want)
		}
	}
}

func TestClasses(t *testing.T) {
	for c := 0; c < 256; c++ {
		b := byte(c)
		alnum := b >= '0' && b <= '9' || b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z'
		hex := b >= '0' && b <= '9' || b >= 'a' && b <= 'f' || b >= 'A' && b <= 'F'
		if IsAlnum(b) != alnum || IsHex(b) != hex {
			t.Errorf("%q: IsAlnum %v IsHex %v", b, IsAlnum(b), IsHex(b))
		}
	}
}
