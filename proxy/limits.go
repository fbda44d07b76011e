package proxy

// This file holds the limits on what connected clients can make featcache hold, beyond the per-command ones the
// resp.Reader enforces: the number of clients (limits.max_clients), idle clients (limits.idle_timeout), replies a
// client does not read (limits.max_output_bytes, limits.output_timeout) and the memory of all clients' buffers
// together (limits.max_clients_memory).
//
// A client's memory is its read buffer, its pending replies and its transaction queue. The resp.Reader bounds the
// first by limits.max_request_bytes, the transaction queue is bounded by the same, and replies are written as they
// are produced (whenever outputFlushBytes are ready) and a single reply is bounded by limits.max_output_bytes.
// Each client may hold config.ClientBaselineBytes without asking; what it holds beyond that is reserved from one
// budget shared by every client, before the read buffer grows and as replies grow. A client that cannot reserve
// what it needs is told so and disconnected: featcache's memory stays bounded by local.max_memory,
// limits.max_clients x the baseline, and limits.max_clients_memory, whatever the clients send.
//
// This file holds what a client does against those limits. The shared budget, and the Go memory limit that follows
// it, are in budget.go; the idle and output timeouts in watchdog.go; limits.max_clients at accept (server.go: reject).

import (
	"errors"
	"time"

	"featcache/config"
	"featcache/internal/resp"
)

const (
	// outputFlushBytes is how many reply bytes of a batch featcache lets accumulate before writing them, so that a
	// long pipeline's replies never pile up whole in memory.
	outputFlushBytes = 64 << 10
	// writeChunk bounds one write to the client socket: the output watchdog sees progress at least this often
	// from a client that reads, however large the reply.
	writeChunk = 256 << 10
	// rejectTimeout bounds the write of "max number of clients reached" (and its TLS handshake).
	rejectTimeout = time.Second
	// DefaultTLSHandshakeTimeout bounds a client's TLS handshake when Options.TLSHandshakeTimeout is zero, so a
	// connection that never completes one does not stay open.
	DefaultTLSHandshakeTimeout = 10 * time.Second
)

// Errors that end a client connection because of a limit. The server replies "-ERR " + Error() and closes.
var (
	// ErrClientMemory means the client needed more buffer memory than limits.max_clients_memory had left.
	ErrClientMemory = errors.New("featcache client buffers are full (limits.max_clients_memory), connection closed")
	// ErrOutputLimit means the replies the client had not received yet exceeded limits.max_output_bytes: one
	// reply larger than that, since featcache writes replies as they are produced.
	ErrOutputLimit = errors.New("featcache reply exceeds limits.max_output_bytes, connection closed")
)

// footprint is the capacity of the buffers the client owns: what its connection holds in memory.
func (c *client) footprint() int {
	return c.rd.Footprint() + cap(c.out) + cap(c.seg.tail) + c.seg.req.Cap() + cap(c.call.Replies) +
		cap(c.tx.queue) + cap(c.tx.arena)
}

// account makes the client's reservation from the shared budget match its buffers plus extra bytes it is about to
// allocate, and reports false when the budget cannot cover them (the reservation is then left as it was).
func (c *client) account(extra int) bool {
	want := max(int64(c.footprint()+extra)-config.ClientBaselineBytes, 0)
	switch d := want - c.reserved; {
	case d > 0:
		if !c.srv.budget.take(d) {
			return false
		}
	case d < 0:
		c.srv.budget.give(-d)
	}
	c.reserved = want
	return true
}

// release returns the client's whole reservation when it leaves.
func (c *client) release() {
	c.srv.budget.give(c.reserved)
	c.reserved = 0
}

// settleOutput runs after each command of a batch; start is the number of reply bytes pending before the command.
// It flags a command whose own reply exceeded limits.max_output_bytes, and once outputFlushBytes of replies are
// pending it writes them: the write takes as long as the client takes to read them (up to limits.output_timeout),
// and the client's pipeline waits meanwhile, so a client that does not read holds one flush of replies, never a
// batch of them. It reports false when the connection must close (the client is gone, or a limit was reached).
func (c *client) settleOutput(start int) bool {
	if c.closing || c.info.killed.Load() {
		return false // a CLIENT KILL of another client: nothing after the current command runs
	}
	pending := c.replies.pending()
	c.tooLarge(pending - start)
	if c.oversize || c.memoryFull {
		return c.flush() // fails the connection
	}
	if pending < outputFlushBytes {
		return true
	}
	// The segment runs first when it leads fills, which other clients may be waiting for: they must not wait for
	// this client's reading.
	if len(c.seg.fetches) > 0 || len(c.seg.tail) >= outputFlushBytes {
		c.runSegment()
	}
	return c.flush()
}

// settled reports whether the command after which start reply bytes were pending leaves nothing for
// settleOutput to do: no limit reached, the connection not closing, fewer than outputFlushBytes pending. It is
// small enough to be inlined into the batch's loop, which calls settleOutput only when it reports false.
func (c *client) settled(start int) bool {
	pending := c.replies.pending()
	return pending < outputFlushBytes && int64(pending-start) <= c.srv.maxOutput && !c.oversize && !c.memoryFull &&
		!c.closing && !c.info.killed.Load()
}

// tooLarge flags a reply of n bytes that exceeds limits.max_output_bytes; the connection then closes at the next
// flush, without the reply.
func (c *client) tooLarge(n int) bool {
	if int64(n) > c.srv.maxOutput {
		c.oversize = true
		return true
	}
	return false
}

// outputOver reports whether an MGET being built from memory, which began when start reply bytes were pending,
// has grown past what the client may hold or the budget can cover. MGET checks it as it goes, so that a short
// command naming a cached key a million times cannot make featcache build an arbitrarily large reply.
func (c *client) outputOver(start int) bool {
	if c.closing {
		return true
	}
	n := c.replies.pending()
	if c.tooLarge(n - start) {
		return true
	}
	if n >= c.nextCharge {
		c.nextCharge = n + outputFlushBytes
		if !c.account(0) {
			c.memoryFull = true
			return true
		}
	}
	return false
}

// flushDuringAssemble writes the replies assembled so far when they reach outputFlushBytes, so that a segment
// whose many misses bring large values back is written as it is assembled. dst is what is assembled so far; it
// returns what is left to write. Like flush, it charges what the client holds before the write may wait.
func (c *client) flushDuringAssemble(dst []byte) []byte {
	if len(dst) < outputFlushBytes || c.closing || c.oversize || c.memoryFull {
		return dst
	}
	if !c.account(cap(dst) - cap(c.out)) {
		c.memoryFull = true
		return dst
	}
	c.nextCharge = 0
	c.pend.fold() // the commands whose replies these are are counted before the write, which may wait
	c.outUsed = max(c.outUsed, len(dst))
	if !c.send(dst) {
		c.closing = true
	}
	return dst[:0]
}

// writeThrough writes dst, the replies assembled so far, then the reply b, which is held elsewhere (a frame in the
// round trip's buffer), without copying it. It returns what is left to write.
func (c *client) writeThrough(dst, b []byte) []byte {
	if c.tooLarge(len(b)) || !c.assembling() {
		return dst // the connection closes without it
	}
	if !c.account(cap(dst) - cap(c.out)) {
		c.memoryFull = true
		return dst
	}
	c.nextCharge = 0
	c.pend.fold()
	c.outUsed = max(c.outUsed, len(dst))
	if len(dst) > 0 && !c.send(dst) || !c.send(b) {
		c.closing = true
	}
	return dst[:0]
}

// chargeAssembly charges the budget for a reply being assembled in dst that cannot be written before it is
// whole (an MGET, which becomes an error if one of its keys fails), each time it has grown by outputFlushBytes.
// When the budget cannot cover it, the connection closes at the next flush.
func (c *client) chargeAssembly(dst []byte) {
	if len(dst) < c.nextCharge {
		return
	}
	c.nextCharge = len(dst) + outputFlushBytes
	if !c.account(cap(dst) - cap(c.out)) {
		c.memoryFull = true
	}
}

// assembling reports whether replies are still to be built: nothing stopped the connection. Once the client is
// gone or a limit is reached, the connection closes without the replies not written yet, so building them would
// only hold memory and wait for fills.
func (c *client) assembling() bool { return !c.closing && !c.oversize && !c.memoryFull }

// fail ends the connection because of a limit: the pending replies are dropped (as Redis drops a client's output
// buffer when it closes it), the client is told why if it still reads, and nothing more is executed or written.
func (c *client) fail(err error) {
	if c.closing {
		return
	}
	c.closing = true
	// Fills this client leads are completed before the write below, which may wait: other clients wait for them.
	c.runSegment()
	c.srv.log.Info("client disconnected", "client", c.id, "addr", c.nc.RemoteAddr().String(), "reason", err.Error())
	c.out = resp.AppendError(c.out[:0:0], "ERR "+err.Error())
	c.nc.SetWriteDeadline(time.Now().Add(rejectTimeout))
	c.send(c.out)
	c.out = nil
}
