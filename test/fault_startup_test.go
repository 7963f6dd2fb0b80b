package test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/deferpush/deferpush/adapters/imclient"
	"github.com/deferpush/deferpush/plugin"
)

const startupFault = "kill -9 deferpush with users registered and messages pending; restart, no new REGISTER"

// TestFaultStartupPush: deferpush dies while a registered user has
// messages waiting and no push running (the registration reached it, the
// push had not started); started again, it pushes them without waiting
// for the client's next REGISTER (up to an hour with the shipped script).
// The window is made deterministic by holding pushes while the client
// registers and releasing the hold while deferpush is down.
func TestFaultStartupPush(t *testing.T) {
	faultStartupRounds(t, 1).report(t)
}

func faultStartupRounds(t *testing.T, rounds int) faultRow {
	s := startFaultStack(t)
	sender := s.client(t, "sender", imclient.Config{})
	row := faultRow{Fault: startupFault}
	for r := range rounds {
		faultStartupRound(t, s, sender, &row, fmt.Sprintf("start%d", r))
		if t.Failed() {
			break
		}
	}
	return row
}

func faultStartupRound(t *testing.T, s *kamailioStack, sender *imclient.Client, row *faultRow, user string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	setHold := func(hold bool) {
		t.Helper()
		if _, _, err := s.st.UpdatePolicy(ctx, "fault test", func(p *plugin.Policy) error {
			p.DefaultPush = plugin.PushOn
			if hold {
				p.DefaultPush = plugin.PushHold
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	setHold(true)
	waitFor(t, 5*time.Second, "the hold in force", func() bool {
		return s.policyInForce(t).DefaultPush == plugin.PushHold
	})
	ids := storeCalls(t, sender, user, "startup-"+user, 4, nil)
	s.waitPending(t, user, len(ids))
	rcv := s.client(t, user, imclient.Config{})
	s.register(t, rcv) // the only REGISTER of this client
	aor := plugin.MustParseAOR("sip:" + user + "@" + domain)
	waitFor(t, 5*time.Second, "the registration recorded", func() bool {
		_, err := s.st.Contact(ctx, aor)
		return err == nil
	})

	s.dp.Kill(t)
	setHold(false)
	s.restartDeferpush(t)
	waitFor(t, 30*time.Second, "every message delivered without a new REGISTER", func() bool {
		return len(missing(ids, rcv.Received())) == 0 && s.counts(t, user) == (plugin.Counts{})
	})
	dups := row.add(t, ids, rcv.Received())
	wantDups(t, "startup", dups)
}

// policyInForce asks the running deferpush for its policy.
func (s *kamailioStack) policyInForce(t *testing.T) plugin.Policy {
	t.Helper()
	var p plugin.Policy
	adminGetJSON(t, s.dp, "/v1/policy", &p)
	return p
}

// adminGetJSON GETs path from dp's admin API with its admin token and
// decodes the JSON answer into v.
func adminGetJSON(t *testing.T, dp *deferpushProc, path string, v any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+dp.AdminAddr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+dp.AdminToken)
	res, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d", path, res.StatusCode)
	}
	if err := json.NewDecoder(res.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
}
