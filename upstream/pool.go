package upstream

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
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
	// reads and writes are the shared connections that payloads without and with writes travel on
	// (Payload.Writes): apart, so that a write Redis holds (CLIENT PAUSE WRITE, as during a failover) holds no
	// read queued behind it on its connection, as it holds no direct client's read. With one connection they are
	// the same group.
	reads, writes *laneGroup
	all           *laneGroup // every lane, for a group that cannot dial its own

	idleMu sync.Mutex // guards idle and busy, and orders them with Retarget
	idle   []*Conn
	busy   map[*Conn]struct{} // dedicated connections handed out and not yet released or closed
	// dialing holds the dedicated connections whose setup waits as long as Redis takes (dialUntil), so that Close
	// and Retarget end those waits.
	dialing map[net.Conn]struct{}

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
	p := &Pool{opt: opt, busy: make(map[*Conn]struct{}), dialing: make(map[net.Conn]struct{})}
	p.addr.Store(&opt.Addr)
	p.lanes = make([]*lane, opt.Conns)
	w := max(1, opt.Conns/4)
	p.writes, p.reads = &laneGroup{}, &laneGroup{}
	if opt.Conns == 1 {
		p.reads = p.writes
	}
	for i := range p.lanes {
		g := p.reads
		if i < w {
			g = p.writes
		}
		p.lanes[i] = &lane{pool: p, group: g}
		g.lanes = append(g.lanes, p.lanes[i])
	}
	p.all = &laneGroup{lanes: p.lanes}
	return p
}

// group is the group of shared connections that payload travels on: the writes group's if it may write, else
// the reads group's.
func (p *Pool) group(payload *Payload) *laneGroup {
	if payload.Writes() {
		return p.writes
	}
	return p.reads
}

// laneGroup is a set of a pool's shared connections that one kind of payload travels on.
type laneGroup struct {
	lanes []*lane
	next  atomic.Uint32
	// forming is the connection whose writer has been kicked and has not yet taken its batch, if any: calls
	// started meanwhile join that batch rather than start one on the next connection.
	forming atomic.Pointer[link]
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
	for nc := range p.dialing {
		nc.Close()
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

// link returns a live shared connection, dialing one if needed: the one on which a batch is forming, if there is
// one (so that the commands of clients made runnable together leave in one write), else the next in turn. A
// connection whose oldest call is already late (Redis has not answered it within the timeout) is passed over for
// one whose is not, if there is one; and when the connection's lane cannot be dialed now (a hung or busy Redis
// does not complete the handshake within the timeout), another lane's live connection is used, if there is one,
// rather than failing a request that Redis can still answer there. The connection is one of the group g's.
func (p *Pool) link(g *laneGroup) (*link, error) {
	if p.closed.Load() {
		return nil, ErrClosed
	}
	if l := g.forming.Load(); l != nil && !l.broken.Load() && !l.late() {
		// A batch is forming on l: joining it saves a write here and a read in Redis.
		return l, nil
	}
	i := int(g.next.Add(1)) % len(g.lanes)
	s := g.lanes[i]
	l := s.cur.Load()
	if l == nil || l.broken.Load() {
		var err error
		if l, err = s.reconnect(); err != nil {
			if o := g.other(i, false); o != nil {
				return o, nil
			}
			// Better the other group's connection than no answer at all.
			if o := p.all.other(-1, false); o != nil {
				return o, nil
			}
			return nil, err
		}
	}
	if l.late() {
		if o := g.other(i, true); o != nil {
			return o, nil
		}
	}
	return l, nil
}

// other returns a live connection of a lane of g other than i (one that is not late, with onTime), or nil; i -1
// looks at every lane.
func (g *laneGroup) other(i int, onTime bool) *link {
	var found *link
	for k := 1; k <= len(g.lanes); k++ {
		if k == len(g.lanes) && i >= 0 {
			break
		}
		o := g.lanes[(i+k)%len(g.lanes)].cur.Load()
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
	for nc := range p.dialing {
		nc.Close()
	}
	p.idleMu.Unlock()
	for _, c := range idle {
		c.nc.Close()
	}
}

// dial opens and prepares one connection to the pool's current address, which it returns too: AUTH and CLIENT
// SETNAME, in one round trip, bounded by the timeout. A CLIENT SETNAME that Redis refuses because it is busy
// running a script or loading its dataset (BUSY, LOADING) does not fail the connection, which is usable (AUTH
// passed): named reports false, and the caller names it later. Any other error reply fails the dial.
func (p *Pool) dial() (nc net.Conn, addr string, named bool, err error) {
	return p.dialUntil(time.Time{}, false)
}

// dialUntil is dial with the setup's replies waited for until setupBy (zero: no bound) when wait is set, for a
// dedicated connection a client's command needs: Redis paused (CLIENT PAUSE) or asleep (DEBUG SLEEP, a script
// below busy-reply-threshold) makes a direct client's connection wait as long, and featcache's waits with it.
// Such a setup is closed by Close and Retarget. Without wait, as dial.
func (p *Pool) dialUntil(setupBy time.Time, wait bool) (nc net.Conn, addr string, named bool, err error) {
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
	deadline := time.Now().Add(p.opt.Timeout)
	if wait {
		deadline = setupBy
		p.idleMu.Lock()
		p.dialing[nc] = struct{}{}
		p.idleMu.Unlock()
		defer func() {
			p.idleMu.Lock()
			delete(p.dialing, nc)
			p.idleMu.Unlock()
		}()
		if p.closed.Load() {
			nc.Close() // Close ran before nc was registered
		}
	}
	if err := c.Do(call, req, n, deadline); err != nil {
		nc.Close()
		if call.Len() > 0 && call.Frame(0)[0] == resp.TypeError {
			// Redis refused the connection as it accepted it (max clients reached): it wrote why, then closed.
			return nil, addr, false, setupError(addr, call.Frame(0))
		}
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
		return nil, addr, false, setupError(addr, f)
	}
	// The handshake's deadlines must not stay on a connection that lives on: a shared one has no deadline (each
	// call has its own), a dedicated one takes the deadlines of each wait.
	nc.SetDeadline(time.Time{})
	return nc, addr, named, nil
}

// setupError is the error of a connection whose setup Redis answered with the error reply f. A refusal that says
// nothing about featcache's credentials (-ERR max number of clients reached, written by Redis to every client it
// cannot accept) wraps Redis's error, which the client whose command needed the connection gets verbatim, as a
// direct client connecting then would. An authentication error (NOAUTH, WRONGPASS, NOPERM) is featcache's own
// problem, not the client's: passed on as it is, it would read as if the client had to AUTH. The reply names the
// problem but never the password.
func setupError(addr string, f []byte) error {
	re := resp.ParseError(f)
	switch {
	case bytes.HasPrefix(f, noAuthReply), bytes.HasPrefix(f, wrongPassReply), bytes.HasPrefix(f, noPermReply):
		return fmt.Errorf("upstream: prepare connection to %s: %s", addr, re)
	}
	return fmt.Errorf("upstream: prepare connection to %s: %w", addr, re)
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

	noAuthReply    = []byte("-NOAUTH ")
	wrongPassReply = []byte("-WRONGPASS ")
	noPermReply    = []byte("-NOPERM ")
)

var epoch = time.Now()

// nanotime is a monotonic clock reading for queue ages.
func nanotime() int64 { return int64(time.Since(epoch)) }
