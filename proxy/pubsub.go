package proxy

import (
	"bytes"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"featcache/internal/resp"
	"featcache/upstream"
)

// pubsub is a client's pub/sub session: a dedicated upstream connection whose frames a pump goroutine copies to
// the client while the client goroutine forwards its commands.
//
// Redis keeps a RESP2 client in subscribed mode while it has channels or patterns; featcache models the sets from
// the commands it forwards and, when the model says the count reaches zero, sends a marker PING and leaves the
// mode only when the pump sees the marker's reply with the upstream's count at zero, so no reply is attributed to
// the wrong mode.
type pubsub struct {
	c    *client
	conn *upstream.Conn

	channels, patterns, shards map[string]struct{}
	count                      atomic.Int64 // the upstream's subscription count, from confirmations
	marker                     []byte
	markerSeen                 chan struct{}
	on                         bool          // subscribed mode, owned by the client goroutine
	monitor                    bool          // a MONITOR session: the mode lasts until RESET or QUIT
	ldb                        bool          // a Lua debugging session: the mode lasts until Redis closes (ldb.go)
	unsynced                   bool          // MONITOR: commands were forwarded since the last sync
	done                       chan struct{} // closed by close
	exited                     chan struct{} // closed when the pump has returned: it writes nothing more
	closeOnce                  sync.Once
	// hellos counts the HELLOs featcache sent on the connection (the client changed protocol while subscribed or
	// monitoring) whose replies the pump has not swallowed yet: they are not the client's.
	hellos atomic.Int32
	// bypass: a RESP3 client's command runs outside the session while it is subscribed (execBesideSubscriptions).
	bypass bool
	// muteFirst: the command that started the stream was sent under CLIENT REPLY OFF or SKIP, so its reply (MONITOR's
	// +OK), the stream's first frame, is not the client's. Set before the pump starts; the pump's afterwards.
	muteFirst bool
}

func (p *pubsub) active() bool { return p.on }

func (c *client) subscribe(cmd *resp.Command, tc *command) {
	c.runSegment()
	if c.sub == nil {
		slot := upstream.NoSlot
		if c.srv.clustered() && tc != nil && tc.name == "ssubscribe" && len(cmd.Args) > 1 {
			// Shard channels live on the master of their slot; ordinary channels are heard on every node.
			slot = int(upstream.Slot(cmd.Args[1]))
		}
		conn, err := c.srv.up.DedicatedSlot(slot)
		if err == nil {
			err = c.prepareConn(conn) // a RESP3 client's messages are pushes
		}
		if err != nil {
			c.srv.stats.Errors.Add(1)
			c.errorReply(upstreamErrorText(err))
			return
		}
		c.sub = c.newSession(conn, "featcache-unsubscribed-")
		go c.sub.pump()
	}
	c.sub.on = true
	c.execSubscribed(cmd, tc)
}

// execSubscribed forwards a command in subscribed mode, or in a MONITOR session; replies come back through the
// pump. QUIT and RESET are handled here: they end the session.
func (c *client) execSubscribed(cmd *resp.Command, tc *command) (done bool) {
	p := c.sub
	name := ""
	if tc != nil {
		name = tc.name
	}
	switch name {
	case "quit", "reset":
		if rejection(cmd.Args, tc) != "" {
			break // RESET with arguments: Redis's arity error, through the pump, and the session goes on
		}
		// The replies of what was sent on the session before it (a SUBSCRIBE's confirmation, MONITOR's +OK, when the
		// client pipelined them with QUIT or RESET) reach the client first, as from Redis; what Redis had not sent by
		// then is lost with the connection, as in Redis.
		c.syncSubscribed()
		c.flush()
		p.close()
		// A frame the pump read before the close must not reach the client after the reply below.
		<-p.exited
		c.sub = nil
		tc.local(c, cmd.Args)
		return true
	}
	if p.monitor {
		c.execMonitoring(cmd, tc)
		return true
	}
	if c.resp3() && (tc == nil || tc.class != classSubscribe) {
		// RESP3 lets a subscribed client run any command on its connection: execBesideSubscriptions.
		return false
	}
	if tc != nil && (tc.class == classDenied || tc.class == classRefused) {
		// Never sent upstream, not even for Redis to refuse in subscribed mode. The refusal must follow the replies
		// of the commands before it, which the pump writes: a marker PING's reply, seen by the pump, says it has
		// written them.
		c.runSegment()
		c.flush()
		p.sync(c.srv.up.Timeout())
		c.refuse(cmd, tc)
		return true
	}
	var req []byte
	if cmd.Raw != nil {
		req = cmd.Raw
	} else {
		req = resp.AppendArgs(nil, cmd.Args)
	}
	p.model(name, cmd.Args[1:])
	c.publish()
	if p.total() == 0 {
		req = resp.AppendArgs(append([]byte(nil), req...), [][]byte{[]byte("PING"), p.marker})
	}
	c.runSegment()
	if err := c.sendToSession(p, req); err != nil {
		p.close()
		c.sub = nil
		c.errorReply(upstreamErrorText(err))
		return true
	}
	p.unsynced = true
	if p.total() == 0 {
		// Leaving subscribed mode waits for Redis's confirmation as a direct client would, or at most
		// upstream.command_timeout.
		var expired <-chan time.Time
		if d := c.srv.up.CommandTimeout(); d > 0 {
			timer := time.NewTimer(d)
			defer timer.Stop()
			expired = timer.C
		}
		select {
		case <-p.markerSeen:
			if p.count.Load() == 0 {
				p.on = false
			}
		case <-p.done:
			c.sub = nil
		case <-c.srv.closing:
			p.close() // the server is closing: so is this client
			<-p.exited
			c.sub = nil
		case <-expired:
			// Redis did not answer within upstream.command_timeout: the session ends with its connection, which
			// drops the subscriptions in Redis too, and the client is told.
			p.close()
			<-p.exited
			c.sub = nil
			c.srv.stats.Errors.Add(1)
			c.errorReply(upstreamErrorText(upstream.ErrCommandTimeout))
		}
	}
	return true
}

// sync waits until the pump has written the replies of everything sent on the session's connection so far: it
// sends a marker PING and waits for the pump to see its reply (or the session to end, or timeout to pass).
func (p *pubsub) sync(timeout time.Duration) {
	if err := p.conn.Write(resp.AppendArgs(nil, [][]byte{[]byte("PING"), p.marker})); err != nil {
		return
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.markerSeen:
	case <-p.done:
	case <-t.C:
	}
}

// model applies a forwarded command to the modelled subscription sets.
func (p *pubsub) model(name string, args [][]byte) {
	var set map[string]struct{}
	add := true
	switch name {
	case "subscribe":
		set = p.channels
	case "psubscribe":
		set = p.patterns
	case "ssubscribe":
		set = p.shards
	case "unsubscribe":
		set, add = p.channels, false
	case "punsubscribe":
		set, add = p.patterns, false
	case "sunsubscribe":
		set, add = p.shards, false
	default:
		return
	}
	if !add && len(args) == 0 {
		clear(set)
		return
	}
	for _, a := range args {
		if add {
			set[string(a)] = struct{}{}
		} else {
			delete(set, string(a))
		}
	}
}

func (p *pubsub) total() int { return len(p.channels) + len(p.patterns) + len(p.shards) }

// pump copies the dedicated connection's frames to the client, swallowing the marker replies. The frames
// already buffered are relayed in one write.
func (p *pubsub) pump() {
	defer close(p.exited)
	defer p.close()
	var frame, out []byte
	for {
		var err error
		if frame, err = p.conn.ReadFrame(frame[:0], time.Time{}); err != nil {
			p.lost()
			return
		}
		out = out[:0]
		marked := false
		for {
			switch p.classify(frame) {
			case frameRelayed:
				out = append(out, frame...)
			case frameMarker:
				if len(out) == 0 {
					p.signalMarker() // nothing before it waits to be written
				} else {
					marked = true
				}
			}
			if !p.conn.Buffered() {
				break
			}
			if frame, err = p.conn.ReadFrame(frame[:0], time.Time{}); err != nil {
				break
			}
		}
		if len(out) > 0 && !p.c.send(out) {
			return
		}
		if marked {
			// Only now: the marker says the frames before it reached the client, and they were in out.
			p.signalMarker()
		}
		if err != nil {
			p.lost()
			return
		}
		if cap(out) > retainBytes {
			out = nil
		}
	}
}

// The kinds of frame a session's connection carries.
const (
	frameRelayed = iota // a reply or message for the client
	frameMarker         // the reply to featcache's marker PING
	frameDropped        // featcache's own, or one the client must not see
)

// classify says what pump does with frame, noting the subscription count it carries.
func (p *pubsub) classify(frame []byte) int {
	if n, ok := subscriptionCount(frame); ok {
		p.count.Store(n)
	}
	switch {
	case p.isMarker(frame):
		return frameMarker
	case p.isMarkerEcho(frame) || p.mutedFirst():
		return frameDropped
	case p.hellos.Load() > 0 && isHelloReply(frame):
		p.hellos.Add(-1)
		return frameDropped
	}
	return frameRelayed
}

// signalMarker tells a waiting sync that the marker's reply came back.
func (p *pubsub) signalMarker() {
	select {
	case p.markerSeen <- struct{}{}:
	default:
	}
}

// isMarker recognises the reply to the marker PING, in subscribed form (*2 pong marker) or plain ($marker).
func (p *pubsub) isMarker(frame []byte) bool {
	end := len(frame) - 2
	if end < len(p.marker) || !bytes.Equal(frame[end-len(p.marker):end], p.marker) {
		return false // a message or another reply, told apart without building anything
	}
	plain := resp.AppendBulk(nil, p.marker)
	subscribed := append(resp.AppendBulkString(resp.AppendArray(nil, 2), "pong"), plain...)
	return bytes.Equal(frame, plain) || bytes.Equal(frame, subscribed)
}

// isMarkerEcho recognises, in a MONITOR session, the stream's line for the marker PING itself (Redis shows a
// monitoring client its own commands): featcache sent it, the client did not, so the client never sees it.
func (p *pubsub) isMarkerEcho(frame []byte) bool {
	if !p.monitor || len(frame) == 0 || frame[0] != resp.TypeSimple {
		return false
	}
	line := frame[:len(frame)-2]
	return bytes.HasSuffix(line, []byte(`] "PING" "`+string(p.marker)+`"`))
}

// mutedFirst reports, once, whether the frame the pump has just read is the muted reply of the command that started
// the stream (muteFirst).
func (p *pubsub) mutedFirst() bool {
	if !p.muteFirst {
		return false
	}
	p.muteFirst = false
	return true
}

// lost ends the client's connection when its subscriptions' upstream connection failed (Redis went away, or the
// primary moved in a failover) while it is subscribed: the client sees its connection close, as it would with
// Redis, and subscribes again when it reconnects, rather than staying connected and subscribed to nothing. A
// session the client goroutine ended (QUIT, RESET, a timeout, the client leaving) has closed done first.
func (p *pubsub) lost() {
	select {
	case <-p.done:
	default:
		if p.count.Load() > 0 || p.monitor || p.ldb {
			p.c.closeRaw()
		}
	}
}

func (p *pubsub) close() {
	p.closeOnce.Do(func() {
		close(p.done) // first: the pump's read fails next, and must know the session was ended on purpose
		p.conn.Close()
	})
}

// subscriptionCount reads the count of a (un)subscribe confirmation: *3 kind channel :count, or >3 ... in RESP3.
func subscriptionCount(frame []byte) (int64, bool) {
	if len(frame) > 0 && frame[0] == resp.TypePush {
		frame = append([]byte{resp.TypeArray}, frame[1:]...) // the same elements, read as an array's
	}
	if n, _, ok := resp.ArrayHeader(frame); !ok || n != 3 {
		return 0, false // a pattern message (4 elements), a MONITOR line, a PING's reply
	}
	var buf [3][]byte
	elems, err := resp.ArrayElements(frame, buf[:0])
	if err != nil || len(elems) != 3 {
		return 0, false
	}
	if kind, _, ok := resp.BulkPayload(elems[0]); !ok || !bytes.HasSuffix(kind, []byte("subscribe")) {
		return 0, false
	}
	return resp.IntegerValue(elems[2])
}

// newSession makes the session of a dedicated connection whose replies a pump relays (subscribed mode, MONITOR, a
// Lua debugging session). marker, with the client's id after it, names the CLIENT SETNAME the pump's sync sends and
// recognises.
func (c *client) newSession(conn *upstream.Conn, marker string) *pubsub {
	return &pubsub{
		c: c, conn: conn,
		channels: map[string]struct{}{}, patterns: map[string]struct{}{}, shards: map[string]struct{}{},
		marker:     []byte(marker + strconv.FormatInt(c.id, 10)),
		markerSeen: make(chan struct{}, 1),
		done:       make(chan struct{}),
		exited:     make(chan struct{}),
	}
}

// sendToSession writes req, a command the client sent, on the session's connection, whose pump relays the reply.
// The replies of the client's earlier commands are flushed first (the caller has run the segment they wait on), so
// they reach it before the pump's frames; and the command is noted as the client's last (CLIENT LIST's cmd) before
// it is sent, since the pump may write its reply before the batch ends, as Redis records a command before it runs.
func (c *client) sendToSession(p *pubsub, req []byte) error {
	c.flush()
	c.srv.stats.Forwarded.Add(1)
	c.noteBatch()
	return p.conn.Write(req)
}

// startStream sends cmd, which turns p's connection into a stream (MONITOR, an EVAL under the debugger), and
// starts the pump that relays the stream to the client, after the replies of what the client sent before it. When
// the command cannot be sent, the session ends and the client gets the error.
func (c *client) startStream(p *pubsub, cmd *resp.Command) {
	c.sub = p
	c.publish()
	if err := c.sendToSession(p, appendRequest(nil, cmd)); err != nil {
		p.conn.Close()
		c.sub = nil
		c.publish()
		c.srv.stats.Errors.Add(1)
		c.errorReply(upstreamErrorText(err))
		return
	}
	p.unsynced = true // the command's reply (MONITOR's +OK) comes before what featcache answers next itself
	go p.pump()
}
