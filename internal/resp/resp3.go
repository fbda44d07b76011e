package resp

import (
	"math"
	"strconv"
)

// RESP3 frame type bytes, for clients that chose protocol 3 with HELLO 3 (and upstream connections that did).
const (
	TypeNull      = '_' // the null ("_"), RESP3's one null for a missing string, array or map
	TypeBoolean   = '#' // a boolean ("#t" or "#f")
	TypeDouble    = ',' // a double (",1.5", ",inf", ",nan")
	TypeBigNumber = '(' // an integer beyond int64 ("(3492890328409238509324850943850943825024385")
	TypeBlobError = '!' // an error with a length, like a bulk string
	TypeVerbatim  = '=' // a verbatim string: a bulk string whose payload starts with a 3-byte format and ':'
	TypeMap       = '%' // a map of n key-value pairs (2n frames follow)
	TypeSet       = '~' // a set of n elements
	TypeAttribute = '|' // an attribute of n pairs that annotates the frame after it
	TypePush      = '>' // out-of-band data of n elements (pub/sub messages, invalidations, MONITOR lines)
)

// minRESP3Proto is the first protocol version that speaks RESP3.
const minRESP3Proto = 3

// The encoders below write RESP3 frames, and the ones whose names end in For write the frame Redis writes for a
// client of protocol proto (2 or 3, what HELLO chose): RESP3's type where it has one, RESP2's form of the same reply
// otherwise, as Redis's addReplyMapLen, addReplyNull, addReplyDouble, addReplyVerbatim ... do. Like the RESP2
// encoders they append to dst and keep nothing.

// AppendNull appends RESP3's null ("_\r\n").
func AppendNull(dst []byte) []byte { return append(dst, TypeNull, '\r', '\n') }

// AppendMap appends the header of a map of n pairs ("%<n>\r\n"); the caller appends the 2n keys and values.
func AppendMap(dst []byte, n int) []byte { return appendHeader(dst, TypeMap, n) }

// AppendSet appends the header of a set of n elements ("~<n>\r\n").
func AppendSet(dst []byte, n int) []byte { return appendHeader(dst, TypeSet, n) }

// AppendPush appends the header of a push of n elements (">n\r\n").
func AppendPush(dst []byte, n int) []byte { return appendHeader(dst, TypePush, n) }

// AppendBoolean appends a boolean ("#t\r\n" or "#f\r\n").
func AppendBoolean(dst []byte, v bool) []byte {
	c := byte('f')
	if v {
		c = 't'
	}
	return append(dst, TypeBoolean, c, '\r', '\n')
}

// AppendDouble appends f as a double, formatted as Redis 7.0 formats it (printf's "%.17g", with "inf", "-inf" and
// "nan").
func AppendDouble(dst []byte, f float64) []byte {
	dst = append(dst, TypeDouble)
	dst = appendRedisDouble(dst, f)
	return append(dst, '\r', '\n')
}

// AppendBigNumber appends digits (an optional '-' and decimal digits, unchecked) as a big number ("(<digits>\r\n").
func AppendBigNumber(dst []byte, digits string) []byte {
	dst = append(dst, TypeBigNumber)
	dst = append(dst, digits...)
	return append(dst, '\r', '\n')
}

// AppendVerbatim appends s as a verbatim string of the given three-byte format ("txt" for plain text, "mkd" for
// markdown): "=<len>\r\n<format>:<s>\r\n".
func AppendVerbatim(dst []byte, format, s string) []byte {
	dst = append(dst, TypeVerbatim)
	dst = strconv.AppendInt(dst, int64(len(format)+1+len(s)), 10)
	dst = append(dst, '\r', '\n')
	dst = append(dst, format...)
	dst = append(dst, ':')
	dst = append(dst, s...)
	return append(dst, '\r', '\n')
}

// IsRESP3 reports whether protocol version proto speaks RESP3.
func IsRESP3(proto int) bool { return proto >= minRESP3Proto }

// AppendNullFor appends the null Redis writes for a missing value: RESP2's null bulk string, RESP3's null.
func AppendNullFor(dst []byte, proto int) []byte {
	if IsRESP3(proto) {
		return AppendNull(dst)
	}
	return AppendNullBulk(dst)
}

// AppendNullArrayFor appends the null Redis writes for a missing aggregate (a blocking pop that timed out, an
// aborted transaction): RESP2's null array, RESP3's null.
func AppendNullArrayFor(dst []byte, proto int) []byte {
	if IsRESP3(proto) {
		return AppendNull(dst)
	}
	return AppendNullArray(dst)
}

// AppendMapFor appends the header of a map of n pairs: in RESP2 an array of 2n elements, keys and values
// alternating.
func AppendMapFor(dst []byte, n int, proto int) []byte {
	if IsRESP3(proto) {
		return AppendMap(dst, n)
	}
	return AppendArray(dst, 2*n)
}

// AppendSetFor appends the header of a set of n elements: in RESP2 an array.
func AppendSetFor(dst []byte, n int, proto int) []byte {
	if IsRESP3(proto) {
		return AppendSet(dst, n)
	}
	return AppendArray(dst, n)
}

// AppendPushFor appends the header of a push of n elements: in RESP2, where pub/sub messages are arrays, an
// array.
func AppendPushFor(dst []byte, n int, proto int) []byte {
	if IsRESP3(proto) {
		return AppendPush(dst, n)
	}
	return AppendArray(dst, n)
}

// AppendVerbatimFor appends s as a verbatim string of format: in RESP2 a bulk string of s alone.
func AppendVerbatimFor(dst []byte, format, s string, proto int) []byte {
	if IsRESP3(proto) {
		return AppendVerbatim(dst, format, s)
	}
	return AppendBulkString(dst, s)
}

// AppendDoubleFor appends f as a double: in RESP2 a bulk string of the same text.
func AppendDoubleFor(dst []byte, f float64, proto int) []byte {
	if IsRESP3(proto) {
		return AppendDouble(dst, f)
	}
	var num [32]byte
	return AppendBulk(dst, appendRedisDouble(num[:0], f))
}

// AppendBooleanFor appends v as a boolean: in RESP2 the integer 1 or 0.
func AppendBooleanFor(dst []byte, v bool, proto int) []byte {
	if IsRESP3(proto) {
		return AppendBoolean(dst, v)
	}
	if v {
		return AppendInt(dst, 1)
	}
	return AppendInt(dst, 0)
}

// appendRedisDouble appends f as Redis 7.0's addReplyDouble prints it: printf's "%.17g" (Go's 'g' with precision
// 17 removes trailing zeros and writes a two-digit exponent alike), and inf, -inf and nan spelled as glibc spells
// them.
func appendRedisDouble(dst []byte, f float64) []byte {
	switch {
	case math.IsInf(f, 1):
		return append(dst, "inf"...)
	case math.IsInf(f, -1):
		return append(dst, "-inf"...)
	case math.IsNaN(f):
		return append(dst, "nan"...)
	}
	return strconv.AppendFloat(dst, f, 'g', 17, 64)
}

// appendHeader appends an aggregate header: typ, n, CRLF.
func appendHeader(dst []byte, typ byte, n int) []byte {
	dst = append(dst, typ)
	dst = strconv.AppendInt(dst, int64(n), 10)
	return append(dst, '\r', '\n')
}

// VerbatimPayload returns the format and the text of a verbatim string frame ("=<len>\r\n<format>:<text>\r\n"),
// pointing into frame; ok is false for any other frame.
func VerbatimPayload(frame []byte) (format, text []byte, ok bool) {
	if len(frame) < 4 || frame[0] != TypeVerbatim {
		return nil, nil, false
	}
	i := 1
	for i < len(frame) && frame[i] != '\r' {
		i++
	}
	n, okn := ParseInt(frame[1:i])
	start := i + 2
	if !okn || n < 4 || n > int64(len(frame)-start) || frame[start+3] != ':' {
		return nil, nil, false
	}
	return frame[start : start+3], frame[start+4 : start+int(n)], true
}
