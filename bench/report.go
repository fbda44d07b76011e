package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

// report is everything one invocation measured: results.json is this struct, results.md renders it.
type report struct {
	Started        time.Time        `json:"started"`
	ElapsedSeconds float64          `json:"elapsed_seconds"`
	Profile        string           `json:"profile"`
	Machine        machine          `json:"machine"`
	Profiles       []*profileResult `json:"profiles"`
}

type profileResult struct {
	Name           string          `json:"name"`
	Title          string          `json:"title"`
	Command        string          `json:"command"` // the equivalent command line, every setting explicit
	Settings       settings        `json:"settings"`
	Seed           seedResult      `json:"seed"`
	Remote         *remoteResult   `json:"remote,omitempty"`
	Targets        []*targetResult `json:"targets"`
	LRU            *lruResult      `json:"lru,omitempty"`
	RedisBenchmark []*rbResult     `json:"redis_benchmark,omitempty"`
	Open           *openLoopResult `json:"open_loop,omitempty"`
	ElapsedSeconds float64         `json:"elapsed_seconds"`
}

type seedResult struct {
	Keys    int     `json:"keys"`
	Bytes   int64   `json:"value_bytes"`
	Seconds float64 `json:"seconds"`
}

// remoteResult is how a profile's Redis was made remote, and the round trips that show it.
type remoteResult struct {
	Method       string   `json:"method"`             // "netem" or "relay"
	Fallback     string   `json:"fallback,omitempty"` // why the relay ran
	DelayEachWay string   `json:"delay_each_way"`
	Jitter       string   `json:"jitter,omitempty"`
	Namespace    string   `json:"namespace,omitempty"` // netem: the bench's network namespace
	Commands     []string `json:"commands,omitempty"`  // netem: the tc commands, as run inside the namespace
	CPUs         string   `json:"cpus,omitempty"`      // relay: where it ran
	// Median PING round trips: straight to redis-server before the delay was put in place, to Redis as the targets
	// reach it (its delayed port, or the relay), and to featcache's port (answered by featcache itself).
	DirectRTTus    float64 `json:"direct_rtt_us"`
	RemoteRTTus    float64 `json:"remote_rtt_us"`
	FeatcacheRTTus float64 `json:"featcache_rtt_us,omitempty"`
}

// roundResult is one target's measured phase in one round. Latencies are in microseconds.
type roundResult struct {
	Requests   int64   `json:"requests"`
	Seconds    float64 `json:"seconds"`
	Throughput float64 `json:"throughput"`
	P50us      float64 `json:"p50_us"`
	P95us      float64 `json:"p95_us"`
	P99us      float64 `json:"p99_us"`
	P999us     float64 `json:"p999_us"`
	MaxUs      float64 `json:"max_us"`
	MeanUs     float64 `json:"mean_us"`
	CPUSeconds float64 `json:"cpu_seconds"`
	// ClientCPUShare is the load generator's CPU time over the round's wall time (1 = its core was saturated).
	ClientCPUShare float64     `json:"client_cpu_share"`
	Nils           int64       `json:"nil_replies"`
	Errors         int64       `json:"error_replies"`
	FirstError     string      `json:"first_error,omitempty"`
	Cache          *cacheDelta `json:"cache,omitempty"`
}

// cacheDelta is the change of featcache's CACHE STATS counters over one round (Entries: the value after it).
type cacheDelta struct {
	Hits          int64 `json:"hits"`
	StaleHits     int64 `json:"stale_hits"`
	StaleOnError  int64 `json:"stale_on_error"`
	Misses        int64 `json:"misses"`
	Bypass        int64 `json:"bypass"`
	UpstreamReads int64 `json:"upstream_reads"`
	Forwarded     int64 `json:"forwarded"`
	Evictions     int64 `json:"evictions"`
	GCCycles      int64 `json:"gc_cycles"`
	Entries       int64 `json:"entries"`
}

func (c *cacheDelta) add(o *cacheDelta) {
	c.Hits += o.Hits
	c.StaleHits += o.StaleHits
	c.StaleOnError += o.StaleOnError
	c.Misses += o.Misses
	c.Bypass += o.Bypass
	c.UpstreamReads += o.UpstreamReads
	c.Forwarded += o.Forwarded
	c.Evictions += o.Evictions
	c.GCCycles += o.GCCycles
	c.Entries = o.Entries
}

// cacheSummary is featcache's cache behaviour summed over all measured rounds.
type cacheSummary struct {
	cacheDelta
	Requests      int64   `json:"requests"`
	HitRatio      float64 `json:"hit_ratio"`   // (hits + stale + stale_on_error) / key reads
	StaleRatio    float64 `json:"stale_ratio"` // (stale + stale_on_error) / key reads
	MissRatio     float64 `json:"miss_ratio"`
	UpstreamPer1k float64 `json:"upstream_reads_per_1k_requests"`
}

// Reads is the number of cached key reads: each is a hit, a stale serve or a miss.
func (c *cacheSummary) Reads() int64 { return c.Hits + c.StaleHits + c.StaleOnError + c.Misses }

type allocResult struct {
	Requests        int64   `json:"requests"`
	Keys            int     `json:"keys"`
	Allocs          int64   `json:"allocs"`
	StatsCallAllocs int64   `json:"stats_call_allocs"` // subtracted: what one CACHE STATS allocates
	PerGet          float64 `json:"allocs_per_get"`
	Hits            int64   `json:"hits"`
	Misses          int64   `json:"misses"` // must be 0 for the figure to be about the hit path alone
}

type gcResult struct {
	Cycles          int64 `json:"cycles_in_rounds"`
	PauseP99us      int64 `json:"pause_p99_us"` // over the process's life, from runtime/metrics
	PauseMaxUs      int64 `json:"pause_max_us"`
	RSSPeakReported int64 `json:"rss_peak_bytes_reported"`
}

// targetResult is one target over all rounds; the headline figures are medians across rounds.
type targetResult struct {
	Name        string        `json:"name"`
	Kind        string        `json:"kind"`
	Addr        string        `json:"addr"`
	Rounds      []roundResult `json:"rounds"`
	Throughput  float64       `json:"median_throughput"`
	P50us       float64       `json:"median_p50_us"`
	P95us       float64       `json:"median_p95_us"`
	P99us       float64       `json:"median_p99_us"`
	P999us      float64       `json:"median_p999_us"`
	CPUSeconds  float64       `json:"median_cpu_seconds"`
	CPUPerReqUs float64       `json:"median_cpu_us_per_request"`
	ClientCPU   float64       `json:"median_client_cpu_share"`
	// BackgroundCPU is the CPU the process used, summed over all rounds, while other targets were measured.
	BackgroundCPU float64 `json:"background_cpu_seconds"`
	// RelayCPU is the relay's CPU time, summed over this target's rounds (remote store only).
	RelayCPU float64 `json:"relay_cpu_seconds,omitempty"`
	PeakRSS  int64   `json:"peak_rss_bytes"`
	// EndRSS is the resident set right after the last round (VmRSS): with a full tier, what local.max_memory's
	// bound speaks of; PeakRSS may come from the prefill's cold fill.
	EndRSS     int64         `json:"end_rss_bytes"`
	Nils       int64         `json:"nil_replies"`
	Errors     int64         `json:"error_replies"`
	FirstError string        `json:"first_error,omitempty"`
	Cache      *cacheSummary `json:"cache,omitempty"`
	Allocs     *allocResult  `json:"allocs,omitempty"`
	GC         *gcResult     `json:"gc,omitempty"`
}

func median[T any](xs []T, f func(T) float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	v := make([]float64, len(xs))
	for i, x := range xs {
		v[i] = f(x)
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// printTable prints a sub-command's Markdown and, when out is set, writes it to that file too, making its folder.
func printTable(markdown, out string) error {
	fmt.Print(markdown)
	if out != "" {
		if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
			return err
		}
		return os.WriteFile(out, []byte(markdown), 0o644)
	}
	return nil
}

// cpuPerRequestUs is CPU microseconds per request: 0 without requests.
func cpuPerRequestUs(cpuSeconds float64, requests int64) float64 {
	if requests == 0 {
		return 0
	}
	return cpuSeconds * 1e6 / float64(requests)
}

// summarize takes the medians across rounds, each figure on its own, and sums the cache counters.
func (t *targetResult) summarize() {
	m := func(f func(roundResult) float64) float64 { return median(t.Rounds, f) }
	t.Throughput = m(func(r roundResult) float64 { return r.Throughput })
	t.P50us = m(func(r roundResult) float64 { return r.P50us })
	t.P95us = m(func(r roundResult) float64 { return r.P95us })
	t.P99us = m(func(r roundResult) float64 { return r.P99us })
	t.P999us = m(func(r roundResult) float64 { return r.P999us })
	t.CPUSeconds = m(func(r roundResult) float64 { return r.CPUSeconds })
	t.ClientCPU = m(func(r roundResult) float64 { return r.ClientCPUShare })
	t.CPUPerReqUs = m(func(r roundResult) float64 { return cpuPerRequestUs(r.CPUSeconds, r.Requests) })
	for _, r := range t.Rounds {
		t.Nils += r.Nils
		t.Errors += r.Errors
		if t.FirstError == "" {
			t.FirstError = r.FirstError
		}
		if r.Cache != nil {
			if t.Cache == nil {
				t.Cache = &cacheSummary{}
			}
			t.Cache.add(r.Cache)
			t.Cache.Requests += r.Requests
		}
	}
	if c := t.Cache; c != nil {
		if reads := c.Reads(); reads > 0 {
			c.HitRatio = float64(c.Hits+c.StaleHits+c.StaleOnError) / float64(reads)
			c.StaleRatio = float64(c.StaleHits+c.StaleOnError) / float64(reads)
			c.MissRatio = float64(c.Misses) / float64(reads)
		}
		if c.Requests > 0 {
			c.UpstreamPer1k = float64(c.UpstreamReads) * 1000 / float64(c.Requests)
		}
	}
}

// progress is a round's one-line summary on stderr.
func (r roundResult) progress() string {
	s := fmt.Sprintf("%9.0f req/s  p50 %s  p99 %s  p99.9 %s", r.Throughput, fmtUs(r.P50us), fmtUs(r.P99us), fmtUs(r.P999us))
	if r.Cache != nil {
		reads := r.Cache.Hits + r.Cache.StaleHits + r.Cache.StaleOnError + r.Cache.Misses
		if reads > 0 {
			s += fmt.Sprintf("  hits %.1f%%", 100*float64(r.Cache.Hits+r.Cache.StaleHits+r.Cache.StaleOnError)/float64(reads))
		}
	}
	if r.Errors+r.Nils > 0 {
		s += fmt.Sprintf("  errors %d nils %d (%s)", r.Errors, r.Nils, r.FirstError)
	}
	return s
}

func fmtUs(v float64) string {
	if v >= 1000 {
		return fmt.Sprintf("%.2fms", v/1000)
	}
	return fmt.Sprintf("%.0fµs", v)
}

func fmtMiB(b int64) string {
	if b <= 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20))
}

// machine describes where the run happened.
type machine struct {
	CPU           string  `json:"cpu"`
	Cores         int     `json:"cores"`
	Kernel        string  `json:"kernel"`
	Go            string  `json:"go"`
	Redis         string  `json:"redis"`
	Twemproxy     string  `json:"twemproxy"`
	RedisBench    string  `json:"redis_benchmark"`
	Pinning       string  `json:"pinning"`
	MemTotal      string  `json:"mem_total"`
	LoadAvgStart  string  `json:"loadavg_start"`
	LoadAvgEnd    string  `json:"loadavg_end"`
	FeatcacheFrom string  `json:"featcache_built_from"`
	BenchCPU      float64 `json:"bench_cpu_seconds"`
}

func readMachine(e *env, featcacheFrom string) machine {
	m := machine{Go: runtime.Version(), Pinning: e.pin.String(), FeatcacheFrom: featcacheFrom,
		RedisBench: redisBenchmarkVersion()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok {
				switch strings.TrimSpace(k) {
				case "model name":
					if m.CPU == "" {
						m.CPU = strings.TrimSpace(v)
					}
				case "processor":
					m.Cores++
				}
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if out, err := exec.Command(e.redisServer, "--version").Output(); err == nil {
		m.Redis = strings.TrimSpace(string(out))
	}
	m.Twemproxy = "not found"
	if path, _ := findTwemproxy("auto"); path != "" {
		out, _ := exec.Command(path, "--version").CombinedOutput()
		m.Twemproxy = strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
	}
	m.MemTotal = fmtMiB(procStatusFile("/proc/meminfo", "MemTotal"))
	m.LoadAvgStart = loadAvg()
	return m
}

func procStatusFile(path, field string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			var n int64
			fmt.Sscan(rest, &n)
			return n << 10
		}
	}
	return 0
}

func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// write puts results.json, results.md and latency.png into dir.
func (r *report) write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), append(js, '\n'), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.md"), []byte(r.markdown()), 0o644); err != nil {
		return err
	}
	return writeChart(filepath.Join(dir, "latency.png"), r)
}

// rewriteReport renders results.md and latency.png again from a results folder's results.json.
func rewriteReport(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, "results.json"))
	if err != nil {
		return err
	}
	var r report
	if err := json.Unmarshal(b, &r); err != nil {
		return fmt.Errorf("%s: %w", dir, err)
	}
	return r.write(dir)
}

func (r *report) markdown() string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p("# featcache benchmark, profile %s\n\n", r.Profile)
	p("Run %s, %.0f s in all. Every figure is the median of the rounds (targets interleaved within each round); "+
		"latencies are per request, from the write of its pipeline batch to its reply, over all connections. "+
		"How each figure is measured is at the end.\n\n", r.Started.UTC().Format("2006-01-02 15:04 MST"), r.ElapsedSeconds)
	p("![latency percentiles](latency.png)\n\n")
	for _, pr := range r.Profiles {
		pr.markdown(&b)
	}
	m := r.Machine
	p("## Machine\n\n")
	p("| | |\n|---|---|\n")
	p("| CPU | %s, %d cores |\n| memory | %s |\n| kernel | %s |\n| Go | %s |\n| Redis | %s |\n",
		m.CPU, m.Cores, m.MemTotal, m.Kernel, m.Go, m.Redis)
	p("| twemproxy | %s |\n| redis-benchmark | %s |\n| featcache | built from %s |\n", m.Twemproxy, m.RedisBench, m.FeatcacheFrom)
	p("| pinning | %s |\n| load average | %s at start, %s at end |\n\n", m.Pinning, m.LoadAvgStart, m.LoadAvgEnd)
	b.WriteString(methodNotes)
	return b.String()
}

func (pr *profileResult) markdown(b *strings.Builder) {
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	s := pr.Settings
	p("## %s: %s\n\n", pr.Name, pr.Title)
	p("`%s`\n\n", pr.Command)
	p("%d rounds of %s per target after a %v warm-up%s; %d connections, pipeline %d; %s. "+
		"Seeded %d keys (%.0f MiB of values) in %.1f s. This profile took %.0f s.\n\n",
		s.Rounds, s.roundLength(), s.Warmup, map[bool]string{true: " and a GET of every key through featcache, least popular first (prefill)"}[s.Prefill],
		s.Conns, s.Pipeline, s.Workload.describe(), pr.Seed.Keys, float64(pr.Seed.Bytes)/(1<<20), pr.Seed.Seconds,
		pr.ElapsedSeconds)
	if s.Cluster > 0 {
		p("featcache-cluster is a second featcache in front of a Redis Cluster of %d masters (redis-cli --cluster "+
			"create, no replicas, on the server CPUs, seeded with the same keys), given one master as its seed; the "+
			"other targets use the one Redis. All are measured in the same interleaved rounds.\n\n", s.Cluster)
	}
	if r := pr.Remote; r != nil {
		r.markdown(b)
	}
	pr.targetTable(b)
	floorLine(b, pr.Targets)
	var bg []string
	for _, t := range pr.Targets {
		if t.Kind != string(kindExternal) {
			bg = append(bg, fmt.Sprintf("%s %.2f s", t.Name, t.BackgroundCPU/float64(max(len(t.Rounds), 1))))
		}
	}
	p("CPU each server used per round while the other targets were measured (on the same core): %s.\n\n",
		strings.Join(bg, ", "))
	if pr.Remote != nil && pr.Remote.Method == "relay" {
		var rc []string
		for _, t := range pr.Targets {
			rc = append(rc, fmt.Sprintf("%s %.2f s", t.Name, t.RelayCPU/float64(max(len(t.Rounds), 1))))
		}
		p("CPU the relay used per round, by the target measured: %s.\n\n", strings.Join(rc, ", "))
	}
	pr.cacheCounts(b)
	pr.lruTable(b)
	if pr.Open != nil {
		pr.Open.markdown(b, "requests")
	}
	pr.redisBenchmarkTable(b)
}

// targetTable writes the table of the targets' figures, medians of the rounds.
func (pr *profileResult) targetTable(b *strings.Builder) {
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	p("| target | req/s | vs redis | p50 | p95 | p99 | p99.9 | hit / stale / miss | upstream reads per 1k | " +
		"CPU s per round | CPU µs/req | peak RSS | allocs/GET | GC pause p99 / max | load gen CPU | errors |\n")
	p("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	var base *targetResult
	for _, t := range pr.Targets {
		if t.Kind == string(kindRedis) {
			base = t
		}
	}
	for _, t := range pr.Targets {
		vs := "–"
		if base != nil && base.Throughput > 0 {
			vs = fmt.Sprintf("%.2fx", t.Throughput/base.Throughput)
		}
		split, up, allocs, gc := "–", "–", "–", "–"
		if c := t.Cache; c != nil && c.Reads() > 0 {
			split = fmt.Sprintf("%.1f%% / %.1f%% / %.1f%%", 100*(c.HitRatio-c.StaleRatio), 100*c.StaleRatio, 100*c.MissRatio)
		}
		if c := t.Cache; c != nil {
			up = fmt.Sprintf("%.1f", c.UpstreamPer1k)
		}
		if a := t.Allocs; a != nil {
			allocs = fmt.Sprintf("%.2f", math.Max(a.PerGet, 0)) // below 0 only by the runtime's per-span counting
			if a.Misses > 0 {
				allocs += fmt.Sprintf(" (%d misses)", a.Misses)
			}
		}
		if g := t.GC; g != nil {
			gc = fmt.Sprintf("%s / %s", fmtUs(float64(g.PauseP99us)), fmtUs(float64(g.PauseMaxUs)))
		}
		cpu, cpuReq := "–", "–"
		if t.Kind != string(kindExternal) {
			cpu, cpuReq = fmt.Sprintf("%.2f", t.CPUSeconds), fmt.Sprintf("%.1f", t.CPUPerReqUs)
		}
		errs := fmt.Sprint(t.Errors + t.Nils)
		if t.FirstError != "" {
			errs += " (" + t.FirstError + ")"
		}
		p("| %s | %.0f | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %.0f%% | %s |\n",
			t.Name, t.Throughput, vs, fmtUs(t.P50us), fmtUs(t.P95us), fmtUs(t.P99us), fmtUs(t.P999us),
			split, up, cpu, cpuReq, fmtMiB(t.PeakRSS), allocs, gc, 100*t.ClientCPU, errs)
	}
	p("\n")
}

// cacheCounts writes featcache's counters over the rounds, and its allocation phase, for each featcache target.
func (pr *profileResult) cacheCounts(b *strings.Builder) {
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	for _, t := range pr.Targets {
		if c := t.Cache; c != nil {
			p("featcache over the rounds: %d requests, %d key reads: %d hits, %d stale, %d stale on error, %d misses; "+
				"%d upstream reads, %d forwarded, %d bypass; %d evictions; %d entries at the end; %d GC cycles.",
				c.Requests, c.Reads(), c.Hits, c.StaleHits, c.StaleOnError, c.Misses, c.UpstreamReads, c.Forwarded,
				c.Bypass, c.Evictions, c.Entries, c.GCCycles)
			p(" RSS right after the last round %s (peak %s).", fmtMiB(t.EndRSS), fmtMiB(t.PeakRSS))
			if a := t.Allocs; a != nil {
				p(" Allocation phase: %d GETs of %d cached keys, %d hits, %d misses, %d allocations after subtracting "+
					"one CACHE STATS (%d).", a.Requests, a.Keys, a.Hits, a.Misses, a.Allocs, a.StatsCallAllocs)
			}
			p("\n\n")
		}
	}
}

// lruTable writes featcache's hit ratio next to an exact LRU's of the same size, when the profile simulated one.
func (pr *profileResult) lruTable(b *strings.Builder) {
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	s := pr.Settings
	if l := pr.LRU; l != nil {
		p("**Hit ratio against an exact LRU of the same size** (%s, each entry charged key + value + %d bytes; "+
			"same requests%s, same warm-up, counted over the same rounds):\n\n", s.MaxMemory, l.EntryOverhead,
			map[bool]string{true: ", same prefill"}[l.Prefilled])
		p("| | key reads | hit ratio | vs LRU |\n|---|--:|--:|--:|\n")
		p("| exact LRU (simulated) | %d | %.2f%% | |\n", l.Reads, 100*l.LRUHitRatio)
		p("| featcache, served from memory (hits + stale) / reads | %d | %.2f%% | %+.2f points |\n",
			l.FeatcacheReads, 100*l.FeatcacheRatio, 100*(l.FeatcacheRatio-l.LRUHitRatio))
		p("| featcache, 1 − upstream reads / reads | %d | %.2f%% | %+.2f points |\n\n",
			l.FeatcacheReads, 100*l.FeatcacheFetchRatio, 100*(l.FeatcacheFetchRatio-l.LRUHitRatio))
		p("The second featcache line counts a fill once however many requests waited on it (the same key missed " +
			"by several connections at once, or twice in one MGET), as the LRU does, where the first miss stores " +
			"the key before the next request.\n\n")
	}
}

// redisBenchmarkTable writes redis-benchmark's figures, when it ran.
func (pr *profileResult) redisBenchmarkTable(b *strings.Builder) {
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	s := pr.Settings
	if len(pr.RedisBenchmark) > 0 {
		p("**redis-benchmark** (same servers, same pinning; `-c 50 -d 1024 -r %d`, median of %d runs; "+
			"latencies as redis-benchmark reports them):\n\n", s.RBKeys, s.RBRounds)
		p("| test | target | req/s | vs redis | p50 | p99 |\n|---|---|--:|--:|--:|--:|\n")
		base := map[string]float64{}
		for _, r := range pr.RedisBenchmark {
			if r.Target == "redis" {
				base[r.Test] = r.RPS
			}
		}
		for _, r := range pr.RedisBenchmark {
			vs := "–"
			if base[r.Test] > 0 {
				vs = fmt.Sprintf("%.2fx", r.RPS/base[r.Test])
			}
			p("| %s | %s | %.0f | %s | %.3f ms | %.3f ms |\n", r.Test, r.Target, r.RPS, vs, r.P50Ms, r.P99Ms)
		}
		p("\nCommand (per target): `%s`\n\n", pr.RedisBenchmark[0].Command)
	}
}

// methodNotes says exactly how each figure is measured; it ends every results.md.
const methodNotes = `## How the figures are measured

- **req/s**: requests answered in a round divided by the round's wall time (from its start until the last
  connection has its last reply). Each connection is a closed loop: it writes a batch of ` + "`-pipeline`" + ` requests in
  one write, reads every reply, then sends the next batch. Median across rounds.
- **p50 ... p99.9**: per request, from the write of its batch to the parse of its reply, recorded in an HDR
  histogram per connection (1 ns to 60 s, 3 significant digits), merged over connections per round; median across
  rounds of each percentile.
- **hit / stale / miss**: featcache's CACHE STATS counters read before and after each round (hits, stale_hits +
  stale_on_error, misses), summed over the rounds, as shares of key reads (an MGET of n keys is n reads).
- **upstream reads per 1k**: the upstream_reads delta (keys featcache fetched from Redis) per 1,000 requests.
- **CPU**: utime + stime of the server process from /proc/<pid>/stat, before and after each round (10 ms ticks);
  per round and per request. Not shown for external targets.
- **CPU while the others were measured**: the same counters around the other targets' rounds, per round: what a
  process costs the shared server core while it is not the one measured (featcache receives invalidations for
  every write the other targets send to Redis; redis-server serves featcache's misses during featcache's rounds).
- **peak RSS**: VmHWM from /proc/<pid>/status right after the last round (featcache also reports it as
  rss_peak_bytes); for redis-server it includes the seeded data set. For featcache the peak may be the
  prefill's cold fill (every key read once in pipelines, fills in flight); the line under the table gives its
  VmRSS right after the last round too, the resident set with a full tier.
- **allocs/GET**: after the rounds, min(keys, 1000) keys are read once so they are cached, then
  ` + "`-alloc-requests`" + ` GETs of them are sent over the same connections with the same pipeline depth; the
  alloc_objects delta of CACHE STATS (the process's cumulative heap allocations, runtime/metrics
  /gc/heap/allocs:objects), less what one CACHE STATS call allocates (the median of three back-to-back pairs),
  divided by the GETs. Every GET of that phase must be a hit; the table says how many were not. The runtime counts
  small allocations a span at a time and folds allocations under 16 bytes without pointers into shared blocks,
  so the figure is exact to about ±0.01 per GET over 100,000 GETs and does not see those tiny allocations.
- **GC pause p99 / max**: gc_pause_p99_us and gc_pause_max_us from CACHE STATS after the rounds (runtime/metrics
  /gc/pauses, over the process's life).
- **load gen CPU**: this program's own CPU time over the round's wall time, as a share of its one core. Near
  100% the load generator, not the target, set the pace.
- **prefill**: one GET of every key through featcache before the warm-up, least popular first, so featcache
  (and the simulated LRU) start the rounds holding the hottest keys, as after a long run, rather than filling.
- **errors**: error replies plus nil replies (every key is seeded, so a nil is a wrong answer).
- **exact LRU**: an in-process LRU (map + list) with local.max_memory bytes, charging each entry key + value + the
  stated overhead, fed the same requests featcache was sent: every connection's stream is regenerated from its
  seed up to where it stood at the end of each phase, interleaved round-robin; a SET removes the key (featcache
  invalidates it), and so do the SETs the redis and twemproxy targets sent in their own phases, replayed in the
  order the phases ran (they reach featcache as invalidations from Redis). Prefill and warm-up warm it; only the
  rounds count.
- **remote store** (profiles with ` + "`-remote-delay`" + `): netem in the bench's own network namespace delays
  only the packets to and from Redis's port, in the kernel; where that cannot be had, the user-space relay
  forwards every byte after the delay, on the server core. The profile says which ran, with the median PING
  round trips that show the delay (straight to Redis before it, to Redis through it, to featcache).
- **open loop**: after the rounds, requests arrive at fixed Poisson rates (shares of direct Redis's median
  closed-loop req/s in the same run), each target sent the same requests at the same intended times through a
  pool of connections (an idle one takes the next request; a request waits while all are busy). A dispatcher
  sleeping on a timerfd queues each at its time. Latency runs from the intended send time to the reply, so the
  load generator's lag, the wait for a connection and any stall of the target count; "late send" is the part
  before the write. Percentiles are of all rounds' requests together. Answer classes: every
  ` + "`-open-mark`" + `-th request to featcache is preceded in the same write by CACHE EXPLAIN of its keys (which
  only peeks), and is counted as a miss if a key was missing or past its hard TTL, a stale serve if one was
  stale, else a hit.
- **redis-benchmark**: run by this program against each target in turn, pinned like the load generator; its
  --csv output is parsed; featcache is sent a GET of every key:… key before each GET test so it serves them
  from memory.
`
