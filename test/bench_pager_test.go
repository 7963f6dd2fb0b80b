package test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/deferpush/deferpush/plugin"
)

// The rows of deferpush with pager_below: small mailboxes go by SIP
// MESSAGE (pager mode, issue 15), as msilo delivers. The first runs the
// shipped kamailio.cfg as shipped (the hooks: each REGISTER posts the
// registered hook from an async worker), the second its Redis-direct
// mode (dp_store; dp_register answers the first page, which Kamailio
// sends itself, dp_page the next ones).
const (
	systemDeferpushPager      = "deferpush (pager_below)"
	systemDeferpushPagerRedis = "deferpush (pager_below, Redis direct)"
)

// pagerMode is the shipped kamailio.cfg as shipped (the message hook),
// or in its Redis-direct mode (direct), deferpush's policy with delivery
// auto and pager_below m.
func pagerMode(m int, direct bool) deferpushMode {
	mode := deferpushMode{System: systemDeferpushPager, Profile: "deferpush-pager"}
	if direct {
		mode = redisDirectMode()
		mode.System, mode.Profile = systemDeferpushPagerRedis, "deferpush-pager-redis"
	}
	mode.Policy = func(pol *plugin.Policy) { pol.Delivery, pol.PagerBelow = plugin.DeliveryAuto, m }
	return mode
}

// runDeferpushPager measures deferpush with pager_below = M on the
// workload of runMsilo, with msilo's own client: the shipped
// kamailio.cfg and the real binary on redis-server store the MESSAGEs
// SIPp sends (the deferpush row's store phase); then every user registers
// with SIPp, its Contact the SIPp UAS that answers 200 to each MESSAGE
// (sippDeliveryPhase, as msilo's row), and deferpush sends each user's
// messages as SIP MESSAGEs through Kamailio — no INVITE, no MSRP. Only
// the client differs from the deferpush row: MSRP needs the reference
// client, pager mode does not. direct runs Kamailio's Redis-direct mode
// (its store phase is the Redis-direct row's).
func runDeferpushPager(b *testing.B, p benchParams, m int, direct bool) benchRow {
	b.Helper()
	row := benchRow{Users: p.Users, M: m}
	mode := pagerMode(m, direct)
	s := startDeferpushStack(b, p, deferpushSide{proxy: proxyKamailio, mode: mode})
	defer s.stop(b)
	dir := b.TempDir()
	users := writeUsersCSV(b, dir, p.Users)
	s.storePhase(b, p, &row, users, dir, fmt.Sprintf("%s-M%d-store", mode.Profile, m))

	// A message leaves Redis with its ack, after the client's 200: that
	// work is part of delivering, as msilo's deletions are.
	ctx := context.Background()
	acked := func() bool {
		n, err := s.st.Totals(ctx)
		return err == nil && n.Pushed >= int64(row.Stored)
	}
	sippDeliveryPhase(b, p, &row, s.proxy.SIPAddr, users, dir, cpuMeter{servers: s.servers()}, acked,
		fmt.Sprintf("%s-M%d-deliver", mode.Profile, m))
	if n, err := s.st.Totals(ctx); err == nil && n.Pushed < int64(row.Stored) {
		row.Note = join(row.Note, fmt.Sprintf("%d of %d messages acked in Redis 5 s after the last confirmation", n.Pushed, row.Stored))
	}
	row.Err = join(row.Err, checkServersPinned(p.CPUs, s.servers()...))
	return row
}

// pagerGoal is issue 15's goal for the pager_below rows: the better of
// the two, each shown.
func (r *benchReport) pagerGoal() goal {
	g := goal{Text: "delivery rate with pager_below ≥ msilo's at M=1 (issue 15)"}
	ref, ok := r.med(systemMsilo, 1, deliverRate)
	if !ok || ref == 0 {
		g.Detail = "no msilo row at M=1"
		return g
	}
	var parts []string
	for _, sys := range []struct{ name, label string }{{systemDeferpushPager, "hooks"}, {systemDeferpushPagerRedis, "Redis direct"}} {
		rate, ok := r.med(sys.name, 1, deliverRate)
		if !ok {
			continue
		}
		g.Measured, g.Met = true, g.Met || rate >= ref
		parts = append(parts, fmt.Sprintf("%s: %.2f× (%s vs %s msgs/s)", sys.label, rate/ref, num(rate, 0), num(ref, 0)))
	}
	if !g.Measured {
		g.Detail = "no pager_below row at M=1"
		return g
	}
	g.Detail = strings.Join(parts, "; ")
	return g
}
