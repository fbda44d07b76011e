package proxy

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"featcache/internal/resp"
	"featcache/localcache"
	"featcache/upstream"
)

// replyMode is the CLIENT REPLY state.
type replyMode uint8

const (
	replyOn   replyMode = iota
	replyOff            // no replies until CLIENT REPLY ON
	replySkip           // no reply for the next command
	// replySkipping is the mode while the command that CLIENT REPLY SKIP silences runs. A CLIENT REPLY run as that
	// command replaces it: ON is answered, OFF stays, and SKIP silences the command after it too, as Redis's reply
	// flags do.
	replySkipping
)

// client is one client connection and everything that belongs to it: featcache keeps connection state (name,
// authentication, transaction, reply mode, subscriptions) here and never on a shared upstream connection.
type client struct {
	srv *Server
	nc  net.Conn
	rd  *resp.Reader
	id  int64

	wmu  sync.Mutex // serialises writes to nc between serve and the pub/sub pump
	cmds []resp.Command
	dir  direct
	lp   *loopClient // the event loop that waits for the client's batches (loop.go), nil for none

	name      []byte
	authed    bool
	reply     replyMode
	quit      bool
	draining  atomic.Bool // Shutdown began: close at the first gentle point
	stopping  atomic.Bool // Shutdown's deadline came: close at the end of the current batch
	createdAt time.Time

	// The current batch's replies (out), and the batch part waiting for its upstream round trip (seg), which holds
	// those that follow a reply waiting for it.
	replies
	// outUsed is the most of out the batch filled before a write; big what the last batch used of the buffers it
	// grew (bigBuffers).
	outUsed int
	big     bigHints

	// Scratch for snapshot keys, valid for one batch: physical keys and pointer values live in arena; vers
	// holds the versions resolved for the current command; rw is a command with rewritten keys.
	arena  []byte
	vers   versions
	keyIdx []int
	rw     resp.Command

	hs          hashScratch          // hash lookups of the current command
	hashFetched upstream.HashFetched // scratch for parsing hash fetches
	call        *upstream.Call

	// last remembers the previous command's table entry: clients send the same command again and again, and a
	// byte comparison is cheaper than the table's map lookup.
	last struct {
		tbl  *table
		name []byte
		cmd  *command
	}

	// ran is the table entry of the last command the current batch ran (nil for one Redis does not know), for
	// CLIENT LIST's cmd (noteBatch).
	ran *command

	// Scratch for splitting a multi-key command over the slots of a Redis Cluster (cluster.go).
	splitIdx   []int
	splitSlots []int
	splitArgs  [][]byte

	tx  txState // MULTI queue and WATCH session
	sub *pubsub // pub/sub session, nil when not subscribed

	ldbArmed bool // SCRIPT DEBUG YES: the next EVAL starts a Lua debugging session (ldb.go)

	info clientInfo // what CLIENT LIST and CLIENT KILL of other clients see of this one (clientinfo.go)

	hotSkip int32  // cached reads until the next one recorded in the hot-key tracker
	hotRand uint64 // xorshift state for the gaps between those
	hotMean int32  // the mean the current gap was drawn with: what the read that ends it counts for

	timing batchTiming   // the current batch's commands by latency class (metrics.go)
	pend   pendingCounts // the current batch's hits and calls, not yet in the shared counters (metrics.go)

	// CLIENT TRACKING (tracking.go): the client's state, nil while off; scratch for the keys of its reads; the
	// keys of its NOLOOP writes in flight. pushes queues the invalidations written to this client (created under
	// clientTracking.mu); targeted says another client redirects, or redirected, to it.
	trk        *trackState
	trkKeys    [][]byte
	trkWriting []string
	pushes     *pushQueue
	pushHold   bool // the push queue is held until the next flush (holdPushes)
	targeted   atomic.Bool
	gone       atomic.Bool // the connection is closed: nothing more is written to it

	// leaveAt is when limits.max_conn_age closes the connection (zero: never); deadline is the read deadline the
	// connection keeps between batches (leaveAt, or none), restored after anything that moves it.
	leaveAt  time.Time
	deadline time.Time

	closing    bool  // the client is gone or a limit ended the connection: nothing more is executed or written
	memoryFull bool  // the budget refused what the client's replies need: the connection closes at the next flush
	oversize   bool  // a reply exceeded limits.max_output_bytes: the connection closes at the next flush
	reserved   int64 // bytes reserved from the server's budget (limits.max_clients_memory)
	nextCharge int   // pending reply size at which outputOver charges the budget again

	// Sequence numbers the watchdog reads: odd while the client waits for a command (rseq, only with
	// limits.idle_timeout: idleMarks, set by markWait) or for a write to the client to complete (wseq).
	rseq, wseq      atomic.Uint64
	idleMarks       bool     // limits.idle_timeout is set: mark the waits for the watchdog (markWait)
	waitMarked      bool     // rseq is marked: the client waits for a complete command
	wdIdle, wdWrite waitMark // the watchdog's notes of those waits
}

func (s *Server) newClient(nc net.Conn) *client {
	lim := s.limits()
	c := &client{
		srv:       s,
		nc:        nc,
		id:        s.nextID.Add(1),
		authed:    s.opt.Config.Password == "",
		createdAt: s.now(),
		call:      upstream.NewCall(),
	}
	c.seg.proto = 2
	c.seg.pin = &c.tx.conn
	c.info.proto = 2
	c.info.closed = make(chan struct{})
	// Upstream waits end when the server closes, so that closing does not wait for a Redis that hangs.
	c.call.Cancel = s.closing
	if !c.authed {
		lim = resp.UnauthenticatedLimits()
	}
	c.rd = resp.NewReader(nc, lim)
	switch sc := nc.(type) {
	case *net.TCPConn, *net.UnixConn:
		// A plain socket's client holds no read buffer while it waits for its next command: 10,000 idle clients
		// would otherwise hold 16 KiB each.
		if raw, err := sc.(syscall.Conn).SyscallConn(); err == nil {
			c.rd.SetIdleRelease(raw)
			if c.rd.SetDirect() {
				c.dir.raw, c.dir.fn = raw, c.directRead
				if l := s.loopFor(c.id); l != nil {
					l.attach(c)
				}
			}
		}
	}
	c.hotRand = uint64(c.id)*0x9E3779B97F4A7C15 | 1
	c.hotMean = int32(s.hotGap.current())
	c.hotSkip = 1 + int32((c.hotRand>>1)%uint64(c.hotMean)) // hotRand is odd: its low bit would make the first gap even
	c.timing.rand = c.hotRand ^ 0x5DEECE66D
	c.timing.nextGap()
	if age := s.cfg.Load().Limits.MaxConnAge; age > 0 {
		// Up to 10% earlier, at random, so that connections opened together do not all close together.
		c.leaveAt = time.Now().Add(age - time.Duration(rand.Int64N(int64(age/10)+1)))
		c.deadline = c.leaveAt
	}
	c.rd.SetGrowth(func(extra int) error {
		if !c.account(extra) {
			return ErrClientMemory
		}
		return nil
	})
	return c
}

func (s *Server) limits() resp.Limits {
	l := s.opt.Config.Limits
	return resp.Limits{MaxRequestBytes: int(l.MaxRequestBytes), MaxArgs: l.MaxArgs, MaxInlineBytes: l.MaxInlineBytes}
}

// serve reads the client's pipelines and answers them until the client leaves, or until the server closes the
// connection gently: when it drains (shutdown) or when the connection reaches limits.max_conn_age, at the first
// point where nothing the client sent is unanswered (see leave).
func (c *client) serve() {
	if !c.handshake() {
		return
	}
	if !c.deadline.IsZero() {
		c.nc.SetReadDeadline(c.deadline)
	}
	c.idleMarks = c.srv.opt.Config.Limits.IdleTimeout > 0
	for !c.quit {
		var cmds []resp.Command
		var err error
		if c.lp != nil && c.parkable() {
			var stop bool
			if cmds, err, stop = c.park(); stop {
				return
			}
		} else if c.dir.raw != nil && c.dir.batches >= directAfter && !c.interrupted() {
			if cmds, err = c.readDirect(); c.dir.stop {
				return
			}
		} else {
			c.markWait(true)
			cmds, err = c.rd.ReadBatch(c.cmds[:0])
			c.markWait(false)
			c.dir.batches++
			if c.lp != nil {
				c.lp.servedOne()
			}
		}
		c.cmds = cmds
		if len(cmds) > 0 && !c.runBatch(cmds) {
			return
		}
		if err != nil {
			if c.readFailed(err) {
				continue
			}
			return
		}
		if c.interrupted() && c.leave() {
			c.closeGently()
			return
		}
	}
}

// readFailed handles the error that ended a read (after the batch read before it ran), and reports whether serve
// reads on: a read deadline is how the server interrupts the wait for the next command (Shutdown, max_conn_age).
// It is kept out of serve, whose frame is on the stack under every batch, so that a client's goroutine stays
// within its first stack (see directAfter).
//
//go:noinline
func (c *client) readFailed(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) && c.rd.ClearTimeout() {
		if c.leave() {
			c.closeGently()
			return false
		}
		return true
	}
	var pe *resp.ProtocolError
	switch {
	case err == ErrClientMemory:
		c.srv.stats.MemoryLimits.Add(1)
		c.fail(ErrClientMemory)
	case errors.As(err, &pe):
		c.srv.stats.ProtocolErrors.Add(1)
		c.out = resp.AppendError(c.out[:0], "ERR "+pe.Error())
		c.flush()
	case !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed):
		c.srv.log.Debug("client read", "client", c.id, "err", err)
	}
	return false
}

// runBatch executes a batch of commands and writes their replies. It reports false when the connection is to end
// (its replies could not be written, or it went past its memory). A batch slower than log.slow_command is logged
// before settleBatch gives back the memory its commands are in.
func (c *client) runBatch(cmds []resp.Command) bool {
	start := c.slowStart()
	if !c.answerBatch(cmds) {
		return false
	}
	c.noteSlow(cmds, start)
	return c.settleBatch()
}

// slowStart returns the time a batch begins with log.slow_command set, for noteSlow; zero without it.
func (c *client) slowStart() time.Time {
	if c.srv.cfg.Load().Log.SlowCommand > 0 {
		return time.Now()
	}
	return time.Time{}
}

// noteSlow logs a batch begun at start (zero: log.slow_command is off) that took longer than log.slow_command.
func (c *client) noteSlow(cmds []resp.Command, start time.Time) {
	if !start.IsZero() {
		if d := time.Since(start); d > c.srv.cfg.Load().Log.SlowCommand {
			c.logSlow(cmds, d)
		}
	}
}

// answerBatch executes a batch and writes its replies; false when they could not be written.
func (c *client) answerBatch(cmds []resp.Command) bool {
	c.beginBatch()
	c.takeBig()
	c.execBatch(cmds)
	c.noteBatch()
	if !c.flush() {
		return false
	}
	c.endBatch()
	return true
}

// settleBatch trims what the batch grew and checks the client's memory; false when it is past its bound.
func (c *client) settleBatch() bool {
	c.trim()
	if !c.account(0) {
		c.fail(ErrClientMemory)
		return false
	}
	return true
}

// interrupted reports whether the connection may have to close before its next command: the server drains or
// stops it, CLIENT KILL killed it, or it is past max_conn_age. leave decides.
func (c *client) interrupted() bool {
	return c.draining.Load() || c.stopping.Load() || c.info.killed.Load() ||
		!c.leaveAt.IsZero() && time.Now().After(c.leaveAt)
}

// directAfter is how many batches a client sends, read as before, before it reads directly. Running a batch inside
// RawConn.Read puts the read's frames under it, and the goroutine's stack outgrows its first 2 KiB: reading
// directly from the first command on took 9,900 clients that sent one PING each and stayed idle from 20.6 to 39.4
// MiB of goroutine stacks and from 127.5 to 145.2 MiB of RSS (go run ./bench memory -keys 20000 -duration 3s
// -idle-clients 9900). A client that keeps sending commands gains a system call per request; one that sends a few
// and idles, as pooled connections often do, keeps the small stack. The package's tests set it to 0, so that every
// kind of batch runs inside the read there.
var directAfter = 8

// direct is what a client serving inside its socket's read (readDirect) keeps between calls, so that the function
// given to RawConn.Read is made once.
type direct struct {
	raw  syscall.RawConn
	fn   func(fd uintptr) bool // c.directRead
	cmds []resp.Command        // the batch directRead left to serve to run
	err  error                 // and the read error after it
	stop bool                  // a batch run inside ended the connection
	// batches counts the batches read with ReadBatch before direct reading begins (directAfter).
	batches int
}

// readDirect serves the client's batches inside one RawConn.Read of its socket, for as long as they may run
// there, and returns what ReadBatch would return in serve's loop: the next batch that may not run there (with the
// read error after it, if any), or an empty batch and a read error (a deadline, the connection closed), or nothing
// once the connection may have to close (interrupted), for serve to look at. c.dir.stop reports that a batch run
// inside ended the connection.
//
// Inside one RawConn.Read the socket's readiness is kept from one wait to the next, so after a read that left
// nothing in the socket the goroutine waits at once instead of making the read that finds nothing which ReadBatch
// makes before every wait (resp.Reader.ReadDirect): one system call less per request of a client that waits for
// each reply. Only plain TCP connections on Linux read this way (resp.Reader.SetDirect). The price is
// that the socket's read lock is held while a batch runs. Nothing else reads the socket then, except watchPeer
// (blocking and pinned commands) and the debugger's session, so a batch that may start either runs outside
// (directSafe); and a Close from another goroutine waits for the batch, so other goroutines close client
// connections with closeRaw, which does not wait.
func (c *client) readDirect() ([]resp.Command, error) {
	c.dir.cmds, c.dir.err, c.dir.stop = nil, nil, false
	c.rd.BeginDirect()
	err := c.dir.raw.Read(c.dir.fn)
	c.markWait(false)
	if err != nil {
		c.rd.DirectError(err)
		cmds, err := c.rd.ReadBatch(c.cmds[:0]) // the error, after any complete command buffered
		return cmds, err
	}
	return c.dir.cmds, c.dir.err
}

// directRead is the function readDirect gives RawConn.Read: it runs batches until one may not run there, the
// connection may have to close, or the socket has nothing to read (it returns false: RawConn.Read waits for it).
func (c *client) directRead(fd uintptr) bool {
	for {
		cmds, wait, err := c.rd.ReadDirect(c.cmds[:0], fd)
		if wait {
			c.markWait(true)
			return false
		}
		c.markWait(false)
		c.cmds = cmds
		if err != nil || !c.directSafe(cmds) {
			c.dir.cmds, c.dir.err = cmds, err
			return true
		}
		if !c.runBatch(cmds) {
			c.dir.stop = true
			return true
		}
		if c.quit || c.interrupted() {
			return true
		}
		if c.lp != nil {
			if c.lp.servedOne(); c.parkable() {
				return true // the event loop waits for the next batch
			}
		}
	}
}

// markWait marks in rseq, for the watchdog's limits.idle_timeout, that the client waits for a complete command (on)
// or no longer does: serve around ReadBatch, directRead around its waits. A subscribed client waits for messages,
// not commands: it is never idle.
func (c *client) markWait(on bool) {
	if !c.idleMarks || c.waitMarked == on || on && c.sub != nil && c.sub.on {
		return
	}
	c.waitMarked = on
	c.rseq.Add(1)
}

// directSafe reports whether a batch may run inside the socket's read: the client outside every session, and no
// command of the batch one the command table marks to run outside (command.outside).
func (c *client) directSafe(cmds []resp.Command) bool {
	if !c.plain() || c.ldbArmed {
		return false
	}
	for i := range cmds {
		if tc := c.lookup(cmds[i].Args); tc != nil && tc.outside {
			return false
		}
	}
	return true
}

// When the server drains, or a connection passes max_conn_age, the connection is closed between two batches, after
// their replies are written, at the first point where that loses nothing: no byte of the client's waiting unread,
// outside MULTI and WATCH sessions, and the client quiet for closeQuiet (so that a pipeline still arriving, with
// micro-pauses between its TCP segments, is read to its end) or closePatience past the moment closing became due
// (so that a client sending one command at a time, never quiet that long, is closed between a reply and its next
// command). A client that never stops pipelining is served until Shutdown's deadline, and then stopped: see stop.
const (
	closeQuiet    = 50 * time.Millisecond
	closePatience = time.Second
	// drainRecheck is how often a draining connection that cannot close yet (a command partly received, a MULTI
	// waiting for EXEC) looks again.
	drainRecheck = 20 * time.Millisecond
)

// leave reports whether the connection is to close now, because the server drains or stops it, or the connection
// is past max_conn_age, and it may close gently. A subscription is closed by a drain but never by max_conn_age.
// When it may not close yet, leave sets the read deadline at which to look again.
func (c *client) leave() bool {
	if c.stopping.Load() || c.info.killed.Load() {
		return true
	}
	draining := c.draining.Load()
	now := time.Now()
	aged := !c.leaveAt.IsZero() && now.After(c.leaveAt)
	c.nc.SetReadDeadline(time.Time{}) // a past deadline would make the peek below fail
	if !draining && !aged {
		c.nc.SetReadDeadline(c.deadline)
		return false
	}
	due := c.leaveAt
	if draining {
		due = c.srv.shutdownAt()
	}
	idle := c.srv.now().Sub(c.seg.now) // since the last batch began, on the clock batches are stamped with
	sessions := c.tx.multi || c.tx.conn != nil || !draining && c.sub != nil && c.sub.active()
	pending := c.rd.Buffered() > 0 || pendingInput(c.nc)
	if !sessions && !pending && (idle >= closeQuiet || now.Sub(due) >= closePatience) {
		if !draining {
			c.srv.metrics.agedOut.Add(1)
		}
		return true
	}
	switch {
	case draining:
		c.deadline = now.Add(drainRecheck)
	case sessions || pending:
		c.deadline = time.Time{} // looked at again after the next batch
	default:
		c.deadline = now.Add(max(closeQuiet-idle, time.Millisecond))
	}
	c.nc.SetReadDeadline(c.deadline)
	return false
}

// stop makes the connection close at the end of the batch it is running, or at once when it waits for a command,
// whatever its client sent since: Shutdown's deadline has come. Commands not executed yet are dropped (closeGently);
// every executed one has its reply written first.
func (c *client) stop() {
	c.stopping.Store(true)
	c.wake()
}

// How closeGently lingers: it reads (and drops) what the client still sends until the client has been quiet for
// lingerQuiet and has acknowledged every reply, or until lingerMax.
const (
	lingerQuiet = 50 * time.Millisecond
	lingerMax   = time.Second
)

// closeGently ends a connection the server chose to close (a drain, max_conn_age) without destroying the replies
// already written: it sends FIN after them (CloseWrite), then reads and drops whatever the client still sends
// (commands featcache never executed: the client sees the end of the connection instead of their replies) until
// the client closes its side, or is quiet and has acknowledged every byte sent. Closing a socket while input is
// unread, or replies unacknowledged, would reset the connection, and a reset discards replies still queued on
// featcache's side. The caller then closes the socket.
func (c *client) closeGently() {
	cw, ok := c.nc.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil {
		return
	}
	c.markClosed()
	deadline := time.Now().Add(lingerMax)
	buf := make([]byte, 16<<10)
	for {
		now := time.Now()
		if now.After(deadline) {
			return
		}
		wait := now.Add(lingerQuiet)
		if wait.After(deadline) {
			wait = deadline
		}
		c.nc.SetReadDeadline(wait)
		n, err := c.nc.Read(buf)
		switch {
		case n > 0:
		case errors.Is(err, os.ErrDeadlineExceeded):
			if unacknowledged(c.nc) == 0 {
				return
			}
		case err != nil:
			return // the client closed its side (or the connection failed): nothing more to wait for
		}
	}
}

// wake interrupts a wait for the next command, so that the client goroutine looks at draining.
func (c *client) wake() {
	c.nc.SetReadDeadline(time.Unix(1, 0))
	if c.lp != nil {
		c.lp.signal()
	}
}

// pendingInput reports whether the client has sent bytes featcache has not read yet: a non-blocking peek at the
// socket. It needs the read deadline cleared.
func pendingInput(nc net.Conn) bool {
	data, _, _ := resp.Peek(nc)
	return data
}

// logSlow logs a pipeline slower than log.slow_command: its size and command names, never its arguments (keys
// may identify people, and AUTH carries a password).
func (c *client) logSlow(cmds []resp.Command, d time.Duration) {
	c.srv.metrics.slowCommands.Add(1)
	names := make([]string, 0, 4)
	for i := range cmds {
		if len(names) == cap(names) {
			names = append(names, "...")
			break
		}
		name := strings.ToLower(string(truncateArg(cmds[i].Args[0], 32)))
		if !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	c.srv.log.Warn("slow command", "client", c.id, "addr", c.nc.RemoteAddr().String(), "duration", d,
		"commands", len(cmds), "names", strings.Join(names, ","))
}

// handshake completes a TLS client's handshake within Options.TLSHandshakeTimeout, so that a connection that never
// completes one does not stay open. It reports false when the handshake failed.
func (c *client) handshake() bool {
	tc, ok := c.nc.(*tls.Conn)
	if !ok {
		return true
	}
	tc.SetDeadline(time.Now().Add(c.srv.opt.TLSHandshakeTimeout))
	if err := tc.Handshake(); err != nil {
		c.srv.stats.TLSHandshakeErrors.Add(1)
		c.srv.log.Debug("client TLS handshake", "client", c.id, "addr", c.nc.RemoteAddr().String(), "err", err)
		return false
	}
	tc.SetDeadline(time.Time{})
	return true
}

// flush writes the replies ready so far. It reports false when the connection is to close: the client is gone, or
// a reply exceeded limits.max_output_bytes, or the client's buffers did not fit in limits.max_clients_memory.
//
// The write returns when the socket has taken the replies, so it waits as long as the client does not read (until
// limits.output_timeout): that is how a client's pipeline is paused. What the client holds meanwhile is charged to
// limits.max_clients_memory before the write, so clients that do not read never hold more than the budget.
func (c *client) flush() bool { return c.released(c.flushReplies()) }

// released follows a write of the client's replies: its own invalidations, held until they were out (holdPushes),
// may follow them now. It returns ok, the write's result.
func (c *client) released(ok bool) bool {
	if c.pushHold {
		c.releasePushes()
	}
	return ok
}

// flushReplies writes the pending replies (flush).
func (c *client) flushReplies() bool {
	c.pend.fold() // every command answered so far is counted before its reply leaves
	switch {
	case c.closing:
		return false
	case c.oversize:
		c.srv.stats.OutputLimits.Add(1)
		c.fail(ErrOutputLimit)
		return false
	case c.memoryFull:
		c.srv.stats.MemoryLimits.Add(1)
		c.fail(ErrClientMemory)
		return false
	case len(c.out) == 0:
		return true
	case !c.account(0):
		c.srv.stats.MemoryLimits.Add(1)
		c.fail(ErrClientMemory)
		return false
	}
	return c.wrote(c.send(c.out))
}

// wrote ends a write of the pending replies (ok: all of them written) and empties the reply buffer.
func (c *client) wrote(ok bool) bool {
	c.outUsed = max(c.outUsed, len(c.out))
	c.out = c.out[:0]
	c.nextCharge = 0
	if !ok {
		c.closing = true // the client is gone: nothing more is executed, fetched or forwarded for it
	}
	c.hasWaited() // a write to the client may wait: the reads after it are judged at the time they run
	return ok
}

// send writes b to the client in chunks, marking each write for the output watchdog. It reports false when the
// client is gone or the watchdog closed the connection.
func (c *client) send(b []byte) bool {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	for len(b) > 0 {
		n := min(len(b), writeChunk)
		c.wseq.Add(1) // odd: a write is in progress
		_, err := c.nc.Write(b[:n])
		c.wseq.Add(1)
		if err != nil {
			return false
		}
		b = b[n:]
	}
	return true
}

// retainBytes is the capacity a reply or payload buffer may keep between batches; larger ones, grown by a large
// batch, are dropped, so that an idle client holds little more than config.ClientBaselineBytes.
const retainBytes = 32 << 10

// trim drops buffers a large batch grew, once the batch is done.
func (c *client) trim() {
	c.rd.Shrink(c.cmds)
	c.big = bigHints{}
	if cap(c.out) > retainBytes {
		c.big.out = bigHint(c.outUsed)
		putBig(c.out)
		c.out = nil
	}
	c.outUsed = 0
	if cap(c.seg.tail) > retainBytes {
		c.seg.tail = nil
	}
	if c.seg.req.Cap() > retainBytes {
		c.seg.req = upstream.Payload{}
	}
	if cap(c.call.Replies) > retainBytes {
		c.big.replies = bigHint(len(c.call.Replies))
		putBig(c.call.Replies)
		c.call.Replies = nil
	}
	if !c.tx.multi && cap(c.tx.queue)+cap(c.tx.arena) > retainBytes {
		c.tx.queue, c.tx.arena = nil, nil
	}
}

// close releases what the connection holds upstream, and its share of the client memory budget.
func (c *client) close() {
	c.pend.fold()
	c.nc.Close()
	if c.lp != nil {
		c.lp.loop.detach(c)
	}
	c.markClosed()
	c.gone.Store(true)
	c.srv.ctrack.left(c)
	c.tx.close()
	if c.sub != nil {
		c.sub.close()
	}
	c.release()
}

// now is the time of the current batch: every lookup of one pipeline sees the same instant.
func (c *client) now() time.Time { return c.seg.now }

func (c *client) cache() *localcache.Cache { return c.srv.cache }

// lookup finds a command's table entry, reusing the previous command's when the name is the same. Only
// top-level entries without subcommands are remembered: a subcommand's entry depends on the next argument.
func (c *client) lookup(args [][]byte) *command {
	tbl := c.srv.tbl.Load()
	if tbl.get != nil && isGet(args[0]) {
		return tbl.get
	}
	if c.last.cmd != nil && c.last.tbl == tbl && bytes.Equal(args[0], c.last.name) {
		return c.last.cmd
	}
	cmd := tbl.lookup(args)
	if cmd != nil && cmd.subs == nil && strings.IndexByte(cmd.name, '|') < 0 {
		c.last.tbl, c.last.cmd = tbl, cmd
		c.last.name = append(c.last.name[:0], args[0]...)
	} else {
		c.last.cmd = nil
	}
	return cmd
}
