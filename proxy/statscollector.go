package proxy

import (
	"runtime"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"featcache/localcache"
)

// statsCollector exports the request path's counters, the local tier's figures, upstream health, warm-ups, hot
// keys and reloads at scrape time.
type statsCollector struct {
	s *Server
	d map[string]*prometheus.Desc
}

func newStatsCollector(s *Server) *statsCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("featcache_"+name, help, labels, nil)
	}
	return &statsCollector{s: s, d: map[string]*prometheus.Desc{
		"requests": d("requests_total", "Keys read by cached read commands, each once: every key of GET and MGET, the one "+
			"hash of HGET, HMGET and HGETALL (under its feature view's policy when all the fields read belong to one); "+
			"by policy and by what answered them: hit (memory, fresh), stale (memory, past the soft deadline, or past "+
			"the hard one while the upstream fails), miss (fetched), bypass (no caching policy), error (the upstream "+
			"failed, nothing to serve).", "policy", "result"),
		"age":         d("served_age_seconds", "Age of the values served from memory (hits and stale serves), by policy.", "policy"),
		"staleError":  d("stale_on_error_total", "Values served past their hard TTL because the upstream failed (serve_stale), by policy; part of result=\"stale\".", "policy"),
		"invalidated": d("invalidated_keys_total", "Keys invalidated in the local tier: named by tracking pushes (writes by any client of Redis) and by writes through featcache."),
		"flushes":     d("flushes_total", "Whole-tier flushes of the local tier: FLUSHALL, FLUSHDB or SWAPDB (through featcache, or by another client: a null tracking push), a server restarted or failed over (a tracking connection lost to a server that comes back the same is not one), a script's tracking barrier not confirmed, CACHE FLUSH."),
		"upstreamUp":  d("upstream_up", "1 while the upstream answers; 0 from the first failed or timed-out round trip until a health PING is answered."),
		"trackingUp":  d("tracking_up", "1 while server-assisted invalidation (CLIENT TRACKING) is established."),
		"bytes":       d("local_bytes", "Estimated bytes held by the local tier's entries (entries times their mean size)."),
		"capacity":    d("local_capacity_bytes", "Size of the local tier (local.max_memory)."),
		"entries":     d("local_entries", "Entries in the local tier."),
		"evictions":   d("evictions_total", "Entries evicted from the local tier to make room."),
		"joined":      d("fills_joined_total", "Reads that joined a fetch of the same key already in flight (single-flight) instead of reading the upstream."),
		"fills":       d("fills_total", "Upstream reads of cacheable keys, by outcome: stored, discarded (invalidated meanwhile), untrusted (tracking down).", "outcome"),
		"refreshes":   d("refreshes_total", "Background refreshes of soft-stale entries started."),
		"upreads":     d("upstream_reads_total", "Keys fetched from the upstream (GET and PTTL pairs)."),
		"roundtrips":  d("upstream_round_trips_total", "Upstream round trips of pipeline segments."),
		"loop":        d("event_loop_batches_total", "Client batches an event loop began: answered whole from memory (served), or handed over to the client's goroutine (handed_over).", "outcome"),
		"forwarded":   d("forwarded_total", "Commands forwarded to the upstream."),
		"errors": d("errors_total", "Error replies featcache produced itself (not Redis's own errors, which are relayed), by reason: "+
			"upstream (Redis failed, timed out or was unreachable, and nothing could be served), refused (commands.deny, "+
			"and commands featcache cannot run for a client), snapshot (a snapshot pointer could not be resolved).", "reason"),
		"notStored": d("not_stored_total", "Answers of the upstream about a cacheable key that were served and not stored, by "+
			"reason: too_large (over the largest entry the local tier takes: local.max_memory/1024 minus 66 bytes and the "+
			"key), key_too_large (key over 65535 bytes), wrong_type (an error about the key, such as WRONGTYPE), expired "+
			"(the key expired during the read), no_negative_ttl (a missing key, negative_ttl 0), uncached_policy (a field "+
			"policy that caches nothing), superseded (invalidated or flushed during the read), contested (an overlapping "+
			"read answered otherwise), mget_overlap (an MGET that shared a key's fill with another read), untrusted "+
			"(tracking down, no revalidate or serve_stale), not_admitted (the admission filter refused the key), ttl_refused "+
			"(the upstream refused PTTL: the expiry is unknown).", "reason"),
		"commands": d("commands_total", "Commands received, by name as Redis's command table has it (\"client|setname\" for a "+
			"subcommand); commands neither Redis nor featcache knows are counted as \"(unknown)\".", "command"),
		"latency": d("request_duration_seconds", "Time from a command's arrival (the read of the pipeline that holds it) to its "+
			"reply written, by class: cached_hit (a cached read answered from memory), cached_miss (one that waited for Redis), "+
			"write, forwarded, transaction, pinned (WATCH session), blocking, subscribe, local, admin, refused. A pipeline's "+
			"commands are answered together and share its time. Pipelines answered from memory alone are timed one in "+
			strconv.Itoa(latencySampleMean)+" on average, at random, each timed one counting for those it stands for.", "class"),
		"build":       d("build_info", "Always 1: featcache's version and the Go version it was built with.", "version", "goversion"),
		"panics":      d("panics_total", "Client connections ended by a recovered panic."),
		"clients":     d("client_connections", "Connected clients."),
		"accepted":    d("client_connections_total", "Client connections accepted."),
		"agedOut":     d("client_connections_aged_out_total", "Client connections closed gently by limits.max_conn_age."),
		"rejected":    d("rejected_connections_total", "Connections refused by limits.max_clients."),
		"buffers":     d("client_buffer_bytes", "Client buffer bytes reserved from limits.max_clients_memory."),
		"disconnects": d("client_limit_disconnects_total", "Clients disconnected by a limit, by reason.", "reason"),
		"unverified":  d("unverified_serves_total", "Entries served unverified after a tracking loss (on_tracking_loss: revalidate); part of result=\"stale\"."),
		"revalidated": d("revalidations_total", "Unverified entries re-fetched in the background (at upstream.revalidate_rate)."),
		"slow":        d("slow_commands_total", "Client pipelines slower than log.slow_command."),
		"ready":       d("ready", "1 while /readyz answers 200."),
		"draining":    d("draining", "1 once shutdown has begun."),
		"warmKeys":    d("warm_keys_total", "Keys handled by warm-ups: fetched (read from the upstream), present (already cached), skipped (no caching policy).", "result"),
		"warmRetries": d("warm_retries_total", "Warm-up batches tried again after an upstream failure."),
		"warmSources": d("warm_sources_total", "Warm-up sources, by result: done (read to the end), failed (missing or unreadable).", "result"),
		"warmLoaded":  d("warm_startup_loaded_keys", "Keys loaded by the start-up warm-up (fetched or present)."),
		"warmTarget":  d("warm_ready_after_keys", "Keys the start-up warm-up must load before ready (warm.ready_after)."),
		"warmRunning": d("warm_running", "1 while a warm-up runs."),
		"warmReady":   d("warm_ready", "1 once the start-up warm-up has loaded what readiness waits for."),
		"hotTracked":  d("hotkeys_tracked", "Keys held by the hot-key tracker, over all policies."),
		"hotWrites":   d("hotkeys_writes_total", "Writes of the hot-key list, by target (file, zset) and result (ok, error).", "target", "result"),
		"hotTouched":  d("hotkeys_touched_total", "Hot keys TOUCHed on an upstream that evicts by LRU or LFU."),
		"reloads":     d("config_reloads_total", "Configuration reloads (SIGHUP, CACHE RELOAD), by result: ok, rejected.", "result"),
		"reloadOK":    d("config_last_reload_successful", "1 if the last reload was applied (or none was tried), 0 if it was rejected."),
		"reloadTime":  d("config_last_reload_timestamp_seconds", "Unix time of the last reload attempt; 0 if none."),
		// Only in front of a Redis Cluster:
		"clMasters":   d("cluster_masters", "Masters in the cluster's slot map."),
		"clRedirects": d("cluster_redirects_total", "Commands featcache sent again after the cluster redirected them: kind=\"moved\", \"ask\", \"tryagain\".", "kind"),
		"clChanges":   d("cluster_slot_map_changes_total", "Slot maps installed that moved at least one slot (resharding, failover)."),
		"clUntrusted": d("cluster_untrusted_slots", "Hash slots whose master's invalidations are not being received (its tracking connection is down)."),
		"clFlushed":   d("cluster_slots_flushed_total", "Hash slots whose entries were flushed: their master restarted, failed over, or the slot moved."),
	}}
}

func (c *statsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.d {
		ch <- d
	}
}

// Collect writes one scrape: the per-policy and latency histograms, then the counters and gauges of the tier, the
// upstream and the clients, of warm-ups, hot keys and the cluster, and of reloads.
func (c *statsCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	m := s.metrics
	k := metricSink{d: c.d, ch: ch}
	counter, gauge := k.counter, k.gauge

	c.collectPolicies(k)
	c.collectLatency(k)
	for name, n := range m.commandCounts() {
		counter("commands", n, name)
	}
	gauge("build", 1, s.version, runtime.Version())

	st := &s.stats
	ls := s.cache.Stats()
	counter("invalidated", int64(ls.Invalidations))
	counter("flushes", int64(ls.Flushes))
	gauge("upstreamUp", boolean(s.up.Healthy()))
	_, tracking := s.up.Tracking()
	gauge("trackingUp", boolean(tracking))
	gauge("bytes", float64(ls.Bytes))
	gauge("capacity", float64(s.opt.Config.Local.MaxMemory))
	gauge("entries", float64(ls.Entries))
	counter("evictions", ls.Evictions)
	counter("joined", int64(ls.FillsJoined))
	counter("fills", int64(ls.FillsStored), "stored")
	counter("fills", int64(ls.FillsDiscarded), "discarded")
	counter("fills", int64(ls.FillsUntrusted), "untrusted")
	for _, r := range localcache.Reasons {
		counter("notStored", int64(ls.NotStored[r]), r.String())
	}
	counter("refreshes", st.Refreshes.Load())
	counter("upreads", st.UpstreamReads.Load())
	counter("roundtrips", st.RoundTrips.Load())
	counter("loop", st.LoopBatches.Load(), "served")
	counter("loop", st.LoopHandovers.Load(), "handed_over")
	counter("forwarded", st.Forwarded.Load())
	counter("errors", st.Errors.Load(), "upstream")
	counter("errors", st.Refused.Load(), "refused")
	counter("errors", st.SnapshotErrors.Load(), "snapshot")
	counter("panics", st.Panics.Load())
	gauge("clients", float64(s.clients.Load()))
	counter("accepted", m.accepted.Load())
	counter("agedOut", m.agedOut.Load())
	counter("rejected", st.Rejected.Load())
	gauge("buffers", float64(s.ClientMemory()))
	counter("disconnects", st.ProtocolErrors.Load(), "protocol")
	counter("disconnects", st.IdleTimeouts.Load(), "idle_timeout")
	counter("disconnects", st.OutputTimeouts.Load(), "output_timeout")
	counter("disconnects", st.OutputLimits.Load(), "output_limit")
	counter("disconnects", st.MemoryLimits.Load(), "memory_limit")
	counter("disconnects", st.TLSHandshakeErrors.Load(), "tls_handshake")
	counter("unverified", st.Unverified.Load())
	counter("revalidated", st.Revalidations.Load())
	counter("slow", m.slowCommands.Load())
	ready, _ := s.readiness()
	gauge("ready", boolean(ready))
	gauge("draining", boolean(s.draining.Load()))

	c.collectWarm(k)
	c.collectCluster(k, ls.PartitionFlushes)

	counter("reloads", m.reloadsOK.Load(), "ok")
	counter("reloads", m.reloadsFailed.Load(), "rejected")
	gauge("reloadOK", boolean(m.lastReloadOK.Load()))
	gauge("reloadTime", float64(m.lastReload.Load()))
}

// metricSink writes the metrics of one scrape to ch; a metric is named by its key in statsCollector.d.
type metricSink struct {
	d  map[string]*prometheus.Desc
	ch chan<- prometheus.Metric
}

func (k metricSink) counter(name string, v int64, labels ...string) {
	k.ch <- prometheus.MustNewConstMetric(k.d[name], prometheus.CounterValue, float64(v), labels...)
}

func (k metricSink) gauge(name string, v float64, labels ...string) {
	k.ch <- prometheus.MustNewConstMetric(k.d[name], prometheus.GaugeValue, v, labels...)
}

// boolean is a gauge's value for b: 1 or 0.
func boolean(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// collectPolicies writes each policy's results and, but for keys of no policy, its served-stale count and the
// histogram of the ages it served.
func (c *statsCollector) collectPolicies(k metricSink) {
	m := c.s.metrics
	for _, pc := range m.all() {
		for i, name := range resultNames {
			k.counter("requests", pc.result(i), pc.name, name)
		}
		if pc == m.none {
			continue
		}
		k.counter("staleError", pc.staleOnError.Load(), pc.name)
		buckets := make(map[float64]uint64, len(ageBoundsMs))
		var cum uint64
		for i, b := range ageBoundsMs {
			cum += uint64(pc.hit.buckets[i].Load() + pc.stale.buckets[i].Load())
			buckets[float64(b)/1000] = cum
		}
		last := len(ageBoundsMs)
		count := cum + uint64(pc.hit.buckets[last].Load()+pc.stale.buckets[last].Load())
		sum := float64(pc.hit.sumMs.Load()+pc.stale.sumMs.Load()) / 1000
		k.ch <- prometheus.MustNewConstHistogram(c.d["age"], count, sum, buckets, pc.name)
	}
}

// collectLatency writes the latency histogram of each request class that has had a request.
func (c *statsCollector) collectLatency(k metricSink) {
	m := c.s.metrics
	for class := range m.latency {
		h := &m.latency[class]
		buckets := make(map[float64]uint64, len(latBoundsNs))
		var cum uint64
		for i, b := range latBoundsNs {
			cum += uint64(h.buckets[i].Load())
			buckets[float64(b)/1e9] = cum
		}
		count := cum + uint64(h.buckets[len(latBoundsNs)].Load())
		if count == 0 {
			continue // a class appears with its first request: a scrape lists only what happened
		}
		k.ch <- prometheus.MustNewConstHistogram(c.d["latency"], count, float64(h.sumNs.Load())/1e9, buckets, latClassNames[class])
	}
}

// collectWarm writes the counters and gauges of the warm-ups and of the hot-key tracker and its writes.
func (c *statsCollector) collectWarm(k metricSink) {
	s := c.s
	counter, gauge := k.counter, k.gauge
	ws := s.warmer.Stats()
	counter("warmKeys", ws.Fetched, "fetched")
	counter("warmKeys", ws.Present, "present")
	counter("warmKeys", ws.Skipped, "skipped")
	counter("warmRetries", ws.Retries)
	counter("warmSources", ws.SourcesDone, "done")
	counter("warmSources", ws.SourcesFailed, "failed")
	gauge("warmLoaded", float64(ws.StartupLoaded))
	gauge("warmTarget", float64(s.opt.Config.Warm.ReadyAfter))
	gauge("warmRunning", boolean(ws.Running))
	gauge("warmReady", boolean(ws.Ready))

	gauge("hotTracked", float64(s.hot.Len()))
	ps := s.persister.Stats()
	counter("hotWrites", ps.FileWrites, "file", "ok")
	counter("hotWrites", ps.FileErrors, "file", "error")
	counter("hotWrites", ps.ZsetWrites, "zset", "ok")
	counter("hotWrites", ps.ZsetErrors, "zset", "error")
	counter("hotTouched", ps.Touched)
}

// collectCluster writes the router's counters and the tier's trust per slot, only in front of a Redis Cluster;
// partitionFlushes is the tier's count of slots flushed.
func (c *statsCollector) collectCluster(k metricSink, partitionFlushes uint64) {
	s, counter, gauge := c.s, k.counter, k.gauge
	if cl := s.up.Cluster(); cl != nil {
		cs := cl.Stats()
		gauge("clMasters", float64(cs.Masters))
		counter("clRedirects", cs.Moved, "moved")
		counter("clRedirects", cs.Asked, "ask")
		counter("clRedirects", cs.TryAgain, "tryagain")
		counter("clChanges", cs.MapChanges)
		// The tier has a trust partition per hash slot in front of a cluster (upstream.PartitionedCache).
		gauge("clUntrusted", float64(s.cache.UntrustedPartitions()))
		counter("clFlushed", int64(partitionFlushes))
	}
}
