package proxy

import (
	"bytes"
	"strconv"
	"strings"

	"featcache/internal/resp"
	"featcache/upstream"
)

// The CLIENT subcommands in this file are answered by featcache from its own clients' state (clientinfo.go), with
// Redis's replies and errors. CLIENT LIST, INFO, KILL and UNBLOCK are about the clients of featcache, never about
// featcache's own upstream connections, which a client must neither see nor be able to close.

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
		c.nullReply()
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
	c.replies.mute()
}

// cmdClientInfo describes this client connection as one CLIENT LIST line.
func (c *client) cmdClientInfo(args [][]byte) {
	v := c.viewOf(c, c.srv.now(), "client|info")
	c.verbatimReply(v.appendLine(nil))
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
	c.verbatimReply(b)
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
// clients killed, SKIPME yes by default. A killed client is closed after the reply to the command it runs, and
// before this reply unless that takes longer than killWait; the caller, after this reply.
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
	var others []*client
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
			others = append(others, other)
		}
		killed++
	}
	// Redis has closed the clients it killed when it answers: a client library that checks its pooled connection
	// before using it finds it closed, and dials again.
	awaitClosed(others)
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
	if settling := i.settling; settling != nil {
		// Redis may hold the command blocked already: wait until the client knows its connection's id.
		i.mu.Unlock()
		<-settling
		i.mu.Lock()
	}
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
