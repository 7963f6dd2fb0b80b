package harness

import (
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// InCI reports whether the tests run under CI (CI=true), where a missing
// dependency is a failure rather than a skip.
func InCI() bool {
	v, _ := strconv.ParseBool(os.Getenv("CI"))
	return v
}

// Require returns the path of binary, looked up in PATH and in the sbin
// directories Debian installs daemons to. When it is missing the test fails
// under CI and is skipped otherwise; the message names debianPackage.
func Require(t T, binary, debianPackage string) string {
	t.Helper()
	if p, err := exec.LookPath(binary); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/usr/local/sbin", "/sbin"} {
		p := dir + "/" + binary
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p
		}
	}
	msg := binary + " not found: install the Debian package " + debianPackage +
		" (scripts/install-test-deps.sh does it as root)"
	if InCI() {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// FreePort returns a loopback port that is free for both TCP and UDP at the
// time of the call. It is picked at random below the kernel's ephemeral
// range (ip_local_port_range), where no socket bound to port 0 (deferpush's
// own listeners, clients) can take it between this call and the server's
// bind. Another test picking the same port is still possible, if rare; the
// servers started here fail loudly in that case rather than hang.
func FreePort(t T) int {
	t.Helper()
	low, high := 10000, ephemeralLow()-1
	for range 200 {
		port := low + int(randUint32()%uint32(high-low+1))
		if !tcpFree(port) {
			continue
		}
		u, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		u.Close()
		return port
	}
	t.Fatal("free port: no port free for both TCP and UDP after 200 tries")
	return 0
}

// ephemeralLow is the first port of the kernel's ephemeral range (32768 when
// it cannot be read).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 32768
	}
	n, err := strconv.Atoi(f[0])
	if err != nil || n <= 12000 {
		return 32768
	}
	return n
}

// freePortBelow returns a free TCP port p <= max whose p+offset is free too
// (a Redis cluster node needs its bus port at port+10000).
func freePortBelow(t testing.TB, max, offset int) int {
	t.Helper()
	for range 200 {
		// Both ports below the ephemeral range, as in FreePort.
		top := min(max, ephemeralLow()-1-offset)
		p := 10000 + int(randUint32()%uint32(top-10000))
		if tcpFree(p) && tcpFree(p+offset) {
			return p
		}
	}
	t.Fatal("free port: no pair free after 200 tries")
	return 0
}

func tcpFree(port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	l.Close()
	return true
}
