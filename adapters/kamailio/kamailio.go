// Package kamailio decodes the JSON that the shipped routing script,
// kamailio.cfg in this directory, posts to deferpush's hooks, into the
// plugin's types. The script builds the JSON with the jansson module from
// what Kamailio knows after save("location") (registrar's xavp_rcd) and in
// event_route[usrloc:contact-expired], and posts it with http_client from an
// async worker, so SIP workers never wait for deferpush.
//
// Kamailio prints an unset variable as "<hookjson.Null>" inside a string: every
// field treats that value as absent.
package kamailio

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/deferpush/deferpush/adapters/hookjson"
	"github.com/deferpush/deferpush/plugin"
)

// registration is the body of POST /hooks/kamailio/registered.
type registration struct {
	AOR       hookjson.String `json:"aor"`        // $tu of the REGISTER
	Contact   hookjson.String `json:"contact"`    // $xavp(ulrcd=>contact)
	Expires   hookjson.Int    `json:"expires"`    // $xavp(ulrcd=>expires): seconds from now
	Received  hookjson.String `json:"received"`   // $xavp(ulrcd=>received), or sip:$si:$sp;transport=$pr
	Instance  hookjson.String `json:"instance"`   // +sip.instance of the Contact
	UserAgent hookjson.String `json:"user_agent"` // $ua
	Path      hookjson.String `json:"path"`       // $hdr(Path): comma-separated name-addrs
	At        hookjson.At     `json:"at"`         // $TV(s).$TV(u) in the REGISTER's worker; optional
}

// DecodeRegistration reads a registration hook body. Expires is relative to
// now, at most a year (plugin.MaxExpires); zero or negative, however far
// below, makes it an unregistration for the engine (Expires is then now),
// as an expiry in the past does in the OpenSIPS hook. The contact must be
// a SIP or SIPS URI with a valid host and port (hookjson.SIPURI), and no
// member may hold a control character. Errors are *plugin.FieldError
// (plugin.ErrInvalid) naming the field.
func DecodeRegistration(body []byte, now time.Time, rules plugin.AORRules) (plugin.Registration, error) {
	var r registration
	if err := decode(body, &r); err != nil {
		return plugin.Registration{}, err
	}
	aor, err := parseAOR(r.AOR.String(), rules)
	if err != nil {
		return plugin.Registration{}, err
	}
	contact := r.Contact.String()
	if contact == "" {
		return plugin.Registration{}, &plugin.FieldError{Field: "contact", Problem: "missing"}
	}
	if err := hookjson.SIPURI(contact); err != nil {
		return plugin.Registration{}, &plugin.FieldError{Field: "contact", Problem: err.Error()}
	}
	if !r.Expires.Set {
		return plugin.Registration{}, &plugin.FieldError{Field: "expires", Problem: "missing"}
	}
	if r.Expires.N > int64(plugin.MaxExpires/time.Second) {
		return plugin.Registration{}, &plugin.FieldError{Field: "expires",
			Problem: fmt.Sprintf("%d s is more than a year (%d s)", r.Expires.N, int64(plugin.MaxExpires/time.Second))}
	}
	// A control character would be copied into the push's requests (the
	// Path becomes Route headers) or the store; none comes so from
	// Kamailio. The Path is checked whole: splitting drops what follows a
	// '>'.
	if name, err := hookjson.Texts("received", r.Received.String(), "instance", r.Instance.String(),
		"user_agent", r.UserAgent.String(), "path", r.Path.String()); err != nil {
		return plugin.Registration{}, &plugin.FieldError{Field: name, Problem: err.Error()}
	}
	path := splitPath(r.Path.String())
	if err := hookjson.Path(path); err != nil {
		return plugin.Registration{}, &plugin.FieldError{Field: "path", Problem: err.Error()}
	}
	return plugin.Registration{
		AOR:     aor,
		Contact: contact,
		// Any expiry of zero or less ends the binding now: multiplied by
		// a second, one below about -292 years would wrap round into the
		// future.
		Expires:   now.Add(time.Duration(max(r.Expires.N, 0)) * time.Second),
		Received:  r.Received.String(),
		Instance:  r.Instance.String(),
		UserAgent: r.UserAgent.String(),
		Path:      path,
		At:        r.At.T,
	}, nil
}

// binding is the body of POST /hooks/kamailio/unregistered and
// /hooks/kamailio/expired.
type binding struct {
	AOR     hookjson.String `json:"aor"`
	Contact hookjson.String `json:"contact"` // empty: every contact of the AOR
	At      hookjson.At     `json:"at"`      // as registration's; optional
}

// DecodeUnregistration reads an unregistration or contact-expired hook
// body: the AOR, the contact removed ("" for all of them) and, when the
// body has one, the proxy's time of the event.
func DecodeUnregistration(body []byte, rules plugin.AORRules) (plugin.Unregistration, error) {
	var b binding
	if err := decode(body, &b); err != nil {
		return plugin.Unregistration{}, err
	}
	aor, err := parseAOR(b.AOR.String(), rules)
	if err != nil {
		return plugin.Unregistration{}, err
	}
	// The contact is only compared with the one recorded, but it is
	// logged and goes to the store's ordering record: no control
	// characters either.
	if err := hookjson.Text(b.Contact.String()); err != nil {
		return plugin.Unregistration{}, &plugin.FieldError{Field: "contact", Problem: err.Error()}
	}
	return plugin.Unregistration{AOR: aor, Contact: b.Contact.String(), At: b.At.T}, nil
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
	Raw    hookjson.String `json:"raw"`
	AOR    hookjson.String `json:"aor"`
	Source hookjson.String `json:"source"`
}

// DecodeMessage reads a message hook body. The raw request itself is
// checked by the caller, with the SIP ingress's rules.
func DecodeMessage(body []byte) (Message, error) {
	var m message
	if err := decode(body, &m); err != nil {
		return Message{}, err
	}
	// Raw is not trimmed: its bytes are stored as they are.
	if m.Raw == "" || m.Raw == hookjson.Null {
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
	if k, dup := hookjson.DuplicateKey(body); dup {
		return &plugin.FieldError{Field: k, Problem: "given twice"}
	}
	return nil
}

func parseAOR(s string, rules plugin.AORRules) (plugin.AOR, error) {
	if s == "" {
		return plugin.AOR{}, &plugin.FieldError{Field: "aor", Problem: "missing"}
	}
	aor, err := rules.Parse(s)
	if err != nil {
		return plugin.AOR{}, &plugin.FieldError{Field: "aor", Problem: err.Error()}
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
		if p == "" || p == hookjson.Null {
			continue
		}
		if lt, gt := strings.IndexByte(p, '<'), strings.LastIndexByte(p, '>'); lt >= 0 && gt > lt {
			p = p[lt+1 : gt]
		}
		out = append(out, p)
	}
	return out
}
