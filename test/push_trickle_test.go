package test

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/deferpush/deferpush/adapters/imclient"
	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/plugin/msrp"
	"github.com/deferpush/deferpush/test/harness"
)

// trickler sits in a client's MSRP path (imclient's PathAddr) and turns
// it into PROBE5 F3's client: the binding SEND and its answer pass; the
// message SENDs are kept from the client, never answered, and at the
// first of them the trickler sends deferpush a SEND of its own instead,
// one body byte every step for as long as hostile (or until deferpush
// closes the connection).
type trickler struct {
	ln      net.Listener
	target  func() string
	step    time.Duration
	hostile time.Duration
	started chan struct{} // closed when the trickle begins
	once    sync.Once
	wg      sync.WaitGroup
}

func startTrickler(t *testing.T, step, hostile time.Duration, target func() string) *trickler {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tr := &trickler{ln: ln, target: target, step: step, hostile: hostile, started: make(chan struct{})}
	tr.wg.Add(1)
	go tr.serve()
	t.Cleanup(func() { ln.Close(); tr.wg.Wait() })
	return tr
}

func (tr *trickler) addr() string { return tr.ln.Addr().String() }

func (tr *trickler) serve() {
	defer tr.wg.Done()
	for {
		dp, err := tr.ln.Accept()
		if err != nil {
			return
		}
		cl, err := net.Dial("tcp", tr.target())
		if err != nil {
			dp.Close()
			continue
		}
		tr.wg.Add(1)
		go func() { defer tr.wg.Done(); tr.relay(dp, cl) }()
	}
}

// relay carries one connection: dp is deferpush's, cl the client's.
func (tr *trickler) relay(dp, cl net.Conn) {
	defer dp.Close()
	defer cl.Close()
	var (
		mu      sync.Mutex // the writes to dp, and tripped
		tripped bool
	)
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() { // the client's answers, until the trickle begins
		defer wg.Done()
		defer dp.Close()
		r, w := msrp.NewReader(cl, msrp.Limits{}), msrp.NewWriter(dp)
		for {
			f, err := r.ReadFrame()
			if err != nil {
				return
			}
			mu.Lock()
			if !tripped {
				w.WriteFrame(f)
			}
			mu.Unlock()
		}
	}()
	r, w := msrp.NewReader(dp, msrp.Limits{}), msrp.NewWriter(cl)
	for {
		f, err := r.ReadFrame()
		if err != nil {
			return
		}
		if f.Method != "SEND" || f.Body == nil {
			w.WriteFrame(f) // the binding SEND
			continue
		}
		mu.Lock()
		first := !tripped
		tripped = true
		mu.Unlock()
		if first {
			wg.Add(1)
			go func() { defer wg.Done(); tr.trickle(dp, f) }()
		}
	}
}

// trickle writes the head of a SEND of the client's own to dp, then its
// body a byte at a time; f is deferpush's first message SEND.
func (tr *trickler) trickle(dp net.Conn, f *msrp.Frame) {
	head := fmt.Sprintf("MSRP trk1abcdef12 SEND\r\nTo-Path: %s\r\nFrom-Path: %s\r\nMessage-ID: trk1msg\r\n"+
		"Byte-Range: 1-*/*\r\nContent-Type: message/cpim\r\n\r\n", f.Value(msrp.HeaderFromPath), f.Value(msrp.HeaderToPath))
	if _, err := dp.Write([]byte(head)); err != nil {
		return
	}
	tr.once.Do(func() { close(tr.started) })
	for end := time.Now().Add(tr.hostile); time.Now().Before(end); {
		time.Sleep(tr.step)
		if _, err := dp.Write([]byte("x")); err != nil {
			return
		}
	}
}

// TestPushClientTrickles is PROBE5 F3 end to end: a client answers the
// INVITE and the binding SEND, never answers a message SEND, and trickles
// a SEND of its own, a body byte every 300 ms (under msrp.timeout, 1 s).
// Its push held the push session, its lease and a push slot for as long
// as it trickled: with push.max_concurrent 1 another user's push waited
// all that time. Now the trickler's push ends about msrp.timeout after
// its SENDs, with BYE; its messages all stay stored (the one it held
// charged an attempt, behind the others), and the other user, queued
// behind it, gets its messages at once.
func TestPushClientTrickles(t *testing.T) {
	const (
		timeout = time.Second
		hostile = 20 * time.Second // how long the client would trickle
	)
	r := harness.Redis(t)
	c := startCore(t, r.URL(), coreOptions{msrpTimeout: timeout, maxConcurrent: 1})
	trk := plugin.MustParseAOR("sip:trk0@example.com")
	nrm := plugin.MustParseAOR("sip:nrm0@example.com")
	stuck := storeN(t, c, trk, 3)
	want := storeN(t, c, nrm, 3)

	var bad *imclient.Client
	tr := startTrickler(t, 300*time.Millisecond, hostile, func() string { return bad.MSRPAddr() })
	bad = newClient(t, trk.String(), imclient.Config{PathAddr: tr.addr()})
	c.register(t, trk, bad.Contact())
	select {
	case <-tr.started:
	case <-time.After(15 * time.Second):
		t.Fatal("the push never reached the trickling client")
	}
	began := time.Now()
	// The other user registers while the trickler holds the only slot.
	good := newClient(t, nrm.String(), imclient.Config{})
	c.register(t, nrm, good.Contact())

	rep := c.report(t)
	ended := time.Since(began)
	if rep.AOR != trk {
		t.Fatalf("first report is %s's (%+v), want the trickler's", rep.AOR, rep)
	}
	if rep.Outcome != plugin.OutcomeFailed || rep.Delivered != 0 {
		t.Errorf("trickler's report = %+v, want failed, nothing delivered", rep)
	}
	if ended > 4*timeout {
		t.Errorf("the trickler's push ended %v after it began trickling, want about msrp.timeout (%v); it trickled for up to %v",
			ended, timeout, hostile)
	}
	waitClient(t, bad, "the trickler's BYE", func(s imclient.Stats) bool { return s.Byes == 1 })

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if st, err := good.Wait(ctx, func(s imclient.Stats) bool { return s.Byes == 1 }); err != nil {
		t.Fatalf("the other user's push, queued behind the trickler: %v (client saw %+v)", err, st)
	}
	if diff := cmp.Diff(want, callIDs(good.Received())); diff != "" {
		t.Errorf("the other user received (-want +got):\n%s", diff)
	}

	// Nothing lost, nothing counted delivered: the message the trickler
	// held is charged its attempt (no answer in msrp.timeout) and goes
	// behind the two never sent.
	page, err := c.st.List(context.Background(), trk, plugin.ListQuery{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	attempts := map[string]int{}
	for _, m := range page.Messages {
		got = append(got, m.CallID)
		attempts[m.CallID] = m.Attempts
	}
	if diff := cmp.Diff([]string{stuck[1], stuck[2], stuck[0]}, got); diff != "" {
		t.Errorf("the trickler's messages stored (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]int{stuck[0]: 1, stuck[1]: 0, stuck[2]: 0}, attempts); diff != "" {
		t.Errorf("attempts (-want +got):\n%s", diff)
	}
	if n := len(bad.Received()); n != 0 {
		t.Errorf("the trickler received %d messages, want none (the trickler kept them from it)", n)
	}
}
