package resp

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math"
)

// ErrBadFrame means bytes that should hold a reply frame do not: the stream is not RESP, or a frame does not have
// the shape its reader expects. A connection that produced one cannot be trusted to stay in step.
var ErrBadFrame = errors.New("resp: malformed reply frame")

// maxLineLen bounds a frame's header or simple-string line while it is incomplete. Redis's own simple strings and
// errors are short; a longer unterminated line means the stream is not RESP.
const maxLineLen = 64 << 10

// maxAggregateLen bounds the element count of an aggregate. Counts beyond it could overflow the elements still
// pending, and no reply has 2^31 elements (each takes at least 3 bytes).
const maxAggregateLen = math.MaxInt32

// Scanner finds where reply frames end in a byte stream, without copying or decoding them. It is resumable: a frame
// that arrives over many reads is scanned once, not from its start on every read. It keeps offsets from the frame's
// first byte, never the bytes, so the caller may move or grow its buffer between calls. The zero value is ready; a
// Scanner is not safe for concurrent use.
//
// A frame is one RESP2 or RESP3 value with all its nested elements: a simple string, error, integer, bulk string,
// array, and RESP3's null ('_'), boolean ('#'), double (','), big number ('('), blob error ('!'), verbatim string
// ('='), map ('%'), set ('~') and push ('>'). An attribute ('|') is not a frame of its own: it and the value it
// annotates are one frame, so relaying frames never separates them. A push is a frame like any other; the caller
// tells it apart with IsPush, since a push arrives out of band, between replies, and is never the reply to a
// command.
type Scanner struct {
	pos     int // offset in the buffer up to which the current frame has been scanned
	pending int // elements still missing before the current frame is complete; 0 = between frames
}

// Next scans b (which starts at the current frame's first byte) and returns the length of the first complete frame,
// or 0 when b does not hold it yet. Call Next again with a longer b (same start) after reading more. An error is
// ErrBadFrame: the stream cannot be read further.
func (s *Scanner) Next(b []byte) (int, error) {
	if s.pending == 0 {
		s.pending = 1
		s.pos = 0
	}
	for s.pending > 0 {
		if s.pos >= len(b) {
			return 0, nil
		}
		end := bytes.IndexByte(b[s.pos:], '\n')
		if end < 0 {
			if len(b)-s.pos > maxLineLen {
				return 0, ErrBadFrame
			}
			return 0, nil
		}
		lineEnd := s.pos + end + 1           // just past '\n'
		if end < 2 || b[lineEnd-2] != '\r' { // a line holds at least its type byte and "\r\n"
			return 0, ErrBadFrame
		}
		typ, line := b[s.pos], b[s.pos+1:lineEnd-2]
		switch typ {
		case TypeSimple, TypeError, TypeInteger, TypeDouble:
		case TypeNull:
			if len(line) != 0 {
				return 0, ErrBadFrame
			}
		case TypeBoolean:
			if len(line) != 1 || line[0] != 't' && line[0] != 'f' {
				return 0, ErrBadFrame
			}
		case TypeBigNumber:
			if !isBigNumber(line) {
				return 0, ErrBadFrame
			}
		case TypeBulk, TypeVerbatim, TypeBlobError:
			n, ok := ParseInt(line)
			switch {
			case !ok || n < 0 && typ != TypeBulk:
				return 0, ErrBadFrame
			case n < 0: // RESP2's null bulk string
				s.pos = lineEnd
				s.pending--
				continue
			case n > int64(len(b)-lineEnd-2):
				return 0, nil
			}
			end := lineEnd + int(n)
			if b[end] != '\r' || b[end+1] != '\n' {
				return 0, ErrBadFrame
			}
			// A verbatim string starts with its three-byte format and ':' ("txt:").
			if typ == TypeVerbatim && (n < 4 || b[lineEnd+3] != ':') {
				return 0, ErrBadFrame
			}
			s.pos = end + 2
			s.pending--
			continue
		case TypeArray, TypeSet, TypePush, TypeMap, TypeAttribute:
			n, ok := ParseInt(line)
			if !ok || n > maxAggregateLen || n < 0 && typ != TypeArray { // only RESP2's "*-1" is negative
				return 0, ErrBadFrame
			}
			s.pos = lineEnd
			if typ != TypeAttribute {
				s.pending-- // an attribute is part of the value after it, which is still pending
			}
			if n > 0 {
				if typ == TypeMap || typ == TypeAttribute {
					n *= 2 // maps and attributes count pairs
				}
				s.pending += int(n)
			}
			continue
		default:
			return 0, ErrBadFrame
		}
		s.pos = lineEnd
		s.pending--
	}
	n := s.pos
	s.pos = 0
	return n, nil
}

// isBigNumber reports whether b is a big number's digits: an optional '-' and at least one decimal digit.
func isBigNumber(b []byte) bool {
	if len(b) > 0 && b[0] == '-' {
		b = b[1:]
	}
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// IsPush reports whether frame, a whole frame as Scanner delimits it, is a RESP3 push (after any attribute that
// annotates it): data the server sends out of band, such as an invalidation or a pub/sub message, which is not the
// reply to any command.
func IsPush(frame []byte) bool {
	for len(frame) > 0 && frame[0] == TypeAttribute {
		i := bytes.IndexByte(frame, '\n')
		n, ok := ParseInt(frame[1:max(i-1, 1)])
		if i < 2 || !ok || n < 0 {
			return false
		}
		frame = frame[i+1:]
		for j := int64(0); j < 2*n; j++ {
			var sc Scanner
			m, err := sc.Next(frame)
			if err != nil || m == 0 {
				return false
			}
			frame = frame[m:]
		}
	}
	return len(frame) > 0 && frame[0] == TypePush
}

// ReadFrame reads one whole reply frame from r and appends it to dst, for clients that wait for one reply at a time
// (tests, tools). It reads nothing past the frame. On an error dst holds what was read, and the error is r's, or
// ErrBadFrame.
func ReadFrame(r *bufio.Reader, dst []byte) ([]byte, error) {
	start := len(dst)
	var sc Scanner
	for {
		// Every frame ends with '\n': reading line by line never takes a byte of the next frame.
		line, err := r.ReadSlice('\n')
		dst = append(dst, line...)
		switch {
		case err == bufio.ErrBufferFull:
			continue
		case err != nil:
			return dst, err
		}
		n, err := sc.Next(dst[start:])
		if err != nil || n > 0 {
			return dst, err
		}
	}
}

// BulkPayload returns the payload of a bulk string frame (pointing into frame), with isNil for the null bulk
// string; ok is false when frame does not start with a bulk string.
func BulkPayload(frame []byte) (payload []byte, isNil, ok bool) {
	if len(frame) < 4 || frame[0] != TypeBulk {
		return nil, false, false
	}
	i := bytes.IndexByte(frame, '\n')
	if i < 2 {
		return nil, false, false
	}
	n, ok := ParseInt(frame[1 : i-1])
	switch {
	case !ok:
		return nil, false, false
	case n < 0:
		return nil, true, true
	case n > int64(len(frame)-i-1):
		return nil, false, false
	}
	return frame[i+1 : i+1+int(n)], false, true
}

// IntegerValue returns the value of an integer frame (":123\r\n").
func IntegerValue(frame []byte) (int64, bool) {
	if len(frame) < 4 || frame[0] != TypeInteger {
		return 0, false
	}
	return ParseInt(frame[1 : len(frame)-2])
}

// ArrayHeader returns an array frame's element count and the bytes of its elements (pointing into frame); ok is
// false for any other frame, the null array included.
func ArrayHeader(frame []byte) (n int, body []byte, ok bool) {
	if v, body, ok := arrayLen(frame); ok && v >= 0 {
		return v, body, true
	}
	return 0, nil, false
}

// arrayLen is ArrayHeader with the null array (any negative count) allowed.
func arrayLen(frame []byte) (n int, body []byte, ok bool) {
	i := bytes.IndexByte(frame, '\n')
	if len(frame) < 4 || frame[0] != TypeArray || i < 2 {
		return 0, nil, false
	}
	v, ok := ParseInt(frame[1 : i-1])
	if !ok || v > maxAggregateLen {
		return 0, nil, false
	}
	return int(max(v, -1)), frame[i+1:], true
}

// ArrayElements appends the element frames of an array frame (such as EXEC's reply) to dst; they point into frame.
// The null array has no elements. Any other frame, or an array that does not hold whole frames, is ErrBadFrame.
func ArrayElements(frame []byte, dst [][]byte) ([][]byte, error) {
	n, rest, ok := arrayLen(frame)
	if !ok {
		return dst, fmt.Errorf("%w: expected an array, got %q", ErrBadFrame, truncate(frame, 64))
	}
	for j := 0; j < n; j++ {
		var sc Scanner
		m, err := sc.Next(rest)
		if err != nil || m == 0 {
			return dst, fmt.Errorf("%w: array element %d", ErrBadFrame, j)
		}
		dst = append(dst, rest[:m])
		rest = rest[m:]
	}
	return dst, nil
}

// ParseBulkArray appends the payloads of an array of bulk strings (ZRANGE, CONFIG GET, KEYS) to dst; they point
// into frame. A null element is an empty slice, and the null array has no elements. An error reply is returned as
// an Error; any other shape is ErrBadFrame.
func ParseBulkArray(frame []byte, dst [][]byte) ([][]byte, error) {
	if len(frame) > 0 && frame[0] == TypeError {
		return dst, ParseError(frame)
	}
	n, rest, ok := arrayLen(frame)
	if !ok {
		return dst, fmt.Errorf("%w: want an array, got %q", ErrBadFrame, truncate(frame, 64))
	}
	for j := 0; j < n; j++ {
		k := bytes.IndexByte(rest, '\n')
		if len(rest) < 4 || rest[0] != TypeBulk || k < 2 {
			return dst, fmt.Errorf("%w: want a bulk string in the array, got %q", ErrBadFrame, truncate(rest, 64))
		}
		v, isNil, ok := BulkPayload(rest)
		switch {
		case !ok || !isNil && len(rest) < k+1+len(v)+2:
			return dst, fmt.Errorf("%w: bad bulk string %q", ErrBadFrame, truncate(rest, 64))
		case isNil:
			dst = append(dst, rest[:0])
			rest = rest[k+1:]
		default:
			dst = append(dst, v[:len(v):len(v)])
			rest = rest[k+1+len(v)+2:]
		}
	}
	return dst, nil
}

// truncate shortens b to at most n bytes, for error messages.
func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}
