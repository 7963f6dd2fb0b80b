//go:build linux

package msrp

import (
	"net"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// TestConnectTimeout: a first hop whose SYNs are dropped (what a client
// behind NAT or a firewall looks like) is given up on after
// Config.Timeout, not after the kernel's SYN retries (about 2 minutes).
// The hop is a loopback socket listening with a backlog of 0, its accept
// queue filled and never accepted: Linux then drops further SYNs.
func TestConnectTimeout(t *testing.T) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(sa.(*syscall.SockaddrInet4).Port)
	full := false
	for range 8 {
		nc, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			full = true
			break
		}
		t.Cleanup(func() { nc.Close() })
	}
	if !full {
		t.Fatal("the accept queue never filled: the kernel does not drop SYNs here")
	}
	connectWithin(t, "msrp://"+addr+"/nosyn001;tcp")
}
