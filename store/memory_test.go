package store_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/store"
	"github.com/deferpush/deferpush/test/harness"
)

// usedMemory is INFO memory's used_memory: what redis-server allocated.
func usedMemory(t *testing.T, s *store.Redis) int64 {
	t.Helper()
	info, err := s.Client().Info(context.Background(), "memory").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory:"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no used_memory in INFO memory")
	return 0
}

// TestMemoryPerMessage measures what Redis holds for deferred messages:
// 1,000 mailboxes of M seed-sized SIP MESSAGEs (stored as the hook and
// the ingress store them: sender, Call-ID, content type), M = 1, 10, 50,
// by INFO memory's used_memory before and after. It prints the bytes per
// message at each M, and, from M = 1 and 50, the bytes each message adds
// and each mailbox costs besides its messages; it checks the goals of
// issue 14: at most twice the message's own size per message at M = 10,
// and at most 600 B per mailbox. A last round at M = 10 whose senders all
// ask for a failure notice (RFC 5438) prints what that costs; the rounds
// before must have made no notice key (dp:{aor}:f exists only when a
// message asks).
func TestMemoryPerMessage(t *testing.T) {
	srv := harness.Redis(t)
	s, err := store.New(store.Config{URL: srv.URL() + "?pool_size=32"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx := context.Background()
	const mailboxes = 1000
	size := len(benchRaw)
	perMailbox := map[int]float64{}
	for _, round := range []struct {
		m      int
		notify bool
	}{{1, false}, {10, false}, {50, false}, {10, true}} {
		m := round.m
		if err := s.Client().FlushAll(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		// A first message elsewhere: the library and the global keys
		// exist before the baseline.
		fill(t, s, plugin.MustParseAOR("sip:warm-up@example.com"), 1)
		time.Sleep(200 * time.Millisecond)
		before := usedMemory(t, s)
		var wg sync.WaitGroup
		errs := make(chan error, 16)
		for w := range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < mailboxes; i += 16 {
					aor := plugin.MustParseAOR(fmt.Sprintf("sip:user%d@example.com", i))
					for range m {
						msg := &plugin.Message{Recipient: aor, Kind: plugin.KindSIPMessage, Raw: benchRaw, Received: time.Now(),
							Sender: "sip:user1@example.com", CallID: "asd88asd77a@1.2.3.4", ContentType: "text/plain",
							NotifyFailure: round.notify}
						if err := s.Append(ctx, msg, plugin.Limits{TTL: 72 * time.Hour}); err != nil {
							errs <- err
							return
						}
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond) // client buffers settle
		delta := usedMemory(t, s) - before
		notices := 0
		it := s.Client().Scan(ctx, 0, "dp:{*}:f", 1000).Iterator()
		for it.Next(ctx) {
			notices++
		}
		switch {
		case it.Err() != nil:
			t.Fatal(it.Err())
		case round.notify && notices != mailboxes:
			t.Errorf("%d notice keys for %d mailboxes that asked", notices, mailboxes)
		case round.notify:
			t.Logf("M=10, each asking for a failure notice: %.0f B per message, %.0f B more than without",
				float64(delta)/mailboxes/10, (float64(delta)/mailboxes-perMailbox[10])/10)
			continue
		case notices != 0:
			t.Errorf("%d notice keys though no message asked for a notice", notices)
		}
		perMailbox[m] = float64(delta) / mailboxes
		t.Logf("M=%-2d %9d B for %d messages: %4.0f B per message (%.2f× its %d B)",
			m, delta, mailboxes*m, perMailbox[m]/float64(m), perMailbox[m]/float64(m)/float64(size), size)
	}
	perMessage := (perMailbox[50] - perMailbox[1]) / 49
	overhead := perMailbox[1] - perMessage
	t.Logf("each message adds %.0f B (%.2f× its size); each mailbox costs %.0f B besides its messages", perMessage, perMessage/float64(size), overhead)
	if got := perMailbox[10] / 10; got > 2*float64(size) {
		t.Errorf("%.0f B per message at M=10, want at most twice the message's %d B", got, size)
	}
	if overhead > 600 {
		t.Errorf("%.0f B per mailbox, want at most 600", overhead)
	}
}
