// Package plugin is the core of deferpush: the deferred message envelope
// (Message), canonical addresses of record (AOR), the operator Policy and
// per-user settings, and the interfaces the core needs from the outside
// (Store). It imports no other package of this module but plugin/abnf
// (the lexical rules every parser shares); implementations
// (store, plugin/push, adapters) import it.
//
// A message for an offline user is parsed at the edge, canonicalised and
// appended to the recipient's mailbox:
//
//	aor, err := plugin.ParseAOR(`"Bob" <sip:bob@Example.COM>;tag=1`) // sip:bob@example.com
//	m := &plugin.Message{Recipient: aor, Kind: plugin.KindSIPMessage, Raw: raw, Received: now}
//	err = store.Append(ctx, m, policy.Limits()) // plugin.ErrMailboxFull, plugin.ErrTooLarge
//
// Errors are sentinels (ErrBadAOR, ErrMailboxFull, ErrTooLarge,
// ErrNotFound, ErrLeaseLost, ErrInvalid) tested with errors.Is; LimitError
// and FieldError carry details for replies.
package plugin
