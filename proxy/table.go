package proxy

import (
	"strings"
	"sync/atomic"

	"featcache/internal/commands"

	"featcache/internal/resp"
)

// class says how featcache handles a command. Every command has exactly one, decided once at start from Redis's
// metadata plus featcache's own entries (newTable); the request path never looks at command names itself.
type class uint8

const (
	// classForward commands travel over shared upstream connections and their replies are relayed as they are.
	classForward class = iota
	// classWrite commands are forwarded, then the keys they name are invalidated before the reply goes out.
	classWrite
	// classRead commands (GET, MGET) are answered from the local tier when their keys' policies cache them.
	classRead
	// classLocal commands are answered by featcache from the client connection's own state.
	classLocal
	// classTx commands (MULTI, EXEC, DISCARD, WATCH, UNWATCH) manage a transaction.
	classTx
	// classSubscribe commands put the client in pub/sub mode on a dedicated upstream connection.
	classSubscribe
	// classBlocking commands may block and run on a dedicated upstream connection.
	classBlocking
	// classMonitor is MONITOR: a stream from a dedicated upstream connection of its own, until RESET or QUIT.
	classMonitor
	// classAdmin commands are featcache's own (CACHE ...).
	classAdmin
	// classDenied commands are refused (commands.deny).
	classDenied
	// classRefused commands carry per-connection upstream state featcache cannot keep for a client; they get a
	// clear error.
	classRefused
)

// after says what a write needs once the upstream answered, before its reply may go out.
type after uint8

const (
	afterKeys    after = iota // invalidate the keys its key specs name
	afterFlush                // FLUSHALL, FLUSHDB, SWAPDB: every cached key may have changed
	afterBarrier              // keys Redis cannot name in advance (scripts, incomplete key specs): see barrier
)

// command is one entry of the command table.
type command struct {
	name    string // lower-case full name, "client|setname" for a subcommand
	class   class
	after   after
	cluster clusterRule    // ruleNone unless the table was built for a Redis Cluster upstream
	info    *commands.Info // Redis's metadata; nil for commands the upstream does not know (CACHE)
	local   func(c *client, args [][]byte)
	read    func(c *client, cmd *resp.Command) // classRead: the cached-read path
	tx      func(c *client, cmd *resp.Command) // classTx
	fwd     func(c *client, cmd *resp.Command) // classForward commands forwarded their own way (INFO, SCRIPT KILL), else nil
	subs    map[string]*command                // subcommand entries, by lower-case subcommand name
	calls   *atomic.Int64                      // commands received under this name (featcache_commands_total)
	// outside: a batch holding it runs outside the client socket's read (client.directSafe), since it may watch the
	// socket (blocking and pinned waits, commands forwarded alone) or start a session (a transaction, pub/sub,
	// MONITOR, the Lua debugger).
	outside bool
	lat     uint8 // its latency class outside sessions (featcache_request_duration_seconds)
}

// meta returns Redis's metadata for the command: nil for a nil entry (a command neither Redis nor featcache knows)
// and for featcache's own commands. Its key specs say which master of a Redis Cluster a forwarded command goes to.
func (tc *command) meta() *commands.Info {
	if tc == nil {
		return nil
	}
	return tc.info
}

// table maps command names to their entries.
type table struct {
	cmds map[string]*command
	// fieldTTL: the upstream has per-field hash expiry (HPTTL, Redis 7.4 and later), so hash fills read each
	// field's own TTL.
	fieldTTL bool
	// get is GET's entry while GET is a cached read (not denied), else nil: execBatch answers a GET through it
	// without the general dispatch.
	get *command
}

// lookup returns the entry for a command line, the subcommand's entry when it has one, or nil when neither Redis
// nor featcache knows the command (it is then forwarded, and Redis answers with its own error).
func (t *table) lookup(args [][]byte) *command {
	var buf [32]byte
	cmd := t.cmds[string(lower(buf[:0], args[0]))]
	if cmd == nil || cmd.subs == nil || len(args) < 2 {
		return cmd
	}
	if sub := cmd.subs[string(lower(buf[:0], args[1]))]; sub != nil {
		return sub
	}
	return cmd
}

// lower appends the ASCII lower case of b to dst; names longer than dst's capacity are not commands, and are
// returned as they are (the lookup simply finds nothing) rather than grown into a heap buffer.
func lower(dst, b []byte) []byte {
	if len(b) > cap(dst) {
		return b
	}
	return resp.AppendLower(dst, b)
}

// localCommands are answered by featcache itself: they read or change state that belongs to the client
// connection, which must never travel over a shared upstream connection.
var localCommands = map[string]func(c *client, args [][]byte){
	"ping":                (*client).cmdPing,
	"echo":                (*client).cmdEcho,
	"quit":                (*client).cmdQuit,
	"reset":               (*client).cmdReset,
	"hello":               (*client).cmdHello,
	"auth":                (*client).cmdAuth,
	"select":              (*client).cmdSelect,
	"readonly":            (*client).cmdClusterOnly,
	"readwrite":           (*client).cmdClusterOnly,
	"asking":              (*client).cmdClusterOnly,
	"client|setname":      (*client).cmdClientSetname,
	"client|getname":      (*client).cmdClientGetname,
	"client|id":           (*client).cmdClientID,
	"client|setinfo":      (*client).cmdClientSetinfo,
	"client|reply":        (*client).cmdClientReply,
	"client|info":         (*client).cmdClientInfo,
	"client|list":         (*client).cmdClientList,
	"client|kill":         (*client).cmdClientKill,
	"client|unblock":      (*client).cmdClientUnblock,
	"client|no-evict":     (*client).cmdClientNoEvict,
	"client|getredir":     (*client).cmdClientGetredir,
	"client|trackinginfo": (*client).cmdClientTrackinginfo,
	"client|tracking":     (*client).cmdClientTracking,
	"client|caching":      (*client).cmdClientCaching,
	"config|get":          (*client).cmdConfigGet,
	"script|debug":        (*client).cmdScriptDebug,
}

// refusedCommands would set per-connection state on the upstream that featcache cannot keep per client, or turn
// the connection they run on into something else (a replica). SCRIPT DEBUG is featcache's own (ldb.go).
var refusedCommands = []string{
	"client|no-touch",
	"sync", "psync", "replconf",
}

// txCommands manage transactions (tx.go) and WATCH sessions (pinned.go).
var txCommands = []string{"multi", "exec", "discard", "watch", "unwatch"}

// txHandler is the transaction command's implementation; a function rather than a map of method values, which
// would make an initialization cycle (exec dispatches to them).
func txHandler(name string) func(c *client, cmd *resp.Command) {
	switch name {
	case "multi":
		return (*client).cmdMulti
	case "exec":
		return (*client).cmdExec
	case "discard":
		return (*client).cmdDiscard
	case "watch":
		return (*client).cmdWatch
	}
	return (*client).cmdUnwatch
}

// subscribeCommands enter or leave pub/sub mode.
var subscribeCommands = []string{"subscribe", "psubscribe", "ssubscribe", "unsubscribe", "punsubscribe", "sunsubscribe"}

// flushCommands change every key of a database without naming them.
var flushCommands = []string{"flushall", "flushdb", "swapdb"}

// scriptCommands run scripts or functions that may write keys they did not declare.
var scriptCommands = []string{"eval", "evalsha", "fcall"}

// newTable builds the command table from Redis's metadata and featcache's own entries. deny lists commands
// ("config") or subcommands ("client|kill") to refuse. cluster says the upstream is a Redis Cluster: the commands
// of clusterRules get their rules (in front of a single node every rule is ruleNone).
func newTable(cmds commands.Table, deny []string, cluster bool) *table {
	t := &table{cmds: make(map[string]*command, len(cmds)+8), fieldTTL: cmds["hpttl"] != nil}
	for name, info := range cmds {
		top := &command{name: name, info: info, class: classify(info)}
		t.cmds[name] = top
		for subName, sub := range info.Subcommands {
			if top.subs == nil {
				top.subs = make(map[string]*command, len(info.Subcommands))
			}
			top.subs[subName] = &command{name: sub.Name, info: sub, class: classify(sub)}
		}
	}
	set := func(name string, f func(*command)) {
		top, sub, isSub := strings.Cut(name, "|")
		cmd := t.cmds[top]
		if cmd == nil {
			cmd = &command{name: top}
			t.cmds[top] = cmd
		}
		if isSub {
			if cmd.subs == nil {
				cmd.subs = map[string]*command{}
			}
			s := cmd.subs[sub]
			if s == nil {
				s = &command{name: name}
				cmd.subs[sub] = s
			}
			cmd = s
		}
		f(cmd)
	}
	for name, fn := range localCommands {
		// A subcommand is answered locally only if the upstream has it (CLIENT SETINFO arrived in Redis 7.2):
		// otherwise it is forwarded and the client gets the upstream's own unknown-subcommand error.
		if top, sub, isSub := strings.Cut(name, "|"); isSub && (cmds[top] == nil || cmds[top].Subcommands[sub] == nil) {
			continue
		}
		set(name, func(c *command) { c.class, c.local = classLocal, fn })
	}
	for _, name := range refusedCommands {
		set(name, func(c *command) { c.class = classRefused })
	}
	for _, name := range txCommands {
		set(name, func(c *command) { c.class, c.tx = classTx, txHandler(name) })
	}
	for _, name := range subscribeCommands {
		set(name, func(c *command) { c.class = classSubscribe })
	}
	for _, name := range flushCommands {
		set(name, func(c *command) { c.class, c.after = classWrite, afterFlush })
	}
	for _, name := range scriptCommands {
		set(name, func(c *command) { c.class, c.after = classWrite, afterBarrier })
	}
	set("monitor", func(c *command) { c.class = classMonitor })
	// WAIT blocks up to its timeout without the blocking flag.
	set("wait", func(c *command) { c.class = classBlocking })
	set("waitaof", func(c *command) { c.class = classBlocking })
	set("get", func(c *command) { c.class, c.read = classRead, (*client).readGet })
	set("mget", func(c *command) { c.class, c.read = classRead, (*client).readMget })
	set("hget", func(c *command) { c.class, c.read = classRead, (*client).readHGet })
	set("hmget", func(c *command) { c.class, c.read = classRead, (*client).readHMGet })
	set("hgetall", func(c *command) { c.class, c.read = classRead, (*client).readHGetAll })
	set("cache", func(c *command) { c.class, c.local = classAdmin, (*client).cmdCache })
	set("info", func(c *command) { c.fwd = (*client).forwardInfo })
	if cluster {
		for name, rule := range clusterRules {
			if top, sub, isSub := strings.Cut(name, "|"); isSub && (cmds[top] == nil || cmds[top].Subcommands[sub] == nil) ||
				!isSub && cmds[name] == nil {
				continue // a command the upstream does not have is forwarded, and Redis answers it
			}
			set(name, func(c *command) { c.cluster = rule })
		}
	}
	for _, name := range deny {
		set(strings.ToLower(name), func(c *command) {
			c.class = classDenied
			for _, s := range c.subs {
				s.class = classDenied
			}
		})
	}
	// Commands Redis runs while a script or function keeps it busy (SCRIPT KILL, FUNCTION KILL, FUNCTION STATS)
	// travel alone, on a dedicated connection: see forwardAlone.
	alone := func(c *command) {
		if c.class == classForward && c.fwd == nil && c.info != nil && c.info.Flags&commands.FlagAllowBusy != 0 {
			c.fwd = func(cl *client, cmd *resp.Command) { cl.forwardAlone(cmd, c) }
		}
	}
	for _, top := range t.cmds {
		alone(top)
		top.outside = runsOutside(top)
		for _, sub := range top.subs {
			alone(sub)
			sub.outside = runsOutside(sub)
		}
	}
	if g := t.cmds["get"]; g != nil && g.class == classRead {
		t.get = g
	}
	return t
}

// runsOutside reports whether a batch holding c must run outside the client socket's read (command.outside).
func runsOutside(c *command) bool {
	switch c.class {
	case classTx, classSubscribe, classBlocking, classMonitor:
		return true
	case classForward, classWrite:
		return c.fwd != nil // INFO, and SCRIPT KILL and the others forwarded alone
	}
	return c.name == "script|debug"
}

// classify derives a command's class from Redis's flags and key specs (commands.Info.MayWrite says which commands
// may change keys).
func classify(info *commands.Info) class {
	switch {
	case info.Flags&commands.FlagBlocking != 0:
		return classBlocking
	case info.MayWrite():
		return classWrite
	}
	return classForward
}

// rejection is the error Redis gives a command line before running it, or "": an unknown command, an unknown
// subcommand of a known container (lookup returns the container's own entry only then), or a wrong number of
// arguments. Redis checks these before authentication and at MULTI queue time.
func rejection(args [][]byte, tc *command) string {
	switch {
	case tc == nil:
		return unknownCommandError(args)
	case tc.subs != nil && len(args) >= 2:
		return "ERR unknown subcommand '" + string(truncateArg(args[1], 128)) + "'. Try " +
			strings.ToUpper(string(args[0])) + " HELP."
	case tc.info != nil && !tc.info.ArityOK(len(args)):
		return "ERR wrong number of arguments for '" + tc.name + "' command"
	}
	return ""
}

// refuse answers a denied or refused command with the error exec gives it outside a session. Redis's own checks
// come first, as Redis makes them before anything else: an unknown subcommand of a denied command, or a wrong
// number of arguments, gets Redis's error.
func (c *client) refuse(cmd *resp.Command, tc *command) {
	if msg := rejection(cmd.Args, tc); msg != "" {
		c.errorReply(msg)
		return
	}
	c.srv.stats.Refused.Add(1)
	if tc.class == classDenied {
		c.errorReply("ERR command '" + tc.name + "' is disabled by featcache (commands.deny)")
		return
	}
	c.errorReply("ERR '" + tc.name + "' is not supported by featcache: it would change a shared upstream connection")
}

// isWrite reports whether a command may change keys: a write, or a blocking command that may write (BLPOP, BLMOVE).
func isWrite(tc *command) bool {
	return tc.class == classWrite || tc.class == classBlocking && tc.info.MayWrite()
}
