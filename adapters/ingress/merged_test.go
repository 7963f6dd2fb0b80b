package ingress

import (
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

// TestMergedWindow: a UDP transaction merges copies for 32 s (Timer J),
// across a rotation of the index, and not after; a TCP one until done.
func TestMergedWindow(t *testing.T) {
	parse := func(raw string) *sip.Request {
		t.Helper()
		m, err := sip.ParseMessage([]byte(raw))
		if err != nil {
			t.Fatal(err)
		}
		return m.(*sip.Request)
	}
	udp := parse(request("UDP", "win"))
	udpCopy := parse(strings.Replace(request("UDP", "win"), "branch=z9hG4bKwin", "branch=z9hG4bKwin2", 1))
	g := newMerged()
	t0 := time.Unix(1_000_000, 0)
	for _, step := range []struct {
		req  *sip.Request
		at   time.Duration
		want bool
	}{{udp, 0, false}, {udpCopy, 10 * time.Second, true}, {udpCopy, 31 * time.Second, true}, {udpCopy, 33 * time.Second, false}} {
		if got, _ := g.begin(step.req, t0.Add(step.at)); got != step.want {
			t.Errorf("at %v: merged %v, want %v", step.at, got, step.want)
		}
	}
	tcp := parse(request("TCP", "tcpwin"))
	tcpCopy := parse(strings.Replace(request("TCP", "tcpwin"), "branch=z9hG4bKtcpwin", "branch=z9hG4bKtcpwin2", 1))
	_, done := g.begin(tcp, t0)
	if got, _ := g.begin(tcpCopy, t0.Add(time.Second)); !got {
		t.Error("a TCP copy while the first is handled: not merged")
	}
	done()
	if got, _ := g.begin(tcpCopy, t0.Add(2*time.Second)); got {
		t.Error("a TCP copy after the first was answered: merged")
	}
}
