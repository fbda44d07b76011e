package upstream

import (
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"featcache/internal/commands"
	"featcache/internal/resp"
)

// Cluster routing: featcache in front of a Redis Cluster looks like one Redis to its clients. A Cluster keeps one
// Pool per master and a slot map (which master serves each of the 16384 hash slots), swapped atomically whole, so
// that routing a command costs a CRC16 and an array index. The map is read from CLUSTER SLOTS at start, refreshed
// periodically and whenever a node fails or a reply says the cluster changed, and patched at once by each MOVED
// redirect (the next commands of the moved slot go straight to its new master). cluster_route.go routes payloads
// and follows redirects.

const (
	// DefaultClusterRefresh is how often the slot map is read again from the cluster when nothing prompts it.
	DefaultClusterRefresh = 5 * time.Second
	// minClusterRefreshGap bounds how often failures and redirects may prompt a refresh of the slot map.
	minClusterRefreshGap = 100 * time.Millisecond
	// maxRedirects bounds the rounds of MOVED, ASK and TRYAGAIN a command is resent for; then the last reply
	// stands.
	maxRedirects = 5
	// tryAgainPause is the first pause before a TRYAGAIN is retried; it doubles each round (10ms .. 160ms).
	tryAgainPause = 10 * time.Millisecond
)

// ErrNoClusterNode means no master of the cluster is known: CLUSTER SLOTS could not be read from any node.
var ErrNoClusterNode = errors.New("upstream: no Redis Cluster node is known")

// PartitionedCache is what a Cluster drives in the local tier beyond Invalidator: trust partitions, each with its
// own tracking state, so that one master's tracking loss, restart or lost slots touch only the keys it served.
// localcache.Cache implements it. An Invalidator without it gets whole-tier trust decisions instead: any master's
// tracking loss untrusts everything.
//
// A Cluster makes one partition per hash slot: partition i holds the keys of slot i (slotPartition).
type PartitionedCache interface {
	Invalidator
	// EnablePartitions switches the tier to n partitions, with partitionOf mapping a key to its partition.
	EnablePartitions(n int, partitionOf func(key []byte) int)
	// SetPartitionsTrusted says whether the invalidations of parts' keys are being received.
	SetPartitionsTrusted(parts []int, trusted bool)
	// FlushPartitions makes every entry of parts unservable.
	FlushPartitions(parts []int)
}

// slotPartition is the partition function a Cluster gives the tier: a key's partition is its hash slot.
func slotPartition(key []byte) int { return int(Slot(key)) }

// clusterNode is one node of the cluster as featcache sees it: its address, its pool and, while it is a master,
// its tracking connection.
type clusterNode struct {
	addr string
	pool *Pool

	// Guarded by Cluster.mu.
	id      string   // the cluster's node id, once CLUSTER SLOTS named it
	tracker *Tracker // nil unless the node is a master and tracking is on
	up      bool     // tracker established, as its callbacks reported
	runID   string   // the run_id tracking last came up on
}

// Cluster routes featcache's upstream traffic over the masters of a Redis Cluster and keeps one tracking
// connection per master. It is made by New when the upstream is a cluster; its methods are safe for concurrent
// use.
type Cluster struct {
	opt   Options
	log   *slog.Logger
	parts PartitionedCache // Options.Cache with a partition per hash slot; nil when it has no partitions
	smap  atomic.Pointer[slotMap]

	mu        sync.Mutex
	nodes     map[string]*clusterNode // every node seen, by address
	lastOwner [SlotCount]*clusterNode // the master that last served each slot, kept while no master serves it
	trusted   [SlotCount]bool         // the trust the tier was last told for each slot
	untrusted int                     // slots of trusted that are false
	prefix    []string                // the tracking prefixes, sorted
	keyspaces []*Keyspace             // the keyspace streams (TrackKeyspace), which follow the masters
	trackMu   sync.Mutex              // serializes SetPrefixes

	// watch returns the Client's Watcher (nil if none), told what the masters' tracking connections see.
	watch func() Watcher

	kick        chan struct{} // asks the refresh loop for a refresh of the slot map
	lastRefresh atomic.Int64  // unix nanoseconds of the last refresh attempt

	moves, asks, tryAgains, refreshes, mapChanges atomic.Int64
}

// ClusterStats counts what the router did; Cluster.Stats returns a snapshot.
type ClusterStats struct {
	Masters    int   // masters in the current slot map
	Moved      int64 // commands sent again after MOVED
	Asked      int64 // commands sent again after ASK (with ASKING)
	TryAgain   int64 // commands sent again after TRYAGAIN
	Refreshes  int64 // slot map refreshes (CLUSTER SLOTS read)
	MapChanges int64 // slot maps installed that moved at least one slot
}

// Stats returns a snapshot of the router's counters.
func (cl *Cluster) Stats() ClusterStats {
	return ClusterStats{
		Masters: cl.Masters(), Moved: cl.moves.Load(), Asked: cl.asks.Load(), TryAgain: cl.tryAgains.Load(),
		Refreshes: cl.refreshes.Load(), MapChanges: cl.mapChanges.Load(),
	}
}

// newCluster returns a Cluster whose first node is seed (a pool already made for it), reads the slot map once,
// and starts tracking on every master.
func newCluster(opt Options, seed *Pool, log *slog.Logger, watch func() Watcher) *Cluster {
	cl := &Cluster{opt: opt, log: log, nodes: map[string]*clusterNode{}, kick: make(chan struct{}, 1), watch: watch}
	cl.untrusted = SlotCount
	cl.prefix = sortedCopy(opt.Prefixes)
	first := &clusterNode{addr: seed.Addr(), pool: seed}
	cl.nodes[first.addr] = first
	for _, a := range opt.Addresses[1:] {
		cl.node(a)
	}
	cl.smap.Store(&slotMap{fallback: first})
	if pc, ok := opt.Cache.(PartitionedCache); ok && opt.Tracking {
		cl.parts = pc
		pc.EnablePartitions(SlotCount, slotPartition)
	}
	switch {
	case !opt.Tracking:
		opt.Cache.SetTrusted(true)
	case cl.parts != nil:
		opt.Cache.SetTrusted(true) // trust is decided slot by slot (partition by partition) from now on
	default:
		opt.Cache.SetTrusted(false)
	}
	if err := cl.refresh(); err != nil {
		log.Warn("upstream: cluster slot map not read yet", "err", err)
	}
	return cl
}

// node returns the node at addr, making it (and its pool, which dials on first use) if it is new. Caller holds
// cl.mu, or the Cluster is not shared yet.
func (cl *Cluster) node(addr string) *clusterNode {
	if nd := cl.nodes[addr]; nd != nil {
		return nd
	}
	log := cl.log
	nd := &clusterNode{addr: addr}
	nd.pool = NewPool(PoolOptions{
		Addr:           addr,
		Username:       cl.opt.Username,
		Password:       cl.opt.Password,
		Conns:          cl.opt.Conns,
		Timeout:        cl.opt.Timeout,
		CommandTimeout: cl.opt.CommandTimeout,
		ClientName:     "featcache",
		TLS:            cl.opt.TLS,
		OnHealth: func(up bool, err error) {
			if up {
				log.Info("upstream: up", "addr", addr)
			} else {
				log.Warn("upstream: down", "addr", addr, "err", err)
			}
		},
	})
	cl.nodes[addr] = nd
	return nd
}

// Masters returns the number of masters in the current slot map.
func (cl *Cluster) Masters() int { return len(cl.smap.Load().masters) }

// run is the Cluster's background loop: the health PING of every master every HealthInterval, and refreshes of
// the slot map, periodic and on request (at most one per minClusterRefreshGap), until stop; then it closes every
// tracker and pool and closes exited.
func (cl *Cluster) run(stop <-chan struct{}, exited chan<- struct{}) {
	defer close(exited)
	defer cl.close()
	health := time.NewTicker(cl.opt.HealthInterval)
	defer health.Stop()
	periodic := time.NewTicker(DefaultClusterRefresh)
	defer periodic.Stop()
	cl.ping()
	for {
		select {
		case <-stop:
			return
		case <-health.C:
			cl.ping()
		case <-periodic.C:
			cl.refresh()
		case <-cl.kick:
			if gap := time.Duration(time.Now().UnixNano() - cl.lastRefresh.Load()); gap < minClusterRefreshGap {
				t := time.NewTimer(minClusterRefreshGap - gap)
				select {
				case <-stop:
					t.Stop()
					return
				case <-t.C:
				}
			}
			if err := cl.refresh(); err != nil {
				cl.log.Debug("upstream: cluster slot map refresh failed", "err", err)
			}
		}
	}
}

// ping PINGs every master in parallel on a shared connection, so that Healthy follows each of them as the
// single-node Client's probe does.
func (cl *Cluster) ping() {
	ping := resp.AppendCommand(nil, "PING")
	var wg sync.WaitGroup
	for _, nd := range cl.smap.Load().masters {
		wg.Add(1)
		go func(p *Pool) {
			defer wg.Done()
			call := NewCall()
			if err := p.Do(call, ping, 1); err == nil {
				if f := call.Frame(0); len(f) > 0 && f[0] == '-' {
					p.setHealth(false, resp.ParseError(f))
				} else {
					p.setHealth(true, nil)
				}
			}
		}(nd.pool)
	}
	wg.Wait()
}

// close stops every tracker and closes every pool.
func (cl *Cluster) close() {
	cl.mu.Lock()
	var ts []*Tracker
	var pools []*Pool
	for _, nd := range cl.nodes {
		if nd.tracker != nil {
			ts = append(ts, nd.tracker)
			nd.tracker = nil
		}
		pools = append(pools, nd.pool)
	}
	cl.mu.Unlock()
	for _, t := range ts {
		t.Close()
	}
	for _, p := range pools {
		p.Close()
	}
}

// Healthy reports whether every master answers (see Pool.Healthy); false while no master is known.
func (cl *Cluster) Healthy() bool {
	m := cl.smap.Load()
	if len(m.masters) == 0 {
		return false
	}
	for _, nd := range m.masters {
		if !nd.pool.Healthy() {
			return false
		}
	}
	return true
}

// Reached reports whether any node of the cluster has answered since start.
func (cl *Cluster) Reached() bool {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	for _, nd := range cl.nodes {
		if nd.pool.Reached() {
			return true
		}
	}
	return false
}

// Dedicated returns a dedicated connection to the master of slot (NoSlot: the first master). It follows the
// cluster's redirects when asked to (Conn.Follow).
func (cl *Cluster) Dedicated(slot int) (*Conn, error) {
	nd := cl.smap.Load().node(slot)
	if nd == nil {
		return nil, ErrNoClusterNode
	}
	c, err := nd.pool.Dedicated()
	if err == nil {
		c.cluster = cl
	}
	return c, err
}

// maxConnRedirects bounds the redirects Conn.Follow follows for one command; then the last reply stands.
const maxConnRedirects = 3

// Follow follows the redirects of a Redis Cluster for a command sent on c that left no state on the connection (a
// session's first command, a blocking command): while reply, the command's answer, is a MOVED redirect (or ASK,
// when ask is set), c moves to the node the redirect names, its connection to the old node going back to that
// node's pool, and send sends the command again on c and returns its reply; after ASK, send must precede the
// command with ASKING (asking is true), which Redis applies to the next command only. A MOVED patches the slot map
// at once. Follow returns the last reply: the first one that is not a redirect to follow, or the one after a few
// redirects (the client then sees Redis's own error). On a single node it returns reply as it is. When no
// connection to the named node can be had, c stays where it was and the error is returned. A connection its owner
// switched to RESP3 (SetRESP3) is switched on the new node too before the command is sent again; when that fails
// the error is returned.
//
// A session does not follow ASK: ASKING covers one command, and the session's next command on the importing node
// would be redirected back.
func (c *Conn) Follow(reply []byte, ask bool, send func(asking bool) ([]byte, error)) ([]byte, error) {
	cl := c.cluster
	if cl == nil {
		return reply, nil
	}
	for tries := 0; tries < maxConnRedirects; tries++ {
		kind, slot, addr := parseRedirect(reply)
		from := &clusterNode{addr: c.pool.Addr()}
		var nd *clusterNode
		switch {
		case kind == redirectMoved:
			nd = cl.moved(slot, addr, from)
			cl.moves.Add(1)
		case kind == redirectAsk && ask:
			nd = cl.askTarget(addr, from)
			cl.asks.Add(1)
		default:
			return reply, nil
		}
		next, err := nd.pool.Dedicated()
		if err != nil {
			return nil, err
		}
		c.swap(next)
		if c.resp3 {
			// The session speaks RESP3: the old connection, switched, is not reused, and the new one is switched.
			next.Close()
			if err := c.SwitchRESP3(); err != nil {
				return nil, err
			}
		} else {
			next.Release() // c's old connection: the redirected command left no state on it
		}
		if reply, err = send(kind == redirectAsk); err != nil {
			return nil, err
		}
	}
	return reply, nil
}

// FanOut sends payload, one command (info's, nil when Redis does not know it), to every master in parallel and
// stores their replies in call, one frame per master in the order of Masters (failure frames for those that
// failed); it returns the number of masters. The command is a client's, forwarded: each master's reply is waited
// for as Pool.Forward waits, on the master's shared connections for writes or for reads (Pool.route), as the
// command may write.
func (cl *Cluster) FanOut(call *Call, info *commands.Info, payload []byte) (int, error) {
	m := cl.smap.Load()
	call.reset(len(m.masters))
	if len(m.masters) == 0 {
		call.Err = ErrNoClusterNode
		return 0, ErrNoClusterNode
	}
	writes := mayWrite(info)
	calls := make([]*Call, len(m.masters))
	errs := make([]error, len(m.masters))
	var wg sync.WaitGroup
	for i, nd := range m.masters {
		calls[i] = NewCall()
		calls[i].Cancel = call.Cancel
		wg.Add(1)
		go func(i int, p *Pool) {
			defer wg.Done()
			errs[i] = p.route(calls[i], payload, 1, true, writes)
		}(i, nd.pool)
	}
	wg.Wait()
	var first error
	for i := range calls {
		if calls[i].Len() == 1 {
			call.Replies = append(call.Replies, calls[i].Frame(0)...)
		} else {
			call.Replies = failureFrame(call.Replies, errs[i])
			if first == nil {
				first = errs[i]
			}
			cl.refreshSoon()
		}
		call.Ends = append(call.Ends, len(call.Replies))
	}
	call.Err = first
	return len(m.masters), first
}

// DoMaster sends payload (n commands that only read) to master i of Masters' order, for a walk over every master
// (SCAN), and waits for the replies as Pool.Forward waits, on the master's shared connections for reads.
func (cl *Cluster) DoMaster(call *Call, i int, payload []byte, n int) error {
	m := cl.smap.Load()
	if i < 0 || i >= len(m.masters) {
		call.reset(n)
		call.Err = ErrNoClusterNode
		return ErrNoClusterNode
	}
	err := m.masters[i].pool.route(call, payload, n, true, false)
	if err != nil {
		cl.refreshSoon()
	}
	return err
}
