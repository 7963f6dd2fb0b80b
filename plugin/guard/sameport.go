package guard

import (
	"errors"
	"net"
	"strconv"
	"syscall"
)

// ListenTCPAndUDP binds TCP and UDP on the same port of addr, as a SIP
// listener does. Port 0 picks the TCP port, which another process may
// hold for UDP: then it picks again, a few times, rather than fail.
func ListenTCPAndUDP(addr string) (net.Listener, net.PacketConn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, err
	}
	for try := 1; ; try++ {
		tcp, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, nil, err
		}
		p := tcp.Addr().(*net.TCPAddr).Port
		udp, err := net.ListenPacket("udp", net.JoinHostPort(host, strconv.Itoa(p)))
		if err == nil {
			return tcp, udp, nil
		}
		tcp.Close()
		if port != "0" || !errors.Is(err, syscall.EADDRINUSE) || try == 10 {
			return nil, nil, err
		}
	}
}
