package proxy

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"time"

	"featcache/localcache"
)

// cmdCache answers featcache's own admin commands, for redis-cli:
//
//	CACHE STATS        counters of the request path and the local tier, INFO style
//	CACHE EXPLAIN key  the key's policy, state, age and time left to its soft and hard deadlines
//	CACHE FLUSH        empty the local tier (the upstream is not touched)
//	CACHE HELP
func (c *client) cmdCache(args [][]byte) {
	if len(args) < 2 {
		c.errorReply("ERR wrong number of arguments for 'cache' command")
		return
	}
	sub := strings.ToLower(string(args[1]))
	want := map[string]int{"stats": 2, "explain": 3, "flush": 2, "help": 2}
	n, known := want[sub]
	switch {
	case !known:
		c.errorReply("ERR unknown subcommand '" + string(truncateArg(args[1], 128)) + "'. Try CACHE HELP.")
		return
	case len(args) != n:
		c.errorReply("ERR wrong number of arguments for 'cache|" + sub + "' command")
		return
	}
	switch sub {
	case "stats":
		c.bulkReply(c.srv.statsText())
	case "explain":
		c.bulkReply(c.explain(args[2]))
	case "flush":
		c.srv.cache.Flush()
		c.simpleReply("OK")
	case "help":
		lines := []string{
			"CACHE <subcommand> [<arg> ...]. Subcommands are:",
			"STATS",
			"    Counters of the request path and of the local tier.",
			"EXPLAIN <key>",
			"    The key's policy, cache state, age, and time left to its soft and hard deadlines.",
			"FLUSH",
			"    Empty the local tier. The upstream is not touched.",
			"HELP",
			"    Print this help.",
		}
		buf := c.seg.buf(&c.out)
		*buf = appendArrayLen(*buf, len(lines))
		for _, l := range lines {
			*buf = append(*buf, '+')
			*buf = append(*buf, l...)
			*buf = append(*buf, '\r', '\n')
		}
	}
}

// statsText renders CACHE STATS: one "name:value" line per counter, as INFO does.
func (s *Server) statsText() []byte {
	st := &s.stats
	ls := s.cache.Stats()
	var b bytes.Buffer
	line := func(name string, v any) { fmt.Fprintf(&b, "%s:%d\r\n", name, v) }
	b.WriteString("# requests\r\n")
	line("commands", st.Commands.Load())
	line("hits", st.Hits.Load())
	line("stale_hits", st.StaleHits.Load())
	line("stale_on_error", st.StaleOnError.Load())
	line("misses", st.Misses.Load())
	line("bypass", st.Bypass.Load())
	line("refreshes", st.Refreshes.Load())
	line("upstream_reads", st.UpstreamReads.Load())
	line("round_trips", st.RoundTrips.Load())
	line("forwarded", st.Forwarded.Load())
	line("invalidations", st.Invalidations.Load())
	line("barriers", st.Barriers.Load())
	line("errors", st.Errors.Load())
	line("panics", st.Panics.Load())
	line("connected_clients", s.clients.Load())
	b.WriteString("# limits\r\n")
	line("rejected_connections", st.Rejected.Load())
	line("protocol_errors", st.ProtocolErrors.Load())
	line("idle_timeouts", st.IdleTimeouts.Load())
	line("output_timeouts", st.OutputTimeouts.Load())
	line("output_limit_disconnects", st.OutputLimits.Load())
	line("memory_limit_disconnects", st.MemoryLimits.Load())
	line("tls_handshake_errors", st.TLSHandshakeErrors.Load())
	line("client_buffer_bytes", s.ClientMemory())
	b.WriteString("# local\r\n")
	line("entries", ls.Entries)
	line("evictions", ls.Evictions)
	line("fills_stored", ls.FillsStored)
	line("fills_discarded", ls.FillsDiscarded)
	line("fills_joined", ls.FillsJoined)
	line("invalidated_keys", ls.Invalidations)
	line("flushes", ls.Flushes)
	line("too_large_keys", ls.TooLargeKeys)
	line("too_large_values", ls.TooLargeValues)
	line("epoch", int64(s.cache.Epoch()))
	tracking := "off"
	if enabled, up := s.up.Tracking(); up {
		tracking = "up"
	} else if enabled {
		tracking = "down"
	}
	b.WriteString("# upstream\r\n")
	fmt.Fprintf(&b, "tracking:%s\r\n", tracking)
	b.WriteString("# runtime\r\n")
	rt := readRuntime()
	line("alloc_objects", rt.allocObjects)
	line("alloc_bytes", rt.allocBytes)
	line("gc_cycles", rt.gcCycles)
	line("gc_pause_p99_us", rt.gcPauseP99.Microseconds())
	line("gc_pause_max_us", rt.gcPauseMax.Microseconds())
	line("heap_bytes", rt.heapBytes)
	line("rss_bytes", rt.rssBytes)
	line("rss_peak_bytes", rt.rssPeakBytes)
	return b.Bytes()
}

// explain renders CACHE EXPLAIN: what featcache would do with key now. Keys are bytes; they are shown quoted
// with Go escapes, so binary keys print safely.
func (c *client) explain(key []byte) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "key:%s\r\n", strconv.Quote(string(key)))
	pol, lp := c.policyOf(key)
	if pol == nil {
		b.WriteString("policy:(none)\r\nstate:uncached (no policy matches: forwarded)\r\n")
		return b.Bytes()
	}
	fmt.Fprintf(&b, "policy:%s\r\n", pol.Name)
	if !pol.Cache {
		b.WriteString("state:uncached (cache: false)\r\n")
		return b.Bytes()
	}
	now := c.srv.now()
	h, size, st, ok := c.srv.cache.Explain(key, lp, now)
	if !ok {
		b.WriteString("state:miss\r\n")
		return b.Bytes()
	}
	fmt.Fprintf(&b, "state:%s\r\n", stateName(st))
	kind := "value"
	if h.Kind == localcache.KindNil {
		kind = "nil"
	}
	fmt.Fprintf(&b, "kind:%s\r\n", kind)
	fmt.Fprintf(&b, "size:%d\r\n", size)
	ms := func(t int64) string { return strconv.FormatInt(t-now.UnixMilli(), 10) }
	fmt.Fprintf(&b, "age_ms:%d\r\n", now.UnixMilli()-h.FetchedAt)
	soft, hard := h.Deadlines(lp)
	fmt.Fprintf(&b, "soft_left_ms:%s\r\n", ms(soft))
	fmt.Fprintf(&b, "hard_left_ms:%s\r\n", ms(hard))
	if h.ExpireAt != 0 {
		fmt.Fprintf(&b, "upstream_ttl_ms:%s\r\n", ms(h.ExpireAt))
	} else {
		b.WriteString("upstream_ttl_ms:-1\r\n")
	}
	fmt.Fprintf(&b, "fetched_at:%s\r\n", time.UnixMilli(h.FetchedAt).UTC().Format(time.RFC3339Nano))
	return b.Bytes()
}

func stateName(st localcache.State) string {
	switch st {
	case localcache.StateFresh:
		return "fresh"
	case localcache.StateStale:
		return "stale (served, refreshed in the background)"
	case localcache.StateDead:
		return "dead (past hard deadline: refetched; served only on upstream error with serve_stale)"
	}
	return "miss"
}
