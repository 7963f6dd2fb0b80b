// Package abnf holds the character classes and small lexical rules that
// the protocol parsers of deferpush share: SIP (RFC 3261) addresses in
// plugin, MSRP (RFC 4975) frames and URIs in plugin/msrp, and the
// encapsulations (CPIM, RFC 3862; MIME boundaries) in plugin/encap. Each
// rule lives here once; the grammars that differ (an MSRP token is not a
// SIP token) stay with their parser.
package abnf

// IsAlnum reports whether c is ALPHA or DIGIT (RFC 5234).
func IsAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// IsHex reports whether c is a HEXDIG, in either case.
func IsHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// ClosingQuote returns the index of the DQUOTE that ends the
// quoted-string s starts with (RFC 3261 §25.1, RFC 3862: a backslash
// escapes the next character), or -1 when it is not closed.
func ClosingQuote(s string) int {
	for i := 1; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '"':
			return i
		}
	}
	return -1
}

// IsSIPToken reports whether s is a non-empty RFC 3261 token (§25.1): a
// method name, a header name, an option tag.
func IsSIPToken[T string | []byte](s T) bool {
	if len(s) == 0 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !IsAlnum(c) && !isTokenMark(c) {
			return false
		}
	}
	return true
}

func isTokenMark(c byte) bool {
	switch c {
	case '-', '.', '!', '%', '*', '_', '+', '`', '\'', '~':
		return true
	}
	return false
}
