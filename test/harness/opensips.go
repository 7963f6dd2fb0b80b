package harness

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// OpenSIPSConfig says how to start OpenSIPS.
type OpenSIPSConfig struct {
	// ConfigFile is the routing script. It is rendered with m4 -P and
	// Defines, the way the shipped adapters/opensips/opensips.cfg takes its
	// settings; a script without m4 macros comes out unchanged.
	ConfigFile string
	// Defines are passed to m4 as -DNAME=VALUE. SIP_ADDR and SIP_PORT are
	// added when absent, and MPATH (the modules folder) when the OpenSIPS
	// found is the one scripts/install-test-deps.sh built.
	Defines map[string]string
	// SIPPort is the port OpenSIPS listens on for SIP (UDP and TCP), passed
	// as the SIP_PORT define. Zero picks a free port.
	SIPPort int
	// Ready reports whether OpenSIPS is ready. Nil sends a SIP OPTIONS over
	// UDP to SIP_ADDR:SIP_PORT and waits for any SIP response.
	Ready func(ctx context.Context, o *OpenSIPSProc) error
	// ExtraArgs are appended to the command line (-m MB of shared memory,
	// -M MB of private memory per process: 64 and 16 unless given here).
	ExtraArgs []string
}

// OpenSIPSProc is a running OpenSIPS.
type OpenSIPSProc struct {
	*Proc
	// SIPAddr is host:port of the SIP listener.
	SIPAddr string
	// Dir is its working directory, where the rendered script is.
	Dir string
	// ConfigPath is the rendered script it runs.
	ConfigPath string
}

// OpenSIPS renders cfg.ConfigFile, starts opensips -F -f SCRIPT in its own
// directory and waits until it is ready. The script must log to stderr
// (stderror_enabled=yes): the log is shown when the test fails.
func OpenSIPS(t testing.TB, cfg OpenSIPSConfig) *OpenSIPSProc {
	t.Helper()
	inst := RequireOpenSIPS(t)
	if cfg.SIPPort == 0 {
		cfg.SIPPort = FreePort(t)
	}
	defs := map[string]string{"SIP_PORT": strconv.Itoa(cfg.SIPPort), "SIP_ADDR": "127.0.0.1"}
	if inst.ModulesDir != "" {
		defs["MPATH"] = strconv.Quote(inst.ModulesDir + "/")
	}
	for k, v := range cfg.Defines {
		defs[k] = v
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "opensips.cfg")
	if err := os.WriteFile(path, RenderOpenSIPSConfig(t, cfg.ConfigFile, defs), 0o644); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"-F", "-f", path, "-w", dir, "-m", "64", "-M", "16"}, cfg.ExtraArgs...)
	o := &OpenSIPSProc{SIPAddr: net.JoinHostPort(defs["SIP_ADDR"], defs["SIP_PORT"]), Dir: dir, ConfigPath: path}
	o.Proc = startServer(t, dir, "opensips-"+defs["SIP_PORT"], inst.Binary, args...)
	ready := cfg.Ready
	if ready == nil {
		ready = func(ctx context.Context, o *OpenSIPSProc) error {
			_, err := SIPOptions(ctx, o.SIPAddr)
			return err
		}
	}
	o.WaitFor(t, 20*time.Second, "SIP listener", func(ctx context.Context) error { return ready(ctx, o) })
	return o
}

// RenderOpenSIPSConfig runs m4 -P -DNAME=VALUE... over file and returns the
// script, as the header of adapters/opensips/opensips.cfg tells operators
// to.
func RenderOpenSIPSConfig(t testing.TB, file string, defines map[string]string) []byte {
	t.Helper()
	m4 := Require(t, "m4", "m4")
	names := make([]string, 0, len(defines))
	for k := range defines {
		names = append(names, k)
	}
	sort.Strings(names)
	args := []string{"-P"}
	for _, k := range names {
		args = append(args, "-D"+k+"="+defines[k])
	}
	args = append(args, file)
	var stderr bytes.Buffer
	cmd := exec.Command(m4, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || stderr.Len() > 0 {
		t.Fatalf("m4 %s: %v\n%s", strings.Join(args, " "), err, stderr.Bytes())
	}
	return out
}

// CheckOpenSIPSConfig runs opensips -C -f path (a rendered script) and
// returns what it printed, with an error when it refused the script.
func CheckOpenSIPSConfig(t testing.TB, path string) (string, error) {
	t.Helper()
	inst := RequireOpenSIPS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, inst.Binary, "-C", "-f", path).CombinedOutput()
	return string(out), err
}

// OpenSIPSInstall is the OpenSIPS 3.4 the tests run.
type OpenSIPSInstall struct {
	// Binary is the opensips executable.
	Binary string
	// ModulesDir is the folder of its modules when the script must name it
	// (mpath): the build scripts/install-test-deps.sh made. Empty for an
	// installed package, whose default mpath is right.
	ModulesDir string
	// DataDir is its share/opensips folder (database schemas in sqlite/),
	// empty when there is none.
	DataDir string
	// Version is the first line of opensips -V.
	Version string
}

var (
	openSIPSOnce sync.Once
	openSIPS     OpenSIPSInstall
	openSIPSErr  error
)

// RequireOpenSIPS finds OpenSIPS 3.4: first the build that
// scripts/install-test-deps.sh caches from ../shared/opensips/*.tar.xz
// (keyed by the tarball's sha256), then an opensips 3.4 in PATH or the
// sbin directories. When there is none the test fails under CI and is
// skipped otherwise, saying how to get one.
func RequireOpenSIPS(t testing.TB) OpenSIPSInstall {
	t.Helper()
	if _, err := FindOpenSIPS(); err != nil {
		msg := "OpenSIPS 3.4 not found (" + openSIPSErr.Error() + "): install OpenSIPS 3.4 from your packages, " +
			"or put opensips-3.4.*.tar.xz in ../shared/opensips beside the checkout and run scripts/install-test-deps.sh"
		if InCI() {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return openSIPS
}

// FindOpenSIPS is RequireOpenSIPS for a caller that goes on without
// OpenSIPS (make bench leaves its rows out): the install, or why there is
// none.
func FindOpenSIPS() (OpenSIPSInstall, error) {
	openSIPSOnce.Do(func() { openSIPS, openSIPSErr = findOpenSIPS() })
	return openSIPS, openSIPSErr
}

func findOpenSIPS() (OpenSIPSInstall, error) {
	var problems []string
	if tarball, err := openSIPSTarball(); err != nil {
		problems = append(problems, err.Error())
	} else if inst, err := cachedOpenSIPS(tarball); err != nil {
		problems = append(problems, err.Error())
	} else {
		return inst, nil
	}
	candidates := []string{}
	if p, err := exec.LookPath("opensips"); err == nil {
		candidates = append(candidates, p)
	}
	candidates = append(candidates, "/usr/sbin/opensips", "/usr/local/sbin/opensips")
	for _, bin := range candidates {
		if v, err := openSIPSVersion(bin); err == nil {
			inst := OpenSIPSInstall{Binary: bin, Version: v}
			for _, d := range []string{"/usr/share/opensips", "/usr/local/share/opensips"} {
				if st, err := os.Stat(d); err == nil && st.IsDir() {
					inst.DataDir = d
					break
				}
			}
			return inst, nil
		} else if !errors.Is(err, os.ErrNotExist) {
			problems = append(problems, err.Error())
		}
	}
	problems = append(problems, "no opensips 3.4 installed")
	return OpenSIPSInstall{}, errors.New(strings.Join(problems, "; "))
}

// openSIPSVersion runs bin -V and returns its first line when it is 3.4.
func openSIPSVersion(bin string) (string, error) {
	if _, err := os.Stat(bin); err != nil {
		return "", err
	}
	out, err := exec.Command(bin, "-V").Output()
	if err != nil {
		return "", fmt.Errorf("%s -V: %w", bin, err)
	}
	first, _, _ := strings.Cut(string(out), "\n")
	if !strings.HasPrefix(first, "version: opensips 3.4.") {
		return "", fmt.Errorf("%s is %q, not 3.4", bin, first)
	}
	return first, nil
}

// openSIPSTarball looks for ../shared/opensips/opensips-3.4.*.tar.xz beside
// the checkout (the directory holding go.mod), or beside the main checkout
// when this one is a git worktree.
func openSIPSTarball() (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	dirs := []string{filepath.Join(root, "..", "shared", "opensips")}
	if out, err := exec.Command("git", "-C", root, "rev-parse", "--path-format=absolute", "--git-common-dir").Output(); err == nil {
		common := strings.TrimSpace(string(out))
		dirs = append(dirs, filepath.Join(filepath.Dir(common), "..", "shared", "opensips"))
	}
	for _, d := range dirs {
		m, _ := filepath.Glob(filepath.Join(d, "opensips-3.4.*.tar.xz"))
		if len(m) > 0 {
			sort.Strings(m)
			return m[0], nil
		}
	}
	return "", fmt.Errorf("no opensips-3.4.*.tar.xz in %s", strings.Join(dirs, " or "))
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// cachedOpenSIPS returns the build of tarball that install-test-deps.sh
// made: <cache>/<sha256>/sbin/opensips with its modules in
// <cache>/<sha256>/lib*/opensips/modules.
func cachedOpenSIPS(tarball string) (OpenSIPSInstall, error) {
	f, err := os.Open(tarball)
	if err != nil {
		return OpenSIPSInstall{}, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return OpenSIPSInstall{}, err
	}
	sum := hex.EncodeToString(h.Sum(nil))
	roots := []string{"/var/cache/deferpush-opensips"}
	if x := os.Getenv("XDG_CACHE_HOME"); x != "" {
		roots = append(roots, filepath.Join(x, "deferpush-opensips"))
	} else if home, err := os.UserHomeDir(); err == nil {
		roots = append(roots, filepath.Join(home, ".cache", "deferpush-opensips"))
	}
	for _, r := range roots {
		dest := filepath.Join(r, sum)
		if _, err := os.Stat(filepath.Join(dest, ".complete")); err != nil {
			continue
		}
		bin := filepath.Join(dest, "sbin", "opensips")
		v, err := openSIPSVersion(bin)
		if err != nil {
			return OpenSIPSInstall{}, err
		}
		mods, _ := filepath.Glob(filepath.Join(dest, "lib*", "opensips", "modules"))
		if len(mods) == 0 {
			return OpenSIPSInstall{}, fmt.Errorf("no modules folder in %s", dest)
		}
		return OpenSIPSInstall{Binary: bin, ModulesDir: mods[0], DataDir: filepath.Join(dest, "share", "opensips"), Version: v}, nil
	}
	return OpenSIPSInstall{}, fmt.Errorf("%s is not built yet (scripts/install-test-deps.sh builds it into %s/%s)",
		filepath.Base(tarball), roots[0], sum[:12]+"…")
}
