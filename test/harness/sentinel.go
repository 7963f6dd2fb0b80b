package harness

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// SentinelSet is a Redis master, one replica of it and three Sentinels
// watching them on loopback, as an operator runs for failover: the
// Sentinels promote the replica when the master stays down for a second,
// and never the first master (replica-priority 0).
type SentinelSet struct {
	Master, Replica *RedisServer
	// Sentinels are host:port of the three Sentinels.
	Sentinels []string
}

// SentinelMaster is the master name the Sentinels monitor.
const SentinelMaster = "dpmaster"

// RedisSentinel starts the set and waits until every Sentinel knows the
// master and its replica, and the replica is in sync. via, when not nil,
// gives the address the replica replicates from instead of the master's
// (a proxy the test can cut); the Sentinels watch the master directly.
func RedisSentinel(t T, via func(master string) string) *SentinelSet {
	t.Helper()
	bin := Require(t, "redis-server", "redis-server")
	// A replica that rejoins syncs at once, not after the diskless
	// sync's default 5 s wait for more replicas.
	fast := WithArgs("--repl-diskless-sync-delay", "0")
	// The first master runs without persistence: killed and started
	// again it is empty, and the Sentinels must never promote it back
	// while it is (a stall of the promoted replica, over
	// down-after-milliseconds on a loaded machine, had them fail over to
	// it and the replica sync its emptiness: Redis's documentation warns
	// of exactly this). With priority 0 they only make it a replica.
	set := &SentinelSet{Master: Redis(t, fast, WithArgs("--replica-priority", "0"))}
	set.Replica = Redis(t, fast)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	from := set.Master.Addr
	if via != nil {
		from = via(from)
	}
	fhost, fport, _ := net.SplitHostPort(from)
	if _, err := RedisDo(ctx, set.Replica.Addr, "REPLICAOF", fhost, fport); err != nil {
		t.Fatalf("REPLICAOF: %v", err)
	}
	host, port, _ := net.SplitHostPort(set.Master.Addr)
	for i := range 3 {
		sport := FreePort(t)
		dir := t.TempDir()
		conf := filepath.Join(dir, "sentinel.conf")
		body := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\nprotected-mode no\n"+
			"sentinel monitor %s %s %s 2\n"+
			"sentinel down-after-milliseconds %s 1000\n"+
			// Long: a Sentinel points a replica that replicates from
			// another address (a test's proxy) back at the master only
			// after twice this; the failover itself does not wait for it.
			"sentinel failover-timeout %s 60000\n"+
			"sentinel parallel-syncs %s 1\n",
			sport, dir, SentinelMaster, host, port, SentinelMaster, SentinelMaster, SentinelMaster)
		if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(sport))
		p := startProc(t, dir, fmt.Sprintf("redis-sentinel-%d", i), bin, conf, "--sentinel")
		p.WaitFor(t, 10*time.Second, "PING", func(ctx context.Context) error {
			_, err := RedisDo(ctx, addr, "PING")
			return err
		})
		set.Sentinels = append(set.Sentinels, addr)
	}
	set.waitSynced(t, ctx)
	return set
}

// URL is the redis+sentinel:// URL of the set.
func (s *SentinelSet) URL() string {
	return "redis+sentinel://" + strings.Join(s.Sentinels, ",") + "/" + SentinelMaster
}

// waitSynced waits until the replica has caught up with the master and
// every Sentinel has discovered the replica.
func (s *SentinelSet) waitSynced(t T, ctx context.Context) {
	t.Helper()
	for {
		info, err := RedisDo(ctx, s.Replica.Addr, "INFO", "replication")
		ok := err == nil && strings.Contains(info, "master_link_status:up")
		for _, a := range s.Sentinels {
			n, err := RedisDo(ctx, a, "SENTINEL", "REPLICAS", SentinelMaster)
			ok = ok && err == nil && strings.Contains(n, portOf(s.Replica.Addr))
		}
		if ok {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("sentinel set not ready: replica link %v %q", err, info)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// MasterAddr asks a Sentinel which server is the master now.
func (s *SentinelSet) MasterAddr(ctx context.Context) (string, error) {
	v, err := RedisDo(ctx, s.Sentinels[0], "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SentinelMaster)
	if err != nil {
		return "", err
	}
	f := strings.Fields(v)
	if len(f) != 2 {
		return "", fmt.Errorf("master address %q", v)
	}
	return net.JoinHostPort(f[0], f[1]), nil
}
