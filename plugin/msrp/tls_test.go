package msrp

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"
)

// selfSigned returns a server certificate for 127.0.0.1 and a pool that
// trusts it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "msrp test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pool
}

func TestTLS(t *testing.T) {
	cert, pool := selfSigned(t)
	l := startListener(t, ListenerConfig{TLS: &tls.Config{Certificates: []tls.Certificate{cert}}})
	if !l.URI().Secure || !bytes.HasPrefix([]byte(l.URI().String()), []byte("msrps://")) {
		t.Fatalf("listener URI %s is not msrps", l.URI())
	}
	in := newInbox()
	a, _ := pair(t, l, Config{TLS: &tls.Config{RootCAs: pool}}, Config{Handler: in})
	body := randomBody(10000)
	if err := a.Send(context.Background(), Message{ContentType: "text/plain", Body: body, SuccessReport: true}); err != nil {
		t.Fatal(err)
	}
	if got := in.next(t); !bytes.Equal(got.Body, body) {
		t.Error("body differs")
	}

	// A client that does not trust the certificate cannot connect.
	c := newSession(t, Config{Local: URI{Host: "127.0.0.1", Port: 9}})
	b2 := newSession(t, Config{Local: l.URI()})
	if err := l.Add(b2, nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Connect(ctx, []URI{b2.URI()}); err == nil {
		t.Error("connected without trusting the server certificate")
	}
}
