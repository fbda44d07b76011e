package proxy

import (
	"strings"

	"featcache/internal/commands"
	"featcache/internal/resp"
	"featcache/upstream"
)

// txState is a client's transaction state.
//
// In front of a single node, Redis itself runs every transaction, so every reply is Redis's own: +QUEUED and the
// queue-time errors (unknown command, arity, OOM, BUSY, ...), EXECABORT and EXEC's array. featcache forwards MULTI
// and the commands after it into the client's segment (handler.go) and decides where they travel only when the
// segment must be sent: a transaction whose EXEC (or DISCARD) is in the segment goes contiguous on a shared
// connection, MULTI to EXEC in one write (a client's pipelined MULTI ... EXEC, as redis-py's transactional
// pipeline sends it); a transaction still open then (an interactive MULTI, EXEC not received yet) is pinned to a
// dedicated connection from its MULTI on, until EXEC, DISCARD or RESET. Commands that would change the connection
// they run on (featcache's local commands but PING and ECHO, CACHE, denied and refused commands, the SUBSCRIBE
// family) are not queued: featcache answers them with an error and EXEC aborts, as Redis aborts after a queue-time
// error. The keys of queued writes are invalidated at EXEC, before its reply, whatever EXEC answers.
//
// WATCH pins the client to a dedicated upstream connection until EXEC, DISCARD, UNWATCH or RESET: every command,
// reads included, goes there verbatim, since the watched keys' state lives on that connection. A MULTI inside such a
// session lives there too.
//
// In front of a Redis Cluster, where a transaction must reach the master of its keys, MULTI is kept by featcache
// instead: queued commands are checked against the command table (unknown command, wrong arity), then EXEC sends
// MULTI, the queue and EXEC as one request that the router sends whole to that master, and relays EXEC's reply.
// MULTI's and the queued commands' replies are holes (holeQueued) that take the master's replies when EXEC comes
// in the same read, and featcache's +OK and +QUEUED when the client waits for them.
type txState struct {
	multi bool // inside MULTI
	dirty bool // featcache refused a command of the transaction: EXEC aborts
	// open: the transaction's MULTI is in the client's segment and not sent yet; if the segment has to go before
	// EXEC arrives, the transaction is pinned to a dedicated connection (sendSegment).
	open bool
	// lost is why the pinned connection failed inside MULTI: the transaction is gone upstream, so nothing after it is
	// sent and EXEC aborts.
	lost error
	// watchLost: a WATCH session ended with its connection failing; the next EXEC answers as for a watched key that
	// changed (*-1), since the client believes its keys watched. UNWATCH, EXEC, DISCARD and RESET clear it.
	watchLost bool

	queued     int       // commands queued in MULTI
	writes     []txWrite // queued writes, invalidated at EXEC
	arena      []byte    // copies of the queued writes' arguments
	writesOver bool      // the queued writes' arguments passed limits.max_request_bytes: EXEC flushes the tier

	conn *upstream.Conn // pinned connection: a WATCH session, or an interactive MULTI

	// In front of a Redis Cluster: queue holds the queued commands, RESP encoded; slot is the slot of the keyed
	// commands queued so far (upstream.NoSlot while none), and crossSlot says two of them differ, which makes EXEC
	// answer CROSSSLOT as Redis does. pinSlot is the slot of a WATCH session, which every keyed command of the
	// session must share; fresh is true while the session's first WATCH runs (a MOVED then moves the session to the
	// slot's new master).
	queue     []byte
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
	t.multi, t.dirty, t.open, t.lost = false, false, false, nil
	t.slot, t.crossSlot = upstream.NoSlot, false
	t.queue, t.queued = t.queue[:0], 0
	t.writes, t.arena, t.writesOver = t.writes[:0], t.arena[:0], false
}

// close drops the pinned connection: its WATCH or MULTI state dies with it.
func (t *txState) close() {
	if t.conn != nil {
		t.conn.Close()
		t.conn = nil
	}
	t.resetQueue()
	t.watchLost = false
}

// rememberWrite copies a queued write's arguments so they survive the read buffer. Past maxBytes of arguments it
// keeps none: EXEC then flushes the local tier instead, which covers them all in bounded memory.
func (t *txState) rememberWrite(args [][]byte, tc *command, maxBytes int64) {
	if t.writesOver {
		return
	}
	start := len(t.arena)
	for _, a := range args {
		t.arena = append(t.arena, a...)
	}
	if int64(len(t.arena)) > maxBytes {
		t.writesOver = true
		t.writes, t.arena = nil, nil
		return
	}
	copied := make([][]byte, len(args))
	off := start
	for i, a := range args {
		copied[i] = t.arena[off : off+len(a) : off+len(a)]
		off += len(a)
	}
	t.writes = append(t.writes, txWrite{args: copied, tc: tc})
}

// flushAll stands for the queued writes once there were too many to remember: the whole tier is flushed.
var flushAll = &command{name: "flushall", class: classWrite, after: afterFlush}

var (
	discardCmd = resp.AppendCommand(nil, "DISCARD")
	unwatchCmd = resp.AppendCommand(nil, "UNWATCH")
)

// cmdMulti starts a transaction. Its MULTI opens a segment of its own, so that what the client sent before it is
// not held back with it (or pinned with it).
func (c *client) cmdMulti(cmd *resp.Command) {
	if c.srv.clustered() {
		c.clusterMulti()
		return
	}
	c.runSegment()
	c.tx.resetQueue()
	c.tx.multi, c.tx.open = true, true
	c.srv.stats.Forwarded.Add(1)
	c.seg.addForward(cmd, nil) // in front of a single node: nothing to route
	c.publish()
}

// queue handles a command inside MULTI (QUIT and RESET aside): it is forwarded into the segment, behind the MULTI,
// unless featcache must answer it itself.
func (c *client) queue(cmd *resp.Command, tc *command) {
	if c.srv.clustered() {
		c.clusterQueue(cmd, tc)
		return
	}
	if tc != nil {
		if tc.class == classTx {
			if msg := rejection(cmd.Args, tc); msg != "" {
				// Redis refuses it before running it, so featcache must not send an EXEC or DISCARD that Redis
				// would not take as the end of the transaction: an EXEC refused so discards the transaction (Redis
				// says why), anything else stays queued and makes EXEC abort.
				if tc.name == "exec" {
					c.abandonTx()
					c.errorReply("EXECABORT Transaction discarded because of: " + strings.TrimPrefix(msg, "ERR "))
					return
				}
				c.tx.dirty = true
				c.errorReply(msg)
				return
			}
		}
		switch tc.name {
		case "exec":
			c.execTx(cmd)
			return
		case "discard":
			c.discardTx(cmd)
			return
		case "multi":
			// Redis answers this without queueing and without aborting; a second MULTI must not reach a shared
			// connection, where it would start a transaction that outlives this one.
			c.errorReply("ERR MULTI calls can not be nested")
			return
		case "watch":
			// Likewise, and a WATCH sent on would leave watched keys behind on the connection.
			c.errorReply("ERR WATCH inside MULTI is not allowed")
			return
		}
		if !c.queueable(cmd, tc) {
			c.tx.dirty = true
			return
		}
	}
	if c.tx.lost != nil {
		c.tx.dirty = true
		c.srv.stats.Errors.Add(1)
		c.errorReply(upstreamErrorText(c.tx.lost))
		return
	}
	c.srv.stats.Forwarded.Add(1)
	c.seg.addForward(cmd, tc.meta())
	c.tx.queued++
	c.publish()
	if tc != nil && isWrite(tc) {
		c.tx.rememberWrite(cmd.Args, tc, c.srv.opt.Config.Limits.MaxRequestBytes)
	}
	if c.seg.full() {
		c.runSegment()
	}
}

// queueable reports whether a command may be queued in a transaction; if not, it has answered the client. What
// featcache answers itself would reach Redis, and change the connection the transaction runs on, at EXEC:
// connection commands but PING and ECHO, CACHE, the SUBSCRIBE family, and what featcache refuses anyway. Redis's
// own checks come first for them, as Redis makes them at queue time.
func (c *client) queueable(cmd *resp.Command, tc *command) bool {
	if tc.class != classDenied && tc.info != nil && tc.info.Flags.Has(commands.FlagNoMulti) {
		return true // Redis refuses it at queue time, before it could run
	}
	switch tc.class {
	case classLocal:
		if tc.name == "ping" || tc.name == "echo" {
			return true
		}
	case classAdmin, classSubscribe:
	case classDenied, classRefused:
		c.refuse(cmd, tc)
		return false
	default:
		return true
	}
	if msg := rejection(cmd.Args, tc); msg != "" {
		c.errorReply(msg)
		return false
	}
	c.srv.stats.Errors.Add(1)
	c.errorReply("ERR '" + tc.name + "' inside MULTI is not supported by featcache")
	return false
}

// execTx sends EXEC behind the queued commands, invalidates the keys of the queued writes (whatever EXEC answers:
// it may have applied them) and relays EXEC's reply; the transaction, and a WATCH session with it, ends. When
// featcache refused a command of the transaction, or lost its connection, a DISCARD goes instead and the client
// gets EXECABORT; after a lost WATCH session, *-1.
func (c *client) execTx(cmd *resp.Command) {
	switch {
	case c.tx.lost != nil:
		c.errorReply("EXECABORT Transaction discarded because of previous errors.")
	case c.tx.dirty || c.tx.watchLost:
		// Redis has queued the rest: DISCARD drops it (its reply is not the client's), and the WATCH with it.
		c.seg.req.AppendRaw(upstream.NoSlot, discardCmd)
		if c.tx.dirty {
			c.errorReply("EXECABORT Transaction discarded because of previous errors.")
		} else {
			c.nullArrayReply()
		}
	default:
		c.srv.stats.Forwarded.Add(1)
		c.seg.addForward(cmd, nil)
	}
	c.queuedWrites()
	c.tx.open = false // closed in the segment: it may travel on a shared connection
	c.runSegment()
	c.endTx()
}

// discardTx sends DISCARD behind the queued commands and relays its reply; the transaction, and a WATCH session
// with it, ends.
func (c *client) discardTx(cmd *resp.Command) {
	if c.tx.lost != nil {
		c.simpleReply("OK")
	} else {
		c.srv.stats.Forwarded.Add(1)
		c.seg.addForward(cmd, nil)
	}
	c.queuedWrites()
	c.tx.open = false
	if c.tx.conn != nil {
		c.runSegment() // the replies come from the pinned connection, which goes back to the pool after them
	}
	c.endTx()
}

// queuedWrites hands the queued writes to the segment, which invalidates their keys once the upstream answered,
// before the replies go out. They are invalidated after DISCARD too: had Redis refused the MULTI, the commands
// after it would have run on their own.
func (c *client) queuedWrites() {
	if c.trk != nil {
		for _, w := range c.tx.writes {
			c.trackWrite(w.args, w.tc) // a NOLOOP client's writes run now
		}
	}
	if c.tx.writesOver {
		c.seg.writes = append(c.seg.writes, pendingWrite{tc: flushAll})
		return
	}
	for _, w := range c.tx.writes {
		c.seg.writes = append(c.seg.writes, pendingWrite{args: w.args, tc: w.tc})
	}
}

// queuedWritesNow invalidates the keys of the queued writes at once: the per-command paths of a WATCH session and
// of a transaction featcache queued in front of a Redis Cluster.
func (c *client) queuedWritesNow() {
	if c.tx.writesOver {
		c.afterWrite(nil, flushAll)
	}
	for _, w := range c.tx.writes {
		c.afterWrite(w.args, w.tc)
	}
}

// endTx ends the transaction once its EXEC or DISCARD has been answered: the pinned connection, which holds no
// state any more, goes back to the pool.
func (c *client) endTx() {
	if c.tx.conn != nil {
		c.tx.conn.Release()
		c.tx.conn = nil
	}
	c.tx.resetQueue()
	c.tx.watchLost = false
	c.publish()
}

// abandonTx ends the transaction and the WATCH session without running them, as RESET and QUIT do, after the
// commands queued before have had their replies: the transaction is closed with a DISCARD, the WATCH session with
// an UNWATCH, whose replies are not the client's, and a pinned connection then goes back to the pool.
func (c *client) abandonTx() {
	switch {
	case c.tx.open || c.tx.conn != nil && c.tx.multi && c.tx.lost == nil:
		c.seg.req.AppendRaw(upstream.NoSlot, discardCmd)
		c.tx.open = false
	case c.tx.conn != nil && !c.tx.multi:
		c.seg.req.AppendRaw(upstream.NoSlot, unwatchCmd)
	}
	if c.tx.conn != nil {
		c.runSegment()
	}
	if c.tx.conn != nil {
		c.tx.conn.Release()
		c.tx.conn = nil
	}
	c.tx.close()
	c.publish()
}

// sendSegment sends the segment's payload and waits for its replies into c.call: on the client's pinned connection
// when it has one, or needs one (a transaction still open when its segment has to go is pinned from its MULTI
// on), else over a shared connection. A pinned connection that fails is closed: a transaction on it is lost
// (EXEC aborts), a WATCH session too (the next EXEC answers *-1).
func (c *client) sendSegment() error {
	s := &c.seg
	s.tx = c.tx.multi // timed as a transaction
	if c.tx.open {
		c.tx.open = false
		conn, err := c.srv.up.DedicatedSlot(upstream.NoSlot)
		if err == nil {
			err = c.prepareConn(conn)
		}
		if err != nil {
			c.tx.lost = err
			c.call.Replies, c.call.Ends, c.call.Err = c.call.Replies[:0], c.call.Ends[:0], err
			return err
		}
		c.tx.conn = conn
	}
	if c.tx.conn == nil {
		return c.sendShared()
	}
	err := c.waitPinnedN(c.tx.conn, s.req.Bytes(), s.req.Len())
	if err != nil {
		c.tx.conn.Close()
		c.tx.conn = nil
		if c.tx.multi {
			c.tx.lost = err
		}
		c.tx.watchLost = true
	}
	return err
}

// clusterMulti starts a transaction kept by featcache, in front of a Redis Cluster.
func (c *client) clusterMulti() {
	if c.tx.multi {
		c.errorReply("ERR MULTI calls can not be nested")
		return
	}
	c.tx.resetQueue()
	c.tx.multi = true
	c.seg.addHole(hole{kind: holeQueued})
	c.publish()
}

// clusterQueue handles a command inside MULTI in front of a Redis Cluster: queued by featcache with Redis's
// queue-time checks, or, inside a WATCH session, sent to the session's connection.
func (c *client) clusterQueue(cmd *resp.Command, tc *command) {
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
	case tc.info != nil && tc.info.Flags.Has(commands.FlagNoMulti):
		c.tx.dirty = true
		c.errorReply("ERR Command not allowed inside a transaction")
		return
	case !c.queueable(cmd, tc):
		c.tx.dirty = true
		return
	case !c.clusterQueueable(cmd, tc):
		return
	}
	c.appendQueued(cmd, tc)
}

// clusterQueueable applies Redis Cluster's rules to a command queued in a transaction, which runs whole on one
// master: a command whose own keys span slots is refused with CROSSSLOT at once and makes EXEC abort (as Redis
// does at queue time); commands in different slots are queued, and EXEC answers CROSSSLOT (as Redis does when it
// checks the whole transaction). Commands that run on every master (KEYS, FLUSHALL, SCAN, ...) are refused: in a
// transaction they would run on one master only.
func (c *client) clusterQueueable(cmd *resp.Command, tc *command) bool {
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

// appendQueued adds an accepted command to the local MULTI queue (in front of a Redis Cluster); its reply is a
// hole, +QUEUED or the master's reply (holeQueued). The queue is one request to the upstream at EXEC, so limits.max_request_bytes bounds it: a command that
// would exceed it is refused and makes EXEC abort.
func (c *client) appendQueued(cmd *resp.Command, tc *command) {
	if size := len(c.tx.queue) + commandSize(cmd); int64(size) > c.srv.opt.Config.Limits.MaxRequestBytes {
		c.tx.dirty = true
		c.errorReply("ERR transaction too large for featcache (limits.max_request_bytes)")
		return
	}
	c.tx.queue = appendRequest(c.tx.queue, cmd)
	c.tx.queued++
	if isWrite(tc) {
		c.tx.rememberWrite(cmd.Args, tc, c.srv.opt.Config.Limits.MaxRequestBytes)
	}
	c.seg.addHole(hole{kind: holeQueued, frame: c.tx.queued})
}

// commandSize is the length of cmd's RESP encoding.
func commandSize(cmd *resp.Command) int {
	if cmd.Raw != nil {
		return len(cmd.Raw)
	}
	n := 16
	for _, a := range cmd.Args {
		n += len(a) + 16
	}
	return n
}

// cmdExec outside MULTI is an error; in front of a Redis Cluster it also runs the transaction featcache queued.
func (c *client) cmdExec(cmd *resp.Command) {
	if !c.tx.multi {
		c.errorReply("ERR EXEC without MULTI")
		return
	}
	defer c.publish()
	if c.tx.watchLost {
		c.tx.resetQueue()
		c.tx.watchLost = false
		c.nullArrayReply()
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
	// The router sends MULTI ... EXEC whole to the master of the transaction's keys, in the segment's payload
	// behind what the client sent before MULTI: MULTI was held back until now, when its keys are known. Its
	// replies and the queued commands' are the master's when they are still to be written (a pipelined
	// transaction, as redis-py sends one), and EXEC's reply is relayed as Redis wrote it. A RESP3 client's
	// transaction runs between HELLO 3 and HELLO 2. The queued writes' keys are invalidated after the round trip,
	// before the replies.
	s := &c.seg
	s.upstream3()
	s.txFrame = s.req.Len() + 1
	s.req.AppendTx(c.tx.slot, c.tx.queue, c.tx.queued)
	s.addHole(hole{kind: holeFrame, frame: s.req.Len() - 1})
	s.forward = true
	c.srv.stats.Forwarded.Add(int64(c.tx.queued))
	c.queuedWrites()
	c.runSegment()
	c.tx.resetQueue()
}

// cmdDiscard outside MULTI is an error; in front of a Redis Cluster it also drops the transaction featcache
// queued.
func (c *client) cmdDiscard(cmd *resp.Command) {
	if !c.tx.multi {
		c.errorReply("ERR DISCARD without MULTI")
		return
	}
	c.tx.resetQueue()
	c.simpleReply("OK")
	c.publish()
}
