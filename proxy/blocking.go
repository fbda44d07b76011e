package proxy

import (
	"bytes"
	"fmt"
	"strconv"
	"time"

	"featcache/internal/resp"
	"featcache/upstream"
)

// blocking runs a blocking command on a dedicated connection. upstream.timeout does not cut it short: the wait is
// bounded by the command's own timeout (plus blockingSlack and upstream.timeout), and a timeout of 0 waits as long
// as Redis would. While it waits, featcache watches the client connection; if the client leaves, the dedicated
// connection is closed, which makes Redis drop the blocked command.
func (c *client) blocking(cmd *resp.Command, tc *command) {
	d, blocks := blockingTimeout(cmd.Args, tc)
	if !blocks {
		// XREAD and XREADGROUP without BLOCK do not block.
		if tc.info.MayWrite() {
			c.write(cmd, tc)
		} else {
			c.forward(cmd, tc)
		}
		return
	}
	conn, req, ok := c.forwardingAlone(cmd, tc)
	if !ok {
		return
	}
	var overall time.Time
	if d > 0 {
		overall = time.Now().Add(d + blockingSlack + c.srv.up.Timeout())
	}
	start := time.Now()
	reply, err := c.waitBlocked(conn, req, overall, false)
	if err == nil {
		// In front of a Redis Cluster the connection follows MOVED and ASK (the command left no state), and the
		// command is sent again on it.
		reply, err = conn.Follow(reply, true, func(asking bool) ([]byte, error) {
			return c.waitBlocked(conn, req, overall, asking)
		})
	}
	c.srv.metrics.observeUpstream(upBlocking, start)
	c.seg.req.Reset()
	if tc.info.MayWrite() {
		c.afterWrite(cmd.Args, tc)
	}
	if err != nil {
		conn.Close()
		if c.info.killed.Load() {
			return // CLIENT KILL closed the connection it waited on; the client is closed without a reply
		}
		c.srv.stats.Errors.Add(1)
		c.errorReply(upstreamErrorText(err))
		return
	}
	conn.Release()
	c.rawReply(reply)
}

var askingCmd = resp.AppendCommand(nil, "ASKING")

// blockingSlack is how long featcache waits for Redis's answer past a blocking command's own timeout, on top of
// upstream.timeout: Redis notices an expired timeout on a tick of its event loop, up to one server cron period
// late (1/hz: 100 ms by default, 1 s at the lowest hz), and answers then.
const blockingSlack = time.Second

// waitBlocked writes req and reads its one reply, until overall (zero: as long as it takes). While it waits, the
// client socket is watched: when the client leaves, conn is closed at once, so that Redis drops the blocked
// command before it can hand it an element nobody would receive. CLIENT ID goes first in the same write: with the
// connection's id in Redis, another client's CLIENT UNBLOCK can unblock this one (cmdClientUnblock). With asking
// (the command follows an ASK redirect), ASKING goes right before the command, which it is for: Redis applies it
// to the next command only, and would not to the command after CLIENT ID.
func (c *client) waitBlocked(conn *upstream.Conn, req []byte, overall time.Time, asking bool) ([]byte, error) {
	// The replies of the commands before it go out now, as Redis sends them before the command blocks.
	c.flush()
	msg := clientIDCmd[:len(clientIDCmd):len(clientIDCmd)]
	if asking {
		msg = append(msg, askingCmd...)
	}
	c.settleBlocking()
	if err := conn.Write(append(msg, req...)); err != nil {
		c.setBlocked(nil, 0, "")
		return nil, err
	}
	stop := c.watchPeer(conn)
	reply, err := conn.ReadFrame(c.call.Replies[:0], overall)
	rid, ok := resp.IntegerValue(reply)
	switch {
	case err != nil:
		c.setBlocked(nil, 0, "")
	case ok:
		c.setBlocked(conn, rid, blockedName(req))
		reply, err = readBlocked(conn, reply[:0], overall, asking)
		c.setBlocked(nil, 0, "")
	case len(reply) > 0 && reply[0] == resp.TypeError:
		// Redis refused CLIENT ID (BUSY, LOADING, ...): it answers the command after it as it sees fit, and that
		// reply is the client's; the command cannot be unblocked by id meanwhile.
		c.setBlocked(nil, 0, "")
		reply, err = readBlocked(conn, reply[:0], overall, asking)
	default:
		c.setBlocked(nil, 0, "")
		err = fmt.Errorf("%w: CLIENT ID answered %q", resp.ErrBadFrame, reply)
	}
	if stop() {
		return nil, errClientGone
	}
	if err != nil {
		return nil, err
	}
	c.call.Replies = reply
	return reply, nil
}

var clientIDCmd = resp.AppendCommand(nil, "CLIENT", "ID")

// readBlocked appends the blocking command's reply to dst, after reading ASKING's when asking: that one is not
// the client's (Redis refusing it, BUSY say, refuses the command after it too, and that reply is the client's).
func readBlocked(conn *upstream.Conn, dst []byte, overall time.Time, asking bool) ([]byte, error) {
	if asking {
		if _, err := conn.ReadFrame(dst, overall); err != nil {
			return dst, err
		}
	}
	return conn.ReadFrame(dst, overall)
}

// blockedName is the lower-case name of the command in req (one RESP command), for CLIENT LIST.
func blockedName(req []byte) string {
	if args, n := resp.ParseCommand(req, nil); n > 0 {
		return string(resp.AppendLower(nil, args[0]))
	}
	return "NULL"
}

// blockingTimeout reads a blocking command's own timeout. blocks is false for XREAD/XREADGROUP without BLOCK.
// An unparsable timeout is left to Redis, which rejects it at once.
func blockingTimeout(args [][]byte, tc *command) (d time.Duration, blocks bool) {
	name := tc.name
	switch name {
	case "xread", "xreadgroup":
		for i := 1; i+1 < len(args); i++ {
			if bytes.EqualFold(args[i], []byte("block")) {
				ms, err := strconv.ParseInt(string(args[i+1]), 10, 64)
				if err != nil || ms < 0 {
					return time.Second, true
				}
				return time.Duration(ms) * time.Millisecond, true
			}
			if bytes.EqualFold(args[i], []byte("streams")) {
				break
			}
		}
		return 0, false
	case "wait", "waitaof":
		if len(args) < 3 {
			return time.Second, true
		}
		ms, err := strconv.ParseInt(string(args[len(args)-1]), 10, 64)
		if err != nil || ms < 0 {
			return time.Second, true
		}
		return time.Duration(ms) * time.Millisecond, true
	case "blmpop", "bzmpop":
		if len(args) < 2 {
			return time.Second, true
		}
		return secondsArg(args[1]), true
	}
	if len(args) < 2 {
		return time.Second, true
	}
	return secondsArg(args[len(args)-1]), true
}

// secondsArg parses a blocking timeout in (fractional) seconds.
func secondsArg(b []byte) time.Duration {
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil || f < 0 {
		return time.Second
	}
	return time.Duration(f * float64(time.Second))
}
