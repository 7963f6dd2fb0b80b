package msrp

import (
	"bufio"
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Header names as RFC 4975 spells them.
const (
	HeaderToPath        = "To-Path"
	HeaderFromPath      = "From-Path"
	HeaderMessageID     = "Message-ID"
	HeaderByteRange     = "Byte-Range"
	HeaderSuccessReport = "Success-Report"
	HeaderFailureReport = "Failure-Report"
	HeaderStatus        = "Status"
	HeaderContentType   = "Content-Type"
)

// Continuation flags of the end-line (RFC 4975 §5.1).
const (
	FlagEnd       = '$' // last chunk of the message
	FlagMore      = '+' // more chunks follow
	FlagAbort     = '#' // the message is abandoned
	endLinePrefix = "-------"
)

// Header is one header field of a frame, its name spelled as received.
type Header struct {
	Name, Value string
}

// Frame is one MSRP request or response as it is on the wire. Headers keep
// their order and spelling so that a parsed frame writes back byte for byte.
type Frame struct {
	TID     string // transaction id
	Method  string // request method; empty for a response
	Status  int    // response status code; 0 for a request
	Comment string // response comment; may be empty
	Header  []Header
	Body    []byte // nil when the frame has no body (no content-stuff)
	Flag    byte   // FlagEnd, FlagMore or FlagAbort
}

// IsRequest reports whether f is a request.
func (f *Frame) IsRequest() bool { return f.Method != "" }

// Get returns the value of the first header called name (case-insensitive)
// and whether there was one.
func (f *Frame) Get(name string) (string, bool) {
	for _, h := range f.Header {
		if strings.EqualFold(h.Name, name) {
			return h.Value, true
		}
	}
	return "", false
}

// Value returns the value of the first header called name, or "".
func (f *Frame) Value(name string) string {
	v, _ := f.Get(name)
	return v
}

// AppendTo appends the wire form of f to b.
func (f *Frame) AppendTo(b []byte) []byte {
	b = append(b, "MSRP "...)
	b = append(b, f.TID...)
	b = append(b, ' ')
	if f.Method != "" {
		b = append(b, f.Method...)
	} else {
		b = strconv.AppendInt(b, int64(f.Status/100%10), 10)
		b = strconv.AppendInt(b, int64(f.Status/10%10), 10)
		b = strconv.AppendInt(b, int64(f.Status%10), 10)
		if f.Comment != "" {
			b = append(b, ' ')
			b = append(b, f.Comment...)
		}
	}
	b = append(b, "\r\n"...)
	for _, h := range f.Header {
		b = append(b, h.Name...)
		b = append(b, ": "...)
		b = append(b, h.Value...)
		b = append(b, "\r\n"...)
	}
	if f.Body != nil {
		b = append(b, "\r\n"...)
		b = append(b, f.Body...)
		b = append(b, "\r\n"...)
	}
	b = append(b, endLinePrefix...)
	b = append(b, f.TID...)
	flag := f.Flag
	if flag == 0 {
		flag = FlagEnd
	}
	return append(b, flag, '\r', '\n')
}

// String returns the wire form of f.
func (f *Frame) String() string { return string(f.AppendTo(nil)) }

// Limits bound what a Reader accepts. The zero value of each field selects
// the default shown.
type Limits struct {
	MaxLine        int // longest start line or header line, CRLF included: 4096
	MaxHeaders     int // most header fields in a frame: 32
	MaxHeaderBytes int // start line and headers together: 16384
	MaxChunk       int // longest body of one frame: 1 MiB
}

func (l Limits) withDefaults() Limits {
	if l.MaxLine <= 0 {
		l.MaxLine = 4096
	}
	if l.MaxHeaders <= 0 {
		l.MaxHeaders = 32
	}
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = 16384
	}
	if l.MaxChunk <= 0 {
		l.MaxChunk = 1 << 20
	}
	return l
}

// Reader reads frames from a byte stream. Bodies are delimited by the
// end-line alone: Byte-Range is never trusted for framing.
type Reader struct {
	br   *bufio.Reader
	lim  Limits
	head []byte // start line and headers of the frame being read, reused
	// encapsulated reads a frame carried in a body (ParseEncapsulated).
	encapsulated bool
}

// NewReader returns a Reader of r with the given limits.
func NewReader(r io.Reader, lim Limits) *Reader {
	lim = lim.withDefaults()
	size := max(4096, lim.MaxLine+2)
	return &Reader{br: bufio.NewReaderSize(r, size), lim: lim}
}

// ReadFrame reads the next frame. A *SyntaxError reports a frame that must
// be refused; the frame is returned with it when its start line could be
// read, so that a response can be built. When the error's Resync is false,
// or the error is not a *SyntaxError, the stream is unusable (io.EOF on a
// clean end between frames).
func (r *Reader) ReadFrame() (*Frame, error) {
	// The start line and the headers are copied into one buffer and turned
	// into one string, so all the header strings share one allocation.
	r.head = r.head[:0]
	var spans [32]headerSpan
	hs := spans[:0]
	// bad is the first error that still lets the frame be read to its end.
	var bad *SyntaxError

	line, err := r.readLine()
	if err != nil {
		if err == io.EOF && len(line) == 0 {
			return nil, io.EOF
		}
		return nil, r.lineError(err, "start line")
	}
	rest, ok := bytes.CutPrefix(line, []byte("MSRP "))
	if !ok {
		return nil, &SyntaxError{Code: StatusBadRequest, Reason: "start line is not MSRP"}
	}
	sp := bytes.IndexByte(rest, ' ')
	if sp < 0 || !r.isIdent(string(rest[:sp])) {
		return nil, &SyntaxError{Code: StatusBadRequest, Reason: "bad transaction id"}
	}
	r.head = append(r.head, rest...)
	tidEnd := sp
	typeStart := sp + 1

	var endFlag byte
	hasBody := false
	headerBytes := len(line)
	overflow := false
	for {
		line, err = r.readLine()
		if err != nil {
			if err == errLineTooLong {
				// Skip the rest of the line and carry on looking for the
				// end of the frame.
				bad = firstErr(bad, "header line too long")
				if err = r.skipLine(); err != nil {
					return nil, r.lineError(err, "header")
				}
				continue
			}
			return nil, r.lineError(err, "header")
		}
		if bytes.HasPrefix(line, []byte(endLinePrefix)) {
			tid := string(r.head[:tidEnd])
			if len(line) != len(endLinePrefix)+len(tid)+1 || string(line[len(endLinePrefix):len(line)-1]) != tid {
				return r.partial(tidEnd, typeStart, hs), &SyntaxError{Code: StatusBadRequest, Reason: "end-line does not match transaction id"}
			}
			endFlag = line[len(line)-1]
			if !isFlag(endFlag) {
				return r.partial(tidEnd, typeStart, hs), &SyntaxError{Code: StatusBadRequest, Reason: "bad end-line flag"}
			}
			break
		}
		if len(line) == 0 {
			hasBody = true
			break
		}
		headerBytes += len(line) + 2
		if headerBytes > r.lim.MaxHeaderBytes || len(hs) >= r.lim.MaxHeaders {
			bad = firstErr(bad, "too many header bytes or fields")
			overflow = true
		}
		if overflow {
			continue
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || !isToken(line[:colon]) {
			return r.partial(tidEnd, typeStart, hs), &SyntaxError{Code: StatusBadRequest, Reason: "malformed header line"}
		}
		v := line[colon+1:]
		for len(v) > 0 && (v[0] == ' ' || v[0] == '\t') {
			v = v[1:]
		}
		if !isText(v) {
			bad = firstErr(bad, "control character in header")
		}
		var s headerSpan
		s.name = [2]int{len(r.head), len(r.head) + colon}
		r.head = append(r.head, line[:colon]...)
		s.value = [2]int{len(r.head), len(r.head) + len(v)}
		r.head = append(r.head, v...)
		hs = append(hs, s)
	}

	f := r.partial(tidEnd, typeStart, hs)
	if hasBody {
		body, flag, tooLarge, err := r.readBody(f)
		if err != nil {
			return f, err
		}
		f.Body, endFlag = body, flag
		if tooLarge {
			if bad == nil || bad.Code != StatusStopSending {
				bad = &SyntaxError{Code: StatusStopSending, Resync: true, Reason: "chunk too large"}
			}
		}
	}
	f.Flag = endFlag
	if bad != nil {
		return f, bad
	}
	if err := r.checkFrame(f); err != nil {
		return f, err
	}
	return f, nil
}

// ParseEncapsulated reads one whole MSRP frame carried as a body (a
// message/msrp part, a stored SEND): the wire syntax, read by the same
// Reader, except that To-Path and From-Path may be left out (the OMA
// deferred-message examples name no hops: the push does not recreate the
// sender's session) and the transaction id and Message-ID may be shorter
// than four characters (kept as the sender's endpoint chose them). The
// data must end with a CRLF before the end-line; a missing CRLF after the
// end-line is accepted (a multipart part ends where its delimiter begins).
// Nothing may follow the frame.
func ParseEncapsulated(b []byte) (*Frame, error) {
	if !bytes.HasSuffix(b, []byte("\r\n")) {
		b = append(b[:len(b):len(b)], '\r', '\n')
	}
	r := NewReader(bytes.NewReader(b), Limits{MaxChunk: len(b), MaxHeaderBytes: len(b)})
	r.encapsulated = true
	f, err := r.ReadFrame()
	if err != nil {
		return nil, err
	}
	if _, err := r.br.ReadByte(); err != io.EOF {
		return nil, &SyntaxError{Code: StatusBadRequest, Reason: "data after the end-line"}
	}
	return f, nil
}

// isIdent checks a transaction id or Message-ID: an RFC 4975 ident, at
// least one character long in an encapsulated frame.
func (r *Reader) isIdent(s string) bool {
	if r.encapsulated {
		return IsIdent(s, 1)
	}
	return IsIdent(s, 4)
}

// firstErr keeps the first of a frame's errors.
func firstErr(bad *SyntaxError, reason string) *SyntaxError {
	if bad != nil {
		return bad
	}
	return &SyntaxError{Code: StatusBadRequest, Resync: true, Reason: reason}
}

// headerSpan locates one header's name and value in Reader.head.
type headerSpan struct{ name, value [2]int }

// partial builds the frame from the start line and the header spans read
// so far.
func (r *Reader) partial(tidEnd, typeStart int, hs []headerSpan) *Frame {
	s := string(r.head)
	f := &Frame{TID: s[:tidEnd]}
	// head holds the start line after "MSRP ", then the header spans.
	end := len(s)
	if len(hs) > 0 {
		end = hs[0].name[0]
	}
	typ := s[typeStart:end]
	if len(typ) >= 3 && isDigits(typ[:3]) && (len(typ) == 3 || typ[3] == ' ') {
		f.Status, _ = strconv.Atoi(typ[:3])
		if len(typ) > 4 {
			f.Comment = typ[4:]
		}
	} else {
		f.Method = typ
	}
	if len(hs) > 0 {
		f.Header = make([]Header, len(hs))
		for i, h := range hs {
			f.Header[i] = Header{Name: s[h.name[0]:h.name[1]], Value: s[h.value[0]:h.value[1]]}
		}
	}
	return f
}

var errLineTooLong = errors.New("msrp: line too long")

// readLine returns the next line without its CRLF. The slice is valid until
// the next read.
func (r *Reader) readLine() ([]byte, error) {
	line, err := r.br.ReadSlice('\n')
	if err == bufio.ErrBufferFull || (err == nil && len(line) > r.lim.MaxLine) {
		return nil, errLineTooLong
	}
	if err != nil {
		if err == io.EOF && len(line) > 0 {
			return line, io.ErrUnexpectedEOF
		}
		return line, err
	}
	if len(line) < 2 || line[len(line)-2] != '\r' {
		return nil, errBareLF
	}
	return line[:len(line)-2], nil
}

var errBareLF = errors.New("msrp: line not ended by CRLF")

func (r *Reader) skipLine() error {
	for {
		_, err := r.br.ReadSlice('\n')
		if err != bufio.ErrBufferFull {
			return err
		}
	}
}

func (r *Reader) lineError(err error, where string) error {
	switch err {
	case errLineTooLong:
		return &SyntaxError{Code: StatusBadRequest, Reason: where + " too long"}
	case errBareLF:
		return &SyntaxError{Code: StatusBadRequest, Reason: where + " not ended by CRLF"}
	case io.EOF:
		return io.ErrUnexpectedEOF
	}
	return err
}

// readBody reads the body up to the end-line of f's transaction. A body
// longer than MaxChunk is read and dropped, and tooLarge set.
func (r *Reader) readBody(f *Frame) (body []byte, flag byte, tooLarge bool, err error) {
	if n := byteRangeHint(f); n > 0 {
		body = make([]byte, 0, min(n+2, r.lim.MaxChunk+2))
	} else {
		body = make([]byte, 0, 512)
	}
	endLen := len(endLinePrefix) + len(f.TID) + 3 // flag and CRLF
	atLineStart := true
	var last [2]byte // the last two body bytes, kept even when dropping
	n := 0
	for {
		line, err := r.br.ReadSlice('\n')
		full := err == nil
		if err != nil && err != bufio.ErrBufferFull {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, 0, false, err
		}
		if atLineStart && full && len(line) == endLen && (n == 0 && !r.encapsulated || n >= 2 && last == [2]byte{'\r', '\n'}) &&
			bytes.HasPrefix(line, []byte(endLinePrefix)) && string(line[len(endLinePrefix):endLen-3]) == f.TID &&
			isFlag(line[endLen-3]) && line[endLen-2] == '\r' {
			if tooLarge {
				return nil, line[endLen-3], true, nil
			}
			if n >= 2 {
				body = body[:n-2]
			}
			return body, line[endLen-3], false, nil
		}
		if !tooLarge && n+len(line) > r.lim.MaxChunk+2 {
			tooLarge = true
			body = nil
		}
		if !tooLarge {
			body = append(body, line...)
		}
		n += len(line)
		if len(line) >= 2 {
			last = [2]byte{line[len(line)-2], line[len(line)-1]}
		} else {
			last = [2]byte{last[1], line[0]}
		}
		atLineStart = full
	}
}

// byteRangeHint returns the chunk length announced by Byte-Range, or 0.
func byteRangeHint(f *Frame) int {
	v, ok := f.Get(HeaderByteRange)
	if !ok {
		return 0
	}
	br, ok := parseByteRange(v)
	if !ok || br.End < 0 {
		return 0
	}
	return int(br.End - br.Start + 1)
}

// checkFrame checks the headers RFC 4975 requires of every frame; an
// encapsulated frame may lack To-Path and From-Path.
func (r *Reader) checkFrame(f *Frame) error {
	bad := func(reason string) error {
		return &SyntaxError{Code: StatusBadRequest, Resync: true, Reason: reason}
	}
	if f.Method != "" && !isUpper(f.Method) {
		return bad("bad method")
	}
	if f.Method == "" && (f.Status < 100 || f.Status > 999) {
		return bad("bad status code")
	}
	rest := f.Header
	if len(rest) >= 2 && strings.EqualFold(rest[0].Name, HeaderToPath) && strings.EqualFold(rest[1].Name, HeaderFromPath) {
		if !validPath(rest[0].Value) {
			return bad("bad To-Path")
		}
		if !validPath(rest[1].Value) {
			return bad("bad From-Path")
		}
		rest = rest[2:]
	} else if !r.encapsulated {
		return bad("To-Path and From-Path must be the first headers")
	}
	ranges := 0
	for _, h := range rest {
		switch {
		case strings.EqualFold(h.Name, HeaderToPath), strings.EqualFold(h.Name, HeaderFromPath):
			return bad("repeated path header")
		case strings.EqualFold(h.Name, HeaderByteRange):
			// One chunk has one range (RFC 4975 §7.1.1 and its grammar,
			// §9): of two, either could be the one meant.
			if ranges++; ranges > 1 {
				return bad("repeated Byte-Range")
			}
			if _, ok := parseByteRange(h.Value); !ok {
				return bad("bad Byte-Range")
			}
		case strings.EqualFold(h.Name, HeaderMessageID):
			if !r.isIdent(h.Value) {
				return bad("bad Message-ID")
			}
		}
	}
	return nil
}

// ByteRange is the value of a Byte-Range header: the 1-based, inclusive
// octet range of a chunk and the size of the whole message. End and Total
// are -1 when unknown ("*"). A count over 2^62, which the grammar allows,
// is held as 2^62.
type ByteRange struct {
	Start, End, Total int64
}

// ParseByteRange parses "start-end/total", where end and total may be "*".
func ParseByteRange(s string) (ByteRange, error) {
	br, ok := parseByteRange(s)
	if !ok {
		return ByteRange{}, fmt.Errorf("msrp: bad Byte-Range %q", s)
	}
	return br, nil
}

func parseByteRange(s string) (ByteRange, bool) {
	dash := strings.IndexByte(s, '-')
	slash := strings.IndexByte(s, '/')
	if dash <= 0 || slash < dash {
		return ByteRange{}, false
	}
	var br ByteRange
	var ok1, ok2, ok3 bool
	br.Start, ok1 = parseCount(s[:dash])
	br.End, ok2 = parseCount(s[dash+1 : slash])
	br.Total, ok3 = parseCount(s[slash+1:])
	if !ok1 || !ok2 || !ok3 || br.Start < 1 {
		return ByteRange{}, false
	}
	if br.End >= 0 && br.End < br.Start-1 {
		return ByteRange{}, false
	}
	if br.Total >= 0 && (br.Start > br.Total+1 || br.End > br.Total) {
		return ByteRange{}, false
	}
	return br, true
}

// String formats br as a Byte-Range value.
func (br ByteRange) String() string {
	b := strconv.AppendInt(nil, br.Start, 10)
	b = append(b, '-')
	b = appendCount(b, br.End)
	b = append(b, '/')
	return string(appendCount(b, br.Total))
}

func appendCount(b []byte, n int64) []byte {
	if n < 0 {
		return append(b, '*')
	}
	return strconv.AppendInt(b, n, 10)
}

// maxCount is the largest count parseCount returns. RFC 4975's grammar
// bounds no count (1*DIGIT), so any number of digits is a valid range:
// one past maxCount is read as maxCount, a size no message has, which a
// receiver's size check refuses (413) as it does any total too large.
// Far below 2^63, so that sums of two counts stay in an int64.
const maxCount = 1 << 62

// parseCount parses one count of a Byte-Range: "*" (-1) or 1*DIGIT.
func parseCount(s string) (int64, bool) {
	if s == "*" {
		return -1, true
	}
	if s == "" || !isDigits(s) {
		return 0, false
	}
	digits := strings.TrimLeft(s, "0")
	if len(digits) > 19 {
		return maxCount, true
	}
	n, err := strconv.ParseUint(cmp.Or(digits, "0"), 10, 64)
	if err != nil || n > maxCount {
		return maxCount, true
	}
	return int64(n), true
}

// Writer writes frames to a byte stream, one Write call per frame.
type Writer struct {
	w   io.Writer
	buf []byte
}

// NewWriter returns a Writer to w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// WriteFrame writes f.
func (w *Writer) WriteFrame(f *Frame) error {
	w.buf = f.AppendTo(w.buf[:0])
	_, err := w.w.Write(w.buf)
	if cap(w.buf) > 256<<10 {
		w.buf = nil // do not pin one huge frame's buffer
	}
	return err
}

func isFlag(c byte) bool { return c == FlagEnd || c == FlagMore || c == FlagAbort }

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return len(s) > 0
}

func isUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 'A' || s[i] > 'Z' {
			return false
		}
	}
	return len(s) > 0
}

// isToken reports whether b is an RFC 4975 token (header name).
func isToken(b []byte) bool {
	for _, c := range b {
		if c <= ' ' || c >= 0x7f || strings.IndexByte("()<>@,;:\\\"/[]?={}", c) >= 0 {
			return false
		}
	}
	return len(b) > 0
}

// isText reports whether b holds no control characters other than HTAB.
func isText(b []byte) bool {
	for _, c := range b {
		if c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}
