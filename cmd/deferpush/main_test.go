package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "deferpush.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRunCommands(t *testing.T) {
	good := writeFile(t, "hooks:\n  listen: 127.0.0.1:9001\n")
	bad := writeFile(t, "sip:\n  outbound_proxy: http://proxy\n")
	for _, tc := range []struct {
		name     string
		args     []string
		code     int
		inStdout string
		inStderr string
	}{
		{"version", []string{"version"}, 0, "deferpush ", ""},
		{"config check ok", []string{"config", "check", good}, 0, ": ok", ""},
		{"config check bad", []string{"config", "check", bad}, 1, "", "deferpush.yaml:2: sip.outbound_proxy"},
		{"config check missing", []string{"config", "check", "/nonexistent.yaml"}, 1, "", "no such file"},
		{"serve bad config", []string{"serve", "--config", bad}, 2, "", "sip.outbound_proxy"},
		{"serve bad flag", []string{"serve", "--log-level", "loud"}, 2, "", "flag: log.level"},
		{"no command", nil, 2, "", "usage"},
		{"unknown command", []string{"frobnicate"}, 2, "", "unknown command"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), tc.args, &stdout, &stderr)
			if code != tc.code {
				t.Errorf("exit code = %d, want %d (stderr %q)", code, tc.code, stderr.String())
			}
			if !strings.Contains(stdout.String(), tc.inStdout) {
				t.Errorf("stdout %q does not contain %q", stdout.String(), tc.inStdout)
			}
			if !strings.Contains(stderr.String(), tc.inStderr) {
				t.Errorf("stderr %q does not contain %q", stderr.String(), tc.inStderr)
			}
		})
	}
}
