// Package store is the Redis implementation of plugin.Store: deferred
// messages in per-recipient Redis lists, delivered at least once, in
// order, bounded and expiring; the operator policy and user settings
// shared by every deferpush instance.
//
// It runs on go-redis's universal client, so standalone Redis, Sentinel
// and Cluster all work (see Config.URL). All of a recipient's keys share
// the hash tag {aor} (keys.go) and every change touching several of them
// is one Lua script (scripts.go); global indexes are updated by separate
// single-key commands, ordered so that a crash can delay work but never
// lose a message (sweep.go).
//
// NewEmbedded runs the same code against an in-process miniredis for
// `make run` and tests.
//
//	s, err := store.New(store.Config{URL: "redis+cluster://10.0.0.1:6379,10.0.0.2:6379"})
//	...
//	err = s.Append(ctx, msg, policy.Limits())
//	ok, err := s.Lock(ctx, aor, token, 30*time.Second)
//	msgs, err := s.Claim(ctx, aor, token, 10, 30*time.Second)
//	for _, m := range msgs { /* push m */ s.Ack(ctx, aor, token, m.ID) }
//	err = s.Unlock(ctx, aor, token)
package store
