package test

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/deferpush/deferpush/adapters/imclient"
	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/test/harness"
)

// Two deferpush instances share one Redis; registrations (each user
// registers three times) go to either at random. Every message arrives
// exactly once and no user gets two sessions.
func TestPushTwoInstancesDeliverOnce(t *testing.T) {
	r := harness.Redis(t)
	a := startCore(t, r.URL(), coreOptions{})
	b := startCore(t, r.URL(), coreOptions{})
	const users, perUser = 100, 3
	type user struct {
		aor  plugin.AOR
		cl   *imclient.Client
		want []string
	}
	us := make([]user, users)
	for i := range us {
		aor := plugin.MustParseAOR(fmt.Sprintf("sip:multi%03d@example.com", i))
		us[i] = user{aor: aor, cl: newClient(t, aor.String(), imclient.Config{}), want: storeN(t, a, aor, perUser)}
	}
	var wg sync.WaitGroup
	for range 3 {
		for i := range us {
			wg.Add(1)
			go func() {
				defer wg.Done()
				inst := a
				if rand.IntN(2) == 1 {
					inst = b
				}
				inst.register(t, us[i].aor, us[i].cl.Contact())
			}()
		}
	}
	wg.Wait()
	for _, u := range us {
		waitClient(t, u.cl, "all messages", func(s imclient.Stats) bool { return s.Received >= perUser && s.Byes >= 1 })
	}
	// Refreshes that arrive after the push find an empty mailbox and start
	// nothing; wait for both engines to go idle before counting.
	waitFor(t, 20*time.Second, "engines idle", func() bool { return a.eng.Active() == 0 && b.eng.Active() == 0 })
	for _, u := range us {
		got := callIDs(u.cl.Received())
		if fmt.Sprint(got) != fmt.Sprint(u.want) {
			t.Errorf("%s received %v, want %v exactly once in order", u.aor, got, u.want)
		}
		if st := u.cl.Stats(); st.Invites != 1 {
			t.Errorf("%s got %d INVITEs, want 1", u.aor, st.Invites)
		}
		if n := a.counts(t, u.aor); n != (plugin.Counts{}) {
			t.Errorf("%s still stored: %+v", u.aor, n)
		}
	}
}
