package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/store"
	"github.com/deferpush/deferpush/test/harness"
)

// TestStallBounded: while Redis answers nothing (CLIENT PAUSE, as a Redis
// stuck in a slow command, a fork or a frozen host), a store call on the
// autopipeliner returns when its context ends, or after 3 s without one
// (the client's read timeout, which bounds every other command), with an
// error, never a false "stored": the hook and the SIP ingress answer
// within their bound, not when Redis wakes (the probe saw a 25 s stall
// answered "stored" after 25 s, long after the proxy had told the sender
// it failed). What was stored before stays.
func TestStallBounded(t *testing.T) {
	srv := harness.Redis(t)
	s, err := store.New(store.Config{URL: srv.URL()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	aor := plugin.MustParseAOR("sip:stall@example.com")
	msg := func() *plugin.Message {
		return &plugin.Message{Recipient: aor, Kind: plugin.KindSIPMessage,
			Raw: []byte("MESSAGE sip:stall@example.com SIP/2.0\r\n\r\n"), Received: time.Now()}
	}
	first := msg()
	if err := s.Append(ctx, first, plugin.Limits{}); err != nil {
		t.Fatal(err)
	}
	admin := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer admin.Close()
	const pause = 9 * time.Second
	paused := time.Now()
	if err := admin.Do(ctx, "CLIENT", "PAUSE", pause.Milliseconds(), "ALL").Err(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name     string
		deadline time.Duration // 0: none
		call     func(context.Context) error
	}{
		{"Append", 500 * time.Millisecond, func(ctx context.Context) error { return s.Append(ctx, msg(), plugin.Limits{}) }},
		{"Claim", 500 * time.Millisecond, func(ctx context.Context) error {
			_, err := s.Claim(ctx, aor, "stall-token", 10, time.Minute)
			return err
		}},
		// The push that gave up on its claim lets go of the lease: the
		// claim still runs when Redis wakes, and the Unlock, behind it on
		// the same connection, drops what it took.
		{"Unlock", 500 * time.Millisecond, func(ctx context.Context) error { return s.Unlock(ctx, aor, "stall-token") }},
		{"Append without a deadline", 0, func(ctx context.Context) error { return s.Append(ctx, msg(), plugin.Limits{}) }},
	} {
		cctx, cancel := ctx, context.CancelFunc(func() {})
		want := 3 * time.Second
		if c.deadline > 0 {
			cctx, cancel = context.WithTimeout(ctx, c.deadline)
			want = c.deadline
		}
		start := time.Now()
		err := c.call(cctx)
		took := time.Since(start)
		cancel()
		if time.Since(paused) >= pause {
			t.Fatalf("%s ran past the stall: the test proves nothing", c.name)
		}
		if err == nil {
			t.Errorf("%s during the stall succeeded", c.name)
		}
		if took < want-100*time.Millisecond || took > want+time.Second {
			t.Errorf("%s during the stall returned after %v (%v), want about %v", c.name, took, err, want)
		}
		t.Logf("%s: %v after %v", c.name, err, took.Round(time.Millisecond))
	}
	// Redis wakes: what was stored before is there, and no lease is left
	// held by the claim that ran after its caller gave up.
	waitCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		got, err := s.Claim(waitCtx, aor, "after-token", 10, time.Minute)
		if err == nil {
			if len(got) == 0 {
				t.Errorf("claim after the stall: nothing, want the messages stored")
			}
			break
		}
		if errors.Is(err, plugin.ErrLeaseLost) || waitCtx.Err() != nil {
			t.Fatalf("claim after the stall: %v (the stalled claim's lease was left held)", err)
		}
		// Still stalled: let go as a push does (this claim too runs
		// when Redis wakes), and try again.
		_ = s.Unlock(waitCtx, aor, "after-token")
		time.Sleep(100 * time.Millisecond)
	}
	if err := s.Unlock(ctx, aor, "after-token"); err != nil {
		t.Fatal(err)
	}
	for {
		page, err := s.List(waitCtx, aor, plugin.ListQuery{})
		if err == nil {
			found := false
			for _, m := range page.Messages {
				found = found || m.ID == first.ID
			}
			if !found {
				t.Fatalf("the message stored before the stall is gone: %d messages", len(page.Messages))
			}
			break
		}
		if waitCtx.Err() != nil {
			t.Fatalf("List after the stall: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
