package proxy

import (
	"math/bits"
	"sync"
	"sync/atomic"
	"time"

	"featcache/internal/commands"

	"github.com/prometheus/client_golang/prometheus"

	"featcache/config"
)

// The metrics of featcache, in one place. Labels are low-cardinality only: a policy name, a command class, a result;
// never a key.
//
// The request path counts with plain atomics (policyCounters, one set per policy, found by config.Index through the
// policy set the lookup already loaded; one counter per command, found through its command table entry), exported
// by statsCollector at scrape time: no label lookup, map access or allocation on the hit path. Request latency is
// timed once per batch, not per command (see batchTiming). Upstream round trips are observed in a client_golang
// histogram whose children are resolved once, at start.

// Results of a cached read, the "result" label of featcache_requests_total. Every key of a GET or MGET is counted
// once, with what finally answered it.
const (
	resultHit    = iota // served from memory, fresh
	resultStale         // served from memory past its soft deadline (refresh running), or past its hard deadline because the upstream failed (serve_stale)
	resultMiss          // fetched from the upstream
	resultBypass        // no caching policy: forwarded
	resultError         // the upstream failed and nothing could be served
	numResults
)

var resultNames = [numResults]string{"hit", "stale", "miss", "bypass", "error"}

// noPolicy is the policy label of keys no policy matches.
const noPolicy = "(none)"

// ageBoundsMs are the upper bounds, in milliseconds, of featcache_served_age_seconds's buckets: from a fresh
// value to a day-old one, the range of the TTLs featcache is configured with.
var ageBoundsMs = [...]int64{100, 1000, 5000, 15000, 60000, 300000, 900000, 1800000, 3600000, 10800000, 21600000, 86400000}

// policyCounters counts the cached reads of one policy. Its fields are only ever added to. Reads served from
// memory are counted by the histogram of their age (hit or stale), so that a hit costs two atomic adds (its bucket
// and the sum of ages) and no third for a counter: featcache_requests_total's hit and stale are the histograms'
// counts, and featcache_served_age_seconds merges the two.
type policyCounters struct {
	name         string
	hit, stale   ageHistogram
	results      [numResults]atomic.Int64 // miss, bypass, error; hit and stale are the histograms' counts
	staleOnError atomic.Int64             // the part of the stale reads served because the upstream failed
	_            [64]byte                 // keep two policies' hot counters off one cache line
}

// ageHistogram counts the ages of values served, in the buckets of ageBoundsMs and one more for larger ages.
type ageHistogram struct {
	buckets [len(ageBoundsMs) + 1]atomic.Int64
	sumMs   atomic.Int64
}

// observe records the age of a value served from memory.
func (h *ageHistogram) observe(age time.Duration) {
	ms := age.Milliseconds()
	h.buckets[ageBucket(ms)].Add(1)
	h.sumMs.Add(ms)
}

// ageBucket returns the index of the bucket of an age of ms milliseconds.
func ageBucket(ms int64) int {
	i := 0
	for i < len(ageBoundsMs) && ms > ageBoundsMs[i] {
		i++
	}
	return i
}

// pendingCounts are a client's counts of its current batch that go to the shared counters once per batch (fold):
// the fresh hits of one policy by age bucket, and the calls of one command name. A pipeline of GET hits then
// costs one atomic add per age bucket and one per command name, instead of three per GET, and between folds the
// request path writes no cache line that the clients on other cores write too. Counts of another policy or
// command fold the pending ones first. Every count is folded before a reply is written (flush, and the writes
// while a segment's replies are assembled), since a write may wait as long as the client does not read, and before
// a command other than a cached read runs (exec), so whoever reads the counters after a reply, or with a later
// command of the same pipeline, finds every command before it counted. Only the client's goroutine touches them.
//
// A batch of one command gains nothing by it: its counts go straight to the shared counters (on is false).
type pendingCounts struct {
	on    bool // the current batch has more than one command: counts wait for fold
	pc    *policyCounters
	hits  [len(ageBoundsMs) + 1]int64
	sumMs int64
	mask  uint32 // buckets with pending hits
	tc    *command
	calls int64
}

// hit counts a fresh hit of age age under pc.
func (p *pendingCounts) hit(pc *policyCounters, age time.Duration) {
	if !p.on {
		pc.hit.observe(age)
		return
	}
	if pc != p.pc {
		p.foldHits()
		p.pc = pc
	}
	p.addHit(age)
}

// hitPending counts a fresh hit of age age under pc when the batch's pending hits are pc's already, and reports
// whether it did; hit counts the others. It is small enough to be inlined into the read, where hit is a call.
func (p *pendingCounts) hitPending(pc *policyCounters, age time.Duration) bool {
	if !p.on || pc != p.pc {
		return false
	}
	p.addHit(age)
	return true
}

// addHit adds a hit of age age to the pending ones.
func (p *pendingCounts) addHit(age time.Duration) {
	ms := age.Milliseconds()
	i := ageBucket(ms)
	p.hits[i]++
	p.mask |= 1 << i
	p.sumMs += ms
}

// call counts a call of tc.
func (p *pendingCounts) call(tc *command) {
	if !p.on {
		tc.calls.Add(1)
		return
	}
	if tc != p.tc {
		p.foldCalls()
		p.tc = tc
	}
	p.calls++
}

// fold adds the pending counts to the shared counters.
func (p *pendingCounts) fold() {
	p.foldHits()
	p.foldCalls()
}

func (p *pendingCounts) foldHits() {
	if p.mask == 0 {
		return
	}
	h := &p.pc.hit
	for m := p.mask; m != 0; m &= m - 1 {
		i := bits.TrailingZeros32(m)
		h.buckets[i].Add(p.hits[i])
		p.hits[i] = 0
	}
	h.sumMs.Add(p.sumMs)
	p.sumMs, p.mask = 0, 0
}

func (p *pendingCounts) foldCalls() {
	if p.calls > 0 {
		p.tc.calls.Add(p.calls)
		p.calls = 0
	}
}

// count is the number of ages observed. Each bucket only grows, so successive counts never decrease.
func (h *ageHistogram) count() int64 {
	var n int64
	for i := range h.buckets {
		n += h.buckets[i].Load()
	}
	return n
}

// result returns the count of one result of featcache_requests_total.
func (pc *policyCounters) result(r int) int64 {
	switch r {
	case resultHit:
		return pc.hit.count()
	case resultStale:
		return pc.stale.count()
	}
	return pc.results[r].Load()
}

// Upstream round-trip classes, the "class" label of featcache_upstream_duration_seconds.
const (
	upRead        = iota // cache fills of a pipeline segment, nothing else
	upForward            // a segment with forwarded commands (and maybe fills)
	upWrite              // a segment that ends with a write
	upTransaction        // MULTI ... EXEC
	upPinned             // a command of a WATCH session
	upBlocking           // a blocking command: its duration is the command's own wait
	upRefresh            // a background refresh of a soft-stale entry
	upWarm               // a warm-up batch
	numUpClasses
)

var upClassNames = [numUpClasses]string{"read", "forward", "write", "transaction", "pinned", "blocking", "refresh", "warm"}

// Request latency classes, the "class" label of featcache_request_duration_seconds: what a command was, as the
// request path handled it.
const (
	latHit         = iota // a cached read (GET, MGET, HGET, HMGET, HGETALL) answered from memory alone
	latMiss               // a cached read that waited for Redis: a miss, or a key no policy caches
	latWrite              // a write, forwarded, its keys invalidated before the reply
	latForwarded          // any other command forwarded over the shared connections (INFO, unknown commands, ...)
	latTransaction        // MULTI, EXEC, DISCARD, WATCH, UNWATCH and the commands queued between MULTI and EXEC
	latPinned             // a command of a WATCH session, on its dedicated connection
	latBlocking           // a blocking command (BLPOP, XREAD BLOCK, WAIT, ...): its wait is part of its latency
	latSubscribe          // the SUBSCRIBE family, and commands sent in subscribed mode
	latLocal              // answered by featcache from the connection's own state (PING, AUTH, HELLO, CLIENT ...)
	latAdmin              // featcache's CACHE commands
	latRefused            // refused without running: commands.deny, commands featcache cannot run, NOAUTH
	numLatClasses
)

var latClassNames = [numLatClasses]string{"cached_hit", "cached_miss", "write", "forwarded", "transaction", "pinned",
	"blocking", "subscribe", "local", "admin", "refused"}

// classLatency is the latency class of each command class, outside sessions (see countCommand).
var classLatency = [...]uint8{
	classForward: latForwarded, classWrite: latWrite, classRead: latHit, classLocal: latLocal,
	classTx: latTransaction, classSubscribe: latSubscribe, classBlocking: latBlocking, classAdmin: latAdmin,
	classDenied: latRefused, classRefused: latRefused,
}

// latBoundsNs are the upper bounds, in nanoseconds, of featcache_request_duration_seconds's buckets: from a
// pipeline answered from memory (a few microseconds inside featcache) to a blocking command or a Redis that hangs
// (seconds).
var latBoundsNs = [...]int64{
	1e3, 2.5e3, 5e3, 10e3, 25e3, 50e3, 100e3, 250e3, 500e3,
	1e6, 2.5e6, 5e6, 10e6, 25e6, 50e6, 100e6, 250e6, 500e6,
	1e9, 2.5e9, 5e9, 10e9,
}

// latHistogram counts request latencies in the buckets of latBoundsNs and one more for longer ones.
type latHistogram struct {
	buckets [len(latBoundsNs) + 1]atomic.Int64
	sumNs   atomic.Int64
	_       [64]byte // keep two classes' counters off one cache line
}

// observe records n requests that took d nanoseconds.
func (h *latHistogram) observe(d, n int64) {
	i := 0
	for i < len(latBoundsNs) && d > latBoundsNs[i] {
		i++
	}
	h.buckets[i].Add(n)
	h.sumNs.Add(n * d)
}

// latencySampleMean is how many batches answered from memory alone (cached hits and local commands, nothing sent
// to Redis) pass, on average, between two that are timed; each timed one counts for the batches it stands for.
// Timing costs a clock read, about 30-60 ns on a virtual machine: on every batch that is a fifth of a pipeline of
// one GET hit (about 200 ns of CPU), which a latency distribution does not need; one batch in 16 keeps it near 2%.
// Batches that wait for Redis are all timed: there the clock read is lost in the round trip.
const latencySampleMean = 16

// memoryClasses are the latency classes of batches answered from memory alone, which are sampled.
const memoryClasses = 1<<latHit | 1<<latLocal

// batchTiming is a client's account of the batch it runs, for featcache_request_duration_seconds: how many commands
// of each latency class it holds. Every command of a batch is read at once and answered by one write, so they all
// take the same time: from the batch's read (the clock reading its lookups use) to its replies' write.
type batchTiming struct {
	n      [numLatClasses]uint32
	mask   uint16    // classes with n > 0
	start  time.Time // the batch's read, when the server's clock is not the real one (Options.Now injected)
	skip   int32     // memory-only batches until the next timed one
	weight int32     // how many memory-only batches the next timed one counts for
	rand   uint64    // xorshift state for the gaps between timed batches
}

func (t *batchTiming) add(class int) {
	t.n[class]++
	t.mask |= 1 << class
}

// countCommand counts a command under its name (featcache_commands_total) and its latency class, as it starts.
// tc is its table entry, nil for a command neither Redis nor featcache knows. On the hit path it is a few
// instructions besides the counter: an authenticated client outside any session takes its entry's class as it is.
func (c *client) countCommand(tc *command) {
	if tc == nil || !c.authed || c.sub != nil || c.tx.multi || c.tx.conn != nil {
		c.countInSession(tc)
		return
	}
	c.pend.call(tc) // every installed table is bound (installTable): tc.calls is set
	c.timing.add(int(tc.lat))
}

// countInSession is countCommand for an unknown command, or a client that is not authenticated or is in a
// session (subscribed, MULTI, WATCH): the session decides the class, as exec dispatches them.
func (c *client) countInSession(tc *command) {
	if tc == nil {
		c.srv.metrics.unknownCalls.Add(1)
	} else if tc.calls != nil {
		tc.calls.Add(1)
	}
	class := latForwarded // an unknown command: Redis answers it, with its unknown-command error
	switch {
	case !c.authed && (tc == nil || tc.info == nil || !tc.info.Flags.Has(commands.FlagNoAuth)):
		class = latRefused
	case tc == nil:
		if c.tx.multi {
			class = latTransaction // refused at queue time
		}
	case c.sub != nil && c.sub.active():
		class = latSubscribe
	case c.tx.multi || tc.class == classTx:
		class = latTransaction
	case c.tx.conn != nil:
		class = latPinned
	default:
		class = int(tc.lat)
	}
	c.timing.add(class)
}

// readWaited reclassifies the cached read just counted as a hit when it left a reply to be completed by the
// segment's round trip (a fill, or a key no policy caches). holes is the segment's hole count before the read.
func (c *client) readWaited(holes int) {
	if len(c.seg.holes) != holes {
		c.timing.miss()
	}
}

// miss moves one command from cached_hit to cached_miss.
func (t *batchTiming) miss() {
	if t.n[latHit] > 0 {
		if t.n[latHit]--; t.n[latHit] == 0 {
			t.mask &^= 1 << latHit
		}
	}
	t.add(latMiss)
}

// beginBatch notes when a batch was read, when the server's clock cannot tell: with an injected clock (tests move
// it) the batch's own clock reading is no measure of elapsed time.
func (c *client) beginBatch() {
	if !c.srv.realClock {
		c.timing.start = time.Now()
	}
}

// endBatch records the latency of the batch whose replies were just written, under each of its commands' classes,
// and starts the next batch's account. A batch answered from memory alone is timed one time in latencySampleMean
// on average, at random gaps, and then counts for the gap.
func (c *client) endBatch() {
	t := &c.timing
	if t.mask&^memoryClasses == 0 && (t.mask == 0 || t.sampledOut()) {
		return
	}
	c.timeBatch()
}

// sampledOut counts a memory-only batch towards the next timed one and reports whether this one is not timed;
// its counts are dropped then (the timed one counts for it).
func (t *batchTiming) sampledOut() bool {
	if t.skip--; t.skip > 0 {
		t.n[latHit], t.n[latLocal], t.mask = 0, 0, 0
		return true
	}
	return false
}

// timeBatch reads the clock and records the batch's latency; a memory-only batch counts for the gap it closes.
func (c *client) timeBatch() {
	t := &c.timing
	w := int64(1)
	if t.mask&^memoryClasses == 0 {
		w = int64(t.weight)
		t.nextGap()
	}
	start := c.seg.now
	if !c.srv.realClock {
		start = t.start
	}
	d := int64(time.Since(start))
	for m := t.mask; m != 0; m &= m - 1 {
		class := bits.TrailingZeros16(m)
		c.srv.metrics.latency[class].observe(d, int64(t.n[class])*w)
		t.n[class] = 0
	}
	t.mask = 0
}

// nextGap draws how many memory-only batches pass until the next timed one: 1 to 2*latencySampleMean-1, so the
// timed ones fall at random and not in step with a client's pattern.
func (t *batchTiming) nextGap() {
	if t.rand == 0 {
		t.rand = uint64(time.Now().UnixNano()) | 1
	}
	t.skip = randomGap(&t.rand, latencySampleMean)
	t.weight = t.skip
}

// randomGap advances the xorshift64 generator *x (a few cycles, no shared state) and draws from it a gap of 1 to
// 2*mean-1, mean on average: how many events pass until the next sampled one (hot-key reads, timed batches), drawn
// at random so that a client's fixed pattern does not have the same position sampled again and again.
func randomGap(x *uint64, mean uint64) int32 {
	*x ^= *x << 13
	*x ^= *x >> 7
	*x ^= *x << 17
	return int32(1 + *x%(2*mean-1))
}

// serverMetrics holds what the request path counts beyond Stats.
type serverMetrics struct {
	mu       sync.Mutex
	byPolicy map[string]*policyCounters // grows only: a counter must never go back after a reload
	none     *policyCounters
	calls    map[string]*atomic.Int64 // commands received, by table name; grows only, under mu

	started      time.Time    // when the server was created: INFO's featcache_uptime_in_seconds
	unknownCalls atomic.Int64 // commands neither Redis nor featcache knows
	latency      [numLatClasses]latHistogram

	upstream    *prometheus.HistogramVec
	upObservers [numUpClasses]prometheus.Observer

	accepted      atomic.Int64 // client connections accepted
	agedOut       atomic.Int64 // client connections closed by limits.max_conn_age
	slowCommands  atomic.Int64 // pipelines logged as slow
	reloadsOK     atomic.Int64
	reloadsFailed atomic.Int64
	lastReloadOK  atomic.Bool
	lastReload    atomic.Int64 // unix seconds of the last reload attempt
}

func newMetrics() *serverMetrics {
	m := &serverMetrics{byPolicy: map[string]*policyCounters{}, none: &policyCounters{name: noPolicy},
		calls: map[string]*atomic.Int64{}, started: time.Now()}
	m.upstream = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "featcache_upstream_duration_seconds",
		Help:    "Upstream round trips, by command class: read (cache fills), forward, write, transaction, pinned, blocking, refresh, warm.",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
	}, []string{"class"})
	for i, name := range upClassNames {
		m.upObservers[i] = m.upstream.WithLabelValues(name)
	}
	m.lastReloadOK.Store(true)
	return m
}

// counters returns the counters of the named policy, creating them on first use.
func (m *serverMetrics) counters(name string) *policyCounters {
	m.mu.Lock()
	defer m.mu.Unlock()
	pc := m.byPolicy[name]
	if pc == nil {
		pc = &policyCounters{name: name}
		m.byPolicy[name] = pc
	}
	return pc
}

// bindCalls gives every entry of a new command table the counter of its name, kept across tables, so that a
// table rebuilt (the upstream's COMMAND loaded late, a cluster detected) counts on, and its latency class.
func (m *serverMetrics) bindCalls(t *table) {
	m.mu.Lock()
	defer m.mu.Unlock()
	bind := func(cmd *command) {
		ctr := m.calls[cmd.name]
		if ctr == nil {
			ctr = new(atomic.Int64)
			m.calls[cmd.name] = ctr
		}
		cmd.calls = ctr
		cmd.lat = classLatency[cmd.class]
	}
	for _, cmd := range t.cmds {
		bind(cmd)
		for _, sub := range cmd.subs {
			bind(sub)
		}
	}
}

// commandCounts returns the number of commands received by name, those with none left out; unknownCommand
// counts the commands neither Redis nor featcache knows.
func (m *serverMetrics) commandCounts() map[string]int64 {
	m.mu.Lock()
	out := make(map[string]int64, 32)
	for name, ctr := range m.calls {
		if n := ctr.Load(); n > 0 {
			out[name] = n
		}
	}
	m.mu.Unlock()
	if n := m.unknownCalls.Load(); n > 0 {
		out[unknownCommand] = n
	}
	return out
}

// unknownCommand is the "command" label of featcache_commands_total for commands neither Redis nor featcache
// knows: their names are whatever clients send, so they share one label.
const unknownCommand = "(unknown)"

// all returns every policy's counters, those of keys without a policy last.
func (m *serverMetrics) all() []*policyCounters {
	m.mu.Lock()
	out := make([]*policyCounters, 0, len(m.byPolicy)+1)
	for _, pc := range m.byPolicy {
		out = append(out, pc)
	}
	m.mu.Unlock()
	return append(out, m.none)
}

// totals sums the results over every policy, and the stale-on-error serves.
func (m *serverMetrics) totals() (res [numResults]int64, staleOnError int64) {
	for _, pc := range m.all() {
		for i := range res {
			res[i] += pc.result(i)
		}
		staleOnError += pc.staleOnError.Load()
	}
	return res, staleOnError
}

// observeUpstream records one upstream round trip that began at start.
func (m *serverMetrics) observeUpstream(class int, start time.Time) {
	m.observeUpstreamTook(class, time.Since(start))
}

// observeUpstreamTook records one upstream round trip that took d.
func (m *serverMetrics) observeUpstreamTook(class int, d time.Duration) {
	m.upObservers[class].Observe(d.Seconds())
}

// roundTripStart returns when a segment's round trip starts, for roundTripTook. With the real clock that is one
// read of the clock batches are stamped with, whose reading after the round trip (the segment's new now) then
// also gives the round trip's length: two clock reads per round trip instead of four (time.Now reads two clocks).
// With an injected clock, which tests move at will, it is time.Now.
func (c *client) roundTripStart() time.Time {
	if c.srv.realClock {
		return c.srv.now()
	}
	return time.Now()
}

// roundTripTook returns how long the round trip that began at start took; the segment's clock has been read
// since it ended.
func (c *client) roundTripTook(start time.Time) time.Duration {
	if c.srv.realClock {
		return c.seg.now.Sub(start)
	}
	return time.Since(start)
}

// countersFor returns the counters of pol in the policy set, or those of keys without a policy.
func (ps *policySet) countersFor(pol *config.Policy) *policyCounters {
	if pol == nil {
		return ps.none
	}
	return ps.counters[pol.Index]
}
