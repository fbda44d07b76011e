package proxy

import (
	"bytes"
	"crypto/tls"
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"featcache/internal/resp"
	"featcache/upstream"
)

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
		c.tx.conn.Release()
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
		case (tc.name == "reset" || tc.name == "quit") && rejection(cmd.Args, tc) != "":
			// RESET with arguments ends nothing: Redis's arity error, which aborts a transaction at EXEC.
			if c.tx.multi {
				c.tx.dirty = true
			}
			c.errorReply(rejection(cmd.Args, tc))
			return false
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
	// A read deadline ends the watcher's wait only when stop set it: the client's own deadline (idle_timeout, a
	// drain's recheck) and the one a shutdown sets to wake idle clients (wake) may pass while the command waits,
	// and the watch must go on through them, or a client leaving then would go unnoticed (and a shutdown would wait
	// for the blocked command forever).
	var mu sync.Mutex
	stopped := false
	done := make(chan struct{})
	go func() {
		defer close(done)
		var b [1]byte
		for {
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
			if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
				mu.Lock()
				again := !stopped
				if again {
					c.nc.SetReadDeadline(time.Time{}) // stop restores the client's deadline
				}
				mu.Unlock()
				if again {
					continue
				}
			} else if err != nil {
				left.Store(true) // the client connection was closed on featcache's side (server shutdown)
			}
			break
		}
		if left.Load() {
			conn.Close()
		}
	}()
	return func() bool {
		mu.Lock()
		stopped = true
		c.nc.SetReadDeadline(time.Unix(1, 0)) // ends the watcher's wait; the client goroutine is not reading
		mu.Unlock()
		<-done
		c.nc.SetReadDeadline(c.deadline)
		return left.Load()
	}
}
