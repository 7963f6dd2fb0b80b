package encap

import "fmt"

// Media types of the encapsulations.
const (
	TypeSIP       = "message/sip"
	TypeSIPFrag   = "message/sipfrag"
	TypeMSRP      = "message/msrp"
	TypeCPIM      = "message/cpim"
	TypeMultipart = "multipart/mixed"
)

// Kind says how a deferred message reached deferpush, which decides how it
// is stored and the encapsulations open to it.
type Kind uint8

const (
	// KindSIP is a message received in a SIP MESSAGE, stored whole.
	KindSIP Kind = iota + 1
	// KindMSRP is a message received in an MSRP session, stored as a SEND
	// frame next to the session's INVITE head.
	KindMSRP
)

func (k Kind) String() string {
	switch k {
	case KindSIP:
		return "sip"
	case KindMSRP:
		return "msrp"
	}
	return fmt.Sprintf("Kind(%d)", k)
}

// Deferred is a stored message as Build reads it.
type Deferred struct {
	Kind Kind
	// Stored is, for KindSIP, the MESSAGE as returned by AddDate; for
	// KindMSRP, the frame returned by StoredSEND.
	Stored []byte
	// Head is the session's INVITE head returned by SessionHead; KindMSRP
	// only.
	Head []byte
}

// Preference is the operator's choice of encapsulation, the policy's
// "encapsulation" value. It names the encapsulation tried first; when the
// client does not accept it, Build goes on in PreferAuto's order.
type Preference string

const (
	// PreferAuto (also the zero value) tries, for KindSIP, message/sip,
	// message/sipfrag, then message/cpim; for KindMSRP, multipart/mixed,
	// message/msrp, then message/cpim: the whole message first, then the
	// most that the client accepts of it.
	PreferAuto Preference = "auto"
	// PreferSIP and PreferSIPFrag favour the SIP form; for KindMSRP both
	// mean multipart/mixed, whose first part is the SIP head.
	PreferSIP     Preference = TypeSIP
	PreferSIPFrag Preference = TypeSIPFrag
	// PreferCPIM puts message/cpim first.
	PreferCPIM Preference = TypeCPIM
	// PreferMSRP puts message/msrp (the stored SEND alone) first for
	// KindMSRP; PreferMultipart puts multipart/mixed first, as PreferAuto
	// does. For KindSIP, which has neither form, both mean PreferAuto.
	PreferMSRP      Preference = TypeMSRP
	PreferMultipart Preference = TypeMultipart
)

// Fallback is what the policy does when the client accepts none of the
// encapsulations.
type Fallback string

const (
	// FallbackHold (also the zero value) keeps the message: Build returns
	// ErrHold.
	FallbackHold Fallback = "hold"
	// FallbackBare sends the message's own body with its own Content-Type
	// when the client accepts that type, losing the Call-ID and
	// Message-ID; otherwise it holds.
	FallbackBare Fallback = "bare"
)

// Options describe the client and the policy for one push.
type Options struct {
	// AcceptTypes is the client's SDP a=accept-types, one entry per media
	// type or "*". None accepted means every Build holds.
	AcceptTypes []string
	// AcceptWrappedTypes is the client's a=accept-wrapped-types: the types
	// the client takes inside a wrapper (RFC 4975 §8.6). Inside
	// message/cpim and multipart/mixed, Build puts only these when the
	// client gave any, else the types of AcceptTypes; the content of
	// message/sip, message/sipfrag and message/msrp is not checked, being
	// part of the encapsulated message. A stored message whose content is
	// already message/cpim goes as it is to a client that accepts
	// message/cpim, never wrapped in a second CPIM envelope.
	AcceptWrappedTypes []string
	Preference         Preference
	Fallback           Fallback
	// MaxSize is the client's a=max-size (RFC 4975 §8.6): Build returns
	// no payload larger (it tries the next encapsulation, then holds, as
	// for a type the client does not accept). Zero or less: no limit.
	MaxSize int64
	// Refused are media types the client answered 415 to in this session
	// although its accept-types take them: Build uses none of them, as
	// payload or bare body.
	Refused []string
	// Boundary is the multipart/mixed boundary; "" draws a random one.
	// Tests set it to get deterministic output.
	Boundary string
}

// Payload is the content of the outer MSRP SEND.
type Payload struct {
	ContentType string
	// Body may share memory with Deferred.Stored: do not modify it.
	Body []byte
}

// sipOrder and msrpOrder are the encapsulations Build tries, per Kind and
// Preference.
func sipOrder(p Preference) []string {
	switch p {
	case PreferSIPFrag:
		return []string{TypeSIPFrag, TypeSIP, TypeCPIM}
	case PreferCPIM:
		return []string{TypeCPIM, TypeSIP, TypeSIPFrag}
	}
	return []string{TypeSIP, TypeSIPFrag, TypeCPIM}
}

func msrpOrder(p Preference) []string {
	switch p {
	case PreferCPIM:
		return []string{TypeCPIM, TypeMultipart, TypeMSRP}
	case PreferMSRP:
		return []string{TypeMSRP, TypeMultipart, TypeCPIM}
	}
	return []string{TypeMultipart, TypeMSRP, TypeCPIM}
}

// Build returns the payload that pushes d to a client with the given
// accept-types, chosen as Options and Preference describe, no larger than
// the client's max-size. It returns ErrHold (wrapped) when nothing fits, ErrInvalid for bad Options or Kind,
// and ErrMalformed when the stored bytes do not parse.
func Build(d Deferred, o Options) (Payload, error) {
	switch o.Preference {
	case "", PreferAuto, PreferSIP, PreferSIPFrag, PreferCPIM, PreferMSRP, PreferMultipart:
	default:
		return Payload{}, invalid("preference %q", o.Preference)
	}
	switch o.Fallback {
	case "", FallbackHold, FallbackBare:
	default:
		return Payload{}, invalid("fallback %q", o.Fallback)
	}
	var (
		p   Payload
		ok  bool
		err error
	)
	switch d.Kind {
	case KindSIP:
		p, ok, err = buildSIP(d.Stored, o)
	case KindMSRP:
		p, ok, err = buildMSRP(d.Head, d.Stored, o)
	default:
		return Payload{}, invalid("kind %v", d.Kind)
	}
	if err != nil {
		return Payload{}, fmt.Errorf("build %v: %w", d.Kind, err)
	}
	if !ok {
		return Payload{}, fmt.Errorf("%w: accept-types %q, wrapped %q, max-size %d, fallback %q",
			ErrHold, o.AcceptTypes, o.AcceptWrappedTypes, o.MaxSize, o.Fallback)
	}
	return p, nil
}

func buildSIP(stored []byte, o Options) (Payload, bool, error) {
	m, err := parseRequest(stored)
	if err != nil {
		return Payload{}, false, fmt.Errorf("stored MESSAGE: %w", err)
	}
	ct, _ := m.get(keyContentType)
	for _, t := range sipOrder(o.Preference) {
		if !o.takes(t) {
			continue
		}
		var p Payload
		switch t {
		case TypeSIP:
			p = Payload{ContentType: TypeSIP, Body: sipBody(stored, m)}
		case TypeSIPFrag:
			p = Payload{ContentType: TypeSIPFrag, Body: sipfrag(stored, m)}
		case TypeCPIM:
			if accepted(ct, []string{TypeCPIM}) {
				// Already CPIM (an RCS client's page-mode message): sent
				// as it is, its IMDN headers where the client looks for
				// them, never in a second envelope.
				p = Payload{ContentType: TypeCPIM, Body: m.body}
				break
			}
			if ct == "" || !wrappable(ct, o) {
				continue
			}
			f := cpimFields{contentType: ct, body: m.body, pai: m.joined(keyPAI)}
			f.callID, _ = m.get(keyCallID)
			f.subject, _ = m.get(keySubject)
			f.date, _, _ = m.date()
			if err := m.cpimAddresses(&f); err != nil {
				return Payload{}, false, err
			}
			p = Payload{ContentType: TypeCPIM, Body: writeCPIM(f)}
		}
		if o.fits(p) {
			return p, true, nil
		}
	}
	if p := (Payload{ContentType: ct, Body: m.body}); o.Fallback == FallbackBare && ct != "" && o.takes(ct) && o.fits(p) {
		return p, true, nil
	}
	return Payload{}, false, nil
}

// takes reports whether the client takes ct as the payload's type: its
// accept-types do and it did not refuse ct in this session.
func (o Options) takes(ct string) bool {
	return accepted(ct, o.AcceptTypes) && (len(o.Refused) == 0 || !accepted(ct, o.Refused))
}

// fits reports whether p is within the client's a=max-size.
func (o Options) fits(p Payload) bool {
	return o.MaxSize <= 0 || int64(len(p.Body)) <= o.MaxSize
}

// cpimAddresses fills the CPIM From and To from the SIP ones.
func (m *sipMsg) cpimAddresses(f *cpimFields) error {
	var err error
	from, _ := m.get(keyFrom)
	to, _ := m.get(keyTo)
	if f.from, err = cpimAddress(from); err != nil {
		return err
	}
	f.to, err = cpimAddress(to)
	return err
}

// sipBody returns the message/sip variant of a stored MESSAGE: the request
// as stored, less its private headers (the sender's Authorization and
// Proxy-Authorization, Proxy-Require, Route and Record-Route), which are
// the sender's and its proxies' business, not the recipient's — pager mode
// leaves them out too. Everything else stays as stored, Via, Max-Forwards,
// CSeq and Content-Length included, as the seed's example 1 shows. A
// message without private headers is returned as it is.
func sipBody(stored []byte, m *sipMsg) []byte {
	return m.rewrite(stored, isPrivate, "")
}

// WithoutPrivate returns a stored SIP MESSAGE as a push passes it on:
// less its private headers (sipBody). stored is returned as it is when
// it has none, or does not parse.
func WithoutPrivate(stored []byte) []byte {
	m, err := parseRequest(stored)
	if err != nil || len(m.headers) == 0 {
		return stored
	}
	return sipBody(stored, m)
}

// sipfrag returns the message/sipfrag variant of a stored MESSAGE (RFC
// 3420): the request line, then, in their order and bytes, the headers
// this package reads (From, To, Call-ID, Date, P-Asserted-Identity,
// Subject, Content-Type, Content-Length), a blank line and the body. Via,
// CSeq, Max-Forwards and the like describe the hop, not the message.
func sipfrag(stored []byte, m *sipMsg) []byte {
	out := make([]byte, 0, len(stored))
	out = append(out, m.start...)
	out = append(out, "\r\n"...)
	for _, h := range m.headers {
		if h.key != "" && h.key != keyVia {
			out = append(out, stored[h.start:h.end]...)
		}
	}
	out = append(out, "\r\n"...)
	return append(out, m.body...)
}

// sessionCPIM wraps a message of an MSRP session in CPIM, with the
// addresses, Call-ID, Subject and identity of its session head.
func sessionCPIM(h *sipMsg, f sendFrame) (Payload, error) {
	c := cpimFields{messageID: f.messageID, contentType: f.contentType, body: f.body, pai: h.joined(keyPAI)}
	c.callID, _ = h.get(keyCallID)
	c.subject, _ = h.get(keySubject)
	c.date, _, _ = h.date()
	if f.hasDate {
		c.date = f.date
	}
	if err := h.cpimAddresses(&c); err != nil {
		return Payload{}, err
	}
	return Payload{ContentType: TypeCPIM, Body: writeCPIM(c)}, nil
}

func buildMSRP(head, stored []byte, o Options) (Payload, bool, error) {
	if len(head) == 0 {
		return Payload{}, false, invalid("no session head")
	}
	h, err := parseRequest(head)
	if err != nil {
		return Payload{}, false, fmt.Errorf("stored session head: %w", err)
	}
	f, err := parseSEND(stored)
	if err != nil {
		return Payload{}, false, fmt.Errorf("stored SEND: %w", err)
	}
	for _, t := range msrpOrder(o.Preference) {
		if !o.takes(t) {
			continue
		}
		var p Payload
		switch t {
		case TypeMultipart:
			if !wrappable(TypeSIP, o) || !wrappable(TypeMSRP, o) {
				continue
			}
			b := o.Boundary
			if b == "" {
				b = newBoundary()
			}
			body, err := writeMultipart(b, part{TypeSIP, head}, part{TypeMSRP, stored})
			if err != nil {
				return Payload{}, false, err
			}
			p = Payload{ContentType: TypeMultipart + `; boundary="` + b + `"`, Body: body}
		case TypeMSRP:
			p = Payload{ContentType: TypeMSRP, Body: stored}
		case TypeCPIM:
			if accepted(f.contentType, []string{TypeCPIM}) {
				p = Payload{ContentType: TypeCPIM, Body: f.body}
				break
			}
			if f.contentType == "" || !wrappable(f.contentType, o) {
				continue
			}
			if p, err = sessionCPIM(h, f); err != nil {
				return Payload{}, false, err
			}
		}
		if o.fits(p) {
			return p, true, nil
		}
	}
	if p := (Payload{ContentType: f.contentType, Body: f.body}); o.Fallback == FallbackBare && f.contentType != "" && o.takes(f.contentType) && o.fits(p) {
		return p, true, nil
	}
	return Payload{}, false, nil
}
