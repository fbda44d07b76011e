package proxy

import (
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"featcache/internal/redistest"
)

// sendPipeline writes cmds in one write and returns their replies, concatenated.
func sendPipeline(t *testing.T, c *redistest.Conn, cmds ...[]string) string {
	t.Helper()
	writeRaw(t, c, encodePipeline(cmds...))
	return strings.Join(readFrames(t, c, len(cmds)), "")
}

// sideBySide sends the same pipeline straight to Redis and through featcache at the same time and returns both
// replies; between sending and reading, during() runs (nil: nothing).
func sideBySide(t *testing.T, p *testProxy, during func(), cmds ...[]string) (redis, featcache string) {
	t.Helper()
	direct, proxied := redistest.Dial(t, p.redis.Addr()), p.dial()
	defer direct.Close()
	defer proxied.Close()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); redis = sendPipeline(t, direct, cmds...) }()
	go func() { defer wg.Done(); featcache = sendPipeline(t, proxied, cmds...) }()
	if during != nil {
		during()
	}
	wg.Wait()
	return redis, featcache
}

// expiryPastSecond returns when a key set now should expire, 50ms past a whole second at least 700ms away, and the
// PX that sets it. The local tier's memory (freecache) keeps whole seconds and drops an entry at the first whole
// second after its last servable instant: a read within 950ms after that expiry still finds the entry, and only
// its own deadline, judged at the time of the read, keeps it from being served.
func expiryPastSecond() (at time.Time, px string) {
	now := time.Now()
	at = now.Truncate(time.Second).Add(time.Second + 50*time.Millisecond)
	if at.Sub(now) < 700*time.Millisecond {
		at = at.Add(time.Second)
	}
	return at, strconv.FormatInt(at.Sub(now).Milliseconds(), 10)
}

// secondsUntil formats the time left until at as a Redis timeout in seconds.
func secondsUntil(at time.Time) string {
	return strconv.FormatFloat(time.Until(at).Seconds(), 'f', 3, 64)
}

// TestPipelineReadAfterBlockingCommand (invariant 3): a read that follows a blocking command in a pipeline is
// judged at the time it runs, not when the pipeline arrived: a key that expired in Redis while BLPOP waited, and
// an entry that went past its hard TTL meanwhile (tracking off: only the TTL bounds it), are not served. The same
// pipeline sent straight to Redis gives the same bytes.
func TestPipelineReadAfterBlockingCommand(t *testing.T) {
	p := startProxy(t, `
upstream: {tracking: false}
policies:
  - {name: short, prefix: "s:", soft_ttl: 300ms, hard_ttl: 500ms, jitter: 0, on_upstream_error: serve_stale, max_stale: 1h}
  - {name: long, prefix: "l:", soft_ttl: 1h, hard_ttl: 2h, jitter: 0}
`)
	c := p.dial()
	expiry, px := expiryPastSecond()
	p.redis.Do("SET", "l:expiring", "v", "PX", px)
	p.redis.Do("SET", "s:changed", "old")
	for _, k := range []string{"l:expiring", "s:changed"} {
		if got := string(c.Do("GET", k)); !strings.HasPrefix(got, "$") || got == "$-1\r\n" {
			t.Fatalf("GET %s: %q", k, got)
		}
	}

	redis, featcache := sideBySide(t, p, nil,
		[]string{"BLPOP", "nolist", secondsUntil(expiry.Add(450 * time.Millisecond))}, []string{"GET", "l:expiring"})
	if want := "*-1\r\n$-1\r\n"; redis != want || featcache != want {
		t.Fatalf("GET, after a BLPOP that outlasted the key's expiry: Redis %q, featcache %q; want %q from both", redis, featcache, want)
	}

	redis, featcache = sideBySide(t, p, func() {
		// Written while both pipelines wait in BLPOP: unseen by featcache (no tracking), but past hard_ttl by the
		// time the GET after BLPOP runs.
		p.redis.Do("SET", "s:changed", "new")
	}, []string{"BLPOP", "nolist", "1"}, []string{"GET", "s:changed"})
	if want := "*-1\r\n" + bulk("new"); redis != want || featcache != want {
		t.Fatalf("GET after BLPOP 1 of an entry with hard_ttl 500ms: Redis %q, featcache %q; want %q from both", redis, featcache, want)
	}
}

// TestPipelineWhileRedisSleeps (invariant 3): [INCR, GET] x3 sent while Redis is busy (DEBUG SLEEP straight on
// Redis; featcache denies DEBUG): every GET runs after its INCR's round trip, by when the key has expired.
// featcache answers what Redis answers.
func TestPipelineWhileRedisSleeps(t *testing.T) {
	p := startProxyOn(t, redistest.Start(t, "--enable-debug-command", "local"), `
upstream: {tracking: false, timeout: 5s}
policies:
  - {name: long, prefix: "", soft_ttl: 1h, hard_ttl: 2h, jitter: 0}
`)
	c := p.dial()
	expiry, px := expiryPastSecond()
	p.redis.Do("SET", "k", "v", "PX", px)
	if got := string(c.Do("GET", "k")); got != bulk("v") {
		t.Fatalf("GET k: %q", got)
	}
	sleeper := redistest.Dial(t, p.redis.Addr())
	defer sleeper.Close()
	if err := sleeper.Send("DEBUG", "SLEEP", secondsUntil(expiry.Add(450*time.Millisecond))); err != nil {
		t.Fatal(err)
	}
	// Wait until Redis sleeps (a PING on a new connection goes unanswered), so that both pipelines queue behind it.
	redistest.Eventually(t, 2*time.Second, "Redis runs DEBUG SLEEP", func() bool {
		probe := redistest.Dial(t, p.redis.Addr())
		defer probe.Close()
		probe.Send("PING")
		_, err := probe.ReadTimeout(50 * time.Millisecond)
		return err != nil
	})
	redis, featcache := sideBySide(t, p, nil,
		[]string{"INCR", "x"}, []string{"GET", "k"}, []string{"INCR", "x"}, []string{"GET", "k"},
		[]string{"INCR", "x"}, []string{"GET", "k"})
	if got, _ := sleeper.Read(); string(got) != "+OK\r\n" {
		t.Fatalf("DEBUG SLEEP: %q", got)
	}
	// The two pipelines share the counter: Redis answers one of them 1, 3, 5, the other 2, 4, 6 (or an
	// interleaving); the GETs are what must agree.
	nilGets := func(replies string) bool { return strings.Count(replies, "$-1\r\n") == 3 }
	if !nilGets(redis) {
		t.Fatalf("Redis answered %q: DEBUG SLEEP did not hold the pipeline past the key's expiry", redis)
	}
	if !nilGets(featcache) {
		t.Fatalf("featcache answered %q after Redis slept past the key's expiry; Redis answered %q", featcache, redis)
	}
}

// TestServeStaleJudgedAfterRoundTrip (invariant 3): serve_stale decides after the failed round trip whether an
// entry is still within max_stale, not when the read arrived: a fill that times out after the entry's last
// serve-stale instant gets the error.
func TestServeStaleJudgedAfterRoundTrip(t *testing.T) {
	p := startProxy(t, `
upstream: {tracking: false, timeout: 1s}
policies:
  - {name: p, prefix: "", soft_ttl: 100ms, hard_ttl: 200ms, jitter: 0, on_upstream_error: serve_stale, max_stale: 700ms}
`)
	c := p.dial()
	p.redis.Do("SET", "k", "v")
	// The entry's last serve-stale instant is 900ms after its fill: put the fill 150ms into a second on the
	// injected clock, so that the local tier's memory (whole seconds) still holds the entry 950ms past that
	// instant, and only the entry's own deadline decides.
	if frac := p.clock.Now().Sub(p.clock.Now().Truncate(time.Second)); frac != 150*time.Millisecond {
		p.clock.Advance((time.Second + 150*time.Millisecond - frac) % time.Second)
	}
	if got := string(c.Do("GET", "k")); got != bulk("v") {
		t.Fatalf("GET k: %q", got)
	}
	p.clock.Advance(300 * time.Millisecond) // past hard_ttl, 600ms left of max_stale
	p.redis.Pause()
	defer p.redis.Resume()
	start := time.Now()
	got := string(c.Do("GET", "k"))
	if waited := time.Since(start); waited < 700*time.Millisecond {
		t.Fatalf("GET answered %q after %v: the fill did not wait for the hung server", got, waited)
	}
	if !strings.HasPrefix(got, "-") {
		t.Fatalf("GET answered %q after the fill timed out past max_stale; want the upstream error", got)
	}
}
