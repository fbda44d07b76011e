package resp

import "math"

// ParseInt parses b as Redis's string2ll does, which is how Redis reads every integer of the protocol (lengths,
// counts) and of commands: an optional '-', then "0" alone or a digit 1-9 followed by digits, no '+', no spaces, at
// most 20 bytes, within int64. It does not allocate.
func ParseInt(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 20 {
		return 0, false
	}
	if len(b) == 1 && b[0] == '0' {
		return 0, true
	}
	neg := b[0] == '-'
	if neg {
		b = b[1:]
	}
	if len(b) == 0 || b[0] < '1' || b[0] > '9' {
		return 0, false
	}
	var v uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if v > (math.MaxUint64-d)/10 {
			return 0, false
		}
		v = v*10 + d
	}
	if neg {
		if v > 1<<63 {
			return 0, false
		}
		return -int64(v-1) - 1, true
	}
	if v > math.MaxInt64 {
		return 0, false
	}
	return int64(v), true
}

// AppendLower appends b to dst with the ASCII letters A-Z lowered, as Redis folds command names and keywords
// (other bytes, UTF-8 included, are copied as they are). Lowering into a stack buffer and indexing a map with
// string(result) finds a command name without allocating.
func AppendLower(dst, b []byte) []byte {
	for _, c := range b {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return dst
}

// EqualFold reports whether b and s are equal when ASCII letters are compared without case, as Redis's strcasecmp
// compares command names and keywords. Unlike bytes.EqualFold it never folds non-ASCII runes.
func EqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		x, y := b[i], s[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
