package plugin_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/plugin/plugintest"
)

// ackLog is a store that records the engine's Ack and Fail calls, and how
// many messages its Acks removed.
type ackLog struct {
	*plugintest.Store
	mu    sync.Mutex
	calls []string // "ack <n>" or "fail"
	acked int
}

func (s *ackLog) Ack(ctx context.Context, aor plugin.AOR, token string, ids ...string) (int, error) {
	n, err := s.Store.Ack(ctx, aor, token, ids...)
	s.mu.Lock()
	s.calls = append(s.calls, fmt.Sprint("ack ", len(ids)))
	s.acked += n
	s.mu.Unlock()
	return n, err
}

// Finish is logged as "finish <n>", its acks counted as Ack's.
func (s *ackLog) Finish(ctx context.Context, aor plugin.AOR, token string, ids ...string) (int, error) {
	n, err := s.Store.Finish(ctx, aor, token, ids...)
	s.mu.Lock()
	s.calls = append(s.calls, fmt.Sprint("finish ", len(ids)))
	s.acked += n
	s.mu.Unlock()
	return n, err
}

func (s *ackLog) Fail(ctx context.Context, aor plugin.AOR, token, id, reason string, maxAttempts int) (bool, error) {
	s.mu.Lock()
	s.calls = append(s.calls, "fail")
	s.mu.Unlock()
	return s.Store.Fail(ctx, aor, token, id, reason, maxAttempts)
}

func (s *ackLog) removed() int { s.mu.Lock(); defer s.mu.Unlock(); return s.acked }

// windowPusher confirms every message, and before each confirmation
// checks what a crash would push again: the messages the client has
// confirmed (this one included) that the store still holds.
type windowPusher struct {
	fakePusher
	st     *ackLog
	window int
	mu     sync.Mutex
	worst  int // most confirmed and not yet acked, over the push
	total  int
}

func (p *windowPusher) Open(ctx context.Context, t plugin.Target) (plugin.PushSession, error) {
	return &windowSession{p: p}, nil
}

type windowSession struct{ p *windowPusher }

func (s *windowSession) Deliver(ctx context.Context, msgs []*plugin.Message, done func(*plugin.Message, error)) error {
	for _, m := range msgs {
		s.p.mu.Lock()
		s.p.got = append(s.p.got, m.CallID)
		s.p.mu.Unlock()
		if m.CallID == "call-20" {
			done(m, &plugin.RejectedError{Status: 415, Reason: "Unsupported Media Type"})
			continue
		}
		// The client confirmed m: from here a crash pushes it again
		// until its ack.
		s.p.mu.Lock()
		s.p.total++
		s.p.worst = max(s.p.worst, s.p.total-s.p.st.removed())
		s.p.mu.Unlock()
		done(m, nil)
	}
	return nil
}

func (s *windowSession) Close(ctx context.Context) error { return nil }

// TestEngineAcksAWindowAtATime: the push acks confirmed messages 16 to a
// call (the session's window), flushes before a Fail and before the
// next claim, and acks the last ones with the unlock (Finish), so that a
// crash at any moment would push at most one window again; every message
// is acked once.
func TestEngineAcksAWindowAtATime(t *testing.T) {
	st := &ackLog{Store: plugintest.NewStore(nil)}
	ctx := context.Background()
	pol := plugin.DefaultPolicy()
	pol.RetryBackoff = 0
	if err := st.SetPolicy(ctx, pol, "test"); err != nil {
		t.Fatal(err)
	}
	p := &windowPusher{st: st, window: 16}
	rec := &recorder{ch: make(chan plugin.PushReport, 10)}
	eng := startEngine(t, plugin.EngineConfig{Store: st, Pusher: p, Observer: rec, Batch: 40, LockTTL: 5 * time.Second})
	e := &engineEnv{st: st.Store, eng: eng, rec: rec}
	want := e.store(t, 45)
	e.register(t)
	rep := e.report(t)
	if rep.Delivered != 44 || rep.Failed != 1 {
		t.Errorf("report = %+v, want 44 delivered, 1 failed", rep)
	}
	if d := cmp.Diff(want, p.got); d != "" {
		t.Errorf("pushed (-want +got):\n%s", d)
	}
	// Claims of 40 and 5. The first: 16 acked, 4 before the Fail of
	// call-20, 16 more, 3 before the second claim; the second: 5, with
	// the unlock.
	st.mu.Lock()
	calls := st.calls
	st.mu.Unlock()
	if d := cmp.Diff([]string{"ack 16", "ack 4", "fail", "ack 16", "ack 3", "finish 5"}, calls); d != "" {
		t.Errorf("store calls (-want +got):\n%s", d)
	}
	if p.worst > p.window {
		t.Errorf("up to %d confirmed messages were not acked at once, want at most the window (%d)", p.worst, p.window)
	}
	if p.worst != p.window {
		t.Errorf("at most %d confirmed messages were waiting for their ack; the window is %d", p.worst, p.window)
	}
	if c := e.counts(t); c != (plugin.Counts{Pending: 1}) {
		t.Errorf("stored after the push: %+v, want the refused message pending", c)
	}
}
