package encap

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"mime/multipart"
	"strings"

	"github.com/deferpush/deferpush/plugin/abnf"
)

// part is one body part of a multipart/mixed payload.
type part struct {
	contentType string
	body        []byte
}

// validBoundary reports whether b is an RFC 2046 §5.1.1 boundary: 1 to 70
// bchars, not ending in a space.
func validBoundary(b string) bool {
	if len(b) == 0 || len(b) > 70 || b[len(b)-1] == ' ' {
		return false
	}
	for i := 0; i < len(b); i++ {
		if c := b[i]; !abnf.IsAlnum(c) && strings.IndexByte("'()+_,-./:=? ", c) < 0 {
			return false
		}
	}
	return true
}

// newBoundary returns a random boundary: 26 base32 characters, 130 bits,
// so it cannot occur in the parts by chance and a sender cannot guess it.
func newBoundary() string { return rand.Text() }

// writeMultipart returns the multipart/mixed body (RFC 2046 §5.1.1) of
// parts: each "--boundary" CRLF, its Content-Type, a blank line and its
// body, then CRLF "--boundary--" CRLF. The boundary must be valid and occur
// in no part, else ErrInvalid.
func writeMultipart(boundary string, parts ...part) ([]byte, error) {
	if !validBoundary(boundary) {
		return nil, invalid("multipart boundary %q", boundary)
	}
	delim := "--" + boundary
	n := 0
	for _, p := range parts {
		if bytes.Contains(p.body, []byte(delim)) {
			return nil, invalid("multipart boundary %q occurs in a part", boundary)
		}
		n += len(delim) + len(p.contentType) + len(p.body) + 24
	}
	var b bytes.Buffer
	b.Grow(n + len(delim) + 4)
	for _, p := range parts {
		b.WriteString(delim + "\r\nContent-Type: " + p.contentType + "\r\n\r\n")
		b.Write(p.body)
		b.WriteString("\r\n")
	}
	b.WriteString(delim + "--\r\n")
	return b.Bytes(), nil
}

// maxParts bounds the parts Decode reads; ours have two.
const maxParts = 8

// readMultipart returns the parts of a multipart body. Part headers other
// than Content-Type are ignored; no transfer decoding is applied.
func readMultipart(body []byte, boundary string) ([]part, error) {
	r := multipart.NewReader(bytes.NewReader(body), boundary)
	var parts []part
	for {
		p, err := r.NextRawPart()
		if errors.Is(err, io.EOF) {
			return parts, nil
		}
		if err != nil {
			return nil, malformed("multipart: %v", err)
		}
		if len(parts) == maxParts {
			return nil, malformed("multipart with more than %d parts", maxParts)
		}
		b, err := io.ReadAll(p)
		if err != nil {
			return nil, malformed("multipart: %v", err)
		}
		parts = append(parts, part{contentType: p.Header.Get("Content-Type"), body: b})
	}
}
