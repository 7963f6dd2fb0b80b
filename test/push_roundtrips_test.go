package test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/deferpush/deferpush/adapters/imclient"
	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/test/harness"
)

// tripLog is a go-redis hook that records the store's round trips while
// on: a command alone or a pipeline (the autopipeliner's batches
// included) is one trip.
type tripLog struct {
	mu    sync.Mutex
	on    bool
	trips [][]string // per trip, each command's arguments joined by spaces
}

func (l *tripLog) DialHook(next redis.DialHook) redis.DialHook { return next }

func (l *tripLog) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		l.record([]redis.Cmder{cmd})
		return next(ctx, cmd)
	}
}

func (l *tripLog) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		l.record(cmds)
		return next(ctx, cmds)
	}
}

func (l *tripLog) record(cmds []redis.Cmder) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.on {
		return
	}
	var trip []string
	for _, c := range cmds {
		var words []string
		for _, a := range c.Args() {
			words = append(words, fmt.Sprint(a))
		}
		trip = append(trip, strings.Join(words, " "))
	}
	l.trips = append(l.trips, trip)
}

// short is a command's name and first argument, for the log.
func short(cmd string) string {
	f := strings.Fields(cmd)
	return strings.Join(f[:min(2, len(f))], " ")
}

func (l *tripLog) start() { l.mu.Lock(); l.on, l.trips = true, nil; l.mu.Unlock() }

func (l *tripLog) stop() [][]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.on = false
	return l.trips
}

// TestPushRoundTrips counts what one push costs Redis, on a real
// redis-server, through the real pusher to the reference client: the
// store's round trips (a pipeline counts once) and commands from the
// registration to the push's report, for 1 and 10 messages, leaving out
// the registration's own write of the contact. It
// prints them, and checks the goals of issue 14 (lock and first claim in
// one call, acks of a window in one call, release and requeue in one
// call): 3 round trips waited for, for up to a window of messages (16),
// one ack more for each further window — the registration's check of the
// user's settings with the read of the stored registration (which the
// push takes when it starts at once: under delivery auto, the default,
// did an earlier push learn that this client refuses MSRP, issue 15),
// claim, and the last acks with the unlock (Finish; a claim that took
// less than it asked for emptied the mailbox: no last, empty claim) —
// and one not waited for, which brings the emptied mailbox's index entry
// forward (it may leave after the report). (Main before store v2: 16
// round trips, 12 once its scripts were in Redis's cache, 20 and 50; 19,
// 32 and 92 commands; for 1, 10 and 40 messages. Store v2 before the
// push's own cuts: 7, 7 and 9 waited for; before the acks went with the
// unlock: 5, 5 and 7; before the settings and the registration were read
// together: 4, 4 and 6.)
func TestPushRoundTrips(t *testing.T) {
	waited := map[int]int{}
	r := harness.Redis(t)
	log := &tripLog{}
	c := startCore(t, r.URL(), coreOptions{policy: noBackoff, redisHook: log, sweepInterval: time.Hour})
	// A push first, unmeasured: the engine's start-up scan, which runs
	// beside the first pushes, has ended by then.
	warm := plugin.MustParseAOR("sip:warm-up@example.com")
	storeN(t, c, warm, 1)
	c.register(t, warm, newClient(t, warm.String(), imclient.Config{}).Contact())
	c.report(t)
	for _, n := range []int{1, 10, 40} {
		aor := plugin.MustParseAOR(fmt.Sprintf("sip:trips%d@example.com", n))
		want := storeN(t, c, aor, n)
		cl := newClient(t, aor.String(), imclient.Config{})
		log.start()
		c.register(t, aor, cl.Contact())
		rep := c.report(t)
		trips := log.stop()
		if rep.Delivered != n {
			t.Fatalf("report %+v, want %d delivered", rep, n)
		}
		if got := callIDs(cl.Received()); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("client got %v, want %v", got, want)
		}
		push, commands, async := pushTrips(trips, aor)
		var b strings.Builder
		for i, trip := range push {
			fmt.Fprintf(&b, "\n  %d. %s", i+1, strings.Join(trip, " | "))
		}
		t.Logf("push of %d: %d round trips, %d commands:%s", n, len(push), commands, b.String())
		// One more ack call for each further window of 16.
		waited[n] = len(push) - async
		if most := 3 + (n-1)/16; waited[n] > most || async > 1 {
			t.Errorf("push of %d: %d round trips waited for and %d not, want at most %d and 1", n, waited[n], async, most)
		}
	}
	if waited[10] != waited[1] {
		t.Errorf("%d round trips waited for for 10 messages, %d for 1: want as many", waited[10], waited[1])
	}
}

// pushTrips picks out of trips the push's to aor: those that name the
// recipient (a key, an index member), leaving out the registration's
// write of the contact (the hook's SetContact, the proxy's dp_register)
// and the start-up probe's pushes. It returns each trip's commands
// (name and first argument), the commands in all, and how many trips
// are the emptied mailbox's index update, which nothing waits for.
func pushTrips(trips [][]string, aor plugin.AOR) (push [][]string, commands, async int) {
	for _, trip := range trips {
		mine := false
		for _, cmd := range trip {
			mine = mine || strings.Contains(cmd, aor.String())
		}
		if !mine || len(trip) == 1 && (isContactWrite(trip[0], aor) || strings.HasPrefix(trip[0], "fcall dp_register ")) {
			continue
		}
		var names []string
		for _, cmd := range trip {
			names = append(names, short(cmd))
		}
		push = append(push, names)
		commands += len(trip)
		if len(trip) == 1 && strings.HasPrefix(trip[0], "zadd dp:mailboxes") {
			async++
		}
	}
	return push, commands, async
}

// TestPushRoundTripsDirect is TestPushRoundTrips for a push that a
// registration event asks for (Redis-direct mode: the proxy's
// dp_register records the contact and writes the event), one message:
// 2 round trips waited for — the claim with the reads of the stored
// registration and the user's settings in one pipeline (ClaimAndRead;
// under delivery auto the stored registration says whether the client
// refused MSRP), the ack with the unlock — and the index update not
// waited for. The event's read (XREADGROUP) and ack (XACK) name no
// recipient and are shared by the events read together: they are not
// counted. (Before: 6; 3 while the event's push read before claiming.)
func TestPushRoundTripsDirect(t *testing.T) {
	r := harness.Redis(t)
	log := &tripLog{}
	c := startCore(t, r.URL(), coreOptions{policy: noBackoff, redisHook: log, sweepInterval: time.Hour, events: true})
	ctx := context.Background()
	register := func(aor plugin.AOR, contact string) {
		t.Helper()
		n, err := c.st.Client().FCall(ctx, "dp_register", nil, aor.String(), contact, 3600,
			fmt.Sprint(time.Now().UnixMicro()), "", "", "", "").Int()
		if err != nil || n != 1 {
			t.Fatalf("dp_register = %d, %v; want an event", n, err)
		}
	}
	warm := plugin.MustParseAOR("sip:warm-direct@example.com")
	storeN(t, c, warm, 1)
	register(warm, newClient(t, warm.String(), imclient.Config{}).Contact())
	c.report(t)
	aor := plugin.MustParseAOR("sip:trips-direct@example.com")
	want := storeN(t, c, aor, 1)
	cl := newClient(t, aor.String(), imclient.Config{})
	log.start()
	register(aor, cl.Contact())
	rep := c.report(t)
	trips := log.stop()
	if rep.Delivered != 1 {
		t.Fatalf("report %+v, want 1 delivered", rep)
	}
	if got := callIDs(cl.Received()); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("client got %v, want %v", got, want)
	}
	push, commands, async := pushTrips(trips, aor)
	var b strings.Builder
	for i, trip := range push {
		fmt.Fprintf(&b, "\n  %d. %s", i+1, strings.Join(trip, " | "))
	}
	t.Logf("push of 1 from an event: %d round trips, %d commands:%s", len(push), commands, b.String())
	if waited := len(push) - async; waited > 2 || async > 1 {
		t.Errorf("%d round trips waited for and %d not, want at most 2 and 1", waited, async)
	}
}

// isContactWrite reports whether cmd is the registration's own write of
// aor's contact (FCALL dp_set_contact, its keys led by the contact key):
// the push's trips leave it out.
func isContactWrite(cmd string, aor plugin.AOR) bool {
	f := strings.Fields(cmd)
	return len(f) > 3 && f[0] == "fcall" && f[1] == "dp_set_contact" && f[3] == "dp:{"+aor.String()+"}:c"
}
