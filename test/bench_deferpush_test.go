package test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deferpush/deferpush/adapters/imclient"
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
// SIP ingress over TCP), and the shipped opensips.cfg (the message hook).
const (
	systemDeferpush          = "deferpush"
	systemDeferpushViaSIP    = "deferpush (store via SIP)"
	systemDeferpushOpenSIPS  = "deferpush (OpenSIPS)"
	profileDeferpushViaSIP   = "deferpush-viasip"
	profileDeferpushOpenSIPS = "deferpush-opensips"
)

// deferpushSide is one deferpush row: which proxy is in front, and for
// Kamailio whether the cfg runs with STORE_VIA_SIP.
type deferpushSide struct {
	proxy  string
	viaSIP bool
}

// shippedOpenSIPSCfg is the OpenSIPS routing script operators deploy.
const shippedOpenSIPSCfg = "../adapters/opensips/opensips.cfg"

// runDeferpushSide measures deferpush at M messages per user, on the same
// workload as runMsilo: the real binary on a harness redis-server, the
// proxy with its shipped config, SIPp sending the MESSAGEs through the
// proxy, then U reference clients registering through it and confirming
// every MSRP SEND. ok is false when the side cannot run.
func runDeferpushSide(b *testing.B, p benchParams, m int, side deferpushSide) (row benchRow, ok bool) {
	b.Helper()
	row = benchRow{System: systemDeferpush, Users: p.Users, M: m}
	profName := "deferpush"
	switch {
	case side.proxy == proxyOpenSIPS:
		row.System, profName = systemDeferpushOpenSIPS, profileDeferpushOpenSIPS
	case side.viaSIP:
		row.System, profName = systemDeferpushViaSIP, profileDeferpushViaSIP
	}
	if why := deferpushSideMissing(); why != "" {
		row.Err = why
		return row, false
	}
	r := harness.Redis(b)
	const token = "bench-hooks-token-0123456789"
	sipPort, internalPort := harness.FreePort(b), harness.FreePort(b)
	for internalPort == sipPort {
		internalPort = harness.FreePort(b)
	}
	dp := startDeferpush(b, []string{"DEFERPUSH_HOOKS_TOKEN=" + token},
		"--redis", r.URL(), "--log-level", "info",
		"--outbound-proxy", fmt.Sprintf("sip:127.0.0.1:%d;transport=tcp", internalPort))
	defines := map[string]string{
		"INTERNAL_PORT": strconv.Itoa(internalPort),
		"DOMAIN":        strconv.Quote(benchDomain),
		"DP_ADDR":       `"127.0.0.1"`,
		"DP_SIP":        strconv.Quote("sip:" + dp.SIPAddr + ";transport=tcp"),
		"DP_HOOKS":      strconv.Quote("http://" + dp.HooksAddr),
		"DP_TOKEN":      strconv.Quote(token),
	}
	var k benchProxy
	if side.proxy == proxyOpenSIPS {
		o := harness.OpenSIPS(b, harness.OpenSIPSConfig{
			ConfigFile: shippedOpenSIPSCfg,
			SIPPort:    sipPort,
			Defines:    defines,
			// The same shared memory as the msilo side.
			ExtraArgs: []string{"-m", "1024"},
		})
		k = benchProxy{Proc: o.Proc, SIPAddr: o.SIPAddr}
	} else {
		if side.viaSIP {
			defines["STORE_VIA_SIP"] = "1"
		}
		kp := harness.Kamailio(b, harness.KamailioConfig{
			ConfigFile: shippedKamailioCfg,
			SIPPort:    sipPort,
			Defines:    defines,
			// The same shared memory as the msilo side: the harness's 64
			// MB runs out of transactions ("out of mem" in tm) with 200
			// users.
			ExtraArgs: []string{"-m", "1024"},
		})
		k = benchProxy{Proc: kp.Proc, SIPAddr: kp.SIPAddr}
	}
	st, err := store.New(store.Config{URL: r.URL()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	redisPID, dpPID := r.Proc().PID(), dp.cmd.Process.Pid
	server := func() float64 {
		return processCPUSeconds(dpPID) + processCPUSeconds(redisPID) + groupCPUSeconds(k.PID())
	}

	// The clients exist before the clock starts, as the SIPp UAS of the
	// msilo side does; they register only in the delivery phase.
	clients := make([]*imclient.Client, p.Users)
	for i := range clients {
		// imclient takes a free TCP port and the same UDP port, which
		// another process may hold: try again on another.
		var c *imclient.Client
		for try := 0; ; try++ {
			c, err = imclient.New(imclient.Config{AOR: "sip:" + benchUser(i) + "@" + benchDomain, Proxy: k.SIPAddr,
				Logger: slog.New(slog.DiscardHandler)})
			if err == nil {
				break
			}
			if try == 10 {
				b.Fatal(err)
			}
		}
		b.Cleanup(c.Close)
		clients[i] = c
	}

	dir := b.TempDir()
	users := writeUsersCSV(b, dir, p.Users)
	total := p.Users * m
	mem0 := redisUsedMemory(b, r.Addr)
	pids := append([]int{dpPID, redisPID}, groupPIDs(k.PID())...)
	prof := startProfile(b, p.OutDir, fmt.Sprintf("%s-M%d-store", profName, m), pids)
	cpu0 := server()
	row.StoreTime, row.Err = sippStore(b, p, k.SIPAddr, users, dir, total)
	row.CPUStore = server() - cpu0
	prof.stop(b)
	ctx := context.Background()
	if tot, err := st.Totals(ctx); err != nil {
		row.Err = join(row.Err, err.Error())
	} else {
		row.Stored = int(tot.Stored)
	}
	if row.Stored != total {
		row.Err = join(row.Err, fmt.Sprintf("%d of %d stored", row.Stored, total))
	}
	row.StoreRate = rate(row.Stored, row.StoreTime)
	if row.Stored > 0 {
		row.BytesPerMsg = float64(redisUsedMemory(b, r.Addr)-mem0) / float64(row.Stored)
	}

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
	prof = startProfile(b, p.OutDir, fmt.Sprintf("%s-M%d-deliver", profName, m), pids)
	cpu1 := server()
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
	row.CPUDeliver = server() - cpu1
	prof.stop(b)
	if len(errs) > 0 {
		row.Err = join(row.Err, fmt.Sprintf("%d users failed, first: %s", len(errs), errs[0]))
	}
	row.fillDelivery(regs, del, row.Stored)
	// Idle servers of this M stay out of the next M's way.
	k.Stop()
	_ = dp.Stop(b)
	r.Proc().Stop()
	return row, true
}

// redisUsedMemory is INFO memory's used_memory.
func redisUsedMemory(b *testing.B, addr string) int64 {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	info, err := harness.RedisDo(ctx, addr, "INFO", "memory")
	if err != nil {
		b.Fatal(err)
	}
	for l := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "used_memory:"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	b.Fatalf("INFO memory without used_memory:\n%s", info)
	return 0
}
