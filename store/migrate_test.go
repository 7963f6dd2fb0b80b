package store

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/store/storetest"
	"github.com/deferpush/deferpush/test/harness"
)

// firstLayoutMailbox is a recipient as the release before store v2 left
// it: every key of its layout, written by hand.
type firstLayoutMailbox struct {
	aor                     plugin.AOR
	pending, inflight, dead []*plugin.Message
	tries                   map[string]string
	json                    map[string]bool // ids stored as JSON records (older still)
	// notify are the messages whose senders wait for a failure notice,
	// those of the lists and left, those a claim met expired and left
	// stored in no list for the sweep to report.
	notify, left []*plugin.Message
}

func (f *firstLayoutMailbox) write(t *testing.T, c redis.UniversalClient, now time.Time) {
	t.Helper()
	ctx := context.Background()
	k := func(s string) string { return tagOf(f.aor.String()) + s }
	pipe := c.TxPipeline()
	for _, l := range []struct {
		key  string
		msgs []*plugin.Message
	}{{"pending", f.pending}, {"inflight", f.inflight}, {"dead", f.dead}} {
		for _, m := range l.msgs {
			pipe.RPush(ctx, k(l.key), m.ID)
			rec := encodeV1(m)
			if f.json[m.ID] {
				b, err := json.Marshal(record{Sender: m.Sender, Received: m.Received, Expires: m.Expires, Kind: m.Kind,
					Raw: m.Raw, Invite: m.Invite, CallID: m.CallID, MessageID: m.MessageID, ContentType: m.ContentType})
				if err != nil {
					t.Fatal(err)
				}
				rec = string(b)
			}
			pipe.HSet(ctx, k("msgs"), m.ID, rec)
			pipe.ZAdd(ctx, k("expiry"), redis.Z{Score: float64(ms(m.Expires)), Member: m.ID})
		}
	}
	for _, m := range f.left {
		pipe.HSet(ctx, k("msgs"), m.ID, encodeV1(m))
		pipe.ZAdd(ctx, k("expiry"), redis.Z{Score: float64(ms(m.Expires)), Member: m.ID})
	}
	for _, m := range append(f.notify, f.left...) {
		pipe.ZAdd(ctx, k("notify"), redis.Z{Score: float64(ms(m.Expires)), Member: m.ID})
	}
	for id, v := range f.tries {
		pipe.HSet(ctx, k("tries"), id, v)
	}
	pipe.HSet(ctx, k("lock"), "owner", "old-release", "until", ms(now.Add(time.Hour)))
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	// The index is global (another slot in a cluster).
	if err := c.ZAdd(ctx, mailboxesKey, redis.Z{Score: float64(ms(now)), Member: f.aor.String()}).Err(); err != nil {
		t.Fatal(err)
	}
	if len(f.notify)+len(f.left) > 0 {
		if err := c.ZAdd(ctx, firstNoticesKey, redis.Z{Score: float64(ms(now)), Member: f.aor.String()}).Err(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestMigrateFirstLayout: mailboxes, settings and registrations stored in
// the first layout (v1 and JSON records, messages in flight under a lease
// of the old release, attempts, dead letters, failure notices waited
// for, a registration that learnt pager_only) are converted before the
// first operation, on a real Redis, a 3-node cluster and the embedded
// store (the library through EVAL): nothing is lost, the order is kept,
// what was in flight is pending again (a message that failed an attempt
// behind the others), expiry still works on the old records, the failure
// notices are reported when their messages expire, pager_only stays with
// its binding, and no key of the first layout is left.
func TestMigrateFirstLayout(t *testing.T) {
	backends := []struct {
		name string
		open func(t *testing.T, now func() time.Time) *Redis
	}{
		{"redis", func(t *testing.T, now func() time.Time) *Redis {
			s, err := New(Config{URL: harness.Redis(t).URL(), Now: now})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		}},
		{"cluster", func(t *testing.T, now func() time.Time) *Redis {
			s, err := New(Config{URL: harness.RedisCluster(t).URL(), Now: now})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		}},
		{"embedded", func(t *testing.T, now func() time.Time) *Redis {
			s, err := NewEmbedded(Config{Now: now})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		}},
	}
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) { testMigrate(t, be.open) })
	}
}

func testMigrate(t *testing.T, open func(t *testing.T, now func() time.Time) *Redis) {
	clock := storetest.NewClock()
	s := open(t, clock.Now)
	c := s.Client()
	ctx := context.Background()
	now := clock.Now()
	zone := time.FixedZone("X", 3600)
	msg := func(i int, ttl time.Duration) *plugin.Message {
		received := now.Add(time.Duration(i-20)*time.Minute + 123456789).In(zone)
		return &plugin.Message{ID: plugin.NewID(received), Recipient: storetestBob, Sender: "sip:carol@example.org",
			Received: received, Expires: received.Add(ttl), Kind: plugin.KindSIPMessage,
			Raw: []byte(fmt.Sprintf("MESSAGE %d", i)), CallID: fmt.Sprint("call-", i), ContentType: "text/plain"}
	}
	m := make([]*plugin.Message, 10)
	for i := range m {
		m[i] = msg(i, 72*time.Hour)
	}
	m[6] = msg(6, time.Minute) // expired (v1 record)
	m[7] = msg(7, time.Minute) // expired (JSON record)
	m[8].Expires = time.Time{} // never expires
	m[9] = msg(9, time.Minute) // expired, met by a claim, left for its notice
	bob := &firstLayoutMailbox{aor: storetestBob,
		inflight: []*plugin.Message{m[0], m[1]},
		pending:  []*plugin.Message{m[2], m[6], m[3], m[7], m[8]},
		dead:     []*plugin.Message{m[4], m[5]},
		tries:    map[string]string{m[1].ID: "1 415 unsupported", m[4].ID: "3 timeout", m[5].ID: "3 408"},
		json:     map[string]bool{m[3].ID: true, m[7].ID: true},
		notify:   []*plugin.Message{m[2], m[6]},
		left:     []*plugin.Message{m[9]},
	}
	bob.write(t, c, now)
	settings := plugin.UserSettings{Push: plugin.PushHold, MaxPerSession: 5}
	reg := plugin.Registration{AOR: storetestBob, Contact: "sip:bob@192.0.2.1:5070", Expires: now.Add(time.Hour), PagerOnly: true}
	alice := plugin.MustParseAOR("sip:alice@example.com")
	for key, v := range map[string]any{tagOf(storetestBob.String()) + "settings": settings, tagOf(alice.String()) + "settings": settings} {
		b, _ := json.Marshal(v)
		if err := c.Set(ctx, key, b, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	b, _ := json.Marshal(reg)
	if err := c.Set(ctx, tagOf(storetestBob.String())+"contact", b, 2*time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	// Alice's device registered again, at another address, since the
	// upgrade, written by SetContact in this layout: it keeps the
	// pager_only its first-layout registration had learnt. Carol's new
	// device does not.
	carol := plugin.MustParseAOR("sip:carol@example.com")
	for _, r := range []struct {
		old, new plugin.Registration
	}{
		{plugin.Registration{AOR: alice, Contact: "sip:alice@192.0.2.3", Instance: "<urn:uuid:a1>", Expires: now.Add(time.Hour), PagerOnly: true},
			plugin.Registration{AOR: alice, Contact: "sip:alice@198.51.100.7", Instance: "<urn:uuid:a1>", Expires: now.Add(time.Hour)}},
		{plugin.Registration{AOR: carol, Contact: "sip:carol@192.0.2.4", Expires: now.Add(time.Hour), PagerOnly: true},
			plugin.Registration{AOR: carol, Contact: "sip:carol@192.0.2.5", Expires: now.Add(time.Hour)}},
	} {
		b, _ := json.Marshal(r.old)
		if err := c.Set(ctx, tagOf(r.old.AOR.String())+"contact", b, 2*time.Hour).Err(); err != nil {
			t.Fatal(err)
		}
		b, _ = json.Marshal(r.new)
		if err := c.Set(ctx, contactKey(r.new.AOR), b, 90*time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
	}

	// The first operation converts.
	got, err := s.Count(ctx, storetestBob)
	if err != nil {
		t.Fatal(err)
	}
	if want := (plugin.Counts{Pending: 7, Dead: 2}); got != want {
		t.Errorf("Count after conversion = %+v, want %+v", got, want)
	}
	if v, _ := c.Get(ctx, layoutKey).Result(); v != layoutV2 {
		t.Errorf("%s = %q, want %q", layoutKey, v, layoutV2)
	}
	for _, aor := range []plugin.AOR{storetestBob, alice} {
		for _, suffix := range firstLayout {
			if n := countKeys(t, c, tagOf(aor.String())+suffix); n != 0 {
				t.Errorf("%s%s left after the conversion", tagOf(aor.String()), suffix)
			}
		}
	}
	if u, err := s.UserSettings(ctx, alice); err != nil || u != settings {
		t.Errorf("alice's settings = %+v, %v; want %+v", u, err, settings)
	}
	if u, err := s.UserSettings(ctx, storetestBob); err != nil || u != settings {
		t.Errorf("bob's settings = %+v, %v; want %+v", u, err, settings)
	}
	if r, err := s.Contact(ctx, storetestBob); err != nil || r.Contact != reg.Contact || !r.PagerOnly {
		t.Errorf("bob's registration = %+v, %v; want %+v", r, err, reg)
	}
	if r, err := s.Contact(ctx, alice); err != nil || r.Contact != "sip:alice@198.51.100.7" || !r.PagerOnly {
		t.Errorf("alice's registration = %+v, %v; want the new one, pager-only", r, err)
	}
	if r, err := s.Contact(ctx, carol); err != nil || r.Contact != "sip:carol@192.0.2.5" || r.PagerOnly {
		t.Errorf("carol's registration = %+v, %v; want the new one, not pager-only", r, err)
	}
	if ttl, err := c.PTTL(ctx, contactKey(alice)).Result(); err != nil || ttl <= time.Hour || ttl > 90*time.Minute {
		t.Errorf("alice's registration's time to live = %v, %v; want its own kept", ttl, err)
	}
	if n := countKeys(t, c, firstNoticesKey); n != 0 {
		t.Errorf("%s left after the conversion", firstNoticesKey)
	}
	if ttl, err := c.PTTL(ctx, contactKey(storetestBob)).Result(); err != nil || ttl <= 0 || ttl > 2*time.Hour {
		t.Errorf("registration's time to live = %v, %v; want kept", ttl, err)
	}
	page, err := s.DeadLetters(ctx, storetestBob, plugin.ListQuery{Body: true})
	if err != nil {
		t.Fatal(err)
	}
	want := []*plugin.Message{withTries(m[4], 3, "timeout", plugin.StateDead), withTries(m[5], 3, "408", plugin.StateDead)}
	if d := cmp.Diff(want, page.Messages); d != "" {
		t.Errorf("dead letters (-want +got):\n%s", d)
	}

	// The sweep reads the expiry of v1 and JSON records, and reports the
	// failure notices of the expired (m6, and m9 in no list).
	st, err := s.Sweep(ctx, now)
	if err != nil || st.Expired != 3 {
		t.Errorf("Sweep = %+v, %v; want the 3 expired messages dropped", st, err)
	}
	var told []*plugin.Message
	for _, u := range st.Undelivered {
		c := *u
		c.NotifyFailure = false
		told = append(told, &c)
	}
	if d := cmp.Diff([]*plugin.Message{m[6], m[9]}, told); d != "" {
		t.Errorf("failure notices (-want +got):\n%s", d)
	}
	if ids, err := c.ZRange(ctx, tag(storetestBob)+"f", 0, -1).Result(); err != nil || len(ids) != 1 || ids[0] != m[2].ID {
		t.Errorf("failure notices still waited for = %v, %v; want m2's", ids, err)
	}
	// In flight (m0, m1) first, m1 behind the others for its failed attempt.
	msgs, err := s.Claim(ctx, storetestBob, "new", 10, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	want = []*plugin.Message{withTries(m[0], 0, "", plugin.StateInFlight), withTries(m[2], 0, "", plugin.StateInFlight),
		withTries(m[3], 0, "", plugin.StateInFlight), withTries(m[8], 0, "", plugin.StateInFlight),
		withTries(m[1], 1, "415 unsupported", plugin.StateInFlight)}
	if d := cmp.Diff(want, msgs); d != "" {
		t.Errorf("claimed after conversion (-want +got):\n%s", d)
	}

	// A second start converts nothing, even told to look again.
	if err := c.Del(ctx, layoutKey).Err(); err != nil {
		t.Fatal(err)
	}
	again, err := New(Config{Client: c, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := again.Count(ctx, storetestBob); err != nil || got != (plugin.Counts{InFlight: 5, Dead: 2}) {
		t.Errorf("Count after a second conversion = %+v, %v", got, err)
	}
}

var storetestBob = plugin.MustParseAOR("sip:bob@example.com")

func withTries(m *plugin.Message, attempts int, last string, state plugin.State) *plugin.Message {
	c := *m
	c.Attempts, c.LastError, c.State = attempts, last, state
	return &c
}

// countKeys counts the keys named key.
func countKeys(t *testing.T, c redis.UniversalClient, key string) int64 {
	t.Helper()
	n, err := c.Exists(context.Background(), key).Result()
	if err != nil {
		t.Fatal(err)
	}
	return n
}
