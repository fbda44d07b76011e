package proxy

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"featcache/internal/commands"
	"featcache/internal/redistest"
	"featcache/internal/testkit"
)

// TestHotKeyServedFromMemory: repeated GETs of a hot key make one upstream read (INFO commandstats).
func TestHotKeyServedFromMemory(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	p.redis.Do("SET", "hot", "v")
	p.settle()
	c := p.dial()
	for i := 0; i < 200; i++ {
		if got := string(c.Do("GET", "hot")); got != bulk("v") {
			t.Fatalf("GET hot: got %q; want %q", got, bulk("v"))
		}
	}
	if n := p.redis.Calls("get"); n != 1 {
		t.Fatalf("upstream GET calls = %d; want 1", n)
	}
	if hits := p.srv.Stats().Hits.Load(); hits != 199 {
		t.Fatalf("hits = %d; want 199", hits)
	}
}

// TestSingleFlight: many concurrent GETs of one cold key make one upstream read (invariant 5).
func TestSingleFlight(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	p.redis.Do("SET", "cold", strings.Repeat("x", 4096))
	p.settle()
	const n = 64
	conns := make([]*redistest.Conn, n)
	for i := range conns {
		conns[i] = p.dial()
	}
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make(chan string, n)
	for _, c := range conns {
		wg.Add(1)
		go func(c *redistest.Conn) {
			defer wg.Done()
			<-start
			if err := c.Send("GET", "cold"); err != nil {
				errs <- err.Error()
				return
			}
			got, err := c.Read()
			if err != nil || string(got) != bulk(strings.Repeat("x", 4096)) {
				errs <- fmt.Sprintf("got %.40q, %v", got, err)
			}
		}(c)
	}
	close(start)
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
	if got := p.redis.Calls("get"); got != 1 {
		t.Fatalf("upstream GET calls = %d for %d concurrent cold reads; want 1", got, n)
	}
}

// TestMGETReplies: hits, misses, duplicates, uncached keys, wrong-type keys and missing keys in one MGET give the
// bytes Redis gives, in order.
func TestMGETReplies(t *testing.T) {
	p := startProxy(t, `
policies:
  - name: features
    prefix: "f:"
    hard_ttl: 1h
    negative_ttl: 1m
`)
	p.redis.Do("MSET", "f:1", "one", "f:2", "two", "other:1", "o1")
	p.redis.Do("HSET", "f:hash", "a", "1")
	p.settle()
	c := p.dial()
	c.Do("GET", "f:1") // cached before the MGET
	keys := []string{"MGET", "f:1", "f:2", "f:missing", "f:1", "other:1", "f:hash", "other:missing", "f:2"}
	want := string(p.redis.Do(keys...))
	for round := 0; round < 3; round++ { // first mostly misses, then hits
		if got := string(c.Do(keys...)); got != want {
			t.Fatalf("round %d: got %q; want %q", round, got, want)
		}
	}
	if got, want := string(c.Do("MGET")), "-ERR wrong number of arguments for 'mget' command\r\n"; got != want {
		t.Fatalf("MGET without keys: got %q; want %q", got, want)
	}
	if got, want := string(c.Do("GET")), "-ERR wrong number of arguments for 'get' command\r\n"; got != want {
		t.Fatalf("GET without key: got %q; want %q", got, want)
	}
	if got, want := string(c.Do("GET", "f:hash")), string(p.redis.Do("GET", "f:hash")); got != want {
		t.Fatalf("GET of a hash: got %q; want %q", got, want)
	}
}

// TestReadYourWrites (invariant 1): once featcache replied to a write, no client of it reads the old value, also
// when the old value was cached, when reader and writer are different clients, and inside one pipeline.
func TestReadYourWrites(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	writer, reader := p.dial(), p.dial()
	for i := 0; i < 200; i++ {
		v := strconv.Itoa(i)
		reader.Do("GET", "k") // caches the previous value
		if got := string(writer.Do("SET", "k", v)); got != "+OK\r\n" {
			t.Fatalf("SET: %q", got)
		}
		if got := string(reader.Do("GET", "k")); got != bulk(v) {
			t.Fatalf("after SET k %s through featcache, another client read %q", v, got)
		}
	}
	// A pipeline: a cached read, a write, a read of the same key: the second read sees the write.
	c := p.dial()
	c.Do("SET", "pk", "old")
	c.Do("GET", "pk")
	payload := string(redistest.Encode("GET", "pk")) + string(redistest.Encode("SET", "pk", "new")) +
		string(redistest.Encode("GET", "pk")) + string(redistest.Encode("MGET", "pk", "pk"))
	if _, err := c.NetConn().Write([]byte(payload)); err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{bulk("old"), "+OK\r\n", bulk("new"), "*2\r\n" + bulk("new") + bulk("new")} {
		got, err := c.Read()
		if err != nil || string(got) != want {
			t.Fatalf("pipeline reply %d: got %q, %v; want %q", i, got, err, want)
		}
	}
}

// TestWritesInvalidateTheirKeys: every kind of write through featcache invalidates the keys Redis's key specs
// name, before its reply. Tracking is off so nothing but featcache's own invalidation can make this pass.
func TestWritesInvalidateTheirKeys(t *testing.T) {
	p := startProxy(t, `
upstream: {tracking: false}
policies:
  - name: all
    prefix: ""
    hard_ttl: 1h
    negative_ttl: 1h
`)
	c := p.dial()
	c.Do("SCRIPT", "LOAD", "return 1")
	tests := []struct {
		name  string
		setup [][]string // run directly on Redis first
		write []string   // through featcache
		key   string     // cached before the write, read after it
	}{
		{"SET", nil, []string{"SET", "a", "2"}, "a"},
		{"SET GET", nil, []string{"SET", "a", "2", "GET"}, "a"},
		{"DEL", nil, []string{"DEL", "x", "a"}, "a"},
		{"UNLINK", nil, []string{"UNLINK", "a"}, "a"},
		{"APPEND", nil, []string{"APPEND", "a", "z"}, "a"},
		{"INCR", [][]string{{"SET", "a", "5"}}, []string{"INCR", "a"}, "a"},
		{"INCRBYFLOAT", [][]string{{"SET", "a", "5"}}, []string{"INCRBYFLOAT", "a", "0.5"}, "a"},
		{"SETRANGE", nil, []string{"SETRANGE", "a", "0", "Z"}, "a"},
		{"MSET second key", nil, []string{"MSET", "b", "1", "a", "9"}, "a"},
		{"MSETNX", [][]string{{"DEL", "a"}}, []string{"MSETNX", "a", "9"}, "a"},
		{"RENAME destination", [][]string{{"SET", "src", "moved"}}, []string{"RENAME", "src", "a"}, "a"},
		{"RENAME source", nil, []string{"RENAME", "a", "dst"}, "a"},
		{"COPY REPLACE", [][]string{{"SET", "src", "copied"}}, []string{"COPY", "src", "a", "REPLACE"}, "a"},
		{"GETDEL", nil, []string{"GETDEL", "a"}, "a"},
		{"GETSET", nil, []string{"GETSET", "a", "new"}, "a"},
		{"SETBIT", nil, []string{"SETBIT", "a", "1", "1"}, "a"},
		{"BITOP destination", [][]string{{"SET", "b", "x"}}, []string{"BITOP", "NOT", "a", "b"}, "a"},
		{"PFADD", [][]string{{"DEL", "a"}}, []string{"PFADD", "a", "x"}, "a"},
		{"SUNIONSTORE over a string", [][]string{{"SADD", "s", "m"}}, []string{"SUNIONSTORE", "a", "s"}, "a"},
		{"RESTORE", nil, []string{"RESTORE", "a", "0", "\x00\x01z\x0a\x00\x81\x06\x8b\x8a\xc7\x9b\x9a\xf6", "REPLACE"}, "a"},
		{"LMOVE into the key", [][]string{{"DEL", "a"}, {"RPUSH", "l", "e"}}, []string{"LMOVE", "l", "a", "LEFT", "LEFT"}, "a"},
		{"EVAL declared key", nil, []string{"EVAL", "return redis.call('SET', KEYS[1], 'lua')", "1", "a"}, "a"},
		{"EVAL undeclared key", nil, []string{"EVAL", "return redis.call('SET', 'a', 'sneaky')", "0"}, "a"},
		{"SORT STORE", [][]string{{"RPUSH", "l", "3", "1"}}, []string{"SORT", "l", "STORE", "a"}, "a"},
		{"FLUSHALL", nil, []string{"FLUSHALL"}, "a"},
		{"FLUSHDB", nil, []string{"FLUSHDB"}, "a"},
		{"SWAPDB", [][]string{{"SELECT", "1"}}, []string{"SWAPDB", "0", "1"}, "a"},
		{"EXPIRE in the past", nil, []string{"PEXPIREAT", "a", "1"}, "a"},
		{"MOVE", nil, []string{"MOVE", "a", "1"}, "a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p.redis.Do("FLUSHALL")
			c.Do("CACHE", "FLUSH")
			p.redis.Do("SET", "a", "1")
			for _, s := range tt.setup {
				p.redis.Do(s...)
			}
			c.Do("GET", tt.key) // cache it
			c.Do(tt.write...)
			want := string(p.redis.Do("GET", tt.key))
			if got := string(c.Do("GET", tt.key)); got != want {
				t.Fatalf("after %q through featcache: GET %s = %q; Redis has %q", tt.write, tt.key, got, want)
			}
		})
	}
}

// TestWritesByKeySpecs lists the commands of Redis 7.0's table that the key-spec rule makes writes although
// Redis does not flag them write, and checks that each is classified so.
func TestWritesByKeySpecs(t *testing.T) {
	cmds := embeddedCommands(t)
	tbl := newTable(cmds, nil, false)
	var byKeySpecs []string
	for _, info := range allCommands(cmds) {
		if info.Flags.Has(commands.FlagWrite) || !info.MayWrite() {
			continue
		}
		byKeySpecs = append(byKeySpecs, info.Name)
	}
	// EVAL, EVALSHA and FCALL were writes already (scripts wait for the tracking barrier); PFCOUNT is the one
	// command the write flag alone missed.
	want := []string{"eval", "evalsha", "fcall", "pfcount"}
	if !slices.Equal(byKeySpecs, want) {
		t.Errorf("commands written by key specs only: got %q; want %q", byKeySpecs, want)
	}
	for _, name := range want {
		if tc := tbl.cmds[name]; tc == nil || tc.class != classWrite {
			t.Errorf("%s: classified %+v; want classWrite", name, tc)
		}
	}
	for _, name := range []string{"get", "pfadd", "eval_ro", "fcall_ro", "sort_ro", "xrange", "object"} {
		tc := tbl.cmds[name]
		if tc == nil {
			t.Fatalf("%s: not in the table", name)
		}
		if name != "pfadd" && tc.class == classWrite {
			t.Errorf("%s: classified write; Redis's key specs say it only reads", name)
		}
	}
}

// TestPFCountInvalidates: PFCOUNT rewrites the HyperLogLog's cached cardinality, so a cached copy of the key must
// not be served after it, with tracking (where Redis's own invalidation may come after the reply) and without.
func TestPFCountInvalidates(t *testing.T) {
	for _, cfg := range []struct{ name, yaml string }{
		{"tracking", defaultTestConfig},
		{"ttl only", ttlOnlyConfig},
	} {
		t.Run(cfg.name, func(t *testing.T) {
			p := startProxy(t, cfg.yaml)
			rc := redistest.Dial(t, p.redis.Addr())
			c := p.dial()
			expectDo(t, c, ":1\r\n", "PFADD", "hll", "a", "b", "c")
			p.settle()
			first := string(c.Do("GET", "hll"))
			hits := p.srv.Stats().Hits.Load()
			if got := string(c.Do("GET", "hll")); got != first {
				t.Fatalf("GET hll twice: %q, then %q", first, got)
			}
			if p.srv.Stats().Hits.Load() == hits {
				t.Fatalf("the second GET hll was not served from memory: the test proves nothing")
			}
			expectDo(t, c, ":3\r\n", "PFCOUNT", "hll")
			want := string(rc.Do("GET", "hll"))
			if want == first {
				t.Fatalf("PFCOUNT did not change the HyperLogLog's bytes in Redis: the test proves nothing")
			}
			if got := string(c.Do("GET", "hll")); got != want {
				t.Errorf("GET hll after PFCOUNT: got %q; want Redis's %q", got, want)
			}
		})
	}
}

// TestNoStuckStaleValue (invariant 2): writers change keys directly in Redis while readers hammer them through
// featcache; once the writers stop, every key converges on Redis's value, and a read that starts after
// convergence is confirmed never returns an old value.
func TestNoStuckStaleValue(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	const keys = 16
	var loops testkit.Loops
	for w := 0; w < 2; w++ {
		c := redistest.Dial(t, p.redis.Addr())
		loops.Go(func(i int) bool {
			c.Do("INCR", "k"+strconv.Itoa((i*7+w)%keys))
			return true
		})
	}
	for r := 0; r < 6; r++ {
		c := p.dial()
		loops.Go(func(i int) bool {
			if i%5 == 0 {
				c.Do("MGET", "k1", "k2", "k3", "k"+strconv.Itoa(i%keys))
			} else {
				c.Do("GET", "k"+strconv.Itoa((i+r)%keys))
			}
			return true
		})
	}
	time.Sleep(1500 * time.Millisecond) // the load phase
	loops.Stop()
	c := p.dial()
	for k := 0; k < keys; k++ {
		key := "k" + strconv.Itoa(k)
		want := string(p.redis.Do("GET", key))
		redistest.Eventually(t, 2*time.Second, key+" converges on Redis's value", func() bool {
			return string(c.Do("GET", key)) == want
		})
	}
	st := p.srv.Stats()
	t.Logf("hits=%d misses=%d discarded fills=%d", st.Hits.Load(), st.Misses.Load(), p.cache.Stats().FillsDiscarded)
}

// TestTrackedChangesConverge: a value changed directly in Redis is served through featcache within the
// invalidation latency (asserted with a generous 2 s bound); so are deletes, expiries set and FLUSHALL (a null
// invalidation).
func TestTrackedChangesConverge(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	c := p.dial()
	p.redis.Do("SET", "k", "v1")
	c.Do("GET", "k")
	converge := func(what, want string) {
		t.Helper()
		redistest.Eventually(t, 2*time.Second, what, func() bool { return string(c.Do("GET", "k")) == want })
	}
	p.redis.Do("SET", "k", "v2")
	converge("SET seen", bulk("v2"))
	p.redis.Do("DEL", "k")
	converge("DEL seen", "$-1\r\n")
	p.redis.Do("SET", "k", "v3")
	converge("SET after DEL seen", bulk("v3"))
	p.redis.Do("FLUSHALL")
	converge("FLUSHALL seen", "$-1\r\n")
	if flushes := p.cache.Stats().Flushes; flushes == 0 {
		t.Fatal("FLUSHALL did not flush the local tier")
	}
}

// TestTrackingLossFlushes (invariant 4): when the tracking connection drops, what it guarded is not served. The
// kill and the write run in one pipeline on Redis, so the write's invalidation can never reach featcache.
func TestTrackingLossFlushes(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	c := p.dial()
	p.redis.Do("SET", "k", "before")
	p.settle()
	if got := string(c.Do("GET", "k")); got != bulk("before") {
		t.Fatalf("GET: %q", got)
	}
	direct := redistest.Dial(t, p.redis.Addr())
	direct.Send("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
	direct.Send("SET", "k", "after")
	direct.Read()
	direct.Read()
	redistest.Eventually(t, 2*time.Second, "the lost tracking connection is noticed", func() bool {
		return string(c.Do("GET", "k")) == bulk("after")
	})
	// Tracking comes back and caching resumes.
	redistest.Eventually(t, 5*time.Second, "tracking re-established", func() bool {
		_, up := p.up.Tracking()
		return up
	})
	p.settle()
	c.Do("GET", "k")
	before := p.redis.Calls("get")
	c.Do("GET", "k")
	if after := p.redis.Calls("get"); after != before {
		t.Fatalf("after tracking came back, a repeated GET still went upstream (%d -> %d)", before, after)
	}
}

// TestUpstreamExpiryBoundsEntries (invariant 3): an entry is never served past the key's own expiry in Redis,
// whatever the policy's TTLs. Tracking is off, so only the PTTL cap can make this pass.
func TestUpstreamExpiryBoundsEntries(t *testing.T) {
	p := startProxy(t, `
upstream: {tracking: false}
policies:
  - name: long
    prefix: ""
    soft_ttl: 1h
    hard_ttl: 1h
`)
	c := p.dial()
	p.redis.Do("SET", "k", "v", "PX", "300")
	expectExpiresWithRedis(t, p, c, "k", "v")
}

// expectExpiresWithRedis reads key (whose value is value, with a short expiry in Redis) through c, waits until
// Redis itself no longer has it, and fails the test if featcache still serves it then.
func expectExpiresWithRedis(t *testing.T, p *testProxy, c *redistest.Conn, key, value string) {
	t.Helper()
	if got := string(c.Do("GET", key)); got != bulk(value) {
		t.Fatalf("GET %s: %q", key, got)
	}
	redistest.Eventually(t, 3*time.Second, key+" expires in Redis", func() bool {
		return string(p.redis.Do("GET", key)) == "$-1\r\n"
	})
	if got := string(c.Do("GET", key)); got != "$-1\r\n" {
		t.Fatalf("past the expiry of %s in Redis, featcache served %q", key, got)
	}
}

// TestDeadlinesWithInjectedClock (invariant 3): fresh entries are served from memory; past soft_ttl they are
// served and refreshed once in the background; past hard_ttl they are not served. Tracking is off, so a value
// changed directly in Redis shows when, and only when, the deadlines say so.
func TestDeadlinesWithInjectedClock(t *testing.T) {
	p := startProxy(t, `
upstream: {tracking: false}
policies:
  - name: p
    prefix: ""
    soft_ttl: 10s
    hard_ttl: 20s
    jitter: 0
`)
	c := p.dial()
	p.redis.Do("SET", "k", "v1")
	c.Do("GET", "k")
	p.redis.Do("SET", "k", "v2") // unseen: no tracking
	p.clock.Advance(9 * time.Second)
	if got := string(c.Do("GET", "k")); got != bulk("v1") {
		t.Fatalf("fresh: got %q; want v1 from memory", got)
	}
	p.clock.Advance(2 * time.Second) // 11s: soft-stale
	if got := string(c.Do("GET", "k")); got != bulk("v1") {
		t.Fatalf("soft-stale: got %q; want v1 served while refreshing", got)
	}
	redistest.Eventually(t, 2*time.Second, "background refresh stores v2", func() bool {
		return string(c.Do("GET", "k")) == bulk("v2")
	})
	if n := p.srv.Stats().Refreshes.Load(); n != 1 {
		t.Fatalf("refreshes = %d; want 1", n)
	}
	p.redis.Do("SET", "k", "v3")
	p.clock.Advance(21 * time.Second) // past the hard deadline of the refreshed entry
	if got := string(c.Do("GET", "k")); got != bulk("v3") {
		t.Fatalf("past hard_ttl: got %q; want v3 fetched", got)
	}
}

// TestNegativeTTL: a missing key is remembered for negative_ttl; a SET through featcache or (with tracking)
// directly in Redis ends that at once.
func TestNegativeTTL(t *testing.T) {
	p := startProxy(t, `
policies:
  - name: p
    prefix: ""
    hard_ttl: 1h
    negative_ttl: 30s
`)
	c := p.dial()
	for i := 0; i < 5; i++ {
		if got := string(c.Do("GET", "ghost")); got != "$-1\r\n" {
			t.Fatalf("GET ghost: %q", got)
		}
	}
	if n := p.redis.Calls("get"); n != 1 {
		t.Fatalf("upstream GET calls for a remembered nil = %d; want 1", n)
	}
	p.redis.Do("SET", "ghost", "boo")
	redistest.Eventually(t, 2*time.Second, "tracked SET ends the remembered nil", func() bool {
		return string(c.Do("GET", "ghost")) == bulk("boo")
	})
	p.clock.Advance(31 * time.Second)
	c.Do("DEL", "ghost")
	if got := string(c.Do("GET", "ghost")); got != "$-1\r\n" {
		t.Fatalf("after DEL: %q", got)
	}
}

// TestUncachedPolicies: keys of a cache:false policy and keys no policy matches are forwarded every time.
func TestUncachedPolicies(t *testing.T) {
	p := startProxy(t, `
policies:
  - name: features
    prefix: "f:"
  - name: sessions
    prefix: "session:"
    cache: false
`)
	c := p.dial()
	p.redis.Do("SET", "session:1", "s")
	p.redis.Do("SET", "nopolicy", "n")
	p.settle()
	for i := 0; i < 3; i++ {
		c.Do("GET", "session:1")
		c.Do("GET", "nopolicy")
		c.Do("MGET", "session:1", "nopolicy")
	}
	// An MGET of keys no policy caches is Redis's own MGET, relayed.
	if n, m := p.redis.Calls("get"), p.redis.Calls("mget"); n != 6 || m != 3 {
		t.Fatalf("upstream GET calls = %d, MGET calls = %d; want 6 and 3 (every read forwarded)", n, m)
	}
	if hits := p.srv.Stats().Hits.Load(); hits != 0 {
		t.Fatalf("hits = %d; want 0", hits)
	}
}

// TestLargeValuesAndKeysBypassTheTier: values too large for the tier and keys over 65,535 bytes are served but
// not cached, and counted.
func TestLargeValuesAndKeysBypassTheTier(t *testing.T) {
	p := startProxy(t, defaultTestConfig) // 16 MiB tier: entries above ~16 KiB do not fit
	c := p.dial()
	big := strings.Repeat("b", 64<<10)
	p.redis.Do("SET", "big", big)
	longKey := strings.Repeat("k", 70000)
	p.redis.Do("SET", longKey, "v")
	for i := 0; i < 2; i++ {
		if got := string(c.Do("GET", "big")); got != bulk(big) {
			t.Fatalf("GET big: %d bytes", len(got))
		}
		if got := string(c.Do("GET", longKey)); got != bulk("v") {
			t.Fatalf("GET long key: %q", got)
		}
	}
	st := p.cache.Stats()
	if st.TooLargeValues == 0 || st.TooLargeKeys == 0 {
		t.Fatalf("too large values/keys not counted: %+v", st)
	}
}

// TestCacheAdminCommands: CACHE STATS, EXPLAIN and FLUSH for redis-cli.
func TestCacheAdminCommands(t *testing.T) {
	p := startProxy(t, `
policies:
  - name: profile
    prefix: "profile:"
    soft_ttl: 6h
    hard_ttl: 24h
`)
	c := p.dial()
	p.redis.Do("SET", "profile:1", "x")
	p.settle()
	c.Do("GET", "profile:1")
	explain := string(c.Do("CACHE", "EXPLAIN", "profile:1"))
	for _, want := range []string{"policy:profile", "state:fresh", "soft_left_ms:", "hard_left_ms:", "age_ms:"} {
		if !strings.Contains(explain, want) {
			t.Fatalf("CACHE EXPLAIN lacks %q: %q", want, explain)
		}
	}
	if got := string(c.Do("CACHE", "EXPLAIN", "other")); !strings.Contains(got, "policy:(none)") {
		t.Fatalf("CACHE EXPLAIN of an uncovered key: %q", got)
	}
	if got := string(c.Do("CACHE", "EXPLAIN", "profile:\x00\xff")); !strings.Contains(got, `key:"profile:\x00\xff"`) {
		t.Fatalf("CACHE EXPLAIN of a binary key: %q", got)
	}
	if got := string(c.Do("CACHE", "STATS")); !strings.Contains(got, "hits:") || !strings.Contains(got, "tracking:up") {
		t.Fatalf("CACHE STATS: %q", got)
	}
	if got := string(c.Do("CACHE", "FLUSH")); got != "+OK\r\n" {
		t.Fatalf("CACHE FLUSH: %q", got)
	}
	if got := string(c.Do("CACHE", "EXPLAIN", "profile:1")); !strings.Contains(got, "state:miss") {
		t.Fatalf("after CACHE FLUSH: %q", got)
	}
	if got := string(p.redis.Do("GET", "profile:1")); got != bulk("x") {
		t.Fatalf("CACHE FLUSH touched Redis: %q", got)
	}
	if got, want := string(c.Do("CACHE", "NOPE")), "-ERR unknown subcommand 'NOPE'. Try CACHE HELP.\r\n"; got != want {
		t.Fatalf("got %q; want %q", got, want)
	}
}

// TestPipelineMissesShareOneRoundTrip: the misses of a pipeline, forwarded reads among them, travel in one
// upstream round trip; a write ends the segment, so what follows it takes another.
func TestPipelineMissesShareOneRoundTrip(t *testing.T) {
	p := startProxy(t, `
policies:
  - name: f
    prefix: "f:"
    hard_ttl: 1h
`)
	for i := 0; i < 100; i++ {
		p.redis.Do("SET", "f:"+strconv.Itoa(i), strconv.Itoa(i))
	}
	p.settle()
	var cmds [][]string
	for i := 0; i < 100; i++ {
		cmds = append(cmds, []string{"GET", "f:" + strconv.Itoa(i)})
	}
	cmds = append(cmds, []string{"MGET", "f:1", "f:200", "other"}, []string{"STRLEN", "f:7"})
	before := p.srv.Stats().RoundTrips.Load()
	replies := pipeline(t, p.addr, cmds)
	if n := p.srv.Stats().RoundTrips.Load() - before; n != 1 {
		t.Fatalf("a pipeline of 100 GET misses, an MGET and a forwarded read took %d upstream round trips; want 1", n)
	}
	for i := 0; i < 100; i++ {
		if want := bulk(strconv.Itoa(i)); replies[i] != want {
			t.Fatalf("reply %d: got %q; want %q", i, replies[i], want)
		}
	}
	// A write in the middle: the reads before it share one round trip with it, the reads after it take a second.
	before = p.srv.Stats().RoundTrips.Load()
	replies = pipeline(t, p.addr, [][]string{{"GET", "f:300"}, {"GET", "f:301"}, {"SET", "f:302", "x"},
		{"GET", "f:302"}, {"GET", "f:303"}})
	if n := p.srv.Stats().RoundTrips.Load() - before; n != 2 {
		t.Fatalf("GET, GET, SET, GET, GET took %d round trips; want 2", n)
	}
	if replies[3] != bulk("x") {
		t.Fatalf("GET after SET in the pipeline: %q", replies[3])
	}
}

// pipeline sends cmds to addr in one write, from another goroutine so that a server answering while the client
// still writes cannot deadlock the test, and returns the replies, in order.
func pipeline(t *testing.T, addr string, cmds [][]string) []string {
	t.Helper()
	c := redistest.Dial(t, addr)
	defer c.Close()
	sent := make(chan error, 1)
	go func() {
		c.NetConn().SetWriteDeadline(time.Now().Add(30 * time.Second))
		_, err := c.NetConn().Write(encodePipeline(cmds...))
		sent <- err
	}()
	replies := make([]string, len(cmds))
	for i := range cmds {
		r, err := c.Read()
		if err != nil {
			t.Fatalf("reply %d of %d (%.60q): %v", i+1, len(cmds), cmds[i], err)
		}
		replies[i] = string(r)
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	return replies
}

// TestPipelineSegmentCaps: an upstream round trip is cut once it holds 4096 replies or 1MB of commands (those of
// one command are never split), and pipelines that cross the caps get every reply, in order, as Redis gives them.
func TestPipelineSegmentCaps(t *testing.T) {
	p := startProxy(t, `
policies:
  - {name: f, prefix: "f:", hard_ttl: 1h}
`)
	loadKeys(t, p.redis, "f:", 12000)
	loadKeys(t, p.redis, "x:", 100)
	p.settle()
	// compare sends cmds through featcache, then straight to Redis, and requires the same replies; it returns the
	// upstream round trips featcache took.
	compare := func(name string, cmds [][]string) int64 {
		t.Helper()
		before := p.srv.Stats().RoundTrips.Load()
		got := pipeline(t, p.addr, cmds)
		trips := p.srv.Stats().RoundTrips.Load() - before
		want := pipeline(t, p.redis.Addr(), cmds)
		for i := range cmds {
			if got[i] != want[i] {
				t.Fatalf("%s: reply %d (%.60q): got %.120q; want Redis's %.120q", name, i, cmds[i], got[i], want[i])
			}
		}
		return trips
	}
	mget := func(from, n int) []string {
		args := []string{"MGET"}
		for i := from; i < from+n; i++ {
			switch {
			case i%50 == 7:
				args = append(args, "f:missing:"+strconv.Itoa(i))
			case i%50 == 8:
				args = append(args, "x:"+strconv.Itoa(i%100)) // no policy: forwarded as a GET
			default:
				args = append(args, "f:"+strconv.Itoa(i))
			}
		}
		return args
	}

	// An MGET of 3,000 misses asks for 6,000 frames: its round trip is cut right after it, so the GET misses
	// after it take another one, however the pipeline was cut into batches.
	cmds := [][]string{mget(0, 3000)}
	for i := 0; i < 50; i++ {
		cmds = append(cmds, []string{"GET", "f:" + strconv.Itoa(3000+i)})
	}
	if trips := compare("an MGET of 3,000 misses, then GET misses", cmds); trips < 2 {
		t.Errorf("an MGET of 3,000 misses and 50 GET misses after it took %d upstream round trip; want 2 or more", trips)
	}

	// More than 4,096 misses in MGETs and GETs, with forwarded reads among them.
	cmds = nil
	for i := 0; i < 4; i++ {
		cmds = append(cmds, mget(3100+1500*i, 1500))
		for j := 0; j < 300; j++ {
			n := 9100 + 300*i + j
			cmds = append(cmds, []string{"GET", "f:" + strconv.Itoa(n)})
			if j%30 == 0 {
				cmds = append(cmds, []string{"STRLEN", "f:" + strconv.Itoa(n)}, []string{"GET", "x:" + strconv.Itoa(j)})
			}
		}
	}
	compare("MGETs and GETs of 7,200 misses", cmds)

	// A forwarded command of more than 1MB ends its round trip at once: the reads after it take another one.
	big := strings.Repeat("b", 1200<<10)
	cmds = [][]string{{"PUBLISH", "nobody", big}}
	for i := 0; i < 20; i++ {
		cmds = append(cmds, []string{"STRLEN", "f:" + strconv.Itoa(10900+i)}, []string{"GET", "f:" + strconv.Itoa(10900+i)})
	}
	if trips := compare("a PUBLISH of 1.2MB, then reads", cmds); trips < 2 {
		t.Errorf("a PUBLISH of 1.2MB and reads after it took %d upstream round trip; want 2 or more", trips)
	}

	// More than 1MB of forwarded SETs, each with a forwarded PUBLISH of as much after it, and reads of them.
	cmds = nil
	for i := 0; i < 3; i++ {
		k := "s:" + strconv.Itoa(i)
		v := big[:(400<<10)*(i+1)] + strconv.Itoa(i)
		cmds = append(cmds, []string{"SET", k, v}, []string{"PUBLISH", "nobody", v}, []string{"STRLEN", k}, []string{"GET", k})
		for j := 0; j < 20; j++ {
			cmds = append(cmds, []string{"GET", "f:" + strconv.Itoa(11000+20*i+j)}, []string{"SET", k + ":" + strconv.Itoa(j), "v"})
		}
	}
	compare("more than 1MB of forwarded SETs and PUBLISHes", cmds)
}
