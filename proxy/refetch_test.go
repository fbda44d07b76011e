package proxy

import (
	"strings"
	"testing"
	"time"

	"featcache/internal/redistest"
)

// mustTrackingID returns the client id of featcache's tracking connection on redis, and fails the test without one.
func mustTrackingID(t *testing.T, redis *redistest.Server) string {
	t.Helper()
	id := trackingID(redis)
	if id == "" {
		t.Fatalf("no featcache tracking connection in CLIENT LIST")
	}
	return id
}

// killTrackingAndWrite closes featcache's tracking connection and runs writes straight on Redis in one
// transaction after it, so that no invalidation of theirs can reach featcache: they are changes made while
// tracking was down.
func killTrackingAndWrite(t *testing.T, p *testProxy, writes ...[]string) {
	t.Helper()
	direct := redistest.Dial(t, p.redis.Addr())
	defer direct.Close()
	id := mustTrackingID(t, p.redis)
	direct.Do("MULTI")
	direct.Do("CLIENT", "KILL", "ID", id)
	for _, w := range writes {
		direct.Do(w...)
	}
	if got := string(direct.Do("EXEC")); !strings.HasPrefix(got, "*") || strings.Contains(got, "\r\n-") {
		t.Fatalf("EXEC: %q", got)
	}
}

// convergesOnRedis polls until each read answers through featcache what it answers straight from Redis.
func convergesOnRedis(t *testing.T, p *testProxy, reads ...[]string) {
	t.Helper()
	c := p.dial()
	for _, r := range reads {
		t.Run(strings.Join(r, " "), func(t *testing.T) {
			redistest.Eventually(t, 3*time.Second, "featcache answers as Redis does", func() bool {
				return string(c.Do(r...)) == string(p.redis.Do(r...))
			})
		})
	}
}

// changesWhileUnseen are writes featcache does not see (tracking down, or off) to keys read by changedReads.
func changesWhileUnseen(prefix string) [][]string {
	return [][]string{
		{"DEL", prefix + "deleted"},
		{"DEL", prefix + "typed"}, {"RPUSH", prefix + "typed", "x"},
		{"SET", prefix + "grown", strings.Repeat("g", 64<<10)}, // larger than the 16MB test tier takes
		{"HDEL", prefix + "hash", "f1", "f2"},
		{"DEL", prefix + "gone"},
	}
}

func changedReads(prefix string) [][]string {
	return [][]string{
		{"GET", prefix + "deleted"}, {"GET", prefix + "typed"}, {"GET", prefix + "grown"},
		{"HMGET", prefix + "hash", "f1", "f2"}, {"HGETALL", prefix + "gone"},
	}
}

// seedChanged writes the keys changedReads reads and reads each through featcache once.
func seedChanged(t *testing.T, p *testProxy, prefix string) {
	t.Helper()
	for _, k := range []string{"deleted", "typed", "grown"} {
		p.redis.Do("SET", prefix+k, "v")
	}
	p.redis.Do("HSET", prefix+"hash", "f1", "a", "f2", "b", "f3", "c")
	p.redis.Do("HSET", prefix+"gone", "f1", "a")
	p.settle()
	c := p.dial()
	for _, r := range changedReads(prefix) {
		if got := string(c.Do(r...)); strings.HasPrefix(got, "-") || got == "$-1\r\n" {
			t.Fatalf("%q: %q", r, got)
		}
	}
}

// TestRevalidateSeesChangesMadeWhileTrackingWasDown (invariant 4): with on_tracking_loss: revalidate, keys changed
// while tracking was down (deleted, fields deleted, turned into a list, grown past what the tier stores, a hash
// deleted) answer what Redis holds once their unverified entries are re-fetched, even though what the re-fetch
// read cannot be stored.
func TestRevalidateSeesChangesMadeWhileTrackingWasDown(t *testing.T) {
	p := startProxy(t, `
upstream: {revalidate_rate: 1000, timeout: 1s}
policies:
  - {name: r, prefix: "r:", soft_ttl: 1h, hard_ttl: 2h, jitter: 0, on_tracking_loss: revalidate}
`)
	seedChanged(t, p, "r:")
	session := p.cache.Session()
	killTrackingAndWrite(t, p, changesWhileUnseen("r:")...)
	redistest.Eventually(t, 10*time.Second, "tracking lost and re-established", func() bool {
		_, up := p.up.Tracking()
		return up && p.cache.Session() >= session+2
	})
	convergesOnRedis(t, p, changedReads("r:")...)
}

// TestRefreshSeesChangesWithTrackingOff (invariant 3): without tracking, a background refresh of a soft-stale entry
// that reads the key deleted, of another type, too large to store or without the fields asked for drops the
// entry: the old value is not served until hard_ttl.
func TestRefreshSeesChangesWithTrackingOff(t *testing.T) {
	p := startProxy(t, `
upstream: {tracking: false}
policies:
  - {name: t, prefix: "t:", soft_ttl: 1s, hard_ttl: 1h, jitter: 0}
`)
	seedChanged(t, p, "t:")
	direct := redistest.Dial(t, p.redis.Addr())
	for _, w := range changesWhileUnseen("t:") {
		direct.Do(w...)
	}
	p.clock.Advance(2 * time.Second) // soft-stale: served, and refreshed in the background
	convergesOnRedis(t, p, changedReads("t:")...)
}

// TestServeStaleNeverGoesBack (invariant 3): after a tracking loss, a read fetches the new value (Redis healthy,
// tracking still down); when Redis then hangs, serve_stale answers that value, never the older entry of the
// earlier tracking session.
func TestServeStaleNeverGoesBack(t *testing.T) {
	p := startProxy(t, `
upstream: {timeout: 300ms}
policies:
  - {name: s, prefix: "", soft_ttl: 1h, hard_ttl: 2h, jitter: 0, on_upstream_error: serve_stale, max_stale: 1h}
`)
	c := p.dial()
	p.redis.Do("SET", "k", "old")
	p.settle()
	if got := string(c.Do("GET", "k")); got != bulk("old") {
		t.Fatalf("GET k: %q", got)
	}
	// Keep tracking down while Redis serves everything else: its connection cannot turn tracking on again.
	p.redis.Do("ACL", "SETUSER", "default", "-client|tracking")
	t.Cleanup(func() { p.redis.Do("ACL", "SETUSER", "default", "+client|tracking") })
	killTrackingAndWrite(t, p, []string{"SET", "k", "new"})
	redistest.Eventually(t, 5*time.Second, "the tracking loss is noticed", func() bool {
		_, up := p.up.Tracking()
		return !up
	})
	if got := string(c.Do("GET", "k")); got != bulk("new") {
		t.Fatalf("GET k with Redis healthy, tracking down: %q; want new", got)
	}
	p.redis.Pause()
	defer p.redis.Resume()
	if got := string(c.Do("GET", "k")); got != bulk("new") {
		t.Fatalf("GET k with Redis hung, after new was read: %q; want new from serve_stale", got)
	}
}
