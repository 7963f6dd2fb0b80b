package test

import (
	"bytes"
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/deferpush/deferpush/adapters/imclient"
	"github.com/deferpush/deferpush/plugin"
)

// throttle is a TCP proxy on loopback that carries what deferpush sends
// to a client at most rate bytes a second (a slow mobile link), and the
// client's answers at full speed. target is asked for at each connection.
type throttle struct {
	ln     net.Listener
	rate   int
	target func() string
	wg     sync.WaitGroup
}

func startThrottle(t *testing.T, rate int, target func() string) *throttle {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	th := &throttle{ln: ln, rate: rate, target: target}
	th.wg.Add(1)
	go th.serve()
	t.Cleanup(func() { ln.Close(); th.wg.Wait() })
	return th
}

func (th *throttle) addr() string { return th.ln.Addr().String() }

func (th *throttle) serve() {
	defer th.wg.Done()
	for {
		in, err := th.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", th.target())
		if err != nil {
			in.Close()
			continue
		}
		th.wg.Add(2)
		go func() { defer th.wg.Done(); th.slowCopy(out, in); out.Close() }()
		go func() { defer th.wg.Done(); _, _ = io.Copy(in, out); in.Close() }()
	}
}

// slowCopy copies src to dst in 256-byte steps paced to rate; it reads
// only as fast as it writes, so the sender's socket buffers fill up as on
// a slow link.
func (th *throttle) slowCopy(dst io.Writer, src io.Reader) {
	buf := make([]byte, 256)
	step := time.Duration(len(buf)) * time.Second / time.Duration(th.rate)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
			time.Sleep(step * time.Duration(n) / time.Duration(len(buf)))
		}
		if err != nil {
			return
		}
	}
}

// TestSlowLinkLargeMessage: a client on a 4 KB/s link gets a 24 KB
// message (6 s on the wire, three times msrp.timeout) and the small one
// stored after it, in one session: the deadlines follow the link's
// progress. With a fixed per-SEND deadline the large message failed every
// session and held the small one back.
func TestSlowLinkLargeMessage(t *testing.T) {
	s := startFaultStack(t, "DEFERPUSH_MSRP_TIMEOUT=2s")
	sender := s.client(t, "sender", imclient.Config{})
	const user = "slowlink"
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	big := bytes.Repeat([]byte("0123456789abcdef"), 24<<10/16)
	var ids []string
	for i, body := range [][]byte{big, []byte("the small one behind it")} {
		id := strings.Repeat("x", i) + "slowlink@fault.test"
		res, err := sender.SendMessage(ctx, "sip:"+user+"@"+domain, "text/plain", body, sip.NewHeader("Call-ID", id))
		if err != nil || res.StatusCode != 202 {
			t.Fatalf("MESSAGE %s: %v %v", id, res, err)
		}
		ids = append(ids, id)
	}
	s.waitPending(t, user, 2)
	var rcv *imclient.Client
	th := startThrottle(t, 4<<10, func() string { return rcv.MSRPAddr() })
	rcv = s.client(t, user, imclient.Config{PathAddr: th.addr()})
	start := time.Now()
	s.register(t, rcv)
	waitFor(t, 40*time.Second, "both messages delivered over the slow link", func() bool {
		return len(missing(ids, rcv.Received())) == 0 && s.counts(t, user) == (plugin.Counts{})
	})
	took := time.Since(start)
	if took < 5*time.Second {
		t.Errorf("delivered in %v: the link was not slow (24 KB at 4 KB/s is 6 s)", took)
	}
	for _, r := range rcv.Received() {
		if r.Answered != 200 {
			t.Errorf("%s answered %d", r.Decoded.CallID, r.Answered)
		}
	}
	if n := len(rcv.Received()); n != 2 {
		t.Errorf("received %d copies, want 2 (each once, in one session)", n)
	}
	t.Logf("24 KB + a small message over a 4 KB/s link with msrp.timeout 2s: delivered in %v", took.Round(100*time.Millisecond))
}
