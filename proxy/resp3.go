package proxy

import (
	"bytes"
	"errors"

	"featcache/internal/resp"
	"featcache/localcache"
	"featcache/upstream"
)

// RESP3 for clients that ask with HELLO 3 (docs/commands.md, "RESP3").
//
// Replies Redis writes are relayed as Redis wrote them, in RESP3: a RESP3 client's forwarded commands travel on a
// shared connection between HELLO 3 and HELLO 2 (segment.upstream3), which Redis runs in order with them, and a
// dedicated connection it pins (WATCH, MULTI, blocking commands, pub/sub, MONITOR) is switched with HELLO 3 when it
// is taken, and closed instead of going back to the pool. Replies featcache builds (cached reads, its local
// commands) are written in RESP3 by the helpers below. featcache's own reads (fills) stay in RESP2 on the shared
// connection, whatever the client speaks, so the local tier holds one form.

// null3 is RESP3's null.
var null3 = resp.AppendNull(nil)

// The helpers below answer in the protocol the client chose with HELLO (c.seg.proto): RESP3's types for a client
// of protocol 3, their RESP2 forms otherwise, as Redis's addReplyNull, addReplyMapLen, addReplyVerbatim do.

// nullReply answers a missing value: "$-1" in RESP2, "_" in RESP3.
func (c *client) nullReply() {
	buf := c.replies.buf()
	*buf = resp.AppendNullFor(*buf, c.seg.proto)
}

// nullArrayReply answers a missing aggregate (an aborted EXEC, a blocking pop that timed out): "*-1" in RESP2, "_"
// in RESP3.
func (c *client) nullArrayReply() {
	buf := c.replies.buf()
	*buf = resp.AppendNullArrayFor(*buf, c.seg.proto)
}

// mapReply starts a map of n pairs, whose 2n keys and values the caller appends: an array of 2n in RESP2.
func (c *client) mapReply(n int) {
	buf := c.replies.buf()
	*buf = resp.AppendMapFor(*buf, n, c.seg.proto)
}

// setReply starts a set of n elements: an array in RESP2.
func (c *client) setReply(n int) {
	buf := c.replies.buf()
	*buf = resp.AppendSetFor(*buf, n, c.seg.proto)
}

// arrayReply starts an array of n elements.
func (c *client) arrayReply(n int) {
	buf := c.replies.buf()
	*buf = resp.AppendArray(*buf, n)
}

// bulkStringReply answers s as a bulk string.
func (c *client) bulkStringReply(s string) {
	buf := c.replies.buf()
	*buf = resp.AppendBulkString(*buf, s)
}

// verbatimReply answers text as Redis answers CLIENT INFO, CLIENT LIST and INFO: a verbatim string of format "txt"
// in RESP3, a bulk string in RESP2.
func (c *client) verbatimReply(text []byte) {
	buf := c.replies.buf()
	if resp.IsRESP3(c.seg.proto) {
		*buf = resp.AppendVerbatim(*buf, "txt", string(text))
		return
	}
	*buf = resp.AppendBulk(*buf, text)
}

// resp3 reports whether the client chose RESP3 with HELLO 3.
func (c *client) resp3() bool { return resp.IsRESP3(c.seg.proto) }

// null returns the null a reply of the client's protocol holds for a missing value.
func (s *segment) null() []byte {
	if resp.IsRESP3(s.proto) {
		return null3
	}
	return nullBulk
}

// to3 rewrites, for a RESP3 client, the reply featcache built at b[mark:] for a cached read (a bulk string or null,
// an error, or an array of those) in RESP3: each null bulk string becomes RESP3's null, and with asMap (HGETALL) the
// array of 2n becomes a map of n pairs. The local tier and the fills build RESP2; a RESP2 client's reply is left
// as it is at the cost of one comparison.
func (s *segment) to3(b []byte, mark int, asMap bool) []byte {
	if s.proto < 3 {
		return b // inlined: a RESP2 client's cached read makes no call
	}
	return s.rewrite3(b, mark, asMap)
}

// rewrite3 is to3 for a RESP3 client.
func (s *segment) rewrite3(b []byte, mark int, asMap bool) []byte {
	if len(b) == mark {
		return b
	}
	frame := b[mark:]
	if frame[0] != resp.TypeArray {
		return s.fixNil(b, mark)
	}
	n, body, ok := resp.ArrayHeader(frame)
	if !ok {
		return b
	}
	if !asMap && !holdsNullBulk(body) {
		return b // nothing to rewrite
	}
	out := make([]byte, 0, len(frame))
	if asMap {
		out = resp.AppendMap(out, n/2)
	} else {
		out = resp.AppendArray(out, n)
	}
	for len(body) > 0 {
		var sc resp.Scanner
		m, err := sc.Next(body)
		if err != nil || m == 0 {
			return b // not a reply featcache built: left as it is
		}
		if bytes.Equal(body[:m], nullBulk) {
			out = append(out, null3...)
		} else {
			out = append(out, body[:m]...)
		}
		body = body[m:]
	}
	return append(b[:mark], out...)
}

// holdsNullBulk reports whether the elements of an array, body, hold a null bulk string. It steps from element to
// element (bulk strings' payloads are skipped, not searched); body that is not whole frames reports true, for the
// rewrite to leave it as it is.
func holdsNullBulk(body []byte) bool {
	for len(body) > 0 {
		var sc resp.Scanner
		m, err := sc.Next(body)
		if err != nil || m == 0 || bytes.Equal(body[:m], nullBulk) {
			return true
		}
		body = body[m:]
	}
	return false
}

// servedNil turns the reply a lookup that served an entry of kind k just appended to *b into the client's
// protocol: the null bulk string the local tier writes for a missing key becomes RESP3's null. Inlined, a RESP2
// client's hit pays one comparison, and the buffer is not touched.
func (s *segment) servedNil(b *[]byte, k localcache.Kind) {
	if s.proto < 3 || k != localcache.KindNil {
		return
	}
	*b = append((*b)[:len(*b)-len(nullBulk)], null3...)
}

// fixNil turns the null bulk string a cached read just appended at b[mark:] (localcache writes RESP2) into the
// client's protocol's null. A RESP2 client's reply is left as it is, at the cost of one comparison.
func (s *segment) fixNil(b []byte, mark int) []byte {
	if s.proto < 3 || len(b)-mark != len(nullBulk) || b[mark] != resp.TypeBulk || b[mark+1] != '-' {
		return b
	}
	return append(b[:mark], null3...)
}

// Commands that switch the protocol of a shared connection around a RESP3 client's forwarded commands. Their reply
// frames have no hole: nothing reads them.
var (
	hello3Cmd = resp.AppendCommand(nil, "HELLO", "3")
	hello2Cmd = resp.AppendCommand(nil, "HELLO", "2")
)

// upstream3 makes the commands appended next run in RESP3, for a RESP3 client: HELLO 3 goes first unless the
// payload's connection speaks RESP3 already. For a RESP2 client it does nothing.
func (s *segment) upstream3() {
	if s.proto >= 3 && !s.up3 && *s.pin == nil {
		s.windows = append(s.windows, window{hello: s.req.Len(), end: -1})
		s.req.AppendHello(3)
		s.up3 = true
	}
}

// upstream2 makes the commands appended next run in RESP2, which featcache's own reads parse (fills, an MGET's
// transaction, the GETs of its uncached keys), and which a shared connection must be left in: HELLO 2 goes first
// if the payload switched its connection to RESP3.
func (s *segment) upstream2() {
	if s.up3 {
		s.windows[len(s.windows)-1].end = s.req.Len()
		s.req.AppendHello(2)
		s.up3 = false
	}
}

// window is a run of a RESP3 client's forwarded commands in a payload: its HELLO 3's frame, and the frame of the
// HELLO 2 after it (-1: the payload's end). err is set when Redis refused the HELLO 3 (an ACL without hello, set
// while featcache runs): the commands ran in RESP2, and their replies are not the client's.
type window struct {
	hello, end int
	err        error
}

// checkWindows checks, once the segment's round trip is over, that Redis answered each HELLO 3 of the payload with
// its map. A window whose HELLO 3 failed answers each of its forwarded commands with an error (frameErr), and the
// next HELLO 3 of a client asks the upstream again whether it switches protocols.
func (c *client) checkWindows() {
	s := &c.seg
	for i := range s.windows {
		w := &s.windows[i]
		if w.hello >= c.call.Len() || c.call.Frame(w.hello)[0] == resp.TypeMap {
			continue // not answered at all: the round trip's own error covers it
		}
		w.err = upstream.NoRESP3(c.call.Frame(w.hello))
		c.srv.resp3.Store(0)
	}
}

// frameErr returns why reply frame f, inside a window whose HELLO 3 Redis refused, is not the client's; nil
// otherwise (and always for a RESP2 client, whose payloads have no windows).
func (s *segment) frameErr(f int) error {
	for i := range s.windows {
		if w := &s.windows[i]; w.err != nil && f > w.hello && (w.end < 0 || f < w.end) {
			return w.err
		}
	}
	return nil
}

// prepareConn makes a dedicated connection the client has just taken speak the client's protocol: HELLO 3 for a
// RESP3 client (the pool's connections speak RESP2). A connection that cannot be switched is closed and the error
// returned.
func (c *client) prepareConn(conn *upstream.Conn) error {
	if !c.resp3() {
		return nil
	}
	// Marked: Release closes it instead of pooling it (the pool's next user expects RESP2), and a connection that
	// follows a cluster redirect is switched too (Conn.Follow).
	err := conn.SwitchRESP3()
	if err != nil {
		conn.Close()
		if errors.Is(err, upstream.ErrNoRESP3) {
			c.srv.resp3.Store(0) // the next HELLO 3 of a client asks the upstream again
		}
	}
	return err
}

// execBesideSubscriptions runs a command of a RESP3 client in subscribed mode that is not a subscription command:
// as outside subscribed mode (execAuthed), after the pump has written the replies of the subscription commands
// before it. A command Redis runs (a write, a forwarded command) may make Redis push to the client's own
// subscriptions (PUBLISH to one of its channels, a keyspace notification); Redis writes such a push before the
// command's reply, so its reply waits until the pump has written what Redis sent on the session's connection
// until then.
func (c *client) execBesideSubscriptions(cmd *resp.Command, tc *command) {
	p := c.sub
	mayPush := tc == nil || tc.class != classRead && tc.class != classLocal && tc.class != classAdmin
	c.runSegment()
	if p.unsynced || mayPush {
		c.flush() // the replies before it go out before any push the pump writes while it runs
	}
	c.syncSubscribed()
	p.bypass = true
	c.execAuthed(cmd, tc)
	p.bypass = false
	if c.sub != p || !mayPush {
		return // nothing Redis ran for it, or the session ended (RESET)
	}
	// Its reply waits in c.out while the pump writes the pushes Redis sent before it.
	c.runSegment()
	p.sync(c.srv.up.Timeout())
}

// syncSubscribed waits, for a RESP3 client in subscribed mode about to run a command outside the pub/sub session,
// until the pump has written the replies of what was sent on the session's connection: they come first.
func (c *client) syncSubscribed() {
	p := c.sub
	c.runSegment()
	if p.unsynced {
		c.flush()
		p.sync(c.srv.up.Timeout())
		p.unsynced = false
	}
}

// switchPinned switches the client's dedicated connections to proto when HELLO changes the client's protocol: the
// WATCH session's (whose reply is read here) and the pub/sub or MONITOR session's (whose reply the pump swallows).
// A connection that fails is handled as its session handles a failure: the next command on it finds it closed.
func (c *client) switchPinned(proto int) {
	cmd := hello2Cmd
	if proto >= 3 {
		cmd = hello3Cmd
	}
	if c.tx.conn != nil {
		if _, err := c.waitPinned(c.tx.conn, cmd); err != nil {
			c.tx.close()
			c.tx.watchLost = true
		} else {
			c.tx.conn.SetRESP3(proto >= 3)
		}
	}
	if p := c.sub; p != nil {
		p.hellos.Add(1)
		if p.conn.Write(cmd) != nil {
			p.close()
		}
	}
}

// isHelloReply recognises the reply to HELLO in either protocol: a map (RESP3) or an array (RESP2) whose first key
// is "server".
func isHelloReply(frame []byte) bool {
	return bytes.HasPrefix(frame, helloReply3) || bytes.HasPrefix(frame, helloReply2)
}

var (
	helloReply3 = resp.AppendBulkString(resp.AppendMap(nil, 7), "server")
	helloReply2 = resp.AppendBulkString(resp.AppendArray(nil, 14), "server")
)
