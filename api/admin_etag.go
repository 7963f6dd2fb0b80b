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
