package api

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/plugin/plugintest"
)

// TestHookRegistrationOrder: a proxy posts the registration hooks from
// several workers, so a REGISTER and the unREGISTER that followed it
// within milliseconds may arrive in either order. The "at" of the
// bodies (the proxy's time of each) puts them back in order, through the
// real engine and store; a body without one (an older script) applies
// as it comes.
func TestHookRegistrationOrder(t *testing.T) {
	st := plugintest.NewStore(nil)
	eng, err := plugin.NewEngine(plugin.EngineConfig{Store: st, Pusher: refusingPusher{}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = eng.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	base := startHooksWith(t, nil, func(c *Config) { c.Engine, c.Store = eng, st })

	sec := time.Now().Unix()
	// Kamailio's $TV(s).$TV(u) (microseconds not zero-padded): T1 < T2 by
	// 35 µs; OpenSIPS's integer microseconds.
	kam := map[string]string{"T1": fmt.Sprintf("%d.5", sec), "T2": fmt.Sprintf("%d.40", sec), "": ""}
	osi := map[string]string{"T1": fmt.Sprintf("%d000005", sec), "T2": fmt.Sprintf("%d000040", sec), "": ""}
	at := func(v string) string {
		if v == "" {
			return ""
		}
		return `,"at":"` + v + `"`
	}
	type post struct{ hook, at string } // hook: registered, unregistered or expired; at: T1, T2 or ""
	for i, tt := range []struct {
		name       string
		posts      []post
		registered bool // the contact is recorded at the end
	}{
		{"in order", []post{{"registered", "T1"}, {"unregistered", "T2"}}, false},
		{"registration after a newer unregistration", []post{{"unregistered", "T2"}, {"registered", "T1"}}, false},
		{"registration after an older unregistration", []post{{"unregistered", "T1"}, {"registered", "T2"}}, true},
		{"unregistration after a newer registration", []post{{"registered", "T2"}, {"unregistered", "T1"}}, true},
		{"expiry after a newer registration", []post{{"registered", "T2"}, {"expired", "T1"}}, true},
		{"registration without at after an unregistration", []post{{"unregistered", "T2"}, {"registered", ""}}, true},
		{"unregistration without at after a registration", []post{{"registered", "T2"}, {"unregistered", ""}}, false},
	} {
		for _, proxy := range []string{"kamailio", "opensips"} {
			t.Run(proxy+"/"+tt.name, func(t *testing.T) {
				user := fmt.Sprintf("order%d%s", i, proxy)
				aor := plugin.MustParseAOR("sip:" + user + "@example.com")
				contact := "sip:" + user + "@192.0.2.7:5071;transport=tcp"
				for _, p := range tt.posts {
					var body string
					switch {
					case proxy == "kamailio" && p.hook == "registered":
						body = `{"aor":"` + aor.String() + `","contact":"` + contact + `","expires":300` + at(kam[p.at]) + `}`
					case proxy == "kamailio":
						body = `{"aor":"` + aor.String() + `","contact":"` + contact + `"` + at(kam[p.at]) + `}`
					case p.hook == "registered":
						body = fmt.Sprintf(`{"aor":%q,"domain":"example.com","uri":%q,"expires":%d%s}`,
							user, contact, time.Now().Add(300*time.Second).Unix(), at(osi[p.at]))
					default:
						body = fmt.Sprintf(`{"aor":%q,"domain":"example.com","uri":%q%s}`, user, contact, at(osi[p.at]))
					}
					want := "registered"
					if p.hook != "registered" {
						want = "unregistered"
					}
					// An event put back in order is answered as any other:
					// the proxy has nothing to do about it.
					if code, got := postHook(t, base+"/hooks/"+proxy+"/"+p.hook, testHooksToken, body); code != 200 || got["status"] != want {
						t.Fatalf("%s %s: %d %v, want 200 %s", p.hook, body, code, got, want)
					}
				}
				r, err := st.Contact(context.Background(), aor)
				switch {
				case tt.registered && err != nil:
					t.Errorf("contact: %v, want %s recorded", err, contact)
				case tt.registered && r.Contact != contact:
					t.Errorf("contact %q, want %q", r.Contact, contact)
				case !tt.registered && !errors.Is(err, plugin.ErrNotFound):
					t.Errorf("contact %q (%v), want none", r.Contact, err)
				}
			})
		}
	}
}
