package proxy

import (
	"context"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"featcache/internal/redistest"
)

// TestClientTrackingRESP3 compares tracking for a RESP3 client with Redis's: invalidations are pushes on the
// client's own connection (">2 invalidate [keys]", "_" for a flush), in every mode; CLIENT TRACKINGINFO is a map.
func TestClientTrackingRESP3(t *testing.T) {
	compareTrackingIn(t, []trackStep{
		step("w", "MSET", "c:1", "v", "u:1", "v"),
		step("a", "CLIENT", "TRACKINGINFO"),
		step("a", "CLIENT", "TRACKING", "ON"),
		step("a", "CLIENT", "TRACKINGINFO"),
		step("a", "GET", "c:1"),
		step("a", "GET", "c:1"),
		step("a", "MGET", "u:1", "u:2"),
		step("w", "SET", "c:1", "w"),
		step("x", "SET", "u:1", "x"),
		step("a", "GET", "c:1"),
		step("a", "SET", "c:1", "self"), // Redis sends it after the reply: compared without the order
		step("a", "HGETALL", "u:h"),
		step("w", "HSET", "u:h", "f", "v"),
		step("a", "GET", "u:3"),
		step("w", "FLUSHALL"),
		step("a", "CLIENT", "TRACKING", "OFF"),
		step("a", "CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "u:a", "PREFIX", "c:", "NOLOOP"),
		step("a", "CLIENT", "TRACKINGINFO"),
		step("w", "MSET", "u:a1", "1", "u:b1", "1"),
		step("x", "SET", "c:9", "1"),
		step("a", "SET", "u:a2", "1"),
		step("a", "CLIENT", "TRACKING", "OFF"),
		step("a", "CLIENT", "TRACKING", "ON", "OPTIN"),
		step("a", "GET", "u:4"),
		step("a", "CLIENT", "CACHING", "yes"),
		step("a", "GET", "u:5"),
		step("w", "MSET", "u:4", "1", "u:5", "1"),
		step("a", "RESET"),
		step("a", "CLIENT", "TRACKINGINFO"),
	}, true)
}

// TestClientTrackingRESP3Redirect: a RESP3 client redirecting to a RESP2 target in Pub/Sub mode (the null of a
// flush in the tracking client's protocol, "_", as Redis writes it), and told with a tracking-redir-broken push
// once the target has gone.
func TestClientTrackingRESP3Redirect(t *testing.T) {
	compareTrackingIn(t, []trackStep{
		step("a", "CLIENT", "TRACKING", "ON", "REDIRECT", "$R"),
		step("a", "GET", "u:1"),
		step("w", "SET", "u:1", "v"),
		step("w", "FLUSHDB"),
		step("a", "GET", "c:1"),
		step("r", "close"),
		step("w", "SET", "c:1", "v"),
		step("a", "CLIENT", "TRACKINGINFO"),
		step("a", "CLIENT", "INFO"),
	}, true)
}

// cachingClient is a rueidis client with client-side caching, closed when the test ends, and its cached GET: the
// value, and whether it came from rueidis's memory.
func cachingClient(t *testing.T, opt rueidis.ClientOption) (client rueidis.Client, get func(key string) (string, bool)) {
	t.Helper()
	client, err := rueidis.NewClient(opt)
	if err != nil {
		t.Fatalf("rueidis with client-side caching through featcache: %v", err)
	}
	t.Cleanup(client.Close)
	get = func(key string) (string, bool) {
		res := client.DoCache(context.Background(), client.B().Get().Key(key).Cache(), time.Minute)
		v, err := res.ToString()
		if err != nil {
			t.Fatalf("DoCache GET %s: %v", key, err)
		}
		return v, res.IsCacheHit()
	}
	return client, get
}

// TestClientTrackingRueidis runs the rueidis client with client-side caching (RESP3, OPTIN, CLIENT CACHING yes
// before each cached read) through featcache: cached reads are served from its memory until another client's write
// through featcache, or straight to Redis, invalidates them; DoMultiCache pipelines.
func TestClientTrackingRueidis(t *testing.T) {
	p := startProxy(t, trackingTestConfig)
	client, get := cachingClient(t, rueidis.ClientOption{InitAddress: []string{p.addr}, DisableRetry: true})
	ctx := context.Background()
	w := p.dial()
	expectDo(t, w, "+OK\r\n", "MSET", "c:1", "v1", "u:1", "v1")
	p.settle()
	for _, key := range []string{"c:1", "u:1"} {
		if v, _ := get(key); v != "v1" {
			t.Fatalf("GET %s: %q", key, v)
		}
		if v, hit := get(key); v != "v1" || !hit {
			t.Fatalf("GET %s again: %q, cache hit %v; want v1 from rueidis's memory", key, v, hit)
		}
	}
	// A write through featcache, and one straight to Redis, reach rueidis's memory.
	expectDo(t, w, "+OK\r\n", "SET", "c:1", "v2")
	p.redis.Do("SET", "u:1", "v2")
	for _, key := range []string{"c:1", "u:1"} {
		redistest.Eventually(t, 5*time.Second, key+" invalidated in rueidis's memory", func() bool {
			v, _ := get(key)
			return v == "v2"
		})
	}
	// DoMultiCache pipelines the reads of several keys.
	expectDo(t, w, "+OK\r\n", "MSET", "c:2", "a", "u:2", "b")
	p.settle()
	for round := range 2 {
		res := client.DoMultiCache(ctx,
			rueidis.CT(client.B().Get().Key("c:2").Cache(), time.Minute),
			rueidis.CT(client.B().Get().Key("u:2").Cache(), time.Minute))
		for i, want := range []string{"a", "b"} {
			if v, err := res[i].ToString(); err != nil || v != want {
				t.Fatalf("DoMultiCache round %d, key %d: %q, %v; want %q", round, i, v, err, want)
			}
			if round == 1 && !res[i].IsCacheHit() {
				t.Errorf("DoMultiCache round 1, key %d: not a cache hit", i)
			}
		}
	}
	expectDo(t, w, "+OK\r\n", "MSET", "c:2", "a2", "u:2", "b2")
	redistest.Eventually(t, 5*time.Second, "DoMultiCache sees the writes", func() bool {
		res := client.DoMultiCache(ctx,
			rueidis.CT(client.B().Get().Key("c:2").Cache(), time.Minute),
			rueidis.CT(client.B().Get().Key("u:2").Cache(), time.Minute))
		a, _ := res[0].ToString()
		b, _ := res[1].ToString()
		return a == "a2" && b == "b2"
	})
}
