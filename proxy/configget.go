package proxy

import (
	"strings"
	"time"

	"featcache/internal/resp"
	"featcache/upstream"
)

// cmdConfigGet forwards CONFIG GET and relays Redis's reply with the values of secret parameters redacted
// (secretConfig), whatever the pattern that matched them: CONFIG GET * included.
func (c *client) cmdConfigGet(args [][]byte) {
	c.runSegment()
	c.seg.req.Reset()
	c.seg.req.AppendArgs(upstream.NoSlot, args)
	c.srv.stats.Forwarded.Add(1)
	start := time.Now()
	err := c.srv.up.Do(c.call, &c.seg.req)
	c.srv.metrics.observeUpstream(upForward, start)
	c.seg.req.Reset()
	if err != nil {
		c.srv.stats.Errors.Add(1)
		c.errorReply(upstreamErrorText(err))
		return
	}
	buf := c.replies.buf()
	mark := len(*buf)
	*buf = append(*buf, redactConfig(c.call.Frame(0))...)
	*buf = c.seg.to3(*buf, mark, true) // a map in RESP3
}

// redactedValue replaces the value of a secret configuration parameter.
const redactedValue = "(redacted)"

// secretConfig reports whether a configuration parameter holds a credential: the passwords Redis 7 knows
// (requirepass, masterauth, tls-key-file-pass, tls-client-key-file-pass), the user a replica authenticates as
// (masteruser), and, for parameters later versions or modules add, any name that speaks of a password or secret.
func secretConfig(name string) bool {
	switch name {
	case "requirepass", "masterauth", "masteruser":
		return true
	}
	return strings.Contains(name, "pass") || strings.Contains(name, "secret")
}

// redactConfig returns a CONFIG GET reply (a flat array of names and values) with every non-empty value of a
// secret parameter replaced by redactedValue. Any other frame, an error among them, is returned as it is.
func redactConfig(frame []byte) []byte {
	v, _, err := resp.Decode(frame)
	if err != nil || v.Type != resp.TypeArray || len(v.Elems)%2 != 0 {
		return frame
	}
	secret := false
	for i := 0; i < len(v.Elems); i += 2 {
		name, _ := v.Elems[i].Text()
		if value, _ := v.Elems[i+1].Text(); value != "" && secretConfig(strings.ToLower(name)) {
			secret = true
			break
		}
	}
	if !secret {
		return frame
	}
	out := resp.AppendArray(make([]byte, 0, len(frame)), len(v.Elems))
	for i := 0; i < len(v.Elems); i += 2 {
		name, _ := v.Elems[i].Text()
		value, _ := v.Elems[i+1].Text()
		if value != "" && secretConfig(strings.ToLower(name)) {
			value = redactedValue
		}
		out = resp.AppendBulkString(out, name)
		out = resp.AppendBulkString(out, value)
	}
	return out
}
