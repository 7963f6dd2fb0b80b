package test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/test/harness"
)

// loadParams sizes a load run.
type loadParams struct {
	Users, PerUser int
	// RegRate is registrations per second, sent steadily by SIPp.
	RegRate int
	// Deadline bounds the wait for every message after the last
	// registration.
	Deadline time.Duration
}

// TestLoad is the quick load run of `make test`: users register through
// Kamailio at a steady rate while deferpush pushes their messages.
func TestLoad(t *testing.T) {
	runLoad(t, loadParams{Users: 500, PerUser: 10, RegRate: 250, Deadline: 2 * time.Minute})
}

// TestSoakLoad is the full load: 10,000 users, 100,000 messages.
// It runs under `make soak` (DEFERPUSH_SOAK_ROUNDS set).
func TestSoakLoad(t *testing.T) {
	if os.Getenv("DEFERPUSH_SOAK_ROUNDS") == "" {
		t.Skip("soak: set DEFERPUSH_SOAK_ROUNDS (make soak) for the 10,000-user run; TestLoad is its quick form")
	}
	runLoad(t, loadParams{Users: 10000, PerUser: 10, RegRate: 500, Deadline: 10 * time.Minute})
}

func loadUser(i int) string { return fmt.Sprintf("load%05d", i) }

func runLoad(t *testing.T, p loadParams) {
	stack := startKamailioStack(t, stackOptions{
		redis:  []harness.RedisOption{harness.WithAOF()},
		dpArgs: []string{"--log-level", "info"},
		// usrloc and tm for thousands of users need more than the
		// harness's 64 MB of shared memory.
		kamailioArgs: []string{"-m", "1024"},
	})
	r, dp, k, st := stack.redis, stack.dp, stack.k, stack.st
	peer := startLoadPeer(t)

	dir := t.TempDir()
	var csv bytes.Buffer
	csv.WriteString("SEQUENTIAL\n")
	for i := range p.Users {
		fmt.Fprintf(&csv, "%s;%s;\n", loadUser(i), domain)
	}
	users := filepath.Join(dir, "users.csv")
	if err := os.WriteFile(users, csv.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}

	// Memory of deferpush, sampled through the whole run.
	var peakRSS int64
	stopSampling := make(chan struct{})
	var sampled sync.WaitGroup
	sampled.Go(func() {
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			if rss := processRSS(dp.cmd.Process.Pid); rss > peakRSS {
				peakRSS = rss
			}
			select {
			case <-stopSampling:
				return
			case <-tick.C:
			}
		}
	})
	defer func() { close(stopSampling); sampled.Wait() }()

	// Store: every user offline gets PerUser messages through Kamailio.
	total := p.Users * p.PerUser
	start := time.Now()
	res := harness.RunSIPp(t, harness.SIPpConfig{
		Scenario: "testdata/bench/store-uac.xml",
		Remote:   k.SIPAddr,
		Args:     []string{"-inf", users, "-m", strconv.Itoa(total), "-r", "100000", "-l", "200", "-t", "u1"},
		Timeout:  p.Deadline,
	})
	if res.Err != nil {
		t.Fatalf("storing %d messages through Kamailio: %v", total, res.Err)
	}
	storeTime := time.Since(start)
	ctx := context.Background()
	tot, err := st.Totals(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if int(tot.Stored) != total {
		t.Fatalf("stored %d messages, SIPp had %d accepted", tot.Stored, total)
	}

	// Registrations at a steady rate, each one a push.
	start = time.Now()
	res = harness.RunSIPp(t, harness.SIPpConfig{
		Scenario: "testdata/bench/register-uac.xml",
		Remote:   k.SIPAddr,
		Args: []string{"-inf", users, "-m", strconv.Itoa(p.Users), "-r", strconv.Itoa(p.RegRate),
			"-key", "uas_port", strconv.Itoa(peer.port), "-t", "u1"},
		Timeout: p.Deadline,
	})
	if res.Err != nil {
		t.Fatalf("registering %d users: %v", p.Users, res.Err)
	}
	regTime := time.Since(start)
	wctx, cancel := context.WithTimeout(ctx, p.Deadline)
	got, werr := peer.wait(wctx, total)
	cancel()
	deliverTime := time.Since(start)

	// The peer counts a message before its 200 is written: the last acks
	// land in Redis a little after it counted everything. Wait for them
	// (every message stored has its fate recorded: acked, expired or
	// dead-lettered) before accounting.
	if werr == nil {
		waitFor(t, 30*time.Second, "the last acks to land", func() bool {
			tot, err = st.Totals(ctx)
			return err == nil && tot.Pushed+tot.Expired+tot.DeadLettered >= tot.Stored
		})
	}
	// Every message is accounted for: delivered, still stored, or expired.
	tot, err = st.Totals(ctx)
	if err != nil {
		t.Fatal(err)
	}
	left := 0
	for i := range p.Users {
		c, err := st.Count(ctx, plugin.MustParseAOR("sip:"+loadUser(i)+"@"+domain))
		if err != nil {
			t.Fatal(err)
		}
		left += c.Pending + c.InFlight + c.Dead
	}
	unique, dups, invites := peer.counts()
	redisMem := redisMemory(t, r.Addr)
	t.Logf("load: %d users x %d messages; stored %d in %v (%.0f msg/s); %d registrations in %v (%.0f/s); "+
		"delivered %d unique (%d duplicates) in %d sessions within %v of the first REGISTER (%.0f msg/s); "+
		"still stored %d, expired %d; deferpush peak RSS %.1f MiB; redis used_memory %.1f MiB",
		p.Users, p.PerUser, tot.Stored, storeTime.Round(time.Millisecond), float64(total)/storeTime.Seconds(),
		p.Users, regTime.Round(time.Millisecond), float64(p.Users)/regTime.Seconds(),
		unique, dups, invites, deliverTime.Round(time.Millisecond), float64(unique)/deliverTime.Seconds(),
		left, tot.Expired, float64(peakRSS)/(1<<20), float64(redisMem)/(1<<20))
	if werr != nil {
		t.Errorf("only %d of %d messages delivered within %v", got, total, p.Deadline)
	}
	if int(tot.Stored) != unique+left+int(tot.Expired) {
		t.Errorf("accounting: stored %d != delivered %d + still stored %d + expired %d", tot.Stored, unique, left, tot.Expired)
	}
	if dups != 0 {
		t.Errorf("%d duplicates without any fault injected", dups)
	}
	if werr == nil && (left != 0 || int(tot.Pushed) != unique) {
		t.Errorf("after every delivery: %d still stored, %d acked for %d delivered; want none stored and every delivery acked", left, tot.Pushed, unique)
	}
	// Bounded memory: the process holds no per-message state beyond the
	// pushes in flight.
	if limit := int64(512 << 20); peakRSS > limit {
		t.Errorf("deferpush peak RSS %d MiB, want under %d MiB", peakRSS>>20, limit>>20)
	}
	if strings.Contains(dp.Log(), `"level":"ERROR"`) {
		t.Errorf("deferpush logged errors under load:\n%s", tail(grepLines(dp.Log(), `"level":"ERROR"`), 4096))
	}
}

// processRSS is VmRSS of pid in bytes, 0 when unknown.
func processRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func redisMemory(t testing.TB, addr string) int64 {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	info, err := harness.RedisDo(ctx, addr, "INFO", "memory")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "used_memory:"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return 0
}

func grepLines(s, sub string) string {
	var out []string
	for line := range strings.SplitSeq(s, "\n") {
		if strings.Contains(line, sub) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}
