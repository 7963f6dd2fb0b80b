package harness

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"time"
)

// KamailioConfig says how to start Kamailio.
type KamailioConfig struct {
	// ConfigFile is the routing script (kamailio.cfg) to run.
	ConfigFile string
	// Defines are passed as -A NAME=VALUE, the way the shipped configs take
	// their ports and addresses. SIP_PORT and SIP_ADDR are added when absent.
	Defines map[string]string
	// SIPPort is the port Kamailio listens on for SIP (UDP and TCP), passed
	// as the SIP_PORT define. Zero picks a free port.
	SIPPort int
	// Ready reports whether Kamailio is ready. Nil sends a SIP OPTIONS over
	// UDP to SIP_ADDR:SIP_PORT and waits for any SIP response.
	Ready func(ctx context.Context, k *KamailioProc) error
	// ExtraArgs are appended to the command line.
	ExtraArgs []string
}

// KamailioProc is a running Kamailio.
type KamailioProc struct {
	*Proc
	// SIPAddr is host:port of the SIP listener.
	SIPAddr string
	// RunDir is the runtime directory (-Y), where its control sockets are.
	RunDir string

	bin, name string
	args      []string
	ready     func(ctx context.Context, k *KamailioProc) error
}

// Kamailio starts kamailio -DD -E -f CFG -Y DIR with the given defines and
// waits until it is ready.
func Kamailio(t T, cfg KamailioConfig) *KamailioProc {
	t.Helper()
	bin := Require(t, "kamailio", "kamailio")
	if cfg.SIPPort == 0 {
		cfg.SIPPort = FreePort(t)
	}
	defs := map[string]string{"SIP_PORT": strconv.Itoa(cfg.SIPPort), "SIP_ADDR": "127.0.0.1"}
	for k, v := range cfg.Defines {
		defs[k] = v
	}
	dir := t.TempDir()
	args := []string{"-DD", "-E", "-f", cfg.ConfigFile, "-Y", dir, "-m", "64", "-M", "8"}
	names := make([]string, 0, len(defs))
	for k := range defs {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		args = append(args, "-A", k+"="+defs[k])
	}
	args = append(args, cfg.ExtraArgs...)
	k := &KamailioProc{SIPAddr: net.JoinHostPort(defs["SIP_ADDR"], defs["SIP_PORT"]), RunDir: dir,
		bin: bin, name: "kamailio-" + defs["SIP_PORT"], args: args, ready: cfg.Ready}
	if k.ready == nil {
		k.ready = func(ctx context.Context, k *KamailioProc) error {
			_, err := SIPOptions(ctx, k.SIPAddr)
			return err
		}
	}
	k.Start(t)
	return k
}

// Start starts Kamailio (again, after Kill) with the same command line,
// ports and runtime directory, and waits until it is ready.
func (k *KamailioProc) Start(t T) {
	t.Helper()
	k.Proc = startServer(t, k.RunDir, k.name, k.bin, k.args...)
	k.WaitFor(t, 20*time.Second, "SIP listener", func(ctx context.Context) error { return k.ready(ctx, k) })
}

// SIPOptions sends one OPTIONS request over UDP to addr and returns the
// status line of the first response.
func SIPOptions(ctx context.Context, addr string) (string, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "udp", addr)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	local := conn.LocalAddr().(*net.UDPAddr)
	tag := strconv.FormatUint(uint64(randUint32()), 16)
	req := strings.Join([]string{
		"OPTIONS sip:" + addr + " SIP/2.0",
		fmt.Sprintf("Via: SIP/2.0/UDP %s;branch=z9hG4bK%s;rport", local, tag),
		"Max-Forwards: 70",
		"From: <sip:harness@127.0.0.1>;tag=" + tag,
		"To: <sip:" + addr + ">",
		"Call-ID: harness-" + tag,
		"CSeq: 1 OPTIONS",
		"Contact: <sip:harness@" + local.String() + ">",
		"Content-Length: 0",
		"", "",
	}, "\r\n")
	if _, err := conn.Write([]byte(req)); err != nil {
		return "", err
	}
	buf := make([]byte, 4096)
	n, err := conn.Read(buf)
	if err != nil {
		return "", err
	}
	line, _, _ := strings.Cut(string(buf[:n]), "\r\n")
	if !strings.HasPrefix(line, "SIP/2.0 ") {
		return "", fmt.Errorf("not a SIP response: %q", line)
	}
	return line, nil
}
