//go:build unix

package guard

import "syscall"

// openFileLimit is the process's soft limit of open files (the Go runtime
// raised it to the hard limit at start); 0 when unknown or unlimited.
func openFileLimit() int {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil || r.Cur > 1<<30 {
		return 0
	}
	return int(r.Cur)
}
