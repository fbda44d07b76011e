package proxy

import (
	"bytes"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"time"

	"featcache/internal/resp"
)

// INFO speaks for featcache too: tools pointed at featcache (redis-cli, exporters, redis-py's info()) see its
// section next to Redis's.
//
//	INFO featcache                      featcache's section alone, answered by featcache
//	INFO, INFO default, all, everything Redis's sections, then featcache's
//	INFO server featcache ...           the Redis sections asked for (Redis 7 takes several), then featcache's
//	INFO server, INFO memory ...        Redis's alone, relayed as they are
//
// Redis ignores a section name it does not know, so the command goes to Redis unchanged and featcache extends
// the bulk string it answers (hole holeInfo). Inside MULTI or a WATCH session INFO goes to Redis as it is.
// featcache's fields are named featcache_*, as Redis names the fields of a module's section after the module: a
// client that flattens every section into one map (redis-py's info()) finds Redis's fields unchanged.

// infoSection is the section name, and its header as Redis writes headers. INFO's text is lines ended by CRLF, and
// a blank line (infoSectionBreak) between sections: the lines are a bulk string's content, not RESP framing.
const (
	infoSection      = "featcache"
	infoHeader       = "# Featcache\r\n"
	infoSectionBreak = "\r\n"
)

// forwardInfo runs INFO: featcache's section alone is answered here; a section list that includes featcache's,
// explicitly or through default, all or everything, is forwarded with a hole that appends it to Redis's reply;
// any other goes to Redis as a plain forwarded command.
func (c *client) forwardInfo(cmd *resp.Command) {
	ours, theirs := infoWants(cmd.Args[1:])
	switch {
	case ours && !theirs:
		c.verbatimReply(c.srv.infoText())
	case ours:
		c.forward(cmd, nil) // INFO has no keys
		if n := len(c.seg.holes); n > 0 && c.seg.holes[n-1].kind == holeFrame {
			c.seg.holes[n-1].kind = holeInfo
		}
		// A forward that filled the segment ran it at once: INFO's reply went out as Redis's alone. Only a
		// pipeline of a megabyte of commands before it does that.
	default:
		c.forward(cmd, nil)
	}
}

// infoWants reports whether INFO with these section arguments shows featcache's section (ours) and whether it
// asks Redis for any (theirs).
func infoWants(sections [][]byte) (ours, theirs bool) {
	if len(sections) == 0 {
		return true, true
	}
	for _, s := range sections {
		switch strings.ToLower(string(s)) {
		case infoSection:
			ours = true
		case "default", "all", "everything":
			ours, theirs = true, true
		default:
			theirs = true
		}
	}
	return ours, theirs
}

// emitInfo appends a forwarded INFO's reply with featcache's section after Redis's: the bulk string's length
// grows by the section (and the blank line Redis puts between sections). An error, or a reply that is not a bulk
// string, is relayed as it is.
func (c *client) emitInfo(dst []byte, h *hole) []byte {
	if h.frame >= c.call.Len() {
		c.srv.stats.Errors.Add(1)
		return resp.AppendError(dst, upstreamErrorText(c.seg.doErr))
	}
	frame := c.call.Frame(h.frame)
	body, isNil, ok := resp.BulkPayload(frame)
	verbatim := false
	if !ok {
		// A RESP3 client's INFO: Redis answers a verbatim string.
		_, body, verbatim = resp.VerbatimPayload(frame)
	}
	if !ok && !verbatim || isNil {
		return append(dst, frame...)
	}
	text := body[:len(body):len(body)] // appending copies: the reply buffer is not written over
	if len(body) > 0 {
		text = append(text, infoSectionBreak...)
	}
	text = append(text, c.srv.infoText()...)
	if verbatim {
		return resp.AppendVerbatim(dst, "txt", string(text))
	}
	return resp.AppendBulk(dst, text)
}

// infoText renders featcache's INFO section: its header and one featcache_<name>:<value> line each, every line
// ended by CRLF, as Redis writes a section.
func (s *Server) infoText() []byte {
	st := s.Stats()
	ls := s.cache.Stats()
	res, _ := s.metrics.totals()
	var b bytes.Buffer
	b.WriteString(infoHeader)
	field := func(name string, v any) { fmt.Fprintf(&b, "featcache_%s:%v\r\n", name, v) }
	field("version", s.version)
	field("go_version", runtime.Version())
	field("uptime_in_seconds", int64(time.Since(s.metrics.started).Seconds()))
	field("connected_clients", s.clients.Load())
	field("commands_processed", st.Commands.Load())
	field("hits", st.Hits.Load())
	field("stale_hits", st.StaleHits.Load())
	field("stale_on_error", st.StaleOnError.Load())
	field("unverified_hits", st.Unverified.Load())
	field("misses", st.Misses.Load())
	field("bypass", st.Bypass.Load())
	served, fetched := res[resultHit]+res[resultStale], res[resultMiss]+res[resultError]
	ratio := 0.0
	if served+fetched > 0 {
		ratio = float64(served) / float64(served+fetched)
	}
	field("hit_ratio", strconv.FormatFloat(ratio, 'f', 4, 64))
	field("entries", ls.Entries)
	field("used_memory", ls.Bytes) // an estimate: entries times their mean size
	field("maxmemory", s.opt.Config.Local.MaxMemory)
	field("evictions", ls.Evictions)
	field("invalidated_keys", ls.Invalidations)
	field("flushes", ls.Flushes)
	field("errors", st.Errors.Load()+st.Refused.Load()+st.SnapshotErrors.Load())
	field("forwarded", st.Forwarded.Load())
	field("upstream_addr", s.up.Addr())
	field("upstream_up", boolInt(s.up.Healthy()))
	tracking := "off"
	if enabled, up := s.up.Tracking(); up {
		tracking = "up"
	} else if enabled {
		tracking = "down"
	}
	field("tracking", tracking)
	mode := "standalone"
	if s.clustered() {
		mode = "cluster"
	}
	field("upstream_mode", mode)
	ready, _ := s.readiness()
	field("ready", boolInt(ready))
	field("warm_running", boolInt(s.warmer.Stats().Running))
	field("hotkeys_tracked", s.hot.Len())
	clients, keys := s.ctrack.size()
	field("tracking_clients", clients)
	field("tracking_keys", keys)
	field("tracking_invalidations", s.ctrack.delivered.Load())
	return b.Bytes()
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
