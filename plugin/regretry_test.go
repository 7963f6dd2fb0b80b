package plugin_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/plugin/plugintest"
)

// downContacts is a store whose SetContact fails while down is set, as a
// Redis that is down, stalled or restarting fails it.
type downContacts struct {
	*plugintest.Store
	down atomic.Bool
}

func (s *downContacts) SetContact(ctx context.Context, r plugin.Registration) error {
	if s.down.Load() {
		return errors.New("dial tcp 127.0.0.1:6379: connect: connection refused")
	}
	return s.Store.SetContact(ctx, r)
}

// TestRegistrationRetriedAfterStoreOutage: a registration the store could
// not record (the hook answered an error, which the shipped scripts do
// not retry) is recorded and pushed once the store answers again,
// without a new REGISTER (PROBE5 F2: the messages waited for the
// client's next REGISTER, an hour away); one unregistered meanwhile is
// not.
func TestRegistrationRetriedAfterStoreOutage(t *testing.T) {
	st := &downContacts{Store: plugintest.NewStore(nil)}
	setPolicy(t, st, nil)
	p := &fakePusher{}
	rec := &recorder{ch: make(chan plugin.PushReport, 100)}
	eng := startEngine(t, plugin.EngineConfig{Store: st, Pusher: p, Observer: rec, Batch: 4, LockTTL: 5 * time.Second})
	e := &engineEnv{st: st.Store, eng: eng, rec: rec, p: p}
	ids := e.store(t, 2)
	st.down.Store(true)
	reg := plugin.Registration{AOR: bob, Contact: "sip:bob@127.0.0.1:5099", Expires: time.Now().Add(time.Hour)}
	if err := eng.Registered(context.Background(), reg); err == nil {
		t.Fatal("Registered with the store down: no error")
	}
	carol := plugin.MustParseAOR("sip:carol@example.com")
	gone := plugin.Registration{AOR: carol, Contact: "sip:carol@127.0.0.1:5098", Expires: time.Now().Add(time.Hour)}
	_ = eng.Registered(context.Background(), gone)
	if err := eng.Unregistered(context.Background(), plugin.Unregistration{AOR: carol, Contact: gone.Contact}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second) // a retry round fails while down
	st.down.Store(false)
	r := e.report(t)
	if r.AOR != bob || r.Delivered != len(ids) {
		t.Errorf("push after the store came back: %+v, want %d delivered to %s", r, len(ids), bob)
	}
	if _, err := st.Contact(context.Background(), carol); !errors.Is(err, plugin.ErrNotFound) {
		t.Errorf("the unregistered contact was recorded after all: %v", err)
	}
}
