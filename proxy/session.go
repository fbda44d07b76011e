package proxy

import (
	"bytes"
	"crypto/tls"
	"errors"
	"os"
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
// reads included, goes there verbatim, since the watched keys' state lives on that connection. A MULTI inside such a
// session lives there too: Redis queues and checks its commands, and featcache only refuses (and marks dirty) what
// it refuses in a transaction without WATCH.
type txState struct {
	multi bool // inside MULTI (kept locally, or on conn when pinned)
	dirty bool // featcache refused a command of the transaction: EXEC aborts

	queue  []byte    // queued commands, RESP encoded
	queued int       // number of queued commands
	writes []txWrite // queued writes, invalidated at EXEC
	arena  []byte    // copies of the queued writes' arguments

	conn *upstream.Conn // pinned connection after WATCH

	// In front of a Redis Cluster: slot is the slot of the keyed commands queued so far (upstream.NoSlot while
	// none), and crossSlot says two of them differ, which makes EXEC answer CROSSSLOT as Redis does. pinSlot is
	// the slot of a WATCH session, which every keyed command of the session must share; fresh is true while the
	// session's first WATCH runs (a MOVED then moves the session to the slot's new master).
	slot      int
	crossSlot bool
	pinSlot   int
	fresh     bool
}

// txWrite is a queued write: its arguments (copies in arena) and its table entry.
type txWrite struct {
	args [][]byte
	tc   *command
}

func (t *txState) resetQueue() {
	t.multi, t.dirty = false, false
	t.slot, t.crossSlot = upstream.NoSlot, false
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

// queue handles a command inside a local MULTI, with Redis's queue-time checks. Inside a WATCH session the MULTI
// is on the pinned connection, and the command goes there.
func (c *client) queue(cmd *Command, tc *command) {
	if c.tx.conn != nil {
		c.execPinned(cmd, tc)
		return
	}
	if msg := rejection(cmd.Args, tc); msg != "" {
		c.tx.dirty = true
		c.errorReply(msg)
		return
	}
	switch {
	case tc.class == classTx:
		tc.tx(c, cmd)
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
	case c.srv.clustered() && !c.clusterQueueable(cmd, tc):
		return
	}
	c.appendQueued(cmd, tc)
}

// clusterQueueable applies Redis Cluster's rules to a command queued in a transaction, which runs whole on one
// master: a command whose own keys span slots is refused with CROSSSLOT at once and makes EXEC abort (as Redis
// does at queue time); commands in different slots are queued, and EXEC answers CROSSSLOT (as Redis does when it
// checks the whole transaction). Commands that run on every master (KEYS, FLUSHALL, SCAN, ...) are refused: in a
// transaction they would run on one master only.
func (c *client) clusterQueueable(cmd *Command, tc *command) bool {
	if tc.cluster.fans() && (tc.class == classForward || tc.class == classWrite) {
		c.tx.dirty = true
		c.errorReply("ERR '" + tc.name + "' inside MULTI is not supported by featcache in front of a Redis Cluster: " +
			"it runs on every master")
		return false
	}
	slot, ok := c.commandSlot(cmd.Args, tc)
	switch {
	case !ok:
		c.tx.dirty = true
		c.errorReply(crossSlotError)
		return false
	case slot == upstream.NoSlot:
	case c.tx.slot == upstream.NoSlot:
		c.tx.slot = slot
	case slot != c.tx.slot:
		c.tx.crossSlot = true
	}
	return true
}

// appendQueued adds an accepted command to the local MULTI queue and answers +QUEUED. The queue is one request to
// the upstream at EXEC, so limits.max_request_bytes bounds it: a command that would exceed it is refused and makes
// EXEC abort.
func (c *client) appendQueued(cmd *Command, tc *command) {
	if size := len(c.tx.queue) + commandSize(cmd); int64(size) > c.srv.opt.Config.Limits.MaxRequestBytes {
		c.tx.dirty = true
		c.errorReply("ERR transaction too large for featcache (limits.max_request_bytes)")
		return
	}
	c.tx.queue = appendRequest(c.tx.queue, cmd)
	c.tx.queued++
	if isWrite(tc) {
		c.tx.rememberWrite(cmd.Args, tc)
	}
	c.simpleReply("QUEUED")
}

// commandSize is the length of cmd's RESP encoding.
func commandSize(cmd *Command) int {
	if cmd.Raw != nil {
		return len(cmd.Raw)
	}
	n := 16
	for _, a := range cmd.Args {
		n += len(a) + 16
	}
	return n
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
	if c.tx.crossSlot {
		c.tx.resetQueue()
		c.errorReply(crossSlotError)
		return
	}
	if c.tx.dirty {
		c.tx.resetQueue()
		c.errorReply("EXECABORT Transaction discarded because of previous errors.")
		return
	}
	// The segment before EXEC must be answered first: its reads precede the transaction. In front of a Redis
	// Cluster the router sends MULTI ... EXEC whole to the master of the transaction's keys: MULTI was held back
	// until now, when its keys are known.
	c.runSegment()
	req := c.seg.req[:0]
	req = append(req, multiCmd...)
	req = append(req, c.tx.queue...)
	req = append(req, execCmd...)
	c.seg.req = req
	n := c.tx.queued + 2
	start := time.Now()
	err := c.srv.up.Do(c.call, req, n)
	c.srv.metrics.observeUpstream(upTransaction, start)
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
	tc := c.srv.tbl.Load().lookup(cmd.Args)
	conn, slot, ok := c.dedicatedFor(cmd, tc) // the session lives on the master of the watched keys' slot
	if !ok {
		return
	}
	c.tx.conn, c.tx.pinSlot, c.tx.fresh = conn, slot, true
	c.execPinned(cmd, tc)
	c.tx.fresh = false
}

// dedicatedFor takes a dedicated upstream connection for cmd: in front of a Redis Cluster, to the master of its
// keys' slot, which must be one (the slot is returned; NoSlot for a single node). When there is none it answers
// the client itself (CROSSSLOT, or the upstream's failure) and reports false.
func (c *client) dedicatedFor(cmd *Command, tc *command) (*upstream.Conn, int, bool) {
	slot := upstream.NoSlot
	if c.srv.clustered() {
		var ok bool
		if slot, ok = c.commandSlot(cmd.Args, tc); !ok {
			c.errorReply(crossSlotError)
			return nil, slot, false
		}
	}
	conn, err := c.srv.up.DedicatedSlot(slot)
	if err != nil {
		c.srv.stats.Errors.Add(1)
		c.errorReply(upstreamErrorText(err))
		return nil, slot, false
	}
	return conn, slot, true
}

// cmdUnwatch outside a WATCH session has nothing to release. Inside MULTI, Redis queues UNWATCH like any other
// command, and so does featcache.
func (c *client) cmdUnwatch(cmd *Command) {
	if c.tx.multi {
		c.appendQueued(cmd, c.srv.tbl.Load().lookup(cmd.Args))
		return
	}
	c.simpleReply("OK")
}

// execPinned runs a command in a WATCH session: on the client's pinned connection, verbatim, and relays its reply.
// Inside the session's MULTI, Redis queues the commands and checks them itself. Commands featcache answers or
// refuses get the replies they get outside a session; inside the MULTI, those featcache cannot queue make EXEC
// abort, as in a transaction without WATCH. The session ends, and the connection goes back to the pool, when
// EXEC or DISCARD end its MULTI or UNWATCH outside MULTI leaves it without state (EXEC or DISCARD without MULTI
// are errors that keep the WATCH, as in Redis).
func (c *client) execPinned(cmd *Command, tc *command) {
	name := ""
	if tc != nil {
		name = tc.name
	}
	if tc != nil && !c.execPinnedLocally(cmd, tc) {
		return
	}
	if c.srv.clustered() && tc != nil && !c.clusterPinnable(cmd, tc) {
		return
	}
	if c.tx.multi && name == "exec" && c.tx.dirty {
		// Redis has queued the rest; dropping the connection drops its MULTI and WATCH state with it.
		c.tx.close()
		c.errorReply("EXECABORT Transaction discarded because of previous errors.")
		return
	}
	c.runSegment()
	req := appendRequest(c.seg.req[:0], cmd)
	c.seg.req = req
	var d time.Duration
	blocks := false
	if tc != nil && tc.class == classBlocking && !c.tx.multi {
		d, blocks = blockingTimeout(cmd.Args, tc)
	}
	var reply []byte
	var err error
	if blocks {
		// Blocking as outside a session: bounded by its own timeout only, and given up when the client leaves.
		var overall time.Time
		if d > 0 {
			overall = time.Now().Add(d + blockingSlack + c.srv.up.Timeout())
		}
		start := time.Now()
		reply, err = c.waitBlocked(c.tx.conn, req, overall)
		c.srv.metrics.observeUpstream(upBlocking, start)
	} else {
		start := time.Now()
		if err = c.tx.conn.Do(c.call, req, 1, c.seg.now.Add(c.srv.up.Timeout())); err == nil {
			reply = c.call.Frame(0)
			if c.tx.fresh && c.srv.clustered() {
				reply, err = c.followMoved(req, reply)
			}
		}
		c.srv.metrics.observeUpstream(upPinned, start)
	}
	c.seg.req = c.seg.req[:0]
	c.srv.stats.Forwarded.Add(1)
	if err != nil {
		// The session's state is lost with the connection: Redis would have dropped it too. A write, or an EXEC,
		// may have been applied all the same.
		if tc != nil && isWrite(tc) && !c.tx.multi {
			c.afterWrite(cmd.Args, tc)
		}
		if name == "exec" {
			for _, w := range c.tx.writes {
				c.afterWrite(w.args, w.tc)
			}
		}
		c.tx.close()
		c.srv.stats.Errors.Add(1)
		c.errorReply(upstreamErrorText(err))
		return
	}
	wasMulti := c.tx.multi
	switch {
	case name == "multi" && bytes.Equal(reply, okReply):
		c.tx.multi = true
	case c.tx.multi && name != "exec" && name != "discard" && tc != nil && isWrite(tc):
		c.tx.rememberWrite(cmd.Args, tc)
	case !c.tx.multi && tc != nil && isWrite(tc):
		c.afterWrite(cmd.Args, tc)
	}
	c.rawReply(reply)
	if wasMulti && (name == "exec" || name == "discard") || !wasMulti && name == "unwatch" {
		for _, w := range c.tx.writes {
			c.afterWrite(w.args, w.tc)
		}
		c.tx.resetQueue()
		c.tx.conn.Release()
		c.tx.conn = nil
	}
}

// clusterPinnable applies Redis Cluster's rules to a command of a WATCH session, and reports whether it is to be
// sent on the session's connection. A command that runs on every master runs so (over shared connections, outside
// the session) unless it is inside the session's MULTI, where it is refused; a keyed command must be in the
// session's slot, or it gets CROSSSLOT (inside MULTI, EXEC then aborts).
func (c *client) clusterPinnable(cmd *Command, tc *command) bool {
	if tc.cluster.fans() && (tc.class == classForward || tc.class == classWrite) {
		if c.tx.multi {
			c.tx.dirty = true
			c.errorReply("ERR '" + tc.name + "' inside MULTI is not supported by featcache in front of a Redis " +
				"Cluster: it runs on every master")
			return false
		}
		c.execCluster(cmd, tc)
		return false
	}
	if slot, ok := c.commandSlot(cmd.Args, tc); !ok || slot != upstream.NoSlot && slot != c.tx.pinSlot {
		if c.tx.multi {
			c.tx.dirty = true
		}
		c.errorReply(crossSlotError)
		return false
	}
	return true
}

// followMoved follows a MOVED reply to a WATCH session's first command: featcache's slot map was behind, so the
// session moves to the slot's new master and the command is sent there (a few times at most). Other replies,
// ASK included (the slot is being migrated: the client sees Redis's error and retries), are returned as they are.
func (c *client) followMoved(req, reply []byte) ([]byte, error) {
	cl := c.srv.up.Cluster()
	for tries := 0; tries < 3 && bytes.HasPrefix(reply, []byte("-MOVED ")); tries++ {
		next, _, ok, err := cl.Redirect(reply, c.tx.conn)
		if !ok {
			break
		}
		c.tx.conn.Close()
		c.tx.conn = next
		if err != nil {
			return nil, err
		}
		if err := next.Do(c.call, req, 1, time.Now().Add(c.srv.up.Timeout())); err != nil {
			return nil, err
		}
		reply = c.call.Frame(0)
	}
	return reply, nil
}

// execPinnedLocally answers, inside a WATCH session, the commands that featcache answers or refuses itself, and
// reports whether the command is instead to be sent on the pinned connection.
func (c *client) execPinnedLocally(cmd *Command, tc *command) (forward bool) {
	switch tc.class {
	case classLocal, classAdmin:
		switch {
		case tc.name == "reset" || tc.name == "quit":
			c.tx.close()
		case c.tx.multi && (tc.name == "ping" || tc.name == "echo"):
			return true // queued by Redis, as in a transaction without WATCH
		case c.tx.multi:
			c.tx.dirty = true
			c.errorReply("ERR '" + tc.name + "' inside MULTI is not supported by featcache")
			return false
		case tc.info != nil && !tc.info.ArityOK(len(cmd.Args)):
			c.errorReply("ERR wrong number of arguments for '" + tc.name + "' command")
			return false
		}
		tc.local(c, cmd.Args)
		return false
	case classDenied, classRefused:
		if c.tx.multi {
			c.tx.dirty = true
		}
		c.refuse(tc)
		return false
	case classSubscribe:
		if c.tx.multi {
			c.tx.dirty = true
			c.errorReply("ERR '" + tc.name + "' inside MULTI is not supported by featcache")
			return false
		}
		c.errorReply("ERR SUBSCRIBE while WATCH is active is not supported by featcache")
		return false
	}
	return true
}

// refuse answers a denied or refused command with the error exec gives it outside a session.
func (c *client) refuse(tc *command) {
	c.srv.stats.Refused.Add(1)
	if tc.class == classDenied {
		c.errorReply("ERR command '" + tc.name + "' is disabled by featcache (commands.deny)")
		return
	}
	c.errorReply("ERR '" + tc.name + "' is not supported by featcache: it would change a shared upstream connection")
}

// isWrite reports whether a command may change keys: a write, or a blocking command flagged write (BLPOP, BLMOVE).
func isWrite(tc *command) bool {
	return tc.class == classWrite || tc.class == classBlocking && tc.info != nil && tc.info.Flags.Has(FlagWrite)
}

var okReply = []byte("+OK\r\n")

// blocking runs a blocking command on a dedicated connection. upstream.timeout does not cut it short: the wait is
// bounded by the command's own timeout (plus blockingSlack and upstream.timeout), and a timeout of 0 waits as long
// as Redis would. While it waits, featcache watches the client connection; if the client leaves, the dedicated
// connection is closed, which makes Redis drop the blocked command.
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
	conn, _, ok := c.dedicatedFor(cmd, tc)
	if !ok {
		return
	}
	req := appendRequest(c.seg.req[:0], cmd)
	c.seg.req = req
	c.srv.stats.Forwarded.Add(1)
	var overall time.Time
	if d > 0 {
		overall = time.Now().Add(d + blockingSlack + c.srv.up.Timeout())
	}
	start := time.Now()
	reply, err := c.waitBlocked(conn, req, overall)
	if c.srv.clustered() {
		conn, reply, err = c.followBlocked(conn, req, reply, err, overall)
	}
	c.srv.metrics.observeUpstream(upBlocking, start)
	c.seg.req = c.seg.req[:0]
	if tc.info != nil && tc.info.Flags.Has(FlagWrite) {
		c.afterWrite(cmd.Args, tc)
	}
	if err != nil {
		if conn != nil {
			conn.Close()
		}
		c.srv.stats.Errors.Add(1)
		c.errorReply(upstreamErrorText(err))
		return
	}
	conn.Release()
	c.rawReply(reply)
}

// followBlocked follows MOVED and ASK replies to a blocking command in front of a Redis Cluster (a few times at
// most): the command is sent again on a dedicated connection to the node the reply names, after ASKING for ASK.
// It returns the connection the last reply came on (nil when no connection to the node could be had).
func (c *client) followBlocked(conn *upstream.Conn, req, reply []byte, err error, overall time.Time) (*upstream.Conn, []byte, error) {
	cl := c.srv.up.Cluster()
	for tries := 0; tries < 3 && err == nil; tries++ {
		next, asking, ok, rerr := cl.Redirect(reply, conn)
		if !ok {
			break
		}
		conn.Release() // a redirect leaves no state on the connection
		if rerr != nil {
			return nil, nil, rerr
		}
		conn = next
		if asking {
			if err = conn.Do(c.call, askingCmd, 1, time.Now().Add(c.srv.up.Timeout())); err != nil {
				break
			}
		}
		reply, err = c.waitBlocked(conn, req, overall)
	}
	return conn, reply, err
}

var askingCmd = upstream.AppendCommand(nil, "ASKING")

// blockingSlack is how long featcache waits for Redis's answer past a blocking command's own timeout, on top of
// upstream.timeout: Redis notices an expired timeout on a tick of its event loop, up to one server cron period
// late (1/hz: 100 ms by default, 1 s at the lowest hz), and answers then.
const blockingSlack = time.Second

// waitBlocked writes req and reads its one reply, until overall (zero: as long as it takes). While it waits, the
// client socket is watched: when the client leaves, conn is closed at once, so that Redis drops the blocked
// command before it can hand it an element nobody would receive.
func (c *client) waitBlocked(conn *upstream.Conn, req []byte, overall time.Time) ([]byte, error) {
	if err := conn.Write(req); err != nil {
		return nil, err
	}
	stop := c.watchPeer(conn)
	reply, err := conn.ReadFrame(c.call.Replies[:0], overall)
	if stop() {
		return nil, errClientGone
	}
	if err != nil {
		return nil, err
	}
	c.call.Replies = reply
	return reply, nil
}

// watchPeer watches the client socket from another goroutine while the client goroutine waits upstream, and closes
// conn as soon as the socket reads as EOF or fails (or featcache closes it). It peeks and never consumes: bytes
// the client pipelined stay for the client goroutine; a close behind them (or behind a TLS close_notify alert) is
// seen from the TCP state (peerFinished). stop ends the watch and reports whether the client had gone.
func (c *client) watchPeer(conn *upstream.Conn) (stop func() (gone bool)) {
	nc := c.nc
	if tc, ok := nc.(*tls.Conn); ok {
		// Peek at the TCP connection under TLS: bytes there are records, and EOF or an error is what matters.
		nc = tc.NetConn()
	}
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return func() bool { return false }
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return func() bool { return false }
	}
	var left atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		var b [1]byte
		err := raw.Read(func(fd uintptr) bool {
			n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			switch {
			case err == syscall.EAGAIN || err == syscall.EINTR:
				return false // nothing new: wait for the socket's next event
			case err == nil && n > 0 && !peerFinished(int(fd)):
				return false // pipelined bytes, the client still there: wait for the socket's next event
			}
			left.Store(true) // EOF or a socket error
			return true
		})
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			left.Store(true) // the client connection was closed on featcache's side (server shutdown)
		}
		if left.Load() {
			conn.Close()
		}
	}()
	return func() bool {
		c.nc.SetReadDeadline(time.Unix(1, 0)) // ends the watcher's wait; the client goroutine is not reading
		<-done
		c.nc.SetReadDeadline(c.deadline)
		return left.Load()
	}
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
	on                         bool          // subscribed mode, owned by the client goroutine
	done                       chan struct{} // closed by close
	exited                     chan struct{} // closed when the pump has returned: it writes nothing more
	closeOnce                  sync.Once
}

func (p *pubsub) active() bool { return p.on }

func (c *client) subscribe(cmd *Command, tc *command) {
	c.runSegment()
	if c.sub == nil {
		slot := upstream.NoSlot
		if c.srv.clustered() && tc != nil && tc.name == "ssubscribe" && len(cmd.Args) > 1 {
			// Shard channels live on the master of their slot; ordinary channels are heard on every node.
			slot = int(upstream.Slot(cmd.Args[1]))
		}
		conn, err := c.srv.up.DedicatedSlot(slot)
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
			exited:     make(chan struct{}),
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
		// A frame the pump read before the close must not reach the client after the reply below.
		<-p.exited
		c.sub = nil
		tc.local(c, cmd.Args)
		return
	}
	if tc != nil && (tc.class == classDenied || tc.class == classRefused) {
		// Never sent upstream, not even for Redis to refuse in subscribed mode. The refusal must follow the replies
		// of the commands before it, which the pump writes: a marker PING's reply, seen by the pump, says it has
		// written them.
		c.runSegment()
		c.flush()
		if err := p.conn.Write(upstream.AppendArgs(nil, [][]byte{[]byte("PING"), p.marker})); err == nil {
			select {
			case <-p.markerSeen:
			case <-p.done:
			case <-time.After(c.srv.up.Timeout()):
			}
		}
		c.refuse(tc)
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
		timer := time.NewTimer(c.srv.up.Timeout())
		defer timer.Stop()
		select {
		case <-p.markerSeen:
			if p.count.Load() == 0 {
				p.on = false
			}
		case <-p.done:
			c.sub = nil
		case <-timer.C:
			// Redis did not answer within upstream.timeout: the session ends with its connection, which drops the
			// subscriptions in Redis too, and the client is told.
			p.close()
			<-p.exited
			c.sub = nil
			c.srv.stats.Errors.Add(1)
			c.errorReply(upstreamErrorText(upstream.ErrTimeout))
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
	defer close(p.exited)
	defer p.close()
	var frame, out []byte
	for {
		var err error
		frame, err = p.conn.ReadFrame(frame[:0], time.Time{})
		if err != nil {
			p.lost()
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
		marked := false
		for p.conn.Buffered() {
			if frame, err = p.conn.ReadFrame(frame[:0], time.Time{}); err != nil {
				break
			}
			if n, ok := subscriptionCount(frame); ok {
				p.count.Store(n)
			}
			if p.isMarker(frame) {
				marked = true
				continue
			}
			out = append(out, frame...)
		}
		if !p.c.send(out) {
			return
		}
		if marked {
			// Only now: the marker says the frames before it reached the client, and they were in out.
			select {
			case p.markerSeen <- struct{}{}:
			default:
			}
		}
		if err != nil {
			p.lost()
			return
		}
		if cap(out) > retainBytes {
			out = nil
		}
	}
}

// isMarker recognises the reply to the marker PING, in subscribed form (*2 pong marker) or plain ($marker).
func (p *pubsub) isMarker(frame []byte) bool {
	return bytes.HasSuffix(frame, append(append([]byte("\r\n"), p.marker...), '\r', '\n')) &&
		(bytes.HasPrefix(frame, []byte("*2\r\n$4\r\npong\r\n$")) || frame[0] == '$')
}

// lost ends the client's connection when its subscriptions' upstream connection failed (Redis went away, or the
// primary moved in a failover) while it is subscribed: the client sees its connection close, as it would with
// Redis, and subscribes again when it reconnects, rather than staying connected and subscribed to nothing. A
// session the client goroutine ended (QUIT, RESET, a timeout, the client leaving) has closed done first.
func (p *pubsub) lost() {
	select {
	case <-p.done:
	default:
		if p.count.Load() > 0 {
			closeRaw(p.c.nc)
		}
	}
}

func (p *pubsub) close() {
	p.closeOnce.Do(func() {
		close(p.done) // first: the pump's read fails next, and must know the session was ended on purpose
		p.conn.Close()
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
