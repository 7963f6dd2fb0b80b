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
