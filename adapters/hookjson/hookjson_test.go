package hookjson

import (
	"encoding/json"
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
