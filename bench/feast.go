package main

import (
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"featcache/feast"
)

// runFeast is the Feast workload: entities stored exactly in Feast's Redis layout, read the way Feast's online
// store reads them, through featcache and straight from Redis, side by side.
//
//	go run ./bench feast [-entities N] [-views V] [-features F] [-zipf S] [-batch B] [-conns C] [-duration D] [-rounds R]
//
// Each entity is one hash under its serialized entity key with the project as a suffix, holding F features of each
// of V feature views (murmur3 field ids, serialized ValueProto doubles) and each view's _ts:<view>. A request is
// what Feast sends for one feature view and a batch of B entities: a pipeline of B HMGETs, each naming the view's
// features and its _ts field; entities are drawn with a Zipf distribution, views uniformly. Rounds alternate
// between the targets (medians reported). featcache runs with a feast section caching every view.
func runFeast(args []string) error {
	o, err := parseFeastFlags(args)
	if err != nil {
		return err
	}
	root := moduleRoot()
	if os.Getenv(envScratch) == "" && o.remoteDelay > 0 && o.delayMode != delayRelay {
		// The same re-execution as the profiles', without pinning: the Feast runs share both cores.
		if handled, err := relaunch(append([]string{"feast"}, args...), pinning{}, true, o.delayMode, o.featcache, root); handled || err != nil {
			return err
		}
	}
	stop, release := stopOnSignal("feast")
	defer release()

	lab, err := openLab("featcache-feast-", o.featcache, root, true)
	if err != nil {
		return err
	}
	defer lab.close()
	f, bin, redisAddr, redisProc := lab.fleet, lab.bin, lab.redisAddr, lab.redisProc
	fw := newFeastWorkload(o.entities, o.views, o.features)
	start := time.Now()
	if err := fw.seed(redisAddr); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "feast: seeded %d entities x %d views x %d features in %v\n", o.entities, o.views, o.features, time.Since(start).Round(time.Millisecond))
	tag := "feast"
	var remote *remoteResult
	if o.remoteDelay > 0 {
		rs, err := makeRemote(&env{remote: remoteFromEnv()}, f, redisAddr, o.remoteDelay, o.jitter)
		if err != nil {
			return err
		}
		defer rs.close()
		redisAddr, remote, tag = rs.addr, rs.res, "feast "+rs.res.Method
	}
	featcacheAddr, featcacheProc, err := f.startFeatcacheConfig("featcache", bin, redisAddr, fw.config())
	if err != nil {
		return err
	}
	if remote != nil {
		rtt, err := measureRTT(featcacheAddr)
		if err != nil {
			return err
		}
		remote.FeatcacheRTTus = us(rtt)
		fmt.Fprintf(os.Stderr, "%s: remote store: %s\n", tag, remote.describe())
	}

	targets := []feastTarget{{"redis", redisAddr, redisProc}, {"featcache", featcacheAddr, featcacheProc}}
	results, err := o.closedRounds(fw, targets, tag, stop)
	if err != nil {
		return err
	}
	if stop.Load() {
		return errors.New("interrupted")
	}
	var openRes *openLoopResult
	if len(o.open.Loads) > 0 {
		if openRes, err = o.openRounds(fw, targets, results["redis"], tag, stop); err != nil {
			return err
		}
	}
	return printTable(o.markdown(targets, results, remote, openRes), o.out)
}

// feastOptions are the feast sub-command's flags.
type feastOptions struct {
	entities, views, features int
	zipf                      float64
	batch, conns              int
	duration                  time.Duration
	rounds                    int
	out                       string
	remoteDelay, jitter       time.Duration
	delayMode                 string
	open                      openSettings
	featcache                 string
}

// parseFeastFlags parses the feast sub-command's command line.
func parseFeastFlags(args []string) (*feastOptions, error) {
	o := &feastOptions{open: openSettings{Conns: 64, Mark: 4}}
	fs := flag.NewFlagSet("feast", flag.ContinueOnError)
	fs.IntVar(&o.entities, "entities", 100000, "entities (one hash each)")
	fs.IntVar(&o.views, "views", 2, "feature views per entity")
	fs.IntVar(&o.features, "features", 8, "features per view")
	fs.Float64Var(&o.zipf, "zipf", 1.1, "Zipf exponent of the entity choice (> 1)")
	fs.IntVar(&o.batch, "batch", 10, "entities per request (HMGETs per pipeline)")
	fs.IntVar(&o.conns, "conns", 32, "client connections")
	fs.DurationVar(&o.duration, "duration", 3*time.Second, "length of each round per target")
	fs.IntVar(&o.rounds, "rounds", 3, "rounds (targets alternate within each)")
	fs.StringVar(&o.out, "out", "", "also write the Markdown table to this file")
	fs.DurationVar(&o.remoteDelay, "remote-delay", 0, "Redis this far away each way (a store in another zone), for both targets: netem "+
		"in the bench's own network namespace, or the relay (-delay-mode)")
	fs.DurationVar(&o.remoteDelay, "relay-delay", 0, "the same as -remote-delay (its former name)")
	fs.DurationVar(&o.jitter, "netem-jitter", 0, "with netem, jitter added to -remote-delay (netem may then reorder a stream's packets)")
	fs.StringVar(&o.delayMode, "delay-mode", delayAuto, "how -remote-delay is made: netem, relay, or auto (netem where the kernel has it)")
	fs.Var(&o.open.Loads, "open-loads", "open-loop phases after the rounds, at these rates: shares of direct Redis's closed-loop "+
		"requests/s (25%) or requests per second (500), comma-separated; empty: none")
	fs.DurationVar(&o.open.Duration, "open-duration", 0, "length of each target's open-loop phase per rate and round (0: -duration)")
	fs.IntVar(&o.open.Rounds, "open-rounds", 0, "open-loop rounds (0: -rounds)")
	fs.IntVar(&o.open.Conns, "open-conns", o.open.Conns, "connections per target in the open-loop phases (a pool)")
	fs.IntVar(&o.open.Mark, "open-mark", o.open.Mark, "every N-th open-loop request to featcache is preceded by CACHE EXPLAIN of its "+
		"entities' keys, to classify it as hit, stale or miss (0: none)")
	fs.StringVar(&o.featcache, "featcache", "", "featcache binary, or the module directory to build it from (default: this module)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if err := errors.Join(checkDelayMode(o.delayMode), o.open.validate()); err != nil {
		return nil, err
	}
	return o, nil
}

// feastTarget is a server the Feast workload is measured against: redis-server directly, or featcache.
type feastTarget struct {
	name, addr string
	proc       *proc
}

// closedRounds runs the closed-loop rounds, the targets alternating within each, and returns each target's rounds
// by name. featcache's hit ratio comes from its CACHE STATS before and after each of its rounds.
func (o *feastOptions) closedRounds(fw *feastWorkload, targets []feastTarget, tag string, stop *atomic.Bool) (map[string][]feastRound, error) {
	featcacheAddr := targets[1].addr
	results := map[string][]feastRound{}
	for r := 0; r < o.rounds; r++ {
		for _, t := range targets {
			before, _ := cacheStats(featcacheAddr)
			res, err := fw.drive(t.addr, o.conns, o.batch, o.zipf, o.duration, uint64(r), stop)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", t.name, err)
			}
			if t.name == "featcache" {
				after, _ := cacheStats(featcacheAddr)
				hits := float64(after.m["hits"] - before.m["hits"])
				misses := float64(after.m["misses"] - before.m["misses"])
				res.hitRatio = hits / math.Max(1, hits+misses)
			}
			results[t.name] = append(results[t.name], res)
			fmt.Fprintf(os.Stderr, "%s: round %d %s: %.0f req/s (%d HMGETs each), p99 %v\n", tag, r+1, t.name, res.rps, o.batch, res.p99)
		}
	}
	return results, nil
}

// openRounds runs the open-loop phases, at rates that are shares of direct Redis's median closed-loop throughput
// (redisRounds).
func (o *feastOptions) openRounds(fw *feastWorkload, targets []feastTarget, redisRounds []feastRound, tag string, stop *atomic.Bool) (*openLoopResult, error) {
	var rps []float64
	for _, r := range redisRounds {
		rps = append(rps, r.rps)
	}
	capacity := median(rps, func(x float64) float64 { return x })
	d, n := o.open.Duration, o.open.Rounds
	if d <= 0 {
		d = o.duration
	}
	if n <= 0 {
		n = o.rounds
	}
	cpu := func(p *proc) func() (sample, error) {
		return func() (sample, error) {
			c, err := procCPU(p.pid())
			return sample{cpu: c}, err
		}
	}
	redis, fc := targets[0], targets[1]
	ots := []openTarget{{name: "redis", addr: redis.addr, sample: cpu(redis.proc)},
		{name: "featcache", addr: fc.addr, featcache: true, sample: func() (sample, error) {
			s, err := cpu(fc.proc)()
			if err != nil {
				return s, err
			}
			st, err := cacheStats(fc.addr)
			s.stats = st.m
			return s, err
		}}}
	logf := func(format string, args ...any) { fmt.Fprintf(os.Stderr, tag+": "+format+"\n", args...) }
	return runOpenLoop(o.open, d, n, capacity, ots, feastOpen{w: fw, batch: o.batch, zipf: o.zipf}, stop, logf)
}

// markdown renders the results: the workload, the remote store if any, a table of the targets' medians, and the
// open-loop tables.
func (o *feastOptions) markdown(targets []feastTarget, results map[string][]feastRound, remote *remoteResult, openRes *openLoopResult) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Feast workload: %d entities x %d views x %d features, Zipf %.2f, %d entities per request "+
		"(one pipelined HMGET each), %d connections, %d rounds of %v per target (medians)",
		o.entities, o.views, o.features, o.zipf, o.batch, o.conns, o.rounds, o.duration)
	b.WriteString(".\n\n")
	if remote != nil {
		remote.markdown(&b)
	}
	b.WriteString("| target | requests/s | HMGETs/s | p50 | p99 | p99.9 | hit ratio (HMGETs) |\n|---|--:|--:|--:|--:|--:|--:|\n")
	for _, t := range targets {
		rs := results[t.name]
		med := func(get func(feastRound) float64) float64 {
			v := make([]float64, len(rs))
			for i, r := range rs {
				v[i] = get(r)
			}
			sort.Float64s(v)
			return v[len(v)/2]
		}
		hit := "-"
		if t.name == "featcache" {
			hit = fmt.Sprintf("%.1f%%", 100*med(func(r feastRound) float64 { return r.hitRatio }))
		}
		rps := med(func(r feastRound) float64 { return r.rps })
		fmt.Fprintf(&b, "| %s | %.0f | %.0f | %s | %s | %s | %s |\n", t.name, rps, rps*float64(o.batch),
			fmtDur(time.Duration(med(func(r feastRound) float64 { return float64(r.p50) }))),
			fmtDur(time.Duration(med(func(r feastRound) float64 { return float64(r.p99) }))),
			fmtDur(time.Duration(med(func(r feastRound) float64 { return float64(r.p999) }))), hit)
	}
	b.WriteString("\n")
	if openRes != nil {
		openRes.markdown(&b, fmt.Sprintf("requests of %d HMGETs", o.batch))
	}
	return b.String()
}

// feastWorkload is the key space: entity i's key and each view's fields.
type feastWorkload struct {
	entities int
	views    []string
	fields   [][][]byte // per view: the features' field ids, then "_ts:<view>"
	project  string
}

func newFeastWorkload(entities, views, features int) *feastWorkload {
	w := &feastWorkload{entities: entities, project: "bench_project"}
	for v := 0; v < views; v++ {
		name := fmt.Sprintf("view_%d", v)
		w.views = append(w.views, name)
		var fs [][]byte
		for f := 0; f < features; f++ {
			fs = append(fs, feast.FieldID(name, fmt.Sprintf("feature_%d", f)))
		}
		w.fields = append(w.fields, append(fs, []byte("_ts:"+name)))
	}
	return w
}

func (w *feastWorkload) key(i int) []byte {
	return feast.AppendKey(nil, w.project, []string{"entity_id"}, []feast.Value{feast.Int64(int64(i))})
}

// config is featcache's configuration for the workload: the project's views cached, tracking on.
func (w *feastWorkload) config() string {
	var b strings.Builder
	fmt.Fprintf(&b, "feast:\n  project: %s\n  soft_ttl: 5m\n  hard_ttl: 30m\n  feature_views:\n", w.project)
	for v, name := range w.views {
		var feats []string
		for f := 0; f < len(w.fields[v])-1; f++ {
			feats = append(feats, fmt.Sprintf("feature_%d", f))
		}
		fmt.Fprintf(&b, "    - {name: %s, features: [%s], soft_ttl: 5m, hard_ttl: 30m}\n", name, strings.Join(feats, ", "))
	}
	return b.String()
}

// seed writes every entity's hash as Feast's materialization does, in pipelines of HSETs.
func (w *feastWorkload) seed(addr string) error {
	rc, err := dialRESP(addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer rc.Close()
	ts := feast.AppendTimestamp(nil, time.Now())
	const pipeline = 256
	for start := 0; start < w.entities; start += pipeline {
		n := min(pipeline, w.entities-start)
		for i := start; i < start+n; i++ {
			args := [][]byte{[]byte("HSET"), w.key(i)}
			for v := range w.views {
				for f, field := range w.fields[v] {
					val := binary.LittleEndian.AppendUint64([]byte{0x29}, math.Float64bits(float64(i*31+f)))
					if f == len(w.fields[v])-1 {
						val = ts
					}
					args = append(args, field, val)
				}
			}
			rc.appendArgs(args...)
		}
		if err := rc.flush(); err != nil {
			return err
		}
		for i := 0; i < n; i++ {
			if kind, msg, err := rc.skipReply(); err != nil || kind == replyError {
				return fmt.Errorf("seeding: %v %s", err, msg)
			}
		}
	}
	return nil
}

type feastRound struct {
	rps            float64
	p50, p99, p999 time.Duration
	hitRatio       float64
}

// drive runs the load against addr for d: conns connections, each a closed loop of requests (a pipeline of batch
// HMGETs of one view), and returns the throughput in requests and their latency.
func (w *feastWorkload) drive(addr string, conns, batch int, s float64, d time.Duration, round uint64,
	stop *atomic.Bool) (feastRound, error) {
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		lat      []time.Duration
		requests atomic.Int64
		firstErr error
	)
	deadline := time.Now().Add(d)
	for c := 0; c < conns; c++ {
		rc, err := dialRESP(addr, 5*time.Second)
		if err != nil {
			return feastRound{}, err
		}
		wg.Add(1)
		go func(c int, rc *respConn) {
			defer wg.Done()
			defer rc.Close()
			rng := rand.New(rand.NewPCG(round, uint64(c)))
			zipf := rand.NewZipf(rng, s, 1, uint64(w.entities-1))
			var mine []time.Duration
			for time.Now().Before(deadline) && !stop.Load() {
				v := rng.IntN(len(w.views))
				for b := 0; b < batch; b++ {
					rc.appendArgs(append([][]byte{[]byte("HMGET"), w.key(int(zipf.Uint64()))}, w.fields[v]...)...)
				}
				start := time.Now()
				if err := rc.flush(); err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
					return
				}
				for b := 0; b < batch; b++ {
					if kind, msg, err := rc.skipReply(); err != nil || kind == replyError {
						mu.Lock()
						firstErr = fmt.Errorf("HMGET: %v %s", err, msg)
						mu.Unlock()
						return
					}
				}
				mine = append(mine, time.Since(start))
				requests.Add(1)
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}(c, rc)
	}
	wg.Wait()
	if firstErr != nil {
		return feastRound{}, firstErr
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	q := func(p float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, int(p*float64(len(lat))))]
	}
	return feastRound{rps: float64(requests.Load()) / d.Seconds(), p50: q(0.5), p99: q(0.99), p999: q(0.999)}, nil
}

// feastOpen is the Feast workload in open-loop phases: a request is one view's HMGETs of batch entities, in one
// pipeline.
type feastOpen struct {
	w     *feastWorkload
	batch int
	zipf  float64
}

func (f feastOpen) draw(seed uint64) func([]uint32) ([]uint32, int) {
	rng := rand.New(rand.NewPCG(seed, 0xfea57))
	zipf := rand.NewZipf(rng, f.zipf, 1, uint64(f.w.entities-1))
	return func(keys []uint32) ([]uint32, int) {
		view := rng.IntN(len(f.w.views))
		for range f.batch {
			keys = append(keys, uint32(zipf.Uint64()))
		}
		return keys, view
	}
}

func (f feastOpen) appendRequest(rc *respConn, r *openRequest) int {
	fields := f.w.fields[r.op]
	for _, e := range r.keys {
		rc.appendArgs(append([][]byte{[]byte("HMGET"), f.w.key(int(e))}, fields...)...)
	}
	return len(r.keys)
}

// appendMark asks for the state of each entity's _ts field of the view: featcache fills a view's fields of an
// entity together, so it stands for the HMGET.
func (f feastOpen) appendMark(rc *respConn, r *openRequest) int {
	fields := f.w.fields[r.op]
	for _, e := range r.keys {
		rc.appendArgs([]byte("CACHE"), []byte("EXPLAIN"), f.w.key(int(e)), fields[len(fields)-1])
	}
	return len(r.keys)
}
