package upstream

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"time"
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

// Options configures a Client.
type Options struct {
	// Addresses are the upstream nodes; the first is used (cluster and sentinel come later).
	Addresses []string
	// Username and Password authenticate every upstream connection.
	Username, Password string
	// TLS, if not nil, makes every upstream connection TLS with this configuration (tracking included); an empty
	// ServerName verifies each address's own host.
	TLS *tls.Config
	// Conns is the number of shared connections. If zero, DefaultConns is used.
	Conns int
	// Timeout bounds every upstream wait except blocking commands. If zero, DefaultTimeout is used.
	Timeout time.Duration
	// Tracking enables server-assisted invalidation (Redis 6 or later, BCAST mode). Without it the local tier
	// relies on TTLs alone and is trusted from the start.
	Tracking bool
	// Prefixes are the BCAST prefixes, from the policies that cache (policy.Matcher.TrackingPrefixes).
	Prefixes []string
	// Cache receives invalidations, flushes and trust changes. Required.
	Cache Invalidator
	// Logger receives upstream events; if nil, slog.Default().
	Logger *slog.Logger
}

// Client is featcache's upstream: a pool for forwarded traffic and fetches, and the tracking connection that keeps
// the local tier consistent with the store.
type Client struct {
	*Pool
	tracker *Tracker
}

// New returns a Client. It does not wait for the upstream: the pool dials on first use and tracking connects in
// the background; until tracking is established the local tier stores nothing.
func New(opt Options) (*Client, error) {
	if len(opt.Addresses) == 0 {
		return nil, errors.New("upstream: no address")
	}
	if opt.Cache == nil {
		return nil, errors.New("upstream: Options.Cache is required")
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	c := &Client{Pool: NewPool(PoolOptions{
		Addr:       opt.Addresses[0],
		Username:   opt.Username,
		Password:   opt.Password,
		Conns:      opt.Conns,
		Timeout:    opt.Timeout,
		ClientName: "featcache",
		TLS:        opt.TLS,
	})}
	if !opt.Tracking {
		opt.Cache.SetTrusted(true)
		return c, nil
	}
	opt.Cache.SetTrusted(false)
	log := opt.Logger
	c.tracker = StartTracker(TrackerOptions{
		Addr:         opt.Addresses[0],
		Username:     opt.Username,
		Password:     opt.Password,
		TLS:          opt.TLS,
		Prefixes:     opt.Prefixes,
		Timeout:      opt.Timeout,
		OnInvalidate: func(keys [][]byte) { opt.Cache.Invalidate(keys...) },
		OnFlush:      opt.Cache.Flush,
		OnUp: func(runID string) {
			opt.Cache.SetTrusted(true)
			log.Info("upstream: tracking up, local tier trusted", "run_id", runID)
		},
		OnLost: func(err error) {
			// Invalidations may have been missed: nothing cached so far is served any more.
			opt.Cache.SetTrusted(false)
			log.Warn("upstream: tracking lost, local tier flushed", "err", err)
		},
		Logger: log,
	})
	return c, nil
}

// Tracking reports whether tracking is configured, and whether it is established now.
func (c *Client) Tracking() (enabled, up bool) {
	if c.tracker == nil {
		return false, false
	}
	return true, c.tracker.Up()
}

// Barrier waits until every invalidation for what the upstream has executed so far has been applied. It fails
// when tracking is off or down; the caller then flushes instead.
func (c *Client) Barrier(ctx context.Context) error {
	if c.tracker == nil {
		return ErrTrackingDown
	}
	return c.tracker.Barrier(ctx)
}

// Close stops tracking and closes every connection.
func (c *Client) Close() {
	if c.tracker != nil {
		c.tracker.Close()
	}
	c.Pool.Close()
}
