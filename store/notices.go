package store

import "github.com/deferpush/deferpush/plugin"

// Failure notices (plugin.SweepStats.Undelivered).
//
// A message whose sender asked to hear of a failure (NotifyFailure, with
// an expiry) is also in its mailbox's dp:{aor}:f, scored by its expiry; the
// key exists only while some message waits for a notice, so a mailbox
// without any costs nothing more. No global index is needed: the message
// is in its mailbox, whose dp:mailboxes entry is due by its expiry, so the
// sweep that visits the mailbox to drop expired messages (dp_expire) takes
// the expired entries of f first, in the same call: it drops those
// messages and returns them, and Sweep reports them. An entry in flight
// under a live lease waits for its push (the mailbox stays due). Ack,
// Delete and DeleteAll take their ids out of f; Fail takes out a dead
// letter (the engine tells the sender at once); a Claim that meets such a
// message expired takes it out of q but leaves its record and its entry
// in f for the sweep. dp_expire calls the mailbox empty only when f is
// too, so such a message keeps its mailbox indexed.
//
// Notices are best effort where messages are not: a crash between
// dp_expire and the report loses a notice, never a message.

// undelivered adds the messages dp_expire returned for their senders'
// failure notices (id, record, id, record, ...) to st.
func (r *Redis) undelivered(aor plugin.AOR, res []any, st *plugin.SweepStats) {
	for i := 0; i+1 < len(res); i += 2 {
		id, _ := res[i].(string)
		rec, _ := res[i+1].(string)
		m, err := decode(aor, id, rec, "")
		if err != nil {
			r.log.Warn("failure notice of an unreadable message", "aor", aor.String(), "id", id, "err", err)
			continue
		}
		m.NotifyFailure = true
		st.Undelivered = append(st.Undelivered, m)
	}
}
