package ingress

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/deferpush/deferpush/plugin/guard"
	"github.com/deferpush/deferpush/plugin/guard/guardtest"
)

// TestStackSlowFloodKeepsProxy: 128 TCP connections from 127.0.0.2-5
// sending a MESSAGE a byte at a time, reopened as soon as they are
// closed, hold the SIP listener's bound (32). The proxy (127.0.0.1, in
// sip.trusted_sources) keeps its connection, idle between its requests,
// and every MESSAGE it sends on it or on a new connection is answered:
// the flood's new connections may not close a trusted one, and a new
// trusted one takes the place of a flood connection's message still
// arriving. Before, the proxy's idle connection was the first closed for
// room and its new ones were refused.
func TestStackSlowFloodKeepsProxy(t *testing.T) {
	local := []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	s := startStackConfig(t, StackConfig{MaxConns: 32, MaxConnsPerHost: 32, Trusted: local},
		Trust{Secret: testSecret, Sources: local}, nil)
	const secretLine = "X-Deferpush-Secret: " + testSecret
	proxy, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	br := bufio.NewReader(proxy)
	send := func(branch string) error {
		_ = proxy.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := proxy.Write([]byte(request("TCP", branch, secretLine))); err != nil {
			return err
		}
		res := readTCP(t, br)
		if res == nil {
			return fmt.Errorf("no answer: the connection closed or timed out")
		}
		if res.StatusCode/100 != 2 {
			return fmt.Errorf("answered %d", res.StatusCode)
		}
		return nil
	}
	if err := send("kept0"); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	flood := guardtest.StartSlow(ctx, guardtest.SlowConfig{Addr: s.Addr().String(), Sources: 4, PerSource: 32,
		Start: "MESSAGE sip:user2@example.com SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.9:5999;branch=z9hG4bKslow\r\nX-Pad: "})
	t.Cleanup(func() { cancel(); flood.Wait() })
	tcp := s.tcp.(*guard.Listener)
	// At the bound, the flood's new connections are closed unanswered.
	for flood.Count("closed") < 10 || tcp.Open() < 32 {
		if ctx.Err() != nil {
			t.Fatalf("the flood never held the bound: %d open, answers %v", tcp.Open(), flood.Answers())
		}
		time.Sleep(20 * time.Millisecond)
	}
	for i := range 10 {
		if err := send(fmt.Sprintf("kept%d", i+1)); err != nil {
			t.Fatalf("the proxy's kept connection, MESSAGE %d during the flood: %v", i+1, err)
		}
		res := exchangeTCP(t, s.Addr(), request("TCP", fmt.Sprintf("fresh%d", i), secretLine), 3*time.Second)
		if res == nil || res.StatusCode/100 != 2 {
			t.Errorf("the proxy's new connection, MESSAGE %d during the flood: %v, want 2xx", i, res)
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Logf("the flood's answers: %v", flood.Answers())
}
