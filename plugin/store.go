package plugin

import (
	"context"
	"errors"
	"time"
)

// Store keeps deferred messages, one mailbox per recipient, and the
// settings every deferpush instance shares. The push engine uses Queue,
// the admin API Mailboxes and Settings. Implementations are safe for
// concurrent use by many goroutines and many processes.
type Store interface {
	Queue
	Mailboxes
	Settings
	// Ping reports whether the store answers (readiness).
	Ping(ctx context.Context) error
}

// Limits bound what Append stores; Policy.Limits gives the operator's.
// A zero field means no limit (TTL: no expiry).
type Limits struct {
	MaxMailbox     int           // messages per recipient
	MaxMessageSize int           // Message.Size in bytes
	TTL            time.Duration // sets Message.Expires from Received when zero
}

// Queue is the at-least-once message queue of the push engine.
//
// A push session for a recipient looks like:
//
//	msgs, err := Claim(aor, token, n, ttl) // the lease, and the oldest n in flight
//	                                       // (ErrLeaseLost: another push has the recipient)
//	... Ack(ids...) for what the client confirmed, a window at a time,
//	    Fail(id) after an error, RenewLock while the session lasts,
//	    Claim again for more ...
//	Unlock(aor, token)                     // unacked messages go back, in order
//
// The lock and the claim lease are one lease per recipient, owned by an
// opaque token unique to the push; Lock takes it without claiming. A message is removed only by Ack (or an
// operator, or expiry): if the owner dies, Sweep (or the next Lock or
// Claim by someone else) puts its in-flight messages back at the head of
// the pending list in their order, and they are delivered again with the
// same ID. Duplicates are possible, loss is not; clients de-duplicate on
// Call-ID or Message-ID.
//
// Putting back ("requeue": Release, Unlock, a takeover, Sweep) keeps the
// order of messages that never failed, at the head of pending; a message
// with a failed attempt (Fail) goes to the tail instead, behind
// everything waiting, so that one message that keeps failing (too large
// for a slow link, refused by the client) does not hold back the ones
// behind it until it is dead-lettered.
type Queue interface {
	// Append stores m at the tail of its recipient's pending list. It fills
	// in m.ID (when empty) and m.Expires (from lim.TTL, when zero).
	// Appending an ID that is already stored is a no-op. Errors: a
	// *FieldError (ErrInvalid) for a bad envelope, a *LimitError wrapping
	// ErrTooLarge or ErrMailboxFull; nothing is stored then.
	Append(ctx context.Context, m *Message, lim Limits) error

	// Claim moves the oldest n pending messages of aor to its in-flight
	// list and returns them, oldest first, taking or extending the lease
	// for token until now+lease. Expired messages met on the way are
	// dropped and counted, not returned. If the lease was held by another
	// token that let it expire, that token's in-flight messages go back to
	// pending first. ErrLeaseLost if another token holds a live lease.
	Claim(ctx context.Context, aor AOR, token string, n int, lease time.Duration) ([]*Message, error)
	// ClaimAndRead is Claim together with what a push that has read
	// nothing yet needs before it sends: aor's stored registration and
	// settings (Settings.ContactAndSettings), in the same round trip.
	ClaimAndRead(ctx context.Context, aor AOR, token string, n int, lease time.Duration) (ClaimRead, error)

	// Ack removes in-flight messages for good, after the client took
	// them, and returns how many it removed: ids not in flight (deleted
	// meanwhile, acked before) are not an error, only not counted.
	// ErrLeaseLost if token's lease is not live; nothing is removed then
	// (the messages may be pushed again).
	Ack(ctx context.Context, aor AOR, token string, ids ...string) (acked int, err error)

	// Fail records a failed push of an in-flight message: attempts+1 and
	// reason. Once attempts reaches maxAttempts (>0) the message moves to
	// the dead-letter list and deadLettered is true; otherwise it stays in
	// flight, in its place, until Release or Unlock puts it back.
	// ErrLeaseLost if token's lease is not live; ErrNotFound if id is not
	// in flight (deleted meanwhile).
	Fail(ctx context.Context, aor AOR, token, id, reason string, maxAttempts int) (deadLettered bool, err error)

	// Release puts every in-flight message of aor back in pending (see
	// requeue above) and returns how many; the lease stays.
	// ErrLeaseLost if token's lease is not live.
	Release(ctx context.Context, aor AOR, token string) (int, error)

	// Lock takes the lease on aor for token until now+ttl. It returns false
	// (and no error) if another token holds a live lease. Locking again
	// with the same token extends it.
	Lock(ctx context.Context, aor AOR, token string, ttl time.Duration) (bool, error)

	// RenewLock extends token's live lease to now+ttl; ErrLeaseLost if it
	// is not live any more.
	RenewLock(ctx context.Context, aor AOR, token string, ttl time.Duration) error

	// Unlock releases in-flight messages (as Release) and drops the lease.
	// ErrLeaseLost if another token owns it now; nothing changes then.
	Unlock(ctx context.Context, aor AOR, token string) error

	// Finish ends a push in one call: it acks ids as Ack does, then
	// unlocks as Unlock does, and returns how many it removed.
	// ErrLeaseLost if another token owns the lease (nothing changes
	// then), or if ids are given and token's lease is not live (nothing
	// is acked; the lease is dropped all the same when token owned it).
	// A lease that is nobody's with none of ids stored any more is no
	// error: it is what a retry finds when the first try went through
	// and its reply was lost.
	Finish(ctx context.Context, aor AOR, token string, ids ...string) (acked int, err error)

	// Recipients lists recipients with stored messages, about n at a time,
	// from cursor ("" to begin); next is "" after the last page. A scan
	// sees every recipient that has messages throughout it, some maybe
	// twice; one whose first message arrives meanwhile may be missed.
	Recipients(ctx context.Context, cursor string, n int) (aors []AOR, next string, err error)

	// Sweep requeues in-flight messages whose lease expired before now,
	// drops messages that expired before now, and reports what it did.
	// Run it periodically on every instance; concurrent sweeps are safe.
	//
	// A message appended with NotifyFailure that expired undelivered is
	// reported in Undelivered by exactly one Sweep (a Claim that meets it
	// expired leaves it to the Sweep), unless it was acked, deleted or
	// dead-lettered first (Fail reports a dead letter; the caller tells
	// the sender then). One in flight under a live lease waits for its
	// push to end. A Sweep that fails half-way returns what it did
	// before, Undelivered included.
	Sweep(ctx context.Context, now time.Time) (SweepStats, error)
}

// CancelWatcher is a store that tells every instance of each
// unregistration recorded, whichever instance or proxy recorded it: fn
// gets the AOR, the contact ("" any) and the unregistration's time (as
// Unregistration.At; zero unknown) until ctx ends.
type CancelWatcher interface {
	WatchCancels(ctx context.Context, fn func(aor AOR, contact string, at time.Time)) error
}

// FinishMore is a store whose Finish also tells whether a message was
// stored for the recipient after the push's last claim, by this instance
// or another (whose nudge reaches only its own scheduler): the push then
// runs once more rather than leave it for the next registration.
type FinishMore interface {
	FinishMore(ctx context.Context, aor AOR, token string, ids ...string) (acked int, more bool, err error)
}

// SweepStats is what one Sweep did.
type SweepStats struct {
	Requeued int   // in-flight messages put back to pending
	Expired  int   // messages dropped because they expired
	Requeue  []AOR // recipients whose messages were requeued: push them again
	// Undelivered are the expired messages whose sender asked to hear
	// of it (Message.NotifyFailure), as stored.
	Undelivered []*Message
}

// ClaimRead is what Queue.ClaimAndRead returns.
type ClaimRead struct {
	Messages []*Message // claimed, as Claim returns them
	// Registration is aor's stored registration when Registered; not
	// Registered: none is known or it has expired (Contact's
	// ErrNotFound).
	Registration Registration
	Registered   bool
	Settings     UserSettings // aor's settings, when Registered
}

// NewClaimRead is the ClaimRead of the claimed msgs and of what
// Settings.ContactAndSettings answered (reg, u, err): not Registered on
// ErrNotFound, err itself on any other error.
func NewClaimRead(msgs []*Message, reg Registration, u UserSettings, err error) (ClaimRead, error) {
	switch {
	case errors.Is(err, ErrNotFound):
		return ClaimRead{Messages: msgs}, nil
	case err != nil:
		return ClaimRead{}, err
	}
	return ClaimRead{Messages: msgs, Registration: reg, Registered: true, Settings: u}, nil
}

// Mailboxes is the admin view of stored messages.
type Mailboxes interface {
	// List returns a page of aor's stored messages that are not
	// dead-lettered, in delivery order (in flight first, then pending).
	List(ctx context.Context, aor AOR, q ListQuery) (Page, error)
	// DeadLetters is List for the dead-letter list.
	DeadLetters(ctx context.Context, aor AOR, q ListQuery) (Page, error)
	// Get returns one message with its State. ErrNotFound if unknown.
	Get(ctx context.Context, aor AOR, id string) (*Message, error)
	// Delete removes one message whatever its state. ErrNotFound if unknown.
	Delete(ctx context.Context, aor AOR, id string) error
	// DeleteAll removes every message of aor and returns how many.
	DeleteAll(ctx context.Context, aor AOR) (int, error)
	// Version identifies what List shows of aor's messages, whatever the
	// page: it changes when a message is added or removed, changes its
	// place or its state, or counts an attempt; reading the same
	// messages again gives the same value, on every instance. Opaque; an
	// empty mailbox has one too.
	Version(ctx context.Context, aor AOR) (string, error)
	// DeleteAllIf is DeleteAll if check, given aor's Version, returns
	// nil; otherwise it returns check's error and deletes nothing. The
	// check and the deletion are one atomic step: when the messages
	// change in between, check runs again on the new Version.
	DeleteAllIf(ctx context.Context, aor AOR, check func(version string) error) (int, error)
	// DeleteIf is Delete if check, given the message as Get returns it,
	// returns nil; otherwise it returns check's error and deletes
	// nothing. Atomic as DeleteAllIf: when the message changes (its
	// state, its attempts) in between, check runs again. ErrNotFound,
	// without calling check, if the message is unknown.
	DeleteIf(ctx context.Context, aor AOR, id string, check func(*Message) error) error
	// RequeueDeadLetters moves aor's dead letters to the head of pending,
	// in their order, with attempts reset, and returns how many.
	RequeueDeadLetters(ctx context.Context, aor AOR) (int, error)
	// Count returns aor's message counts; zero counts for an unknown aor.
	Count(ctx context.Context, aor AOR) (Counts, error)
	// Totals returns store-wide counters since the store was created.
	Totals(ctx context.Context) (Totals, error)
}

// ListQuery says which page of a listing to read, and how much of each
// message. The zero value reads every message, without its bytes.
type ListQuery struct {
	// Offset is the position in the list where the page starts (0: the
	// head). Ignored when After is set.
	Offset int
	// After, when set, starts the page right behind the message with
	// this id, wherever the list has moved it since it was read: a walk
	// that follows Page.NextAfter misses none of the messages that stay
	// in the list in their order, while others leave its head (pushed,
	// deleted) or join its tail. When that message has itself left the
	// list, the page starts at the first message with a greater id (ids
	// sort by arrival, which is the order of the list but for messages a
	// failed attempt or a requeue moved; past the list's first 1,000
	// messages that one is found by bisection, which trusts the order).
	After string
	// Limit is the most ids the page reads; <= 0: all.
	Limit int
	// Body fills in each message's Raw and Invite. Without it they stay
	// nil, and Omitted is their size: the store does not read the bytes
	// of the messages it lists.
	Body bool
	// MaxBytes, above 0, ends the page before the message whose Size
	// would take the sizes of the page's messages past it; a page holds
	// its first message whatever its size. It bounds the page's bytes
	// with Body, and without it what the store reads to list it (Redis
	// reads a message whole to find its metadata).
	MaxBytes int
}

// Page is one page of a mailbox listing.
type Page struct {
	Messages []*Message `json:"messages"`
	Total    int        `json:"total"`  // messages in the listed list
	Offset   int        `json:"offset"` // position of the page's start in the list
	// Next is the Offset of the next page (0: this is the last), and
	// NextAfter its After: the last id this page read. Both count the
	// ids the page read, which may be more than it holds: a message
	// whose id the list still held, but no longer its record (expired),
	// is read and left out, and Limit ids may hold fewer messages than
	// MaxBytes allows.
	Next      int    `json:"next"`
	NextAfter string `json:"next_after"`
}

// Counts are one recipient's messages by state.
type Counts struct {
	Pending  int `json:"pending"`
	InFlight int `json:"inflight"`
	Dead     int `json:"dead"`
}

// Totals are store-wide counters. Mailboxes counts recipients with stored
// messages; it may lag by one sweep after mailboxes empty.
type Totals struct {
	Stored       int64 `json:"stored"`        // messages appended
	Pushed       int64 `json:"pushed"`        // messages acked
	Failed       int64 `json:"failed"`        // failed attempts (Fail calls)
	Expired      int64 `json:"expired"`       // messages dropped on expiry
	DeadLettered int64 `json:"dead_lettered"` // messages moved to dead letters
	Deleted      int64 `json:"deleted"`       // messages deleted by an operator
	Mailboxes    int64 `json:"mailboxes"`
}

// Settings is the configuration shared by all instances through the store.
type Settings interface {
	// Policy returns the operator policy; DefaultPolicy() if none was set.
	Policy(ctx context.Context) (Policy, error)
	// UpdatePolicy changes the policy atomically: change edits a copy of
	// the stored policy, the result is validated and stored, recording
	// who changed it, and every WatchPolicy hears of it. When another
	// change lands between the read and the write, change runs again on
	// the newer policy, so no change is lost. An error from change (or a
	// *FieldError from validation) leaves the policy as it was. It
	// returns the policy before and after.
	UpdatePolicy(ctx context.Context, who string, change func(*Policy) error) (old, updated Policy, err error)
	// SetPolicy validates and stores p, recording who changed it, and
	// notifies every WatchPolicy. A *FieldError if p is invalid.
	SetPolicy(ctx context.Context, p Policy, who string) error
	// WatchPolicy calls fn with the current policy, then with each new one
	// (a change made on any instance arrives within a second), until ctx
	// ends; it returns ctx.Err() or a setup error. fn runs on one
	// goroutine, never concurrently.
	WatchPolicy(ctx context.Context, fn func(Policy)) error

	// UserSettings returns aor's settings; the zero value if none are set.
	UserSettings(ctx context.Context, aor AOR) (UserSettings, error)
	// UpdateUserSettings changes aor's settings atomically, as
	// UpdatePolicy does the policy; change gets the zero value when none
	// are set, and a change that leaves the zero value removes them, as
	// DeleteUserSettings does, in the same atomic step. It returns the
	// settings before and after.
	UpdateUserSettings(ctx context.Context, aor AOR, change func(*UserSettings) error) (old, updated UserSettings, err error)
	// SetUserSettings validates and stores aor's settings.
	SetUserSettings(ctx context.Context, aor AOR, u UserSettings) error
	// DeleteUserSettings removes aor's settings (back to the policy).
	DeleteUserSettings(ctx context.Context, aor AOR) error

	// SetContact records the last registration of r.AOR. r.PagerOnly is
	// kept as stored when the stored registration has the same binding
	// (Registration.Binding) and says PagerOnly: a refresh does not
	// forget what the client refused; a new binding starts as r says.
	//
	// Registrations and unregistrations that carry the proxy's time (a
	// non-zero At) are ordered per contact, as the Redis functions
	// dp_register and dp_unregister order them: SetContact ignores r,
	// returning ErrSuperseded, when the last registration or
	// unregistration of r.Contact recorded with a time is newer than
	// r.At (equal times: r is applied); a zero At is not ordered and
	// records no time.
	SetContact(ctx context.Context, r Registration) error
	// SetPagerOnly marks aor's stored registration PagerOnly if its
	// binding is still binding; otherwise (a new registration came
	// meanwhile, or none is stored) nothing changes and it is no error.
	SetPagerOnly(ctx context.Context, aor AOR, binding string) error
	// DeleteContact forgets the last registration of aor when its contact
	// is contact (whichever it is when contact is empty): the client
	// unregistered, or its binding expired, and nobody may be pushed to
	// there any more. Deleting what is not there is no error. With a
	// non-zero at (the proxy's time of the unregistration) it is ordered
	// as SetContact says: when the last event recorded with a time is a
	// registration of contact (of any contact when contact is empty)
	// newer than at, nothing changes and it returns ErrSuperseded;
	// otherwise, when it concerned the contact recorded last (or deleted
	// something), at is recorded for an hour.
	DeleteContact(ctx context.Context, aor AOR, contact string, at time.Time) error
	// Contact returns the last registration of aor; ErrNotFound if none is
	// known or it has expired.
	Contact(ctx context.Context, aor AOR) (Registration, error)
	// ContactAndSettings is Contact and UserSettings in one call (a push
	// that a registration event asks for needs both).
	ContactAndSettings(ctx context.Context, aor AOR) (Registration, UserSettings, error)
}
