package api

import (
	"bytes"
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/cloudwego/hertz/pkg/common/ut"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/plugin/plugintest"
)

const (
	testAdminToken  = "admin-token-0123456789"
	testViewerToken = "viewer-token-0123456789"
)

// refusingPusher opens no session: pushes fail at once.
type refusingPusher struct{}

func (refusingPusher) Open(context.Context, plugin.Target) (plugin.PushSession, error) {
	return nil, errors.New("test: no client")
}

// newTestServer is a Server on the in-memory store with a running engine,
// for in-process requests (ut.PerformRequest) on its admin router.
func newTestServer(t testing.TB, m *Metrics) *Server {
	t.Helper()
	st := plugintest.NewStore(nil)
	var obs plugin.Observer
	if m != nil {
		obs = m
	}
	eng, err := plugin.NewEngine(plugin.EngineConfig{Store: st, Pusher: refusingPusher{}, Observer: obs})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = eng.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	var lns []net.Listener
	for range 2 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		lns = append(lns, ln)
	}
	s, err := New(Config{
		HooksListener: lns[0], AdminListener: lns[1], Store: st, Engine: eng,
		HooksToken: "hooks-token-0123456789", Metrics: m,
		AdminTokens: []Token{{Name: "ops", Token: testAdminToken, Role: RoleAdmin}, {Name: "noc", Token: testViewerToken, Role: RoleViewer}},
	})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !eng.Running() {
		if time.Now().After(deadline) {
			t.Fatal("engine not running after 5 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return s
}

// perform sends one request to s's admin router in-process.
func perform(s *Server, method, path, token, contentType string, body []byte) *ut.ResponseRecorder {
	hs := []ut.Header{}
	if token != "" {
		hs = append(hs, ut.Header{Key: "Authorization", Value: "Bearer " + token})
	}
	if contentType != "" {
		hs = append(hs, ut.Header{Key: "Content-Type", Value: contentType})
	}
	return ut.PerformRequest(s.admin.Engine, method, path, &ut.Body{Body: bytes.NewReader(body), Len: len(body)}, hs...)
}
