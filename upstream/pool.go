package upstream

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"featcache/internal/resp"
)

const (
	// DefaultConns is the number of shared connections a Pool keeps when PoolOptions.Conns is zero.
	DefaultConns = 4
	// DefaultTimeout bounds featcache's own waits (cache fills, health checks, connection setup) when
	// PoolOptions.Timeout is zero.
	DefaultTimeout = time.Second
	// DefaultMaxIdle is how many idle dedicated connections a Pool keeps when PoolOptions.MaxIdle is zero.
	DefaultMaxIdle = 16

	readBufSize  = 64 << 10
	maxKeptBuf   = 1 << 20 // buffers grown past this by one large frame are dropped after use
	maxRedialGap = time.Second
)

var (
	// ErrTimeout means the upstream did not answer within the timeout. The call was abandoned, not the
	// connection: the replies that come later are read and dropped. A write in the batch may or may not have been
	// applied.
	ErrTimeout = errors.New("upstream: no reply within timeout")
	// ErrCommandTimeout means a forwarded command got no reply within PoolOptions.CommandTimeout; as with
	// ErrTimeout, the call was abandoned and the command may or may not have been applied.
	ErrCommandTimeout = errors.New("upstream: no reply within the command timeout")
	// ErrClosed means the pool was closed.
	ErrClosed = errors.New("upstream: pool closed")
	// ErrRetargeted means the connection was closed because the pool was pointed at another upstream (Retarget:
	// the primary moved); a write in flight on it may or may not have been applied by the old one.
	ErrRetargeted = errors.New("upstream: connection closed: the primary moved")
	// ErrNoAddress means the pool has no upstream address yet (the primary is not known).
	ErrNoAddress = errors.New("upstream: no primary known yet")
)

// PoolOptions configures a Pool.
type PoolOptions struct {
	// Addr is the upstream's host:port.
	Addr string
	// Username and Password authenticate every connection (AUTH); empty means no AUTH.
	Username, Password string
	// Conns is the number of shared connections. If zero, DefaultConns is used.
	Conns int
	// Timeout bounds featcache's own waits: Do (cache fills, health checks, featcache's own reads), dialing and
	// the connection's setup (AUTH, CLIENT SETNAME). If zero, DefaultTimeout is used. Dedicated connections take
	// their own deadlines.
	Timeout time.Duration
	// CommandTimeout bounds the wait for the replies of commands forwarded for clients (Forward). Zero means no
	// bound: featcache waits for Redis's reply as a direct client would, however long a script or a slow command
	// keeps Redis busy.
	CommandTimeout time.Duration
	// MaxIdle is how many idle dedicated connections are kept for reuse. If zero, DefaultMaxIdle is used.
	MaxIdle int
	// ClientName is set with CLIENT SETNAME on every connection so operators can find featcache in CLIENT LIST.
	// Empty means no name.
	ClientName string
	// TLS, if not nil, makes every connection TLS with this configuration; an empty ServerName verifies the host
	// of Addr. Ignored when Dial is set.
	TLS *tls.Config
	// Dial opens a connection. If nil, a net.Dialer with Timeout is used (wrapped in a tls.Dialer with TLS).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// OnHealth, if not nil, is called when the upstream starts or stops answering (see Pool.Healthy), with the
	// failure that made it stop (nil when it answers again). It runs on the goroutine that saw the change and
	// must be quick.
	OnHealth func(up bool, err error)
	// OnReadOnly, if not nil, is called when a shared connection receives a -READONLY error reply: the node is a
	// replica now (a failover demoted it). It runs on the connection's reader goroutine and must not block.
	OnReadOnly func()
}

// Pool multiplexes batches of commands from many clients over a few shared RESP2 connections to one upstream
// address, and hands out dedicated connections for state that must not be shared (transactions with WATCH,
// blocking commands, pub/sub).
//
// Replies are copied as the upstream sent them: the pool never decodes a reply, so a RESP2 client sees exactly the
// bytes Redis would have sent it. A Pool is safe for concurrent use.
type Pool struct {
	opt   PoolOptions
	addr  atomic.Pointer[string] // where connections are dialed: opt.Addr, until Retarget
	lanes []*lane
	next  atomic.Uint32

	idleMu sync.Mutex // guards idle and busy, and orders them with Retarget
	idle   []*Conn
	busy   map[*Conn]struct{} // dedicated connections handed out and not yet released or closed

	lastDial atomic.Int64 // unix nanoseconds of the last shared connection dialed and prepared successfully
	closed   atomic.Bool

	// Health: the outcome of the latest round trip on a shared connection (Do, and the Client's PING).
	healthy  atomic.Bool
	reached  atomic.Bool // answered at least once
	healthMu sync.Mutex  // orders OnHealth calls with the state they report
}

// NewPool returns a pool for opt.Addr. It does not dial: connections are opened on first use and reopened after a
// failure, at most once per second per shared connection while the upstream stays unreachable.
func NewPool(opt PoolOptions) *Pool {
	if opt.Conns <= 0 {
		opt.Conns = DefaultConns
	}
	if opt.Timeout <= 0 {
		opt.Timeout = DefaultTimeout
	}
	if opt.MaxIdle <= 0 {
		opt.MaxIdle = DefaultMaxIdle
	}
	if opt.Dial == nil {
		d := &net.Dialer{Timeout: opt.Timeout, KeepAlive: 15 * time.Second}
		opt.Dial = d.DialContext
		if opt.TLS != nil {
			// The handshake is bounded by the dial's context, like the TCP connect.
			opt.Dial = (&tls.Dialer{NetDialer: d, Config: opt.TLS}).DialContext
		}
	}
	p := &Pool{opt: opt, busy: make(map[*Conn]struct{})}
	p.addr.Store(&opt.Addr)
	p.lanes = make([]*lane, opt.Conns)
	for i := range p.lanes {
		p.lanes[i] = &lane{pool: p}
	}
	return p
}

// Addr is the upstream address the pool dials: PoolOptions.Addr, or the latest Retarget's.
func (p *Pool) Addr() string { return *p.addr.Load() }

// Retarget points the pool at addr, for a primary that moved (a Sentinel failover). Every connection to the
// previous address is closed: calls queued on shared ones fail with ErrRetargeted (unless their replies had
// arrived), and dedicated ones in use fail their owners' next read or write with ErrRetargeted (Release then drops
// them). Connections opened from then on go to addr, at once (the redial gap of a lane that failed against the
// old address does not apply). By the time Addr reports addr, no call can be sent to the old address any more.
// Retargeting to the current address does nothing.
func (p *Pool) Retarget(addr string) {
	// Every lane's lock is held across the change, so that no shared connection is dialed meanwhile (a dial in
	// progress finishes first, and its link is failed here), and idleMu, so that no dedicated one is handed out;
	// one being dialed to the old address is closed when it is registered (Dedicated).
	for _, s := range p.lanes {
		s.mu.Lock()
		defer s.mu.Unlock()
	}
	p.idleMu.Lock()
	defer p.idleMu.Unlock()
	if p.Addr() == addr {
		return
	}
	for _, s := range p.lanes {
		s.lastErr = nil
		if l := s.cur.Load(); l != nil {
			l.fail(ErrRetargeted)
		}
	}
	for _, c := range p.idle {
		c.nc.Close()
	}
	for c := range p.busy {
		c.moved.Store(true)
		c.nc.Close()
	}
	p.idle, p.busy = nil, make(map[*Conn]struct{})
	p.addr.Store(&addr)
}

// Timeout is the bound on featcache's own waits: cache fills, health checks, connection setup.
func (p *Pool) Timeout() time.Duration { return p.opt.Timeout }

// CommandTimeout is the bound on waits for forwarded commands' replies; zero means none.
func (p *Pool) CommandTimeout() time.Duration { return p.opt.CommandTimeout }

// CommandDeadline is when a forwarded command sent at start stops being waited for: start plus CommandTimeout,
// or the zero time (no deadline) when CommandTimeout is zero. It is meant for dedicated connections' Do.
func (p *Pool) CommandDeadline(start time.Time) time.Time {
	if p.opt.CommandTimeout <= 0 {
		return time.Time{}
	}
	return start.Add(p.opt.CommandTimeout)
}

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

// exchange is Forward when fwd is set, else Do.
func (p *Pool) exchange(call *Call, payload []byte, n int, fwd bool) error {
	if fwd {
		return p.Forward(call, payload, n)
	}
	return p.Do(call, payload, n)
}

// Start writes payload (n commands) on a shared connection as Forward (fwd) or Do does, and returns without
// waiting: Wait collects the replies within the call's bound, and WaitUntil waits for them for a shorter while
// first, for a batch that mixes featcache's own reads with forwarded commands. payload may be reused as soon as
// Start returns; call must be waited for (Wait) before it is started again.
func (p *Pool) Start(call *Call, payload []byte, n int, fwd bool) {
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
	l, err := p.link()
	if err != nil {
		call.Err = err
		return
	}
	l.enqueue(call, payload)
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
	if c.queued {
		c.queued = false
		if !c.arrived {
			c.waitOp(c.op)
		}
		c.arrived = false
	}
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

// Healthy reports whether the upstream answers: it turns false as soon as featcache's own round trip on a shared
// connection fails (a failed dial, a lost connection, no reply within the timeout: a hung or busy server) and true
// again when the Client's health PING is answered, at most a HealthInterval later; a PING answered with an error
// (LOADING, BUSY, ...) counts as a failure. Only the PING turns it true, so an upstream that answers some commands
// and not others does not flap. A forwarded command that waits long does not make it false.
func (p *Pool) Healthy() bool { return p.healthy.Load() }

// Reached reports whether the upstream has answered at least once since the pool was made.
func (p *Pool) Reached() bool { return p.reached.Load() }

// observe records the outcome of a round trip: a failure for Healthy, an answer for Reached.
func (p *Pool) observe(err error) {
	switch {
	case err == nil:
		if !p.reached.Load() {
			p.reached.Store(true)
		}
	case errors.Is(err, ErrClosed), errors.Is(err, ErrRetargeted):
		// Closed on purpose, not a failure of the upstream.
	case p.healthy.Load():
		p.setHealth(false, err)
	}
}

// setHealth records a health state and reports a change through OnHealth.
func (p *Pool) setHealth(up bool, err error) {
	p.healthMu.Lock()
	defer p.healthMu.Unlock()
	if p.healthy.Swap(up) == up {
		return
	}
	if p.opt.OnHealth != nil {
		p.opt.OnHealth(up, err)
	}
}

// link returns a live shared connection, dialing one if needed. A connection whose oldest call is already late
// (Redis has not answered it within the timeout) is passed over for one whose is not, if there is one; and when
// the connection's lane cannot be dialed now (a hung or busy Redis does not complete the handshake within the
// timeout), another lane's live connection is used, if there is one, rather than failing a request that Redis
// can still answer there.
func (p *Pool) link() (*link, error) {
	if p.closed.Load() {
		return nil, ErrClosed
	}
	i := int(p.next.Add(1)) % len(p.lanes)
	s := p.lanes[i]
	l := s.cur.Load()
	if l == nil || l.broken.Load() {
		var err error
		if l, err = s.reconnect(); err != nil {
			if o := p.other(i, false); o != nil {
				return o, nil
			}
			return nil, err
		}
	}
	if l.late() {
		if o := p.other(i, true); o != nil {
			return o, nil
		}
	}
	return l, nil
}

// other returns a live connection of a lane other than i (one that is not late, with onTime), or nil.
func (p *Pool) other(i int, onTime bool) *link {
	var found *link
	for k := 1; k < len(p.lanes); k++ {
		o := p.lanes[(i+k)%len(p.lanes)].cur.Load()
		if o == nil || o.broken.Load() {
			continue
		}
		if !o.late() {
			return o
		}
		if !onTime && found == nil {
			found = o
		}
	}
	return found
}

// Close closes every connection; calls in flight fail with ErrClosed or a connection error.
func (p *Pool) Close() {
	p.closed.Store(true)
	for _, s := range p.lanes {
		if l := s.cur.Load(); l != nil {
			l.fail(ErrClosed)
		}
	}
	p.idleMu.Lock()
	idle := p.idle
	p.idle = nil
	p.idleMu.Unlock()
	for _, c := range idle {
		c.nc.Close()
	}
}

// lane is one of a pool's shared connections, as a place: its link is replaced when the connection fails.
type lane struct {
	pool *Pool
	cur  atomic.Pointer[link]

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
	l := newLink(nc, s.pool.opt.Timeout, s.pool.opt.OnReadOnly, setName)
	s.cur.Store(l)
	return l, nil
}

// dial opens and prepares one connection to the pool's current address, which it returns too: AUTH and CLIENT
// SETNAME, in one round trip, bounded by the timeout. A CLIENT SETNAME that Redis refuses because it is busy
// running a script or loading its dataset (BUSY, LOADING) does not fail the connection, which is usable (AUTH
// passed): named reports false, and the caller names it later. Any other error reply fails the dial.
func (p *Pool) dial() (nc net.Conn, addr string, named bool, err error) {
	addr = p.Addr()
	if addr == "" {
		return nil, addr, false, ErrNoAddress
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.opt.Timeout)
	defer cancel()
	nc, err = p.opt.Dial(ctx, "tcp", addr)
	if err != nil {
		return nil, addr, false, fmt.Errorf("upstream: dial %s: %w", addr, err)
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	var req []byte
	n, nameAt := 0, -1
	if p.opt.Password != "" {
		if p.opt.Username != "" {
			req = resp.AppendCommand(req, "AUTH", p.opt.Username, p.opt.Password)
		} else {
			req = resp.AppendCommand(req, "AUTH", p.opt.Password)
		}
		n++
	}
	if p.opt.ClientName != "" {
		req = resp.AppendCommand(req, "CLIENT", "SETNAME", p.opt.ClientName)
		nameAt = n
		n++
	}
	if n == 0 {
		return nc, addr, true, nil
	}
	c := &Conn{pool: p, nc: nc}
	call := NewCall()
	if err := c.Do(call, req, n, time.Now().Add(p.opt.Timeout)); err != nil {
		nc.Close()
		return nil, addr, false, fmt.Errorf("upstream: prepare connection to %s: %w", addr, err)
	}
	named = true
	for i := 0; i < n; i++ {
		f := call.Frame(i)
		if len(f) == 0 || f[0] != resp.TypeError {
			continue
		}
		if i == nameAt && (bytes.HasPrefix(f, busyReply) || bytes.HasPrefix(f, loadingReply)) {
			named = false
			continue
		}
		nc.Close()
		// The reply names the problem (WRONGPASS, NOAUTH) but never the password.
		return nil, addr, false, fmt.Errorf("upstream: prepare connection to %s: %s", addr, bytes.TrimSpace(f[1:]))
	}
	// The handshake's deadlines must not stay on a connection that lives on: a shared one has no deadline (each
	// call has its own), a dedicated one takes the deadlines of each wait.
	nc.SetDeadline(time.Time{})
	return nc, addr, named, nil
}

// link is one shared TCP connection: writers append batches and queue their ops, one reader goroutine hands reply
// frames to the ops in order. A slow reply holds up only the calls queued behind it, which wait within their own
// bounds; the connection is closed only when it fails (or the pool is closed or retargeted), never because a
// reply is late, so that every client gets its own reply when Redis gives it.
type link struct {
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

func newLink(nc net.Conn, timeout time.Duration, onReadOnly func(), setName []byte) *link {
	l := &link{nc: nc, timeout: timeout, onReadOnly: onReadOnly, done: make(chan struct{}), kick: make(chan struct{}, 1),
		setName: setName}
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
// fails at once with ErrTimeout instead; a forwarded one is queued all the same, and marked late.
func (l *link) enqueue(c *Call, payload []byte) {
	l.mu.Lock()
	if l.err != nil {
		c.Err = l.err
		l.mu.Unlock()
		return
	}
	now := nanotime()
	late := l.lateAt(now)
	if c.bounded && late {
		l.mu.Unlock()
		c.Err = ErrTimeout
		return
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
		l.kick <- struct{}{}
	}
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
	l.mu.Unlock()
	l.broken.Store(true)
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
	}
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

// Conn is a dedicated upstream connection owned by one client for as long as its state lasts (WATCH, a blocking
// command, a subscription). It is not safe for concurrent use, except that Close may be called from any goroutine.
type Conn struct {
	cluster *Cluster // the cluster whose redirects Follow follows; nil in front of a single node
	pool    *Pool
	nc      net.Conn
	moved   atomic.Bool // closed by Retarget: reads and writes fail with ErrRetargeted
	unnamed bool        // Redis was busy when CLIENT SETNAME was sent: not kept for reuse

	buf        []byte
	start, end int
	sc         resp.Scanner
}

// Dedicated returns an idle dedicated connection or dials a new one.
func (p *Pool) Dedicated() (*Conn, error) {
	if p.closed.Load() {
		return nil, ErrClosed
	}
	p.idleMu.Lock()
	if n := len(p.idle); n > 0 {
		c := p.idle[n-1]
		p.idle = p.idle[:n-1]
		p.busy[c] = struct{}{}
		p.idleMu.Unlock()
		return c, nil
	}
	p.idleMu.Unlock()
	nc, addr, named, err := p.dial()
	if err != nil {
		return nil, err
	}
	c := &Conn{pool: p, nc: nc, unnamed: !named}
	p.idleMu.Lock()
	defer p.idleMu.Unlock()
	if addr != p.Addr() {
		// Retargeted while dialing: this connection goes to the old primary.
		nc.Close()
		return nil, ErrRetargeted
	}
	p.busy[c] = struct{}{}
	return c, nil
}

// swap exchanges the connections c and d hold, with their places in their pools' sets of connections in use, so
// that c holds what d held and d what c held. Neither may be in use by another goroutine. The pools' locks are
// taken one at a time, so that two swaps in opposite directions cannot deadlock.
func (c *Conn) swap(d *Conn) {
	pc, pd := c.pool, d.pool
	pc.idleMu.Lock()
	_, cBusy := pc.busy[c]
	delete(pc.busy, c)
	pc.idleMu.Unlock()
	pd.idleMu.Lock()
	_, dBusy := pd.busy[d]
	delete(pd.busy, d)
	pd.idleMu.Unlock()

	c.pool, d.pool = d.pool, c.pool
	c.nc, d.nc = d.nc, c.nc
	cMoved, dMoved := c.moved.Load(), d.moved.Load()
	c.moved.Store(dMoved)
	d.moved.Store(cMoved)
	c.unnamed, d.unnamed = d.unnamed, c.unnamed
	c.buf, d.buf = d.buf, c.buf
	c.start, d.start = d.start, c.start
	c.end, d.end = d.end, c.end
	c.sc, d.sc = d.sc, c.sc

	pd.idleMu.Lock()
	if dBusy {
		pd.busy[c] = struct{}{}
	}
	pd.idleMu.Unlock()
	pc.idleMu.Lock()
	if cBusy {
		pc.busy[d] = struct{}{}
	}
	pc.idleMu.Unlock()
}

// Write writes payload, waiting at most the pool's timeout.
func (c *Conn) Write(payload []byte) error {
	c.nc.SetWriteDeadline(time.Now().Add(c.pool.opt.Timeout))
	_, err := c.nc.Write(payload)
	if err != nil && c.moved.Load() {
		return ErrRetargeted
	}
	return err
}

// ReadFrame appends the next reply frame to dst. A zero deadline waits as long as it takes (a blocking command with
// timeout 0, a subscription).
func (c *Conn) ReadFrame(dst []byte, deadline time.Time) ([]byte, error) {
	if c.buf == nil {
		c.buf = make([]byte, 16<<10)
	}
	c.nc.SetReadDeadline(deadline)
	for {
		if c.start < c.end {
			n, err := c.sc.Next(c.buf[c.start:c.end])
			if err != nil {
				return dst, err
			}
			if n > 0 {
				dst = append(dst, c.buf[c.start:c.start+n]...)
				c.start += n
				if c.start == c.end {
					c.start, c.end = 0, 0
				}
				return dst, nil
			}
		}
		if c.end == len(c.buf) {
			if c.start == 0 {
				nb := make([]byte, 2*len(c.buf))
				copy(nb, c.buf[:c.end])
				c.buf = nb
			} else {
				c.end = copy(c.buf, c.buf[c.start:c.end])
				c.start = 0
			}
		}
		n, err := c.nc.Read(c.buf[c.end:])
		c.end += n
		if err != nil && n == 0 {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				return dst, ErrTimeout
			}
			if c.moved.Load() {
				return dst, ErrRetargeted
			}
			return dst, err
		}
	}
}

// Buffered reports whether reply bytes are waiting to be read.
func (c *Conn) Buffered() bool { return c.start < c.end }

// Do writes payload (n commands) and reads their n reply frames into call, waiting until deadline (zero: no limit).
// A dedicated connection whose wait ended early (ErrTimeout) has replies still to come: the caller closes it.
func (c *Conn) Do(call *Call, payload []byte, n int, deadline time.Time) error {
	call.reset(n)
	if err := c.Write(payload); err != nil {
		call.Err = err
		return err
	}
	for i := 0; i < n; i++ {
		var err error
		if call.Replies, err = c.ReadFrame(call.Replies, deadline); err != nil {
			call.Err = err
			return err
		}
		call.Ends = append(call.Ends, len(call.Replies))
	}
	return nil
}

// Release returns the connection to the pool for reuse. The caller guarantees it left no state behind (no
// transaction, watch, subscription or unread reply); otherwise it must Close instead.
func (c *Conn) Release() {
	p := c.pool
	if c.Buffered() || c.unnamed || p.closed.Load() {
		c.Close()
		return
	}
	c.nc.SetDeadline(time.Time{})
	c.cluster = nil // the next owner's Dedicated says whether it follows redirects
	if cap(c.buf) > maxKeptBuf {
		c.buf = nil
	}
	p.idleMu.Lock()
	_, current := p.busy[c] // not current: Retarget closed it
	delete(p.busy, c)
	if current && len(p.idle) < p.opt.MaxIdle {
		p.idle = append(p.idle, c)
		c = nil
	}
	p.idleMu.Unlock()
	if c != nil {
		c.nc.Close()
	}
}

// Close closes the connection; a blocked ReadFrame returns an error.
func (c *Conn) Close() {
	c.nc.Close()
	p := c.pool
	p.idleMu.Lock()
	delete(p.busy, c)
	p.idleMu.Unlock()
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

// readOnlyReply starts the error a replica answers writes with; busyReply and loadingReply those Redis answers
// while a script runs past busy-reply-threshold and while it loads its dataset.
var (
	readOnlyReply = []byte("-READONLY ")
	busyReply     = []byte("-BUSY ")
	loadingReply  = []byte("-LOADING ")
)

var epoch = time.Now()

// nanotime is a monotonic clock reading for queue ages.
func nanotime() int64 { return int64(time.Since(epoch)) }
