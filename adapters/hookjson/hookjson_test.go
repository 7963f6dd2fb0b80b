package hookjson

import (
	"encoding/json"
	"testing"
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
