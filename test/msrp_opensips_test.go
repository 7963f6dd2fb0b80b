package test

import (
	"bufio"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/deferpush/deferpush/plugin/msrp"
	"github.com/deferpush/deferpush/test/harness"
)

// TestOpenSIPSMSRPRelayAuth starts OpenSIPS's MSRP relay (msrp_relay, RFC
// 4976) from the harness and takes a relay path from it the way a client
// behind it does: an AUTH without credentials is challenged (401, Digest),
// the AUTH with the answer gets 200 with Use-Path (the relay's URI with a
// session id) and Expires; a wrong password gets no path. It shows the
// build's msrp_relay works, for the end-to-end push through it.
func TestOpenSIPSMSRPRelayAuth(t *testing.T) {
	relayURI := opensipsRelay(t)
	port := relayURI.Port
	relay := relayURI.String()
	conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(conn)
	auth := func(tid, authorization string) (status string, headers map[string]string) {
		t.Helper()
		req := "MSRP " + tid + " AUTH\r\nTo-Path: " + relay + "\r\nFrom-Path: msrp://127.0.0.1:9/client01;tcp\r\n"
		if authorization != "" {
			req += "Authorization: " + authorization + "\r\n"
		}
		if _, err := conn.Write([]byte(req + "-------" + tid + "$\r\n")); err != nil {
			t.Fatal(err)
		}
		headers = map[string]string{}
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("reading the answer to AUTH %s: %v", tid, err)
			}
			l = strings.TrimRight(l, "\r\n")
			switch {
			case strings.HasPrefix(l, "MSRP "):
				if f := strings.Fields(l); len(f) >= 3 && f[1] == tid {
					status = f[2]
				}
			case strings.HasPrefix(l, "-------"):
				return status, headers
			default:
				if k, v, ok := strings.Cut(l, ": "); ok {
					headers[k] = v
				}
			}
		}
	}
	status, h := auth("auth0001", "")
	if status != "401" || !strings.HasPrefix(h["WWW-Authenticate"], "Digest ") {
		t.Fatalf("AUTH without credentials: %s %v, want 401 with a Digest challenge", status, h)
	}
	param := func(name string) string {
		m := regexp.MustCompile(name + `="([^"]*)"`).FindStringSubmatch(h["WWW-Authenticate"])
		if m == nil {
			t.Fatalf("challenge without %s: %s", name, h["WWW-Authenticate"])
		}
		return m[1]
	}
	realm, nonce, opaque := param("realm"), param("nonce"), param("opaque")
	md5hex := func(s string) string { sum := md5.Sum([]byte(s)); return hex.EncodeToString(sum[:]) }
	answer := func(password string) string {
		const cnonce, nc = "0a4f113b", "00000001"
		ha1 := md5hex("relayuser:" + realm + ":" + password)
		ha2 := md5hex("AUTH:" + relay)
		resp := md5hex(ha1 + ":" + nonce + ":" + nc + ":" + cnonce + ":auth:" + ha2)
		return fmt.Sprintf(`Digest username="relayuser", realm="%s", nonce="%s", uri="%s", qop=auth, nc=%s, cnonce="%s", response="%s", opaque="%s"`,
			realm, nonce, relay, nc, cnonce, resp, opaque)
	}
	// OpenSIPS refuses a wrong answer with 403, a new challenge would be
	// 401: either way no path.
	if status, h := auth("auth0002", answer("not-the-password")); (status != "401" && status != "403") || h["Use-Path"] != "" {
		t.Errorf("AUTH with a wrong password: %s %v, want 401 or 403 and no Use-Path", status, h)
	}
	status, h = auth("auth0003", answer(relayPassword))
	prefix := fmt.Sprintf("msrp://127.0.0.1:%d/", port)
	if status != "200" || !strings.HasPrefix(h["Use-Path"], prefix) || !strings.HasSuffix(h["Use-Path"], ";tcp") || h["Expires"] == "" {
		t.Fatalf("AUTH with the password: %s %v, want 200 with Use-Path %s<session>;tcp and Expires", status, h, prefix)
	}
	// deferpush reads the relay's URI (its session ids are base64, with
	// '/' and '+') as the client's SDP will carry it.
	u, err := msrp.ParseURI(h["Use-Path"])
	if err != nil || u.String() != h["Use-Path"] || u.Port != port {
		t.Errorf("plugin/msrp reads the relay path %s as %+v (%v)", h["Use-Path"], u, err)
	}
	t.Logf("relay path %s, expires %s s", h["Use-Path"], h["Expires"])
}

// opensipsRelay starts OpenSIPS's MSRP relay on a free loopback port; any
// user authenticates with relayPassword.
func opensipsRelay(t *testing.T) msrp.URI {
	t.Helper()
	port := harness.FreePort(t)
	harness.OpenSIPS(t, harness.OpenSIPSConfig{ConfigFile: "testdata/opensips-msrp-relay.cfg",
		Defines: map[string]string{"MSRP_PORT": strconv.Itoa(port), "RELAY_PASSWORD": strconv.Quote(relayPassword)}})
	return msrp.URI{Host: "127.0.0.1", Port: port, Transport: "tcp"}
}
