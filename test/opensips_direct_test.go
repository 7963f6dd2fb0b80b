package test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/deferpush/deferpush/adapters/imclient"
	"github.com/deferpush/deferpush/plugin"
)

// The end-to-end flows through a real OpenSIPS 3.4 running the shipped
// adapters/opensips/opensips.cfg in its Redis mode (REDIS_DIRECT):
// MESSAGEs stored and registrations reported by cachedb_redis raw queries
// to deferpush's Redis functions (dp_store, dp_register, dp_unregister),
// with no HTTP call.

// startOpenSIPSDirect starts the stack in the Redis mode. Its hooks URL is
// a server that fails the test on any request: this mode calls none.
func startOpenSIPSDirect(t *testing.T, o stackOptions) *opensipsStack {
	t.Helper()
	o.hooks = func(string) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			t.Errorf("OpenSIPS in its Redis mode called the hook %s", r.URL.Path)
			http.Error(w, "no hooks in this mode", http.StatusGone)
		}))
		t.Cleanup(srv.Close)
		return srv.URL
	}
	o.redisDirect = true
	s := startOpenSIPSStack(t, o)
	waitEventRoutes(t, s)
	// Cleanups run last first: this one before the stack stops.
	t.Cleanup(func() { waitPushesDone(s.dp) })
	return s
}

// waitEventRoutes waits until OpenSIPS runs its usrloc event routes: a
// REGISTER answered in the first moments after start may raise its
// E_UL_CONTACT_INSERT before the event routes are subscribed (seen here:
// 200 to the REGISTER, no dp_register). Probe users register until four
// in a row are recorded in Redis, then unregister; they store nothing,
// so no event is written for them.
func waitEventRoutes(t *testing.T, s *opensipsStack) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(15 * time.Second)
	for i, inRow := 0, 0; inRow < 4; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("OpenSIPS's usrloc event routes did not record a registration within 15 s")
		}
		aor := plugin.MustParseAOR(fmt.Sprintf("sip:dp-probe-%d@%s", i, domain))
		contact := fmt.Sprintf("sip:dp-probe-%d@127.0.0.1:9", i)
		if got := rawRegisterStatus(t, "udp", s.proxyAddr, aor.String(), contact, 60); !strings.HasPrefix(got, "SIP/2.0 200") {
			t.Fatalf("probe REGISTER: %q", got)
		}
		recorded := false
		for end := time.Now().Add(500 * time.Millisecond); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
			if _, err := s.st.Contact(ctx, aor); err == nil {
				recorded = true
				break
			}
		}
		if recorded {
			inRow++
		} else {
			inRow = 0
		}
		rawRegisterStatus(t, "udp", s.proxyAddr, aor.String(), contact, 0)
	}
}

// waitPushesDone polls deferpush's admin API (for at most 5 s) until it
// runs no push: a flow that ends when its client saw the BYE would
// otherwise stop OpenSIPS before the BYE's answer came back, and
// deferpush's shutdown would wait for it until its BYE timeout. It gives
// up quietly when the API does not answer (Redis killed by the test).
func waitPushesDone(dp *deferpushProc) {
	client := &http.Client{Timeout: time.Second}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		req, err := http.NewRequest(http.MethodGet, "http://"+dp.AdminAddr+"/v1/stats", nil)
		if err != nil {
			return
		}
		req.Header.Set("Authorization", "Bearer "+dp.AdminToken)
		res, err := client.Do(req)
		if err != nil {
			return
		}
		var stats struct {
			PushesInProgress int `json:"pushes_in_progress"`
		}
		err = json.NewDecoder(res.Body).Decode(&stats)
		res.Body.Close()
		if err != nil || res.StatusCode != http.StatusOK || stats.PushesInProgress == 0 {
			return
		}
	}
}

// opensipsDirectStarter is startOpenSIPSDirect for the shared flows.
func opensipsDirectStarter(t *testing.T, o stackOptions) *dpStack {
	t.Helper()
	return startOpenSIPSDirect(t, o).dpStack
}

// TestOpenSIPSDirectSeedFlow: the seed's flow with the MESSAGE stored by
// dp_store and user2's REGISTER reported by dp_register (an event in
// dp:events that deferpush reads); the session-mode message still goes
// through deferpush's SIP ingress.
func TestOpenSIPSDirectSeedFlow(t *testing.T) { flowSeed(t, opensipsDirectStarter(t, stackOptions{})) }

// TestOpenSIPSDirectSeedMessageBytes: the seed's MESSAGE byte for byte
// through dp_store and the push.
func TestOpenSIPSDirectSeedMessageBytes(t *testing.T) {
	flowSeedMessageBytes(t, opensipsDirectStarter(t, stackOptions{}))
}

// TestOpenSIPSDirectLargeMessage: a 60 KB MESSAGE passes the raw query
// (the script raises pv_print_buf_size) and is pushed intact.
func TestOpenSIPSDirectLargeMessage(t *testing.T) {
	flowLargeMessage(t, opensipsDirectStarter(t, stackOptions{}))
}

// TestOpenSIPSDirectFailureRouteStores: failure_route stores through
// dp_store too.
func TestOpenSIPSDirectFailureRouteStores(t *testing.T) {
	flowFailureRouteStores(t, opensipsDirectStarter)
}

// TestOpenSIPSDirectUnregisterCancelsPush: the unREGISTER reaches
// deferpush through dp_unregister's event and cancels the push.
func TestOpenSIPSDirectUnregisterCancelsPush(t *testing.T) {
	flowUnregisterCancelsPush(t, opensipsDirectStarter)
}

// TestOpenSIPSDirectRefusals: dp_store's refusals reach the sender as the
// hook's answers would (513 too large, the policy's full_mailbox_reply,
// its store_disabled_reply); with Redis down the sender gets 480. Nothing
// refused is stored.
func TestOpenSIPSDirectRefusals(t *testing.T) { flowDirectRefusals(t, opensipsDirectStarter, nil, nil) }

// TestOpenSIPSDirectRegistrations: dp_register records what OpenSIPS saved
// (the contact, its User-Agent and +sip.instance) and, with nothing
// stored, writes no event to dp:events — deferpush hears nothing; with a
// message stored, the client's REGISTER writes one "registered" event,
// which deferpush reads, acks and pushes.
// dp_unregister forgets the contact on an unREGISTER, and on usrloc's
// expiry.
func TestOpenSIPSDirectRegistrations(t *testing.T) {
	s := opensipsDirectStarter(t, stackOptions{})
	ctx := context.Background()
	rdb := s.st.Client()
	aor := plugin.MustParseAOR("sip:user3@" + domain)
	const instance = "<urn:uuid:2b7cbd53-8e3a-4b2e-9a8c-0e1f3d5a6b7c>"
	contact := "sip:user3@127.0.0.1:5999"
	if got := rawRegisterStatus(t, "udp", s.proxyAddr, aor.String(), "<"+contact+`>;+sip.instance="`+instance+`"`, 300,
		`User-Agent: Test UA 1.0`); !strings.HasPrefix(got, "SIP/2.0 200") {
		t.Fatalf("REGISTER: %q", got)
	}
	var reg plugin.Registration
	waitFor(t, 10*time.Second, "the registration recorded in Redis", func() bool {
		var err error
		reg, err = s.st.Contact(ctx, aor)
		return err == nil
	})
	if reg.Contact != contact || reg.UserAgent != `Test UA 1.0` || reg.Instance != instance {
		t.Errorf("recorded %+v; want contact %s, the User-Agent and +sip.instance sent", reg, contact)
	}
	if left := time.Until(reg.Expires); left < 290*time.Second || left > 301*time.Second {
		t.Errorf("recorded expiry in %v, want about 300 s", left)
	}
	if n, _ := s.events(t); n != 0 {
		t.Errorf("dp:events holds %d events after a REGISTER with nothing stored, want 0", n)
	}

	// Something to push: the client's REGISTER writes the event, and
	// deferpush pushes.
	user1 := s.client(t, "user1", imclient.Config{})
	if code := sendMessage(t, user1, "user3", []byte("hello")); code != 202 {
		t.Fatalf("MESSAGE: %d, want 202", code)
	}
	user3 := s.client(t, "user3", imclient.Config{})
	s.register(t, user3)
	waitFor(t, 10*time.Second, "a registered event in dp:events, read and acked by deferpush", func() bool {
		n, pending := s.events(t)
		return n == 1 && pending == 0
	})
	ev, err := rdb.XRange(ctx, "dp:events", "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	if v := ev[0].Values; v["kind"] != "registered" || v["aor"] != aor.String() || v["contact"] != user3.Contact() {
		t.Errorf("event %v; want registered for %s, %s", v, aor, user3.Contact())
	}
	waitClient(t, user3, "BYE", func(st imclient.Stats) bool { return st.Byes == 1 })
	if got := user3.Received(); len(got) != 1 || string(got[0].Decoded.Body) != "hello" {
		t.Errorf("user3 received %+v, want the stored message", got)
	}

	// unREGISTER: the contact is forgotten.
	ctx2, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if code, err := user3.Register(ctx2, 0); err != nil || code != 200 {
		t.Fatalf("unREGISTER: %d %v", code, err)
	}
	waitFor(t, 10*time.Second, "the contact forgotten after the unREGISTER", func() bool {
		_, err := s.st.Contact(ctx, aor)
		return errors.Is(err, plugin.ErrNotFound)
	})

	// Expiry: usrloc's timer (TIMER_INTERVAL 1 s) removes the binding and
	// dp_unregister deletes the record (which Redis would otherwise keep
	// an hour past its expiry).
	user4 := plugin.MustParseAOR("sip:user4@" + domain)
	rawRegister(t, s.proxyAddr, "user4", "sip:user4@127.0.0.1:5998", 1)
	key := "dp:{" + user4.String() + "}:c"
	waitFor(t, 10*time.Second, "user4's registration recorded", func() bool {
		n, err := rdb.Exists(ctx, key).Result()
		return err == nil && n == 1
	})
	waitFor(t, 10*time.Second, "user4's registration deleted at its expiry", func() bool {
		n, err := rdb.Exists(ctx, key).Result()
		return err == nil && n == 0
	})
}

// TestOpenSIPSDirectCaseMismatch: flowCaseMismatch in OpenSIPS's Redis
// mode.
func TestOpenSIPSDirectCaseMismatch(t *testing.T) { flowCaseMismatch(t, opensipsDirectStarter) }
