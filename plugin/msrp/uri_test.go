package msrp

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseURI(t *testing.T) {
	tests := []struct {
		in      string
		want    URI
		wantErr bool
	}{
		{"msrp://biloxi.example.com:12763/kjhd37s2s20w2a;tcp", URI{Host: "biloxi.example.com", Port: 12763, SessionID: "kjhd37s2s20w2a", Transport: "tcp"}, false},
		{"msrps://bob@bob.example.com:8888/9di4eae923wzd;tcp", URI{Secure: true, User: "bob", Host: "bob.example.com", Port: 8888, SessionID: "9di4eae923wzd", Transport: "tcp"}, false},
		{"msrp://relay.example.net;tcp", URI{Host: "relay.example.net", Transport: "tcp"}, false},
		{"msrp://[2001:db8::1]:2855/a+b=c/d;tcp;foo=bar", URI{Host: "2001:db8::1", Port: 2855, SessionID: "a+b=c/d", Transport: "tcp", Params: []string{"foo=bar"}}, false},
		{"MSRP://192.0.2.1:7/s1;TCP", URI{Host: "192.0.2.1", Port: 7, SessionID: "s1", Transport: "TCP"}, false},
		{"http://example.com/x;tcp", URI{}, true},
		{"msrp://example.com/x", URI{}, true},
		{"msrp://example.com:0/x;tcp", URI{}, true},
		{"msrp://example.com:70000/x;tcp", URI{}, true},
		{"msrp://example.com:/x;tcp", URI{}, true},
		{"msrp:///x;tcp", URI{}, true},
		{"msrp://example.com/;tcp", URI{}, true},
		{"msrp://example.com/a b;tcp", URI{}, true},
		{"msrp://[::1/x;tcp", URI{}, true},
		{"msrp://exa_mple.com/x;tcp", URI{}, true},
		{"msrp://example.com/x;", URI{}, true},
		{"msrp://example.com/x;tcp;", URI{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseURI(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			if err != nil {
				return
			}
			again, err := ParseURI(got.String())
			if err != nil || !cmp.Equal(again, got) {
				t.Errorf("String() = %q does not parse back: %v", got.String(), err)
			}
		})
	}
}

func TestURIEqual(t *testing.T) {
	tests := []struct {
		a, b string
		want bool
	}{
		{"msrp://a.example.com:2855/s1;tcp", "MSRP://A.EXAMPLE.COM:2855/s1;TCP", true},
		{"msrp://a.example.com/s1;tcp", "msrp://a.example.com:2855/s1;tcp", true},
		{"msrp://user@a.example.com:7/s1;tcp", "msrp://a.example.com:7/s1;tcp;x=y", true},
		{"msrp://[2001:db8::1]:7/s1;tcp", "msrp://[2001:0db8:0::1]:7/s1;tcp", true},
		{"msrp://a.example.com:7/s1;tcp", "msrp://a.example.com:7/S1;tcp", false},
		{"msrp://a.example.com:7/s1;tcp", "msrps://a.example.com:7/s1;tcp", false},
		{"msrp://a.example.com:7/s1;tcp", "msrp://a.example.com:8/s1;tcp", false},
		{"msrp://a.example.com:7/s1;tcp", "msrp://b.example.com:7/s1;tcp", false},
		{"msrp://a.example.com:7/s1;tcp", "msrp://a.example.com:7/s1;sctp", false},
	}
	for _, tt := range tests {
		t.Run(tt.a+" "+tt.b, func(t *testing.T) {
			a, err := ParseURI(tt.a)
			if err != nil {
				t.Fatal(err)
			}
			b, err := ParseURI(tt.b)
			if err != nil {
				t.Fatal(err)
			}
			if got := a.Equal(b); got != tt.want {
				t.Errorf("Equal = %v, want %v", got, tt.want)
			}
			if got := b.Equal(a); got != tt.want {
				t.Errorf("reverse Equal = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestIDs(t *testing.T) {
	seen := make(map[string]bool)
	for range 1000 {
		id := NewSessionID()
		// 26 base32 characters carry 130 bits; RFC 4975 asks for 80.
		if len(id) != 26 || !IsIdent(id, 4) || seen[id] {
			t.Fatalf("bad or repeated id %q", id)
		}
		seen[id] = true
		if tid := newIdent(); !IsIdent(tid, 4) || seen[tid] {
			t.Fatalf("bad or repeated ident %q", tid)
		}
		seen[newIdent()] = true
	}
}

func TestPath(t *testing.T) {
	in := "msrp://relay.example.net:2855/r1;tcp msrp://b.example.com:7/s2;tcp"
	p, err := ParsePath(in)
	if err != nil {
		t.Fatal(err)
	}
	if len(p) != 2 || FormatPath(p) != in {
		t.Errorf("got %v, formatted %q", p, FormatPath(p))
	}
	for _, bad := range []string{"", " msrp://a/s;tcp", "msrp://a/s;tcp  msrp://b/s;tcp"} {
		if _, err := ParsePath(bad); err == nil {
			t.Errorf("ParsePath(%q) succeeded", bad)
		}
	}
}
