package proxy

import (
	"featcache/internal/resp"
	"featcache/upstream"
)

// monitor starts a MONITOR session on a dedicated upstream connection of its own, never a shared one (MONITOR
// turns the connection it runs on into a stream): the pump copies Redis's +OK and then the stream to the client.
// Only what reaches Redis is in the stream: reads featcache answers from memory are not. The session lasts until
// RESET or QUIT, or until the client leaves; its connection is then closed, never reused.
func (c *client) monitor(cmd *resp.Command, tc *command) {
	c.runSegment()
	conn, err := c.srv.up.DedicatedSlot(upstream.NoSlot)
	if err == nil {
		err = c.prepareConn(conn) // Redis answers the commands of a RESP3 client's session in RESP3
	}
	if err != nil {
		c.srv.stats.Errors.Add(1)
		c.errorReply(upstreamErrorText(err))
		return
	}
	p := c.newSession(conn, "featcache-monitor-")
	p.monitor, p.on = true, true
	// Under CLIENT REPLY OFF or SKIP Redis does not write MONITOR's +OK (the stream is featcache's to relay).
	p.muteFirst = c.reply != replyOn
	c.startStream(p, cmd) // it marks the session unsynced: what featcache answers next waits for MONITOR's +OK
}

// execMonitoring runs a command sent during a MONITOR session. featcache's own commands (connection commands,
// CACHE, denied and refused ones) are answered by featcache, after the replies of the commands forwarded before
// them; the others go to Redis on the monitoring connection, which answers them as it answers a client in MONITOR
// (keyspace commands are refused there), through the pump.
func (c *client) execMonitoring(cmd *resp.Command, tc *command) {
	p := c.sub
	if tc != nil {
		switch tc.class {
		case classLocal, classAdmin, classDenied, classRefused:
			c.runSegment()
			if p.unsynced {
				c.flush()
				p.sync(c.srv.up.Timeout())
				p.unsynced = false
			}
			switch {
			case tc.class == classDenied || tc.class == classRefused:
				c.refuse(cmd, tc)
			case rejection(cmd.Args, tc) != "":
				c.errorReply(rejection(cmd.Args, tc))
			default:
				tc.local(c, cmd.Args)
			}
			return
		}
	}
	if tc != nil && tc.name == "multi" {
		// Redis would queue the marker PINGs that put featcache's own answers after the replies before them (and
		// its EXEC would run them): a transaction on the monitoring connection is refused, as MONITOR in a WATCH
		// session is. Inside it, a MONITOR client could run nothing but PING, ECHO and the like anyway.
		c.runSegment()
		if p.unsynced {
			c.flush()
			p.sync(c.srv.up.Timeout())
			p.unsynced = false
		}
		c.errorReply("ERR MULTI while MONITOR is active is not supported by featcache")
		return
	}
	c.runSegment()
	if err := c.sendToSession(p, appendRequest(nil, cmd)); err != nil {
		p.close()
		<-p.exited
		c.sub = nil
		c.publish()
		c.srv.stats.Errors.Add(1)
		c.errorReply(upstreamErrorText(err))
		return
	}
	p.unsynced = true
}
