package test

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/deferpush/deferpush/plugin"
)

// The OpenSIPS Redis mode's escaping: cachedb_redis splits a raw query on
// whitespace and ends a quoted argument at its first double quote, so the
// script percent-escapes % and " in every argument and the functions
// decode them ("pct").

// TestOpenSIPSDirectNULByte: the script's escaping (a regex) would stop
// at a NUL byte; the script refuses a MESSAGE holding one (400) rather
// than store it cut short, and nothing is stored.
func TestOpenSIPSDirectNULByte(t *testing.T) {
	s := opensipsDirectStarter(t, stackOptions{})
	body := "before\x00after \"quoted\""
	status := rawMessageStatus(t, s.proxyAddr, func(local string) string {
		return "MESSAGE sip:user2@" + domain + " SIP/2.0\r\n" +
			"Via: SIP/2.0/TCP " + local + ";branch=z9hG4bK-nul-1\r\n" +
			"Max-Forwards: 70\r\n" +
			"From: <sip:user1@" + domain + ">;tag=1\r\n" +
			"To: <sip:user2@" + domain + ">\r\n" +
			"Call-ID: nul-1@test\r\n" +
			"CSeq: 1 MESSAGE\r\n" +
			"Content-Type: application/octet-stream\r\n" +
			fmt.Sprintf("Content-Length: %d\r\n\r\n", len(body)) + body
	})
	if !strings.HasPrefix(status, "SIP/2.0 400 ") {
		t.Errorf("MESSAGE with a NUL byte: %q, want 400 (not stored cut short)", status)
	}
	if n := s.counts(t, "user2"); n != (plugin.Counts{}) {
		t.Errorf("stored %+v, want nothing", n)
	}
}

// rawMessageStatus sends the request build returns (given the sender's
// host:port) to proxy over TCP and returns the status line of the final
// answer.
func rawMessageStatus(t *testing.T, proxy string, build func(local string) string) string {
	t.Helper()
	conn, err := net.Dial("tcp", proxy)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte(build(conn.LocalAddr().String()))); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(conn)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("no final answer: %v", err)
		}
		if strings.HasPrefix(line, "SIP/2.0 ") && !strings.HasPrefix(line, "SIP/2.0 1") {
			return strings.TrimSpace(line)
		}
	}
}
