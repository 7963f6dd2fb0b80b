package test

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

// reliabilityHeader is the head of the README's reliability table.
const reliabilityHeader = "| fault injected | times | messages stored | delivered | duplicated | lost |\n|---|---|---|---|---|---|\n"

// TestSoakFaults is `make soak`: every fault of the suite (TestFault*, one
// round each in `make test`) repeated DEFERPUSH_SOAK_ROUNDS times, then the
// reliability table, logged and written to DEFERPUSH_FAULT_REPORT when set.
func TestSoakFaults(t *testing.T) {
	rounds, _ := strconv.Atoi(os.Getenv("DEFERPUSH_SOAK_ROUNDS"))
	if rounds <= 0 {
		t.Skip("soak: set DEFERPUSH_SOAK_ROUNDS (make soak) to repeat each fault; make test runs one round of each in TestFault*")
	}
	var rows []faultRow
	run := func(name string, f func(t *testing.T) faultRow) {
		t.Run(name, func(t *testing.T) {
			row := f(t)
			row.report(t)
			rows = append(rows, row)
		})
	}
	for _, kp := range killPoints {
		run("kill-"+kp.point, func(t *testing.T) faultRow { return faultKillRounds(t, kp.name, kp.point, rounds) })
	}
	run("redis-mid-store", func(t *testing.T) faultRow { return faultRedisMidStore(t, rounds) })
	run("redis-mid-push", func(t *testing.T) faultRow { return faultRedisMidPush(t, rounds) })
	for _, cf := range clientFaults {
		run("client-"+cf.fault, func(t *testing.T) faultRow { return faultClientRounds(t, cf.name, cf.fault, rounds) })
	}
	run("two-instances", func(t *testing.T) faultRow { return faultTwoInstances(t, rounds) })
	run("relay-mid-push", func(t *testing.T) faultRow { return faultRelayRounds(t, rounds) })
	run("idle-flood", func(t *testing.T) faultRow { return faultFloodRounds(t, rounds) })
	run("startup-push", func(t *testing.T) faultRow { return faultStartupRounds(t, rounds) })
	run("pager-kill", func(t *testing.T) faultRow { return faultPagerRounds(t, rounds) })
	run("direct-all-down", func(t *testing.T) faultRow { return faultDirectDownRounds(t, rounds) })
	run("proxy-pages-kill", func(t *testing.T) faultRow { return faultProxyPagesRounds(t, rounds) })

	var b strings.Builder
	b.WriteString(reliabilityHeader)
	for _, r := range rows {
		b.WriteString(r.String() + "\n")
	}
	t.Logf("reliability table (%d rounds):\n%s", rounds, b.String())
	if path := os.Getenv("DEFERPUSH_FAULT_REPORT"); path != "" {
		if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
			t.Errorf("write %s: %v", path, err)
		}
	}
}
