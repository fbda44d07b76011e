package proxy

import (
	"bytes"
	"time"

	"featcache/internal/commands"
	"featcache/internal/resp"
	"featcache/localcache"
	"featcache/upstream"
)

// Segments bound the upstream payload they collect before sending it.
const (
	maxSegmentBytes  = 1 << 20
	maxSegmentFrames = 4096
)

// holeKind says what fills a hole in a batch's replies.
type holeKind uint8

const (
	holeFrame      holeKind = iota // a forwarded command's reply frame
	holeGet                        // a GET miss: its fill's result
	holeMgetKey                    // one key of an MGET: its fill's result
	holeMgetBypass                 // one MGET key no policy caches: a GET reply frame
	holeRegion                     // the start of an MGET with holes: replaced whole by an error if a key fails
	holeHash                       // a hash read (HGET, HMGET, HGETALL) waiting for its fill
	holeMerge                      // a multi-key command split over cluster slots: its parts' frames, merged
	holeMgetTx                     // an MGET answered from one transaction (mgetTx)
	holeInfo                       // INFO's reply frame, featcache's section appended (info.go)
	holeQueued                     // MULTI's or a queued command's reply in a transaction queued in front of a Redis Cluster
)

// hole is a reply (or part of one) that is only known after the segment's upstream round trip. Replies known at
// once are bytes: before the first hole they go straight to out, after it to tail, and assemble interleaves tail
// and holes in order (replies.go).
type hole struct {
	kind  holeKind
	pos   int // where in tail the hole sits
	frame int // upstream frame index (holeFrame, holeMgetBypass); holeQueued: 0 for MULTI, i for the ith command
	fill  *localcache.Fill
	key   []byte // points into the client's read buffer, valid for the batch
	lp    *localcache.Policy
	hash  *hashRead
	tx    *mgetTx
	pc    *policyCounters // holeGet, holeMgetKey, holeHash: where the read's outcome is counted
	end   int             // holeRegion: index of the first hole after the region
	stop  int             // holeRegion: tail position where the region ends
	parts int             // holeMerge: how many frames, from frame on
	rule  clusterRule     // holeMerge: how they merge
	mute  bool            // CLIENT REPLY OFF/SKIP: computed, not sent
	stale bool            // holeGet, holeMgetKey: served from memory because the fill failed (serve_stale)
}

// fetchItem is a fill this client leads: its GET and PTTL frames are in the segment's payload.
type fetchItem struct {
	fill  *localcache.Fill
	lp    *localcache.Policy
	frame int
	hash  *hashRead // a hash fill's read (HMGET or HGETALL and PTTL); nil for GET and PTTL
	tx    *mgetTx   // an MGET's transaction, whose replies to the GET and PTTL of key txKey complete the fill
	txKey int
}

// pendingWrite is a write of the segment whose invalidations run after the round trip.
type pendingWrite struct {
	args [][]byte
	tc   *command
}

// segment is the part of a batch waiting for one upstream round trip.
type segment struct {
	// now is the time lookups are judged at: freshness, expiry, serve-stale. It is read when the batch begins and
	// again after anything that may have waited (see client.clock), so that a read is never judged at a time
	// before a wait that preceded it in the pipeline.
	now     time.Time
	nowMs   int64            // now in unix milliseconds, as the local tier's lookups take it (AppendGetMs)
	waited  bool             // something may have waited since now was read: the next lookup reads the clock again
	req     upstream.Payload // upstream payload: one reply frame per command, each command with its hash slot
	tail    []byte
	holes   []hole
	fetches []fetchItem
	writes  []pendingWrite
	doErr   error
	keys    [][]byte  // scratch for key extraction
	mkeys   []mgetKey // scratch for an MGET's lookups
	forward bool      // the payload holds forwarded commands, not only fetches
	bypass  bool      // the payload holds GETs of an MGET's uncached keys
	tx      bool      // the payload is a transaction, or part of one (tx.go: sendSegment)
	// txFrame is the frame of the MULTI, plus one, of a transaction featcache queued in front of a Redis Cluster
	// and sends in this payload (cmdExec); 0 when there is none. Its holeQueued holes take their frames from it.
	txFrame int

	// proto is the client's protocol (HELLO): 2, or 3 for RESP3. The replies the segment builds are in it.
	proto int
	// up3: the payload's last command leaves its connection speaking RESP3. A RESP3 client's forwarded commands are
	// sent between HELLO 3 and HELLO 2 on the shared connection, so that Redis writes their replies in RESP3 and
	// they are relayed as Redis wrote them; featcache's own reads (fills) stay in RESP2 (see upstream3).
	up3 bool
	// pin is the client's pinned connection (txState.conn): while it has one, the payload goes there, and that
	// connection speaks the client's protocol already (prepareConn), so nothing switches it.
	pin **upstream.Conn
	// windows are the payload's runs of commands between a HELLO 3 and its HELLO 2 (upstream3), checked once the
	// round trip is over (checkWindows).
	windows []window
}

// class is the upstream round-trip class of the segment's payload, for featcache_upstream_duration_seconds.
func (s *segment) class() int {
	switch {
	case s.tx:
		return upTransaction
	case len(s.writes) > 0:
		return upWrite
	case s.forward:
		return upForward
	}
	return upRead
}

func (s *segment) begin(now time.Time) { s.setNow(now) }

// setNow sets the time the segment's lookups are judged at.
func (s *segment) setNow(now time.Time) { s.now, s.nowMs, s.waited = now, now.UnixMilli(), false }

// clock returns the time the client's next lookups are judged at: the batch's, unless something may have waited
// since it was read (a round trip, a blocking or pinned command, a barrier, a write to the client), when it reads
// the clock again. A run of cached reads therefore costs one clock read, however many keys it looks up.
func (c *client) clock() time.Time {
	s := &c.seg
	if s.waited {
		c.readClock()
	}
	return s.now
}

// clockMs is clock in unix milliseconds, for the tier's lookups (localcache.Cache.AppendGetMs). It brings the
// segment's time up to date as clock does: c.seg.now is then the same instant.
func (c *client) clockMs() int64 {
	s := &c.seg
	if s.waited {
		c.readClock()
	}
	return s.nowMs
}

// readClock reads the clock again for clock. It is kept out of line so that clock, which every cached read calls,
// stays small enough to be inlined.
//
//go:noinline
func (c *client) readClock() { c.seg.setNow(c.srv.now()) }

// hasWaited notes that the client may have waited: the next lookup reads the clock again.
func (c *client) hasWaited() { c.seg.waited = true }

func (s *segment) reset() {
	s.req.Reset()
	s.tail = s.tail[:0]
	for i := range s.holes {
		s.holes[i] = hole{}
	}
	s.holes = s.holes[:0]
	s.fetches = s.fetches[:0]
	s.writes = s.writes[:0]
	s.doErr = nil
	s.forward, s.bypass, s.tx, s.up3 = false, false, false, false
	s.txFrame = 0
	s.windows = s.windows[:0]
	if s.req.Cap() > maxSegmentBytes*2 {
		s.req = upstream.Payload{}
	}
	if cap(s.tail) > maxSegmentBytes*2 {
		s.tail = nil
	}
}

// empty reports whether the segment holds nothing that runSegment would send, complete, invalidate, assemble or
// reset: what a batch answered from memory alone leaves, whose end then costs no call.
func (s *segment) empty() bool {
	return len(s.holes) == 0 && s.req.Len() == 0 && len(s.tail) == 0 && len(s.fetches) == 0 && len(s.writes) == 0 &&
		len(s.windows) == 0 && s.doErr == nil && !s.forward && !s.bypass && !s.tx && !s.up3
}

// buf is where a reply known now goes: out while no hole precedes it, else the tail (replies.buf).
func (s *segment) buf(out *[]byte) *[]byte {
	if len(s.holes) == 0 {
		return out
	}
	return &s.tail
}

// addHole adds h at the tail's end: its reply comes after every reply added so far.
func (s *segment) addHole(h hole) {
	h.pos = len(s.tail)
	s.holes = append(s.holes, h)
}

// leads reports whether the segment holds fills this client leads that are not complete yet.
func (s *segment) leads() bool {
	for i := range s.fetches {
		if s.fetches[i].fill != nil {
			return true
		}
	}
	return false
}

func (s *segment) full() bool {
	return s.req.Size() > maxSegmentBytes || s.req.Len() > maxSegmentFrames
}

// addForward appends a command to the payload, routed by its keys as info's key specs find them (info is nil for
// a command Redis does not know, or one without keys), and a hole for its reply.
func (s *segment) addForward(cmd *resp.Command, info *commands.Info) {
	s.upstream3()
	s.addHole(hole{kind: holeFrame, frame: s.req.Len()})
	s.req.Append(info, cmd.Args, cmd.Raw)
	s.forward = true
}

// addForwardKey is addForward for a command whose slot is key's: a cached read forwarded as it is.
func (s *segment) addForwardKey(cmd *resp.Command, key []byte) {
	s.upstream3()
	s.addHole(hole{kind: holeFrame, frame: s.req.Len()})
	appendCommand(&s.req, int(upstream.Slot(key)), cmd)
	s.forward = true
}

// request empties the payload, puts cmd alone in it and returns its bytes: the one command of a round trip of its
// own, or of a dedicated connection. The caller resets the payload once the round trip is over.
func (s *segment) request(cmd *resp.Command) []byte {
	s.req.Reset()
	s.up3 = false
	appendCommand(&s.req, upstream.NoSlot, cmd)
	return s.req.Bytes()
}

// addFill joins key's fill or starts it; a started fill's GET and PTTL join the payload. The read is counted in pc
// once its reply is known: here when the second look serves it, into buf (replies.buf), in countFills otherwise.
func (s *segment) addFill(cache *localcache.Cache, buf *[]byte, kind holeKind, key []byte, lp *localcache.Policy, pc *policyCounters, now time.Time) {
	f, leader := cache.Acquire(key)
	if leader {
		// Look again inside the single flight: a fill of this key may have completed between the caller's miss
		// and Acquire, and its value must not cost a second upstream read.
		mark := len(*buf)
		var look localcache.Lookup
		if *buf, look = cache.AppendGet(*buf, key, lp, now, false); look.State != localcache.StateMiss {
			cache.Complete(f, servedResult((*buf)[mark:]), lp)
			*buf = s.fixNil(*buf, mark)
			if look.State == localcache.StateFresh {
				pc.hit.observe(look.Age)
			} else {
				pc.stale.observe(look.Age)
			}
			return
		}
		s.upstream2()
		s.fetches = append(s.fetches, fetchItem{fill: f, lp: lp, frame: s.req.Len()})
		s.req.AppendFetch(key)
	}
	s.addHole(hole{kind: kind, fill: f, key: key, lp: lp, pc: pc})
}

// servedResult turns a GET reply just served from the tier into a fill result for the fill's waiters.
func servedResult(reply []byte) localcache.Result {
	v, isNil, ok := resp.BulkPayload(reply)
	if !ok || isNil {
		return localcache.Result{Nil: true, NoStore: true}
	}
	return localcache.Result{Value: bytes.Clone(v), NoStore: true}
}

// addBypass fetches an MGET key that no policy caches with a plain GET.
func (s *segment) addBypass(key []byte) {
	s.upstream2()
	s.addHole(hole{kind: holeMgetBypass, frame: s.req.Len()})
	s.req.AppendKey("GET", key)
	s.bypass = true
}

// assemble appends the segment's replies, in order, to dst: tail bytes between holes, and each hole's content.
func (c *client) assemble(dst []byte) []byte {
	s := &c.seg
	if len(s.holes) == 0 {
		return dst
	}
	dst, _ = c.emit(dst, 0, len(s.holes), 0, len(s.tail), -1)
	c.countFills()
	return dst
}

// countFills counts the outcome of every read of the segment that waited for a fill, once, whether or not its
// reply was emitted (an MGET that failed as a whole stops emitting at the failing key): stale when served from
// memory on an upstream failure, error when the fill failed otherwise, miss when the fill answered.
func (c *client) countFills() {
	for i := range c.seg.holes {
		h := &c.seg.holes[i]
		if h.pc == nil {
			continue
		}
		done := false
		select {
		case <-h.fill.Done():
			done = true
		default: // a fill led by another client, behind the key that failed this MGET: its reply was the error
		}
		switch {
		case h.stale: // counted in pc.stale when it was served
			h.pc.staleOnError.Add(1)
		case !done || h.fill.Result().Err != nil:
			h.pc.results[resultError].Add(1)
		default:
			h.pc.results[resultMiss].Add(1)
		}
	}
}

// emit appends holes [from, to) with the tail bytes around them, from tail position start to stop. Inside an MGET
// (mget is where its reply begins in dst; -1 outside one), a key that cannot be answered makes emit report false.
// Replies are written as they are assembled, each MGET once whole; emit stops early, with what it has, once the
// connection is closing or a limit is reached, since the connection then closes without them.
func (c *client) emit(dst []byte, from, to, start, stop, mget int) ([]byte, bool) {
	s := &c.seg
	prev := start
	for i := from; i < to; i++ {
		if !c.assembling() {
			return dst, true
		}
		h := &s.holes[i]
		dst = append(dst, s.tail[prev:h.pos]...)
		prev = h.pos
		if h.kind == holeRegion {
			mark := len(dst)
			var ok bool
			dst, ok = c.emit(dst, i+1, h.end, h.pos, h.stop, mark)
			if !ok {
				dst = resp.AppendError(dst[:mark], upstreamErrorText(c.regionErr(i+1, h.end)))
			}
			if h.mute || c.tooLarge(len(dst)-mark) {
				dst = dst[:mark]
			}
			i, prev = h.end-1, h.stop
			dst = c.flushAssembled(dst)
			continue
		}
		if mget < 0 && !h.mute && h.kind == holeFrame && h.frame < c.call.Len() && s.frameErr(h.frame) == nil &&
			len(c.call.Frame(h.frame)) >= outputFlushBytes {
			// A large reply of Redis's is written from the round trip's buffer, not copied: the client holds it once.
			dst = c.writeThrough(dst, c.call.Frame(h.frame))
			c.hasWaited() // the write may have waited: what follows is judged at the time it runs
			continue
		}
		mark := len(dst)
		var ok bool
		dst, ok = c.emitHole(dst, h, mget >= 0)
		if !ok {
			return dst, false
		}
		if h.mute || mget < 0 && c.tooLarge(len(dst)-mark) {
			dst = dst[:mark]
		}
		if mget < 0 {
			dst = c.flushAssembled(dst)
		} else {
			// An MGET is bounded as it grows, not once whole.
			c.tooLarge(len(dst) - mget)
			c.chargeAssembly(dst)
		}
	}
	return append(dst, s.tail[prev:stop]...), true
}

// flushAssembled is flushDuringAssemble; a write to the client may wait, so the lookups after it read the clock
// again.
func (c *client) flushAssembled(dst []byte) []byte {
	n := len(dst)
	if dst = c.flushDuringAssemble(dst); len(dst) < n {
		c.hasWaited()
	}
	return dst
}

// emitHole appends one hole's reply. For an MGET key it reports false when the key cannot be answered.
func (c *client) emitHole(dst []byte, h *hole, inMget bool) ([]byte, bool) {
	s := &c.seg
	switch h.kind {
	case holeFrame, holeInfo:
		if err := s.frameErr(h.frame); err != nil {
			c.srv.stats.Errors.Add(1)
			return resp.AppendError(dst, "ERR "+err.Error()), true
		}
	}
	switch h.kind {
	case holeFrame:
		if h.frame < c.call.Len() {
			return append(dst, c.call.Frame(h.frame)...), true
		}
		c.srv.stats.Errors.Add(1)
		return resp.AppendError(dst, upstreamErrorText(s.doErr)), true
	case holeMerge:
		return c.appendMerged(dst, h), true
	case holeInfo:
		return c.emitInfo(dst, h), true
	case holeMgetBypass:
		if h.frame >= c.call.Len() {
			return dst, false
		}
		f := c.call.Frame(h.frame)
		if f[0] == resp.TypeError {
			if isUpstreamFailure(f) {
				return dst, false
			}
			return append(dst, s.null()...), true // MGET answers nil for a key of another type
		}
		if bytes.Equal(f, nullBulk) {
			return append(dst, s.null()...), true
		}
		return append(dst, f...), true
	}
	switch h.kind {
	case holeHash:
		return c.emitHashRead(dst, h), true
	case holeMgetTx:
		return c.emitMgetTx(dst, h), true
	case holeQueued:
		return s.appendQueued(dst, h.frame, c.call), true
	}
	<-h.fill.Done()
	res := h.fill.Result()
	switch {
	case res.Err != nil:
		if h.lp.ServeStale {
			var look localcache.Lookup
			mark := len(dst)
			if dst, look = c.srv.cache.AppendGet(dst, h.key, h.lp, c.clock(), true); look.State != localcache.StateMiss {
				dst = s.fixNil(dst, mark)
				h.stale = true
				h.pc.stale.observe(look.Age)
				return dst, true
			}
		}
		if inMget {
			return dst, false
		}
		c.srv.stats.Errors.Add(1)
		return resp.AppendError(dst, upstreamErrorText(res.Err)), true
	case res.Reply != nil:
		if inMget {
			return append(dst, s.null()...), true
		}
		return append(dst, res.Reply...), true
	case res.Nil:
		return append(dst, s.null()...), true
	}
	return resp.AppendBulk(dst, res.Value), true
}

// regionErr finds why an MGET failed: the first failing key's error.
func (c *client) regionErr(from, to int) error {
	for i := from; i < to; i++ {
		h := &c.seg.holes[i]
		if h.fill != nil {
			if err := h.fill.Result().Err; err != nil {
				return err
			}
		} else if h.frame < c.call.Len() {
			if f := c.call.Frame(h.frame); isUpstreamFailure(f) {
				return resp.ParseError(f)
			}
		}
	}
	if c.seg.doErr != nil {
		return c.seg.doErr
	}
	return errInternal
}

// appendRequest appends cmd as featcache sends it upstream: the bytes the client sent when the reader kept them
// (resp.Command.Raw), else the arguments as a RESP array.
func appendRequest(dst []byte, cmd *resp.Command) []byte {
	if cmd.Raw != nil {
		return append(dst, cmd.Raw...)
	}
	return resp.AppendArgs(dst, cmd.Args)
}

// appendCommand appends cmd to p as appendRequest writes it, routed by slot.
func appendCommand(p *upstream.Payload, slot int, cmd *resp.Command) {
	if cmd.Raw != nil {
		p.AppendRaw(slot, cmd.Raw)
	} else {
		p.AppendArgs(slot, cmd.Args)
	}
}

// appendQueued appends the reply to MULTI (i 0) or to the ith command queued after it, in a transaction featcache
// queued in front of a Redis Cluster: the master's own reply when the transaction went in this segment's payload
// (+OK and +QUEUED, or a refusal Redis makes at queue time for its state: OOM, BUSY), else featcache's (the
// client waited for it before sending EXEC, or ended the transaction without one).
func (s *segment) appendQueued(dst []byte, i int, call *upstream.Call) []byte {
	if f := s.txFrame - 1 + i; s.txFrame > 0 && f < call.Len() && s.frameErr(f) == nil {
		return append(dst, call.Frame(f)...)
	}
	if i == 0 {
		return resp.AppendString(dst, "OK")
	}
	return resp.AppendString(dst, "QUEUED")
}
