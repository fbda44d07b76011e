package proxy

import (
	"featcache/config"
	"featcache/localcache"
	"featcache/warm"
)

// policySet is the matcher with each policy converted once to what the request path needs, by config.Index:
// the local tier's view of it, its counters and its hot-key tracker. It is replaced whole, never changed.
type policySet struct {
	matcher      *config.Matcher
	local        []localcache.Policy
	counters     []*policyCounters
	hot          []*warm.TopK // nil entries for policies that do not cache, or when hot-key tracking is off
	none         *policyCounters
	pointers     [][]byte              // snapshot pointer keys; nil without one
	hasSnapshots bool                  // some policy has a snapshot pointer: commands' keys may need rewriting
	views        []*config.FeatureView // Feast feature views, in configuration order: what warming a Feast key reads
}

// SetPolicies replaces the policies; lookups that start afterwards use the new ones. Entries already cached are
// judged by the new policies at their next lookup: a shorter TTL applies at once, and a policy with cache: false
// stops every read of its keys from being served from memory. It does not change what tracking covers: Reload
// does that first.
func (s *Server) SetPolicies(ps []*config.Policy) {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	s.setPolicies(ps)
}

// setPolicies is SetPolicies for callers holding reloadMu (or before the server is shared).
func (s *Server) setPolicies(ps []*config.Policy) {
	set := &policySet{
		matcher:  config.NewMatcher(ps),
		local:    make([]localcache.Policy, len(ps)),
		counters: make([]*policyCounters, len(ps)),
		hot:      make([]*warm.TopK, len(ps)),
		none:     s.metrics.none,
		pointers: make([][]byte, len(ps)),
	}
	for _, p := range ps {
		set.local[p.Index] = localcache.Policy{
			SoftTTL: p.SoftTTL, HardTTL: p.HardTTL, Jitter: p.Jitter, NegativeTTL: p.NegativeTTL,
			ServeStale: p.OnUpstreamError == config.ErrorServeStale, MaxStale: p.MaxStale,
			Revalidate: p.OnTrackingLoss == config.LossRevalidate,
			NotBefore:  s.notBefore(p),
		}
		set.counters[p.Index] = s.metrics.counters(p.Name)
		if p.Cache {
			set.hot[p.Index] = s.hot.Policy(p.Name)
		}
		if p.SnapshotPointer != "" {
			set.pointers[p.Index] = []byte(p.SnapshotPointer)
			set.hasSnapshots = true
		}
		if p.View != nil {
			set.views = append(set.views, p.View)
		}
	}
	s.policies.Store(set)
}

// policyOf returns the policy of key, or nil; used by admin commands.
func (c *client) policyOf(key []byte) (*config.Policy, *localcache.Policy) {
	ps := c.srv.policies.Load()
	pol := ps.matcher.Match(key)
	if pol == nil {
		return nil, nil
	}
	return pol, &ps.local[pol.Index]
}
