package proxy

import (
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"featcache/internal/redistest"
)

// Server-level events caused by another client of the same Redis, connected straight to it: CLIENT PAUSE, CONFIG
// SET of maxclients, requirepass, timeout, client-output-buffer-limit, CLIENT KILL by type, REPLICAOF, DEBUG
// SLEEP. Each is run against featcache and against a direct client doing the same traffic, side by side; what
// featcache answers must be what the direct client gets, and no value Redis no longer holds is served after it.

// neighbourConfig caches "c:" keys (failing on upstream errors); other keys match no policy and are forwarded.
const neighbourConfig = `
policies:
  - {name: cached, prefix: "c:", soft_ttl: 1h, hard_ttl: 2h, jitter: 0}
`

// mixStep is one round of the traffic a featcache client and a direct client each run: a cached read, a
// forwarded write and read, a transaction and a blocking pop that finds an element. tag keeps the two clients'
// keys apart where they write; the replies are the same for both.
func mixStep(t *testing.T, c *redistest.Conn, tag string) []string {
	t.Helper()
	var got []string
	do := func(args ...string) {
		got = append(got, strings.Join(args, " ")+" -> "+string(c.Do(args...)))
	}
	do("GET", "c:1")
	do("SET", "u:w"+tag, "x")
	do("GET", "u:w"+tag)
	do("MULTI")
	do("INCR", "u:n"+tag)
	do("GET", "c:1")
	do("EXEC")
	do("DEL", "u:n"+tag)
	do("RPUSH", "u:l"+tag, "e")
	do("BLPOP", "u:l"+tag, "1")
	return got
}

// compareMix runs mixStep on featcache's fc and Redis's rc at the same time and requires the same replies (with
// tags replaced); it returns featcache's.
func compareMix(t *testing.T, phase string, fc, rc *redistest.Conn) []string {
	t.Helper()
	var got, want []string
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		want = mixStep(t, rc, "D")
	}()
	got = mixStep(t, fc, "F")
	wg.Wait()
	for i := range got {
		g := strings.ReplaceAll(got[i], "F", "D")
		if i >= len(want) || g != want[i] {
			t.Errorf("%s: featcache %q; Redis %q", phase, got[i], want[min(i, len(want)-1)])
		}
	}
	return got
}

// subscriberPair subscribes a featcache client and a direct client to one channel.
func subscriberPair(t *testing.T, p *testProxy, channel string) (fs, rs *redistest.Conn) {
	t.Helper()
	fs, rs = p.dial(), p.redis.Dial()
	want := "*3\r\n$9\r\nsubscribe\r\n" + bulk(channel) + ":1\r\n"
	expectDo(t, fs, want, "SUBSCRIBE", channel)
	expectDo(t, rs, want, "SUBSCRIBE", channel)
	return fs, rs
}

// expectMessage publishes msg on channel straight on Redis and requires both subscribers to receive it.
func expectMessage(t *testing.T, p *testProxy, channel, msg string, subs ...*redistest.Conn) {
	t.Helper()
	want := "*3\r\n$7\r\nmessage\r\n" + bulk(channel) + bulk(msg)
	redistest.Eventually(t, 5*time.Second, "subscriptions in place", func() bool {
		return string(p.redis.Do("PUBSUB", "NUMSUB", channel)) == "*2\r\n"+bulk(channel)+":"+strconv.Itoa(len(subs))+"\r\n"
	})
	p.redis.Do("PUBLISH", channel, msg)
	for _, s := range subs {
		expectRead(t, s, want)
	}
}

// primeNeighbour writes c:1 and reads it through featcache, so that it is cached.
func primeNeighbour(t *testing.T, p *testProxy, value string) {
	t.Helper()
	p.redis.Do("SET", "c:1", value)
	p.settle()
	if got := p.do("GET", "c:1"); got != bulk(value) {
		t.Fatalf("GET c:1: got %q; want %q", got, bulk(value))
	}
}

// expectFresh changes c:1 straight on Redis and waits until featcache answers the new value: tracking works.
func expectFresh(t *testing.T, p *testProxy, phase, value string) {
	t.Helper()
	redistest.Eventually(t, 10*time.Second, phase+": tracking up", func() bool { _, up := p.up.Tracking(); return up })
	p.redis.Do("SET", "c:1", value)
	redistest.Eventually(t, 5*time.Second, phase+": featcache answers "+value, func() bool {
		return p.do("GET", "c:1") == bulk(value)
	})
}

// TestNeighbourIdleTimeout: another client sets CONFIG SET timeout 1, and Redis closes connections idle for more
// than a second. featcache's idle shared connections, its idle dedicated connections (kept for reuse after a
// transaction or a blocking pop) and its tracking connection are closed while nobody uses them; the clients that
// come later get the replies a direct client gets, and no stale value.
func TestNeighbourIdleTimeout(t *testing.T) {
	redis := redistest.Start(t)
	p := startProxyOn(t, redis, neighbourConfig)
	primeNeighbour(t, p, "one")
	fc, rc := p.dial(), redis.Dial()
	compareMix(t, "before", fc, rc)
	expectDo(t, redis.Dial(), "+OK\r\n", "CONFIG", "SET", "timeout", "1")
	t.Cleanup(func() { redis.Do("CONFIG", "SET", "timeout", "0") })
	// Every connection of featcache's that was used before the change is closed once it has been idle long enough.
	before := upstreamConns(redis, "featcache")
	redistest.Eventually(t, 10*time.Second, "Redis closes featcache's idle connections", func() bool {
		live := map[string]bool{}
		for _, line := range upstreamConns(redis, "featcache") {
			live[clientField(line, "id")] = true
		}
		for _, line := range before {
			if live[clientField(line, "id")] && !strings.HasPrefix(clientField(line, "name"), "featcache-tracking") {
				return false
			}
		}
		return true
	})
	fc2, rc2 := p.dial(), redis.Dial()
	compareMix(t, "after the idle close", fc2, rc2)
	expectFresh(t, p, "after the idle close", "two")
}

// TestNeighbourDebugSleep: DEBUG SLEEP 2 straight on Redis. Forwarded reads and writes through featcache wait
// and get Redis's replies after the sleep, as a direct client's do; afterwards tracking works.
func TestNeighbourDebugSleep(t *testing.T) {
	redis := redistest.Start(t, "--enable-debug-command", "yes")
	p := startProxyOn(t, redis, neighbourConfig)
	primeNeighbour(t, p, "one")
	fs, rs := subscriberPair(t, p, "ch")
	fc, rc := p.dial(), redis.Dial()
	sleeper := redis.Dial()
	if err := sleeper.Send("DEBUG", "SLEEP", "2"); err != nil {
		t.Fatal(err)
	}
	redistest.Eventually(t, 5*time.Second, "Redis asleep", func() bool { return busyStarted(t, redis) })
	compareMix(t, "during DEBUG SLEEP", fc, rc)
	expectRead(t, sleeper, "+OK\r\n")
	expectMessage(t, p, "ch", "after-sleep", fs, rs)
	expectFresh(t, p, "after DEBUG SLEEP", "two")
}
