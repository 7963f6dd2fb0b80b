package store

import (
	"context"
	"testing"
)

// TestDirectEmbedded: the embedded store (miniredis, no FUNCTION) loads
// the library with the proxy's functions in it and runs them in the EVAL
// form; a proxy cannot call them there (it has no FCALL), so the
// proxy-direct mode needs a real Redis, standalone or Sentinel.
func TestDirectEmbedded(t *testing.T) {
	s, err := NewEmbedded(Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	if err := s.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	res, err := s.fn.run(ctx, "dp_store", nil, "sip:bob@example.com", directMessages[0].raw).Slice()
	if err != nil {
		t.Fatalf("dp_store in the EVAL form: %v", err)
	}
	if res[0].(int64) != 202 {
		t.Fatalf("dp_store = %v, want 202", res)
	}
	n, err := s.Count(ctx, libBob)
	if err != nil || n.Pending != 1 {
		t.Fatalf("count = %+v, %v; want 1 pending", n, err)
	}
	if err := s.c.Do(ctx, "FCALL", "dp_store", 0, "sip:bob@example.com", "x").Err(); err == nil {
		t.Fatal("FCALL answered on the embedded store")
	}
}
