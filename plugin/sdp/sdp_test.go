package sdp

import (
	"flag"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/deferpush/deferpush/plugin/msrp"
)

var update = flag.Bool("update", false, "rewrite golden files")

func mustURI(t *testing.T, s string) msrp.URI {
	t.Helper()
	u, err := msrp.ParseURI(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestBuildGolden(t *testing.T) {
	tests := []struct {
		name string
		m    Media
	}{
		{"offer-tcp", Media{
			Path:        []msrp.URI{mustURI(t, "msrp://192.0.2.10:2855/iau39soe2843z;tcp")},
			AcceptTypes: []string{"message/sip", "message/cpim", "text/plain"},
		}},
		{"offer-tls-ipv6", Media{
			Path:               []msrp.URI{mustURI(t, "msrps://[2001:db8::10]:2856/9di4eae923wzd;tcp")},
			AcceptTypes:        []string{"message/cpim"},
			AcceptWrappedTypes: []string{"*"},
		}},
		{"answer-passive", Media{
			Path:        []msrp.URI{mustURI(t, "msrp://192.0.2.20:7777/kjhd37s2s20w2a;tcp")},
			AcceptTypes: []string{"*"},
			Setup:       SetupPassive,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Build(tt.m)
			if err != nil {
				t.Fatal(err)
			}
			file := "testdata/" + tt.name + ".sdp"
			if *update {
				if err := os.WriteFile(file, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(file)
			if err != nil {
				t.Fatalf("%v (run go test -update)", err)
			}
			if diff := cmp.Diff(string(want), string(got)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			back, err := Parse(got)
			if err != nil {
				t.Fatal(err)
			}
			wantBack := tt.m
			if wantBack.Setup == "" {
				wantBack.Setup = SetupActPass
			}
			if diff := cmp.Diff(wantBack, back); diff != "" {
				t.Errorf("parse of built SDP (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseAnswer(t *testing.T) {
	const answer = "v=0\r\n" +
		"o=bob 2890844526 2890844527 IN IP4 198.51.100.7\r\n" +
		"s=-\r\n" +
		"c=IN IP4 198.51.100.7\r\n" +
		"t=0 0\r\n" +
		"m=audio 49170 RTP/AVP 0\r\n" +
		"m=message 12763 TCP/MSRP *\r\n" +
		"a=accept-types:message/cpim text/plain\r\n" +
		"a=accept-wrapped-types:message/sip text/*\r\n" +
		"a=path:msrp://relay.example.net:2855/r1;tcp msrp://198.51.100.7:12763/kjhd37s2s20w2a;tcp\r\n" +
		"a=setup:active\r\n" +
		"a=max-size:4096\r\n"
	got, err := Parse([]byte(answer))
	if err != nil {
		t.Fatal(err)
	}
	want := Media{
		Path: []msrp.URI{
			mustURI(t, "msrp://relay.example.net:2855/r1;tcp"),
			mustURI(t, "msrp://198.51.100.7:12763/kjhd37s2s20w2a;tcp"),
		},
		AcceptTypes:        []string{"message/cpim", "text/plain"},
		AcceptWrappedTypes: []string{"message/sip", "text/*"},
		Setup:              SetupActive,
		MaxSize:            4096,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if OffererConnects(got) {
		t.Error("OffererConnects = true for a=setup:active")
	}
	for ct, want := range map[string]bool{"message/cpim": true, "TEXT/PLAIN; charset=utf-8": true, "message/sip": false} {
		if got.Accepts(ct) != want {
			t.Errorf("Accepts(%q) = %v, want %v", ct, !want, want)
		}
	}
	if !got.AcceptsWrapped("message/sip") || !got.AcceptsWrapped("text/html") || got.AcceptsWrapped("image/png") {
		t.Error("AcceptsWrapped wrong")
	}
}

// TestParseMaxSize: a=max-size is a number of octets (RFC 4975 §8.6); a
// value that is not a positive number limits nothing.
func TestParseMaxSize(t *testing.T) {
	media := "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n" +
		"m=message 2855 TCP/MSRP *\r\na=accept-types:*\r\na=path:msrp://192.0.2.1:2855/s;tcp\r\n"
	for attr, want := range map[string]int64{
		"":                       0,
		"a=max-size:100\r\n":     100,
		"a=max-size: 65536 \r\n": 65536,
		"a=max-size:0\r\n":       0,
		"a=max-size:-5\r\n":      0,
		"a=max-size:big\r\n":     0,
		"a=max-size:\r\n":        0,
	} {
		m, err := Parse([]byte(media + attr))
		if err != nil {
			t.Fatalf("%q: %v", attr, err)
		}
		if m.MaxSize != want {
			t.Errorf("%q: MaxSize %d, want %d", attr, m.MaxSize, want)
		}
	}
}

// TestParseDirection: the MSRP media's direction attribute, else the
// session's (RFC 3264 §5.1: a stream is marked by either); none is "".
// a=setup:holdconn is read as it is (RFC 4145 §4).
func TestParseDirection(t *testing.T) {
	head := "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
	media := "m=message 2855 TCP/MSRP *\r\na=accept-types:*\r\na=path:msrp://192.0.2.1:2855/s;tcp\r\n"
	tests := []struct {
		name, session, media string
		want                 string
	}{
		{"none", "", "", ""},
		{"media sendonly", "", "a=sendonly\r\n", SendOnly},
		{"media recvonly", "", "a=recvonly\r\n", RecvOnly},
		{"media inactive", "", "a=inactive\r\n", Inactive},
		{"media sendrecv", "", "a=sendrecv\r\n", SendRecv},
		{"session inactive", "a=inactive\r\n", "", Inactive},
		{"media overrides session", "a=inactive\r\n", "a=sendrecv\r\n", SendRecv},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Parse([]byte(head + tt.session + media + tt.media))
			if err != nil {
				t.Fatal(err)
			}
			if m.Direction != tt.want {
				t.Errorf("Direction %q, want %q", m.Direction, tt.want)
			}
		})
	}
	m, err := Parse([]byte(head + media + "a=setup:holdconn\r\n"))
	if err != nil || m.Setup != SetupHoldConn {
		t.Errorf("a=setup:holdconn: Setup %q, err %v; want %q", m.Setup, err, SetupHoldConn)
	}
}

func TestParseErrors(t *testing.T) {
	head := "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
	tests := map[string]string{
		"no msrp media":     head + "m=audio 4000 RTP/AVP 0\r\n",
		"no path":           head + "m=message 2855 TCP/MSRP *\r\na=accept-types:*\r\n",
		"bad path":          head + "m=message 2855 TCP/MSRP *\r\na=accept-types:*\r\na=path:http://x/y\r\n",
		"no accept-types":   head + "m=message 2855 TCP/MSRP *\r\na=path:msrp://192.0.2.1:2855/s;tcp\r\n",
		"not sdp":           "hello",
		"rejected (port 0)": head + "m=message 0 TCP/MSRP *\r\na=accept-types:*\r\na=path:msrp://192.0.2.1:2855/s;tcp\r\n",
		// The path's scheme contradicts the m-line's transport (RFC 4975 §6, §8.1).
		"msrps path, TCP/MSRP":      head + "m=message 2855 TCP/MSRP *\r\na=accept-types:*\r\na=path:msrps://192.0.2.1:2855/s;tcp\r\n",
		"msrp path, TCP/TLS/MSRP":   head + "m=message 2855 TCP/TLS/MSRP *\r\na=accept-types:*\r\na=path:msrp://192.0.2.1:2855/s;tcp\r\n",
		"msrps first hop, TCP/MSRP": head + "m=message 2855 TCP/MSRP *\r\na=accept-types:*\r\na=path:msrps://192.0.2.9:2855/r;tcp msrp://192.0.2.1:2855/s;tcp\r\n",
	}
	for name, in := range tests {
		t.Run(name, func(t *testing.T) {
			if m, err := Parse([]byte(in)); err == nil {
				t.Errorf("got %+v, want an error", m)
			}
		})
	}
}

func TestBuildErrors(t *testing.T) {
	if _, err := Build(Media{AcceptTypes: []string{"*"}}); err == nil {
		t.Error("empty path accepted")
	}
	if _, err := Build(Media{Path: []msrp.URI{{Host: "example.com", SessionID: "s"}}, AcceptTypes: []string{"*"}}); err == nil || !strings.Contains(err.Error(), "IP") {
		t.Errorf("host name accepted: %v", err)
	}
	if _, err := Build(Media{Path: []msrp.URI{{Host: "192.0.2.1", SessionID: "s"}}}); err == nil {
		t.Error("no accept-types accepted")
	}
}

// TestAnswerKeepsMLines: the answer has the offer's m-lines in its order,
// the MSRP media answered with Build's lines, the others refused (port
// 0, their transport and formats); to an offer of MSRP alone it is
// Build's description byte for byte.
func TestAnswerKeepsMLines(t *testing.T) {
	m := Media{Path: []msrp.URI{{Host: "192.0.2.1", Port: 2855, SessionID: "abc", Transport: "tcp"}}, AcceptTypes: []string{"*"}, Setup: SetupPassive}
	built, err := Build(m)
	if err != nil {
		t.Fatal(err)
	}
	head := "v=0\r\no=- 1 1 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\n"
	media := "m=message 7394 TCP/MSRP *\r\na=accept-types:text/plain\r\na=path:msrp://192.0.2.9:7394/x;tcp\r\n"
	alone, err := Answer([]byte(head+media), m)
	if err != nil || string(alone) != string(built) {
		t.Errorf("answer to MSRP alone:\n%s\nerr %v; want Build's:\n%s", alone, err, built)
	}
	offer := head + "m=audio 49170 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n" + media +
		"m=message 7395 TCP/MSRP *\r\na=accept-types:*\r\na=path:msrp://192.0.2.9:7395/y;tcp\r\nm=video 0 RTP/AVP 31\r\n"
	got, err := Answer([]byte(offer), m)
	if err != nil {
		t.Fatal(err)
	}
	i := strings.Index(string(built), "m=message")
	want := string(built[:i]) + "m=audio 0 RTP/AVP 0\r\n" + string(built[i:]) + "m=message 0 TCP/MSRP *\r\nm=video 0 RTP/AVP 31\r\n"
	if string(got) != want {
		t.Errorf("answer:\n%s\nwant:\n%s", got, want)
	}
	if _, err := Parse(got); err != nil {
		t.Errorf("the answer does not parse: %v", err)
	}
	if _, err := Answer([]byte(head+"m=audio 49170 RTP/AVP 0\r\n"), m); err == nil {
		t.Error("answered an offer without MSRP")
	}
}
