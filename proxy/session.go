package proxy

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

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
// instead: queued commands are checked against the command table (unknown command, wrong arity) and answered
// +QUEUED, then EXEC sends MULTI, the queue and EXEC as one request that the router sends whole to that master, and
// relays EXEC's reply.
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
		releaseConn(c.tx.conn, c.resp3())
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
		releaseConn(c.tx.conn, c.resp3())
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
		conn, err := c.srv.up.Dedicated()
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
	c.simpleReply("OK")
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

// appendQueued adds an accepted command to the local MULTI queue (in front of a Redis Cluster) and answers
// +QUEUED. The queue is one request to the upstream at EXEC, so limits.max_request_bytes bounds it: a command that
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
	c.simpleReply("QUEUED")
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
	// The segment before EXEC must be answered first: its reads precede the transaction. In front of a Redis
	// Cluster the router sends MULTI ... EXEC whole to the master of the transaction's keys: MULTI was held back
	// until now, when its keys are known.
	c.runSegment()
	c.seg.req.Reset()
	c.seg.req.AppendTx(c.tx.slot, c.tx.queue, c.tx.queued)
	n := c.seg.req.Len()
	start := time.Now()
	err := c.srv.up.Forward(c.call, &c.seg.req)
	c.srv.metrics.observeUpstream(upTransaction, start)
	c.srv.stats.Forwarded.Add(int64(c.tx.queued))
	c.queuedWritesNow()
	c.seg.req.Reset()
	c.tx.resetQueue()
	if c.call.Len() == n {
		c.rawReply(c.call.Frame(n - 1))
		return
	}
	c.srv.stats.Errors.Add(1)
	c.errorReply(upstreamErrorText(err))
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

func (c *client) cmdWatch(cmd *resp.Command) {
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
func (c *client) dedicatedFor(cmd *resp.Command, tc *command) (*upstream.Conn, int, bool) {
	slot := upstream.NoSlot
	if c.srv.clustered() {
		var ok bool
		if slot, ok = c.commandSlot(cmd.Args, tc); !ok {
			c.errorReply(crossSlotError)
			return nil, slot, false
		}
	}
	conn, err := c.srv.up.DedicatedSlot(slot)
	if err == nil {
		err = c.prepareConn(conn)
	}
	if err != nil {
		c.srv.stats.Errors.Add(1)
		c.errorReply(upstreamErrorText(err))
		return nil, slot, false
	}
	return conn, slot, true
}

// cmdUnwatch outside a WATCH session has nothing to release, but forgets a session lost with its connection.
// Inside MULTI (in front of a Redis Cluster) featcache queues it as Redis does.
func (c *client) cmdUnwatch(cmd *resp.Command) {
	if c.tx.multi {
		c.appendQueued(cmd, c.srv.tbl.Load().lookup(cmd.Args))
		return
	}
	c.tx.watchLost = false
	c.simpleReply("OK")
}

// execPinned runs a command in a WATCH session: on the client's pinned connection, verbatim, and relays its reply.
// Inside the session's MULTI, Redis queues the commands and checks them itself. Commands featcache answers or
// refuses get the replies they get outside a session; inside the MULTI, those featcache cannot queue make EXEC
// abort, as in a transaction without WATCH. The session ends, and the connection goes back to the pool, when
// EXEC or DISCARD end its MULTI or UNWATCH outside MULTI leaves it without state (EXEC or DISCARD without MULTI
// are errors that keep the WATCH, as in Redis).
func (c *client) execPinned(cmd *resp.Command, tc *command) {
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
	req := c.seg.request(cmd)
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
		reply, err = c.waitBlocked(c.tx.conn, req, overall, false)
		c.srv.metrics.observeUpstream(upBlocking, start)
	} else {
		start := time.Now()
		if reply, err = c.waitPinned(c.tx.conn, req); err == nil && c.tx.fresh {
			// The session's first command left no state if Redis Cluster redirected it: the connection follows
			// a MOVED to the slot's master, and the command is sent again there. ASK is not followed: the
			// session's next commands would be redirected back (Conn.Follow).
			reply, err = c.tx.conn.Follow(reply, false, func(bool) ([]byte, error) { return c.waitPinned(c.tx.conn, req) })
		}
		c.srv.metrics.observeUpstream(upPinned, start)
	}
	c.seg.req.Reset()
	c.srv.stats.Forwarded.Add(1)
	if err != nil {
		// The session's state is lost with the connection: Redis would have dropped it too. A write, or an EXEC,
		// may have been applied all the same.
		if tc != nil && isWrite(tc) && !c.tx.multi {
			c.afterWrite(cmd.Args, tc)
		}
		if name == "exec" {
			c.queuedWritesNow()
		}
		ended := c.tx.multi && (name == "exec" || name == "discard") || !c.tx.multi && name == "unwatch"
		c.tx.close()
		c.tx.watchLost = !ended
		if name == "multi" {
			// The client goes on as in a transaction (a pipelining one has sent the rest already): what follows
			// must not run outside it, unwatched. EXEC aborts.
			c.tx.multi, c.tx.lost = true, err
		}
		c.publish()
		c.srv.stats.Errors.Add(1)
		c.errorReply(upstreamErrorText(err))
		return
	}
	wasMulti := c.tx.multi
	switch {
	case name == "multi" && bytes.Equal(reply, okReply):
		c.tx.multi = true
	case c.tx.multi && name != "exec" && name != "discard" && tc != nil && isWrite(tc):
		c.tx.rememberWrite(cmd.Args, tc, c.srv.opt.Config.Limits.MaxRequestBytes)
	case !c.tx.multi && tc != nil && isWrite(tc):
		c.afterWrite(cmd.Args, tc)
	}
	c.rawReply(reply)
	if wasMulti && (name == "exec" || name == "discard") || !wasMulti && name == "unwatch" {
		c.queuedWritesNow()
		c.tx.resetQueue()
		c.tx.watchLost = false
		releaseConn(c.tx.conn, c.resp3())
		c.tx.conn = nil
	}
	if wasMulti != c.tx.multi || c.tx.conn == nil {
		c.publish()
	}
}

// clusterPinnable applies Redis Cluster's rules to a command of a WATCH session, and reports whether it is to be
// sent on the session's connection. A command that runs on every master runs so (over shared connections, outside
// the session) unless it is inside the session's MULTI, where it is refused; a keyed command must be in the
// session's slot, or it gets CROSSSLOT (inside MULTI, EXEC then aborts).
func (c *client) clusterPinnable(cmd *resp.Command, tc *command) bool {
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

// waitPinned writes req, one command, on a pinned connection and reads its reply (see waitPinnedN).
func (c *client) waitPinned(conn *upstream.Conn, req []byte) ([]byte, error) {
	if err := c.waitPinnedN(conn, req, 1); err != nil {
		return nil, err
	}
	return c.call.Frame(0), nil
}

// waitPinnedN writes req, n commands, on a pinned connection and reads their n replies into c.call, waiting as a
// direct client of Redis would: past upstream.timeout the rest of the wait watches the client socket, so that a
// client that leaves ends it, and upstream.command_timeout, if set, bounds it.
func (c *client) waitPinnedN(conn *upstream.Conn, req []byte, n int) error {
	start := time.Now()
	end := c.srv.up.CommandDeadline(start)
	first := start.Add(c.srv.up.Timeout())
	if !end.IsZero() && end.Before(first) {
		first = end
	}
	err := conn.Do(c.call, req, n, first)
	if err == nil {
		return nil
	}
	if errors.Is(err, upstream.ErrTimeout) && (end.IsZero() || time.Now().Before(end)) {
		// A slow reply: the rest of the wait watches the client.
		stop := c.watchPeer(conn)
		for err = nil; err == nil && c.call.Len() < n; {
			var reply []byte
			if reply, err = conn.ReadFrame(c.call.Replies, end); err == nil {
				c.call.Replies = reply
				c.call.Ends = append(c.call.Ends, len(reply))
			}
		}
		if stop() {
			return errClientGone
		}
		if err == nil {
			c.call.Err = nil
			return nil
		}
	}
	if errors.Is(err, upstream.ErrTimeout) {
		err = upstream.ErrCommandTimeout
	}
	c.call.Err = err
	return err
}

// execPinnedLocally answers, inside a WATCH session, the commands that featcache answers or refuses itself, and
// reports whether the command is instead to be sent on the pinned connection.
func (c *client) execPinnedLocally(cmd *resp.Command, tc *command) (forward bool) {
	switch tc.class {
	case classLocal, classAdmin:
		switch {
		case tc.name == "reset" || tc.name == "quit":
			// They end the session themselves (abandonTx).
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
		c.refuse(cmd, tc)
		return false
	case classSubscribe:
		if c.tx.multi {
			c.tx.dirty = true
			c.errorReply("ERR '" + tc.name + "' inside MULTI is not supported by featcache")
			return false
		}
		c.errorReply("ERR SUBSCRIBE while WATCH is active is not supported by featcache")
		return false
	case classMonitor:
		if !c.tx.multi {
			if msg := rejection(cmd.Args, tc); msg != "" {
				c.errorReply(msg)
			} else {
				c.errorReply("ERR MONITOR while WATCH is active is not supported by featcache")
			}
			return false
		}
	}
	return true
}

// refuse answers a denied or refused command with the error exec gives it outside a session. Redis's own checks
// come first, as Redis makes them before anything else: an unknown subcommand of a denied command, or a wrong
// number of arguments, gets Redis's error.
func (c *client) refuse(cmd *resp.Command, tc *command) {
	if msg := rejection(cmd.Args, tc); msg != "" {
		c.errorReply(msg)
		return
	}
	c.srv.stats.Refused.Add(1)
	if tc.class == classDenied {
		c.errorReply("ERR command '" + tc.name + "' is disabled by featcache (commands.deny)")
		return
	}
	c.errorReply("ERR '" + tc.name + "' is not supported by featcache: it would change a shared upstream connection")
}

// isWrite reports whether a command may change keys: a write, or a blocking command that may write (BLPOP, BLMOVE).
func isWrite(tc *command) bool {
	return tc.class == classWrite || tc.class == classBlocking && tc.info.MayWrite()
}

// blocking runs a blocking command on a dedicated connection. upstream.timeout does not cut it short: the wait is
// bounded by the command's own timeout (plus blockingSlack and upstream.timeout), and a timeout of 0 waits as long
// as Redis would. While it waits, featcache watches the client connection; if the client leaves, the dedicated
// connection is closed, which makes Redis drop the blocked command.
func (c *client) blocking(cmd *resp.Command, tc *command) {
	d, blocks := blockingTimeout(cmd.Args, tc)
	if !blocks {
		// XREAD and XREADGROUP without BLOCK do not block.
		if tc.info.MayWrite() {
			c.write(cmd, tc)
		} else {
			c.forward(cmd, tc)
		}
		return
	}
	c.runSegment()
	conn, _, ok := c.dedicatedFor(cmd, tc)
	if !ok {
		return
	}
	req := c.seg.request(cmd)
	c.srv.stats.Forwarded.Add(1)
	var overall time.Time
	if d > 0 {
		overall = time.Now().Add(d + blockingSlack + c.srv.up.Timeout())
	}
	start := time.Now()
	reply, err := c.waitBlocked(conn, req, overall, false)
	if err == nil {
		// In front of a Redis Cluster the connection follows MOVED and ASK (the command left no state), and the
		// command is sent again on it.
		reply, err = conn.Follow(reply, true, func(asking bool) ([]byte, error) {
			return c.waitBlocked(conn, req, overall, asking)
		})
	}
	c.srv.metrics.observeUpstream(upBlocking, start)
	c.seg.req.Reset()
	if tc.info.MayWrite() {
		c.afterWrite(cmd.Args, tc)
	}
	if err != nil {
		conn.Close()
		if c.info.killed.Load() {
			return // CLIENT KILL closed the connection it waited on; the client is closed without a reply
		}
		c.srv.stats.Errors.Add(1)
		c.errorReply(upstreamErrorText(err))
		return
	}
	releaseConn(conn, c.resp3())
	c.rawReply(reply)
}

var askingCmd = resp.AppendCommand(nil, "ASKING")

// blockingSlack is how long featcache waits for Redis's answer past a blocking command's own timeout, on top of
// upstream.timeout: Redis notices an expired timeout on a tick of its event loop, up to one server cron period
// late (1/hz: 100 ms by default, 1 s at the lowest hz), and answers then.
const blockingSlack = time.Second

// waitBlocked writes req and reads its one reply, until overall (zero: as long as it takes). While it waits, the
// client socket is watched: when the client leaves, conn is closed at once, so that Redis drops the blocked
// command before it can hand it an element nobody would receive. CLIENT ID goes first in the same write: with the
// connection's id in Redis, another client's CLIENT UNBLOCK can unblock this one (cmdClientUnblock). With asking
// (the command follows an ASK redirect), ASKING goes right before the command, which it is for: Redis applies it
// to the next command only, and would not to the command after CLIENT ID.
func (c *client) waitBlocked(conn *upstream.Conn, req []byte, overall time.Time, asking bool) ([]byte, error) {
	// The replies of the commands before it go out now, as Redis sends them before the command blocks.
	c.flush()
	msg := clientIDCmd[:len(clientIDCmd):len(clientIDCmd)]
	if asking {
		msg = append(msg, askingCmd...)
	}
	if err := conn.Write(append(msg, req...)); err != nil {
		return nil, err
	}
	stop := c.watchPeer(conn)
	reply, err := conn.ReadFrame(c.call.Replies[:0], overall)
	if err == nil {
		rid, ok := resp.IntegerValue(reply)
		switch {
		case ok:
			c.setBlocked(conn, rid, blockedName(req))
			reply, err = readBlocked(conn, reply[:0], overall, asking)
			c.setBlocked(nil, 0, "")
		case len(reply) > 0 && reply[0] == resp.TypeError:
			// Redis refused CLIENT ID (BUSY, LOADING, ...): it answers the command after it as it sees fit, and
			// that reply is the client's; the command cannot be unblocked by id meanwhile.
			reply, err = readBlocked(conn, reply[:0], overall, asking)
		default:
			err = fmt.Errorf("%w: CLIENT ID answered %q", resp.ErrBadFrame, reply)
		}
	}
	if stop() {
		return nil, errClientGone
	}
	if err != nil {
		return nil, err
	}
	c.call.Replies = reply
	return reply, nil
}

var clientIDCmd = resp.AppendCommand(nil, "CLIENT", "ID")

// readBlocked appends the blocking command's reply to dst, after reading ASKING's when asking: that one is not
// the client's (Redis refusing it, BUSY say, refuses the command after it too, and that reply is the client's).
func readBlocked(conn *upstream.Conn, dst []byte, overall time.Time, asking bool) ([]byte, error) {
	if asking {
		if _, err := conn.ReadFrame(dst, overall); err != nil {
			return dst, err
		}
	}
	return conn.ReadFrame(dst, overall)
}

// blockedName is the lower-case name of the command in req (one RESP command), for CLIENT LIST.
func blockedName(req []byte) string {
	if args, n := resp.ParseCommand(req, nil); n > 0 {
		return string(resp.AppendLower(nil, args[0]))
	}
	return "NULL"
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
	monitor                    bool          // a MONITOR session: the mode lasts until RESET or QUIT
	unsynced                   bool          // MONITOR: commands were forwarded since the last sync
	done                       chan struct{} // closed by close
	exited                     chan struct{} // closed when the pump has returned: it writes nothing more
	closeOnce                  sync.Once
	// hellos counts the HELLOs featcache sent on the connection (the client changed protocol while subscribed or
	// monitoring) whose replies the pump has not swallowed yet: they are not the client's.
	hellos atomic.Int32
	// bypass: a RESP3 client's command runs outside the session while it is subscribed (execBesideSubscriptions).
	bypass bool
}

func (p *pubsub) active() bool { return p.on }

func (c *client) subscribe(cmd *resp.Command, tc *command) {
	c.runSegment()
	if c.sub == nil {
		slot := upstream.NoSlot
		if c.srv.clustered() && tc != nil && tc.name == "ssubscribe" && len(cmd.Args) > 1 {
			// Shard channels live on the master of their slot; ordinary channels are heard on every node.
			slot = int(upstream.Slot(cmd.Args[1]))
		}
		conn, err := c.srv.up.DedicatedSlot(slot)
		if err == nil {
			err = c.prepareConn(conn) // a RESP3 client's messages are pushes
		}
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

// monitor starts a MONITOR session on a dedicated upstream connection of its own, never a shared one (MONITOR
// turns the connection it runs on into a stream): the pump copies Redis's +OK and then the stream to the client.
// Only what reaches Redis is in the stream: reads featcache answers from memory are not. The session lasts until
// RESET or QUIT, or until the client leaves; its connection is then closed, never reused.
func (c *client) monitor(cmd *resp.Command, tc *command) {
	c.runSegment()
	conn, err := c.srv.up.Dedicated()
	if err == nil {
		err = c.prepareConn(conn) // Redis answers the commands of a RESP3 client's session in RESP3
	}
	if err != nil {
		c.srv.stats.Errors.Add(1)
		c.errorReply(upstreamErrorText(err))
		return
	}
	p := &pubsub{
		c: c, conn: conn, monitor: true, on: true,
		channels: map[string]struct{}{}, patterns: map[string]struct{}{}, shards: map[string]struct{}{},
		marker:     []byte("featcache-monitor-" + strconv.FormatInt(c.id, 10)),
		markerSeen: make(chan struct{}, 1),
		done:       make(chan struct{}),
		exited:     make(chan struct{}),
	}
	c.sub = p
	c.publish()
	c.flush() // the replies before MONITOR come before the pump's frames
	c.srv.stats.Forwarded.Add(1)
	if err := conn.Write(appendRequest(nil, cmd)); err != nil {
		conn.Close()
		c.sub = nil
		c.publish()
		c.srv.stats.Errors.Add(1)
		c.errorReply(upstreamErrorText(err))
		return
	}
	go p.pump()
}

// execSubscribed forwards a command in subscribed mode, or in a MONITOR session; replies come back through the
// pump. QUIT and RESET are handled here: they end the session.
func (c *client) execSubscribed(cmd *resp.Command, tc *command) (done bool) {
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
		return true
	}
	if p.monitor {
		c.execMonitoring(cmd, tc)
		return true
	}
	if c.resp3() && (tc == nil || tc.class != classSubscribe) {
		// RESP3 lets a subscribed client run any command on its connection; its replies come in order with those
		// of the subscription commands before it, which the pump writes. Once it has written them (a marker PING
		// says so), the command runs as it would outside subscribed mode: a cached read from memory, a write over
		// a shared connection with its invalidations, featcache's own commands locally.
		c.syncSubscribed()
		return false
	}
	if tc != nil && (tc.class == classDenied || tc.class == classRefused) {
		// Never sent upstream, not even for Redis to refuse in subscribed mode. The refusal must follow the replies
		// of the commands before it, which the pump writes: a marker PING's reply, seen by the pump, says it has
		// written them.
		c.runSegment()
		c.flush()
		p.sync(c.srv.up.Timeout())
		c.refuse(cmd, tc)
		return true
	}
	var req []byte
	if cmd.Raw != nil {
		req = cmd.Raw
	} else {
		req = resp.AppendArgs(nil, cmd.Args)
	}
	p.model(name, cmd.Args[1:])
	c.publish()
	c.srv.stats.Forwarded.Add(1)
	if p.total() == 0 {
		req = resp.AppendArgs(append([]byte(nil), req...), [][]byte{[]byte("PING"), p.marker})
	}
	// Replies of earlier commands in this batch must reach the client before the pump's frames.
	c.runSegment()
	c.flush()
	if err := p.conn.Write(req); err != nil {
		p.close()
		c.sub = nil
		c.errorReply(upstreamErrorText(err))
		return true
	}
	p.unsynced = true
	if p.total() == 0 {
		// Leaving subscribed mode waits for Redis's confirmation as a direct client would, or at most
		// upstream.command_timeout.
		var expired <-chan time.Time
		if d := c.srv.up.CommandTimeout(); d > 0 {
			timer := time.NewTimer(d)
			defer timer.Stop()
			expired = timer.C
		}
		select {
		case <-p.markerSeen:
			if p.count.Load() == 0 {
				p.on = false
			}
		case <-p.done:
			c.sub = nil
		case <-c.srv.closing:
			p.close() // the server is closing: so is this client
			<-p.exited
			c.sub = nil
		case <-expired:
			// Redis did not answer within upstream.command_timeout: the session ends with its connection, which
			// drops the subscriptions in Redis too, and the client is told.
			p.close()
			<-p.exited
			c.sub = nil
			c.srv.stats.Errors.Add(1)
			c.errorReply(upstreamErrorText(upstream.ErrCommandTimeout))
		}
	}
	return true
}

// execMonitoring runs a command sent during a MONITOR session. featcache's own commands (connection commands,
// CACHE, denied and refused ones) are answered by featcache, after the replies of the commands forwarded before
// them; the others go to Redis on the monitoring connection, which answers them as it answers a client in MONITOR
// (keyspace commands are refused there), through the pump.
func (c *client) execMonitoring(cmd *resp.Command, tc *command) {
	p := c.sub
	if tc != nil {
		switch tc.class {
		case classLocal, classAdmin, classDenied, classRefused:
			c.runSegment()
			if p.unsynced {
				c.flush()
				p.sync(c.srv.up.Timeout())
				p.unsynced = false
			}
			switch {
			case tc.class == classDenied || tc.class == classRefused:
				c.refuse(cmd, tc)
			case rejection(cmd.Args, tc) != "":
				c.errorReply(rejection(cmd.Args, tc))
			default:
				tc.local(c, cmd.Args)
			}
			return
		}
	}
	c.runSegment()
	c.flush()
	c.srv.stats.Forwarded.Add(1)
	if err := p.conn.Write(appendRequest(nil, cmd)); err != nil {
		p.close()
		<-p.exited
		c.sub = nil
		c.publish()
		c.srv.stats.Errors.Add(1)
		c.errorReply(upstreamErrorText(err))
		return
	}
	p.unsynced = true
}

// sync waits until the pump has written the replies of everything sent on the session's connection so far: it
// sends a marker PING and waits for the pump to see its reply (or the session to end, or timeout to pass).
func (p *pubsub) sync(timeout time.Duration) {
	if err := p.conn.Write(resp.AppendArgs(nil, [][]byte{[]byte("PING"), p.marker})); err != nil {
		return
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.markerSeen:
	case <-p.done:
	case <-t.C:
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
		if p.hellos.Load() > 0 && isHelloReply(frame) {
			p.hellos.Add(-1)
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
			if p.hellos.Load() > 0 && isHelloReply(frame) {
				p.hellos.Add(-1)
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
	end := len(frame) - 2
	if end < len(p.marker) || !bytes.Equal(frame[end-len(p.marker):end], p.marker) {
		return false // a message or another reply, told apart without building anything
	}
	plain := resp.AppendBulk(nil, p.marker)
	subscribed := append(resp.AppendBulkString(resp.AppendArray(nil, 2), "pong"), plain...)
	return bytes.Equal(frame, plain) || bytes.Equal(frame, subscribed)
}

// lost ends the client's connection when its subscriptions' upstream connection failed (Redis went away, or the
// primary moved in a failover) while it is subscribed: the client sees its connection close, as it would with
// Redis, and subscribes again when it reconnects, rather than staying connected and subscribed to nothing. A
// session the client goroutine ended (QUIT, RESET, a timeout, the client leaving) has closed done first.
func (p *pubsub) lost() {
	select {
	case <-p.done:
	default:
		if p.count.Load() > 0 || p.monitor {
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

// subscriptionCount reads the count of a (un)subscribe confirmation: *3 kind channel :count, or >3 ... in RESP3.
func subscriptionCount(frame []byte) (int64, bool) {
	if len(frame) > 0 && frame[0] == resp.TypePush {
		frame = append([]byte{resp.TypeArray}, frame[1:]...) // the same elements, read as an array's
	}
	if n, _, ok := resp.ArrayHeader(frame); !ok || n != 3 {
		return 0, false // a pattern message (4 elements), a MONITOR line, a PING's reply
	}
	var buf [3][]byte
	elems, err := resp.ArrayElements(frame, buf[:0])
	if err != nil || len(elems) != 3 {
		return 0, false
	}
	if kind, _, ok := resp.BulkPayload(elems[0]); !ok || !bytes.HasSuffix(kind, []byte("subscribe")) {
		return 0, false
	}
	return resp.IntegerValue(elems[2])
}
