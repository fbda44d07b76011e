package proxy

import (
	"bytes"
	"cmp"
	"crypto/subtle"
	"crypto/tls"
	"math"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"featcache/internal/resp"
	"featcache/upstream"
)

// The commands in this file are answered from the client connection's own state, with Redis's replies and
// errors. None of them reaches a shared upstream connection.

// cmdPing answers PING [message]. Its arity in COMMAND is -1, so the table lets any argument count through: Redis
// checks for more than one message in the command itself, and so does featcache.
func (c *client) cmdPing(args [][]byte) {
	if len(args) > 2 {
		c.errorReply("ERR wrong number of arguments for 'ping' command")
		return
	}
	if len(args) == 2 {
		c.bulkReply(args[1])
		return
	}
	c.simpleReply("PONG")
}

func (c *client) cmdEcho(args [][]byte) { c.bulkReply(args[1]) }

func (c *client) cmdQuit(args [][]byte) {
	c.abandonTx()
	c.simpleReply("OK")
	c.quit = true
}

// cmdReset returns the connection to its initial state, as Redis's RESET does.
func (c *client) cmdReset(args [][]byte) {
	c.abandonTx()
	if c.sub != nil {
		c.sub.close()
		c.sub = nil
	}
	c.name = nil
	c.disableTracking()
	// RESET turns CLIENT REPLY OFF and a pending SKIP off, but not the skip of the command running now: a RESET that
	// a SKIP silences gets no reply, as in Redis.
	if c.reply != replySkipping {
		c.reply = replyOn
	}
	if c.srv.opt.Config.Password != "" {
		c.setAuthed(false)
	}
	c.setUser([]byte("default"))
	c.publish()
	c.simpleReply("RESET")
}

// cmdHello answers HELLO [protover [AUTH username password] [SETNAME name]] for protocol 2 with Redis's reply
// shape. Protocol 3 is refused with -NOPROTO, so clients fall back to RESP2.
func (c *client) cmdHello(args [][]byte) {
	if len(args) >= 2 {
		ver, ok := resp.ParseInt(args[1])
		if !ok {
			c.errorReply("ERR Protocol version is not an integer or out of range")
			return
		}
		if ver != 2 {
			c.errorReply("NOPROTO unsupported protocol version")
			return
		}
	}
	var setname []byte
	for i := 2; i < len(args); i++ {
		switch {
		case bytes.EqualFold(args[i], []byte("auth")) && i+2 < len(args):
			if !c.checkAuth(args[i+1], args[i+2]) {
				return
			}
			i += 2
		case bytes.EqualFold(args[i], []byte("setname")) && i+1 < len(args):
			setname = args[i+1]
			if !validClientName(setname) {
				c.errorReply("ERR Client names cannot contain spaces, newlines or special characters.")
				return
			}
			i++
		default:
			c.errorReply("ERR Syntax error in HELLO option '" + string(args[i]) + "'")
			return
		}
	}
	if !c.authed {
		// Redis 7.0's wording (7.2 added "<proto>" after "HELLO").
		c.errorReply("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time")
		return
	}
	if setname != nil {
		c.name = append(c.name[:0], setname...)
		c.publish()
	}
	info := c.srv.hello.Load()
	buf := c.seg.buf(&c.out)
	b := resp.AppendArray(*buf, 14)
	b = resp.AppendBulkString(b, "server")
	b = resp.AppendBulkString(b, "redis")
	b = resp.AppendBulkString(b, "version")
	b = resp.AppendBulkString(b, info.version)
	b = resp.AppendBulkString(b, "proto")
	b = resp.AppendInt(b, 2)
	b = resp.AppendBulkString(b, "id")
	b = resp.AppendInt(b, c.id)
	b = resp.AppendBulkString(b, "mode")
	b = resp.AppendBulkString(b, info.mode)
	b = resp.AppendBulkString(b, "role")
	b = resp.AppendBulkString(b, info.role)
	b = resp.AppendBulkString(b, "modules")
	b = resp.AppendArray(b, 0)
	*buf = b
}

// cmdAuth answers AUTH password and AUTH username password.
//
// With a featcache password, that password authenticates (user "default", as in Redis). Without one, clients
// that were written for the store keep working: the store's own password is accepted, and a client that sends a
// password nobody configured gets Redis's own error for that case.
func (c *client) cmdAuth(args [][]byte) {
	if len(args) > 3 {
		c.errorReply("ERR syntax error")
		return
	}
	user, pass := []byte("default"), args[1]
	if len(args) == 3 {
		user, pass = args[1], args[2]
	}
	cfg := c.srv.opt.Config
	if cfg.Password == "" && cfg.Upstream.Password == "" && len(args) == 2 {
		c.errorReply("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?")
		return
	}
	if c.checkAuth(user, pass) {
		c.simpleReply("OK")
	}
}

// checkAuth authenticates the connection or replies -WRONGPASS.
func (c *client) checkAuth(user, pass []byte) bool {
	cfg := c.srv.opt.Config
	ok := false
	switch {
	case cfg.Password != "":
		ok = string(user) == "default" && secretEqual(pass, cfg.Password)
	case cfg.Upstream.Password != "":
		upUser := cfg.Upstream.Username
		if upUser == "" {
			upUser = "default"
		}
		ok = string(user) == upUser && secretEqual(pass, cfg.Upstream.Password)
	default:
		ok = string(user) == "default"
	}
	if !ok {
		c.errorReply("WRONGPASS invalid username-password pair or user is disabled.")
		return false
	}
	c.setAuthed(true)
	c.setUser(user)
	return true
}

func secretEqual(got []byte, want string) bool {
	return subtle.ConstantTimeCompare(got, []byte(want)) == 1
}

func (c *client) setAuthed(authed bool) {
	c.authed = authed
	if authed {
		c.rd.SetLimits(c.srv.limits())
	} else {
		c.rd.SetLimits(resp.UnauthenticatedLimits())
	}
}

// cmdSelect accepts database 0 only: featcache's cache and upstream connections belong to database 0. An index
// that is not a database of the upstream gets Redis's own errors, in Redis's order; another database gets
// featcache's.
func (c *client) cmdSelect(args [][]byte) {
	n, ok := resp.ParseInt(args[1])
	switch {
	case !ok:
		c.errorReply("ERR value is not an integer or out of range")
	case n < math.MinInt32 || n > math.MaxInt32:
		c.errorReply("ERR value is out of range, value must between -2147483648 and 2147483647")
	case n == 0:
		c.simpleReply("OK")
	case n < 0 || n >= c.srv.databases():
		c.errorReply("ERR DB index is out of range")
	default:
		c.errorReply("ERR featcache serves database 0 only (SELECT " + strconv.FormatInt(n, 10) + " is not supported)")
	}
}

// defaultDatabases is Redis's default number of databases, assumed while the upstream's cannot be read.
const defaultDatabases = 16

var configGetDatabases = resp.AppendCommand(nil, "CONFIG", "GET", "databases")

// databases returns the upstream's number of databases, read once with CONFIG GET (featcache's upstream user may
// not be allowed it: defaultDatabases then).
func (s *Server) databases() int64 {
	if n := s.dbCount.Load(); n > 0 {
		return n
	}
	call := upstream.NewCall()
	call.Req.AppendRaw(upstream.NoSlot, configGetDatabases)
	if err := s.up.Do(call, &call.Req); err != nil {
		return defaultDatabases
	}
	v, err := resp.ParseBulkArray(call.Frame(0), nil)
	if err != nil || len(v) != 2 {
		return defaultDatabases
	}
	n, ok := resp.ParseInt(v[1])
	if !ok || n <= 0 {
		return defaultDatabases
	}
	s.dbCount.Store(n)
	return n
}

// cmdConfigGet forwards CONFIG GET and relays Redis's reply with the values of secret parameters redacted
// (secretConfig), whatever the pattern that matched them: CONFIG GET * included.
func (c *client) cmdConfigGet(args [][]byte) {
	c.runSegment()
	c.seg.req.Reset()
	c.seg.req.AppendArgs(upstream.NoSlot, args)
	c.srv.stats.Forwarded.Add(1)
	start := time.Now()
	err := c.srv.up.Do(c.call, &c.seg.req)
	c.srv.metrics.observeUpstream(upForward, start)
	c.seg.req.Reset()
	if err != nil {
		c.srv.stats.Errors.Add(1)
		c.errorReply(upstreamErrorText(err))
		return
	}
	c.rawReply(redactConfig(c.call.Frame(0)))
}

// redactedValue replaces the value of a secret configuration parameter.
const redactedValue = "(redacted)"

// secretConfig reports whether a configuration parameter holds a credential: the passwords Redis 7 knows
// (requirepass, masterauth, tls-key-file-pass, tls-client-key-file-pass), the user a replica authenticates as
// (masteruser), and, for parameters later versions or modules add, any name that speaks of a password or secret.
func secretConfig(name string) bool {
	switch name {
	case "requirepass", "masterauth", "masteruser":
		return true
	}
	return strings.Contains(name, "pass") || strings.Contains(name, "secret")
}

// redactConfig returns a CONFIG GET reply (a flat array of names and values) with every non-empty value of a
// secret parameter replaced by redactedValue. Any other frame, an error among them, is returned as it is.
func redactConfig(frame []byte) []byte {
	v, _, err := resp.Decode(frame)
	if err != nil || v.Type != resp.TypeArray || len(v.Elems)%2 != 0 {
		return frame
	}
	secret := false
	for i := 0; i < len(v.Elems); i += 2 {
		name, _ := v.Elems[i].Text()
		if value, _ := v.Elems[i+1].Text(); value != "" && secretConfig(strings.ToLower(name)) {
			secret = true
			break
		}
	}
	if !secret {
		return frame
	}
	out := resp.AppendArray(make([]byte, 0, len(frame)), len(v.Elems))
	for i := 0; i < len(v.Elems); i += 2 {
		name, _ := v.Elems[i].Text()
		value, _ := v.Elems[i+1].Text()
		if value != "" && secretConfig(strings.ToLower(name)) {
			value = redactedValue
		}
		out = resp.AppendBulkString(out, name)
		out = resp.AppendBulkString(out, value)
	}
	return out
}

// cmdClusterOnly answers READONLY, READWRITE and ASKING as a standalone Redis does.
func (c *client) cmdClusterOnly(args [][]byte) {
	c.errorReply("ERR This instance has cluster support disabled")
}

func (c *client) cmdClientSetname(args [][]byte) {
	if !validClientName(args[2]) {
		c.errorReply("ERR Client names cannot contain spaces, newlines or special characters.")
		return
	}
	c.name = append(c.name[:0], args[2]...)
	c.publish()
	c.simpleReply("OK")
}

// validClientName is Redis's rule: printable ASCII without spaces.
func validClientName(name []byte) bool {
	for _, b := range name {
		if b < '!' || b > '~' {
			return false
		}
	}
	return true
}

func (c *client) cmdClientGetname(args [][]byte) {
	if len(c.name) == 0 {
		c.rawReply(nullBulk)
		return
	}
	c.bulkReply(c.name)
}

func (c *client) cmdClientID(args [][]byte) { c.intReply(c.id) }

// cmdClientSetinfo accepts LIB-NAME and LIB-VER as Redis 7.2 does; featcache keeps nothing of them. A Redis 7.0
// upstream does not know the subcommand, so the table has no arity for it: it is checked here.
func (c *client) cmdClientSetinfo(args [][]byte) {
	if len(args) != 4 {
		c.errorReply("ERR wrong number of arguments for 'client|setinfo' command")
		return
	}
	attr := strings.ToLower(string(args[2]))
	if attr != "lib-name" && attr != "lib-ver" {
		c.errorReply("ERR Unrecognized option '" + string(args[2]) + "'")
		return
	}
	if !validClientName(args[3]) {
		c.errorReply("ERR " + attr + " cannot contain spaces, newlines or special characters.")
		return
	}
	c.simpleReply("OK")
}

// cmdClientReply sets the reply mode. OFF and SKIP are not answered; ON is, also when it is the command a SKIP
// silences. SKIP is ignored while replies are OFF, as in Redis.
func (c *client) cmdClientReply(args [][]byte) {
	switch strings.ToLower(string(args[2])) {
	case "on":
		c.reply = replyOn
		c.simpleReply("OK")
	case "off":
		c.reply = replyOff
	case "skip":
		if c.reply != replyOff {
			c.reply = replySkip
		}
	default:
		c.errorReply("ERR syntax error")
	}
}

// execMuted runs a command while CLIENT REPLY is OFF or SKIP: it is executed, its reply is dropped. CLIENT
// REPLY ON is answered, as in Redis. The segment before it is settled and written first, so every reply byte or
// hole added afterwards is this command's, even when the command writes to the client itself (SUBSCRIBE
// flushes what precedes it).
func (c *client) execMuted(cmd *resp.Command) {
	c.runSegment()
	if !c.flush() {
		return // the connection is closing: nothing more runs for it
	}
	if c.reply == replySkip {
		c.reply = replySkipping
	}
	c.exec(cmd)
	switch c.reply {
	case replyOn:
		return
	case replySkipping:
		c.reply = replyOn
	}
	c.out = c.out[:0]
	c.seg.tail = c.seg.tail[:0]
	for i := range c.seg.holes {
		h := &c.seg.holes[i]
		h.mute, h.pos = true, 0
		if h.kind == holeRegion {
			h.stop = 0
		}
	}
}

// CLIENT LIST, INFO, KILL and UNBLOCK are about the clients of featcache, never about featcache's own upstream
// connections, which a client must neither see nor be able to close.

// clientInfo is what the other client connections may see of a client: CLIENT LIST, CLIENT KILL and CLIENT
// UNBLOCK read it from their goroutines. The client's own goroutine writes it when its connection state changes
// (publish), and notes each batch (noteBatch).
type clientInfo struct {
	killed  atomic.Bool             // CLIENT KILL: close after the current command's reply
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
	// While the client waits in a blocking command: the dedicated connection and its id in Redis, for CLIENT
	// UNBLOCK, which holds mu while it unblocks it so that the connection cannot be handed to another client
	// meanwhile; the command and since when (CLIENT LIST's cmd and idle).
	blocked    *upstream.Conn
	blockedRID int64
	blockedCmd string
	blockedAt  time.Time
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

// noteBatch records, once a batch ran, when it began and its last command, for CLIENT LIST's idle and cmd. It
// runs for every batch, so it stores only what changed: the time in whole seconds, as CLIENT LIST shows it.
func (c *client) noteBatch(cmds []resp.Command) {
	i := &c.info
	if sec := c.seg.now.Unix(); sec != i.noted {
		i.noted = sec
		i.lastAt.Store(sec)
	}
	if tc := c.lookup(cmds[len(cmds)-1].Args); i.lastCmd.Load() != tc {
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
	cmd     string // the last command's full name, "NULL" before the first
	age     int64  // seconds
	idle    int64  // seconds
}

// view copies what CLIENT LIST shows of c at now. cmd, if not empty, is the command c runs now (the caller's own).
func (c *client) view(now time.Time, cmd string) clientView {
	i := &c.info
	i.mu.Lock()
	v := clientView{c: c, name: i.name, user: i.user, multi: -1, sub: i.sub, psub: i.psub, ssub: i.ssub,
		monitor: i.monitor, noEvict: i.noEvict, blocked: i.blocked != nil}
	if i.inMulti {
		v.multi = i.queued
	}
	blockedCmd, blockedAt := i.blockedCmd, i.blockedAt
	i.mu.Unlock()
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
// e (no-evict), or N for none.
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
	b = append(b, " redir=-1 resp=2\n"...)
	return b
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

// cmdClientInfo describes this client connection as one CLIENT LIST line.
func (c *client) cmdClientInfo(args [][]byte) {
	v := c.viewOf(c, c.srv.now(), "client|info")
	c.bulkReply(v.appendLine(nil))
}

// cmdClientList answers CLIENT LIST [TYPE type | ID id ...] about featcache's clients, with Redis's syntax and
// errors.
func (c *client) cmdClientList(args [][]byte) {
	var kind string
	var ids []int64
	switch {
	case len(args) == 4 && bytes.EqualFold(args[2], []byte("type")):
		k, ok := clientType(args[3])
		if !ok {
			c.errorReply("ERR Unknown client type '" + string(args[3]) + "'")
			return
		}
		kind = k
	case len(args) > 3 && bytes.EqualFold(args[2], []byte("id")):
		for _, a := range args[3:] {
			id, ok := resp.ParseInt(a)
			if !ok {
				c.errorReply("ERR Invalid client ID")
				return
			}
			ids = append(ids, id)
		}
	case len(args) != 2:
		c.errorReply("ERR syntax error")
		return
	}
	now := c.srv.now()
	var b []byte
	if ids != nil {
		// In the order asked, as Redis does.
		for _, id := range ids {
			if other := c.srv.clientByID(id); other != nil {
				v := c.viewOf(other, now, "client|list")
				b = v.appendLine(b)
			}
		}
	} else {
		for _, other := range c.srv.clientsByID() {
			v := c.viewOf(other, now, "client|list")
			if kind == "" || v.kind() == kind {
				b = v.appendLine(b)
			}
		}
	}
	c.bulkReply(b)
}

// clientType reads a TYPE filter: normal, pubsub, master, replica or slave. It returns the kind clientView.kind
// reports ("" for master and replica, which featcache does not have).
func clientType(name []byte) (string, bool) {
	switch strings.ToLower(string(name)) {
	case "normal":
		return "normal", true
	case "pubsub":
		return "pubsub", true
	case "master", "replica", "slave":
		return "none", true
	}
	return "", false
}

// cmdClientKill answers CLIENT KILL ip:port and CLIENT KILL <filter> <value> ... about featcache's clients, with
// Redis's syntax, errors and replies: the old form answers +OK or "No such client" and may kill the caller; the
// filters (ID, TYPE, ADDR, LADDR, USER, SKIPME, and MAXAGE as Redis 7.4 has it) are ANDed and answer the number of
// clients killed, SKIPME yes by default. A killed client is closed after the reply to the command it runs; the
// caller, after this reply.
func (c *client) cmdClientKill(args [][]byte) {
	var addr, laddr, user, kind string
	var id, maxAge int64
	skipMe := true
	if len(args) == 3 {
		addr = string(args[2])
		skipMe = false // with the old form a client may kill itself
	} else {
		for i := 2; i < len(args); i += 2 {
			more := i+1 < len(args)
			opt := strings.ToLower(string(args[i]))
			switch {
			case opt == "id" && more:
				n, ok := resp.ParseInt(args[i+1])
				if !ok || n < 1 {
					c.errorReply("ERR client-id should be greater than 0")
					return
				}
				id = n
			case opt == "type" && more:
				k, ok := clientType(args[i+1])
				if !ok {
					c.errorReply("ERR Unknown client type '" + string(args[i+1]) + "'")
					return
				}
				kind = k
			case opt == "addr" && more:
				addr = string(args[i+1])
			case opt == "laddr" && more:
				laddr = string(args[i+1])
			case opt == "user" && more:
				if !c.knownUser(args[i+1]) {
					c.errorReply("ERR No such user '" + string(args[i+1]) + "'")
					return
				}
				user = string(args[i+1])
			case opt == "skipme" && more:
				switch strings.ToLower(string(args[i+1])) {
				case "yes":
					skipMe = true
				case "no":
					skipMe = false
				default:
					c.errorReply("ERR syntax error")
					return
				}
			case opt == "maxage" && more:
				n, ok := resp.ParseInt(args[i+1])
				if !ok {
					c.errorReply("ERR value is not an integer or out of range")
					return
				}
				maxAge = n
			default:
				c.errorReply("ERR syntax error")
				return
			}
		}
	}
	now := c.srv.now()
	killed, self := 0, false
	for _, other := range c.srv.clientsByID() {
		v := c.viewOf(other, now, "client|kill")
		switch {
		case addr != "" && other.nc.RemoteAddr().String() != addr,
			laddr != "" && other.nc.LocalAddr().String() != laddr,
			kind != "" && v.kind() != kind,
			id != 0 && other.id != id,
			user != "" && v.user != user,
			maxAge > 0 && v.age < maxAge,
			other == c && skipMe:
			continue
		}
		if other == c {
			self = true
		} else {
			other.kill()
		}
		killed++
	}
	switch {
	case len(args) != 3:
		c.intReply(int64(killed))
	case killed == 0:
		c.errorReply("ERR No such client")
	default:
		c.simpleReply("OK")
	}
	if self {
		// Closed after this reply, as Redis closes a client that killed itself; nothing after it runs.
		c.quit = true
		c.info.killed.Store(true)
	}
}

// knownUser reports whether user is one a client of featcache can be: "default", or the upstream user whose
// password featcache accepts.
func (c *client) knownUser(user []byte) bool {
	u := string(user)
	return u == "default" || u != "" && u == c.srv.opt.Config.Upstream.Username
}

// cmdClientUnblock answers CLIENT UNBLOCK id [TIMEOUT|ERROR] about featcache's clients: a client waiting in a
// blocking command is unblocked by Redis, through the dedicated connection it waits on, and gets the reply Redis
// gives (the command's timeout reply, or -UNBLOCKED); :1 then, else :0.
func (c *client) cmdClientUnblock(args [][]byte) {
	if len(args) > 4 {
		c.errorReply("ERR unknown subcommand or wrong number of arguments for '" + string(args[1]) + "'. Try CLIENT HELP.")
		return
	}
	if len(args) == 4 && !bytes.EqualFold(args[3], []byte("timeout")) && !bytes.EqualFold(args[3], []byte("error")) {
		c.errorReply("ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR")
		return
	}
	id, ok := resp.ParseInt(args[2])
	if !ok {
		c.errorReply("ERR value is not an integer or out of range")
		return
	}
	other := c.srv.clientByID(id)
	if other == nil || other == c {
		c.intReply(0)
		return
	}
	c.runSegment()
	i := &other.info
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.blocked == nil {
		c.intReply(0)
		return
	}
	unblock := [][]byte{[]byte("CLIENT"), []byte("UNBLOCK"), strconv.AppendInt(nil, i.blockedRID, 10)}
	if len(args) == 4 {
		unblock = append(unblock, args[3])
	}
	c.seg.req.Reset()
	c.seg.req.AppendArgs(upstream.NoSlot, unblock)
	c.srv.stats.Forwarded.Add(1)
	err := c.srv.up.Do(c.call, &c.seg.req)
	c.seg.req.Reset()
	if err != nil {
		c.srv.stats.Errors.Add(1)
		c.errorReply(upstreamErrorText(err))
		return
	}
	c.rawReply(c.call.Frame(0))
}

// cmdClientNoEvict accepts CLIENT NO-EVICT ON|OFF: featcache's clients are never evicted by Redis, which does not
// see them; the flag shows in CLIENT LIST.
func (c *client) cmdClientNoEvict(args [][]byte) {
	var on bool
	switch strings.ToLower(string(args[2])) {
	case "on":
		on = true
	case "off":
	default:
		c.errorReply("ERR syntax error")
		return
	}
	c.info.mu.Lock()
	c.info.noEvict = on
	c.info.mu.Unlock()
	c.simpleReply("OK")
}
