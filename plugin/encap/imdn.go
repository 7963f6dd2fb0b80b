package encap

import (
	"bytes"
	"encoding/xml"
	"mime"
	"strconv"
	"strings"
	"time"
)

// Instant Message Disposition Notification (RFC 5438). A sender asks for
// notifications in the CPIM wrapper (RFC 3862) of a page-mode message,
// under the namespace urn:ietf:params:imdn:
//
//	NS: imdn <urn:ietf:params:imdn>
//	imdn.Message-ID: 34jk324j
//	DateTime: 2006-04-04T12:16:49-05:00
//	imdn.Disposition-Notification: positive-delivery, negative-delivery, processing
//
// deferpush stores such a message on the recipient's behalf: it is the
// intermediary of RFC 5438 that may tell the sender the message is
// "stored" (a processing notification) and that it "failed" (a delivery
// notification) when it expires or is given up undelivered. Positive
// delivery and display are the recipient's to send: the message reaches
// the client with its CPIM headers intact.

// Media types and namespace of IMDN.
const (
	TypeIMDN        = "message/imdn+xml"
	NamespaceIMDN   = "urn:ietf:params:imdn" // the CPIM namespace of IMDN headers (RFC 5438 §6.3)
	imdnXMLNS       = "urn:ietf:params:xml:ns:imdn"
	imdnDisposition = "notification"
)

// IMDNRequest is what a stored message asks of deferpush under RFC 5438.
type IMDNRequest struct {
	// MessageID is the message's imdn.Message-ID.
	MessageID string
	// DateTime is the message's CPIM DateTime, as written: the datetime
	// of the notification quotes it.
	DateTime string
	// From is the URI of the CPIM From: the sender, where notifications
	// go. To is the URI of the CPIM To, OriginalTo of imdn.Original-To
	// ("" when absent).
	From, To, OriginalTo string
	// RecordRoute are the imdn.IMDN-Record-Route URIs, in order: a
	// notification goes to the first, and carries them all as
	// imdn.IMDN-Route.
	RecordRoute []string
	// What the sender asked for.
	Processing, NegativeDelivery bool
	// PositiveDelivery: the sender asked the recipient for "delivered"
	// (the recipient's to send; deferpush forwards it).
	PositiveDelivery bool
	// Display: the sender asked the recipient for "displayed".
	Display bool
}

// Target is where a notification goes: the first IMDN-Record-Route, else
// the sender.
func (r IMDNRequest) Target() string {
	if len(r.RecordRoute) > 0 {
		return r.RecordRoute[0]
	}
	return r.From
}

// ReadIMDNRequest reads the notifications a stored SIP MESSAGE asks
// deferpush for. ok is false when it asks for none deferpush sends: its
// body is not message/cpim, it declares no IMDN namespace, has no
// imdn.Message-ID or CPIM From, asks only for positive-delivery or
// display, or is a notification itself (message/imdn+xml, or
// Content-Disposition: notification), which must never cause another.
// Errors wrap ErrMalformed.
func ReadIMDNRequest(stored []byte) (r IMDNRequest, ok bool, err error) {
	m, err := parseRequest(stored)
	if err != nil {
		return r, false, err
	}
	ct, _ := m.get(keyContentType)
	if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != TypeCPIM {
		return r, false, nil
	}
	hdrs, rest, err := cpimHeaders(m.body)
	if err != nil {
		return r, false, err
	}
	prefix := ""
	for _, h := range hdrs {
		if h[0] == "NS" {
			name, uri, found := strings.Cut(h[1], "<")
			if found && strings.TrimSuffix(strings.TrimSpace(uri), ">") == NamespaceIMDN {
				prefix = strings.TrimSpace(name) + "."
			}
		}
	}
	if prefix == "." || prefix == "" {
		return r, false, nil
	}
	for _, h := range hdrs {
		name, v := h[0], h[1]
		switch name {
		case "From":
			r.From = addressURI(v)
		case "To":
			if r.To == "" {
				r.To = addressURI(v)
			}
		case "DateTime":
			r.DateTime = v
		case prefix + "Message-ID":
			r.MessageID = v
		case prefix + "Original-To":
			r.OriginalTo = addressURI(v)
		case prefix + "IMDN-Record-Route":
			if u := addressURI(v); u != "" {
				r.RecordRoute = append(r.RecordRoute, u)
			}
		case prefix + "Disposition-Notification":
			for d := range strings.SplitSeq(v, ",") {
				switch strings.ToLower(strings.TrimSpace(d)) {
				case "processing":
					r.Processing = true
				case "negative-delivery":
					r.NegativeDelivery = true
				case "positive-delivery":
					r.PositiveDelivery = true
				case "display":
					r.Display = true
				}
			}
		}
	}
	mimeHdrs, _, err := cpimHeaders(rest)
	if err != nil {
		return r, false, err
	}
	for _, h := range mimeHdrs {
		switch strings.ToLower(h[0]) {
		case "content-type":
			if mt, _, _ := mime.ParseMediaType(h[1]); mt == TypeIMDN {
				return r, false, nil
			}
		case "content-disposition":
			if d, _, _ := mime.ParseMediaType(h[1]); d == imdnDisposition {
				return r, false, nil
			}
		}
	}
	// RFC 5438 §6.3: an IM asking for notifications carries imdn.Message-ID
	// and DateTime, which the notification's XML must give back (its
	// <datetime> is not optional, §9); without them it asks for nothing.
	if r.MessageID == "" || r.DateTime == "" || r.From == "" || !r.Processing && !r.NegativeDelivery {
		return r, false, nil
	}
	return r, true, nil
}

// addressURI is the URI of a CPIM address ([Formal-name] "<" URI ">"),
// "" when it has none fit to be a Request-URI.
func addressURI(v string) string {
	_, uri, err := splitAddress(v)
	if err != nil {
		return ""
	}
	return uri
}

// IMDN statuses deferpush sends.
const (
	// IMDNStored is the processing notification "stored": the message is
	// kept for a recipient who is offline.
	IMDNStored = "stored"
	// IMDNFailed is the delivery notification "failed": the message
	// expired or was given up undelivered.
	IMDNFailed = "failed"
	// IMDNDelivered is the delivery notification "delivered", a
	// recipient's (the reference client sends it).
	IMDNDelivered = "delivered"
)

// Notification is what deferpush sends a sender: a message/cpim body
// holding a message/imdn+xml document.
type Notification struct {
	// Status is IMDNStored, IMDNFailed or (a recipient's) IMDNDelivered.
	Status string
	// Recipient is the URI of the recipient deferpush stores for: the
	// CPIM From of the notification and its recipient-uri.
	Recipient string
	// MessageID is the notification's own imdn.Message-ID (RFC 5438
	// §6.3 wants one); Now its DateTime.
	MessageID string
	Now       time.Time
}

// BuildNotification returns the message/cpim body of notification n
// about the message that made request r (RFC 5438 §7.1.1.3 and §7.2):
// CPIM From the recipient, To the sender, the IMDN namespace, its own
// imdn.Message-ID and DateTime, the sender's IMDN-Record-Route as
// imdn.IMDN-Route, no imdn.Disposition-Notification (a notification asks
// for none), and the part Content-Type: message/imdn+xml with
// Content-Disposition: notification. The XML names the message
// (message-id, datetime), the recipient (recipient-uri, and
// original-recipient-uri: imdn.Original-To, else the CPIM To) and the
// status. Values are XML-escaped.
func BuildNotification(r IMDNRequest, n Notification) (contentType string, body []byte) {
	var doc bytes.Buffer
	doc.WriteString(`<?xml version="1.0" encoding="UTF-8"?>` + "\r\n")
	doc.WriteString(`<imdn xmlns="` + imdnXMLNS + `">` + "\r\n")
	element := func(name, v string) {
		doc.WriteString("<" + name + ">")
		_ = xml.EscapeText(&doc, []byte(v))
		doc.WriteString("</" + name + ">\r\n")
	}
	element("message-id", r.MessageID)
	element("datetime", r.DateTime)
	element("recipient-uri", n.Recipient)
	orig := r.OriginalTo
	if orig == "" {
		orig = r.To
	}
	if orig != "" {
		element("original-recipient-uri", orig)
	}
	kind := "delivery-notification"
	if n.Status == IMDNStored {
		kind = "processing-notification"
	}
	doc.WriteString("<" + kind + "><status><" + n.Status + "/></status></" + kind + ">\r\n")
	doc.WriteString("</imdn>\r\n")

	var b bytes.Buffer
	b.WriteString("From: <" + n.Recipient + ">\r\n")
	b.WriteString("To: <" + r.From + ">\r\n")
	b.WriteString("NS: imdn <" + NamespaceIMDN + ">\r\n")
	b.WriteString("imdn.Message-ID: " + n.MessageID + "\r\n")
	b.WriteString("DateTime: " + n.Now.UTC().Format(time.RFC3339) + "\r\n")
	for _, u := range r.RecordRoute {
		b.WriteString("imdn.IMDN-Route: <" + u + ">\r\n")
	}
	b.WriteString("\r\n")
	b.WriteString("Content-Type: " + TypeIMDN + "\r\n")
	b.WriteString("Content-Disposition: " + imdnDisposition + "\r\n")
	b.WriteString("Content-Length: " + strconv.Itoa(doc.Len()) + "\r\n\r\n")
	b.Write(doc.Bytes())
	return TypeCPIM, b.Bytes()
}
