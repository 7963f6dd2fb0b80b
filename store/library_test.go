package store

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/store/storetest"
	"github.com/deferpush/deferpush/test/harness"
)

var libBob = plugin.MustParseAOR("sip:bob@example.com")

func libMessage(body string) *plugin.Message {
	return &plugin.Message{Recipient: libBob, Kind: plugin.KindSIPMessage, Raw: []byte(body), Received: time.Now()}
}

// commandCalls returns INFO commandstats' calls of cmd (lower case).
func commandCalls(t *testing.T, c redis.UniversalClient, cmd string) int64 {
	t.Helper()
	info, err := c.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_"+cmd+":calls="); ok {
			n, _, _ := strings.Cut(rest, ",")
			var v int64
			for _, ch := range n {
				v = v*10 + int64(ch-'0')
			}
			return v
		}
	}
	return 0
}

// TestFunctionLibrary: on Redis 7 the store loads its library once
// (FUNCTION LOAD), calls it with FCALL, replaces a library of another
// version, and loads it again when the server lost it (FUNCTION FLUSH, as
// after a restart without persistence) for every kind of call: alone, in
// a pipeline, through the autopipeliner.
func TestFunctionLibrary(t *testing.T) {
	srv := harness.Redis(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { c.Close() })
	ctx := context.Background()
	// An older deferpush left its library.
	old := "#!lua name=deferpush\nredis.register_function('dp_version', function() return 'old' end)"
	if err := c.FunctionLoad(ctx, old).Err(); err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Client: c})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Append(ctx, libMessage("one"), plugin.Limits{}); err != nil {
		t.Fatal(err)
	}
	if v, err := c.FCall(ctx, "dp_version", nil).Text(); err != nil || v != library.version {
		t.Fatalf("dp_version = %q, %v; want %q", v, err, library.version)
	}
	if s.fn.mode.Load() != modeFunction {
		t.Fatalf("mode = %d, want FCALL", s.fn.mode.Load())
	}
	var claimed []*plugin.Message
	steps := []struct {
		name string
		do   func() error
	}{
		{"append (autopipeliner)", func() error { return s.Append(ctx, libMessage("two"), plugin.Limits{}) }},
		{"claim (pipeline)", func() (err error) { claimed, err = s.Claim(ctx, libBob, "t", 1, time.Minute); return err }},
		{"ack (autopipeliner)", func() error {
			if n, err := s.Ack(ctx, libBob, "t", claimed[0].ID); n != 1 || err != nil {
				return fmt.Errorf("acked %d, %w", n, err)
			}
			return nil
		}},
		{"count (alone)", func() error { _, err := s.Count(ctx, libBob); return err }},
		{"sweep (pipeline)", func() error { _, err := s.Sweep(ctx, time.Now()); return err }},
	}
	for _, st := range steps {
		if err := c.FunctionFlush(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		if err := st.do(); err != nil {
			t.Errorf("%s after FUNCTION FLUSH: %v", st.name, err)
		}
	}
	n, err := s.Count(ctx, libBob)
	if err != nil || n != (plugin.Counts{Pending: 1}) {
		t.Errorf("Count = %+v, %v; want the second message pending", n, err)
	}
	if evals := commandCalls(t, c, "evalsha") + commandCalls(t, c, "eval"); evals != 0 {
		t.Errorf("%d EVAL calls on Redis 7, want none", evals)
	}
}

// TestFunctionLibraryAfterRestart: a redis-server restarted without
// persistence has lost the library (and the data); the store goes on.
func TestFunctionLibraryAfterRestart(t *testing.T) {
	srv := harness.Redis(t)
	s, err := New(Config{URL: srv.URL()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx := context.Background()
	if err := s.Append(ctx, libMessage("before"), plugin.Limits{}); err != nil {
		t.Fatal(err)
	}
	srv.Kill()
	srv.Start(t)
	var err2 error
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if err2 = s.Append(ctx, libMessage("after"), plugin.Limits{}); err2 == nil {
			break
		}
	}
	if err2 != nil {
		t.Fatalf("Append after the restart: %v", err2)
	}
	msgs, err := s.Claim(ctx, libBob, "t", 10, time.Minute)
	if err != nil || len(msgs) != 1 || string(msgs[0].Raw) != "after" {
		t.Fatalf("Claim after the restart = %d messages, %v; want the one stored after", len(msgs), err)
	}
}

// TestEvalForm runs the conformance suite on a real Redis with the
// library run through EVALSHA, as on a Redis without FUNCTION (< 7): the
// same source behind the prelude, in Redis's own Lua.
func TestEvalForm(t *testing.T) {
	srv := harness.Redis(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { c.Close() })
	storetest.Run(t, func(t *testing.T, now func() time.Time) plugin.Store {
		if err := c.FlushAll(context.Background()).Err(); err != nil {
			t.Fatal(err)
		}
		s, err := New(Config{Client: c, Now: now})
		if err != nil {
			t.Fatal(err)
		}
		s.fn.mode.Store(modeEval)
		return s
	})
	if n := commandCalls(t, c, "fcall"); n != 0 {
		t.Errorf("%d FCALL calls in EVAL form, want none", n)
	}
	if n := commandCalls(t, c, "evalsha"); n == 0 {
		t.Error("no EVALSHA call in EVAL form")
	}
}

// TestEvalFormReloads: in EVAL form a script cache flushed from the server
// (SCRIPT FLUSH, a restart without persistence) is loaded again, for a
// call alone, in a pipeline and through the autopipeliner.
func TestEvalFormReloads(t *testing.T) {
	srv := harness.Redis(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { c.Close() })
	s, err := New(Config{Client: c})
	if err != nil {
		t.Fatal(err)
	}
	s.fn.mode.Store(modeEval)
	ctx := context.Background()
	steps := []func() error{
		func() error { return s.Append(ctx, libMessage("one"), plugin.Limits{}) },
		func() error { _, err := s.Claim(ctx, libBob, "t", 1, time.Minute); return err },
		func() error { _, err := s.Count(ctx, libBob); return err },
		func() error { _, err := s.Sweep(ctx, time.Now()); return err },
	}
	for i, step := range steps {
		if err := c.ScriptFlush(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		if err := step(); err != nil {
			t.Errorf("step %d after SCRIPT FLUSH: %v", i, err)
		}
	}
	if n, err := s.Count(ctx, libBob); err != nil || n != (plugin.Counts{InFlight: 1}) {
		t.Errorf("Count = %+v, %v; want the message in flight", n, err)
	}
}

// TestStoredDuringPushMark: a message stored while a push holds the
// mailbox leaves a mark that dp_finish reports once (FinishMore: the
// push runs once more), that a claim clears (it takes what was stored
// before it), and that an unlock drops with the lease: no field is left
// behind on the mailbox.
func TestStoredDuringPushMark(t *testing.T) {
	srv := harness.Redis(t)
	s, err := New(Config{URL: srv.URL()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { c.Close() })
	m := libMessage("one")
	aor := m.Recipient
	mkey := "dp:{" + aor.String() + "}:m"
	appendOne := func(body string) {
		if err := s.Append(ctx, libMessage(body), plugin.Limits{}); err != nil {
			t.Fatal(err)
		}
	}
	marked := func() bool { return c.HExists(ctx, mkey, "more").Val() }
	appendOne("before any push")
	if marked() {
		t.Fatal("a message stored with no push running is marked")
	}
	if _, err := s.Claim(ctx, aor, "t1", 10, time.Minute); err != nil {
		t.Fatal(err)
	}
	appendOne("during the push")
	if !marked() {
		t.Fatal("a message stored during a push is not marked")
	}
	if _, more, err := s.FinishMore(ctx, aor, "t1"); err != nil || !more {
		t.Fatalf("FinishMore = more %v, %v; want the mark reported", more, err)
	}
	if marked() {
		t.Error("the mark outlives the finish that reported it")
	}
	// A claim takes what came before it; an unlock drops the mark.
	if _, err := s.Claim(ctx, aor, "t2", 10, time.Minute); err != nil {
		t.Fatal(err)
	}
	appendOne("during the second push")
	if _, err := s.Claim(ctx, aor, "t2", 10, time.Minute); err != nil {
		t.Fatal(err)
	}
	if marked() {
		t.Error("the mark outlives a claim that took the message")
	}
	appendOne("after the last claim")
	if err := s.Unlock(ctx, aor, "t2"); err != nil {
		t.Fatal(err)
	}
	if marked() {
		t.Error("the mark outlives the unlock")
	}
	if _, more, err := s.FinishMore(ctx, aor, "t3"); err != nil || more {
		t.Errorf("FinishMore with no push = more %v, %v; want none", more, err)
	}
}
