package upstream

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"featcache/internal/resp"
)

// Invalidator is what tracking drives: the local tier. localcache.Cache implements it.
type Invalidator interface {
	// Invalidate drops keys and moves their generations.
	Invalidate(keys ...[]byte)
	// Flush makes every entry unservable.
	Flush()
	// SetTrusted says whether invalidations are being received; while false nothing is stored.
	SetTrusted(trusted bool)
}

// DefaultHealthInterval is how often a Client PINGs the upstream when Options.HealthInterval is zero.
const DefaultHealthInterval = time.Second

// Options configures a Client.
type Options struct {
	// Addresses are the upstream node, or seed nodes of a Redis Cluster: New asks them in order whether they are
	// cluster nodes (see detectCluster) and, for a cluster, learns every master from the first that answers. A
	// single node is the first address. Ignored with Sentinel.
	Addresses []string
	// Sentinel, if not nil, finds the primary through Redis Sentinel and follows its failovers (sentinel.go).
	Sentinel *SentinelOptions
	// Username and Password authenticate every upstream connection.
	Username, Password string
	// TLS, if not nil, makes every upstream connection TLS with this configuration (tracking included); an empty
	// ServerName verifies each address's own host.
	TLS *tls.Config
	// Conns is the number of shared connections. If zero, DefaultConns is used.
	Conns int
	// Timeout bounds featcache's own upstream waits: cache fills, health checks, connection setup, the tracking
	// connection's calls. If zero, DefaultTimeout is used.
	Timeout time.Duration
	// CommandTimeout bounds the wait for the replies of commands forwarded for clients; zero means none: they wait
	// as a direct client of Redis would (see PoolOptions.CommandTimeout).
	CommandTimeout time.Duration
	// Tracking enables server-assisted invalidation (Redis 6 or later, BCAST mode). Without it the local tier
	// relies on TTLs alone and is trusted from the start.
	Tracking bool
	// Prefixes are the BCAST prefixes, from the policies that cache (config.Matcher.TrackingPrefixes).
	Prefixes []string
	// Cache receives invalidations, flushes and trust changes. Required. In front of a Redis Cluster, a Cache
	// that implements PartitionedCache gets trust decisions per hash slot (a partition each), so that one
	// master's tracking loss untrusts only its slots.
	Cache Invalidator
	// Logger receives upstream events; if nil, slog.Default().
	Logger *slog.Logger
	// HealthInterval is how often the upstream is PINGed on a shared connection, so that Healthy follows it while
	// no traffic flows, and how often the tracking connection is checked (TrackerOptions.CheckInterval), which
	// bounds how long a SWAPDB by another client goes unnoticed. If zero, DefaultHealthInterval is used.
	HealthInterval time.Duration
}

// Client is featcache's upstream: a pool for forwarded traffic and fetches, and the tracking connection that keeps
// the local tier consistent with the store.
type Client struct {
	*Pool
	opt Options
	log *slog.Logger

	// trackMu serializes SetPrefixes; curMu guards tracker and orders trust decisions with its callbacks.
	trackMu sync.Mutex
	curMu   sync.Mutex
	tracker *Tracker // nil without tracking
	prefix  []string // the prefixes of tracker
	// lastRunID is the run_id of the server tracking last came up on, guarded by curMu.
	lastRunID string
	// swaps is the SWAPDB count the successive trackers compare (a SetPrefixes replacement included).
	swaps swapWatch

	sentinel *sentinel // nil without Options.Sentinel

	watcher atomic.Pointer[watcher] // SetWatcher's, nil if none

	// cluster routes everything when the upstream is a Redis Cluster; nil for a single node, and until New or
	// decideLater knows which it is. decided is closed once that is known.
	cluster atomic.Pointer[Cluster]
	decided chan struct{}

	stop   chan struct{}
	exited chan struct{}
}

// New returns a Client. Without Sentinel it waits for one round trip only: asking the upstream whether it is a
// Redis Cluster (detectCluster), bounded by the timeout per address; a cluster's slot map is read then too.
// Otherwise the pool dials on first use and tracking connects in the background; until tracking is established the
// local tier stores nothing. With Options.Sentinel (a single primary, never a cluster) it asks the sentinels once
// (within about twice Options.Timeout) so that it returns with the primary known when they answer; otherwise
// requests fail with ErrNoAddress until a sentinel names one.
func New(opt Options) (*Client, error) {
	if len(opt.Addresses) == 0 && opt.Sentinel == nil {
		return nil, errors.New("upstream: no address")
	}
	if opt.Cache == nil {
		return nil, errors.New("upstream: Options.Cache is required")
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	if opt.HealthInterval <= 0 {
		opt.HealthInterval = DefaultHealthInterval
	}
	log := opt.Logger
	c := &Client{opt: opt, log: log, stop: make(chan struct{}), exited: make(chan struct{}),
		decided: make(chan struct{})}
	if opt.Tracking {
		c.prefix = sortedCopy(opt.Prefixes)
	}
	var (
		addr    string
		recheck func() // with Sentinel: ask where the primary is now
	)
	if opt.Sentinel != nil {
		// The sentinels name the primary (sentinel.start below); the pool has no address until then.
		var err error
		if c.sentinel, err = newSentinel(c, *opt.Sentinel); err != nil {
			return nil, err
		}
		recheck = c.sentinel.recheck
	} else {
		addr = opt.Addresses[0]
	}
	c.Pool = NewPool(PoolOptions{
		Addr:           addr,
		Username:       opt.Username,
		Password:       opt.Password,
		Conns:          opt.Conns,
		Timeout:        opt.Timeout,
		CommandTimeout: opt.CommandTimeout,
		ClientName:     "featcache",
		TLS:            opt.TLS,
		OnHealth: func(up bool, err error) {
			if up {
				log.Info("upstream: up", "addr", c.Pool.Addr())
			} else {
				log.Warn("upstream: down", "addr", c.Pool.Addr(), "err", err)
				if recheck != nil {
					recheck()
				}
			}
		},
		OnReadOnly: recheck,
	})
	if c.sentinel != nil {
		c.startSingle(c.probe) // without an address yet: switchPrimary starts tracking once the primary is known
		c.sentinel.start()
		return c, nil
	}
	switch cluster, answered := c.detectCluster(); {
	case !answered:
		// Until the upstream answers, nothing says whether it is a cluster; decideLater starts what it is.
		opt.Cache.SetTrusted(!opt.Tracking)
		go c.decideLater()
	case cluster:
		c.startCluster()
	default:
		c.startSingle(c.probe)
	}
	return c, nil
}

// startSingle starts the health PING (as run) and tracking of a single node.
func (c *Client) startSingle(run func()) {
	close(c.decided)
	go run()
	if !c.opt.Tracking {
		c.opt.Cache.SetTrusted(true)
		return
	}
	c.opt.Cache.SetTrusted(false)
	if c.Pool.Addr() == "" {
		return // Sentinel has not named the primary yet: switchPrimary starts tracking
	}
	// curMu orders the assignment before the tracker's callbacks compare it.
	c.curMu.Lock()
	c.tracker = c.startTracker(c.prefix)
	c.curMu.Unlock()
}

// tierTracker returns the options of a tracking session on addr for the local tier: opt's credentials, TLS,
// timeout and health check interval, its pushes applied to opt.Cache and then told to the Watcher watch returns.
func tierTracker(opt *Options, addr string, prefixes []string, watch func() Watcher) TrackerOptions {
	cache := opt.Cache
	return TrackerOptions{
		Addr:          addr,
		Username:      opt.Username,
		Password:      opt.Password,
		TLS:           opt.TLS,
		Prefixes:      prefixes,
		Timeout:       opt.Timeout,
		CheckInterval: opt.HealthInterval,
		OnInvalidate: func(keys [][]byte) {
			cache.Invalidate(keys...)
			if w := watch(); w != nil {
				w.Invalidated(keys)
			}
		},
		OnFlush: func() {
			cache.Flush()
			if w := watch(); w != nil {
				w.Flushed()
			}
		},
	}
}

// startTracker starts a tracking session for prefixes whose trust callbacks act only while it is the current one,
// so that a session being replaced (SetPrefixes) cannot flip the trust of the local tier.
func (c *Client) startTracker(prefixes []string) *Tracker {
	cache, log := c.opt.Cache, c.log
	topt := tierTracker(&c.opt, c.Pool.Addr(), prefixes, c.watching)
	topt.swaps = &c.swaps
	topt.Logger = log
	up := func(t *Tracker, runID string) {
		c.curMu.Lock()
		defer c.curMu.Unlock()
		if c.tracker != t {
			return
		}
		if c.lastRunID != "" && runID != c.lastRunID {
			// A restarted, failed-over or restored server: what was cached from the old one may be
			// anything now, unverified entries included.
			cache.Flush()
			log.Warn("upstream: the server that came back is another one (run_id changed): local tier flushed",
				"old_run_id", c.lastRunID, "run_id", runID)
		}
		c.lastRunID = runID
		cache.SetTrusted(true)
		log.Info("upstream: tracking up, local tier trusted", "run_id", runID)
		if w := c.watching(); w != nil {
			w.Tracking(true)
		}
	}
	lost := func(t *Tracker, err error) {
		c.curMu.Lock()
		defer c.curMu.Unlock()
		if c.tracker == t {
			// Invalidations may have been missed: entries of on_tracking_loss: flush policies are no
			// longer served, those of revalidate policies are unverified.
			cache.SetTrusted(false)
			if err != nil {
				log.Warn("upstream: tracking lost", "err", err)
			} else {
				log.Info("upstream: tracking stopped")
			}
			if w := c.watching(); w != nil {
				w.Tracking(false)
			}
		}
	}
	return startOwned(topt, up, lost)
}

// startOwned starts a tracker with opt whose OnUp and OnLost are up and lost given the tracker itself, so that its
// owner can tell whether it is still its current one; they are not called before startOwned has the tracker.
func startOwned(opt TrackerOptions, up func(t *Tracker, runID string), lost func(t *Tracker, err error)) *Tracker {
	var t *Tracker
	ready := make(chan struct{}) // closed once t is set
	opt.OnUp = func(runID string) { <-ready; up(t, runID) }
	opt.OnLost = func(err error) { <-ready; lost(t, err) }
	t = StartTracker(opt)
	close(ready)
	return t
}

// Prefixes returns the BCAST prefixes tracking is established with (or being established with), sorted; nil
// without tracking.
func (c *Client) Prefixes() []string {
	if cl := c.cluster.Load(); cl != nil {
		return cl.Prefixes()
	}
	c.curMu.Lock()
	defer c.curMu.Unlock()
	return append([]string(nil), c.prefix...)
}

// SetPrefixes switches tracking to a new set of BCAST prefixes without a moment in which a write under a prefix
// tracked before and after the switch goes unannounced: a second tracking session is established with the new
// prefixes first, and only then is the old one closed (make before break; invalidations from both are applied
// meanwhile). Redis cannot remove prefixes from a tracking connection, nor add overlapping ones, which is why a
// new session is needed rather than another CLIENT TRACKING on the old one.
//
// Keys under a prefix that was not tracked before are announced from the moment SetPrefixes returns nil: a
// caller that starts caching them must ignore entries of theirs stored earlier. When the new session is not
// established before ctx ends while the old one is up, the old one stays, and the error says so. When tracking is
// down anyway (the upstream is unreachable), the new session replaces the old one at once and comes up when the
// upstream does. Without tracking SetPrefixes only records the prefixes.
func (c *Client) SetPrefixes(ctx context.Context, prefixes []string) error {
	if cl := c.cluster.Load(); cl != nil {
		return cl.SetPrefixes(ctx, prefixes)
	}
	c.trackMu.Lock()
	defer c.trackMu.Unlock()
	next := sortedCopy(prefixes)
	c.curMu.Lock()
	old, same := c.tracker, slices.Equal(next, c.prefix)
	if old == nil || same {
		c.prefix = next
		c.curMu.Unlock()
		return nil
	}
	c.curMu.Unlock()

	t := c.startTracker(next)
	if old.Up() {
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for !t.Up() {
			select {
			case <-ctx.Done():
				t.Close()
				return fmt.Errorf("upstream: tracking with the new prefixes was not established: %w", ctx.Err())
			case <-tick.C:
			}
		}
	}
	c.curMu.Lock()
	c.tracker, c.prefix = t, next
	// The new session's OnUp or OnLost may have run while it was not current yet: decide from its state now.
	c.opt.Cache.SetTrusted(t.Up())
	c.curMu.Unlock()
	old.Close()
	c.log.Info("upstream: tracking prefixes changed", "prefixes", len(next))
	return nil
}

func sortedCopy(s []string) []string {
	out := append([]string(nil), s...)
	slices.Sort(out)
	return out
}

// Tracking reports whether tracking is configured, and whether it is established now.
func (c *Client) Tracking() (enabled, up bool) {
	if cl := c.cluster.Load(); cl != nil {
		return cl.Tracking()
	}
	t := c.currentTracker()
	return c.opt.Tracking, t != nil && t.Up()
}

func (c *Client) currentTracker() *Tracker {
	c.curMu.Lock()
	defer c.curMu.Unlock()
	return c.tracker
}

// Barrier waits until every invalidation for what the upstream has executed so far has been applied. It fails
// when tracking is off or down; the caller then flushes instead.
func (c *Client) Barrier(ctx context.Context) error {
	if cl := c.cluster.Load(); cl != nil {
		return cl.Barrier(ctx)
	}
	t := c.currentTracker()
	if t == nil {
		return ErrTrackingDown
	}
	return t.Barrier(ctx)
}

// probe PINGs the upstream every HealthInterval on a shared connection, so that Healthy and Reached follow it when
// no traffic flows: a PING that fails, times out (a hung server) or gets an error reply (LOADING, BUSY, ...) marks
// it down; an answer marks it up.
func (c *Client) probe() {
	defer close(c.exited)
	ping := resp.AppendCommand(nil, "PING")
	call := NewCall()
	tick := time.NewTicker(c.opt.HealthInterval)
	defer tick.Stop()
	for {
		if err := c.Pool.Do(call, ping, 1); err == nil {
			if f := call.Frame(0); len(f) > 0 && f[0] == resp.TypeError {
				c.Pool.setHealth(false, resp.ParseError(f))
			} else {
				c.Pool.setHealth(true, nil)
			}
		}
		select {
		case <-c.stop:
			return
		case <-tick.C:
		}
	}
}

// Close stops tracking and the health PING and closes every connection.
func (c *Client) Close() {
	select {
	case <-c.stop:
	default:
		close(c.stop)
		if c.sentinel != nil {
			c.sentinel.close() // before tracking: a switch must not start a tracker after this
		}
	}
	if t := c.currentTracker(); t != nil {
		t.Close()
	}
	c.Pool.Close()
	<-c.exited
	if t := c.currentTracker(); t != nil {
		t.Close() // started by decideLater as Close began
	}
}
