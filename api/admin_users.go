package api

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/cloudwego/hertz/pkg/app"
	"github.com/cloudwego/hertz/pkg/protocol/consts"

	"github.com/deferpush/deferpush/adapters/ingress"
	"github.com/deferpush/deferpush/plugin"
)

// Paging of message listings. A page ends before the message whose size
// would take its messages' sizes past maxPageBytes (its first message
// comes whatever its size): Redis reads a record whole even to list its
// metadata, at about 1 ms per MiB, and a page with the stored bytes
// (?body=true) holds them several times over on their way to JSON. 4 MiB
// is what the sweeper reads per call (dp_expire). With the bytes a page
// holds at most maxBodyPageLimit messages. So what one listing costs the
// store and this process is bounded, whatever senders stored.
const (
	defaultPageLimit = 50
	maxPageLimit     = 1000
	maxBodyPageLimit = 50
	maxPageBytes     = 4 << 20
)

// ---- settings ----

func (a *admin) getSettings(ctx context.Context, c *app.RequestContext, r userRequest) error {
	if err := noQuery(c); err != nil {
		return err
	}
	u, err := a.store.UserSettings(ctx, r.aor)
	if err != nil {
		return err
	}
	tag := etagOf(u)
	if done, err := readConditions(c).read(c, "user's settings", tag); done || err != nil {
		return err
	}
	c.Response.Header.Set("ETag", tag)
	return reply(c, consts.StatusOK, u)
}

// putSettings replaces a user's settings. Every field is optional: an
// absent or null one follows the operator policy.
func (a *admin) putSettings(ctx context.Context, c *app.RequestContext, r userRequest) error {
	if err := noQuery(c); err != nil {
		return err
	}
	obj, err := readObject(c, mimeJSON)
	if err != nil {
		return err
	}
	var u plugin.UserSettings
	if err := setFields(&u, obj, plugin.UserSettings{}, mergePatch); err != nil {
		return err
	}
	if err := u.Validate(); err != nil {
		return err
	}
	p, err := a.engine.Policy(ctx)
	if err != nil {
		return err
	}
	if u.MaxPerSession > p.MaxPerSession {
		return errExceedsPolicy("max_per_session", fmt.Sprintf(
			"max_per_session %d is above the operator's max_per_session %d: a user may only lower it", u.MaxPerSession, p.MaxPerSession))
	}
	cs := readConditions(c)
	if _, _, err := a.store.UpdateUserSettings(ctx, r.aor, func(cur *plugin.UserSettings) error {
		if err := cs.write("user's settings", true, etagOf(*cur)); err != nil {
			return err
		}
		*cur = u
		return nil
	}); err != nil {
		return err
	}
	c.Response.Header.Set("ETag", etagOf(u))
	a.log.InfoContext(ctx, "user settings changed", "changed_by", r.who.name, "aor", r.aor, "push", u.Push, "max_per_session", u.MaxPerSession,
		"delivery", u.Delivery, "pager_below", u.PagerBelow)
	return reply(c, consts.StatusOK, u)
}

func (a *admin) deleteSettings(ctx context.Context, c *app.RequestContext, r userRequest) error {
	if err := noQuery(c); err != nil {
		return err
	}
	var err error
	if cs := readConditions(c); cs.any() {
		// Back to the policy only if If-Match and If-None-Match hold for
		// the settings in force: settings changed to none are removed in
		// the transaction that checked them, so a write landing after the
		// check is refused there (412) or stays.
		_, _, err = a.store.UpdateUserSettings(ctx, r.aor, func(cur *plugin.UserSettings) error {
			if err := cs.write("user's settings", true, etagOf(*cur)); err != nil {
				return err
			}
			*cur = plugin.UserSettings{}
			return nil
		})
	} else {
		err = a.store.DeleteUserSettings(ctx, r.aor)
	}
	if err != nil {
		return err
	}
	a.log.InfoContext(ctx, "user settings removed", "changed_by", r.who.name, "aor", r.aor)
	c.Status(consts.StatusNoContent)
	return nil
}

// ---- messages ----

// messageView is a stored message as the API shows it: the envelope, and
// the stored bytes only when asked for (?body=true).
type messageView struct {
	ID          string       `json:"id"`
	Recipient   plugin.AOR   `json:"recipient"`
	Sender      string       `json:"sender"`
	Received    time.Time    `json:"received"`
	Expires     time.Time    `json:"expires"`
	Kind        plugin.Kind  `json:"kind"`
	State       plugin.State `json:"state"`
	Size        int          `json:"size"`
	CallID      string       `json:"call_id,omitempty"`
	MessageID   string       `json:"message_id,omitempty"`
	ContentType string       `json:"content_type,omitempty"`
	Attempts    int          `json:"attempts"`
	LastError   string       `json:"last_error,omitempty"`
	Raw         []byte       `json:"raw,omitempty"`
	Invite      []byte       `json:"invite,omitempty"`
}

func viewMessage(m *plugin.Message, body bool) messageView {
	v := messageView{
		ID: m.ID, Recipient: m.Recipient, Sender: m.Sender, Received: m.Received, Expires: m.Expires,
		Kind: m.Kind, State: m.State, Size: m.Size(), CallID: m.CallID, MessageID: m.MessageID,
		ContentType: m.ContentType, Attempts: m.Attempts, LastError: m.LastError,
	}
	if body {
		v.Raw, v.Invite = m.Raw, m.Invite
		// The sender's credentials and routing (Authorization,
		// Proxy-Authorization, Route, ...) are no reader's business, a
		// viewer token's least: shown as a push would send the message.
		if m.Kind == plugin.KindSIPMessage {
			v.Raw = ingress.Shown(m.Raw)
		}
	}
	return v
}

// pageView is one page of a listing. Next (an offset) and NextAfter (an
// id for ?after=) are absent on the last page.
type pageView struct {
	Messages  []messageView `json:"messages"`
	Total     int           `json:"total"`
	Offset    int           `json:"offset"`
	Limit     int           `json:"limit"`
	Next      *int          `json:"next,omitempty"`
	NextAfter string        `json:"next_after,omitempty"`
}

// readPageQuery reads ?offset=&after=&limit=&body=.
func readPageQuery(c *app.RequestContext) (plugin.ListQuery, error) {
	q := plugin.ListQuery{Limit: defaultPageLimit, MaxBytes: maxPageBytes}
	if err := noQuery(c, "offset", "after", "limit", "body"); err != nil {
		return q, err
	}
	var err error
	if q.Body, err = readBodyQuery(c); err != nil {
		return q, err
	}
	if s, ok := c.GetQuery("offset"); ok {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return q, errInvalidQuery("offset", "must be an integer of at least 0")
		}
		q.Offset = n
	}
	if s, ok := c.GetQuery("after"); ok {
		if _, both := c.GetQuery("offset"); both {
			return q, errInvalidQuery("after", "not with offset: after says where the page starts")
		}
		// Read in either case, as a message id in a path.
		if q.After = strings.ToUpper(s); !plugin.IsID(q.After) {
			return q, errInvalidQuery("after", "must be a message id (the next_after of the page before)")
		}
	}
	if s, ok := c.GetQuery("limit"); ok {
		n, err := strconv.Atoi(s)
		switch {
		case err != nil || n < 1 || n > maxPageLimit:
			return q, errInvalidQuery("limit", fmt.Sprintf("must be an integer from 1 to %d (to %d with body=true)", maxPageLimit, maxBodyPageLimit))
		case q.Body && n > maxBodyPageLimit:
			return q, errInvalidQuery("limit", fmt.Sprintf("must be an integer from 1 to %d with body=true (to %d without)", maxBodyPageLimit, maxPageLimit))
		}
		q.Limit = n
	}
	return q, nil
}

func readBodyQuery(c *app.RequestContext) (bool, error) {
	s, ok := c.GetQuery("body")
	if !ok {
		return false, nil
	}
	b, err := strconv.ParseBool(s)
	if err != nil {
		return false, errInvalidQuery("body", "must be true or false")
	}
	return b, nil
}

// getMessages is GET .../messages: the listing, with the ETag of the
// mailbox, which names its messages (their ids, order, states and
// attempts: the store's Version), not the page: every page of one
// mailbox has the same tag, and a DELETE of the messages with it in
// If-Match deletes only if none came, went or changed since. The tag is
// read before the page, so a message arriving in between may be listed
// under a tag that does not cover it (a later DELETE with it: 412),
// never the reverse.
func (a *admin) getMessages(ctx context.Context, c *app.RequestContext, r userRequest) error {
	if _, err := readPageQuery(c); err != nil {
		return err // before the conditions: RFC 9110 §13.2.1
	}
	v, err := a.store.Version(ctx, r.aor)
	if err != nil {
		return err
	}
	tag := etagOf(v)
	if done, err := readConditions(c).read(c, "mailbox", tag); done || err != nil {
		return err
	}
	c.Response.Header.Set("ETag", tag)
	return a.listMessages(ctx, c, r)
}

// getDeadLetters is GET .../dead-letters, which has no ETag: If-Match
// holds only as "*", If-None-Match "*" answers 304.
func (a *admin) getDeadLetters(ctx context.Context, c *app.RequestContext, r userRequest) error {
	if _, err := readPageQuery(c); err != nil {
		return err
	}
	if done, err := readConditions(c).read(c, "dead letters", ""); done || err != nil {
		return err
	}
	return a.listDeadLetters(ctx, c, r)
}

func (a *admin) listMessages(ctx context.Context, c *app.RequestContext, r userRequest) error {
	return a.list(ctx, c, r, a.store.List)
}

func (a *admin) listDeadLetters(ctx context.Context, c *app.RequestContext, r userRequest) error {
	return a.list(ctx, c, r, a.store.DeadLetters)
}

func (a *admin) list(ctx context.Context, c *app.RequestContext, r userRequest,
	list func(context.Context, plugin.AOR, plugin.ListQuery) (plugin.Page, error)) error {
	q, err := readPageQuery(c)
	if err != nil {
		return err
	}
	page, err := list(ctx, r.aor, q)
	if err != nil {
		return err
	}
	v := pageView{Messages: make([]messageView, 0, len(page.Messages)), Total: page.Total, Offset: page.Offset, Limit: q.Limit,
		NextAfter: page.NextAfter}
	for _, m := range page.Messages {
		v.Messages = append(v.Messages, viewMessage(m, q.Body))
	}
	if page.Next > 0 {
		v.Next = &page.Next
	}
	return reply(c, consts.StatusOK, v)
}

func (a *admin) getMessage(ctx context.Context, c *app.RequestContext, r userRequest) error {
	if err := noQuery(c, "body"); err != nil {
		return err
	}
	body, err := readBodyQuery(c)
	if err != nil {
		return err
	}
	m, err := a.store.Get(ctx, r.aor, r.id)
	if err != nil {
		return noMessage(r, err)
	}
	tag := messageTag(m)
	if done, err := readConditions(c).read(c, "message", tag); done || err != nil {
		return err
	}
	c.Response.Header.Set("ETag", tag)
	return reply(c, consts.StatusOK, viewMessage(m, body))
}

// messageTag is the ETag of one message: of its view without the bytes,
// which never change, so that it is the same with ?body=true; it changes
// with the message's state and attempts.
func messageTag(m *plugin.Message) string { return etagOf(viewMessage(m, false)) }

func (a *admin) deleteMessage(ctx context.Context, c *app.RequestContext, r userRequest) error {
	if err := noQuery(c); err != nil {
		return err
	}
	var err error
	if cs := readConditions(c); cs.any() {
		err = a.store.DeleteIf(ctx, r.aor, r.id, func(m *plugin.Message) error {
			return cs.write("message", true, messageTag(m))
		})
	} else {
		err = a.store.Delete(ctx, r.aor, r.id)
	}
	if err != nil {
		return noMessage(r, err)
	}
	a.log.InfoContext(ctx, "message deleted", "changed_by", r.who.name, "aor", r.aor, "msg_id", r.id)
	c.Status(consts.StatusNoContent)
	return nil
}

// noMessage is err, or the 404 naming the message when the store has no
// such message (not the store's error chain).
func noMessage(r userRequest, err error) error {
	if errors.Is(err, plugin.ErrNotFound) {
		return &apiError{status: consts.StatusNotFound, code: "not_found", msg: "no message " + r.id + " in the mailbox of " + r.aor.String()}
	}
	return err
}

// countView answers the bulk operations: how many messages they touched.
type countView struct {
	Deleted  *int `json:"deleted,omitempty"`
	Requeued *int `json:"requeued,omitempty"`
}

func (a *admin) deleteMessages(ctx context.Context, c *app.RequestContext, r userRequest) error {
	if err := noQuery(c); err != nil {
		return err
	}
	var n int
	var err error
	if cs := readConditions(c); cs.any() {
		n, err = a.store.DeleteAllIf(ctx, r.aor, func(v string) error {
			return cs.write("mailbox", true, etagOf(v))
		})
	} else {
		n, err = a.store.DeleteAll(ctx, r.aor)
	}
	if err != nil {
		return err
	}
	a.log.InfoContext(ctx, "mailbox emptied", "changed_by", r.who.name, "aor", r.aor, "deleted", n)
	return reply(c, consts.StatusOK, countView{Deleted: &n})
}

func (a *admin) requeue(ctx context.Context, c *app.RequestContext, r userRequest) error {
	if err := noQuery(c); err != nil {
		return err
	}
	if err := readConditions(c).write("requeue action", false, ""); err != nil {
		return err
	}
	n, err := a.store.RequeueDeadLetters(ctx, r.aor)
	if err != nil {
		return err
	}
	a.log.InfoContext(ctx, "dead letters requeued", "changed_by", r.who.name, "aor", r.aor, "requeued", n)
	return reply(c, consts.StatusOK, countView{Requeued: &n})
}

// ---- push ----

// pushView answers POST .../push.
type pushView struct {
	AOR     plugin.AOR `json:"aor"`
	Contact string     `json:"contact"`
}

// push starts a push to the user's last registered contact. Refusals are
// 409: the global switch is off, the user's push is off or on hold, or no
// live registration is known.
func (a *admin) push(ctx context.Context, c *app.RequestContext, r userRequest) error {
	if err := noQuery(c); err != nil {
		return err
	}
	if err := readConditions(c).write("push action", false, ""); err != nil {
		return err
	}
	p, err := a.engine.Policy(ctx)
	if err != nil {
		return err
	}
	u, err := a.store.UserSettings(ctx, r.aor)
	if err != nil {
		return err
	}
	switch mode := p.Push(u); {
	case !p.PushEnabled:
		return errConflict("push_disabled", "pushing is switched off by the operator policy (push_enabled: false)")
	case mode != plugin.PushOn:
		return errConflict("push_"+string(mode), fmt.Sprintf("push for %s is %q", r.aor, mode))
	}
	reg, err := a.store.Contact(ctx, r.aor)
	if err == nil {
		err = a.engine.PushNow(ctx, r.aor)
	}
	if errors.Is(err, plugin.ErrNotFound) {
		return errConflict("not_registered", fmt.Sprintf("%s has no live registration to push to", r.aor))
	}
	if err != nil {
		return err
	}
	a.log.InfoContext(ctx, "push requested", "changed_by", r.who.name, "aor", r.aor)
	return reply(c, consts.StatusAccepted, pushView{AOR: r.aor, Contact: reg.Contact})
}
