package encap

import (
	"bytes"
	"hash/fnv"
	"strconv"
	"strings"
	"time"
)

// Page is a stored message as pager mode sends it again: the parts of a
// SIP MESSAGE (RFC 3428) to the recipient's registered contact that come
// from the stored message. The sender of the page adds the request line,
// Route, Via, Max-Forwards, CSeq and Content-Length.
//
// From a SIP MESSAGE (KindSIP) the page is the stored request re-sent:
// every header line is kept as stored, in order — From with its tag, To,
// Call-ID, Date (added at store time when the sender gave none), the
// identity headers (P-Asserted-Identity, Identity, ...), Subject,
// Content-Type and the others — except those that belong to the sender's
// hop and the proxy's routing: Via, Route, Record-Route, Max-Forwards,
// CSeq, Content-Length, and the sender's credentials Authorization,
// Proxy-Authorization and Proxy-Require. The body is kept whole, so a
// message/cpim body goes with its IMDN headers intact. The CSeq number is
// the stored one, so that a page sent twice (a crash after the client's
// 200 and before the store's ack) is the same request: same Call-ID, From
// tag and CSeq, by which the client can drop the copy.
//
// From an MSRP session (KindMSRP) the page is the message the session
// carried, as a MESSAGE of the same sender: the session's To, From (with
// its tag), Call-ID, P-Asserted-Identity and Subject (from the stored
// INVITE head), a Date of when the message was stored (the SEND's Date,
// else the head's), and the SEND's Content-Type and body. The MSRP
// Message-ID has no place in a MESSAGE; the CSeq number is derived from
// it (a hash), so messages of one session, which share Call-ID and From
// tag, differ, and a copy of one is the same request again.
type Page struct {
	// Head is the kept header lines, each with its CRLF (continuation
	// lines included).
	Head []byte
	// CSeq is the sequence number for the CSeq header (0 to 2^31-1).
	CSeq uint32
	// ContentType is the body's type ("" when there is no body).
	ContentType string
	Body        []byte
}

// private are the headers of a stored MESSAGE that no push passes on to
// the recipient, neither in pager mode nor encapsulated: the sender's
// credentials, for its proxy's realm (RFC 3261 §22.3), and the proxies'
// routing. None has a compact form.
var private = [...]string{credentials[0], credentials[1], "Proxy-Require", "Route", "Record-Route"}

// credentials are the headers carrying the sender's credentials (RFC
// 3261 §20.7, §20.28), for the proxy that challenged it: not even stored
// (storedForm).
var credentials = [...]string{"Authorization", "Proxy-Authorization"}

// hop are the headers of a stored MESSAGE that describe the sender's hop,
// by long and compact name: a page, a new request, has its own.
var hop = [...]string{"Via", "v", "Max-Forwards", "CSeq", "Content-Length", "l"}

// PageOf returns the page of a stored message. d must be as stored (see
// Deferred); errors wrap ErrMalformed.
func PageOf(d Deferred) (Page, error) {
	switch d.Kind {
	case KindSIP:
		return pageOfSIP(d.Stored)
	case KindMSRP:
		return pageOfMSRP(d.Head, d.Stored)
	}
	return Page{}, invalid("unknown kind %v", d.Kind)
}

func pageOfSIP(stored []byte) (Page, error) {
	m, err := parseRequest(stored)
	if err != nil {
		return Page{}, err
	}
	if m.method != "MESSAGE" {
		return Page{}, malformed("stored %s, not MESSAGE", clip([]byte(m.method)))
	}
	p := Page{Body: m.body}
	p.ContentType, _ = m.get(keyContentType)
	var head bytes.Buffer
	head.Grow(len(stored) - len(m.body))
	for _, h := range m.headers {
		line := stored[h.start:h.end]
		name := headerName(line)
		if equalFold("CSeq", name) {
			_, value, _ := bytes.Cut(line, []byte(":"))
			n, ok := cseqNumber(string(value))
			if !ok {
				return Page{}, malformed("CSeq %q", clip(bytes.TrimSpace(value)))
			}
			p.CSeq = n
		}
		if dropped(name) {
			continue
		}
		head.Write(line)
	}
	if p.CSeq == 0 {
		callID, _ := m.get(keyCallID)
		p.CSeq = hashCSeq(callID)
	}
	p.Head = head.Bytes()
	return p, nil
}

// dropped reports whether a page leaves out the header name.
func dropped(name []byte) bool {
	for _, d := range hop {
		if equalFold(d, name) {
			return true
		}
	}
	return isPrivate(name)
}

// isPrivate reports whether name is one of the private headers.
func isPrivate(name []byte) bool { return isAny(private[:], name) }

// isCredentials reports whether name is one of the credentials headers.
func isCredentials(name []byte) bool { return isAny(credentials[:], name) }

func isAny(names []string, name []byte) bool {
	for _, d := range names {
		if equalFold(d, name) {
			return true
		}
	}
	return false
}

// headerName returns the name of a header line as written.
func headerName(line []byte) []byte {
	name, _, _ := bytes.Cut(line, []byte(":"))
	return bytes.TrimRight(name, " \t")
}

// cseqNumber reads the sequence number of a CSeq value ("1 MESSAGE"), a
// 32-bit number below 2^31 (RFC 3261 §8.1.1.5).
func cseqNumber(v string) (uint32, bool) {
	f := strings.Fields(v)
	if len(f) != 2 {
		return 0, false
	}
	n, err := strconv.ParseUint(f[0], 10, 31)
	if err != nil {
		return 0, false
	}
	return uint32(n), true
}

// hashCSeq derives a CSeq number from a key: 1 to 2^31-1.
func hashCSeq(key string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(key))
	return h.Sum32()%(1<<31-1) + 1
}

// pageHeaders are the session head's headers a page of an MSRP message
// keeps, in this order; Date is the SEND's.
var pageHeaders = [...]string{keyFrom, keyTo, keyCallID, keyPAI, keySubject}

func pageOfMSRP(sessionHead, send []byte) (Page, error) {
	f, err := parseSEND(send)
	if err != nil {
		return Page{}, err
	}
	m, err := parseSIP(sessionHead, startRequest, HeadLimits{})
	if err != nil {
		return Page{}, err
	}
	for _, k := range [...]string{keyFrom, keyTo, keyCallID} {
		if v, ok := m.get(k); !ok || v == "" {
			return Page{}, malformed("session head without %s", k)
		}
	}
	var head bytes.Buffer
	for _, k := range pageHeaders {
		for _, h := range m.headers {
			if h.key == k {
				head.WriteString(k + ": " + h.value + "\r\n")
			}
		}
	}
	date := f.date
	if !f.hasDate {
		var ok bool
		if date, ok, err = m.date(); err != nil || !ok {
			date = time.Time{}
		}
	}
	if !date.IsZero() {
		head.WriteString("Date: " + date.UTC().Format(dateLayout) + "\r\n")
	}
	if f.contentType != "" {
		head.WriteString("Content-Type: " + f.contentType + "\r\n")
	}
	return Page{Head: head.Bytes(), CSeq: hashCSeq(f.messageID), ContentType: f.contentType, Body: f.body}, nil
}
