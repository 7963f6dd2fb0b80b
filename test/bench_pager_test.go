package test

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/store"
	"github.com/deferpush/deferpush/test/harness"
)

// systemDeferpushPager is the row of deferpush with pager_below: small
// mailboxes go by SIP MESSAGE (pager mode, issue 15), as msilo delivers.
const systemDeferpushPager = "deferpush (pager_below)"

// runDeferpushPager measures deferpush with pager_below = M on the
// workload of runMsilo, with msilo's own client: the shipped
// kamailio.cfg and the real binary on redis-server store the MESSAGEs
// SIPp sends; then every user registers with SIPp, its Contact the SIPp
// UAS that answers 200 to each MESSAGE (test/testdata/bench/message-uas.xml),
// and deferpush sends each user's messages as SIP MESSAGEs through
// Kamailio — no INVITE, no MSRP. Only the client differs from the
// deferpush row: MSRP needs the reference client, pager mode does not.
func runDeferpushPager(b *testing.B, p benchParams, m int) (row benchRow, ok bool) {
	b.Helper()
	row = benchRow{System: systemDeferpushPager, Users: p.Users, M: m}
	if why := deferpushSideMissing(); why != "" {
		row.Err = why
		return row, false
	}
	r := harness.Redis(b)
	st, err := store.New(store.Config{URL: r.URL()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	ctx := context.Background()
	if _, _, err := st.UpdatePolicy(ctx, "bench", func(pol *plugin.Policy) error {
		pol.Delivery, pol.PagerBelow = plugin.DeliveryAuto, m
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	const token = "bench-hooks-token-0123456789"
	sipPort, internalPort := harness.FreePort(b), harness.FreePort(b)
	for internalPort == sipPort {
		internalPort = harness.FreePort(b)
	}
	dp := startDeferpush(b, []string{"DEFERPUSH_HOOKS_TOKEN=" + token},
		"--redis", r.URL(), "--log-level", "info",
		"--outbound-proxy", fmt.Sprintf("sip:127.0.0.1:%d;transport=tcp", internalPort))
	k := harness.Kamailio(b, harness.KamailioConfig{
		ConfigFile: shippedKamailioCfg,
		SIPPort:    sipPort,
		Defines: map[string]string{
			"INTERNAL_PORT": strconv.Itoa(internalPort),
			"DOMAIN":        strconv.Quote(benchDomain),
			"DP_ADDR":       `"127.0.0.1"`,
			"DP_SIP":        strconv.Quote("sip:" + dp.SIPAddr + ";transport=tcp"),
			"DP_HOOKS":      strconv.Quote("http://" + dp.HooksAddr),
			"DP_TOKEN":      strconv.Quote(token),
		},
		ExtraArgs: []string{"-m", "1024"},
	})
	redisPID, dpPID := r.Proc().PID(), dp.cmd.Process.Pid
	server := func() float64 {
		return processCPUSeconds(dpPID) + processCPUSeconds(redisPID) + groupCPUSeconds(k.PID())
	}

	dir := b.TempDir()
	users := writeUsersCSV(b, dir, p.Users)
	total := p.Users * m
	mem0 := redisUsedMemory(b, r.Addr)
	cpu0 := server()
	row.StoreTime, row.Err = sippStore(b, p, k.SIPAddr, users, dir, total)
	row.CPUStore = server() - cpu0
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

	uasLog := filepath.Join(dir, "uas.log")
	uas, uasPort := harness.StartSIPp(b, harness.SIPpConfig{
		Scenario: "testdata/bench/message-uas.xml",
		Args:     []string{"-trace_logs", "-log_file", uasLog, "-buff_size", "4194304"},
		Timeout:  10 * time.Minute,
	})
	waitUDPBound(b, uas, uasPort)
	regLog := filepath.Join(dir, "reg.log")
	prof := startProfile(b, p.OutDir, fmt.Sprintf("deferpush-pager-M%d-deliver", m), append([]int{dpPID, redisPID}, groupPIDs(k.PID())...))
	cpu1 := server()
	res := harness.RunSIPp(b, harness.SIPpConfig{
		Scenario: "testdata/bench/register-uac.xml",
		Remote:   k.SIPAddr,
		Args: []string{"-inf", users, "-m", strconv.Itoa(p.Users), "-r", "100000", "-l", strconv.Itoa(p.Users),
			"-key", "uas_port", strconv.Itoa(uasPort), "-trace_logs", "-log_file", regLog},
		Timeout: p.Phase,
	})
	if res.Err != nil {
		row.Err = join(row.Err, "REGISTER: "+firstLine(res.Log))
	}
	want := row.Stored
	deadline := time.Now().Add(p.Phase)
	var del deliveries
	for {
		del = parseDeliveries(uasLog)
		if del.distinct() >= want || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	// A message leaves Redis with its ack, after the client's 200: that
	// work is part of delivering, as msilo's deletions are (bounded).
	for range 50 {
		if n, err := st.Totals(ctx); err == nil && n.Pushed >= int64(row.Stored) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	row.CPUDeliver = server() - cpu1
	prof.stop(b)
	if n, err := st.Totals(ctx); err == nil && n.Pushed < int64(row.Stored) {
		row.Note = fmt.Sprintf("%d of %d messages acked in Redis 5 s after the last confirmation", n.Pushed, row.Stored)
	}
	row.fillDelivery(parseRegisters(regLog), del, want)

	uas.Stop()
	k.Stop()
	_ = dp.Stop(b)
	r.Proc().Stop()
	return row, true
}

// pagerGoal is issue 15's goal for the pager_below row.
func (r *benchReport) pagerGoal() string {
	ms_, ok1 := r.row(systemMsilo, 1)
	dp, ok2 := r.row(systemDeferpushPager, 1)
	if !ok1 || !ok2 {
		return "delivery rate with pager_below ≥ msilo's at M=1: not measured in this run"
	}
	verdict := "**missed**"
	if dp.DeliverRate >= ms_.DeliverRate {
		verdict = "**met**"
	}
	return fmt.Sprintf("delivery rate with pager_below ≥ msilo's at M=1: %s (%.2f×: %.0f vs %.0f msgs/s)",
		verdict, dp.DeliverRate/ms_.DeliverRate, dp.DeliverRate, ms_.DeliverRate)
}
