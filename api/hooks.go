package api

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"math"
	"mime"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/cloudwego/hertz/pkg/app"
	"github.com/cloudwego/hertz/pkg/app/server"
	"github.com/cloudwego/hertz/pkg/protocol/consts"

	"github.com/deferpush/deferpush/adapters/ingress"
	"github.com/deferpush/deferpush/adapters/kamailio"
	"github.com/deferpush/deferpush/adapters/opensips"
	"github.com/deferpush/deferpush/plugin"
)

// TokenHeader carries the hooks' shared secret.
const TokenHeader = "X-Deferpush-Token"

// hookReply is the body of every hook response. The route script maps it
// to the SIP reply without knowing the policy: SIPCode and SIPReason are
// what it sends to the sender of a MESSAGE. A refusal also carries the
// API's usual error object. Status, codes and HTTP status all come from
// plugin.OutcomeOf.
type hookReply struct {
	Status    plugin.Status `json:"status"`
	SIPCode   int           `json:"sip_code,omitempty"`
	SIPReason string        `json:"sip_reason,omitempty"`
	ID        string        `json:"id,omitempty"` // the stored message's id
	Error     *errorDetail  `json:"error,omitempty"`
}

// proxyDecoder turns one proxy's hook bodies into the engine's types,
// with the registrar's rules for addresses of record.
type proxyDecoder struct {
	registration   func(body []byte, now time.Time, rules plugin.AORRules) (plugin.Registration, error)
	unregistration func(body []byte, rules plugin.AORRules) (plugin.Unregistration, error)
	message        func(body []byte) (raw []byte, aor string, err error)
}

var proxies = map[string]proxyDecoder{
	"kamailio": {
		registration:   kamailio.DecodeRegistration,
		unregistration: kamailio.DecodeUnregistration,
		message: func(b []byte) ([]byte, string, error) {
			m, err := kamailio.DecodeMessage(b)
			return m.Raw, m.AOR, err
		},
	},
	"opensips": {
		registration: func(b []byte, _ time.Time, rules plugin.AORRules) (plugin.Registration, error) {
			return opensips.DecodeRegistration(b, rules)
		},
		unregistration: opensips.DecodeUnregistration,
		message: func(b []byte) ([]byte, string, error) {
			m, err := opensips.DecodeMessage(b)
			return m.Raw, m.AOR, err
		},
	},
}

// routeHooks registers the proxy hooks:
//
//	POST /hooks/{kamailio,opensips}/registered    a contact was saved
//	POST /hooks/{kamailio,opensips}/unregistered  a contact was removed
//	POST /hooks/{kamailio,opensips}/expired       a contact expired
//	POST /hooks/{kamailio,opensips}/message       store an offline MESSAGE
//
// Each needs the X-Deferpush-Token header and a source under its rate
// limit; otherwise nothing happens and the reply says why. A source outside
// HooksAllow, when it is set, is refused at the connection's accept
// (refuseHTTP).
func (s *Server) routeHooks(h *server.Hertz, rt *routes) {
	for name, d := range proxies {
		g := h.Group("/hooks/"+name, s.hookAuth)
		rt.handle(g, consts.MethodPost, "/registered", s.hookRegistered(d))
		rt.handle(g, consts.MethodPost, "/unregistered", s.hookUnregistered(d))
		rt.handle(g, consts.MethodPost, "/expired", s.hookUnregistered(d))
		rt.handle(g, consts.MethodPost, "/message", s.hookMessage(d))
	}
}

// hookAuth refuses calls from a source over its rate limit, without the
// shared token, with a body declared of another type than JSON (415; one
// without Content-Type is read as JSON), or with a body nested deeper
// than any hook body is. The limit comes before the token so that nobody can try
// tokens faster than it.
func (s *Server) hookAuth(ctx context.Context, c *app.RequestContext) {
	src, _ := netip.ParseAddrPort(c.RemoteAddr().String())
	ip := src.Addr().Unmap()
	if s.limiter != nil {
		if ok, wait := s.limiter.Allow(ip); !ok {
			s.cfg.Logger.Debug("hook call over the rate limit", "source", c.RemoteAddr().String(), "path", string(c.Path()))
			secs := max(1, int(math.Ceil(wait.Seconds())))
			c.Response.Header.Set("Retry-After", strconv.Itoa(secs))
			s.hookRefused(c, fmt.Errorf("%w: more than %g hook calls a second (burst %d) from %s; retry after %d s",
				plugin.ErrRateLimited, s.cfg.HooksRateLimit, s.limiter.Burst(), ip, secs), plugin.Policy{})
			c.Abort()
			return
		}
	}
	if subtle.ConstantTimeCompare(hookToken(c), []byte(s.cfg.HooksToken)) != 1 {
		s.cfg.Logger.Warn("hook call with a wrong token", "source", c.RemoteAddr().String(), "path", string(c.Path()))
		s.hookRefused(c, fmt.Errorf("%w: missing or wrong %s (or HTTP Basic password)", plugin.ErrUnauthorized, TokenHeader), plugin.Policy{})
		c.Abort()
		return
	}
	if ct := c.Request.Header.ContentType(); len(ct) > 0 && !jsonMediaType(string(ct)) {
		c.Response.Header.Set("Accept", mimeJSON)
		s.hookRefused(c, fmt.Errorf("%w: Content-Type %s: send %s", plugin.ErrMediaType, ct, mimeJSON), plugin.Policy{})
		c.Abort()
		return
	}
	switch media, body := jsonBodyProblem(c); {
	case media != "":
		c.Response.Header.Set("Accept", mimeJSON)
		s.hookRefused(c, fmt.Errorf("%w: %s", plugin.ErrMediaType, media), plugin.Policy{})
		c.Abort()
		return
	case body != "":
		s.hookRefused(c, &plugin.FieldError{Field: "body", Problem: body}, plugin.Policy{})
		c.Abort()
		return
	}
	if d := jsonDepth(c.Request.Body(), maxHookDepth); d > maxHookDepth {
		s.hookRefused(c, &plugin.FieldError{Field: "body", Problem: fmt.Sprintf("JSON nested deeper than %d levels", maxHookDepth)}, plugin.Policy{})
		c.Abort()
		return
	}
	c.Next(ctx)
}

// jsonMediaType reports whether ct names JSON: application/json or a
// structured syntax suffix +json (RFC 6839), any parameters.
func jsonMediaType(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && (mt == mimeJSON || strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json"))
}

// hookToken is the token a hook call presents: its X-Deferpush-Token
// header, or when it has none the password of its HTTP Basic
// credentials (RFC 7617; any user name), which is how Kamailio's
// http_client sends it over a kept-alive connection (http_connect has no
// custom headers). Nil when it presents neither.
func hookToken(c *app.RequestContext) []byte {
	if t := c.Request.Header.Peek(TokenHeader); len(t) > 0 {
		return t
	}
	auth := c.Request.Header.Peek("Authorization")
	const scheme = "basic "
	if len(auth) <= len(scheme) || !strings.EqualFold(string(auth[:len(scheme)]), scheme) {
		return nil
	}
	cred, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(auth[len(scheme):])))
	if err != nil {
		return nil
	}
	_, pass, ok := bytes.Cut(cred, []byte(":"))
	if !ok {
		return nil
	}
	return pass
}

// hookStoreBound bounds the store's part of a registration hook, as the
// message hook's is bounded: a Redis that stalls is answered 503 within
// it, under the shipped scripts' 5 s hook timeout, not after a wait as
// long as Redis's (a registration not recorded is kept and retried by
// the engine).
const hookStoreBound = 3 * time.Second

func (s *Server) hookRegistered(d proxyDecoder) app.HandlerFunc {
	return func(ctx context.Context, c *app.RequestContext) {
		ctx, cancel := context.WithTimeout(ctx, hookStoreBound)
		defer cancel()
		r, err := d.registration(c.Request.Body(), time.Now(), s.cfg.AORRules)
		if err != nil {
			s.hookRefused(c, err, plugin.Policy{})
			return
		}
		// A binding that ends now is an unregistration, and answered so.
		if !r.Expires.After(time.Now()) {
			if err := s.cfg.Engine.Unregistered(ctx, plugin.Unregistration{AOR: r.AOR, Contact: r.Contact, At: r.At}); err != nil {
				s.hookRefused(c, err, plugin.Policy{})
				return
			}
			writeHook(c, plugin.OutcomeFor(plugin.StatusUnregistered, plugin.Policy{}), "", nil)
			return
		}
		// The engine records the contact and starts any push in the
		// background: the hook returns at once.
		if err := s.cfg.Engine.Registered(ctx, r); err != nil {
			s.cfg.Logger.Error("registration hook", "aor", r.AOR, "err", err)
			s.hookRefused(c, err, plugin.Policy{})
			return
		}
		writeHook(c, plugin.OutcomeFor(plugin.StatusRegistered, plugin.Policy{}), "", nil)
	}
}

func (s *Server) hookUnregistered(d proxyDecoder) app.HandlerFunc {
	return func(ctx context.Context, c *app.RequestContext) {
		ctx, cancel := context.WithTimeout(ctx, hookStoreBound)
		defer cancel()
		u, err := d.unregistration(c.Request.Body(), s.cfg.AORRules)
		if err == nil {
			err = s.cfg.Engine.Unregistered(ctx, u)
		}
		if err != nil {
			s.hookRefused(c, err, plugin.Policy{})
			return
		}
		writeHook(c, plugin.OutcomeFor(plugin.StatusUnregistered, plugin.Policy{}), "", nil)
	}
}

func (s *Server) hookMessage(d proxyDecoder) app.HandlerFunc {
	return func(ctx context.Context, c *app.RequestContext) {
		p, err := s.cfg.Engine.Policy(ctx)
		if err != nil {
			s.hookRefused(c, err, plugin.DefaultPolicy())
			return
		}
		raw, aor, err := d.message(c.Request.Body())
		var m *plugin.Message
		if err == nil {
			m, err = ingress.Deferred(raw, aor, time.Now(), s.cfg.AORRules)
		}
		if err == nil {
			err = s.cfg.Engine.Store(ctx, m)
		}
		if err != nil {
			s.hookRefused(c, err, p)
			return
		}
		writeHook(c, plugin.OutcomeOf(nil, p), m.ID, nil)
	}
}

// hookRefused answers a hook call that changed nothing with the outcome
// of err under policy p.
func (s *Server) hookRefused(c *app.RequestContext, err error, p plugin.Policy) {
	o := plugin.OutcomeOf(err, p)
	switch o.Status {
	case plugin.StatusError:
		s.cfg.Logger.Error("hook failed", "path", string(c.Path()), "err", err)
	case plugin.StatusUnauthorized, plugin.StatusForbidden, plugin.StatusRateLimited:
		// hookAuth logged it (a call over the rate limit at debug only).
	default:
		// A refusal the proxy logs at most as an HTTP status: say why here
		// (the reason names the field, never the token).
		s.cfg.Logger.Warn("hook call refused", "path", string(c.Path()), "source", c.RemoteAddr().String(),
			"status", o.Status, "reason", err.Error())
	}
	writeHook(c, o, "", err)
}

// hookChallenge is the WWW-Authenticate of a hook call refused 401 (RFC
// 9110 §15.5.2 requires one): HTTP Basic, whose password is the token.
// The X-Deferpush-Token header, which the hooks take first, is no HTTP
// authentication scheme and has no challenge of its own.
const hookChallenge = `Basic realm="deferpush hooks", charset="UTF-8"`

func writeHook(c *app.RequestContext, o plugin.Outcome, id string, err error) {
	if o.HTTP == consts.StatusUnauthorized {
		c.Response.Header.Set("WWW-Authenticate", hookChallenge)
	}
	r := hookReply{Status: o.Status, SIPCode: o.SIPCode, SIPReason: o.SIPReason, ID: id}
	if err != nil {
		r.Error = &errorDetail{Code: string(o.Status), Message: err.Error()}
	}
	c.JSON(o.HTTP, r)
}
