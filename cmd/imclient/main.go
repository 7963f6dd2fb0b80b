// Command imclient is deferpush's reference IM client as a command: it
// registers a user through a SIP proxy, takes the deferred messages
// deferpush pushes over MSRP, prints each one decoded (one JSON object a
// line), and unregisters when it stops. Operators use it to probe a
// deployment end to end.
//
//	imclient --aor sip:user2@example.com --proxy 127.0.0.1:5060 [--wait 30s]
//	         [--relay msrp://192.0.2.5:2855;tcp --relay-user u --relay-password p]
//	         [--pager-only]
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/deferpush/deferpush/adapters/imclient"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, code := parseFlags(args, stderr)
	if code != 0 {
		return code
	}
	cl, err := imclient.New(o.cfg)
	if err != nil {
		fmt.Fprintf(stderr, "imclient: %v\n", err)
		return 1
	}
	defer cl.Close()

	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	status, err := cl.Register(rctx, o.expires)
	cancel()
	if err != nil || status != 200 {
		fmt.Fprintf(stderr, "imclient: REGISTER %s via %s: status %d, %v\n", o.cfg.AOR, o.cfg.Proxy, status, err)
		return 1
	}
	fmt.Fprintf(stderr, "imclient: registered %s as %s; waiting for pushed messages\n", o.cfg.AOR, cl.Contact())

	wctx := ctx
	if o.wait > 0 {
		var cancel context.CancelFunc
		wctx, cancel = context.WithTimeout(ctx, o.wait)
		defer cancel()
	}
	printed := printMessages(wctx, cl, stdout)
	st := cl.Stats()
	fmt.Fprintf(stderr, "imclient: %d messages in %d sessions; unregistering\n", printed, st.Invites)
	uctx, ucancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer ucancel()
	if _, err := cl.Register(uctx, 0); err != nil {
		fmt.Fprintf(stderr, "imclient: unregister: %v\n", err)
	}
	return 0
}

// options are what the command line asks for.
type options struct {
	cfg     imclient.Config
	expires int
	wait    time.Duration
}

// parseFlags reads the command line; a non-zero code is the exit code
// (2 for a usage error).
func parseFlags(args []string, stderr io.Writer) (options, int) {
	fs := flag.NewFlagSet("imclient", flag.ContinueOnError)
	fs.SetOutput(stderr)
	aor := fs.String("aor", "", "the user's address of record, e.g. sip:user2@example.com (required)")
	proxy := fs.String("proxy", "", "host:port of the SIP proxy to register through (required)")
	transport := fs.String("transport", "tcp", "SIP transport: tcp or udp")
	host := fs.String("host", "127.0.0.1", "local address to listen on for SIP and MSRP")
	expires := fs.Int("expires", 300, "registration lifetime in seconds")
	setup := fs.String("setup", "passive", "a=setup of our SDP answer: passive (deferpush connects) or active (we connect)")
	accept := fs.String("accept-types", "message/sip message/msrp multipart/mixed message/cpim text/plain", "a=accept-types of our SDP answer")
	wait := fs.Duration("wait", 30*time.Second, "how long to wait for pushed messages (0: until interrupted)")
	relay := fs.String("relay", "", "MSRP relay (RFC 4976) to receive through, e.g. msrp://192.0.2.5:2855;tcp")
	relayUser := fs.String("relay-user", "", "user name for the relay's digest challenge")
	relayPassword := fs.String("relay-password", "", "password for the relay's digest challenge (or IMCLIENT_RELAY_PASSWORD)")
	pagerOnly := fs.Bool("pager-only", false, "act as a client without MSRP: answer INVITEs 488 and take SIP MESSAGEs (pager mode)")
	verbose := fs.Bool("v", false, "log SIP and MSRP activity to stderr")
	if err := fs.Parse(args); err != nil {
		return options{}, 2
	}
	if *aor == "" || *proxy == "" {
		fmt.Fprintln(stderr, "imclient: --aor and --proxy are required")
		fs.Usage()
		return options{}, 2
	}
	log := slog.New(slog.DiscardHandler)
	if *verbose {
		log = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if *relayPassword == "" {
		*relayPassword = os.Getenv("IMCLIENT_RELAY_PASSWORD")
	}
	o := options{expires: *expires, wait: *wait, cfg: imclient.Config{
		AOR: *aor, Proxy: *proxy, Transport: *transport, Host: *host,
		Setup: *setup, AcceptTypes: strings.Fields(*accept), Logger: log,
		Relay: *relay, RelayUser: *relayUser, RelayPassword: *relayPassword,
	}}
	if *pagerOnly {
		o.cfg.InviteStatus = 488
	}
	return o, 0
}

// printMessages prints each message as it arrives, one JSON object a line,
// until ctx ends, and returns how many.
func printMessages(ctx context.Context, cl *imclient.Client, stdout io.Writer) int {
	enc := json.NewEncoder(stdout)
	printed := 0
	for {
		_, err := cl.Wait(ctx, func(s imclient.Stats) bool { return s.Received > printed })
		for _, r := range cl.Received()[printed:] {
			out := map[string]any{
				"pager": r.Pager, "outer_message_id": r.OuterID, "content_type": r.ContentType,
				"encapsulation": r.Decoded.Encapsulation, "call_id": r.Decoded.CallID,
				"message_id": r.Decoded.MessageID, "from": r.Decoded.From, "to": r.Decoded.To,
				"date": r.Decoded.Date, "inner_content_type": r.Decoded.ContentType,
				"body": string(r.Decoded.Body), "answered": r.Answered,
			}
			if r.DecodeErr != nil {
				out["decode_error"] = r.DecodeErr.Error()
			}
			_ = enc.Encode(out)
			printed++
		}
		if err != nil {
			return printed
		}
	}
}
