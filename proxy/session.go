package proxy

import (
	"bytes"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"featcache/upstream"
)

// txState is a client's transaction state.
//
// Without WATCH, MULTI is kept by featcache: queued commands are checked against the command table (Redis's own
// queue-time errors: unknown command, wrong arity) and answered +QUEUED, then EXEC sends MULTI, the queue and EXEC
// as one contiguous batch on a shared connection and relays EXEC's reply. No upstream connection is held while the
// client builds its transaction.
//
// WATCH pins the client to a dedicated upstream connection until EXEC, DISCARD, UNWATCH or RESET: every command,
// reads included, goes there verbatim, since the watched keys' state lives on that connection.
type txState struct {
	multi bool // inside MULTI (kept locally, or on conn when pinned)
	dirty bool // a queued command was refused: EXEC aborts

	queue  []byte    // queued commands, RESP encoded
	queued int       // number of queued commands
	writes []txWrite // queued writes, invalidated at EXEC
	arena  []byte    // copies of the queued writes' arguments

	conn *upstream.Conn // pinned connection after WATCH
}

// txWrite is a queued write: its arguments (copies in arena) and its table entry.
type txWrite struct {
	args [][]byte
	tc   *command
}

func (t *txState) resetQueue() {
	t.multi, t.dirty = false, false
	t.queue, t.queued = t.queue[:0], 0
	t.writes, t.arena = t.writes[:0], t.arena[:0]
}

// close drops the pinned connection: its WATCH or MULTI state dies with it.
func (t *txState) close() {
	if t.conn != nil {
		t.conn.Close()
		t.conn = nil
	}
	t.resetQueue()
}

// rememberWrite copies a queued write's arguments so they survive the read buffer.
func (t *txState) rememberWrite(args [][]byte, tc *command) {
	start := len(t.arena)
	for _, a := range args {
		t.arena = append(t.arena, a...)
	}
	copied := make([][]byte, len(args))
	off := start
	for i, a := range args {
		copied[i] = t.arena[off : off+len(a) : off+len(a)]
		off += len(a)
	}
	t.writes = append(t.writes, txWrite{args: copied, tc: tc})
}

func (c *client) cmdMulti(cmd *Command) {
	if c.tx.multi {
		c.errorReply("ERR MULTI calls can not be nested")
		return
	}
	c.tx.resetQueue()
	c.tx.multi = true
	c.simpleReply("OK")
}

// queue handles a command inside a local MULTI, with Redis's queue-time checks.
func (c *client) queue(cmd *Command, tc *command) {
	switch {
	case tc == nil:
		c.tx.dirty = true
		c.errorReply(unknownCommandError(cmd.Args))
		return
	case tc.class == classTx:
		tc.tx(c, cmd)
		return
	case tc.info != nil && !tc.info.ArityOK(len(cmd.Args)):
		c.tx.dirty = true
		c.errorReply("ERR wrong number of arguments for '" + tc.name + "' command")
		return
	case tc.info != nil && tc.info.Flags.Has(FlagNoMulti):
		c.tx.dirty = true
		c.errorReply("ERR Command not allowed inside a transaction")
		return
	case tc.class == classDenied:
		c.tx.dirty = true
		c.errorReply("ERR command '" + tc.name + "' is disabled by featcache (commands.deny)")
		return
	case tc.class == classSubscribe || tc.class == classRefused || tc.class == classAdmin ||
		tc.class == classLocal && tc.name != "ping" && tc.name != "echo":
		// These change the connection they run on, which inside a transaction would be a shared one.
		c.tx.dirty = true
		c.errorReply("ERR '" + tc.name + "' inside MULTI is not supported by featcache")
		return
	}
	if cmd.Raw != nil {
		c.tx.queue = append(c.tx.queue, cmd.Raw...)
	} else {
		c.tx.queue = upstream.AppendArgs(c.tx.queue, cmd.Args)
	}
	c.tx.queued++
	if tc.class == classWrite || tc.class == classBlocking && tc.info != nil && tc.info.Flags.Has(FlagWrite) {
		c.tx.rememberWrite(cmd.Args, tc)
	}
	c.simpleReply("QUEUED")
}

var (
	multiCmd = upstream.AppendCommand(nil, "MULTI")
	execCmd  = upstream.AppendCommand(nil, "EXEC")
)

func (c *client) cmdExec(cmd *Command) {
	if !c.tx.multi {
		c.errorReply("ERR EXEC without MULTI")
		return
	}
	if c.tx.dirty {
		c.tx.resetQueue()
		c.errorReply("EXECABORT Transaction discarded because of previous errors.")
		return
	}
	// The segment before EXEC must be answered first: its reads precede the transaction.
	c.runSegment()
	req := c.seg.req[:0]
	req = append(req, multiCmd...)
	req = append(req, c.tx.queue...)
	req = append(req, execCmd...)
	c.seg.req = req
	n := c.tx.queued + 2
	err := c.srv.up.Do(c.call, req, n)
	c.srv.stats.Forwarded.Add(int64(c.tx.queued))
	for _, w := range c.tx.writes {
		c.afterWrite(w.args, w.tc)
	}
	c.seg.req = c.seg.req[:0]
	c.tx.resetQueue()
	if c.call.Len() == n {
		c.rawReply(c.call.Frame(n - 1))
		return
	}
	c.srv.stats.Errors.Add(1)
	c.errorReply(upstreamErrorText(err))
}

func (c *client) cmdDiscard(cmd *Command) {
	if !c.tx.multi {
		c.errorReply("ERR DISCARD without MULTI")
		return
	}
	c.tx.resetQueue()
	c.simpleReply("OK")
}

func (c *client) cmdWatch(cmd *Command) {
	if c.tx.multi {
		c.errorReply("ERR WATCH inside MULTI is not allowed")
		return
	}
	c.runSegment()
	conn, err := c.srv.up.Dedicated()
	if err != nil {
		c.srv.stats.Errors.Add(1)
		c.errorReply(upstreamErrorText(err))
		return
	}
	c.tx.conn = conn
	c.execPinned(cmd, c.srv.tbl.Load().lookup(cmd.Args))
}

// cmdUnwatch outside a WATCH session has nothing to release.
func (c *client) cmdUnwatch(cmd *Command) { c.simpleReply("OK") }

// execPinned runs a command on the client's pinned connection (after WATCH) and relays its reply. The session
// ends, and the connection goes back to the pool, when EXEC, DISCARD or UNWATCH leave it without state.
func (c *client) execPinned(cmd *Command, tc *command) {
	if tc != nil && (tc.class == classLocal || tc.class == classAdmin || tc.class == classDenied || tc.class == classRefused) {
		switch tc.name {
		case "reset", "quit":
			c.tx.close()
		}
		if tc.class == classLocal || tc.class == classAdmin {
			if tc.info != nil && !tc.info.ArityOK(len(cmd.Args)) {
				c.errorReply("ERR wrong number of arguments for '" + tc.name + "' command")
				return
			}
			if c.tx.multi && tc.name != "quit" && tc.name != "reset" && tc.name != "ping" && tc.name != "echo" {
				c.errorReply("ERR '" + tc.name + "' inside MULTI is not supported by featcache")
				return
			}
			tc.local(c, cmd.Args)
			return
		}
		c.exec(cmd) // denied or refused: the same error as outside a session
		return
	}
	if tc != nil && tc.class == classSubscribe {
		c.errorReply("ERR SUBSCRIBE while WATCH is active is not supported by featcache")
		return
	}
	c.runSegment()
	req := c.seg.req[:0]
	if cmd.Raw != nil {
		req = append(req, cmd.Raw...)
	} else {
		req = upstream.AppendArgs(req, cmd.Args)
	}
	c.seg.req = req
	var deadline time.Time
	if tc == nil || tc.class != classBlocking || c.tx.multi {
		deadline = c.seg.now.Add(c.srv.up.Timeout())
	} else if d, ok := blockingTimeout(cmd.Args, tc); ok && d > 0 {
		deadline = time.Now().Add(d + c.srv.up.Timeout())
	}
	err := c.tx.conn.Do(c.call, req, 1, deadline)
	c.seg.req = c.seg.req[:0]
	c.srv.stats.Forwarded.Add(1)
	if err != nil {
		// The session's state is lost with the connection: Redis would have dropped it too.
		c.tx.close()
		c.srv.stats.Errors.Add(1)
		c.errorReply(upstreamErrorText(err))
		return
	}
	reply := c.call.Frame(0)
	name := ""
	if tc != nil {
		name = tc.name
	}
	switch {
	case name == "multi" && bytes.Equal(reply, okReply):
		c.tx.multi = true
	case c.tx.multi && name != "exec" && name != "discard" && tc != nil &&
		(tc.class == classWrite || tc.class == classBlocking && tc.info != nil && tc.info.Flags.Has(FlagWrite)):
		c.tx.rememberWrite(cmd.Args, tc)
	case !c.tx.multi && tc != nil && (tc.class == classWrite || tc.class == classBlocking && tc.info.Flags.Has(FlagWrite)):
		c.afterWrite(cmd.Args, tc)
	}
	c.rawReply(reply)
	if name == "exec" || name == "discard" || name == "unwatch" && !c.tx.multi {
		for _, w := range c.tx.writes {
			c.afterWrite(w.args, w.tc)
		}
		c.tx.resetQueue()
		c.tx.conn.Release()
		c.tx.conn = nil
	}
}

var okReply = []byte("+OK\r\n")

// blocking runs a blocking command on a dedicated connection. upstream.timeout does not cut it short: the wait is
// bounded by the command's own timeout (plus upstream.timeout), and a timeout of 0 waits as long as Redis would.
// While it waits, featcache checks that the client is still connected; if it left, the dedicated connection is
// closed, which makes Redis drop the blocked command.
func (c *client) blocking(cmd *Command, tc *command) {
	d, blocks := blockingTimeout(cmd.Args, tc)
	if !blocks {
		// XREAD and XREADGROUP without BLOCK do not block.
		if tc.info != nil && tc.info.Flags.Has(FlagWrite) {
			c.write(cmd, tc)
		} else {
			c.forward(cmd)
		}
		return
	}
	c.runSegment()
	conn, err := c.srv.up.Dedicated()
	if err != nil {
		c.srv.stats.Errors.Add(1)
		c.errorReply(upstreamErrorText(err))
		return
	}
	req := c.seg.req[:0]
	if cmd.Raw != nil {
		req = append(req, cmd.Raw...)
	} else {
		req = upstream.AppendArgs(req, cmd.Args)
	}
	c.seg.req = req
	c.srv.stats.Forwarded.Add(1)
	var overall time.Time
	if d > 0 {
		overall = time.Now().Add(d + c.srv.up.Timeout())
	}
	reply, err := c.waitBlocked(conn, req, overall)
	c.seg.req = c.seg.req[:0]
	if tc.info != nil && tc.info.Flags.Has(FlagWrite) {
		c.afterWrite(cmd.Args, tc)
	}
	if err != nil {
		conn.Close()
		c.srv.stats.Errors.Add(1)
		c.errorReply(upstreamErrorText(err))
		return
	}
	conn.Release()
	c.rawReply(reply)
}

// waitBlocked writes req and reads its one reply, checking every quarter second that the client is still there.
func (c *client) waitBlocked(conn *upstream.Conn, req []byte, overall time.Time) ([]byte, error) {
	if err := conn.Write(req); err != nil {
		return nil, err
	}
	reply := c.call.Replies[:0]
	for {
		step := time.Now().Add(250 * time.Millisecond)
		if !overall.IsZero() && overall.Before(step) {
			step = overall
		}
		var err error
		reply, err = conn.ReadFrame(reply[:0], step)
		if err == nil {
			c.call.Replies = reply
			return reply, nil
		}
		if err != upstream.ErrTimeout || !overall.IsZero() && !time.Now().Before(overall) {
			return nil, err
		}
		if !peerAlive(c.nc) {
			return nil, errClientGone
		}
	}
}

// peerAlive peeks at the client socket without consuming bytes: a closed peer reads as EOF.
func peerAlive(nc interface{}) bool {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return true
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return true
	}
	alive := true
	var b [1]byte
	raw.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		alive = !(n == 0 && err == nil)
		return true
	})
	return alive
}

// blockingTimeout reads a blocking command's own timeout. blocks is false for XREAD/XREADGROUP without BLOCK.
// An unparsable timeout is left to Redis, which rejects it at once.
func blockingTimeout(args [][]byte, tc *command) (d time.Duration, blocks bool) {
	name := tc.name
	switch name {
	case "xread", "xreadgroup":
		for i := 1; i+1 < len(args); i++ {
			if bytes.EqualFold(args[i], []byte("block")) {
				ms, err := strconv.ParseInt(string(args[i+1]), 10, 64)
				if err != nil || ms < 0 {
					return time.Second, true
				}
				return time.Duration(ms) * time.Millisecond, true
			}
			if bytes.EqualFold(args[i], []byte("streams")) {
				break
			}
		}
		return 0, false
	case "wait", "waitaof":
		if len(args) < 3 {
			return time.Second, true
		}
		ms, err := strconv.ParseInt(string(args[len(args)-1]), 10, 64)
		if err != nil || ms < 0 {
			return time.Second, true
		}
		return time.Duration(ms) * time.Millisecond, true
	case "blmpop", "bzmpop":
		if len(args) < 2 {
			return time.Second, true
		}
		return secondsArg(args[1]), true
	}
	if len(args) < 2 {
		return time.Second, true
	}
	return secondsArg(args[len(args)-1]), true
}

// secondsArg parses a blocking timeout in (fractional) seconds.
func secondsArg(b []byte) time.Duration {
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil || f < 0 {
		return time.Second
	}
	return time.Duration(f * float64(time.Second))
}

// pubsub is a client's pub/sub session: a dedicated upstream connection whose frames a pump goroutine copies to
// the client while the client goroutine forwards its commands.
//
// Redis keeps a RESP2 client in subscribed mode while it has channels or patterns; featcache models the sets from
// the commands it forwards and, when the model says the count reaches zero, sends a marker PING and leaves the
// mode only when the pump sees the marker's reply with the upstream's count at zero, so no reply is attributed to
// the wrong mode.
type pubsub struct {
	c    *client
	conn *upstream.Conn

	channels, patterns, shards map[string]struct{}
	count                      atomic.Int64 // the upstream's subscription count, from confirmations
	marker                     []byte
	markerSeen                 chan struct{}
	on                         bool // subscribed mode, owned by the client goroutine
	done                       chan struct{}
	closeOnce                  sync.Once
}

func (p *pubsub) active() bool { return p.on }

func (c *client) subscribe(cmd *Command, tc *command) {
	c.runSegment()
	if c.sub == nil {
		conn, err := c.srv.up.Dedicated()
		if err != nil {
			c.srv.stats.Errors.Add(1)
			c.errorReply(upstreamErrorText(err))
			return
		}
		c.sub = &pubsub{
			c: c, conn: conn,
			channels: map[string]struct{}{}, patterns: map[string]struct{}{}, shards: map[string]struct{}{},
			marker:     []byte("featcache-unsubscribed-" + strconv.FormatInt(c.id, 10)),
			markerSeen: make(chan struct{}, 1),
			done:       make(chan struct{}),
		}
		go c.sub.pump()
	}
	c.sub.on = true
	c.execSubscribed(cmd, tc)
}

// execSubscribed forwards a command in subscribed mode; replies come back through the pump. QUIT and RESET are
// handled here: they end the session.
func (c *client) execSubscribed(cmd *Command, tc *command) {
	p := c.sub
	name := ""
	if tc != nil {
		name = tc.name
	}
	switch name {
	case "quit", "reset":
		c.flush() // what the pump has not sent yet is lost with the connection, as in Redis
		p.close()
		c.sub = nil
		tc.local(c, cmd.Args)
		return
	}
	var req []byte
	if cmd.Raw != nil {
		req = cmd.Raw
	} else {
		req = upstream.AppendArgs(nil, cmd.Args)
	}
	p.model(name, cmd.Args[1:])
	c.srv.stats.Forwarded.Add(1)
	if p.total() == 0 {
		req = upstream.AppendArgs(append([]byte(nil), req...), [][]byte{[]byte("PING"), p.marker})
	}
	// Replies of earlier commands in this batch must reach the client before the pump's frames.
	c.runSegment()
	c.flush()
	if err := p.conn.Write(req); err != nil {
		p.close()
		c.sub = nil
		c.errorReply(upstreamErrorText(err))
		return
	}
	if p.total() == 0 {
		select {
		case <-p.markerSeen:
			if p.count.Load() == 0 {
				p.on = false
			}
		case <-p.done:
			c.sub = nil
		}
	}
}

// model applies a forwarded command to the modelled subscription sets.
func (p *pubsub) model(name string, args [][]byte) {
	var set map[string]struct{}
	add := true
	switch name {
	case "subscribe":
		set = p.channels
	case "psubscribe":
		set = p.patterns
	case "ssubscribe":
		set = p.shards
	case "unsubscribe":
		set, add = p.channels, false
	case "punsubscribe":
		set, add = p.patterns, false
	case "sunsubscribe":
		set, add = p.shards, false
	default:
		return
	}
	if !add && len(args) == 0 {
		clear(set)
		return
	}
	for _, a := range args {
		if add {
			set[string(a)] = struct{}{}
		} else {
			delete(set, string(a))
		}
	}
}

func (p *pubsub) total() int { return len(p.channels) + len(p.patterns) + len(p.shards) }

// pump copies the dedicated connection's frames to the client, swallowing the marker replies.
func (p *pubsub) pump() {
	defer p.close()
	var frame, out []byte
	for {
		var err error
		frame, err = p.conn.ReadFrame(frame[:0], time.Time{})
		if err != nil {
			return
		}
		if n, ok := subscriptionCount(frame); ok {
			p.count.Store(n)
		}
		if p.isMarker(frame) {
			select {
			case p.markerSeen <- struct{}{}:
			default:
			}
			continue
		}
		out = append(out[:0], frame...)
		for p.conn.Buffered() {
			if frame, err = p.conn.ReadFrame(frame[:0], time.Time{}); err != nil {
				break
			}
			if n, ok := subscriptionCount(frame); ok {
				p.count.Store(n)
			}
			if p.isMarker(frame) {
				select {
				case p.markerSeen <- struct{}{}:
				default:
				}
				continue
			}
			out = append(out, frame...)
		}
		p.c.wmu.Lock()
		_, werr := p.c.nc.Write(out)
		p.c.wmu.Unlock()
		if werr != nil || err != nil {
			return
		}
	}
}

// isMarker recognises the reply to the marker PING, in subscribed form (*2 pong marker) or plain ($marker).
func (p *pubsub) isMarker(frame []byte) bool {
	return bytes.HasSuffix(frame, append(append([]byte("\r\n"), p.marker...), '\r', '\n')) &&
		(bytes.HasPrefix(frame, []byte("*2\r\n$4\r\npong\r\n$")) || frame[0] == '$')
}

func (p *pubsub) close() {
	p.closeOnce.Do(func() {
		p.conn.Close()
		close(p.done)
	})
}

// subscriptionCount reads the count of a (un)subscribe confirmation: *3 kind channel :count.
func subscriptionCount(frame []byte) (int64, bool) {
	if !bytes.HasPrefix(frame, []byte("*3\r\n$")) {
		return 0, false
	}
	i := bytes.LastIndexByte(frame[:len(frame)-2], ':')
	if i < 0 || !bytes.Contains(frame[:i], []byte("subscribe\r\n")) {
		return 0, false
	}
	n, err := strconv.ParseInt(string(frame[i+1:len(frame)-2]), 10, 64)
	return n, err == nil
}
