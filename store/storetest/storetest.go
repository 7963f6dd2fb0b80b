// Package storetest is the conformance suite every plugin.Store must pass.
// A store's tests call Run with a factory returning an empty store on a
// clock the suite controls.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/deferpush/deferpush/plugin"
)

// Factory returns an empty store whose clock is now. It is called once per
// test; clean up with t.Cleanup.
type Factory func(t *testing.T, now func() time.Time) plugin.Store

// Clock is a manual clock, safe for concurrent use.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a clock at a fixed, round instant.
func NewClock() *Clock { return &Clock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

// Advance moves the clock forward.
func (c *Clock) Advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

type env struct {
	t     *testing.T
	ctx   context.Context
	s     plugin.Store
	clock *Clock
}

// Run runs the suite.
func Run(t *testing.T, open Factory) {
	tests := []struct {
		name string
		fn   func(e *env)
	}{
		{"AppendClaimAckInOrder", testAppendClaimAck},
		{"AckWindow", testAckWindow},
		{"FinishAcksAndUnlocks", testFinish},
		{"EnvelopeRoundTrip", testEnvelope},
		{"Limits", testLimits},
		{"BadInput", testBadInput},
		{"LeaseExclusive", testLeaseExclusive},
		{"CrashRequeuedBySweep", testCrashSweep},
		{"CrashTakenOverByLock", testCrashTakeover},
		{"ReleaseKeepsOrder", testRelease},
		{"FailAndDeadLetters", testFail},
		{"Expiry", testExpiry},
		{"Admin", testAdmin},
		{"ListPages", testListPages},
		{"ListAfter", testListAfter},
		{"Policy", testPolicy},
		{"UserSettingsAndContact", testSettings},
		{"PagerOnly", testPagerOnly},
		{"ContactOrderedByTime", testContactOrder},
		{"ClaimAndRead", testClaimAndRead},
		{"FailureNotices", testFailureNotices},
		{"AtomicUpdates", testAtomicUpdates},
		{"ConditionalDeletes", testConditionalDeletes},
		{"Recipients", testRecipients},
		{"ConcurrentExactlyOnce", testConcurrent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := NewClock()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			tt.fn(&env{t: t, ctx: ctx, s: open(t, clock.Now), clock: clock})
		})
	}
}

var (
	bob   = plugin.MustParseAOR("sip:bob@example.com")
	alice = plugin.MustParseAOR("sip:alice@example.com")
)

const lease = 30 * time.Second

var limits = plugin.Limits{MaxMailbox: 100, MaxMessageSize: 1024, TTL: time.Hour}

func (e *env) msg(to plugin.AOR, body string) *plugin.Message {
	return &plugin.Message{Recipient: to, Sender: "sip:carol@example.org", Kind: plugin.KindSIPMessage,
		Raw: []byte(body), Received: e.clock.Now(), CallID: "call-" + body}
}

// appendN appends n messages "<prefix>0".. and returns their ids.
func (e *env) appendN(to plugin.AOR, prefix string, n int) []string {
	e.t.Helper()
	var ids []string
	for i := range n {
		m := e.msg(to, fmt.Sprintf("%s%d", prefix, i))
		if err := e.s.Append(e.ctx, m, limits); err != nil {
			e.t.Fatalf("Append: %v", err)
		}
		ids = append(ids, m.ID)
	}
	return ids
}

func (e *env) claim(to plugin.AOR, token string, n int) []string {
	e.t.Helper()
	msgs, err := e.s.Claim(e.ctx, to, token, n, lease)
	if err != nil {
		e.t.Fatalf("Claim(%s, %s, %d): %v", to, token, n, err)
	}
	return ids(msgs)
}

func ids(msgs []*plugin.Message) []string {
	out := []string{}
	for _, m := range msgs {
		out = append(out, m.ID)
	}
	return out
}

// ack acks ids one call each, every one of them in flight.
func (e *env) ack(to plugin.AOR, token string, ids ...string) {
	e.t.Helper()
	for _, id := range ids {
		if n, err := e.s.Ack(e.ctx, to, token, id); n != 1 || err != nil {
			e.t.Fatalf("Ack(%s) = %d, %v; want 1", id, n, err)
		}
	}
}

// acked acks ids in one call and checks how many it reports acked.
func (e *env) acked(to plugin.AOR, token string, want int, ids ...string) {
	e.t.Helper()
	if n, err := e.s.Ack(e.ctx, to, token, ids...); n != want || err != nil {
		e.t.Errorf("Ack(%d ids) = %d, %v; want %d", len(ids), n, err, want)
	}
}

// ackErr acks ids in one call and returns its error, which must come
// with a count of 0.
func (e *env) ackErr(to plugin.AOR, token string, ids ...string) error {
	e.t.Helper()
	n, err := e.s.Ack(e.ctx, to, token, ids...)
	if n != 0 {
		e.t.Errorf("Ack(%d ids) = %d, %v; want 0 with the error", len(ids), n, err)
	}
	return err
}

func (e *env) counts(to plugin.AOR, want plugin.Counts) {
	e.t.Helper()
	got, err := e.s.Count(e.ctx, to)
	if err != nil {
		e.t.Fatal(err)
	}
	if got != want {
		e.t.Errorf("Count(%s) = %+v, want %+v", to, got, want)
	}
}

func (e *env) wantErr(what string, err, want error) {
	e.t.Helper()
	if !errors.Is(err, want) {
		e.t.Errorf("%s: err = %v, want %v", what, err, want)
	}
}

func diff(t *testing.T, what string, want, got any) {
	t.Helper()
	if d := cmp.Diff(want, got, cmpopts.EquateEmpty()); d != "" {
		t.Errorf("%s (-want +got):\n%s", what, d)
	}
}

func testAppendClaimAck(e *env) {
	want := e.appendN(bob, "m", 5)
	other := e.appendN(alice, "a", 2)
	e.counts(bob, plugin.Counts{Pending: 5})
	if ok, err := e.s.Lock(e.ctx, bob, "t1", lease); !ok || err != nil {
		e.t.Fatalf("Lock = %v, %v", ok, err)
	}
	got := e.claim(bob, "t1", 3)
	diff(e.t, "first claim", want[:3], got)
	e.counts(bob, plugin.Counts{Pending: 2, InFlight: 3})
	e.ack(bob, "t1", got...)
	e.acked(bob, "t1", 0, got[0]) // acked before: not counted, no error
	diff(e.t, "second claim", want[3:], e.claim(bob, "t1", 10))
	diff(e.t, "empty claim", []string{}, e.claim(bob, "t1", 10))
	e.ack(bob, "t1", want[3:]...)
	if err := e.s.Unlock(e.ctx, bob, "t1"); err != nil {
		e.t.Fatal(err)
	}
	e.counts(bob, plugin.Counts{})
	diff(e.t, "other recipient", other, e.claim(alice, "t2", 10))
	tot, err := e.s.Totals(e.ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	if tot.Stored != 7 || tot.Pushed != 5 {
		e.t.Errorf("Totals = %+v, want stored 7 pushed 5", tot)
	}
}

// testAckWindow: one Ack removes several messages in flight, skips and
// does not count ids that are not (pending, unknown, dead-lettered,
// deleted, acked before, given twice), and removes nothing without the
// lease.
func testAckWindow(e *env) {
	want := e.appendN(bob, "m", 8)
	got := e.claim(bob, "t", 5)
	diff(e.t, "claim", want[:5], got)
	e.wantErr("Ack by another token", e.ackErr(bob, "u", got...), plugin.ErrLeaseLost)
	e.counts(bob, plugin.Counts{Pending: 3, InFlight: 5})
	if dead, err := e.s.Fail(e.ctx, bob, "t", got[4], "415", 1); !dead || err != nil {
		e.t.Fatalf("Fail = %v, %v; want dead-lettered", dead, err)
	}
	if err := e.s.Delete(e.ctx, bob, got[3]); err != nil {
		e.t.Fatal(err)
	}
	const unknown = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
	// in flight: got[0..2]; pending: want[5] (not in flight); dead:
	// got[4]; deleted: got[3]; got[1] twice.
	e.acked(bob, "t", 3, got[2], want[5], got[0], unknown, got[4], got[3], got[1], got[1])
	e.counts(bob, plugin.Counts{Pending: 3, Dead: 1})
	e.acked(bob, "t", 0, got[0], got[1], got[2])
	e.acked(bob, "t", 0)
	// The claim after it takes the next ones, in order.
	diff(e.t, "next claim", want[5:], e.claim(bob, "t", 10))
	e.acked(bob, "t", 3, want[5:]...)
	if err := e.s.Unlock(e.ctx, bob, "t"); err != nil {
		e.t.Fatal(err)
	}
	e.counts(bob, plugin.Counts{Dead: 1})
	// Without a live lease nothing goes.
	got = e.claim(alice, "a", 0)
	diff(e.t, "empty claim", []string{}, got)
	ids := e.appendN(alice, "x", 2)
	e.claim(alice, "a", 2)
	e.clock.Advance(lease + time.Second)
	e.wantErr("Ack after the lease", e.ackErr(alice, "a", ids...), plugin.ErrLeaseLost)
	e.counts(alice, plugin.Counts{InFlight: 2})
	tot, err := e.s.Totals(e.ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	if tot.Pushed != 6 {
		e.t.Errorf("Totals.Pushed = %d, want 6 (only what was acked)", tot.Pushed)
	}
}

func testEnvelope(e *env) {
	now := e.clock.Now()
	in := &plugin.Message{
		Recipient: bob, Sender: "sip:carol@example.org;tag=1", Received: now, Expires: now.Add(5 * time.Hour),
		Kind: plugin.KindMSRPSession, Raw: []byte("MSRP a SEND\r\n\x00\xff binary\r\n-------a$\r\n"),
		Invite: []byte("INVITE sip:bob@example.com SIP/2.0\r\nCall-ID: c1\r\n"), CallID: "c1",
		MessageID: "m-123456", ContentType: "message/cpim",
	}
	if err := e.s.Append(e.ctx, in, limits); err != nil {
		e.t.Fatal(err)
	}
	if in.ID == "" {
		e.t.Fatal("Append did not set ID")
	}
	got, err := e.s.Get(e.ctx, bob, in.ID)
	if err != nil {
		e.t.Fatal(err)
	}
	want := *in
	want.State = plugin.StatePending
	diff(e.t, "Get", &want, got)
	msgs, err := e.s.Claim(e.ctx, bob, "t", 1, lease)
	if err != nil || len(msgs) != 1 {
		e.t.Fatalf("Claim = %d, %v", len(msgs), err)
	}
	want.State = plugin.StateInFlight
	diff(e.t, "Claim", &want, msgs[0])

	// TTL from limits when Expires is zero; appending the same ID again is a no-op.
	m := e.msg(bob, "ttl")
	if err := e.s.Append(e.ctx, m, limits); err != nil {
		e.t.Fatal(err)
	}
	if !m.Expires.Equal(m.Received.Add(limits.TTL)) {
		e.t.Errorf("Expires = %v, want Received+TTL", m.Expires)
	}
	if err := e.s.Append(e.ctx, m, limits); err != nil {
		e.t.Fatalf("duplicate Append: %v", err)
	}
	e.counts(bob, plugin.Counts{Pending: 1, InFlight: 1})
}

func testLimits(e *env) {
	lim := plugin.Limits{MaxMailbox: 3, MaxMessageSize: 10, TTL: time.Hour}
	big := e.msg(bob, "01234567890")
	err := e.s.Append(e.ctx, big, lim)
	var le *plugin.LimitError
	if !errors.Is(err, plugin.ErrTooLarge) || !errors.As(err, &le) || le.Max != 10 || le.Got != 11 {
		e.t.Errorf("oversize: err = %v, want LimitError ErrTooLarge 10/11", err)
	}
	// max_message_size is the largest size stored: exactly 10 octets fit.
	if err := e.s.Append(e.ctx, e.msg(bob, "0123456789"), lim); err != nil {
		e.t.Errorf("a message of exactly max_message_size: %v, want it stored", err)
	}
	for i := range 2 {
		if err := e.s.Append(e.ctx, e.msg(bob, fmt.Sprint(i)), lim); err != nil {
			e.t.Fatal(err)
		}
	}
	err = e.s.Append(e.ctx, e.msg(bob, "full"), lim)
	if !errors.Is(err, plugin.ErrMailboxFull) || !errors.As(err, &le) || le.Max != 3 || le.Limit != "max_mailbox" {
		e.t.Errorf("full: err = %v, want LimitError ErrMailboxFull", err)
	}
	e.counts(bob, plugin.Counts{Pending: 3})
	// In-flight messages still count; an ack makes room.
	got := e.claim(bob, "t", 1)
	e.wantErr("full while in flight", e.s.Append(e.ctx, e.msg(bob, "x"), lim), plugin.ErrMailboxFull)
	e.ack(bob, "t", got...)
	if err := e.s.Append(e.ctx, e.msg(bob, "room"), lim); err != nil {
		e.t.Errorf("after ack: %v", err)
	}
	if err := e.s.Append(e.ctx, e.msg(alice, "other"), lim); err != nil {
		e.t.Errorf("other recipient: %v", err)
	}
	tot, _ := e.s.Totals(e.ctx)
	if tot.Stored != 5 {
		e.t.Errorf("Totals.Stored = %d, want 5 (refused appends not counted)", tot.Stored)
	}
}

func testBadInput(e *env) {
	id := e.appendN(bob, "m", 1)[0]
	// The zero AOR is the only invalid one a store can be given: any
	// other was built canonical by plugin.ParseAOR.
	var zero plugin.AOR
	e.wantErr("Append(zero AOR)", e.s.Append(e.ctx, e.msg(zero, "x"), limits), plugin.ErrInvalid)
	_, err := e.s.Claim(e.ctx, zero, "t", 1, lease)
	e.wantErr("Claim", err, plugin.ErrBadAOR)
	_, err = e.s.Get(e.ctx, zero, id)
	e.wantErr("Get", err, plugin.ErrBadAOR)
	_, err = e.s.Count(e.ctx, zero)
	e.wantErr("Count", err, plugin.ErrBadAOR)
	e.wantErr("SetUserSettings", e.s.SetUserSettings(e.ctx, zero, plugin.UserSettings{}), plugin.ErrBadAOR)
	for _, m := range []*plugin.Message{
		{Recipient: bob, Kind: "fax", Raw: []byte("x"), Received: e.clock.Now()},
		{Recipient: bob, Kind: plugin.KindSIPMessage, Received: e.clock.Now()},
		{ID: "nope", Recipient: bob, Kind: plugin.KindSIPMessage, Raw: []byte("x"), Received: e.clock.Now()},
	} {
		e.wantErr("bad envelope", e.s.Append(e.ctx, m, limits), plugin.ErrInvalid)
	}
	const unknown = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
	_, err = e.s.Get(e.ctx, bob, unknown)
	e.wantErr("Get unknown", err, plugin.ErrNotFound)
	e.wantErr("Delete unknown", e.s.Delete(e.ctx, bob, unknown), plugin.ErrNotFound)
	e.claim(bob, "t", 1)
	e.acked(bob, "t", 0, unknown)
	_, err = e.s.Fail(e.ctx, bob, "t", unknown, "x", 3)
	e.wantErr("Fail unknown", err, plugin.ErrNotFound)
	_, err = e.s.Claim(e.ctx, bob, "", 1, lease)
	e.wantErr("empty token", err, plugin.ErrInvalid)
	_, err = e.s.Contact(e.ctx, bob)
	e.wantErr("Contact unknown", err, plugin.ErrNotFound)
}

func testLeaseExclusive(e *env) {
	want := e.appendN(bob, "m", 3)
	if ok, _ := e.s.Lock(e.ctx, bob, "a", lease); !ok {
		e.t.Fatal("Lock a failed")
	}
	if ok, err := e.s.Lock(e.ctx, bob, "b", lease); ok || err != nil {
		e.t.Fatalf("Lock b while a holds it = %v, %v; want false, nil", ok, err)
	}
	_, err := e.s.Claim(e.ctx, bob, "b", 1, lease)
	e.wantErr("Claim b", err, plugin.ErrLeaseLost)
	got := e.claim(bob, "a", 1)
	e.wantErr("Ack by b", e.ackErr(bob, "b", got[0]), plugin.ErrLeaseLost)
	_, err = e.s.Release(e.ctx, bob, "b")
	e.wantErr("Release by b", err, plugin.ErrLeaseLost)
	e.wantErr("Unlock by b", e.s.Unlock(e.ctx, bob, "b"), plugin.ErrLeaseLost)
	e.wantErr("Renew by b", e.s.RenewLock(e.ctx, bob, "b", lease), plugin.ErrLeaseLost)
	// Renewal keeps a going for longer than the first lease.
	e.clock.Advance(lease - time.Second)
	if err := e.s.RenewLock(e.ctx, bob, "a", lease); err != nil {
		e.t.Fatal(err)
	}
	e.clock.Advance(lease - time.Second)
	e.ack(bob, "a", got...)
	// Unlock puts what is in flight back; then b gets the rest in order.
	e.claim(bob, "a", 1)
	if err := e.s.Unlock(e.ctx, bob, "a"); err != nil {
		e.t.Fatal(err)
	}
	diff(e.t, "b claims after unlock", want[1:], e.claim(bob, "b", 10))
}

func testCrashSweep(e *env) {
	want := e.appendN(bob, "m", 4)
	got := e.claim(bob, "dead-instance", 2) // and never acks
	diff(e.t, "claim", want[:2], got)
	st, err := e.s.Sweep(e.ctx, e.clock.Now())
	if err != nil || st.Requeued != 0 {
		e.t.Fatalf("Sweep before lease end = %+v, %v; want nothing requeued", st, err)
	}
	e.clock.Advance(lease + time.Second)
	e.wantErr("Ack after lease end", e.ackErr(bob, "dead-instance", got[0]), plugin.ErrLeaseLost)
	st, err = e.s.Sweep(e.ctx, e.clock.Now())
	if err != nil {
		e.t.Fatal(err)
	}
	diff(e.t, "sweep", plugin.SweepStats{Requeued: 2, Requeue: []plugin.AOR{bob}}, st)
	e.counts(bob, plugin.Counts{Pending: 4})
	e.wantErr("Ack after requeue", e.ackErr(bob, "dead-instance", got[0]), plugin.ErrLeaseLost)
	diff(e.t, "redelivery", want, e.claim(bob, "new", 10))
	// A second sweep finds nothing.
	st, err = e.s.Sweep(e.ctx, e.clock.Now())
	if err != nil || st.Requeued != 0 {
		e.t.Errorf("second Sweep = %+v, %v", st, err)
	}
}

// testFinish: one Finish acks what the client confirmed and unlocks
// (the rest in flight goes back to pending, in order, and another token
// may claim); by another token it changes nothing; a retry after it went
// through is no error; after the sweeper took a lapsed lease back, or
// with the lease lapsed, its acks are refused and the lease still drops.
func testFinish(e *env) {
	finish := func(token string, want int, ids ...string) error {
		e.t.Helper()
		n, err := e.s.Finish(e.ctx, bob, token, ids...)
		if n != want {
			e.t.Errorf("Finish(%s, %d ids) = %d, %v; want %d", token, len(ids), n, err, want)
		}
		return err
	}
	want := e.appendN(bob, "m", 5)
	got := e.claim(bob, "t", 3)
	e.wantErr("Finish by another token", finish("u", 0, got[0]), plugin.ErrLeaseLost)
	e.counts(bob, plugin.Counts{Pending: 2, InFlight: 3})
	if err := finish("t", 2, got[0], got[2]); err != nil {
		e.t.Fatal(err)
	}
	e.counts(bob, plugin.Counts{Pending: 3})
	// The same call again, as after a reply lost on its way back.
	if err := finish("t", 0, got[0], got[2]); err != nil {
		e.t.Errorf("Finish retried: %v, want no error", err)
	}
	diff(e.t, "claim after Finish", []string{got[1], want[3]}, e.claim(bob, "u", 2))
	if err := finish("u", 0); err != nil {
		e.t.Fatal(err)
	}
	e.counts(bob, plugin.Counts{Pending: 3})
	// A lapsed lease: no ack, the lease drops.
	got = e.claim(bob, "v", 1)
	e.clock.Advance(lease + time.Second)
	e.wantErr("Finish after lease end", finish("v", 0, got[0]), plugin.ErrLeaseLost)
	e.counts(bob, plugin.Counts{Pending: 3})
	// Swept: the lease is nobody's, the id stored again.
	got = e.claim(bob, "w", 1)
	e.clock.Advance(lease + time.Second)
	if _, err := e.s.Sweep(e.ctx, e.clock.Now()); err != nil {
		e.t.Fatal(err)
	}
	e.wantErr("Finish after the sweep", finish("w", 0, got[0]), plugin.ErrLeaseLost)
	e.counts(bob, plugin.Counts{Pending: 3})
	tot, err := e.s.Totals(e.ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	if tot.Pushed != 2 {
		e.t.Errorf("Totals.Pushed = %d, want 2", tot.Pushed)
	}
}

func testCrashTakeover(e *env) {
	want := e.appendN(bob, "m", 3)
	e.claim(bob, "dead-instance", 2)
	e.clock.Advance(lease + time.Second)
	if ok, err := e.s.Lock(e.ctx, bob, "new", lease); !ok || err != nil {
		e.t.Fatalf("Lock after lease end = %v, %v", ok, err)
	}
	diff(e.t, "takeover", want, e.claim(bob, "new", 10))
	e.wantErr("old owner Unlock", e.s.Unlock(e.ctx, bob, "dead-instance"), plugin.ErrLeaseLost)
	e.counts(bob, plugin.Counts{InFlight: 3})
}

func testRelease(e *env) {
	want := e.appendN(bob, "m", 5)
	got := e.claim(bob, "t", 3)
	e.ack(bob, "t", got[1])
	n, err := e.s.Release(e.ctx, bob, "t")
	if err != nil || n != 2 {
		e.t.Fatalf("Release = %d, %v; want 2", n, err)
	}
	diff(e.t, "after release", []string{want[0], want[2], want[3], want[4]}, e.claim(bob, "t", 10))
}

func testFail(e *env) {
	want := e.appendN(bob, "m", 3)
	got := e.claim(bob, "t", 3)
	dead, err := e.s.Fail(e.ctx, bob, "t", got[1], "415 unsupported", 2)
	if dead || err != nil {
		e.t.Fatalf("first Fail = %v, %v", dead, err)
	}
	m, err := e.s.Get(e.ctx, bob, got[1])
	if err != nil || m.Attempts != 1 || m.LastError != "415 unsupported" || m.State != plugin.StateInFlight {
		e.t.Fatalf("Get after Fail = %+v, %v", m, err)
	}
	if _, err := e.s.Release(e.ctx, bob, "t"); err != nil {
		e.t.Fatal(err)
	}
	// The failed message goes behind the others, which it must not hold
	// back.
	diff(e.t, "order after fail+release", []string{want[0], want[2], got[1]}, e.claim(bob, "t", 10))
	dead, err = e.s.Fail(e.ctx, bob, "t", got[1], "timeout", 2)
	if !dead || err != nil {
		e.t.Fatalf("second Fail = %v, %v; want dead-lettered", dead, err)
	}
	e.counts(bob, plugin.Counts{InFlight: 2, Dead: 1})
	page, err := e.s.DeadLetters(e.ctx, bob, plugin.ListQuery{Limit: 10})
	if err != nil || page.Total != 1 || len(page.Messages) != 1 {
		e.t.Fatalf("DeadLetters = %+v, %v", page, err)
	}
	if m := page.Messages[0]; m.ID != got[1] || m.Attempts != 2 || m.LastError != "timeout" || m.State != plugin.StateDead {
		e.t.Errorf("dead letter = %+v", m)
	}
	if err := e.s.Unlock(e.ctx, bob, "t"); err != nil {
		e.t.Fatal(err)
	}
	n, err := e.s.RequeueDeadLetters(e.ctx, bob)
	if err != nil || n != 1 {
		e.t.Fatalf("RequeueDeadLetters = %d, %v", n, err)
	}
	msgs, err := e.s.Claim(e.ctx, bob, "t2", 10, lease)
	if err != nil {
		e.t.Fatal(err)
	}
	diff(e.t, "after requeue", []string{got[1], want[0], want[2]}, ids(msgs))
	if msgs[0].Attempts != 0 {
		e.t.Errorf("attempts after requeue = %d, want 0", msgs[0].Attempts)
	}
	tot, _ := e.s.Totals(e.ctx)
	if tot.Failed != 2 || tot.DeadLettered != 1 {
		e.t.Errorf("Totals = %+v, want failed 2 dead_lettered 1", tot)
	}
}

func testExpiry(e *env) {
	short := plugin.Limits{MaxMailbox: 100, TTL: time.Minute}
	for i := range 3 {
		if err := e.s.Append(e.ctx, e.msg(bob, fmt.Sprint("old", i)), short); err != nil {
			e.t.Fatal(err)
		}
	}
	if err := e.s.Append(e.ctx, e.msg(alice, "old"), short); err != nil {
		e.t.Fatal(err)
	}
	e.clock.Advance(30 * time.Second)
	keep := e.appendN(bob, "new", 2) // TTL 1h
	st, err := e.s.Sweep(e.ctx, e.clock.Now())
	if err != nil || st.Expired != 0 {
		e.t.Fatalf("early Sweep = %+v, %v", st, err)
	}
	e.clock.Advance(time.Minute)
	// Claim never hands out an expired message.
	diff(e.t, "claim skips expired", keep[:1], e.claim(bob, "t", 1))
	st, err = e.s.Sweep(e.ctx, e.clock.Now())
	if err != nil || st.Expired != 1 {
		e.t.Fatalf("Sweep = %+v, %v; want alice's message expired", st, err)
	}
	e.counts(bob, plugin.Counts{Pending: 1, InFlight: 1})
	e.counts(alice, plugin.Counts{})
	tot, _ := e.s.Totals(e.ctx)
	if tot.Expired != 4 || tot.Mailboxes != 1 {
		e.t.Errorf("Totals = %+v, want expired 4, mailboxes 1", tot)
	}
	// Expired in flight under a live lease waits for the push to end.
	e.clock.Advance(2 * time.Hour)
	if err := e.s.RenewLock(e.ctx, bob, "t", lease); err == nil {
		e.t.Error("RenewLock after lease end succeeded")
	}
	st, err = e.s.Sweep(e.ctx, e.clock.Now())
	if err != nil || st.Expired != 2 {
		e.t.Errorf("final Sweep = %+v, %v; want 2 expired", st, err)
	}
	e.counts(bob, plugin.Counts{})
	tot, _ = e.s.Totals(e.ctx)
	if tot.Mailboxes != 0 {
		e.t.Errorf("Totals.Mailboxes = %d after all expired, want 0", tot.Mailboxes)
	}
	// The recipient can receive again after being unindexed.
	e.appendN(bob, "again", 1)
	tot, _ = e.s.Totals(e.ctx)
	if tot.Mailboxes != 1 {
		e.t.Errorf("Totals.Mailboxes = %d after new append, want 1", tot.Mailboxes)
	}
}

func testAdmin(e *env) {
	want := e.appendN(bob, "m", 5)
	e.claim(bob, "t", 2)
	page, err := e.s.List(e.ctx, bob, plugin.ListQuery{Limit: 3})
	if err != nil {
		e.t.Fatal(err)
	}
	if page.Total != 5 || page.Next != 3 {
		e.t.Errorf("page 1 total %d next %d, want 5, 3", page.Total, page.Next)
	}
	diff(e.t, "page 1", want[:3], ids(page.Messages))
	states := []plugin.State{}
	for _, m := range page.Messages {
		states = append(states, m.State)
	}
	diff(e.t, "states", []plugin.State{plugin.StateInFlight, plugin.StateInFlight, plugin.StatePending}, states)
	page, err = e.s.List(e.ctx, bob, plugin.ListQuery{Offset: 3, Limit: 3})
	if err != nil || page.Next != 0 {
		e.t.Fatalf("page 2 = %+v, %v", page, err)
	}
	diff(e.t, "page 2", want[3:], ids(page.Messages))
	page, _ = e.s.List(e.ctx, bob, plugin.ListQuery{})
	diff(e.t, "all", want, ids(page.Messages))
	page, _ = e.s.List(e.ctx, alice, plugin.ListQuery{Limit: 10})
	if page.Total != 0 || len(page.Messages) != 0 {
		e.t.Errorf("empty mailbox page = %+v", page)
	}

	if err := e.s.Delete(e.ctx, bob, want[0]); err != nil { // in flight
		e.t.Fatal(err)
	}
	if err := e.s.Delete(e.ctx, bob, want[3]); err != nil {
		e.t.Fatal(err)
	}
	e.acked(bob, "t", 0, want[0]) // deleted meanwhile: not counted, no error
	e.counts(bob, plugin.Counts{Pending: 2, InFlight: 1})
	n, err := e.s.DeleteAll(e.ctx, bob)
	if err != nil || n != 3 {
		e.t.Fatalf("DeleteAll = %d, %v; want 3", n, err)
	}
	e.counts(bob, plugin.Counts{})
	if _, err := e.s.Sweep(e.ctx, e.clock.Now()); err != nil {
		e.t.Fatal(err)
	}
	tot, _ := e.s.Totals(e.ctx)
	diff(e.t, "totals", plugin.Totals{Stored: 5, Deleted: 5}, tot)
	if err := e.s.Ping(e.ctx); err != nil {
		e.t.Error(err)
	}
}

// testListPages: a listing without bodies leaves Raw and Invite out and
// counts them in Omitted (Size stays the stored size); with bodies it
// holds them. MaxBytes ends a page before the message that would take
// its sizes past it, but never before its first message, whether the
// page holds the bodies or not; Next and NextAfter go on where it ended.
func testListPages(e *env) {
	lim := plugin.Limits{MaxMailbox: 100, MaxMessageSize: 1024, TTL: time.Hour}
	for i, n := range []int{300, 100, 500, 200, 400, 50} {
		m := e.msg(bob, fmt.Sprint(i)+strings.Repeat("x", n-1))
		if i == 1 { // an MSRP session: its INVITE counts in its size
			m.Kind, m.Invite, m.MessageID, m.ContentType = plugin.KindMSRPSession, []byte("INVITE sip:bob@example.com SIP/2.0\r\n"), "m-1", "text/plain"
		}
		if err := e.s.Append(e.ctx, m, lim); err != nil {
			e.t.Fatal(err)
		}
	}
	e.claim(bob, "t", 2)
	whole, err := e.s.List(e.ctx, bob, plugin.ListQuery{Body: true})
	if err != nil || len(whole.Messages) != 6 {
		e.t.Fatalf("List with bodies = %d messages, %v; want 6", len(whole.Messages), err)
	}
	var heads []*plugin.Message
	for _, m := range whole.Messages {
		got, err := e.s.Get(e.ctx, bob, m.ID)
		if err != nil {
			e.t.Fatal(err)
		}
		diff(e.t, "listed with its body and got", got, m)
		h := *got
		h.Raw, h.Invite, h.Omitted = nil, nil, got.Size()
		heads = append(heads, &h)
	}
	page, err := e.s.List(e.ctx, bob, plugin.ListQuery{})
	if err != nil {
		e.t.Fatal(err)
	}
	diff(e.t, "listed without bodies", heads, page.Messages)
	for _, m := range page.Messages {
		if m.Raw != nil || m.Invite != nil {
			e.t.Errorf("%s listed without bodies holds %d + %d bytes", m.ID, len(m.Raw), len(m.Invite))
		}
	}

	// Sizes 300, 136, 500, 200, 400, 50: with 700 a page, 436, 700, 450.
	for _, q := range []plugin.ListQuery{
		{MaxBytes: 700}, {MaxBytes: 700, Body: true}, {MaxBytes: 100, Body: true}, {MaxBytes: 700, Limit: 1},
	} {
		var walked []string
		for pages := 0; ; pages++ {
			if pages > 6 {
				e.t.Fatalf("%+v: more pages than messages", q)
			}
			page, err := e.s.List(e.ctx, bob, q)
			if err != nil {
				e.t.Fatal(err)
			}
			sum := 0
			for _, m := range page.Messages {
				sum += m.Size()
				walked = append(walked, m.ID)
				if q.Body != (m.Raw != nil) {
					e.t.Errorf("%+v: %s listed with Raw %t", q, m.ID, m.Raw != nil)
				}
			}
			if len(page.Messages) == 0 || len(page.Messages) > 1 && sum > q.MaxBytes ||
				q.Limit > 0 && len(page.Messages) > q.Limit || page.Offset != q.Offset {
				e.t.Errorf("%+v: page at %d of %d messages, %d bytes", q, page.Offset, len(page.Messages), sum)
			}
			end := page.Offset + len(page.Messages)
			if end < whole.Total {
				// Short of Limit only when the next message would not fit.
				if next := whole.Messages[end]; (q.Limit == 0 || len(page.Messages) < q.Limit) && sum+next.Size() <= q.MaxBytes {
					e.t.Errorf("%+v: page at %d ends before %s, which fits", q, page.Offset, next.ID)
				}
			}
			if page.Next == 0 {
				if end != whole.Total || page.NextAfter != "" {
					e.t.Errorf("%+v: last page ends at %d, next after %q", q, end, page.NextAfter)
				}
				break
			}
			if page.Next != end || page.NextAfter != walked[len(walked)-1] {
				e.t.Errorf("%+v: next %d after %q, want %d after %q", q, page.Next, page.NextAfter, end, walked[len(walked)-1])
			}
			q.Offset = page.Next
		}
		diff(e.t, fmt.Sprintf("%+v: ids walked", q), ids(whole.Messages), walked)
	}
}

// testListAfter: a walk that follows NextAfter lists every message that
// stays in the list, in order and once, while others leave its head and
// join its tail between pages (a walk by offset skips one a page); After
// naming a message that has left starts at the first greater id.
func testListAfter(e *env) {
	stay := e.appendN(bob, "m", 10)
	var walked []string
	q := plugin.ListQuery{Limit: 3}
	for round := 0; ; round++ {
		if round > 10 {
			e.t.Fatal("the walk does not end")
		}
		page, err := e.s.List(e.ctx, bob, q)
		if err != nil {
			e.t.Fatal(err)
		}
		walked = append(walked, ids(page.Messages)...)
		if page.NextAfter == "" {
			break
		}
		// A push acks the head; a message arrives.
		head, err := e.s.List(e.ctx, bob, plugin.ListQuery{Limit: 1})
		if err != nil {
			e.t.Fatal(err)
		}
		if err := e.s.Delete(e.ctx, bob, head.Messages[0].ID); err != nil {
			e.t.Fatal(err)
		}
		stay = slices.DeleteFunc(stay, func(id string) bool { return id == head.Messages[0].ID })
		e.appendN(bob, fmt.Sprint("new", round), 1)
		q.After = page.NextAfter
	}
	for _, id := range stay {
		if n := len(slices.DeleteFunc(slices.Clone(walked), func(w string) bool { return w != id })); n != 1 {
			e.t.Errorf("%s, in the list all along, listed %d times", id, n)
		}
	}
	if len(walked) != len(slices.Compact(slices.Sorted(slices.Values(walked)))) {
		e.t.Errorf("an id listed twice: %v", walked)
	}

	all, err := e.s.List(e.ctx, bob, plugin.ListQuery{})
	if err != nil {
		e.t.Fatal(err)
	}
	list := ids(all.Messages)
	gone := list[2]
	if err := e.s.Delete(e.ctx, bob, gone); err != nil {
		e.t.Fatal(err)
	}
	list = slices.Delete(list, 2, 3)
	from := slices.IndexFunc(list, func(id string) bool { return id > gone })
	page, err := e.s.List(e.ctx, bob, plugin.ListQuery{After: gone, Limit: 2})
	if err != nil {
		e.t.Fatal(err)
	}
	if page.Offset != from {
		e.t.Errorf("after a message gone: page at %d, want %d (the first greater id)", page.Offset, from)
	}
	diff(e.t, "after a message gone", list[from:from+2], ids(page.Messages))
	page, err = e.s.List(e.ctx, bob, plugin.ListQuery{After: "7ZZZZZZZZZZZZZZZZZZZZZZZZZ"})
	if err != nil || len(page.Messages) != 0 || page.Offset != len(list) || page.Next != 0 || page.NextAfter != "" {
		e.t.Errorf("after every id = %+v, %v; want an empty last page at %d", page, err, len(list))
	}
	page, err = e.s.List(e.ctx, bob, plugin.ListQuery{After: list[len(list)-1]})
	if err != nil || len(page.Messages) != 0 || page.Offset != len(list) || page.Next != 0 {
		e.t.Errorf("after the last id = %+v, %v; want an empty last page", page, err)
	}

	// Past the first 1,000 ids, a gone one is found by bisection.
	var long []string
	for i := range 1100 {
		m := e.msg(alice, fmt.Sprint("long", i))
		if err := e.s.Append(e.ctx, m, plugin.Limits{MaxMailbox: 2000, TTL: time.Hour}); err != nil {
			e.t.Fatal(err)
		}
		long = append(long, m.ID)
	}
	if err := e.s.Delete(e.ctx, alice, long[1050]); err != nil {
		e.t.Fatal(err)
	}
	for _, tc := range []struct {
		after string
		want  int
	}{{long[1050], 1050}, {long[1099], 1099}, {"7ZZZZZZZZZZZZZZZZZZZZZZZZZ", 1099}, {long[10], 11}} {
		page, err := e.s.List(e.ctx, alice, plugin.ListQuery{After: tc.after, Limit: 1})
		if err != nil || page.Offset != tc.want {
			e.t.Errorf("after %s in a list of 1,099: page at %d (%v), want %d", tc.after, page.Offset, err, tc.want)
		}
	}
}

func testPolicy(e *env) {
	p, err := e.s.Policy(e.ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	diff(e.t, "default policy", plugin.DefaultPolicy(), p)
	bad := plugin.DefaultPolicy()
	bad.MaxMailbox = 0
	var fe *plugin.FieldError
	if err := e.s.SetPolicy(e.ctx, bad, "admin"); !errors.As(err, &fe) || fe.Field != "max_mailbox" {
		e.t.Errorf("SetPolicy(invalid) = %v, want FieldError max_mailbox", err)
	}

	ctx, cancel := context.WithCancel(e.ctx)
	seen := make(chan plugin.Policy, 10)
	done := make(chan error, 1)
	go func() { done <- e.s.WatchPolicy(ctx, func(p plugin.Policy) { seen <- p }) }()
	select {
	case p := <-seen:
		diff(e.t, "initial watched policy", plugin.DefaultPolicy(), p)
	case <-time.After(5 * time.Second):
		e.t.Fatal("WatchPolicy did not report the current policy")
	}
	next := plugin.DefaultPolicy()
	next.PushEnabled, next.MaxMailbox = false, 7
	start := time.Now()
	if err := e.s.SetPolicy(e.ctx, next, "admin"); err != nil {
		e.t.Fatal(err)
	}
	select {
	case p := <-seen:
		diff(e.t, "watched change", next, p)
		if d := time.Since(start); d > time.Second {
			e.t.Errorf("change seen after %v, want within 1s", d)
		}
	case <-time.After(2 * time.Second):
		e.t.Fatal("WatchPolicy did not see the change")
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		e.t.Errorf("WatchPolicy returned %v, want context.Canceled", err)
	}
	got, _ := e.s.Policy(e.ctx)
	diff(e.t, "stored policy", next, got)
}

func testSettings(e *env) {
	u, err := e.s.UserSettings(e.ctx, bob)
	if err != nil || u != (plugin.UserSettings{}) {
		e.t.Fatalf("UserSettings of new user = %+v, %v", u, err)
	}
	want := plugin.UserSettings{Push: plugin.PushHold, MaxPerSession: 5}
	if err := e.s.SetUserSettings(e.ctx, bob, want); err != nil {
		e.t.Fatal(err)
	}
	e.wantErr("invalid settings", e.s.SetUserSettings(e.ctx, bob, plugin.UserSettings{Push: "x"}), plugin.ErrInvalid)
	u, _ = e.s.UserSettings(e.ctx, bob)
	diff(e.t, "settings", want, u)
	if err := e.s.DeleteUserSettings(e.ctx, bob); err != nil {
		e.t.Fatal(err)
	}
	u, _ = e.s.UserSettings(e.ctx, bob)
	diff(e.t, "deleted settings", plugin.UserSettings{}, u)

	reg := plugin.Registration{AOR: bob, Contact: "sip:bob@192.0.2.1:5070;transport=tcp",
		Expires: e.clock.Now().Add(time.Hour), Received: "192.0.2.1:5070", Instance: "<urn:uuid:1>",
		UserAgent: "IMClient/1", Path: []string{"<sip:edge.example.com;lr>"}}
	if err := e.s.SetContact(e.ctx, reg); err != nil {
		e.t.Fatal(err)
	}
	got, err := e.s.Contact(e.ctx, bob)
	if err != nil {
		e.t.Fatal(err)
	}
	diff(e.t, "contact", reg, got)
	// Both in one call, with settings and without.
	got, u, err = e.s.ContactAndSettings(e.ctx, bob)
	if err != nil {
		e.t.Fatal(err)
	}
	diff(e.t, "ContactAndSettings, no settings", []any{reg, plugin.UserSettings{}}, []any{got, u})
	if err := e.s.SetUserSettings(e.ctx, bob, want); err != nil {
		e.t.Fatal(err)
	}
	got, u, err = e.s.ContactAndSettings(e.ctx, bob)
	if err != nil {
		e.t.Fatal(err)
	}
	diff(e.t, "ContactAndSettings", []any{reg, want}, []any{got, u})
	if err := e.s.DeleteUserSettings(e.ctx, bob); err != nil {
		e.t.Fatal(err)
	}
	// Another device's unregistration leaves this one; its own removes it.
	if err := e.s.DeleteContact(e.ctx, bob, "sip:bob@192.0.2.99:5070", time.Time{}); err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.s.Contact(e.ctx, bob); err != nil {
		e.t.Errorf("contact after another one's removal: %v", err)
	}
	if err := e.s.DeleteContact(e.ctx, bob, reg.Contact, time.Time{}); err != nil {
		e.t.Fatal(err)
	}
	_, err = e.s.Contact(e.ctx, bob)
	e.wantErr("removed contact", err, plugin.ErrNotFound)
	_, _, err = e.s.ContactAndSettings(e.ctx, bob)
	e.wantErr("ContactAndSettings of a removed contact", err, plugin.ErrNotFound)
	if err := e.s.DeleteContact(e.ctx, bob, "", time.Time{}); err != nil {
		e.t.Errorf("removing what is not there: %v", err)
	}
	if err := e.s.SetContact(e.ctx, reg); err != nil {
		e.t.Fatal(err)
	}
	if err := e.s.DeleteContact(e.ctx, bob, "", time.Time{}); err != nil {
		e.t.Fatal(err)
	}
	_, err = e.s.Contact(e.ctx, bob)
	e.wantErr("contact removed with any", err, plugin.ErrNotFound)
	if err := e.s.SetContact(e.ctx, reg); err != nil {
		e.t.Fatal(err)
	}
	e.clock.Advance(2 * time.Hour)
	_, err = e.s.Contact(e.ctx, bob)
	e.wantErr("expired contact", err, plugin.ErrNotFound)
	_, _, err = e.s.ContactAndSettings(e.ctx, bob)
	e.wantErr("ContactAndSettings of an expired contact", err, plugin.ErrNotFound)
}

// testClaimAndRead: ClaimAndRead claims as Claim does (the lease, the
// oldest first, another token's live lease refused) and reads the
// registration recorded and the settings with it; no registration, or an
// expired one: claimed all the same, not Registered.
func testClaimAndRead(e *env) {
	want := e.appendN(bob, "m", 3)
	cr, err := e.s.ClaimAndRead(e.ctx, bob, "t1", 2, lease)
	if err != nil {
		e.t.Fatal(err)
	}
	diff(e.t, "claimed without a registration", want[:2], ids(cr.Messages))
	if cr.Registered {
		e.t.Errorf("Registered with no registration stored: %+v", cr.Registration)
	}
	reg := plugin.Registration{AOR: bob, Contact: "sip:bob@192.0.2.1:5070;transport=tcp",
		Expires: e.clock.Now().Add(time.Hour), Received: "192.0.2.1:5070", Instance: "<urn:uuid:1>",
		Path: []string{"<sip:edge.example.com;lr>"}}
	if err := e.s.SetContact(e.ctx, reg); err != nil {
		e.t.Fatal(err)
	}
	u := plugin.UserSettings{Push: plugin.PushHold, MaxPerSession: 5}
	if err := e.s.SetUserSettings(e.ctx, bob, u); err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.s.ClaimAndRead(e.ctx, bob, "t2", 2, lease); !errors.Is(err, plugin.ErrLeaseLost) {
		e.t.Errorf("ClaimAndRead under another token's live lease: %v, want ErrLeaseLost", err)
	}
	cr, err = e.s.ClaimAndRead(e.ctx, bob, "t1", 2, lease)
	if err != nil {
		e.t.Fatal(err)
	}
	diff(e.t, "claimed with the lease held", want[2:], ids(cr.Messages))
	if !cr.Registered {
		e.t.Fatal("not Registered with a registration stored")
	}
	diff(e.t, "registration and settings", []any{reg, u}, []any{cr.Registration, cr.Settings})
	e.counts(bob, plugin.Counts{InFlight: 3})
	e.clock.Advance(2 * time.Hour) // the registration expires; the messages' TTL is an hour
	if err := e.s.Unlock(e.ctx, bob, "t1"); err != nil {
		e.t.Fatal(err)
	}
	cr, err = e.s.ClaimAndRead(e.ctx, bob, "t3", 1, lease)
	if err != nil {
		e.t.Fatal(err)
	}
	if cr.Registered || cr.Settings != (plugin.UserSettings{}) {
		e.t.Errorf("Registered %v (%+v), settings %+v with an expired registration; want neither", cr.Registered, cr.Registration, cr.Settings)
	}
	if len(cr.Messages) != 0 {
		e.t.Errorf("claimed %v; the messages expired with the registration", ids(cr.Messages))
	}
	e.counts(bob, plugin.Counts{})
}

// testContactOrder: registrations and unregistrations that carry the
// proxy's time are ordered per contact, as dp_register and dp_unregister
// order them (a proxy's workers post them in either order); without a
// time they apply as they come.
func testContactOrder(e *env) {
	const ct, other = "sip:u@192.0.2.1:5070;transport=tcp", "sip:u@192.0.2.2:5070;transport=tcp"
	t1 := e.clock.Now().Add(-time.Second)
	t2 := t1.Add(time.Microsecond) // the stores keep microseconds
	reg := func(aor plugin.AOR, contact string, at time.Time) plugin.Registration {
		return plugin.Registration{AOR: aor, Contact: contact, Expires: e.clock.Now().Add(time.Hour), At: at}
	}
	// step is one SetContact (r set) or DeleteContact (of u.AOR, u.Contact
	// at u.At), and whether the store must ignore it.
	type step struct {
		r          *plugin.Registration
		u          *plugin.Unregistration
		superseded bool
	}
	set := func(r plugin.Registration, superseded bool) step { return step{r: &r, superseded: superseded} }
	del := func(aor plugin.AOR, contact string, at time.Time, superseded bool) step {
		return step{u: &plugin.Unregistration{AOR: aor, Contact: contact, At: at}, superseded: superseded}
	}
	for i, tt := range []struct {
		name  string
		steps func(aor plugin.AOR) []step
		want  string // the contact stored at the end; "" none
	}{
		{"older registration after a newer unregistration is ignored", func(a plugin.AOR) []step {
			return []step{del(a, ct, t2, false), set(reg(a, ct, t1), true)}
		}, ""},
		{"older registration after a newer unregistration of a registered contact", func(a plugin.AOR) []step {
			return []step{set(reg(a, ct, t1.Add(-time.Second)), false), del(a, ct, t2, false), set(reg(a, ct, t1), true)}
		}, ""},
		{"older unregistration after a newer registration is ignored", func(a plugin.AOR) []step {
			return []step{set(reg(a, ct, t2), false), del(a, ct, t1, true)}
		}, ct},
		{"older unregistration of every contact after a newer registration", func(a plugin.AOR) []step {
			return []step{set(reg(a, ct, t2), false), del(a, "", t1, true)}
		}, ct},
		{"newer unregistration after a registration", func(a plugin.AOR) []step {
			return []step{set(reg(a, ct, t1), false), del(a, ct, t2, false)}
		}, ""},
		{"newer registration after an unregistration", func(a plugin.AOR) []step {
			return []step{del(a, ct, t1, false), set(reg(a, ct, t2), false)}
		}, ct},
		{"older refresh after a newer one is ignored", func(a plugin.AOR) []step {
			return []step{set(reg(a, ct, t2), false), set(reg(a, ct, t1), true)}
		}, ct},
		{"equal times: the unregistration applies", func(a plugin.AOR) []step {
			return []step{set(reg(a, ct, t1), false), del(a, ct, t1, false)}
		}, ""},
		{"equal times: the registration applies", func(a plugin.AOR) []step {
			return []step{del(a, ct, t1, false), set(reg(a, ct, t1), false)}
		}, ct},
		{"no time: a registration applies as today", func(a plugin.AOR) []step {
			return []step{del(a, ct, t2, false), set(reg(a, ct, time.Time{}), false)}
		}, ct},
		{"no time: an unregistration applies as today", func(a plugin.AOR) []step {
			return []step{set(reg(a, ct, t2), false), del(a, ct, time.Time{}, false)}
		}, ""},
		{"another contact is not ordered against it", func(a plugin.AOR) []step {
			return []step{set(reg(a, ct, t2), false), del(a, other, t1, false), set(reg(a, other, t1), false)}
		}, other},
	} {
		aor := plugin.MustParseAOR(fmt.Sprintf("sip:order%d@example.com", i))
		for j, st := range tt.steps(aor) {
			var err error
			if st.r != nil {
				err = e.s.SetContact(e.ctx, *st.r)
			} else {
				err = e.s.DeleteContact(e.ctx, st.u.AOR, st.u.Contact, st.u.At)
			}
			if st.superseded {
				e.wantErr(fmt.Sprintf("%s: step %d", tt.name, j), err, plugin.ErrSuperseded)
			} else if err != nil {
				e.t.Errorf("%s: step %d: %v", tt.name, j, err)
			}
		}
		got, err := e.s.Contact(e.ctx, aor)
		switch {
		case tt.want == "" && !errors.Is(err, plugin.ErrNotFound):
			e.t.Errorf("%s: contact %q (err %v), want none", tt.name, got.Contact, err)
		case tt.want != "" && (err != nil || got.Contact != tt.want):
			e.t.Errorf("%s: contact %q (err %v), want %q", tt.name, got.Contact, err, tt.want)
		}
		if err == nil && !got.At.IsZero() {
			e.t.Errorf("%s: stored registration has At %v: it is not stored", tt.name, got.At)
		}
	}
}

// testPagerOnly: what a push learnt of a client (it refused MSRP) lasts
// as long as its binding: a refresh keeps it, another instance or (with
// no instance) another contact drops it, and a mark for a binding that is
// no longer stored changes nothing.
func testPagerOnly(e *env) {
	contact := func(r plugin.Registration) plugin.Registration {
		e.t.Helper()
		got, err := e.s.Contact(e.ctx, r.AOR)
		if err != nil {
			e.t.Fatalf("Contact: %v", err)
		}
		return got
	}
	set := func(r plugin.Registration) {
		e.t.Helper()
		if err := e.s.SetContact(e.ctx, r); err != nil {
			e.t.Fatalf("SetContact: %v", err)
		}
	}
	mark := func(aor plugin.AOR, binding string) {
		e.t.Helper()
		if err := e.s.SetPagerOnly(e.ctx, aor, binding); err != nil {
			e.t.Fatalf("SetPagerOnly: %v", err)
		}
	}
	if err := e.s.SetPagerOnly(e.ctx, bob, "sip:bob@192.0.2.1"); err != nil {
		e.t.Errorf("SetPagerOnly with nothing stored: %v", err)
	}
	if _, err := e.s.Contact(e.ctx, bob); !errors.Is(err, plugin.ErrNotFound) {
		e.t.Errorf("SetPagerOnly with nothing stored made a registration: %v", err)
	}

	// By contact (no instance).
	reg := plugin.Registration{AOR: bob, Contact: "sip:bob@192.0.2.1:5070;transport=tcp", Expires: e.clock.Now().Add(time.Hour),
		Path: []string{"<sip:edge.example.com;lr>"}}
	set(reg)
	mark(bob, "sip:bob@192.0.2.9:5070")
	if contact(reg).PagerOnly {
		e.t.Error("marked through another binding")
	}
	mark(bob, reg.Contact)
	want := reg
	want.PagerOnly = true
	diff(e.t, "marked registration", want, contact(reg))
	mark(bob, reg.Contact) // again: no change
	diff(e.t, "marked twice", want, contact(reg))
	refresh := reg
	refresh.Expires = e.clock.Now().Add(2 * time.Hour)
	set(refresh)
	want = refresh
	want.PagerOnly = true
	diff(e.t, "refreshed registration", want, contact(reg))
	moved := reg
	moved.Contact = "sip:bob@192.0.2.2:5070;transport=tcp"
	set(moved)
	diff(e.t, "registration of another contact", moved, contact(reg))

	// By instance: a new contact address of the same device keeps it,
	// another device does not.
	dev := plugin.Registration{AOR: alice, Contact: "sip:alice@192.0.2.3:5070", Instance: "<urn:uuid:a1>", Expires: e.clock.Now().Add(time.Hour)}
	set(dev)
	mark(alice, dev.Contact) // the contact is not the binding
	if contact(dev).PagerOnly {
		e.t.Error("marked through the contact of a registration with an instance")
	}
	mark(alice, dev.Instance)
	roamed := dev
	roamed.Contact = "sip:alice@198.51.100.7:5070"
	set(roamed)
	want = roamed
	want.PagerOnly = true
	diff(e.t, "same instance, new contact", want, contact(dev))
	other := roamed
	other.Instance = "<urn:uuid:a2>"
	set(other)
	diff(e.t, "another instance", other, contact(dev))

	// Its expiry is the registration's.
	if err := e.s.SetPagerOnly(e.ctx, alice, other.Instance); err != nil {
		e.t.Fatal(err)
	}
	e.clock.Advance(2 * time.Hour)
	_, err := e.s.Contact(e.ctx, alice)
	e.wantErr("expired marked registration", err, plugin.ErrNotFound)
}

// testConcurrent: producers append to the same and different recipients
// while consumers push; every message is delivered exactly once and in
// order per producer and recipient.
func testConcurrent(e *env) {
	const (
		recipients = 6
		producers  = 4
		perPair    = 40 // messages per producer and recipient
		consumers  = 6
	)
	aors := make([]plugin.AOR, recipients)
	for i := range aors {
		aors[i] = plugin.MustParseAOR(fmt.Sprintf("sip:user%d@example.com", i))
	}
	total := recipients * producers * perPair
	var (
		mu        sync.Mutex
		delivered = map[string]int{} // id -> times
		lastSeq   = map[[2]int]int{} // (recipient, producer) -> last seq
		errs      []error
		wg        sync.WaitGroup
		produced  = make(chan struct{})
	)
	fail := func(err error) { mu.Lock(); errs = append(errs, err); mu.Unlock() }
	for p := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := range perPair {
				for r, aor := range aors {
					m := &plugin.Message{Recipient: aor, Kind: plugin.KindSIPMessage, Received: e.clock.Now(),
						Raw: []byte(fmt.Sprintf("%d %d %d", r, p, seq))}
					if err := e.s.Append(e.ctx, m, plugin.Limits{MaxMailbox: total}); err != nil {
						fail(err)
						return
					}
				}
			}
		}()
	}
	var cwg sync.WaitGroup
	for c := range consumers {
		cwg.Add(1)
		go func() {
			defer cwg.Done()
			token := fmt.Sprint("consumer-", c)
			for i := 0; ; i++ {
				aor := aors[(c+i)%recipients]
				ok, err := e.s.Lock(e.ctx, aor, token, lease)
				if err != nil {
					fail(err)
					return
				}
				if !ok {
					continue
				}
				msgs, err := e.s.Claim(e.ctx, aor, token, 7, lease)
				if err != nil {
					fail(err)
					return
				}
				for _, m := range msgs {
					var r, p, seq int
					fmt.Sscanf(string(m.Raw), "%d %d %d", &r, &p, &seq)
					mu.Lock()
					delivered[m.ID]++
					key := [2]int{r, p}
					if last, ok := lastSeq[key]; ok && seq != last+1 || !ok && seq != 0 {
						errs = append(errs, fmt.Errorf("recipient %d producer %d: seq %d after %d", r, p, seq, last))
					}
					lastSeq[key] = seq
					mu.Unlock()
				}
				// Ack a claim in one call, as the engine acks a window.
				if n, err := e.s.Ack(e.ctx, aor, token, ids(msgs)...); err != nil || n != len(msgs) {
					fail(fmt.Errorf("ack of %d = %d, %v", len(msgs), n, err))
					return
				}
				if err := e.s.Unlock(e.ctx, aor, token); err != nil {
					fail(err)
					return
				}
				mu.Lock()
				n, stop := len(delivered), len(errs) > 0
				mu.Unlock()
				select {
				case <-produced:
					if n >= total || stop {
						return
					}
				case <-e.ctx.Done():
					fail(e.ctx.Err())
					return
				default:
				}
			}
		}()
	}
	// A sweeper runs throughout; with the clock standing still it must
	// not requeue or drop anything.
	sweepDone := make(chan struct{})
	go func() {
		defer close(sweepDone)
		for {
			select {
			case <-produced:
				return
			default:
			}
			st, err := e.s.Sweep(e.ctx, e.clock.Now())
			if err != nil || st.Requeued+st.Expired > 0 {
				fail(fmt.Errorf("sweep during run = %+v, %v", st, err))
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	wg.Wait()
	close(produced)
	cwg.Wait()
	<-sweepDone
	for _, err := range errs {
		e.t.Error(err)
	}
	if len(delivered) != total {
		e.t.Errorf("delivered %d distinct messages, want %d", len(delivered), total)
	}
	for id, n := range delivered {
		if n != 1 {
			e.t.Errorf("message %s delivered %d times", id, n)
		}
	}
	tot, err := e.s.Totals(e.ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	if tot.Stored != int64(total) || tot.Pushed != int64(total) {
		e.t.Errorf("Totals = %+v, want stored = pushed = %d", tot, total)
	}
	for _, aor := range aors {
		e.counts(aor, plugin.Counts{})
	}
}

// testAtomicUpdates: concurrent read-modify-writes of the policy and of a
// user's settings lose no change; a refused change leaves the value as it
// was.
func testAtomicUpdates(e *env) {
	const writers = 20
	start, err := e.s.Policy(e.ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2*writers)
	for i := range writers {
		wg.Add(2)
		go func() {
			defer wg.Done()
			_, _, err := e.s.UpdatePolicy(e.ctx, fmt.Sprint("admin", i), func(p *plugin.Policy) error {
				p.MaxMailbox++
				return nil
			})
			errs <- err
		}()
		go func() {
			defer wg.Done()
			_, _, err := e.s.UpdateUserSettings(e.ctx, bob, func(u *plugin.UserSettings) error {
				u.MaxPerSession++
				return nil
			})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			e.t.Errorf("concurrent update: %v", err)
		}
	}
	p, _ := e.s.Policy(e.ctx)
	if p.MaxMailbox != start.MaxMailbox+writers {
		e.t.Errorf("max_mailbox after %d concurrent +1 = %d, want %d (a change was lost)", writers, p.MaxMailbox, start.MaxMailbox+writers)
	}
	u, _ := e.s.UserSettings(e.ctx, bob)
	if u.MaxPerSession != writers {
		e.t.Errorf("max_per_session after %d concurrent +1 = %d (a change was lost)", writers, u.MaxPerSession)
	}
	refused := errors.New("refused")
	old, got, err := e.s.UpdatePolicy(e.ctx, "admin", func(p *plugin.Policy) error {
		p.PushEnabled = false
		return refused
	})
	if !errors.Is(err, refused) || got != old || old != p {
		e.t.Errorf("refused change: %v, returned %+v / %+v", err, old, got)
	}
	var fe *plugin.FieldError
	if _, _, err := e.s.UpdatePolicy(e.ctx, "admin", func(p *plugin.Policy) error { p.MaxMailbox = 0; return nil }); !errors.As(err, &fe) {
		e.t.Errorf("invalid change: %v, want a FieldError", err)
	}
	if _, _, err := e.s.UpdateUserSettings(e.ctx, bob, func(u *plugin.UserSettings) error { u.Push = "x"; return nil }); !errors.Is(err, plugin.ErrInvalid) {
		e.t.Errorf("invalid settings: %v, want ErrInvalid", err)
	}
	if now, _ := e.s.Policy(e.ctx); now != p {
		e.t.Errorf("policy changed by refused updates: %+v", now)
	}
}

// testRecipients: a scan in small pages sees every recipient with stored
// messages.
func testRecipients(e *env) {
	want := map[string]bool{}
	for i := range 23 {
		aor := plugin.MustParseAOR(fmt.Sprintf("sip:scan%d@example.com", i))
		e.appendN(aor, "m", 1)
		want[aor.String()] = true
	}
	got := map[string]bool{}
	cursor := ""
	for range 100 {
		aors, next, err := e.s.Recipients(e.ctx, cursor, 5)
		if err != nil {
			e.t.Fatal(err)
		}
		for _, a := range aors {
			got[a.String()] = true
		}
		if next == "" {
			break
		}
		cursor = next
	}
	diff(e.t, "recipients", want, got)
}

// testFailureNotices: a message whose sender asked to hear of a failure
// (NotifyFailure) is reported by the one Sweep that finds it expired —
// also when a Claim met it expired first — and not when it was acked,
// deleted or dead-lettered before, nor while a live push holds it.
func testFailureNotices(e *env) {
	ctx := e.ctx
	add := func(to plugin.AOR, body string, notify bool) *plugin.Message {
		e.t.Helper()
		m := e.msg(to, body)
		m.NotifyFailure = notify
		if err := e.s.Append(ctx, m, limits); err != nil {
			e.t.Fatalf("Append: %v", err)
		}
		return m
	}
	sweep := func() plugin.SweepStats {
		e.t.Helper()
		st, err := e.s.Sweep(ctx, e.clock.Now())
		if err != nil {
			e.t.Fatalf("Sweep: %v", err)
		}
		return st
	}
	undelivered := func(st plugin.SweepStats) []string {
		out := []string{}
		for _, m := range st.Undelivered {
			if !m.NotifyFailure || len(m.Raw) == 0 || m.Recipient.IsZero() {
				e.t.Errorf("reported message %+v: want it whole, with NotifyFailure", m)
			}
			out = append(out, m.CallID)
		}
		slices.Sort(out)
		return out
	}
	a := add(bob, "a", true)
	add(bob, "b", false)
	acked := add(bob, "acked", true)
	dead := add(bob, "dead", true)
	deleted := add(bob, "deleted", true)
	add(alice, "c", true)
	add(alice, "met", true)
	if err := e.s.Delete(ctx, bob, deleted.ID); err != nil {
		e.t.Fatal(err)
	}
	// Ack one, dead-letter one (Claim takes a, b, acked and dead; a and b
	// go back at Unlock).
	if ok, err := e.s.Lock(ctx, bob, "t1", lease); !ok || err != nil {
		e.t.Fatalf("Lock: %v %v", ok, err)
	}
	if got := e.claim(bob, "t1", 4); len(got) != 4 || got[0] != a.ID {
		e.t.Fatalf("Claim = %v", got)
	}
	if n, err := e.s.Ack(ctx, bob, "t1", acked.ID); n != 1 || err != nil {
		e.t.Fatalf("Ack = %d, %v", n, err)
	}
	if d, err := e.s.Fail(ctx, bob, "t1", dead.ID, "refused", 1); !d || err != nil {
		e.t.Fatalf("Fail: %v %v", d, err)
	}
	if err := e.s.Unlock(ctx, bob, "t1"); err != nil {
		e.t.Fatal(err)
	}
	if got := undelivered(sweep()); len(got) != 0 {
		e.t.Fatalf("notices before expiry: %v", got)
	}

	// After the expiry, a Claim meets alice's two: it leaves them to the
	// sweep, which reports them with bob's.
	e.clock.Advance(2 * time.Hour)
	if ok, err := e.s.Lock(ctx, alice, "t2", lease); !ok || err != nil {
		e.t.Fatalf("Lock: %v %v", ok, err)
	}
	if got := e.claim(alice, "t2", 5); len(got) != 0 {
		e.t.Fatalf("Claim after expiry = %v; want nothing", got)
	}
	if err := e.s.Unlock(ctx, alice, "t2"); err != nil {
		e.t.Fatal(err)
	}
	st := sweep()
	if diff := cmp.Diff([]string{"call-a", "call-c", "call-met"}, undelivered(st)); diff != "" {
		e.t.Errorf("notices (-want +got):\n%s", diff)
	}
	if st.Expired != 5 { // a, b, the dead letter (told at Fail), c, met
		e.t.Errorf("expired %d, want 5", st.Expired)
	}
	if st2 := sweep(); len(st2.Undelivered) != 0 {
		e.t.Errorf("notices reported twice: %v", undelivered(st2))
	}

	// A message held by a live push when it expires waits for the push.
	h := add(alice, "h2", true)
	if ok, err := e.s.Lock(ctx, alice, "t3", 4*time.Hour); !ok || err != nil {
		e.t.Fatalf("Lock: %v %v", ok, err)
	}
	if got, err := e.s.Claim(ctx, alice, "t3", 1, 4*time.Hour); err != nil || len(got) != 1 || got[0].ID != h.ID {
		e.t.Fatalf("Claim = %v, %v", ids(got), err)
	}
	e.clock.Advance(2 * time.Hour)
	if got := undelivered(sweep()); len(got) != 0 {
		e.t.Errorf("notice of a message a live push holds: %v", got)
	}
	if err := e.s.Unlock(ctx, alice, "t3"); err != nil {
		e.t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"call-h2"}, undelivered(sweep())); diff != "" {
		e.t.Errorf("notice after the push (-want +got):\n%s", diff)
	}
	if c, _ := e.s.Count(ctx, alice); c != (plugin.Counts{}) {
		e.t.Errorf("alice's mailbox after the sweeps: %+v, want empty", c)
	}
}
