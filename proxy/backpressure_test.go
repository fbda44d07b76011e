package proxy

import (
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"featcache/config"
	"featcache/internal/redistest"
)

// Clients that do not read their replies: featcache writes a client's replies as they are produced, and the write
// waits for the client, so the client's pipeline waits with it. These tests check what such a client holds, and
// that it never holds anything another client waits for.

// backpressureConfig caches every key; a value over 16 KB is too large for the tests' 16 MB tier, so every GET of
// it in one pipeline joins one fill.
const backpressureConfig = `
limits: {output_timeout: 10s}
policies:
  - {name: default, prefix: "", soft_ttl: 1h, hard_ttl: 2h, jitter: 0}
`

// stalledPattern is a pipeline whose every write to the client is made while the command in the middle is in
// the segment, waiting for its round trip. Each iteration (in steady state) starts with the previous one's last
// GET and SET replies in c.out; MGET of three 16,300-byte values brings c.out just below outputFlushBytes; then
// middle(i) opens a hole; one more such value goes to the segment's tail and brings the pending replies past
// outputFlushBytes with the tail still below it, so c.out is written while middle(i) waits; then a write runs
// the segment. bp:h must be in the tier (setupBackpressure).
func stalledPattern(n int, middle func(i int) []string) []byte {
	var b []byte
	for i := 0; i < n; i++ {
		b = append(b, encodePipeline(
			[]string{"MGET", "bp:h", "bp:h", "bp:h"},
			middle(i),
			[]string{"GET", "bp:h"},
			[]string{"SET", "bp:w:" + strconv.Itoa(i), "x"},
		)...)
	}
	return b
}

// waitBlockedWriter waits until a client of p has been in the same write to its socket for 200 ms: it does not
// read, and the socket is full.
func waitBlockedWriter(t *testing.T, p *testProxy) {
	t.Helper()
	var seq uint64
	var since time.Time
	redistest.Eventually(t, 20*time.Second, "a client blocked in a write", func() bool {
		p.srv.mu.Lock()
		defer p.srv.mu.Unlock()
		for c := range p.srv.conns {
			if s := c.wseq.Load(); s&1 == 1 {
				if s != seq {
					seq, since = s, time.Now()
					return false
				}
				return time.Since(since) > 200*time.Millisecond
			}
		}
		return false
	})
}

// setupBackpressure starts featcache with bp:h, the value of stalledPattern, in its tier.
func setupBackpressure(t *testing.T) *testProxy {
	p := startProxy(t, backpressureConfig)
	h := strings.Repeat("h", 16300)
	p.redis.Do("SET", "bp:h", h)
	p.settle()
	c := p.dial()
	defer c.Close()
	expectDo(t, c, bulk(h), "GET", "bp:h")
	expectDo(t, c, bulk(h), "GET", "bp:h")
	if p.srv.Stats().Hits.Load() != 1 {
		t.Fatal("bp:h is not in the tier")
	}
	return p
}

// TestBlockedClientLeadsNoFill: a client that stops reading while a fill it leads is in its segment would make
// every other client reading that key wait until limits.output_timeout closes it. The segment runs before any
// write that may wait, so other clients read every key at once.
func TestBlockedClientLeadsNoFill(t *testing.T) {
	p := setupBackpressure(t)
	const n = 400
	for i := 0; i < n; i++ {
		p.redis.Do("SET", "bp:m:"+strconv.Itoa(i), "m"+strconv.Itoa(i))
	}
	quiet := p.dial()
	defer quiet.Close()
	go quiet.NetConn().Write(stalledPattern(n, func(i int) []string { return []string{"GET", "bp:m:" + strconv.Itoa(i)} }))
	waitBlockedWriter(t, p)

	other := p.dial()
	var slowest time.Duration
	for i := 0; i < n; i++ {
		k := strconv.Itoa(i)
		start := time.Now()
		if err := other.Send("GET", "bp:m:"+k); err != nil {
			t.Fatal(err)
		}
		got, err := other.ReadTimeout(3 * time.Second)
		if err != nil || string(got) != bulk("m"+k) {
			t.Fatalf("GET bp:m:%s while a client that does not read holds its pipeline: %q, %v", k, got, err)
		}
		slowest = max(slowest, time.Since(start))
	}
	t.Logf("slowest of %d GETs: %v", n, slowest)
}

// TestClosedClientForwardsNothing: once a client's connection fails, nothing more is sent upstream for it, also
// not the forwarded commands of its pipeline that were waiting in the segment for their round trip.
func TestClosedClientForwardsNothing(t *testing.T) {
	p := setupBackpressure(t)
	p.redis.Do("SET", "bp:u", "12345")
	strlen0, set0 := p.redis.Calls("strlen"), p.redis.Calls("set")
	// STRLEN is forwarded; every write to the client happens with one STRLEN waiting in the segment, which the
	// SET after it sends. Redis executes the two in pairs.
	quiet := p.dial()
	go quiet.NetConn().Write(stalledPattern(400, func(int) []string { return []string{"STRLEN", "bp:u"} }))
	waitBlockedWriter(t, p)
	quiet.Close()
	redistest.Eventually(t, 10*time.Second, "the closed connection's goroutine ends",
		func() bool { return p.srv.Clients() == 0 })
	strlen, set := p.redis.Calls("strlen")-strlen0, p.redis.Calls("set")-set0
	t.Logf("Redis executed %d STRLEN and %d SET of the pipeline", strlen, set)
	if strlen != set {
		t.Errorf("Redis executed %d STRLEN and %d SET of the pipeline; want as many STRLEN as SET, none after the close",
			strlen, set)
	}
}

// TestClosedClientBuildsNothing: a client pipelines 1,000 GETs of a 100 KB value too large for the tier, which
// all join one fill, and closes without reading. Once its write fails, the replies still to be assembled are not
// built: featcache allocates a few MB for it, not the 100 MB of its pipeline's replies.
func TestClosedClientBuildsNothing(t *testing.T) {
	p := setupBackpressure(t)
	value := strings.Repeat("v", 100<<10)
	p.redis.Do("SET", "bp:big", value)
	var pipeline [][]string
	for i := 0; i < 1000; i++ {
		pipeline = append(pipeline, []string{"GET", "bp:big"})
	}
	quiet := p.dial()
	writeRaw(t, quiet, encodePipeline(pipeline...))
	waitBlockedWriter(t, p)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	before := ms.TotalAlloc
	quiet.Close()
	redistest.Eventually(t, 10*time.Second, "the closed connection's goroutine ends",
		func() bool { return p.srv.Clients() == 0 })
	runtime.ReadMemStats(&ms)
	if allocated := ms.TotalAlloc - before; allocated > 16<<20 {
		t.Errorf("featcache allocated %d MB after the client closed; want nothing more for it", allocated>>20)
	}
}

// TestMgetBoundedWhileAssembled: an MGET naming a key a thousand times, whose value is too large for the tier, gets
// one fill; its reply is assembled from it after the round trip and would be 100 MB. It is cut at
// limits.max_output_bytes as it grows, and the client is told and closed, as for an MGET answered from memory.
func TestMgetBoundedWhileAssembled(t *testing.T) {
	p := startProxy(t, strings.Replace(backpressureConfig, "{output_timeout: 10s}", "{output_timeout: 10s, max_output_bytes: 1MB}", 1))
	p.redis.Do("SET", "bp:big", strings.Repeat("v", 100<<10))
	mget := []string{"MGET"}
	for i := 0; i < 1000; i++ {
		mget = append(mget, "bp:big")
	}
	c := p.dial()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	before := ms.TotalAlloc
	expectDo(t, c, "-ERR featcache reply exceeds limits.max_output_bytes, connection closed\r\n", mget...)
	expectClosed(t, c, time.Second)
	runtime.ReadMemStats(&ms)
	if allocated := ms.TotalAlloc - before; allocated > 16<<20 {
		t.Errorf("featcache allocated %d MB for the MGET; want about limits.max_output_bytes", allocated>>20)
	}
}

// TestBlockedClientsWithinBudget: twenty clients pipeline GETs of a 600 KB value no policy caches (a SET after each,
// so that each GET has its own round trip) and never read. Each one waits in a write holding one reply from Redis
// and one to the client; what it holds is reserved from limits.max_clients_memory before the write, so the clients
// the budget cannot cover are told and closed, and the heap the others hold stays within the budget.
func TestBlockedClientsWithinBudget(t *testing.T) {
	const budget = 4 << 20
	p := startProxy(t, `
limits: {output_timeout: 10s, max_request_bytes: 1MB, max_output_bytes: 1MB, max_clients_memory: 4MB}
policies:
  - {name: bp, prefix: "bp:", soft_ttl: 1h, hard_ttl: 2h}
`)
	p.redis.Do("SET", "u:big", strings.Repeat("u", 600<<10))
	var pipeline [][]string
	for i := 0; i < 50; i++ {
		pipeline = append(pipeline, []string{"GET", "u:big"}, []string{"SET", "u:w", "x"})
	}
	payload := encodePipeline(pipeline...)
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc

	const clients = 20
	for i := 0; i < clients; i++ {
		c := p.dial()
		defer c.Close()
		writeRaw(t, c, payload)
	}
	var blocked int
	redistest.Eventually(t, 20*time.Second, "every client blocked in a write or closed", func() bool {
		p.srv.mu.Lock()
		defer p.srv.mu.Unlock()
		blocked = 0
		for c := range p.srv.conns {
			if c.wseq.Load()&1 == 1 {
				blocked++
			}
		}
		return blocked == len(p.srv.conns) && blocked+int(p.srv.Stats().MemoryLimits.Load()) == clients
	})
	runtime.GC()
	runtime.ReadMemStats(&ms)
	held := int64(ms.HeapAlloc) - int64(base)
	t.Logf("%d clients blocked, %d closed by the budget; heap held %d KB, reserved %d KB", blocked,
		p.srv.Stats().MemoryLimits.Load(), held>>10, p.srv.ClientMemory()>>10)
	if p.srv.Stats().MemoryLimits.Load() == 0 {
		t.Error("no client was closed by the budget")
	}
	if limit := int64(budget + clients*config.ClientBaselineBytes + 2<<20); held > limit {
		t.Errorf("the blocked clients hold %d KB; want at most the budget plus their baselines (%d KB)", held>>10, limit>>10)
	}
}
