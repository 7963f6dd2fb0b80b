package test

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/deferpush/deferpush/adapters/ingress"
	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/plugin/msrp"
	"github.com/deferpush/deferpush/plugin/sdp"
	"github.com/deferpush/deferpush/store"
	"github.com/deferpush/deferpush/test/harness"
)

// msrpPeer is a raw MSRP connection to deferpush's listener: the test
// writes frames as a hostile sender would and reads the answers.
type msrpPeer struct {
	t  *testing.T
	nc net.Conn
	r  *msrp.Reader
}

func dialMSRP(t *testing.T, addr string) *msrpPeer {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(20 * time.Second))
	return &msrpPeer{t: t, nc: nc, r: msrp.NewReader(nc, msrp.Limits{})}
}

// send writes a SEND and returns the status of its answer.
func (p *msrpPeer) send(tid, to, from string, extra []msrp.Header, body []byte, flag byte) int {
	p.t.Helper()
	h := append([]msrp.Header{{Name: msrp.HeaderToPath, Value: to}, {Name: msrp.HeaderFromPath, Value: from}}, extra...)
	f := &msrp.Frame{TID: tid, Method: "SEND", Header: h, Body: body, Flag: flag}
	if body != nil {
		f.Header = append(f.Header, msrp.Header{Name: msrp.HeaderContentType, Value: "text/plain"})
	}
	if err := msrp.NewWriter(p.nc).WriteFrame(f); err != nil {
		p.t.Fatalf("write %s: %v", tid, err)
	}
	r, err := p.r.ReadFrame()
	if err != nil {
		p.t.Fatalf("answer to %s: %v", tid, err)
	}
	if r.TID != tid {
		p.t.Fatalf("answer %q to %s", r.String(), tid)
	}
	return r.Status
}

// openIngressSession sends deferpush's SIP ingress a session-mode INVITE
// (with the ingress secret) whose offer names from as our path, and returns the MSRP path of its
// answer; the session ends (BYE) with the test.
func openIngressSession(t *testing.T, sipAddr, secret, from string) msrp.URI {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ua, _ := sipgo.NewUA(sipgo.WithUserAgentHostname("127.0.0.1"))
	t.Cleanup(func() { ua.Close() })
	cli, _ := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"))
	var contact sip.ContactHeader
	_ = sip.ParseUri("sip:user1@127.0.0.1:9;transport=tcp", &contact.Address)
	dialogs := sipgo.NewDialogClientCache(cli, contact)
	fromURI, _ := msrp.ParseURI(from)
	offer, err := sdp.Build(sdp.Media{Path: []msrp.URI{fromURI}, AcceptTypes: []string{"text/plain"}, Setup: sdp.SetupActPass})
	if err != nil {
		t.Fatal(err)
	}
	to := sip.Uri{Scheme: "sip", User: "user2", Host: domain}
	req := sip.NewRequest(sip.INVITE, to)
	req.AppendHeader(&sip.ToHeader{Address: to, Params: sip.NewParams()})
	fh := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "user1", Host: domain}, Params: sip.NewParams()}
	fh.Params.Add("tag", sip.GenerateTagN(10))
	req.AppendHeader(fh)
	req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	// What a trusted proxy adds (sip.ingress_secret: the hooks token).
	req.AppendHeader(sip.NewHeader(ingress.SecretHeader, secret))
	req.SetBody(offer)
	req.SetTransport("TCP")
	req.SetDestination(sipAddr)
	dlg, err := dialogs.WriteInvite(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if err := dlg.WaitAnswer(ctx, sipgo.AnswerOptions{}); err != nil {
		t.Fatalf("session INVITE: %v", err)
	}
	if err := dlg.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		bctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = dlg.Bye(bctx)
		dlg.Close()
	})
	ans, err := sdp.Parse(dlg.InviteResponse.Body())
	if err != nil || sdp.OffererConnects(ans) == false {
		t.Fatalf("answer %q (%v): want a path we connect to", dlg.InviteResponse.Body(), err)
	}
	return ans.Path[len(ans.Path)-1]
}

// TestHostileMSRPSender plays a hostile session-mode sender against the
// binary's SIP ingress and MSRP listener, and checks the MSRP answer each
// misdeed gets while well-formed messages of the same session are still
// stored.
func TestHostileMSRPSender(t *testing.T) {
	r := harness.Redis(t)
	st, err := store.New(store.Config{URL: r.URL()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	dp := startDeferpush(t, []string{"DEFERPUSH_MSRP_MAX_CONNECTIONS_PER_HOST=8"}, "--redis", r.URL())
	const me = "msrp://127.0.0.1:9/hostile0001;tcp"
	ours := openIngressSession(t, dp.SIPAddr, dp.HooksToken, me)
	to := ours.String()
	ctx := context.Background()
	pending := func() int {
		n, err := st.Count(ctx, plugin.MustParseAOR("sip:user2@"+domain))
		if err != nil {
			t.Fatal(err)
		}
		return n.Pending
	}
	id := func(h string) []msrp.Header { return []msrp.Header{{Name: msrp.HeaderMessageID, Value: h}} }
	chunk := func(msgID string, start, end int64, total string) []msrp.Header {
		return append(id(msgID), msrp.Header{Name: msrp.HeaderByteRange, Value: fmt.Sprintf("%d-%d/%s", start, end, total)})
	}

	// bound is the sender's own connection, used by every subtest.
	bound := dialMSRP(t, ours.Addr())
	bound.nc.SetDeadline(time.Now().Add(60 * time.Second))
	t.Run("a session it does not own", func(t *testing.T) {
		bound.t = t
		p := dialMSRP(t, ours.Addr())
		if got := p.send("own00001", to, "msrp://127.0.0.1:9/impostor01;tcp", id("m00001"), nil, msrp.FlagEnd); got != 481 {
			t.Errorf("binding from a path the offer did not name: %d, want 481", got)
		}
		other := ours
		other.SessionID = msrp.NewSessionID()
		if got := p.send("own00002", other.String(), me, id("m00002"), nil, msrp.FlagEnd); got != 481 {
			t.Errorf("a session that does not exist: %d, want 481", got)
		}
		if got := bound.send("own00003", to, me, id("m00003"), nil, msrp.FlagEnd); got != 200 {
			t.Fatalf("binding as the offer's path: %d, want 200", got)
		}
		// On the bound connection: a To-Path must be one URI, ours
		// (RFC 4975 §7.3), and a SEND must have a Message-ID.
		elsewhere := ours
		elsewhere.Host = "192.0.2.99"
		if got := bound.send("own00005", elsewhere.String(), me, id("m00005"), nil, msrp.FlagEnd); got != 481 {
			t.Errorf("our session id at another host: %d, want 481", got)
		}
		if got := bound.send("own00006", to+" "+to, me, id("m00006"), nil, msrp.FlagEnd); got != 481 {
			t.Errorf("a To-Path of two URIs: %d, want 481", got)
		}
		if got := bound.send("own00007", to, me, nil, nil, msrp.FlagEnd); got != 400 {
			t.Errorf("a SEND without Message-ID: %d, want 400", got)
		}
		if got := dialMSRP(t, ours.Addr()).send("own00004", to, me, id("m00004"), nil, msrp.FlagEnd); got != 506 {
			t.Errorf("a second connection for the bound session: %d, want 506", got)
		}
	})
	if t.Failed() {
		t.FailNow()
	}

	t.Run("flood of chunks", func(t *testing.T) {
		// The bound of a message is the policy's max_message_size (64
		// KiB by default): its stored form could never be smaller.
		bound.t = t
		limit := int64(plugin.DefaultPolicy().MaxMessageSize)
		body := []byte(strings.Repeat("f", 4<<10))
		var off int64
		refused := false
		for i := 0; i < 40 && !refused; i++ {
			got := bound.send(fmt.Sprintf("fl%06d", i), to, me, chunk("flood00001", off+1, off+int64(len(body)), "*"), body, msrp.FlagMore)
			switch {
			case got == 413:
				refused = true
				if off+int64(len(body)) <= limit {
					t.Errorf("413 after %d octets, before max_message_size (%d)", off, limit)
				}
			case got != 200:
				t.Fatalf("chunk %d: %d", i, got)
			}
			off += int64(len(body))
		}
		if !refused {
			t.Fatalf("%d octets of one message taken, want 413 past max_message_size (%d)", off, limit)
		}
		// A total past it is refused at the first chunk, and a chunk
		// claiming the end of a larger message however small it is.
		if got := bound.send("fl888888", to, me, chunk("big0000001", 1, 5, strconv.FormatInt(limit+1, 10)), []byte("start"), msrp.FlagMore); got != 413 {
			t.Errorf("the first chunk of a message of %d octets: %d, want 413", limit+1, got)
		}
		if got := bound.send("fl777777", to, me, chunk("far0000001", 1<<20-4, 1<<20, "*"), []byte("ZZZZZ"), msrp.FlagMore); got != 413 {
			t.Errorf("5 octets at 1 MiB: %d, want 413", got)
		}
		if got := bound.send("fl999999", to, me, chunk("flood00001", off+1, off+10, "*"), []byte("0123456789"), msrp.FlagEnd); got != 413 {
			t.Errorf("a chunk of the refused message: %d, want 413", got)
		}
		if got := bound.send("flok0001", to, me, id("fits000001"), []byte("after the flood"), msrp.FlagEnd); got != 200 {
			t.Errorf("a message after the flood: %d, want 200", got)
		}
		waitFor(t, 5*time.Second, "the message after the flood stored", func() bool { return pending() == 1 })
	})

	t.Run("messages that never end", func(t *testing.T) {
		bound.t = t
		for i := range 8 {
			if got := bound.send(fmt.Sprintf("ne%06d", i), to, me, chunk(fmt.Sprintf("never%05d", i), 1, 5, "10"), []byte("start"), msrp.FlagMore); got != 200 {
				t.Fatalf("first chunk of unfinished message %d: %d, want 200", i, got)
			}
		}
		if got := bound.send("ne000009", to, me, chunk("never00009", 1, 5, "10"), []byte("start"), msrp.FlagMore); got != 413 {
			t.Errorf("a ninth unfinished message: %d, want 413 (8 in reassembly at most)", got)
		}
		if got := bound.send("neok0001", to, me, id("fits000002"), []byte("whole"), msrp.FlagEnd); got != 200 {
			t.Errorf("a whole message: %d, want 200", got)
		}
		waitFor(t, 5*time.Second, "the whole message stored", func() bool { return pending() == 2 })
	})

	t.Run("many connections", func(t *testing.T) {
		// Up to 8 connections from 127.0.0.1 are served (3 are open).
		none := ours
		none.SessionID = msrp.NewSessionID()
		for i := range 12 {
			p := dialMSRP(t, ours.Addr())
			got := p.send(fmt.Sprintf("mc%06d", i), none.String(), me, nil, nil, msrp.FlagEnd)
			if got == 481 {
				continue
			}
			if got != 403 || i+3 < 8 {
				t.Fatalf("connection %d: %d, want 481 within the bound and 403 past it", i+4, got)
			}
			if _, err := p.r.ReadFrame(); err == nil {
				t.Error("the refused connection stays open")
			}
			// The log comes through a pipe: poll for the line.
			waitFor(t, 5*time.Second, "the refusal in the log", func() bool {
				return strings.Contains(dp.Log(), "msrp connection refused: too many connections")
			})
			return
		}
		t.Error("12 more connections from one address served, want 403 past 8")
	})
	if n := pending(); n != 2 {
		t.Errorf("stored %d messages, want the 2 whole ones only", n)
	}

	t.Run("a request without From-Path", func(t *testing.T) {
		// Nobody to address a 400 to (RFC 4975 §7.2): it is dropped, not
		// stored, and the connection goes on (it was delimited).
		bound.t = t
		f := &msrp.Frame{TID: "nofp0001", Method: "SEND", Flag: msrp.FlagEnd, Body: []byte("nofp!"), Header: []msrp.Header{
			{Name: msrp.HeaderToPath, Value: to}, {Name: msrp.HeaderMessageID, Value: "nofp00001"},
			{Name: msrp.HeaderContentType, Value: "text/plain"}}}
		if err := msrp.NewWriter(bound.nc).WriteFrame(f); err != nil {
			t.Fatal(err)
		}
		if got := bound.send("nofp0002", to, me, id("nofp00002"), []byte("after it"), msrp.FlagEnd); got != 200 {
			t.Fatalf("a SEND after one without From-Path: %d, want 200 on the same connection", got)
		}
		waitFor(t, 5*time.Second, "the message after it stored", func() bool { return pending() == 3 })
	})
}
