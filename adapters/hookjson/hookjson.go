// Package hookjson reads the JSON values that the proxies' route scripts
// (adapters/kamailio, adapters/opensips) write into hook bodies: a script
// variable may be unset (Kamailio prints "<null>" for it inside a
// string), a number may come as a string (a value copied through a string
// variable), and a member may be missing. Each reads as "absent" the same
// way for every proxy.
package hookjson

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// Null is how Kamailio prints an unset variable inside a string.
const Null = "<null>"

// String is a string member: surrounding white space is dropped, and
// Null reads as absent (empty).
type String string

// String returns the value, or "" when it is Null.
func (s String) String() string {
	v := strings.TrimSpace(string(s))
	if v == Null {
		return ""
	}
	return v
}

// Int is an integer given as a JSON number or a numeric string; null, ""
// and Null leave it unset.
type Int struct {
	Set bool
	N   int64
}

// UnmarshalJSON reads a number, a numeric string or an absent value.
func (i *Int) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if string(b) == "null" {
		return nil
	}
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		if s = strings.TrimSpace(s); s == "" || s == Null {
			return nil
		}
		b = []byte(s)
	}
	n, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil {
		return fmt.Errorf("not an integer: %s", b)
	}
	i.Set, i.N = true, n
	return nil
}
