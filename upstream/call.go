package upstream

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// Call is one batch of commands written contiguously on one connection, and the reply frames that answer it, in
// order. A Call belongs to one goroutine at a time and is reused batch after batch: Do overwrites its fields.
//
// A Call whose wait ends before all its replies arrived (a timeout) is abandoned, not its connection: the
// replies that come later are read and dropped by the connection's reader, and the Call is free for its next
// batch at once.
type Call struct {
	// Replies holds the reply frames as received, concatenated. It is reused by the next Do.
	Replies []byte
	// Ends[i] is the offset in Replies where frame i ends.
	Ends []int
	// Err says why fewer frames than wanted arrived (connection lost, timeout). Frames that did arrive are kept.
	Err error
	// Asked is true when some of the frames came from a node an ASK redirect named (Cluster.Do): the node a slot
	// is being migrated to, which may be one featcache has no tracking connection on yet, so that its writes are
	// not announced. What such frames say of a key is to be served, not cached.
	Asked bool

	// Req is scratch space for building the payload of the next batch; Do and Forward do not touch it, Fetch
	// builds its payload there.
	Req Payload
	// Cancel, if not nil, ends a wait for the call's replies when it is closed, as a timeout would (Err is
	// ErrClosed): a server shutting down does not wait for a Redis that hangs. It is kept batch after batch.
	Cancel <-chan struct{}

	op       *op           // its place in a link's queue while in flight; replaced after an abandon
	pool     *Pool         // where it was sent, for the health accounting of Wait
	bounded  bool          // waited for at most the pool's Timeout (else its CommandTimeout)
	deadline time.Time     // when Wait gives up; zero: never
	pending  bool          // started, and not waited for yet
	queued   bool          // its op is in a link's queue (else Err says why not)
	arrived  bool          // WaitUntil saw every frame arrive: Wait need not wait
	late     bool          // queued behind a call already late: WaitUntil does not wait
	bg       chan struct{} // Client.Start in front of a cluster: closed when the round trip is over; Replies,
	// Ends and Err belong to that round trip's goroutine until then
	// again is the payload of a call that only reads (Payload.Writes false), started by the Client on a single
	// node, and its commands: Wait sends it again, alone, when the shared connection it went on is lost (alone).
	again  []byte
	againN int
}

// NewCall returns an empty, reusable Call.
func NewCall() *Call { return &Call{} }

// Len is the number of reply frames received.
func (c *Call) Len() int { return len(c.Ends) }

// Frame returns reply frame i; the slice points into Replies.
func (c *Call) Frame(i int) []byte {
	start := 0
	if i > 0 {
		start = c.Ends[i-1]
	}
	return c.Replies[start:c.Ends[i]]
}

func (c *Call) reset(n int) {
	if cap(c.Replies) > maxKeptBuf {
		c.Replies = nil
	}
	c.Replies = c.Replies[:0]
	c.Ends = c.Ends[:0]
	c.Err = nil
	c.Asked = false
}

// prepare readies c to be started: reset, and no wait pending.
func (c *Call) prepare(n int) {
	c.reset(n)
	c.pending, c.queued, c.arrived, c.late, c.bg = false, false, false, false, nil
}

// op is a Call's place in a link's queue. The link's reader appends the Call's frames under mu, a read's worth at
// a time; a caller that stops waiting detaches the Call under mu (call = nil), after which the reader only counts
// the op's remaining frames and drops them. An op is reused by its Call's next batch unless it was abandoned.
type op struct {
	mu       sync.Mutex
	call     *Call // whose buffers get the frames; nil once abandoned, or for the link's own commands
	want     int
	got      int
	finished bool          // every frame arrived, or the connection failed
	enq      int64         // nanotime when queued
	done     chan struct{} // signalled once when finished
	timer    *time.Timer   // Wait's, kept for the next batch
	onFrame  func([]byte)  // for the link's own commands: what to do with their reply
}

// Do writes payload (n complete RESP commands) on a shared connection and waits for their n reply frames, at most
// the pool's Timeout: Do is for featcache's own reads (cache fills, health checks). The frames are stored in call.
// payload may be reused as soon as Do returns. The error is call.Err: on failure the frames that arrived are kept
// and the rest are missing. When the oldest call on every shared connection has waited longer than the timeout
// (Redis hung or busy), Do fails at once with ErrTimeout instead of queueing behind it.
func (p *Pool) Do(call *Call, payload []byte, n int) error {
	p.Start(call, payload, n, false)
	return call.Wait()
}

// Forward writes payload (n complete RESP commands forwarded for clients) on a shared connection and waits for
// their n reply frames as a direct client of Redis would: as long as Redis takes, or at most CommandTimeout when
// it is set (ErrCommandTimeout). Otherwise as Do.
func (p *Pool) Forward(call *Call, payload []byte, n int) error {
	p.Start(call, payload, n, true)
	return call.Wait()
}

// route is Forward (fwd) or Do of one node's part of a cluster's round trip, on the node's shared connections for
// payloads that may write (writes) or for those that only read; one that only reads is sent again, alone, if its
// connection is lost (Call.alone), as on a single node.
func (p *Pool) route(call *Call, payload []byte, n int, fwd, writes bool) error {
	g := p.reads
	if writes {
		g = p.writes
	}
	p.start(call, payload, n, fwd, g)
	if !writes {
		call.readsAgainBytes(payload, n)
	}
	return call.Wait()
}

// Start writes payload (n commands) on a shared connection as Forward (fwd) or Do does, and returns without
// waiting: Wait collects the replies within the call's bound, and WaitUntil waits for them for a shorter while
// first, for a batch that mixes featcache's own reads with forwarded commands. payload may be reused as soon as
// Start returns; call must be waited for (Wait) before it is started again.
func (p *Pool) Start(call *Call, payload []byte, n int, fwd bool) {
	// Without a Payload to tell whether forwarded commands write, they may take any connection; featcache's own
	// reads take the reads group's.
	g := p.reads
	if fwd {
		g = p.all
	}
	p.start(call, payload, n, fwd, g)
}

// start is Start on a connection of the group g: the Client (and a cluster's route) chooses the writes group for a
// payload that may hold a write (Payload.Writes), the reads group for one that only reads (Pool.group).
func (p *Pool) start(call *Call, payload []byte, n int, fwd bool, g *laneGroup) {
	call.prepare(n)
	call.pool, call.bounded = p, !fwd
	if n == 0 {
		return
	}
	call.pending = true
	if call.op == nil {
		call.op = &op{done: make(chan struct{}, 1)}
	}
	o := call.op
	o.call, o.want, o.got, o.finished = call, n, 0, false
	l, err := p.link(g)
	if err == nil && !l.enqueue(call, payload) {
		// l failed after p.link chose it (another call read its EOF): that says nothing of Redis, and the call
		// takes the lane's next connection, as it would have a moment later.
		if l, err = p.link(g); err == nil {
			l.enqueue(call, payload)
		}
	}
	if err != nil {
		call.Err = err
	}
}

// WaitUntil waits for the replies of a started call until t at most, and reports whether they have all arrived
// (or the call failed): then Wait returns at once. Otherwise the call stays in flight and Wait goes on waiting
// within the call's own bound. WaitUntil returns false at once for a call queued behind one that was already late
// (Redis hung or busy) when it was started.
func (c *Call) WaitUntil(t time.Time) bool {
	if c.bg != nil {
		timer := time.NewTimer(time.Until(t))
		defer timer.Stop()
		select {
		case <-c.bg:
			return true
		case <-timer.C:
			return false
		}
	}
	switch {
	case !c.pending || c.arrived:
		return true
	case !c.queued:
		return true
	case c.late:
		return false
	}
	o := c.op
	if o.timer == nil {
		o.timer = time.NewTimer(time.Until(t))
	} else {
		o.timer.Reset(time.Until(t))
	}
	select {
	case <-o.done:
		o.timer.Stop()
		c.arrived = true
		return true
	case <-o.timer.C:
	case <-c.Cancel:
		o.timer.Stop()
	}
	return false
}

// Wait waits for the replies of a started call and returns call.Err; it returns at once for a call with nothing
// to wait for. When the call's bound passes first, or Cancel is closed, the call is abandoned: Err is ErrTimeout
// (ErrCommandTimeout for a forwarded call, ErrClosed for Cancel) and the frames that arrived are kept.
func (c *Call) Wait() error {
	if c.bg != nil {
		<-c.bg
		c.bg = nil
		return c.Err
	}
	if !c.pending {
		return c.Err
	}
	c.pending = false
	sent := c.queued
	if c.queued {
		c.queued = false
		if !c.arrived {
			c.waitOp(c.op)
		}
		c.arrived = false
	}
	if sent && c.again != nil && c.Err != nil && lost(c.Err) {
		c.alone()
	}
	c.again = nil
	if p := c.pool; p != nil {
		if c.bounded || !errors.Is(c.Err, ErrCommandTimeout) {
			// A forwarded command that outlives command_timeout says nothing about Redis's health.
			p.observe(c.Err)
		}
	}
	return c.Err
}

func (c *Call) waitOp(o *op) {
	var expired <-chan time.Time
	if !c.deadline.IsZero() {
		d := time.Until(c.deadline)
		if o.timer == nil {
			o.timer = time.NewTimer(d)
		} else {
			o.timer.Reset(d)
		}
		expired = o.timer.C
	}
	var err error
	select {
	case <-o.done:
		if expired != nil {
			o.timer.Stop()
		}
		return
	case <-expired:
		err = ErrTimeout
		if !c.bounded {
			err = ErrCommandTimeout
		}
	case <-c.Cancel:
		if expired != nil {
			o.timer.Stop()
		}
		err = ErrClosed
	}
	o.mu.Lock()
	if o.finished {
		o.mu.Unlock()
		<-o.done
		return
	}
	o.call = nil // the reader drops what comes for it from now on
	o.mu.Unlock()
	c.op = nil // the next batch takes a fresh op: this one stays queued until its frames have passed
	c.Err = err
}

// lost reports whether err says that the shared connection a call went on was lost (closed by Redis, reset), as
// opposed to a wait that ended (timeouts, Cancel) or a connection featcache closed on purpose.
func lost(err error) bool {
	for _, e := range []error{ErrTimeout, ErrCommandTimeout, ErrClosed, ErrRetargeted, ErrNoAddress} {
		if errors.Is(err, e) {
			return false
		}
	}
	return true
}

// alone sends the payload of a call that only reads again, on a dedicated connection of its own, after the shared
// connection it went on was lost, and waits for its replies within the call's bound counted anew. A shared
// connection carries many clients' reads at once, and Redis runs what it reads from a connection in one go: the
// replies of big values read by many clients together can pass a client-output-buffer-limit (or
// maxmemory-clients) that none of those clients, connected straight to Redis, would reach, and Redis then closes
// the connection. Alone, the payload is what its client would have sent Redis itself. Reads are safe to send
// twice; a write never is, and a payload with one is not sent again. Another client that kills featcache's
// connections (CLIENT KILL TYPE normal) can kill the new one too: it is sent again up to resends times in all while
// its connection is lost that way. If a new connection cannot be had, or the wait fails, Err says so.
func (c *Call) alone() {
	for range resends {
		if !c.sendAlone() {
			return
		}
	}
}

// resends bounds how many times alone sends a payload.
const resends = 3

// sendAlone is one send of alone; it reports whether its connection was lost too, so that another may succeed.
func (c *Call) sendAlone() (lostAgain bool) {
	p := c.pool
	conn, err := p.dedicated(!c.bounded)
	if err != nil {
		c.Err = err
		return false
	}
	deadline := p.CommandDeadline(time.Now())
	if c.bounded {
		deadline = time.Now().Add(p.opt.Timeout)
	}
	var cancelled atomic.Bool
	if c.Cancel != nil {
		// A server shutting down does not wait for the resend either.
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			select {
			case <-c.Cancel:
				cancelled.Store(true)
				conn.nc.Close()
			case <-stop:
			}
		}()
	}
	if err := conn.Do(c, c.again, c.againN, deadline); err != nil {
		conn.Close()
		if cancelled.Load() {
			c.Err = ErrClosed
			return false
		}
		return lost(err)
	}
	if cancelled.Load() {
		conn.Close() // closed under Do's feet after the replies came: not for reuse
		return false
	}
	conn.Release()
	return false
}

// readsAgain lets Wait send p again, alone, if the call's shared connection is lost, when p only reads. p must
// stay unchanged until Wait returns.
func (c *Call) readsAgain(p *Payload) {
	if !p.Writes() {
		c.readsAgainBytes(p.Bytes(), p.Len())
	}
}

// readsAgainBytes is readsAgain of payload (n commands) that only reads.
func (c *Call) readsAgainBytes(payload []byte, n int) {
	if c.pending {
		c.again, c.againN = payload, n
	}
}
