package ingress

import (
	"context"
	"crypto/subtle"
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"strconv"

	"github.com/emiago/sipgo/sip"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/plugin/guard"
)

// SecretHeader carries the shared secret the proxy adds to every MESSAGE
// and INVITE it relays to the ingress (kamailio.cfg: append_hf before
// t_relay). The ingress removes it before anything is stored.
const SecretHeader = "X-Deferpush-Secret"

// Trust says whom the ingress takes MESSAGE and session INVITE requests
// from: the proxies it serves. The zero value takes them from anyone;
// deferpush's configuration always sets Sources and Secret.
type Trust struct {
	// Off switches the ingress off: MESSAGE and INVITE get 405 (the hooks
	// store messages then).
	Off bool
	// Sources are the networks requests may come from; empty: any.
	Sources []netip.Prefix
	// Secret, when set, must be the value of SecretHeader (compared in
	// constant time).
	Secret string
	// Limiter, when set, bounds the requests of each source address; one
	// over it gets 503 with Retry-After.
	Limiter *guard.RateLimiter
}

// admit checks req against the trust settings and returns the refusal,
// or nil; it removes the secret from req either way, every instance of
// SecretHeader whatever the case of its name (header names are
// case-insensitive, RFC 3261 §7.3.1). When a Secret is set, req must carry
// exactly one SecretHeader, holding it: the proxy scripts remove any the
// sender added before adding theirs, so a second one is refused rather
// than one of them chosen. retryAfter is set (seconds) when the refusal is
// the rate limit.
func (t Trust) admit(req *sip.Request) (retryAfter int, err error) {
	secrets := removeSecret(req)
	if t.Off {
		return 0, fmt.Errorf("%w: the SIP ingress is switched off (sip.ingress: false)", plugin.ErrNotServed)
	}
	src := sourceAddr(req.Source())
	if len(t.Sources) > 0 && !contains(t.Sources, src) {
		return 0, fmt.Errorf("%w: source %s is not in sip.trusted_sources", plugin.ErrNotTrusted, src)
	}
	if t.Limiter != nil {
		if ok, wait := t.Limiter.Allow(src); !ok {
			secs := max(1, int(math.Ceil(wait.Seconds())))
			return secs, fmt.Errorf("%w: more than %g requests a second (burst %d) from %s; retry after %d s",
				plugin.ErrRateLimited, t.Limiter.Rate(), t.Limiter.Burst(), src, secs)
		}
	}
	if t.Secret == "" {
		return 0, nil
	}
	if len(secrets) > 1 {
		return 0, fmt.Errorf("%w: %d %s headers, want one", plugin.ErrNotTrusted, len(secrets), SecretHeader)
	}
	if len(secrets) == 0 || subtle.ConstantTimeCompare([]byte(secrets[0]), []byte(t.Secret)) != 1 {
		return 0, fmt.Errorf("%w: missing or wrong %s header", plugin.ErrNotTrusted, SecretHeader)
	}
	return 0, nil
}

// removeSecret removes every SecretHeader from req, whatever the case of
// its name, and returns their values in order. sipgo's GetHeaders matches
// names in any case but its RemoveHeader only the exact spelling given, so
// each instance is removed by the name it was written with.
func removeSecret(req *sip.Request) []string {
	hs := req.GetHeaders(SecretHeader)
	values := make([]string, 0, len(hs))
	for _, h := range hs {
		values = append(values, h.Value())
	}
	for _, h := range hs {
		for req.RemoveHeader(h.Name()) {
		}
	}
	return values
}

// sourceAddr is the address of a request's source ("host:port"); the zero
// Addr when it cannot be read (which no network contains).
func sourceAddr(s string) netip.Addr {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

func contains(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// The methods the stack serves with the ingress switched off (see
// allowWithIngress).
const allowWithoutIngress = "ACK, BYE, CANCEL, OPTIONS"

// refuse answers a request the trust settings refused.
func (in *Ingress) refuse(req *sip.Request, tx sip.ServerTransaction, retryAfter int, err error) {
	o := plugin.OutcomeOf(err, plugin.Policy{})
	level := slog.LevelWarn
	if o.Status == plugin.StatusRateLimited {
		level = slog.LevelDebug // a flood would flood the log too
	}
	in.log.Log(context.Background(), level, "ingress request refused", "method", string(req.Method),
		"source", req.Source(), "call_id", callID(req), "status", o.Status, "err", err)
	var hdrs []sip.Header
	if retryAfter > 0 {
		hdrs = append(hdrs, sip.NewHeader("Retry-After", strconv.Itoa(retryAfter)))
	}
	if o.Status == plugin.StatusNotServed {
		hdrs = append(hdrs, sip.NewHeader("Allow", allowWithoutIngress))
	}
	respond(in.log, req, tx, o, err, hdrs...)
}
