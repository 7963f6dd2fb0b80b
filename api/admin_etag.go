package api

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strings"

	"github.com/cloudwego/hertz/pkg/app"
	"github.com/cloudwego/hertz/pkg/protocol/consts"
)

// etagOf is the strong entity tag of a representation (RFC 9110 §8.8.3):
// a digest of its JSON, so that two instances give the same tag for the
// same policy or settings, and a value changed and changed back has its
// old tag again (a client holding it sees what it saw).
func etagOf(v any) string {
	b, _ := json.Marshal(v)
	sum := sha256.Sum256(b)
	return `"` + hex.EncodeToString(sum[:12]) + `"`
}

// noneMatch reports whether the request's If-None-Match matches tag (RFC
// 9110 §13.1.2: weak comparison, so W/"x" matches "x"), which makes its
// condition false. "*" matches any current representation, and the policy
// and every user's settings always have one (a GET answers 200 even for a
// user without settings). No If-None-Match: false.
func noneMatch(c *app.RequestContext, tag string) bool {
	h := strings.TrimSpace(string(c.Request.Header.Peek("If-None-Match")))
	if h == "" {
		return false
	}
	if h == "*" {
		return true
	}
	for t := range strings.SplitSeq(h, ",") {
		if strings.TrimPrefix(strings.TrimSpace(t), "W/") == tag {
			return true
		}
	}
	return false
}

// notModified answers 304 Not Modified, with the ETag and no body, to a
// GET or HEAD whose If-None-Match matches tag (RFC 9110 §13.1.2, §15.4.5),
// and reports whether it did.
func notModified(c *app.RequestContext, tag string) bool {
	if !noneMatch(c, tag) {
		return false
	}
	c.Response.Header.Set("ETag", tag)
	c.Status(consts.StatusNotModified)
	return true
}

// checkIfNoneMatch refuses a write whose If-None-Match matches current
// (RFC 9110 §13.1.2: 412 for methods other than GET and HEAD); "*" always
// does, the resource existing. Called, like checkIfMatch, inside the
// atomic update, after it (§13.2.2 evaluates If-Match first).
func checkIfNoneMatch(c *app.RequestContext, what string, current any) error {
	tag := etagOf(current)
	if !noneMatch(c, tag) {
		return nil
	}
	return &apiError{status: consts.StatusPreconditionFailed, code: "precondition_failed",
		msg: "If-None-Match " + strings.TrimSpace(string(c.Request.Header.Peek("If-None-Match"))) +
			" matches the " + what + " (now " + tag + "): nothing changed"}
}

// checkPreconditions is checkIfMatch, then checkIfNoneMatch.
func checkPreconditions(c *app.RequestContext, what string, current any) error {
	if err := checkIfMatch(c, what, current); err != nil {
		return err
	}
	return checkIfNoneMatch(c, what, current)
}

// checkIfMatch refuses a write whose If-Match names none of current's
// tags (RFC 9110 §13.1.1, strong comparison: a weak tag never matches).
// No If-Match, or "*", allows any write.
func checkIfMatch(c *app.RequestContext, what string, current any) error {
	h := strings.TrimSpace(string(c.Request.Header.Peek("If-Match")))
	if h == "" || h == "*" {
		return nil
	}
	tag := etagOf(current)
	for t := range strings.SplitSeq(h, ",") {
		if strings.TrimSpace(t) == tag {
			return nil
		}
	}
	return &apiError{status: consts.StatusPreconditionFailed, code: "precondition_failed",
		msg: "the " + what + " changed since " + h + " was read (now " + tag + "): GET it again and redo the change"}
}
