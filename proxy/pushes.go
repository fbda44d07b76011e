package proxy

import (
	"sync"

	"featcache/internal/resp"
)

// The messages of the RESP2 redirect, Pub/Sub messages on __redis__:invalidate, and the head of RESP3's push.
var (
	invalidateMessage = resp.AppendBulkString(resp.AppendBulkString(resp.AppendArray(nil, 3), "message"),
		"__redis__:invalidate")
	invalidateNull = resp.AppendNullBulk(append([]byte(nil), invalidateMessage...))
	invalidatePush = resp.AppendBulkString(append([]byte(nil), ">2\r\n"...), "invalidate")
)

// deliver queues an invalidation of keys (nil: the null invalidation) for st's client on the connection Redis
// would send it on, in the form Redis would: to the redirect target if there is one, else to the client itself; a
// RESP3 connection gets the push ">2 invalidate keys", a RESP2 redirect target in Pub/Sub mode the message
// "message __redis__:invalidate keys", any other RESP2 connection nothing. A null invalidation is encoded in the
// tracking client's protocol, the frame around it in the target's, as Redis does. A redirect target that left
// makes the redirect broken, and a RESP3 tracking client is told so (tracking-redir-broken). t.mu is held.
func (t *clientTracking) deliver(st *trackState, keys [][]byte) {
	target := st.c
	if st.redirID != 0 {
		target = st.redir
		if target != nil && target.gone.Load() {
			st.redir, target = nil, nil
		}
		if target == nil {
			st.broken = true
			if protoOf(st.c) == 3 {
				frame := resp.AppendBulkString(append([]byte(nil), ">2\r\n"...), "tracking-redir-broken")
				st.c.push(resp.AppendInt(frame, st.redirID))
			}
			return
		}
	}
	var frame []byte
	switch {
	case protoOf(target) == 3:
		frame = append(frame, invalidatePush...)
	case st.redirID != 0 && target.subscribed():
		frame = append(frame, invalidateMessage...)
	default:
		return // RESP2 has no pushes outside Pub/Sub mode
	}
	switch {
	case keys != nil:
		frame = resp.AppendArray(frame, len(keys))
		for _, k := range keys {
			frame = resp.AppendBulk(frame, k)
		}
	case protoOf(st.c) == 3:
		frame = append(frame, "_\r\n"...)
	default:
		frame = resp.AppendNullBulk(frame)
	}
	t.delivered.Add(1)
	target.push(frame)
}

// protoOf is the protocol c speaks (HELLO), as it last published it.
func protoOf(c *client) int {
	c.info.mu.Lock()
	defer c.info.mu.Unlock()
	return c.info.proto
}

// subscribed reports whether the client is in Pub/Sub mode (Redis's CLIENT_PUBSUB): subscribed to a channel, a
// pattern or a shard channel.
func (c *client) subscribed() bool {
	c.info.mu.Lock()
	defer c.info.mu.Unlock()
	return !c.info.monitor && c.info.sub+c.info.psub+c.info.ssub > 0
}

// pushQueue holds the invalidations waiting to be written to one client; a goroutine of its own writes them, so
// that a client that does not read holds up neither the tracking streams nor the others. The bytes it holds are
// drawn from limits.max_clients_memory, as replies are.
type pushQueue struct {
	c       *client
	mu      sync.Mutex
	buf     []byte
	stopped bool
	held    bool // the client's own write is in flight: what is queued waits for its reply (holdPushes)
	kick    chan struct{}
	done    chan struct{}
}

// pushQueue returns the client's push queue, starting it if need be. clientTracking.mu is held.
func (c *client) pushQueue() *pushQueue {
	q := c.pushes
	if q == nil {
		q = &pushQueue{c: c, kick: make(chan struct{}, 1), done: make(chan struct{})}
		c.pushes = q
		go q.run()
	}
	return q
}

// holdPushes keeps the invalidations queued for a tracking client from being written until its next flush, while
// its own write is in flight: Redis 7.0 writes the invalidations of a client's own write after the write's reply
// (it defers them past the command), and they may reach featcache's queue before the reply is written.
func (c *client) holdPushes() {
	t := c.srv.ctrack
	t.mu.Lock()
	q := c.pushQueue()
	t.mu.Unlock()
	q.mu.Lock()
	q.held = true
	q.mu.Unlock()
	c.pushHold = true
}

// releasePushes writes what the push queue held, once the replies before it have been written (flush), and lets
// the queue's goroutine write again. The client goroutine writes them itself: the next reply must not overtake
// them, as Redis writes them before it reads the client's next command.
func (c *client) releasePushes() {
	c.pushHold = false
	q := c.pushes
	q.mu.Lock()
	q.held = false
	out := q.buf
	q.buf = nil
	q.mu.Unlock()
	if len(out) == 0 {
		return
	}
	if !c.send(out) {
		c.closing = true
	}
	c.srv.budget.give(int64(len(out)))
}

// push queues frame for the client. Past limits.max_output_bytes unread, or when limits.max_clients_memory has
// no room for it, the client is disconnected, as Redis disconnects a client over its output buffer limit.
func (c *client) push(frame []byte) {
	q := c.pushQueue()
	q.mu.Lock()
	if q.stopped {
		q.mu.Unlock()
		return
	}
	over := int64(len(q.buf)+len(frame)) > c.srv.maxOutput
	if over || !c.srv.budget.take(int64(len(frame))) {
		q.mu.Unlock()
		reason := "invalidations left unread past limits.max_output_bytes"
		if over {
			c.srv.stats.OutputLimits.Add(1)
		} else {
			c.srv.stats.MemoryLimits.Add(1)
			reason = "invalidations past limits.max_clients_memory"
		}
		c.srv.log.Info("client disconnected", "client", c.id, "reason", reason)
		c.closeRaw()
		return
	}
	q.buf = append(q.buf, frame...)
	q.mu.Unlock()
	select {
	case q.kick <- struct{}{}:
	default:
	}
}

// run writes what is queued, between the client's replies (send holds the client's write lock), until the queue
// stops or the client is gone.
func (q *pushQueue) run() {
	var spare []byte
	for {
		select {
		case <-q.done:
			return
		case <-q.kick:
		}
		q.mu.Lock()
		if q.held {
			q.mu.Unlock() // releasePushes writes what is held, from the client goroutine
			continue
		}
		out := q.buf
		q.buf = spare[:0]
		q.mu.Unlock()
		ok := q.c.send(out)
		q.c.srv.budget.give(int64(len(out)))
		if !ok {
			return
		}
		if cap(out) <= retainBytes {
			spare = out
		} else {
			spare = nil
		}
	}
}

// stop ends the queue when its client has gone: what it still holds is dropped and given back to the budget.
func (q *pushQueue) stop() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.stopped {
		return
	}
	q.stopped = true
	q.c.srv.budget.give(int64(len(q.buf)))
	q.buf = nil
	close(q.done)
}
