package push

import (
	"errors"
	"sync"
	"time"
)

// budget bounds the whole of a delivery (one Deliver: the messages of a
// claim) by what the deadlines of its steps add up to: unit (the MSRP
// timeout) once (the wait for a client that connects itself), and for
// each message started, once for the message (its answer, or its success
// REPORT) and once per SEND chunk of it. Each step has its own deadline — a SEND's local 408 once none of
// the session's transactions has moved for the timeout, the wait for a
// success REPORT, the watchdog of a message that cannot start, the wait
// for a client to connect — and a session that keeps within them keeps
// within its budget, however slow its link: a large message whose chunks
// are each answered within the timeout gets the time it takes. The budget
// holds the session to that even when something keeps a step alive that
// should not (PROBE5 F3: a client that sent a request of its own a byte
// at a time held its push for as long as it liked): over it, over is
// called with errOverBudget, which ends the session; the messages not
// confirmed by then go back unsent, no attempt charged.
type budget struct {
	unit time.Duration
	over func(error)

	mu       sync.Mutex
	deadline time.Time
	timer    *time.Timer
	stopped  bool
}

// startBudget starts a budget of one unit, from now.
func startBudget(unit time.Duration, over func(error)) *budget {
	b := &budget{unit: unit, over: over, deadline: time.Now().Add(unit)}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.timer = time.AfterFunc(unit, b.check)
	return b
}

// message adds what a message of size octets sent in chunks of
// chunkSize may take: a unit for the message and one per chunk. A nil
// budget (a delivery without a timeout) is unbounded.
func (b *budget) message(size, chunkSize int) {
	if b == nil {
		return
	}
	chunks := 1
	if chunkSize > 0 && size > chunkSize {
		chunks = (size + chunkSize - 1) / chunkSize
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.deadline = b.deadline.Add(time.Duration(1+chunks) * b.unit)
}

// check ends the delivery once its deadline has passed, and otherwise
// waits for the deadline, which messages started meanwhile pushed back.
// over is called under b.mu, so that it never runs once stop returned.
func (b *budget) check() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopped {
		return
	}
	if left := time.Until(b.deadline); left > 0 {
		b.timer.Reset(left)
		return
	}
	b.stopped = true
	b.over(errOverBudget)
}

// stop ends the budget: over is not called after it returns.
func (b *budget) stop() {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stopped = true
	b.timer.Stop()
}

var errOverBudget = errors.New("push session outlasted what its steps' deadlines add up to " +
	"(msrp.timeout once, and once per message and per SEND chunk it started): ended, its unconfirmed messages kept")
