// Package ingress is deferpush's SIP ingress and the one place where the outcome
// of storing a deferred message becomes a SIP reply.
//
// The proxy hands deferpush a message for an offline user in one of two ways:
//
//   - a SIP MESSAGE, either inside a hook call (the route script posts the raw
//     request; see Deferred) or relayed to deferpush's SIP listener
//     (Ingress.OnMessage, kamailio.cfg's STORE_VIA_SIP): it is checked with
//     sipgo's parser, dated (encap.AddDate) and stored whole (less the Via
//     the relaying proxy added), and the sender gets 202 Accepted;
//   - a session-mode INVITE with an MSRP offer (Ingress.OnInvite): deferpush
//     answers, takes the SENDs on its MSRP listener, stores each complete
//     message as a SEND frame (encap.StoredSEND) next to the INVITE's head
//     (encap.SessionHead), answers each 200, and ends with the BYE.
//
// Outcome maps the engine's errors to the reply the sender gets; the hooks
// of package api send the same mapping back to the route script.
package ingress
