package proxy

import (
	"bytes"
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

	seg segment // the batch part waiting for its upstream round trip

	// Scratch for snapshot keys, valid for one batch: physical keys and pointer values live in arena; vers
	// holds the versions resolved for the current command; rw is a command with rewritten keys.
	arena  []byte
	vers   versions
	keyIdx []int
	rw     Command

	hs          hashScratch          // hash lookups of the current command
	hashFetched upstream.HashFetched // scratch for parsing hash fetches
	call        *upstream.Call

	// last remembers the previous command's table entry: clients send the same command again and again, and a
	// byte comparison is cheaper than the table's map lookup.
	last struct {
		tbl  *table
		name []byte
		cmd  *command
	}

	tx  txState // MULTI queue and WATCH session
	sub *pubsub // pub/sub session, nil when not subscribed
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
	return c
}

func (s *Server) limits() Limits {
	l := s.opt.Config.Limits
	return Limits{MaxRequestBytes: int(l.MaxRequestBytes), MaxArgs: l.MaxArgs, MaxInlineBytes: l.MaxInlineBytes}
}

// serve reads the client's pipelines and answers them until the client leaves.
func (c *client) serve() {
	for !c.quit {
		cmds, err := c.rd.ReadBatch(c.cmds[:0])
		c.cmds = cmds
		if len(cmds) > 0 {
			c.execBatch(cmds)
			if !c.flush() {
				return
			}
		}
		if err != nil {
			var pe *ProtocolError
			if errors.As(err, &pe) {
				c.out = appendError(c.out[:0], "ERR "+pe.Error())
				c.flush()
			} else if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				c.srv.log.Debug("client read", "client", c.id, "err", err)
			}
			return
		}
		if c.draining.Load() && c.rd.Buffered() == 0 {
			return
		}
	}
}

// flush writes the batch's replies. It reports false when the client is gone.
func (c *client) flush() bool {
	if len(c.out) == 0 {
		return true
	}
	c.wmu.Lock()
	_, err := c.nc.Write(c.out)
	c.wmu.Unlock()
	if cap(c.out) > 1<<20 {
		c.out = nil
	} else {
		c.out = c.out[:0]
	}
	return err == nil
}

// close releases what the connection holds upstream.
func (c *client) close() {
	c.nc.Close()
	c.tx.close()
	if c.sub != nil {
		c.sub.close()
	}
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
