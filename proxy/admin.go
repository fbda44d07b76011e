package proxy

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"featcache/config"
	"featcache/internal/resp"
	"featcache/localcache"
	"featcache/upstream"
)

// cmdCache answers featcache's own admin commands, for redis-cli:
//
//	CACHE STATS              counters of the request path, the local tier, the upstream, warm-ups and hot keys
//	CACHE EXPLAIN key [field] the key's policy, state, age and time left to its soft and hard deadlines
//	CACHE FLUSH              empty the local tier (the upstream is not touched)
//	CACHE WARM FILE path     start a warm-up from a keys file
//	CACHE WARM ZSET key      start a warm-up from a sorted set
//	CACHE HOTKEYS [count]    the hottest keys, with their estimated request counts and policies
//	CACHE RELOAD             read the configuration file again and apply it
//	CACHE HELP
func (c *client) cmdCache(args [][]byte) {
	if len(args) < 2 {
		c.errorReply("ERR wrong number of arguments for 'cache' command")
		return
	}
	sub := strings.ToLower(string(args[1]))
	arity := map[string][2]int{ // least and most arguments, the command and subcommand included
		"stats": {2, 2}, "explain": {3, 4}, "flush": {2, 2}, "help": {2, 2},
		"warm": {4, 4}, "hotkeys": {2, 3}, "reload": {2, 2},
	}
	n, known := arity[sub]
	switch {
	case !known:
		c.errorReply("ERR unknown subcommand '" + string(truncateArg(args[1], 128)) + "'. Try CACHE HELP.")
		return
	case len(args) < n[0] || len(args) > n[1]:
		c.errorReply("ERR wrong number of arguments for 'cache|" + sub + "' command")
		return
	}
	switch sub {
	case "stats":
		c.linesReply(c.srv.statsText())
	case "explain":
		var field []byte
		if len(args) == 4 {
			field = args[3]
		}
		c.linesReply(c.explain(args[2], field))
	case "flush":
		c.srv.cache.Flush()
		c.simpleReply("OK")
	case "warm":
		c.cacheWarm(args[2], args[3])
	case "hotkeys":
		c.cacheHotkeys(args[2:])
	case "reload":
		c.cacheReload()
	case "help":
		lines := []string{
			"CACHE <subcommand> [<arg> ...]. Subcommands are:",
			"STATS",
			"    Counters of the request path, the local tier, the upstream, warm-ups and hot keys.",
			"EXPLAIN <key> [<field>]",
			"    The key's policy, cache state, age, and time left to its soft and hard deadlines; for a cached",
			"    hash, its fields, or with <field> that field's policy and state. Feast fields are named by their",
			"    features, and <field> may be a feature as <view>:<feature>.",
			"FLUSH",
			"    Empty the local tier. The upstream is not touched.",
			"WARM FILE <path>|ZSET <key>",
			"    Start a warm-up from a keys file (one key per line, hottest first) or a sorted set (highest score",
			"    first) on the featcache host or its Redis. Keys already cached are not read again.",
			"HOTKEYS [<count>]",
			"    The hottest keys (default 20), one per line, each with its estimated request count and its policy.",
			"RELOAD",
			"    Read the configuration file again and apply it, as SIGHUP does; says what needs a restart.",
			"HELP",
			"    Print this help.",
		}
		c.linesReply([]byte(strings.Join(lines, "\r\n") + "\r\n"))
	}
}

// linesReply answers text, lines each ended by CRLF, as an array of status replies, one per line: CACHE STATS,
// EXPLAIN, HOTKEYS, RELOAD and HELP answer so, and redis-cli prints one line each (a bulk string would print as one
// line with escaped line breaks). Lines hold no other CR or LF (keys are shown Go-quoted); one that did would
// have it replaced by a space, so that the frame stays intact.
func (c *client) linesReply(text []byte) {
	buf := c.seg.buf(&c.out)
	*buf = appendLines(*buf, text)
}

// appendLines appends text as linesReply answers it.
func appendLines(dst, text []byte) []byte {
	n := bytes.Count(text, []byte("\r\n"))
	if len(text) > 0 && !bytes.HasSuffix(text, []byte("\r\n")) {
		n++
	}
	dst = resp.AppendArray(dst, n)
	for len(text) > 0 {
		line, rest, _ := bytes.Cut(text, []byte("\r\n"))
		dst = resp.AppendString(dst, string(line))
		text = rest
	}
	return dst
}

// zsetType is TYPE's reply for a sorted set.
var zsetType = string(resp.AppendString(nil, "zset"))

// cacheWarm starts a warm-up from a file or a sorted set, after checking that it can be read: the reply says at
// once when the file is missing or the key holds no sorted set; the warm-up itself runs in the background
// (progress: CACHE STATS, the log, featcache_warm_*).
func (c *client) cacheWarm(kind, name []byte) {
	var src config.WarmSource
	switch strings.ToLower(string(kind)) {
	case "file":
		src.File = string(name)
		if _, err := os.Stat(src.File); err != nil {
			c.errorReply("ERR cannot read " + strconv.Quote(src.File) + ": " + err.Error())
			return
		}
	case "zset":
		src.Zset = string(name)
		call := upstream.NewCall()
		call.Req.AppendKey("TYPE", []byte(src.Zset))
		if err := c.srv.up.Do(call, &call.Req); err != nil {
			c.errorReply(upstreamErrorText(err))
			return
		}
		if t := string(call.Frame(0)); t != zsetType {
			c.errorReply("ERR " + strconv.Quote(src.Zset) + " is not a sorted set (TYPE: " + strings.TrimSpace(strings.TrimPrefix(t, "+")) + ")")
			return
		}
	default:
		c.errorReply("ERR CACHE WARM takes FILE <path> or ZSET <key>")
		return
	}
	c.srv.warmer.Enqueue(c.srv.warmSource(src))
	c.srv.log.Info("warm-up: requested by CACHE WARM", "client", c.id, "source", src.String())
	c.simpleReply("OK")
}

// defaultHotkeys is how many keys CACHE HOTKEYS lists without a count.
const defaultHotkeys = 20

// cacheHotkeys lists the hottest keys, hottest first, one line each: the key (Go-quoted), its estimated request
// count and its policy, and for a Feast key the entity it holds.
func (c *client) cacheHotkeys(args [][]byte) {
	n := defaultHotkeys
	if len(args) == 1 {
		v, err := strconv.Atoi(string(args[0]))
		if err != nil || v < 0 {
			c.errorReply("ERR value is out of range, must be positive")
			return
		}
		n = v
	}
	ps := c.srv.policies.Load()
	var b bytes.Buffer
	for _, k := range c.srv.hot.Top(n) {
		fmt.Fprintf(&b, "key:%s requests:%d policy:%s", strconv.Quote(k.Key), k.Count, k.Policy)
		if pol := ps.matcher.Match([]byte(k.Key)); pol != nil && pol.Name == config.FeastKeyPolicy {
			if e, ok := feastEntity([]byte(k.Key), pol.Suffix); ok {
				b.WriteString(" entity:" + e)
			}
		}
		b.WriteString("\r\n")
	}
	c.linesReply(b.Bytes())
}

// cacheReload runs a reload and reports it: "OK" lines, or the error that rejected it.
func (c *client) cacheReload() {
	res, err := c.srv.Reload()
	if err != nil {
		c.errorReply("ERR reload rejected, the running configuration stays: " + strings.ReplaceAll(err.Error(), "\n", " "))
		return
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "reloaded:policies=%d\r\n", res.Policies)
	fmt.Fprintf(&b, "tracking_prefixes_changed:%v\r\n", res.TrackingChanged)
	fmt.Fprintf(&b, "restart_needed:%s\r\n", strings.Join(res.RestartNeeded, ","))
	fmt.Fprintf(&b, "next_start:%s\r\n", strings.Join(res.NextStart, ","))
	c.linesReply(b.Bytes())
}

// statsText renders CACHE STATS: one "name:value" line per counter, as INFO does, in sections; the cluster's
// only in front of a Redis Cluster.
func (s *Server) statsText() []byte {
	st := s.Stats()
	ls := s.cache.Stats()
	var b bytes.Buffer
	writeSection(&b, "requests", s.requestLines(st))
	writeSection(&b, "limits", s.limitLines(st))
	writeSection(&b, "local", s.localLines(&ls))
	writeSection(&b, "not stored", notStoredLines(&ls))
	writeSection(&b, "upstream", s.upstreamLines())
	if cl := s.up.Cluster(); cl != nil {
		writeSection(&b, "cluster", s.clusterLines(cl.Stats(), &ls))
	}
	writeSection(&b, "warm", s.warmLines())
	writeSection(&b, "hotkeys", s.hotkeyLines())
	writeSection(&b, "runtime", s.runtimeLines())
	return b.Bytes()
}

// infoLine is one "name:value" line of CACHE STATS.
type infoLine struct {
	name  string
	value any
}

// writeSection writes the section's "# title" line and then its lines.
func writeSection(b *bytes.Buffer, title string, lines []infoLine) {
	fmt.Fprintf(b, "# %s\r\n", title)
	for _, l := range lines {
		fmt.Fprintf(b, "%s:%v\r\n", l.name, l.value)
	}
}

func (s *Server) requestLines(st *Stats) []infoLine {
	return []infoLine{
		{"commands", st.Commands.Load()},
		{"hits", st.Hits.Load()},
		{"stale_hits", st.StaleHits.Load()},
		{"unverified_hits", st.Unverified.Load()},
		{"revalidations", st.Revalidations.Load()},
		{"stale_on_error", st.StaleOnError.Load()},
		{"misses", st.Misses.Load()},
		{"bypass", st.Bypass.Load()},
		{"refreshes", st.Refreshes.Load()},
		{"upstream_reads", st.UpstreamReads.Load()},
		{"round_trips", st.RoundTrips.Load()},
		{"forwarded", st.Forwarded.Load()},
		{"invalidations", st.Invalidations.Load()},
		{"barriers", st.Barriers.Load()},
		{"loop_batches", st.LoopBatches.Load()},
		{"loop_handovers", st.LoopHandovers.Load()},
		{"errors", st.Errors.Load()}, // upstream failures; the other reasons follow
		{"refused", st.Refused.Load()},
		{"snapshot_errors", st.SnapshotErrors.Load()},
		{"panics", st.Panics.Load()},
		{"connected_clients", s.clients.Load()},
	}
}

func (s *Server) limitLines(st *Stats) []infoLine {
	return []infoLine{
		{"rejected_connections", st.Rejected.Load()},
		{"protocol_errors", st.ProtocolErrors.Load()},
		{"idle_timeouts", st.IdleTimeouts.Load()},
		{"output_timeouts", st.OutputTimeouts.Load()},
		{"output_limit_disconnects", st.OutputLimits.Load()},
		{"memory_limit_disconnects", st.MemoryLimits.Load()},
		{"tls_handshake_errors", st.TLSHandshakeErrors.Load()},
		{"client_buffer_bytes", s.ClientMemory()},
	}
}

func (s *Server) localLines(ls *localcache.Stats) []infoLine {
	return []infoLine{
		{"entries", ls.Entries},
		{"evictions", ls.Evictions},
		{"fills_stored", ls.FillsStored},
		{"fills_discarded", ls.FillsDiscarded},
		{"fills_joined", ls.FillsJoined},
		{"invalidated_keys", ls.Invalidations},
		{"flushes", ls.Flushes},
		{"too_large_keys", ls.TooLargeKeys},
		{"too_large_values", ls.TooLargeValues},
		{"fills_not_admitted", ls.NotAdmitted},
		{"epoch", int64(s.cache.Epoch())},
		{"bytes_estimate", ls.Bytes},
	}
}

// notStoredLines are featcache_not_stored_total's counts: answers served and not stored, by reason.
func notStoredLines(ls *localcache.Stats) []infoLine {
	lines := make([]infoLine, 0, len(localcache.Reasons))
	for _, r := range localcache.Reasons {
		lines = append(lines, infoLine{"not_stored_" + r.String(), ls.NotStored[r]})
	}
	return lines
}

func (s *Server) upstreamLines() []infoLine {
	tracking := "off"
	if enabled, up := s.up.Tracking(); up {
		tracking = "up"
	} else if enabled {
		tracking = "down"
	}
	up := 0
	if s.up.Healthy() {
		up = 1
	}
	return []infoLine{
		{"tracking", tracking},
		{"upstream_addr", s.up.Addr()}, // the primary in use, which Sentinel may move
		{"upstream_up", up},
	}
}

func (s *Server) clusterLines(cs upstream.ClusterStats, ls *localcache.Stats) []infoLine {
	return []infoLine{
		{"cluster_masters", int64(cs.Masters)},
		{"cluster_moved", cs.Moved},
		{"cluster_asked", cs.Asked},
		{"cluster_tryagain", cs.TryAgain},
		{"cluster_slot_map_refreshes", cs.Refreshes},
		{"cluster_slot_map_changes", cs.MapChanges},
		// The tier has a trust partition per hash slot in front of a cluster (upstream.PartitionedCache).
		{"cluster_untrusted_slots", int64(s.cache.UntrustedPartitions())},
		{"cluster_slots_flushed", int64(ls.PartitionFlushes)},
	}
}

func (s *Server) warmLines() []infoLine {
	ready, why := s.readiness()
	ws := s.warmer.Stats()
	lines := []infoLine{{"ready", ready}}
	if !ready {
		lines = append(lines, infoLine{"not_ready_because", why})
	}
	return append(lines, []infoLine{
		{"warm_startup_loaded", ws.StartupLoaded},
		{"warm_ready_after", int64(s.opt.Config.Warm.ReadyAfter)},
		{"warm_fetched", ws.Fetched},
		{"warm_present", ws.Present},
		{"warm_skipped", ws.Skipped},
		{"warm_retries", ws.Retries},
		{"warm_sources_done", ws.SourcesDone},
		{"warm_sources_failed", ws.SourcesFailed},
		{"warm_running", ws.Running},
		{"warm_queued", int64(ws.Queued)},
	}...)
}

func (s *Server) hotkeyLines() []infoLine {
	ps := s.persister.Stats()
	return []infoLine{
		{"hotkeys_tracked", int64(s.hot.Len())},
		{"hotkeys_sample_mean", s.hotGap.current()},
		{"hotkeys_file_writes", ps.FileWrites},
		{"hotkeys_file_errors", ps.FileErrors},
		{"hotkeys_zset_writes", ps.ZsetWrites},
		{"hotkeys_zset_errors", ps.ZsetErrors},
		{"hotkeys_touched", ps.Touched},
		{"upstream_maxmemory_policy", ps.Eviction},
	}
}

func (s *Server) runtimeLines() []infoLine {
	rt := readRuntime()
	return []infoLine{
		{"version", s.version},
		{"go_version", runtime.Version()},
		{"alloc_objects", rt.allocObjects},
		{"alloc_bytes", rt.allocBytes},
		{"gc_cycles", rt.gcCycles},
		{"gc_pause_p99_us", rt.gcPauseP99.Microseconds()},
		{"gc_pause_max_us", rt.gcPauseMax.Microseconds()},
		{"heap_bytes", rt.heapBytes},
		{"rss_bytes", rt.rssBytes},
		{"rss_peak_bytes", rt.rssPeakBytes},
	}
}

// explain renders CACHE EXPLAIN: what featcache would do with key now. Keys are bytes; they are shown quoted
// with Go escapes, so binary keys print safely.
func (c *client) explain(key, field []byte) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "key:%s\r\n", strconv.Quote(string(key)))
	pol, lp := c.policyOf(key)
	if pol == nil {
		b.WriteString("policy:(none)\r\nstate:uncached (no policy matches: forwarded)\r\n")
		return b.Bytes()
	}
	fmt.Fprintf(&b, "policy:%s\r\n", pol.Name)
	if pol.Name == config.FeastKeyPolicy {
		if e, ok := feastEntity(key, pol.Suffix); ok {
			fmt.Fprintf(&b, "entity:%s\r\n", e)
		}
	}
	if !pol.Cache {
		b.WriteString("state:uncached (cache: false)\r\n")
		return b.Bytes()
	}
	if pol.SnapshotPointer != "" {
		fmt.Fprintf(&b, "snapshot_pointer:%s\r\n", strconv.Quote(pol.SnapshotPointer))
		ver, err := c.snapshotVersion(pol, c.srv.policies.Load())
		if err != nil {
			fmt.Fprintf(&b, "version:(unavailable: %s)\r\n", err.Error())
			return b.Bytes()
		}
		key = c.physicalKey(key, ver)
		fmt.Fprintf(&b, "version:%s\r\n", strconv.Quote(string(ver)))
		fmt.Fprintf(&b, "physical_key:%s\r\n", strconv.Quote(string(key)))
	}
	now := c.srv.now()
	h, size, st, ok := c.srv.cache.Explain(key, lp, now)
	c.appendNotStored(&b, key, h, ok, now)
	if !ok {
		b.WriteString("state:miss\r\n")
		return b.Bytes()
	}
	if h.Kind == localcache.KindHash {
		return c.explainHash(&b, key, field, pol, now)
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
	case localcache.StateUnverified:
		return "unverified (cached before a tracking loss, or read while tracking was down: served within its soft TTL, re-fetched at upstream.revalidate_rate)"
	}
	return "miss"
}

// explainHash renders CACHE EXPLAIN of a cached hash: its fields, or one field's policy and state. A Feast field
// is named by its feature ("feature:<view>:<feature>") next to its hashed field id, and field may be given as
// "<view>:<feature>".
func (c *client) explainHash(b *bytes.Buffer, key, field []byte, pol *config.Policy, now time.Time) []byte {
	ps := c.srv.policies.Load()
	if field != nil {
		if id := feastFieldID(ps, pol, field); id != nil {
			field = id
		}
	}
	b.WriteString("kind:hash\r\n")
	c.srv.cache.LookupHash(key, now, func(e localcache.HashEntry) {
		fmt.Fprintf(b, "complete:%v\r\n", e.IsComplete())
		if field == nil {
			n := 0
			e.EachField(func(f []byte) *localcache.Policy { _, lp := fieldPolicy(ps, pol, f); return lp }, false,
				func(f, v []byte, missing bool, lk localcache.Lookup) bool {
					n++
					if n <= 32 {
						fp, _ := fieldPolicy(ps, pol, f)
						fmt.Fprintf(b, "field:%s", strconv.Quote(string(f)))
						if name := featureName(ps, pol, f); name != "" {
							fmt.Fprintf(b, " feature:%s", name)
						}
						fmt.Fprintf(b, " policy:%s state:%s\r\n", fp.Name, stateName(lk.State))
					}
					return true
				})
			fmt.Fprintf(b, "fields:%d\r\n", n)
			return
		}
		fp, flp := fieldPolicy(ps, pol, field)
		fmt.Fprintf(b, "field:%s\r\n", strconv.Quote(string(field)))
		if name := featureName(ps, pol, field); name != "" {
			fmt.Fprintf(b, "feature:%s\r\n", name)
		}
		fmt.Fprintf(b, "field_policy:%s\r\n", fp.Name)
		h, size, ok := e.FieldHeader(field)
		if !ok {
			_, _, lk := e.Field(field, flp, false)
			fmt.Fprintf(b, "field_state:%s\r\n", stateName(lk.State))
			return
		}
		_, _, lk := e.Field(field, flp, false)
		fmt.Fprintf(b, "field_state:%s\r\nfield_size:%d\r\nfield_missing:%v\r\n", stateName(lk.State), size, h.Kind == localcache.KindNil)
		ms := func(t int64) string { return strconv.FormatInt(t-now.UnixMilli(), 10) }
		soft, hard := h.Deadlines(flp)
		fmt.Fprintf(b, "age_ms:%d\r\nsoft_left_ms:%s\r\nhard_left_ms:%s\r\n", now.UnixMilli()-h.FetchedAt, ms(soft), ms(hard))
	})
	return b.Bytes()
}

// featureName returns "<view>:<feature>" for a field of a Feast key that holds a configured feature, or "".
// Feast stores each feature under murmur3_32 of that name (feast.FieldID), which says nothing to a reader.
func featureName(ps *policySet, keyPol *config.Policy, field []byte) string {
	if keyPol.Name != config.FeastKeyPolicy {
		return ""
	}
	vp := ps.matcher.FieldPolicy(field)
	if vp == nil || vp.View == nil {
		return ""
	}
	for i, id := range vp.View.FieldIDs {
		if bytes.Equal(id, field) {
			return vp.View.Name + ":" + vp.View.Features[i]
		}
	}
	return "" // the view's event-time field, "_ts:<view>", names itself
}

// feastFieldID returns the hash field of name, "<view>:<feature>" of a configured feature view, for a Feast key;
// nil otherwise.
func feastFieldID(ps *policySet, keyPol *config.Policy, name []byte) []byte {
	if keyPol.Name != config.FeastKeyPolicy {
		return nil
	}
	view, feature, ok := bytes.Cut(name, []byte(":"))
	if !ok {
		return nil
	}
	for _, v := range ps.views {
		if v.Name != string(view) {
			continue
		}
		for i, f := range v.Features {
			if f == string(feature) {
				return v.FieldIDs[i]
			}
		}
	}
	return nil
}

// feastEntity renders the entity a Feast key names, "user_id=1001" ("a=1,b=x" with several join keys), from
// Feast's entity key serialization (see feast.AppendKey) followed by project; ok is false when key is not
// one.
func feastEntity(key []byte, project string) (string, bool) {
	body, ok := bytes.CutSuffix(key, []byte(project))
	if !ok {
		return "", false
	}
	u32 := func() (uint32, bool) {
		if len(body) < 4 {
			return 0, false
		}
		v := binary.LittleEndian.Uint32(body)
		body = body[4:]
		return v, true
	}
	item := func() (typ uint32, b []byte, ok bool) {
		typ, ok1 := u32()
		n, ok2 := u32()
		if !ok1 || !ok2 || uint64(n) > uint64(len(body)) {
			return 0, nil, false
		}
		b, body = body[:n], body[n:]
		return typ, b, true
	}
	n, ok := u32()
	if !ok || n == 0 || n > 16 {
		return "", false
	}
	names := make([]string, n)
	for i := range names {
		typ, b, ok := item()
		if !ok || typ != 2 {
			return "", false
		}
		names[i] = string(b)
	}
	var out strings.Builder
	for i, name := range names {
		typ, b, ok := item()
		if !ok {
			return "", false
		}
		if i > 0 {
			out.WriteByte(',')
		}
		out.WriteString(plainOrQuoted(name) + "=")
		switch {
		case typ == 2 || typ == 1: // string, bytes
			out.WriteString(plainOrQuoted(string(b)))
		case typ == 3 && len(b) == 4:
			out.WriteString(strconv.FormatInt(int64(int32(binary.LittleEndian.Uint32(b))), 10))
		case typ == 4 && len(b) == 8:
			out.WriteString(strconv.FormatInt(int64(binary.LittleEndian.Uint64(b)), 10))
		default:
			return "", false
		}
	}
	return out.String(), len(body) == 0
}

// plainOrQuoted returns s as it is when it is printable and holds no space, comma, equals sign or double quote,
// else Go-quoted: a value cannot be mistaken for the text around it.
func plainOrQuoted(s string) string {
	if s == "" || strings.ContainsAny(s, " ,=\"") || strconv.Quote(s) != `"`+s+`"` {
		return strconv.Quote(s)
	}
	return s
}
