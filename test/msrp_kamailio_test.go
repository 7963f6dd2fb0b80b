package test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/deferpush/deferpush/plugin/msrp"
	"github.com/deferpush/deferpush/test/harness"
)

// TestMSRPThroughKamailio runs plugin/msrp through a third-party MSRP
// parser: Kamailio's msrp module as a relay on loopback. A connects to the
// relay (active), the relay connects to B's listener (passive); messages of
// one and of many chunks go both ways, each with a success REPORT so that
// Send returns only once the far end has the whole message.
func TestMSRPThroughKamailio(t *testing.T) {
	msrpPort := harness.FreePort(t)
	harness.Kamailio(t, harness.KamailioConfig{
		ConfigFile: "testdata/kamailio-msrp.cfg",
		Defines:    map[string]string{"MSRP_PORT": strconv.Itoa(msrpPort)},
	})
	relay := msrp.URI{Host: "127.0.0.1", Port: msrpPort, SessionID: "relay0001", Transport: "tcp"}

	lis, err := msrp.NewListener(msrp.ListenerConfig{Addr: "127.0.0.1:0", Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	runDone := make(chan error, 1)
	go func() { runDone <- lis.Run(context.Background()) }()
	t.Cleanup(func() {
		lis.Close()
		<-runDone
	})

	aGot, bGot := make(chan *msrp.Message, 16), make(chan *msrp.Message, 16)
	collect := func(ch chan *msrp.Message) msrp.Handler {
		return msrp.HandlerFunc(func(_ context.Context, _ *msrp.Session, m *msrp.Message) error {
			ch <- m
			return nil
		})
	}
	// The relay cannot route frames of 11,239 bytes or more: 2048-octet
	// chunks stay far below.
	a, err := msrp.NewSession(msrp.Config{
		Local:   msrp.URI{Host: "127.0.0.1", Port: 9, Transport: "tcp"},
		Handler: collect(aGot), Timeout: 10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	b, err := msrp.NewSession(msrp.Config{Local: lis.URI(), Handler: collect(bGot), Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	if err := lis.Add(b, []msrp.URI{relay, a.URI()}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := a.Connect(ctx, []msrp.URI{relay, b.URI()}); err != nil {
		t.Fatalf("connect through the relay: %v", err)
	}

	tests := []struct {
		name string
		from *msrp.Session
		to   chan *msrp.Message
		size int
	}{
		{"A to B single chunk", a, bGot, 100},
		{"A to B multi chunk", a, bGot, 50_000},
		{"B to A single chunk", b, aGot, 1500},
		{"B to A multi chunk", b, aGot, 40_001},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := make([]byte, tt.size)
			rand.Read(body)
			id := fmt.Sprintf("kam%d%s", tt.size, tt.from.URI().SessionID[:8])
			err := tt.from.Send(ctx, msrp.Message{ID: id, ContentType: "application/octet-stream", Body: body, SuccessReport: true})
			if err != nil {
				t.Fatalf("Send: %v", err)
			}
			select {
			case m := <-tt.to:
				if m.ID != id || m.ContentType != "application/octet-stream" || !bytes.Equal(m.Body, body) {
					t.Errorf("got message %s (%s, %d octets, equal=%v), want %s (%d octets)",
						m.ID, m.ContentType, len(m.Body), bytes.Equal(m.Body, body), id, len(body))
				}
			case <-ctx.Done():
				t.Fatal("message not delivered")
			}
		})
	}

	// Pipelined: many messages in flight at once, all answered.
	t.Run("A to B pipelined", func(t *testing.T) {
		const n = 20
		errs := make(chan error, n)
		for i := range n {
			go func() {
				errs <- a.Send(ctx, msrp.Message{ContentType: "text/plain", Body: bytes.Repeat([]byte{'x'}, 3000+i)})
			}()
		}
		for range n {
			if err := <-errs; err != nil {
				t.Error(err)
			}
		}
		for range n {
			select {
			case <-bGot:
			case <-ctx.Done():
				t.Fatal("pipelined message not delivered")
			}
		}
	})
}

// kamailioRelay starts Kamailio's msrp module as an RFC 4976 relay
// (testdata/kamailio-msrp-relay.cfg): clients AUTH to it with digest and
// get a Use-Path. It returns the Kamailio process and the relay's URI.
func kamailioRelay(t *testing.T, defines map[string]string) (*harness.KamailioProc, msrp.URI) {
	t.Helper()
	port := harness.FreePort(t)
	defs := map[string]string{"MSRP_PORT": strconv.Itoa(port), "RELAY_PASSWORD": strconv.Quote(relayPassword)}
	for k, v := range defines {
		defs[k] = v
	}
	k := harness.Kamailio(t, harness.KamailioConfig{ConfigFile: "testdata/kamailio-msrp-relay.cfg", Defines: defs})
	return k, msrp.URI{Host: "127.0.0.1", Port: port, Transport: "tcp"}
}

const relayPassword = "relay-test-secret"

// TestMSRPRelayPushTopology runs plugin/msrp in the push's topology through
// Kamailio's msrp relay: the client authenticates to the relay (AUTH with
// digest, Use-Path) and receives through it; deferpush's side connects to
// the relay and sends. The relay answers each SEND 200 itself, and brings
// the client's success REPORT over a connection it opens to deferpush's
// listener, not the one deferpush opened: Send returns once that REPORT
// is in, and only then.
func TestMSRPRelayPushTopology(t *testing.T) {
	_, relayURI := kamailioRelay(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// A wrong password is refused.
	if _, err := msrp.DialRelay(ctx, msrp.RelayConfig{URI: relayURI, Local: msrp.URI{Host: "127.0.0.1", Port: 9},
		Username: "alice", Password: "wrong", Timeout: 5 * time.Second}); err == nil {
		t.Fatal("the relay authorised a wrong password")
	}
	rel, err := msrp.DialRelay(ctx, msrp.RelayConfig{URI: relayURI, Local: msrp.URI{Host: "127.0.0.1", Port: 9},
		Username: "alice", Password: relayPassword, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatalf("AUTH to the relay: %v", err)
	}
	defer rel.Close()
	usePath := rel.Path()
	if len(usePath) != 1 || usePath[0].Port != relayURI.Port || usePath[0].SessionID == "" {
		t.Fatalf("Use-Path = %v, want the relay's URI with a session id", usePath)
	}

	lis, err := msrp.NewListener(msrp.ListenerConfig{Addr: "127.0.0.1:0", Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	runDone := make(chan error, 1)
	go func() { runDone <- lis.Run(context.Background()) }()
	t.Cleanup(func() {
		lis.Close()
		<-runDone
	})
	pushLocal := lis.URI()
	pushLocal.SessionID = msrp.NewSessionID()
	push, err := msrp.NewSession(msrp.Config{Local: pushLocal, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { push.Close() })
	if err := lis.AddActive(push); err != nil {
		t.Fatal(err)
	}

	got := make(chan *msrp.Message, 16)
	client, err := msrp.NewSession(msrp.Config{Local: msrp.URI{Host: "127.0.0.1", Port: 9, Transport: "tcp"},
		Handler: msrp.HandlerFunc(func(_ context.Context, _ *msrp.Session, m *msrp.Message) error {
			got <- m
			return nil
		})})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	if err := rel.Add(client, []msrp.URI{push.URI()}); err != nil {
		t.Fatal(err)
	}
	// The client's a=path: its relay, then itself.
	if err := push.Connect(ctx, append(rel.Path(), client.URI())); err != nil {
		t.Fatalf("connect through the relay: %v", err)
	}
	for _, size := range []int{100, 50_000} {
		body := make([]byte, size)
		rand.Read(body)
		id := fmt.Sprintf("relayed%d", size)
		if err := push.Send(ctx, msrp.Message{ID: id, ContentType: "application/octet-stream", Body: body, SuccessReport: true}); err != nil {
			t.Fatalf("Send %s through the relay: %v", id, err)
		}
		select {
		case m := <-got:
			if m.ID != id || !bytes.Equal(m.Body, body) || !m.SuccessReport {
				t.Errorf("got %s (%d octets, report asked %v), want %s (%d octets) asking for a report", m.ID, len(m.Body), m.SuccessReport, id, size)
			}
		case <-ctx.Done():
			t.Fatal("message not delivered")
		}
	}
}
