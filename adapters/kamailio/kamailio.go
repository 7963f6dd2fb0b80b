// Package kamailio decodes the JSON that the shipped routing script,
// kamailio.cfg in this directory, posts to deferpush's hooks, into the
// plugin's types. The script builds the JSON with the jansson module from
// what Kamailio knows after save("location") (registrar's xavp_rcd) and in
// event_route[usrloc:contact-expired], and posts it with http_client from an
// async worker, so SIP workers never wait for deferpush.
//
// Kamailio prints an unset variable as "<null>" inside a string: every
// field treats that value as absent.
package kamailio

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/deferpush/deferpush/plugin"
)

// null is how Kamailio prints an unset variable.
const null = "<null>"

// field is a string member that may come as "<null>" or be missing.
type field string

func (f field) String() string {
	s := strings.TrimSpace(string(f))
	if s == null {
		return ""
	}
	return s
}

// seconds is a number of seconds given as a JSON number or a numeric
// string (jansson_set "integer" or "string").
type seconds struct {
	set bool
	n   int64
}

func (s *seconds) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if string(b) == "null" {
		return nil
	}
	if len(b) > 0 && b[0] == '"' {
		var str string
		if err := json.Unmarshal(b, &str); err != nil {
			return err
		}
		b = []byte(strings.TrimSpace(str))
		if str == null || str == "" {
			return nil
		}
	}
	n, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil {
		return fmt.Errorf("not a number of seconds: %s", b)
	}
	s.set, s.n = true, n
	return nil
}

// registration is the body of POST /hooks/kamailio/registered.
type registration struct {
	AOR       field   `json:"aor"`        // $tu of the REGISTER
	Contact   field   `json:"contact"`    // $xavp(ulrcd=>contact)
	Expires   seconds `json:"expires"`    // $xavp(ulrcd=>expires): seconds from now
	Received  field   `json:"received"`   // $xavp(ulrcd=>received), or sip:$si:$sp;transport=$pr
	Instance  field   `json:"instance"`   // +sip.instance of the Contact
	UserAgent field   `json:"user_agent"` // $ua
	Path      field   `json:"path"`       // $hdr(Path): comma-separated name-addrs
}

// DecodeRegistration reads a registration hook body. Expires is relative to
// now; zero or negative makes it an unregistration for the engine. Errors
// are *plugin.FieldError (plugin.ErrInvalid) naming the field.
func DecodeRegistration(body []byte, now time.Time) (plugin.Registration, error) {
	var r registration
	if err := decode(body, &r); err != nil {
		return plugin.Registration{}, err
	}
	aor, err := parseAOR(r.AOR.String())
	if err != nil {
		return plugin.Registration{}, err
	}
	contact := r.Contact.String()
	if contact == "" {
		return plugin.Registration{}, &plugin.FieldError{Field: "contact", Problem: "missing"}
	}
	if !r.Expires.set {
		return plugin.Registration{}, &plugin.FieldError{Field: "expires", Problem: "missing"}
	}
	return plugin.Registration{
		AOR:       aor,
		Contact:   contact,
		Expires:   now.Add(time.Duration(r.Expires.n) * time.Second),
		Received:  r.Received.String(),
		Instance:  r.Instance.String(),
		UserAgent: r.UserAgent.String(),
		Path:      splitPath(r.Path.String()),
	}, nil
}

// binding is the body of POST /hooks/kamailio/unregistered and
// /hooks/kamailio/expired.
type binding struct {
	AOR     field `json:"aor"`
	Contact field `json:"contact"` // empty: every contact of the AOR
}

// DecodeUnregistration reads an unregistration or contact-expired hook
// body: the AOR and the contact removed ("" for all of them).
func DecodeUnregistration(body []byte) (plugin.AOR, string, error) {
	var b binding
	if err := decode(body, &b); err != nil {
		return "", "", err
	}
	aor, err := parseAOR(b.AOR.String())
	if err != nil {
		return "", "", err
	}
	return aor, b.Contact.String(), nil
}

// Message is an offline MESSAGE as the message hook carries it.
type Message struct {
	// Raw is the whole SIP request as Kamailio received it ($mb).
	Raw []byte
	// AOR is the recipient the script looked up ($tu or sip:$rU@$rd);
	// empty lets the Request-URI name it.
	AOR string
	// Source is where the request came from ($si:$sp), for the log.
	Source string
}

type message struct {
	Raw    field `json:"raw"`
	AOR    field `json:"aor"`
	Source field `json:"source"`
}

// DecodeMessage reads a message hook body. The raw request itself is
// checked by the caller, with the SIP ingress's rules.
func DecodeMessage(body []byte) (Message, error) {
	var m message
	if err := decode(body, &m); err != nil {
		return Message{}, err
	}
	// Raw is not trimmed: its bytes are stored as they are.
	if m.Raw == "" || m.Raw == null {
		return Message{}, &plugin.FieldError{Field: "raw", Problem: "missing"}
	}
	return Message{Raw: []byte(m.Raw), AOR: m.AOR.String(), Source: m.Source.String()}, nil
}

func decode(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(v); err != nil {
		return &plugin.FieldError{Field: "body", Problem: "not the expected JSON object: " + err.Error()}
	}
	if dec.More() {
		return &plugin.FieldError{Field: "body", Problem: "more than one JSON value"}
	}
	return nil
}

func parseAOR(s string) (plugin.AOR, error) {
	if s == "" {
		return "", &plugin.FieldError{Field: "aor", Problem: "missing"}
	}
	aor, err := plugin.ParseAOR(s)
	if err != nil {
		return "", &plugin.FieldError{Field: "aor", Problem: err.Error()}
	}
	return aor, nil
}

// splitPath splits a Path header value into its URIs, in order; a comma
// inside <...> or a quoted string does not split.
func splitPath(v string) []string {
	var out []string
	depth, quoted, start := 0, false, 0
	for i := 0; i <= len(v); i++ {
		if i < len(v) {
			switch c := v[i]; {
			case c == '"' && (i == 0 || v[i-1] != '\\'):
				quoted = !quoted
			case quoted:
			case c == '<':
				depth++
			case c == '>':
				depth--
			}
			if v[i] != ',' || quoted || depth > 0 {
				continue
			}
		}
		p := strings.TrimSpace(v[start:i])
		start = i + 1
		if p == "" || p == null {
			continue
		}
		if lt, gt := strings.IndexByte(p, '<'), strings.LastIndexByte(p, '>'); lt >= 0 && gt > lt {
			p = p[lt+1 : gt]
		}
		out = append(out, p)
	}
	return out
}
