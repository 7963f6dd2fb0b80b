package test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/deferpush/deferpush/adapters/imclient"
	"github.com/deferpush/deferpush/adapters/ingress"
	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/plugin/msrp"
	dpsdp "github.com/deferpush/deferpush/plugin/sdp"
	"github.com/deferpush/deferpush/store"
	"github.com/deferpush/deferpush/test/harness"
)

// TestIngressDirect talks to deferpush's SIP ingress the way kamailio.cfg
// relays to it, without the proxy: a MESSAGE is stored (202), an INVITE
// without an MSRP offer is refused (488), OPTIONS is answered, a BYE for no
// session gets 481, and an MSRP message over the policy's size limit is
// refused 413 while the session goes on.
func TestIngressDirect(t *testing.T) {
	r := harness.Redis(t)
	st, err := store.New(store.Config{URL: r.URL()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, _ := st.Policy(ctx)
	p.MaxMessageSize = 4000
	if err := st.SetPolicy(ctx, p, "test"); err != nil {
		t.Fatal(err)
	}
	dp := startDeferpush(t, nil, "--redis", r.URL())
	user1 := newClient(t, "sip:user1@"+domain, imclient.Config{Proxy: dp.SIPAddr})
	// What a trusted proxy adds: the ingress's secret (the hooks token).
	secret := sip.NewHeader(ingress.SecretHeader, dp.HooksToken)

	res, err := user1.SendMessage(ctx, "sip:user2@"+domain, "text/plain", []byte("straight to the ingress"), secret)
	if err != nil || res.StatusCode != 202 {
		t.Fatalf("MESSAGE to the ingress: %v %v, want 202", res, err)
	}

	// An INVITE without SDP, OPTIONS and a stray BYE, from a bare client.
	ua, _ := sipgo.NewUA(sipgo.WithUserAgentHostname("127.0.0.1"))
	defer ua.Close()
	cli, _ := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"))
	offer, err := dpsdp.Build(dpsdp.Media{Path: []msrp.URI{{Host: "127.0.0.1", Port: 9, SessionID: "reinvite01", Transport: "tcp"}},
		AcceptTypes: []string{"text/plain"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		method sip.RequestMethod
		totag  bool
		offer  bool
		want   int
	}{
		{sip.INVITE, false, false, 488}, {sip.OPTIONS, false, false, 200}, {sip.BYE, true, false, 481},
		// A re-INVITE (To tag) with an MSRP offer is no new session to
		// store; its dialog is none deferpush has (RFC 3261 §12.2.2).
		{sip.INVITE, true, true, 481},
	} {
		req := sip.NewRequest(tt.method, sip.Uri{Scheme: "sip", User: "user2", Host: domain})
		to := &sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: "user2", Host: domain}, Params: sip.NewParams()}
		if tt.totag {
			to.Params.Add("tag", "nosuchdialog")
		}
		req.AppendHeader(to)
		if tt.offer {
			req.AppendHeader(sip.NewHeader("Contact", "<sip:user1@127.0.0.1:9;transport=tcp>"))
			req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
			req.SetBody(offer)
		}
		req.AppendHeader(secret)
		req.SetTransport("TCP")
		req.SetDestination(dp.SIPAddr)
		res, err := cli.Do(ctx, req)
		if err != nil || res.StatusCode != tt.want {
			t.Errorf("%s: %v %v, want %d", tt.method, res, err, tt.want)
		}
	}

	sess, err := user1.OpenSession(ctx, "sip:user2@"+domain, secret)
	if err != nil {
		t.Fatalf("session INVITE to the ingress: %v", err)
	}
	err = sess.Send(ctx, "toolarge01", "text/plain", []byte(strings.Repeat("x", 5000)))
	var se *msrp.StatusError
	if !errors.As(err, &se) || se.Code != 413 {
		t.Errorf("SEND over max_message_size: %v, want 413", err)
	}
	if err := sess.Send(ctx, "fits000001", "text/plain", []byte("small enough")); err != nil {
		t.Errorf("SEND after the refused one: %v", err)
	}
	if err := sess.Close(ctx); err != nil {
		t.Errorf("BYE: %v", err)
	}
	n, err := st.Count(ctx, plugin.MustParseAOR("sip:user2@"+domain))
	if err != nil || n.Pending != 2 {
		t.Errorf("stored %+v (%v), want the MESSAGE and the small SEND", n, err)
	}
}
