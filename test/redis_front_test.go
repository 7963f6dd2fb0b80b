package test

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// redisFront is a TCP proxy in front of redis-server that reads the
// commands clients send (RESP arrays of bulk strings, as go-redis writes
// them) and passes them on, except the first command after hold(arg) that
// carries arg as one of its arguments: that command never reaches Redis,
// it is reported on held, and its connection carries nothing more until
// the proxy closes it. A test can so stop one exact command — the ack of
// one message, which alone names its id — where CLIENT PAUSE would stop
// whatever write comes first (a lease renewal as well).
type redisFront struct {
	ln     net.Listener
	target string
	held   chan []string // the held command, its name and arguments

	mu    sync.Mutex
	arg   string // hold the next command with this argument; "" holds none
	conns []net.Conn
	wg    sync.WaitGroup
}

func startRedisFront(t *testing.T, target string) *redisFront {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &redisFront{ln: ln, target: target, held: make(chan []string, 1)}
	f.wg.Add(1)
	go f.serve()
	t.Cleanup(func() {
		ln.Close()
		f.closeAll()
		f.wg.Wait()
	})
	return f
}

// URL is what deferpush's --redis takes to go through the front.
func (f *redisFront) URL() string { return "redis://" + f.ln.Addr().String() + "/0" }

// hold makes the front hold the next command that carries arg.
func (f *redisFront) hold(arg string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.arg = arg
}

// closeAll closes every connection through the front, the held one too;
// later connections pass as before.
func (f *redisFront) closeAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.conns {
		c.Close()
	}
	f.conns = nil
}

func (f *redisFront) serve() {
	defer f.wg.Done()
	for {
		in, err := f.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.DialTimeout("tcp", f.target, 5*time.Second)
		if err != nil {
			in.Close()
			continue
		}
		f.mu.Lock()
		f.conns = append(f.conns, in, out)
		f.mu.Unlock()
		f.wg.Add(2)
		go func() {
			defer f.wg.Done()
			defer in.Close()
			_, _ = io.Copy(in, out)
		}()
		go func() {
			defer f.wg.Done()
			defer out.Close()
			f.forward(in, out)
		}()
	}
}

// forward passes the commands read from in to out, one at a time, until
// one is to be held.
func (f *redisFront) forward(in, out net.Conn) {
	r := bufio.NewReader(in)
	for {
		raw, args, err := readCommand(r)
		if err != nil {
			return
		}
		f.mu.Lock()
		hold := f.arg != "" && len(args) > 1 && containsArg(args[1:], f.arg)
		if hold {
			f.arg = ""
		}
		f.mu.Unlock()
		if hold {
			f.held <- args
			_, _ = io.Copy(io.Discard, r) // until the connection closes
			return
		}
		if _, err := out.Write(raw); err != nil {
			return
		}
	}
}

func containsArg(args []string, arg string) bool {
	for _, a := range args {
		if a == arg {
			return true
		}
	}
	return false
}

// readCommand reads one command: a RESP array of bulk strings, or an
// inline command line. It returns its bytes as read and its arguments.
func readCommand(r *bufio.Reader) (raw []byte, args []string, err error) {
	var buf bytes.Buffer
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, nil, err
	}
	buf.WriteString(line)
	if !strings.HasPrefix(line, "*") {
		return buf.Bytes(), strings.Fields(line), nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(line[1:]))
	if err != nil {
		return nil, nil, err
	}
	for range n {
		hdr, err := r.ReadString('\n')
		if err != nil {
			return nil, nil, err
		}
		buf.WriteString(hdr)
		if !strings.HasPrefix(hdr, "$") {
			return nil, nil, errors.New("redis front: not a bulk string: " + strings.TrimSpace(hdr))
		}
		size, err := strconv.Atoi(strings.TrimSpace(hdr[1:]))
		if err != nil || size < 0 {
			return nil, nil, errors.New("redis front: bad bulk length: " + strings.TrimSpace(hdr))
		}
		b := make([]byte, size+2)
		if _, err := io.ReadFull(r, b); err != nil {
			return nil, nil, err
		}
		buf.Write(b)
		args = append(args, string(b[:size]))
	}
	return buf.Bytes(), args, nil
}
