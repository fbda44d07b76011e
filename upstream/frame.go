package upstream

import (
	"bytes"
	"errors"
	"fmt"
)

// ErrBadFrame means the upstream sent bytes that are not a RESP frame; the connection cannot be trusted after it.
var ErrBadFrame = errors.New("upstream: malformed reply frame")

// maxLineLen bounds a frame's header or simple-string line while it is incomplete. Redis's own simple strings and
// errors are short; a longer unterminated line means the stream is not RESP.
const maxLineLen = 64 << 10

// frameScanner finds where reply frames end in a byte stream, without copying or decoding them. It is resumable:
// a frame that arrives over many reads is scanned once, not from its start on every read.
//
// A frame is one RESP value: a simple string, error, integer, bulk string or an aggregate with all its nested
// elements. RESP3 types are recognised too, so the scanner never loses framing if one appears.
type frameScanner struct {
	pos     int // offset in the buffer up to which the current frame has been scanned
	pending int // elements still missing before the current frame is complete; 0 = between frames
}

// reset forgets any partial frame.
func (s *frameScanner) reset() { *s = frameScanner{} }

// shift tells the scanner that the caller removed n bytes from the front of its buffer.
func (s *frameScanner) shift(n int) { s.pos -= n }

// next scans b (which starts at the current frame's first byte) and returns the length of the first complete frame,
// or 0 when b does not hold it yet. Call next again with a longer b (same start) after reading more.
func (s *frameScanner) next(b []byte) (int, error) {
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
		case '+', '-', ':', '_', ',', '#', '(':
			s.pos = lineEnd
			s.pending--
		case '$', '=', '!':
			n, ok := parseLen(line)
			if !ok {
				return 0, ErrBadFrame
			}
			if n < 0 {
				s.pos = lineEnd
				s.pending--
				continue
			}
			if lineEnd+n+2 > len(b) {
				return 0, nil
			}
			if b[lineEnd+n] != '\r' || b[lineEnd+n+1] != '\n' {
				return 0, ErrBadFrame
			}
			s.pos = lineEnd + n + 2
			s.pending--
		case '*', '~', '>', '%', '|':
			n, ok := parseLen(line)
			if !ok {
				return 0, ErrBadFrame
			}
			s.pos = lineEnd
			s.pending--
			if n > 0 {
				if typ == '%' || typ == '|' {
					n *= 2 // maps and attributes count pairs
				}
				s.pending += n
			}
		default:
			return 0, ErrBadFrame
		}
	}
	n := s.pos
	s.pos = 0
	return n, nil
}

// parseLen parses a RESP length: a decimal integer, possibly -1.
func parseLen(b []byte) (int, bool) {
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	neg := false
	if b[0] == '-' {
		neg = true
		b = b[1:]
		if len(b) == 0 {
			return 0, false
		}
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	if neg {
		return -n, true
	}
	return n, true
}

// parseInt parses a RESP integer reply frame (":123\r\n").
func parseInt(frame []byte) (int64, bool) {
	if len(frame) < 4 || frame[0] != ':' {
		return 0, false
	}
	n, ok := parseLen(frame[1 : len(frame)-2])
	return int64(n), ok
}

// bulkPayload returns the payload of a bulk string frame, with isNil for "$-1".
func bulkPayload(frame []byte) (payload []byte, isNil, ok bool) {
	if len(frame) < 4 || frame[0] != '$' {
		return nil, false, false
	}
	i := bytes.IndexByte(frame, '\n')
	if i < 0 {
		return nil, false, false
	}
	n, ok := parseLen(frame[1 : i-1])
	if !ok {
		return nil, false, false
	}
	if n < 0 {
		return nil, true, true
	}
	return frame[i+1 : i+1+n], false, true
}

// ErrReply is an error reply of the upstream (the frame's text without the leading '-' and the CRLF), for callers
// that turn a reply into a Go error: ParseBulkArray, and the Client's health PING.
type ErrReply string

func (e ErrReply) Error() string { return string(e) }

// ParseBulkArray appends the elements of an array reply of bulk strings (ZRANGE, CONFIG GET, KEYS) to dst; the
// slices point into frame. A null element is an empty slice. An error reply is returned as an ErrReply; any other
// shape is ErrBadFrame.
func ParseBulkArray(frame []byte, dst [][]byte) ([][]byte, error) {
	if len(frame) > 0 && frame[0] == '-' {
		return dst, ErrReply(bytes.TrimSpace(frame[1:]))
	}
	i := bytes.IndexByte(frame, '\n')
	if len(frame) < 4 || frame[0] != '*' || i < 2 {
		return dst, fmt.Errorf("%w: want an array, got %q", ErrBadFrame, truncate(frame, 64))
	}
	n, ok := parseLen(frame[1 : i-1])
	if !ok {
		return dst, fmt.Errorf("%w: bad array length %q", ErrBadFrame, truncate(frame, 64))
	}
	rest := frame[i+1:]
	for j := 0; j < n; j++ {
		k := bytes.IndexByte(rest, '\n')
		if len(rest) < 4 || rest[0] != '$' || k < 2 {
			return dst, fmt.Errorf("%w: want a bulk string in the array, got %q", ErrBadFrame, truncate(rest, 64))
		}
		m, ok := parseLen(rest[1 : k-1])
		switch {
		case !ok || m >= 0 && len(rest) < k+1+m+2:
			return dst, fmt.Errorf("%w: bad bulk string %q", ErrBadFrame, truncate(rest, 64))
		case m < 0:
			dst = append(dst, rest[:0])
			rest = rest[k+1:]
		default:
			dst = append(dst, rest[k+1:k+1+m:k+1+m])
			rest = rest[k+1+m+2:]
		}
	}
	return dst, nil
}
