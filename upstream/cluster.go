package upstream

import (
	"bytes"
	"errors"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"featcache/internal/resp"
)

// Cluster routing: featcache in front of a Redis Cluster looks like one Redis to its clients. A Cluster keeps one
// Pool per master and a slot map (which master serves each of the 16384 hash slots), swapped atomically whole, so
// that routing a command costs a CRC16 and an array index. The map is read from CLUSTER SLOTS at start, refreshed
// periodically and whenever a node fails or a reply says the cluster changed, and patched at once by each MOVED
// redirect (the next commands of the moved slot go straight to its new master).
//
// A Payload handed to Do is already cut into units, each with its slot, computed when its commands were appended:
// a command goes to the master of its first key's slot (a command without keys to the first master); a MULTI ...
// EXEC sequence travels whole, to the master of its first keyed command. The router never parses a payload. Commands for different masters are sent in parallel, one round trip each, and the replies are put back
// in request order, so a caller sees what one Redis would have answered. MOVED is followed (the map is patched and
// the command resent to the new master), ASK too (ASKING, then the command, on the target: a slot being migrated),
// TRYAGAIN (a multi-key command while its keys are split across a migration) is retried after a short pause, each
// at most maxRedirects times. Splitting multi-key commands across slots and fanning keyspace-wide commands out is
// the proxy's business: the router sends what it is given.

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
	trackMu   sync.Mutex              // serializes SetPrefixes

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
func newCluster(opt Options, seed *Pool, log *slog.Logger) *Cluster {
	cl := &Cluster{opt: opt, log: log, nodes: map[string]*clusterNode{}, kick: make(chan struct{}, 1)}
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

// route is the scratch state of one Do: the payload's units, the groups each round sends, and the calls their
// replies arrived in. Routes are pooled.
type route struct {
	fwd    bool            // forwarded commands: waited for as Pool.Forward does, not within the timeout
	cancel <-chan struct{} // the caller's Call.Cancel, for every call of the route
	units  []unit
	groups []group
	calls  []*Call // every call used by this Do, released at the end
	idx    []int
	out    []byte
	ends   []int
}

// unit is what must go to one node together: one command, or a whole MULTI ... EXEC.
type unit struct {
	start, end int  // its bytes in the payload
	frames     int  // its reply frames
	slot       int  // the slot it is routed by, NoSlot for none
	tx         bool // a MULTI ... EXEC: sent again whole after a redirect
	nd         *clusterNode
	asking     bool // an ASK redirect: send ASKING first
	tries      int

	src   *Call // where its frames are once sent
	first int   // the index of its first frame in src
	err   error // its node failed before all its frames arrived
}

// group is the part of a round that goes to one node.
type group struct {
	nd      *clusterNode
	payload []byte
	frames  int
	call    *Call
	units   []int
	err     error
}

var (
	routePool = sync.Pool{New: func() any { return &route{} }}
	callPool  = sync.Pool{New: func() any { return NewCall() }}
)

var askingCmd = resp.AppendCommand(nil, "ASKING")

// Do sends p's commands to the masters of their slots and stores their p.Len() reply frames in call in request
// order (see the comment at the top of this file for redirects). Unlike Pool.Do, a node that fails does not cut
// the replies short: each command it did not answer gets a failure frame ("-ERR featcache upstream unavailable:
// ..." or "-ERR featcache upstream timeout: ..."), so that the other masters' replies still reach their clients,
// and call.Err is the first such failure. p may be reused as soon as Do returns. Each node's part is waited for
// as Pool.Do waits (featcache's own reads, within the timeout).
func (cl *Cluster) Do(call *Call, p *Payload) error { return cl.do(call, p, false) }

// Forward is Do for commands forwarded for clients: each node's part is waited for as Pool.Forward waits (as long
// as Redis takes, or the command timeout).
func (cl *Cluster) Forward(call *Call, p *Payload) error { return cl.do(call, p, true) }

func (cl *Cluster) do(call *Call, p *Payload, fwd bool) error {
	n := p.Len()
	call.reset(n)
	if n == 0 {
		return nil
	}
	payload := p.Bytes()
	r := routePool.Get().(*route)
	defer r.release()
	r.fwd, r.cancel = fwd, call.Cancel
	r.plan(p)
	m := cl.smap.Load()
	for i := range r.units {
		r.units[i].nd = m.node(r.units[i].slot)
	}
	if r.units[0].nd == nil {
		err := ErrNoClusterNode
		for i := 0; i < n; i++ {
			call.Replies = failureFrame(call.Replies, err)
			call.Ends = append(call.Ends, len(call.Replies))
		}
		call.Err = err
		return err
	}
	// Most payloads (a single miss, a client's pipeline of keys that share a hash tag) go to one master: send
	// the payload as it is, and return its frames where they arrived unless one of them asks for a redirect.
	if r.oneNode() {
		nd := r.units[0].nd
		err := nd.pool.exchange(call, payload, n, fwd)
		if err == nil && !hasRedirect(call) {
			return nil
		}
		if err != nil {
			cl.refreshSoon()
		}
		r.attribute(call, 0, len(r.units), err)
	} else {
		r.idx = r.idx[:0]
		for i := range r.units {
			r.idx = append(r.idx, i)
		}
		r.send(cl, payload, r.idx)
	}
	pause := tryAgainPause
	for round := 0; round < maxRedirects; round++ {
		again, wait := r.redirects(cl)
		if len(again) == 0 {
			break
		}
		if wait {
			time.Sleep(pause)
			pause *= 2
		}
		r.send(cl, payload, again)
	}
	return r.assemble(call)
}

// oneNode reports whether every unit goes to the same node.
func (r *route) oneNode() bool {
	nd := r.units[0].nd
	for i := 1; i < len(r.units); i++ {
		if r.units[i].nd != nd {
			return false
		}
	}
	return true
}

// plan takes p's units, which the payload recorded as its commands were appended.
func (r *route) plan(p *Payload) {
	r.units = r.units[:0]
	start := 0
	for _, s := range p.units {
		r.units = append(r.units, unit{start: start, end: s.end, frames: s.frames, slot: s.slot, tx: s.tx})
		start = s.end
	}
}

// attribute records that units [from, to), sent together in this order, have their frames in call.
func (r *route) attribute(call *Call, from, to int, err error) {
	f := 0
	for i := from; i < to; i++ {
		u := &r.units[i]
		u.src, u.first, u.err = call, f, nil
		if call.Len() < f+u.frames {
			u.err = err
			if u.err == nil {
				u.err = resp.ErrBadFrame
			}
		}
		f += u.frames
	}
}

// send sends the units idx, grouped by node, one round trip per node, in parallel.
func (r *route) send(cl *Cluster, payload []byte, idx []int) {
	r.groups = r.groups[:0]
	for _, i := range idx {
		u := &r.units[i]
		g := r.group(u.nd)
		if u.asking {
			g.payload = append(g.payload, askingCmd...)
			g.frames++
		}
		u.first = g.frames
		g.payload = append(g.payload, payload[u.start:u.end]...)
		g.frames += u.frames
		g.units = append(g.units, i)
	}
	var wg sync.WaitGroup
	for gi := 1; gi < len(r.groups); gi++ {
		wg.Add(1)
		go func(g *group) {
			defer wg.Done()
			g.err = g.nd.pool.exchange(g.call, g.payload, g.frames, r.fwd)
		}(&r.groups[gi])
	}
	g0 := &r.groups[0]
	g0.err = g0.nd.pool.exchange(g0.call, g0.payload, g0.frames, r.fwd)
	wg.Wait()
	for gi := range r.groups {
		g := &r.groups[gi]
		if g.err != nil {
			cl.refreshSoon()
		}
		for _, i := range g.units {
			u := &r.units[i]
			u.src, u.err = g.call, nil
			if g.call.Len() < u.first+u.frames {
				u.err = g.err
				if u.err == nil {
					u.err = resp.ErrBadFrame
				}
			}
		}
	}
}

// group returns the group of this round for nd, starting one with a fresh call.
func (r *route) group(nd *clusterNode) *group {
	for i := range r.groups {
		if r.groups[i].nd == nd {
			return &r.groups[i]
		}
	}
	call := callPool.Get().(*Call)
	call.Cancel = r.cancel
	r.calls = append(r.calls, call)
	if len(r.groups) < cap(r.groups) {
		// Reuse the buffers a group of an earlier Do left in this route.
		r.groups = r.groups[:len(r.groups)+1]
		g := &r.groups[len(r.groups)-1]
		g.nd, g.payload, g.frames, g.call, g.units, g.err = nd, g.payload[:0], 0, call, g.units[:0], nil
		return g
	}
	r.groups = append(r.groups, group{nd: nd, call: call})
	return &r.groups[len(r.groups)-1]
}

// redirects finds the units whose replies ask to be sent again (MOVED, ASK, TRYAGAIN), points them at their new
// node, and returns them; wait is true when one of them was TRYAGAIN.
func (r *route) redirects(cl *Cluster) (again []int, wait bool) {
	r.idx = r.idx[:0]
	for i := range r.units {
		u := &r.units[i]
		if u.err != nil || u.tries >= maxRedirects {
			continue
		}
		kind, slot, addr := unitRedirect(u)
		switch kind {
		case redirectNone:
			if u.frames == 1 && isClusterDown(u.src.Frame(u.first)) {
				cl.refreshSoon()
			}
			continue
		case redirectMoved:
			u.nd, u.asking = cl.moved(slot, addr, u.nd), false
			cl.moves.Add(1)
		case redirectAsk:
			u.nd, u.asking = cl.askTarget(addr, u.nd), true
			cl.asks.Add(1)
		case redirectTryAgain:
			wait = true
			cl.tryAgains.Add(1)
		}
		u.tries++
		r.idx = append(r.idx, i)
	}
	return r.idx, wait
}

type redirectKind uint8

const (
	redirectNone redirectKind = iota
	redirectMoved
	redirectAsk
	redirectTryAgain
)

// unitRedirect reads whether a unit's replies ask for it to be sent again. A transaction is sent again whole when
// EXEC itself was redirected, or when it aborted because a queued command was (MOVED or ASK at queue time make
// Redis discard the transaction at EXEC).
func unitRedirect(u *unit) (redirectKind, int, string) {
	if u.frames > 1 && !u.tx {
		return redirectNone, 0, ""
	}
	last := u.src.Frame(u.first + u.frames - 1)
	if k, slot, addr := parseRedirect(last); k != redirectNone || u.frames == 1 {
		return k, slot, addr
	}
	if !bytes.HasPrefix(last, []byte("-EXECABORT")) {
		return redirectNone, 0, ""
	}
	for j := u.first; j < u.first+u.frames-1; j++ {
		if k, slot, addr := parseRedirect(u.src.Frame(j)); k == redirectMoved || k == redirectAsk {
			return k, slot, addr
		}
	}
	return redirectNone, 0, ""
}

// parseRedirect reads "-MOVED slot host:port", "-ASK slot host:port" and "-TRYAGAIN ...".
func parseRedirect(f []byte) (redirectKind, int, string) {
	if len(f) < 5 || f[0] != '-' {
		return redirectNone, 0, ""
	}
	var kind redirectKind
	var rest []byte
	switch {
	case bytes.HasPrefix(f, []byte("-MOVED ")):
		kind, rest = redirectMoved, f[7:]
	case bytes.HasPrefix(f, []byte("-ASK ")):
		kind, rest = redirectAsk, f[5:]
	case bytes.HasPrefix(f, []byte("-TRYAGAIN")):
		return redirectTryAgain, 0, ""
	default:
		return redirectNone, 0, ""
	}
	rest = bytes.TrimRight(rest, "\r\n")
	sp := bytes.IndexByte(rest, ' ')
	if sp < 0 {
		return redirectNone, 0, ""
	}
	slot, err := strconv.Atoi(string(rest[:sp]))
	if err != nil || slot < 0 || slot >= SlotCount {
		return redirectNone, 0, ""
	}
	return kind, slot, string(rest[sp+1:])
}

// hasRedirect reports whether any frame of call is a redirect (MOVED, ASK, TRYAGAIN): only then does Do look at
// units one by one.
func hasRedirect(call *Call) bool {
	for i := 0; i < call.Len(); i++ {
		f := call.Frame(i)
		if len(f) > 4 && f[0] == '-' && (f[1] == 'M' || f[1] == 'A' || f[1] == 'T' || f[1] == 'E' || f[1] == 'C') {
			if k, _, _ := parseRedirect(f); k != redirectNone {
				return true
			}
			if bytes.HasPrefix(f, []byte("-EXECABORT")) || isClusterDown(f) {
				return true
			}
		}
	}
	return false
}

func isClusterDown(f []byte) bool { return bytes.HasPrefix(f, []byte("-CLUSTERDOWN")) }

// assemble writes every unit's frames into call in request order, failure frames for those that did not arrive,
// and returns the first failure.
func (r *route) assemble(call *Call) error {
	out, ends := r.out[:0], r.ends[:0]
	var first error
	for i := range r.units {
		u := &r.units[i]
		for j := 0; j < u.frames; j++ {
			if k := u.first + j; k < u.src.Len() {
				out = append(out, u.src.Frame(k)...)
			} else {
				out = failureFrame(out, u.err)
			}
			ends = append(ends, len(out))
		}
		if u.err != nil && first == nil {
			first = u.err
		}
	}
	// The call takes the assembled buffers; the route keeps the call's old ones for its next use.
	call.Replies, r.out = out, call.Replies[:0]
	call.Ends, r.ends = ends, call.Ends[:0]
	call.Err = first
	return first
}

func (r *route) release() {
	r.cancel = nil
	for i, c := range r.calls {
		c.reset(0)
		c.Cancel = nil
		callPool.Put(c)
		r.calls[i] = nil
	}
	r.calls = r.calls[:0]
	for i := range r.units {
		r.units[i] = unit{}
	}
	for i := range r.groups {
		r.groups[i].nd, r.groups[i].call = nil, nil
		if cap(r.groups[i].payload) > maxKeptBuf {
			r.groups[i].payload = nil
		}
	}
	r.units, r.groups = r.units[:0], r.groups[:0]
	if cap(r.out) > maxKeptBuf {
		r.out = nil
	}
	routePool.Put(r)
}

// failureFrame appends the error reply that stands for a command whose node failed: the same text the proxy gives
// such failures, which it recognises as an upstream failure (serve_stale applies).
func failureFrame(dst []byte, err error) []byte {
	msg := "ERR featcache upstream unavailable: "
	switch {
	case errors.Is(err, ErrTimeout):
		msg = "ERR featcache upstream timeout: Redis did not answer in time (the command may have been applied)"
	case errors.Is(err, ErrCommandTimeout):
		msg = "ERR featcache upstream timeout: Redis did not answer within upstream.command_timeout (the command " +
			"may have been applied)"
	case err != nil:
		msg += err.Error()
	default:
		msg += "no reply"
	}
	dst = append(dst, '-')
	for i := 0; i < len(msg); i++ {
		if c := msg[i]; c != '\r' && c != '\n' {
			dst = append(dst, c)
		}
	}
	return append(dst, '\r', '\n')
}

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
// connection to the named node can be had, c stays where it was and the error is returned.
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
		next.Release() // c's old connection: the redirected command left no state on it
		if reply, err = send(kind == redirectAsk); err != nil {
			return nil, err
		}
	}
	return reply, nil
}

// FanOut sends payload, one command, to every master in parallel and stores their replies in call, one frame per
// master in the order of Masters (failure frames for those that failed); it returns the number of masters. The
// command is a client's, forwarded: each master's reply is waited for as Pool.Forward waits.
func (cl *Cluster) FanOut(call *Call, payload []byte) (int, error) {
	m := cl.smap.Load()
	call.reset(len(m.masters))
	if len(m.masters) == 0 {
		call.Err = ErrNoClusterNode
		return 0, ErrNoClusterNode
	}
	calls := make([]*Call, len(m.masters))
	errs := make([]error, len(m.masters))
	var wg sync.WaitGroup
	for i, nd := range m.masters {
		calls[i] = NewCall()
		calls[i].Cancel = call.Cancel
		wg.Add(1)
		go func(i int, p *Pool) {
			defer wg.Done()
			errs[i] = p.Forward(calls[i], payload, 1)
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

// DoMaster sends payload (n commands) to master i of Masters' order, for a walk over every master (SCAN), and
// waits for the replies as Pool.Forward waits.
func (cl *Cluster) DoMaster(call *Call, i int, payload []byte, n int) error {
	m := cl.smap.Load()
	if i < 0 || i >= len(m.masters) {
		call.reset(n)
		call.Err = ErrNoClusterNode
		return ErrNoClusterNode
	}
	err := m.masters[i].pool.Forward(call, payload, n)
	if err != nil {
		cl.refreshSoon()
	}
	return err
}
