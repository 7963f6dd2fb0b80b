package test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/deferpush/deferpush/adapters/imclient"
	"github.com/deferpush/deferpush/plugin"
)

const proxyPagesKillFault = "kill -9 Kamailio while a client holds a page of the proxy's own (REDIS_DIRECT)"

// TestFaultProxyPagesKill: Kamailio in REDIS_DIRECT sends a pager-mode
// push itself (delivery pager), and is killed while the client holds the
// 2nd of 4 pages, the 1st confirmed and acked; the client answers the 2nd
// after the kill, into the void. Kamailio is started again (its location
// table empty) and nobody registers: the session's lease in Redis lapses
// (PAGE_TIMEOUT 1 s: a 6 s lease), deferpush's sweeper requeues and
// pushes, and the client gets the rest through the new Kamailio. Nothing
// is lost; the only duplicate is the page held at the kill, sent again as
// the same request (Call-ID, From tag, CSeq).
func TestFaultProxyPagesKill(t *testing.T) {
	faultProxyPagesRounds(t, 1).report(t)
}

func faultProxyPagesRounds(t *testing.T, rounds int) faultRow {
	s := startKamailioDirect(t, stackOptions{
		policy:       func(p *plugin.Policy) { p.Delivery = plugin.DeliveryPager },
		kamailioArgs: []string{"-A", "PAGE_TIMEOUT=1"},
	})
	sender := s.client(t, "sender", imclient.Config{})
	row := faultRow{Fault: proxyPagesKillFault}
	for r := range rounds {
		faultProxyPagesRound(t, s, sender, &row, fmt.Sprintf("pages%d", r))
		if t.Failed() {
			break
		}
	}
	return row
}

func faultProxyPagesRound(t *testing.T, s *kamailioStack, sender *imclient.Client, row *faultRow, user string) {
	t.Helper()
	const n, k = 4, 2
	ids := storeCalls(t, sender, user, "proxy-pages-kill-"+user, n, nil)
	s.waitPending(t, user, n)
	killed := make(chan struct{})
	var once sync.Once
	hook := func(ev imclient.Event) error {
		if ev.Kind == imclient.EventMessage && ev.N == k {
			once.Do(func() {
				s.k.Kill()
				close(killed)
			})
		}
		return nil
	}
	rcv := s.client(t, user, imclient.Config{OnEvent: hook})
	s.register(t, rcv)
	select {
	case <-killed:
	case <-time.After(30 * time.Second):
		t.Fatalf("the fault was never injected (client saw %+v)", rcv.Stats())
	}
	if c := s.counts(t, user); c != (plugin.Counts{Pending: n - k, InFlight: 1}) {
		t.Errorf("at the kill: %+v, want the held page in flight and %d pending", c, n-k)
	}
	s.k.Start(t)
	waitFor(t, 40*time.Second, "every message delivered, without a new REGISTER", func() bool {
		return len(missing(ids, rcv.Received())) == 0 && s.counts(t, user) == plugin.Counts{}
	})
	dups := row.add(t, ids, rcv.Received())
	wantDups(t, "proxy pages", dups, ids[k-1])
	cseqs := map[uint32]bool{}
	for _, r := range rcv.Received() {
		if !r.Pager {
			t.Errorf("%s came by MSRP", r.Decoded.CallID)
		}
		if r.Decoded.CallID == ids[k-1] {
			cseqs[r.CSeq] = true
		}
	}
	if len(cseqs) != 1 {
		t.Errorf("the duplicate %s came with CSeqs %v; want the same request again", ids[k-1], cseqs)
	}
	if !pageVia.Match(rcv.Received()[0].Body) {
		t.Error("the first page did not come from the proxy's session")
	}
}
