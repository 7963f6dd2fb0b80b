package test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/deferpush/deferpush/adapters/imclient"
	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/test/harness"
)

const directDownFault = "every deferpush down while users register (REDIS_DIRECT); one started, no new REGISTER"

// TestFaultDirectAllDown: in the REDIS_DIRECT mode, with every deferpush
// instance down, Kamailio still stores the users' messages (dp_store) and
// records their registrations with an event each (dp_register); started
// again, deferpush reads the events and pushes everything, without a new
// REGISTER.
func TestFaultDirectAllDown(t *testing.T) {
	faultDirectDownRounds(t, 1).report(t)
}

func faultDirectDownRounds(t *testing.T, rounds int) faultRow {
	s := startKamailioDirect(t, stackOptions{
		redis:  []harness.RedisOption{harness.WithAOF()},
		policy: noBackoff,
		dpEnv: []string{
			"DEFERPUSH_PUSH_LOCK_TTL=" + faultLockTTL.String(),
			"DEFERPUSH_MSRP_TIMEOUT=" + faultMSRPTimeout.String(),
		},
	})
	sender := s.client(t, "sender", imclient.Config{})
	row := faultRow{Fault: directDownFault}
	for r := range rounds {
		faultDirectDownRound(t, s, sender, &row, r)
		if t.Failed() {
			break
		}
	}
	return row
}

func faultDirectDownRound(t *testing.T, s *kamailioStack, sender *imclient.Client, row *faultRow, round int) {
	t.Helper()
	ctx := context.Background()
	const users, perUser = 3, 3
	s.dp.Kill(t)
	var stored []string
	clients := make([]*imclient.Client, users)
	for i := range users {
		user := fmt.Sprintf("down%d-%d", round, i)
		stored = append(stored, storeCalls(t, sender, user, "direct-"+user, perUser, nil)...)
		clients[i] = s.client(t, user, imclient.Config{})
		s.register(t, clients[i]) // the only REGISTER of this client
		// save() answers before dp_register runs.
		waitFor(t, 5*time.Second, "the registration recorded while deferpush is down", func() bool {
			_, err := s.st.Contact(ctx, plugin.MustParseAOR("sip:"+user+"@"+domain))
			return err == nil
		})
	}
	started := time.Now()
	s.restartDeferpush(t)
	var rs [][]imclient.Received
	waitFor(t, 30*time.Second, "every message delivered without a new REGISTER", func() bool {
		rs = rs[:0]
		var all []imclient.Received
		for _, c := range clients {
			rs = append(rs, c.Received())
			all = append(all, c.Received()...)
		}
		return len(missing(stored, all)) == 0
	})
	t.Logf("round %d: %d messages of %d users delivered %v after deferpush started", round, len(stored), users,
		time.Since(started).Round(time.Millisecond))
	dups := row.add(t, stored, rs...)
	wantDups(t, "direct all down", dups)
	waitFor(t, 10*time.Second, "every event acked", func() bool {
		_, pending := s.events(t)
		return pending == 0
	})
}
