package push

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/plugin/encap"
	"github.com/deferpush/deferpush/plugin/msrp"
	"github.com/deferpush/deferpush/plugin/sdp"
)

// hop is the far end of a push session in these tests, driven by hand: an
// MSRP relay in front of the client (its 200 is its own), or the client
// itself. It answers every SEND 200 and records whether a success REPORT
// was asked for; with reports set it then sends the client's REPORT (a
// relay from a new connection to deferpush's listener, as Kamailio's msrp
// module does; the client on the session's connection).
type hop struct {
	uri, client msrp.URI
	relay       bool
	reports     string // "" none, "success", or a failure status such as "000 415 Unsupported Media Type"
	lis         *msrp.Listener

	mu    sync.Mutex
	asked []bool // Success-Report: yes, per message
}

func (h *hop) path() []msrp.URI {
	if h.relay {
		return []msrp.URI{h.uri, h.client}
	}
	return []msrp.URI{h.uri}
}

func startHop(t *testing.T, lis *msrp.Listener, relay bool, reports string) *hop {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	port := ln.Addr().(*net.TCPAddr).Port
	h := &hop{uri: msrp.URI{Host: "127.0.0.1", Port: port, SessionID: "hopsession01", Transport: "tcp"},
		client: msrp.URI{Host: "client.invalid", Port: 2855, SessionID: "clientsession1", Transport: "tcp"},
		relay:  relay, reports: reports, lis: lis}
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		r, w := msrp.NewReader(nc, msrp.Limits{}), msrp.NewWriter(nc)
		var back *msrp.Writer // the relay's own connection to deferpush
		for {
			f, err := r.ReadFrame()
			if err != nil {
				return
			}
			w.WriteFrame(&msrp.Frame{TID: f.TID, Status: 200, Comment: "OK", Header: []msrp.Header{
				{Name: msrp.HeaderToPath, Value: f.Value(msrp.HeaderFromPath)}, {Name: msrp.HeaderFromPath, Value: h.uri.String()}}})
			if f.Body == nil {
				continue // the binding SEND
			}
			asked := f.Value(msrp.HeaderSuccessReport) == "yes"
			h.mu.Lock()
			h.asked = append(h.asked, asked)
			h.mu.Unlock()
			if !asked || h.reports == "" {
				continue
			}
			status := h.reports
			if status == "success" {
				status = "000 200 OK"
			}
			n := len(f.Body)
			rep := &msrp.Frame{TID: fmt.Sprintf("rep%08d", n), Method: "REPORT", Header: []msrp.Header{
				{Name: msrp.HeaderToPath, Value: f.Value(msrp.HeaderFromPath)},
				{Name: msrp.HeaderFromPath, Value: msrp.FormatPath(h.path())},
				{Name: msrp.HeaderMessageID, Value: f.Value(msrp.HeaderMessageID)},
				{Name: msrp.HeaderByteRange, Value: fmt.Sprintf("1-%d/%d", n, n)},
				{Name: msrp.HeaderStatus, Value: status}}}
			if !h.relay {
				w.WriteFrame(rep)
				continue
			}
			if back == nil {
				bc, err := net.Dial("tcp", net.JoinHostPort(h.lis.URI().Host, fmt.Sprint(h.lis.URI().Port)))
				if err != nil {
					t.Errorf("relay: connect to deferpush: %v", err)
					return
				}
				defer bc.Close()
				back = msrp.NewWriter(bc)
			}
			back.WriteFrame(rep)
		}
	}()
	return h
}

// TestDeliverSuccessReports: a message counts as confirmed by the
// client's success REPORT when the path has a relay (unless the relay is
// trusted) or the policy asks for REPORTs, and by the 200 alone only
// otherwise. Without the REPORT asked for, it stays unconfirmed: the
// session ends, every message stays stored, none is charged an attempt.
// These cases fail if the pusher stops asking for REPORTs, or stops
// waiting for them.
func TestDeliverSuccessReports(t *testing.T) {
	const timeout = 300 * time.Millisecond
	loopback := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	tests := []struct {
		name    string
		relay   bool
		policy  bool           // success_reports
		trusted []netip.Prefix // msrp.trusted_relays
		reports string         // what the far end sends back
		asked   bool           // Success-Report: yes on the SENDs
		want    []string       // fate of each of 3 messages
	}{
		{"relay, its 200 alone", true, false, nil, "", true,
			[]string{unconfirmed, notSent, notSent}},
		{"relay, the client's REPORTs on a new connection from the relay", true, false, nil, "success", true,
			repeat(confirmed, 3)},
		{"relay, failure REPORTs", true, false, nil, "000 415 Unsupported Media Type", true,
			repeat("refused 415", 3)},
		{"trusted relay", true, false, loopback, "", false,
			repeat(confirmed, 3)},
		{"relay outside the trusted networks", true, false, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, "", true,
			[]string{unconfirmed, notSent, notSent}},
		{"trusted relay, policy asks", true, true, loopback, "", true,
			[]string{unconfirmed, notSent, notSent}},
		{"direct, policy asks, no REPORT", false, true, nil, "", true,
			[]string{unconfirmed, notSent, notSent}},
		{"direct, policy asks, REPORTs", false, true, nil, "success", true,
			repeat(confirmed, 3)},
		{"direct, policy off", false, false, nil, "", false,
			repeat(confirmed, 3)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := msrp.NewListener(msrp.ListenerConfig{Addr: "127.0.0.1:0"})
			if err != nil {
				t.Fatal(err)
			}
			runErr := make(chan error, 1)
			go func() { runErr <- l.Run(context.Background()) }()
			t.Cleanup(func() {
				l.Close()
				<-runErr
			})
			h := startHop(t, l, tt.relay, tt.reports)
			local := l.URI()
			local.SessionID = msrp.NewSessionID()
			ms, err := msrp.NewSession(msrp.Config{Local: local, Timeout: timeout})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ms.Close() })
			// As Open does for a session it connects.
			if err := l.AddActive(ms); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancelCause(context.Background())
			defer cancel(nil)
			if err := ms.Connect(ctx, h.path()); err != nil {
				t.Fatal(err)
			}
			s := &session{
				p:      &Pusher{cfg: Config{MSRPTimeout: timeout, Window: 4, TrustedRelays: tt.trusted}},
				ms:     ms,
				answer: sdp.Media{Path: h.path(), AcceptTypes: []string{encap.TypeSIP}},
				policy: plugin.Policy{SuccessReports: tt.policy},
			}
			var fates []string
			start := time.Now()
			derr := s.delivery(ctx, cancel).run(ctx, stored(t, 3), func(m *plugin.Message, err error) {
				fates = append(fates, reportFate(err))
			})
			if fmt.Sprint(fates) != fmt.Sprint(tt.want) {
				t.Errorf("fates = %v, want %v", fates, tt.want)
			}
			h.mu.Lock()
			for i, a := range h.asked {
				if a != tt.asked {
					t.Errorf("SEND %d: Success-Report asked = %v, want %v", i+1, a, tt.asked)
				}
			}
			h.mu.Unlock()
			if tt.want[0] == unconfirmed {
				if !errors.Is(derr, errUnconfirmed) {
					t.Errorf("run = %v, want the session ended for the missing REPORT", derr)
				}
				// The missing REPORT ends the session after its timeout.
				if d := time.Since(start); d < timeout || d > 10*timeout {
					t.Errorf("run took %v, want about one timeout (%v)", d, timeout)
				}
			} else if derr != nil {
				t.Errorf("run = %v", derr)
			}
		})
	}
}

const unconfirmed = "unconfirmed"

func reportFate(err error) string {
	var re *plugin.RejectedError
	switch {
	case errors.Is(err, plugin.ErrUnconfirmed):
		return unconfirmed
	case errors.As(err, &re):
		return fmt.Sprintf("refused %d", re.Status)
	}
	return fateOf(err)
}
