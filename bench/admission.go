package main

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"time"

	"featcache/localcache"
)

// runAdmission is the admission experiment: does a frequency filter in front of the tier (localcache's
// AdmissionOptions) beat an exact LRU of the same memory, and by how much on which trace?
//
//	go run ./bench admission [-keys N] [-max-memory 64MB] [-requests N] [-scan 0.2] [-thresholds 2,3,4]
//
// Each trace is replayed, request by request, through the real tier (localcache.Cache: freecache, entry
// headers, fills through Acquire and Complete) with and without the filter, and through the exact LRU the zipf
// profile compares featcache with (bench/lru.go), charged the same bytes per entry. The traces: GETs with the
// zipf profile's key choice (Zipf -zipf over -keys feature bundles of 1-2 KiB), and the same with a share -scan of
// the requests replaced by one-off keys read in sequence (a scan: keys past the key space, each read once). Hit
// ratios count the second half of the requests, after the first half has filled the caches. The filter is
// measured counting misses only (what featcache does: nothing on the hit path) and, for comparison, counting
// every request (hits recorded too).
func runAdmission(args []string) error {
	fs := flag.NewFlagSet("admission", flag.ContinueOnError)
	w := zipfFlags(fs, "feature bundles of 1-2 KiB in the key space")
	fs.Uint64Var(&w.Seed, "seed", w.Seed, "seed of the traces")
	maxMemory := mustSize("64MB")
	fs.Var(&maxMemory, "max-memory", "the tier's size, and the LRU's")
	requests := fs.Int("requests", 4_000_000, "requests per trace; the second half is measured")
	rate := fs.Float64("rate", 50_000, "requests per second of the tier's clock: freecache keeps access times in whole seconds "+
		"and evicts an entry read since the segment's mean access time only after moving it to the front, so how "+
		"close it comes to LRU depends on how many requests share a second")
	scans := fs.String("scan", "0.2", "shares of scan requests for the traces with scans, comma-separated (0: none)")
	thresholds := fs.String("thresholds", "2,3,4", "admission thresholds to measure, comma-separated")
	counters := fs.Int("counters", 0, "counters per row of the filter's sketch (0: localcache's default, one per KiB of -max-memory)")
	window := fs.Int("window", 0, "recorded requests after which the filter halves its counts (0: localcache's default, ten times the counters)")
	all := fs.Bool("count-hits", true, "also measure the filter counting every request (hits recorded too)")
	sample := fs.Int("hit-sample", 16, "also measure the filter recording one hit in this many, as the hot-key tracker samples reads (0: not measured)")
	out := fs.String("out", "", "also write the Markdown table to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if w.Zipf <= 1 || w.Keys < 2 || *requests < 2 {
		return fmt.Errorf("need -zipf above 1, -keys of at least 2 and -requests of at least 2")
	}
	thr, err := intList(*thresholds)
	if err != nil {
		return fmt.Errorf("-thresholds: %w", err)
	}
	shares, err := scanShares(*scans)
	if err != nil {
		return err
	}

	var b strings.Builder
	fmt.Fprintf(&b, "Admission filter against an exact LRU at equal memory: %s (%d MiB), Zipf %g over %d feature bundles "+
		"of 1-2 KiB, %d requests per trace at %.0f requests per second of the tier's clock, hit ratio of the second half.\n\n",
		maxMemory, maxMemory.bytes>>20, w.Zipf, w.Keys, *requests, *rate)
	r := admissionReplays{maxMemory: maxMemory, rate: *rate, thresholds: thr, counters: *counters, window: *window,
		sample: *sample, all: *all}
	for _, scan := range shares {
		tr := newTrace(w, *requests, scan)
		name := fmt.Sprintf("Zipf %g", w.Zipf)
		if scan > 0 {
			name += fmt.Sprintf(" with %g%% scans", 100*scan)
		}
		if err := r.table(&b, tr, name); err != nil {
			return err
		}
	}
	fmt.Print(b.String())
	if *out != "" {
		return os.WriteFile(*out, []byte(b.String()), 0o644)
	}
	return nil
}

// scanShares parses -scan: the shares of scan requests, comma-separated, each in [0,1). The trace without scans
// comes first, whether listed or not; a share of 0 adds none.
func scanShares(s string) ([]float64, error) {
	shares := []float64{0}
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || v < 0 || v >= 1 {
			return nil, fmt.Errorf("-scan: %q is not a share in [0,1)", f)
		}
		if v > 0 {
			shares = append(shares, v)
		}
	}
	return shares, nil
}

// admissionReplays is what each trace of runAdmission is replayed with: the tier's size and clock rate, and the
// filter's settings (thresholds, sketch counters and window, and which ways of counting hits are measured).
type admissionReplays struct {
	maxMemory        size
	rate             float64
	thresholds       []int
	counters, window int
	sample           int  // also record one hit in this many (0: not measured)
	all              bool // also record every hit
}

// table replays tr through the exact LRU, the tier without a filter and with the filter at each threshold and way
// of counting, and writes the table of their hit ratios to b, headed by name.
func (a *admissionReplays) table(b *strings.Builder, tr *trace, name string) error {
	fmt.Fprintf(b, "**%s** (%d distinct keys):\n\n| cache | hit ratio | vs exact LRU | upstream reads | fills not admitted | seconds |\n"+
		"|---|--:|--:|--:|--:|--:|\n", name, tr.distinct)
	lruRatio := tr.lru(a.maxMemory.bytes)
	fmt.Fprintf(b, "| exact LRU (simulated) | %.2f%% | | | | |\n", 100*lruRatio)
	row := func(label string, r replayResult) {
		fmt.Fprintf(b, "| %s | %.2f%% | %+.2f points | %d | %d | %.1f |\n", label, 100*r.ratio, 100*(r.ratio-lruRatio),
			r.misses, r.notAdmitted, r.elapsed.Seconds())
		fmt.Fprintf(os.Stderr, "[admission] %s, %s: %.2f%% (LRU %.2f%%)\n", name, label, 100*r.ratio, 100*lruRatio)
	}
	r, err := tr.replay(a.maxMemory.bytes, a.rate, localcache.AdmissionOptions{}, 0)
	if err != nil {
		return err
	}
	row("featcache, no filter", r)
	for _, t := range a.thresholds {
		r, err := tr.replay(a.maxMemory.bytes, a.rate, localcache.AdmissionOptions{Threshold: t, Counters: a.counters, Window: a.window}, 0)
		if err != nil {
			return err
		}
		row(fmt.Sprintf("featcache, filter, threshold %d, misses counted", t), r)
	}
	for _, every := range []int{a.sample, 1} {
		if every <= 0 || every == 1 && !a.all {
			continue
		}
		for _, t := range a.thresholds {
			r, err := tr.replay(a.maxMemory.bytes, a.rate, localcache.AdmissionOptions{Threshold: t, Counters: a.counters, Window: a.window}, every)
			if err != nil {
				return err
			}
			what := "every request counted"
			if every > 1 {
				what = fmt.Sprintf("misses and one hit in %d counted", every)
			}
			row(fmt.Sprintf("featcache, filter, threshold %d, %s", t, what), r)
		}
	}
	b.WriteString("\n")
	return nil
}

func intList(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, nil
}

// trace is one request sequence over key indexes: those below w.Keys are the Zipf key space, those from w.Keys
// on are scan keys, each requested once.
type trace struct {
	w        *workload
	keys     []uint32
	distinct int
}

// newTrace draws n requests: Zipf choices from the zipf profile's stream of connection 0, each replaced with
// probability scan by the next scan key.
func newTrace(w *workload, n int, scan float64) *trace {
	st := newStream(w, 0)
	rng := rand.New(rand.NewPCG(w.Seed, 0x5ca9))
	tr := &trace{w: w, keys: make([]uint32, n)}
	next := uint32(w.Keys)
	seen := make(map[uint32]struct{})
	for i := range tr.keys {
		k := st.key()
		if scan > 0 && rng.Float64() < scan {
			k = next
			next++
		}
		tr.keys[i] = k
		seen[k] = struct{}{}
	}
	tr.distinct = len(seen)
	return tr
}

// lru returns the exact LRU's hit ratio over the second half of the trace.
func (tr *trace) lru(capacity int64) float64 {
	c := newLRU(capacity, func(k uint32) int64 {
		return int64(tr.w.keyLen(int(k)) + tr.w.valueLen(int(k)) + lruEntryOverhead)
	})
	var hits, counted int
	for i, k := range tr.keys {
		hit := c.get(k)
		if i >= len(tr.keys)/2 {
			counted++
			if hit {
				hits++
			}
		}
	}
	return float64(hits) / float64(counted)
}

type replayResult struct {
	ratio       float64
	misses      int // fills (upstream reads) over the measured half
	notAdmitted uint64
	elapsed     time.Duration
}

// replay runs the trace through a new tier of capacity bytes with the admission options adm, as the proxy's
// cached-read path does for GET: a lookup, and on a miss a fill through Acquire and Complete with the value
// Redis would return. With hitEvery > 0, one hit in hitEvery is recorded in the filter too. The tier's clock advances by one
// second every rate requests; entries live far longer than the trace, so every miss is a capacity (or
// admission) miss.
func (tr *trace) replay(capacity int64, rate float64, adm localcache.AdmissionOptions, hitEvery int) (replayResult, error) {
	t0 := time.Unix(1_700_000_000, 0)
	now := t0
	c, err := localcache.New(localcache.Options{MaxMemory: capacity, Now: func() time.Time { return now }, Admission: adm})
	if err != nil {
		return replayResult{}, err
	}
	defer c.Close()
	p := &localcache.Policy{SoftTTL: time.Hour, HardTTL: 24 * time.Hour}
	filter := c.Admission()
	var key, reply []byte
	var hits, counted, misses, allHits int
	var notAdmitted uint64
	start := time.Now()
	for i, k := range tr.keys {
		now = t0.Add(time.Duration(float64(i) / rate * float64(time.Second)))
		measured := i >= len(tr.keys)/2
		if i == len(tr.keys)/2 {
			notAdmitted = c.Stats().NotAdmitted
		}
		key = tr.w.appendKey(key[:0], int(k))
		var lk localcache.Lookup
		reply, lk = c.AppendGet(reply[:0], key, p, now, false)
		if lk.State != localcache.StateMiss {
			if measured {
				hits++
			}
			if allHits++; hitEvery > 0 && filter != nil && allHits%hitEvery == 0 {
				filter.Record(key)
			}
		} else {
			f, leader := c.Acquire(key)
			if !leader {
				return replayResult{}, fmt.Errorf("fill of %s joined another with one reader", key)
			}
			c.Complete(f, localcache.Result{Value: tr.w.value(int(k)), PTTL: localcache.NoExpiry}, p)
			if measured {
				misses++
			}
		}
		if measured {
			counted++
		}
	}
	return replayResult{
		ratio:       float64(hits) / float64(counted),
		misses:      misses,
		notAdmitted: c.Stats().NotAdmitted - notAdmitted,
		elapsed:     time.Since(start),
	}, nil
}
