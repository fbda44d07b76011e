package proxy

import (
	"errors"
	"strings"

	"featcache/internal/resp"
	"featcache/upstream"
)

var (
	errInternal   = errors.New("featcache internal error")
	errClientGone = errors.New("client disconnected")
)

// Fixed replies, as Redis writes them.
var (
	nullBulk = resp.AppendNullBulk(nil)
	okReply  = resp.AppendOK(nil)
)

// upstreamErrorText is the one place that turns an upstream failure into the error a client sees. An error reply
// from Redis is passed on as Redis worded it; featcache's own failures (timeouts, connections) say so.
func upstreamErrorText(err error) string {
	var re resp.Error
	switch {
	case err == nil:
		return "ERR featcache upstream error"
	case errors.As(err, &re):
		return re.Error()
	case errors.Is(err, upstream.ErrTimeout):
		return "ERR featcache upstream timeout: Redis did not answer in time (the command may have been applied)"
	case errors.Is(err, upstream.ErrNoRESP3):
		return "ERR " + err.Error()
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

// The reply helpers append a reply known now to wherever the next reply of the batch belongs (replies.go).

func (c *client) errorReply(msg string) {
	buf := c.replies.buf()
	*buf = resp.AppendError(*buf, msg)
}

// rejectReply answers a command rejected before it runs (a wrong number of arguments, NOAUTH) with msg, as Redis's
// rejectCommand does: an EXEC so rejected discards the transaction, and its error says so, naming the reason
// without the ERR prefix ("EXECABORT Transaction discarded because of: NOAUTH Authentication required.").
func (c *client) rejectReply(tc *command, msg string) {
	if tc != nil && tc.name == "exec" {
		msg = "EXECABORT Transaction discarded because of: " + strings.TrimPrefix(msg, "ERR ")
	}
	c.errorReply(msg)
}

func (c *client) simpleReply(s string) {
	buf := c.replies.buf()
	*buf = resp.AppendString(*buf, s)
}

func (c *client) bulkReply(b []byte) {
	buf := c.replies.buf()
	*buf = resp.AppendBulk(*buf, b)
}

func (c *client) intReply(n int64) {
	buf := c.replies.buf()
	*buf = resp.AppendInt(*buf, n)
}

func (c *client) rawReply(frame []byte) { c.replies.add(frame) }
