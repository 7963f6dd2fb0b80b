package test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/deferpush/deferpush/plugin/encap"
	"github.com/deferpush/deferpush/plugin/msrp"
	"github.com/deferpush/deferpush/plugin/sdp"
)

// testCert is a self-signed certificate for 127.0.0.1, in PEM files and
// as the values a test's own TLS peers use.
type testCert struct {
	certFile, keyFile string
	cert              tls.Certificate
	pool              *x509.CertPool
}

func newTestCert(t *testing.T) testCert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "deferpush test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:                  true,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	c := testCert{certFile: filepath.Join(dir, "cert.pem"), keyFile: filepath.Join(dir, "key.pem")}
	if err := os.WriteFile(c.certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	parsed, _ := x509.ParseCertificate(der)
	c.pool = x509.NewCertPool()
	c.pool.AddCert(parsed)
	c.cert = tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	return c
}

// TestSecurityTLS runs the binary with hooks, admin API and MSRP over TLS:
// both HTTP listeners answer HTTPS and refuse plain HTTP, and a push goes
// out as an msrps offer (m=message ... TCP/TLS/MSRP, an msrps:// path) and
// is delivered over TLS to a client whose answer has an msrps path.
// SSL_CERT_FILE makes deferpush trust the test's certificate.
func TestSecurityTLS(t *testing.T) {
	c := newTestCert(t)
	const hooksToken, adminTok = "tls-hooks-token-0123456789", "tls-admin-token-0123456789"
	dp := startDeferpush(t, []string{
		"SSL_CERT_FILE=" + c.certFile,
		"DEFERPUSH_HOOKS_TOKEN=" + hooksToken, "DEFERPUSH_ADMIN_TOKEN=" + adminTok,
		"DEFERPUSH_HOOKS_TLS_CERT=" + c.certFile, "DEFERPUSH_HOOKS_TLS_KEY=" + c.keyFile,
		"DEFERPUSH_ADMIN_TLS_CERT=" + c.certFile, "DEFERPUSH_ADMIN_TLS_KEY=" + c.keyFile,
		"DEFERPUSH_MSRP_TLS_CERT=" + c.certFile, "DEFERPUSH_MSRP_TLS_KEY=" + c.keyFile,
	})
	if !strings.HasPrefix(dp.MSRPURI, "msrps://") {
		t.Errorf("MSRP listener %s, want msrps://", dp.MSRPURI)
	}
	https := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: c.pool}}}
	defer https.CloseIdleConnections()
	do := func(cl *http.Client, method, url, header, token, body string) (int, string, error) {
		req, _ := http.NewRequest(method, url, strings.NewReader(body))
		if header != "" {
			req.Header.Set(header, token)
		}
		req.Header.Set("Content-Type", "application/json")
		res, err := cl.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b), nil
	}
	for _, addr := range []string{dp.HooksAddr, dp.AdminAddr} {
		if code, body, err := do(https, "GET", "https://"+addr+"/healthz", "", "", ""); err != nil || code != 200 {
			t.Errorf("HTTPS %s/healthz: %d %s %v", addr, code, body, err)
		}
		plain := &http.Client{Timeout: 5 * time.Second}
		if code, body, err := do(plain, "GET", "http://"+addr+"/healthz", "", "", ""); err == nil && code < 400 {
			t.Errorf("plain HTTP to the TLS listener %s answered %d %s", addr, code, body)
		}
	}
	if code, body, err := do(https, "GET", "https://"+dp.AdminAddr+"/v1/policy", "Authorization", "Bearer "+adminTok, ""); err != nil || code != 200 {
		t.Errorf("HTTPS admin GET /v1/policy: %d %s %v", code, body, err)
	}

	// A message stored through the HTTPS hook, pushed over msrps.
	uas := startTLSClient(t, c)
	raw := "MESSAGE sip:user2@example.com SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bKtls1\r\n" +
		"From: <sip:user1@example.com>;tag=1\r\nTo: <sip:user2@example.com>\r\nCall-ID: tls-1@example.com\r\nCSeq: 1 MESSAGE\r\n" +
		"Content-Type: text/plain\r\nContent-Length: 11\r\n\r\nover msrps!"
	hookBody, _ := json.Marshal(map[string]string{"raw": raw, "aor": "sip:user2@example.com"})
	if code, body, err := do(https, "POST", "https://"+dp.HooksAddr+"/hooks/kamailio/message", "X-Deferpush-Token", hooksToken, string(hookBody)); err != nil || code != 200 {
		t.Fatalf("HTTPS message hook: %d %s %v", code, body, err)
	}
	reg := fmt.Sprintf(`{"aor":"sip:user2@example.com","contact":"sip:user2@%s;transport=tcp","expires":300}`, uas.addr)
	if code, body, err := do(https, "POST", "https://"+dp.HooksAddr+"/hooks/kamailio/registered", "X-Deferpush-Token", hooksToken, reg); err != nil || code != 200 {
		t.Fatalf("HTTPS registered hook: %d %s %v", code, body, err)
	}
	var m *msrp.Message
	select {
	case m = <-uas.got:
	case <-time.After(20 * time.Second):
		t.Fatal("no message pushed over msrps within 20 s")
	}
	d, err := encap.Decode(m.ContentType, m.Body)
	if err != nil || string(d.Body) != "over msrps!" {
		t.Errorf("pushed %s %q (%v), want the stored MESSAGE", m.ContentType, m.Body, err)
	}
	uas.mu.Lock()
	offer := uas.offer
	uas.mu.Unlock()
	if !strings.Contains(offer, "m=message ") || !strings.Contains(offer, " TCP/TLS/MSRP *") || !strings.Contains(offer, "a=path:msrps://") {
		t.Errorf("offer is not msrps:\n%s", offer)
	}
}

// tlsClient is a SIP user agent that answers deferpush's INVITE with an
// msrps path on its own TLS MSRP listener and collects what it receives.
type tlsClient struct {
	addr string
	got  chan *msrp.Message
	mu   sync.Mutex
	// offer is the SDP of the last INVITE.
	offer string
}

func (c *tlsClient) ServeMSRP(ctx context.Context, s *msrp.Session, m *msrp.Message) error {
	c.got <- m
	return nil
}

func startTLSClient(t *testing.T, cert testCert) *tlsClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ml, err := msrp.NewListener(msrp.ListenerConfig{Addr: "127.0.0.1:0", Host: "127.0.0.1",
		TLS: &tls.Config{Certificates: []tls.Certificate{cert.cert}}})
	if err != nil {
		t.Fatal(err)
	}
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := tl.Addr().(*net.TCPAddr).Port
	ua, _ := sipgo.NewUA(sipgo.WithUserAgentHostname("127.0.0.1"))
	srv, _ := sipgo.NewServer(ua)
	cli, _ := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"))
	var contact sip.ContactHeader
	if err := sip.ParseUri(fmt.Sprintf("sip:user2@127.0.0.1:%d;transport=tcp", port), &contact.Address); err != nil {
		t.Fatal(err)
	}
	dialogs := sipgo.NewDialogServerCache(cli, contact)
	c := &tlsClient{addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), got: make(chan *msrp.Message, 16)}
	var sessions []*msrp.Session
	srv.OnInvite(func(req *sip.Request, tx sip.ServerTransaction) {
		c.mu.Lock()
		c.offer = string(req.Body())
		c.mu.Unlock()
		dlg, err := dialogs.ReadInvite(req, tx)
		if err != nil {
			_ = tx.Respond(sip.NewResponseFromRequest(req, 400, "Bad Request", nil))
			return
		}
		offer, err := sdp.Parse(req.Body())
		if err != nil {
			_ = dlg.Respond(488, "Not Acceptable Here", nil)
			return
		}
		local := ml.URI()
		local.SessionID = msrp.NewSessionID()
		s, _ := msrp.NewSession(msrp.Config{Local: local, Handler: c})
		c.mu.Lock()
		sessions = append(sessions, s)
		c.mu.Unlock()
		if err := ml.Add(s, offer.Path); err != nil {
			_ = dlg.Respond(500, "Server Internal Error", nil)
			return
		}
		answer, _ := sdp.Build(sdp.Media{Path: []msrp.URI{local}, AcceptTypes: []string{"message/sip", "text/plain"}, Setup: sdp.SetupPassive})
		_ = dlg.RespondSDP(answer)
	})
	srv.OnAck(func(req *sip.Request, tx sip.ServerTransaction) { _ = dialogs.ReadAck(req, tx) })
	srv.OnBye(func(req *sip.Request, tx sip.ServerTransaction) {
		if dialogs.ReadBye(req, tx) != nil {
			_ = tx.Respond(sip.NewResponseFromRequest(req, 481, "Call/Transaction Does Not Exist", nil))
		}
	})
	done := make(chan struct{}, 2)
	go func() { _ = srv.ServeTCP(tl); done <- struct{}{} }()
	go func() { _ = ml.Run(ctx); done <- struct{}{} }()
	t.Cleanup(func() {
		cancel()
		tl.Close()
		c.mu.Lock()
		for _, s := range sessions {
			s.Close()
		}
		c.mu.Unlock()
		<-done
		<-done
		srv.Close()
		ua.Close()
	})
	return c
}
