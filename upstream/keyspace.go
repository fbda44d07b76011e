package upstream

import (
	"context"
	"errors"
	"maps"
	"slices"
	"sync"
)

// ErrNoKeyspaceTracking means a keyspace tracker cannot be started: the upstream's address is not known yet
// (Sentinel has not named the primary, or no address has answered whether it is a Redis Cluster).
var ErrNoKeyspaceTracking = errors.New("upstream: keyspace tracking needs an upstream whose address is known")

// Watcher is told what the tracking connections of the policies see, after the local tier has applied it: the
// single node's, or each master's of a Redis Cluster. Its methods run on the tracking connections' goroutines,
// concurrently with each other, and must be quick.
type Watcher interface {
	// Invalidated receives the keys of an invalidation push; the slices are only valid during the call.
	Invalidated(keys [][]byte)
	// Flushed is called when every key may have changed: a null invalidation (FLUSHALL, FLUSHDB; in front of a
	// cluster, of any master) or a SWAPDB.
	Flushed()
	// Tracking is called when tracking is established (up) or lost (!up): invalidations may have been missed
	// in between. In front of a cluster it is called for each master's tracking connection.
	Tracking(up bool)
}

// watcher is the Client's Watcher, held behind a pointer so that the tracker callbacks load it without a lock.
type watcher struct{ w Watcher }

// SetWatcher makes w see what the tracking connections of the policies see (nil stops it).
func (c *Client) SetWatcher(w Watcher) {
	if w == nil {
		c.watcher.Store(nil)
		return
	}
	c.watcher.Store(&watcher{w})
}

func (c *Client) watching() Watcher {
	if p := c.watcher.Load(); p != nil {
		return p.w
	}
	return nil
}

// Keyspace is a second tracking stream, started by TrackKeyspace, whose pushes go to its own callbacks rather
// than to the local tier: one tracking connection to the single node, or one to each master of a Redis Cluster,
// which follows the masters as the slot map changes. Its methods are safe for concurrent use.
type Keyspace struct {
	opt TrackerOptions
	one *Tracker // in front of a single node

	// In front of a cluster: a tracker per master, started and stopped with the slot map (Cluster.installLocked
	// and apply, under the Cluster's lock, which is taken before mu).
	cl     *Cluster
	mu     sync.Mutex
	per    map[*clusterNode]*Tracker
	up     map[*Tracker]bool // the trackers of per whose session is established
	closed bool
}

// TrackKeyspace starts a keyspace stream in BCAST mode over opt.Prefixes (none or [""]: every key), whose pushes
// go to opt's callbacks rather than to the local tier: featcache's clients with CLIENT TRACKING on may read keys no
// policy caches, which the tracking connections of the policies do not cover. opt.Addr, credentials, TLS, Timeout
// and CheckInterval are the Client's own. In front of a Redis Cluster the stream has a connection on every master
// (see Keyspace): OnInvalidate and OnFlush receive what any of them sends, OnLost is called when any of them is
// lost, and OnUp once every one of them is established (again). It fails with ErrNoKeyspaceTracking while the
// address is not known.
func (c *Client) TrackKeyspace(opt TrackerOptions) (*Keyspace, error) {
	if opt.Logger == nil {
		opt.Logger = c.log
	}
	opt.Username, opt.Password, opt.TLS = c.opt.Username, c.opt.Password, c.opt.TLS
	opt.Timeout = c.opt.Timeout
	opt.CheckInterval = c.opt.HealthInterval
	if cl := c.cluster.Load(); cl != nil {
		return cl.trackKeyspace(opt), nil
	}
	if c.Pool.Addr() == "" {
		return nil, ErrNoKeyspaceTracking
	}
	opt.Addr = c.Pool.Addr()
	return &Keyspace{opt: opt, one: StartTracker(opt)}, nil
}

// Addr returns the node the stream tracks; "" in front of a Redis Cluster, whose masters it follows itself.
func (ks *Keyspace) Addr() string {
	if ks.one != nil {
		return ks.one.Addr()
	}
	return ""
}

// Up reports whether the stream is established: on the single node, or on every master of a cluster.
func (ks *Keyspace) Up() bool {
	if ks.one != nil {
		return ks.one.Up()
	}
	ks.mu.Lock()
	defer ks.mu.Unlock()
	return len(ks.per) > 0 && len(ks.up) == len(ks.per)
}

// Barrier is Tracker.Barrier on every connection of the stream, in parallel; it fails when any of them does.
func (ks *Keyspace) Barrier(ctx context.Context) error {
	if ks.one != nil {
		return ks.one.Barrier(ctx)
	}
	ks.mu.Lock()
	ts := slices.Collect(maps.Values(ks.per))
	ks.mu.Unlock()
	return barrierAll(ctx, ts)
}

// Close stops the stream and closes its connections; its callbacks are not called after it returns.
func (ks *Keyspace) Close() {
	if ks.one != nil {
		ks.one.Close()
		return
	}
	cl := ks.cl
	cl.mu.Lock()
	if i := slices.Index(cl.keyspaces, ks); i >= 0 {
		cl.keyspaces = slices.Delete(cl.keyspaces, i, i+1)
	}
	ks.mu.Lock()
	ks.closed = true
	ts := slices.Collect(maps.Values(ks.per))
	clear(ks.per)
	clear(ks.up)
	ks.mu.Unlock()
	cl.mu.Unlock()
	for _, t := range ts {
		t.Close()
	}
}

// trackKeyspace starts a keyspace stream on every master of the cluster (TrackKeyspace).
func (cl *Cluster) trackKeyspace(opt TrackerOptions) *Keyspace {
	ks := &Keyspace{opt: opt, cl: cl, per: map[*clusterNode]*Tracker{}, up: map[*Tracker]bool{}}
	cl.mu.Lock()
	defer cl.mu.Unlock()
	cl.keyspaces = append(cl.keyspaces, ks)
	ks.startLocked(cl.smap.Load())
	return ks
}

// startLocked starts the stream on every master of m that has no connection of it. The Cluster's lock is held.
func (ks *Keyspace) startLocked(m *slotMap) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if ks.closed {
		return
	}
	for _, nd := range m.masters {
		if ks.per[nd] != nil {
			continue
		}
		opt := ks.opt
		opt.Addr = nd.addr
		ks.per[nd] = startOwned(opt,
			func(t *Tracker, runID string) { ks.trackerUp(nd, t, runID) },
			func(t *Tracker, err error) { ks.trackerLost(nd, t, err) })
	}
}

// stopLocked detaches the stream's connections to nodes that are not masters in m and returns them, for the
// caller to close once it has released the Cluster's lock, which it holds.
func (ks *Keyspace) stopLocked(m *slotMap) []*Tracker {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	var out []*Tracker
	for nd, t := range ks.per {
		if !slices.Contains(m.masters, nd) {
			out = append(out, t)
			delete(ks.per, nd)
			delete(ks.up, t)
		}
	}
	return out
}

// currentLocked reports whether t is the stream's connection to nd now. ks.mu is held.
func (ks *Keyspace) currentLocked(nd *clusterNode, t *Tracker) bool {
	return !ks.closed && ks.per[nd] == t
}

func (ks *Keyspace) trackerUp(nd *clusterNode, t *Tracker, runID string) {
	ks.mu.Lock()
	if !ks.currentLocked(nd, t) {
		ks.mu.Unlock()
		return
	}
	ks.up[t] = true
	all := len(ks.up) == len(ks.per)
	ks.mu.Unlock()
	if all && ks.opt.OnUp != nil {
		ks.opt.OnUp(runID)
	}
}

func (ks *Keyspace) trackerLost(nd *clusterNode, t *Tracker, err error) {
	ks.mu.Lock()
	if !ks.currentLocked(nd, t) {
		ks.mu.Unlock()
		return
	}
	delete(ks.up, t)
	ks.mu.Unlock()
	if ks.opt.OnLost != nil {
		ks.opt.OnLost(err)
	}
}

// Addr returns the node the tracker tracks.
func (t *Tracker) Addr() string { return t.opt.Addr }
