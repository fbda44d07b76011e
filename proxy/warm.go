package proxy

import (
	"bytes"
	"context"
	"errors"
	"time"

	"featcache/config"
	"featcache/localcache"
	"featcache/upstream"
	"featcache/warm"
)

// errNotTrusted means the local tier does not store fills yet (tracking is not established), so warming would
// read keys for nothing; the warm-up tries again.
var errNotTrusted = errors.New("proxy: tracking is not established yet, the local tier stores nothing")

// StartWarmup starts the background work of warm starts: the start-up warm-up (the hot-key lists, then
// warm.sources), which gates Ready when warm.ready_after is set, and the periodic writes of the hot-key list. Call
// it once the listener is up; only the first call does anything.
func (s *Server) StartWarmup() {
	s.bgOnce.Do(func() {
		w := s.opt.Config.Warm
		var hot []warm.Source
		if w.HotkeysFile != "" {
			hot = append(hot, seededList{warm.File(w.HotkeysFile), s})
		}
		if w.HotkeysZset != "" {
			hot = append(hot, seededList{warm.Zset{Key: w.HotkeysZset, Pool: s.up}, s})
		}
		s.warmer.Start(hot, s.warmSources(w.Sources))
		s.persister.Start()
	})
}

// seededList is a hot-key list the start-up warm-up reads, whose keys also seed this instance's hot-key trackers
// with a count of 1 each: the list this instance writes keeps its predecessor's keys until reads of this run's
// displace them (a key read here counts the sampling gap's mean, 16 or more, per sample) or the counts' halving
// after a write drops them (a count of 1 halves to 0, and keys of count 0 are not listed). Without the seed an
// instance that ran briefly, a restart loop or a deploy rolled back within minutes, left a list of only the few
// keys it saw, and its successor warmed from that.
type seededList struct {
	warm.Source
	s *Server
}

func (l seededList) Keys(ctx context.Context, batch int, yield func(keys [][]byte) bool) error {
	return l.Source.Keys(ctx, batch, func(keys [][]byte) bool {
		ps := l.s.policies.Load()
		for _, key := range keys {
			if pol := ps.matcher.Match(key); pol != nil {
				if hot := ps.hot[pol.Index]; hot != nil {
					hot.Add(key, 1)
				}
			}
		}
		return yield(keys)
	})
}

func (s *Server) warmSources(srcs []config.WarmSource) []warm.Source {
	out := make([]warm.Source, 0, len(srcs))
	for _, src := range srcs {
		out = append(out, s.warmSource(src))
	}
	return out
}

func (s *Server) warmSource(src config.WarmSource) warm.Source {
	if src.File != "" {
		return warm.File(src.File)
	}
	return warm.Zset{Key: src.Zset, Pool: s.up}
}

// WarmFill loads keys into the local tier for a warm-up (warm.Filler), under the fill rules of the request path:
// a key is skipped when no caching policy covers it, left alone when it is cached and fresh or a fill of it is in
// flight (which will store it), and otherwise fetched, all such keys in one round trip on a dedicated connection,
// so that a warm-up never queues ahead of client traffic on the shared ones. Each fetched value is stored through
// the key's single-flight fill, so it is dropped when a write invalidated the key meanwhile: warming never
// overwrites a newer value, and clients reading a key being warmed join its fill.
//
// A string key is read with GET and PTTL. A Feast key (config.FeastKeyPolicy) is a hash: it is read as Feast
// reads it, HMGET of every configured feature view's features and event times, and PTTL (HGETALL when no view
// is configured). Any other key that turns out to be a hash (GET answers WRONGTYPE: a hot key read with HGET,
// HMGET or HGETALL) is read whole with HGETALL in a second round trip; keys of other types are not cached.
func (s *Server) WarmFill(keys [][]byte) (warm.Result, error) {
	var res warm.Result
	if err := s.waitTrusted(); err != nil {
		return res, err
	}
	w := warmBatch{s: s, ps: s.policies.Load(), now: s.now(), fieldTTL: s.tbl.Load().fieldTTL}
	feastFields := w.feastFields()
	for _, key := range keys {
		pol := w.ps.matcher.Match(key)
		switch {
		case pol == nil || !pol.Cache || len(key) > localcache.MaxKeyLen:
			res.Skipped++
		case pol.Name == config.FeastKeyPolicy && w.addHash(key, pol, feastFields):
		case pol.Name != config.FeastKeyPolicy && w.addValue(key, pol):
		default:
			res.Present++
		}
	}
	fetched, err := w.run()
	if err == nil && len(w.wrongType) > 0 {
		// Hashes read with GET: read again, whole. The value fills above are complete, so these are new fills.
		again := warmBatch{s: s, ps: w.ps, now: w.now, fieldTTL: w.fieldTTL}
		for _, k := range w.wrongType {
			again.addHash(k.key, k.pol, nil)
		}
		_, err = again.run()
		w.bytes += again.bytes
	}
	if err != nil {
		return warm.Result{}, err
	}
	res.Fetched += fetched
	res.Bytes = w.bytes // the warmer sizes its next batch by it
	return res, nil
}

// warmBatch is one round trip of a warm-up: the fills it leads and the commands that read them.
type warmBatch struct {
	s        *Server
	ps       *policySet
	now      time.Time
	fieldTTL bool
	req      upstream.Payload
	items    []warmItem
	// wrongType are the keys whose GET answered WRONGTYPE, to be read as hashes.
	wrongType []warmItem
	scratch   []byte
	bytes     int // reply bytes the round trip read
}

// warmItem is one key a warmBatch fetches: a value (GET and PTTL) when hash is nil, else a hash.
type warmItem struct {
	key   []byte
	pol   *config.Policy
	fill  *localcache.Fill
	lp    *localcache.Policy
	frame int
	hash  *hashRead
}

// feastFields are the hash fields a Feast key is warmed with: each configured feature view's features, then its
// event time, in the configuration's order; nil when no view is configured (the whole hash is read).
func (w *warmBatch) feastFields() [][]byte {
	var fields [][]byte
	for _, v := range w.ps.views {
		fields = append(append(fields, v.FieldIDs...), []byte(v.EventTimeField))
	}
	return fields
}

// addValue adds a string key's fetch unless the key is cached and fresh (or a fresh image of a hash) or being
// fetched; it reports whether it did.
func (w *warmBatch) addValue(key []byte, pol *config.Policy) bool {
	lp := &w.ps.local[pol.Index]
	var look localcache.Lookup
	if w.scratch, look = w.s.cache.AppendGet(w.scratch[:0], key, lp, w.now, false); look.State == localcache.StateFresh {
		return false
	}
	if w.hashFresh(key, pol, nil) {
		return false // a hash an earlier warm-up read whole
	}
	f, leader := w.s.cache.Acquire(key)
	if !leader {
		return false
	}
	// Look again inside the single flight, as the request path does: a fill may have stored it meanwhile.
	if w.scratch, look = w.s.cache.AppendGet(w.scratch[:0], key, lp, w.now, false); look.State == localcache.StateFresh {
		w.s.cache.Complete(f, servedResult(w.scratch), lp)
		return false
	}
	f.SkipAdmission() // a key worth warming is read often: the admission filter need not see it first
	w.items = append(w.items, warmItem{key: key, pol: pol, fill: f, lp: lp, frame: w.req.Len()})
	w.req.AppendFetch(key)
	return true
}

// addHash adds a hash key's fetch, of fields (nil: the whole hash), unless they are all cached and fresh or a
// fill of the same fields is in flight; it reports whether it did.
func (w *warmBatch) addHash(key []byte, pol *config.Policy, fields [][]byte) bool {
	all := fields == nil
	if w.hashFresh(key, pol, fields) {
		return false
	}
	f, leader := w.s.cache.AcquireHash(key, localcache.HashFillID(fields, all))
	if !leader {
		return false
	}
	f.SkipAdmission()
	hr := &hashRead{cmd: hashMGet, key: key, fetch: fields, ps: w.ps, pol: pol, fieldTTL: w.fieldTTL, fill: f}
	if all {
		hr.cmd = hashGetAll
	}
	w.items = append(w.items, warmItem{key: key, pol: pol, fill: f, frame: w.req.Len(), hash: hr})
	w.req.AppendHashFetch(key, fields, all, w.fieldTTL)
	return true
}

// hashFresh reports whether the cached entry of key holds every one of fields fresh (nil fields: a complete,
// fresh image of the hash).
func (w *warmBatch) hashFresh(key []byte, pol *config.Policy, fields [][]byte) bool {
	fresh := false
	w.s.cache.LookupHash(key, w.now, func(e localcache.HashEntry) {
		if fields == nil {
			lk, complete := e.Complete(&w.ps.local[pol.Index], false)
			fresh = complete && lk.State == localcache.StateFresh
			return
		}
		n := 0
		e.Fields(fields, func(i int) *localcache.Policy { _, lp := fieldPolicy(w.ps, pol, fields[i]); return lp }, false,
			func(i int, _ []byte, _ bool, lk localcache.Lookup) {
				if lk.State == localcache.StateFresh {
					n++
				}
			})
		fresh = n == len(fields)
	})
	return fresh
}

// run sends the batch's commands in one round trip and completes its fills; it returns how many keys it fetched.
// On error every fill is completed with it (their waiters get the error) and nothing counts as fetched.
func (w *warmBatch) run() (int, error) {
	if len(w.items) == 0 {
		return 0, nil
	}
	s := w.s
	call := upstream.NewCall()
	start := time.Now()
	var err error
	if s.up.Cluster() != nil {
		// In front of a Redis Cluster the keys are spread over the masters: the router sends each master its
		// share in parallel, on the shared connections.
		err = s.up.Do(call, &w.req)
	} else {
		var conn *upstream.Conn
		if conn, err = s.up.Dedicated(); err == nil {
			if err = conn.Do(call, w.req.Bytes(), w.req.Len(), start.Add(s.up.Timeout())); err != nil {
				conn.Close()
			} else {
				conn.Release()
			}
		}
	}
	s.metrics.observeUpstream(upWarm, start)
	w.bytes = len(call.Replies)
	var hf upstream.HashFetched
	for _, it := range w.items {
		if it.hash != nil {
			r := localcache.Result{Err: err}
			if n := upstream.HashFetchFrames(it.hash.cmd == hashGetAll, w.fieldTTL); it.frame+n-1 < call.Len() {
				var hpttl []byte
				if n == 3 {
					hpttl = call.Frame(it.frame + 2)
				}
				r = s.hashFetchedResult(call.Frame(it.frame), call.Frame(it.frame+1), hpttl, it.hash, &hf, call.Asked)
			}
			s.cache.CompleteHash(it.fill, r, r.Hash)
			continue
		}
		r := localcache.Result{Err: err}
		if it.frame+1 < call.Len() {
			if f, perr := parseFetched(call, it.frame); perr != nil {
				r.Err = perr
			} else {
				r = s.fetchedResult(f)
				if f.Error != nil && bytes.HasPrefix(f.Error, []byte("-WRONGTYPE")) {
					w.wrongType = append(w.wrongType, it)
				}
			}
		}
		s.cache.Complete(it.fill, r, it.lp)
	}
	s.stats.UpstreamReads.Add(int64(len(w.items)))
	if err != nil {
		return 0, err
	}
	return len(w.items), nil
}

// waitTrusted waits up to the upstream timeout for the local tier to store fills (tracking established).
func (s *Server) waitTrusted() error {
	deadline := time.Now().Add(s.up.Timeout())
	for !s.cache.Trusted() {
		if time.Now().After(deadline) {
			return errNotTrusted
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil
}
