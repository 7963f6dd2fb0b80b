package encap_test

import (
	"testing"

	"github.com/deferpush/deferpush/plugin/encap"
)

// BenchmarkBuild measures one push of each encapsulation; bytes are those
// of the stored message.
func BenchmarkBuild(b *testing.B) {
	sip, msrp := stored(b), session(b)
	cases := []struct {
		name string
		d    encap.Deferred
		o    encap.Options
	}{
		{"sip/message-sip", sip, encap.Options{AcceptTypes: []string{"message/sip"}}},
		{"sip/message-sipfrag", sip, encap.Options{AcceptTypes: []string{"message/sipfrag"}}},
		{"sip/message-cpim", sip, encap.Options{AcceptTypes: []string{"message/cpim", "text/plain"}}},
		{"sip/bare", sip, encap.Options{AcceptTypes: []string{"text/plain"}, Fallback: encap.FallbackBare}},
		{"msrp/multipart-mixed", msrp, encap.Options{AcceptTypes: []string{"*"}, Boundary: "boundary42"}},
		{"msrp/multipart-mixed-random-boundary", msrp, encap.Options{AcceptTypes: []string{"*"}}},
		{"msrp/message-msrp", msrp, encap.Options{AcceptTypes: []string{"message/msrp"}}},
		{"msrp/message-cpim", msrp, encap.Options{AcceptTypes: []string{"message/cpim", "text/plain"}}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(c.d.Stored) + len(c.d.Head)))
			for b.Loop() {
				if _, err := encap.Build(c.d, c.o); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDecode(b *testing.B) {
	sip, msrp := stored(b), session(b)
	for _, c := range []struct {
		name string
		d    encap.Deferred
		o    encap.Options
	}{
		{"message-sip", sip, encap.Options{AcceptTypes: []string{"message/sip"}}},
		{"multipart-mixed", msrp, encap.Options{AcceptTypes: []string{"*"}, Boundary: "boundary42"}},
		{"message-cpim", msrp, encap.Options{AcceptTypes: []string{"message/cpim", "text/plain"}}},
	} {
		p, err := encap.Build(c.d, c.o)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(p.Body)))
			for b.Loop() {
				if _, err := encap.Decode(p.ContentType, p.Body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkAddDate(b *testing.B) {
	raw := crlf(message)
	b.ReportAllocs()
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		if _, err := encap.AddDate(raw, storeTime); err != nil {
			b.Fatal(err)
		}
	}
}
