package proxy

import (
	"runtime"
	"sync/atomic"
	"time"

	"featcache/internal/resp"
)

// The event loop (loop_linux.go) serves the batches of cached GETs a plain TCP client sends, as Redis serves
// every client: one goroutine waits for every such client's socket at once, reads what is ready, answers it from
// memory and writes the replies, with no goroutine switch per request. A client's own goroutine, parked meanwhile
// (client.park), gets the connection back, with the batch as far as the loop took it, as soon as the batch needs
// anything else: a command other than GET, a key not fresh in memory (a fill, a refresh in the foreground, a
// forward), a reply too large to write at once, a session. It serves that batch as it serves every other, and
// parks again when it would wait for the next one.
//
// Ownership: the client's state is the loop's only while lp.state is loopServing, which only the loop sets,
// from loopParked. The goroutine sets loopParked before the socket is armed, and the loop sets loopGoroutine
// after the socket is disarmed and the hand-over written (lp.h), then signals lp.wake. A goroutine woken while
// parked by something that needs it (a drain, CLIENT KILL, a close, max_conn_age: kicked) takes the connection
// back itself, from loopParked; when the loop is serving, the loop hands it over at the end of the batch.

// Loop states of a client (loopClient.state).
const (
	loopGoroutine int32 = iota // the client's goroutine owns the connection
	loopParked                 // the goroutine waits in park; the socket is armed in the loop's epoll set
	loopServing                // the loop runs a batch of the client's
)

// loopMaxSkip bounds how many batches a client's goroutine serves itself, after batches the loop handed over in
// a row, before it parks again: a client that sends commands other than GETs (writes, say) pays the hand-over
// once in so many batches.
const loopMaxSkip = 64

// loopMaxStreak bounds the count of batches handed over in a row where it reaches loopMaxSkip (1<<(8-2)): a
// longer count would shift the skip past the int's width, to nothing.
const loopMaxStreak = 8

// loopClient is what a client served by an event loop keeps for it.
type loopClient struct {
	loop  *eventLoop
	slot  int32
	state atomic.Int32
	dead  atomic.Bool   // closeRaw closed the connection: never park again
	wake  chan struct{} // signals the parked goroutine (capacity 1)
	timer *time.Timer   // wakes it at max_conn_age

	armFn, disarmFn func(fd uintptr) // for the socket's RawConn.Control (eventLoop.arm, disarm)
	armed           bool
	// gen numbers the socket's registrations in the set; an event carries its registration's, so that an event
	// of an earlier one, still in the loop's hands, is not taken for a sign that the client parked again.
	gen atomic.Int32

	// Owned by whoever owns the connection (state).
	h      loopHandoff
	streak int // batches handed over in a row
	skip   int // batches the goroutine serves before it parks again
}

// loopHandoff is what the loop hands a client's goroutine along with the connection.
type loopHandoff struct {
	cmds  []resp.Command // a batch read (with err after it) and not begun, or the batch begun (begun)
	err   error
	begun bool
	// A begun batch: cmds[next:] are still to run, after settleOutput(settle) when settle is not -1; sent is -1
	// before its replies' write, else how many bytes of them the loop wrote; flushed says every reply is out
	// and only settleBatch is left.
	next, settle, sent int
	flushed            bool
	start              time.Time // when the batch began, with log.slow_command set
}

// signal wakes the parked goroutine; a signal pending already is enough.
func (lp *loopClient) signal() {
	select {
	case lp.wake <- struct{}{}:
	default:
	}
}

// kicked reports whether the goroutine is needed: the connection was closed under it, or it may have to close.
func (c *client) kicked() bool { return c.lp.dead.Load() || c.interrupted() }

// parkable reports whether the client's next batch may be waited for by the loop.
func (c *client) parkable() bool {
	lp := c.lp
	if lp.skip > 0 || lp.dead.Load() || c.rd.Buffered() > 0 || !c.plain() || c.ldbArmed || c.interrupted() {
		return false
	}
	return true
}

// park gives the connection to the loop until the goroutine is needed, and returns what serve's read would: a
// batch (and the read error after it) for serve to run; or nothing, once a batch the loop began has been finished
// here or the goroutine was woken; stop reports that the connection is to end.
func (c *client) park() (cmds []resp.Command, err error, stop bool) {
	lp := c.lp
	if !lp.dead.Load() && !c.leaveAt.IsZero() && lp.timer == nil {
		lp.timer = time.AfterFunc(time.Until(c.leaveAt), lp.signal)
	}
	c.markWait(true)
	lp.gen.Add(1)
	lp.state.Store(loopParked) // before the socket is armed: the loop takes it only from loopParked
	if !lp.loop.arm(c) {
		lp.state.Store(loopGoroutine)
		lp.skip = 1 // read as before: the read finds out what became of the socket
		return nil, nil, false
	}
	for {
		<-lp.wake
		if lp.state.Load() == loopGoroutine {
			break // handed over
		}
		if c.kicked() && lp.state.CompareAndSwap(loopParked, loopGoroutine) {
			lp.loop.disarm(c)
			return nil, nil, false // serve looks at why
		}
		// A signal left from before, or the loop is serving: it hands the connection over when kicked.
	}
	h := lp.h
	lp.h = loopHandoff{}
	if h.begun {
		return nil, nil, !c.finishLoopBatch(&h)
	}
	return h.cmds, h.err, false
}

// handedOver sets how many batches the goroutine serves itself before it parks again: none after a batch the loop
// served, then more with each batch in a row it could not.
func (lp *loopClient) handedOver() {
	lp.streak = min(lp.streak+1, loopMaxStreak)
	lp.skip = 0
	if lp.streak > 1 {
		lp.skip = min(1<<(lp.streak-2), loopMaxSkip)
	}
}

// servedOne notes a batch the goroutine served itself (skip).
func (lp *loopClient) servedOne() {
	if lp.skip > 0 {
		lp.skip--
	}
}

// runInLoop runs a batch on the loop, its GETs as execBatch runs them. It reports false, with the hand-over, when
// the goroutine has to take the batch on from where it stopped: at a command that is not a GET, or after a GET
// that left the segment work to do (a fill, a forward) or more replies than settleOutput lets wait. Nothing it
// runs waits, and the write of its replies is made without waiting. The client is plain, as execGet needs:
// parkable said so before it parked, and only its own commands, of which the loop runs GETs alone, change that.
func (c *client) runInLoop(cmds []resp.Command) (loopHandoff, bool) {
	h := loopHandoff{cmds: cmds, begun: true, settle: -1, sent: -1, start: c.slowStart()}
	c.beginBatch()
	c.takeBig()
	c.beginExec(len(cmds))
	for i := range cmds {
		pending := c.replies.pending()
		if !c.execGet(&cmds[i]) {
			h.next = i // not a GET (or GET denied): exec runs it
			return h, false
		}
		settled := c.settled(pending)
		if !settled || !c.seg.empty() {
			h.next = i + 1
			if !settled {
				h.settle = pending
			}
			return h, false
		}
	}
	h.next = len(cmds)
	c.pend.fold()
	c.noteBatch()
	if sent, ok := c.loopFlush(); !ok {
		h.sent = sent
		return h, false
	}
	c.endBatch()
	c.noteSlow(cmds, h.start)
	c.trim()
	if !c.account(0) {
		h.flushed = true // settleBatch fails the connection, with a write that may wait
		return h, false
	}
	c.lp.streak = 0
	return loopHandoff{}, true
}

// loopFlush writes the batch's replies without waiting, as flushReplies does otherwise. When it cannot write
// them all at once it reports false and how many bytes it wrote (-1: none, and flush is to do it all, the checks
// included); the goroutine writes the rest.
func (c *client) loopFlush() (int, bool) {
	switch {
	case c.closing || c.oversize || c.memoryFull:
		return -1, false
	case len(c.out) == 0:
		return 0, true
	case !c.account(0):
		return -1, false
	}
	if !c.wmu.TryLock() {
		return -1, false // an invalidation is being written to the client: the goroutine waits for it
	}
	c.wseq.Add(1)
	n := c.lp.loop.write(c)
	c.wseq.Add(1)
	c.wmu.Unlock()
	if n < len(c.out) {
		return max(n, 0), false
	}
	c.released(c.wrote(true))
	return n, true
}

// finishLoopBatch finishes, on the client's goroutine, a batch the loop began (h), as answerBatch and settleBatch
// would have. It reports false when the connection is to end.
func (c *client) finishLoopBatch(h *loopHandoff) bool {
	if !h.flushed {
		if h.sent < 0 {
			c.execFrom(h.cmds, h.next, h.settle)
			c.noteBatch()
			if !c.flush() {
				return false
			}
		} else if !c.released(c.wrote(c.send(c.out[h.sent:]))) {
			return false
		}
		c.endBatch()
		c.noteSlow(h.cmds, h.start)
	}
	return c.settleBatch()
}

// closeRaw closes the client's connection as closeRaw does, and wakes its goroutine if the loop waits for it.
func (c *client) closeRaw() {
	closeRaw(c.nc)
	if c.lp != nil {
		c.lp.dead.Store(true)
		c.lp.signal()
	}
}

// startLoops starts one event loop per P (event_loops), once, under s.mu: the loops run until Close.
func (s *Server) startLoops() {
	if !s.opt.Config.EventLoops || !haveEventLoops {
		return
	}
	var loops []*eventLoop
	for range runtime.GOMAXPROCS(0) {
		l, err := newEventLoop()
		if err != nil {
			s.log.Warn("event loop not started: clients are served by their goroutines", "err", err)
			break
		}
		loops = append(loops, l)
		s.loopsWG.Add(1)
		go func() {
			defer s.loopsWG.Done()
			l.run()
		}()
	}
	s.loops.Store(&loops)
}

// eventLoops returns the event loops, none before Serve or with event_loops off.
func (s *Server) eventLoops() []*eventLoop {
	if p := s.loops.Load(); p != nil {
		return *p
	}
	return nil
}

// loopCounts sums the event loops' batches: answered whole, and handed over.
func (s *Server) loopCounts() (batches, handovers int64) {
	for _, l := range s.eventLoops() {
		b, h := l.counts()
		batches += b
		handovers += h
	}
	return batches, handovers
}

// loopFor returns the event loop for the client numbered id, nil when there is none.
func (s *Server) loopFor(id int64) *eventLoop {
	loops := s.eventLoops()
	if len(loops) == 0 {
		return nil
	}
	return loops[id%int64(len(loops))]
}
