// Package push is deferpush's Pusher: it delivers deferred messages to a
// registered client as the seed's Figure 2 shows — a SIP INVITE with an MSRP
// offer through the outbound proxy, ACK, one MSRP SEND per message carrying
// the stored message encapsulated (plugin/encap), then BYE.
//
// It speaks SIP with sipgo and MSRP with plugin/msrp. deferpush offers
// a=setup:actpass: it connects to the path of the answer unless the answer
// says a=setup:active, in which case the client connects to deferpush's
// MSRP listener (RFC 6135).
//
// A 200 to a SEND only says that the next hop took it. When the client's
// path goes through an MSRP relay (RFC 4976) — unless every relay on it
// is in Config.TrustedRelays — or the policy asks for success reports, a
// message counts as delivered only once the client's success REPORT is
// in, whichever connection the relay brings it on (msrp.Listener.AddActive).
// A REPORT that does not come ends the session with the messages kept
// (plugin.ErrUnconfirmed).
package push

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/plugin/encap"
	"github.com/deferpush/deferpush/plugin/msrp"
)

// Config configures a Pusher.
type Config struct {
	// Client sends the INVITE, ACK, CANCEL and BYE. Required.
	Client *sipgo.Client
	// Contact is our Contact URI, where the client's in-dialog requests
	// (its BYE) reach us, e.g. sip:deferpush@192.0.2.1:5070;transport=tcp.
	// Required.
	Contact string
	// From is the From URI of our INVITEs. Empty means
	// sip:deferpush@<Contact host>.
	From string
	// OutboundProxy is the SIP URI INVITEs are routed through (a Route
	// header with ;lr). Empty sends them to the Request-URI directly.
	OutboundProxy string
	// MSRP is our MSRP listener: its URI is the path we offer, and it takes
	// the client's connection when the answer says a=setup:active.
	// Required.
	MSRP *msrp.Listener
	// ChunkSize is the largest body of one MSRP SEND. Zero means 2048.
	ChunkSize int
	// MSRPTimeout bounds the wait for each MSRP response (a local 408
	// after it) and for a passive client to connect. Zero means 30 s.
	MSRPTimeout time.Duration
	// TLS configures the msrps connections to clients whose answer has an
	// msrps path. Nil uses the system roots and the host of the path.
	// Whether we offer msrps is the listener's choice: a TLS listener
	// offers TCP/TLS/MSRP with an msrps path.
	TLS *tls.Config
	// Window is the number of messages a session keeps in flight: sent,
	// their confirmation awaited. Zero means 16; 1 sends each message
	// only once the previous one is confirmed.
	Window int
	// TrustedRelays are networks of MSRP relays whose 200 to a SEND is
	// taken as the client's confirmation (relays the operator runs). A
	// client whose path goes through a relay is otherwise asked for a
	// success REPORT, as a relay's 200 only says the relay took the
	// message. Every relay on the path must resolve to addresses inside
	// these networks. Nil trusts none.
	TrustedRelays []netip.Prefix
	// Logger; nil discards.
	Logger *slog.Logger
}

// Pusher implements plugin.Pusher.
type Pusher struct {
	cfg     Config
	contact sip.ContactHeader
	from    sip.Uri
	route   *sip.Uri
	dialogs sync.Map // dialog ID → *dialog, of the sessions in progress
	// forwards holds a token per client notification being forwarded
	// (forwardIMDN).
	forwards chan struct{}
	log      *slog.Logger
}

var _ plugin.Pusher = (*Pusher)(nil)

// acceptTypes is what our offer's a=accept-types lists: the types
// deferpush takes in a push session (RFC 4975 §8.6), message/cpim among
// them for a client's IMDNs (inbound.go). They are the types it sends,
// too: the list is kept as it was, so the offer's bytes did not change.
var acceptTypes = []string{encap.TypeSIP, encap.TypeMSRP, encap.TypeMultipart, encap.TypeCPIM, encap.TypeSIPFrag}

// acceptWrappedTypes is our offer's a=accept-wrapped-types: inside
// message/cpim deferpush takes a client's notifications (RFC 5438), which
// it forwards to their sender, and nothing else (RFC 4975 §8.6: without
// the attribute a client could wrap only what a=accept-types lists).
var acceptWrappedTypes = []string{encap.TypeIMDN}

// New returns a Pusher.
func New(cfg Config) (*Pusher, error) {
	if cfg.Client == nil || cfg.MSRP == nil || cfg.Contact == "" {
		return nil, errors.New("push: Client, Contact and MSRP are required")
	}
	if cfg.ChunkSize == 0 {
		cfg.ChunkSize = 2048
	}
	if cfg.MSRPTimeout == 0 {
		cfg.MSRPTimeout = 30 * time.Second
	}
	if cfg.Window <= 0 {
		cfg.Window = 16
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	p := &Pusher{cfg: cfg, log: cfg.Logger, forwards: make(chan struct{}, maxForwards)}
	if err := sip.ParseUri(cfg.Contact, &p.contact.Address); err != nil {
		return nil, fmt.Errorf("push: contact %q: %w", cfg.Contact, err)
	}
	from := cfg.From
	if from == "" {
		from = "sip:deferpush@" + p.contact.Address.Host
	}
	if err := sip.ParseUri(from, &p.from); err != nil {
		return nil, fmt.Errorf("push: from %q: %w", from, err)
	}
	if cfg.OutboundProxy != "" {
		var u sip.Uri
		if err := sip.ParseUri(cfg.OutboundProxy, &u); err != nil {
			return nil, fmt.Errorf("push: outbound proxy %q: %w", cfg.OutboundProxy, err)
		}
		if u.UriParams == nil {
			u.UriParams = sip.NewParams()
		}
		u.UriParams.Add("lr", "")
		p.route = &u
	}
	return p, nil
}

// deferred is what encap needs of a stored message.
func deferred(m *plugin.Message) encap.Deferred {
	if m.Kind == plugin.KindMSRPSession {
		return encap.Deferred{Kind: encap.KindMSRP, Stored: m.Raw, Head: m.Invite}
	}
	return encap.Deferred{Kind: encap.KindSIP, Stored: m.Raw}
}

// preference maps the policy's encapsulation to encap's preference, one
// to one: both name the media type tried first ("auto" aside).
func preference(e plugin.Encapsulation) encap.Preference {
	switch e {
	case plugin.EncapSIP:
		return encap.PreferSIP
	case plugin.EncapSIPFrag:
		return encap.PreferSIPFrag
	case plugin.EncapCPIM:
		return encap.PreferCPIM
	case plugin.EncapMSRP:
		return encap.PreferMSRP
	case plugin.EncapMultipart:
		return encap.PreferMultipart
	}
	return encap.PreferAuto
}

// trusted reports whether every relay resolves to addresses inside
// Config.TrustedRelays. A name that does not resolve is not trusted.
func (p *Pusher) trusted(ctx context.Context, relays []msrp.URI) bool {
	if len(p.cfg.TrustedRelays) == 0 {
		return false
	}
	for _, r := range relays {
		ips := []netip.Addr(nil)
		if ip, err := netip.ParseAddr(r.Host); err == nil {
			ips = append(ips, ip)
		} else {
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			ips, err = net.DefaultResolver.LookupNetIP(rctx, "ip", r.Host)
			cancel()
			if err != nil || len(ips) == 0 {
				return false
			}
		}
		for _, ip := range ips {
			if !slices.ContainsFunc(p.cfg.TrustedRelays, func(n netip.Prefix) bool { return n.Contains(ip.Unmap()) }) {
				return false
			}
		}
	}
	return true
}
