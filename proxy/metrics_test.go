package proxy

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"featcache/internal/redistest"
	"featcache/internal/testkit"
)

// scrape is one parsed /metrics page.
type scrape map[string]*dto.MetricFamily

// adminURL serves the proxy's admin handler for the test and returns its base URL.
func (p *testProxy) adminURL() string {
	p.t.Helper()
	ts := httptest.NewServer(p.srv.AdminHandler())
	p.t.Cleanup(ts.Close)
	return ts.URL
}

// scrapeMetrics fetches and parses /metrics in Prometheus's text format.
func scrapeMetrics(t testing.TB, base string) scrape {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// value returns the value of the series of name whose labels include the given name=value pairs: a counter's or
// gauge's value, a histogram's sample count. It fails the test when there is no such series.
func (s scrape) value(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	v, ok := s.find(name, labels...)
	if !ok {
		t.Fatalf("no series %s%v in /metrics", name, labels)
	}
	return v
}

func (s scrape) find(name string, labels ...string) (float64, bool) {
	fam := s[name]
	if fam == nil {
		return 0, false
	}
next:
	for _, m := range fam.Metric {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range m.Label {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

// httpStatus returns the status code of GET base+path.
func httpStatus(t testing.TB, base, path string) int {
	t.Helper()
	code, _ := testkit.Get(t, base+path)
	return code
}

// TestMetricsFollowWorkload runs a scripted workload and checks that /metrics counts exactly what it predicts:
// hits, soft-stale serves, misses, single-flight joins, bypasses with and without a policy, a background refresh,
// a stale serve and an error while Redis answers BUSY (a long script), served ages, upstream round trips by
// class, invalidations, and upstream_up dropping to 0 and coming back.
func TestMetricsFollowWorkload(t *testing.T) {
	redis := redistest.Start(t, "--busy-reply-threshold", "50")
	p := startProxyOn(t, redis, `
policies:
  - {name: f, prefix: "f:", soft_ttl: 1m, hard_ttl: 10m, jitter: 0, on_upstream_error: serve_stale, max_stale: 1h}
  - {name: g, prefix: "g:", hard_ttl: 10m, jitter: 0}
  - {name: s, prefix: "s:", cache: false}
`)
	admin := p.adminURL()
	for i := 1; i <= 10; i++ {
		redis.Do("SET", "f:"+strconv.Itoa(i), "v")
	}
	redis.Do("MSET", "g:1", "g", "s:1", "s", "x:1", "x", "f:new", "n")
	p.settle()
	c := p.dial()
	for round := 0; round < 2; round++ { // 10 misses, then 10 hits
		for i := 1; i <= 10; i++ {
			c.Do("GET", "f:"+strconv.Itoa(i))
		}
	}
	c.Do("MGET", "f:1", "f:2") // 2 hits
	c.Do("MGET", "s:1", "x:1") // a bypass of policy s, a bypass without policy
	c.Do("GET", "s:1")
	c.Do("GET", "x:1")
	c.Do("GET", "g:1") // a miss
	// Two reads of a cold key in one pipeline: one fetch, the second read joins it (two misses, one join).
	if _, err := c.NetConn().Write(append(redistest.Encode("GET", "f:new"), redistest.Encode("GET", "f:new")...)); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if r, err := c.Read(); err != nil || string(r) != bulk("n") {
			t.Fatalf("pipelined GET f:new: %q, %v", r, err)
		}
	}
	p.clock.Advance(2 * time.Minute) // past the soft TTL of f
	c.Do("GET", "f:3")               // stale, and one background refresh
	redistest.Eventually(t, 5*time.Second, "refresh stored", func() bool { return p.cache.Stats().FillsStored >= 13 })

	if got := string(c.Do("SET", "f:10", "w")); got != "+OK\r\n" { // one key invalidated by a write
		t.Fatalf("SET: %q", got)
	}

	m := scrapeMetrics(t, admin)
	want := []struct {
		policy, result string
		n              float64
	}{
		{"f", "hit", 12}, {"f", "stale", 1}, {"f", "miss", 12}, {"f", "bypass", 0}, {"f", "error", 0},
		{"g", "miss", 1}, {"s", "bypass", 2}, {"(none)", "bypass", 2},
	}
	for _, w := range want {
		if got := m.value(t, "featcache_requests_total", "policy", w.policy, "result", w.result); got != w.n {
			t.Errorf("requests_total{policy=%q,result=%q} = %v; want %v", w.policy, w.result, got, w.n)
		}
	}
	checks := []struct {
		name   string
		labels []string
		want   float64
	}{
		{"featcache_served_age_seconds", []string{"policy", "f"}, 13}, // every hit and stale serve
		{"featcache_refreshes_total", nil, 1},
		{"featcache_stale_on_error_total", []string{"policy", "f"}, 0},
		{"featcache_upstream_duration_seconds", []string{"class", "refresh"}, 1},
		{"featcache_upstream_duration_seconds", []string{"class", "write"}, 1},
		{"featcache_upstream_up", nil, 1},
		{"featcache_tracking_up", nil, 1},
		{"featcache_client_connections", nil, 1},
		{"featcache_ready", nil, 1},
	}
	for _, ck := range checks {
		if got := m.value(t, ck.name, ck.labels...); got != ck.want {
			t.Errorf("%s%v = %v; want %v", ck.name, ck.labels, got, ck.want)
		}
	}
	atLeast := []struct {
		name   string
		labels []string
		min    float64
	}{
		{"featcache_fills_joined_total", nil, 1},
		{"featcache_upstream_duration_seconds", []string{"class", "read"}, 1},
		{"featcache_upstream_duration_seconds", []string{"class", "forward"}, 1},
		{"featcache_invalidated_keys_total", nil, 1},
		{"featcache_local_entries", nil, 11}, // f:1-10, f:new, g:1, less f:10 invalidated by the SET
		{"featcache_local_bytes", nil, 11 * 40},
		{"featcache_local_capacity_bytes", nil, 16 << 20},
		{"go_goroutines", nil, 1},
		{"process_resident_memory_bytes", nil, 1},
	}
	for _, ck := range atLeast {
		if got := m.value(t, ck.name, ck.labels...); got < ck.min {
			t.Errorf("%s%v = %v; want at least %v", ck.name, ck.labels, got, ck.min)
		}
	}
	// The ages: the twelve hits were served at age 0, the stale one at two minutes.
	if h := servedAgeBuckets(t, m, "f"); h[0.1] != 12 || h[60] != 12 || h[300] != 13 {
		t.Errorf("served_age_seconds buckets %v; want 12 at le=0.1 and le=60, 13 at le=300", h)
	}

	// Past f's and g's hard TTL, while Redis answers BUSY: f:1 is served stale, g:1 is an error, and upstream_up
	// drops to 0 while /readyz stays 200.
	p.clock.Advance(15 * time.Minute)
	script := redistest.Dial(t, redis.Addr())
	// Busy for up to 30 s, ended with SCRIPT KILL once the checks are done: a loaded machine may take seconds
	// to see the BUSY and send the reads, which a script of fixed length could outlast.
	if err := script.Send("EVAL", redistest.SleepScript, "0", "30000"); err != nil {
		t.Fatal(err)
	}
	redistest.Eventually(t, 5*time.Second, "upstream_up 0 while Redis is BUSY", func() bool {
		return scrapeMetrics(t, admin).value(t, "featcache_upstream_up") == 0
	})
	if got := string(c.Do("GET", "f:1")); got != bulk("v") {
		t.Fatalf("GET f:1 while BUSY: %q; want the stale value", got)
	}
	if got := string(c.Do("GET", "g:1")); !strings.HasPrefix(got, "-BUSY") {
		t.Fatalf("GET g:1 while BUSY: %q; want Redis's BUSY error", got)
	}
	if code := httpStatus(t, admin, "/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz = %d while Redis is BUSY; want 200", code)
	}
	m = scrapeMetrics(t, admin)
	if got := m.value(t, "featcache_requests_total", "policy", "f", "result", "stale"); got != 2 {
		t.Errorf("f stale = %v; want 2", got)
	}
	if got := m.value(t, "featcache_stale_on_error_total", "policy", "f"); got != 1 {
		t.Errorf("f stale_on_error = %v; want 1", got)
	}
	if got := m.value(t, "featcache_requests_total", "policy", "g", "result", "error"); got != 1 {
		t.Errorf("g error = %v; want 1", got)
	}
	redistest.Eventually(t, 10*time.Second, "SCRIPT KILL ends the busy script", func() bool {
		return string(redis.Do("SCRIPT", "KILL")) == "+OK\r\n"
	})
	if _, err := script.ReadTimeout(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	redistest.Eventually(t, 5*time.Second, "upstream_up back to 1", func() bool {
		return scrapeMetrics(t, admin).value(t, "featcache_upstream_up") == 1
	})
}

// servedAgeBuckets returns the cumulative bucket counts of featcache_served_age_seconds for a policy, by upper bound.
func servedAgeBuckets(t *testing.T, m scrape, policy string) map[float64]uint64 {
	t.Helper()
	for _, metric := range m["featcache_served_age_seconds"].GetMetric() {
		for _, l := range metric.Label {
			if l.GetName() == "policy" && l.GetValue() == policy {
				out := map[float64]uint64{}
				for _, b := range metric.Histogram.Bucket {
					out[b.GetUpperBound()] = b.GetCumulativeCount()
				}
				return out
			}
		}
	}
	t.Fatalf("no served_age_seconds for policy %q", policy)
	return nil
}

// TestMetricsLowCardinality: no key ever appears in /metrics, and reading more keys adds no series.
func TestMetricsLowCardinality(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	admin := p.adminURL()
	c := p.dial()
	series := func() int {
		t.Helper()
		_, body := testkit.Get(t, admin+"/metrics")
		if strings.Contains(string(body), "secret-key") {
			t.Fatal("/metrics shows a key")
		}
		var labels []string
		for _, line := range strings.Split(string(body), "\n") {
			if strings.HasPrefix(line, "featcache_") {
				if i := strings.IndexByte(line, '{'); i > 0 {
					labels = append(labels, line[i:strings.IndexByte(line, '}')+1])
				}
			}
		}
		sort.Strings(labels)
		return len(labels)
	}
	for i := 0; i < 50; i++ {
		c.Do("GET", "secret-key-"+strconv.Itoa(i))
	}
	n := series()
	for i := 50; i < 100; i++ {
		c.Do("GET", "secret-key-"+strconv.Itoa(i))
	}
	if more := series(); more != n {
		t.Fatalf("%d labelled featcache series after reading 50 keys, %d after 50 more; want no growth", n, more)
	}
	// Histograms by class (upstream round trips, request latency) make most of them: 25 lines per class.
	if n > 300 {
		t.Fatalf("%d labelled featcache series; want a bounded number", n)
	}
}

// TestSlowCommandLog: with log.slow_command set, a pipeline slower than it is logged with its command names, and
// never with its arguments.
func TestSlowCommandLog(t *testing.T) {
	var logs redistest.LogBuffer
	p := startProxyOn(t, redistest.Start(t), defaultTestConfig+`
log:
  slow_command: 1ns
`, func(o *Options) { o.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
	c := p.dial()
	c.Do("SET", "secret-key", "secret-value")
	c.Do("GET", "secret-key")
	redistest.Eventually(t, 5*time.Second, "slow commands logged", func() bool {
		return strings.Contains(logs.String(), "names=set") && strings.Contains(logs.String(), "names=get")
	})
	if strings.Contains(logs.String(), "secret") {
		t.Fatalf("the slow-command log shows arguments:\n%s", logs.String())
	}
	if got := scrapeMetrics(t, p.adminURL()).value(t, "featcache_slow_commands_total"); got < 2 {
		t.Fatalf("slow_commands_total = %v; want at least 2", got)
	}
}

// TestAdminPprof: /debug/pprof/ is served only with admin_pprof: true.
func TestAdminPprof(t *testing.T) {
	redis := redistest.Start(t)
	off := startProxyOn(t, redis, defaultTestConfig)
	if code := httpStatus(t, off.adminURL(), "/debug/pprof/"); code != http.StatusNotFound {
		t.Fatalf("/debug/pprof/ without admin_pprof: %d; want 404", code)
	}
	on := startProxyOn(t, redis, defaultTestConfig+"admin_pprof: true\n")
	if code := httpStatus(t, on.adminURL(), "/debug/pprof/"); code != http.StatusOK {
		t.Fatalf("/debug/pprof/ with admin_pprof: %d; want 200", code)
	}
}

// TestUpstreamDurationClasses: transactions, WATCH sessions and blocking commands are timed in their own classes,
// so that a BLPOP's wait never shows as upstream latency of the other classes.
func TestUpstreamDurationClasses(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	admin := p.adminURL()
	c := p.dial()
	c.Do("MULTI")
	c.Do("SET", "a", "1")
	c.Do("EXEC")
	c.Do("WATCH", "a")
	c.Do("GET", "a")
	c.Do("UNWATCH")
	c.Do("BLPOP", "nolist", "0.01")
	m := scrapeMetrics(t, admin)
	for _, class := range []string{"transaction", "pinned", "blocking"} {
		if got := m.value(t, "featcache_upstream_duration_seconds", "class", class); got < 1 {
			t.Errorf("upstream_duration_seconds{class=%q} count = %v; want at least 1", class, got)
		}
	}
}

// TestEvictionsMetric: reading 3MB of values through a local tier of local.max_memory 1MB evicts entries, which
// featcache_evictions_total counts, while every read still returns Redis's value.
func TestEvictionsMetric(t *testing.T) {
	p := startProxy(t, `
local: {max_memory: 1MB}
policies:
  - {name: e, prefix: "e:", hard_ttl: 1h}
`)
	admin := p.adminURL()
	const n, size = 6000, 500
	value := func(i int) string { return strconv.Itoa(i) + ":" + strings.Repeat("x", size) }
	rc := p.redis.Dial()
	for i := 0; i < n; i += 500 {
		args := []string{"MSET"}
		for j := i; j < i+500; j++ {
			args = append(args, "e:"+strconv.Itoa(j), value(j))
		}
		rc.Do(args...)
	}
	p.settle()
	m := scrapeMetrics(t, admin)
	if got := m.value(t, "featcache_local_capacity_bytes"); got != 1<<20 {
		t.Fatalf("local_capacity_bytes = %v; want 1MB", got)
	}
	if got := m.value(t, "featcache_evictions_total"); got != 0 {
		t.Fatalf("evictions_total = %v before any read; want 0", got)
	}
	c := p.dial()
	for round := 0; round < 2; round++ {
		for i := 0; i < n; i += 500 {
			args := []string{"MGET"}
			var want strings.Builder
			want.WriteString("*500\r\n")
			for j := i; j < i+500; j++ {
				args = append(args, "e:"+strconv.Itoa(j))
				want.WriteString(bulk(value(j)))
			}
			if got := string(c.Do(args...)); got != want.String() {
				t.Fatalf("round %d, MGET e:%d..: got %.100q; want %.100q", round, i, got, want.String())
			}
		}
	}
	m = scrapeMetrics(t, admin)
	if got := m.value(t, "featcache_evictions_total"); got < 1 {
		t.Fatalf("evictions_total = %v after reading %d values of %d bytes into 1MB; want more than 0", got, n, size)
	}
	if got := m.value(t, "featcache_local_entries"); got >= n {
		t.Fatalf("local_entries = %v; want fewer than the %d keys read into 1MB", got, n)
	}
}

// histogram returns the sample count, sum and cumulative buckets (by upper bound) of the series of a histogram
// whose labels include the given name=value pair, and whether there is one.
func (s scrape) histogram(name, label, value string) (count uint64, sum float64, buckets map[float64]uint64, ok bool) {
	for _, m := range s[name].GetMetric() {
		for _, l := range m.Label {
			if l.GetName() == label && l.GetValue() == value {
				buckets = map[float64]uint64{}
				for _, b := range m.Histogram.Bucket {
					buckets[b.GetUpperBound()] = b.GetCumulativeCount()
				}
				return m.Histogram.GetSampleCount(), m.Histogram.GetSampleSum(), buckets, true
			}
		}
	}
	return 0, 0, nil, false
}

// TestRequestMetrics: featcache_build_info names the version main passes; featcache_commands_total counts commands
// by name; featcache_request_duration_seconds times them by class, from the read of their pipeline to its reply,
// exactly for the classes that reach Redis and as an estimate for those answered from memory; errors are counted
// by reason; invalidated keys and flushes apart.
func TestRequestMetrics(t *testing.T) {
	p := startProxyOn(t, redistest.Start(t), defaultTestConfig, func(o *Options) { o.Version = "v9.8.7-test" })
	admin := p.adminURL()
	p.redis.Do("SET", "k", "v")
	p.settle()
	c := p.dial()
	expect := func(want string, args ...string) {
		t.Helper()
		if got := string(c.Do(args...)); !strings.HasPrefix(got, want) {
			t.Fatalf("%q: got %q; want %q...", args, got, want)
		}
	}
	expect(bulk("v"), "GET", "k") // cached_miss
	const hits = 400
	for i := 0; i < hits; i++ {
		expect(bulk("v"), "GET", "k") // cached_hit, one batch each
	}
	expect("+OK", "SET", "w", "1")                // write
	expect("+OK", "CLIENT", "SETNAME", "me")      // local
	expect("-ERR unknown command 'NOPE'", "NOPE") // forwarded: Redis answers
	expect("*", "CACHE", "STATS")                 // admin
	expect("+OK", "MULTI")                        // transaction, three commands
	expect("+QUEUED", "SET", "w", "2")
	expect("*1", "EXEC")
	expect("*-1", "BLPOP", "nolist", "0.2")                                            // blocking, 200ms
	expect("-ERR command 'config|set' is disabled", "CONFIG", "SET", "maxmemory", "1") // refused
	expect("+OK", "CACHE", "FLUSH")                                                    // admin, a flush
	// A pipeline of a miss, a write and a hit: three commands answered together.
	if _, err := c.NetConn().Write(append(append(redistest.Encode("GET", "p1"), redistest.Encode("SET", "p2", "x")...), redistest.Encode("GET", "w")...)); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if _, err := c.Read(); err != nil {
			t.Fatal(err)
		}
	}

	exact := map[string]uint64{"cached_miss": 3, "write": 2, "forwarded": 1, "admin": 2, "transaction": 3, "blocking": 1, "refused": 1}
	var m scrape
	// A batch is timed once its replies are written, which is after the client could read them.
	redistest.Eventually(t, 5*time.Second, "every batch timed", func() bool {
		m = scrapeMetrics(t, admin)
		for class, n := range exact {
			if got, _, _, _ := m.histogram("featcache_request_duration_seconds", "class", class); got != n {
				return false
			}
		}
		return true
	})
	// Answered from memory alone, timed one batch in about 8: the count is exact up to the gap not yet closed.
	if n, _, b, _ := m.histogram("featcache_request_duration_seconds", "class", "cached_hit"); n+2*latencySampleMean-2 < hits || n > hits || b[1] != n {
		t.Errorf("cached_hit: %d, %d of them under 1s; want %d less the batches since the last timed one (at most %d), all under 1s",
			n, b[1], hits, 2*latencySampleMean-2)
	}
	if n, _, _, _ := m.histogram("featcache_request_duration_seconds", "class", "local"); n > 1 {
		t.Errorf("local: %d; want 0 or 1 (one CLIENT SETNAME, sampled)", n)
	}
	if _, sum, b, _ := m.histogram("featcache_request_duration_seconds", "class", "blocking"); sum < 0.2 || b[0.1] != 0 {
		t.Errorf("blocking: sum %vs, %d under 100ms; want BLPOP's 200ms wait", sum, b[0.1])
	}
	for _, ck := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"featcache_build_info", []string{"version", "v9.8.7-test", "goversion", runtime.Version()}, 1},
		{"featcache_commands_total", []string{"command", "get"}, hits + 3},
		{"featcache_commands_total", []string{"command", "set"}, 3},
		{"featcache_commands_total", []string{"command", "client|setname"}, 1},
		{"featcache_commands_total", []string{"command", "(unknown)"}, 1},
		{"featcache_commands_total", []string{"command", "cache"}, 2},
		{"featcache_commands_total", []string{"command", "config|set"}, 1},
		{"featcache_errors_total", []string{"reason", "refused"}, 1},
		{"featcache_errors_total", []string{"reason", "upstream"}, 0},
		{"featcache_errors_total", []string{"reason", "snapshot"}, 0},
		{"featcache_flushes_total", nil, 1},
	} {
		if got := m.value(t, ck.name, ck.labels...); got != ck.want {
			t.Errorf("%s%v = %v; want %v", ck.name, ck.labels, got, ck.want)
		}
	}
	if got := m.value(t, "featcache_invalidated_keys_total"); got < 3 {
		t.Errorf("featcache_invalidated_keys_total = %v; want at least the 3 keys featcache's writes named", got)
	}
	if _, ok := m.find("featcache_commands_total", "command", "hgetall"); ok {
		t.Error("featcache_commands_total lists a command never sent")
	}
}

// TestHitsCountedBeforeTheirReplies: a client's hits and command calls reach the shared counters once per batch,
// but before any reply of the batch is written and before a later command of the same pipeline that is not a
// cached read: CACHE STATS in the pipeline after three hits counts them, and another connection reading the
// counters right after a pipeline's replies finds every hit and every call of it.
func TestHitsCountedBeforeTheirReplies(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	c := p.dial()
	expectDo(t, c, "+OK\r\n", "SET", "count:k", "v")
	// A fill may be dropped (the SET's invalidation can arrive after it began): read until one is stored.
	redistest.Eventually(t, 5*time.Second, "count:k is cached", func() bool {
		expectDo(t, c, "$1\r\nv\r\n", "GET", "count:k")
		return slicesContains(parseLines(t, string(c.Do("CACHE", "EXPLAIN", "count:k"))), "state:fresh")
	})
	stat := func(lines []string, name string) int {
		for _, l := range lines {
			if v, ok := strings.CutPrefix(l, name+":"); ok {
				n, _ := strconv.Atoi(v)
				return n
			}
		}
		t.Fatalf("no %s line in %q", name, lines)
		return 0
	}
	before := parseLines(t, string(c.Do("CACHE", "STATS")))

	get := []string{"GET", "count:k"}
	writeRaw(t, c, encodePipeline(get, get, get, []string{"CACHE", "STATS"}))
	for range 3 {
		expectRead(t, c, "$1\r\nv\r\n")
	}
	frame, err := c.Read()
	if err != nil {
		t.Fatal(err)
	}
	in := parseLines(t, string(frame))
	if got, want := stat(in, "hits"), stat(before, "hits")+3; got != want {
		t.Errorf("CACHE STATS after three hits in its pipeline: hits:%d; want %d", got, want)
	}
	// Three GETs and this CACHE STATS itself since the one before, which counted itself.
	if got, want := stat(in, "commands"), stat(before, "commands")+4; got != want {
		t.Errorf("CACHE STATS after three hits in its pipeline: commands:%d; want %d", got, want)
	}

	hits, commands := p.srv.Stats().Hits.Load(), p.srv.Stats().Commands.Load()
	writeRaw(t, c, encodePipeline(get, get, get, get, get))
	for range 5 {
		expectRead(t, c, "$1\r\nv\r\n")
	}
	st := p.srv.Stats()
	if got := st.Hits.Load(); got != hits+5 {
		t.Errorf("after a pipeline of five hits was answered: hits %d; want %d", got, hits+5)
	}
	if got := st.Commands.Load(); got != commands+5 {
		t.Errorf("after a pipeline of five hits was answered: commands %d; want %d", got, commands+5)
	}
}
