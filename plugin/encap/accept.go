package encap

import (
	"mime"
	"strings"

	"github.com/deferpush/deferpush/plugin/abnf"
)

// mediaType returns the type/subtype of a Content-Type or accept-types
// entry, parameters dropped, case kept.
func mediaType(s string) string {
	s, _, _ = strings.Cut(s, ";")
	return strings.TrimSpace(s)
}

// accepted reports whether the media type of ct matches one of the
// patterns, as RFC 4975 §8.6 matches a=accept-types: "*" matches anything,
// "type/*" any subtype of type, case-insensitively, parameters ignored.
// "*/*", which some clients send, is taken as "*".
func accepted(ct string, patterns ...[]string) bool {
	mt := mediaType(ct)
	typ, _, ok := strings.Cut(mt, "/")
	if !ok || typ == "" {
		return false
	}
	for _, ps := range patterns {
		for _, p := range ps {
			p = mediaType(p)
			if p == "*" || p == "*/*" || strings.EqualFold(p, mt) ||
				strings.HasSuffix(p, "/*") && strings.EqualFold(p[:len(p)-2], typ) {
				return true
			}
		}
	}
	return false
}

// wrappable reports whether a client with the accept-types and
// accept-wrapped-types of o takes ct inside a wrapper (message/cpim,
// multipart/mixed): a client that lists accept-wrapped-types has said
// which types it takes wrapped (RFC 4975 §8.6; an RCS client lists
// message/cpim in accept-types and the CPIM contents, text/plain and
// message/imdn+xml, in accept-wrapped-types); one that lists none takes
// wrapped what it takes at all.
func wrappable(ct string, o Options) bool {
	if len(o.AcceptWrappedTypes) > 0 {
		return accepted(ct, o.AcceptWrappedTypes)
	}
	return accepted(ct, o.AcceptTypes)
}

// validMediaType reports whether ct is "type/subtype" with optional
// parameters, fit to be written as a header value.
func validMediaType(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	typ, sub, ok := strings.Cut(mt, "/")
	return err == nil && ok && abnf.IsSIPToken(typ) && abnf.IsSIPToken(sub) && !strings.ContainsAny(ct, "\r\n")
}
