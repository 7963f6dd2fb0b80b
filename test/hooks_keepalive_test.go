package test

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/deferpush/deferpush/adapters/imclient"
)

// TestKamailioHooksKeepAlive: the shipped kamailio.cfg posts its hooks
// over kept-alive connections (http_client's named connection, one curl
// handle per async worker), not a TCP connection per call: 30 MESSAGEs
// stored and 10 REGISTERs through the message and registration hooks
// reach deferpush's hooks listener over at most one connection per async
// worker (4), counted from the kernel's socket table (every connection
// made during the test is still there, established or in TIME_WAIT).
// With http_client_query it was one connection per call, 40 here.
func TestKamailioHooksKeepAlive(t *testing.T) { flowHooksKeepAlive(t, kamailioStarter, 4) }

// TestOpenSIPSHooksKeepAlive: the same through the shipped opensips.cfg
// (rest_client keeps its curl handles, and their connections, per
// process): the message hook runs in its 4 UDP and 4 TCP workers, the
// registration hooks in the usrloc event routes' processes, so up to 10.
func TestOpenSIPSHooksKeepAlive(t *testing.T) { flowHooksKeepAlive(t, opensipsStarter, 10) }

// flowHooksKeepAlive stores 30 MESSAGEs and registers 10 users through
// the proxy start starts, and checks that its hook calls reached
// deferpush over at most maxConns connections.
func flowHooksKeepAlive(t *testing.T, start func(*testing.T, stackOptions) *dpStack, maxConns int) {
	s := start(t, stackOptions{})
	_, p, _ := net.SplitHostPort(s.dp.HooksAddr)
	hooksPort, _ := strconv.Atoi(p)
	before := hookClientPorts(t, hooksPort)

	sender := s.client(t, "sender", imclient.Config{})
	const stores, users = 30, 10
	for i := range stores {
		if code := sendMessage(t, sender, fmt.Sprintf("keep%d", i%users), []byte(fmt.Sprintf("message %d", i))); code != 202 {
			t.Fatalf("MESSAGE %d: %d, want 202 (stored through the message hook)", i, code)
		}
	}
	for i := range users {
		s.waitPending(t, fmt.Sprintf("keep%d", i), stores/users)
	}
	for i := range users {
		c := s.client(t, fmt.Sprintf("keep%d", i), imclient.Config{})
		s.register(t, c)
		waitClient(t, c, "its messages", func(st imclient.Stats) bool { return st.Received == stores/users })
	}

	ports := hookClientPorts(t, hooksPort)
	for port := range before {
		delete(ports, port)
	}
	t.Logf("%d hook calls (%d MESSAGEs, %d REGISTERs) over %d TCP connections", stores+users, stores, users, len(ports))
	if len(ports) == 0 || len(ports) > maxConns {
		t.Errorf("the hooks listener saw %d client connections for %d hook calls; want 1 to %d (one per worker, kept alive)",
			len(ports), stores+users, maxConns)
	}
}

// hookClientPorts returns the client ports of every TCP connection to
// 127.0.0.1:port the kernel knows of, in any state but LISTEN (a closed
// connection stays in TIME_WAIT for a minute on the side that closed it).
func hookClientPorts(t *testing.T, port int) map[int]bool {
	t.Helper()
	out := map[int]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(fh)
		sc.Scan() // header
		for sc.Scan() {
			fs := strings.Fields(sc.Text())
			if len(fs) < 4 || fs[3] == "0A" { // LISTEN
				continue
			}
			lp, rp := hexPort(fs[1]), hexPort(fs[2])
			switch {
			case lp == port:
				out[rp] = true
			case rp == port:
				out[lp] = true
			}
		}
		fh.Close()
		if err := sc.Err(); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// hexPort is the port of a /proc/net/tcp address (hex IP:hex port).
func hexPort(addr string) int {
	_, p, ok := strings.Cut(addr, ":")
	if !ok {
		return -1
	}
	n, err := strconv.ParseInt(p, 16, 32)
	if err != nil {
		return -1
	}
	return int(n)
}
