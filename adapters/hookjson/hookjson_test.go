package hookjson

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestInt(t *testing.T) {
	for _, tt := range []struct {
		in      string
		want    Int
		wantErr bool
	}{
		{`{"v":3600}`, Int{true, 3600}, false},
		{`{"v":"3600"}`, Int{true, 3600}, false},
		{`{"v":" -1 "}`, Int{true, -1}, false},
		{`{"v":null}`, Int{}, false},
		{`{"v":""}`, Int{}, false},
		{`{"v":"<null>"}`, Int{}, false},
		{`{}`, Int{}, false},
		{`{"v":"soon"}`, Int{}, true},
		{`{"v":1.5}`, Int{}, true},
		{`{"v":true}`, Int{}, true},
	} {
		var got struct{ V Int }
		err := json.Unmarshal([]byte(tt.in), &got)
		if (err != nil) != tt.wantErr || got.V != tt.want {
			t.Errorf("%s: got %+v, %v; want %+v, error %v", tt.in, got.V, err, tt.want, tt.wantErr)
		}
	}
}

func TestString(t *testing.T) {
	for in, want := range map[String]string{"<null>": "", " <null> ": "", " sip:a@b ": "sip:a@b", "": ""} {
		if got := in.String(); got != want {
			t.Errorf("%q: got %q, want %q", in, got, want)
		}
	}
}

func TestAt(t *testing.T) {
	for _, tt := range []struct {
		in      string
		want    At
		wantErr bool
	}{
		{`{"v":"1765000000.123456"}`, At{true, time.UnixMicro(1765000000123456).UTC()}, false},
		{`{"v":"1765000000.5"}`, At{true, time.UnixMicro(1765000000000005).UTC()}, false}, // $TV(u) unpadded: 5 µs
		{`{"v":"1765000000.000005"}`, At{true, time.UnixMicro(1765000000000005).UTC()}, false},
		{`{"v":"1765000000123456"}`, At{true, time.UnixMicro(1765000000123456).UTC()}, false},
		{`{"v":1765000000123456}`, At{true, time.UnixMicro(1765000000123456).UTC()}, false},
		{`{"v":1765000000.25}`, At{true, time.UnixMicro(1765000000000025).UTC()}, false},
		{`{"v":null}`, At{}, false},
		{`{"v":""}`, At{}, false},
		{`{"v":"<null>"}`, At{}, false},
		{`{}`, At{}, false},
		{`{"v":"1765000000.1234567"}`, At{}, true}, // more than six digits of µs
		{`{"v":"1765000000."}`, At{}, true},
		{`{"v":".5"}`, At{}, true},
		{`{"v":"-1"}`, At{}, true},
		{`{"v":"1e6"}`, At{}, true},
		{`{"v":"999999999999999999"}`, At{}, true}, // past the year 9999
		{`{"v":"253402300800.0"}`, At{}, true},
		{`{"v":"soon"}`, At{}, true},
		{`{"v":true}`, At{}, true},
	} {
		var got struct{ V At }
		err := json.Unmarshal([]byte(tt.in), &got)
		if (err != nil) != tt.wantErr || got.V != tt.want {
			t.Errorf("%s: got %+v, %v; want %+v, error %v", tt.in, got.V, err, tt.want, tt.wantErr)
		}
	}
}

// TestSIPURI: a contact is a sip: or sips: URI with a host and a port in
// range, and no control character; what the push could not send to, or
// would send a header line more to, is refused.
func TestSIPURI(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want string // part of the error; "" for none
	}{
		{"sip:user2@192.0.2.7:5071;transport=tcp", ""},
		{"sip:192.0.2.7", ""},
		{"SIP:user2@Host-1.Example.COM", ""},
		{"sips:user2@[2001:db8::7]:5061;ob", ""},
		{"sip:user2@[::1]", ""},
		{"sip:alice;day=tuesday@example.com:65535", ""},
		{"sip:al?ce=1@example.com", ""},
		{"sip:alice;day=tuesday@example.com:65535?Subject=x", "headers component"},
		{"sip:zed2@127.0.0.1:9;transport=tcp?Route=%3Csip:evil.example%3E&X-Injected=1", "headers component"},
		{"sip:a@b:1", ""},
		{"garbage", "not a SIP URI"},
		{"sip:[::1", "not a SIP URI"},
		{"sip:x@127.0.0.1:99999;transport=tcp", `port "99999"`},
		{"sip:x@127.0.0.1:0", `port "0"`},
		{"sip:x@127.0.0.1:", "not a SIP URI"},
		{"sip:x@127.0.0.1:+5060", `port "+5060"`},
		{"sip:x@[::1]:70000", `port "70000"`},
		{"sip:x@[::1]x", "junk"},
		{"sip:x@[192.0.2.1]", "bad IPv6 reference"},
		{"sip:x@[fe80::1%eth0]", "bad IPv6 reference"},
		{"sip:x@:5060", "no host"},
		{"sip:x@ex ample.com", "a SIP URI is ASCII without blanks"},
		{"sip:x@ex_ample.com", "not allowed in the host"},
		{"sip:x@exampl\xc3\xa9.com", "octet 0xc3 at offset 12"},
		{"sip:b\xc3\xb8b@127.0.0.1:5999", "octet 0xc3 at offset 5"},
		{"sip:bob@127.0.0.1:5999;x=\xc3\xa9", "octet 0xc3"},
		{"sip:b%C3%B8b@127.0.0.1:5999", ""},
		{"tel:+4930123", "scheme"},
		{"http://example.com/", "scheme"},
		{"sip:inj@127.0.0.1:26999;transport=tcp\r\nX-Evil: yes", "control character 0x0d"},
		{"sip:inj@127.0.0.1\n", "control character 0x0a"},
		{"sip:inj@127.0.0.1;x=\x00", "control character 0x00"},
		{"sip:inj@127.0.0.1;x=\t", "control character 0x09"},
		{"sip:inj@127.0.0.1;x=\x7f", "control character 0x7f"},
	} {
		err := SIPURI(tt.in)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("SIPURI(%q) = %v, want nil", tt.in, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("SIPURI(%q) = %v, want an error saying %q", tt.in, err, tt.want)
		}
	}
}

// TestPath: every element of a registration's Path must be a SIP URI;
// the error names the element.
func TestPath(t *testing.T) {
	if err := Path([]string{"sip:edge1.example.com;lr", "sips:[2001:db8::1]:5061;lr"}); err != nil {
		t.Errorf("good Path: %v", err)
	}
	if err := Path([]string{"garbage", "sip:127.0.0.1:5997;transport=tcp;lr"}); err == nil || !strings.Contains(err.Error(), `element 1 ("garbage")`) {
		t.Errorf("Path with garbage first: %v", err)
	}
	if err := Path([]string{"sip:127.0.0.1:5997;lr", "http://x/"}); err == nil || !strings.Contains(err.Error(), "element 2") {
		t.Errorf("Path with an HTTP URI second: %v", err)
	}
}

func TestText(t *testing.T) {
	for in, want := range map[string]bool{
		"": true, "Grandstream GXP2170 1.0.11.3": true, `"<urn:uuid:f81d4fae>"`: true, "Téléphone ✓": true,
		"a\r\nb": false, "a\x00": false, "\x1fa": false, "a\x7f": false, "a\tb": false,
	} {
		if got := Text(in) == nil; got != want {
			t.Errorf("Text(%q) = %v, want ok %v", in, Text(in), want)
		}
	}
}

func TestDuplicateKey(t *testing.T) {
	many := `{`
	for i := range 40 {
		many += `"k` + strconv.Itoa(i) + `":1,`
	}
	tests := []struct {
		in   string
		want string
		dup  bool
	}{
		{`{"a":1,"b":2}`, "", false},
		{`{"a":1,"a":2}`, "a", true},
		{`{"a":{"b":1},"b":{"b":2}}`, "", false},
		{`{"a":{"b":1,"b":2}}`, "b", true},
		{`[{"a":1},{"a":2}]`, "", false},
		{`{"a":"\"a\"","b":"a"}`, "", false},
		{`{"a\u0062":1,"ab":2}`, "ab", true},
		{`{"x":[1,"x",{"x":1}],"y":1}`, "", false},
		{`{"x":[1,{"y":1}],"x":1}`, "x", true},
		{`{"a":{"b":1,"c":{"d":1}},"e":1,"a":2}`, "a", true},
		{`{"a":{"b":1},"c":{"b":1,"d":{"b":1}},"e":{"b":1}}`, "", false},
		{many + `"k7":2}`, "k7", true},
		{many + `"k40":2}`, "", false},
		{`{"aor":1,"AOR":2}`, "AOR", true},
		{`{"source":1,"ſource":2}`, "ſource", true},
		{`{"sip":1,"\u017fip":2}`, "ſip", true},
		{many + `"K7":2}`, "K7", true},
		{many + `"\u212a7":2}`, "\u212a7", true},
		{`"a"`, "", false},
	}
	for _, tt := range tests {
		got, dup := DuplicateKey([]byte(tt.in))
		if got != tt.want || dup != tt.dup {
			t.Errorf("DuplicateKey(%s) = %q, %v, want %q, %v", tt.in, got, dup, tt.want, tt.dup)
		}
	}
}
