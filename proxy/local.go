package proxy

import (
	"bytes"
	"crypto/subtle"
	"math"
	"strconv"
	"strings"
	"time"

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
	// RESET turns CLIENT REPLY OFF and a pending SKIP off, but not the skip of the command running now: a RESET that
	// a SKIP silences gets no reply, as in Redis.
	if c.reply != replySkipping {
		c.reply = replyOn
	}
	if c.srv.opt.Config.Password != "" {
		c.setAuthed(false)
	}
	c.simpleReply("RESET")
}

// cmdHello answers HELLO [protover [AUTH username password] [SETNAME name]] for protocol 2 with Redis's reply
// shape. Protocol 3 is refused with -NOPROTO, so clients fall back to RESP2.
func (c *client) cmdHello(args [][]byte) {
	if len(args) >= 2 {
		ver, ok := parseRedisInt(args[1])
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
	}
	info := c.srv.hello.Load()
	buf := c.seg.buf(&c.out)
	b := appendArrayLen(*buf, 14)
	b = appendBulkString(b, "server")
	b = appendBulkString(b, "redis")
	b = appendBulkString(b, "version")
	b = appendBulkString(b, info.version)
	b = appendBulkString(b, "proto")
	b = append(b, ":2\r\n"...)
	b = appendBulkString(b, "id")
	b = appendInt(b, c.id)
	b = appendBulkString(b, "mode")
	b = appendBulkString(b, info.mode)
	b = appendBulkString(b, "role")
	b = appendBulkString(b, info.role)
	b = appendBulkString(b, "modules")
	b = append(b, "*0\r\n"...)
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
		c.rd.SetLimits(UnauthenticatedLimits())
	}
}

// cmdSelect accepts database 0 only: featcache's cache and upstream connections belong to database 0. An index
// that is not a database of the upstream gets Redis's own errors, in Redis's order; another database gets
// featcache's.
func (c *client) cmdSelect(args [][]byte) {
	n, ok := parseRedisInt(args[1])
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

var configGetDatabases = upstream.AppendCommand(nil, "CONFIG", "GET", "databases")

// databases returns the upstream's number of databases, read once with CONFIG GET (featcache's upstream user may
// not be allowed it: defaultDatabases then).
func (s *Server) databases() int64 {
	if n := s.dbCount.Load(); n > 0 {
		return n
	}
	call := upstream.NewCall()
	if err := s.up.Do(call, configGetDatabases, 1); err != nil {
		return defaultDatabases
	}
	d := respDecoder{b: call.Frame(0)}
	v, err := d.value(0)
	if err != nil || v.kind != '*' || len(v.elems) != 2 {
		return defaultDatabases
	}
	text, _ := v.elems[1].text()
	n, ok := parseRedisInt([]byte(text))
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
	c.seg.req = upstream.AppendArgs(c.seg.req[:0], args)
	c.srv.stats.Forwarded.Add(1)
	start := time.Now()
	err := c.srv.up.Do(c.call, c.seg.req, 1)
	c.srv.metrics.observeUpstream(upForward, start)
	c.seg.req = c.seg.req[:0]
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
	d := respDecoder{b: frame}
	v, err := d.value(0)
	if err != nil || v.kind != '*' || len(v.elems)%2 != 0 {
		return frame
	}
	secret := false
	for i := 0; i < len(v.elems); i += 2 {
		name, _ := v.elems[i].text()
		if value, _ := v.elems[i+1].text(); value != "" && secretConfig(strings.ToLower(name)) {
			secret = true
			break
		}
	}
	if !secret {
		return frame
	}
	out := appendArrayLen(make([]byte, 0, len(frame)), len(v.elems))
	for i := 0; i < len(v.elems); i += 2 {
		name, _ := v.elems[i].text()
		value, _ := v.elems[i+1].text()
		if value != "" && secretConfig(strings.ToLower(name)) {
			value = redactedValue
		}
		out = appendBulkString(out, name)
		out = appendBulkString(out, value)
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

// cmdClientInfo describes this client connection in Redis's CLIENT INFO format, with the fields featcache knows.
func (c *client) cmdClientInfo(args [][]byte) {
	var b strings.Builder
	b.WriteString("id=" + strconv.FormatInt(c.id, 10))
	b.WriteString(" addr=" + c.nc.RemoteAddr().String())
	b.WriteString(" laddr=" + c.nc.LocalAddr().String())
	b.WriteString(" name=" + string(c.name))
	b.WriteString(" age=" + strconv.FormatInt(int64(c.seg.now.Sub(c.createdAt).Seconds()), 10))
	b.WriteString(" db=0")
	sub, psub, ssub := 0, 0, 0
	if c.sub != nil {
		sub, psub, ssub = len(c.sub.channels), len(c.sub.patterns), len(c.sub.shards)
	}
	b.WriteString(" sub=" + strconv.Itoa(sub) + " psub=" + strconv.Itoa(psub) + " ssub=" + strconv.Itoa(ssub))
	multi := -1
	if c.tx.multi {
		multi = c.tx.queued
	}
	b.WriteString(" multi=" + strconv.Itoa(multi))
	b.WriteString(" user=default resp=2\n")
	c.bulkReply([]byte(b.String()))
}

// execMuted runs a command while CLIENT REPLY is OFF or SKIP: it is executed, its reply is dropped. CLIENT
// REPLY ON is answered, as in Redis. The segment before it is settled and written first, so every reply byte or
// hole added afterwards is this command's, even when the command writes to the client itself (SUBSCRIBE
// flushes what precedes it).
func (c *client) execMuted(cmd *Command) {
	c.runSegment()
	c.flush()
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

// publish records what CLIENT LIST shows of the client to the others.
func (c *client) publish() {}
