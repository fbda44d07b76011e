package proxy

import (
	"bytes"
	"math"
	"os"
	"runtime/metrics"
	"strconv"
	"time"
)

// runtimeFigures are the process figures CACHE STATS reports, so a benchmark can measure allocations per request,
// GC pauses and memory over a real connection.
type runtimeFigures struct {
	allocObjects, allocBytes int64 // cumulative heap allocations
	gcCycles                 int64
	gcPauseP99, gcPauseMax   time.Duration // stop-the-world pauses for GC since start
	heapBytes                int64         // heap memory in use by objects
	rssBytes, rssPeakBytes   int64         // resident set size now and at its peak (Linux)
}

var runtimeSamples = []metrics.Sample{
	{Name: "/gc/heap/allocs:objects"},
	{Name: "/gc/heap/allocs:bytes"},
	{Name: "/gc/cycles/total:gc-cycles"},
	{Name: "/sched/pauses/total/gc:seconds"},
	{Name: "/memory/classes/heap/objects:bytes"},
}

func readRuntime() runtimeFigures {
	s := make([]metrics.Sample, len(runtimeSamples))
	copy(s, runtimeSamples)
	metrics.Read(s)
	var rt runtimeFigures
	rt.allocObjects = int64(s[0].Value.Uint64())
	rt.allocBytes = int64(s[1].Value.Uint64())
	rt.gcCycles = int64(s[2].Value.Uint64())
	if s[3].Value.Kind() == metrics.KindFloat64Histogram {
		rt.gcPauseP99, rt.gcPauseMax = histogramQuantile(s[3].Value.Float64Histogram(), 0.99)
	}
	rt.heapBytes = int64(s[4].Value.Uint64())
	rt.rssBytes, rt.rssPeakBytes = procStatus("VmRSS:"), procStatus("VmHWM:")
	return rt
}

// histogramQuantile returns the upper bound of the bucket holding quantile q, and of the highest non-empty bucket.
func histogramQuantile(h *metrics.Float64Histogram, q float64) (quantile, max time.Duration) {
	var total uint64
	for _, c := range h.Counts {
		total += c
	}
	if total == 0 {
		return 0, 0
	}
	bound := func(i int) time.Duration {
		b := h.Buckets[i+1]
		if math.IsInf(b, 1) {
			b = h.Buckets[i]
		}
		return time.Duration(b * float64(time.Second))
	}
	want := uint64(math.Ceil(q * float64(total)))
	var seen uint64
	for i, c := range h.Counts {
		seen += c
		if c > 0 {
			max = bound(i)
		}
		if seen >= want && quantile == 0 {
			quantile = bound(i)
		}
	}
	return quantile, max
}

// procStatus reads a "Name:  N kB" line of /proc/self/status, in bytes; 0 where it is not available.
func procStatus(field string) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range bytes.Split(b, []byte("\n")) {
		if rest, ok := bytes.CutPrefix(line, []byte(field)); ok {
			f := bytes.Fields(rest)
			if len(f) == 0 {
				return 0
			}
			n, _ := strconv.ParseInt(string(f[0]), 10, 64)
			return n << 10
		}
	}
	return 0
}
