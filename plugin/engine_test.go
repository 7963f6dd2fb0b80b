package plugin_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/plugin/plugintest"
)

// fakePusher stands in for plugin/push in the engine's unit tests: the
// real pusher needs a SIP peer, which the end-to-end tests in test/ bring.
type fakePusher struct {
	mu      sync.Mutex
	opens   int
	closes  int
	got     []string // Call-IDs delivered, in order
	openErr error
	// openGate, when set, holds every Open until it is closed, after a
	// send on openStarted.
	openGate, openStarted chan struct{}
	targets               []plugin.Target // every Open's target, in order
	// refuseMSRP makes every Open of an MSRP session fail as a client
	// without MSRP answers (488); pager-mode opens succeed.
	refuseMSRP bool
	failAt     map[string]error // Call-ID -> error for that message
	breakAt    string           // Call-ID at which the session breaks
	gate       chan struct{}    // when set, Deliver waits on it
	started    chan struct{}    // closed when the first Deliver starts
	startOne   sync.Once
}

func (p *fakePusher) Open(ctx context.Context, t plugin.Target) (plugin.PushSession, error) {
	if p.openGate != nil {
		p.openStarted <- struct{}{}
		<-p.openGate
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.opens++
	p.targets = append(p.targets, t)
	if p.openErr != nil {
		return nil, p.openErr
	}
	if p.refuseMSRP && !t.Pager {
		return nil, &plugin.SessionError{Op: "invite", Status: 488, Err: fmt.Errorf("%w: Not Acceptable Here", plugin.ErrMSRPRefused)}
	}
	return &fakeSession{p: p}, nil
}

type fakeSession struct{ p *fakePusher }

func (s *fakeSession) Deliver(ctx context.Context, msgs []*plugin.Message, done func(*plugin.Message, error)) error {
	p := s.p
	if p.started != nil {
		p.startOne.Do(func() { close(p.started) })
	}
	if p.gate != nil {
		select {
		case <-p.gate:
		case <-ctx.Done():
			for _, m := range msgs {
				done(m, plugin.ErrNotSent)
			}
			return ctx.Err()
		}
	}
	for i, m := range msgs {
		p.mu.Lock()
		brk := p.breakAt == m.CallID
		ferr := p.failAt[m.CallID]
		p.mu.Unlock()
		if brk {
			err := errors.New("connection reset")
			done(m, err)
			for _, rest := range msgs[i+1:] {
				done(rest, plugin.ErrNotSent)
			}
			return err
		}
		if ferr != nil {
			done(m, ferr)
			continue
		}
		p.mu.Lock()
		p.got = append(p.got, m.CallID)
		p.mu.Unlock()
		done(m, nil)
	}
	return nil
}

func (s *fakeSession) Close(ctx context.Context) error {
	s.p.mu.Lock()
	s.p.closes++
	s.p.mu.Unlock()
	return nil
}

type recorder struct {
	mu       sync.Mutex
	notified []string // "<disposition> <error>" of each notification
	reps     []plugin.PushReport
	ch       chan plugin.PushReport
}

func (r *recorder) Notified(d plugin.Disposition, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.notified = append(r.notified, fmt.Sprintf("%s %v", d, err))
}

func (r *recorder) PushDone(rep plugin.PushReport) {
	r.mu.Lock()
	r.reps = append(r.reps, rep)
	r.mu.Unlock()
	r.ch <- rep
}

type engineEnv struct {
	st  *plugintest.Store
	eng *plugin.Engine
	p   *fakePusher
	rec *recorder
}

var bob = plugin.MustParseAOR("sip:bob@example.com")

func newEngine(t *testing.T, p *fakePusher, policy func(*plugin.Policy)) *engineEnv {
	t.Helper()
	e := newEngineWith(t, p, policy)
	e.p = p
	return e
}

// newEngineWith is newEngine with any Pusher.
func newEngineWith(t *testing.T, p plugin.Pusher, policy func(*plugin.Policy)) *engineEnv {
	t.Helper()
	st := plugintest.NewStore(nil)
	setPolicy(t, st, policy)
	rec := &recorder{ch: make(chan plugin.PushReport, 100)}
	eng := startEngine(t, plugin.EngineConfig{Store: st, Pusher: p, Observer: rec, Batch: 4, LockTTL: 5 * time.Second})
	return &engineEnv{st: st, eng: eng, rec: rec}
}

// setPolicy stores the tests' policy in st: the default without retry
// backoff, then change (when not nil).
func setPolicy(t *testing.T, st plugin.Store, change func(*plugin.Policy)) {
	t.Helper()
	pol := plugin.DefaultPolicy()
	pol.RetryBackoff = 0
	if change != nil {
		change(&pol)
	}
	if err := st.SetPolicy(context.Background(), pol, "test"); err != nil {
		t.Fatal(err)
	}
}

// startEngine runs an engine on cfg until the test ends (its Logger is
// scanLogger's) and returns it once it runs — Run reads the policy
// before it starts the scheduler — and its start-up scan is done.
func startEngine(t *testing.T, cfg plugin.EngineConfig) *plugin.Engine {
	t.Helper()
	log, scanned := scanLogger()
	cfg.Logger = log
	eng, err := plugin.NewEngine(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- eng.Run(rctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	for !eng.Running() {
		time.Sleep(time.Millisecond)
	}
	waitScan(t, scanned)
	return eng
}

// scanLogger is an engine's logger that discards everything and closes
// the channel it returns once the start-up scan is done: a test that
// waits for it stores its messages after the scan, which would otherwise
// push them too, beside the push the test asks for.
func scanLogger() (*slog.Logger, <-chan struct{}) {
	h := &scanHandler{done: make(chan struct{})}
	return slog.New(h), h.done
}

type scanHandler struct {
	once sync.Once
	done chan struct{}
}

func (h *scanHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *scanHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Message == "start-up scan done" {
		h.once.Do(func() { close(h.done) })
	}
	return nil
}

func (h *scanHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *scanHandler) WithGroup(string) slog.Handler      { return h }

// waitScan waits for scanLogger's channel.
func waitScan(t *testing.T, scanned <-chan struct{}) {
	t.Helper()
	select {
	case <-scanned:
	case <-time.After(10 * time.Second):
		t.Fatal("the engine's start-up scan did not end within 10 s")
	}
}

func (e *engineEnv) store(t *testing.T, n int) []string {
	t.Helper()
	var ids []string
	for i := range n {
		m := &plugin.Message{
			Recipient: bob, Sender: "sip:alice@example.com", Received: time.Now(),
			Kind: plugin.KindSIPMessage, Raw: []byte(fmt.Sprintf("MESSAGE %d", i)), CallID: fmt.Sprintf("call-%d", i),
		}
		if err := e.eng.Store(context.Background(), m); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, m.CallID)
	}
	return ids
}

func (e *engineEnv) register(t *testing.T) {
	t.Helper()
	err := e.eng.Registered(context.Background(), plugin.Registration{AOR: bob, Contact: "sip:bob@127.0.0.1:5099", Expires: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
}

func (e *engineEnv) report(t *testing.T) plugin.PushReport {
	t.Helper()
	select {
	case r := <-e.rec.ch:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no push report within 10 s")
	}
	return plugin.PushReport{}
}

func (e *engineEnv) counts(t *testing.T) plugin.Counts {
	t.Helper()
	c, err := e.st.Count(context.Background(), bob)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestEngineDeliversAllInOrder(t *testing.T) {
	p := &fakePusher{}
	e := newEngine(t, p, nil)
	want := e.store(t, 10)
	e.register(t)
	rep := e.report(t)
	if rep.Outcome != "delivered" || rep.Delivered != 10 {
		t.Errorf("report = %+v, want delivered 10", rep)
	}
	if diff := cmp.Diff(want, p.got); diff != "" {
		t.Errorf("delivered (-want +got):\n%s", diff)
	}
	if c := e.counts(t); c != (plugin.Counts{}) {
		t.Errorf("counts after push = %+v, want empty", c)
	}
	if p.opens != 1 || p.closes != 1 {
		t.Errorf("opens, closes = %d, %d; want one session", p.opens, p.closes)
	}
}

func TestEngineSessionLimit(t *testing.T) {
	p := &fakePusher{}
	e := newEngine(t, p, func(p *plugin.Policy) { p.MaxPerSession = 3 })
	want := e.store(t, 5)
	e.register(t)
	if rep := e.report(t); rep.Delivered != 3 {
		t.Fatalf("first push delivered %d, want 3 (max_per_session)", rep.Delivered)
	}
	if c := e.counts(t); c.Pending != 2 {
		t.Errorf("pending after first push = %d, want 2", c.Pending)
	}
	e.register(t)
	e.report(t)
	if diff := cmp.Diff(want, p.got); diff != "" {
		t.Errorf("delivered over two pushes (-want +got):\n%s", diff)
	}
}

func TestEngineSecondRegistrationStartsNoSecondPush(t *testing.T) {
	p := &fakePusher{gate: make(chan struct{}), started: make(chan struct{})}
	e := newEngine(t, p, nil)
	want := e.store(t, 3)
	e.register(t)
	<-p.started
	e.register(t) // a refresh while the push runs
	e.register(t)
	more := e.store(t, 1) // arrives during the push
	close(p.gate)
	rep := e.report(t)
	if rep.Delivered+0 < 3 {
		t.Errorf("first push delivered %d, want >= 3", rep.Delivered)
	}
	// The refreshes may run one more push, which finds the late message
	// or nothing; either way no second session opens concurrently and
	// everything arrives once, in order.
	deadline := time.Now().Add(5 * time.Second)
	for e.counts(t) != (plugin.Counts{}) || e.eng.Active() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("mailbox not empty: %+v, active %d", e.counts(t), e.eng.Active())
		}
		time.Sleep(5 * time.Millisecond)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	want = append(want, more[0])
	if diff := cmp.Diff(want, p.got); diff != "" {
		t.Errorf("delivered (-want +got):\n%s", diff)
	}
	if p.opens > 2 {
		t.Errorf("opened %d sessions, want at most 2 (one, then one for the late message)", p.opens)
	}
}

func TestEngineInviteRefusedKeepsMessages(t *testing.T) {
	p := &fakePusher{openErr: &plugin.SessionError{Op: "invite", Status: 486, Err: errors.New("Busy Here")}}
	e := newEngine(t, p, nil)
	e.store(t, 4)
	e.register(t)
	rep := e.report(t)
	if rep.Outcome != "failed" {
		t.Errorf("outcome = %q, want failed", rep.Outcome)
	}
	var se *plugin.SessionError
	if !errors.As(rep.Err, &se) || se.Status != 486 {
		t.Errorf("err = %v, want SessionError 486", rep.Err)
	}
	if c := e.counts(t); c.Pending != 4 || c.InFlight != 0 {
		t.Errorf("counts = %+v, want 4 pending", c)
	}
	m, err := e.st.List(context.Background(), bob, plugin.ListQuery{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	for _, msg := range m.Messages {
		if msg.Attempts != 0 {
			t.Errorf("%s attempts = %d, want 0: a refused INVITE is no attempt at the message", msg.CallID, msg.Attempts)
		}
	}
}

func TestEngineBrokenSessionKeepsRestInOrder(t *testing.T) {
	p := &fakePusher{breakAt: "call-3"}
	e := newEngine(t, p, nil)
	want := e.store(t, 6)
	e.register(t)
	rep := e.report(t)
	if rep.Outcome != "failed" || rep.Delivered != 3 || rep.Failed != 1 {
		t.Errorf("report = %+v, want failed with 3 delivered, 1 failed", rep)
	}
	page, err := e.st.List(context.Background(), bob, plugin.ListQuery{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, m := range page.Messages {
		left = append(left, m.CallID)
		if wantAttempts := map[string]int{"call-3": 1}[m.CallID]; m.Attempts != wantAttempts {
			t.Errorf("%s attempts = %d, want %d", m.CallID, m.Attempts, wantAttempts)
		}
	}
	// The message the session broke on goes behind the rest, which it
	// must not hold back; those keep their order.
	wantLeft := append(append([]string(nil), want[4:]...), want[3])
	if diff := cmp.Diff(wantLeft, left); diff != "" {
		t.Errorf("stored after the break (-want +got):\n%s", diff)
	}
	p.mu.Lock()
	p.breakAt = ""
	p.mu.Unlock()
	e.register(t)
	e.report(t)
	if diff := cmp.Diff(append(append([]string(nil), want[:3]...), wantLeft...), p.got); diff != "" {
		t.Errorf("delivered over two registrations (-want +got):\n%s", diff)
	}
}

func TestEngineRejectedMessageDeadLettered(t *testing.T) {
	p := &fakePusher{failAt: map[string]error{"call-1": &plugin.RejectedError{Status: 415, Reason: "Unsupported Media Type"}}}
	e := newEngine(t, p, func(p *plugin.Policy) { p.MaxAttempts = 2 })
	e.store(t, 3)
	e.register(t)
	if rep := e.report(t); rep.Outcome != "partial" || rep.Delivered != 2 || rep.Failed != 1 || rep.DeadLettered != 0 {
		t.Errorf("first report = %+v, want partial, 2 delivered, 1 failed", rep)
	}
	e.register(t)
	if rep := e.report(t); rep.DeadLettered != 1 {
		t.Errorf("second report = %+v, want the message dead-lettered", rep)
	}
	c := e.counts(t)
	if c != (plugin.Counts{Dead: 1}) {
		t.Errorf("counts = %+v, want one dead letter", c)
	}
}

func TestEngineUnregistrationCancelsPush(t *testing.T) {
	p := &fakePusher{gate: make(chan struct{}), started: make(chan struct{})}
	e := newEngine(t, p, nil)
	e.store(t, 3)
	e.register(t)
	<-p.started
	if err := e.eng.Registered(context.Background(), plugin.Registration{AOR: bob, Contact: "sip:bob@127.0.0.1:5099"}); err != nil {
		t.Fatal(err)
	}
	rep := e.report(t)
	if rep.Outcome != "cancelled" {
		t.Errorf("outcome = %q (%v), want cancelled", rep.Outcome, rep.Err)
	}
	if c := e.counts(t); c.Pending != 3 {
		t.Errorf("counts = %+v, want 3 pending", c)
	}
}

func TestEnginePolicyGatesPush(t *testing.T) {
	for _, tc := range []struct {
		name   string
		policy func(*plugin.Policy)
		user   plugin.UserSettings
	}{
		{"global switch off", func(p *plugin.Policy) { p.PushEnabled = false }, plugin.UserSettings{}},
		{"user off", nil, plugin.UserSettings{Push: plugin.PushOff}},
		{"user hold", nil, plugin.UserSettings{Push: plugin.PushHold}},
		{"default off", func(p *plugin.Policy) { p.DefaultPush = plugin.PushOff }, plugin.UserSettings{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &fakePusher{}
			e := newEngine(t, p, tc.policy)
			if err := e.st.SetUserSettings(context.Background(), bob, tc.user); err != nil {
				t.Fatal(err)
			}
			e.store(t, 2)
			e.register(t)
			// The decision is taken inside Registered: nothing runs.
			if n := e.eng.Active(); n != 0 {
				t.Errorf("active pushes = %d, want 0", n)
			}
			if p.opens != 0 {
				t.Errorf("opened %d sessions, want none", p.opens)
			}
			if c := e.counts(t); c.Pending != 2 {
				t.Errorf("pending = %d, want 2", c.Pending)
			}
		})
	}
}

func TestEngineStoreDisabled(t *testing.T) {
	e := newEngine(t, &fakePusher{}, func(p *plugin.Policy) { p.StoreEnabled = false })
	err := e.eng.Store(context.Background(), &plugin.Message{Recipient: bob, Received: time.Now(), Kind: plugin.KindSIPMessage, Raw: []byte("x")})
	if !errors.Is(err, plugin.ErrStoreDisabled) {
		t.Errorf("Store = %v, want ErrStoreDisabled", err)
	}
}

// flakyRenew is a store whose first RenewLock fails the way a Redis that
// is restarting does; recovered is closed after the next renewal.
type flakyRenew struct {
	*plugintest.Store
	mu        sync.Mutex
	calls     int
	recovered chan struct{}
}

func (s *flakyRenew) RenewLock(ctx context.Context, aor plugin.AOR, token string, ttl time.Duration) error {
	s.mu.Lock()
	s.calls++
	n := s.calls
	s.mu.Unlock()
	if n == 1 {
		return errors.New("store: renew lock: dial tcp 127.0.0.1:6379: connect: connection refused")
	}
	err := s.Store.RenewLock(ctx, aor, token, ttl)
	if n == 2 {
		close(s.recovered)
	}
	return err
}

// A renewal that fails once while the lease still runs (Redis restarting)
// does not end the push: the session goes on and every message is acked.
func TestEngineRenewOutlivesOneStoreError(t *testing.T) {
	st := plugintest.NewStore(nil)
	ctx := context.Background()
	pol := plugin.DefaultPolicy()
	pol.RetryBackoff = 0
	if err := st.SetPolicy(ctx, pol, "test"); err != nil {
		t.Fatal(err)
	}
	fs := &flakyRenew{Store: st, recovered: make(chan struct{})}
	p := &fakePusher{gate: make(chan struct{})}
	rec := &recorder{ch: make(chan plugin.PushReport, 10)}
	eng, err := plugin.NewEngine(plugin.EngineConfig{Store: fs, Pusher: p, Observer: rec, LockTTL: 1500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- eng.Run(rctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	e := &engineEnv{st: st, eng: eng, p: p, rec: rec}
	want := e.store(t, 3)
	reg := plugin.Registration{AOR: bob, Contact: "sip:bob@127.0.0.1:5099", Expires: time.Now().Add(time.Hour)}
	for deadline := time.Now().Add(5 * time.Second); eng.Registered(ctx, reg) != nil; {
		if time.Now().After(deadline) {
			t.Fatal("engine not running after 5 s")
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case <-fs.recovered:
	case <-time.After(5 * time.Second):
		t.Fatal("no second renewal within 5 s")
	}
	close(p.gate)
	rep := e.report(t)
	if rep.Outcome != "delivered" || rep.Delivered != 3 {
		t.Errorf("report = %+v, want all 3 delivered", rep)
	}
	if diff := cmp.Diff(want, p.got); diff != "" {
		t.Errorf("delivered (-want +got):\n%s", diff)
	}
	if n := e.counts(t); n != (plugin.Counts{}) {
		t.Errorf("stored after the push: %+v, want nothing", n)
	}
}

// flakyAck is a store whose first Ack fails the way it does when Redis is
// killed with the command in flight: it ran, its reply never came.
type flakyAck struct {
	*plugintest.Store
	mu    sync.Mutex
	calls int
}

func (s *flakyAck) Ack(ctx context.Context, aor plugin.AOR, token string, ids ...string) (int, error) {
	s.mu.Lock()
	s.calls++
	n := s.calls
	s.mu.Unlock()
	acked, err := s.Store.Ack(ctx, aor, token, ids...)
	if n == 1 && err == nil {
		return 0, errors.New("store: ack: EOF")
	}
	return acked, err
}

// Finish fails once as Ack does: the push's last acks go with it.
func (s *flakyAck) Finish(ctx context.Context, aor plugin.AOR, token string, ids ...string) (int, error) {
	s.mu.Lock()
	s.calls++
	n := s.calls
	s.mu.Unlock()
	acked, err := s.Store.Finish(ctx, aor, token, ids...)
	if n == 1 && err == nil {
		return 0, errors.New("store: finish: EOF")
	}
	return acked, err
}

// An ack whose reply is lost once (Redis restarting) is tried again: the
// push goes on, and the second try, finding the messages gone, is no
// error.
func TestEngineAckOutlivesOneStoreError(t *testing.T) {
	st := plugintest.NewStore(nil)
	ctx := context.Background()
	pol := plugin.DefaultPolicy()
	pol.RetryBackoff = 0
	if err := st.SetPolicy(ctx, pol, "test"); err != nil {
		t.Fatal(err)
	}
	p := &fakePusher{}
	rec := &recorder{ch: make(chan plugin.PushReport, 10)}
	eng, err := plugin.NewEngine(plugin.EngineConfig{Store: &flakyAck{Store: st}, Pusher: p, Observer: rec})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- eng.Run(rctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	e := &engineEnv{st: st, eng: eng, p: p, rec: rec}
	want := e.store(t, 3)
	reg := plugin.Registration{AOR: bob, Contact: "sip:bob@127.0.0.1:5099", Expires: time.Now().Add(time.Hour)}
	for deadline := time.Now().Add(5 * time.Second); eng.Registered(ctx, reg) != nil; {
		if time.Now().After(deadline) {
			t.Fatal("engine not running after 5 s")
		}
		time.Sleep(time.Millisecond)
	}
	rep := e.report(t)
	if rep.Outcome != "delivered" || rep.Delivered != 3 {
		t.Errorf("report = %+v, want all 3 delivered", rep)
	}
	if diff := cmp.Diff(want, p.got); diff != "" {
		t.Errorf("delivered (-want +got):\n%s", diff)
	}
	if n := e.counts(t); n != (plugin.Counts{}) {
		t.Errorf("stored after the push: %+v, want nothing", n)
	}
}

// TestEngineStartupPushesToRegistered: messages stored for a user whose
// registration is live are pushed when the engine starts, with no new
// registration (a kill -9 between the registration hook and the push).
func TestEngineStartupPushesToRegistered(t *testing.T) {
	st := plugintest.NewStore(nil)
	ctx := context.Background()
	pol := plugin.DefaultPolicy()
	if err := st.SetPolicy(ctx, pol, "test"); err != nil {
		t.Fatal(err)
	}
	carol := plugin.MustParseAOR("sip:carol@example.com")
	for i, to := range []plugin.AOR{bob, carol} {
		m := &plugin.Message{Recipient: to, Sender: "sip:alice@example.com", Received: time.Now(),
			Kind: plugin.KindSIPMessage, Raw: []byte("MESSAGE"), CallID: fmt.Sprint("start-", i)}
		if err := st.Append(ctx, m, pol.Limits()); err != nil {
			t.Fatal(err)
		}
	}
	// bob is registered, carol is not.
	if err := st.SetContact(ctx, plugin.Registration{AOR: bob, Contact: "sip:bob@127.0.0.1:5099", Expires: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	p := &fakePusher{}
	rec := &recorder{ch: make(chan plugin.PushReport, 10)}
	eng, err := plugin.NewEngine(plugin.EngineConfig{Store: st, Pusher: p, Observer: rec})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- eng.Run(rctx) }()
	defer func() { cancel(); <-done }()
	select {
	case rep := <-rec.ch:
		if rep.AOR != bob || rep.Delivered != 1 {
			t.Errorf("start-up push %+v, want bob's one message", rep)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no push at start")
	}
	if c, _ := st.Count(ctx, carol); c.Pending != 1 {
		t.Errorf("carol (not registered) has %+v, want her message still pending", c)
	}
}

// cancellingSession confirms its messages only after the push was cancelled
// (an unregistration arriving while the client's 200s are on their way).
type cancellingSession struct {
	e   *engineEnv
	got []string
}

func (s *cancellingSession) Open(ctx context.Context, t plugin.Target) (plugin.PushSession, error) {
	return s, nil
}

func (s *cancellingSession) Deliver(ctx context.Context, msgs []*plugin.Message, done func(*plugin.Message, error)) error {
	if err := s.e.eng.Unregistered(context.Background(), plugin.Unregistration{AOR: bob}); err != nil {
		return err
	}
	<-ctx.Done()
	for _, m := range msgs {
		s.got = append(s.got, m.CallID)
		done(m, nil) // confirmed by the client before it went
	}
	return ctx.Err()
}

func (s *cancellingSession) Close(context.Context) error { return nil }

// TestEngineAckSurvivesCancel: messages the client confirmed are acked
// even when the push is cancelled meanwhile; they would otherwise come
// again (seen through OpenSIPS: an unregistration cancelled the acks on
// their way, and the confirmed messages were pushed a second time).
func TestEngineAckSurvivesCancel(t *testing.T) {
	cs := &cancellingSession{}
	e := newEngineWith(t, cs, nil)
	cs.e = e
	e.store(t, 3)
	e.register(t)
	if rep := e.report(t); rep.Outcome != plugin.OutcomeCancelled || rep.Delivered != 3 {
		t.Errorf("report %+v, want cancelled with 3 delivered", rep)
	}
	if c := e.counts(t); c != (plugin.Counts{}) {
		t.Errorf("counts after the cancelled push = %+v, want the confirmed messages gone", c)
	}
}
