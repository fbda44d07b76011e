package upstream

import "errors"

// ErrNoKeyspaceTracking means a keyspace tracker cannot be started: the upstream is a Redis Cluster (which has a
// tracking connection per master), or its address is not known yet (Sentinel has not named the primary).
var ErrNoKeyspaceTracking = errors.New("upstream: keyspace tracking needs a single node whose address is known")

// Watcher is told what the tracking connection of a single node sees, after the local tier has applied it. Its
// methods run on the tracking connection's goroutines, concurrently with each other, and must be quick.
type Watcher interface {
	// Invalidated receives the keys of an invalidation push; the slices are only valid during the call.
	Invalidated(keys [][]byte)
	// Flushed is called when every key may have changed: a null invalidation (FLUSHALL, FLUSHDB) or a SWAPDB.
	Flushed()
	// Tracking is called when tracking is established (up) or lost (!up): invalidations may have been missed
	// in between.
	Tracking(up bool)
}

// watcher is the Client's Watcher, held behind a pointer so that the tracker callbacks load it without a lock.
type watcher struct{ w Watcher }

// SetWatcher makes w see what the tracking connection of a single node sees (nil stops it). In front of a Redis
// Cluster it sees nothing.
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

// TrackKeyspace starts a second tracking connection to the single node, in BCAST mode over opt.Prefixes (none or
// [""]: every key), whose pushes go to opt's callbacks rather than to the local tier: featcache's clients with
// CLIENT TRACKING on may read keys no policy caches, which the tracking connection of the policies does not
// cover. opt.Addr, credentials, TLS, Timeout and CheckInterval are the Client's own. It fails with
// ErrNoKeyspaceTracking in front of a Redis Cluster, or while the address is not known.
func (c *Client) TrackKeyspace(opt TrackerOptions) (*Tracker, error) {
	if c.cluster.Load() != nil || c.Pool.Addr() == "" {
		return nil, ErrNoKeyspaceTracking
	}
	opt.Addr = c.Pool.Addr()
	opt.Username, opt.Password, opt.TLS = c.opt.Username, c.opt.Password, c.opt.TLS
	opt.Timeout = c.opt.Timeout
	opt.CheckInterval = c.opt.HealthInterval
	if opt.Logger == nil {
		opt.Logger = c.log
	}
	return StartTracker(opt), nil
}

// Addr returns the node the tracker tracks.
func (t *Tracker) Addr() string { return t.opt.Addr }
