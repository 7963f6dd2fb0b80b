package ingress

import (
	"hash/maphash"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
)

// Merged requests (RFC 3261 §8.2.2.2): a MESSAGE without a To tag whose
// From tag, Call-ID and CSeq match a server transaction still going on,
// but that is not that transaction (another Via branch: the request
// forked upstream and came by two paths, or a stateless hop sent it
// again), is answered 482 Loop Detected, not stored a second time.
//
// sipgo matches retransmissions to their transaction but keeps no such
// index; merged keeps one. A transaction over UDP goes on for 64*T1
// (32 s, Timer J) after its answer; over TCP it ends with its answer
// (Timer J is 0), so a TCP request is tracked only while it is being
// handled. The index holds a 64-bit hash per transaction in two
// generations of at most mergedMax each: past that, requests go
// unchecked rather than the index growing.

type merged struct {
	seed maphash.Seed

	mu        sync.Mutex
	cur, prev map[uint64]mergedTx
	rotated   time.Time
}

// mergedTx is a transaction tracked: its branch, and until when (zero:
// until done is called).
type mergedTx struct {
	branch string
	until  time.Time
}

const (
	mergedWindow = 64 * 500 * time.Millisecond // Timer J over UDP
	mergedMax    = 1 << 16
)

func newMerged() *merged {
	return &merged{seed: maphash.MakeSeed(), cur: map[uint64]mergedTx{}, prev: map[uint64]mergedTx{}}
}

// key is the hash of req's From tag, Call-ID, CSeq and Request-URI; ok is false when
// req lacks one of them.
func (g *merged) key(req *sip.Request) (uint64, bool) {
	from, cid, cs := req.From(), req.CallID(), req.CSeq()
	if from == nil || cid == nil || cs == nil {
		return 0, false
	}
	tag, _ := from.Params.Get("tag")
	var h maphash.Hash
	h.SetSeed(g.seed)
	h.WriteString(tag)
	h.WriteByte(0)
	h.WriteString(cid.Value())
	h.WriteByte(0)
	h.WriteString(strconv.FormatUint(uint64(cs.SeqNo), 10))
	h.WriteByte(' ')
	h.WriteString(string(cs.MethodName))
	// The Request-URI too: a proxy forking one MESSAGE to two offline
	// users relays both to deferpush with the same From tag, Call-ID and
	// CSeq; each is a request to another mailbox, not a merge.
	h.WriteByte(0)
	h.WriteString(req.Recipient.String())
	return h.Sum64(), true
}

// begin records req's transaction and reports whether req merges with
// another one going on. done, when begin returns false, ends a
// transaction over TCP once answered (a no-op over UDP, whose
// transaction goes on for mergedWindow).
func (g *merged) begin(req *sip.Request, now time.Time) (isMerged bool, done func()) {
	k, ok := g.key(req)
	via := req.Via()
	if !ok || via == nil {
		return false, func() {}
	}
	branch, _ := via.Params.Get("branch")
	udp := strings.EqualFold(via.Transport, "UDP")
	g.mu.Lock()
	defer g.mu.Unlock()
	if now.Sub(g.rotated) >= mergedWindow {
		g.prev, g.cur, g.rotated = g.cur, make(map[uint64]mergedTx, len(g.cur)), now
	}
	for _, m := range []map[uint64]mergedTx{g.cur, g.prev} {
		if tx, found := m[k]; found && (tx.until.IsZero() || now.Before(tx.until)) {
			return tx.branch != branch, func() {}
		}
	}
	if len(g.cur) >= mergedMax {
		return false, func() {}
	}
	tx := mergedTx{branch: branch}
	if udp {
		tx.until = now.Add(mergedWindow)
		g.cur[k] = tx
		return false, func() {}
	}
	g.cur[k] = tx
	return false, func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		for _, m := range []map[uint64]mergedTx{g.cur, g.prev} {
			if t, found := m[k]; found && t.until.IsZero() && t.branch == branch {
				delete(m, k)
			}
		}
	}
}
