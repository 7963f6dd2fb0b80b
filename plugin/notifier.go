package plugin

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"
)

// Disposition is what deferpush tells the sender of a stored message, as
// the intermediary that stores it for an offline recipient (RFC 5438
// IMDN). Telling of delivery and display is the recipient's own.
type Disposition string

const (
	// DispositionStored is a processing notification: the message is
	// stored for a recipient who is offline.
	DispositionStored Disposition = "stored"
	// DispositionFailed is a delivery notification: the message expired
	// or was dead-lettered undelivered.
	DispositionFailed Disposition = "failed"
)

// Notifier sends senders the notifications they asked for. plugin/push
// implements it over SIP MESSAGE, through the proxy, which stores a
// notification like any message when the sender is offline. A
// notification never asks for notifications itself, so none can loop.
type Notifier interface {
	// Requests reports which notifications m's sender asked deferpush
	// for: stored (now), failed (should m expire or be dead-lettered).
	Requests(m *Message) (stored, failed bool)
	// Notify sends m's sender the notification of d.
	Notify(ctx context.Context, m *Message, d Disposition) error
}

// errNoticeDropped reports a notification dropped because the queue of
// notifications to send was full.
var errNoticeDropped = errors.New("plugin: notification dropped: too many waiting")

// NoticeDropped reports whether err (given to Observer.Notified) says the
// notification was dropped unsent because too many were waiting.
func NoticeDropped(err error) bool { return errors.Is(err, errNoticeDropped) }

// notices sends notifications in the background: a store, a dead letter
// or a sweep only queues them, so that a slow or absent sender's proxy
// never holds them up. A notification is best effort: one still queued
// when the engine stops, or refused by the proxy, is not sent again.
type notices struct {
	n        Notifier
	log      *slog.Logger
	notified func(Disposition, error) // the observer's, or a no-op
	queue    chan notice
}

type notice struct {
	m *Message
	d Disposition
}

const (
	// noticeQueue bounds the notifications waiting; noticeWorkers send
	// them, each waiting at most noticeTimeout for the proxy's answer.
	noticeQueue   = 4096
	noticeWorkers = 4
	noticeTimeout = 10 * time.Second
)

func newNotices(n Notifier, log *slog.Logger, obs Observer) *notices {
	q := &notices{n: n, log: log, notified: func(Disposition, error) {}, queue: make(chan notice, noticeQueue)}
	if obs != nil {
		q.notified = obs.Notified
	}
	return q
}

// requests is Notifier.Requests; none without a Notifier.
func (q *notices) requests(m *Message) (stored, failed bool) {
	if q == nil {
		return false, false
	}
	return q.n.Requests(m)
}

// send queues the notification d of m (a copy: the caller's buffers may
// be reused once it returns); when the queue is full it is dropped (and
// counted).
func (q *notices) send(m *Message, d Disposition) {
	if q == nil {
		return
	}
	c := *m
	c.Raw, c.Invite = bytes.Clone(m.Raw), bytes.Clone(m.Invite)
	select {
	case q.queue <- notice{m: &c, d: d}:
	default:
		q.log.Warn("notification dropped", "aor", m.Recipient, "msg_id", m.ID, "disposition", d)
		q.notified(d, errNoticeDropped)
	}
}

// Run sends queued notifications until ctx ends.
func (q *notices) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for range noticeWorkers {
		wg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case nt := <-q.queue:
					sctx, cancel := context.WithTimeout(ctx, noticeTimeout)
					err := q.n.Notify(sctx, nt.m, nt.d)
					cancel()
					if err != nil && ctx.Err() == nil {
						q.log.Warn("notification not sent", "aor", nt.m.Recipient, "msg_id", nt.m.ID, "disposition", nt.d, "err", err)
					}
					if ctx.Err() == nil {
						q.notified(nt.d, err)
					}
				}
			}
		})
	}
	wg.Wait()
	return nil
}
