package encap

import (
	"fmt"
	"mime"
	"time"
)

// Decoded is a pushed message unwrapped. Fields the encapsulation does not
// carry are empty: a bare body has no Call-ID, message/msrp alone no From.
type Decoded struct {
	// Encapsulation is the lower-cased media type of the payload
	// ("message/sip", "multipart/mixed", ...), or of the body when bare.
	Encapsulation string
	CallID        string
	MessageID     string // the MSRP Message-ID of a message from a session
	// From and To are as written: SIP header values (tag included) for the
	// SIP forms, CPIM addresses for message/cpim.
	From, To string
	// Date is the SEND's Date for a message from a session, else the
	// MESSAGE's Date or the CPIM DateTime; zero when there is none.
	Date              time.Time
	PAssertedIdentity string // values of all P-Asserted-Identity headers, joined by ", "
	Subject           string
	ContentType       string // of the message itself
	Body              []byte // the message itself; may alias the input
}

// Decode unwraps a payload built by Build, or any payload of the same
// types: message/sip, message/sipfrag, message/msrp (one whole SEND),
// multipart/mixed holding message/sip and message/msrp parts, and
// message/cpim. Any other type is returned bare. contentType and body come
// from outside: errors wrap ErrMalformed, and no input makes Decode panic.
func Decode(contentType string, body []byte) (Decoded, error) {
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		return Decoded{}, malformed("Content-Type %q: %v", clip([]byte(contentType)), err)
	}
	d := Decoded{Encapsulation: mt}
	switch mt {
	case TypeSIP, TypeSIPFrag:
		mode := startAny
		if mt == TypeSIPFrag {
			mode = startOptional
		}
		m, err := parseSIP(body, mode, HeadLimits{})
		if err != nil {
			return Decoded{}, err
		}
		if err := d.fromSIP(m); err != nil {
			return Decoded{}, err
		}
		d.ContentType, _ = m.get(keyContentType)
		d.Body = m.body
	case TypeMSRP:
		f, err := parseSEND(body)
		if err != nil {
			return Decoded{}, err
		}
		d.fromSEND(f)
	case TypeMultipart:
		if err := d.fromMultipart(body, params["boundary"]); err != nil {
			return Decoded{}, err
		}
	case TypeCPIM:
		f, err := parseCPIM(body)
		if err != nil {
			return Decoded{}, err
		}
		d.CallID, d.MessageID, d.PAssertedIdentity = f.callID, f.messageID, f.pai
		d.From, d.To, d.Subject, d.Date = f.from, f.to, f.subject, f.date
		d.ContentType, d.Body = f.contentType, f.body
	default:
		d.ContentType, d.Body = contentType, body
	}
	return d, nil
}

func (d *Decoded) fromSIP(m *sipMsg) error {
	d.CallID, _ = m.get(keyCallID)
	d.From, _ = m.get(keyFrom)
	d.To, _ = m.get(keyTo)
	d.Subject, _ = m.get(keySubject)
	d.PAssertedIdentity = m.joined(keyPAI)
	t, _, err := m.date()
	d.Date = t
	return err
}

func (d *Decoded) fromSEND(f sendFrame) {
	d.MessageID = f.messageID
	if f.hasDate {
		d.Date = f.date
	}
	d.ContentType, d.Body = f.contentType, f.body
}

// fromMultipart reads the multipart/mixed form: one message/sip part, the
// session head, and one message/msrp part, the message.
func (d *Decoded) fromMultipart(body []byte, boundary string) error {
	if boundary == "" {
		return malformed("multipart/mixed without a boundary")
	}
	parts, err := readMultipart(body, boundary)
	if err != nil {
		return err
	}
	var sawSIP, sawMSRP bool
	var send sendFrame
	for _, p := range parts {
		mt, _, err := mime.ParseMediaType(p.contentType)
		if err != nil {
			return malformed("part Content-Type %q: %v", clip([]byte(p.contentType)), err)
		}
		switch {
		case mt == TypeSIP && !sawSIP:
			sawSIP = true
			m, err := parseSIP(p.body, startAny, HeadLimits{})
			if err != nil {
				return fmt.Errorf("message/sip part: %w", err)
			}
			if err := d.fromSIP(m); err != nil {
				return fmt.Errorf("message/sip part: %w", err)
			}
		case mt == TypeMSRP && !sawMSRP:
			sawMSRP = true
			if send, err = parseSEND(p.body); err != nil {
				return fmt.Errorf("message/msrp part: %w", err)
			}
		default:
			return malformed("unexpected %q part in multipart/mixed", clip([]byte(mt)))
		}
	}
	if !sawMSRP {
		return malformed("multipart/mixed without a message/msrp part")
	}
	d.fromSEND(send)
	return nil
}
