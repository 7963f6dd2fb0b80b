// Package sdp builds and reads the SDP of MSRP sessions (RFC 4975 §8,
// RFC 6135): an m=message line with TCP/MSRP or TCP/TLS/MSRP, a=path,
// a=accept-types, a=accept-wrapped-types, a=max-size and a=setup.
package sdp

import (
	"cmp"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"strconv"
	"strings"

	psdp "github.com/pion/sdp/v3"

	"github.com/deferpush/deferpush/plugin/msrp"
)

// Setup values of RFC 6135 (a=setup).
const (
	SetupActPass  = "actpass"  // the offerer's default: either side may connect
	SetupActive   = "active"   // this side connects
	SetupPassive  = "passive"  // this side waits for the connection
	SetupHoldConn = "holdconn" // no connection for the time being (RFC 4145 §4)
)

// Direction attributes of RFC 3264 §5.1, from the point of view of the
// side whose description carries them.
const (
	SendRecv = "sendrecv" // the default: both directions
	SendOnly = "sendonly" // this side only sends
	RecvOnly = "recvonly" // this side only receives
	Inactive = "inactive" // neither, for the time being
)

// Media is the MSRP media of an offer or answer.
type Media struct {
	// Path is a=path: the To-Path the peer uses, this endpoint's URI last.
	Path []msrp.URI
	// AcceptTypes is a=accept-types, e.g. "message/sip", "message/cpim",
	// "text/plain", "*".
	AcceptTypes []string
	// AcceptWrappedTypes is a=accept-wrapped-types: the types accepted
	// inside a wrapper such as message/cpim. Nil when absent.
	AcceptWrappedTypes []string
	// Setup is a=setup. Build writes SetupActPass when it is empty; Parse
	// leaves it empty when the attribute is absent.
	Setup string
	// MaxSize is a=max-size (RFC 4975 §8.6): the largest message, in
	// octets, the endpoint will take; a sender should send none larger.
	// Zero when the attribute is absent or not a positive number (Parse
	// reads it; Build writes none).
	MaxSize int64
	// Direction is the media's direction attribute (SendRecv, SendOnly,
	// RecvOnly, Inactive). Parse reads the media's, else the session's
	// (RFC 3264 §5.1), and leaves it empty when neither has one
	// (sendrecv); Build writes none when it is empty.
	Direction string
}

// Build returns a session description with m as its only media. The
// m-line port and c-line address come from the last URI of m.Path, which
// must be an IP address.
func Build(m Media) ([]byte, error) {
	if len(m.Path) == 0 {
		return nil, errors.New("sdp: build: empty path")
	}
	if len(m.AcceptTypes) == 0 {
		return nil, errors.New("sdp: build: no accept-types")
	}
	self := m.Path[len(m.Path)-1]
	ip := net.ParseIP(self.Host)
	if ip == nil {
		return nil, fmt.Errorf("sdp: build: host %q is not an IP address", self.Host)
	}
	addrType := "IP4"
	if ip.To4() == nil {
		addrType = "IP6"
	}
	port := self.Port
	if port == 0 {
		port = msrp.DefaultPort
	}
	proto := "TCP/MSRP"
	if self.Secure {
		proto = "TCP/TLS/MSRP"
	}
	setup := cmp.Or(m.Setup, SetupActPass)
	// The origin's session id only has to be unique per offerer: derive it
	// from the MSRP session id so that a description is reproducible.
	h := fnv.New64a()
	h.Write([]byte(self.SessionID))
	id := h.Sum64() >> 1
	// Written directly, one allocation, every push's offer (and every
	// reference client's answer) being one of these; the bytes are those
	// pion/sdp's Marshal wrote for the same description
	// (TestBuildAsPion): its lines in RFC 4566 order, the media's a=
	// lines accept-types, accept-wrapped-types, path and setup.
	path := msrp.FormatPath(m.Path)
	size := 160 + 2*len(self.Host) + len(path)
	for _, t := range m.AcceptTypes {
		size += len(t) + 1
	}
	for _, t := range m.AcceptWrappedTypes {
		size += len(t) + 1
	}
	b := make([]byte, 0, size)
	b = append(b, "v=0\r\no=- "...)
	b = strconv.AppendUint(b, id, 10)
	b = append(b, ' ')
	b = strconv.AppendUint(b, id, 10)
	b = append(b, " IN "...)
	b = append(b, addrType...)
	b = append(b, ' ')
	b = append(b, self.Host...)
	b = append(b, "\r\ns=-\r\nc=IN "...)
	b = append(b, addrType...)
	b = append(b, ' ')
	b = append(b, self.Host...)
	b = append(b, "\r\nt=0 0\r\nm=message "...)
	b = strconv.AppendInt(b, int64(port), 10)
	b = append(b, ' ')
	b = append(b, proto...)
	b = append(b, " *\r\n"...)
	b = appendAttribute(b, "accept-types", m.AcceptTypes...)
	if m.AcceptWrappedTypes != nil {
		b = appendAttribute(b, "accept-wrapped-types", m.AcceptWrappedTypes...)
	}
	b = appendAttribute(b, "path", path)
	b = appendAttribute(b, "setup", setup)
	if m.Direction != "" {
		b = appendAttribute(b, m.Direction)
	}
	return b, nil
}

// appendAttribute appends the line a=key:value, the values separated by
// spaces; a=key alone when they make an empty value.
func appendAttribute(b []byte, key string, values ...string) []byte {
	b = append(b, "a="...)
	b = append(b, key...)
	colon := len(b)
	b = append(b, ':')
	for i, v := range values {
		if i > 0 {
			b = append(b, ' ')
		}
		b = append(b, v...)
	}
	if len(b) == colon+1 {
		b = b[:colon]
	}
	return append(b, "\r\n"...)
}

// Parse reads the first MSRP media of a session description.
func Parse(b []byte) (Media, error) {
	var d psdp.SessionDescription
	if err := d.Unmarshal(b); err != nil {
		return Media{}, fmt.Errorf("sdp: parse: %w", err)
	}
	for _, md := range d.MediaDescriptions {
		if !usable(md) {
			continue
		}
		var m Media
		pathAttr, ok := md.Attribute("path")
		if !ok {
			return Media{}, errors.New("sdp: parse: MSRP media without a=path")
		}
		path, err := msrp.ParsePath(strings.TrimSpace(pathAttr))
		if err != nil {
			return Media{}, fmt.Errorf("sdp: parse: a=path: %w", err)
		}
		// The m-line names the transport and the path's scheme does too
		// (RFC 4975 §6: msrps is TLS; §8.1: TCP/TLS/MSRP): a media whose
		// two disagree says nothing usable, as the probe's answer that
		// offered TCP/MSRP with an msrps path, which would have made the
		// offerer wait for a TLS handshake it never asked for. The first
		// hop (where the connection goes) and the last (the endpoint) are
		// checked; hops between relays are the relays' business.
		tls := strings.EqualFold(strings.Join(md.MediaName.Protos, "/"), "TCP/TLS/MSRP")
		if path[0].Secure != tls || path[len(path)-1].Secure != tls {
			return Media{}, fmt.Errorf("sdp: parse: a=path %s does not use the m-line's transport %s", strings.TrimSpace(pathAttr), strings.Join(md.MediaName.Protos, "/"))
		}
		m.Path = path
		if v, ok := md.Attribute("accept-types"); ok {
			m.AcceptTypes = strings.Fields(v)
		}
		if len(m.AcceptTypes) == 0 {
			return Media{}, errors.New("sdp: parse: MSRP media without a=accept-types")
		}
		if v, ok := md.Attribute("accept-wrapped-types"); ok {
			m.AcceptWrappedTypes = strings.Fields(v)
		}
		if v, ok := md.Attribute("setup"); ok {
			m.Setup = strings.ToLower(strings.TrimSpace(v))
		}
		m.Direction = direction(md.Attributes)
		if m.Direction == "" {
			m.Direction = direction(d.Attributes)
		}
		if v, ok := md.Attribute("max-size"); ok {
			// An unreadable value limits nothing: the client's 413 still
			// refuses what it cannot take.
			if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil && n > 0 {
				m.MaxSize = n
			}
		}
		return m, nil
	}
	return Media{}, errors.New("sdp: parse: no MSRP media")
}

// direction returns the first direction attribute of attrs, "" when
// there is none.
func direction(attrs []psdp.Attribute) string {
	for _, a := range attrs {
		switch k := strings.ToLower(a.Key); k {
		case SendRecv, SendOnly, RecvOnly, Inactive:
			return k
		}
	}
	return ""
}

// IsType reports whether a Content-Type is application/sdp, in any case,
// with any parameters: the only body an offer or answer comes in (RFC
// 3261 §13.2.1).
func IsType(contentType string) bool {
	mt, _, _ := strings.Cut(contentType, ";")
	return strings.EqualFold(strings.TrimSpace(mt), "application/sdp")
}

// Accepts reports whether m's accept-types take contentType: an exact
// type, "type/*" or "*", without regard to case or parameters.
func (m Media) Accepts(contentType string) bool {
	return accepts(m.AcceptTypes, contentType)
}

// AcceptsWrapped reports whether m's accept-wrapped-types take
// contentType inside a wrapper such as message/cpim.
func (m Media) AcceptsWrapped(contentType string) bool {
	return accepts(m.AcceptWrappedTypes, contentType)
}

func accepts(types []string, contentType string) bool {
	ct, _, _ := strings.Cut(contentType, ";")
	ct = strings.ToLower(strings.TrimSpace(ct))
	major, _, _ := strings.Cut(ct, "/")
	for _, t := range types {
		t = strings.ToLower(t)
		if t == "*" || t == ct || t == major+"/*" {
			return true
		}
	}
	return false
}

// OffererConnects reports, from an answer to an a=setup:actpass offer,
// whether the offerer opens the connection (RFC 6135; RFC 4975 makes the
// offerer active when the answer has no a=setup).
func OffererConnects(answer Media) bool {
	return answer.Setup != SetupActive
}

// Answer returns the answer to offer with m as its MSRP media: the
// description Build writes, with every other m-line of the offer kept
// in its place with port 0, refused (RFC 3264 §6: as many m-lines as the
// offer, in its order; a refused stream keeps its media, transport and
// formats). m answers the offer's first MSRP media, the one Parse reads.
func Answer(offer []byte, m Media) ([]byte, error) {
	var d psdp.SessionDescription
	if err := d.Unmarshal(offer); err != nil {
		return nil, fmt.Errorf("sdp: answer: %w", err)
	}
	var before, after []byte
	chosen := false
	for _, md := range d.MediaDescriptions {
		if !chosen && usable(md) {
			chosen = true
			continue
		}
		line := "m=" + md.MediaName.Media + " 0 " + strings.Join(md.MediaName.Protos, "/") + " " +
			cmp.Or(strings.Join(md.MediaName.Formats, " "), "*") + "\r\n"
		if chosen {
			after = append(after, line...)
		} else {
			before = append(before, line...)
		}
	}
	if !chosen {
		return nil, errors.New("sdp: answer: no MSRP media in the offer")
	}
	b, err := Build(m)
	if err != nil || len(before)+len(after) == 0 {
		return b, err
	}
	at := strings.Index(string(b), "\r\nm=message ") + 2
	out := make([]byte, 0, len(b)+len(before)+len(after))
	out = append(out, b[:at]...)
	out = append(out, before...)
	out = append(out, b[at:]...)
	return append(out, after...), nil
}

// usable reports whether md is MSRP media Parse would read: m=message,
// a port, TCP/MSRP or TCP/TLS/MSRP.
func usable(md *psdp.MediaDescription) bool {
	if md.MediaName.Media != "message" || md.MediaName.Port.Value == 0 {
		return false
	}
	proto := strings.ToUpper(strings.Join(md.MediaName.Protos, "/"))
	return proto == "TCP/MSRP" || proto == "TCP/TLS/MSRP"
}
