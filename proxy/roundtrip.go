package proxy

import (
	"bytes"
	"context"
	"strings"
	"time"

	"featcache/internal/resp"
	"featcache/localcache"
	"featcache/upstream"
)

// runSegment sends the segment's upstream part in one round trip, completes the fills it led, applies the
// invalidations of its writes (also when the upstream failed or timed out: a write may have been applied), and
// assembles the replies into c.out. Once the connection is closing, nothing more is sent for the client and no
// reply is built, except that the fills it leads are still read, for the other clients waiting on them.
//
// The payload keeps the client's order (a "read" may change what a later read sees: PFCOUNT rewrites its key's
// cached cardinality), and each part is waited for within its own bound (sendShared). Fills alone are featcache's
// own reads, bounded by upstream.timeout. Forwarded commands, and the GETs of an MGET's uncached keys, are Redis's
// answers to the client's commands: they are waited for as a direct client would wait (or
// upstream.command_timeout).
func (c *client) runSegment() {
	s := &c.seg
	if c.closing && !s.leads() {
		s.reset()
		return
	}
	if s.req.Len() > 0 {
		start := c.roundTripStart()
		err := c.sendSegment() // over a shared connection, or the client's pinned one
		// Set before the fills complete: an MGET's transaction that did not run takes its error from it
		// (parseTx), and its fills hand that error to every reader waiting on them.
		s.doErr = err
		// The round trip took its time: its replies, serve-stale's answers when it failed, and the reads after
		// it are judged now.
		s.setNow(c.srv.now())
		c.srv.metrics.observeUpstreamTook(s.class(), c.roundTripTook(start))
		c.srv.stats.RoundTrips.Add(1)
		// The replies are in memory now: charge them, so that a client whose segments bring back more than the
		// budget has left is closed at the next flush.
		if !c.account(0) {
			c.memoryFull = true
		}
		if err == nil && !c.srv.reached.Load() {
			c.srv.reached.Store(true)
		}
		c.checkWindows()
		if err == nil || c.srv.clustered() {
			c.rereadTxs()
		}
		c.completeFills(err, true)
	}
	for _, w := range s.writes {
		c.afterWrite(w.args, w.tc)
	}
	if !c.closing {
		c.out = c.assemble(c.out)
	}
	s.reset()
}

// sendShared sends the segment over a shared connection. When fills share the payload with forwarded commands, the
// fills are given upstream.timeout: past it (Redis writes the replies of what it read from a connection together, so
// one slow script holds them all) they are completed with a timeout, so that their readers may be served stale and
// no other client waiting on them waits longer, and the wait for the forwarded commands goes on. Redis's late
// replies for the fills are then not used.
func (c *client) sendShared() error {
	s := &c.seg
	s.upstream2() // a shared connection is left in RESP2
	fwd := s.forward || s.bypass
	var fillsBy time.Time // the fills' bound, when they share the payload with forwarded commands
	if fwd && len(s.fetches) > 0 {
		fillsBy = time.Now().Add(c.srv.up.Timeout())
	}
	c.srv.up.Start(c.call, &s.req, fwd)
	if !fillsBy.IsZero() && !c.call.WaitUntil(fillsBy) {
		c.completeFills(upstream.ErrTimeout, false)
	}
	return c.call.Wait()
}

// completeFills completes the fills the segment leads that are not complete yet: from c.call's frames that
// arrived when frames is set (the call is over), else with err alone (the call is still in flight).
func (c *client) completeFills(err error, frames bool) {
	s := &c.seg
	n := 0
	for i := range s.fetches {
		it := &s.fetches[i]
		if it.fill == nil {
			continue
		}
		n++
		switch {
		case !frames && it.hash != nil:
			c.srv.cache.CompleteHash(it.fill, localcache.Result{Err: err}, nil)
			it.fill = nil
			c.srv.stats.UpstreamReads.Add(1)
			continue
		case it.hash != nil:
			c.completeHashFetch(it, err)
			continue
		case frames && it.tx != nil:
			c.completeTxFetch(it) // a fill an MGET's transaction leads: from the transaction's replies
			continue
		}
		res := localcache.Result{Err: err}
		if frames && it.tx == nil && it.frame+1 < c.call.Len() {
			f, perr := parseFetched(c.call, it.frame)
			if perr != nil {
				res.Err = perr
			} else {
				res = c.srv.fetchedResult(f)
			}
		}
		c.srv.cache.Complete(it.fill, res, it.lp)
		it.fill = nil
	}
	c.srv.stats.UpstreamReads.Add(int64(n))
}

// afterWrite makes the local tier forget what a write may have changed, before its reply goes out: the keys its
// key specs name, and when those may not be all (scripts, key specs Redis marks incomplete, as SORT ... STORE and
// MIGRATE ... KEYS) the tracking barrier too.
func (c *client) afterWrite(args [][]byte, tc *command) {
	if tc.after == afterFlush {
		c.srv.cache.Flush()
	} else if complete := c.invalidateKeys(args, tc); !complete || tc.after == afterBarrier {
		c.barrier()
	}
	if c.srv.ctrack.active.Load() {
		// Clients with CLIENT TRACKING on have the write's invalidations before its reply.
		c.settleTracking(tc)
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
	c.hasWaited()
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
	f, err := upstream.ParseFetched(call.Frame(i), call.Frame(i+1))
	f.Asked = call.Asked
	return f, err
}

// fetchedResult turns an upstream answer into what the local tier stores and hands to waiters. Every answer about
// the key replaces its entry, also one that cannot be stored (see localcache.Cache.Complete). An answer from the
// target of an ASK redirect (f.Asked: a slot being migrated, perhaps to a master featcache does not track yet) is
// served and dropped: no invalidation would announce the writes made there after it.
func (s *Server) fetchedResult(f upstream.Fetched) localcache.Result {
	if f.PTTLRefused != nil {
		s.warnTTLRefused(f.PTTLRefused)
	}
	switch {
	case f.Error != nil:
		if isUpstreamFailure(f.Error) {
			// Copied (ParseError keeps no part of it): the frame is in the leader's reply buffer, which its next
			// request reuses while the fill's waiters may still be turning this error into their replies.
			return localcache.Result{Err: resp.ParseError(f.Error)}
		}
		// WRONGTYPE and the like: relayed to GET verbatim (MGET answers nil), never stored; the key's entry is
		// dropped.
		return localcache.Result{Reply: bytes.Clone(f.Error)}
	case f.Nil:
		return localcache.Result{Nil: true, PTTL: pttlDuration(f.PTTL), Drop: f.Asked}
	}
	// PTTL -2 (the key expired between GET and PTTL, or PTTL was refused): what GET saw is served, and not stored
	// (Complete stores no value whose expiry is unknown).
	return localcache.Result{Value: bytes.Clone(f.Value), PTTL: pttlDuration(f.PTTL), TTLRefused: f.PTTLRefused != nil,
		Drop: f.Asked}
}

// ttlWarnEvery is how often at most the log says that the upstream refuses PTTL.
const ttlWarnEvery = time.Minute

// warnTTLRefused logs, at most once per ttlWarnEvery, that the upstream refused the PTTL featcache reads with each
// value: nothing is stored then (featcache_not_stored_total{reason="ttl_refused"}), and every read goes to Redis.
// reply is PTTL's error frame.
func (s *Server) warnTTLRefused(reply []byte) {
	now := time.Now().UnixNano()
	last := s.ttlWarned.Load()
	if last != 0 && now-last < int64(ttlWarnEvery) || !s.ttlWarned.CompareAndSwap(last, now) {
		return
	}
	s.log.Warn("upstream refused PTTL: values are served and not cached until it answers (an ACL user needs +pttl)",
		"reply", strings.TrimSpace(string(reply[:min(len(reply), 128)])))
}

// maxPTTL is the longest TTL a fill passes on: a century, which no policy's hard TTL comes near.
const maxPTTL = 100 * 365 * 24 * time.Hour

// pttlDuration is a PTTL reply's milliseconds as a Duration. Redis takes TTLs that a Duration of nanoseconds cannot
// hold (EX 9000000000000, about 285,000 years); multiplied as they are, they wrap and read as expired, and such a
// key was never stored. They are cut to maxPTTL, which the hard TTL bounds anyway.
func pttlDuration(ms int64) time.Duration {
	return time.Duration(min(ms, int64(maxPTTL/time.Millisecond))) * time.Millisecond
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
