// Package opensips decodes the JSON that the shipped OpenSIPS 3.4 script,
// opensips.cfg in this directory, posts to deferpush's hooks with
// rest_client. The registration hook is fed by the usrloc events
// E_UL_CONTACT_INSERT / E_UL_CONTACT_UPDATE (E_UL_CONTACT_DELETE for a
// removal or an expiry), whose parameters the script copies as they are:
// $param(aor) is the user part only unless usrloc runs with use_domain, so
// the script adds the domain it serves; $param(expires) is an absolute Unix
// time; $param(user_agent) is "n/a" when the client sent none, which reads
// as no User-Agent; the +sip.instance comes from the contact's attributes
// (registrar's attr_avp), the events carry none of their own.
//
// The golden files in testdata named *-live-* hold bodies captured from a
// live OpenSIPS 3.4.18 running opensips.cfg (test/opensips_hooks_test.go
// checks that OpenSIPS still posts the same members).
package opensips

import (
	"bytes"
	"encoding/json"
	"strings"
	"time"

	"github.com/deferpush/deferpush/adapters/hookjson"
	"github.com/deferpush/deferpush/plugin"
)

// event is the body of POST /hooks/opensips/registered, /unregistered and
// /expired: the usrloc event's parameters plus the domain.
type event struct {
	AOR       string       `json:"aor"`    // $param(aor): user part, or user@domain with use_domain
	Domain    string       `json:"domain"` // added by the script when aor has none
	URI       string       `json:"uri"`    // $param(uri): the Contact URI
	Received  string       `json:"received"`
	UserAgent string       `json:"user_agent"`
	Path      string       `json:"path"`
	Instance  string       `json:"instance"` // the contact's attr: its +sip.instance
	Expires   hookjson.Int `json:"expires"`  // $param(expires): absolute Unix time
	Socket    string       `json:"socket"`
	CallID    string       `json:"callid"`
	At        hookjson.At  `json:"at"` // when the event route ran: integer µs; optional
}

// noUserAgent is what usrloc reports as the user_agent of a contact whose
// REGISTER had no User-Agent header.
const noUserAgent = "n/a"

// DecodeRegistration reads a registration event. Expires is a Unix time,
// at most a year from now (plugin.MaxExpires); one that is not after now,
// however far back, makes it an unregistration for the engine, as zero
// or negative seconds do in the Kamailio hook. The uri must be a
// SIP or SIPS URI with a valid host and port (hookjson.SIPURI), and no
// member may hold a control character. Errors are *plugin.FieldError
// (plugin.ErrInvalid) naming the field.
func DecodeRegistration(body []byte, rules plugin.AORRules) (plugin.Registration, error) {
	var e event
	if err := decode(body, &e); err != nil {
		return plugin.Registration{}, err
	}
	aor, err := e.aor(rules)
	if err != nil {
		return plugin.Registration{}, err
	}
	contact := strings.TrimSpace(e.URI)
	if contact == "" {
		return plugin.Registration{}, &plugin.FieldError{Field: "uri", Problem: "missing"}
	}
	if err := hookjson.SIPURI(contact); err != nil {
		return plugin.Registration{}, &plugin.FieldError{Field: "uri", Problem: err.Error()}
	}
	if !e.Expires.Set {
		return plugin.Registration{}, &plugin.FieldError{Field: "expires", Problem: "missing"}
	}
	if e.Expires.N > time.Now().Add(plugin.MaxExpires).Unix() {
		return plugin.Registration{}, &plugin.FieldError{Field: "expires", Problem: "more than a year from now"}
	}
	// A control character would be copied into the push's requests (the
	// Path becomes Route headers) or the store; none comes so from
	// OpenSIPS. The Path is checked whole, before the split trims it.
	if name, err := hookjson.Texts("received", strings.TrimSpace(e.Received), "instance", strings.TrimSpace(e.Instance),
		"user_agent", strings.TrimSpace(e.UserAgent), "path", strings.TrimSpace(e.Path)); err != nil {
		return plugin.Registration{}, &plugin.FieldError{Field: name, Problem: err.Error()}
	}
	var path []string
	for _, p := range strings.Split(e.Path, ",") {
		p = strings.Trim(strings.TrimSpace(p), "<>")
		if p != "" {
			path = append(path, p)
		}
	}
	if err := hookjson.Path(path); err != nil {
		return plugin.Registration{}, &plugin.FieldError{Field: "path", Problem: err.Error()}
	}
	ua := strings.TrimSpace(e.UserAgent)
	if ua == noUserAgent {
		ua = ""
	}
	return plugin.Registration{
		AOR:     aor,
		Contact: contact,
		// Before 1970 reads as 1970: as much in the past, and a year
		// that time.Time still marshals (JSON takes 0 to 9999).
		Expires:   time.Unix(max(e.Expires.N, 0), 0).UTC(),
		Received:  strings.TrimSpace(e.Received),
		Instance:  strings.TrimSpace(e.Instance),
		UserAgent: ua,
		Path:      path,
		At:        e.At.T,
	}, nil
}

// DecodeUnregistration reads a contact-delete event: the AOR, the
// contact removed ("" for all of them) and, when the body has one, the
// time the event route ran.
func DecodeUnregistration(body []byte, rules plugin.AORRules) (plugin.Unregistration, error) {
	var e event
	if err := decode(body, &e); err != nil {
		return plugin.Unregistration{}, err
	}
	aor, err := e.aor(rules)
	if err != nil {
		return plugin.Unregistration{}, err
	}
	// The contact is only compared with the one recorded, but it is
	// logged and goes to the store's ordering record: no control
	// characters either.
	contact := strings.TrimSpace(e.URI)
	if err := hookjson.Text(contact); err != nil {
		return plugin.Unregistration{}, &plugin.FieldError{Field: "uri", Problem: err.Error()}
	}
	return plugin.Unregistration{AOR: aor, Contact: contact, At: e.At.T}, nil
}

// aor builds the AOR from $param(aor) and the domain: "bob" and
// "example.com" give sip:bob@example.com.
func (e event) aor(rules plugin.AORRules) (plugin.AOR, error) {
	a := strings.TrimSpace(e.AOR)
	if a == "" {
		return plugin.AOR{}, &plugin.FieldError{Field: "aor", Problem: "missing"}
	}
	if !strings.HasPrefix(a, "sip:") && !strings.HasPrefix(a, "sips:") && !strings.HasPrefix(a, "tel:") {
		if !strings.Contains(a, "@") {
			d := strings.TrimSpace(e.Domain)
			if d == "" {
				return plugin.AOR{}, &plugin.FieldError{Field: "domain", Problem: "missing, and aor has no domain"}
			}
			a += "@" + d
		}
		a = "sip:" + a
	}
	aor, err := rules.Parse(a)
	if err != nil {
		return plugin.AOR{}, &plugin.FieldError{Field: "aor", Problem: err.Error()}
	}
	return aor, nil
}

// Message is an offline MESSAGE as the message hook carries it.
type Message struct {
	Raw    []byte // the whole request ($mb)
	AOR    string // the recipient the script looked up; empty: the Request-URI
	Source string // $si:$sp, for the log
}

// DecodeMessage reads a message hook body. The raw request itself is
// checked by the caller, with the SIP ingress's rules.
func DecodeMessage(body []byte) (Message, error) {
	var m struct {
		Raw    string `json:"raw"`
		AOR    string `json:"aor"`
		Source string `json:"source"`
	}
	if err := decode(body, &m); err != nil {
		return Message{}, err
	}
	if m.Raw == "" {
		return Message{}, &plugin.FieldError{Field: "raw", Problem: "missing"}
	}
	return Message{Raw: []byte(m.Raw), AOR: strings.TrimSpace(m.AOR), Source: strings.TrimSpace(m.Source)}, nil
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
