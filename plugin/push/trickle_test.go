package push

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/plugin/encap"
	"github.com/deferpush/deferpush/plugin/msrp"
	"github.com/deferpush/deferpush/plugin/sdp"
)

// rawClient is a push session's client over loopback TCP, driven by hand:
// it answers the binding SEND 200, then runs behave with what it reads
// and its connection. It returns the session connected to it, as Open
// connects one (a=setup:passive).
func rawClient(t *testing.T, timeout time.Duration, behave func(nc net.Conn, r *msrp.Reader, bind *msrp.Frame)) *msrp.Session {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		r := msrp.NewReader(nc, msrp.Limits{})
		bind, err := r.ReadFrame()
		if err != nil {
			return
		}
		ok := &msrp.Frame{TID: bind.TID, Status: 200, Comment: "OK", Header: []msrp.Header{
			{Name: msrp.HeaderToPath, Value: bind.Value(msrp.HeaderFromPath)}, {Name: msrp.HeaderFromPath, Value: bind.Value(msrp.HeaderToPath)}}}
		if err := msrp.NewWriter(nc).WriteFrame(ok); err != nil {
			return
		}
		behave(nc, r, bind)
	}()
	ms, err := msrp.NewSession(msrp.Config{Local: msrp.URI{Host: "127.0.0.1", Port: 9, SessionID: msrp.NewSessionID()}, Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ms.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	peer := msrp.URI{Host: "127.0.0.1", Port: ln.Addr().(*net.TCPAddr).Port, SessionID: "clientsession1", Transport: "tcp"}
	if err := ms.Connect(ctx, []msrp.URI{peer}); err != nil {
		t.Fatal(err)
	}
	return ms
}

// TestDeliverClientTrickles is PROBE5 F3 at the push's MSRP session: a
// client answers the binding SEND, reads the first message's SEND, never
// answers it, and sends a SEND of its own instead, one body byte every
// third of msrp.timeout. Its push held its lease and its push slot for as
// long as it trickled (180 s with a 5 s timeout in the probe; two such
// clients starved every other push with push.max_concurrent 2): each
// byte read counted as progress of the session. Now the session ends
// about one msrp.timeout after our SENDs were written, the first message
// charged an attempt (no answer in time) and the others not sent; none is
// confirmed, so all stay stored.
func TestDeliverClientTrickles(t *testing.T) {
	const (
		timeout = 500 * time.Millisecond
		hostile = 12 * timeout // how long the client trickles
	)
	reading := make(chan struct{})
	ms := rawClient(t, timeout, func(nc net.Conn, r *msrp.Reader, bind *msrp.Frame) {
		if _, err := r.ReadFrame(); err != nil {
			return
		}
		close(reading)
		go func() {
			for {
				if _, err := r.ReadFrame(); err != nil {
					return
				}
			}
		}()
		head := fmt.Sprintf("MSRP trk1abcdef12 SEND\r\nTo-Path: %s\r\nFrom-Path: %s\r\nMessage-ID: trk1msg\r\n"+
			"Byte-Range: 1-*/*\r\nContent-Type: message/cpim\r\n\r\n", bind.Value(msrp.HeaderFromPath), bind.Value(msrp.HeaderToPath))
		if _, err := nc.Write([]byte(head)); err != nil {
			return
		}
		for end := time.Now().Add(hostile); time.Now().Before(end); {
			time.Sleep(timeout / 3)
			if _, err := nc.Write([]byte("x")); err != nil {
				return
			}
		}
	})
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	s := &session{
		p:      &Pusher{cfg: Config{MSRPTimeout: timeout, ChunkSize: 2048, Window: 16}},
		ms:     ms,
		answer: sdp.Media{Path: []msrp.URI{{Host: "127.0.0.1", Port: 9, SessionID: "clientsession1"}}, AcceptTypes: []string{encap.TypeSIP}},
		policy: plugin.DefaultPolicy(),
	}
	var fates []string
	errc := make(chan error, 1)
	go func() {
		errc <- s.delivery(ctx, cancel).run(ctx, stored(t, 3), func(m *plugin.Message, err error) { fates = append(fates, fateOf(err)) })
	}()
	select {
	case <-reading:
	case <-time.After(10 * time.Second):
		t.Fatal("the first SEND did not reach the client")
	}
	start := time.Now()
	var err error
	select {
	case err = <-errc:
	case <-time.After(hostile + 2*timeout):
		t.Fatalf("the session still runs %v after the client began trickling", time.Since(start))
	}
	if took := time.Since(start); took > 3*timeout {
		t.Errorf("the session ended %v after its SENDs, want about the %v msrp.timeout", took, timeout)
	}
	var se *plugin.SessionError
	var me *msrp.StatusError
	if !errors.As(err, &se) || !errors.As(err, &me) || me.Code != msrp.StatusTimeout {
		t.Errorf("run = %v, want the session broken by a local 408", err)
	}
	if diff := cmp.Diff([]string{failed, notSent, notSent}, fates); diff != "" {
		t.Errorf("fates (-want +got):\n%s", diff)
	}
}

// TestDeliverOverBudget: a session that outlasts what its steps' own
// deadlines add up to ends even when a step outlives its deadline. Here
// the MSRP session's own timeout (5 s) stands for a step kept alive past
// the delivery's msrp.timeout (200 ms), and the client never answers:
// the budget, 200 ms × (1 + 3 messages × (1 + 1 chunk)) = 1.4 s, ends the
// session; no message is confirmed or charged an attempt (all not sent:
// they stay stored as they were).
func TestDeliverOverBudget(t *testing.T) {
	const timeout = 200 * time.Millisecond
	ms := rawClient(t, 5*time.Second, func(_ net.Conn, r *msrp.Reader, _ *msrp.Frame) {
		for {
			if _, err := r.ReadFrame(); err != nil {
				return
			}
		}
	})
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	d := delivery{ms: ms, window: 4, timeout: timeout, chunkSize: 2048, stall: cancel,
		opts: encap.Options{AcceptTypes: []string{encap.TypeSIP}}}
	var fates []string
	start := time.Now()
	err := d.run(ctx, stored(t, 3), func(m *plugin.Message, err error) { fates = append(fates, fateOf(err)) })
	took := time.Since(start)
	if !errors.Is(err, errOverBudget) {
		t.Errorf("run = %v, want the session over its budget", err)
	}
	if took < 7*timeout || took > 7*timeout+2*time.Second {
		t.Errorf("run took %v, want the budget of %v", took, 7*timeout)
	}
	if diff := cmp.Diff(repeat(notSent, 3), fates); diff != "" {
		t.Errorf("fates (-want +got):\n%s", diff)
	}
}

// TestBudget checks the budget's arithmetic: one unit to begin with, then
// a unit per message and one per chunk of it, counted from the start; no
// end once stopped.
func TestBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const unit = time.Second
		ended := make(chan time.Duration, 1)
		start := time.Now()
		b := startBudget(unit, func(err error) {
			if !errors.Is(err, errOverBudget) {
				t.Errorf("over(%v), want errOverBudget", err)
			}
			ended <- time.Since(start)
		})
		time.Sleep(unit / 2)
		b.message(100, 2048)  // 1 chunk: 2 units
		b.message(5000, 2048) // 3 chunks: 4 units
		b.message(0, 2048)    // a bodiless message is a chunk: 2 units
		if got, want := <-ended, 9*unit; got != want {
			t.Errorf("ended after %v, want %v", got, want)
		}

		stopped := startBudget(unit, func(error) { t.Error("a stopped budget ended its delivery") })
		stopped.stop()
		time.Sleep(2 * unit)
	})
}
