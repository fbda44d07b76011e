package proxy

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"featcache/internal/redistest"
)

// invalidationBound is how long a write made elsewhere (another featcache, or Redis directly) may take to become
// visible through a featcache: the invalidation latency, measured in milliseconds (docs/freshness.md), with room
// for a loaded machine. Tests wait for convergence within it; they never assert a latency.
const invalidationBound = 2 * time.Second

// TestManyInstances: three featcache instances in front of one Redis stay consistent with it. Each has its own
// tracking connection (CLIENT LIST on Redis shows three, in BCAST mode), so each receives its own invalidations:
// a write through one instance, or straight to Redis, of a key the others hold cached becomes visible through all
// of them within the invalidation latency, for SET, MSET, DEL, HSET and a MULTI/EXEC transaction, key after key.
// (TestConsistencyChecker runs writers on two instances and Redis concurrently, with faults, but only SET/GET and
// only when scripts/test.sh asks for it; `make staleness` measures the latency.)
func TestManyInstances(t *testing.T) {
	redis := redistest.Start(t)
	cfg := `
policies:
  - {name: mi, prefix: "mi:", soft_ttl: 1h, hard_ttl: 2h, jitter: 0}
`
	instances := []*testProxy{startProxyOn(t, redis, cfg), startProxyOn(t, redis, cfg), startProxyOn(t, redis, cfg)}

	// One tracking connection per instance, in BCAST mode (flags t and B). rueidis, which carries tracking, keeps a
	// second, idle connection of the same name per instance, without tracking.
	tracking := trackingConns(redis)
	for _, line := range tracking {
		if flags := clientField(line, "flags"); !strings.Contains(flags, "B") {
			t.Errorf("tracking connection with flags %q; want BCAST (B): %s", flags, line)
		}
	}
	if len(tracking) != len(instances) {
		t.Fatalf("CLIENT LIST shows %d featcache tracking connections; want one per instance (%d):\n%s",
			len(tracking), len(instances), strings.Join(tracking, "\n"))
	}

	conns := make([]*redistest.Conn, len(instances))
	for i, p := range instances {
		conns[i] = p.dial()
	}
	direct := redis.Dial()

	// cached reads key (GET, or HGET of a field) through every instance and checks that each holds it in memory,
	// so that what follows tests an invalidation and not a miss.
	cached := func(read []string, want string) {
		t.Helper()
		for i, c := range conns {
			instances[i].settle() // the invalidation of the setup write must not drop what is read next
			expectDo(t, c, want, read...)
			explain := string(c.Do(append([]string{"CACHE", "EXPLAIN"}, read[1:]...)...)) // key, or key field
			if !strings.Contains(explain, "state:fresh") {
				t.Fatalf("instance %d does not hold %s cached after reading it: %s", i, read[1], explain)
			}
		}
	}
	// converges waits until every instance answers read with want.
	converges := func(what string, read []string, want string) {
		t.Helper()
		for i, c := range conns {
			var got []byte
			redistest.Eventually(t, invalidationBound, what+" visible through instance "+strconv.Itoa(i), func() bool {
				got = c.Do(read...)
				return string(got) == want
			})
		}
	}
	bulk := func(s string) string { return "$" + strconv.Itoa(len(s)) + "\r\n" + s + "\r\n" }

	const rounds = 30
	for r := 0; r < rounds; r++ {
		// The writer: each instance in turn, and every fourth round Redis itself.
		w, via := direct, "redis"
		if r%4 != 3 {
			w, via = conns[r%len(conns)], "instance "+strconv.Itoa(r%len(conns))
		}
		n := strconv.Itoa(r)
		k1, k2, h := "mi:a:"+n, "mi:b:"+n, "mi:h:"+n
		old, next := "old"+n, "new"+n

		// SET
		expectDo(t, direct, "+OK\r\n", "SET", k1, old)
		cached([]string{"GET", k1}, bulk(old))
		expectDo(t, w, "+OK\r\n", "SET", k1, next)
		converges("SET through "+via, []string{"GET", k1}, bulk(next))

		// MSET of two cached keys
		expectDo(t, direct, "+OK\r\n", "SET", k2, old)
		cached([]string{"GET", k2}, bulk(old))
		expectDo(t, w, "+OK\r\n", "MSET", k1, next+"m", k2, next+"m")
		converges("MSET through "+via, []string{"GET", k1}, bulk(next+"m"))
		converges("MSET through "+via, []string{"GET", k2}, bulk(next+"m"))

		// DEL
		expectDo(t, w, ":1\r\n", "DEL", k2)
		converges("DEL through "+via, []string{"GET", k2}, "$-1\r\n")

		// HSET of a cached field
		expectDo(t, direct, ":1\r\n", "HSET", h, "f", old)
		cached([]string{"HGET", h, "f"}, bulk(old))
		expectDo(t, w, ":0\r\n", "HSET", h, "f", next)
		converges("HSET through "+via, []string{"HGET", h, "f"}, bulk(next))

		// A transaction writing a string and a hash field, both cached
		cached([]string{"GET", k1}, bulk(next+"m"))
		cached([]string{"HGET", h, "f"}, bulk(next))
		expectExec(t, w, "*2\r\n+OK\r\n:0\r\n", []string{"SET", k1, next + "tx"}, []string{"HSET", h, "f", next + "tx"})
		converges("MULTI/EXEC through "+via, []string{"GET", k1}, bulk(next+"tx"))
		converges("MULTI/EXEC through "+via, []string{"HGET", h, "f"}, bulk(next+"tx"))
	}
}
