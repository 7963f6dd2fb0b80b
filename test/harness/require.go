package harness

import (
	"net"
	"os"
	"os/exec"
	"strconv"
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
// time of the call. Another process may take it before the caller binds; the
// servers started here fail loudly in that case rather than hang.
func FreePort(t T) int {
	t.Helper()
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("free port: %v", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		l.Close()
		if err != nil {
			continue
		}
		u.Close()
		return port
	}
	t.Fatal("free port: no port free for both TCP and UDP after 50 tries")
	return 0
}

// freePortBelow returns a free TCP port p <= max whose p+offset is free too
// (a Redis cluster node needs its bus port at port+10000).
func freePortBelow(t testing.TB, max, offset int) int {
	t.Helper()
	for range 200 {
		p := FreePort(t)
		if p > max {
			// The kernel's ephemeral range is usually above 32768; pick a
			// port from the lower range by hand instead.
			p = 20000 + int(randUint32()%uint32(max-20000))
		}
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
