package proxy

import (
	"bytes"
	"context"
	"time"

	"featcache/localcache"
	"featcache/policy"
	"featcache/upstream"
	"featcache/warm"
)

// execBatch runs one client pipeline and appends every reply to c.out, in order.
//
// The batch is cut into segments. A segment collects cache hits (answered at once), misses (one upstream fetch
// per key and generation) and forwarded commands, and ends after a write, or after the command that brings it to
// maxSegmentBytes or maxSegmentFrames: its upstream part goes out as one round trip, the write's keys are
// invalidated, then its replies are assembled. A read is therefore never looked up, nor fetched, ahead of an
// earlier write of the same pipeline, and all other reads of a pipeline share one round trip, up to those caps.
func (c *client) execBatch(cmds []Command) {
	c.seg.begin(c.srv.now())
	if cap(c.arena) > 1<<20 {
		c.arena = nil
	}
	c.arena = c.arena[:0]
	defer c.abandonFills(errInternal)
	for i := range cmds {
		pending := len(c.out) + len(c.seg.tail)
		if c.reply == replyOn {
			c.exec(&cmds[i])
		} else {
			c.execMuted(&cmds[i])
		}
		if c.quit || !c.settleOutput(pending) {
			break
		}
	}
	c.runSegment()
}

// exec dispatches one command by its class.
func (c *client) exec(cmd *Command) {
	c.vers.reset()
	tc := c.lookup(cmd.Args)
	c.countCommand(tc)
	switch {
	case !c.authed:
		// Redis rejects unknown commands and wrong arities before it asks for authentication.
		if msg := rejection(cmd.Args, tc); msg != "" {
			c.errorReply(msg)
			return
		}
		if tc.info == nil || !tc.info.Flags.Has(FlagNoAuth) {
			c.errorReply("NOAUTH Authentication required.")
			return
		}
		c.execAuthed(cmd, tc)
		return
	}
	c.execAuthed(cmd, tc)
}

// execAuthed dispatches a command of an authenticated client (or one Redis runs before authentication).
func (c *client) execAuthed(cmd *Command, tc *command) {
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
	switch {
	case c.sub != nil && c.sub.active():
		c.execSubscribed(cmd, tc)
		return
	case c.tx.multi && (tc == nil || tc.class != classTx && tc.name != "quit" && tc.name != "reset"):
		c.queue(cmd, tc)
		return
	case c.tx.conn != nil:
		c.execPinned(cmd, tc)
		return
	case tc == nil:
		c.forward(cmd)
		return
	}
	if tc.class != classForward && tc.class != classWrite && tc.class != classBlocking && tc.class != classSubscribe &&
		tc.class != classDenied && tc.info != nil && !tc.info.ArityOK(len(cmd.Args)) {
		c.errorReply("ERR wrong number of arguments for '" + tc.name + "' command")
		return
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
			tc.fwd(c, cmd) // INFO: featcache's section with Redis's
		default:
			c.forward(cmd)
		}
	case classLocal, classAdmin:
		tc.local(c, cmd.Args)
	case classTx:
		tc.tx(c, cmd)
	case classSubscribe:
		c.subscribe(cmd, tc)
	case classBlocking:
		c.blocking(cmd, tc)
	case classDenied, classRefused:
		c.refuse(tc)
	}
}

// readGet answers GET: match the policy, look the key up locally, serve it when fresh or soft-stale (starting one
// background refresh per key), otherwise join or start the key's fill. Each key is counted once per policy with
// what answered it (the fill's outcome is counted when its reply is assembled) and, one lookup in about
// hotSampleMean, recorded in the policy's hot-key tracker.
func (c *client) readGet(cmd *Command) {
	key := cmd.Args[1]
	ps := c.srv.policies.Load()
	pol := ps.matcher.Match(key)
	if pol == nil || !pol.Cache {
		ps.countersFor(pol).results[resultBypass].Add(1)
		c.forward(cmd)
		return
	}
	pc := ps.counters[pol.Index]
	lp := &ps.local[pol.Index]
	if hot := ps.hot[pol.Index]; hot != nil {
		c.sampleHot(hot, key)
	}
	if pol.SnapshotPointer != "" {
		ver, err := c.snapshotVersion(pol, ps)
		if err != nil {
			c.srv.stats.SnapshotErrors.Add(1)
			c.errorReply(err.Error())
			return
		}
		key = c.physicalKey(key, ver)
	}
	buf := c.seg.buf(&c.out)
	var look localcache.Lookup
	*buf, look = c.srv.cache.AppendGet(*buf, key, lp, c.seg.now, false)
	if c.served(look, key, lp, pc) {
		return
	}
	c.seg.addFill(c.srv.cache, &c.out, holeGet, key, lp, pc)
}

// served counts a lookup that served an entry, and starts what it calls for: a background refresh of a
// soft-stale entry, a rate-limited one of an unverified entry. It reports false for a miss.
func (c *client) served(look localcache.Lookup, key []byte, lp *localcache.Policy, pc *policyCounters) bool {
	switch look.State {
	case localcache.StateFresh:
		pc.hit.observe(look.Age)
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

// readMget answers MGET: every key as GET does, in order and with duplicates, as one array. Keys no policy caches
// are fetched with the misses. If the upstream fails for a key that cannot be served stale, the whole MGET gets
// the error, as it would from Redis.
func (c *client) readMget(cmd *Command) {
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
	start := len(c.out) + len(c.seg.tail)
	region := c.seg.openRegion(&c.out)
	buf := c.seg.buf(&c.out)
	*buf = appendArrayLen(*buf, len(keys))
	for _, key := range keys {
		if c.outputOver(start) {
			// The connection closes when this batch's replies are flushed: building the rest would only grow them.
			break
		}
		pol := ps.matcher.Match(key)
		if pol == nil || !pol.Cache {
			ps.countersFor(pol).results[resultBypass].Add(1)
			c.seg.ensureRegion(&c.out, &region)
			c.seg.addBypass(key)
			continue
		}
		pc := ps.counters[pol.Index]
		lp := &ps.local[pol.Index]
		if hot := ps.hot[pol.Index]; hot != nil {
			c.sampleHot(hot, key)
		}
		if pol.SnapshotPointer != "" {
			ver, _ := c.snapshotVersion(pol, ps) // resolved above
			key = c.physicalKey(key, ver)
		}
		buf = c.seg.buf(&c.out)
		var look localcache.Lookup
		*buf, look = c.srv.cache.AppendGet(*buf, key, lp, c.seg.now, false)
		if c.served(look, key, lp, pc) {
			continue
		}
		c.seg.ensureRegion(&c.out, &region)
		c.seg.addFill(c.srv.cache, &c.out, holeMgetKey, key, lp, pc)
	}
	c.seg.closeRegion(region)
}

// hotSampleMean is the mean number of cached reads between two recorded in the hot-key tracker; each recorded one
// counts for that many. Recording every read would cost a lock and a hash-table update on each hit; one in 16
// keeps the tracker's share of the hit path to a few nanoseconds, and a key hot enough to matter is sampled many
// times a second anyway.
const hotSampleMean = 16

// sampleHot records key in the tracker once every hotSampleMean reads on average. The gaps are drawn at random
// (1 to 2*hotSampleMean-1) from a per-connection generator, so a client that reads the same keys in the same
// order every time (a fixed MGET) does not have the same position sampled again and again.
func (c *client) sampleHot(t *warm.TopK, key []byte) {
	if c.hotSkip--; c.hotSkip > 0 {
		return
	}
	// xorshift64: a few cycles, no shared state.
	x := c.hotRand
	x ^= x << 13
	x ^= x >> 7
	x ^= x << 17
	c.hotRand = x
	c.hotSkip = int32(1 + x%(2*hotSampleMean-1))
	t.Add(key, hotSampleMean)
}

// refresh starts a background refresh of a soft-stale key unless one is in flight: one fill per key and
// generation covers background refreshes too.
func (c *client) refresh(key []byte, lp *localcache.Policy) {
	f, leader := c.srv.cache.Acquire(key)
	if !leader {
		return
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
		res = fetchedResult(got[0])
	}
	s.cache.Complete(f, res, lp)
}

// forward sends a command over a shared upstream connection as part of the segment; its reply frame is relayed.
func (c *client) forward(cmd *Command) {
	c.srv.stats.Forwarded.Add(1)
	c.seg.addForward(cmd)
	if c.seg.full() {
		c.runSegment()
	}
}

// write forwards a write and ends the segment: the upstream answers, the write's keys are invalidated, and only
// then is anything after it looked up or replied to.
func (c *client) write(cmd *Command, tc *command) {
	c.srv.stats.Forwarded.Add(1)
	c.seg.addForward(cmd)
	c.seg.writes = append(c.seg.writes, pendingWrite{args: cmd.Args, tc: tc})
	c.runSegment()
}

// runSegment sends the segment's upstream part in one round trip, completes the fills it led, applies the
// invalidations of its writes (also when the upstream failed or timed out: a write may have been applied), and
// assembles the replies into c.out.
func (c *client) runSegment() {
	s := &c.seg
	if s.frames > 0 {
		start := time.Now()
		err := c.srv.up.Do(c.call, s.req, s.frames)
		c.srv.metrics.observeUpstream(s.class(), start)
		c.srv.stats.RoundTrips.Add(1)
		// The replies are in memory now: charge them, so that a client whose segments bring back more than the
		// budget has left is closed at the next flush.
		if !c.account(0) {
			c.memoryFull = true
		}
		if err == nil && !c.srv.reached.Load() {
			c.srv.reached.Store(true)
		}
		for i := range s.fetches {
			it := &s.fetches[i]
			if it.hash != nil {
				c.completeHashFetch(it, err)
				continue
			}
			res := localcache.Result{Err: err}
			if it.frame+1 < c.call.Len() {
				f, perr := parseFetched(c.call, it.frame)
				if perr != nil {
					res.Err = perr
				} else {
					res = fetchedResult(f)
				}
			}
			c.srv.cache.Complete(it.fill, res, it.lp)
			it.fill = nil
		}
		c.srv.stats.UpstreamReads.Add(int64(len(s.fetches)))
		s.doErr = err
	}
	for _, w := range s.writes {
		c.afterWrite(w.args, w.tc)
	}
	c.out = c.assemble(c.out)
	s.reset()
}

// afterWrite makes the local tier forget what a write may have changed, before its reply goes out: the keys its
// key specs name, and when those may not be all (scripts, key specs Redis marks incomplete, as SORT ... STORE and
// MIGRATE ... KEYS) the tracking barrier too.
func (c *client) afterWrite(args [][]byte, tc *command) {
	if tc.after == afterFlush {
		c.srv.cache.Flush()
		return
	}
	if complete := c.invalidateKeys(args, tc); !complete || tc.after == afterBarrier {
		c.barrier()
	}
}

// invalidateKeys invalidates the keys of a write and reports whether they are all the keys it names.
func (c *client) invalidateKeys(args [][]byte, tc *command) (complete bool) {
	if tc.info == nil {
		return false
	}
	keys, complete := tc.info.Keys(args, c.seg.keys[:0])
	c.seg.keys = keys
	if len(keys) > 0 {
		c.srv.cache.Invalidate(keys...)
		c.srv.stats.Invalidations.Add(int64(len(keys)))
	}
	return complete
}

// barrier waits until the invalidations of everything the upstream has executed so far have been applied, for
// writes whose keys featcache cannot name (scripts, incomplete key specs). Without tracking, or when the barrier
// cannot be confirmed, it flushes the local tier instead: read-your-writes holds either way.
func (c *client) barrier() {
	c.srv.stats.Barriers.Add(1)
	ctx, cancel := context.WithTimeout(context.Background(), c.srv.up.Timeout())
	err := c.srv.up.Barrier(ctx)
	cancel()
	if err != nil {
		c.srv.cache.Flush()
	}
}

// abandonFills completes the fills this client leads that did not complete (a panic mid-batch), so their waiters
// are released with err instead of waiting forever.
func (c *client) abandonFills(err error) {
	for i := range c.seg.fetches {
		if it := &c.seg.fetches[i]; it.fill != nil {
			c.srv.cache.Complete(it.fill, localcache.Result{Err: err}, it.lp)
			it.fill = nil
		}
	}
}

// parseFetched decodes the GET and PTTL frames at i and i+1.
func parseFetched(call *upstream.Call, i int) (upstream.Fetched, error) {
	return upstream.ParseFetched(call.Frame(i), call.Frame(i+1))
}

// fetchedResult turns an upstream answer into what the local tier stores and hands to waiters.
func fetchedResult(f upstream.Fetched) localcache.Result {
	switch {
	case f.Error != nil:
		if isUpstreamFailure(f.Error) {
			// Copied: the frame is in the leader's reply buffer, which its next request reuses while the fill's
			// waiters may still be turning this error into their replies.
			return localcache.Result{Err: redisError(bytes.Clone(f.Error))}
		}
		// WRONGTYPE and the like: relayed to GET verbatim (MGET answers nil), never stored.
		return localcache.Result{NoStore: true, Reply: bytes.Clone(f.Error)}
	case f.Nil:
		return localcache.Result{Nil: true, PTTL: time.Duration(f.PTTL) * time.Millisecond}
	case f.PTTL == -2:
		// The key expired between GET and PTTL: serve what GET saw, store nothing.
		return localcache.Result{Value: bytes.Clone(f.Value), NoStore: true}
	}
	return localcache.Result{Value: bytes.Clone(f.Value), PTTL: time.Duration(f.PTTL) * time.Millisecond}
}

// isUpstreamFailure reports whether an error reply means the upstream could not answer now (as opposed to an
// answer about the key): these are the errors serve_stale covers.
func isUpstreamFailure(frame []byte) bool {
	for _, p := range upstreamFailures {
		if bytes.HasPrefix(frame, p) {
			return true
		}
	}
	return false
}

var upstreamFailures = [][]byte{
	[]byte("-LOADING"), []byte("-BUSY"), []byte("-MASTERDOWN"), []byte("-CLUSTERDOWN"), []byte("-TRYAGAIN"),
	[]byte("-NOAUTH"), []byte("-MISCONF"), []byte("-ERR max number of clients"),
	// What the cluster router answers for a master that failed, while the others' replies go through.
	[]byte("-ERR featcache upstream"),
}

// policyOf returns the policy of key, or nil; used by admin commands.
func (c *client) policyOf(key []byte) (*policy.Policy, *localcache.Policy) {
	ps := c.srv.policies.Load()
	pol := ps.matcher.Match(key)
	if pol == nil {
		return nil, nil
	}
	return pol, &ps.local[pol.Index]
}
