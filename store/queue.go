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

func isNoScript(err error) bool { return err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT") }

// Append implements plugin.Queue.
//
// One round trip: [ZADD LT dp:mailboxes, EVALSHA append, HINCRBY stored]
// pipelined, and batched with the appends of other goroutines by go-redis's
// autopipeliner (in order: one goroutine's commands run in the order sent).
// Once queued, the commands run even if ctx ends; Append then still waits
// for them, bounded by the client's read and write timeouts. A batch that
// go-redis retries after a dropped connection is harmless: the script
// stores an ID once. The index entry is written before (or, in a cluster, beside)
// the message: the sweeper unindexes a mailbox only after marking it gone
// inside the mailbox's slot, and an append that meets that mark indexes
// the mailbox again, so a stored message is never left unindexed.
func (r *Redis) Append(ctx context.Context, m *plugin.Message, lim plugin.Limits) error {
	if err := r.append(ctx, m, lim); err != nil {
		return fmt.Errorf("store: append for %s: %w", m.Recipient, err)
	}
	return nil
}

func (r *Redis) append(ctx context.Context, m *plugin.Message, lim plugin.Limits) error {
	exp, rec, err := prepareAppend(m, lim)
	if err != nil {
		return err
	}
	aor := m.Recipient
	keys := appendKeys(aor)
	notify, flag := m.NotifyFailure && !m.Expires.IsZero(), "0"
	if notify {
		flag = "1"
	}
	args := []any{m.ID, rec, exp, max(lim.MaxMailbox, 0), flag}
	res, err := r.runAppend(ctx, aor, exp, notify, keys, args)
	if err != nil {
		// Stored or not is unknown (stored, when not replicated): an
		// Append of the same m (same ID) again is safe.
		if !errors.Is(err, ErrNotReplicated) {
			r.c.HIncrBy(ctx, statsKey, "stored", -1)
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

// prepareAppend checks m against lim, fills in its ID and Expires, and
// returns its expiry score and stored record.
func prepareAppend(m *plugin.Message, lim plugin.Limits) (exp int64, rec string, err error) {
	if err := m.Validate(); err != nil {
		return 0, "", err
	}
	if err := checkAOR(m.Recipient); err != nil {
		return 0, "", err
	}
	if lim.MaxMessageSize > 0 && m.Size() > lim.MaxMessageSize {
		return 0, "", &plugin.LimitError{Err: plugin.ErrTooLarge, Limit: "max_message_size", Max: lim.MaxMessageSize, Got: m.Size()}
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
	rec, err = encode(m)
	return exp, rec, err
}

// runAppend indexes the mailbox (and, for a message whose sender waits
// for a failure notice, its notify set: notify), runs appendScript and
// counts the message stored in one round trip (on the batcher when there
// is one), and returns the script's result.
func (r *Redis) runAppend(ctx context.Context, aor plugin.AOR, exp int64, notify bool, keys []string, args []any) ([]any, error) {
	if r.replicas > 0 {
		return r.runAppendReplicated(ctx, aor, exp, notify, keys, args)
	}
	var cmd *redis.Cmd
	var counted *redis.IntCmd
	if r.batch != nil {
		r.batch.ZAddLT(ctx, mailboxesKey, redis.Z{Score: float64(exp), Member: aor.String()})
		if notify {
			r.batch.ZAddLT(ctx, noticesKey, redis.Z{Score: float64(exp), Member: aor.String()})
		}
		cmd = r.batch.EvalSha(ctx, appendScript.Hash(), keys, args...)
		counted = r.batch.HIncrBy(ctx, statsKey, "stored", 1)
	} else {
		pipe := r.c.Pipeline()
		pipe.ZAddLT(ctx, mailboxesKey, redis.Z{Score: float64(exp), Member: aor.String()})
		if notify {
			pipe.ZAddLT(ctx, noticesKey, redis.Z{Score: float64(exp), Member: aor.String()})
		}
		cmd = appendScript.EvalSha(ctx, pipe, keys, args...)
		counted = pipe.HIncrBy(ctx, statsKey, "stored", 1)
		_, _ = pipe.Exec(ctx) // errors are per command
	}
	// In a cluster the counter lives on another node than the mailbox:
	// wait for it too, so that Totals read after Append counts it.
	_ = counted.Err()
	res, err := cmd.Slice()
	if isNoScript(err) {
		res, err = appendScript.Run(ctx, r.c, keys, args...).Slice()
	}
	return res, err
}

// runAppendReplicated is runAppend when Config.MinReplicas is set: the
// script and a WAIT go in one pipeline on the connection to the master
// that holds the mailbox, so that WAIT counts the replicas that have this
// message. (The batcher shares connections between callers, and a
// cluster routes a keyless WAIT to any node.) The index and the counter
// follow, the way runAppend writes them.
func (r *Redis) runAppendReplicated(ctx context.Context, aor plugin.AOR, exp int64, notify bool, keys []string, args []any) ([]any, error) {
	node := redis.Cmdable(r.c)
	if cc, ok := r.c.(*redis.ClusterClient); ok {
		n, err := cc.MasterForKey(ctx, keys[0])
		if err != nil {
			return nil, err
		}
		node = n
	}
	run := func(eval func(redis.Pipeliner) *redis.Cmd) (*redis.Cmd, *redis.Cmd) {
		pipe := node.Pipeline()
		cmd := eval(pipe)
		wait := pipe.Do(ctx, "WAIT", r.replicas, r.replicaTimeout.Milliseconds())
		_, _ = pipe.Exec(ctx) // errors are per command
		return cmd, wait
	}
	cmd, wait := run(func(p redis.Pipeliner) *redis.Cmd { return appendScript.EvalSha(ctx, p, keys, args...) })
	if isNoScript(cmd.Err()) {
		cmd, wait = run(func(p redis.Pipeliner) *redis.Cmd { return appendScript.Eval(ctx, p, keys, args...) })
	}
	res, err := cmd.Slice()
	if err != nil {
		return nil, err
	}
	pipe := r.c.Pipeline()
	pipe.ZAddLT(ctx, mailboxesKey, redis.Z{Score: float64(exp), Member: aor.String()})
	if notify {
		pipe.ZAddLT(ctx, noticesKey, redis.Z{Score: float64(exp), Member: aor.String()})
	}
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
// Two round trips: the recipient goes into the lease index first, then the
// script moves messages. A crash between them leaves an index entry with
// nothing in flight, which the sweeper drops; the reverse order could leave
// in-flight messages nobody watches.
func (r *Redis) Claim(ctx context.Context, aor plugin.AOR, token string, n int, lease time.Duration) ([]*plugin.Message, error) {
	msgs, err := r.claim(ctx, aor, token, n, lease)
	if err != nil {
		return nil, fmt.Errorf("store: claim for %s: %w", aor, err)
	}
	return msgs, nil
}

func (r *Redis) claim(ctx context.Context, aor plugin.AOR, token string, n int, lease time.Duration) ([]*plugin.Message, error) {
	if err := errors.Join(checkAOR(aor), checkToken(token)); err != nil {
		return nil, err
	}
	now := r.now()
	if err := r.c.ZAdd(ctx, leasesKey, redis.Z{Score: float64(ms(now)), Member: aor.String()}).Err(); err != nil {
		return nil, fmt.Errorf("index lease: %w", err)
	}
	res, err := claimScript.Run(ctx, r.c, withNotify(aor), token, max(n, 0), ms(now.Add(lease)), ms(now)).Slice()
	if err != nil {
		return nil, err
	}
	if res[0].(int64) < 0 {
		return nil, plugin.ErrLeaseLost
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
func (r *Redis) Ack(ctx context.Context, aor plugin.AOR, token, id string) error {
	if err := errors.Join(checkAOR(aor), checkToken(token)); err != nil {
		return fmt.Errorf("store: ack %s for %s: %w", id, aor, err)
	}
	// The script and the counter go in one round trip (through the
	// autopipeliner, shared with the acks of concurrent pushes); the
	// counter is taken back when the ack did not happen.
	keys, args := mailboxKeys(aor), []any{token, id, ms(r.now())}
	var cmd *redis.Cmd
	var counted *redis.IntCmd
	if r.batch != nil {
		cmd = r.batch.EvalSha(ctx, ackScript.Hash(), keys, args...)
		counted = r.batch.HIncrBy(ctx, statsKey, "pushed", 1)
	} else {
		pipe := r.c.Pipeline()
		cmd = ackScript.EvalSha(ctx, pipe, keys, args...)
		counted = pipe.HIncrBy(ctx, statsKey, "pushed", 1)
		_, _ = pipe.Exec(ctx) // errors are per command
	}
	_ = counted.Err() // see Append
	res, err := cmd.Int()
	if isNoScript(err) {
		res, err = ackScript.Run(ctx, r.c, keys, args...).Int()
	}
	if err == nil {
		err = r.outcome(ctx, aor, res)
	}
	if err != nil {
		r.c.HIncrBy(ctx, statsKey, "pushed", -1)
		return fmt.Errorf("store: ack %s for %s: %w", id, aor, err)
	}
	return nil
}

// outcome maps the common script results -1 (lease lost) and 0 (not
// found) to errors, and brings a mailbox that became empty (2) up for the
// next sweep so it leaves the index soon.
func (r *Redis) outcome(ctx context.Context, aor plugin.AOR, res int) error {
	switch res {
	case -1:
		return plugin.ErrLeaseLost
	case 0:
		return plugin.ErrNotFound
	case 2:
		r.c.ZAddXX(ctx, mailboxesKey, redis.Z{Score: float64(ms(r.now())), Member: aor.String()})
	}
	return nil
}

// Fail implements plugin.Queue.
func (r *Redis) Fail(ctx context.Context, aor plugin.AOR, token, id, reason string, maxAttempts int) (bool, error) {
	if err := errors.Join(checkAOR(aor), checkToken(token)); err != nil {
		return false, fmt.Errorf("store: fail %s for %s: %w", id, aor, err)
	}
	res, err := failScript.Run(ctx, r.c, withNotify(aor), token, id, reason, max(maxAttempts, 0), ms(r.now())).Int()
	if err == nil && res <= 0 {
		err = r.outcome(ctx, aor, res)
	}
	if err != nil {
		return false, fmt.Errorf("store: fail %s for %s: %w", id, aor, err)
	}
	pipe := r.c.Pipeline()
	pipe.HIncrBy(ctx, statsKey, "failed", 1)
	if res == 2 {
		pipe.HIncrBy(ctx, statsKey, "dead_lettered", 1)
	}
	_, _ = pipe.Exec(ctx)
	return res == 2, nil
}

// Release implements plugin.Queue.
func (r *Redis) Release(ctx context.Context, aor plugin.AOR, token string) (int, error) {
	n, err := r.leaseOp(ctx, releaseScript, aor, token, ms(r.now()))
	if err != nil {
		return 0, fmt.Errorf("store: release %s: %w", aor, err)
	}
	return n, nil
}

// Lock implements plugin.Queue.
func (r *Redis) Lock(ctx context.Context, aor plugin.AOR, token string, ttl time.Duration) (bool, error) {
	now := r.now()
	_, err := r.leaseOp(ctx, lockScript, aor, token, ms(now.Add(ttl)), ms(now))
	if errors.Is(err, plugin.ErrLeaseLost) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("store: lock %s: %w", aor, err)
	}
	return true, nil
}

// RenewLock implements plugin.Queue.
func (r *Redis) RenewLock(ctx context.Context, aor plugin.AOR, token string, ttl time.Duration) error {
	now := r.now()
	if _, err := r.leaseOp(ctx, renewScript, aor, token, ms(now.Add(ttl)), ms(now)); err != nil {
		return fmt.Errorf("store: renew lock %s: %w", aor, err)
	}
	return nil
}

// Unlock implements plugin.Queue.
func (r *Redis) Unlock(ctx context.Context, aor plugin.AOR, token string) error {
	if _, err := r.leaseOp(ctx, unlockScript, aor, token); err != nil {
		return fmt.Errorf("store: unlock %s: %w", aor, err)
	}
	return nil
}

// leaseOp runs a script whose ARGV[1] is the token and whose result is -1
// for "lease not ours", else a count.
func (r *Redis) leaseOp(ctx context.Context, s *redis.Script, aor plugin.AOR, token string, args ...any) (int, error) {
	if err := errors.Join(checkAOR(aor), checkToken(token)); err != nil {
		return 0, err
	}
	n, err := s.Run(ctx, r.c, mailboxKeys(aor), append([]any{token}, args...)...).Int()
	if err != nil {
		return 0, err
	}
	if n < 0 {
		return 0, plugin.ErrLeaseLost
	}
	return n, nil
}
