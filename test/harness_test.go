package test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/deferpush/deferpush/test/harness"
)

func TestHarnessRedis(t *testing.T) {
	r := harness.Redis(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if got, err := harness.RedisDo(ctx, r.Addr, "SET", "k", "v"); err != nil || got != "OK" {
		t.Fatalf("SET = %q, %v; want OK", got, err)
	}
	if got, err := harness.RedisDo(ctx, r.Addr, "GET", "k"); err != nil || got != "v" {
		t.Fatalf("GET = %q, %v; want v", got, err)
	}
}

func TestHarnessRedisRestartKeepsAOF(t *testing.T) {
	r := harness.Redis(t, harness.WithAOF())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := harness.RedisDo(ctx, r.Addr, "RPUSH", "l", "a", "b"); err != nil {
		t.Fatal(err)
	}
	r.Restart(t)
	if got, err := harness.RedisDo(ctx, r.Addr, "LLEN", "l"); err != nil || got != "2" {
		t.Fatalf("LLEN after kill -9 and restart = %q, %v; want 2", got, err)
	}
}

func TestHarnessRedisCluster(t *testing.T) {
	c := harness.RedisCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, addr := range c.Addrs {
		info, err := harness.RedisDo(ctx, addr, "CLUSTER", "INFO")
		if err != nil {
			t.Fatalf("CLUSTER INFO on %s: %v", addr, err)
		}
		for _, want := range []string{"cluster_state:ok", "cluster_known_nodes:3", "cluster_slots_assigned:16384"} {
			if !strings.Contains(info, want) {
				t.Errorf("CLUSTER INFO on %s lacks %q:\n%s", addr, want, info)
			}
		}
	}
}

func TestHarnessKamailioAnswersOptions(t *testing.T) {
	k := harness.Kamailio(t, harness.KamailioConfig{ConfigFile: "testdata/kamailio-options.cfg"})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, err := harness.SIPOptions(ctx, k.SIPAddr)
	if err != nil {
		t.Fatalf("OPTIONS to %s: %v", k.SIPAddr, err)
	}
	if want := "SIP/2.0 200 Harness OK"; got != want {
		t.Errorf("OPTIONS answered %q, want %q", got, want)
	}
}

func TestHarnessSIPpAgainstKamailio(t *testing.T) {
	k := harness.Kamailio(t, harness.KamailioConfig{ConfigFile: "testdata/kamailio-options.cfg"})
	res := harness.RunSIPp(t, harness.SIPpConfig{
		Scenario: "testdata/sipp-options.xml",
		Remote:   k.SIPAddr,
		Args:     []string{"-m", "5", "-r", "50"},
		Timeout:  20 * time.Second,
	})
	if res.Err != nil {
		t.Fatalf("sipp: %v", res.Err)
	}
	// SIPp exits 0 only when every one of the -m calls succeeded.
}

// TestHarnessOpenSIPSAnswersOptions: the harness renders any OpenSIPS
// script with m4, starts it in the foreground with the modules it found,
// and waits until it answers.
func TestHarnessOpenSIPSAnswersOptions(t *testing.T) {
	o := harness.OpenSIPS(t, harness.OpenSIPSConfig{ConfigFile: "testdata/opensips-options.cfg"})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, err := harness.SIPOptions(ctx, o.SIPAddr)
	if err != nil {
		t.Fatalf("OPTIONS to %s: %v", o.SIPAddr, err)
	}
	if want := "SIP/2.0 200 Harness OK"; got != want {
		t.Errorf("OPTIONS answered %q, want %q", got, want)
	}
}
