package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/deferpush/deferpush/plugin"
)

// checkAOR refuses the zero AOR; any other is canonical by construction
// (plugin.ParseAOR is the only way to build one), so keys built from it
// never name one mailbox twice.
func checkAOR(aor plugin.AOR) error {
	if aor.IsZero() {
		return fmt.Errorf("%w: empty address of record", plugin.ErrBadAOR)
	}
	return nil
}

func checkToken(token string) error {
	if token == "" {
		return &plugin.FieldError{Field: "token", Problem: "empty"}
	}
	return nil
}

// Append implements plugin.Queue.
//
// One command on a standalone or Sentinel Redis: FCALL dp_append with the
// global keys too, which stores, indexes and counts the message in one
// call; in a cluster, where those keys live in other slots, one round
// trip of [ZADD LT dp:mailboxes, FCALL dp_append, HINCRBY stored]
// pipelined. Either is batched with the appends of other goroutines by
// go-redis's autopipeliner (in order: one goroutine's commands run in the
// order sent). Once queued, the commands run even if ctx ends; Append
// waits for them until ctx ends or stallBound passes (settle). A
// batch that go-redis retries after a dropped connection is harmless:
// dp_append stores an ID once. The index entry is written with (or, in a
// cluster, before or beside) the message: the sweeper unindexes a mailbox
// only after marking it gone inside the mailbox's slot, and an append that
// meets that mark indexes the mailbox again, so a stored message is never
// left unindexed.
func (r *Redis) Append(ctx context.Context, m *plugin.Message, lim plugin.Limits) error {
	if err := r.append(ctx, m, lim); err != nil {
		return fmt.Errorf("store: append for %s: %w", m.Recipient, err)
	}
	return nil
}

func (r *Redis) append(ctx context.Context, m *plugin.Message, lim plugin.Limits) error {
	ctx, cancel := r.bounded(ctx)
	defer cancel()
	exp, rec, err := prepareAppend(m, lim)
	if err != nil {
		return err
	}
	if err := r.ready(ctx); err != nil {
		return err
	}
	aor := m.Recipient
	if r.replicas == 0 && !r.cluster() {
		return r.appendIndexed(ctx, m, lim, exp, rec)
	}
	keys := mailboxKeys(aor)
	args := []any{m.ID, rec, max(lim.MaxMailbox, 0)}
	if m.NotifyFailure && !m.Expires.IsZero() {
		// Its sender waits for a failure notice (notices.go).
		args = append(args, exp)
	}
	res, err := r.runAppend(ctx, aor, exp, keys, args)
	if err != nil {
		// Stored or not is unknown (stored, when not replicated): an
		// Append of the same m (same ID) again is safe.
		if !errors.Is(err, ErrNotReplicated) {
			r.c.HIncrBy(context.WithoutCancel(ctx), statsKey, "stored", -1)
		}
		return err
	}
	switch status, count := res[0].(int64), res[1].(int64); status {
	case -1:
		r.c.HIncrBy(ctx, statsKey, "stored", -1)
		return &plugin.LimitError{Err: plugin.ErrMailboxFull, Limit: "max_mailbox", Max: lim.MaxMailbox, Got: int(count)}
	case 0: // duplicate
		r.c.HIncrBy(ctx, statsKey, "stored", -1)
	case 2:
		// Plain ZADD: the new score differs from the one the sweeper read,
		// so its compare-and-remove cannot undo this.
		// The message is stored whatever happens here: an error must not
		// make the sender send it again (as a second message). A missed
		// index entry only delays the sweep of its expiry; Claim checks
		// expiry itself, and the next Append indexes the mailbox again.
		if err := r.c.ZAdd(ctx, mailboxesKey, redis.Z{Score: float64(exp), Member: aor.String()}).Err(); err != nil {
			r.log.Warn("index mailbox", "aor", aor.String(), "err", err)
		}
	}
	return nil
}

// appendIndexed is append on one Redis (no cluster, no replicas to wait
// for): dp_append indexes and counts the message itself, so the call is
// one command (two while a proxy polls dp:recent: its entry goes first,
// as runAppend's does), and a message not stored needs no correction of
// the count.
func (r *Redis) appendIndexed(ctx context.Context, m *plugin.Message, lim plugin.Limits, exp int64, rec string) error {
	aor := m.Recipient.String()
	keys := append(mailboxKeys(m.Recipient), mailboxesKey, statsKey)
	var notify any = ""
	if m.NotifyFailure && !m.Expires.IsZero() {
		// Its sender waits for a failure notice (notices.go).
		notify = exp
	}
	args := []any{m.ID, rec, max(lim.MaxMailbox, 0), notify, exp, aor}
	var c redis.Cmdable = r.c
	if r.batch != nil {
		c = r.batch
	}
	r.addRecentMember(ctx, c, aor)
	queued := r.fn.queue(ctx, c, "dp_append", keys, args...)
	if err := r.await(ctx, queued); err != nil {
		return err
	}
	res, err := r.fn.again(ctx, queued, "dp_append", keys, args...).Slice()
	if err != nil {
		return err
	}
	if status, count := res[0].(int64), res[1].(int64); status == -1 {
		return &plugin.LimitError{Err: plugin.ErrMailboxFull, Limit: "max_mailbox", Max: lim.MaxMailbox, Got: int(count)}
	}
	return nil
}

// prepareAppend checks m against lim, fills in its ID and Expires, and
// returns its expiry score and stored record.
func prepareAppend(m *plugin.Message, lim plugin.Limits) (exp int64, rec string, err error) {
	if err := m.Validate(); err != nil {
		return 0, "", err
	}
	if err := checkAOR(m.Recipient); err != nil {
		return 0, "", err
	}
	if lim.MaxMessageSize > 0 && m.Counted() > lim.MaxMessageSize {
		return 0, "", &plugin.LimitError{Err: plugin.ErrTooLarge, Limit: "max_message_size", Max: lim.MaxMessageSize, Got: m.Counted()}
	}
	if m.ID == "" {
		m.ID = plugin.NewID(m.Received)
	}
	if m.Expires.IsZero() && lim.TTL > 0 {
		m.Expires = m.Received.Add(lim.TTL)
	}
	exp = int64(1<<53 - 1) // no expiry: largest exact score
	if !m.Expires.IsZero() {
		exp = ms(m.Expires)
	}
	return exp, encode(m), nil
}

// runAppend indexes the mailbox, runs dp_append and counts the message
// stored in one round trip (a pipeline: on the autopipeliner when there
// is one), and returns dp_append's result.
func (r *Redis) runAppend(ctx context.Context, aor plugin.AOR, exp int64, keys []string, args []any) ([]any, error) {
	if r.replicas > 0 {
		return r.runAppendReplicated(ctx, aor, exp, keys, args)
	}
	p := r.pipeline()
	p.ZAddLT(ctx, mailboxesKey, redis.Z{Score: float64(exp), Member: aor.String()})
	r.addRecent(ctx, p, aor)
	cmd := r.fn.queue(ctx, p, "dp_append", keys, args...)
	// In a cluster the counter lives on another node than the mailbox:
	// the pipeline waits for it too, so that Totals read after Append
	// counts it.
	p.HIncrBy(ctx, statsKey, "stored", 1)
	if err := r.exec(ctx, p, nil); err != nil {
		return nil, err
	}
	return r.fn.again(ctx, cmd, "dp_append", keys, args...).Slice()
}

// runAppendReplicated is runAppend when Config.MinReplicas is set: the
// function call and a WAIT go in one pipeline on the connection to the master
// that holds the mailbox, so that WAIT counts the replicas that have this
// message. (The batcher shares connections between callers, and a
// cluster routes a keyless WAIT to any node.) The index and the counter
// follow, the way runAppend writes them.
func (r *Redis) runAppendReplicated(ctx context.Context, aor plugin.AOR, exp int64, keys []string, args []any) ([]any, error) {
	node := redis.Cmdable(r.c)
	if cc, ok := r.c.(*redis.ClusterClient); ok {
		n, err := cc.MasterForKey(ctx, keys[0])
		if err != nil {
			return nil, err
		}
		node = n
	}
	run := func() (*redis.Cmd, *redis.Cmd) {
		pipe := node.Pipeline()
		cmd := r.fn.queue(ctx, pipe, "dp_append", keys, args...)
		wait := pipe.Do(ctx, "WAIT", r.replicas, r.replicaTimeout.Milliseconds())
		_, _ = pipe.Exec(ctx) // errors are per command
		return cmd, wait
	}
	cmd, wait := run()
	if r.fn.heal(ctx, cmd.Err()) {
		cmd, wait = run()
	}
	res, err := cmd.Slice()
	if err != nil {
		return nil, err
	}
	pipe := r.c.Pipeline()
	pipe.ZAddLT(ctx, mailboxesKey, redis.Z{Score: float64(exp), Member: aor.String()})
	r.addRecent(ctx, pipe, aor)
	pipe.HIncrBy(ctx, statsKey, "stored", 1)
	_, _ = pipe.Exec(ctx) // best effort: see append's case 2
	if n, werr := wait.Int64(); res[0].(int64) > 0 && (werr != nil || n < int64(r.replicas)) {
		if werr == nil {
			werr = fmt.Errorf("%d of %d replicas within %v", n, r.replicas, r.replicaTimeout)
		}
		r.log.Warn("message stored on the master only", "aor", aor.String(), "err", werr)
		return nil, fmt.Errorf("%w: %v", ErrNotReplicated, werr)
	}
	return res, nil
}

// Claim implements plugin.Queue.
//
// One round trip: [ZADD dp:leases, FCALL dp_claim] pipelined (through the
// autopipeliner, shared with the calls of concurrent pushes). The lease
// index entry is how the sweeper finds in-flight messages whose push died;
// should it fail to be written, Claim fails, and the push that called it
// unlocks (its messages go back). In a cluster the two commands go to two
// nodes and may run in either order; the entry lands all the same, and
// until it does nothing is lost: the next Claim or Lock for the recipient
// takes over a lapsed lease and requeues what it held.
func (r *Redis) Claim(ctx context.Context, aor plugin.AOR, token string, n int, lease time.Duration) ([]*plugin.Message, error) {
	msgs, err := r.claim(ctx, aor, token, n, lease, nil)
	if err != nil {
		return nil, fmt.Errorf("store: claim for %s: %w", aor, err)
	}
	return msgs, nil
}

// isOOM reports whether Redis refused a command for being over its
// maxmemory.
func isOOM(err error) bool { return strings.HasPrefix(err.Error(), "OOM ") }

// ClaimAndRead implements plugin.Queue: Claim's pipeline with the two
// GETs of ContactAndSettings after the claim (one slot: the keys share
// the recipient's hash tag).
func (r *Redis) ClaimAndRead(ctx context.Context, aor plugin.AOR, token string, n int, lease time.Duration) (plugin.ClaimRead, error) {
	var read contactRead
	msgs, err := r.claim(ctx, aor, token, n, lease, &read)
	if err != nil {
		return plugin.ClaimRead{}, fmt.Errorf("store: claim for %s: %w", aor, err)
	}
	reg, u, err := r.decodeContactAndSettings(read.contact, read.settings)
	cr, err := plugin.NewClaimRead(msgs, reg, u, err)
	if err != nil {
		// The messages stay in flight under the lease, which the caller
		// lets go of on an error, as after a failed claim.
		return plugin.ClaimRead{}, fmt.Errorf("store: claim for %s: contact and settings: %w", aor, err)
	}
	return cr, nil
}

// contactRead holds the GETs ClaimAndRead queues with the claim.
type contactRead struct{ contact, settings *redis.StringCmd }

func (r *Redis) claim(ctx context.Context, aor plugin.AOR, token string, n int, lease time.Duration, read *contactRead) ([]*plugin.Message, error) {
	ctx, cancel := r.bounded(ctx)
	defer cancel()
	if err := errors.Join(checkAOR(aor), checkToken(token)); err != nil {
		return nil, err
	}
	if err := r.ready(ctx); err != nil {
		return nil, err
	}
	now := r.now()
	keys, args := mailboxKeys(aor), []any{token, max(n, 0), ms(now.Add(lease)), ms(now)}
	p := r.pipeline()
	index := p.ZAdd(ctx, leasesKey, redis.Z{Score: float64(ms(now)), Member: aor.String()})
	cmd := r.fn.queue(ctx, p, "dp_claim", keys, args...)
	if read != nil {
		// After the claim: a proxy's unregistration that runs before the
		// reads has deleted what they read, and one that runs after
		// finds the lease live and writes its event (dp_unregister), so
		// that the push is cancelled either way.
		read.contact, read.settings = p.Get(ctx, contactKey(aor)), p.Get(ctx, settingsKey(aor))
	}
	if err := r.exec(ctx, p, nil); err != nil {
		// The claim may still run: the caller's Unlock, behind it on
		// the same connection, drops what it took.
		return nil, err
	}
	res, err := r.fn.again(ctx, cmd, "dp_claim", keys, args...).Slice()
	if err != nil {
		return nil, err
	}
	if res[0].(int64) < 0 {
		return nil, plugin.ErrLeaseLost
	}
	// Over maxmemory (noeviction) Redis refuses the index's ZADD but runs
	// the claim (allow-oom): a push then drains the store. Unindexed, the
	// lease of an instance that dies is found by the mailbox's next claim
	// once it has run out, not by the recovery sweep.
	if err := index.Err(); err != nil && !isOOM(err) {
		return nil, fmt.Errorf("index lease: %w", err)
	}
	if expired := res[2].(int64); expired > 0 {
		r.c.HIncrBy(ctx, statsKey, "expired", expired)
	}
	msgs := make([]*plugin.Message, 0, (len(res)-3)/3)
	for i := 3; i+2 < len(res); i += 3 {
		m, err := decode(aor, res[i].(string), res[i+1].(string), res[i+2].(string))
		if err != nil {
			return nil, err // the claimed messages go back with the lease
		}
		m.State = plugin.StateInFlight
		msgs = append(msgs, m)
	}
	return msgs, nil
}

// Ack implements plugin.Queue.
//
// One round trip: [FCALL dp_ack, HINCRBY pushed] pipelined (through the
// autopipeliner, shared with the acks of concurrent pushes); the counter
// is corrected afterwards by what was not acked.
func (r *Redis) Ack(ctx context.Context, aor plugin.AOR, token string, ids ...string) (int, error) {
	n, err := r.ack(ctx, aor, token, ids)
	if err != nil {
		return 0, fmt.Errorf("store: ack %d for %s: %w", len(ids), aor, err)
	}
	return n, nil
}

func (r *Redis) ack(ctx context.Context, aor plugin.AOR, token string, ids []string) (int, error) {
	ctx, cancel := r.bounded(ctx)
	defer cancel()
	keys, args, err := r.ackArgs(ctx, aor, token, ids)
	if err != nil {
		return 0, err
	}
	p := r.pipeline()
	cmd := r.fn.queue(ctx, p, "dp_ack", keys, args...)
	p.HIncrBy(ctx, statsKey, "pushed", int64(len(ids)))
	if err := r.exec(ctx, p, func() { r.uncount(ctx, cmd, len(ids)) }); err != nil {
		return 0, err
	}
	cmd = r.fn.again(ctx, cmd, "dp_ack", keys, args...)
	r.uncount(ctx, cmd, len(ids))
	res, err := cmd.Slice()
	acked := int64(-1)
	if err == nil {
		acked = res[0].(int64)
	}
	switch {
	case err != nil:
		return 0, err
	case acked < 0:
		return 0, plugin.ErrLeaseLost
	case acked > 0 && res[1].(int64) == 0:
		r.emptied(ctx, aor)
	}
	return int(acked), nil
}

// ackArgs checks an ack's arguments, makes sure the store is ready, and
// returns the keys and arguments of dp_ack and dp_finish: token, now, ids.
func (r *Redis) ackArgs(ctx context.Context, aor plugin.AOR, token string, ids []string) ([]string, []any, error) {
	if err := errors.Join(checkAOR(aor), checkToken(token)); err != nil {
		return nil, nil, err
	}
	if err := r.ready(ctx); err != nil {
		return nil, nil, err
	}
	args := make([]any, 0, 2+len(ids))
	args = append(args, token, ms(r.now()))
	for _, id := range ids {
		args = append(args, id)
	}
	return mailboxKeys(aor), args, nil
}

// emptied brings a mailbox that became empty up for the next sweep, so
// that it leaves the index soon. Nothing waits for it: a missed update
// only keeps the entry until the mailbox's old sweep time.
func (r *Redis) emptied(ctx context.Context, aor plugin.AOR) {
	z := redis.Z{Score: float64(ms(r.now())), Member: aor.String()}
	if r.batch != nil {
		r.batch.ZAddXX(context.WithoutCancel(ctx), mailboxesKey, z)
		return
	}
	r.c.ZAddXX(ctx, mailboxesKey, z)
}

// pipeline returns a pipeline for one call's commands: on the
// autopipeliner's connection when there is one (go-redis writes it there
// as one contiguous batch, in order, beside the commands of concurrent
// callers: the claims and finishes of pushes running at once share
// writes to Redis and Redis's reads of them), else on a connection of
// its own. Run it with exec.
func (r *Redis) pipeline() redis.Pipeliner {
	if r.batch != nil {
		return r.batch.Pipeline()
	}
	return r.c.Pipeline()
}

// exec runs p (from pipeline). Errors are per command, but for a Redis
// that did not answer in time (settle), when none of p's results may be
// read; after, if not nil, then runs in the background once they are
// (to take back what a call that gave up had counted).
func (r *Redis) exec(ctx context.Context, p redis.Pipeliner, after func()) error {
	if r.batch == nil {
		_, _ = p.Exec(ctx) // bounded by the client's read timeout
		return nil
	}
	return settle(ctx, func() { _, _ = p.Exec(ctx) }, after)
}

// await waits for cmds queued on the autopipeliner (one by one, not in a
// pipeline) as exec does for a pipeline: nil once Redis has answered
// them, an error when the call's bound passes first (settle). Without
// the autopipeliner it returns at once: the commands have run.
func (r *Redis) await(ctx context.Context, cmds ...redis.Cmder) error {
	if r.batch == nil {
		return nil
	}
	return settle(ctx, func() {
		for _, c := range cmds {
			_ = c.Err()
		}
	}, nil)
}

// stallBound is how long a call on the autopipeliner waits for Redis
// when its context has no earlier deadline: go-redis's default read
// timeout. The autopipeliner's connection bounds each reply by that
// timeout too, but then replays what was unanswered on a new connection
// (MaxRetries times), so that its wait for a stalled Redis is several
// times the timeout; a call gives up at this bound and leaves the replay
// to finish (settle).
const stallBound = 3 * time.Second

// bounded returns ctx with a deadline no later than stallBound from now,
// for a call that uses the autopipeliner: the whole call (its other
// reads included) ends by then.
func (r *Redis) bounded(ctx context.Context) (context.Context, context.CancelFunc) {
	if r.batch == nil {
		return ctx, func() {}
	}
	return context.WithTimeoutCause(ctx, stallBound, errStalled)
}

// errStalled is why a call ended when Redis did not answer within
// stallBound: the store is unavailable (markUnavailable).
var errStalled error = &unavailableError{errors.New("redis did not answer within " + stallBound.String())}

// settle runs wait, which returns once Redis has answered commands queued
// on the autopipeliner, and returns nil when it does, or an error when
// ctx (bounded) ends first: Redis stalled (a long command, a fork,
// CLIENT PAUSE, a frozen host). Queued commands cannot be taken back:
// they run when Redis wakes (an Append then stores the message its
// caller was told failed, whose sender may send it again: a duplicate,
// never a loss), and wait goes on in the background until they have,
// then after (if not nil).
func settle(ctx context.Context, wait func(), after func()) error {
	done := make(chan struct{})
	go func() {
		wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		select {
		case <-done: // both ready: the answer counts
			return nil
		default:
		}
		if after != nil {
			go func() {
				<-done
				after()
			}()
		}
		return fmt.Errorf("no answer from redis in time: %w", context.Cause(ctx))
	}
}

// uncount takes back from dp:stats' pushed, counted with the ack or
// finish cmd (answered) of n ids, those it did not ack.
func (r *Redis) uncount(ctx context.Context, cmd *redis.Cmd, n int) {
	acked := int64(-1)
	if res, err := cmd.Slice(); err == nil {
		acked = res[0].(int64)
	}
	if missed := int64(n) - max(acked, 0); n > 0 && missed > 0 {
		r.c.HIncrBy(context.WithoutCancel(ctx), statsKey, "pushed", -missed)
	}
}

// Fail implements plugin.Queue.
func (r *Redis) Fail(ctx context.Context, aor plugin.AOR, token, id, reason string, maxAttempts int) (bool, error) {
	dead, err := r.fail(ctx, aor, token, id, reason, maxAttempts)
	if err != nil {
		return false, fmt.Errorf("store: fail %s for %s: %w", id, aor, err)
	}
	return dead, nil
}

func (r *Redis) fail(ctx context.Context, aor plugin.AOR, token, id, reason string, maxAttempts int) (bool, error) {
	if err := errors.Join(checkAOR(aor), checkToken(token)); err != nil {
		return false, err
	}
	if err := r.ready(ctx); err != nil {
		return false, err
	}
	keys, args := mailboxKeys(aor), []any{token, id, reason, max(maxAttempts, 0), ms(r.now())}
	pipe := r.c.Pipeline()
	cmd := r.fn.queue(ctx, pipe, "dp_fail", keys, args...)
	pipe.HIncrBy(ctx, statsKey, "failed", 1)
	_, _ = pipe.Exec(ctx) // errors are per command
	res, err := r.fn.again(ctx, cmd, "dp_fail", keys, args...).Int()
	if err != nil || res <= 0 {
		r.c.HIncrBy(ctx, statsKey, "failed", -1)
	}
	switch {
	case err != nil:
		return false, err
	case res < 0:
		return false, plugin.ErrLeaseLost
	case res == 0:
		return false, plugin.ErrNotFound
	case res == 2:
		r.c.HIncrBy(ctx, statsKey, "dead_lettered", 1)
		return true, nil
	}
	return false, nil
}

// Release implements plugin.Queue.
func (r *Redis) Release(ctx context.Context, aor plugin.AOR, token string) (int, error) {
	n, err := r.leaseOp(ctx, "dp_release", aor, token, ms(r.now()))
	if err != nil {
		return 0, fmt.Errorf("store: release %s: %w", aor, err)
	}
	return n, nil
}

// Lock implements plugin.Queue: dp_claim for no message.
func (r *Redis) Lock(ctx context.Context, aor plugin.AOR, token string, ttl time.Duration) (bool, error) {
	ok, err := r.lock(ctx, aor, token, ttl)
	if err != nil {
		return false, fmt.Errorf("store: lock %s: %w", aor, err)
	}
	return ok, nil
}

func (r *Redis) lock(ctx context.Context, aor plugin.AOR, token string, ttl time.Duration) (bool, error) {
	if err := errors.Join(checkAOR(aor), checkToken(token)); err != nil {
		return false, err
	}
	if err := r.ready(ctx); err != nil {
		return false, err
	}
	now := r.now()
	res, err := r.fn.run(ctx, "dp_claim", mailboxKeys(aor), token, 0, ms(now.Add(ttl)), ms(now)).Slice()
	if err != nil {
		return false, err
	}
	return res[0].(int64) > 0, nil
}

// RenewLock implements plugin.Queue.
func (r *Redis) RenewLock(ctx context.Context, aor plugin.AOR, token string, ttl time.Duration) error {
	now := r.now()
	if _, err := r.leaseOp(ctx, "dp_renew", aor, token, ms(now.Add(ttl)), ms(now)); err != nil {
		return fmt.Errorf("store: renew lock %s: %w", aor, err)
	}
	return nil
}

// Unlock implements plugin.Queue: one call requeues and drops the lease.
func (r *Redis) Unlock(ctx context.Context, aor plugin.AOR, token string) error {
	if _, err := r.leaseOp(ctx, "dp_unlock", aor, token); err != nil {
		return fmt.Errorf("store: unlock %s: %w", aor, err)
	}
	return nil
}

// Finish implements plugin.Queue: one call acks ids and unlocks.
//
// One round trip: [FCALL dp_finish, HINCRBY pushed] pipelined (through the
// autopipeliner, as Ack), the counter corrected afterwards by what was not
// acked, as Ack does.
func (r *Redis) Finish(ctx context.Context, aor plugin.AOR, token string, ids ...string) (int, error) {
	n, _, err := r.FinishMore(ctx, aor, token, ids...)
	return n, err
}

// FinishMore implements plugin.FinishMore: Finish, and whether a message
// was stored after the push's last claim (by this instance or another).
func (r *Redis) FinishMore(ctx context.Context, aor plugin.AOR, token string, ids ...string) (int, bool, error) {
	n, more, err := r.finish(ctx, aor, token, ids)
	if err != nil {
		return 0, false, fmt.Errorf("store: finish %s (ack %d): %w", aor, len(ids), err)
	}
	return n, more, nil
}

func (r *Redis) finish(ctx context.Context, aor plugin.AOR, token string, ids []string) (int, bool, error) {
	ctx, cancel := r.bounded(ctx)
	defer cancel()
	keys, args, err := r.ackArgs(ctx, aor, token, ids)
	if err != nil {
		return 0, false, err
	}
	p := r.pipeline()
	cmd := r.fn.queue(ctx, p, "dp_finish", keys, args...)
	if len(ids) > 0 {
		p.HIncrBy(ctx, statsKey, "pushed", int64(len(ids)))
	}
	if err := r.exec(ctx, p, func() { r.uncount(ctx, cmd, len(ids)) }); err != nil {
		return 0, false, err
	}
	cmd = r.fn.again(ctx, cmd, "dp_finish", keys, args...)
	r.uncount(ctx, cmd, len(ids))
	res, err := cmd.Slice()
	acked := int64(-1)
	if err == nil {
		acked = res[0].(int64)
	}
	switch {
	case err != nil:
		return 0, false, err
	case acked == -2 || acked < 0 && len(ids) > 0:
		return 0, false, plugin.ErrLeaseLost
	case acked > 0 && res[1].(int64) == 0:
		r.emptied(ctx, aor)
	}
	// A library loaded before the mark has no third value.
	more := len(res) > 2 && res[2].(int64) == 1
	return int(max(acked, 0)), more, nil
}

// leaseOp runs a function whose ARGV[1] is the token and whose result is
// -1 for "lease not ours", else a count.
func (r *Redis) leaseOp(ctx context.Context, name string, aor plugin.AOR, token string, args ...any) (int, error) {
	if err := errors.Join(checkAOR(aor), checkToken(token)); err != nil {
		return 0, err
	}
	if err := r.ready(ctx); err != nil {
		return 0, err
	}
	ctx, cancel := r.bounded(ctx)
	defer cancel()
	// On the claims' connection, behind them: an Unlock after a claim
	// that gave up (settle) drops what that claim takes when it runs.
	keys, args := mailboxKeys(aor), append([]any{token}, args...)
	p := r.pipeline()
	cmd := r.fn.queue(ctx, p, name, keys, args...)
	if err := r.exec(ctx, p, nil); err != nil {
		return 0, err
	}
	n, err := r.fn.again(ctx, cmd, name, keys, args...).Int()
	if err != nil {
		return 0, err
	}
	if n < 0 {
		return 0, plugin.ErrLeaseLost
	}
	return n, nil
}
