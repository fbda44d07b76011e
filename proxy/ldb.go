package proxy

import (
	"bytes"
	"strings"
	"time"

	"featcache/internal/resp"
)

// Lua debugging (SCRIPT DEBUG YES, then EVAL), as redis-cli --ldb runs it. Redis forks for the session: the
// forked child runs the script under the debugger, talks to the client on its connection with the debugger's own
// commands and replies (not one reply per command), rolls every change back, and closes the connection when the
// script ends; the parent has dropped the connection at the fork. featcache arms the client when it asks (nothing
// is sent: Redis would only set a flag on the connection), and at its EVAL takes a dedicated upstream connection,
// arms it, and relays both ways, byte for byte, until Redis closes it; then it closes the client's connection, as
// Redis does. No key changes, so nothing is invalidated. SCRIPT DEBUG SYNC (the debugger in Redis's main thread,
// every other client of Redis blocked meanwhile, changes kept) stays refused: an operator debugs on Redis itself.

// scriptDebugYes arms a dedicated connection for the EVAL of a client that sent SCRIPT DEBUG YES.
var scriptDebugYes = resp.AppendArgs(nil, [][]byte{[]byte("SCRIPT"), []byte("DEBUG"), []byte("YES")})

// cmdScriptDebug answers SCRIPT DEBUG YES and NO for the client's connection; SYNC, and YES in a session whose
// commands run on a connection featcache cannot hand to a debugger (WATCH, subscriptions, MONITOR), are refused.
func (c *client) cmdScriptDebug(args [][]byte) {
	mode := strings.ToLower(string(args[2]))
	switch mode {
	case "yes", "no":
	case "sync":
		c.srv.stats.Refused.Add(1)
		c.errorReply("ERR 'script|debug' is not supported by featcache with SYNC: the debugger would block every " +
			"client of Redis; use SCRIPT DEBUG YES, or debug on Redis")
		return
	default:
		c.errorReply("ERR Use SCRIPT DEBUG YES/SYNC/NO")
		return
	}
	if mode == "yes" && (c.tx.conn != nil || c.sub != nil) {
		c.srv.stats.Refused.Add(1)
		c.errorReply("ERR 'script|debug' is not supported by featcache: it would change a shared upstream connection")
		return
	}
	c.ldbArmed = mode == "yes"
	c.simpleReply("OK")
}

// ldbEval runs an EVAL or EVALSHA of a client armed by SCRIPT DEBUG YES. EVALSHA gets Redis's refusal; EVAL starts
// the debugging session on a dedicated connection, whose frames the pump copies to the client (the debugger's
// first stop, then its answers, then the script's reply) until Redis closes the connection at the session's end.
func (c *client) ldbEval(cmd *resp.Command, tc *command) {
	if tc.name == "evalsha" {
		c.errorReply("ERR Please use EVAL instead of EVALSHA for debugging")
		return
	}
	if !tc.info.ArityOK(len(cmd.Args)) {
		// Redis refuses it before it forks: the connection stays, and so does the debugging flag.
		c.errorReply("ERR wrong number of arguments for '" + tc.name + "' command")
		return
	}
	c.runSegment()
	// In front of a Redis Cluster, on the master of the script's keys (CROSSSLOT otherwise); in RESP3 for a RESP3
	// client.
	conn, _, ok := c.dedicatedFor(cmd, tc)
	if !ok {
		return
	}
	if err := conn.Do(c.call, scriptDebugYes, 1, time.Now().Add(c.srv.up.Timeout())); err != nil {
		conn.Close()
		c.srv.stats.Errors.Add(1)
		c.errorReply(upstreamErrorText(err))
		return
	} else if reply := c.call.Frame(0); !bytes.Equal(reply, okReply) {
		conn.Close()
		c.rawReply(reply) // the upstream's refusal, as it gave it
		return
	}
	p := c.newSession(conn, "featcache-ldb-")
	p.ldb, p.on = true, true
	c.startStream(p, cmd)
}

// execLdb sends a command of a client in a debugging session to the debugger, verbatim: the debugger's commands
// (step, continue, print, eval, redis, abort, ...) are not Redis's, and even QUIT is the debugger's to answer.
// When the connection fails, the pump closes the client's.
func (c *client) execLdb(cmd *resp.Command) {
	c.runSegment()
	if err := c.sendToSession(c.sub, appendRequest(nil, cmd)); err != nil {
		c.sub.close()
		c.closeRaw()
	}
}
