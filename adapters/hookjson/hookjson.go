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
	"time"
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

// At is the proxy's time of a registration event, which the store orders
// one contact's registrations by: "<seconds>.<microseconds>", where the
// part after the dot is an integer count of microseconds, zero-padded or
// not (Kamailio's $TV(s).$TV(u)), or integer microseconds since the epoch
// (OpenSIPS's $Ts with $Tsm padded to six digits), as a string or a JSON
// number; the same forms the Redis functions dp_register and
// dp_unregister take. null, "" and Null leave it unset.
type At struct {
	Set bool
	T   time.Time
}

// maxAt bounds At at the year 9999, far below int64 microseconds.
const maxAt = 253402300799 * 1000000

// UnmarshalJSON reads a time in one of At's forms or an absent value.
func (a *At) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if string(b) == "null" {
		return nil
	}
	s := string(b)
	if len(b) > 0 && b[0] == '"' {
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		if s = strings.TrimSpace(s); s == "" || s == Null {
			return nil
		}
	}
	us, ok := micros(s)
	if !ok || us > maxAt {
		return fmt.Errorf("at: not a time (<seconds>.<microseconds> or integer microseconds): %.40q", s)
	}
	a.Set, a.T = true, time.UnixMicro(us).UTC()
	return nil
}

// micros reads At's two forms as library.lua's micros does.
func micros(s string) (int64, bool) {
	sec, us, dotted := strings.Cut(s, ".")
	if !dotted {
		if !digits(s, 17) {
			return 0, false
		}
		n, err := strconv.ParseInt(s, 10, 64)
		return n, err == nil
	}
	if !digits(sec, 12) || !digits(us, 6) {
		return 0, false
	}
	n, _ := strconv.ParseInt(sec, 10, 64)
	u, _ := strconv.ParseInt(us, 10, 64)
	return n*1000000 + u, true
}

// digits reports whether s is 1 to max ASCII digits.
func digits(s string, max int) bool {
	if s == "" || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
