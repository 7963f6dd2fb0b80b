package test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/deferpush/deferpush/adapters/imclient"
	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/test/harness"
)

// The REDIS_DIRECT mode of the shipped kamailio.cfg: Kamailio stores
// MESSAGEs and reports registrations through deferpush's Redis functions
// (ndb_redis), and deferpush reads the registration events.

// kamailioDirectStarter starts the Kamailio stack in the REDIS_DIRECT
// mode, for the shared flows. The hooks URL the cfg is given goes
// nowhere: in this mode nothing may depend on the hooks.
func kamailioDirectStarter(t *testing.T, o stackOptions) *dpStack {
	t.Helper()
	return startKamailioDirect(t, o).dpStack
}

func startKamailioDirect(t *testing.T, o stackOptions) *kamailioStack {
	t.Helper()
	o.redisDirect = true
	if o.hooks == nil {
		o.hooks = func(string) string { return fmt.Sprintf("http://127.0.0.1:%d", harness.FreePort(t)) }
	}
	return startKamailioStack(t, o)
}

// events is how many registration events dp:events holds, and how many
// the group has not acked.
func (s *dpStack) events(t *testing.T) (n, pending int64) {
	t.Helper()
	ctx := context.Background()
	n, err := s.st.Client().XLen(ctx, "dp:events").Result()
	if err != nil {
		t.Fatal(err)
	}
	p, err := s.st.Client().XPending(ctx, "dp:events", "deferpush").Result()
	if err != nil {
		t.Fatal(err)
	}
	return n, p.Count
}

// TestKamailioDirectSeed: the seed's flow through Kamailio in the
// REDIS_DIRECT mode: the MESSAGE is stored by dp_store from the route
// script, the MSRP session through the SIP ingress, the REGISTER reported
// by dp_register's event (read and acked), and both pushed.
func TestKamailioDirectSeed(t *testing.T) {
	s := kamailioDirectStarter(t, stackOptions{})
	flowSeed(t, s)
	// The event is acked once its push has started, with the reader's
	// next read.
	waitFor(t, 5*time.Second, "the registration's event acked", func() bool {
		n, pending := s.events(t)
		return n == 1 && pending == 0
	})
}

func TestKamailioDirectLargeMessage(t *testing.T) {
	flowLargeMessage(t, kamailioDirectStarter(t, stackOptions{}))
}

func TestKamailioDirectPushToAOR(t *testing.T) { flowPushToAOR(t, kamailioDirectStarter) }

func TestKamailioDirectFailureRouteStores(t *testing.T) {
	flowFailureRouteStores(t, kamailioDirectStarter)
}

// TestKamailioDirectUnregisterCancelsPush: the unregistration's
// dp_unregister writes an event (a push runs) and deferpush cancels it.
func TestKamailioDirectUnregisterCancelsPush(t *testing.T) {
	flowUnregisterCancelsPush(t, kamailioDirectStarter)
}

// TestKamailioDirectRefusals: dp_store's refusals reach the sender as the
// SIP replies the hook gives, and nothing is stored: too large 513, a
// full mailbox the policy's reply (480, and the default 486), storing
// disabled the policy's (403, then 480); Redis down: 480, and stored
// again once it is back (empty: deferpush restores the library).
func TestKamailioDirectRefusals(t *testing.T) {
	flowDirectRefusals(t, kamailioDirectStarter,
		func(t *testing.T, s *dpStack, sender *imclient.Client) {
			// A policy change reaches the script through dp:limits at once.
			if _, _, err := s.st.UpdatePolicy(context.Background(), "test", func(p *plugin.Policy) error {
				p.StoreDisabledReply = 480
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if code := sendMessage(t, sender, "user2", []byte("hello")); code != 480 {
				t.Errorf("MESSAGE with storing off, reply 480: %d, want 480", code)
			}
			if n := s.counts(t, "user2"); n != (plugin.Counts{}) {
				t.Errorf("stored %+v, want nothing", n)
			}
		},
		func(t *testing.T, s *dpStack, sender *imclient.Client) {
			// Back, empty (no persistence): Kamailio reconnects and
			// deferpush puts the library and dp:limits back; storing
			// works again.
			s.redis.Start(t)
			waitFor(t, 15*time.Second, "a MESSAGE stored again", func() bool {
				return sendMessage(t, sender, "user2", []byte("hello again")) == 202
			})
			if n := s.counts(t, "user2"); n.Pending != 1 {
				t.Errorf("stored %+v after Redis came back, want 1 pending", n)
			}
		})
}

// flowDirectRefusals: dp_store's refusals reach the sender as the SIP
// replies the hook gives, and nothing refused is stored: too large 513, a
// full mailbox the policy's reply (480, and the default 486), storing
// disabled the policy's (403); Redis down: 480. afterDisabled and
// afterRedisDown, when set, go on in the stack of those two cases.
func flowDirectRefusals(t *testing.T, start startStack, afterDisabled, afterRedisDown func(t *testing.T, s *dpStack, sender *imclient.Client)) {
	t.Run("limits", func(t *testing.T) {
		s := start(t, stackOptions{policy: func(p *plugin.Policy) {
			p.MaxMailbox = 1
			p.MaxMessageSize = 2000
			p.FullMailboxReply = 480
		}})
		user1 := s.client(t, "user1", imclient.Config{})
		if code := sendMessage(t, user1, "user2", bytes.Repeat([]byte("x"), 3000)); code != 513 {
			t.Errorf("oversize MESSAGE: %d, want 513", code)
		}
		if n := s.counts(t, "user2"); n != (plugin.Counts{}) {
			t.Errorf("stored %+v after the oversize one, want nothing", n)
		}
		if code := sendMessage(t, user1, "user2", []byte("first")); code != 202 {
			t.Errorf("first MESSAGE: %d, want 202", code)
		}
		if code := sendMessage(t, user1, "user2", []byte("second")); code != 480 {
			t.Errorf("MESSAGE to a full mailbox: %d, want 480 (the policy's full_mailbox_reply)", code)
		}
		if n := s.counts(t, "user2"); n.Pending != 1 {
			t.Errorf("stored %+v, want the first message only", n)
		}
	})
	t.Run("full 486", func(t *testing.T) {
		s := start(t, stackOptions{policy: func(p *plugin.Policy) { p.MaxMailbox = 1 }})
		user1 := s.client(t, "user1", imclient.Config{})
		if code := sendMessage(t, user1, "user2", []byte("first")); code != 202 {
			t.Errorf("first MESSAGE: %d, want 202", code)
		}
		if code := sendMessage(t, user1, "user2", []byte("second")); code != 486 {
			t.Errorf("MESSAGE to a full mailbox: %d, want 486 (the default full_mailbox_reply)", code)
		}
	})
	t.Run("store disabled", func(t *testing.T) {
		s := start(t, stackOptions{policy: func(p *plugin.Policy) {
			p.StoreEnabled, p.StoreDisabledReply = false, 403
		}})
		user1 := s.client(t, "user1", imclient.Config{})
		if code := sendMessage(t, user1, "user2", []byte("hello")); code != 403 {
			t.Errorf("MESSAGE with storing off: %d, want 403", code)
		}
		if n := s.counts(t, "user2"); n != (plugin.Counts{}) {
			t.Errorf("stored %+v, want nothing", n)
		}
		if afterDisabled != nil {
			afterDisabled(t, s, user1)
		}
	})
	t.Run("redis down", func(t *testing.T) {
		s := start(t, stackOptions{})
		user1 := s.client(t, "user1", imclient.Config{})
		s.redis.Kill()
		begun := time.Now()
		if code := sendMessage(t, user1, "user2", []byte("hello")); code != 480 {
			t.Errorf("MESSAGE while Redis is down: %d, want 480", code)
		}
		t.Logf("480 after %v", time.Since(begun).Round(time.Millisecond))
		if afterRedisDown != nil {
			afterRedisDown(t, s, user1)
		}
	})
}

// TestKamailioDirectRegisterNothingStored: a REGISTER of a user with an
// empty mailbox is answered and costs no Redis call once the cache is
// warm (TestKamailioDirectCacheEmptyMailbox counts the calls): nothing is
// recorded, no event is written, and deferpush does nothing (no INVITE
// comes).
func TestKamailioDirectRegisterNothingStored(t *testing.T) {
	s := startKamailioDirect(t, stackOptions{})
	waitWarm(t, s.k, 1)
	user2 := s.client(t, "user2", imclient.Config{})
	s.register(t, user2)
	ctx := context.Background()
	if _, err := s.st.Contact(ctx, plugin.MustParseAOR("sip:user2@"+domain)); err == nil {
		t.Errorf("the registration of a user with nothing stored was recorded")
	}
	if n, _ := s.events(t); n != 0 {
		t.Errorf("dp:events holds %d events, want none", n)
	}
	if st := user2.Stats(); st.Invites != 0 {
		t.Errorf("user2 got %d INVITEs for an empty mailbox", st.Invites)
	}
	// user2 leaves (dp_unregister: no push runs, no event), something is
	// stored, user2 registers again: pushed.
	uctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if code, err := user2.Register(uctx, 0); err != nil || code != 200 {
		t.Fatalf("unREGISTER: %d %v", code, err)
	}
	if n, _ := s.events(t); n != 0 {
		t.Errorf("dp:events holds %d events after the unREGISTER, want none (no push ran)", n)
	}
	// Then something is stored and the client registers again: pushed.
	user1 := s.client(t, "user1", imclient.Config{})
	storeThenOnePush(t, s.dpStack, user1, "user2", user2, "(none for the first REGISTER)")
}

// storeThenOnePush sends one MESSAGE from sender to user (stored: the
// client rcv is not registered), registers rcv and checks that it gets
// exactly one push of that one message; why says why no other.
func storeThenOnePush(t *testing.T, s *dpStack, sender *imclient.Client, user string, rcv *imclient.Client, why string) {
	t.Helper()
	if code := sendMessage(t, sender, user, []byte("now there is one")); code != 202 {
		t.Fatalf("MESSAGE: %d", code)
	}
	s.register(t, rcv)
	waitClient(t, rcv, "BYE", func(st imclient.Stats) bool { return st.Byes == 1 })
	if st := rcv.Stats(); st.Invites != 1 || st.Received != 1 {
		t.Errorf("%s saw %+v; want one push of one message %s", user, st, why)
	}
}

// TestKamailioDirectTwoInstances: two deferpush instances read the events
// as one group: each registration is pushed once, and every event is
// acked.
func TestKamailioDirectTwoInstances(t *testing.T) {
	s := startKamailioDirect(t, stackOptions{})
	s.otherInstance(t)
	sender := s.client(t, "sender", imclient.Config{})
	const users = 6
	clients := make([]*imclient.Client, users)
	for i := range users {
		user := fmt.Sprintf("two%d", i)
		if code := sendMessage(t, sender, user, []byte("for "+user)); code != 202 {
			t.Fatalf("MESSAGE to %s: %d", user, code)
		}
		clients[i] = s.client(t, user, imclient.Config{})
	}
	for _, c := range clients {
		s.register(t, c)
	}
	for i, c := range clients {
		waitClient(t, c, "BYE", func(st imclient.Stats) bool { return st.Byes == 1 })
		if st := c.Stats(); st.Invites != 1 || st.Received != 1 {
			t.Errorf("two%d saw %+v; want one push of its message", i, st)
		}
	}
	waitFor(t, 10*time.Second, "every event acked", func() bool {
		n, pending := s.events(t)
		return n == users && pending == 0
	})
	// No second push comes late.
	time.Sleep(500 * time.Millisecond) // a second push would have started by now
	for i, c := range clients {
		if st := c.Stats(); st.Invites != 1 {
			t.Errorf("two%d got %d INVITEs, want 1", i, st.Invites)
		}
	}
}

// TestKamailioDirectContactExpiry: usrloc's expiry of a contact runs
// event_route[usrloc:contact-expired], whose dp_unregister (kind expired)
// deletes the registration deferpush keeps (which would otherwise stay
// an hour past its expiry) and leaves the unregistration's mark.
func TestKamailioDirectContactExpiry(t *testing.T) {
	s := kamailioDirectStarter(t, stackOptions{})
	ctx := context.Background()
	addr, _ := silentContact(t)
	rawRegister(t, s.proxyAddr, "user3", "sip:user3@"+addr, 2)
	key := "dp:{sip:user3@" + domain + "}:"
	waitFor(t, 5*time.Second, "the registration recorded", func() bool {
		return s.st.Client().Exists(ctx, key+"c").Val() == 1
	})
	waitFor(t, 15*time.Second, "the registration deleted by the expiry's dp_unregister", func() bool {
		return s.st.Client().Exists(ctx, key+"c").Val() == 0
	})
	if mark := s.st.Client().Get(ctx, key+"a").Val(); !strings.Contains(mark, " u sip:user3@"+addr) {
		t.Errorf("dp:{aor}:a = %q, want the unregistration of the contact", mark)
	}
}

// TestKamailioDirectCaseMismatch: dp_store and dp_register fold the user
// part's case as the hooks do (flowCaseMismatch).
func TestKamailioDirectCaseMismatch(t *testing.T) { flowCaseMismatch(t, kamailioDirectStarter) }

// TestKamailioDirectMoveInOneRegister: one REGISTER removes a contact and
// adds another (RFC 3261 §10.2.1 lets a REGISTER carry several, each
// processed on its own): the contact it adds is pushed to at once, as
// through the hooks, not taken for an unregistration because the first
// Contact says expires=0 (PROBE7 finding 4).
func TestKamailioDirectMoveInOneRegister(t *testing.T) {
	s := kamailioDirectStarter(t, stackOptions{})
	user1 := s.client(t, "user1", imclient.Config{})
	if code := sendMessage(t, user1, "user2", []byte("moved")); code != 202 {
		t.Fatalf("MESSAGE to offline user2: %d, want 202", code)
	}
	s.waitPending(t, "user2", 1)
	user2 := s.client(t, "user2", imclient.Config{})
	ct := "<sip:user2@127.0.0.1:1>;expires=0, <" + user2.Contact() + ">;expires=300"
	if got := rawRegisterStatus(t, "udp", s.proxyAddr, "sip:user2@"+domain, ct, 300); !strings.HasPrefix(got, "SIP/2.0 200") {
		t.Fatalf("REGISTER moving the contact: %q", got)
	}
	waitClient(t, user2, "BYE", func(st imclient.Stats) bool { return st.Byes == 1 })
	if got := user2.Received(); len(got) != 1 || string(got[0].Decoded.Body) != "moved" {
		t.Errorf("received %+v, want the stored message", got)
	}
}
