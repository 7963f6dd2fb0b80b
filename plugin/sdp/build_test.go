package sdp

import (
	"hash/fnv"
	"net"
	"strings"
	"testing"

	psdp "github.com/pion/sdp/v3"

	"github.com/google/go-cmp/cmp"

	"github.com/deferpush/deferpush/plugin/msrp"
)

// buildPion is how Build wrote a description until it wrote the bytes
// itself: through pion/sdp's Marshal.
func buildPion(t testing.TB, m Media) []byte {
	self := m.Path[len(m.Path)-1]
	addrType := "IP4"
	if net.ParseIP(self.Host).To4() == nil {
		addrType = "IP6"
	}
	port := self.Port
	if port == 0 {
		port = msrp.DefaultPort
	}
	proto := []string{"TCP", "MSRP"}
	if self.Secure {
		proto = []string{"TCP", "TLS", "MSRP"}
	}
	h := fnv.New64a()
	h.Write([]byte(self.SessionID))
	id := h.Sum64() >> 1
	setup := m.Setup
	if setup == "" {
		setup = SetupActPass
	}
	attrs := []psdp.Attribute{psdp.NewAttribute("accept-types", strings.Join(m.AcceptTypes, " "))}
	if m.AcceptWrappedTypes != nil {
		attrs = append(attrs, psdp.NewAttribute("accept-wrapped-types", strings.Join(m.AcceptWrappedTypes, " ")))
	}
	attrs = append(attrs, psdp.NewAttribute("path", msrp.FormatPath(m.Path)), psdp.NewAttribute("setup", setup))
	if m.Direction != "" {
		attrs = append(attrs, psdp.NewPropertyAttribute(m.Direction))
	}
	d := &psdp.SessionDescription{
		Origin: psdp.Origin{
			Username: "-", SessionID: id, SessionVersion: id,
			NetworkType: "IN", AddressType: addrType, UnicastAddress: self.Host,
		},
		SessionName: "-",
		ConnectionInformation: &psdp.ConnectionInformation{
			NetworkType: "IN", AddressType: addrType, Address: &psdp.Address{Address: self.Host},
		},
		TimeDescriptions: []psdp.TimeDescription{{Timing: psdp.Timing{}}},
		MediaDescriptions: []*psdp.MediaDescription{{
			MediaName:  psdp.MediaName{Media: "message", Port: psdp.RangedPort{Value: port}, Protos: proto, Formats: []string{"*"}},
			Attributes: attrs,
		}},
	}
	b, err := d.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestBuildAsPion: Build writes, byte for byte, what pion/sdp's Marshal
// wrote for the same media, over paths, addresses, transports and
// attribute values of every shape.
func TestBuildAsPion(t *testing.T) {
	relay := msrp.URI{Host: "relay.example.com", Port: 2855, SessionID: "r1", Transport: "tcp"}
	selves := []msrp.URI{
		{Host: "127.0.0.1", Port: 40123, SessionID: "x7dpTSfuUuHA9hXfUuzA", Transport: "tcp"},
		{Host: "192.0.2.10", SessionID: "s", Transport: "tcp"},
		{Host: "2001:db8::10", Port: 2856, SessionID: "9di4eae923wzd", Transport: "tcp", Secure: true},
		{Host: "::ffff:192.0.2.1", Port: 1, SessionID: "v4mapped", Transport: "tcp"},
	}
	types := [][]string{nil, {}, {""}, {"*"}, {"message/sip", "message/msrp", "multipart/mixed", "message/cpim", "message/sipfrag"}}
	n := 0
	for _, self := range selves {
		for _, path := range [][]msrp.URI{{self}, {relay, self}} {
			for _, wrapped := range types {
				for _, accept := range types[2:] {
					for _, setup := range []string{"", SetupActive, SetupPassive, SetupActPass} {
						for _, dir := range []string{"", RecvOnly, SendOnly} {
							m := Media{Path: path, AcceptTypes: accept, AcceptWrappedTypes: wrapped, Setup: setup, Direction: dir}
							got, err := Build(m)
							if err != nil {
								t.Fatalf("Build(%+v): %v", m, err)
							}
							if diff := cmp.Diff(string(buildPion(t, m)), string(got)); diff != "" {
								t.Errorf("Build(%+v) (-pion +got):\n%s", m, diff)
							}
							n++
						}
					}
				}
			}
		}
	}
	t.Logf("%d descriptions compared", n)
}

func BenchmarkBuild(b *testing.B) {
	m := Media{
		Path:        []msrp.URI{{Host: "127.0.0.1", Port: 40123, SessionID: "x7dpTSfuUuHA9hXfUuzA", Transport: "tcp"}},
		AcceptTypes: []string{"message/sip", "message/msrp", "multipart/mixed", "message/cpim", "message/sipfrag"},
	}
	b.Run("direct", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Build(m); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("pion", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			buildPion(b, m)
		}
	})
}

func BenchmarkParse(b *testing.B) {
	answer, err := Build(Media{
		Path:        []msrp.URI{{Host: "127.0.0.1", Port: 40123, SessionID: "x7dpTSfuUuHA9hXfUuzA", Transport: "tcp"}},
		AcceptTypes: []string{"message/sip", "message/msrp", "multipart/mixed", "message/cpim", "text/plain"},
		Setup:       SetupPassive,
	})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(answer); err != nil {
			b.Fatal(err)
		}
	}
}
