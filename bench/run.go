package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// env is what every profile of one invocation shares.
type env struct {
	scratch     string // temporary directory: configurations, logs, the featcache binary
	featcache   string // featcache binary
	redisServer string // redis-server binary
	pin         pinning
	stop        *atomic.Bool // set on SIGINT/SIGTERM: phases end early and everything is stopped
	fcProfile   string       // if set, featcache's CPU profile over its last round is written here
	remote      remoteEnv    // how a profile with a remote delay makes Redis remote
}

type targetKind string

const (
	kindRedis     targetKind = "redis"
	kindFeatcache targetKind = "featcache"
	kindTwemproxy targetKind = "twemproxy"
	kindExternal  targetKind = "external"
	kindFloor     targetKind = "floor"
)

// liveTarget is a target while a profile runs.
type liveTarget struct {
	name  string
	kind  targetKind
	addr  string
	proc  *proc     // nil for an external endpoint: no CPU or RSS figures
	admin *respConn // featcache only: the connection CACHE STATS is read over
	pprof string    // featcache with -featcache-cpuprofile: its admin address serving /debug/pprof
	load  *loadTarget
	res   *targetResult
}

// sample is what is read from a target before and after a measured phase.
type sample struct {
	cpu   time.Duration
	stats map[string]int64 // CACHE STATS, featcache only
}

func (t *liveTarget) sample() (sample, error) {
	var s sample
	if t.proc != nil {
		cpu, err := procCPU(t.proc.pid())
		if err != nil {
			return s, fmt.Errorf("%s: %w", t.name, err)
		}
		s.cpu = cpu
	}
	if t.admin != nil {
		st, err := t.admin.cacheStats()
		if err != nil {
			return s, fmt.Errorf("%s: CACHE STATS: %w", t.name, err)
		}
		s.stats = st.m
	}
	return s, nil
}

// runProfile starts the servers of one profile, seeds Redis, drives every target through warm-up and the
// interleaved rounds, takes featcache's allocation and LRU figures, runs redis-benchmark if asked, and stops
// everything it started.
func runProfile(e *env, s settings) (_ *profileResult, err error) {
	pr := &profileResult{Name: s.Profile, Title: profileTitles[s.Profile], Settings: s, Command: s.commandLine()}
	tag := s.Profile // the progress lines' prefix; a delayed profile's names how Redis was made remote
	logf := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "[%s] "+format+"\n", append([]any{tag}, args...)...)
	}
	dir, err := os.MkdirTemp(e.scratch, s.Profile+"-")
	if err != nil {
		return nil, err
	}
	f := &fleet{dir: dir, pin: e.pin}
	defer f.stopAll()

	redisAddr, redisProc, err := f.startRedis(e.redisServer)
	if err != nil {
		return nil, err
	}

	if err := seedProfile(s, redisAddr, pr, logf); err != nil {
		return nil, err
	}

	// The delay goes in after seeding, which would only be slower through it, and before featcache starts.
	upstream := redisAddr
	var relayProc *proc
	if s.RemoteDelay > 0 {
		rs, err := makeRemote(e, f, redisAddr, s.RemoteDelay, s.NetemJitter)
		if err != nil {
			return nil, err
		}
		defer rs.close()
		upstream, relayProc, pr.Remote = rs.addr, rs.relay, rs.res
		tag = s.Profile + " " + rs.res.Method
	}

	// featcache and twemproxy start after seeding, so the seed's writes are not a flood of invalidations.
	targets := []*liveTarget{{name: "redis", kind: kindRedis, addr: upstream, proc: redisProc}}
	fcAddr, fcProc, fcAdmin, err := f.startFeatcache(e.featcache, upstream, s.MaxMemory.bytes, e.fcProfile != "")
	if err != nil {
		return nil, err
	}
	if pr.Remote != nil {
		rtt, err := measureRTT(fcAddr)
		if err != nil {
			return nil, err
		}
		pr.Remote.FeatcacheRTTus = us(rtt)
		logf("remote store: %s", pr.Remote.describe())
	}
	targets = append(targets, &liveTarget{name: "featcache", kind: kindFeatcache, addr: fcAddr, proc: fcProc, pprof: fcAdmin})
	twemproxy, err := findTwemproxy(s.Twemproxy)
	if err != nil {
		return nil, err
	}
	if twemproxy != "" {
		addr, p, err := f.startTwemproxy(twemproxy, upstream)
		if err != nil {
			return nil, err
		}
		targets = append(targets, &liveTarget{name: "twemproxy", kind: kindTwemproxy, addr: addr, proc: p})
	}
	if s.Floor {
		if err := startFloorTarget(f, s, false, &targets, logf); err != nil {
			return nil, err
		}
	}
	if s.FloorEpoll && !haveEpollFloor {
		logf("bench: no epoll floor on this platform (it needs Linux's epoll)")
	} else if s.FloorEpoll {
		if err := startFloorTarget(f, s, true, &targets, logf); err != nil {
			return nil, err
		}
	}
	if s.Cluster > 0 {
		t, err := startClusterTarget(e, s, f, pr, logf)
		if err != nil {
			return nil, err
		}
		targets = append(targets, t)
	}
	for _, t := range s.Targets {
		targets = append(targets, &liveTarget{name: t.Name, kind: kindExternal, addr: t.Addr})
	}
	return drive(e, s, pr, targets, relayProc, logf)
}

// seedProfile seeds the workload's keys into redis-server at redisAddr (recording it in pr.Seed) and through each
// external target's own address (a proxy passes the writes to its store, a separate server gets its own copy), with
// redis-benchmark's keys too when it runs.
func seedProfile(s settings, redisAddr string, pr *profileResult, logf func(string, ...any)) error {
	w := &s.Workload
	logf("seeding %d keys into redis-server", w.Keys)
	took, bytes, err := seedRedis(redisAddr, w)
	if err != nil {
		return err
	}
	pr.Seed = seedResult{Keys: w.Keys, Bytes: bytes, Seconds: took.Seconds()}
	logf("seeded %d keys, %.0f MiB of values, in %.1fs", w.Keys, float64(bytes)/(1<<20), took.Seconds())
	if s.RedisBenchmark {
		if _, _, err := seedKeys(redisAddr, s.RBKeys, benchmarkKey, func(int) []byte { return valuePool[:1024] }); err != nil {
			return err
		}
	}
	for _, t := range s.Targets {
		logf("seeding %d keys through %s (%s)", w.Keys, t.Name, t.Addr)
		if _, _, err := seedRedis(t.Addr, w); err != nil {
			return err
		}
		if s.RedisBenchmark {
			if _, _, err := seedKeys(t.Addr, s.RBKeys, benchmarkKey, func(int) []byte { return valuePool[:1024] }); err != nil {
				return err
			}
		}
	}
	return nil
}

// drive runs a profile's measured part on targets that are up and seeded: opening the load connections, prefill,
// warm-up, the interleaved rounds, featcache's allocation and LRU figures, and redis-benchmark if asked.
func drive(e *env, s settings, pr *profileResult, targets []*liveTarget, relayProc *proc,
	logf func(string, ...any)) (_ *profileResult, err error) {
	w := &s.Workload
	for _, t := range targets {
		if t.load, err = openLoadTarget(t.name, t.addr, w, s.Conns); err != nil {
			return nil, err
		}
		defer t.load.close()
		if t.kind == kindFeatcache {
			if t.admin, err = dialRESP(t.addr, 5*time.Second); err != nil {
				return nil, err
			}
			defer t.admin.Close()
		}
		t.res = &targetResult{Name: t.name, Kind: string(t.kind), Addr: t.addr}
		pr.Targets = append(pr.Targets, t.res)
	}

	if s.Prefill {
		for _, t := range targets {
			if t.kind == kindRedis || t.kind == kindTwemproxy || t.kind == kindFloor {
				continue // nothing to warm: they hold no copies, or all of them
			}
			t0 := time.Now()
			bad, err := t.load.getAll(w.Keys, w.appendPrefillKey)
			if err != nil {
				return nil, err
			}
			logf("prefill %s: GET of all %d keys in %.1fs", t.name, w.Keys, time.Since(t0).Seconds())
			if bad > 0 {
				return nil, fmt.Errorf("%s: %d of %d prefill GETs returned nil or an error", t.name, bad, w.Keys)
			}
		}
	}
	for _, t := range targets {
		if s.Warmup > 0 {
			logf("warm-up %s for %v", t.name, s.Warmup)
		}
		if _, err := t.load.run(s.Warmup, 0, s.Pipeline, e.stop); err != nil {
			return nil, err
		}
	}

	for round := 1; round <= s.Rounds && !e.stop.Load(); round++ {
		for _, t := range targets {
			if err := measureRound(e, s, targets, t, round, relayProc, logf); err != nil {
				return nil, err
			}
		}
	}
	if e.stop.Load() {
		return nil, errors.New("interrupted")
	}
	for _, t := range targets {
		t.res.summarize()
		if t.proc != nil {
			// The peak of the measured load: read before the allocation phase and redis-benchmark add their own.
			t.res.PeakRSS = procStatus(t.proc.pid(), "VmHWM")
			t.res.EndRSS = procStatus(t.proc.pid(), "VmRSS")
		}
	}

	if len(s.Open.Loads) > 0 {
		if pr.Open, err = openPhases(e, s, targets, logf); err != nil {
			return nil, err
		}
	}
	for _, t := range targets {
		if t.kind == kindFeatcache {
			if err := featcacheFigures(e, s, pr, targets, t, logf); err != nil {
				return nil, err
			}
		}
	}

	if s.RedisBenchmark {
		if pr.RedisBenchmark, err = redisBenchmarkSuite(e, s, targets, logf); err != nil {
			return nil, err
		}
	}
	return pr, nil
}

// measureRound measures target t for one round (round of s.Rounds): its load, CPU and counters, the CPU the other
// targets and the relay (relayProc, if any) used meanwhile, and featcache's CPU profile in the last round when it is
// asked for.
func measureRound(e *env, s settings, targets []*liveTarget, t *liveTarget, round int, relayProc *proc,
	logf func(string, ...any)) error {
	others := otherCPU(targets, t)
	var relay0 time.Duration
	if relayProc != nil {
		relay0, _ = procCPU(relayProc.pid())
	}
	before, err := t.sample()
	if err != nil {
		return err
	}
	var profiled chan error
	if t.pprof != "" && round == s.Rounds && e.fcProfile != "" && s.Duration >= time.Second {
		profiled = make(chan error, 1)
		go func() {
			profiled <- fetchProfile(t.pprof, s.Duration, profilePath(e.fcProfile, s.Profile))
		}()
	}
	ph, err := t.load.run(s.Duration, s.Requests, s.Pipeline, e.stop)
	if err != nil {
		return err
	}
	if profiled != nil {
		if err := <-profiled; err != nil {
			logf("featcache CPU profile: %v", err)
		} else {
			logf("featcache CPU profile of round %d written to %s", round, profilePath(e.fcProfile, s.Profile))
		}
	}
	after, err := t.sample()
	if err != nil {
		return err
	}
	others()
	if relayProc != nil {
		if relay1, err := procCPU(relayProc.pid()); err == nil {
			t.res.RelayCPU += (relay1 - relay0).Seconds()
		}
	}
	r := newRound(ph, before, after, t.proc != nil)
	t.res.Rounds = append(t.res.Rounds, r)
	logf("round %d/%d %-10s %s", round, s.Rounds, t.name, r.progress())
	return nil
}

// openPhases runs the open-loop phases over every target, at rates that are shares of direct Redis's median
// closed-loop throughput.
func openPhases(e *env, s settings, targets []*liveTarget, logf func(string, ...any)) (*openLoopResult, error) {
	var capacity float64
	var ots []openTarget
	for _, t := range targets {
		if t.kind == kindRedis {
			capacity = t.res.Throughput
		}
		ots = append(ots, openTarget{name: t.name, addr: t.addr, featcache: t.kind == kindFeatcache, sample: t.sample})
	}
	d, rounds := s.Open.duration(s), s.Open.rounds(s)
	logf("open loop: %s of direct Redis's %.0f req/s, %d rounds of %v per target and rate", s.Open.Loads.String(),
		capacity, rounds, d)
	return runOpenLoop(s.Open, d, rounds, capacity, ots, kvOpen{&s.Workload}, e.stop, logf)
}

// featcacheFigures reads featcache target t's GC figures and, for the main featcache, runs the allocation phase and
// simulates an exact LRU over the same trace (into pr.LRU).
func featcacheFigures(e *env, s settings, pr *profileResult, targets []*liveTarget, t *liveTarget, logf func(string, ...any)) error {
	w := &s.Workload
	st, err := t.admin.cacheStats()
	if err != nil {
		return err
	}
	t.res.GC = &gcResult{PauseP99us: st.m["gc_pause_p99_us"], PauseMaxUs: st.m["gc_pause_max_us"],
		Cycles: t.res.Cache.GCCycles, RSSPeakReported: st.m["rss_peak_bytes"]}
	if t.name != "featcache" {
		return nil // featcache-cluster: its hit ratio is in the table; the LRU and allocations are the main one's
	}
	if s.AllocRequests > 0 {
		logf("allocation phase: %d GETs of cached keys through featcache", s.AllocRequests)
		if t.res.Allocs, err = allocPhase(t, w, s, e.stop); err != nil {
			return err
		}
	}
	if t.res.Cache.Reads() > 0 {
		logf("simulating an exact LRU of %s over the same trace", s.MaxMemory)
		var order []*loadTarget
		writers := map[*loadTarget]bool{}
		for _, o := range targets {
			order = append(order, o.load)
			writers[o.load] = o.kind == kindRedis || o.kind == kindTwemproxy
		}
		l := simulateLRU(w, order, t.load, writers, s.MaxMemory.bytes, s.Prefill)
		l.FeatcacheReads = t.res.Cache.Reads()
		l.FeatcacheRatio = t.res.Cache.HitRatio
		l.FeatcacheFetchRatio = 1 - float64(t.res.Cache.UpstreamReads)/float64(l.FeatcacheReads)
		pr.LRU = &l
	}
	return nil
}

// otherCPU reads the CPU time of every target but t, and returns a function that adds what each used since to
// its BackgroundCPU: the cost of being near while another target is measured (for featcache, the invalidations
// that other targets' writes send it), which competes with the measured server for the same core.
func otherCPU(targets []*liveTarget, t *liveTarget) func() {
	before := make(map[*liveTarget]time.Duration)
	for _, o := range targets {
		if o != t && o.proc != nil {
			before[o], _ = procCPU(o.proc.pid())
		}
	}
	return func() {
		for o, b := range before {
			if now, err := procCPU(o.proc.pid()); err == nil {
				o.res.BackgroundCPU += (now - b).Seconds()
			}
		}
	}
}

// newRound turns a phase and the samples around it into a round's figures.
func newRound(ph phaseResult, before, after sample, hasProc bool) roundResult {
	r := roundResult{
		Requests: ph.Requests, Seconds: ph.Elapsed.Seconds(),
		P50us: pct(ph, 50), P95us: pct(ph, 95), P99us: pct(ph, 99), P999us: pct(ph, 99.9),
		MaxUs: float64(ph.Hist.Max()) / 1e3, MeanUs: ph.Hist.Mean() / 1e3,
		Nils: ph.Nils, Errors: ph.Errors, FirstError: ph.First,
	}
	if ph.Elapsed > 0 {
		r.Throughput = float64(ph.Requests) / ph.Elapsed.Seconds()
		r.ClientCPUShare = ph.ClientCPU.Seconds() / ph.Elapsed.Seconds()
	}
	if hasProc {
		r.CPUSeconds = (after.cpu - before.cpu).Seconds()
	}
	if after.stats != nil {
		d := func(name string) int64 { return after.stats[name] - before.stats[name] }
		r.Cache = &cacheDelta{Hits: d("hits"), StaleHits: d("stale_hits"), StaleOnError: d("stale_on_error"),
			Misses: d("misses"), Bypass: d("bypass"), UpstreamReads: d("upstream_reads"), Forwarded: d("forwarded"),
			Evictions: d("evictions"), GCCycles: d("gc_cycles"), Entries: after.stats["entries"]}
	}
	return r
}

func pct(ph phaseResult, q float64) float64 { return float64(ph.Hist.ValueAtQuantile(q)) / 1e3 }

func us(d time.Duration) float64 { return float64(d) / 1e3 }

// measureRTT is the median of 200 sequential PINGs: the round trip to a server and back (featcache answers PING
// itself).
func measureRTT(addr string) (time.Duration, error) {
	med, _, err := measureRTTs(addr)
	return med, err
}

// measureRTTs is measureRTT with the fastest of the 200 round trips too.
func measureRTTs(addr string) (median, fastest time.Duration, err error) {
	rc, err := dialRESP(addr, 5*time.Second)
	if err != nil {
		return 0, 0, err
	}
	defer rc.Close()
	rtts := make([]time.Duration, 200)
	for i := range rtts {
		start := time.Now()
		if _, err := rc.do("PING"); err != nil {
			return 0, 0, err
		}
		rtts[i] = time.Since(start)
	}
	slices.Sort(rtts)
	return rtts[len(rtts)/2], rtts[0], nil
}

// allocPhase measures featcache's heap allocations per cached GET over the bench's own connections: it GETs
// min(keys, 1000) keys once so they are cached, reads CACHE STATS four times back to back (the median difference
// is what one CACHE STATS costs), runs the GETs, reads CACHE STATS again, and divides the alloc_objects
// difference, less one CACHE STATS, by the number of GETs. Every GET of the phase must be a hit; the result says
// if one was not.
func allocPhase(t *liveTarget, w *workload, s settings, stop *atomic.Bool) (*allocResult, error) {
	n := min(w.Keys, 1000)
	restore := t.load.cycle(n)
	defer restore()
	if _, err := t.load.getAll(n, w.appendKey); err != nil {
		return nil, err
	}
	// The runtime counts small allocations a span at a time, so one pair of calls can be off by a span's worth:
	// take the median of three pairs.
	var a [4]featcacheStats
	for i := range a {
		var err error
		if a[i], err = t.admin.cacheStats(); err != nil {
			return nil, err
		}
	}
	costs := []int64{}
	for i := 1; i < len(a); i++ {
		costs = append(costs, a[i].m["alloc_objects"]-a[i-1].m["alloc_objects"])
	}
	slices.Sort(costs)
	statsCost, a2 := costs[1], a[3]
	ph, err := t.load.run(0, s.AllocRequests, s.Pipeline, stop)
	if err != nil {
		return nil, err
	}
	b, err := t.admin.cacheStats()
	if err != nil {
		return nil, err
	}
	res := &allocResult{
		Requests:        ph.Requests,
		Keys:            n,
		Allocs:          b.m["alloc_objects"] - a2.m["alloc_objects"] - statsCost,
		StatsCallAllocs: statsCost,
		Hits:            b.m["hits"] - a2.m["hits"],
		Misses:          b.m["misses"] - a2.m["misses"] + b.m["stale_hits"] - a2.m["stale_hits"],
	}
	if ph.Requests > 0 {
		res.PerGet = float64(res.Allocs) / float64(ph.Requests)
	}
	return res, nil
}

// redisBenchmarkSuite runs redis-benchmark's GET -P 1, GET -P 16 and SET tests against every target, rounds
// times, interleaving targets within each test. Before every GET test featcache is sent a GET of every key
// redis-benchmark will read, since the SETs of the round before (through any target) invalidated them.
func redisBenchmarkSuite(e *env, s settings, targets []*liveTarget, logf func(string, ...any)) ([]*rbResult, error) {
	var results []*rbResult
	byKey := map[string]*rbResult{}
	for round := 1; round <= s.RBRounds && !e.stop.Load(); round++ {
		for _, test := range rbTests {
			for _, t := range targets {
				if t.kind == kindFloor && test.Command != "get" {
					continue // the floors' SET stores in memory: no reference for a write
				}
				if t.kind == kindFeatcache && test.Command == "get" {
					if _, err := t.load.getAll(s.RBKeys, benchmarkKey); err != nil {
						return nil, err
					}
				}
				args := rbArgs(t.addr, test, s.RBKeys, s.RBRequests)
				run, err := runRedisBenchmark(e.pin, args)
				if err != nil {
					return nil, err
				}
				k := test.Name + "|" + t.name
				r := byKey[k]
				if r == nil {
					r = &rbResult{Test: test.Name, Target: t.name, Command: strings.Join(args, " ")}
					byKey[k] = r
					results = append(results, r)
				}
				r.Runs = append(r.Runs, run)
				logf("redis-benchmark %d/%d %-16s %-10s %9.0f req/s  p50 %.3fms p99 %.3fms",
					round, s.RBRounds, test.Name, t.name, run.RPS, run.P50Ms, run.P99Ms)
			}
		}
	}
	for _, r := range results {
		r.RPS = median(r.Runs, func(x rbRun) float64 { return x.RPS })
		r.P50Ms = median(r.Runs, func(x rbRun) float64 { return x.P50Ms })
		r.P99Ms = median(r.Runs, func(x rbRun) float64 { return x.P99Ms })
	}
	return results, nil
}

// profilePath names the featcache CPU profile of a profile run: the profile's name before the file name.
func profilePath(path, profile string) string {
	return filepath.Join(filepath.Dir(path), profile+"."+filepath.Base(path))
}

// fetchProfile reads featcache's CPU profile over d from its admin listener (admin_pprof) into path.
func fetchProfile(admin string, d time.Duration, path string) error {
	secs := max(int(d/time.Second), 1)
	return saveURL("http://"+admin+"/debug/pprof/profile?seconds="+strconv.Itoa(secs), path)
}
