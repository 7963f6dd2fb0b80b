package harness

import (
	"os"
	"os/exec"
)

// ServerCPUsEnv names the environment variable that pins the servers the
// harness starts (redis-server, Kamailio, OpenSIPS) to a list of CPUs:
// set to "0" (or "0-1,4", taskset's list syntax), each is started under
// `taskset -c LIST` (util-linux), which execs it with that affinity, so
// the process id stays the server's. make bench sets it so that the
// servers run on one set of CPUs and its load generators on another;
// unset, servers run wherever the scheduler puts them.
const ServerCPUsEnv = "DEFERPUSH_SERVER_CPUS"

// startServer is startProc for a server: under taskset when ServerCPUsEnv
// is set.
func startServer(t T, dir, name, bin string, args ...string) *Proc {
	t.Helper()
	if cpus := os.Getenv(ServerCPUsEnv); cpus != "" {
		taskset, err := exec.LookPath("taskset")
		if err != nil {
			t.Fatalf("%s=%s: taskset not found (Debian package util-linux)", ServerCPUsEnv, cpus)
		}
		args = append([]string{"-c", cpus, bin}, args...)
		bin = taskset
	}
	return startProc(t, dir, name, bin, args...)
}
