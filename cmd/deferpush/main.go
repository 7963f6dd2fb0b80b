// Command deferpush is the deferpush server: it keeps SIP instant messages
// for offline users in Redis and pushes them over MSRP when they register.
//
//	deferpush serve [--config FILE] [flags]   run the server
//	deferpush config check FILE               validate a configuration file
//	deferpush version                         print the version
//
// This package reads the configuration and wires the parts together; the
// behaviour lives in the packages it imports.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/deferpush/deferpush/cmd/internal/config"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const usage = `usage:
  deferpush serve [--config FILE] [flags]   run the server (serve -h lists the flags)
  deferpush config check FILE               validate a configuration file
  deferpush version                         print the version
`

// run is main without the process: it returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "serve":
		cfg, path, err := parseServe(args[1:], stderr, os.LookupEnv)
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		if err != nil {
			fmt.Fprintf(stderr, "deferpush: %v\n", err)
			return 2
		}
		if err := serve(ctx, cfg, path, stderr); err != nil {
			fmt.Fprintf(stderr, "deferpush: %v\n", err)
			return 1
		}
		return 0
	case "config":
		if len(args) != 3 || args[1] != "check" {
			fmt.Fprint(stderr, usage)
			return 2
		}
		if _, err := config.Load(args[2], nil, os.LookupEnv); err != nil {
			fmt.Fprintf(stderr, "deferpush: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "%s: ok\n", args[2])
		return 0
	case "version", "--version", "-version":
		fmt.Fprintf(stdout, "deferpush %s\n", versionString())
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "deferpush: unknown command %q\n%s", args[0], usage)
	return 2
}

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		v := bi.Main.Version
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				v += " (" + s.Value[:12] + ")"
			}
		}
		return v
	}
	return "unknown"
}

// parseServe reads serve's flags, then the file they name, the environment
// and the flags again, in that order of precedence.
func parseServe(args []string, stderr io.Writer, lookup func(string) (string, bool)) (*config.Config, string, error) {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "YAML configuration `file`")
	// Each flag overrides one field, named by its YAML path.
	fields := map[string]string{}
	for _, f := range []struct{ name, field, usage string }{
		{"redis", "redis.url", "Redis `URL` (redis://, rediss://, unix://, redis+sentinel://, redis+cluster://); empty: embedded in-memory store"},
		{"hooks-listen", "hooks.listen", "`host:port` of the proxy hooks (default 127.0.0.1:8710)"},
		{"admin-listen", "admin.listen", "`host:port` of the admin API (default 127.0.0.1:8711)"},
		{"sip-listen", "sip.listen", "`host:port` of SIP over UDP and TCP (default 127.0.0.1:5070)"},
		{"outbound-proxy", "sip.outbound_proxy", "SIP `URI` of the proxy INVITEs go through"},
		{"msrp-listen", "msrp.listen", "`host:port` of MSRP (default 127.0.0.1:2855)"},
		{"log-level", "log.level", "debug, info, warn or error"},
		{"log-format", "log.format", "auto, text or json"},
	} {
		fs.String(f.name, "", f.usage)
		fields[f.name] = f.field
	}
	if err := fs.Parse(args); err != nil {
		return nil, "", err
	}
	if fs.NArg() > 0 {
		return nil, "", fmt.Errorf("serve: unexpected argument %q", fs.Arg(0))
	}
	flags := map[string]string{}
	fs.Visit(func(f *flag.Flag) {
		if field, ok := fields[f.Name]; ok {
			flags[field] = f.Value.String()
		}
	})
	cfg, err := config.Load(*path, flags, lookup)
	return cfg, *path, err
}
