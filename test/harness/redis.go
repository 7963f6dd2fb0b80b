package harness

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// RedisServer is a redis-server on a free loopback port with its data in a
// temporary directory.
type RedisServer struct {
	// Addr is host:port of the server.
	Addr string
	// Socket is the Unix socket it also listens on (WithUnixSocket), or
	// "".
	Socket string

	bin  string
	dir  string
	args []string
	proc *Proc
	t    T
}

// RedisOption changes how a redis-server is started.
type RedisOption func(*redisOptions)

type redisOptions struct {
	aof    bool
	socket string
	args   []string
}

// WithArgs adds command-line arguments (configuration directives).
func WithArgs(args ...string) RedisOption {
	return func(o *redisOptions) { o.args = append(o.args, args...) }
}

// WithUnixSocket has the server listen on the Unix socket path too
// (mode 700), beside its TCP port.
func WithUnixSocket(path string) RedisOption {
	return func(o *redisOptions) {
		o.socket = path
		o.args = append(o.args, "--unixsocket", path, "--unixsocketperm", "700")
	}
}

// WithAOF turns on the append-only file with appendfsync always, so that
// every acknowledged write survives a kill -9 of the server.
func WithAOF() RedisOption { return func(o *redisOptions) { o.aof = true } }

// Redis starts a standalone redis-server for the test.
func Redis(t T, opts ...RedisOption) *RedisServer {
	t.Helper()
	var o redisOptions
	for _, opt := range opts {
		opt(&o)
	}
	bin := Require(t, "redis-server", "redis-server")
	port := FreePort(t)
	dir := t.TempDir()
	args := []string{
		"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--dir", dir, "--save", "", "--daemonize", "no",
		"--protected-mode", "no", "--loglevel", "notice",
	}
	if o.aof {
		args = append(args, "--appendonly", "yes", "--appendfsync", "always")
	} else {
		args = append(args, "--appendonly", "no")
	}
	args = append(args, o.args...)
	r := &RedisServer{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Socket: o.socket, bin: bin, dir: dir, args: args, t: t}
	r.Start(t)
	return r
}

// URL is the redis:// URL of the server.
func (r *RedisServer) URL() string { return "redis://" + r.Addr + "/0" }

// Proc is the running process (for Kill, PID and Log).
func (r *RedisServer) Proc() *Proc { return r.proc }

// Start starts the server (again) on the same port and data directory and
// waits until it answers PING.
func (r *RedisServer) Start(t T) {
	t.Helper()
	r.start(t)
}

// StartReplicaOf is Start with the server a replica of master (host:port)
// from its first moment, as an operator brings back a failed master
// once the Sentinels have promoted another: never a master, however
// briefly, whose emptiness a Sentinel could promote.
func (r *RedisServer) StartReplicaOf(t T, master string) {
	t.Helper()
	host, port, err := net.SplitHostPort(master)
	if err != nil {
		t.Fatalf("StartReplicaOf %q: %v", master, err)
	}
	r.start(t, "--replicaof", host, port)
}

func (r *RedisServer) start(t T, extra ...string) {
	t.Helper()
	r.proc = startServer(t, r.dir, "redis-server-"+portOf(r.Addr), r.bin, append(slices.Clone(r.args), extra...)...)
	r.proc.WaitFor(t, 10*time.Second, "PING", func(ctx context.Context) error {
		got, err := RedisDo(ctx, r.Addr, "PING")
		if err != nil {
			return err
		}
		if got != "PONG" {
			return fmt.Errorf("PING answered %q", got)
		}
		return nil
	})
}

// Kill stops the server with SIGKILL, as a crash would.
func (r *RedisServer) Kill() { r.proc.Kill() }

// Restart kills the server with SIGKILL and starts it again on the same
// port and data directory (with AOF on, acknowledged writes survive).
func (r *RedisServer) Restart(t T) {
	t.Helper()
	r.Kill()
	r.Start(t)
}

// Cluster is a Redis Cluster of three masters (no replicas) on loopback.
type Cluster struct {
	// Addrs are host:port of the three nodes.
	Addrs []string
	Nodes []*RedisServer
}

// URL is a redis+cluster:// URL naming every node.
func (c *Cluster) URL() string { return "redis+cluster://" + strings.Join(c.Addrs, ",") }

// RedisCluster starts three cluster-enabled redis-servers, joins them with
// redis-cli --cluster create, and waits until every node reports
// cluster_state:ok.
func RedisCluster(t testing.TB) *Cluster {
	t.Helper()
	bin := Require(t, "redis-server", "redis-server")
	cli := Require(t, "redis-cli", "redis-tools")
	c := &Cluster{}
	for range 3 {
		// The cluster bus listens on port+10000.
		port := freePortBelow(t, 55000, 10000)
		dir := t.TempDir()
		args := []string{
			"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
			"--dir", dir, "--save", "", "--appendonly", "no", "--daemonize", "no",
			"--protected-mode", "no", "--cluster-enabled", "yes",
			"--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000",
		}
		r := &RedisServer{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), bin: bin, dir: dir, args: args, t: t}
		r.Start(t)
		c.Nodes = append(c.Nodes, r)
		c.Addrs = append(c.Addrs, r.Addr)
	}
	args := append([]string{"--cluster", "create"}, c.Addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	for _, n := range c.Nodes {
		n.proc.WaitFor(t, 20*time.Second, "cluster_state:ok", func(ctx context.Context) error {
			info, err := RedisDo(ctx, n.Addr, "CLUSTER", "INFO")
			if err != nil {
				return err
			}
			if !strings.Contains(info, "cluster_state:ok") {
				return fmt.Errorf("cluster not ok yet")
			}
			return nil
		})
	}
	return c
}

// RedisDo sends one command to addr over a new connection and returns the
// reply as a string (simple, bulk or integer replies; an error reply is
// returned as an error). It exists so the harness can poll readiness without
// depending on the client library under test.
func RedisDo(ctx context.Context, addr string, args ...string) (string, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := conn.Write([]byte(b.String())); err != nil {
		return "", err
	}
	return readReply(bufio.NewReader(conn))
}

// readReply reads one RESP reply; an array's elements come joined by
// spaces (nested arrays too), a nil as "".
func readReply(br *bufio.Reader) (string, error) {
	line, err := br.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", fmt.Errorf("empty reply")
	}
	switch line[0] {
	case '+', ':':
		return line[1:], nil
	case '-':
		return "", fmt.Errorf("redis: %s", line[1:])
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return "", err
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(br, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	case '*':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return "", err
		}
		parts := make([]string, 0, n)
		for range n {
			p, err := readReply(br)
			if err != nil {
				return "", err
			}
			parts = append(parts, p)
		}
		return strings.Join(parts, " "), nil
	}
	return line, nil
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}
