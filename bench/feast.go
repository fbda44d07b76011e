package main

import (
	"encoding/binary"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"featcache/policy"
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
	fs := flag.NewFlagSet("feast", flag.ContinueOnError)
	entities := fs.Int("entities", 100000, "entities (one hash each)")
	views := fs.Int("views", 2, "feature views per entity")
	features := fs.Int("features", 8, "features per view")
	zipfS := fs.Float64("zipf", 1.1, "Zipf exponent of the entity choice (> 1)")
	batch := fs.Int("batch", 10, "entities per request (HMGETs per pipeline)")
	conns := fs.Int("conns", 32, "client connections")
	duration := fs.Duration("duration", 3*time.Second, "length of each round per target")
	rounds := fs.Int("rounds", 3, "rounds (targets alternate within each)")
	out := fs.String("out", "", "also write the Markdown table to this file")
	relayDelay := fs.Duration("relay-delay", 0, "reach Redis through the bench's relay, delayed this much each way (a store in another zone), for both targets")
	featcacheFlag := fs.String("featcache", "", "featcache binary, or the module directory to build it from (default: this module)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	scratch, err := os.MkdirTemp("", "featcache-feast-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(scratch)
	bin, _, err := featcacheBinary(*featcacheFlag, moduleRoot(), scratch)
	if err != nil {
		return err
	}
	f := &fleet{dir: scratch}
	defer f.stopAll()
	redisAddr, _, err := f.startRedis("redis-server")
	if err != nil {
		return err
	}
	seedAddr := redisAddr
	if *relayDelay > 0 {
		if redisAddr, _, err = f.startRelay(redisAddr, *relayDelay); err != nil {
			return err
		}
	}
	fw := newFeastWorkload(*entities, *views, *features)
	cfg := fw.config()
	featcacheAddr, _, err := f.startFeatcacheConfig("featcache", bin, redisAddr, cfg)
	if err != nil {
		return err
	}
	start := time.Now()
	if err := fw.seed(seedAddr); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "feast: seeded %d entities x %d views x %d features in %v\n", *entities, *views, *features, time.Since(start).Round(time.Millisecond))

	targets := []struct{ name, addr string }{{"redis", redisAddr}, {"featcache", featcacheAddr}}
	results := map[string][]feastRound{}
	for r := 0; r < *rounds; r++ {
		for _, t := range targets {
			before, _ := cacheStats(featcacheAddr)
			res, err := fw.drive(t.addr, *conns, *batch, *zipfS, *duration, uint64(r))
			if err != nil {
				return fmt.Errorf("%s: %w", t.name, err)
			}
			if t.name == "featcache" {
				after, _ := cacheStats(featcacheAddr)
				hits := float64(after.m["hits"] - before.m["hits"])
				misses := float64(after.m["misses"] - before.m["misses"])
				res.hitRatio = hits / math.Max(1, hits+misses)
			}
			results[t.name] = append(results[t.name], res)
			fmt.Fprintf(os.Stderr, "feast: round %d %s: %.0f req/s (%d HMGETs each), p99 %v\n", r+1, t.name, res.rps, *batch, res.p99)
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Feast workload: %d entities x %d views x %d features, Zipf %.2f, %d entities per request "+
		"(one pipelined HMGET each), %d connections, %d rounds of %v per target (medians)",
		*entities, *views, *features, *zipfS, *batch, *conns, *rounds, *duration)
	if *relayDelay > 0 {
		fmt.Fprintf(&b, "; Redis reached through a relay adding %v each way", *relayDelay)
	}
	b.WriteString(".\n\n")
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
		fmt.Fprintf(&b, "| %s | %.0f | %.0f | %s | %s | %s | %s |\n", t.name, rps, rps*float64(*batch),
			fmtDur(time.Duration(med(func(r feastRound) float64 { return float64(r.p50) }))),
			fmtDur(time.Duration(med(func(r feastRound) float64 { return float64(r.p99) }))),
			fmtDur(time.Duration(med(func(r feastRound) float64 { return float64(r.p999) }))), hit)
	}
	fmt.Print(b.String())
	if *out != "" {
		if err := os.MkdirAll(filepath.Dir(*out), 0o755); err != nil {
			return err
		}
		return os.WriteFile(*out, []byte(b.String()), 0o644)
	}
	return nil
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
			fs = append(fs, policy.FeastFieldID(name, fmt.Sprintf("feature_%d", f)))
		}
		w.fields = append(w.fields, append(fs, []byte("_ts:"+name)))
	}
	return w
}

func (w *feastWorkload) key(i int) []byte {
	return policy.AppendFeastKey(nil, w.project, []string{"entity_id"}, []policy.FeastValue{policy.FeastInt64(int64(i))})
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
	ts := policy.AppendFeastTimestamp(nil, time.Now())
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
func (w *feastWorkload) drive(addr string, conns, batch int, s float64, d time.Duration, round uint64) (feastRound, error) {
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
			for time.Now().Before(deadline) {
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
