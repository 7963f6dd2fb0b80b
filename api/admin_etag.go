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

// conditions are a request's If-Match and If-None-Match (RFC 9110
// §13.1.1, §13.1.2), each the entity tags (or "*") its field lines list:
// several lines of one field are one comma-separated list (§5.3), so
// every line counts. A nil list: the field is absent (or empty).
//
// Every admin resource evaluates them, in the order of §13.2.2, once the
// request is otherwise acceptable (§13.2.1: a request refused 400 or 404
// without them is refused so with them): against its ETag where it has
// one (the policy, a user's settings, a mailbox's messages, one message),
// atomically with a write; against no tag where it has none, where If-Match
// holds only as "*" and If-None-Match only fails as "*"; against no
// representation at all for the POST actions (requeue, push), where
// If-Match never holds.
type conditions struct {
	ifMatch, ifNoneMatch []string
}

func readConditions(c *app.RequestContext) conditions {
	return conditions{ifMatch: tagList(c, "If-Match"), ifNoneMatch: tagList(c, "If-None-Match")}
}

// any reports whether the request has either field.
func (cs conditions) any() bool { return cs.ifMatch != nil || cs.ifNoneMatch != nil }

// tagList reads every field line of name as a list of entity tags: W/
// and a quoted string (which may hold a comma), "*", or anything else up
// to the next comma, kept as it is (it matches no tag).
func tagList(c *app.RequestContext, name string) []string {
	var tags []string
	for _, line := range c.Request.Header.PeekAll(name) {
		s := string(line)
		for {
			s = strings.TrimLeft(s, " \t,")
			if s == "" {
				break
			}
			q := 0
			if strings.HasPrefix(s, "W/") {
				q = len("W/")
			}
			end := strings.IndexByte(s, ',')
			if q < len(s) && s[q] == '"' {
				end = -1
				if i := strings.IndexByte(s[q+1:], '"'); i >= 0 {
					end = q + i + 2 // past the closing quote
				}
			}
			if end < 0 {
				end = len(s)
			}
			tags = append(tags, strings.TrimRight(s[:end], " \t"))
			s = s[end:]
		}
	}
	return tags
}

// ifMatchFails reports whether If-Match is present and false (§13.1.1):
// no "*" while the target has a current representation (exists), and no
// tag strongly equal to the target's tag ("" when it has none, which no
// tag equals; a weak tag never does).
func (cs conditions) ifMatchFails(exists bool, tag string) bool {
	if cs.ifMatch == nil {
		return false
	}
	for _, t := range cs.ifMatch {
		if t == "*" && exists || tag != "" && t == tag {
			return false
		}
	}
	return true
}

// ifNoneMatchFails reports whether If-None-Match is false (§13.1.2): "*"
// while the target has a current representation, or a tag weakly equal
// to the target's tag (W/"x" matches "x").
func (cs conditions) ifNoneMatchFails(exists bool, tag string) bool {
	for _, t := range cs.ifNoneMatch {
		if t == "*" && exists || tag != "" && strings.TrimPrefix(t, "W/") == tag {
			return true
		}
	}
	return false
}

// read evaluates the conditions of a GET or HEAD of what, which exists
// and whose representation has tag ("" when it has no ETag): a false
// If-Match is 412; a false If-None-Match is answered 304 Not Modified,
// with the ETag (if any) and no body (§15.4.5), and read reports done.
func (cs conditions) read(c *app.RequestContext, what, tag string) (done bool, err error) {
	if cs.ifMatchFails(true, tag) {
		return false, cs.matchFailed(what, true, tag)
	}
	if !cs.ifNoneMatchFails(true, tag) {
		return false, nil
	}
	if tag != "" {
		c.Response.Header.Set("ETag", tag)
	}
	c.Status(consts.StatusNotModified)
	return true, nil
}

// write evaluates the conditions of a request that changes what: exists
// says whether it has a current representation, tag is its ETag ("" when
// it has none). Either condition false is 412, If-Match first (§13.2.2).
// Called inside the atomic update that writes, where there is one.
func (cs conditions) write(what string, exists bool, tag string) error {
	if cs.ifMatchFails(exists, tag) {
		return cs.matchFailed(what, exists, tag)
	}
	if cs.ifNoneMatchFails(exists, tag) {
		msg := "If-None-Match " + strings.Join(cs.ifNoneMatch, ", ") + " matches the " + what
		if tag != "" {
			msg += " (now " + tag + ")"
		}
		return errPrecondition(msg + ": nothing changed")
	}
	return nil
}

func (cs conditions) matchFailed(what string, exists bool, tag string) error {
	h := strings.Join(cs.ifMatch, ", ")
	switch {
	case !exists:
		return errPrecondition("If-Match " + h + " cannot hold: the " + what + " has no representation to match; nothing changed")
	case tag == "":
		return errPrecondition("If-Match " + h + " cannot hold: the " + what + " has no ETag (only * matches it); nothing changed")
	}
	return errPrecondition("the " + what + " changed since " + h + " was read (now " + tag + "): GET it again and redo the change")
}
