package harness

// T is what the harness needs of its caller. A test's testing.TB is one;
// a program that starts the same servers outside a test (test/demo, which
// make demo runs) gives its own, whose Fatal stops what was started and
// exits.
type T interface {
	Helper()
	Cleanup(func())
	TempDir() string
	Failed() bool
	Logf(format string, args ...any)
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Skip(args ...any)
}

// Start starts bin with args as a server process of the caller, logging
// to a file in a temporary directory (printed when the caller failed),
// and stops it when the caller is cleaned up. Wait for it with WaitFor.
func Start(t T, name, bin string, args ...string) *Proc {
	t.Helper()
	return startProc(t, t.TempDir(), name, bin, args...)
}
