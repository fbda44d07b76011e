package upstream

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"featcache/internal/resp"
)

// Conn is a dedicated upstream connection owned by one client for as long as its state lasts (WATCH, a blocking
// command, a subscription). It is not safe for concurrent use, except that Close may be called from any goroutine.
type Conn struct {
	cluster *Cluster // the cluster whose redirects Follow follows; nil in front of a single node
	pool    *Pool
	nc      net.Conn
	moved   atomic.Bool // closed by Retarget: reads and writes fail with ErrRetargeted
	unnamed bool        // Redis was busy when CLIENT SETNAME was sent: not kept for reuse
	resp3   bool        // switched to RESP3 (SetRESP3): Follow switches the connection it moves to, Release closes it

	buf        []byte
	start, end int
	sc         resp.Scanner
}

// Dedicated returns an idle dedicated connection or dials a new one, whose setup (AUTH, CLIENT SETNAME) is
// bounded by the timeout: for featcache's own use. An idle connection that Redis has closed
// meanwhile (its timeout setting closes connections idle for that long, CLIENT KILL closes any) is dropped, not
// handed out: the command that needed it would get the EOF a direct client, which connects when it needs to,
// never sees.
func (p *Pool) Dedicated() (*Conn, error) { return p.dedicated(false) }

// DedicatedWait is Dedicated for a client's command (a transaction, a blocking command, a subscription): a new
// connection's setup waits as long as the command itself would (CommandTimeout, no bound by default), as a direct
// client connecting to a paused or sleeping Redis waits for its first reply. Close and Retarget end the wait.
func (p *Pool) DedicatedWait() (*Conn, error) { return p.dedicated(true) }

func (p *Pool) dedicated(wait bool) (*Conn, error) {
	if p.closed.Load() {
		return nil, ErrClosed
	}
	for {
		p.idleMu.Lock()
		n := len(p.idle)
		if n == 0 {
			p.idleMu.Unlock()
			break
		}
		c := p.idle[n-1]
		p.idle = p.idle[:n-1]
		p.busy[c] = struct{}{}
		p.idleMu.Unlock()
		if !peerClosed(c.nc) {
			return c, nil
		}
		c.Close()
	}
	nc, addr, named, err := p.dialUntil(p.CommandDeadline(time.Now()), wait)
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

// SetRESP3 records that the connection's owner switched it to RESP3 (on) or back to RESP2 with HELLO. A RESP3
// connection is not reused by another owner (Release closes it), and when Follow moves it to another node it
// switches the new connection with HELLO 3 too.
func (c *Conn) SetRESP3(on bool) { c.resp3 = on }

// ErrNoRESP3 means Redis did not switch a connection to RESP3 when asked (HELLO 3): an ACL without hello, HELLO
// renamed away, or a Redis older than 6 behind a failover. The error returned wraps it with Redis's answer.
var ErrNoRESP3 = errors.New("featcache could not switch its upstream connection to RESP3")

// NoRESP3 is ErrNoRESP3 with Redis's answer to HELLO 3, frame (nil when Redis gave none).
func NoRESP3(frame []byte) error {
	if len(frame) > 0 && frame[0] == resp.TypeError {
		return fmt.Errorf("%w (Redis answered HELLO 3: %s)", ErrNoRESP3, resp.ParseError(frame))
	}
	return ErrNoRESP3
}

// SwitchRESP3 switches the connection to RESP3 (HELLO 3), waiting at most the pool's timeout for Redis's map, and
// marks it so (SetRESP3). When Redis answers anything else the error wraps ErrNoRESP3.
func (c *Conn) SwitchRESP3() error {
	call := NewCall()
	if err := c.Do(call, hello3Cmd, 1, time.Now().Add(c.pool.opt.Timeout)); err != nil {
		return err
	}
	if f := call.Frame(0); f[0] != resp.TypeMap {
		return NoRESP3(f)
	}
	c.resp3 = true
	return nil
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
// transaction, watch, subscription or unread reply); otherwise it must Close instead. A connection marked RESP3
// (SetRESP3), like one with unread bytes, is closed instead: the pool's next user expects RESP2.
func (c *Conn) Release() {
	p := c.pool
	if c.Buffered() || c.unnamed || c.resp3 || p.closed.Load() {
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

// peerClosed reports whether an idle connection is unusable: the peer closed it (EOF), it failed, or bytes wait on
// it that nobody asked for (an idle connection has no reply to come; under TLS, a close_notify alert). It peeks
// without waiting and consumes nothing; a connection it cannot inspect is taken as open.
func peerClosed(nc net.Conn) bool {
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	data, closed, _ := resp.Peek(nc)
	return data || closed
}
