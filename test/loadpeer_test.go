package test

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"testing"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/deferpush/deferpush/plugin/encap"
	"github.com/deferpush/deferpush/plugin/guard"
	"github.com/deferpush/deferpush/plugin/msrp"
	"github.com/deferpush/deferpush/plugin/sdp"
)

// loadPeer is many users' IM clients in one: one SIP listener and one MSRP
// listener answer the pushes to any user registered with a Contact on it,
// so that a load test can run thousands of users without thousands of
// sockets. It answers every INVITE 200 with an MSRP answer
// (a=setup:passive), every SEND 200, every BYE 200, and counts what each
// user received by Call-ID.
type loadPeer struct {
	sipAddr string
	port    int
	srv     *sipgo.Server
	ua      *sipgo.UserAgent
	dialogs *sipgo.DialogServerCache
	ml      *msrp.Listener

	mu       sync.Mutex
	sessions map[string]*msrp.Session // by Call-ID of the push dialog
	got      map[string]int           // "user/call-id" -> times received
	unique   int
	dups     int
	invites  int
	changed  chan struct{}
}

func startLoadPeer(t testing.TB) *loadPeer {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	p := &loadPeer{sessions: map[string]*msrp.Session{}, got: map[string]int{}, changed: make(chan struct{})}
	var err error
	p.ua, err = sipgo.NewUA(sipgo.WithUserAgent("deferpush-loadpeer"), sipgo.WithUserAgentHostname("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	p.srv, err = sipgo.NewServer(p.ua, sipgo.WithServerLogger(log))
	if err != nil {
		t.Fatal(err)
	}
	cli, err := sipgo.NewClient(p.ua, sipgo.WithClientHostname("127.0.0.1"), sipgo.WithClientLogger(log))
	if err != nil {
		t.Fatal(err)
	}
	// A Contact without ;transport reaches us over UDP.
	tl, ul, err := guard.ListenTCPAndUDP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.port = tl.Addr().(*net.TCPAddr).Port
	p.sipAddr = tl.Addr().String()
	p.dialogs = sipgo.NewDialogServerCache(cli, sip.ContactHeader{Address: sip.Uri{Scheme: "sip", Host: "127.0.0.1", Port: p.port,
		UriParams: sip.HeaderParams{{K: "transport", V: "tcp"}}}})
	p.ml, err = msrp.NewListener(msrp.ListenerConfig{Addr: "127.0.0.1:0", Host: "127.0.0.1", Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	p.srv.OnInvite(p.onInvite)
	p.srv.OnAck(func(req *sip.Request, tx sip.ServerTransaction) { _ = p.dialogs.ReadAck(req, tx) })
	p.srv.OnBye(p.onBye)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 3)
	go func() { _ = p.srv.ServeTCP(tl); done <- struct{}{} }()
	go func() { _ = p.srv.ServeUDP(ul); done <- struct{}{} }()
	go func() { _ = p.ml.Run(ctx); done <- struct{}{} }()
	t.Cleanup(func() {
		cancel()
		tl.Close()
		ul.Close()
		<-done
		<-done
		<-done
		p.mu.Lock()
		for _, s := range p.sessions {
			s.Close()
		}
		p.mu.Unlock()
		p.srv.Close()
		p.ua.Close()
	})
	return p
}

func (p *loadPeer) onInvite(req *sip.Request, tx sip.ServerTransaction) {
	user := req.Recipient.User
	dlg, err := p.dialogs.ReadInvite(req, tx)
	if err != nil {
		_ = tx.Respond(sip.NewResponseFromRequest(req, 400, err.Error(), nil))
		return
	}
	offer, err := sdp.Parse(req.Body())
	if err != nil {
		_ = dlg.Respond(488, "Not Acceptable Here", nil)
		return
	}
	local := p.ml.URI()
	local.SessionID = msrp.NewSessionID()
	ms, err := msrp.NewSession(msrp.Config{Local: local, Handler: msrp.HandlerFunc(func(ctx context.Context, s *msrp.Session, m *msrp.Message) error {
		d, err := encap.Decode(m.ContentType, m.Body)
		if err != nil {
			return msrp.Status(msrp.StatusUnsupportedMedia)
		}
		p.record(user, d.CallID)
		return nil
	})})
	if err == nil {
		err = p.ml.Add(ms, offer.Path)
	}
	if err != nil {
		_ = dlg.Respond(500, "Server Internal Error", nil)
		return
	}
	answer, err := sdp.Build(sdp.Media{Path: []msrp.URI{local}, AcceptTypes: []string{encap.TypeSIP, encap.TypeMultipart, encap.TypeMSRP}, Setup: sdp.SetupPassive})
	if err != nil {
		ms.Close()
		_ = dlg.Respond(500, "Server Internal Error", nil)
		return
	}
	p.mu.Lock()
	p.sessions[req.CallID().Value()] = ms
	p.invites++
	p.mu.Unlock()
	_ = dlg.RespondSDP(answer)
}

func (p *loadPeer) onBye(req *sip.Request, tx sip.ServerTransaction) {
	if err := p.dialogs.ReadBye(req, tx); err != nil {
		_ = tx.Respond(sip.NewResponseFromRequest(req, 481, "Call/Transaction Does Not Exist", nil))
		return
	}
	p.mu.Lock()
	ms := p.sessions[req.CallID().Value()]
	delete(p.sessions, req.CallID().Value())
	p.mu.Unlock()
	if ms != nil {
		go ms.Close()
	}
}

func (p *loadPeer) record(user, callID string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	k := user + "/" + callID
	p.got[k]++
	if p.got[k] == 1 {
		p.unique++
	} else {
		p.dups++
	}
	close(p.changed)
	p.changed = make(chan struct{})
}

// wait blocks until at least n distinct messages arrived or ctx ends.
func (p *loadPeer) wait(ctx context.Context, n int) (int, error) {
	for {
		p.mu.Lock()
		u, ch := p.unique, p.changed
		p.mu.Unlock()
		if u >= n {
			return u, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return u, ctx.Err()
		}
	}
}

func (p *loadPeer) counts() (unique, dups, invites int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.unique, p.dups, p.invites
}
