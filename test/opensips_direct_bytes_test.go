package test

import (
	"bufio"
	"context"
	"errors"
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
// decode them ("pct"): what they get is byte for byte what OpenSIPS had.

// TestOpenSIPSDirectMessageBytes: a MESSAGE holding every byte the raw
// query's splitting would take apart (double quotes, apostrophes, %, %XX,
// spaces, tabs, CRLFs, trailing whitespace, UTF-8) is stored byte for byte
// and pushed as it was sent.
func TestOpenSIPSDirectMessageBytes(t *testing.T) {
	s := opensipsDirectStarter(t, stackOptions{})
	body := "\"100%\" isn't 100%25, nor %%22 or \\\" \t \r\n\r\n  naïve ☃ 'single' \"double\"  \r\n"
	flowMessageBytes(t, s, func(local string) []byte {
		return []byte("MESSAGE sip:user2@" + domain + " SIP/2.0\r\n" +
			"Via: SIP/2.0/TCP " + local + ";branch=z9hG4bK-quotes-1\r\n" +
			"Max-Forwards: 70\r\n" +
			"From: \"Bob O'Brien (100%)\" <sip:user1@" + domain + ">;tag=49583\r\n" +
			"To: \"user 2\" <sip:user2@" + domain + ">\r\n" +
			"Call-ID: quotes-1@test\r\n" +
			"CSeq: 1 MESSAGE\r\n" +
			"Subject:   \"quoted\"\t %22 %25 '\r\n" +
			"Content-Type: text/plain;charset=utf-8\r\n" +
			fmt.Sprintf("Content-Length: %d\r\n\r\n", len(body)) + body)
	})
}

// TestOpenSIPSDirectRegistrationBytes: a contact URI with its own %XX
// escape and a User-Agent with double quotes, % and spaces are recorded as
// the client sent them (the script's escaping decoded once, not the
// URI's), and the unREGISTER of that contact finds it.
func TestOpenSIPSDirectRegistrationBytes(t *testing.T) {
	s := opensipsDirectStarter(t, stackOptions{})
	ctx := context.Background()
	aor := plugin.MustParseAOR("sip:user3@" + domain)
	const contact = "sip:us%65r3@127.0.0.1:5999"
	const ua = `Test "UA" 1.0 (100%; %22)`
	if got := rawRegisterStatus(t, "udp", s.proxyAddr, aor.String(), contact, 300,
		"User-Agent: "+ua); !strings.HasPrefix(got, "SIP/2.0 200") {
		t.Fatalf("REGISTER: %q", got)
	}
	var reg plugin.Registration
	waitFor(t, 10*time.Second, "the registration recorded in Redis", func() bool {
		var err error
		reg, err = s.st.Contact(ctx, aor)
		return err == nil
	})
	if reg.Contact != contact || reg.UserAgent != ua {
		t.Errorf("recorded contact %q, User-Agent %q; want %q, %q", reg.Contact, reg.UserAgent, contact, ua)
	}
	if got := rawRegisterStatus(t, "udp", s.proxyAddr, aor.String(), contact, 0); !strings.HasPrefix(got, "SIP/2.0 200") {
		t.Fatalf("unREGISTER: %q", got)
	}
	waitFor(t, 10*time.Second, "the contact forgotten after the unREGISTER", func() bool {
		_, err := s.st.Contact(ctx, aor)
		return errors.Is(err, plugin.ErrNotFound)
	})
}

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
