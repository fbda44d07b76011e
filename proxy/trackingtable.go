package proxy

import (
	"bytes"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

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
// In front of a Redis Cluster each stream is a connection per master (Redis announces a write only on the master
// that ran it): the barrier PINGs every one of them, the loss of any master's connection flushes every tracking
// client, and the null invalidations of a FLUSHALL or FLUSHDB that featcache ran on every master go out as one
// (holdFlushes).
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
	// held counts the fan-outs of FLUSHALL or FLUSHDB over a cluster's masters in flight (holdFlushes): the null
	// invalidations the masters send meanwhile are one for the clients, sent when the last one ends (heldNull).
	held     int
	heldNull bool

	stream         *upstream.Keyspace // the keyspace stream; nil while no client tracks
	streamPrefixes []string           // what it covers
	streamUp       bool               // it has been up since it started: its next OnUp follows a gap

	streamMu sync.Mutex // serializes changes of the stream (ensureStream), which wait for a connection
}

// newClientTracking returns the server's CLIENT TRACKING state, with no client tracking.
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

// upstreamAddr is the address a keyspace stream tracks when it is current: the single node's (the primary's, which
// Sentinel may move), or "" in front of a Redis Cluster, whose stream follows the masters itself.
func (t *clientTracking) upstreamAddr() string {
	if t.srv.clustered() {
		return ""
	}
	return t.srv.up.Addr()
}

// ensureStream makes the keyspace stream cover what the tracking clients need, on the node featcache reads from
// (in front of a Redis Cluster, on every master: upstream.Keyspace):
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
	if old != nil && coversAll(t.streamPrefixes, need) && old.Addr() == t.upstreamAddr() {
		t.mu.Unlock()
		return
	}
	if old != nil && old.Addr() == t.upstreamAddr() {
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
func (t *clientTracking) startStream(prefixes []string) *upstream.Keyspace {
	var st *upstream.Keyspace
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
	var stop *upstream.Keyspace
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
		t.endWrites(c)
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
		if t.held > 0 {
			t.heldNull = true // sent once by releaseFlushes
		} else {
			t.flushLocked()
		}
		t.mu.Unlock()
	}
}

// holdFlushes starts a fan-out of FLUSHALL or FLUSHDB over a cluster's masters: the null invalidations that arrive
// until releaseFlushes are sent as one, then. Holding a null back is safe because one goes out before the write's
// reply: a client that read a key meanwhile still flushes it after the read.
func (t *clientTracking) holdFlushes() {
	t.mu.Lock()
	t.held++
	t.mu.Unlock()
}

// releaseFlushes ends what holdFlushes started, sending the null invalidation held back if any.
func (t *clientTracking) releaseFlushes() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.held--; t.held == 0 && t.heldNull {
		t.heldNull = false
		t.flushLocked()
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
	moved := up && t.stream != nil && t.stream.Addr() != t.upstreamAddr()
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
	if ps.hasSnapshots && t.snapshotKeysLocked(ps, mine) {
		return // a pointer moved: every client was flushed
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

// snapshotKeysLocked applies invalidated keys to the logical keys of snapshot policies, which clients read while
// featcache reads their physical keys (K:<version>): a physical key's change invalidates its logical key, and a
// pointer's change, which may make every logical key of its policy read another version, flushes every tracking
// client (it reports true then). t.mu is held.
func (t *clientTracking) snapshotKeysLocked(ps *policySet, keys [][]byte) (flushed bool) {
	for _, k := range keys {
		for _, ptr := range ps.pointers {
			if ptr != nil && bytes.Equal(k, ptr) {
				t.flushLocked()
				return true
			}
		}
		if i := bytes.LastIndexByte(k, ':'); i > 0 {
			if pol := ps.matcher.Match(k[:i]); pol != nil && pol.SnapshotPointer != "" {
				t.invalidateKeyLocked(k[:i])
			}
		}
	}
	return false
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

// endWrites ends c's NOLOOP writes in flight (trackWrite).
func (t *clientTracking) endWrites(c *client) {
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
