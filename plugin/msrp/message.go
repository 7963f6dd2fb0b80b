package msrp

import (
	"bytes"
	"context"
	"slices"
	"sort"
	"time"
)

// Message is one MSRP message, whatever the number of chunks it travels in.
type Message struct {
	// ID is the Message-ID. Send picks a random one when it is empty; a
	// resend after a failure must reuse the original ID.
	ID          string
	ContentType string
	Body        []byte
	// SuccessReport asks the receiver for a success REPORT; Send then
	// returns only once it has arrived (end-to-end delivery).
	SuccessReport bool
}

// Handler receives the messages of a session.
//
// ServeMSRP is called once per complete message, one message at a time in
// the order the messages completed. Returning nil answers the last chunk
// with 200 (and sends the success REPORT when one was asked for);
// returning a *StatusError answers with its code (use 413 or 415 to refuse
// a message); any other error answers 403. ctx ends when the session
// closes. m and its Body belong to the handler.
type Handler interface {
	ServeMSRP(ctx context.Context, s *Session, m *Message) error
}

// HandlerFunc adapts a function to a Handler.
type HandlerFunc func(ctx context.Context, s *Session, m *Message) error

// ServeMSRP calls f.
func (f HandlerFunc) ServeMSRP(ctx context.Context, s *Session, m *Message) error {
	return f(ctx, s, m)
}

var _ Handler = HandlerFunc(nil)

// partial is a message being reassembled from its chunks. It is complete
// once the chunk ended by "$" has come and every octet before its end,
// which is the total when a chunk named it (onSend checks that the "$"
// chunk ends there). It holds the chunks as they came, not a buffer as
// long as the offsets they claim: what a sender makes deferpush hold is
// what it sent (a 5-octet chunk at the end of a 1 MiB message is 5
// octets until the message is whole).
type partial struct {
	contentType string
	total       int64   // the size the chunks declare; -1 until one does
	chunks      []chunk // in the order they came; a later one wins where they overlap
	held        int64   // the octets in chunks
	have        []span  // received octet ranges, sorted, merged, 0-based [start,end)
	last        bool    // the chunk with FlagEnd has arrived
	lastEnd     int64   // end of the chunk that carried FlagEnd: the size
	updated     time.Time
}

// chunk is the body of one SEND at its 0-based offset.
type chunk struct {
	off  int64
	data []byte
}

// span is a range of octets, 0-based and half-open: [start, end).
type span struct{ start, end int64 }

// add keeps a copy of data at the 0-based offset off and records the
// range; a chunk all of whose octets came before is not kept again.
func (p *partial) add(off int64, data []byte) {
	if len(data) == 0 {
		return
	}
	s := span{off, off + int64(len(data))}
	i, j := touching(p.have, s)
	if j == i+1 && p.have[i].start <= s.start && s.end <= p.have[i].end {
		return // a repeat
	}
	p.chunks = append(p.chunks, chunk{off, bytes.Clone(data)})
	p.held += int64(len(data))
	p.have = mergeSpan(p.have, i, j, s)
}

// body assembles the complete message: its first size octets.
func (p *partial) body(size int64) []byte {
	b := make([]byte, size)
	for _, c := range p.chunks {
		if c.off < size {
			copy(b[c.off:], c.data)
		}
	}
	return b
}

// touching returns the spans have[i:j] that s overlaps or adjoins; have
// is sorted, its spans disjoint and not adjacent. i == j when s touches
// none, and i is then where s goes.
func touching(have []span, s span) (i, j int) {
	i = sort.Search(len(have), func(k int) bool { return have[k].end >= s.start })
	j = i
	for j < len(have) && have[j].start <= s.end {
		j++
	}
	return i, j
}

// mergeSpan replaces have[i:j], the spans s touches (see touching), with
// their union with s, and returns have still sorted, disjoint and not
// adjacent.
func mergeSpan(have []span, i, j int, s span) []span {
	if i < j {
		s.start = min(s.start, have[i].start)
		s.end = max(s.end, have[j-1].end)
	}
	return slices.Replace(have, i, j, s)
}

// complete reports whether every octet up to the end has arrived.
func (p *partial) complete() bool {
	if !p.last {
		return false
	}
	return p.lastEnd == 0 || len(p.have) > 0 && p.have[0].start == 0 && p.have[0].end >= p.lastEnd
}
