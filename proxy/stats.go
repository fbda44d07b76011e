package proxy

import "sync/atomic"

// Stats counts what the request path did; Server.Stats returns a snapshot of it. The read results (Hits, StaleHits,
// StaleOnError, Misses, Bypass) are counted per policy (metrics.go) and summed into the snapshot; the other fields
// are updated atomically as they happen.
type Stats struct {
	Commands      atomic.Int64 // commands received: in a snapshot only, the sum of the per-command counters
	Hits          atomic.Int64 // cached reads answered from memory (fresh)
	StaleHits     atomic.Int64 // soft-stale entries served while a refresh runs
	Unverified    atomic.Int64 // entries served unverified after a tracking loss (on_tracking_loss: revalidate)
	Revalidations atomic.Int64 // unverified entries re-fetched in the background (at upstream.revalidate_rate)
	StaleOnError  atomic.Int64 // entries served past hard TTL because the upstream failed (serve_stale)
	Misses        atomic.Int64 // cached reads fetched from the upstream
	Bypass        atomic.Int64 // reads of keys no caching policy covers, forwarded
	Refreshes     atomic.Int64 // background refreshes started
	UpstreamReads atomic.Int64 // keys fetched from the upstream (GET+PTTL pairs)
	RoundTrips    atomic.Int64 // upstream round trips of pipeline segments (misses and forwarded commands)
	Forwarded     atomic.Int64 // commands forwarded over shared connections
	Invalidations atomic.Int64 // keys invalidated by writes through featcache
	Barriers      atomic.Int64 // tracking barriers waited for after scripts and commands with unknown keys
	// Batches the event loops answered whole, and those they handed over to the client's goroutine (loop.go).
	LoopBatches   atomic.Int64
	LoopHandovers atomic.Int64
	// Error replies featcache produced itself, by reason: Errors when the upstream failed (timed out, unreachable,
	// or answered LOADING, BUSY and the like) and nothing could be served; Refused for commands featcache refuses
	// (commands.deny, and those it cannot run for a client); SnapshotErrors when a snapshot pointer could not be
	// resolved.
	Errors         atomic.Int64
	Refused        atomic.Int64
	SnapshotErrors atomic.Int64
	Panics         atomic.Int64 // connections ended by a recovered panic

	Rejected           atomic.Int64 // connections refused by limits.max_clients or the descriptor limit
	ProtocolErrors     atomic.Int64 // connections closed for a protocol error or a request limit
	IdleTimeouts       atomic.Int64 // clients closed by limits.idle_timeout
	OutputTimeouts     atomic.Int64 // clients closed for leaving replies unread (limits.output_timeout)
	OutputLimits       atomic.Int64 // clients closed for a reply over limits.max_output_bytes
	MemoryLimits       atomic.Int64 // clients closed because limits.max_clients_memory was reached
	TLSHandshakeErrors atomic.Int64 // client TLS handshakes that failed or timed out
}

// Stats returns a snapshot of the server's counters. Hits, StaleHits, StaleOnError, Unverified, Misses and Bypass
// are the sums over every policy of featcache_requests_total's results: StaleHits are the soft-stale serves
// (stale is also the result of serves on error and of unverified entries), and Misses
// every lookup that went to the upstream, whatever its outcome (miss, error, or stale on error).
func (s *Server) Stats() *Stats {
	snap := &Stats{}
	st := &s.stats
	res, staleOnError := s.metrics.totals()
	var commands int64
	for _, n := range s.metrics.commandCounts() {
		commands += n
	}
	snap.Commands.Store(commands)
	snap.Hits.Store(res[resultHit])
	unverified := st.Unverified.Load()
	snap.StaleHits.Store(res[resultStale] - staleOnError - unverified)
	snap.StaleOnError.Store(staleOnError)
	snap.Unverified.Store(unverified)
	snap.Revalidations.Store(st.Revalidations.Load())
	snap.Misses.Store(res[resultMiss] + res[resultError] + staleOnError)
	snap.Bypass.Store(res[resultBypass])
	snap.Refreshes.Store(st.Refreshes.Load())
	snap.UpstreamReads.Store(st.UpstreamReads.Load())
	snap.RoundTrips.Store(st.RoundTrips.Load())
	snap.Forwarded.Store(st.Forwarded.Load())
	snap.Invalidations.Store(st.Invalidations.Load())
	snap.Barriers.Store(st.Barriers.Load())
	batches, handovers := s.loopCounts()
	snap.LoopBatches.Store(batches)
	snap.LoopHandovers.Store(handovers)
	snap.Errors.Store(st.Errors.Load())
	snap.Refused.Store(st.Refused.Load())
	snap.SnapshotErrors.Store(st.SnapshotErrors.Load())
	snap.Panics.Store(st.Panics.Load())
	snap.Rejected.Store(st.Rejected.Load())
	snap.ProtocolErrors.Store(st.ProtocolErrors.Load())
	snap.IdleTimeouts.Store(st.IdleTimeouts.Load())
	snap.OutputTimeouts.Store(st.OutputTimeouts.Load())
	snap.OutputLimits.Store(st.OutputLimits.Load())
	snap.MemoryLimits.Store(st.MemoryLimits.Load())
	snap.TLSHandshakeErrors.Store(st.TLSHandshakeErrors.Load())
	return snap
}
