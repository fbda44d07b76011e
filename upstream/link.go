package upstream

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"featcache/internal/resp"
)

// lane is one of a pool's shared connections, as a place: its link is replaced when the connection fails.
type lane struct {
	pool  *Pool
	group *laneGroup // the kind of payload it carries
	cur   atomic.Pointer[link]

	mu       sync.Mutex
	lastFail time.Time
	lastErr  error
}

func (s *lane) reconnect() (*link, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l := s.cur.Load(); l != nil && !l.broken.Load() {
		return l, nil
	}
	// A dead upstream is dialed at most once per maxRedialGap per lane; requests in between fail at once with the
	// last error, so a down Redis costs neither dial storms nor waits longer than one dial. Once any connection
	// of the pool has been dialed since this lane failed, the upstream is back: dial at once.
	if s.lastErr != nil && time.Since(s.lastFail) < maxRedialGap && s.pool.lastDial.Load() < s.lastFail.UnixNano() {
		return nil, s.lastErr
	}
	nc, _, named, err := s.pool.dial()
	if err != nil {
		s.lastFail, s.lastErr = time.Now(), err
		return nil, err
	}
	s.pool.lastDial.Store(time.Now().UnixNano())
	s.lastErr = nil
	var setName []byte
	if !named {
		setName = resp.AppendCommand(nil, "CLIENT", "SETNAME", s.pool.opt.ClientName)
	}
	l := newLink(s.pool, s.group, nc, s.pool.opt.Timeout, s.pool.opt.OnReadOnly, setName)
	s.cur.Store(l)
	return l, nil
}

// link is one shared TCP connection: writers append batches and queue their ops, one reader goroutine hands reply
// frames to the ops in order. A slow reply holds up only the calls queued behind it, which wait within their own
// bounds; the connection is closed only when it fails (or the pool is closed or retargeted), never because a
// reply is late, so that every client gets its own reply when Redis gives it.
type link struct {
	pool       *Pool
	group      *laneGroup // where it tells that a batch is forming on it, and in the pool's all
	nc         net.Conn
	timeout    time.Duration
	onReadOnly func() // PoolOptions.OnReadOnly
	broken     atomic.Bool
	done       chan struct{} // closed when the reader exits

	kick chan struct{} // wakes the writer goroutine: wbuf has bytes to send

	// setName is CLIENT SETNAME for a connection whose handshake Redis answered BUSY or LOADING; it is sent before
	// a later batch until Redis accepts it (named), one at a time (naming).
	setName []byte
	named   atomic.Bool
	naming  atomic.Bool

	// headEnq is the nanotime at which the oldest queued op was queued, 0 when none is: late reads it without mu.
	headEnq atomic.Int64

	mu     sync.Mutex
	err    error
	wbuf   []byte
	spare  []byte
	kicked bool // a wake-up is pending: enqueue need not kick again
	queue  []*op
	head   int
}

func newLink(p *Pool, g *laneGroup, nc net.Conn, timeout time.Duration, onReadOnly func(), setName []byte) *link {
	l := &link{pool: p, group: g, nc: nc, timeout: timeout, onReadOnly: onReadOnly, done: make(chan struct{}),
		kick: make(chan struct{}, 1), setName: setName}
	l.named.Store(setName == nil)
	go l.readLoop()
	go l.writeLoop()
	return l
}

// late reports whether the oldest call on the connection has waited longer than the timeout: Redis has not
// answered it (hung, or busy with a script or a slow command), and a bounded call queued behind it would only
// wait out its own timeout.
func (l *link) late() bool { return l.lateAt(nanotime()) }

func (l *link) lateAt(now int64) bool {
	enq := l.headEnq.Load()
	return enq != 0 && now-enq > int64(l.timeout)
}

// enqueue queues call and its payload for the writer goroutine. A bounded call that would wait behind a late one
// fails at once with ErrTimeout instead; a forwarded one is queued all the same, and marked late. It reports false,
// with the link's error in c.Err, if the link has failed: nothing was sent.
func (l *link) enqueue(c *Call, payload []byte) bool {
	l.mu.Lock()
	if l.err != nil {
		c.Err = l.err
		l.mu.Unlock()
		return false
	}
	now := nanotime()
	late := l.lateAt(now)
	if c.bounded && late {
		l.mu.Unlock()
		c.Err = ErrTimeout
		return true
	}
	if !l.named.Load() && l.naming.CompareAndSwap(false, true) {
		l.push(&op{want: 1, enq: now, done: make(chan struct{}, 1), onFrame: l.nameReply})
		l.wbuf = append(l.wbuf, l.setName...)
	}
	bound := l.timeout
	if !c.bounded {
		bound = c.pool.opt.CommandTimeout
	}
	c.deadline = time.Time{}
	if bound > 0 {
		c.deadline = epoch.Add(time.Duration(now) + bound)
	}
	c.op.enq = now
	c.queued, c.late = true, late
	l.push(c.op)
	l.wbuf = append(l.wbuf, payload...)
	kick := !l.kicked
	l.kicked = true
	l.mu.Unlock()
	if kick {
		// A batch starts forming here: calls started before the writer takes it join it (Pool.link).
		l.group.forming.Store(l)
		l.pool.all.forming.Store(l)
		l.kick <- struct{}{}
	}
	return true
}

// nameReply is what the reader does with the reply to a later CLIENT SETNAME.
func (l *link) nameReply(frame []byte) {
	if len(frame) > 0 && frame[0] == resp.TypeSimple {
		l.named.Store(true)
	}
	l.naming.Store(false)
}

// writeLoop sends what clients queued. Before each write it yields once, so that every client the network poller
// made runnable together gets to queue its batch first: one write syscall then carries all of them, and Redis
// answers them in one read. Under light load the yield costs a scheduling round, not a syscall.
func (l *link) writeLoop() {
	for {
		select {
		case <-l.done:
			return
		case <-l.kick:
		}
		runtime.Gosched()
		l.mu.Lock()
		buf := l.wbuf
		l.wbuf = l.spare[:0]
		l.kicked = false
		l.mu.Unlock()
		l.group.forming.CompareAndSwap(l, nil)
		l.pool.all.forming.CompareAndSwap(l, nil)
		if len(buf) == 0 {
			continue
		}
		_, err := l.nc.Write(buf)
		l.mu.Lock()
		if cap(buf) <= maxKeptBuf {
			l.spare = buf[:0]
		} else {
			l.spare = nil
		}
		l.mu.Unlock()
		if err != nil {
			// The reader sees the closed connection and fails every queued call.
			l.fail(err)
			return
		}
	}
}

// fail marks the link broken with err (the first reason wins) and closes the socket; the reader then fails every
// queued call. Only the reader touches calls that are queued, so no call is signalled twice.
func (l *link) fail(err error) {
	l.mu.Lock()
	if l.err == nil {
		l.err = err
	}
	l.broken.Store(true) // before enqueue can see err: a call refused here finds the lane's next link (Pool.start)
	l.mu.Unlock()
	l.nc.Close()
}

func (l *link) peek() *op {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.head < len(l.queue) {
		return l.queue[l.head]
	}
	return nil
}

// push queues o. Caller holds l.mu.
func (l *link) push(o *op) {
	if l.head == len(l.queue) {
		l.headEnq.Store(o.enq)
	}
	l.queue = append(l.queue, o)
}

func (l *link) pop() {
	l.mu.Lock()
	l.queue[l.head] = nil
	l.head++
	if l.head == len(l.queue) {
		l.queue = l.queue[:0]
		l.head = 0
		l.headEnq.Store(0)
	} else {
		l.headEnq.Store(l.queue[l.head].enq)
	}
	l.mu.Unlock()
}

// readLoop is the link's reader: it hands reply frames to the queued ops in order, a read's worth at a time, until
// the connection fails.
func (l *link) readLoop() {
	var (
		buf        = make([]byte, readBufSize)
		start, end int
		sc         resp.Scanner
		cur        *op // the op frames go to; its mu is held while one read's frames are handed to it
		err        error
	)
	for err == nil {
		var nr int
		nr, err = l.nc.Read(buf[end:])
		end += nr
		for start < end {
			n, serr := sc.Next(buf[start:end])
			if serr != nil {
				err = serr
				break
			}
			if n == 0 {
				break
			}
			frame := buf[start : start+n]
			start += n
			if resp.IsPush(frame) {
				// Out-of-band data, never a reply. A shared connection subscribes and tracks nothing, so Redis has
				// no reason to push on it; one that arrived (while the connection spoke RESP3 for a client) is
				// not taken as the reply to the next command.
				continue
			}
			if frame[0] == resp.TypeError && l.onReadOnly != nil && bytes.HasPrefix(frame, readOnlyReply) {
				l.onReadOnly()
			}
			if cur == nil {
				if cur = l.peek(); cur == nil {
					// A frame nobody asked for: the stream is out of step, nothing after it can be matched.
					err = fmt.Errorf("%w: unsolicited reply %q", resp.ErrBadFrame, truncate(frame, 64))
					break
				}
				cur.mu.Lock()
			}
			cur.got++
			if c := cur.call; c != nil {
				c.Replies = append(c.Replies, frame...)
				c.Ends = append(c.Ends, len(c.Replies))
			} else if cur.onFrame != nil {
				cur.onFrame(frame)
			}
			if cur.got == cur.want {
				cur.finished = true
				cur.mu.Unlock()
				l.pop()
				cur.done <- struct{}{}
				cur = nil
			}
		}
		if cur != nil {
			// Between reads a caller whose bound passed may abandon it.
			cur.mu.Unlock()
			cur = nil
		}
		buf, start, end = compactReadBuf(buf, start, end)
	}
	l.failQueue(err)
}

// compactReadBuf makes room for the next read after buf[start:end] is what is left unread: an empty buffer starts
// over (shrunk back to readBufSize if a large frame grew it), and a partial frame that reaches the end of the
// buffer moves to the front, the buffer growing when the frame fills it.
func compactReadBuf(buf []byte, start, end int) ([]byte, int, int) {
	switch {
	case start == end:
		start, end = 0, 0
		if len(buf) > readBufSize {
			buf = make([]byte, readBufSize)
		}
	case end == len(buf):
		// A partial frame reaches the end of the buffer: move it to the front, growing when it fills the buffer.
		if start == 0 {
			nb := make([]byte, 2*len(buf))
			copy(nb, buf[:end])
			buf = nb
		} else {
			end = copy(buf, buf[start:end])
			start = 0
		}
	}
	return buf, start, end
}

// failQueue ends the link after its reader stopped on err: it fails the link, fails every call still queued on it
// with the reason the link failed, and closes done.
func (l *link) failQueue(err error) {
	l.fail(err)
	l.mu.Lock()
	reason := l.err
	pending := l.queue[l.head:]
	l.queue, l.head = nil, 0
	l.headEnq.Store(0)
	l.mu.Unlock()
	if errors.Is(reason, net.ErrClosed) {
		reason = fmt.Errorf("upstream: connection closed: %w", reason)
	}
	for _, o := range pending {
		o.mu.Lock()
		if o.call != nil {
			o.call.Err = reason
		}
		o.finished = true
		o.mu.Unlock()
		o.done <- struct{}{}
	}
	close(l.done)
}
