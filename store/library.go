package store

import (
	"context"
	"crypto/sha1"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// librarySource is the function library, library.lua: every multi-step
// change to Redis, one function each.
//
//go:embed library.lua
var librarySource string

// lib is the library in the two forms deferpush runs it in.
type lib struct {
	version string
	// code is what FUNCTION LOAD takes: the source with its version.
	code string
	// script is the same source for EVAL, where FUNCTION does not exist:
	// a prelude shadows redis by a table whose register_function records
	// the callbacks (either form: name and callback, or a table with
	// flags), the source follows (without its #! line, which EVAL
	// would refuse; line numbers stay), and ARGV[1] names the function to
	// call with KEYS and the rest of ARGV.
	script *redis.Script
}

func newLib(src string) *lib {
	sum := sha1.Sum([]byte(src))
	version := hex.EncodeToString(sum[:8])
	code := strings.Replace(src, "{{version}}", version, 1)
	body := code
	if strings.HasPrefix(body, "#!") {
		_, rest, _ := strings.Cut(body, "\n")
		body = "\n" + rest
	}
	const prelude = "local dp_fns = {}; " +
		"local redis = setmetatable({register_function = function(name, fn) " +
		"if type(name) == 'table' then fn = name.callback; name = name.function_name end; " +
		"dp_fns[name] = fn end}, {__index = redis})"
	const dispatch = `
local dp_args = {}
for i = 2, #ARGV do dp_args[i - 1] = ARGV[i] end
return dp_fns[ARGV[1]](KEYS, dp_args)
`
	return &lib{version: version, code: code, script: redis.NewScript(prelude + body + dispatch)}
}

// library is the one embedded library.
var library = newLib(librarySource)

// How the library is run on this Redis: not known until the first call.
const (
	modeUnknown int32 = iota
	modeFunction
	modeEval
)

// functions runs the library's functions, FCALL or EVALSHA depending on
// what the server has. The zero value finds out at the first call.
type functions struct {
	c    redis.UniversalClient
	mode atomic.Int32
}

// queue adds a call of the function name to p (a pipeline, or the client
// itself to run it at once). Call prepare first, so that the mode is
// known; with the mode still unknown it uses FCALL.
func (f *functions) queue(ctx context.Context, p redis.Cmdable, name string, keys []string, args ...any) *redis.Cmd {
	if f.mode.Load() == modeEval {
		return p.EvalSha(ctx, library.script.Hash(), keys, append([]any{name}, args...)...)
	}
	return p.FCall(ctx, name, keys, args...)
}

// run calls the function name now. When the library is missing (a Redis
// restarted without persistence, a FUNCTION FLUSH, a script cache flush)
// it loads it and calls once more.
func (f *functions) run(ctx context.Context, name string, keys []string, args ...any) *redis.Cmd {
	cmd := f.queue(ctx, f.c, name, keys, args...)
	if f.heal(ctx, cmd.Err()) {
		cmd = f.retry(ctx, name, keys, args...)
	}
	return cmd
}

// again finishes a call queued in a pipeline: when it failed because the
// library was missing, it loads it and calls once more (alone).
func (f *functions) again(ctx context.Context, cmd *redis.Cmd, name string, keys []string, args ...any) *redis.Cmd {
	if f.heal(ctx, cmd.Err()) {
		return f.retry(ctx, name, keys, args...)
	}
	return cmd
}

// retry is the second call after heal.
func (f *functions) retry(ctx context.Context, name string, keys []string, args ...any) *redis.Cmd {
	return f.queue(ctx, f.c, name, keys, args...)
}

// heal reports whether err says the library is missing, having loaded
// it when it is (or switched to EVAL, on a server without FUNCTION).
func (f *functions) heal(ctx context.Context, err error) bool {
	switch {
	case err == nil:
		return false
	case isNoScript(err):
		return f.loadScript(ctx) == nil
	case isNoFunction(err):
		return f.load(ctx) == nil
	case isUnknownCommand(err) && f.mode.Load() != modeEval:
		f.mode.Store(modeEval)
		return f.loadScript(ctx) == nil
	}
	return false
}

// prepare finds out how to run the library and makes sure the server runs
// this version of it: on every master of a cluster, it asks dp_version
// and loads the library (FUNCTION LOAD REPLACE) where the answer differs.
// A server without FUNCTION runs it through EVAL.
func (f *functions) prepare(ctx context.Context) error {
	if f.mode.Load() == modeEval {
		return nil
	}
	err := f.eachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
		v, err := c.FCall(ctx, "dp_version", nil).Text()
		switch {
		case err == nil && v == library.version:
			return nil
		case err == nil || isNoFunction(err):
			return c.FunctionLoadReplace(ctx, library.code).Err()
		}
		return err
	})
	switch {
	case isUnknownCommand(err):
		f.mode.Store(modeEval)
		return nil
	case err != nil:
		return fmt.Errorf("load function library: %w", err)
	}
	f.mode.Store(modeFunction)
	return nil
}

// load loads the library on every master.
func (f *functions) load(ctx context.Context) error {
	return f.eachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
		return c.FunctionLoadReplace(ctx, library.code).Err()
	})
}

// loadScript loads the EVAL form on every master.
func (f *functions) loadScript(ctx context.Context) error {
	return f.eachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
		return library.script.Load(ctx, c).Err()
	})
}

func (f *functions) eachMaster(ctx context.Context, fn func(context.Context, *redis.Client) error) error {
	return eachMaster(ctx, f.c, fn)
}

// eachMaster runs fn on every master: the one of a standalone or Sentinel
// client, each of a cluster (concurrently).
func eachMaster(ctx context.Context, c redis.UniversalClient, fn func(context.Context, *redis.Client) error) error {
	switch c := c.(type) {
	case *redis.ClusterClient:
		return c.ForEachMaster(ctx, fn)
	case *redis.Client:
		return fn(ctx, c)
	}
	return fmt.Errorf("unsupported client %T", c)
}

func isNoScript(err error) bool { return err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT") }

func isNoFunction(err error) bool {
	return err != nil && strings.Contains(err.Error(), "Function not found")
}

func isUnknownCommand(err error) bool {
	var re redis.Error
	return errors.As(err, &re) && strings.Contains(strings.ToLower(err.Error()), "unknown command")
}
