package resp

import (
	"github.com/tidwall/redcon"
)

// The encoders below append one RESP2 value to dst and return the extended slice, as append does: dst may be
// reallocated, and the arguments are copied, never retained. They allocate only when dst lacks capacity, so a reply
// or request buffer that is reused stops allocating once it has grown. Where redcon has the encoder, featcache's is
// redcon's, whose output is the bytes Redis writes for the same value. RESP3's encoders (resp3.go) have names of
// their own rather than changing these.

// Frame type bytes: the first byte of every RESP2 frame.
const (
	TypeSimple  = redcon.String  // '+', a simple string ("+OK")
	TypeError   = redcon.Error   // '-', an error reply
	TypeInteger = redcon.Integer // ':', an integer
	TypeBulk    = redcon.Bulk    // '$', a bulk string, or the null bulk string "$-1"
	TypeArray   = redcon.Array   // '*', an array, or the null array "*-1"
)

// AppendArray appends the header of an array of n elements ("*<n>\r\n"); the caller appends the n elements.
func AppendArray(dst []byte, n int) []byte { return redcon.AppendArray(dst, n) }

// AppendBulk appends b as a bulk string ("$<len>\r\n<b>\r\n"). A nil b is the empty string, not the null bulk
// string (AppendNullBulk).
//
// Values of up to 9,999 bytes, every cached feature bundle, have their length written here without strconv: it is
// a tenth of what answering a cache hit costs otherwise.
func AppendBulk(dst, b []byte) []byte {
	switch n := len(b); {
	case n < 10:
		dst = append(dst, TypeBulk, byte('0'+n), '\r', '\n')
	case n < 100:
		dst = append(dst, TypeBulk, byte('0'+n/10), byte('0'+n%10), '\r', '\n')
	case n < 1000:
		lo := uint(n%100) * 2
		dst = append(dst, TypeBulk, byte('0'+n/100), digitPairs[lo], digitPairs[lo+1], '\r', '\n')
	case n < 10000:
		hi, lo := uint(n/100)*2, uint(n%100)*2
		dst = append(dst, TypeBulk, digitPairs[hi], digitPairs[hi+1], digitPairs[lo], digitPairs[lo+1], '\r', '\n')
	default:
		return redcon.AppendBulk(dst, b)
	}
	dst = append(dst, b...)
	return append(dst, '\r', '\n')
}

// digitPairs holds the two digits of every number below 100, so that a three- or four-digit length takes two
// divisions.
const digitPairs = "00010203040506070809101112131415161718192021222324252627282930313233343536373839" +
	"40414243444546474849505152535455565758596061626364656667686970717273747576777879" +
	"8081828384858687888990919293949596979899"

// AppendBulkString appends s as a bulk string.
func AppendBulkString(dst []byte, s string) []byte { return redcon.AppendBulkString(dst, s) }

// AppendInt appends n as an integer reply (":<n>\r\n").
func AppendInt(dst []byte, n int64) []byte { return redcon.AppendInt(dst, n) }

// AppendString appends s as a simple string ("+<s>\r\n"). CR and LF in s, which would end the frame early, are
// written as spaces.
func AppendString(dst []byte, s string) []byte { return redcon.AppendString(dst, s) }

// AppendOK appends the simple string "+OK\r\n".
func AppendOK(dst []byte) []byte { return redcon.AppendOK(dst) }

// AppendError appends msg as an error reply ("-<msg>\r\n"). msg starts with the error code, as Redis words its
// errors ("ERR ...", "WRONGTYPE ..."); CR and LF in it, which would end the frame early, are written as spaces.
func AppendError(dst []byte, msg string) []byte { return redcon.AppendError(dst, msg) }

// AppendNullBulk appends RESP2's null bulk string ("$-1\r\n"), which Redis answers for a missing key.
func AppendNullBulk(dst []byte) []byte { return redcon.AppendNull(dst) }

// AppendNullArray appends RESP2's null array ("*-1\r\n"), which Redis answers for an aborted transaction and a
// blocking command that timed out.
func AppendNullArray(dst []byte) []byte { return append(dst, TypeArray, '-', '1', '\r', '\n') }

// AppendCommand appends the command args as a client sends it: an array of bulk strings.
func AppendCommand(dst []byte, args ...string) []byte {
	dst = AppendArray(dst, len(args))
	for _, a := range args {
		dst = AppendBulkString(dst, a)
	}
	return dst
}

// AppendArgs appends the command args as a client sends it: an array of bulk strings.
func AppendArgs(dst []byte, args [][]byte) []byte {
	dst = AppendArray(dst, len(args))
	for _, a := range args {
		dst = AppendBulk(dst, a)
	}
	return dst
}
