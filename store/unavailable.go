package store

import (
	"context"
	"errors"
	"io"
	"net"

	"github.com/redis/go-redis/v9"

	"github.com/deferpush/deferpush/plugin"
)

// unavailableHook marks the errors of commands that did not reach Redis,
// got no answer in time, or that Redis could not serve now, with
// plugin.ErrStoreUnavailable: the admin API answers those 503, where an
// error it does not know is a 500. A go-redis hook sees every command's
// final error (after go-redis's own retries), so one place marks them
// all, however a store method wraps them; the error read from the
// command (cmd.Err, a pipeline's commands) is the marked one too.
type unavailableHook struct{}

var _ redis.Hook = unavailableHook{}

func (unavailableHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (unavailableHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if m := markUnavailable(err); m != err {
			cmd.SetErr(m)
			return m
		}
		return err
	}
}

func (unavailableHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		for _, c := range cmds {
			if e := c.Err(); markUnavailable(e) != e {
				c.SetErr(markUnavailable(e))
			}
		}
		return markUnavailable(err)
	}
}

// markUnavailable returns err marked with plugin.ErrStoreUnavailable when
// it says that Redis could not be reached or could not serve the command
// now, err itself otherwise (nil, a reply such as redis.Nil or a script's
// error, a context's end, an error marked already).
func markUnavailable(err error) error {
	var ne net.Error
	switch {
	case err == nil, errors.Is(err, plugin.ErrStoreUnavailable),
		errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case errors.As(err, &ne), // refused, reset, timed out
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), // closed by the server
		errors.Is(err, redis.ErrPoolTimeout), errors.Is(err, redis.ErrPoolExhausted), errors.Is(err, redis.ErrClosed),
		redis.IsLoadingError(err), redis.IsMasterDownError(err), redis.IsReadOnlyError(err),
		redis.IsClusterDownError(err), redis.IsTryAgainError(err), redis.IsMaxClientsError(err):
		return &unavailableError{err}
	}
	return err
}

// unavailableError is an error of Redis's that markUnavailable marked: it
// reads as the error itself and is plugin.ErrStoreUnavailable as well.
type unavailableError struct{ err error }

func (e *unavailableError) Error() string   { return e.err.Error() }
func (e *unavailableError) Unwrap() []error { return []error{plugin.ErrStoreUnavailable, e.err} }
