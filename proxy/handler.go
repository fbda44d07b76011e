package proxy

import (
	"bytes"
	"sync/atomic"
	"time"

	"featcache/config"
	"featcache/internal/commands"

	"featcache/internal/resp"
	"featcache/localcache"
	"featcache/upstream"
	"featcache/warm"
)

// execBatch runs one client pipeline and appends every reply to c.out, in order (replies.go).
//
// The batch is cut into segments. A segment collects cache hits (answered at once), misses (one upstream fetch
// per key and generation) and forwarded commands, and ends after a write, or after the command that brings it to
// maxSegmentBytes or maxSegmentFrames: its upstream part goes out as one round trip, the write's keys are
// invalidated, then its replies are assembled. A read is therefore never looked up, nor fetched, ahead of an
// earlier write of the same pipeline, and all other reads of a pipeline share one round trip, up to those caps.
func (c *client) execBatch(cmds []resp.Command) {
	c.beginExec(len(cmds))
	c.execFrom(cmds, 0, -1)
}

// beginExec starts the execution of a batch of n commands.
func (c *client) beginExec(n int) {
	c.seg.begin(c.srv.now())
	c.pend.on = n > 1
	if cap(c.arena) > 1<<20 {
		c.arena = nil
	}
	c.arena = c.arena[:0]
}

// execFrom runs cmds[from:] of the batch beginExec began, then the segment's round trip. settle, when not -1, is
// the number of reply bytes that were pending before the command at from-1, which ran without its settleOutput:
// it runs first (the event loop hands a batch over this way, loop_linux.go).
func (c *client) execFrom(cmds []resp.Command, from, settle int) {
	// A panic ends the batch without runSegment: serveClient's recovery completes the fills the segment leads
	// (abandonFills), so that the clients waiting on them get an error instead of waiting for ever.
	//
	// Only a command that exec runs changes what execGet needs (the client's sessions, its authentication, its
	// reply mode), so it is judged before the first command and again after each such command, not for every GET.
	if settle >= 0 && !c.settled(settle) && !c.settleOutput(settle) {
		from = len(cmds)
	}
	plain := c.plain()
	for i := from; i < len(cmds); i++ {
		pending := c.replies.pending()
		switch {
		case plain && c.execGet(&cmds[i]):
		case c.reply == replyOn:
			c.exec(&cmds[i])
			plain = c.plain()
		default:
			c.execMuted(&cmds[i])
			plain = c.plain()
		}
		if c.quit || !c.settled(pending) && !c.settleOutput(pending) {
			break
		}
	}
	if !c.seg.empty() {
		c.runSegment()
	}
	c.pend.fold()
}

// plain reports whether the client is outside every session (authenticated, replies on, no tracking,
// transaction, WATCH or subscription, no tracked write in flight): then execGet may run its GETs.
func (c *client) plain() bool {
	return c.reply == replyOn && c.authed && c.trk == nil && c.sub == nil && !c.tx.multi && c.tx.conn == nil &&
		len(c.trkWriting) == 0
}

// execGet runs cmd when it is a GET, and reports whether it did; the client is plain (execBatch checks it). That
// is most of what a feature server sends, and exec would dispatch it to the same place after a dozen checks that
// cannot apply: it is counted as exec counts it (countCommand), then read as execAuthed reads a classRead command.
func (c *client) execGet(cmd *resp.Command) bool {
	if len(cmd.Args) != 2 || !isGet(cmd.Args[0]) {
		return false
	}
	tc := c.srv.tbl.Load().get
	if tc == nil {
		return false // denied: exec refuses it
	}
	c.ran = tc
	c.vers.reset()
	c.pend.call(tc)
	c.timing.add(int(tc.lat))
	holes := len(c.seg.holes)
	c.readGet(cmd)
	c.readWaited(holes)
	if c.seg.full() {
		c.runSegment()
	}
	return true
}

// isGet reports whether name is GET in any case.
func isGet(name []byte) bool {
	return len(name) == 3 && name[0]|0x20 == 'g' && name[1]|0x20 == 'e' && name[2]|0x20 == 't'
}

// exec dispatches one command by its class.
func (c *client) exec(cmd *resp.Command) {
	c.vers.reset()
	tc := c.lookup(cmd.Args)
	c.ran = tc
	c.countCommand(tc)
	if tc == nil || tc.class != classRead {
		c.pend.fold() // it may read the counters, or wait
	}
	switch {
	case !c.authed:
		// Redis rejects unknown commands and wrong arities before it asks for authentication.
		if msg := rejection(cmd.Args, tc); msg != "" {
			c.rejectReply(tc, msg)
			return
		}
		if tc.info == nil || !tc.info.Flags.Has(commands.FlagNoAuth) {
			c.rejectReply(tc, "NOAUTH Authentication required.")
			return
		}
		c.execAuthed(cmd, tc)
		return
	}
	c.execAuthed(cmd, tc)
	if c.trk != nil {
		c.trackCommandDone(tc)
	}
	if len(c.trkWriting) > 0 {
		c.srv.ctrack.endWrites(c) // a write refused before it was sent, which never settled
	}
}

// execAuthed dispatches a command of an authenticated client (or one Redis runs before authentication).
func (c *client) execAuthed(cmd *resp.Command, tc *command) {
	if c.sub != nil && c.sub.ldb {
		c.execLdb(cmd) // a Lua debugging session: everything is the debugger's
		return
	}
	if ps := c.srv.policies.Load(); ps.hasSnapshots && tc != nil && (tc.class != classRead || c.tx.multi || c.tx.conn != nil) {
		// Cached reads resolve snapshots themselves, under the logical key's policy, unless a transaction or a
		// WATCH session sends them upstream as they are.
		var err error
		if cmd, err = c.rewriteSnapshotKeys(cmd, tc, ps); err != nil {
			c.srv.stats.SnapshotErrors.Add(1)
			c.errorReply(err.Error())
			return
		}
	}
	if c.trk != nil {
		c.trackCommand(cmd.Args, tc)
		if tc != nil && isWrite(tc) && !c.tx.multi {
			c.trackWrite(cmd.Args, tc)
		}
	}
	if c.sub != nil && c.sub.active() && !c.sub.bypass {
		c.hasWaited()
		if c.execSubscribed(cmd, tc) {
			return
		}
		c.execBesideSubscriptions(cmd, tc)
		return
	}
	switch {
	case c.tx.multi && (tc == nil || tc.name != "quit" && tc.name != "reset"):
		c.queue(cmd, tc)
		return
	case c.tx.conn != nil:
		c.hasWaited()
		c.execPinned(cmd, tc)
		return
	case tc == nil:
		c.hasWaited()
		c.forward(cmd, nil)
		return
	case c.ldbArmed && (tc.name == "eval" || tc.name == "evalsha"):
		c.hasWaited()
		c.ldbEval(cmd, tc)
		return
	}
	if tc.class != classForward && tc.class != classWrite && tc.class != classBlocking && tc.class != classSubscribe &&
		tc.class != classDenied && tc.info != nil && !tc.info.ArityOK(len(cmd.Args)) {
		if c.tx.multi {
			c.tx.dirty = true // QUIT or RESET with arguments inside MULTI: Redis aborts the transaction at EXEC
		}
		c.rejectReply(tc, "ERR wrong number of arguments for '"+tc.name+"' command")
		return
	}
	if tc.class != classRead {
		// Whatever it is, it may wait (a blocking or pinned command, a transaction, a barrier, a round trip of a
		// full segment): the reads after it are judged at the time they run, not the batch's.
		c.hasWaited()
	}
	switch tc.class {
	case classRead:
		holes := len(c.seg.holes)
		tc.read(c, cmd)
		c.readWaited(holes)
		if c.seg.full() {
			// One command's fetches are never split, but what follows them waits for the next round trip.
			c.runSegment()
		}
	case classForward, classWrite:
		switch {
		case tc.cluster != ruleNone:
			c.execCluster(cmd, tc) // a multi-key or keyspace-wide command in front of a Redis Cluster
		case tc.class == classWrite:
			c.write(cmd, tc)
		case tc.fwd != nil:
			tc.fwd(c, cmd) // INFO: featcache's section with Redis's; SCRIPT KILL and the like: alone
		default:
			c.forward(cmd, tc)
		}
	case classLocal, classAdmin:
		tc.local(c, cmd.Args)
	case classTx:
		tc.tx(c, cmd)
	case classSubscribe:
		c.subscribe(cmd, tc)
	case classMonitor:
		c.monitor(cmd, tc)
	case classBlocking:
		c.blocking(cmd, tc)
	case classDenied, classRefused:
		c.refuse(cmd, tc)
	}
}

// readGet answers GET: match the policy, look the key up locally, serve it when fresh or soft-stale (starting one
// background refresh per key), otherwise join or start the key's fill. Each key is counted once per policy with
// what answered it (the fill's outcome is counted when its reply is assembled) and, one lookup in about
// hotSampleMean (more at high rates: hotSampling), recorded in the policy's hot-key tracker.
func (c *client) readGet(cmd *resp.Command) {
	// cachedKey's common case, a key of a cached policy without a snapshot, written out: the call and its five
	// results cost a hit as much as the work.
	key := cmd.Args[1]
	ps := c.srv.policies.Load()
	pol := ps.matcher.Match(key)
	if pol == nil || !pol.Cache || pol.SnapshotPointer != "" {
		var ok bool
		if key, ok = c.resolveKey(cmd, ps, pol, key); !ok {
			return
		}
	} else if hot := ps.hot[pol.Index]; hot != nil {
		c.sampleHot(hot, key)
	}
	pc := ps.counters[pol.Index]
	lp := &ps.local[pol.Index]
	nowMs := c.clockMs()
	buf := c.replies.buf()
	var look localcache.Lookup
	*buf, look = c.srv.cache.AppendGetMs(*buf, key, lp, nowMs, false)
	if look.State == localcache.StateFresh {
		// served's case of a fresh entry, without the call
		if !c.pend.hitPending(pc, look.Age) {
			c.pend.hit(pc, look.Age)
		}
		c.seg.servedNil(buf, look.Kind)
		return
	}
	if c.served(look, key, lp, pc) {
		c.seg.servedNil(buf, look.Kind)
		return
	}
	c.seg.addFill(c.srv.cache, buf, holeGet, key, lp, pc, c.seg.now) // the time of nowMs
}

// cachedKey begins a cached read of one key (GET, HGET, HMGET, HGETALL: the key is cmd's first argument): it
// matches the key's policy, samples the key for the policy's hot-key tracker (the key under its own policy: a
// Feast entity is warmed whole, warm.go) and resolves a snapshot policy's logical key to its physical one. It
// reports false when it has answered the read already: forwarded as a bypass, when no policy caches the key, or an
// error reply, when the snapshot version cannot be read.
func (c *client) cachedKey(cmd *resp.Command) (ps *policySet, pol *config.Policy, key []byte, ok bool) {
	key = cmd.Args[1]
	ps = c.srv.policies.Load()
	pol = ps.matcher.Match(key)
	if key, ok = c.resolveKey(cmd, ps, pol, key); !ok {
		return nil, nil, nil, false
	}
	return ps, pol, key, true
}

// resolveKey is cachedKey after the match: pol is key's policy under ps (nil for none). It returns the key to look
// up, or false when the read is answered already.
func (c *client) resolveKey(cmd *resp.Command, ps *policySet, pol *config.Policy, key []byte) ([]byte, bool) {
	if pol == nil || !pol.Cache {
		ps.countersFor(pol).results[resultBypass].Add(1)
		c.forwardRead(cmd)
		return nil, false
	}
	if hot := ps.hot[pol.Index]; hot != nil {
		c.sampleHot(hot, key)
	}
	if pol.SnapshotPointer != "" {
		return c.snapshotKey(pol, ps, key)
	}
	return key, true
}

// served counts a lookup that served an entry, and starts what it calls for: a background refresh of a
// soft-stale entry, a rate-limited one of an unverified entry. It reports false for a miss.
func (c *client) served(look localcache.Lookup, key []byte, lp *localcache.Policy, pc *policyCounters) bool {
	switch look.State {
	case localcache.StateFresh:
		c.pend.hit(pc, look.Age)
	case localcache.StateStale:
		pc.stale.observe(look.Age)
		c.refresh(key, lp)
	case localcache.StateUnverified:
		// Counted as a stale serve in featcache_requests_total: no invalidation vouches for it.
		pc.stale.observe(look.Age)
		c.srv.stats.Unverified.Add(1)
		// Not hammering a recovering store: unverified entries are re-fetched at upstream.revalidate_rate;
		// the others are served (within their soft TTL) and wait for a later read.
		if c.srv.revalidate.allow() {
			c.srv.stats.Revalidations.Add(1)
			c.refresh(key, lp)
		}
	default:
		return false
	}
	return true
}

// readMget answers MGET with a reply Redis could have given at one instant, as its own MGET is: from memory when
// every key is served from it, else from one transaction that reads every key (addMgetTx). Keys are answered in
// order and with duplicates, as one array; keys no policy caches are read with the others. If the upstream fails
// and not every key can be served stale, the whole MGET gets the error, as it would from Redis.
func (c *client) readMget(cmd *resp.Command) {
	keys := cmd.Args[1:]
	ps := c.srv.policies.Load()
	if ps.hasSnapshots {
		// Every key of a snapshot policy is read in the version its pointer has now, resolved once for the
		// whole MGET: one MGET never mixes versions.
		for _, key := range keys {
			if pol := ps.matcher.Match(key); pol != nil && pol.SnapshotPointer != "" {
				if _, err := c.snapshotVersion(pol, ps); err != nil {
					c.srv.stats.SnapshotErrors.Add(1)
					c.errorReply(err.Error())
					return
				}
			}
		}
	}
	now := c.clock()
	start := c.replies.pending()
	buf := c.replies.buf()
	mark := len(*buf)
	*buf = resp.AppendArray(*buf, len(keys))
	mk := c.seg.mkeys[:0]
	hit, cached := true, false // every key so far answered from memory; some key is cached
	for _, key := range keys {
		if hit && c.outputOver(start) {
			// The connection closes when this batch's replies are flushed: building the rest would only grow them.
			break
		}
		pol := ps.matcher.Match(key)
		if pol == nil || !pol.Cache {
			ps.countersFor(pol).results[resultBypass].Add(1)
			mk = append(mk, mgetKey{key: key})
			hit = false
			continue
		}
		cached = true
		pc := ps.counters[pol.Index]
		lp := &ps.local[pol.Index]
		if hot := ps.hot[pol.Index]; hot != nil {
			c.sampleHot(hot, key)
		}
		if pol.SnapshotPointer != "" {
			ver, _ := c.snapshotVersion(pol, ps) // resolved above
			key = c.physicalKey(key, ver)
		}
		var look localcache.Lookup
		looked := hit
		if hit {
			*buf, look = c.srv.cache.AppendGetMs(*buf, key, lp, c.seg.nowMs, false) // now's milliseconds
			hit = look.State != localcache.StateMiss
		}
		mk = append(mk, mgetKey{key: key, lp: lp, pc: pc, looked: looked, state: look.State, age: look.Age})
	}
	c.seg.mkeys = mk
	if hit {
		// Counted, and refreshed where they call for it, only now that they are all served from memory.
		for i := range mk {
			k := &mk[i]
			c.served(localcache.Lookup{State: k.state, Age: k.age}, k.key, k.lp, k.pc)
		}
		*buf = c.seg.to3(*buf, mark, false)
		return
	}
	*buf = (*buf)[:mark]
	switch {
	case c.srv.clustered() && !oneSlot(mk):
		// Keys in several slots of a Redis Cluster cannot be read at one instant (Redis itself refuses such an
		// MGET with CROSSSLOT): read key by key.
		c.mgetByKey(mk, now)
	case !cached:
		c.forwardRead(cmd) // Redis's own MGET, relayed
	case distinct(mk):
		c.seg.addMgetTx(c.srv.cache, mk)
	default:
		c.mgetByKey(mk, now) // one key: read as GET reads it
	}
}

// distinct reports whether an MGET names two different keys or more.
func distinct(keys []mgetKey) bool {
	for i := 1; i < len(keys); i++ {
		if !bytes.Equal(keys[i].key, keys[0].key) {
			return true
		}
	}
	return false
}

// oneSlot reports whether an MGET's keys are all in one hash slot of a Redis Cluster.
func oneSlot(keys []mgetKey) bool {
	slot := upstream.Slot(keys[0].key)
	for i := 1; i < len(keys); i++ {
		if upstream.Slot(keys[i].key) != slot {
			return false
		}
	}
	return true
}

// mgetByKey answers an MGET key by key, as GET does: an MGET of one key, or of keys in several slots of a Redis
// Cluster.
func (c *client) mgetByKey(keys []mgetKey, now time.Time) {
	start := c.replies.pending()
	region := c.replies.openMget()
	buf := c.replies.buf()
	*buf = resp.AppendArray(*buf, len(keys))
	for i := range keys {
		if c.outputOver(start) {
			break
		}
		k := &keys[i]
		if k.lp == nil {
			c.replies.holdMget(&region)
			c.seg.addBypass(k.key)
			continue
		}
		buf = c.replies.buf()
		var look localcache.Lookup
		*buf, look = c.srv.cache.AppendGet(*buf, k.key, k.lp, now, false)
		if c.served(look, k.key, k.lp, k.pc) {
			c.seg.servedNil(buf, look.Kind)
			continue
		}
		c.replies.holdMget(&region)
		c.seg.addFill(c.srv.cache, c.replies.buf(), holeMgetKey, k.key, k.lp, k.pc, now)
	}
	c.replies.closeMget(region)
}

// The hot-key tracker records one cached read in a gap of reads drawn at random per connection, and each recorded
// read counts for the gap's mean: recording every read would cost a lock and a hash-table update on each hit. The
// mean is hotSampleMean while the server reads fewer than hotSampleMean*hotSampleRate keys a second, and grows
// with the rate above that (hotSampling), so that the tracker records about hotSampleRate reads a second however
// fast reads come: at pipelines of 16 GETs (about 900,000 a second on one core) one in 16 cost about 8% of the hit
// path's CPU, in the cache lines the tracker's lookups evict as much as in their own work, while 4,096 reads a
// second, 245,760 a minute (warm.hotkeys_interval's default), are many times what sorting the hot keys of a
// minute needs.
const (
	hotSampleMean = 16
	hotSampleRate = 4096
	hotSampleMax  = 1024
)

// hotSampling is the hot-key tracker's current mean gap. The rate it follows is derived from the per-policy counts
// of cached reads (cachedReads), which the request path keeps anyway: recording a sample writes nothing shared.
type hotSampling struct {
	mean  atomic.Int64 // 0 until the first adjustment: hotSampleMean
	reads int64        // the cached reads counted at the last adjustment; only adjust uses it
}

// current returns the mean gap to draw the next gap from.
func (h *hotSampling) current() int64 { return max(h.mean.Load(), hotSampleMean) }

// adjust sets the mean from the cached reads counted so far (reads): those since the last adjustment, a second
// before, spread over hotSampleRate records.
func (h *hotSampling) adjust(reads int64) {
	n := reads - h.reads
	h.reads = reads
	h.mean.Store(min(max(n/hotSampleRate, hotSampleMean), hotSampleMax))
}

// cachedReads is how many reads of keys a caching policy covers the server has answered, from memory or not.
func (s *Server) cachedReads() int64 {
	res, _ := s.metrics.totals()
	return res[resultHit] + res[resultStale] + res[resultMiss] + res[resultError]
}

// sampleHot records key in the tracker once in a gap of reads. The gaps are drawn at random (1 to 2*mean-1) from a
// per-connection generator, so a client that reads the same keys in the same order every time (a fixed MGET) does
// not have the same position sampled again and again.
// It is small enough to be inlined: the reads it skips cost no call.
func (c *client) sampleHot(t *warm.TopK, key []byte) {
	if c.hotSkip--; c.hotSkip <= 0 {
		c.recordHot(t, key)
	}
}

// recordHot records key for sampleHot and draws the next gap.
func (c *client) recordHot(t *warm.TopK, key []byte) {
	t.Add(key, uint64(c.hotMean)) // the mean the gap that ends here was drawn with
	c.hotMean = int32(c.srv.hotGap.current())
	c.hotSkip = randomGap(&c.hotRand, uint64(c.hotMean))
}

// refresh starts a background refresh of a soft-stale key unless one is in flight: one fill per key and
// generation covers background refreshes too.
func (c *client) refresh(key []byte, lp *localcache.Policy) {
	f, leader := c.srv.cache.Acquire(key)
	if !leader {
		return
	}
	// Look again inside the single flight, as addFill does: a refresh of this key may have stored a fresh entry
	// and ended between the caller's lookup and Acquire, and refreshing it again would cost a second upstream read.
	// The header alone says so (Explain); the value is copied, for a waiter, only then.
	if _, _, st, _ := c.srv.cache.Explain(key, lp, c.clock()); st == localcache.StateFresh {
		if b, look := c.srv.cache.AppendGetMs(nil, key, lp, c.clockMs(), false); look.State == localcache.StateFresh {
			c.srv.cache.Complete(f, servedResult(b), lp)
			return
		}
	}
	c.srv.stats.Refreshes.Add(1)
	go c.srv.refresh(f, bytes.Clone(key), lp)
}

func (s *Server) refresh(f *localcache.Fill, key []byte, lp *localcache.Policy) {
	call := upstream.NewCall()
	var out [1]upstream.Fetched
	start := time.Now()
	got, err := s.up.Fetch(call, [][]byte{key}, out[:0])
	s.metrics.observeUpstream(upRefresh, start)
	s.stats.UpstreamReads.Add(1)
	res := localcache.Result{Err: err}
	if len(got) == 1 {
		res = s.fetchedResult(got[0])
	}
	s.cache.Complete(f, res, lp)
}

// forward sends a command over a shared upstream connection as part of the segment; its reply frame is relayed.
// tc is its entry in the command table (nil for a command neither Redis nor featcache knows), whose key specs say
// which master of a Redis Cluster it goes to.
func (c *client) forward(cmd *resp.Command, tc *command) {
	c.srv.stats.Forwarded.Add(1)
	c.seg.addForward(cmd, tc.meta())
	if c.seg.full() {
		c.runSegment()
	}
}

// forwardAlone forwards a command that Redis runs while a script or function keeps it busy (flag allow_busy: SCRIPT
// KILL, FUNCTION KILL, FUNCTION STATS) on a dedicated connection, alone. On a shared connection it could be queued
// behind the very script it is meant to stop, sent there for another client: Redis reads nothing more from the
// connection of a running script, so the kill would wait for the end of a script that ends only when killed. Its
// reply is waited for as a pinned command's is.
func (c *client) forwardAlone(cmd *resp.Command, tc *command) {
	conn, req, ok := c.forwardingAlone(cmd, tc)
	if !ok {
		return
	}
	start := time.Now()
	reply, err := c.waitPinned(conn, req)
	c.srv.metrics.observeUpstream(upPinned, start)
	c.seg.req.Reset()
	if err != nil {
		conn.Close()
		c.srv.stats.Errors.Add(1)
		c.errorReply(upstreamErrorText(err))
		return
	}
	c.rawReply(reply)
	conn.Release()
}

// forwardingAlone runs the segment before cmd, takes a dedicated connection for cmd alone (dedicatedFor, which
// answers the client when there is none) and returns it with cmd's request, counted as forwarded.
func (c *client) forwardingAlone(cmd *resp.Command, tc *command) (*upstream.Conn, []byte, bool) {
	c.runSegment()
	conn, _, ok := c.dedicatedFor(cmd, tc)
	if !ok {
		return nil, nil, false
	}
	c.srv.stats.Forwarded.Add(1)
	return conn, c.seg.request(cmd), true
}

// forwardRead is forward for a cached read (GET, MGET, HGET, HMGET, HGETALL) that is relayed as it is, not answered
// from memory: its first argument is its key, which says which master of a Redis Cluster it goes to.
func (c *client) forwardRead(cmd *resp.Command) {
	c.srv.stats.Forwarded.Add(1)
	c.seg.addForwardKey(cmd, cmd.Args[1])
	if c.seg.full() {
		c.runSegment()
	}
}

// write forwards a write and ends the segment: the upstream answers, the write's keys are invalidated, and only
// then is anything after it looked up or replied to.
func (c *client) write(cmd *resp.Command, tc *command) {
	c.srv.stats.Forwarded.Add(1)
	c.seg.addForward(cmd, tc.meta())
	c.seg.writes = append(c.seg.writes, pendingWrite{args: cmd.Args, tc: tc})
	c.runSegment()
}
