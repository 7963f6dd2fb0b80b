package test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/deferpush/deferpush/adapters/imclient"
)

const pagerKillFault = "kill -9 deferpush while a client without MSRP holds a pager-mode MESSAGE"

// TestFaultPagerKill: deferpush delivers to a client without MSRP (it
// answers the INVITE 488) by SIP MESSAGE through Kamailio, and is killed
// while the client holds the 3rd of 6 MESSAGEs, the first two acked; the
// client answers it 200 after the kill. Started again, deferpush delivers
// the rest: nothing lost, and the only duplicate is the 3rd, which comes
// again as the same request (Call-ID, From tag, CSeq), so the client can
// drop it.
func TestFaultPagerKill(t *testing.T) {
	faultPagerRounds(t, 1).report(t)
}

func faultPagerRounds(t *testing.T, rounds int) faultRow {
	s := startFaultStack(t)
	sender := s.client(t, "sender", imclient.Config{})
	row := faultRow{Fault: pagerKillFault}
	for r := range rounds {
		faultPagerRound(t, s, sender, &row, fmt.Sprintf("pager%d", r))
		if t.Failed() {
			break
		}
	}
	return row
}

func faultPagerRound(t *testing.T, s *kamailioStack, sender *imclient.Client, row *faultRow, user string) {
	t.Helper()
	const n, k = 6, 3
	ids := storeCalls(t, sender, user, "pager-kill-"+user, n, nil)
	s.waitPending(t, user, n)
	dp := s.dp
	injected := make(chan struct{})
	var once sync.Once
	hook := func(ev imclient.Event) error {
		if ev.Kind == imclient.EventMessage && ev.N == k {
			once.Do(func() {
				if !pollUntil(10*time.Second, func() bool { return s.unacked(user, n-(k-1)) }) {
					t.Errorf("messages 1..%d not acked before the fault", k-1)
				}
				dp.Kill(t)
				close(injected)
			})
		}
		return nil // answered 200, after the kill
	}
	rcv := s.client(t, user, imclient.Config{InviteStatus: 488, OnEvent: hook})
	s.register(t, rcv)
	select {
	case <-injected:
	case <-time.After(30 * time.Second):
		t.Fatalf("the fault was never injected (client saw %+v)", rcv.Stats())
	}
	s.restartDeferpush(t)
	s.waitLeaseOver(t, user)
	s.deliverAll(t, rcv, user, ids)
	dups := row.add(t, ids, rcv.Received())
	wantDups(t, "pager", dups, ids[k-1])
	cseqs := map[string]map[uint32]bool{}
	for _, r := range rcv.Received() {
		if !r.Pager {
			t.Errorf("%s came by MSRP", r.Decoded.CallID)
		}
		if cseqs[r.Decoded.CallID] == nil {
			cseqs[r.Decoded.CallID] = map[uint32]bool{}
		}
		cseqs[r.Decoded.CallID][r.CSeq] = true
	}
	if got := cseqs[ids[k-1]]; len(got) != 1 {
		t.Errorf("the duplicate came with CSeqs %v; want the same request again", got)
	}
	if st := rcv.Stats(); st.Invites != 1 {
		t.Errorf("the client got %d INVITEs, want 1 (488, remembered across the restart)", st.Invites)
	}
}
