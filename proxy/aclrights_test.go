package proxy

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"featcache/internal/redistest"
)

// leastPrivilege is the upstream user docs/security.md recommends for featcache: everything but Redis's dangerous
// commands, with the two of them featcache reads itself (INFO: the server's run_id, SWAPDB and statistics resets;
// CONFIG GET: the number of databases, maxmemory-policy). Commands its clients send that the user may not run are
// refused by Redis, as for a direct client of the same user.
var leastPrivilege = []string{"~*", "&*", "+@all", "-@dangerous", "+info", "+config|get"}

// aclUser makes user fc (password pw) with rules on redis.
func aclUser(t *testing.T, redis *redistest.Server, rules ...string) {
	t.Helper()
	args := append([]string{"ACL", "SETUSER", "fc", "reset", "on", ">pw"}, rules...)
	if got := string(redis.Do(args...)); got != "+OK\r\n" {
		t.Fatalf("ACL SETUSER: %q", got)
	}
}

const aclUserConfig = `
upstream: {username: fc, password: pw, timeout: 300ms}
policies:
  - {name: a, prefix: "a:", soft_ttl: 1h, hard_ttl: 2h, negative_ttl: 1h, jitter: 0}
`

// TestUpstreamUserLeastPrivilege: with the recommended user, featcache caches and stays exact: reads are served
// from memory, another client's write and a SWAPDB on Redis show through featcache, and a dangerous command a
// client sends is refused as Redis refuses it to a direct client of the same user.
func TestUpstreamUserLeastPrivilege(t *testing.T) {
	redis := redistest.Start(t)
	aclUser(t, redis, leastPrivilege...)
	p := startProxyOn(t, redis, aclUserConfig) // waits for tracking: INFO and CLIENT TRACKING are allowed
	redis.Do("SET", "a:1", "v1")
	redis.Do("HSET", "a:h", "f", "v1")
	p.settle()
	c := p.dial()
	reads := []replyCase{
		{[]string{"GET", "a:1"}, bulk("v1")},
		{[]string{"MGET", "a:1", "a:none"}, "*2\r\n" + bulk("v1") + "$-1\r\n"},
		{[]string{"HGETALL", "a:h"}, "*2\r\n" + bulk("f") + bulk("v1")},
	}
	expectReplies(t, reads, c)
	before := p.srv.stats.UpstreamReads.Load()
	expectReplies(t, reads, c)
	if p.srv.stats.UpstreamReads.Load() != before {
		t.Fatal("the second reads went to Redis: nothing was cached with the recommended user")
	}

	// A write in database 1 invalidates a:1 too (invalidations name keys, not databases): it comes first.
	db1 := redis.Dial()
	expectDo(t, db1, "+OK\r\n", "SELECT", "1")
	db1.Do("SET", "a:1", "db1")
	redis.Do("SET", "a:1", "v2")
	redistest.Eventually(t, 5*time.Second, "another client's write shown", func() bool {
		return string(c.Do("GET", "a:1")) == bulk("v2")
	})
	// Stored, not only answered: a read that began between the two writes' invalidations answered v2 and stored
	// nothing (superseded); the next one stores it.
	redistest.Eventually(t, 5*time.Second, "v2 stored", func() bool {
		c.Do("GET", "a:1")
		return strings.Contains(p.do("CACHE", "EXPLAIN", "a:1"), "state:fresh")
	})
	before = p.srv.stats.UpstreamReads.Load()
	if got := string(c.Do("GET", "a:1")); got != bulk("v2") || p.srv.stats.UpstreamReads.Load() != before {
		t.Fatalf("GET a:1 after the write: %q, upstream reads %d -> %d; want v2 from memory", got, before,
			p.srv.stats.UpstreamReads.Load())
	}
	start := time.Now()
	expectDo(t, redis.Dial(), "+OK\r\n", "SWAPDB", "0", "1")
	redistest.Eventually(t, swapBound+5*time.Second, "the SWAPDB shown", func() bool {
		return string(c.Do("GET", "a:1")) == bulk("db1")
	})
	t.Logf("the SWAPDB showed through featcache after %v", time.Since(start))

	asUser := redis.Dial()
	expectDo(t, asUser, "+OK\r\n", "AUTH", "fc", "pw")
	for _, args := range [][]string{{"KEYS", "*"}, {"FLUSHALL"}, {"SWAPDB", "0", "1"}} {
		if got, want := string(c.Do(args...)), string(asUser.Do(args...)); got != want {
			t.Errorf("%q through featcache: %q; Redis answers the user %q", args, got, want)
		}
	}
}

// TestUpstreamUserWithoutInfo: a user refused INFO leaves featcache without the means to see a SWAPDB or a restart
// of Redis, so tracking does not come up and nothing is stored: every read is answered as Redis answers it, from
// Redis. The log says why once, not at every redial (one a second).
func TestUpstreamUserWithoutInfo(t *testing.T) {
	redis := redistest.Start(t)
	aclUser(t, redis, "~*", "&*", "+@all", "-@dangerous")
	logs := &redistest.LogBuffer{}
	p := newProxyOn(t, redis, aclUserConfig, func(o *Options) { o.Logger = slog.New(slog.NewTextHandler(logs, nil)) })
	redis.Do("SET", "a:1", "v1")
	c := p.dial()
	for i := 0; i < 3; i++ {
		before := p.srv.stats.UpstreamReads.Load()
		if got := string(c.Do("GET", "a:1")); got != bulk("v1") {
			t.Fatalf("GET a:1: %q", got)
		}
		if p.srv.stats.UpstreamReads.Load() == before {
			t.Fatal("a read was served from memory while tracking cannot come up")
		}
	}
	redistest.Eventually(t, 10*time.Second, "the refusal logged", func() bool {
		return strings.Contains(logs.String(), "no permissions to run the 'info' command")
	})
	time.Sleep(3 * time.Second) // three or more redials, a second apart
	if _, up := p.up.Tracking(); up {
		t.Fatal("tracking is up without INFO")
	}
	if n := strings.Count(logs.String(), "tracking: connection ended"); n != 1 {
		t.Errorf("the tracking connection's failure is logged %d times in 3 s; want once:\n%s", n, logs.String())
	}
}

// TestUpstreamUserWithoutTransactions: featcache reads an MGET not all in memory with MULTI ... EXEC, which Redis
// does not need for the MGET itself. A user refused MULTI, or EXEC alone, gets every MGET answered as Redis answers
// it (read with a plain MGET and not stored), and GETs are still cached.
func TestUpstreamUserWithoutTransactions(t *testing.T) {
	for _, tc := range []struct{ name, rule string }{
		{"no @transaction", "-@transaction"},
		{"no EXEC", "-exec"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			redis := redistest.Start(t)
			aclUser(t, redis, append(append([]string{}, leastPrivilege...), tc.rule)...)
			p := startProxyOn(t, redis, aclUserConfig)
			redis.Do("MSET", "a:1", "v1", "a:2", "v2")
			p.settle()
			asUser := redis.Dial()
			expectDo(t, asUser, "+OK\r\n", "AUTH", "fc", "pw")
			c := p.dial()
			expectDo(t, c, bulk("v1"), "GET", "a:1") // a:1 in memory, a:2 and a:none not
			for i := 0; i < 2; i++ {
				for _, args := range [][]string{{"MGET", "a:1", "a:2"}, {"MGET", "a:2", "a:none", "a:1"}, {"MGET", "a:none"}} {
					if got, want := string(c.Do(args...)), string(asUser.Do(args...)); got != want {
						t.Errorf("%q through featcache: %q; Redis answers the user %q", args, got, want)
					}
				}
			}
			before := p.srv.stats.UpstreamReads.Load()
			expectDo(t, c, bulk("v1"), "GET", "a:1")
			if p.srv.stats.UpstreamReads.Load() != before {
				t.Error("GET a:1 went to Redis: the MGETs dropped or never kept its entry")
			}
			redis.Do("SET", "a:1", "w1")
			redistest.Eventually(t, 5*time.Second, "another client's write shown", func() bool {
				return string(c.Do("MGET", "a:1", "a:2")) == "*2\r\n"+bulk("w1")+bulk("v2")
			})
			// The client's own transaction is Redis's to refuse, reply by reply as to a direct client.
			for _, args := range [][]string{{"MULTI"}, {"SET", "a:4", "x"}, {"GET", "a:4"}, {"EXEC"}, {"GET", "a:4"}} {
				if got, want := string(c.Do(args...)), string(asUser.Do(args...)); got != want {
					t.Errorf("%q through featcache: %q; Redis answers the user %q", args, got, want)
				}
			}
			// The shared connections were left in no transaction: plain commands on them answer as before.
			expectDo(t, c, "+OK\r\n", "SET", "a:3", "v3")
			expectDo(t, c, bulk("v3"), "GET", "a:3")
		})
	}
}
