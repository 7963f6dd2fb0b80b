// Package msrp is an MSRP endpoint (RFC 4975) on the standard library
// alone, used both to push deferred messages to a client and to receive
// the messages of a session-mode INVITE.
//
// The wire codec is Reader and Writer: frames are delimited by their
// end-line, never by a length, and Limits bound what is read. URI, ParseURI
// and ParsePath handle msrp: and msrps: URIs and paths.
//
// A Session is one MSRP session. It is bound to a connection either
// actively (Session.Connect dials the peer's path and sends a bodiless
// SEND, RFC 6135 a=setup:active) or passively (Listener.Add, then the peer
// connects to the Listener, which hands each connection to the session
// named by its To-Path: one URI, equal to the session's, RFC 4975 §7.3).
// Either way, Session.Send sends a message in chunks of Config.ChunkSize
// with pipelining, and Config.Handler receives the peer's messages
// reassembled. Send returns when the message is acknowledged: every chunk
// answered 200 and, when asked for, success REPORTs covering the whole
// message received (one for all of it, or one per chunk, added up).
// Session.Start pipelines whole messages: it returns once the message is
// on the wire, in call order, and a wait function that blocks until it is
// acknowledged. Errors carrying an MSRP status are
// *StatusError; a success REPORT that never came is ErrNoReport.
//
// Relays (RFC 4976) take part on both sides. A session that connects
// itself through a relay is registered with Listener.AddActive, so that
// the REPORTs the relay brings over a connection of its own reach it;
// Session checks each (source, path, Message-ID, Byte-Range) before it
// counts. A client behind a relay uses DialRelay (AUTH with digest, the
// Use-Path) and Relay.Add to receive and send through it.
//
// Connect and Send take a context; a Listener runs with Run(ctx) until
// Close; a Session ends with Close.
package msrp
