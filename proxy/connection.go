package proxy

import (
	"bytes"
	"crypto/subtle"
	"math"
	"strconv"

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
	if c.seg.proto != 2 {
		c.runSegment()  // the replies before RESET are assembled in the protocol they were sent in
		c.seg.proto = 2 // RESET returns to RESP2, as in Redis
	}
	c.publish()
	c.simpleReply("RESET")
}

// cmdHello answers HELLO [protover [AUTH username password] [SETNAME name]] as Redis 7.0 does: protocol 2 or 3
// (RESP3, from then on every reply to the client), without a version in the protocol the client speaks, and Redis's
// reply: a map (a flat array in RESP2) of server, version, proto, id, mode, role and modules. Protocol 3 is
// refused with -NOPROTO only when the upstream does not switch protocols (offersRESP3).
func (c *client) cmdHello(args [][]byte) {
	proto := c.seg.proto
	if len(args) >= 2 {
		ver, ok := resp.ParseInt(args[1])
		if !ok {
			c.errorReply("ERR Protocol version is not an integer or out of range")
			return
		}
		if ver != 2 && (ver != 3 || !c.srv.offersRESP3()) {
			c.errorReply("NOPROTO unsupported protocol version")
			return
		}
		proto = int(ver)
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
	}
	if proto != c.seg.proto {
		// The replies of the commands before HELLO are assembled in the protocol they were sent in.
		c.runSegment()
		c.switchPinned(proto)
		c.seg.proto = proto
	}
	c.publish()
	info := c.srv.hello.Load()
	buf := c.replies.buf()
	b := resp.AppendMapFor(*buf, 7, proto)
	b = resp.AppendBulkString(b, "server")
	b = resp.AppendBulkString(b, "redis")
	b = resp.AppendBulkString(b, "version")
	b = resp.AppendBulkString(b, info.version)
	b = resp.AppendBulkString(b, "proto")
	b = resp.AppendInt(b, int64(proto))
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
		c.srv.stats.Refused.Add(1)
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

// cmdClusterOnly answers READONLY, READWRITE and ASKING as a standalone Redis does.
func (c *client) cmdClusterOnly(args [][]byte) {
	c.errorReply("ERR This instance has cluster support disabled")
}
