package test

import (
	"bufio"
	"context"
	"maps"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deferpush/deferpush/adapters/imclient"
	"github.com/deferpush/deferpush/test/harness"
)

// The REGISTER cache of kamailio.cfg's REDIS_DIRECT mode (the htable
// "pending"): a REGISTER of a user with nothing stored costs Kamailio no
// Redis call; a user with messages is still pushed, after a restart of
// Kamailio (the warm-up load), through a second Kamailio (the poll of
// dp:recent), and while Redis was down at Kamailio's start (cold).

// redisMonitor records the dp_register calls Redis runs (MONITOR): what
// Kamailio asked for, seen from Redis.
type redisMonitor struct {
	mu    sync.Mutex
	calls []string // the AOR argument of each FCALL dp_register
}

func monitorRegisters(t testing.TB, addr string) *redisMonitor {
	t.Helper()
	m := &redisMonitor{}
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write([]byte("MONITOR\r\n")); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(conn)
	if line, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(line, "+OK") {
		t.Fatalf("MONITOR: %q %v", line, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		const call = `"fcall" "dp_register" "0" "`
		for {
			// +1733.123 [0 127.0.0.1:4711] "FCALL" "dp_register" "0" "sip:u@d" ...
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			if i := strings.Index(strings.ToLower(line), call); i >= 0 {
				aor, _, _ := strings.Cut(line[i+len(call):], `"`)
				m.mu.Lock()
				m.calls = append(m.calls, aor)
				m.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() { conn.Close(); <-done })
	return m
}

// total is how many dp_register calls Redis ran.
func (m *redisMonitor) total() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.calls)
}

// count is how many dp_register calls named user.
func (m *redisMonitor) count(user string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, aor := range m.calls {
		if strings.EqualFold(aor, "sip:"+user+"@"+domain) {
			n++
		}
	}
	return n
}

// waitWarm waits until Kamailio k has loaded the pending users from Redis.
func waitWarm(t testing.TB, k interface{ Log() string }, loads int) {
	t.Helper()
	waitFor(t, 15*time.Second, "the cache loaded from Redis", func() bool {
		return strings.Count(k.Log(), "pending users loaded from Redis") >= loads
	})
}

// settle registers marker (who has a message, so its REGISTER calls
// dp_register) and waits for that call: a dp_register of an earlier
// REGISTER would have reached Redis by then (Kamailio answers each
// REGISTER before its dp_register; the marker's comes after the earlier
// ones' in the same client's order through the same workers, give or
// take a worker: the wait adds a margin).
func settle(t *testing.T, s *kamailioStack, m *redisMonitor, marker *imclient.Client, user string) {
	t.Helper()
	before := m.count(user)
	s.register(t, marker)
	waitFor(t, 5*time.Second, "the marker's dp_register", func() bool { return m.count(user) > before })
	time.Sleep(200 * time.Millisecond) // a straggler from another worker
}

// TestKamailioDirectCacheEmptyMailbox: once warm, a REGISTER of a user
// with an empty mailbox makes no dp_register call; a store makes the next
// REGISTER call it (and push); after the delivery the next REGISTER calls
// it once more (it finds the mailbox empty and drops the user), the one
// after that not at all.
func TestKamailioDirectCacheEmptyMailbox(t *testing.T) {
	s := startKamailioDirect(t, stackOptions{})
	waitWarm(t, s.k, 1)
	mon := monitorRegisters(t, s.redis.Addr)
	sender := s.client(t, "sender", imclient.Config{})
	if code := sendMessage(t, sender, "marker", []byte("keeps the marker pending")); code != 202 {
		t.Fatalf("MESSAGE to marker: %d", code)
	}
	marker := s.client(t, "marker", imclient.Config{})

	user2 := s.client(t, "user2", imclient.Config{})
	s.register(t, user2)
	s.register(t, user2)
	settle(t, s, mon, marker, "marker")
	if n := mon.count("user2"); n != 0 {
		t.Fatalf("two REGISTERs of user2 (empty mailbox) made %d dp_register calls, want none", n)
	}

	// Gone (dp_unregister, always called), something stored for another
	// spelling of the user, registered again: pushed.
	uctx, ucancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer ucancel()
	if code, err := user2.Register(uctx, 0); err != nil || code != 200 {
		t.Fatalf("unREGISTER: %d %v", code, err)
	}
	storeThenOnePush(t, s.dpStack, sender, "User2", user2, "(the store was for another spelling)")
	waitFor(t, 10*time.Second, "user2's mailbox emptied", func() bool { return s.counts(t, "user2").Pending == 0 })
	if n := mon.count("user2"); n != 1 {
		t.Errorf("dp_register calls for user2 after the store's REGISTER: %d, want 1", n)
	}
	// The next REGISTER asks once (and learns it is empty), the one after
	// it no more.
	s.register(t, user2)
	waitFor(t, 5*time.Second, "dp_register of the REGISTER after the delivery", func() bool { return mon.count("user2") == 2 })
	s.register(t, user2)
	settle(t, s, mon, marker, "marker")
	if n := mon.count("user2"); n != 2 {
		t.Errorf("dp_register calls for user2 after the mailbox was found empty: %d, want 2", n)
	}
	if st := user2.Stats(); st.Invites != 1 {
		t.Errorf("user2 got %d INVITEs, want 1", st.Invites)
	}
}

// TestKamailioDirectCacheRestart: Kamailio restarted while messages wait
// in Redis loads the pending users at start: the first REGISTER after
// the restart pushes.
func TestKamailioDirectCacheRestart(t *testing.T) {
	s := startKamailioDirect(t, stackOptions{})
	sender := s.client(t, "sender", imclient.Config{})
	if code := sendMessage(t, sender, "user3", []byte("waiting across a restart")); code != 202 {
		t.Fatalf("MESSAGE: %d", code)
	}
	s.k.Stop()
	s.k.Start(t)
	waitWarm(t, s.k, 1)
	user3 := s.client(t, "user3", imclient.Config{})
	s.register(t, user3)
	waitClient(t, user3, "BYE", func(st imclient.Stats) bool { return st.Byes == 1 })
	if st := user3.Stats(); st.Received != 1 {
		t.Errorf("user3 saw %+v; want its message pushed", st)
	}
}

// TestKamailioDirectCacheTwoProxies: a message stored through Kamailio A
// reaches Kamailio B's cache by B's poll of dp:recent: a REGISTER through
// B after the poll interval is pushed.
func TestKamailioDirectCacheTwoProxies(t *testing.T) {
	a := startKamailioDirect(t, stackOptions{})
	defs := maps.Clone(a.defines)
	defs["INTERNAL_PORT"] = strconv.Itoa(harness.FreePort(t))
	b := harness.Kamailio(t, harness.KamailioConfig{ConfigFile: "../adapters/kamailio/kamailio.cfg", Defines: defs})
	waitWarm(t, a.k, 1)
	waitWarm(t, b, 1)
	mon := monitorRegisters(t, a.redis.Addr)
	sender := a.client(t, "sender", imclient.Config{})
	if code := sendMessage(t, sender, "user4", []byte("stored through A")); code != 202 {
		t.Fatalf("MESSAGE through A: %d", code)
	}
	time.Sleep(2500 * time.Millisecond) // B's poll interval (1 s) and then some
	user4 := newClient(t, "sip:user4@"+domain, imclient.Config{Proxy: b.SIPAddr})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if code, err := user4.Register(ctx, 300); err != nil || code != 200 {
		t.Fatalf("REGISTER through B: %d %v", code, err)
	}
	waitFor(t, 5*time.Second, "B's dp_register of user4", func() bool { return mon.count("user4") == 1 })
	waitClient(t, user4, "BYE", func(st imclient.Stats) bool { return st.Byes == 1 })
	if st := user4.Stats(); st.Received != 1 {
		t.Errorf("user4 saw %+v; want the message stored through A pushed", st)
	}
}

// TestKamailioDirectCacheRedisDownAtStart: Kamailio started while Redis
// is down stays cold: once Redis is back, every REGISTER asks Redis (and
// a user with messages is pushed) until the cache has loaded (at least
// three seconds after Redis is back), then an
// empty mailbox costs nothing again.
func TestKamailioDirectCacheRedisDownAtStart(t *testing.T) {
	s := startKamailioDirect(t, stackOptions{redis: []harness.RedisOption{harness.WithAOF()}})
	sender := s.client(t, "sender", imclient.Config{})
	if code := sendMessage(t, sender, "user5", []byte("stored before the outage")); code != 202 {
		t.Fatalf("MESSAGE: %d", code)
	}
	s.k.Stop()
	s.redis.Kill()
	s.k.Start(t)
	time.Sleep(1500 * time.Millisecond) // a load attempt fails meanwhile
	if strings.Contains(s.k.Log(), "pending users loaded from Redis") {
		t.Fatalf("Kamailio says it loaded the cache with Redis down")
	}
	s.redis.Start(t)
	mon := monitorRegisters(t, s.redis.Addr)
	user5 := s.client(t, "user5", imclient.Config{})
	s.register(t, user5)
	// The load scans dp:mailboxes three ticks after its first call:
	// this REGISTER went the cold way.
	if strings.Contains(s.k.Log(), "pending users loaded from Redis") {
		t.Fatalf("the cache loaded before the REGISTER was answered: the cold path is not what pushed")
	}
	waitClient(t, user5, "BYE", func(st imclient.Stats) bool { return st.Byes == 1 })
	if st := user5.Stats(); st.Received != 1 {
		t.Errorf("user5 saw %+v; want its message pushed", st)
	}
	waitWarm(t, s.k, 1)
	if code := sendMessage(t, sender, "marker", []byte("keeps the marker pending")); code != 202 {
		t.Fatalf("MESSAGE to marker: %d", code)
	}
	marker := s.client(t, "marker", imclient.Config{})
	user6 := s.client(t, "user6", imclient.Config{})
	s.register(t, user6)
	settle(t, s, mon, marker, "marker")
	if n := mon.count("user6"); n != 0 {
		t.Errorf("a REGISTER with an empty mailbox once warm made %d dp_register calls, want none", n)
	}
}
