package resp

import (
	"bytes"
	"math"
)

// multibulk continues the multi-bulk command at r.start from r.st, and reports whether it is complete. With args
// non-nil it appends each argument; with presize it first reserves room for all of them, which is done only once
// the whole command is known to be buffered, so a declared count never reserves memory on its own.
//
// Every bound is checked when the header declaring a size is read, before the buffer grows for what it
// declares. As in Redis, a header line ends at its first '\r' and the byte after it is skipped unchecked, and so
// are the two bytes after an argument's payload: Redis accepts "*1\rX$4\rXPINGXY", so featcache does too, and the
// same bytes forwarded as Raw mean the same to Redis.
func (r *Reader) multibulk(args *[][]byte, presize bool) (bool, error) {
	b := r.buf[r.start:r.end]
	st := &r.st
	lim := &r.lim
	if st.left < 0 {
		n, eol, ok, err := readHeader(b, 0, ErrTooBigMultibulkCount)
		if eol < 0 || err != nil {
			return false, err
		}
		if !ok || n > math.MaxInt32 {
			return false, ErrInvalidMultibulkLength
		}
		if n > int64(lim.MaxArgs) {
			if lim.Unauthenticated {
				return false, ErrUnauthenticatedMultibulkLength
			}
			return false, ErrInvalidMultibulkLength
		}
		st.off = eol + 2
		if n <= 0 {
			st.left = 0
			return true, nil
		}
		if int64(st.off)+n*int64(minBulkArgBytes) > int64(lim.MaxRequestBytes) {
			return false, ErrInvalidMultibulkLength
		}
		st.n, st.left, st.bulk = int(n), int(n), -1
		if args != nil && presize && cap(*args) < st.n {
			*args = make([][]byte, 0, st.n)
		}
	}
	for st.left > 0 {
		r.work++
		if st.bulk < 0 {
			n, eol, ok, err := readHeader(b, st.off, ErrTooBigBulkCount)
			if eol < 0 || err != nil {
				return false, err
			}
			// Redis checks the marker only once the whole line is in, so "X" alone waits for its '\r'.
			if b[st.off] != '$' {
				return false, errExpectedDollar(b[st.off])
			}
			if !ok || n < 0 || n > redisProtoMaxBulkLen {
				return false, ErrInvalidBulkLength
			}
			if n > int64(lim.MaxBulkBytes) {
				if lim.Unauthenticated {
					return false, ErrUnauthenticatedBulkLength
				}
				return false, ErrInvalidBulkLength
			}
			if int64(eol)+2+n+2 > int64(lim.MaxRequestBytes) {
				return false, ErrInvalidBulkLength
			}
			st.off, st.bulk = eol+2, int(n)
		}
		if len(b)-st.off < st.bulk+2 {
			return false, nil
		}
		if args != nil {
			end := st.off + st.bulk
			*args = append(*args, b[st.off:end:end])
		}
		st.off += st.bulk + 2
		st.bulk = -1
		st.left--
	}
	return true, nil
}

// readHeader reads the header line at b[off:], whose first byte is its marker ('*' or '$', checked by the caller).
// It returns eol = -1 while the line is incomplete, the tooBig error for a line without '\r' in its first 32 bytes,
// and otherwise the index of its '\r' and the number after the marker, with ok false if that is not a valid
// string2ll number.
func readHeader(b []byte, off int, tooBig error) (n int64, eol int, ok bool, err error) {
	// Fast path for the header every client sends: one to 18 digits, no sign, no leading zero (or "0"), then '\r'
	// and the byte after it. It scans and converts in one pass; anything else, including every error, takes the
	// general path below, which decides exactly as Redis does.
	i := off + 1
	switch {
	case off >= len(b):
		return 0, -1, false, nil
	case b[off] != '$' && b[off] != '*':
		// A wrong marker, possibly '\r' itself, which ends the line at once: the general path judges it.
	case i+2 < len(b) && b[i] == '0' && b[i+1] == '\r':
		return 0, i + 1, true, nil
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		for end := min(len(b)-1, off+19); i < end; i++ {
			c := b[i]
			if c == '\r' {
				return n, i, true, nil
			}
			if c < '0' || c > '9' {
				break
			}
			n = n*10 + int64(c-'0')
		}
	}
	if eol, err = respHeaderEnd(b, off, tooBig); eol < 0 || err != nil {
		return 0, eol, false, err
	}
	if eol == off {
		return 0, eol, false, nil // a line that is only "\r": no marker, which the caller reports
	}
	n, ok = ParseInt(b[off+1 : eol])
	return n, eol, ok, nil
}

// respHeaderEnd finds the '\r' ending the header line at b[off:]. It returns -1 while the line, or the byte after its
// '\r', has not arrived, and tooBig once respHeaderMax bytes have arrived without a '\r'.
//
// Redis searches up to 64 KiB for the '\r' and then judges the number, so a 40-byte line ending in '\r' is an
// "invalid length" there and a "too big count string" here. No valid header is longer than 22 bytes, so the two
// differ only in which text a broken client gets.
func respHeaderEnd(b []byte, off int, tooBig error) (int, error) {
	line := b[off:]
	if len(line) > respHeaderMax {
		line = line[:respHeaderMax]
	}
	i := bytes.IndexByte(line, '\r')
	switch {
	case i < 0 && len(b)-off >= respHeaderMax:
		return -1, tooBig
	case i < 0 || off+i+1 >= len(b):
		return -1, nil
	}
	return off + i, nil
}

// ParseCommand reads the whole multi-bulk command at the start of b, appending its arguments (slices of b) to args,
// and returns its length in bytes; 0 when b does not start with a whole multi-bulk command of at least one
// argument. It is for requests already read or built (a pipeline featcache splits between cluster nodes), and has
// no limits of its own beyond the length of b. redcon's ReadNextCommand is not used for this: it panics on a
// negative argument length such as "$-2" (it slices b[i:i-2]).
func ParseCommand(b []byte, args [][]byte) ([][]byte, int) {
	i := bytes.IndexByte(b, '\n')
	if len(b) < 4 || b[0] != TypeArray || i < 2 || b[i-1] != '\r' {
		return args, 0
	}
	n, ok := ParseInt(b[1 : i-1])
	if !ok || n < 1 {
		return args, 0
	}
	pos := i + 1
	for j := int64(0); j < n; j++ {
		if pos >= len(b) || b[pos] != TypeBulk {
			return args, 0
		}
		k := bytes.IndexByte(b[pos:], '\n')
		if k < 2 || b[pos+k-1] != '\r' {
			return args, 0
		}
		l, ok := ParseInt(b[pos+1 : pos+k-1])
		start := pos + k + 1
		if !ok || l < 0 || l > int64(len(b)-start-2) {
			return args, 0
		}
		end := start + int(l)
		args = append(args, b[start:end])
		pos = end + 2
	}
	return args, pos
}
