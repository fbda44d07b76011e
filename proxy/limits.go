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

import (
	"crypto/tls"
	"errors"
	"net"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
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

// budget is the byte allowance that every client's buffers beyond its baseline share (limits.max_clients_memory).
// It is safe for concurrent use.
type budget struct {
	limit int64
	used  atomic.Int64

	// With base > 0, the Go memory limit follows the reservations: base plus what is reserved, rounded down to
	// memoryStep, and never below floor (see follow and watchHeap). set is the limit last set; mu serializes
	// changing it, so that the last computed limit is the one in force.
	base  int64
	floor atomic.Int64
	set   atomic.Int64
	mu    sync.Mutex
}

// memoryStep is the granularity at which the Go memory limit follows the clients' reservations, so that it moves
// rarely (debug.SetMemoryLimit stops the world).
const memoryStep = 16 << 20

// gcRoom is the least the Go memory limit leaves for garbage above what the runtime holds for live objects (the
// tier's ring buffers and index, client buffers within their baselines, fills in flight) and for itself; and
// gcRoomShift makes it at least that fraction of the live heap (1/16), so that larger heaps, whose collections and
// returned-then-refaulted pages cost more, are collected no more often. With less, the garbage collector runs back
// to back and, past half the CPU, lets the heap overshoot the limit anyway: a 256MB tier whose 16 MiB index and a
// cold fill's pipelines (50 clients x 64 GETs) left it about 6 MiB measured 1,800 collections for 1,000,000 misses
// and upstream timeouts; with 12 MiB, 1,800 collections and 50% more CPU than with the 30 MiB it had before.
const (
	gcRoom      = 12 << 20
	gcRoomShift = 4
)

// floorSlack is how far the live heap must fall before watchHeap lowers the limit it raised, so that a heap
// that hovers does not move the limit (and stop the world) at every look.
const floorSlack = 8 << 20

// heapWatchPeriod is how often watchHeap compares the memory limit with the live heap.
const heapWatchPeriod = 100 * time.Millisecond

// take reserves n bytes if the allowance has them.
func (b *budget) take(n int64) bool {
	for {
		u := b.used.Load()
		if u+n > b.limit {
			return false
		}
		if b.used.CompareAndSwap(u, u+n) {
			b.follow(u + n)
			return true
		}
	}
}

// give returns n reserved bytes.
func (b *budget) give(n int64) { b.follow(b.used.Add(-n)) }

// follow keeps the Go memory limit at base plus the bytes reserved (used), in whole steps of memoryStep: the
// garbage collector keeps the heap near local.max_memory plus headroom while clients hold little, and lets it grow
// by what they were allowed to reserve when they hold more, instead of collecting continuously. The steps round
// down, so the limit never exceeds base + used: less than a step of reservations comes out of the headroom (a
// prefill's pipelines reserve a few hundred KiB, which rounded up would have let the heap grow 16MB). The limit
// is never below floor either: see watchHeap.
func (b *budget) follow(used int64) {
	if b.base <= 0 {
		return
	}
	want := func() int64 { return max(b.base+used/memoryStep*memoryStep, b.floor.Load()) }
	if b.set.Load() == want() {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	used = b.used.Load() // another follow may have run meanwhile: set what holds now
	if w := want(); b.set.Load() != w {
		b.set.Store(w)
		debug.SetMemoryLimit(w)
	}
}

// heapSamples are the runtime/metrics watchHeap reads: the heap the last collection found live, and the memory the
// runtime holds, of which the heap's objects (live or not yet collected), free pages and pages returned to the OS.
var heapSamples = []string{
	"/gc/heap/live:bytes",
	"/memory/classes/total:bytes",
	"/memory/classes/heap/objects:bytes",
	"/memory/classes/heap/free:bytes",
	"/memory/classes/heap/released:bytes",
}

// watchHeap keeps the Go memory limit at least gcRoom (or a sixteenth of the live heap) above the memory that
// collecting garbage cannot give back: the live heap plus what the runtime holds besides heap objects (stacks,
// metadata, fragmentation). local.max_memory plus headroom covers that with room to spare for a 64MB tier of
// 1-2 KiB values and a few dozen clients, but freecache's index
// grows with the number of entries, not their bytes (16 MiB for a 256MB tier of 1-2 KiB values, 37 MiB for 256MB
// of 200-byte values), and many clients in the middle of a pipeline hold up to their baselines each: then the
// limit rises with them, by what is live, rather than leave the collector no room. It runs until the server stops.
func (s *Server) watchHeap() {
	defer s.wg.Done()
	samples := newHeapSamples()
	t := time.NewTicker(heapWatchPeriod)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		if live, floor, moved := s.budget.watch(samples); moved {
			s.log.Debug("Go memory limit floor", "live_heap", live, "floor", floor, "memory_limit", s.budget.set.Load())
		}
	}
}

func newHeapSamples() []metrics.Sample {
	samples := make([]metrics.Sample, len(heapSamples))
	for i, name := range heapSamples {
		samples[i].Name = name
	}
	return samples
}

// watch reads the runtime's memory and moves floor (and with it the limit) when the live heap needs it: up at once,
// down once it is floorSlack below. It returns the live heap, the floor, and whether the floor moved.
func (b *budget) watch(samples []metrics.Sample) (live, floor int64, moved bool) {
	metrics.Read(samples)
	v := func(i int) int64 {
		if samples[i].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return int64(samples[i].Value.Uint64())
	}
	live, total, objects, free, released := v(0), v(1), v(2), v(3), v(4)
	floor = gcFloor(live, total-released-objects-free)
	old := b.floor.Load()
	if floor <= old && floor >= old-floorSlack {
		return live, old, false
	}
	b.floor.Store(floor)
	b.follow(b.used.Load())
	return live, floor, true
}

// gcFloor is the least memory limit that leaves gcRoom, or a sixteenth of the live heap if more, above a live heap
// of live bytes and other runtime memory of other bytes, rounded up to a MiB.
func gcFloor(live, other int64) int64 {
	const mib = 1 << 20
	return (live + max(other, 0) + max(gcRoom, live>>gcRoomShift) + mib - 1) / mib * mib
}

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
	pending := len(c.out) + len(c.seg.tail)
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
	n := len(c.out) + len(c.seg.tail)
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

// reject answers a connection beyond limits.max_clients as Redis does, and closes it.
func (s *Server) reject(nc net.Conn) {
	defer s.wg.Done()
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(rejectTimeout))
	nc.Write(resp.AppendError(nil, "ERR max number of clients reached"))
}

// watchdog closes clients that have been idle longer than limits.idle_timeout, and clients a write to which has
// made no progress for limits.output_timeout. Clients mark their waits with sequence numbers (odd while waiting)
// rather than timestamps, so the hit path reads no clock for it; the watchdog notes when it first saw each wait.
func (s *Server) watchdog() {
	defer s.wg.Done()
	lim := &s.opt.Config.Limits
	period := lim.OutputTimeout
	if lim.IdleTimeout > 0 {
		period = min(period, lim.IdleTimeout)
	}
	t := time.NewTicker(min(max(period/4, 5*time.Millisecond), time.Second))
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		now := time.Now()
		s.mu.Lock()
		for c := range s.conns {
			if over(&c.wdWrite, c.wseq.Load(), now, lim.OutputTimeout) {
				s.stats.OutputTimeouts.Add(1)
				s.log.Info("client disconnected", "client", c.id, "addr", c.nc.RemoteAddr().String(),
					"reason", "replies left unread for limits.output_timeout", "output_timeout", lim.OutputTimeout)
				closeRaw(c.nc)
				continue
			}
			if lim.IdleTimeout > 0 && over(&c.wdIdle, c.rseq.Load(), now, lim.IdleTimeout) {
				s.stats.IdleTimeouts.Add(1)
				s.log.Debug("client disconnected", "client", c.id, "reason", "idle for limits.idle_timeout")
				closeRaw(c.nc)
			}
		}
		s.mu.Unlock()
	}
}

// closeRaw closes a client connection without writing anything, also a TLS one (whose Close would send a
// close_notify alert and could wait on a client that does not read).
func closeRaw(nc net.Conn) {
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	nc.Close()
}

// waitMark is the watchdog's note of one kind of wait of one client: the wait's sequence number and when the
// watchdog first saw it. Only the watchdog goroutine touches it.
type waitMark struct {
	seq   uint64
	since time.Time
}

// over reports whether the wait numbered seq (odd while waiting) has lasted longer than d.
func over(m *waitMark, seq uint64, now time.Time, d time.Duration) bool {
	if seq&1 == 0 {
		return false
	}
	if seq != m.seq {
		m.seq, m.since = seq, now
		return false
	}
	return now.Sub(m.since) > d
}
