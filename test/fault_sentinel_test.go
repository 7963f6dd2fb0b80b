package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/store"
	"github.com/deferpush/deferpush/test/harness"
)

// linkProxy carries the replication link from the replica to the master;
// cut closes it and refuses the replica until restore, as a network
// partition does. Unlike freezing the replica, nothing written meanwhile
// waits in a socket buffer to reach it later.
type linkProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cut    bool
	conns  []net.Conn
}

func startLinkProxy(t *testing.T, target string) *linkProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &linkProxy{ln: ln, target: target}
	go p.serve()
	t.Cleanup(func() { ln.Close(); p.Cut() })
	return p
}

func (p *linkProxy) serve() {
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.cut {
			p.mu.Unlock()
			in.Close()
			continue
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			in.Close()
			continue
		}
		p.conns = append(p.conns, in, out)
		p.mu.Unlock()
		go func() { _, _ = io.Copy(out, in); out.Close() }()
		go func() { _, _ = io.Copy(in, out); in.Close() }()
	}
}

// Cut closes the link and refuses new ones.
func (p *linkProxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// Restore lets the replica connect again.
func (p *linkProxy) Restore() {
	p.mu.Lock()
	p.cut = false
	p.mu.Unlock()
}

// TestFaultSentinelFailover: senders store messages through deferpush on a
// Sentinel-watched master while the replica's link is cut; the master is
// killed and the Sentinels promote the replica. With redis.min_replicas 1
// every message answered "stored" is on the new master (the stores made
// while the replica could not follow are refused, not acknowledged); with
// 0 (the default) the messages acknowledged while the replica lagged are
// gone, as the probe found — the README says so.
func TestFaultSentinelFailover(t *testing.T) {
	for _, tc := range []struct {
		name     string
		replicas int
	}{{"min_replicas 1", 1}, {"min_replicas 0", 0}} {
		t.Run(tc.name, func(t *testing.T) {
			r := faultSentinelRound(t, tc.replicas)
			t.Logf("reliability: Sentinel failover, replica link cut, %s: %d stored (acknowledged), %d refused, %d lost",
				tc.name, r.acked, r.refused, r.lost)
			if r.acked < 50 {
				t.Errorf("only %d messages acknowledged: the load did not run", r.acked)
			}
			switch {
			case tc.replicas > 0 && r.lost != 0:
				t.Errorf("%d acknowledged messages lost with min_replicas %d, want 0", r.lost, tc.replicas)
			case tc.replicas > 0 && r.refused == 0:
				t.Errorf("no store refused while the replica was cut off: WAIT did not apply")
			case tc.replicas == 0 && r.lost == 0:
				t.Errorf("nothing lost without min_replicas: the fault did not bite, so the min_replicas 1 result proves nothing")
			}
		})
	}
}

type sentinelResult struct{ acked, refused, lost int }

func faultSentinelRound(t *testing.T, replicas int) sentinelResult {
	var link *linkProxy
	set := harness.RedisSentinel(t, func(master string) string {
		link = startLinkProxy(t, master)
		return link.ln.Addr().String()
	})
	const token = "sentinel-test-token-0123456789"
	dp := startDeferpush(t, []string{
		"DEFERPUSH_HOOKS_TOKEN=" + token,
		fmt.Sprintf("DEFERPUSH_REDIS_MIN_REPLICAS=%d", replicas),
		"DEFERPUSH_REDIS_REPLICA_TIMEOUT=300ms",
	}, "--redis", set.URL(), "--log-level", "info")
	var (
		mu      sync.Mutex
		acked   = map[string]plugin.AOR{} // Call-ID -> recipient
		refused atomic.Int64
		stop    atomic.Bool
		seq     atomic.Int64
		wg      sync.WaitGroup
	)
	client := &http.Client{Timeout: 5 * time.Second}
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				n := seq.Add(1)
				user := fmt.Sprintf("sip:fail%d@example.com", n%20)
				callID := fmt.Sprintf("sentinel-%d-%d@fault.test", w, n)
				raw := "MESSAGE " + user + " SIP/2.0\r\nVia: SIP/2.0/TCP 192.0.2.1;branch=z9hG4bK" + fmt.Sprint(n) +
					"\r\nFrom: <sip:sender@example.com>;tag=1\r\nTo: <" + user + ">\r\nCall-ID: " + callID +
					"\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi"
				body, _ := json.Marshal(map[string]string{"raw": raw, "aor": user})
				req, _ := http.NewRequest(http.MethodPost, "http://"+dp.HooksAddr+"/hooks/kamailio/message", bytes.NewReader(body))
				req.Header.Set("X-Deferpush-Token", token)
				req.Header.Set("Content-Type", "application/json")
				res, err := client.Do(req)
				if err != nil {
					refused.Add(1)
					time.Sleep(20 * time.Millisecond)
					continue
				}
				b, _ := io.ReadAll(res.Body)
				res.Body.Close()
				if res.StatusCode == http.StatusOK && strings.Contains(string(b), `"status":"stored"`) {
					mu.Lock()
					acked[callID] = plugin.MustParseAOR(user)
					mu.Unlock()
				} else {
					refused.Add(1)
					time.Sleep(20 * time.Millisecond)
				}
			}
		}()
	}
	time.Sleep(time.Second) // stores reach the replica
	info, err := harness.RedisDo(context.Background(), set.Replica.Addr, "INFO", "replication")
	if _, port, _ := net.SplitHostPort(link.ln.Addr().String()); err != nil || !strings.Contains(info, "master_port:"+port+"\r\n") {
		t.Fatalf("the replica does not replicate through the test's link (%v):\n%s", err, info)
	}
	link.Cut()
	time.Sleep(1500 * time.Millisecond) // the replica falls behind
	set.Master.Kill()
	link.Restore()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	waitFor(t, 25*time.Second, "the Sentinels to promote the replica", func() bool {
		a, err := set.MasterAddr(ctx)
		return err == nil && a == set.Replica.Addr
	})
	// The old master comes back (empty: no AOF here) as a replica of
	// the new one, as an operator brings it back: with min_replicas 1
	// stores are acknowledged again once it has caught up. (Started as
	// a master, it was one for a moment, to which a Sentinel that took
	// the loaded new master for down could fail over before learning
	// its priority of 0: the empty server promoted, every message
	// gone, whatever deferpush does.)
	set.Master.StartReplicaOf(t, set.Replica.Addr)
	defer func() {
		if t.Failed() {
			for _, a := range []string{set.Master.Addr, set.Replica.Addr} {
				info, err := harness.RedisDo(context.Background(), a, "INFO", "replication")
				t.Logf("%s: %v\n%s", a, err, info)
			}
		}
	}()
	waitFor(t, 15*time.Second, "stores to be acknowledged again after the failover", func() bool {
		mu.Lock()
		before := len(acked)
		mu.Unlock()
		time.Sleep(300 * time.Millisecond)
		mu.Lock()
		defer mu.Unlock()
		return len(acked) > before
	})
	stop.Store(true)
	wg.Wait()

	// What was kept is read through the Sentinels, from whichever server
	// is master now: once the old master is back, the Sentinels may fail
	// over to it again, and the promoted replica, a replica once more,
	// refuses the store's writes (the library's load: READONLY).
	st, err := store.New(store.Config{URL: set.URL()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	present := map[string]bool{}
	for i := range 20 {
		aor := plugin.MustParseAOR(fmt.Sprintf("sip:fail%d@example.com", i))
		var page plugin.Page
		waitFor(t, 15*time.Second, "the list of "+aor.String()+" from the master", func() bool {
			page, err = st.List(ctx, aor, plugin.ListQuery{})
			return err == nil
		})
		for _, m := range page.Messages {
			present[m.CallID] = true
		}
	}
	res := sentinelResult{acked: len(acked), refused: int(refused.Load())}
	for id := range acked {
		if !present[id] {
			res.lost++
		}
	}
	return res
}
