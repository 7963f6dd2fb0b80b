package test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/deferpush/deferpush/adapters/imclient"
	"github.com/deferpush/deferpush/plugin/msrp"
	"github.com/deferpush/deferpush/test/harness"
)

const (
	// floodNofile is deferpush's open-file limit in the flood test.
	floodNofile = 256
	// floodPerListener idle connections go to each of the four
	// listeners, then floodWave more to the hooks: 700 in all, well past
	// the limit.
	floodPerListener = 100
	floodWave        = 300
)

// TestFaultIdleFlood runs the whole deployment (redis-server, Kamailio
// with the shipped kamailio.cfg, the deferpush binary) with deferpush's
// open-file limit at 256, and opens idle TCP connections that never send
// a byte to its hooks, admin, SIP and MSRP listeners: 100 each, then 300
// more to the hooks. Throughout, and after, /healthz answers on both HTTP
// listeners, a SIP OPTIONS over TCP is answered, MESSAGEs are stored
// through Kamailio and the message hook, a registration pushes them all
// to the client, and the process never exits.
func TestFaultIdleFlood(t *testing.T) {
	faultFloodRounds(t, 1).report(t)
}

func faultFloodRounds(t *testing.T, rounds int) faultRow {
	s := startKamailioStack(t, stackOptions{
		redis: []harness.RedisOption{harness.WithAOF()}, policy: noBackoff, dpNofile: floodNofile,
		dpEnv: []string{"DEFERPUSH_PUSH_LOCK_TTL=" + faultLockTTL.String(), "DEFERPUSH_MSRP_TIMEOUT=" + faultMSRPTimeout.String()},
	})
	sender := s.client(t, "sender", imclient.Config{})
	row := faultRow{Fault: fmt.Sprintf("%d idle connections past the open-file limit (%d) to hooks, admin, SIP and MSRP",
		4*floodPerListener+floodWave, floodNofile)}
	for r := range rounds {
		faultFloodRound(t, s, sender, &row, fmt.Sprintf("flood%d", r))
		if t.Failed() {
			break
		}
	}
	return row
}

func faultFloodRound(t *testing.T, s *kamailioStack, sender *imclient.Client, row *faultRow, user string) {
	t.Helper()
	mu, err := msrp.ParseURI(s.dp.MSRPURI)
	if err != nil {
		t.Fatalf("deferpush's MSRP URI %q: %v", s.dp.MSRPURI, err)
	}
	targets := []struct{ name, addr string }{
		{"hooks", s.dp.HooksAddr}, {"admin", s.dp.AdminAddr}, {"sip", s.dp.SIPAddr},
		{"msrp", net.JoinHostPort(mu.Host, strconv.Itoa(mu.Port))},
	}
	var flood []net.Conn
	defer func() {
		for _, c := range flood {
			c.Close()
		}
	}()
	open := func(addr string, n int) {
		for range n {
			c, err := net.DialTimeout("tcp", addr, 2*time.Second)
			if err != nil {
				t.Fatalf("idle connection %d to %s: %v", len(flood)+1, addr, err)
			}
			flood = append(flood, c)
		}
	}

	for _, tg := range targets {
		open(tg.addr, floodPerListener)
	}
	ports := make([]int, len(targets))
	for i, tg := range targets {
		_, p, _ := net.SplitHostPort(tg.addr)
		ports[i], _ = strconv.Atoi(p)
	}
	// A dial returns once the kernel queued the connection; the checks
	// start once deferpush has accepted every one (the flood's SIP
	// connections, from a source sip.trusted_sources holds, would
	// otherwise still be taking room from the checks' connections).
	waitAccepted(t, ports)
	s.checkAnswers(t, "during the flood")
	stored := storeCalls(t, sender, user, "flood-a-"+user, 5, nil)

	open(s.dp.HooksAddr, floodWave)
	waitAccepted(t, ports)
	s.checkAnswers(t, "during the second wave")
	stored = append(stored, storeCalls(t, sender, user, "flood-b-"+user, 5, nil)...)

	client := s.client(t, user, imclient.Config{})
	s.deliverAll(t, client, user, stored)
	row.add(t, stored, client.Received())

	closed := 0
	for _, c := range flood {
		_ = c.SetReadDeadline(time.Now().Add(time.Millisecond))
		if _, err := c.Read(make([]byte, 1)); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			closed++
		}
	}
	t.Logf("flood: %d idle connections opened, %d closed by deferpush to make room, %d still open", len(flood), closed, len(flood)-closed)
	if closed < len(flood)-floodNofile {
		t.Errorf("only %d of %d idle connections closed; more than the open-file limit (%d) still open?", closed, len(flood), floodNofile)
	}
	for _, c := range flood {
		c.Close()
	}
	flood = nil
	s.checkAnswers(t, "after the flood")
	log := s.dp.Log()
	for _, bad := range []string{"component failed", "deferpush stopped"} {
		if strings.Contains(log, bad) {
			t.Errorf("deferpush logged %q during the flood", bad)
		}
	}
	if !strings.Contains(log, "idle connections closed to make room") {
		t.Error("deferpush never logged closing idle connections: did the flood reach the bounds?")
	}
}

// waitAccepted waits until no connection waits in the accept queue of
// the listening sockets on ports (a LISTEN line's rx_queue in
// /proc/net/tcp is its accept backlog), at most 20 s.
func waitAccepted(t *testing.T, ports []int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		queued := 0
		for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, line := range strings.Split(string(b), "\n")[1:] {
				fs := strings.Fields(line)
				if len(fs) < 5 || fs[3] != "0A" || !slices.Contains(ports, hexPort(fs[1])) {
					continue
				}
				_, rx, _ := strings.Cut(fs[4], ":")
				n, _ := strconv.ParseInt(rx, 16, 64)
				queued += int(n)
			}
		}
		if queued == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connections still wait to be accepted after 20 s", queued)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkAnswers fails the test unless deferpush runs and answers /healthz on
// its hooks and admin listeners and a SIP OPTIONS over TCP.
func (s *kamailioStack) checkAnswers(t *testing.T, when string) {
	t.Helper()
	if exited, err := s.dp.Exited(); exited {
		t.Fatalf("%s: deferpush exited (%v)", when, err)
	}
	for _, addr := range []string{s.dp.AdminAddr, s.dp.HooksAddr} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/healthz", nil)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			cancel()
			t.Fatalf("%s: GET /healthz on %s: %v", when, addr, err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		cancel()
		if res.StatusCode != 200 {
			t.Fatalf("%s: GET /healthz on %s: %d", when, addr, res.StatusCode)
		}
	}
	if line, err := sipOptionsTCP(s.dp.SIPAddr); err != nil || !strings.HasPrefix(line, "SIP/2.0 200") {
		t.Fatalf("%s: SIP OPTIONS over TCP: %q %v", when, line, err)
	}
}

// sipOptionsTCP sends one OPTIONS over a new TCP connection to addr and
// returns the status line of the answer.
func sipOptionsTCP(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	local := c.LocalAddr().String()
	tag := strconv.FormatInt(time.Now().UnixNano(), 36)
	req := strings.Join([]string{
		"OPTIONS sip:" + addr + ";transport=tcp SIP/2.0",
		"Via: SIP/2.0/TCP " + local + ";branch=z9hG4bK" + tag,
		"Max-Forwards: 70",
		"From: <sip:flood@127.0.0.1>;tag=" + tag,
		"To: <sip:" + addr + ">",
		"Call-ID: flood-" + tag,
		"CSeq: 1 OPTIONS",
		"Content-Length: 0",
		"", "",
	}, "\r\n")
	if _, err := io.WriteString(c, req); err != nil {
		return "", err
	}
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		return "", err
	}
	line, _, _ := strings.Cut(string(buf[:n]), "\r\n")
	return line, nil
}
