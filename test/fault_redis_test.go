package test

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/deferpush/deferpush/adapters/imclient"
)

// TestFaultRedisRestartMidStore kills redis-server (SIGKILL, AOF with
// appendfsync always) and starts it again while senders store MESSAGEs
// through Kamailio: every MESSAGE answered 202 is stored afterwards and
// delivered; those refused during the outage got an error reply (the sender
// knows). deferpush reconnects by itself and /readyz says 503 during the
// outage, 200 after.
func TestFaultRedisRestartMidStore(t *testing.T) {
	faultRedisMidStore(t, 1).report(t)
}

// TestFaultRedisRestartMidPush kills and restarts redis-server while a
// client holds a message, the ones before it acked: nothing is lost, the
// client gets everything (after registering again if the push broke off),
// /readyz follows the outage, and nothing comes twice when Redis is back
// within a renewal period of the lease (a third of it).
func TestFaultRedisRestartMidPush(t *testing.T) {
	faultRedisMidPush(t, 1).report(t)
}

// waitReadyz polls deferpush's /readyz until it answers want.
func waitReadyz(t *testing.T, dp *deferpushProc, want int) {
	t.Helper()
	waitFor(t, 20*time.Second, fmt.Sprintf("/readyz %d", want), func() bool { return readyz(dp.AdminAddr) == want })
}

func faultRedisMidStore(t *testing.T, rounds int) faultRow {
	s := startFaultStack(t)
	row := faultRow{Fault: "restart redis-server (kill -9) mid-store"}
	const workers = 4
	senders := make([]*imclient.Client, workers)
	for i := range senders {
		senders[i] = s.client(t, fmt.Sprintf("sender%d", i), imclient.Config{})
	}
	for r := range rounds {
		user := fmt.Sprintf("store%d", r)
		var (
			mu         sync.Mutex
			accepted   []string
			refused    = map[int]int{}
			unanswered int
		)
		nAccepted := func() int { mu.Lock(); defer mu.Unlock(); return len(accepted) }
		nRefused := func() int {
			mu.Lock()
			defer mu.Unlock()
			n := unanswered
			for _, c := range refused {
				n += c
			}
			return n
		}
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for i, c := range senders {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for seq := 0; ; seq++ {
					select {
					case <-stop:
						return
					default:
					}
					id := fmt.Sprintf("store-%s-%d-%d@fault.test", user, i, seq)
					ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
					res, err := c.SendMessage(ctx, "sip:"+user+"@"+domain, "text/plain", []byte("mid-store "+id), sip.NewHeader("Call-ID", id))
					cancel()
					mu.Lock()
					switch {
					case err != nil:
						unanswered++
					case res.StatusCode == 202:
						accepted = append(accepted, id)
					default:
						refused[res.StatusCode]++
					}
					mu.Unlock()
					if err != nil || res.StatusCode != 202 {
						// A sender pauses after a refusal, as a client
						// would: resending at once made thousands of 480s a
						// second, each a transaction Kamailio keeps for its
						// wait timer, until its shared memory ran out.
						time.Sleep(20 * time.Millisecond)
					}
				}
			}()
		}
		waitFor(t, 20*time.Second, "40 MESSAGEs stored", func() bool { return nAccepted() >= 40 })
		s.redis.Kill()
		waitReadyz(t, s.dp, 503)
		// Senders meet the outage: wait for a refusal before Redis comes back.
		waitFor(t, 10*time.Second, "a MESSAGE refused during the outage", func() bool { return nRefused() > 0 })
		s.redis.Start(t)
		waitReadyz(t, s.dp, 200)
		after := nAccepted()
		waitFor(t, 20*time.Second, "40 more MESSAGEs stored after the restart", func() bool { return nAccepted() >= after+40 })
		close(stop)
		wg.Wait()

		// Every 202 survived. A message refused, or not answered, may have
		// been stored all the same (the write went through, its answer
		// did not): it is delivered too.
		stored := s.storedCallIDs(t, user)
		for _, id := range accepted {
			if !stored[id] {
				t.Errorf("%s was answered 202 but is not stored after the restart", id)
			}
		}
		all := append([]string(nil), accepted...)
		ok := map[string]bool{}
		for _, id := range accepted {
			ok[id] = true
		}
		var extra []string
		for id := range stored {
			if !ok[id] {
				extra = append(extra, id)
			}
		}
		sort.Strings(extra)
		all = append(all, extra...)
		t.Logf("round %d: %d answered 202, refused %v, %d unanswered; %d stored though not answered 202",
			r, len(accepted), refused, unanswered, len(extra))

		rcv := s.client(t, user, imclient.Config{})
		s.deliverAll(t, rcv, user, all)
		dups := row.add(t, all, rcv.Received())
		wantDups(t, "mid-store", dups)
	}
	return row
}

// midPushLockTTL is push.lock_ttl in the mid-push test. A Redis restart
// here takes about 2 s. The lease is renewed every third of it, and a
// failed renewal is tried again at the next tick while more than half the
// lease is left: an outage shorter than a renewal period (3 s here, 10 s
// with the default 30 s lease) meets at most one renewal, and the push
// goes on. (The 2 s lease of the other tests would end it, and the client
// would get again what it confirmed after the restart.)
const midPushLockTTL = 9 * time.Second

func faultRedisMidPush(t *testing.T, rounds int) faultRow {
	s := startFaultStack(t, "DEFERPUSH_PUSH_LOCK_TTL="+midPushLockTTL.String())
	sender := s.client(t, "sender", imclient.Config{})
	row := faultRow{Fault: "restart redis-server (kill -9) mid-push"}
	for r := range rounds {
		user := fmt.Sprintf("push%d", r)
		const n, k = 30, 10
		ids := storeCalls(t, sender, user, "midpush-"+user, n, nil)
		s.waitPending(t, user, n)

		atK, resume := make(chan struct{}), make(chan struct{})
		rcv := s.client(t, user, imclient.Config{OnEvent: func(ev imclient.Event) error {
			if ev.Kind == imclient.EventMessage && ev.N == k {
				close(atK)
				select {
				case <-resume:
				case <-time.After(45 * time.Second):
				}
			}
			return nil
		}})
		s.register(t, rcv)
		select {
		case <-atK:
		case <-time.After(30 * time.Second):
			t.Fatalf("message %d never arrived (client saw %+v)", k, rcv.Stats())
		}
		// Confirmed and not yet acked just before the kill (their window
		// is not full): their ack waits for Redis and goes through once it
		// is back, while the lease lasts.
		before := s.storedCallIDs(t, user)
		inDoubt := 0
		for _, m := range rcv.Received() {
			if m.Answered == 200 && before[m.Decoded.CallID] {
				inDoubt++
			}
		}
		killed := time.Now()
		s.redis.Kill()
		waitReadyz(t, s.dp, 503)
		s.redis.Start(t)
		waitReadyz(t, s.dp, 200)
		outage := time.Since(killed)
		close(resume)

		s.deliverAll(t, rcv, user, ids)
		dups := row.add(t, ids, rcv.Received())
		t.Logf("round %d: Redis out for %v; %d confirmed but unacked at the kill, %d duplicated",
			r, outage.Round(time.Millisecond), inDoubt, len(dups))
		if outage < midPushLockTTL/3 {
			wantDups(t, fmt.Sprintf("Redis out for %v, less than a renewal period (%v)", outage.Round(time.Millisecond), midPushLockTTL/3), dups)
		} else {
			t.Logf("round %d: Redis out for longer than a renewal period (%v): the push may break off and send again what was confirmed", r, midPushLockTTL/3)
		}
		if len(dups) > 0 {
			// Say why the push broke off.
			for _, line := range strings.Split(s.dp.Log(), "\n") {
				if strings.Contains(line, user) && strings.Contains(line, `"level":"WARN"`) {
					t.Log(line)
				}
			}
		}
	}
	return row
}
