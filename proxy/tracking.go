package proxy

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"featcache/internal/commands"
	"featcache/internal/resp"
	"featcache/upstream"
)

// CLIENT TRACKING for featcache's own clients: a third tier of caching, in the application's memory, kept
// consistent with Redis by featcache as Redis keeps its own clients'.
//
// featcache keeps what Redis keeps for a client with tracking on: in the default mode, the keys the client read
// since (a table from key to the ids of the clients that read it, each key invalidated once and then forgotten until
// read again, bounded by limits.max_tracked_keys); in BCAST mode, the client's prefixes. The invalidations come
// from two streams, each key from exactly one of them:
//
//   - keys a caching policy covers, which featcache may answer from its own memory, from the tracking connection
//     of the policies (upstream.Watcher): the same stream that invalidates the local tier, so that no client is
//     ever left holding a value featcache served after the stream announced its change;
//   - every other key, which featcache reads from Redis, from a second tracking connection in BCAST mode
//     (upstream.Client.TrackKeyspace), open while some client has tracking on: over the whole keyspace while a
//     client tracks in the default mode, else over the BCAST clients' prefixes (ensureStream).
//
// A write through featcache waits, before its reply, for both streams to have delivered what Redis announced
// before it (a PING on each tracking connection, as the tier's barrier does): the invalidations of the write have
// then reached every tracking client's queue. A null invalidation (FLUSHALL, FLUSHDB, a SWAPDB featcache detects)
// and the loss or the return of either stream flush every tracking client, as Redis's clients flush when their
// connection drops.
//
// Invalidations reach a client through its push queue (pushQueue): a goroutine writes them between replies (under
// the client's write lock, as the pub/sub pump's frames are), and a client that leaves more than
// limits.max_output_bytes of them unread is disconnected.
type clientTracking struct {
	srv    *Server
	active atomic.Bool // some client has tracking on: writes wait for the streams (settleTracking)

	// delivered counts the invalidation messages queued for clients (INFO featcache).
	delivered atomic.Int64

	mu      sync.Mutex
	clients map[int64]*trackState // clients with tracking on, by id
	bcast   map[int64]*trackState // those in BCAST mode
	keys    map[string][]int64    // default mode: the clients that read each key since its last invalidation
	writing map[string][]int64    // keys NOLOOP clients are writing now, with the writers' ids (one per write)
	maxKeys int

	stream         *upstream.Tracker // the keyspace stream; nil while no client tracks
	streamPrefixes []string          // what it covers
	streamUp       bool              // it has been up since it started: its next OnUp follows a gap

	streamMu sync.Mutex // serializes changes of the stream (ensureStream), which wait for a connection
}

// trackState is one client's tracking. Its fields are guarded by clientTracking.mu, except caching, which only the
// client's goroutine reads and writes.
type trackState struct {
	c                            *client
	bcast, optin, optout, noloop bool
	redirID                      int64
	redir                        *client // the redirect target; nil without one, or once it left
	broken                       bool    // an invalidation found the redirect target gone
	prefixes                     []string
	caching                      bool // CLIENT CACHING yes|no, for the next command
}

func newClientTracking(s *Server) *clientTracking {
	return &clientTracking{
		srv:     s,
		clients: map[int64]*trackState{},
		bcast:   map[int64]*trackState{},
		keys:    map[string][]int64{},
		writing: map[string][]int64{},
		maxKeys: s.opt.Config.Limits.MaxTrackedKeys,
	}
}

// size returns how many clients have tracking on and how many keys the default mode remembers for them.
func (t *clientTracking) size() (clients, keys int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.clients), len(t.keys)
}

// trackView is what CLIENT LIST shows of a client's tracking: flags t, R and B, and redir (-1 without tracking).
type trackView struct {
	on, broken, bcast bool
	redir             int64
}

// viewOf returns what CLIENT LIST shows of the tracking of client id.
func (t *clientTracking) viewOf(id int64) trackView {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.clients[id]
	if st == nil {
		return trackView{redir: -1}
	}
	return trackView{on: true, broken: st.broken, bcast: st.bcast, redir: st.redirID}
}

// trackingSupported reports whether featcache can offer CLIENT TRACKING: a single node with tracking on, whose
// invalidations it receives. In front of a Redis Cluster, or without tracking (TTL-only), it is refused.
func (c *client) trackingSupported() bool {
	enabled, _ := c.srv.up.Tracking()
	return enabled && !c.srv.clustered()
}

// cmdClientTracking answers CLIENT TRACKING ON|OFF [REDIRECT id] [PREFIX p]... [BCAST] [OPTIN] [OPTOUT] [NOLOOP]
// with Redis 7.0's checks, in Redis's order, and its error texts.
func (c *client) cmdClientTracking(args [][]byte) {
	if !c.trackingSupported() {
		c.srv.stats.Refused.Add(1)
		c.errorReply("ERR 'client|tracking' is not supported by featcache: it would change a shared upstream connection")
		return
	}
	var (
		redirID                      int64
		redir                        *client
		bcast, optin, optout, noloop bool
		prefixes                     []string
	)
	for j := 3; j < len(args); j++ {
		more := len(args) - 1 - j
		switch {
		case bytes.EqualFold(args[j], []byte("redirect")) && more > 0:
			j++
			if redirID != 0 {
				c.errorReply("ERR A client can only redirect to a single other client")
				return
			}
			id, ok := resp.ParseInt(args[j])
			if !ok {
				c.errorReply("ERR value is not an integer or out of range")
				return
			}
			redirID = id
			if redir = c.srv.clientByID(id); redir == nil {
				c.errorReply("ERR The client ID you want redirect to does not exist")
				return
			}
		case bytes.EqualFold(args[j], []byte("bcast")):
			bcast = true
		case bytes.EqualFold(args[j], []byte("optin")):
			optin = true
		case bytes.EqualFold(args[j], []byte("optout")):
			optout = true
		case bytes.EqualFold(args[j], []byte("noloop")):
			noloop = true
		case bytes.EqualFold(args[j], []byte("prefix")) && more > 0:
			j++
			prefixes = append(prefixes, string(args[j]))
		default:
			c.errorReply("ERR syntax error")
			return
		}
	}
	switch {
	case bytes.EqualFold(args[2], []byte("off")):
		c.disableTracking()
		c.simpleReply("OK")
		return
	case !bytes.EqualFold(args[2], []byte("on")):
		c.errorReply("ERR syntax error")
		return
	}
	st := c.trk
	switch {
	case !bcast && len(prefixes) > 0:
		c.errorReply("ERR PREFIX option requires BCAST mode to be enabled")
		return
	case st != nil && st.bcast != bcast:
		c.errorReply("ERR You can't switch BCAST mode on/off before disabling tracking for this client, and then " +
			"re-enabling it with a different mode.")
		return
	case bcast && (optin || optout):
		c.errorReply("ERR OPTIN and OPTOUT are not compatible with BCAST")
		return
	case optin && optout:
		c.errorReply("ERR You can't specify both OPTIN mode and OPTOUT mode")
		return
	case st != nil && (optin && st.optout || optout && st.optin):
		c.errorReply("ERR You can't switch OPTIN/OPTOUT mode before disabling tracking for this client, and then " +
			"re-enabling it with a different mode.")
		return
	}
	if bcast {
		if msg := prefixCollision(st, prefixes); msg != "" {
			c.errorReply(msg)
			return
		}
	}
	c.srv.ctrack.enable(c, trackState{bcast: bcast, optin: optin, optout: optout, noloop: noloop,
		redirID: redirID, redir: redir, prefixes: prefixes})
	c.simpleReply("OK")
}

// prefixCollision returns Redis's error for BCAST prefixes that overlap (one is a prefix of the other) with the
// client's current ones or with each other, or "".
func prefixCollision(st *trackState, prefixes []string) string {
	for i, p := range prefixes {
		if st != nil {
			for _, old := range st.prefixes {
				if strings.HasPrefix(old, p) || strings.HasPrefix(p, old) {
					return "ERR Prefix '" + p + "' overlaps with an existing prefix '" + old + "'. " +
						"Prefixes for a single client must not overlap."
				}
			}
		}
		for _, q := range prefixes[i+1:] {
			if strings.HasPrefix(q, p) || strings.HasPrefix(p, q) {
				return "ERR Prefix '" + p + "' overlaps with another provided prefix '" + q + "'. " +
					"Prefixes for a single client must not overlap."
			}
		}
	}
	return ""
}

// cmdClientCaching answers CLIENT CACHING YES|NO: in OPTIN mode YES tracks the keys of the next command, in OPTOUT
// mode NO leaves them untracked.
func (c *client) cmdClientCaching(args [][]byte) {
	st := c.trk
	if st == nil {
		c.errorReply("ERR CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or " +
			"OPTOUT mode enabled")
		return
	}
	switch {
	case bytes.EqualFold(args[2], []byte("yes")):
		if !st.optin {
			c.errorReply("ERR CLIENT CACHING YES is only valid when tracking is enabled in OPTIN mode.")
			return
		}
	case bytes.EqualFold(args[2], []byte("no")):
		if !st.optout {
			c.errorReply("ERR CLIENT CACHING NO is only valid when tracking is enabled in OPTOUT mode.")
			return
		}
	default:
		c.errorReply("ERR syntax error")
		return
	}
	st.caching = true
	c.simpleReply("OK")
}

// cmdClientGetredir answers the client's redirect id: 0 without one, -1 without tracking.
func (c *client) cmdClientGetredir(args [][]byte) {
	if c.trk == nil {
		c.intReply(-1)
		return
	}
	c.srv.ctrack.mu.Lock()
	id := c.trk.redirID
	c.srv.ctrack.mu.Unlock()
	c.intReply(id)
}

// cmdClientTrackinginfo answers as Redis 7.0 does: flags, redirect and prefixes.
func (c *client) cmdClientTrackinginfo(args [][]byte) {
	st := c.trk
	if st == nil {
		c.rawReply(trackingOffReply)
		return
	}
	t := c.srv.ctrack
	t.mu.Lock()
	flags := []string{"on"}
	if st.bcast {
		flags = append(flags, "bcast")
	}
	if st.optin {
		flags = append(flags, "optin")
		if st.caching {
			flags = append(flags, "caching-yes")
		}
	}
	if st.optout {
		flags = append(flags, "optout")
		if st.caching {
			flags = append(flags, "caching-no")
		}
	}
	if st.noloop {
		flags = append(flags, "noloop")
	}
	if st.broken {
		flags = append(flags, "broken_redirect")
	}
	redir, prefixes := st.redirID, slices.Clone(st.prefixes)
	t.mu.Unlock()
	buf := c.replies.buf()
	b := resp.AppendBulkString(resp.AppendArray(*buf, 6), "flags")
	b = resp.AppendArray(b, len(flags))
	for _, f := range flags {
		b = resp.AppendBulkString(b, f)
	}
	b = resp.AppendInt(resp.AppendBulkString(b, "redirect"), redir)
	b = resp.AppendArray(resp.AppendBulkString(b, "prefixes"), len(prefixes))
	for _, p := range prefixes {
		b = resp.AppendBulkString(b, p)
	}
	*buf = b
}

// trackingOffReply is CLIENT TRACKINGINFO's reply for a client without tracking: flags [off], redirect -1,
// prefixes [].
var trackingOffReply = func() []byte {
	b := resp.AppendBulkString(resp.AppendArray(nil, 6), "flags")
	b = resp.AppendBulkString(resp.AppendArray(b, 1), "off")
	b = resp.AppendInt(resp.AppendBulkString(b, "redirect"), -1)
	return resp.AppendArray(resp.AppendBulkString(b, "prefixes"), 0)
}()

// disableTracking turns the client's tracking off (CLIENT TRACKING OFF, RESET).
func (c *client) disableTracking() {
	if c.trk != nil {
		c.srv.ctrack.disable(c)
	}
}

// trackCommand remembers the keys a read-only command reads, for a client tracking in the default mode, as Redis
// remembers them: unless OPTIN without CLIENT CACHING YES, or OPTOUT after CLIENT CACHING NO. It runs before the
// command, so that an invalidation that arrives while the command is answered is not missed.
func (c *client) trackCommand(args [][]byte, tc *command) {
	st := c.trk
	if st.bcast || tc == nil || tc.info == nil || !tc.info.Flags.Has(commands.FlagReadonly) ||
		tc.info.Flags.Has(commands.FlagPubSub) || !tc.info.ArityOK(len(args)) || st.optin && !st.caching ||
		st.optout && st.caching {
		return
	}
	keys, _ := tc.info.Keys(args, c.trkKeys[:0])
	c.trkKeys = keys[:0]
	if len(keys) > 0 {
		c.srv.ctrack.remember(c.id, keys)
	}
}

// trackCommandDone ends the effect of CLIENT CACHING once the command after it has run; inside MULTI it lasts until
// EXEC, and CLIENT commands keep it, as in Redis.
func (c *client) trackCommandDone(tc *command) {
	if st := c.trk; st != nil && st.caching && !c.tx.multi && (tc == nil || !strings.HasPrefix(tc.name, "client")) {
		st.caching = false
	}
}

// trackWrite records, before a NOLOOP client's write goes out, the keys it writes: the invalidations of those keys
// that arrive until the write has settled are not sent to the writer (see settleTracking).
func (c *client) trackWrite(args [][]byte, tc *command) {
	if st := c.trk; st == nil || !st.noloop || tc.info == nil {
		return
	}
	keys, _ := tc.info.Keys(args, nil)
	if len(keys) == 0 {
		return
	}
	t := c.srv.ctrack
	t.mu.Lock()
	for _, k := range keys {
		key := string(k)
		t.writing[key] = append(t.writing[key], c.id)
		c.trkWriting = append(c.trkWriting, key)
	}
	t.mu.Unlock()
}

// enable turns tracking on for c with the options of want, or changes them (CLIENT TRACKING ON again): the
// redirect and the flags are replaced, BCAST prefixes are added. It returns once the keyspace stream covers what
// the client may be told of (ensureStream), so that a key read right after the reply is covered.
func (t *clientTracking) enable(c *client, want trackState) {
	t.mu.Lock()
	st := c.trk
	if st == nil {
		st = &trackState{c: c}
		t.clients[c.id] = st
	}
	st.bcast, st.optin, st.optout, st.noloop = want.bcast, want.optin, want.optout, want.noloop
	st.redirID, st.redir, st.broken = want.redirID, want.redir, false
	if want.redir != nil {
		want.redir.targeted.Store(true)
	}
	c.targeted.Store(true) // a RESP3 client gets its invalidations itself: left stops its queue
	if st.bcast {
		if len(want.prefixes) == 0 && !slices.Contains(st.prefixes, "") {
			want.prefixes = []string{""}
		}
		st.prefixes = append(st.prefixes, want.prefixes...)
		slices.Sort(st.prefixes)
		t.bcast[c.id] = st
	}
	c.trk = st
	t.active.Store(true)
	t.mu.Unlock()
	t.ensureStream()
}

// neededLocked returns the prefixes the keyspace stream must cover for the clients tracking now, sorted and
// without overlaps: every key ("") while a client tracks in the default mode (it may read any key), else the
// BCAST clients' prefixes. t.mu is held.
func (t *clientTracking) neededLocked() []string {
	if len(t.clients) > len(t.bcast) {
		return []string{""}
	}
	var all []string
	for _, st := range t.bcast {
		all = append(all, st.prefixes...)
	}
	return minimalPrefixes(all)
}

// minimalPrefixes returns the prefixes of ps that no other one of ps starts, sorted: they cover the same keys
// without overlapping, as Redis requires of one connection's BCAST prefixes.
func minimalPrefixes(ps []string) []string {
	ps = slices.Clone(ps)
	slices.Sort(ps)
	ps = slices.Compact(ps)
	out := ps[:0]
	for _, p := range ps {
		if len(out) == 0 || !strings.HasPrefix(p, out[len(out)-1]) {
			out = append(out, p)
		}
	}
	return out
}

// coversAll reports whether the prefixes have cover every key under the prefixes need.
func coversAll(have, need []string) bool {
	for _, n := range need {
		if !slices.ContainsFunc(have, func(h string) bool { return strings.HasPrefix(n, h) }) {
			return false
		}
	}
	return true
}

// ensureStream makes the keyspace stream cover what the tracking clients need, on the node featcache reads from:
// it starts one with the first tracking client and, when a client needs more (or the primary moved), makes a new
// one and waits (up to upstream.timeout) for it to be established before it closes the old one, both delivering
// meanwhile; the last client to leave closes it (disable). Prefixes are never narrowed while clients track.
func (t *clientTracking) ensureStream() {
	t.streamMu.Lock()
	defer t.streamMu.Unlock()
	t.mu.Lock()
	if len(t.clients) == 0 {
		t.mu.Unlock()
		return
	}
	need := t.neededLocked()
	old := t.stream
	if old != nil && coversAll(t.streamPrefixes, need) && old.Addr() == t.srv.up.Addr() {
		t.mu.Unlock()
		return
	}
	if old != nil && old.Addr() == t.srv.up.Addr() {
		need = minimalPrefixes(append(need, t.streamPrefixes...))
	}
	next := t.startStream(need)
	if old == nil {
		t.stream, t.streamPrefixes, t.streamUp = next, need, false
	}
	t.mu.Unlock()
	if next == nil {
		return
	}
	deadline := time.NewTimer(t.srv.up.Timeout())
	tick := time.NewTicker(time.Millisecond)
wait:
	for !next.Up() {
		select {
		case <-deadline.C:
			break wait
		case <-tick.C:
		}
	}
	deadline.Stop()
	tick.Stop()
	t.mu.Lock()
	t.stream, t.streamPrefixes = next, need
	// A stream not up yet comes up later: its OnUp then flushes the tracking clients, who missed what it had not
	// announced.
	t.streamUp = old != nil || !next.Up()
	t.mu.Unlock()
	if old != nil {
		old.Close()
	}
}

// startStream starts a keyspace stream over prefixes; its OnUp and OnLost act only while it is t.stream, its
// invalidations are delivered from the start. t.mu is held. A stream that cannot start (the primary is not known
// yet) is nil: the keys outside the policies are not covered until the next ensureStream.
func (t *clientTracking) startStream(prefixes []string) *upstream.Tracker {
	var st *upstream.Tracker
	ready := make(chan struct{})
	stream, err := t.srv.up.TrackKeyspace(upstream.TrackerOptions{
		Prefixes:     prefixes,
		OnInvalidate: func(keys [][]byte) { <-ready; t.invalidate(keys, false) },
		OnFlush:      func() {}, // the policies' stream reports the same flush (and SWAPDB)
		OnUp: func(string) {
			<-ready
			t.mu.Lock()
			defer t.mu.Unlock()
			if t.stream != st {
				return
			}
			if t.streamUp {
				t.flushLocked() // what was written while it was down was not announced
			}
			t.streamUp = true
		},
		OnLost: func(error) {
			<-ready
			t.mu.Lock()
			defer t.mu.Unlock()
			if t.stream == st {
				t.flushLocked()
			}
		},
		Logger: t.srv.log,
	})
	if err != nil {
		t.srv.log.Warn("client tracking: keyspace stream not started", "err", err)
		close(ready)
		return nil
	}
	st = stream
	close(ready)
	return stream
}

// disable turns c's tracking off. Its entries in the key table stay, as in Redis (they are skipped while it is
// off, and invalidated if it turns tracking on again); the last tracking client to leave stops the keyspace
// stream. The table stays bounded by limits.max_tracked_keys.
func (t *clientTracking) disable(c *client) {
	t.mu.Lock()
	delete(t.clients, c.id)
	delete(t.bcast, c.id)
	c.trk = nil
	last := len(t.clients) == 0
	if last {
		t.active.Store(false)
	}
	t.mu.Unlock()
	if !last {
		return
	}
	t.streamMu.Lock()
	defer t.streamMu.Unlock()
	t.mu.Lock()
	var stop *upstream.Tracker
	if len(t.clients) == 0 {
		stop, t.stream, t.streamPrefixes = t.stream, nil, nil
	}
	t.mu.Unlock()
	if stop != nil {
		stop.Close()
	}
}

// left forgets a client that closed: its tracking ends, and the clients that redirect to it find their redirect
// broken at their next invalidation.
func (t *clientTracking) left(c *client) {
	if c.trk != nil {
		t.disable(c)
	}
	if len(c.trkWriting) > 0 {
		t.mu.Lock()
		t.endWritesLocked(c)
		t.mu.Unlock()
	}
	if !c.targeted.Load() {
		return // no client redirects to it: no push queue either
	}
	t.mu.Lock()
	if c.pushes != nil {
		c.pushes.stop()
	}
	for _, st := range t.clients {
		if st.redir == c {
			st.redir = nil
		}
	}
	t.mu.Unlock()
}

// remember records that client id read keys (default mode). Past maxKeys, keys picked at random are invalidated
// for their clients and forgotten, as Redis does past tracking-table-max-keys.
func (t *clientTracking) remember(id int64, keys [][]byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, k := range keys {
		ids, ok := t.keys[string(k)]
		if !slices.Contains(ids, id) {
			if !ok {
				ids = make([]int64, 0, 1)
			}
			t.keys[string(k)] = append(ids, id)
		}
	}
	for len(t.keys) > t.maxKeys {
		for k := range t.keys { // map order: a key picked at random
			t.invalidateKeyLocked([]byte(k))
			break
		}
	}
}

// Invalidated receives the pushes of the policies' tracking connection (upstream.Watcher).
func (t *clientTracking) Invalidated(keys [][]byte) { t.invalidate(keys, true) }

// Flushed receives the policies' stream's null invalidations and the SWAPDBs it detects (upstream.Watcher).
func (t *clientTracking) Flushed() {
	if t.active.Load() {
		t.mu.Lock()
		t.flushLocked()
		t.mu.Unlock()
	}
}

// Tracking receives the policies' stream going down and coming back (upstream.Watcher): either way what the
// clients hold of the keys it covers may be stale. When it comes back on another server (Sentinel followed a
// failover), the keyspace stream moves there too.
func (t *clientTracking) Tracking(up bool) {
	if !t.active.Load() {
		return
	}
	t.mu.Lock()
	t.flushLocked()
	moved := up && t.stream != nil && t.stream.Addr() != t.srv.up.Addr()
	t.mu.Unlock()
	if moved {
		go t.ensureStream() // not on the upstream's callback, which holds its lock: it waits for the new stream
	}
}

// invalidate sends the invalidations of one push to the clients that track its keys: from the policies' stream
// (main) only the keys a caching policy covers, from the keyspace stream only the others.
func (t *clientTracking) invalidate(keys [][]byte, main bool) {
	if !t.active.Load() {
		return
	}
	ps := t.srv.policies.Load()
	t.mu.Lock()
	defer t.mu.Unlock()
	mine := keys[:0:0]
	for _, k := range keys {
		pol := ps.matcher.Match(k)
		if (pol != nil && pol.Cache) == main {
			mine = append(mine, k)
		}
	}
	for _, k := range mine {
		t.invalidateKeyLocked(k)
	}
	if len(t.bcast) == 0 || len(mine) == 0 {
		return
	}
	var matched [][]byte
	for _, st := range t.bcast {
		for _, p := range st.prefixes {
			matched = matched[:0]
			for _, k := range mine {
				if bytes.HasPrefix(k, []byte(p)) && !(st.noloop && t.isWriting(k, st.c.id)) {
					matched = append(matched, k)
				}
			}
			if len(matched) > 0 {
				t.deliver(st, matched)
			}
		}
	}
}

// invalidateKeyLocked sends the invalidation of key to the default-mode clients that read it, one message per key
// as Redis sends them, and forgets it.
func (t *clientTracking) invalidateKeyLocked(key []byte) {
	ids, ok := t.keys[string(key)]
	if !ok {
		return
	}
	delete(t.keys, string(key))
	one := [][]byte{key}
	for _, id := range ids {
		st := t.clients[id]
		if st == nil || st.bcast || st.noloop && t.isWriting(key, id) {
			continue
		}
		t.deliver(st, one)
	}
}

func (t *clientTracking) isWriting(key []byte, id int64) bool {
	return slices.Contains(t.writing[string(key)], id)
}

// flushLocked sends the null invalidation to every tracking client and empties the key table, as Redis does on
// FLUSHALL and FLUSHDB.
func (t *clientTracking) flushLocked() {
	for _, st := range t.clients {
		t.deliver(st, nil)
	}
	clear(t.keys)
}

// settleTracking waits, after a write through featcache and before its reply, until both streams have delivered
// what Redis announced before it, and ends the write of a NOLOOP client (trackWrite). A stream that does not
// confirm within upstream.timeout is lost: its loss flushes the tracking clients. Redis announces nothing for
// SWAPDB: featcache sends the null invalidation for it.
func (c *client) settleTracking(tc *command) {
	t := c.srv.ctrack
	if tc.name == "swapdb" {
		t.Flushed()
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.srv.up.Timeout())
	defer cancel()
	t.mu.Lock()
	stream := t.stream
	t.mu.Unlock()
	done := make(chan struct{})
	if stream != nil {
		go func() {
			stream.Barrier(ctx)
			close(done)
		}()
	} else {
		close(done)
	}
	c.srv.up.Barrier(ctx)
	<-done
	if len(c.trkWriting) == 0 {
		return
	}
	t.mu.Lock()
	t.endWritesLocked(c)
	t.mu.Unlock()
}

// endWritesLocked ends c's NOLOOP writes in flight (trackWrite). t.mu is held.
func (t *clientTracking) endWritesLocked(c *client) {
	for _, k := range c.trkWriting {
		ids := t.writing[k]
		if i := slices.Index(ids, c.id); i >= 0 {
			ids = slices.Delete(ids, i, i+1)
		}
		if len(ids) == 0 {
			delete(t.writing, k)
		} else {
			t.writing[k] = ids
		}
	}
	c.trkWriting = c.trkWriting[:0]
}

// The messages of the RESP2 redirect, Pub/Sub messages on __redis__:invalidate, and the head of RESP3's push.
var (
	invalidateMessage = resp.AppendBulkString(resp.AppendBulkString(resp.AppendArray(nil, 3), "message"),
		"__redis__:invalidate")
	invalidateNull = resp.AppendNullBulk(append([]byte(nil), invalidateMessage...))
	invalidatePush = resp.AppendBulkString(append([]byte(nil), ">2\r\n"...), "invalidate")
)

// deliver queues an invalidation of keys (nil: the null invalidation) for st's client on the connection Redis
// would send it on, in the form Redis would: to the redirect target if there is one, else to the client itself; a
// RESP3 connection gets the push ">2 invalidate keys", a RESP2 redirect target in Pub/Sub mode the message
// "message __redis__:invalidate keys", any other RESP2 connection nothing. A null invalidation is encoded in the
// tracking client's protocol, the frame around it in the target's, as Redis does. A redirect target that left
// makes the redirect broken, and a RESP3 tracking client is told so (tracking-redir-broken). t.mu is held.
func (t *clientTracking) deliver(st *trackState, keys [][]byte) {
	target := st.c
	if st.redirID != 0 {
		target = st.redir
		if target != nil && target.gone.Load() {
			st.redir, target = nil, nil
		}
		if target == nil {
			st.broken = true
			if protoOf(st.c) == 3 {
				frame := resp.AppendBulkString(append([]byte(nil), ">2\r\n"...), "tracking-redir-broken")
				st.c.push(resp.AppendInt(frame, st.redirID))
			}
			return
		}
	}
	var frame []byte
	switch {
	case protoOf(target) == 3:
		frame = append(frame, invalidatePush...)
	case st.redirID != 0 && target.subscribed():
		frame = append(frame, invalidateMessage...)
	default:
		return // RESP2 has no pushes outside Pub/Sub mode
	}
	switch {
	case keys != nil:
		frame = resp.AppendArray(frame, len(keys))
		for _, k := range keys {
			frame = resp.AppendBulk(frame, k)
		}
	case protoOf(st.c) == 3:
		frame = append(frame, "_\r\n"...)
	default:
		frame = resp.AppendNullBulk(frame)
	}
	t.delivered.Add(1)
	target.push(frame)
}

// protoOf is the protocol c speaks: 2 until RESP3 is offered to clients.
func protoOf(c *client) int { return 2 }

// subscribed reports whether the client is in Pub/Sub mode (Redis's CLIENT_PUBSUB): subscribed to a channel, a
// pattern or a shard channel.
func (c *client) subscribed() bool {
	c.info.mu.Lock()
	defer c.info.mu.Unlock()
	return !c.info.monitor && c.info.sub+c.info.psub+c.info.ssub > 0
}

// pushQueue holds the invalidations waiting to be written to one client; a goroutine of its own writes them, so
// that a client that does not read holds up neither the tracking streams nor the others. The bytes it holds are
// drawn from limits.max_clients_memory, as replies are.
type pushQueue struct {
	c       *client
	mu      sync.Mutex
	buf     []byte
	stopped bool
	kick    chan struct{}
	done    chan struct{}
}

// push queues frame for the client. Past limits.max_output_bytes unread, or when limits.max_clients_memory has
// no room for it, the client is disconnected, as Redis disconnects a client over its output buffer limit.
func (c *client) push(frame []byte) {
	q := c.pushes
	if q == nil {
		q = &pushQueue{c: c, kick: make(chan struct{}, 1), done: make(chan struct{})}
		c.pushes = q
		go q.run()
	}
	q.mu.Lock()
	if q.stopped {
		q.mu.Unlock()
		return
	}
	over := int64(len(q.buf)+len(frame)) > c.srv.maxOutput
	if over || !c.srv.budget.take(int64(len(frame))) {
		q.mu.Unlock()
		reason := "invalidations left unread past limits.max_output_bytes"
		if over {
			c.srv.stats.OutputLimits.Add(1)
		} else {
			c.srv.stats.MemoryLimits.Add(1)
			reason = "invalidations past limits.max_clients_memory"
		}
		c.srv.log.Info("client disconnected", "client", c.id, "reason", reason)
		closeRaw(c.nc)
		return
	}
	q.buf = append(q.buf, frame...)
	q.mu.Unlock()
	select {
	case q.kick <- struct{}{}:
	default:
	}
}

// run writes what is queued, between the client's replies (send holds the client's write lock), until the queue
// stops or the client is gone.
func (q *pushQueue) run() {
	var spare []byte
	for {
		select {
		case <-q.done:
			return
		case <-q.kick:
		}
		q.mu.Lock()
		out := q.buf
		q.buf = spare[:0]
		q.mu.Unlock()
		ok := q.c.send(out)
		q.c.srv.budget.give(int64(len(out)))
		if !ok {
			return
		}
		if cap(out) <= retainBytes {
			spare = out
		} else {
			spare = nil
		}
	}
}

// stop ends the queue when its client has gone: what it still holds is dropped and given back to the budget.
func (q *pushQueue) stop() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.stopped {
		return
	}
	q.stopped = true
	q.c.srv.budget.give(int64(len(q.buf)))
	q.buf = nil
	close(q.done)
}
