package proxy

import (
	"cmp"
	"crypto/tls"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"featcache/upstream"
)

// clientInfo is what the other client connections may see of a client: CLIENT LIST, CLIENT KILL and CLIENT
// UNBLOCK read it from their goroutines. The client's own goroutine writes it when its connection state changes
// (publish), and notes each batch (noteBatch).
type clientInfo struct {
	killed  atomic.Bool             // CLIENT KILL: close after the current command's reply
	closed  chan struct{}           // closed once the connection is closed, or its writing side (closeGently)
	closing sync.Once               // closes closed
	lastAt  atomic.Int64            // unix seconds of the client's last batch; 0 before the first
	lastCmd atomic.Pointer[command] // the last command of that batch
	noted   int64                   // lastAt as the client's own goroutine last stored it

	mu      sync.Mutex // guards the fields below
	name    string
	user    string
	inMulti bool
	queued  int // commands queued in MULTI
	sub     int
	psub    int
	ssub    int
	monitor bool
	noEvict bool
	proto   int // the protocol HELLO chose (CLIENT LIST's resp)
	// While the client waits in a blocking command: the dedicated connection and its id in Redis, for CLIENT
	// UNBLOCK, which holds mu while it unblocks it so that the connection cannot be handed to another client
	// meanwhile; the command and since when (CLIENT LIST's cmd and idle).
	blocked    *upstream.Conn
	blockedRID int64
	blockedCmd string
	blockedAt  time.Time
	// settling is open from the write of CLIENT ID and a blocking command until CLIENT ID's reply is read (Redis may
	// already hold the command blocked): CLIENT UNBLOCK waits for it to close rather than answer :0.
	settling chan struct{}
}

// publish records the client's connection state for the other clients.
func (c *client) publish() {
	var sub, psub, ssub int
	monitor := false
	if p := c.sub; p != nil {
		monitor = p.monitor
		sub, psub, ssub = len(p.channels), len(p.patterns), len(p.shards)
	}
	i := &c.info
	i.mu.Lock()
	if i.name != string(c.name) {
		i.name = string(c.name)
	}
	i.inMulti, i.queued, i.sub, i.psub, i.ssub, i.monitor = c.tx.multi, c.tx.queued, sub, psub, ssub, monitor
	i.proto = c.seg.proto
	i.mu.Unlock()
}

// setUser records the user the client authenticated as.
func (c *client) setUser(user []byte) {
	c.info.mu.Lock()
	if c.info.user != string(user) {
		c.info.user = string(user)
	}
	c.info.mu.Unlock()
}

// noteBatch records, once a batch ran, when it began and the last command it ran, for CLIENT LIST's idle and cmd;
// a session that relays its command's reply from another goroutine (pub/sub, MONITOR, the debugger) notes it before
// sending it (sendToSession), as Redis updates a client's last command before it runs it.
// It runs for every batch, so it stores only what changed: the time in whole seconds, as CLIENT LIST shows it.
func (c *client) noteBatch() {
	i := &c.info
	if sec := c.seg.now.Unix(); sec != i.noted {
		i.noted = sec
		i.lastAt.Store(sec)
	}
	if tc := c.ran; i.lastCmd.Load() != tc {
		i.lastCmd.Store(tc)
	}
}

// setBlocked records the dedicated connection a blocking command (named cmd) waits on, and its id in Redis; a nil
// conn clears it.
func (c *client) setBlocked(conn *upstream.Conn, rid int64, cmd string) {
	c.info.mu.Lock()
	c.info.blocked, c.info.blockedRID, c.info.blockedCmd = conn, rid, cmd
	if conn != nil {
		c.info.blockedAt = c.srv.now()
	}
	if c.info.settling != nil {
		close(c.info.settling)
		c.info.settling = nil
	}
	c.info.mu.Unlock()
}

// settleBlocking marks the client as about to block: CLIENT ID and its blocking command are being sent, and until
// setBlocked says what became of them, CLIENT UNBLOCK of this client waits.
func (c *client) settleBlocking() {
	c.info.mu.Lock()
	c.info.settling = make(chan struct{})
	c.info.mu.Unlock()
}

// kill closes another client after the reply to the command it is running, as CLIENT KILL does: a client waiting
// for a command is woken, one blocked upstream has its dedicated connection closed (Redis drops the blocked
// command), and the connection closes without a reply to it.
func (c *client) kill() {
	c.info.killed.Store(true)
	c.info.mu.Lock()
	if c.info.blocked != nil {
		c.info.blocked.Close()
	}
	c.info.mu.Unlock()
	c.wake()
}

// markClosed records that the client's connection is closed, or at least its writing side: the client has been
// sent the end of the connection (FIN), after its last reply.
func (c *client) markClosed() { c.info.closing.Do(func() { close(c.info.closed) }) }

// killWait bounds how long CLIENT KILL waits for the clients it killed to be closed before it answers. Redis closes
// them before it answers; featcache closes a client that waits for its next command at once, and one that runs a
// command after that command's reply, which may take as long as Redis takes.
const killWait = time.Second

// awaitClosed waits until every client of killed has been closed (markClosed), or killWait has passed.
func awaitClosed(killed []*client) {
	if len(killed) == 0 {
		return
	}
	timer := time.NewTimer(killWait)
	defer timer.Stop()
	for _, k := range killed {
		select {
		case <-k.info.closed:
		case <-timer.C:
			return
		}
	}
}

// clientView is a consistent copy of what CLIENT LIST shows of a client.
type clientView struct {
	c       *client
	name    string
	user    string
	multi   int // commands queued in MULTI; -1 outside MULTI
	sub     int
	psub    int
	ssub    int
	monitor bool
	noEvict bool
	blocked bool
	track   trackView
	proto   int
	cmd     string // the last command's full name, "NULL" before the first
	age     int64  // seconds
	idle    int64  // seconds
}

// view copies what CLIENT LIST shows of c at now. cmd, if not empty, is the command c runs now (the caller's own).
func (c *client) view(now time.Time, cmd string) clientView {
	i := &c.info
	i.mu.Lock()
	v := clientView{c: c, name: i.name, user: i.user, multi: -1, sub: i.sub, psub: i.psub, ssub: i.ssub,
		monitor: i.monitor, noEvict: i.noEvict, blocked: i.blocked != nil, proto: i.proto}
	if i.inMulti {
		v.multi = i.queued
	}
	blockedCmd, blockedAt := i.blockedCmd, i.blockedAt
	i.mu.Unlock()
	v.track = c.srv.ctrack.viewOf(c.id)
	if v.user == "" {
		v.user = "default"
	}
	v.age = int64(now.Sub(c.createdAt) / time.Second)
	switch last := i.lastAt.Load(); {
	case cmd != "":
		v.cmd = cmd
	case v.blocked:
		v.cmd, v.idle = blockedCmd, int64(now.Sub(blockedAt)/time.Second)
	case last == 0:
		v.cmd, v.idle = "NULL", v.age
	default:
		v.idle = max(now.Unix()-last, 0)
		if tc := i.lastCmd.Load(); tc != nil {
			v.cmd = tc.name
		} else {
			v.cmd = "NULL" // a command neither Redis nor featcache knows
		}
	}
	return v
}

// flags are the client's CLIENT LIST flags, in Redis's order: O (MONITOR), P (subscribed), x (MULTI), b (blocked),
// t (tracking), R (its redirect broken), B (BCAST), e (no-evict), or N for none.
func (v *clientView) flags() string {
	var f []byte
	if v.monitor {
		f = append(f, 'O')
	}
	if v.sub+v.psub+v.ssub > 0 {
		f = append(f, 'P')
	}
	if v.multi >= 0 {
		f = append(f, 'x')
	}
	if v.blocked {
		f = append(f, 'b')
	}
	if v.track.on {
		f = append(f, 't')
	}
	if v.track.broken {
		f = append(f, 'R')
	}
	if v.track.bcast {
		f = append(f, 'B')
	}
	if v.noEvict {
		f = append(f, 'e')
	}
	if len(f) == 0 {
		return "N"
	}
	return string(f)
}

// kind is the client's type for the TYPE filters of CLIENT LIST and CLIENT KILL: a MONITOR client is normal, as
// in Redis; featcache has no master or replica clients.
func (v *clientView) kind() string {
	if v.sub+v.psub+v.ssub > 0 {
		return "pubsub"
	}
	return "normal"
}

// appendLine appends the client's CLIENT LIST line, with Redis 7.0's fields in Redis 7.0's order: the values
// featcache knows, and for Redis's buffer figures (qbuf ... tot-mem), which describe Redis's memory, zeros.
func (v *clientView) appendLine(b []byte) []byte {
	c := v.c
	b = append(b, "id="...)
	b = strconv.AppendInt(b, c.id, 10)
	b = append(b, " addr="...)
	b = append(b, c.nc.RemoteAddr().String()...)
	b = append(b, " laddr="...)
	b = append(b, c.nc.LocalAddr().String()...)
	b = append(b, " fd="...)
	b = strconv.AppendInt(b, int64(socketFD(c.nc)), 10)
	b = append(b, " name="...)
	b = append(b, v.name...)
	b = append(b, " age="...)
	b = strconv.AppendInt(b, v.age, 10)
	b = append(b, " idle="...)
	b = strconv.AppendInt(b, v.idle, 10)
	b = append(b, " flags="...)
	b = append(b, v.flags()...)
	b = append(b, " db=0 sub="...)
	b = strconv.AppendInt(b, int64(v.sub), 10)
	b = append(b, " psub="...)
	b = strconv.AppendInt(b, int64(v.psub), 10)
	b = append(b, " ssub="...)
	b = strconv.AppendInt(b, int64(v.ssub), 10)
	b = append(b, " multi="...)
	b = strconv.AppendInt(b, int64(v.multi), 10)
	b = append(b, " qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd="...)
	b = append(b, v.cmd...)
	b = append(b, " user="...)
	b = append(b, v.user...)
	b = append(b, " redir="...)
	b = strconv.AppendInt(b, v.track.redir, 10)
	b = append(b, " resp="...)
	b = strconv.AppendInt(b, int64(v.proto), 10)
	return append(b, '\n')
}

// socketFD returns the file descriptor of a client's socket (TLS included), or -1.
func socketFD(nc net.Conn) int {
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return -1
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return -1
	}
	fd := -1
	raw.Control(func(f uintptr) { fd = int(f) })
	return fd
}

// clientsByID returns the server's client connections, by id; a client CLIENT KILL closed is gone, as in Redis,
// even while its connection closes.
func (s *Server) clientsByID() []*client {
	s.mu.Lock()
	all := make([]*client, 0, len(s.conns))
	for c := range s.conns {
		if !c.info.killed.Load() {
			all = append(all, c)
		}
	}
	s.mu.Unlock()
	slices.SortFunc(all, func(a, b *client) int { return cmp.Compare(a.id, b.id) })
	return all
}

// clientByID returns the client connection with the given id, or nil.
func (s *Server) clientByID(id int64) *client {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if c.id == id && !c.info.killed.Load() {
			return c
		}
	}
	return nil
}

// viewOf is the caller's own view, or another client's.
func (c *client) viewOf(other *client, now time.Time, cmd string) clientView {
	if other == c {
		c.publish()
		return c.view(now, cmd)
	}
	return other.view(now, "")
}
