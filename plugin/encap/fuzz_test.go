package encap_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/deferpush/deferpush/plugin/encap"
)

// The seed corpora under testdata/fuzz hold the golden inputs and outputs.
// Every exported function reading outside bytes has a target; the round
// trips check that what the ingress stores survives push and decode.

func FuzzDecode(f *testing.F) {
	f.Fuzz(func(t *testing.T, ct string, body []byte) {
		d, err := encap.Decode(ct, body)
		if err != nil {
			if !errors.Is(err, encap.ErrMalformed) {
				t.Fatalf("Decode error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if len(d.Body) > len(body) {
			t.Fatalf("decoded body of %d octets from %d", len(d.Body), len(body))
		}
	})
}

func FuzzAddDate(f *testing.F) {
	f.Fuzz(func(t *testing.T, raw []byte) {
		in, err := encap.ParseRequest(raw)
		out, err2 := encap.AddDate(raw, storeTime)
		if (err == nil) != (err2 == nil) {
			t.Fatalf("ParseRequest error %v but AddDate error %v", err, err2)
		}
		if err != nil {
			return
		}
		got, err := encap.ParseRequest(out)
		if err != nil {
			t.Fatalf("AddDate output does not parse: %v\n%q", err, out)
		}
		if got.Date.IsZero() {
			t.Fatalf("AddDate output has no Date")
		}
		if !in.Date.IsZero() {
			if !bytes.Equal(out, raw) {
				t.Fatalf("AddDate changed a dated request")
			}
			return
		}
		line := "Date: " + storeTime.Format("Mon, 02 Jan 2006 15:04:05 GMT") + "\r\n"
		i := bytes.Index(out, []byte(line))
		if i < 0 || !bytes.Equal(append(out[:i:i], out[i+len(line):]...), raw) {
			t.Fatalf("AddDate did more than insert %q:\n%q\n%q", line, raw, out)
		}
		in.Date = storeTime
		if diff := cmp.Diff(in, got); diff != "" {
			t.Fatalf("AddDate changed the request (-in +out):\n%s", diff)
		}
	})
}

func FuzzSessionHead(f *testing.F) {
	f.Fuzz(func(t *testing.T, raw []byte) {
		head, err := encap.SessionHead(raw, storeTime)
		if err != nil {
			return
		}
		in, err := encap.ParseRequest(raw)
		if err != nil {
			t.Fatalf("SessionHead accepted what ParseRequest rejects: %v", err)
		}
		got, err := encap.ParseRequest(head)
		if err != nil {
			t.Fatalf("session head does not parse: %v\n%q", err, head)
		}
		if got.Method != "INVITE" || got.CallID != in.CallID || got.From != in.From || got.To != in.To || len(got.Body) != 0 {
			t.Fatalf("session head %+v from %+v", got, in)
		}
	})
}

func FuzzStoredSEND(f *testing.F) {
	f.Fuzz(func(t *testing.T, tid, messageID, ct string, body []byte) {
		frame, err := encap.StoredSEND(tid, messageID, ct, body, storeTime)
		if err != nil {
			if !errors.Is(err, encap.ErrInvalid) {
				t.Fatalf("StoredSEND error %v does not wrap ErrInvalid", err)
			}
			return
		}
		d, err := encap.Decode(encap.TypeMSRP, frame)
		if err != nil {
			t.Fatalf("stored SEND does not decode: %v\n%q", err, frame)
		}
		if d.MessageID != messageID || d.ContentType != strings.TrimSpace(ct) || !bytes.Equal(d.Body, body) || !d.Date.Equal(storeTime) {
			t.Fatalf("decoded %+v from %q %q %q", d, messageID, ct, body)
		}
	})
}

// FuzzPush stores a MESSAGE and pushes it every way a client may take it.
func FuzzPush(f *testing.F) {
	f.Fuzz(func(t *testing.T, raw []byte) {
		stored, err := encap.AddDate(raw, storeTime)
		if err != nil {
			return
		}
		in, err := encap.ParseRequest(stored)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range []encap.Options{
			{AcceptTypes: []string{"message/sip"}},
			{AcceptTypes: []string{"message/sipfrag"}},
			{AcceptTypes: []string{"message/cpim"}, AcceptWrappedTypes: []string{"*"}},
			{AcceptTypes: []string{"*/*"}, Fallback: encap.FallbackBare, Preference: encap.PreferCPIM},
		} {
			p, err := encap.Build(encap.Deferred{Kind: encap.KindSIP, Stored: stored}, o)
			if errors.Is(err, encap.ErrHold) {
				continue // e.g. no body, so nothing for CPIM
			}
			if err != nil {
				t.Fatalf("Build(%v): %v", o.AcceptTypes, err)
			}
			d, err := encap.Decode(p.ContentType, p.Body)
			if err != nil {
				t.Fatalf("Decode(%q): %v\n%q", p.ContentType, err, p.Body)
			}
			if d.CallID != in.CallID || !d.Date.Equal(storeTime) && !d.Date.Equal(in.Date) || !bytes.Equal(d.Body, in.Body) {
				t.Fatalf("%s lost the message: %+v from %+v", p.ContentType, d, in)
			}
		}
	})
}

// FuzzPushSession stores a message of an MSRP session and pushes it every
// way a client may take it.
func FuzzPushSession(f *testing.F) {
	f.Fuzz(func(t *testing.T, invite []byte, messageID, ct string, body []byte) {
		head, err := encap.SessionHead(invite, storeTime)
		if err != nil {
			return
		}
		send, err := encap.StoredSEND("dkei38sd", messageID, ct, body, storeTime)
		if err != nil {
			return
		}
		in, err := encap.ParseRequest(head)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range []encap.Options{
			{AcceptTypes: []string{"*"}},
			{AcceptTypes: []string{"message/msrp"}},
			{AcceptTypes: []string{"message/cpim"}, AcceptWrappedTypes: []string{"*"}},
		} {
			p, err := encap.Build(encap.Deferred{Kind: encap.KindMSRP, Stored: send, Head: head}, o)
			if err != nil {
				t.Fatalf("Build(%v): %v", o.AcceptTypes, err)
			}
			d, err := encap.Decode(p.ContentType, p.Body)
			if err != nil {
				t.Fatalf("Decode(%q): %v\n%q", p.ContentType, err, p.Body)
			}
			if d.Encapsulation != encap.TypeMSRP && d.CallID != in.CallID || d.MessageID != messageID || !bytes.Equal(d.Body, body) {
				t.Fatalf("%s lost the message: %+v", p.ContentType, d)
			}
		}
	})
}

// FuzzPage: a page of a stored MESSAGE is its header lines minus the
// dropped ones, and a body that is the stored one.
func FuzzPage(f *testing.F) {
	f.Fuzz(func(t *testing.T, raw []byte) {
		p, err := encap.PageOf(encap.Deferred{Kind: encap.KindSIP, Stored: raw})
		if err != nil {
			if !errors.Is(err, encap.ErrMalformed) {
				t.Fatalf("PageOf error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if p.CSeq == 0 || p.CSeq >= 1<<31 {
			t.Fatalf("CSeq %d", p.CSeq)
		}
		if !bytes.HasSuffix(raw, p.Body) || len(p.Head) > len(raw) {
			t.Fatalf("page is not part of the stored message:\n%q\n%q", raw, p.Head)
		}
		for l := range strings.SplitSeq(string(p.Head), "\r\n") {
			if strings.HasPrefix(l, " ") || strings.HasPrefix(l, "\t") {
				continue // a continuation line
			}
			name, _, _ := strings.Cut(l, ":")
			switch strings.ToLower(strings.TrimSpace(name)) {
			case "via", "v", "route", "record-route", "cseq", "content-length", "l", "max-forwards", "proxy-authorization", "authorization":
				t.Fatalf("page keeps %q", l)
			}
		}
	})
}

// FuzzIMDN: whatever a stored message holds, reading its IMDN request
// fails cleanly, and a notification built from it parses as CPIM and asks
// for no notification itself.
func FuzzIMDN(f *testing.F) {
	f.Fuzz(func(t *testing.T, raw []byte) {
		r, ok, err := encap.ReadIMDNRequest(raw)
		if err != nil {
			if !errors.Is(err, encap.ErrMalformed) {
				t.Fatalf("ReadIMDNRequest error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if !ok {
			return
		}
		ct, body := encap.BuildNotification(r, encap.Notification{Status: encap.IMDNFailed, Recipient: "sip:bob@example.com", MessageID: "n1"})
		d, err := encap.Decode(ct, body)
		if err != nil {
			t.Fatalf("notification does not decode: %v\n%q", err, body)
		}
		if d.ContentType != encap.TypeIMDN || bytes.Contains(body, []byte("Disposition-Notification")) {
			t.Fatalf("notification:\n%q", body)
		}
	})
}
