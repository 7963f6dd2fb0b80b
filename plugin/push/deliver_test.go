package push

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/plugin/encap"
	"github.com/deferpush/deferpush/plugin/msrp"
	"github.com/deferpush/deferpush/plugin/sdp"
)

// client records what the receiving end of pair got.
type client struct {
	mu    sync.Mutex
	got   []string // Call-IDs in the order received
	types []string // their payloads' Content-Types
}

var errDrop = errors.New("drop")

// pair connects a sending session to a receiving one over loopback TCP
// and returns the sender. answer says what the receiver does with its
// n-th message (from 1): nil answers 200, errDrop closes the connection
// without answering, another error is the answer.
func pair(t *testing.T, c *client, answer func(n int) error) *msrp.Session {
	t.Helper()
	return pairTyped(t, c, func(n int, _ string) error { return answer(n) })
}

// pairTyped is pair with an answer that also sees the payload's type.
func pairTyped(t *testing.T, c *client, answer func(n int, contentType string) error) *msrp.Session {
	t.Helper()
	l, err := msrp.NewListener(msrp.ListenerConfig{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	runErr := make(chan error, 1)
	go func() { runErr <- l.Run(context.Background()) }()
	t.Cleanup(func() {
		l.Close()
		<-runErr
	})
	var n int
	recv, err := msrp.NewSession(msrp.Config{Local: l.URI(), Handler: msrp.HandlerFunc(
		func(ctx context.Context, s *msrp.Session, m *msrp.Message) error {
			d, err := encap.Decode(m.ContentType, m.Body)
			if err != nil {
				t.Errorf("decode: %v", err)
			}
			n++
			c.mu.Lock()
			c.got = append(c.got, d.CallID)
			c.types = append(c.types, m.ContentType)
			c.mu.Unlock()
			if err := answer(n, m.ContentType); errors.Is(err, errDrop) {
				go s.Close()
				<-ctx.Done()
				return ctx.Err()
			} else if err != nil {
				return err
			}
			return nil
		})})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { recv.Close() })
	send, err := msrp.NewSession(msrp.Config{Local: msrp.URI{Host: "127.0.0.1", Port: 9}, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { send.Close() })
	if err := l.Add(recv, []msrp.URI{send.URI()}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := send.Connect(ctx, []msrp.URI{recv.URI()}); err != nil {
		t.Fatal(err)
	}
	return send
}

// stored returns n stored SIP MESSAGEs with Call-IDs call-1..call-n;
// those listed in bad are not parseable.
func stored(t *testing.T, n int, bad ...int) []*plugin.Message {
	t.Helper()
	var msgs []*plugin.Message
	for i := 1; i <= n; i++ {
		raw := fmt.Appendf(nil, "MESSAGE sip:bob@example.com SIP/2.0\r\nFrom: <sip:alice@example.com>;tag=1\r\n"+
			"To: <sip:bob@example.com>\r\nCall-ID: call-%d\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\n"+
			"Content-Length: 5\r\n\r\nhello", i)
		raw, err := encap.AddDate(raw, time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC))
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range bad {
			if b == i {
				raw = []byte("not a SIP message")
			}
		}
		msgs = append(msgs, &plugin.Message{ID: plugin.NewID(time.Now()), Recipient: plugin.MustParseAOR("sip:bob@example.com"),
			Kind: plugin.KindSIPMessage, Raw: raw, CallID: fmt.Sprintf("call-%d", i)})
	}
	return msgs
}

// Fates of a message as the tests check them.
const (
	confirmed = "confirmed"
	refused   = "refused 413"
	notSent   = "not sent"
	failed    = "failed" // sent, unconfirmed
	badStored = "encapsulate error"
	held      = "held"
)

func fateOf(err error) string {
	var re *plugin.RejectedError
	switch {
	case err == nil:
		return confirmed
	case errors.As(err, &re) && re.Status == msrp.StatusStopSending:
		return refused
	case errors.Is(err, plugin.ErrNotSent):
		return notSent
	case errors.Is(err, encap.ErrMalformed):
		return badStored
	case errors.Is(err, plugin.ErrHeld):
		return held
	}
	return failed
}

func TestDeliverPipelined(t *testing.T) {
	tests := []struct {
		name      string
		n         int
		window    int
		bad       []int
		answer    func(n int) error
		cancelled bool
		want      []string // fate of each message
		// received is the number of messages the client gets; 0: n.
		received  int
		wantBreak bool
	}{
		{
			name: "all confirmed", n: 20, window: 4, answer: func(int) error { return nil },
			want: repeat(confirmed, 20),
		},
		{
			name: "one refused", n: 6, window: 4,
			answer: func(n int) error {
				if n == 3 {
					return msrp.Status(msrp.StatusStopSending)
				}
				return nil
			},
			want: []string{confirmed, confirmed, refused, confirmed, confirmed, confirmed},
		},
		{
			name: "unparseable stored message keeps its place", n: 5, window: 4, bad: []int{2},
			answer:   func(int) error { return nil },
			want:     []string{confirmed, badStored, confirmed, confirmed, confirmed},
			received: 4,
		},
		{
			name: "connection dropped, window 1", n: 5, window: 1,
			answer: func(n int) error {
				if n == 3 {
					return errDrop
				}
				return nil
			},
			want:      []string{confirmed, confirmed, failed, notSent, notSent},
			received:  3,
			wantBreak: true,
		},
		{
			// Messages sent behind the one the connection broke on are not
			// charged an attempt: only that one is.
			name: "connection dropped, window 4", n: 6, window: 4,
			answer: func(n int) error {
				if n == 3 {
					return errDrop
				}
				return nil
			},
			want:      []string{confirmed, confirmed, failed, notSent, notSent, notSent},
			received:  3,
			wantBreak: true,
		},
		{
			// 506: the client has the session bound elsewhere; nothing is
			// charged, the session ends.
			name: "506 session already bound", n: 5, window: 1,
			answer: func(n int) error {
				if n == 3 {
					return msrp.Status(msrp.StatusSessionAlreadyBound)
				}
				return nil
			},
			want:      []string{confirmed, confirmed, notSent, notSent, notSent},
			received:  3,
			wantBreak: true,
		},
		{
			// 481: the client has no such session; as 506.
			name: "481 no session", n: 5, window: 1,
			answer: func(n int) error {
				if n == 3 {
					return msrp.Status(msrp.StatusNoSession)
				}
				return nil
			},
			want:      []string{confirmed, confirmed, notSent, notSent, notSent},
			received:  3,
			wantBreak: true,
		},
		{
			name: "context ended first", n: 3, window: 4, answer: func(int) error { return nil },
			cancelled: true,
			want:      repeat(notSent, 3),
			received:  -1,
			wantBreak: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &client{}
			d := delivery{ms: pair(t, c, tt.answer), window: tt.window,
				opts: encap.Options{AcceptTypes: []string{encap.TypeSIP}}}
			msgs := stored(t, tt.n, tt.bad...)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tt.cancelled {
				cancel()
			}
			var (
				inDone atomic.Bool
				order  []string
				fates  []string
			)
			err := d.run(ctx, msgs, func(m *plugin.Message, err error) {
				if !inDone.CompareAndSwap(false, true) {
					t.Error("done calls overlap")
				}
				defer inDone.Store(false)
				order = append(order, m.CallID)
				fates = append(fates, fateOf(err))
			})
			var se *plugin.SessionError
			if got := errors.As(err, &se); got != tt.wantBreak {
				t.Errorf("Deliver = %v, want a session error: %v", err, tt.wantBreak)
			}
			var want []string
			for _, m := range msgs {
				want = append(want, m.CallID)
			}
			if diff := cmp.Diff(want, order); diff != "" {
				t.Errorf("done order (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.want, fates); diff != "" {
				t.Errorf("fates (-want +got):\n%s", diff)
			}
			received := tt.received
			switch received {
			case 0:
				received = tt.n
			case -1:
				received = 0
			}
			c.mu.Lock()
			defer c.mu.Unlock()
			if len(c.got) != received {
				t.Errorf("client received %d messages (%v), want %d", len(c.got), c.got, received)
			}
			var sent []string
			for i, m := range msgs {
				if tt.want[i] != badStored && len(sent) < received {
					sent = append(sent, m.CallID)
				}
			}
			if diff := cmp.Diff(sent, c.got); diff != "" {
				t.Errorf("order received (-want +got):\n%s", diff)
			}
		})
	}
}

func repeat(s string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s
	}
	return out
}

// TestDeliverStallEnds: a session whose messages cannot start (here a
// passive session no client ever connects to, as after a connection lost
// without a BYE) ends after the timeout, its messages not sent, instead of
// holding the push for good.
func TestDeliverStallEnds(t *testing.T) {
	l, err := msrp.NewListener(msrp.ListenerConfig{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	runErr := make(chan error, 1)
	go func() { runErr <- l.Run(context.Background()) }()
	t.Cleanup(func() {
		l.Close()
		<-runErr
	})
	waiting, err := msrp.NewSession(msrp.Config{Local: l.URI()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { waiting.Close() })
	if err := l.Add(waiting, nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	d := delivery{ms: waiting, window: 4, timeout: 200 * time.Millisecond, stall: cancel,
		opts: encap.Options{AcceptTypes: []string{encap.TypeSIP}}}
	var fates []string
	start := time.Now()
	err = d.run(ctx, stored(t, 3), func(m *plugin.Message, err error) { fates = append(fates, fateOf(err)) })
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("run took %v, want it ended by the 200 ms timeout", d)
	}
	if !errors.Is(err, errStalled) {
		t.Errorf("run = %v, want the stall", err)
	}
	if want := repeat(notSent, 3); fmt.Sprint(fates) != fmt.Sprint(want) {
		t.Errorf("fates = %v, want %v", fates, want)
	}
}

// TestDeliverMaxSize: a message whose payload is larger than the answer's
// a=max-size (RFC 4975 §8.6) is not sent — where it went and drew a 413,
// charged an attempt each push until dead-lettered (INTEROP finding 6) —
// but held like a message the client takes in no encapsulation (no
// attempt); the others go.
func TestDeliverMaxSize(t *testing.T) {
	ans, err := sdp.Parse([]byte("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n" +
		"m=message 9 TCP/MSRP *\r\na=accept-types:message/sip\r\na=max-size:400\r\n" +
		"a=path:msrp://127.0.0.1:9/clientsess01;tcp\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	s := &session{p: newTestPusher(t, ""), answer: ans, policy: plugin.DefaultPolicy()}
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	d := s.delivery(ctx, cancel)
	c := &client{}
	d.ms = pair(t, c, func(int) error { return nil })
	msgs := stored(t, 3)
	big := strings.Repeat("x", 400)
	msgs[1].Raw = []byte(strings.Replace(string(msgs[1].Raw), "Content-Length: 5\r\n\r\nhello", fmt.Sprintf("Content-Length: %d\r\n\r\n%s", len(big), big), 1))
	var fates []string
	if err := d.run(ctx, msgs, func(m *plugin.Message, err error) { fates = append(fates, fateOf(err)) }); err != nil {
		t.Errorf("run = %v", err)
	}
	if diff := cmp.Diff([]string{confirmed, held, confirmed}, fates); diff != "" {
		t.Errorf("fates (-want +got):\n%s", diff)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if diff := cmp.Diff([]string{"call-1", "call-3"}, c.got); diff != "" {
		t.Errorf("client received (-want +got):\n%s", diff)
	}
}

// TestDeliver415TriesAnother: a client that lists message/sip but answers
// 415 to it (INTEROP finding 10) gets the same message again in the next
// encapsulation it accepts, in the same session, and message/sip is not
// used again in it; no attempt is charged (the message is confirmed).
// Only when no other encapsulation is left is the 415 the message's fate
// (an attempt), and the messages after it are held, not charged.
func TestDeliver415TriesAnother(t *testing.T) {
	tests := []struct {
		name   string
		accept []string
		fates  []string
		types  []string
	}{
		{
			name: "sipfrag next", accept: []string{encap.TypeSIP, encap.TypeSIPFrag},
			fates: []string{confirmed, confirmed, confirmed},
			types: []string{encap.TypeSIP, encap.TypeSIPFrag, encap.TypeSIPFrag, encap.TypeSIPFrag},
		},
		{
			name: "nothing else", accept: []string{encap.TypeSIP},
			fates: []string{"refused 415", held, held},
			types: []string{encap.TypeSIP},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &client{}
			ms := pairTyped(t, c, func(_ int, ct string) error {
				if ct == encap.TypeSIP {
					return msrp.Status(msrp.StatusUnsupportedMedia)
				}
				return nil
			})
			d := delivery{ms: ms, window: 1, opts: encap.Options{AcceptTypes: tt.accept}}
			var fates []string
			err := d.run(context.Background(), stored(t, 3), func(m *plugin.Message, err error) {
				var re *plugin.RejectedError
				if errors.As(err, &re) && re.Status == msrp.StatusUnsupportedMedia {
					fates = append(fates, "refused 415")
					return
				}
				fates = append(fates, fateOf(err))
			})
			if err != nil {
				t.Errorf("run = %v", err)
			}
			if diff := cmp.Diff(tt.fates, fates); diff != "" {
				t.Errorf("fates (-want +got):\n%s", diff)
			}
			c.mu.Lock()
			defer c.mu.Unlock()
			if diff := cmp.Diff(tt.types, c.types); diff != "" {
				t.Errorf("payload types the client got (-want +got):\n%s", diff)
			}
		})
	}
}
