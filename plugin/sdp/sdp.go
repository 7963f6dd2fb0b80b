// Package sdp builds and reads the SDP of MSRP sessions (RFC 4975 §8,
// RFC 6135): an m=message line with TCP/MSRP or TCP/TLS/MSRP, a=path,
// a=accept-types, a=accept-wrapped-types and a=setup.
package sdp

import (
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"strings"

	psdp "github.com/pion/sdp/v3"

	"github.com/deferpush/deferpush/plugin/msrp"
)

// Setup values of RFC 6135 (a=setup).
const (
	SetupActPass = "actpass" // the offerer's default: either side may connect
	SetupActive  = "active"  // this side connects
	SetupPassive = "passive" // this side waits for the connection
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
	proto := []string{"TCP", "MSRP"}
	if self.Secure {
		proto = []string{"TCP", "TLS", "MSRP"}
	}
	// The origin's session id only has to be unique per offerer: derive it
	// from the MSRP session id so that a description is reproducible.
	h := fnv.New64a()
	h.Write([]byte(self.SessionID))
	id := h.Sum64() >> 1
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
			MediaName: psdp.MediaName{
				Media:   "message",
				Port:    psdp.RangedPort{Value: port},
				Protos:  proto,
				Formats: []string{"*"},
			},
			Attributes: m.attributes(),
		}},
	}
	b, err := d.Marshal()
	if err != nil {
		return nil, fmt.Errorf("sdp: build: %w", err)
	}
	return b, nil
}

// attributes are the media's a= lines: accept-types, accept-wrapped-types,
// path and setup (actpass when not set), in that order.
func (m Media) attributes() []psdp.Attribute {
	setup := m.Setup
	if setup == "" {
		setup = SetupActPass
	}
	attrs := []psdp.Attribute{psdp.NewAttribute("accept-types", strings.Join(m.AcceptTypes, " "))}
	if m.AcceptWrappedTypes != nil {
		attrs = append(attrs, psdp.NewAttribute("accept-wrapped-types", strings.Join(m.AcceptWrappedTypes, " ")))
	}
	return append(attrs,
		psdp.NewAttribute("path", msrp.FormatPath(m.Path)),
		psdp.NewAttribute("setup", setup),
	)
}

// Parse reads the first MSRP media of a session description.
func Parse(b []byte) (Media, error) {
	var d psdp.SessionDescription
	if err := d.Unmarshal(b); err != nil {
		return Media{}, fmt.Errorf("sdp: parse: %w", err)
	}
	for _, md := range d.MediaDescriptions {
		if md.MediaName.Media != "message" || md.MediaName.Port.Value == 0 {
			continue
		}
		proto := strings.ToUpper(strings.Join(md.MediaName.Protos, "/"))
		if proto != "TCP/MSRP" && proto != "TCP/TLS/MSRP" {
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
		return m, nil
	}
	return Media{}, errors.New("sdp: parse: no MSRP media")
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
