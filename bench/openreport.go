package main

import (
	"fmt"
	"strings"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// openLoopResult is a profile's open-loop phases. Latencies are in microseconds.
type openLoopResult struct {
	Capacity float64           `json:"capacity"` // direct Redis's median closed-loop req/s in this run: what shares refer to
	Arrivals string            `json:"arrivals"`
	Conns    int               `json:"conns"`
	Mark     int               `json:"mark"`
	Rounds   int               `json:"rounds"`
	Seconds  float64           `json:"seconds"` // each phase's schedule, per target, rate and round
	Loads    []*openLoadResult `json:"loads"`
}

type openLoadResult struct {
	Load    openLoad            `json:"load"`
	Rate    float64             `json:"rate"` // requests per second offered
	Targets []*openTargetResult `json:"targets"`
}

// openTargetResult is one target at one rate over all rounds. Percentiles are of the rounds' histograms merged
// (tails need every sample); throughput, CPU and the late sends are medians across rounds.
type openTargetResult struct {
	Name        string        `json:"name"`
	Rounds      []openRound   `json:"rounds"`
	Requests    int64         `json:"requests"`
	Throughput  float64       `json:"median_throughput"` // replies per second
	P50us       float64       `json:"p50_us"`
	P99us       float64       `json:"p99_us"`
	P999us      float64       `json:"p999_us"`
	MaxUs       float64       `json:"max_us"`
	LateP99us   float64       `json:"median_late_send_p99_us"`
	CPUPerReqUs float64       `json:"median_cpu_us_per_request"`
	ClientCPU   float64       `json:"median_client_cpu_share"`
	Nils        int64         `json:"nil_replies"`
	Errors      int64         `json:"error_replies"`
	FirstError  string        `json:"first_error,omitempty"`
	Cache       *cacheSummary `json:"cache,omitempty"`
	Classes     []openClass   `json:"classes,omitempty"` // featcache: per answer class of the marked requests

	hist    *hdrhistogram.Histogram
	classes [numClasses]*hdrhistogram.Histogram
}

type openRound struct {
	Scheduled      int64       `json:"scheduled"`
	Requests       int64       `json:"requests"`
	Seconds        float64     `json:"seconds"`
	Throughput     float64     `json:"throughput"`
	P50us          float64     `json:"p50_us"`
	P99us          float64     `json:"p99_us"`
	P999us         float64     `json:"p999_us"`
	LateP99us      float64     `json:"late_send_p99_us"`
	CPUSeconds     float64     `json:"cpu_seconds"`
	ClientCPUShare float64     `json:"client_cpu_share"`
	Cache          *cacheDelta `json:"cache,omitempty"`
}

type openClass struct {
	Class    string  `json:"class"`
	Requests int64   `json:"requests"`
	Share    float64 `json:"share"` // of the marked requests
	P50us    float64 `json:"p50_us"`
	P99us    float64 `json:"p99_us"`
	P999us   float64 `json:"p999_us"`
	MaxUs    float64 `json:"max_us"`
}

func newOpenTargetResult(name string) *openTargetResult {
	t := &openTargetResult{Name: name, hist: newHistogram()}
	for c := range t.classes {
		t.classes[c] = newHistogram()
	}
	return t
}

func quantileUs(h *hdrhistogram.Histogram, q float64) float64 {
	return float64(h.ValueAtQuantile(q)) / 1e3
}

// add records one phase and returns its round's figures.
func (t *openTargetResult) add(ph openPhase, scheduled int64, before, after sample) openRound {
	r := openRound{Scheduled: scheduled, Requests: ph.Hist.TotalCount(), Seconds: ph.Elapsed.Seconds(),
		P50us: quantileUs(ph.Hist, 50), P99us: quantileUs(ph.Hist, 99), P999us: quantileUs(ph.Hist, 99.9),
		LateP99us: quantileUs(ph.Late, 99), CPUSeconds: (after.cpu - before.cpu).Seconds()}
	if ph.Elapsed > 0 {
		r.Throughput = float64(r.Requests) / ph.Elapsed.Seconds()
		r.ClientCPUShare = ph.ClientCPU.Seconds() / ph.Elapsed.Seconds()
	}
	if after.stats != nil {
		d := func(name string) int64 { return after.stats[name] - before.stats[name] }
		r.Cache = &cacheDelta{Hits: d("hits"), StaleHits: d("stale_hits"), StaleOnError: d("stale_on_error"),
			Misses: d("misses"), Bypass: d("bypass"), UpstreamReads: d("upstream_reads"), Forwarded: d("forwarded"),
			Evictions: d("evictions"), GCCycles: d("gc_cycles"), Entries: after.stats["entries"]}
	}
	t.Rounds = append(t.Rounds, r)
	t.hist.Merge(ph.Hist)
	for c := range ph.Classes {
		t.classes[c].Merge(ph.Classes[c])
	}
	t.Nils += ph.Nils
	t.Errors += ph.Errors
	if t.FirstError == "" {
		t.FirstError = ph.First
	}
	return r
}

func (t *openTargetResult) summarize() {
	t.Requests = t.hist.TotalCount()
	t.P50us, t.P99us, t.P999us = quantileUs(t.hist, 50), quantileUs(t.hist, 99), quantileUs(t.hist, 99.9)
	t.MaxUs = float64(t.hist.Max()) / 1e3
	m := func(f func(openRound) float64) float64 { return median(t.Rounds, f) }
	t.Throughput = m(func(r openRound) float64 { return r.Throughput })
	t.LateP99us = m(func(r openRound) float64 { return r.LateP99us })
	t.ClientCPU = m(func(r openRound) float64 { return r.ClientCPUShare })
	t.CPUPerReqUs = m(func(r openRound) float64 { return cpuPerRequestUs(r.CPUSeconds, r.Requests) })
	for _, r := range t.Rounds {
		if r.Cache != nil {
			if t.Cache == nil {
				t.Cache = &cacheSummary{}
			}
			t.Cache.add(r.Cache)
			t.Cache.Requests += r.Requests
		}
	}
	if c := t.Cache; c != nil && c.Reads() > 0 {
		reads := float64(c.Reads())
		c.HitRatio = float64(c.Hits+c.StaleHits+c.StaleOnError) / reads
		c.StaleRatio = float64(c.StaleHits+c.StaleOnError) / reads
		c.MissRatio = float64(c.Misses) / reads
		c.UpstreamPer1k = float64(c.UpstreamReads) * 1000 / float64(max(c.Requests, 1))
	}
	var marked int64
	for _, h := range t.classes {
		marked += h.TotalCount()
	}
	for c, h := range t.classes {
		if h.TotalCount() == 0 {
			continue
		}
		t.Classes = append(t.Classes, openClass{Class: classNames[c], Requests: h.TotalCount(),
			Share: float64(h.TotalCount()) / float64(marked), P50us: quantileUs(h, 50), P99us: quantileUs(h, 99),
			P999us: quantileUs(h, 99.9), MaxUs: float64(h.Max()) / 1e3})
	}
}

// progress is a phase's one-line summary on stderr.
func (r openRound) progress(ph openPhase) string {
	s := fmt.Sprintf("%7.0f replies/s  p50 %s  p99 %s  p99.9 %s  late send p99 %s", r.Throughput, fmtUs(r.P50us),
		fmtUs(r.P99us), fmtUs(r.P999us), fmtUs(r.LateP99us))
	if c := r.Cache; c != nil {
		if reads := c.Hits + c.StaleHits + c.StaleOnError + c.Misses; reads > 0 {
			s += fmt.Sprintf("  hits %.1f%%", 100*float64(c.Hits+c.StaleHits+c.StaleOnError)/float64(reads))
		}
	}
	var cls []string
	for c, h := range ph.Classes {
		if h.TotalCount() > 0 && answerClass(c) != classOther {
			cls = append(cls, fmt.Sprintf("%s %s", classNames[c], fmtUs(quantileUs(h, 99))))
		}
	}
	if len(cls) > 0 {
		s += "  p99 of marked: " + strings.Join(cls, ", ")
	}
	if n := ph.Errors + ph.Nils; n > 0 {
		s += fmt.Sprintf("  errors %d nils %d (%s)", ph.Errors, ph.Nils, ph.First)
	}
	if r.Scheduled > r.Requests {
		s += fmt.Sprintf("  %d of %d scheduled not sent (interrupted)", r.Scheduled-r.Requests, r.Scheduled)
	}
	return s
}

// markdown renders the open-loop tables; unit names what requests are ("requests", "requests of 10 HMGETs").
func (o *openLoopResult) markdown(b *strings.Builder, unit string) {
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	p("**Open loop: the same offered load for every target.** Poisson arrivals at each rate (shares of direct "+
		"Redis's closed-loop throughput above, %.0f %s per second), %d rounds of %.3g s per target and rate, targets and "+
		"rates interleaved; a pool of %d connections per target, a request taking an idle one. Latency runs from "+
		"each request's intended send time to its reply, so a late send or a stall counts (no coordinated "+
		"omission); percentiles are over all rounds' requests, late send p99 (intended time to the write: the "+
		"load generator's lag plus the wait for a free connection) is the median of the rounds.\n\n",
		o.Capacity, unit, o.Rounds, o.Seconds, o.Conns)
	p("| offered | target | replies/s | p50 | p99 | p99.9 | max | late send p99 | hit / stale / miss | CPU µs/req | load gen CPU | errors |\n")
	p("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, l := range o.Loads {
		for _, t := range l.Targets {
			split := "–"
			if c := t.Cache; c != nil && c.Reads() > 0 {
				split = fmt.Sprintf("%.1f%% / %.1f%% / %.1f%%", 100*(c.HitRatio-c.StaleRatio), 100*c.StaleRatio, 100*c.MissRatio)
			}
			cpu := "–"
			if t.CPUPerReqUs > 0 {
				cpu = fmt.Sprintf("%.1f", t.CPUPerReqUs)
			}
			errs := fmt.Sprint(t.Errors + t.Nils)
			if t.FirstError != "" {
				errs += " (" + t.FirstError + ")"
			}
			p("| %s | %s | %.0f | %s | %s | %s | %s | %s | %s | %s | %.0f%% | %s |\n", l.Load.label(l.Rate), t.Name,
				t.Throughput, fmtUs(t.P50us), fmtUs(t.P99us), fmtUs(t.P999us), fmtUs(t.MaxUs), fmtUs(t.LateP99us),
				split, cpu, 100*t.ClientCPU, errs)
		}
	}
	p("\n")
	var rows []string
	for _, l := range o.Loads {
		for _, t := range l.Targets {
			for _, c := range t.Classes {
				rows = append(rows, fmt.Sprintf("| %s | %s | %s | %d (%.1f%%) | %s | %s | %s | %s |\n", l.Load.label(l.Rate),
					t.Name, c.Class, c.Requests, 100*c.Share, fmtUs(c.P50us), fmtUs(c.P99us), fmtUs(c.P999us), fmtUs(c.MaxUs)))
			}
		}
	}
	if len(rows) > 0 {
		p("featcache's latency by answer class: every %d-th request to it was preceded, in the same write, by CACHE "+
			"EXPLAIN of its keys, which names the state the read then finds (a request with a key missing is a "+
			"miss, else with a stale key a stale serve, else a hit). The marked requests are a sample; the shares "+
			"of all reads are in the table above.\n\n", o.Mark)
		p("| offered | target | class | marked requests | p50 | p99 | p99.9 | max |\n|---|---|---|--:|--:|--:|--:|--:|\n")
		for _, r := range rows {
			b.WriteString(r)
		}
		p("\n")
	}
}
