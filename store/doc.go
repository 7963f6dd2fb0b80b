// Package store is the Redis implementation of plugin.Store: deferred
// messages in per-recipient Redis lists, delivered at least once, in
// order, bounded and expiring; the operator policy and user settings
// shared by every deferpush instance.
//
// It runs on go-redis's universal client, so standalone Redis, Sentinel
// and Cluster all work (see Config.URL). All of a recipient's keys share
// the hash tag {aor} (keys.go) and every change touching several of them
// is one Lua function of the library library.lua (FUNCTION LOAD and FCALL
// on Redis 7, the same source through EVAL elsewhere: library.go); global
// indexes are updated by separate single-key commands, ordered so that a
// crash can delay work but never lose a message (sweep.go). Keys stored
// by an earlier release are converted before the first operation
// (migrate.go).
//
// NewEmbedded runs the same code against an in-process miniredis for
// `make run` and tests.
//
//	s, err := store.New(store.Config{URL: "redis+cluster://10.0.0.1:6379,10.0.0.2:6379"})
//	...
//	err = s.Append(ctx, msg, policy.Limits())
//	msgs, err := s.Claim(ctx, aor, token, 10, 30*time.Second) // the lease and 10 messages
//	/* push msgs; confirmed holds the ids the client took */
//	n, err := s.Ack(ctx, aor, token, confirmed...)
//	err = s.Unlock(ctx, aor, token) // the rest go back, in order
package store
