package store

import "errors"

// ErrNotReplicated reports a message the master stored but fewer than
// Config.MinReplicas replicas acknowledged within Config.ReplicaTimeout:
// it is not answered "stored" (the sender gets the store error's reply)
// but stays on the master, which may push it.
var ErrNotReplicated = errors.New("store: not replicated in time")
