package proxy

import (
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"featcache/internal/redistest"
	"featcache/internal/testkit"
)

// trackingLossConfig caches "r:" keys with on_tracking_loss: revalidate and "f:" keys with the default, flush.
const trackingLossConfig = `
upstream: {revalidate_rate: 100, timeout: 300ms}
policies:
  - {name: revalidated, prefix: "r:", soft_ttl: 1h, hard_ttl: 2h, jitter: 0, on_tracking_loss: revalidate}
  - {name: flushed, prefix: "f:", soft_ttl: 1h, hard_ttl: 2h, jitter: 0}
`

// startTrackingLoss starts a featcache with trackingLossConfig and returns it with a client through which the
// revalidate policy's keys r:0.. (revalidated of them) and the flush policy's f:0.. (flushed), all written
// directly to Redis with value, have been read once: cached.
func startTrackingLoss(t *testing.T, revalidated, flushed int, value string) (*testProxy, *redistest.Conn) {
	t.Helper()
	p := startProxy(t, trackingLossConfig)
	c := p.dial()
	var keys []string
	for i := 0; i < max(revalidated, flushed); i++ {
		if i < revalidated {
			keys = append(keys, "r:"+strconv.Itoa(i))
		}
		if i < flushed {
			keys = append(keys, "f:"+strconv.Itoa(i))
		}
	}
	for _, k := range keys {
		p.redis.Do("SET", k, value)
	}
	p.settle()
	for _, k := range keys {
		if got := string(c.Do("GET", k)); got != bulk(value) {
			t.Fatalf("GET %s: %q", k, got)
		}
	}
	return p, c
}

func waitTrackingUp(t *testing.T, p *testProxy) {
	t.Helper()
	redistest.Eventually(t, 10*time.Second, "tracking re-established", func() bool {
		_, up := p.up.Tracking()
		return up
	})
}

// TestRevalidateAfterClientKill (invariant 4): after CLIENT KILL of featcache's connections the server is the same
// one (run_id unchanged). Entries of a revalidate policy stay, unverified: they are served within their soft TTL
// and re-fetched in the background at upstream.revalidate_rate, so upstream reads in a window stay within
// rate x window + burst however hard the keys are read. Entries of a flush policy are not served any more.
func TestRevalidateAfterClientKill(t *testing.T) {
	const n = 300
	p, c := startTrackingLoss(t, n, 20, "v1")
	p.redis.Do("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
	waitTrackingUp(t, p)
	c = p.dial() // the kill closed featcache's upstream connections, not this one; a fresh one is simpler

	before := p.redis.Calls("get")
	start := time.Now()
	for time.Since(start) < time.Second {
		for i := 0; i < n; i += 3 {
			if got := string(c.Do("GET", "r:"+strconv.Itoa(i))); got != bulk("v1") {
				t.Fatalf("unverified r:%d: %q", i, got)
			}
		}
	}
	window := time.Since(start)
	reads := p.redis.Calls("get") - before
	// revalidate_rate 100/s, burst 10; the window's own length plus one tick of slack.
	bound := int(100*window.Seconds()) + 10 + 10
	if reads > bound {
		t.Fatalf("%d upstream reads in %v after the reconnect; want at most %d (rate x window + burst)", reads, window, bound)
	}
	if reads == 0 {
		t.Fatal("no unverified entry was re-fetched")
	}
	if st := p.srv.Stats(); st.Unverified.Load() == 0 || st.Revalidations.Load() == 0 {
		t.Fatalf("unverified hits %d, revalidations %d; want both > 0", st.Unverified.Load(), st.Revalidations.Load())
	}
	t.Logf("%d upstream reads in %v for %d unverified keys read in a loop (bound %d)", reads, window, n, bound)

	// The flush policy's entries were dropped: each GET is a miss, fetched again. (Counted by the policy's
	// misses, not by Redis's GET count: background revalidations of the r: keys read above may still run.)
	ps := p.srv.policies.Load()
	pc := ps.countersFor(ps.matcher.Match([]byte("f:0")))
	misses, served := pc.result(resultMiss), pc.result(resultHit)+pc.result(resultStale)
	for i := 0; i < 20; i++ {
		if got := string(c.Do("GET", "f:"+strconv.Itoa(i))); got != bulk("v1") {
			t.Fatalf("GET f:%d: %q", i, got)
		}
	}
	if got := pc.result(resultMiss) - misses; got != 20 {
		t.Fatalf("flush policy after a tracking loss: %d misses for 20 keys; want 20", got)
	}
	if got := pc.result(resultHit) + pc.result(resultStale) - served; got != 0 {
		t.Fatalf("flush policy after a tracking loss: %d of 20 keys served from memory; want 0", got)
	}
	// A re-fetched entry is verified again: served fresh, no more upstream reads for it.
	if got := string(c.Do("CACHE", "EXPLAIN", "f:0")); !strings.Contains(got, "state:fresh") {
		t.Fatalf("after the re-fetch: %q", got)
	}
}

// TestRestartWithNewDataFlushes (invariant 4): kill -9 and restart of redis-server: the server that comes back has
// another run_id, so even a revalidate policy's entries are flushed and the new data is served.
func TestRestartWithNewDataFlushes(t *testing.T) {
	p, c := startTrackingLoss(t, 10, 10, "old")
	flushes := p.cache.Stats().Flushes
	p.redis.Restart() // SIGKILL, then a new process with no data
	for i := 0; i < 10; i++ {
		p.redis.Do("SET", "r:"+strconv.Itoa(i), "new")
		p.redis.Do("SET", "f:"+strconv.Itoa(i), "new")
	}
	redistest.Eventually(t, 10*time.Second, "the restarted server is recognised and the tier flushed", func() bool {
		_, up := p.up.Tracking()
		return up && p.cache.Stats().Flushes > flushes
	})
	c = p.dial()
	for i := 0; i < 10; i++ {
		for _, k := range []string{"r:", "f:"} {
			if got := string(c.Do("GET", k+strconv.Itoa(i))); got != bulk("new") {
				t.Fatalf("after a restart with new data, GET %s%d = %q; want new", k, i, got)
			}
		}
	}
}

// TestHungServer (invariant 4): SIGSTOP makes the tracking connection miss its health PING; the loss is handled
// as any other (flush policy: not served; revalidate policy: unverified), and after SIGCONT the same server
// comes back: revalidate entries are served and refreshed, nothing is flushed.
func TestHungServer(t *testing.T) {
	p, c := startTrackingLoss(t, 5, 5, "v1")
	flushes := p.cache.Stats().Flushes
	p.redis.Pause()
	redistest.Eventually(t, 10*time.Second, "the hung server's tracking connection is declared lost", func() bool {
		_, up := p.up.Tracking()
		return !up
	})
	// While Redis hangs: the revalidate policy answers from memory, the flush policy cannot vouch for its entries.
	if got := string(c.Do("GET", "r:1")); got != bulk("v1") {
		t.Fatalf("revalidate policy while the server hangs: %q", got)
	}
	if got := string(c.Do("GET", "f:1")); !strings.HasPrefix(got, "-ERR featcache upstream") {
		t.Fatalf("flush policy while the server hangs: %q; want an upstream error", got)
	}
	p.redis.Resume()
	waitTrackingUp(t, p)
	if got := p.cache.Stats().Flushes; got != flushes {
		t.Fatalf("the same server came back but the tier was flushed (%d -> %d)", flushes, got)
	}
	c = p.dial()
	if got := string(c.Do("GET", "r:2")); got != bulk("v1") {
		t.Fatalf("revalidate policy after SIGCONT: %q", got)
	}
	p.redis.Do("SET", "r:2", "v2")
	redistest.Eventually(t, 2*time.Second, "invalidations flow again after SIGCONT", func() bool {
		return string(c.Do("GET", "r:2")) == bulk("v2")
	})
}

const snapshotConfig = `
policies:
  - {name: credit, prefix: "credit:", soft_ttl: 1h, hard_ttl: 2h, jitter: 0, snapshot_pointer: "fs:version:credit"}
`

// startSnapshots starts a featcache with snapshotConfig in front of a Redis that holds n credit keys of versions v7
// and v8, written directly (credit:i:ver = "ver-i"), with the pointer at v7.
func startSnapshots(t *testing.T, n int) *testProxy {
	t.Helper()
	p := startProxy(t, snapshotConfig)
	for _, ver := range []string{"v7", "v8"} {
		for i := 0; i < n; i++ {
			p.redis.Do("SET", fmt.Sprintf("credit:%d:%s", i, ver), fmt.Sprintf("%s-%d", ver, i))
		}
	}
	p.redis.Do("SET", "fs:version:credit", "v7")
	p.settle()
	return p
}

// TestSnapshotFlipAndRollback: clients read logical keys; flipping the pointer switches every reader to the new
// version within the invalidation latency, flipping it back rolls back.
func TestSnapshotFlipAndRollback(t *testing.T) {
	p := startSnapshots(t, 10)
	c := p.dial()
	if got := string(c.Do("GET", "credit:3")); got != bulk("v7-3") {
		t.Fatalf("GET credit:3 at v7: %q", got)
	}
	if got := string(c.Do("GET", "credit:3")); got != bulk("v7-3") {
		t.Fatalf("second GET credit:3 at v7: %q", got)
	}
	explain := string(c.Do("CACHE", "EXPLAIN", "credit:3"))
	for _, want := range []string{`version:"v7"`, `physical_key:"credit:3:v7"`, "state:fresh", `snapshot_pointer:"fs:version:credit"`} {
		if !strings.Contains(explain, want) {
			t.Fatalf("CACHE EXPLAIN credit:3 lacks %s: %q", want, explain)
		}
	}
	p.redis.Do("SET", "fs:version:credit", "v8")
	redistest.Eventually(t, 2*time.Second, "readers switch to v8", func() bool {
		return string(c.Do("GET", "credit:3")) == bulk("v8-3")
	})
	if got := string(c.Do("MGET", "credit:1", "credit:2")); got != "*2\r\n"+bulk("v8-1")+bulk("v8-2") {
		t.Fatalf("MGET at v8: %q", got)
	}
	p.redis.Do("SET", "fs:version:credit", "v7") // rollback
	redistest.Eventually(t, 2*time.Second, "readers roll back to v7", func() bool {
		return string(c.Do("GET", "credit:3")) == bulk("v7-3")
	})
	// A flip through featcache is visible to its own clients at once (read-your-writes).
	c.Do("SET", "fs:version:credit", "v8")
	if got := string(c.Do("GET", "credit:4")); got != bulk("v8-4") {
		t.Fatalf("after flipping through featcache: %q", got)
	}
}

// TestSnapshotMGETNeverMixesVersions: while the pointer flips as fast as it can, every MGET of many logical keys
// is answered from one version.
func TestSnapshotMGETNeverMixesVersions(t *testing.T) {
	const n = 20
	p := startSnapshots(t, n)
	args := []string{"MGET"}
	for i := 0; i < n; i++ {
		args = append(args, "credit:"+strconv.Itoa(i))
	}
	var loops testkit.Loops
	var flips atomic.Int64
	d := redistest.Dial(t, p.redis.Addr())
	loops.Go(func(i int) bool {
		d.Do("SET", "fs:version:credit", []string{"v7", "v8"}[i%2])
		flips.Add(1)
		return true
	})
	var mixed, timeouts atomic.Int64
	var reads atomic.Int64
	seen := map[string]*atomic.Int64{"v7": {}, "v8": {}}
	for r := 0; r < 4; r++ {
		c := p.dial()
		loops.Go(func(int) bool {
			reply := string(c.Do(args...))
			reads.Add(1)
			v7, v8 := strings.Count(reply, "v7-"), strings.Count(reply, "v8-")
			switch {
			case strings.HasPrefix(reply, "-") && strings.Contains(reply, "upstream timeout"):
				// A fill that outlived upstream.timeout on a loaded machine answers an error (on_upstream_error
				// fail): no value, so no mix.
				timeouts.Add(1)
			case v7 == n && v8 == 0:
				seen["v7"].Add(1)
			case v8 == n && v7 == 0:
				seen["v8"].Add(1)
			default:
				mixed.Add(1)
				t.Errorf("one MGET mixed versions: %d at v7, %d at v8: %q", v7, v8, reply)
			}
			return true
		})
	}
	time.Sleep(1500 * time.Millisecond) // the load phase
	loops.Stop()
	t.Logf("%d MGETs of %d keys during %d flips: %d at v7, %d at v8, %d mixed, %d upstream timeouts", reads.Load(), n,
		flips.Load(), seen["v7"].Load(), seen["v8"].Load(), mixed.Load(), timeouts.Load())
	if seen["v7"].Load() == 0 || seen["v8"].Load() == 0 {
		t.Fatal("the readers never saw both versions: the test did not exercise a flip")
	}
}

// TestSnapshotWritesAndMissingPointer: writes through featcache to logical keys go to the current version's keys;
// a missing pointer is a clear error naming it.
func TestSnapshotWritesAndMissingPointer(t *testing.T) {
	p := startProxy(t, snapshotConfig)
	c := p.dial()
	want := "-ERR featcache: snapshot pointer 'fs:version:credit' of policy 'credit' does not exist\r\n"
	if got := string(c.Do("GET", "credit:1")); got != want {
		t.Fatalf("GET with no pointer: got %q; want %q", got, want)
	}
	if got := string(c.Do("SET", "credit:1", "x")); got != want {
		t.Fatalf("SET with no pointer: got %q; want %q", got, want)
	}
	p.redis.Do("SET", "fs:version:credit", "v9")
	p.settle()
	for _, cmd := range [][]string{
		{"SET", "credit:1", "one"},
		{"MSET", "credit:2", "two", "plain", "p"},
		{"HSET", "credit:h", "f", "v"},
		{"INCR", "credit:n"},
	} {
		if got := string(c.Do(cmd...)); strings.HasPrefix(got, "-") {
			t.Fatalf("%q: %q", cmd, got)
		}
	}
	for key, want := range map[string]string{"credit:1:v9": bulk("one"), "credit:2:v9": bulk("two"), "plain": bulk("p"), "credit:n:v9": bulk("1")} {
		if got := string(p.redis.Do("GET", key)); got != want {
			t.Fatalf("Redis %s = %q; want %q", key, got, want)
		}
	}
	if got := string(p.redis.Do("HGET", "credit:h:v9", "f")); got != bulk("v") {
		t.Fatalf("HSET went to %q", got)
	}
	if got := string(p.redis.Do("EXISTS", "credit:1")); got != ":0\r\n" {
		t.Fatalf("a logical key was written to Redis: EXISTS credit:1 = %q", got)
	}
	// Reads see the writes (the write invalidated the physical key), inside transactions too.
	if got := string(c.Do("GET", "credit:1")); got != bulk("one") {
		t.Fatalf("GET credit:1 after SET: %q", got)
	}
	c.Do("MULTI")
	c.Do("SET", "credit:1", "tx")
	c.Do("GET", "credit:1")
	if got := string(c.Do("EXEC")); got != "*2\r\n+OK\r\n"+bulk("tx") {
		t.Fatalf("EXEC: %q", got)
	}
	if got := string(p.redis.Do("GET", "credit:1:v9")); got != bulk("tx") {
		t.Fatalf("the transaction wrote %q to credit:1:v9", got)
	}
	if got := string(c.Do("GET", "credit:1")); got != bulk("tx") {
		t.Fatalf("GET credit:1 after EXEC: %q", got)
	}
}

// TestServeStaleBounds (invariant 3): serve_stale serves an entry past its hard TTL only while the upstream fails,
// never past max_stale nor past the key's upstream expiry, and counts it; a fail policy answers the error.
func TestServeStaleBounds(t *testing.T) {
	p := startProxy(t, `
upstream: {timeout: 200ms, tracking: false}
policies:
  - {name: stale, prefix: "s:", soft_ttl: 5s, hard_ttl: 10s, jitter: 0, on_upstream_error: serve_stale, max_stale: 30s}
  - {name: strict, prefix: "x:", soft_ttl: 5s, hard_ttl: 10s, jitter: 0}
`)
	c := p.dial()
	p.redis.Do("SET", "s:plain", "p")
	p.redis.Do("SET", "s:expiring", "e", "PX", "60000")
	p.redis.Do("SET", "x:k", "x")
	for _, k := range []string{"s:plain", "s:expiring", "x:k"} {
		c.Do("GET", k)
	}
	p.clock.Advance(15 * time.Second) // past hard_ttl: dead
	// The upstream is healthy: a dead entry is fetched, never served stale.
	if got := string(c.Do("GET", "s:plain")); got != bulk("p") || p.srv.Stats().StaleOnError.Load() != 0 {
		t.Fatalf("dead entry with a healthy upstream: %q, stale serves %d", got, p.srv.Stats().StaleOnError.Load())
	}
	p.clock.Advance(15 * time.Second) // the refetched s:plain is dead again (30s after the first fill)
	p.redis.Pause()
	defer p.redis.Resume()
	start := time.Now()
	if got := string(c.Do("GET", "s:plain")); got != bulk("p") {
		t.Fatalf("serve_stale while Redis hangs: %q", got)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("the stale serve took %v; want about the 200ms upstream timeout", d)
	}
	if got := p.srv.Stats().StaleOnError.Load(); got != 1 {
		t.Fatalf("stale serves = %d; want 1", got)
	}
	if got := string(c.Do("GET", "x:k")); !strings.HasPrefix(got, "-ERR featcache upstream timeout") {
		t.Fatalf("fail policy while Redis hangs: %q", got)
	}
	// s:expiring was fetched with a PTTL of 60s at t=0: at t=30s it is within max_stale but at t=61s it is past
	// the key's own expiry in Redis, which no stale serve may cross.
	if got := string(c.Do("GET", "s:expiring")); got != bulk("e") {
		t.Fatalf("s:expiring at 30s: %q", got)
	}
	p.clock.Advance(31 * time.Second)
	if got := string(c.Do("GET", "s:expiring")); !strings.HasPrefix(got, "-ERR") {
		t.Fatalf("s:expiring past its upstream expiry: %q; want an error", got)
	}
	// s:plain's entry (refetched at 15s, hard at 25s) is now 36s past... beyond max_stale 30s? 61 > 25+30.
	if got := string(c.Do("GET", "s:plain")); !strings.HasPrefix(got, "-ERR") {
		t.Fatalf("s:plain past max_stale: %q; want an error", got)
	}
}

// TestJitterSpreadsDeadlines (invariant 3): keys filled together get hard deadlines spread below the hard TTL,
// never above it.
func TestJitterSpreadsDeadlines(t *testing.T) {
	p := startProxy(t, `
policies:
  - {name: j, prefix: "j:", soft_ttl: 100s, hard_ttl: 100s, jitter: 0.5}
`)
	c := p.dial()
	const n = 200
	for i := 0; i < n; i++ {
		p.redis.Do("SET", "j:"+strconv.Itoa(i), "v")
	}
	p.settle()
	var args []string
	for i := 0; i < n; i++ {
		args = append(args, "j:"+strconv.Itoa(i))
	}
	c.Do(append([]string{"MGET"}, args...)...) // filled together
	lo, hi := int64(1<<62), int64(0)
	for _, k := range args {
		explain := string(c.Do("CACHE", "EXPLAIN", k))
		i := strings.Index(explain, "hard_left_ms:")
		if i < 0 {
			t.Fatalf("CACHE EXPLAIN %s: %q", k, explain)
		}
		v := explain[i+len("hard_left_ms:"):]
		ms, _ := strconv.ParseInt(v[:strings.IndexByte(v, '\r')], 10, 64)
		lo, hi = min(lo, ms), max(hi, ms)
	}
	if hi > 100_000 {
		t.Fatalf("a hard deadline %dms away is past the hard TTL (100s): jitter lengthened it", hi)
	}
	if lo > 60_000 || hi-lo < 30_000 {
		t.Fatalf("hard deadlines %dms..%dms away: want them spread over most of 50s..100s", lo, hi)
	}
	t.Logf("hard deadlines of %d keys filled together: %dms .. %dms from now", n, lo, hi)
}

// TestBoundedAgeBothTrackingModes (invariant 3): with tracking on and with tracking off, an entry is not served
// past its hard TTL (its key is read from Redis again), nor past the key's own expiry in Redis.
func TestBoundedAgeBothTrackingModes(t *testing.T) {
	for _, tracking := range []bool{true, false} {
		t.Run(fmt.Sprintf("tracking=%v", tracking), func(t *testing.T) {
			p := startProxy(t, fmt.Sprintf(`
upstream: {tracking: %v}
policies:
  - {name: p, prefix: "", soft_ttl: 10s, hard_ttl: 10s, jitter: 0}
`, tracking))
			c := p.dial()
			p.redis.Do("SET", "k", "v")
			p.redis.Do("SET", "short", "s", "PX", "300")
			p.settle()
			c.Do("GET", "k")
			before := p.redis.Calls("get")
			c.Do("GET", "k")
			if n := p.redis.Calls("get"); n != before {
				t.Fatalf("a fresh entry went upstream")
			}
			p.clock.Advance(10 * time.Second) // exactly the hard deadline: dead
			c.Do("GET", "k")
			if n := p.redis.Calls("get"); n != before+1 {
				t.Fatalf("at its hard deadline the entry was served from memory (upstream GETs %d -> %d)", before, n)
			}
			expectExpiresWithRedis(t, p, c, "short", "s")
		})
	}
}
