package storetest

import (
	"errors"
	"fmt"
	"sync"

	"github.com/deferpush/deferpush/plugin"
)

// testConditionalDeletes: Version names what List shows and changes with
// it; DeleteIf and DeleteAllIf delete only when check accepts what is
// stored, and a message that arrives after a version was read is never
// deleted by a delete conditional on that version.
func testConditionalDeletes(e *env) {
	version := func() string {
		e.t.Helper()
		v, err := e.s.Version(e.ctx, bob)
		if err != nil {
			e.t.Fatal(err)
		}
		return v
	}
	empty := version()
	if again := version(); again != empty || empty == "" {
		e.t.Fatalf("Version of an empty mailbox: %q then %q, want one non-empty value", empty, again)
	}
	want := e.appendN(bob, "v", 3)
	stored := version()
	if stored == empty || version() != stored {
		e.t.Fatalf("Version after 3 appends = %q (empty was %q), read again %q", stored, empty, version())
	}
	e.claim(bob, "t", 1)
	claimed := version()
	if claimed == stored {
		e.t.Error("Version unchanged by a claim (a state change)")
	}
	if _, err := e.s.Fail(e.ctx, bob, "t", want[0], "busy", 0); err != nil {
		e.t.Fatal(err)
	}
	failed := version()
	if failed == claimed {
		e.t.Error("Version unchanged by a failed attempt")
	}
	if _, err := e.s.Version(e.ctx, alice); err != nil {
		e.t.Fatal(err)
	}
	if version() != failed {
		e.t.Error("Version of bob changed by reading alice's")
	}

	refused := errors.New("refused")
	var seen *plugin.Message
	err := e.s.DeleteIf(e.ctx, bob, want[0], func(m *plugin.Message) error { seen = m; return refused })
	e.wantErr("DeleteIf refused", err, refused)
	if seen == nil || seen.ID != want[0] || seen.State != plugin.StateInFlight || seen.Attempts != 1 || seen.LastError != "busy" {
		e.t.Errorf("DeleteIf's check got %+v, want %s in flight after 1 attempt", seen, want[0])
	}
	if _, err := e.s.Get(e.ctx, bob, want[0]); err != nil {
		e.t.Errorf("a refused DeleteIf deleted the message: %v", err)
	}
	called := false
	err = e.s.DeleteIf(e.ctx, bob, "01J00000000000000000000000", func(*plugin.Message) error { called = true; return nil })
	e.wantErr("DeleteIf of an unknown id", err, plugin.ErrNotFound)
	if called {
		e.t.Error("DeleteIf called check for an unknown id")
	}
	if err := e.s.DeleteIf(e.ctx, bob, want[1], func(*plugin.Message) error { return nil }); err != nil {
		e.t.Fatal(err)
	}
	_, err = e.s.Get(e.ctx, bob, want[1])
	e.wantErr("Get after DeleteIf", err, plugin.ErrNotFound)
	afterDelete := version()
	if afterDelete == failed {
		e.t.Error("Version unchanged by a delete")
	}

	n, err := e.s.DeleteAllIf(e.ctx, bob, func(v string) error {
		if v != stored {
			return refused
		}
		return nil
	})
	e.wantErr("DeleteAllIf on a stale version", err, refused)
	if n != 0 {
		e.t.Errorf("a refused DeleteAllIf says %d deleted", n)
	}
	e.counts(bob, plugin.Counts{InFlight: 1, Pending: 1})
	var got string
	n, err = e.s.DeleteAllIf(e.ctx, bob, func(v string) error { got = v; return nil })
	if err != nil || n != 2 || got != afterDelete {
		e.t.Errorf("DeleteAllIf = %d, %v, its check given %q; want 2 deleted, given the Version %q", n, err, got, afterDelete)
	}
	e.counts(bob, plugin.Counts{})
	if tot, _ := e.s.Totals(e.ctx); tot.Deleted != 3 {
		e.t.Errorf("Totals.Deleted = %d, want 3", tot.Deleted)
	}

	// A message appended while a delete conditional on the version read
	// before it runs is refused, or lands after the delete: never deleted.
	for i := range 20 {
		e.appendN(bob, fmt.Sprint("r", i), 2)
		v := version()
		var wg sync.WaitGroup
		late := e.msg(bob, fmt.Sprint("late", i))
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := e.s.Append(e.ctx, late, limits); err != nil {
				e.t.Errorf("Append: %v", err)
			}
		}()
		_, err := e.s.DeleteAllIf(e.ctx, bob, func(now string) error {
			if now != v {
				return refused
			}
			return nil
		})
		if err != nil && !errors.Is(err, refused) {
			e.t.Fatal(err)
		}
		wg.Wait()
		if _, err := e.s.Get(e.ctx, bob, late.ID); err != nil {
			e.t.Fatalf("round %d: a message appended after the version was read got deleted: %v", i, err)
		}
		if _, err := e.s.DeleteAll(e.ctx, bob); err != nil {
			e.t.Fatal(err)
		}
	}
}
