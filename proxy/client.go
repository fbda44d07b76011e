package proxy

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"featcache/localcache"
	"featcache/upstream"
)

// replyMode is the CLIENT REPLY state.
type replyMode uint8

const (
	replyOn   replyMode = iota
	replyOff            // no replies until CLIENT REPLY ON
	replySkip           // no reply for the next command
	// replySkipping is the mode while the command that CLIENT REPLY SKIP silences runs. A CLIENT REPLY run as that
	// command replaces it: ON is answered, OFF stays, and SKIP silences the command after it too, as Redis's reply
	// flags do.
	replySkipping
)

// client is one client connection and everything that belongs to it: featcache keeps connection state (name,
// authentication, transaction, reply mode, subscriptions) here and never on a shared upstream connection.
type client struct {
	srv *Server
	nc  net.Conn
	rd  *Reader
	id  int64

	wmu  sync.Mutex // serialises writes to nc between serve and the pub/sub pump
	out  []byte     // replies of the current batch, written with one write
	cmds []Command

	name      []byte
	authed    bool
	reply     replyMode
	quit      bool
	draining  atomic.Bool
	createdAt time.Time

	seg  segment // the batch part waiting for its upstream round trip
	call *upstream.Call

	// last remembers the previous command's table entry: clients send the same command again and again, and a
	// byte comparison is cheaper than the table's map lookup.
	last struct {
		tbl  *table
		name []byte
		cmd  *command
	}

	tx  txState // MULTI queue and WATCH session
	sub *pubsub // pub/sub session, nil when not subscribed

	closing    bool  // a limit ended the connection: nothing more is executed or written
	memoryFull bool  // the budget refused what the client's replies need: the connection closes at the next flush
	oversize   bool  // a reply exceeded limits.max_output_bytes: the connection closes at the next flush
	reserved   int64 // bytes reserved from the server's budget (limits.max_clients_memory)
	nextCharge int   // pending reply size at which outputOver charges the budget again

	// Sequence numbers the watchdog reads: odd while the client waits for a command (rseq, only with
	// limits.idle_timeout) or for a write to the client to complete (wseq).
	rseq, wseq      atomic.Uint64
	wdIdle, wdWrite waitMark // the watchdog's notes of those waits
}

func (s *Server) newClient(nc net.Conn) *client {
	lim := s.limits()
	c := &client{
		srv:       s,
		nc:        nc,
		id:        s.nextID.Add(1),
		authed:    s.opt.Config.Password == "",
		createdAt: s.now(),
		call:      upstream.NewCall(),
	}
	if !c.authed {
		lim = UnauthenticatedLimits()
	}
	c.rd = NewReader(nc, lim)
	c.rd.SetGrowth(func(extra int) bool { return c.account(extra) })
	return c
}

func (s *Server) limits() Limits {
	l := s.opt.Config.Limits
	return Limits{MaxRequestBytes: int(l.MaxRequestBytes), MaxArgs: l.MaxArgs, MaxInlineBytes: l.MaxInlineBytes}
}

// serve reads the client's pipelines and answers them until the client leaves.
func (c *client) serve() {
	if !c.handshake() {
		return
	}
	idle := c.srv.opt.Config.Limits.IdleTimeout > 0
	for !c.quit {
		// A subscribed client waits for messages, not commands: it is never idle.
		marked := idle && (c.sub == nil || !c.sub.on)
		if marked {
			c.rseq.Add(1)
		}
		cmds, err := c.rd.ReadBatch(c.cmds[:0])
		if marked {
			c.rseq.Add(1)
		}
		c.cmds = cmds
		if len(cmds) > 0 {
			c.execBatch(cmds)
			if !c.flush() {
				return
			}
			c.trim()
			if !c.account(0) {
				c.fail(ErrClientMemory)
				return
			}
		}
		if err != nil {
			var pe *ProtocolError
			switch {
			case err == ErrClientMemory:
				c.srv.stats.MemoryLimits.Add(1)
				c.fail(ErrClientMemory)
			case errors.As(err, &pe):
				c.srv.stats.ProtocolErrors.Add(1)
				c.out = appendError(c.out[:0], "ERR "+pe.Error())
				c.flush()
			case !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed):
				c.srv.log.Debug("client read", "client", c.id, "err", err)
			}
			return
		}
		if c.draining.Load() && c.rd.Buffered() == 0 {
			return
		}
	}
}

// handshake completes a TLS client's handshake within Options.TLSHandshakeTimeout, so that a connection that never
// completes one does not stay open. It reports false when the handshake failed.
func (c *client) handshake() bool {
	tc, ok := c.nc.(*tls.Conn)
	if !ok {
		return true
	}
	tc.SetDeadline(time.Now().Add(c.srv.opt.TLSHandshakeTimeout))
	if err := tc.Handshake(); err != nil {
		c.srv.stats.TLSHandshakeErrors.Add(1)
		c.srv.log.Debug("client TLS handshake", "client", c.id, "addr", c.nc.RemoteAddr().String(), "err", err)
		return false
	}
	tc.SetDeadline(time.Time{})
	return true
}

// flush writes the replies ready so far. It reports false when the connection is to close: the client is gone, or
// a reply exceeded limits.max_output_bytes, or the client's buffers did not fit in limits.max_clients_memory.
func (c *client) flush() bool {
	switch {
	case c.closing:
		return false
	case c.oversize:
		c.srv.stats.OutputLimits.Add(1)
		c.fail(ErrOutputLimit)
		return false
	case c.memoryFull:
		c.srv.stats.MemoryLimits.Add(1)
		c.fail(ErrClientMemory)
		return false
	case len(c.out) == 0:
		return true
	}
	ok := c.send(c.out)
	c.out = c.out[:0]
	c.nextCharge = 0
	return ok
}

// retainBytes is the capacity a reply or payload buffer may keep between batches; larger ones, grown by a large
// batch, are dropped, so that an idle client holds little more than policy.ClientBaselineBytes.
const retainBytes = 32 << 10

// trim drops buffers a large batch grew, once the batch is done.
func (c *client) trim() {
	c.rd.Shrink(c.cmds)
	if cap(c.out) > retainBytes {
		c.out = nil
	}
	if cap(c.seg.tail) > retainBytes {
		c.seg.tail = nil
	}
	if cap(c.seg.req) > retainBytes {
		c.seg.req = nil
	}
	if cap(c.call.Replies) > retainBytes {
		c.call.Replies = nil
	}
	if !c.tx.multi && cap(c.tx.queue)+cap(c.tx.arena) > retainBytes {
		c.tx.queue, c.tx.arena = nil, nil
	}
}

// close releases what the connection holds upstream, and its share of the client memory budget.
func (c *client) close() {
	c.nc.Close()
	c.tx.close()
	if c.sub != nil {
		c.sub.close()
	}
	c.release()
}

// now is the time of the current batch: every lookup of one pipeline sees the same instant.
func (c *client) now() time.Time { return c.seg.now }

func (c *client) cache() *localcache.Cache { return c.srv.cache }

// lookup finds a command's table entry, reusing the previous command's when the name is the same. Only
// top-level entries without subcommands are remembered: a subcommand's entry depends on the next argument.
func (c *client) lookup(args [][]byte) *command {
	tbl := c.srv.tbl.Load()
	if c.last.cmd != nil && c.last.tbl == tbl && bytes.Equal(args[0], c.last.name) {
		return c.last.cmd
	}
	cmd := tbl.lookup(args)
	if cmd != nil && cmd.subs == nil && strings.IndexByte(cmd.name, '|') < 0 {
		c.last.tbl, c.last.cmd = tbl, cmd
		c.last.name = append(c.last.name[:0], args[0]...)
	} else {
		c.last.cmd = nil
	}
	return cmd
}
