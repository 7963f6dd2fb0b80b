package guard

import (
	"net"
	"strconv"
	"testing"
)

// TestListenTCPAndUDP: the SIP listener binds TCP and UDP on one port;
// with port 0 it finds one free for both, and a fixed port whose UDP side
// is taken is an error, not another port.
func TestListenTCPAndUDP(t *testing.T) {
	for range 20 {
		tcp, udp, err := ListenTCPAndUDP("127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		if tp, up := tcp.Addr().(*net.TCPAddr).Port, udp.LocalAddr().(*net.UDPAddr).Port; tp != up {
			t.Errorf("TCP port %d, UDP port %d: want one port", tp, up)
		}
		tcp.Close()
		udp.Close()
	}
	taken, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	addr := "127.0.0.1:" + strconv.Itoa(taken.LocalAddr().(*net.UDPAddr).Port)
	if tcp, udp, err := ListenTCPAndUDP(addr); err == nil {
		tcp.Close()
		udp.Close()
		t.Errorf("listening on %s, whose UDP port is taken, succeeded", addr)
	}
}
