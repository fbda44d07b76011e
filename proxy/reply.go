package proxy

import (
	"bytes"
	"errors"
	"strconv"
	"strings"

	"featcache/upstream"
)

var (
	errInternal   = errors.New("featcache internal error")
	errClientGone = errors.New("client disconnected")
	nullBulk      = []byte("$-1\r\n")
)

// redisError is an error reply from the upstream, kept as Redis worded it.
type redisError []byte

func (e redisError) Error() string { return string(bytes.TrimSpace(bytes.TrimPrefix(e, []byte("-")))) }

// upstreamErrorText is the one place that turns an upstream failure into the error a client sees. An error reply
// from Redis is passed on as Redis worded it; featcache's own failures (timeouts, connections) say so.
func upstreamErrorText(err error) string {
	var re redisError
	switch {
	case err == nil:
		return "ERR featcache upstream error"
	case errors.As(err, &re):
		return re.Error()
	case errors.Is(err, upstream.ErrTimeout):
		return "ERR featcache upstream timeout: Redis did not answer in time (the command may have been applied)"
	case errors.Is(err, upstream.ErrCommandTimeout):
		return "ERR featcache upstream timeout: Redis did not answer within upstream.command_timeout (the command " +
			"may have been applied)"
	}
	return "ERR featcache upstream unavailable: " + err.Error()
}

// unknownCommandError is Redis's error for a command it does not know: the name cut at 128 bytes, then quoted
// arguments while the list is under 128 bytes, each cut to what is left of those 128 (processCommand in Redis).
func unknownCommandError(args [][]byte) string {
	var list []byte
	for i := 1; i < len(args) && len(list) < 128; i++ {
		arg := truncateArg(args[i], 128-len(list))
		list = append(list, '\'')
		list = append(list, arg...)
		list = append(list, '\'', ' ')
	}
	return "ERR unknown command '" + string(truncateArg(args[0], 128)) + "', with args beginning with: " + string(list)
}

func truncateArg(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

// The reply helpers append to wherever the next reply of the batch belongs (see segment.buf).

func (c *client) errorReply(msg string) {
	buf := c.seg.buf(&c.out)
	*buf = appendError(*buf, msg)
}

func (c *client) simpleReply(s string) {
	buf := c.seg.buf(&c.out)
	*buf = append(*buf, '+')
	*buf = append(*buf, s...)
	*buf = append(*buf, '\r', '\n')
}

func (c *client) bulkReply(b []byte) {
	buf := c.seg.buf(&c.out)
	*buf = appendBulk(*buf, b)
}

func (c *client) intReply(n int64) {
	buf := c.seg.buf(&c.out)
	*buf = appendInt(*buf, n)
}

func (c *client) rawReply(frame []byte) {
	buf := c.seg.buf(&c.out)
	*buf = append(*buf, frame...)
}

// appendError appends "-msg\r\n"; line breaks in msg would break the frame and become spaces.
func appendError(dst []byte, msg string) []byte {
	dst = append(dst, '-')
	for i := 0; i < len(msg); i++ {
		ch := msg[i]
		if ch == '\r' || ch == '\n' {
			ch = ' '
		}
		dst = append(dst, ch)
	}
	return append(dst, '\r', '\n')
}

func appendInt(dst []byte, n int64) []byte {
	dst = append(dst, ':')
	dst = strconv.AppendInt(dst, n, 10)
	return append(dst, '\r', '\n')
}

func appendBulkString(dst []byte, s string) []byte {
	dst = append(dst, '$')
	dst = strconv.AppendInt(dst, int64(len(s)), 10)
	dst = append(dst, '\r', '\n')
	dst = append(dst, s...)
	return append(dst, '\r', '\n')
}

// bulkString returns the payload of a bulk string frame.
func bulkString(frame []byte) ([]byte, bool, bool) {
	if len(frame) < 4 || frame[0] != '$' {
		return nil, false, false
	}
	i := bytes.IndexByte(frame, '\n')
	n, err := strconv.Atoi(string(frame[1 : i-1]))
	if err != nil {
		return nil, false, false
	}
	if n < 0 {
		return nil, true, true
	}
	return frame[i+1 : i+1+n], false, true
}

// parseServerInfo reads what HELLO reports from INFO server.
func parseServerInfo(info string) *serverInfo {
	si := &serverInfo{version: "7.0.0", mode: "standalone", role: "master"}
	for _, line := range strings.Split(info, "\n") {
		line = strings.TrimRight(line, "\r")
		if v, ok := strings.CutPrefix(line, "redis_version:"); ok {
			si.version = v
		} else if v, ok := strings.CutPrefix(line, "redis_mode:"); ok {
			si.mode = v
		}
	}
	return si
}
