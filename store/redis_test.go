package store_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/store"
	"github.com/deferpush/deferpush/store/storetest"
	"github.com/deferpush/deferpush/test/harness"
)

func TestRedisConformance(t *testing.T) {
	srv := harness.Redis(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { c.Close() })
	storetest.Run(t, func(t *testing.T, now func() time.Time) plugin.Store {
		if err := c.FlushDB(context.Background()).Err(); err != nil {
			t.Fatal(err)
		}
		s, err := store.New(store.Config{Client: c, Now: now})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestClusterConformance(t *testing.T) {
	cl := harness.RedisCluster(t)
	s0, err := store.New(store.Config{URL: cl.URL()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s0.Close() })
	c := s0.Client().(*redis.ClusterClient)
	storetest.Run(t, func(t *testing.T, now func() time.Time) plugin.Store {
		err := c.ForEachMaster(context.Background(), func(ctx context.Context, m *redis.Client) error {
			return m.FlushAll(ctx).Err()
		})
		if err != nil {
			t.Fatal(err)
		}
		s, err := store.New(store.Config{Client: c, Now: now})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

// TestSurvivesRestart kills redis-server (AOF, appendfsync always) in the
// middle of a stream of appends and checks that every acknowledged
// message is there afterwards, once, in order, and that in-flight work is
// still recovered.
func TestSurvivesRestart(t *testing.T) {
	srv := harness.Redis(t, harness.WithAOF())
	s, err := store.New(store.Config{URL: srv.URL() + "?max_retries=0&dial_timeout=200ms"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const aors, perAOR = 4, 150
	aor := func(i int) plugin.AOR { return plugin.MustParseAOR(fmt.Sprintf("sip:u%d@example.com", i)) }

	var appended atomic.Int64
	restarted := make(chan struct{})
	var wg sync.WaitGroup
	ids := make([][]string, aors)
	for i := range aors {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range perAOR {
				m := &plugin.Message{Recipient: aor(i), Kind: plugin.KindSIPMessage, Raw: []byte(fmt.Sprint(n)), Received: time.Now()}
				// Retry the same message (same ID) until acknowledged: a
				// store that executed it before failing must not keep two.
				for {
					err := s.Append(ctx, m, plugin.DefaultPolicy().Limits())
					if err == nil {
						break
					}
					if ctx.Err() != nil {
						t.Error(err)
						return
					}
					time.Sleep(10 * time.Millisecond)
				}
				ids[i] = append(ids[i], m.ID)
				appended.Add(1)
			}
		}()
	}
	// Claim a few for a push that will have died with the server.
	for appended.Load() < 100 {
		time.Sleep(time.Millisecond)
	}
	inflight, err := s.Claim(ctx, aor(0), "doomed", 5, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for appended.Load() < 250 {
		time.Sleep(time.Millisecond)
	}
	srv.Kill()
	srv.Start(t)
	close(restarted)
	wg.Wait()

	var total int
	for i := range aors {
		c, err := s.Count(ctx, aor(i))
		if err != nil {
			t.Fatal(err)
		}
		total += c.Pending + c.InFlight
	}
	if total != aors*perAOR {
		t.Fatalf("after restart: %d messages stored, want %d", total, aors*perAOR)
	}
	if len(inflight) != 5 {
		t.Fatalf("claimed %d before restart, want 5", len(inflight))
	}
	// The doomed push never acks: after its lease the sweep requeues it.
	st, err := s.Sweep(ctx, time.Now().Add(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if st.Requeued != 5 {
		t.Errorf("Sweep requeued %d, want 5", st.Requeued)
	}
	for i := range aors {
		msgs, err := s.Claim(ctx, aor(i), "after", perAOR+1, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, m := range msgs {
			got = append(got, m.ID)
		}
		if d := cmp.Diff(ids[i], got); d != "" {
			t.Errorf("%s: delivered ids after restart (-want +got):\n%s", aor(i), d)
		}
	}
}

// TestNoScriptFallback: the function library flushed from the server (as
// after a restart without persistence) is loaded again.
func TestNoScriptFallback(t *testing.T) {
	srv := harness.Redis(t)
	s, err := store.New(store.Config{URL: srv.URL()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	for i := range 3 {
		m := &plugin.Message{Recipient: plugin.MustParseAOR("sip:bob@example.com"), Kind: plugin.KindSIPMessage, Raw: []byte("x"), Received: time.Now()}
		if err := s.Append(ctx, m, plugin.Limits{}); err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
		if err := s.Client().FunctionFlush(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Sweep(ctx, time.Now()); err != nil {
			t.Fatalf("sweep %d: %v", i, err)
		}
	}
	if c, _ := s.Count(ctx, plugin.MustParseAOR("sip:bob@example.com")); c.Pending != 3 {
		t.Errorf("pending = %d, want 3", c.Pending)
	}
}

func TestParseURL(t *testing.T) {
	tests := []struct {
		url  string
		want redis.UniversalOptions
		bad  bool
	}{
		{url: "redis://127.0.0.1:6379/2", want: redis.UniversalOptions{Addrs: []string{"127.0.0.1:6379"}, DB: 2}},
		{url: "redis://:pw@h:1", want: redis.UniversalOptions{Addrs: []string{"h:1"}, Password: "pw"}},
		{url: "redis+cluster://h1:1,h2:2", want: redis.UniversalOptions{Addrs: []string{"h1:1", "h2:2"}, IsClusterMode: true}},
		{url: "unix:///run/redis/redis.sock?db=2", want: redis.UniversalOptions{Addrs: []string{"/run/redis/redis.sock"}, DB: 2}},
		{url: "unix://u:pw@/run/redis.sock", want: redis.UniversalOptions{Addrs: []string{"/run/redis.sock"}, Username: "u", Password: "pw"}},
		{url: "redis+cluster://u:pw@h1:1", want: redis.UniversalOptions{Addrs: []string{"h1:1"}, Username: "u", Password: "pw", IsClusterMode: true}},
		{url: "redis+sentinel://s1:26379,s2:26379/mymaster?db=3", want: redis.UniversalOptions{Addrs: []string{"s1:26379", "s2:26379"}, MasterName: "mymaster", DB: 3}},
		{url: "redis+sentinel://s1:26379", bad: true},
		{url: "redis+sentinel://s1:26379/m?db=x", bad: true},
		{url: "redis+cluster://h1:1/3", bad: true},
		{url: "redis+cluster://h1", bad: true},
		{url: "memcached://h:1", bad: true},
		{url: "::", bad: true},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			got, err := store.ParseURL(tt.url)
			if tt.bad {
				if err == nil {
					t.Fatalf("ParseURL accepted %q", tt.url)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			type view struct {
				Addrs                      []string
				DB                         int
				Username, Password, Master string
				Cluster                    bool
			}
			see := func(o redis.UniversalOptions) view {
				return view{o.Addrs, o.DB, o.Username, o.Password, o.MasterName, o.IsClusterMode}
			}
			if d := cmp.Diff(see(tt.want), see(*got)); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
	if o, err := store.ParseURL("unix:///run/redis.sock"); err != nil || o.Dialer == nil {
		t.Errorf("unix://: %v, dialer set %v", err, err == nil && o.Dialer != nil)
	}
	if o, _ := store.ParseURL("redis://h:1"); o.Dialer != nil {
		t.Error("redis://: a dialer of its own")
	}
	if _, err := store.ParseURL("rediss+cluster://h:1"); err != nil {
		t.Error(err)
	} else if o, _ := store.ParseURL("rediss+cluster://h:1"); o.TLSConfig == nil || o.TLSConfig.ServerName != "h" {
		t.Error("rediss+cluster: no TLS config")
	}
}

func TestSentinelURLBuildsFailoverClient(t *testing.T) {
	s, err := store.New(store.Config{URL: "redis+sentinel://127.0.0.1:1/mymaster"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, ok := s.Client().(*redis.Client); !ok {
		t.Errorf("client is %T, want the failover *redis.Client", s.Client())
	}
}

// TestUnixSocketURL: a store reached over a Unix socket (unix://) stores
// and claims as over TCP, and the connection is the socket's.
func TestUnixSocketURL(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "redis.sock")
	srv := harness.Redis(t, harness.WithUnixSocket(sock))
	s, err := store.New(store.Config{URL: "unix://" + sock + "?db=1"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	aor := plugin.MustParseAOR("sip:unix@example.com")
	m := &plugin.Message{Recipient: aor, Kind: plugin.KindSIPMessage, Raw: []byte("MESSAGE sip:unix@example.com SIP/2.0\r\n\r\n"), Received: time.Now()}
	if err := s.Append(ctx, m, plugin.Limits{}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Claim(ctx, aor, "tok", 10, time.Minute)
	if err != nil || len(got) != 1 || got[0].ID != m.ID {
		t.Fatalf("Claim = %v, %v; want the message stored", got, err)
	}
	// The message is in db 1 of that server, over the socket.
	tcp := redis.NewClient(&redis.Options{Addr: srv.Addr, DB: 1})
	defer tcp.Close()
	if n, err := tcp.DBSize(ctx).Result(); err != nil || n == 0 {
		t.Errorf("db 1 over TCP holds %d keys (%v), want the store's", n, err)
	}
	info, err := s.Client().ClientInfo(ctx).Result()
	if err != nil || !strings.HasPrefix(info.Addr, "/") && !strings.HasPrefix(info.LAddr, "/") {
		t.Errorf("client info %+v, %v: want a Unix socket connection", info, err)
	}
}
