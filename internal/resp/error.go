package resp

import "bytes"

// Error is an error reply as Redis worded it: the frame's text without the leading '-' and the line end, starting
// with the error code ("WRONGTYPE Operation against a key holding the wrong kind of value"). featcache keeps Redis's
// errors as Errors so that one place can relay them verbatim (AppendError(dst, err.Error()) writes the frame
// again), and tells them apart from its own failures with errors.As.
type Error string

// Error returns the reply's text, without the leading '-'.
func (e Error) Error() string { return string(e) }

// ParseError returns the error reply frame as an Error; the frame is not retained. The caller has checked that
// frame is an error reply (its first byte is TypeError).
func ParseError(frame []byte) Error {
	return Error(bytes.TrimSpace(frame[1:]))
}
