package test

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deferpush/deferpush/adapters/imclient"
	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/store"
	"github.com/deferpush/deferpush/test/harness"
)

// shippedKamailioCfg is the routing script operators deploy.
const shippedKamailioCfg = "../adapters/kamailio/kamailio.cfg"

// deferpushSideMissing says why the deferpush side cannot run, or "".
// BENCH_DEFERPUSH=1 forces it, =0 skips it; by default it runs when the
// shipped Kamailio config is committed.
func deferpushSideMissing() string {
	switch os.Getenv("BENCH_DEFERPUSH") {
	case "1":
		return ""
	case "0":
		return "BENCH_DEFERPUSH=0"
	}
	if _, err := os.Stat(shippedKamailioCfg); err != nil {
		return "adapters/kamailio/kamailio.cfg is not there yet"
	}
	if err := exec.Command("git", "ls-files", "--error-unmatch", shippedKamailioCfg).Run(); err != nil {
		return "adapters/kamailio/kamailio.cfg is not committed yet"
	}
	return ""
}

// The deferpush rows of the report: the shipped kamailio.cfg as is (the
// message hook), with -A STORE_VIA_SIP=1 (offline MESSAGEs relayed to the
// SIP ingress over TCP), in its Redis-direct mode (bench_redisdirect_test.go),
// and the shipped opensips.cfg (the message hook).
const (
	systemDeferpush          = "deferpush"
	systemDeferpushViaSIP    = "deferpush (store via SIP)"
	systemDeferpushRedis     = "deferpush (Redis direct)"
	systemDeferpushOpenSIPS  = "deferpush (OpenSIPS)"
	profileDeferpushViaSIP   = "deferpush-viasip"
	profileDeferpushRedis    = "deferpush-redis"
	profileDeferpushOpenSIPS = "deferpush-opensips"
)

// deferpushMode is a way a shipped proxy script hands offline messages
// and registrations to deferpush.
type deferpushMode struct {
	// System is the row's name, Profile the stem of its perf profiles.
	System, Profile string
	// Defines are the script's defines that select the mode, beside the
	// addresses every mode gets (ports, DP_* of deferpush); server is the
	// run's redis-server as ndb_redis's server parameter names it
	// (ndbRedisServer). Nil: none.
	Defines func(server string) map[string]string
	// DeferpushArgs are further arguments of deferpush serve.
	DeferpushArgs []string
	// Policy, when set, changes the operator policy before deferpush
	// starts.
	Policy func(*plugin.Policy)
	// Missing says why the mode cannot be measured ("not built yet");
	// its rows then say so instead of a figure.
	Missing string
}

// kamailioModes are the shipped kamailio.cfg's modes, in the report's
// order.
func kamailioModes() []deferpushMode {
	return []deferpushMode{
		{System: systemDeferpush, Profile: "deferpush"},
		{System: systemDeferpushViaSIP, Profile: profileDeferpushViaSIP,
			Defines: func(string) map[string]string { return map[string]string{"STORE_VIA_SIP": "1"} }},
		redisDirectMode(),
	}
}

// openSIPSHookMode is the shipped opensips.cfg (the message hook).
func openSIPSHookMode() deferpushMode {
	return deferpushMode{System: systemDeferpushOpenSIPS, Profile: profileDeferpushOpenSIPS}
}

// deferpushSide is one deferpush row: which proxy is in front and in
// which mode its shipped script runs.
type deferpushSide struct {
	proxy string
	mode  deferpushMode
}

// shippedOpenSIPSCfg is the OpenSIPS routing script operators deploy.
const shippedOpenSIPSCfg = "../adapters/opensips/opensips.cfg"

// deferpushStack is what a deferpush row runs: redis-server, deferpush
// and the proxy with its shipped script, each pinned to the server CPUs.
type deferpushStack struct {
	redis *harness.RedisServer
	dp    *deferpushProc
	proxy benchProxy
	st    *store.Redis
}

// servers are the root processes of the server side.
func (s *deferpushStack) servers() []int {
	return []int{s.dp.cmd.Process.Pid, s.redis.Proc().PID(), s.proxy.PID()}
}

// stop stops the servers and closes the store client: idle servers, and
// the connections and ports of one row, stay out of the next row's way.
func (s *deferpushStack) stop(b *testing.B) {
	s.proxy.Stop()
	_ = s.dp.Stop(b)
	s.redis.Proc().Stop()
	_ = s.st.Close()
}

// startDeferpushStack starts redis-server, deferpush and the proxy with
// its shipped script in side's mode, Workers SIP workers.
func startDeferpushStack(b *testing.B, p benchParams, side deferpushSide) *deferpushStack {
	b.Helper()
	s := &deferpushStack{redis: benchRedis(b, p)}
	var err error
	if s.st, err = store.New(store.Config{URL: s.redis.URL()}); err != nil {
		b.Fatal(err)
	}
	if side.mode.Policy != nil {
		if _, _, err := s.st.UpdatePolicy(context.Background(), "bench", func(pol *plugin.Policy) error {
			side.mode.Policy(pol)
			return nil
		}); err != nil {
			b.Fatal(err)
		}
	}
	const token = "bench-hooks-token-0123456789"
	sipPort, internalPort := harness.FreePort(b), harness.FreePort(b)
	for internalPort == sipPort {
		internalPort = harness.FreePort(b)
	}
	// The SIP listener takes a TCP and a UDP port of the same number: one
	// from harness.FreePort, below the ephemeral range where the clients'
	// sockets are, rather than :0.
	dpSIPPort := harness.FreePort(b)
	for dpSIPPort == sipPort || dpSIPPort == internalPort {
		dpSIPPort = harness.FreePort(b)
	}
	args := append([]string{"--redis", benchRedisURL(s.redis), "--log-level", "info",
		"--sip-listen", fmt.Sprintf("127.0.0.1:%d", dpSIPPort),
		"--outbound-proxy", fmt.Sprintf("sip:127.0.0.1:%d;transport=tcp", internalPort)}, side.mode.DeferpushArgs...)
	s.dp = startDeferpush(b, []string{"DEFERPUSH_HOOKS_TOKEN=" + token}, args...)
	pinServer(b, p.CPUs, s.dp.cmd.Process.Pid)
	defines := map[string]string{
		"INTERNAL_PORT": strconv.Itoa(internalPort),
		"DOMAIN":        strconv.Quote(benchDomain),
		"DP_ADDR":       `"127.0.0.1"`,
		"DP_SIP":        strconv.Quote("sip:" + s.dp.SIPAddr + ";transport=tcp"),
		"DP_HOOKS":      strconv.Quote("http://" + s.dp.HooksAddr),
		"DP_TOKEN":      strconv.Quote(token),
	}
	if side.mode.Defines != nil {
		maps.Copy(defines, side.mode.Defines(ndbRedisServer(s.redis)))
	}
	workers := strconv.Itoa(p.Workers)
	if side.proxy == proxyOpenSIPS {
		o := harness.OpenSIPS(b, harness.OpenSIPSConfig{
			ConfigFile: openSIPSWithWorkers(b, p.Workers),
			SIPPort:    sipPort,
			Defines:    defines,
			// The same shared memory as the msilo side.
			ExtraArgs: []string{"-m", "1024"},
		})
		s.proxy = benchProxy{Proc: o.Proc, SIPAddr: o.SIPAddr}
	} else {
		kp := harness.Kamailio(b, harness.KamailioConfig{
			ConfigFile: shippedKamailioCfg,
			SIPPort:    sipPort,
			Defines:    defines,
			// The same shared memory as the msilo side: the harness's 64
			// MB runs out of transactions ("out of mem" in tm) with 200
			// users. -n and -N override the script's children and
			// tcp_children (4 each as shipped).
			ExtraArgs: []string{"-m", "1024", "-n", workers, "-N", workers},
		})
		s.proxy = benchProxy{Proc: kp.Proc, SIPAddr: kp.SIPAddr}
	}
	return s
}

// openSIPSWithWorkers is the shipped opensips.cfg with its worker counts
// (udp_workers=4, tcp_workers=4) set to workers by two lines appended to a
// copy: OpenSIPS takes the last assignment, and its script overrides the
// command line's -n.
func openSIPSWithWorkers(b *testing.B, workers int) string {
	b.Helper()
	src, err := os.ReadFile(shippedOpenSIPSCfg)
	if err != nil {
		b.Fatal(err)
	}
	src = fmt.Appendf(src, "\n# make bench: the same worker counts as every row\nudp_workers=%d\ntcp_workers=%d\n", workers, workers)
	path := filepath.Join(b.TempDir(), "opensips.cfg")
	if err := os.WriteFile(path, src, 0o644); err != nil {
		b.Fatal(err)
	}
	return path
}

// runDeferpushSide measures deferpush at M messages per user, on the same
// workload as runMsilo: the real binary on a harness redis-server, the
// proxy with its shipped script in side's mode, SIPp sending the MESSAGEs
// through the proxy, then U reference clients registering through it
// over UDP, as msilo's, and confirming every MSRP SEND.
func runDeferpushSide(b *testing.B, p benchParams, m int, side deferpushSide) benchRow {
	b.Helper()
	row := benchRow{Users: p.Users, M: m}
	s := startDeferpushStack(b, p, side)
	defer s.stop(b)
	k := s.proxy

	// The clients exist before the clock starts, as the SIPp UAS of the
	// msilo side does; they register only in the delivery phase. They
	// are closed when the row ends: 200 of them per row would otherwise
	// hold their ports and goroutines until the whole run ends.
	clients := make([]*imclient.Client, p.Users)
	defer func() {
		for _, c := range clients {
			if c != nil {
				c.Close()
			}
		}
	}()
	for i := range clients {
		// imclient takes a free TCP port and the same UDP port, which
		// another process may hold: try again on another.
		var c *imclient.Client
		var err error
		for try := 0; ; try++ {
			c, err = imclient.New(imclient.Config{AOR: "sip:" + benchUser(i) + "@" + benchDomain, Proxy: k.SIPAddr,
				Transport: "udp", Logger: slog.New(slog.DiscardHandler)})
			if err == nil {
				break
			}
			if try == 10 {
				b.Fatal(err)
			}
		}
		clients[i] = c
	}

	dir := b.TempDir()
	users := writeUsersCSV(b, dir, p.Users)
	s.storePhase(b, p, &row, users, dir, fmt.Sprintf("%s-M%d-store", side.mode.Profile, m))
	servers := s.servers()
	meter := cpuMeter{servers: servers}
	ctx := context.Background()

	// Delivery: every client registers at once and waits for its M
	// messages; the time its wait ends is its last confirmation.
	regs := make(map[string]time.Time, p.Users)
	del := deliveries{seen: map[string]bool{}, lastByUser: map[string]time.Time{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	var errs []string
	dctx, cancel := context.WithTimeout(ctx, p.Phase)
	defer cancel()
	start := make(chan struct{})
	prof := startProfile(b, p.OutDir, fmt.Sprintf("%s-M%d-deliver", side.mode.Profile, m), procTree(servers...))
	r1 := meter.start()
	for i, c := range clients {
		user := benchUser(i)
		wg.Go(func() {
			<-start
			at := time.Now()
			code, err := c.Register(dctx, 3600)
			mu.Lock()
			regs[user] = at
			mu.Unlock()
			if err != nil || code != 200 {
				mu.Lock()
				errs = append(errs, fmt.Sprintf("REGISTER %s: %d %v", user, code, err))
				mu.Unlock()
				return
			}
			_, werr := c.Wait(dctx, func(s imclient.Stats) bool { return s.Received >= m })
			done := time.Now()
			got := c.Received()
			mu.Lock()
			defer mu.Unlock()
			for _, rc := range got {
				del.lines++
				if rc.Answered != 200 {
					continue
				}
				del.seen[rc.Decoded.CallID+"/"+user] = true
			}
			if werr == nil {
				del.lastByUser[user] = done
			} else {
				errs = append(errs, fmt.Sprintf("%s: %d of %d received", user, len(got), m))
			}
		})
	}
	close(start)
	wg.Wait()
	// The acks of the last confirmations and the BYEs are part of it.
	settleCPU(servers...)
	deliver := between(r1, meter.read())
	row.CPUDeliver, row.ClientCPUDeliver, row.ClientBusyDeliver = deliver.Server, deliver.Client, deliver.clientBusy(p.CPUs)
	prof.stop(b)
	if len(errs) > 0 {
		row.Err = join(row.Err, fmt.Sprintf("%d users failed, first: %s", len(errs), errs[0]))
	}
	row.fillDelivery(regs, del, row.Stored)
	row.Err = join(row.Err, checkServersPinned(p.CPUs, servers...))
	return row
}

// storePhase is the store phase of a deferpush row: SIPp sends U×M
// MESSAGEs through the proxy (sippStore) while no user is registered,
// and row gets the rate, the server CPU, the count the store holds, and
// the store's bytes per message beside a stored message's own size.
func (s *deferpushStack) storePhase(b *testing.B, p benchParams, row *benchRow, users, dir, profile string) {
	b.Helper()
	total := row.Users * row.M
	ctx := context.Background()
	used0 := redisDataMemory(b, s.redis.Addr)
	keys0, err := redisKeysMemory(ctx, s.redis.Addr)
	if err != nil {
		b.Fatal(err)
	}
	servers := s.servers()
	meter := cpuMeter{servers: servers}
	prof := startProfile(b, p.OutDir, profile, procTree(servers...))
	r0 := meter.start()
	sr := sippStore(b, p, s.proxy.SIPAddr, users, dir, total)
	row.StoreTime, row.Err = sr.Time, join(row.Err, sr.Err)
	settleCPU(servers...)
	store := between(r0, meter.read())
	row.CPUStore, row.ClientCPUStore, row.ClientBusyStore = store.Server, store.Client, store.clientBusy(p.CPUs)
	prof.stop(b)
	if tot, err := s.st.Totals(ctx); err != nil {
		row.Err = join(row.Err, err.Error())
	} else {
		row.Stored = int(tot.Stored)
	}
	if row.Stored != total {
		row.Err = join(row.Err, fmt.Sprintf("%d of %d stored, %d refused", row.Stored, total, sr.Refused))
	}
	row.StoreRate = rate(row.Stored, row.StoreTime)
	if row.Stored > 0 {
		row.UsedMemPerMsg = float64(redisDataMemory(b, s.redis.Addr)-used0) / float64(row.Stored)
		if keys1, err := redisKeysMemory(ctx, s.redis.Addr); err != nil {
			row.Err = join(row.Err, err.Error())
		} else {
			row.BytesPerMsg = float64(keys1-keys0) / float64(row.Stored)
		}
	}
	if row.MsgSize, err = storedMessageSize(ctx, s.st, row.Users); err != nil {
		row.Err = join(row.Err, err.Error())
	}
}

// storedMessageSize is the mean size of the first stored message of up to
// 20 users (plugin.Message.Size: the stored SIP MESSAGE's own bytes), the
// yardstick of the store's bytes per message.
func storedMessageSize(ctx context.Context, st *store.Redis, users int) (float64, error) {
	var sum, n int
	for i := range min(users, 20) {
		page, err := st.List(ctx, plugin.MustParseAOR("sip:"+benchUser(i)+"@"+benchDomain), plugin.ListQuery{Limit: 1})
		if err != nil {
			return 0, fmt.Errorf("stored message size: %w", err)
		}
		for _, m := range page.Messages {
			sum += m.Size()
			n++
		}
	}
	if n == 0 {
		return 0, fmt.Errorf("stored message size: no stored message found")
	}
	return float64(sum) / float64(n), nil
}

// redisKeysMemory is the memory of every key of the server's database 0,
// exactly: MEMORY USAGE key SAMPLES 0 (the key's name, its value and its
// entry in the keyspace) summed over a SCAN. It is the store's own
// footprint: INFO memory's used_memory also moves with the clients'
// buffers (16 KB or more per connection, and deferpush's pool grows under
// load), which INFO accounts for only a second or so later.
func redisKeysMemory(ctx context.Context, addr string) (int64, error) {
	var total int64
	cursor := "0"
	for {
		out, err := harness.RedisDo(ctx, addr, "SCAN", cursor, "COUNT", "1000")
		if err != nil {
			return 0, fmt.Errorf("redis SCAN: %w", err)
		}
		f := strings.Fields(out)
		if len(f) == 0 {
			return 0, fmt.Errorf("redis SCAN: reply %q", out)
		}
		cursor = f[0]
		for _, key := range f[1:] {
			v, err := harness.RedisDo(ctx, addr, "MEMORY", "USAGE", key, "SAMPLES", "0")
			if err != nil {
				return 0, fmt.Errorf("redis MEMORY USAGE %s: %w", key, err)
			}
			n, _ := strconv.ParseInt(v, 10, 64) // "" when the key went meanwhile
			total += n
		}
		if cursor == "0" {
			return total, nil
		}
	}
}

// redisDataMemory is what redis-server's memory holds for the data:
// INFO memory's used_memory less the clients' buffers and structures
// (mem_clients_normal, mem_clients_slaves) and the script caches
// (used_memory_scripts). Those grow with connections (deferpush's pool
// opens more under load) and scripts, not with mailboxes and messages.
func redisDataMemory(b *testing.B, addr string) int64 {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	info, err := harness.RedisDo(ctx, addr, "INFO", "memory")
	if err != nil {
		b.Fatal(err)
	}
	fields := map[string]int64{}
	for l := range strings.SplitSeq(info, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(l), ":"); ok {
			if n, err := strconv.ParseInt(v, 10, 64); err == nil {
				fields[k] = n
			}
		}
	}
	used, ok := fields["used_memory"]
	if !ok {
		b.Fatalf("INFO memory without used_memory:\n%s", info)
	}
	return used - fields["mem_clients_normal"] - fields["mem_clients_slaves"] - fields["used_memory_scripts"]
}
