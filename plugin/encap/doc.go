// Package encap builds and reads the MSRP payloads that carry a deferred
// instant message to its recipient, in the wire format of the OMA change
// request kept in shared/seed (appendix D2, "Pushing Deferred Messages").
//
// A message reaches deferpush in one of two ways, and each is stored in the
// form the push will need:
//
//   - In a SIP MESSAGE: the ingress calls [ParseRequest] to check it and
//     [AddDate] to give it a Date header, and stores the result whole.
//   - In an MSRP session: the ingress keeps the session's INVITE head
//     ([SessionHead]) and each received message as a SEND frame
//     ([StoredSEND]).
//
// At push time [Build] picks the encapsulation from what the client's SDP
// a=accept-types and a=accept-wrapped-types accept and from the operator's
// [Preference] and [Fallback]:
//
//   - from a SIP MESSAGE: message/sip (the stored MESSAGE, less the
//     sender's credentials and the proxies' Route and Record-Route),
//     message/sipfrag (start line, identity headers and body), or
//     message/cpim (RFC 3862);
//   - from an MSRP session: multipart/mixed holding message/sip (the INVITE
//     head) and message/msrp (the stored SEND), message/msrp alone, or
//     message/cpim;
//   - otherwise the bare body when the policy allows it, or [ErrHold].
//
// The Call-ID and the MSRP Message-ID of the deferred message are never
// changed, and From, To, P-Asserted-Identity and Subject are carried, so a
// client can correlate and de-duplicate. [Decode] reverses any of these
// encapsulations; the reference client and the tests use it.
//
// A client that takes no MSRP gets its messages in pager mode instead:
// [PageOf] gives the part of a SIP MESSAGE that comes from the stored
// message (its headers as stored, less the sender's hop and routing, and
// its body). A stored message whose CPIM body asks for disposition
// notifications (RFC 5438) is read by [ReadIMDNRequest], and
// [BuildNotification] writes the "stored" and "failed" notifications
// deferpush sends as the intermediary that stored it.
//
// The seed's examples are reproduced as golden files under testdata, in
// correct RFC form: golden_test.go lists each deviation from the seed's
// literal text (its indentation, stray spaces, a wrong Byte-Range and
// weekday, the P-Asserted-Identity syntax, the multipart delimiters).
//
// All text is written with CRLF line ends and read strictly: a bare CR or LF
// is an error. The package works on bytes and imports only the standard
// library, so that the SIP ingress, the store and the pusher can share it
// without depending on one another.
package encap
