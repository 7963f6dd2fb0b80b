package sip

import (
	"fmt"
	"time"

	gosip "github.com/emiago/sipgo/sip"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/plugin/encap"
)

// maxRaw bounds what the parser reads; the operator's per-message limit is
// checked later by the engine, which answers too_large rather than
// malformed.
const maxRaw = 16 << 20

// Deferred turns a raw SIP MESSAGE for an offline user into the message to
// store: the request is checked with sipgo's parser and encap.ParseRequest,
// a Date header is added when it has none (encap.AddDate), and every other
// byte is kept, so the Call-ID and identity headers reach the client
// intact. recipient, when not empty, is the AOR the proxy looked up;
// otherwise the Request-URI names the recipient. An error wraps
// ErrMalformed and says why: the request does not parse, is not a MESSAGE,
// or names no recipient.
func Deferred(raw []byte, recipient string, now time.Time) (*plugin.Message, error) {
	if len(raw) == 0 {
		return nil, fmt.Errorf("%w: empty", ErrMalformed)
	}
	p := gosip.NewParser()
	p.MaxMessageLength = maxRaw
	msg, err := p.ParseSIP(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	req, ok := msg.(*gosip.Request)
	if !ok {
		return nil, fmt.Errorf("%w: a response, not a request", ErrMalformed)
	}
	if req.Method != gosip.MESSAGE {
		return nil, fmt.Errorf("%w: method %s, not MESSAGE", ErrMalformed, req.Method)
	}
	if recipient == "" && (req.Recipient.User != "" || req.Recipient.Scheme == "tel") {
		recipient = req.Recipient.String()
	}
	if to := req.To(); recipient == "" && to != nil {
		recipient = to.Address.String()
	}
	aor, err := plugin.ParseAOR(recipient)
	if err != nil {
		return nil, fmt.Errorf("%w: no recipient: %v", ErrMalformed, err)
	}
	dated, err := encap.AddDate(raw, now)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	parsed, err := encap.ParseRequest(dated)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	sender := ""
	if from := req.From(); from != nil {
		sender = from.Address.String()
	}
	return &plugin.Message{
		Recipient:   aor,
		Sender:      sender,
		Received:    now,
		Kind:        plugin.KindSIPMessage,
		Raw:         dated,
		CallID:      parsed.CallID,
		ContentType: parsed.ContentType,
	}, nil
}
