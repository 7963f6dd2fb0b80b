package encap_test

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/deferpush/deferpush/plugin/encap"
)

var update = flag.Bool("update", false, "rewrite the expected section of testdata/*.golden")

// A golden file holds wire bytes, CRLF line ends included (testdata's
// .gitattributes keeps git from touching them). Its sections are separated
// by a line of ten dashes; the CRLF before that line belongs to the
// separator, so a section that ends in CRLF is followed by an empty line.
//
//	parameters ("name: value" lines: kind, store-date, send-date, tid,
//	            accept-types, accept-wrapped-types, preference, boundary)
//	----------
//	the request as received: a SIP MESSAGE (kind sip), or the session's
//	INVITE, a separator and the MSRP SEND received in it (kind msrp)
//	----------
//	"Content-Type: " the pushed type, a blank line, the pushed body
//
// The seed's two examples are seed1-message-sip.golden and
// seed2-multipart.golden; the others are the same messages under the other
// encapsulations, and seed1-message-sip-private.golden is example 1 as a
// proxy hands it over (its Via, a Route, a Record-Route, the sender's
// credentials): message/sip keeps the Via chain, Max-Forwards and CSeq as
// the seed does, and leaves out what is the sender's and its proxies'
// business (Authorization, Proxy-Authorization, Proxy-Require, Route,
// Record-Route), as pager mode does. Deviations from the seed's literal text, each a typo of
// the seed and written the RFC way here:
//
//   - CRLF line ends and no indentation (the seed is a word-processor text).
//   - "branch=z9hG4bK776sgdkse" without the space after ';' (RFC 3261 §20.42
//     allows none in a via-param as printed; the seed's stored and pushed
//     copies even differ there, which "stored whole" rules out).
//   - "Date: ... GMT" without the trailing space of the seed's pushed copies.
//   - "INVITE sip:user2@imserver.com SIP/2.0": no space inside the URI.
//   - "Mon, 21 Feb 2005": 21 February 2005 was a Monday; the seed's "Thu" was
//     copied from the 2002 example (Date is generated, so it must be right).
//   - P-Asserted-Identity "<sip:user1@imserver.com>, <tel:+15141234567>":
//     RFC 3325 separates identities with a comma and needs name-addr for
//     a tel URI; "sip:...; tel:..." would read as one URI with a parameter.
//   - "Byte-Range: 1-20/20": the body "Hi, Alice!  I'm Bob!" has 20 octets,
//     not 5; the seed's stored copy also lacked the space after ':'.
//   - In the stored SEND, Content-Type is the last header (RFC 4975 §7.1),
//     after Byte-Range, with a blank line before the body; the end-line
//     "-------dkei38sd$" starts a line (the seed indents it).
//   - The multipart body follows RFC 2046: "--boundary42" CRLF, the part
//     headers, a blank line, the part, CRLF, and "--boundary42--" to close
//     (the seed repeats "--boundary42" instead). The message/sip part ends
//     with the blank line that ends a SIP header section.
//   - The outer SEND's own headers (To-Path, From-Path, Message-ID, and the
//     end-line "-------elfj49te$") are plugin/msrp's, not this package's:
//     a golden file holds the outer Content-Type and body only.
//   - The stored SEND keeps the seed's Message-ID "456" although RFC 4975's
//     ident needs four characters: a Message-ID is never changed.
func TestGolden(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.golden"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden files: %v", err)
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".golden"), func(t *testing.T) {
			g := readGolden(t, file)
			got := g.push(t)
			if *update {
				g.sections[len(g.sections)-1] = got
				if err := os.WriteFile(file, bytes.Join(g.sections, []byte(separator)), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want := g.sections[len(g.sections)-1]
			if diff := cmp.Diff(string(want), string(got)); diff != "" {
				t.Errorf("pushed payload differs from %s (-want +got):\n%s", file, diff)
			}
		})
	}
}

const separator = "\r\n----------\r\n"

type golden struct {
	params   map[string]string
	sections [][]byte
}

func readGolden(t *testing.T, file string) golden {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	g := golden{params: map[string]string{}, sections: bytes.Split(raw, []byte(separator))}
	for _, line := range strings.Split(string(g.sections[0]), "\r\n") {
		k, v, ok := strings.Cut(line, ": ")
		if !ok {
			t.Fatalf("%s: parameter line %q", file, line)
		}
		g.params[k] = v
	}
	want := map[string]int{"sip": 3, "msrp": 4}[g.params["kind"]]
	if len(g.sections) != want {
		t.Fatalf("%s: kind %q with %d sections", file, g.params["kind"], len(g.sections))
	}
	return g
}

func (g golden) date(t *testing.T, name string) time.Time {
	t.Helper()
	d, err := time.Parse(time.RFC1123, g.params[name])
	if err != nil {
		t.Fatalf("parameter %s: %v", name, err)
	}
	return d
}

func (g golden) options() encap.Options {
	return encap.Options{
		AcceptTypes:        strings.Fields(g.params["accept-types"]),
		AcceptWrappedTypes: strings.Fields(g.params["accept-wrapped-types"]),
		Preference:         encap.Preference(g.params["preference"]),
		Boundary:           g.params["boundary"],
	}
}

// push stores the received message as the ingress does, builds the push,
// checks the identities survived, and returns the payload section.
func (g golden) push(t *testing.T) []byte {
	t.Helper()
	var (
		d    encap.Deferred
		want encap.Decoded // the identities the client must get
	)
	switch g.params["kind"] {
	case "sip":
		in := g.sections[1]
		stored, err := encap.AddDate(in, g.date(t, "store-date"))
		if err != nil {
			t.Fatalf("AddDate: %v", err)
		}
		d = encap.Deferred{Kind: encap.KindSIP, Stored: stored}
		want = mustDecode(t, encap.TypeSIP, in)
		want.Date = g.date(t, "store-date")
	case "msrp":
		head, err := encap.SessionHead(g.sections[1], g.date(t, "store-date"))
		if err != nil {
			t.Fatalf("SessionHead: %v", err)
		}
		recv := mustDecode(t, encap.TypeMSRP, g.sections[2])
		stored, err := encap.StoredSEND(g.params["tid"], recv.MessageID, recv.ContentType, recv.Body, g.date(t, "send-date"))
		if err != nil {
			t.Fatalf("StoredSEND: %v", err)
		}
		d = encap.Deferred{Kind: encap.KindMSRP, Stored: stored, Head: head}
		want = mustDecode(t, encap.TypeSIP, g.sections[1])
		want.MessageID, want.Date = recv.MessageID, g.date(t, "send-date")
		want.ContentType, want.Body = recv.ContentType, recv.Body
	}
	p, err := encap.Build(d, g.options())
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	checkIdentities(t, p, want)
	return append([]byte("Content-Type: "+p.ContentType+"\r\n\r\n"), p.Body...)
}

// checkIdentities decodes p as the client would and checks that the
// Call-ID, Message-ID, identity headers and message received are what the
// client gets, with the Date of storage.
func checkIdentities(t *testing.T, p encap.Payload, want encap.Decoded) {
	t.Helper()
	got := mustDecode(t, p.ContentType, p.Body)
	if got.Date.IsZero() {
		t.Errorf("pushed %s has no Date", p.ContentType)
	}
	switch got.Encapsulation {
	case encap.TypeCPIM:
		// CPIM addresses are the SIP ones without tag.
		want.From, want.To = cpimAddress(want.From), cpimAddress(want.To)
	case encap.TypeMSRP:
		// The SEND alone carries no SIP identities.
		want = encap.Decoded{MessageID: want.MessageID, Date: want.Date, ContentType: want.ContentType, Body: want.Body}
	}
	want.Encapsulation = got.Encapsulation
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("decoded %s differs from what was stored (-want +got):\n%s", p.ContentType, diff)
	}
}

// cpimAddress is the test's own mapping of the seed's SIP addresses to CPIM
// form: angle brackets, no tag.
func cpimAddress(sip string) string {
	a, _, _ := strings.Cut(strings.Trim(sip, "<"), ";")
	return "<" + strings.TrimSuffix(a, ">") + ">"
}

func mustDecode(t *testing.T, ct string, body []byte) encap.Decoded {
	t.Helper()
	d, err := encap.Decode(ct, body)
	if err != nil {
		t.Fatalf("Decode(%q): %v", ct, err)
	}
	return d
}
