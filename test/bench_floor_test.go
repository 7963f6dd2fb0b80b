package test

import (
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/store"
	"github.com/deferpush/deferpush/test/harness"
)

// The floors of the store: what Kamailio spends on a MESSAGE to an
// offline user before any store (a transaction and its 202), that plus
// the least a store in another process adds (one RPUSH through ndb_redis,
// in the SIP worker), and that route storing with deferpush's dp_store
// instead. Beside msilo's row and the REDIS_DIRECT row they show how much
// of a stored message's CPU no store design can take away, what one round
// trip to Redis costs on this machine, and what dp_store and the shipped
// route script add to it.
const (
	systemFloor202     = "Kamailio, 202 without storing"
	systemFloorRPUSH   = "Kamailio, 202 after one RPUSH"
	systemFloorDPStore = "Kamailio, 202 after dp_store"
)

// What a floor's route does before its 202.
type floorStore int

const (
	floorNothing floorStore = iota
	floorRPUSH
	floorDPStore
)

// floorSystems are the rows of the floors' table, on msilo's side
// (BENCH_ONLY=deferpush leaves them out).
func floorSystems() []rowSystem[floorRow] {
	floor := func(name string, how floorStore) rowSystem[floorRow] {
		return rowSystem[floorRow]{Name: name, Side: sideMsilo, Run: func(b *testing.B, p benchParams) floorRow {
			return runStoreFloor(b, p, how)
		}}
	}
	return []rowSystem[floorRow]{floor(systemFloor202, floorNothing), floor(systemFloorRPUSH, floorRPUSH),
		floor(systemFloorDPStore, floorDPStore)}
}

// floorRow is one run of a floor.
type floorRow struct {
	System string
	Run    int
	// N is how many MESSAGEs were sent, Stored how many were answered
	// 202 (and, where the floor stores, checked to be in Redis).
	N, Stored int
	Time      time.Duration
	// CPU is the servers' CPU seconds of the phase; ClientBusy as in
	// benchRow.
	CPU, ClientBusy float64
	Err             string
}

func (r floorRow) Rate() float64      { return rate(r.Stored, r.Time) }
func (r floorRow) CPUPerMsg() float64 { return perItemMicros(r.CPU, r.Stored) }

func (r floorRow) summary() string {
	return fmt.Sprintf("%-30s %d MESSAGEs: %7.0f/s  %6.1f µs CPU/msg  clients %3.0f%%  %s",
		r.System, r.N, r.Rate(), r.CPUPerMsg(), 100*r.ClientBusy, r.Err)
}

// runStoreFloor sends U × (the largest M) MESSAGEs to offline users with
// the store phase's SIPp scenario through test/testdata/bench/
// kamailio-store-floor.cfg, with the rows' worker count and, to store,
// its RPUSH or DPSTORE define and a redis-server beside it (for dp_store
// with deferpush's library and dp:limits, as deferpush leaves them: the
// default policy).
func runStoreFloor(b *testing.B, p benchParams, how floorStore) floorRow {
	b.Helper()
	row := floorRow{N: p.Users * slices.Max(p.Ms)}
	defines := map[string]string{"DOMAIN": strconv.Quote(benchDomain)}
	var rs *harness.RedisServer
	var st *store.Redis
	if how != floorNothing {
		rs = benchRedis(b, p)
		defer rs.Proc().Stop()
		defines["REDIS_SERVER"] = strconv.Quote(ndbRedisServer(rs))
		if how == floorRPUSH {
			defines["RPUSH"] = "1"
		} else {
			defines["DPSTORE"] = "1"
			var err error
			if st, err = store.New(store.Config{URL: rs.URL()}); err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			ctx := context.Background()
			if err := st.SetPolicy(ctx, plugin.DefaultPolicy(), "bench"); err != nil {
				b.Fatal(err)
			}
			if err := st.Ping(ctx); err != nil {
				b.Fatal(err)
			}
		}
	}
	k := harness.Kamailio(b, harness.KamailioConfig{
		ConfigFile: "testdata/bench/kamailio-store-floor.cfg",
		Defines:    defines,
		// UDP only (no -N), as the clients; msilo's shared memory.
		ExtraArgs: []string{"-m", "1024", "-n", strconv.Itoa(p.Workers)},
	})
	defer k.Stop()
	servers := []int{k.PID()}
	if rs != nil {
		servers = append(servers, rs.Proc().PID())
	}
	dir := b.TempDir()
	users := writeUsersCSV(b, dir, p.Users)
	meter := cpuMeter{servers: servers}
	settleCPU(servers...)
	r0 := meter.start()
	sr := sippStore(b, p, k.SIPAddr, users, dir, row.N)
	settleCPU(servers...)
	used := between(r0, meter.read())
	row.Stored, row.Time, row.Err = sr.Stored, sr.Time, sr.Err
	row.CPU, row.ClientBusy = used.Server, used.clientBusy(p.CPUs)
	if row.Stored != row.N {
		row.Err = join(row.Err, fmt.Sprintf("%d of %d answered 202, %d refused", row.Stored, row.N, sr.Refused))
	}
	switch how {
	case floorRPUSH:
		if n, err := floorListed(rs.Addr, p.Users); err != nil || n != row.Stored {
			row.Err = join(row.Err, fmt.Sprintf("Redis holds %d messages (%v), want %d", n, err, row.Stored))
		}
	case floorDPStore:
		if tot, err := st.Totals(context.Background()); err != nil || int(tot.Stored) != row.Stored {
			row.Err = join(row.Err, fmt.Sprintf("the store holds %d messages (%v), want %d", tot.Stored, err, row.Stored))
		}
	}
	row.Err = join(row.Err, checkServersPinned(p.CPUs, servers...))
	return row
}

// floorListed counts the messages the RPUSH floor left in Redis (one list
// per user).
func floorListed(addr string, users int) (int, error) {
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pipe := c.Pipeline()
	lens := make([]*redis.IntCmd, users)
	for i := range lens {
		lens[i] = pipe.LLen(ctx, "floor:"+benchUser(i))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return 0, err
	}
	n := 0
	for _, l := range lens {
		n += int(l.Val())
	}
	return n, nil
}

// floorCSV is one line per run of each floor.
func (r *benchReport) floorCSV() ([]byte, error) {
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	_ = w.Write([]string{"system", "run", "messages", "answered_202", "store_s", "msgs_per_s", "cpu_s", "cpu_us_per_msg", "problems"})
	for _, row := range r.FloorRows {
		_ = w.Write([]string{row.System, strconv.Itoa(row.Run), strconv.Itoa(row.N), strconv.Itoa(row.Stored),
			fmtF(row.Time.Seconds(), 3), fmtF(row.Rate(), 0), fmtF(row.CPU, 3), fmtF(row.CPUPerMsg(), 1), row.Err})
	}
	w.Flush()
	return buf.Bytes(), w.Error()
}

// floorGroup is every run of one floor.
type floorGroup = runGroup[floorRow]

func (r floorRow) system() string     { return r.System }
func (r floorRow) run() (int, string) { return r.Run, r.Err }
func (r floorRow) named(system string, run int) floorRow {
	r.System, r.Run = system, run
	return r
}

func (r *benchReport) floorGroups() []floorGroup { return groupRuns(r.FloorRows) }

// floorsMarkdown is the report's section on the floors: each beside
// msilo's store CPU at the same message count, and the 0.7× the goal
// allows.
func (r *benchReport) floorsMarkdown(b *bytes.Buffer) {
	groups := r.floorGroups()
	if len(groups) == 0 {
		return
	}
	m := slices.Max(r.Params.Ms)
	b.WriteString("\n## Floors of the store\n\n")
	fmt.Fprintf(b, "%s MESSAGEs to offline users (U × the largest M), by the store phase's SIPp scenario, through "+
		"`test/testdata/bench/kamailio-store-floor.cfg`: msilo's route with m_store taken out, each MESSAGE "+
		"answered 202 in its transaction (t_newtran, t_reply), nothing stored; then the same with one RPUSH of the "+
		"message to a Redis list through ndb_redis in the SIP worker before the 202 (the least a store in another "+
		"process costs: one blocking round trip, the simplest command; redis-server on the server CPU too); then "+
		"the same storing with deferpush's FCALL dp_store as the shipped kamailio.cfg's REDIS_DIRECT calls it, "+
		"answered with its code, without the shipped script's other steps. Same workers and CPUs as the rows above.\n\n", num(float64(r.Params.Users*m), 0))
	ref, hasRef := r.group(systemMsilo, m)
	fmt.Fprintf(b, "| floor | msgs/s | server CPU µs/msg | ÷ msilo's CPU at M=%d | clients' CPU | problems |\n|---|--:|--:|--:|--:|---|\n", m)
	for _, g := range groups {
		x := "–"
		if hasRef {
			x = ratio(g.stat(floorRow.CPUPerMsg).Med, ref.stat(benchRow.StoreCPUPerMsg).Med)
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s |\n", g.System, g.stat(floorRow.Rate).cell(0),
			g.stat(floorRow.CPUPerMsg).cell(1), x, pct(g.stat(func(r floorRow) float64 { return r.ClientBusy }).Med),
			orDash(g.problems()))
	}
	if hasRef {
		fmt.Fprintf(b, "\nThe store goal asks for at most 0.7× msilo's CPU per stored message: %s µs at M=%d.\n",
			num(0.7*ref.stat(benchRow.StoreCPUPerMsg).Med, 1), m)
	}
}
