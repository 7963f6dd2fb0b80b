// Command mutate is `make mutate`: it breaks the critical lines listed in
// mutations.go one at a time (the ack only after a 200, the lease check of
// the ack function, the token comparisons, the size limits and their 413s,
// asking for and waiting for success REPORTs) and runs the tests that must
// notice each. It prints a table (mutation | file | killed by | result)
// and fails when a mutation survives, when one no longer applies (the code
// it breaks changed: update the list), or when the tests fail before any
// mutation.
//
// It works on a copy of the repository (the files git tracks, and new ones
// it does not ignore) in a temporary directory, so the working tree is
// never modified, even when mutate is interrupted or killed; Ctrl-C stops
// the test run in progress and removes the copy.
//
//	go run ./test/mutate [-match REGEXP] [-timeout 5m] [-v]
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"
)

func main() {
	match := flag.String("match", "", "run only the mutations whose name matches this regexp")
	timeout := flag.Duration("timeout", 5*time.Minute, "bound of each go test run")
	verbose := flag.Bool("v", false, "print the output of the test runs that killed a mutation")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	code, err := run(ctx, options{match: *match, timeout: *timeout, verbose: *verbose, out: os.Stdout, log: os.Stderr})
	if err != nil {
		fmt.Fprintln(os.Stderr, "mutate:", err)
	}
	os.Exit(code)
}

type options struct {
	match    string
	timeout  time.Duration
	verbose  bool
	out, log io.Writer
}

// result is what became of one mutation.
type result struct {
	m        mutation
	killedBy string // the tests that failed, or why the run failed
	outcome  string // killed, SURVIVED, INVALID
	took     time.Duration
}

func run(ctx context.Context, o options) (int, error) {
	list := mutations
	if o.match != "" {
		re, err := regexp.Compile(o.match)
		if err != nil {
			return 2, fmt.Errorf("-match: %w", err)
		}
		list = nil
		for _, m := range mutations {
			if re.MatchString(m.Name) {
				list = append(list, m)
			}
		}
	}
	if len(list) == 0 {
		return 2, errors.New("no mutation to run")
	}
	root, err := moduleRoot()
	if err != nil {
		return 2, err
	}
	tree, err := os.MkdirTemp("", "deferpush-mutate-")
	if err != nil {
		return 2, err
	}
	defer os.RemoveAll(tree)
	fmt.Fprintf(o.log, "mutate: copying %s to %s\n", root, tree)
	if err := copyTree(ctx, root, tree); err != nil {
		return 2, fmt.Errorf("copy the repository: %w", err)
	}
	var stale []string
	for _, m := range list {
		if _, err := m.apply(readFile(tree, m.File)); err != nil {
			stale = append(stale, fmt.Sprintf("%s (%s): %v", m.Name, m.File, err))
		}
	}
	if len(stale) > 0 {
		return 1, fmt.Errorf("mutations that no longer apply (update test/mutate/mutations.go):\n  %s", strings.Join(stale, "\n  "))
	}

	// The tests must pass before anything is broken, or a failure would
	// prove nothing.
	seen := map[string]bool{}
	for _, m := range list {
		for _, spec := range m.Tests {
			if seen[spec] {
				continue
			}
			seen[spec] = true
			fmt.Fprintf(o.log, "mutate: baseline %s\n", spec)
			if r := goTest(ctx, tree, spec, o.timeout); r.err != nil {
				if ctx.Err() != nil {
					return 130, ctx.Err()
				}
				return 1, fmt.Errorf("the tests fail without any mutation: %s: %v\n%s", spec, r.err, tail(r.out, 4000))
			}
		}
	}

	var results []result
	for i, m := range list {
		fmt.Fprintf(o.log, "mutate: [%d/%d] %s\n", i+1, len(list), m.Name)
		r, err := m.try(ctx, tree, o)
		if ctx.Err() != nil {
			return 130, ctx.Err()
		}
		if err != nil {
			return 2, err
		}
		fmt.Fprintf(o.log, "mutate:   %s %s\n", r.outcome, r.killedBy)
		results = append(results, r)
	}

	fmt.Fprintln(o.out, "| mutation | file | killed by | result |")
	fmt.Fprintln(o.out, "|---|---|---|---|")
	code := 0
	for _, r := range results {
		fmt.Fprintf(o.out, "| %s | %s | %s | %s (%.0f s) |\n", r.m.Name, r.m.File, r.killedBy, r.outcome, r.took.Seconds())
		if r.outcome != "killed" {
			code = 1
		}
	}
	return code, nil
}

// try applies m in tree, runs its tests until one fails, and puts the file
// back whatever happens.
func (m mutation) try(ctx context.Context, tree string, o options) (result, error) {
	path := filepath.Join(tree, m.File)
	orig, err := os.ReadFile(path)
	if err != nil {
		return result{}, err
	}
	mutated, err := m.apply(orig)
	if err != nil {
		return result{}, err
	}
	if err := os.WriteFile(path, mutated, 0o644); err != nil {
		return result{}, err
	}
	defer func() {
		if err := os.WriteFile(path, orig, 0o644); err != nil {
			fmt.Fprintf(o.log, "mutate: restore %s: %v\n", path, err)
		}
	}()
	start := time.Now()
	res := result{m: m, outcome: "SURVIVED", killedBy: "—"}
	// A mutation that does not compile proves nothing.
	for _, spec := range m.Tests {
		pkg, _, _ := strings.Cut(spec, ":")
		if r := goTest(ctx, tree, pkg+":^$", o.timeout); r.err != nil {
			res.outcome, res.killedBy = "INVALID", "does not compile: "+firstLine(r.out)
			res.took = time.Since(start)
			return res, nil
		}
	}
	for _, spec := range m.Tests {
		r := goTest(ctx, tree, spec, o.timeout)
		if r.err == nil {
			continue
		}
		pkg, _, _ := strings.Cut(spec, ":")
		res.outcome, res.killedBy = "killed", strings.TrimPrefix(strings.TrimSuffix(pkg, "/"), "./")+": "+failures(r.out)
		if o.verbose {
			fmt.Fprintf(o.log, "%s\n", tail(r.out, 4000))
		}
		break
	}
	res.took = time.Since(start)
	return res, nil
}

// apply returns src with m's From (the first after After) replaced by To.
// From must occur there exactly once.
func (m mutation) apply(src []byte) ([]byte, error) {
	if src == nil {
		return nil, errors.New("file not found")
	}
	s := string(src)
	base := 0
	if m.After != "" {
		i := strings.Index(s, m.After)
		if i < 0 {
			return nil, fmt.Errorf("anchor %q not found", m.After)
		}
		base = i + len(m.After)
	}
	rest := s[base:]
	i := strings.Index(rest, m.From)
	switch {
	case i < 0:
		return nil, fmt.Errorf("%q not found", m.From)
	case m.After == "" && strings.Count(rest, m.From) > 1:
		return nil, fmt.Errorf("%q occurs %d times; give After", m.From, strings.Count(rest, m.From))
	}
	return []byte(s[:base] + rest[:i] + m.To + rest[i+len(m.From):]), nil
}

type testRun struct {
	out string
	err error
}

// goTest runs go test -count=1 for spec ("pkg" or "pkg:pattern") in tree,
// with CI=true, in its own process group so that an interrupt stops
// whatever it started.
func goTest(ctx context.Context, tree, spec string, timeout time.Duration) testRun {
	pkg, pattern, _ := strings.Cut(spec, ":")
	args := []string{"test", "-count=1", "-timeout", timeout.String()}
	if pattern != "" {
		args = append(args, "-run", pattern)
	}
	args = append(args, pkg)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = tree
	cmd.Env = append(os.Environ(), "CI=true")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return testRun{out: out.String(), err: err}
}

var failLine = regexp.MustCompile(`(?m)^--- FAIL: (\S+)`)

// failures names the top-level tests that failed, or says how the run
// failed without one.
func failures(out string) string {
	var names []string
	seen := map[string]bool{}
	for _, m := range failLine.FindAllStringSubmatch(out, -1) {
		if !seen[m[1]] {
			seen[m[1]] = true
			names = append(names, m[1])
		}
	}
	switch {
	case len(names) > 3:
		return strings.Join(names[:3], ", ") + fmt.Sprintf(" and %d more", len(names)-3)
	case len(names) > 0:
		return strings.Join(names, ", ")
	case strings.Contains(out, "panic: test timed out"):
		return "a test timed out"
	case strings.Contains(out, "panic:"):
		return "a panic: " + firstLine(out[strings.Index(out, "panic:"):])
	}
	return "go test failed: " + firstLine(out)
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	line, _, _ := strings.Cut(s, "\n")
	return strings.ReplaceAll(line, "|", `\|`)
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}

func readFile(tree, rel string) []byte {
	b, err := os.ReadFile(filepath.Join(tree, rel))
	if err != nil {
		return nil
	}
	return b
}

// moduleRoot is the directory of the go.mod above the working directory.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside the deferpush module")
	}
	return filepath.Dir(gomod), nil
}

// copyTree copies the files git tracks in root, and the new ones it does
// not ignore, to dst with their modes.
func copyTree(ctx context.Context, root, dst string) error {
	out, err := exec.CommandContext(ctx, "git", "-C", root, "ls-files", "-z", "--cached", "--others", "--exclude-standard").Output()
	if err != nil {
		return fmt.Errorf("git ls-files: %w", err)
	}
	for _, rel := range strings.Split(strings.TrimRight(string(out), "\x00"), "\x00") {
		if rel == "" {
			continue
		}
		src := filepath.Join(root, rel)
		fi, err := os.Lstat(src)
		if errors.Is(err, os.ErrNotExist) {
			continue // deleted in the working tree
		}
		if err != nil {
			return err
		}
		if !fi.Mode().IsRegular() {
			continue
		}
		b, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		to := filepath.Join(dst, rel)
		if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(to, b, fi.Mode().Perm()); err != nil {
			return err
		}
	}
	return nil
}
