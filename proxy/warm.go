package proxy

import (
	"errors"
	"time"

	"featcache/localcache"
	"featcache/policy"
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
			hot = append(hot, warm.File(w.HotkeysFile))
		}
		if w.HotkeysZset != "" {
			hot = append(hot, warm.Zset{Key: w.HotkeysZset, Pool: s.up})
		}
		s.warmer.Start(hot, s.warmSources(w.Sources))
		s.persister.Start()
	})
}

func (s *Server) warmSources(srcs []policy.WarmSource) []warm.Source {
	out := make([]warm.Source, 0, len(srcs))
	for _, src := range srcs {
		out = append(out, s.warmSource(src))
	}
	return out
}

func (s *Server) warmSource(src policy.WarmSource) warm.Source {
	if src.File != "" {
		return warm.File(src.File)
	}
	return warm.Zset{Key: src.Zset, Pool: s.up}
}

// WarmFill loads keys into the local tier for a warm-up (warm.Filler), under the fill rules of the request path:
// a key is skipped when no caching policy covers it, left alone when it is cached and fresh or a fill of it is in
// flight (which will store it), and otherwise fetched, all such keys in one round trip (GET and PTTL each) on a
// dedicated connection, so that a warm-up never queues ahead of client traffic on the shared ones. Each fetched
// value is stored through the key's single-flight fill, so it is dropped when a write invalidated the key
// meanwhile: warming never overwrites a newer value, and clients reading a key being warmed join its fill.
func (s *Server) WarmFill(keys [][]byte) (warm.Result, error) {
	var res warm.Result
	if err := s.waitTrusted(); err != nil {
		return res, err
	}
	ps := s.policies.Load()
	now := s.now()
	type item struct {
		fill *localcache.Fill
		lp   *localcache.Policy
	}
	items := make([]item, 0, len(keys))
	var req, scratch []byte
	for _, key := range keys {
		pol := ps.matcher.Match(key)
		if pol == nil || !pol.Cache || len(key) > localcache.MaxKeyLen {
			res.Skipped++
			continue
		}
		lp := &ps.local[pol.Index]
		var look localcache.Lookup
		if scratch, look = s.cache.AppendGet(scratch[:0], key, lp, now, false); look.State == localcache.StateFresh {
			res.Present++
			continue
		}
		f, leader := s.cache.Acquire(key)
		if !leader {
			res.Present++
			continue
		}
		// Look again inside the single flight, as the request path does: a fill may have stored it meanwhile.
		if scratch, look = s.cache.AppendGet(scratch[:0], key, lp, now, false); look.State == localcache.StateFresh {
			s.cache.Complete(f, servedResult(scratch), lp)
			res.Present++
			continue
		}
		f.SkipAdmission() // a key worth warming is read often: the admission filter need not see it first
		items = append(items, item{fill: f, lp: lp})
		req = upstream.AppendFetch(req, key)
	}
	if len(items) == 0 {
		return res, nil
	}
	call := upstream.NewCall()
	start := time.Now()
	var err error
	if s.up.Cluster() != nil {
		// In front of a Redis Cluster the keys are spread over the masters: the router sends each master its
		// share in parallel, on the shared connections.
		err = s.up.Do(call, req, 2*len(items))
	} else {
		var conn *upstream.Conn
		if conn, err = s.up.Dedicated(); err == nil {
			if err = conn.Do(call, req, 2*len(items), start.Add(s.up.Timeout())); err != nil {
				conn.Close()
			} else {
				conn.Release()
			}
		}
	}
	s.metrics.observeUpstream(upWarm, start)
	for i, it := range items {
		r := localcache.Result{Err: err}
		if 2*i+1 < call.Len() {
			if f, perr := parseFetched(call, 2*i); perr != nil {
				r.Err = perr
			} else {
				r = fetchedResult(f)
			}
		}
		s.cache.Complete(it.fill, r, it.lp)
	}
	s.stats.UpstreamReads.Add(int64(len(items)))
	if err != nil {
		return warm.Result{}, err
	}
	res.Fetched = len(items)
	return res, nil
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
