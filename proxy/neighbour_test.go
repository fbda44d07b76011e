package proxy

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"featcache/internal/redistest"
	"featcache/internal/resp"
)

// The neighbour probe: another client of the same Redis (a "neighbour", connected straight to redis-server)
// changes keys featcache has cached, and featcache's replies to GET, MGET, HGET, HMGET and HGETALL, for a RESP2
// and a RESP3 client, are compared byte for byte with Redis's own replies to the same commands. The contract:
// after the neighbour's reply featcache converges to what Redis returns within 2 s (invalidations arrive
// asynchronously), stays there, and never goes back to an older value.

// neighbourConfig is defaultTestConfig (every key, never refreshed in the background within a test: only
// invalidations and the keys' own expiry can change what featcache serves) that remembers missing keys too.
const neighbourConfig = defaultTestConfig + "    negative_ttl: 1h\n"

// The keys every scenario reads: two strings (s2 with a TTL), a hash, and a missing key of each kind.
var (
	neighbourStrings = []string{"s1", "s2", "m"}
	neighbourHashes  = []string{"h1", "mh"}
)

// neighbourReads are the reads compared while featcache converges: GET and MGET of the string keys, HGET, HMGET
// and HGETALL of the hash keys. A read of a key of another type is not among them: what it learns (Redis's
// WRONGTYPE error) drops the key's entry, which would hide a stale one; crossReads are compared after converging.
func neighbourReads() [][]string {
	reads := [][]string{append([]string{"MGET"}, neighbourStrings...)}
	for _, k := range neighbourStrings {
		reads = append(reads, []string{"GET", k})
	}
	for _, k := range neighbourHashes {
		reads = append(reads, hashReads(k)...)
	}
	return reads
}

func hashReads(k string) [][]string {
	return [][]string{{"HGET", k, "f1"}, {"HMGET", k, "f1", "f2", "f3"}, {"HGETALL", k}}
}

// crossReads are every read of every key, whatever its type, and an MGET of all of them.
func crossReads() [][]string {
	all := append(append([]string{}, neighbourStrings...), neighbourHashes...)
	reads := [][]string{append([]string{"MGET"}, all...)}
	for _, k := range all {
		reads = append(reads, append([][]string{{"GET", k}}, hashReads(k)...)...)
	}
	return reads
}

// neighbourSetup is the data every scenario starts from, in database 0.
var neighbourSetup = [][]string{
	{"SET", "s1", "10"},
	{"SET", "s2", "v2", "PX", "100000"},
	{"HSET", "h1", "f1", "a", "f2", "b", "n", "1.5"},
	{"SET", "src", "from-src"},
	{"RPUSH", "list", "3", "1", "2"},
}

// neighbourProbe holds featcache's and Redis's connections in both protocols.
type neighbourProbe struct {
	p        *testProxy
	fc2, fc3 *redistest.Conn // featcache: RESP2, RESP3
	rc2, rc3 *redistest.Conn // Redis: RESP2, RESP3
}

func newNeighbourProbe(t *testing.T, p *testProxy) *neighbourProbe {
	pr := &neighbourProbe{p: p, fc2: p.dial(), fc3: p.dial(), rc2: p.redis.Dial(), rc3: p.redis.Dial()}
	for _, c := range []*redistest.Conn{pr.fc3, pr.rc3} {
		if got := c.Do("HELLO", "3"); len(got) == 0 || got[0] != '%' {
			t.Fatalf("HELLO 3: %q", got)
		}
	}
	return pr
}

// mismatches sends every read to featcache, then the same read to Redis, in each protocol, and returns the reads
// whose replies differ.
func (pr *neighbourProbe) mismatches(reads [][]string) []string {
	bad, _ := pr.compare(reads)
	return bad
}

// compare is mismatches that also returns featcache's replies, by protocol and read.
func (pr *neighbourProbe) compare(reads [][]string) (bad []string, got map[string]string) {
	got = map[string]string{}
	for _, read := range reads {
		for _, pair := range [][2]*redistest.Conn{{pr.fc2, pr.rc2}, {pr.fc3, pr.rc3}} {
			proto := "RESP2"
			if pair[0] == pr.fc3 {
				proto = "RESP3"
			}
			name := proto + " " + strings.Join(read, " ")
			fc, want := string(pair[0].Do(read...)), string(pair[1].Do(read...))
			got[name] = fc
			if fc != want {
				bad = append(bad, name+": featcache "+strconv.Quote(fc)+"; Redis "+strconv.Quote(want))
			}
		}
	}
	return bad, got
}

// warm reads every key through featcache until it is cached, and checks that the replies are Redis's.
func (pr *neighbourProbe) warm(t *testing.T) {
	t.Helper()
	pr.p.settle()
	for i := 0; i < 2; i++ {
		if bad := pr.mismatches(neighbourReads()); len(bad) > 0 {
			t.Fatalf("before the neighbour's change:\n%s", strings.Join(bad, "\n"))
		}
	}
	for _, k := range append(append([]string{}, neighbourStrings...), neighbourHashes...) {
		// A string or a nil is "state:fresh"; a hash whose every field HGETALL read is "complete:true".
		if got := string(pr.fc2.Do("CACHE", "EXPLAIN", k)); !strings.Contains(got, "state:fresh") && !strings.Contains(got, "complete:true") {
			t.Fatalf("CACHE EXPLAIN %s before the change: %q; want it cached", k, got)
		}
	}
}

// converge waits up to 2 s for featcache's replies to equal Redis's, then requires them to stay equal. before holds
// featcache's replies from before the change (compare's): once a read has answered something else, answering
// that again is going back to an older value, whatever Redis answers then.
func (pr *neighbourProbe) converge(t *testing.T, after string, before map[string]string) {
	t.Helper()
	var last []string
	defer func() {
		if t.Failed() && len(last) > 0 {
			t.Logf("after %s, the last mismatches:\n%s", after, strings.Join(last, "\n"))
		}
	}()
	moved := map[string]bool{}
	check := func() {
		var got map[string]string
		last, got = pr.compare(neighbourReads())
		for name, reply := range got {
			if reply != before[name] {
				moved[name] = true
			} else if moved[name] {
				t.Fatalf("after %s, %s went back to %q", after, name, reply)
			}
		}
	}
	start, polls := time.Now(), 0
	redistest.Eventually(t, 2*time.Second, "featcache's reads equal Redis's after "+after, func() bool {
		polls++
		check()
		return len(last) == 0
	})
	t.Logf("%s: converged in %v (%d polls)", after, time.Since(start).Round(time.Millisecond), polls)
	for i := 0; i < 5; i++ {
		if check(); len(last) > 0 {
			t.Fatalf("featcache's reads went back after converging (%s):\n%s", after, strings.Join(last, "\n"))
		}
	}
}

// neighbourDo runs cmds on the neighbour's connection, each of whose replies must not be an error.
func neighbourDo(t *testing.T, nb *redistest.Conn, cmds ...[]string) {
	t.Helper()
	for _, cmd := range cmds {
		if got := nb.Do(cmd...); len(got) > 0 && got[0] == '-' {
			t.Fatalf("neighbour %q: %q", cmd, got)
		}
	}
}

// neighbourStep is one change by the neighbour, after which featcache must converge: cmds, or run when the
// change needs more than commands; then, when wait is set, featcache converges after wait holds (an expiry).
type neighbourStep struct {
	cmds [][]string
	run  func(t *testing.T, p *testProxy, nb *redistest.Conn)
	wait func(nb *redistest.Conn) bool
}

type neighbourCase struct {
	name  string
	setup [][]string // more data, after neighbourSetup (on the neighbour's connection, which stays in its db)
	steps []neighbourStep
}

// cmds is a step of commands only.
func cmds(c ...[]string) []neighbourStep { return []neighbourStep{{cmds: c}} }

func neighbourCases() []neighbourCase {
	dbsize := func(want string) func(nb *redistest.Conn) bool {
		return func(nb *redistest.Conn) bool { return string(nb.Do("DBSIZE")) == want }
	}
	return []neighbourCase{
		// Strings.
		{name: "SET GET", steps: cmds([]string{"SET", "s1", "new", "GET"})},
		{name: "SET KEEPTTL", steps: cmds([]string{"SET", "s2", "new", "KEEPTTL"})},
		{name: "SET NX", steps: cmds([]string{"SET", "m", "new", "NX"}, []string{"SET", "s1", "no", "NX"})},
		{name: "SET XX", steps: cmds([]string{"SET", "s1", "new", "XX"}, []string{"SET", "m", "no", "XX"})},
		{name: "SETRANGE", steps: cmds([]string{"SETRANGE", "s1", "1", "XY"}, []string{"SETRANGE", "m", "2", "z"})},
		{name: "APPEND", steps: cmds([]string{"APPEND", "s1", "zz"}, []string{"APPEND", "m", "created"})},
		{name: "INCRBYFLOAT", steps: cmds([]string{"INCRBYFLOAT", "s1", "1.5"}, []string{"INCRBYFLOAT", "m", "2.5"})},
		{name: "GETSET", steps: cmds([]string{"GETSET", "s1", "new"}, []string{"GETSET", "m", "new"})},
		{name: "GETDEL", steps: cmds([]string{"GETDEL", "s1"}, []string{"GETDEL", "s2"})},
		{name: "GETEX EX", steps: []neighbourStep{
			{cmds: [][]string{{"GETEX", "s1", "PX", "300"}}},
			{wait: dbsize(":4\r\n")}, // s1 gone: s2, h1, src, list remain
		}},
		{name: "GETEX PERSIST", steps: cmds([]string{"GETEX", "s2", "PERSIST"})},
		{name: "MSETNX", steps: cmds([]string{"MSETNX", "m", "new", "m2", "x"})},
		{name: "SETEX", steps: cmds([]string{"SETEX", "s1", "100", "new"}, []string{"SETEX", "m", "100", "new"})},
		{name: "PSETEX", steps: cmds([]string{"PSETEX", "s2", "100000", "new"}, []string{"PSETEX", "m", "100000", "new"})},

		{name: "bit operations", steps: cmds([]string{"SETBIT", "s1", "3", "1"}, []string{"BITFIELD", "s2", "SET", "u8", "0", "65"},
			[]string{"BITOP", "NOT", "m", "s1"})},
		{name: "HyperLogLog", steps: cmds([]string{"PFADD", "m", "a", "b"}, []string{"DEL", "s1"},
			[]string{"PFADD", "s1", "x"}, []string{"PFCOUNT", "s1", "m"})},
		// A value larger than the tier stores (about 1/1024 of local.max_memory, 16MB in tests): the older value
		// must not be served on.
		{name: "grows past the tier", steps: cmds([]string{"APPEND", "s1", strings.Repeat("x", 64<<10)},
			[]string{"HSET", "h1", "f1", strings.Repeat("y", 64<<10)})},

		// The keyspace.
		{name: "RENAME", steps: cmds([]string{"RENAME", "src", "s1"}, []string{"RENAME", "s2", "h1"})},
		{name: "RENAMENX", steps: cmds([]string{"RENAMENX", "src", "m"})},
		{name: "MOVE", steps: []neighbourStep{
			{cmds: [][]string{{"MOVE", "s1", "1"}, {"MOVE", "h1", "1"}}},
			{cmds: [][]string{{"SELECT", "1"}, {"MOVE", "s1", "0"}, {"MOVE", "h1", "0"}, {"SELECT", "0"}}},
		}},
		{name: "COPY REPLACE", steps: cmds([]string{"COPY", "src", "s1", "REPLACE"}, []string{"COPY", "h1", "mh"})},
		{name: "COPY DB 1", steps: []neighbourStep{
			{cmds: [][]string{{"COPY", "src", "s1", "DB", "1", "REPLACE"}, {"COPY", "h1", "h1", "DB", "1"}}},
			{cmds: [][]string{{"SELECT", "1"}, {"COPY", "s1", "s2", "DB", "0", "REPLACE"}, {"SELECT", "0"}}},
		}},
		{name: "RESTORE REPLACE", steps: []neighbourStep{{run: func(t *testing.T, p *testProxy, nb *redistest.Conn) {
			dump, isNil, ok := resp.BulkPayload(nb.Do("DUMP", "src"))
			hdump, _, _ := resp.BulkPayload(nb.Do("DUMP", "h1"))
			if !ok || isNil {
				t.Fatal("DUMP src: no payload")
			}
			neighbourDo(t, nb, []string{"RESTORE", "s1", "0", string(dump), "REPLACE"},
				[]string{"RESTORE", "mh", "0", string(hdump)})
		}}}},
		{name: "DEL UNLINK", steps: cmds([]string{"DEL", "s1", "h1"}, []string{"UNLINK", "s2"})},
		{name: "EXPIRE in the past", steps: cmds([]string{"EXPIRE", "s1", "-1"}, []string{"PEXPIREAT", "h1", "1"})},
		{name: "EXPIRE in the future", steps: []neighbourStep{
			{cmds: [][]string{{"PEXPIRE", "s1", "300"}, {"PEXPIREAT", "h1", strconv.FormatInt(time.Now().Add(400*time.Millisecond).UnixMilli(), 10)}, {"EXPIRE", "s2", "1000"}}},
			{wait: dbsize(":3\r\n")}, // s2, src, list remain
		}},
		{name: "PERSIST", steps: cmds([]string{"PERSIST", "s2"})},
		{name: "already expired", steps: []neighbourStep{{run: func(t *testing.T, p *testProxy, nb *redistest.Conn) {
			dump, _, _ := resp.BulkPayload(nb.Do("DUMP", "src"))
			neighbourDo(t, nb, []string{"SET", "s1", "past", "PXAT", "1"}, []string{"GETEX", "s2", "EXAT", "1"},
				[]string{"RESTORE", "h1", "1", string(dump), "REPLACE", "ABSTTL"},
				[]string{"EXPIRE", "m", "100", "NX"}, []string{"SET", "m", "later", "EX", "100"}, []string{"EXPIRE", "m", "1", "GT"})
		}}}},
		{name: "SORT STORE", steps: cmds([]string{"SORT", "list", "STORE", "s1"}, []string{"SORT", "list", "ALPHA", "STORE", "h1"})},
		{name: "string becomes hash", steps: cmds([]string{"DEL", "s1"}, []string{"HSET", "s1", "f1", "x", "f3", "y"})},
		{name: "hash becomes string", steps: cmds([]string{"DEL", "h1"}, []string{"SET", "h1", "str"})},
		{name: "SET over a hash", steps: cmds([]string{"SET", "h1", "str"})},

		// Hashes.
		{name: "HSET", steps: cmds([]string{"HSET", "h1", "f1", "new", "f3", "c"}, []string{"HSET", "mh", "f2", "z"})},
		{name: "HDEL last field", steps: cmds([]string{"HDEL", "h1", "f1", "f2"}, []string{"HDEL", "h1", "n"})},
		{name: "HINCRBYFLOAT", steps: cmds([]string{"HINCRBYFLOAT", "h1", "n", "1.25"}, []string{"HINCRBYFLOAT", "h1", "f3", "2"})},
		{name: "HSETNX", steps: cmds([]string{"HSETNX", "h1", "f3", "c"}, []string{"HSETNX", "h1", "f1", "no"}, []string{"HSETNX", "mh", "f1", "x"})},

		// Scripts, functions and transactions.
		{name: "EVAL declared keys", steps: cmds([]string{"EVAL", "redis.call('SET', KEYS[1], ARGV[1]) redis.call('HSET', KEYS[2], 'f1', ARGV[1]) return 1", "2", "s1", "h1", "new"})},
		{name: "EVAL undeclared keys", steps: cmds([]string{"EVAL", "redis.call('SET', 's' .. ARGV[1], 'new') redis.call('DEL', 'h1') return 1", "0", "1"})},
		{name: "EVALSHA", steps: []neighbourStep{{run: func(t *testing.T, p *testProxy, nb *redistest.Conn) {
			sha, _, _ := resp.BulkPayload(nb.Do("SCRIPT", "LOAD", "return redis.call('SET', KEYS[1], ARGV[1])"))
			neighbourDo(t, nb, []string{"EVALSHA", string(sha), "1", "s2", "new"})
		}}}},
		{name: "FCALL", steps: cmds(
			[]string{"FUNCTION", "LOAD", "REPLACE", "#!lua name=neighbour\nredis.register_function('nbset', function(keys, args) return redis.call('SET', keys[1], args[1]) end)"},
			[]string{"FCALL", "nbset", "1", "s1", "new"},
			[]string{"FCALL", "nbset", "1", "m", "new"},
		)},
		{name: "MULTI EXEC", steps: cmds([]string{"MULTI"}, []string{"SET", "s1", "a"}, []string{"HSET", "h1", "f1", "b"},
			[]string{"DEL", "s2"}, []string{"SET", "m", "c"}, []string{"EXEC"})},

		// Databases.
		{name: "same keys in db 1", steps: cmds([]string{"SELECT", "1"}, []string{"SET", "s1", "db1"}, []string{"HSET", "h1", "f1", "db1"},
			[]string{"SET", "m", "db1"}, []string{"DEL", "s2"}, []string{"SELECT", "0"})},
		{name: "SWAPDB", setup: [][]string{{"SELECT", "1"}, {"SET", "s1", "db1"}, {"HSET", "h1", "f3", "db1"}, {"SET", "m", "db1"}, {"SELECT", "0"}},
			steps: cmds([]string{"SELECT", "1"}, []string{"SWAPDB", "0", "1"}, []string{"SELECT", "0"})},
		{name: "SWAPDB in a transaction", setup: [][]string{{"SELECT", "1"}, {"SET", "s1", "db1"}, {"SELECT", "0"}},
			steps: cmds([]string{"MULTI"}, []string{"SWAPDB", "1", "0"}, []string{"EXEC"})},
		{name: "SWAPDB in a script", setup: [][]string{{"SELECT", "1"}, {"SET", "s1", "db1"}, {"SELECT", "0"}},
			steps: cmds([]string{"EVAL", "return redis.call('SWAPDB', 0, 1)", "0"})},
		// CONFIG RESETSTAT zeroes the SWAPDB count featcache reads.
		{name: "SWAPDB after CONFIG RESETSTAT", setup: [][]string{{"SELECT", "1"}, {"SET", "s1", "db1"}, {"SELECT", "0"}},
			steps: cmds([]string{"CONFIG", "RESETSTAT"}, []string{"SWAPDB", "0", "1"})},
		// After a reset featcache has seen, a second reset and a SWAPDB leave the SWAPDB count and often the
		// resetstat line (calls=1, the same usec) as they were, and other clients' INFO calls keep INFO's count
		// from going down: only the count of featcache's own mark shows the reset (this missed the SWAPDB in
		// about one run in six before it).
		{name: "SWAPDB after two CONFIG RESETSTATs", setup: [][]string{{"SELECT", "1"}, {"SET", "s1", "db1"}, {"SELECT", "0"}},
			steps: []neighbourStep{
				{run: func(t *testing.T, p *testProxy, nb *redistest.Conn) {
					flushes := p.cache.Stats().Flushes
					neighbourDo(t, nb, []string{"CONFIG", "RESETSTAT"}, []string{"SWAPDB", "2", "3"})
					redistest.Eventually(t, 5*time.Second, "featcache sees the first reset", func() bool {
						return p.cache.Stats().Flushes > flushes
					})
				}},
				{cmds: [][]string{{"CONFIG", "RESETSTAT"}, {"SWAPDB", "2", "3"}, {"INFO", "commandstats"}, {"INFO", "commandstats"}}},
				{cmds: [][]string{{"CONFIG", "RESETSTAT"}, {"SWAPDB", "0", "1"}, {"INFO", "commandstats"}, {"INFO", "commandstats"}}},
			}},
		{name: "FLUSHDB in a transaction", steps: cmds([]string{"MULTI"}, []string{"FLUSHDB"}, []string{"EXEC"})},
		{name: "FLUSHALL in a script", steps: cmds([]string{"EVAL", "return redis.call('FLUSHALL')", "0"})},
		{name: "FLUSHDB SYNC", steps: cmds([]string{"FLUSHDB", "SYNC"})},
		{name: "FLUSHDB ASYNC", steps: cmds([]string{"FLUSHDB", "ASYNC"})},
		{name: "FLUSHALL SYNC", steps: cmds([]string{"FLUSHALL", "SYNC"})},
		{name: "FLUSHALL ASYNC", steps: cmds([]string{"FLUSHALL", "ASYNC"})},
		{name: "FLUSHDB in db 1", setup: [][]string{{"SELECT", "1"}, {"SET", "s1", "db1"}, {"SELECT", "0"}},
			steps: cmds([]string{"SELECT", "1"}, []string{"FLUSHDB", "SYNC"}, []string{"SELECT", "0"}, []string{"SET", "s1", "after"})},
		{name: "FLUSHALL from db 1", steps: cmds([]string{"SELECT", "1"}, []string{"FLUSHALL", "ASYNC"}, []string{"SELECT", "0"})},

		// Expiry inside Redis.
		{name: "active expiry", steps: []neighbourStep{
			{cmds: [][]string{{"PEXPIRE", "s1", "100"}, {"PEXPIRE", "h1", "100"}}},
			{wait: dbsize(":3\r\n")}, // deleted by the active cycle: DBSIZE does not expire keys itself
		}},
		{name: "active expiry off", steps: []neighbourStep{
			{run: func(t *testing.T, p *testProxy, nb *redistest.Conn) {
				neighbourDo(t, nb, []string{"DEBUG", "SET-ACTIVE-EXPIRE", "0"})
				t.Cleanup(func() { p.redis.Do("DEBUG", "SET-ACTIVE-EXPIRE", "1") })
				neighbourDo(t, nb, []string{"PEXPIRE", "s1", "200"}, []string{"PEXPIRE", "h1", "200"})
			}},
			// The expired keys stay in memory (DBSIZE counts them) until a read finds them.
			{wait: func(nb *redistest.Conn) bool {
				return string(nb.Do("PTTL", "s1")) == ":-2\r\n" && string(nb.Do("PTTL", "h1")) == ":-2\r\n"
			}},
		}},
		{name: "eviction", steps: []neighbourStep{{run: evictAll}}},

		// Redis's own data changing under its clients.
		{name: "DEBUG RELOAD", steps: cmds([]string{"SET", "s1", "new"}, []string{"HSET", "h1", "f1", "new"}, []string{"DEBUG", "RELOAD"})},
		{name: "REPLICAOF", steps: replicaOfSteps()},
		// The replica loads the primary's data into a database of its own, then swaps it in.
		{name: "REPLICAOF diskless load swapdb", steps: append([]neighbourStep{{run: func(t *testing.T, p *testProxy, nb *redistest.Conn) {
			neighbourDo(t, nb, []string{"CONFIG", "SET", "repl-diskless-load", "swapdb"})
			t.Cleanup(func() { p.redis.Do("CONFIG", "SET", "repl-diskless-load", "disabled") })
		}}}, replicaOfSteps()...)},
	}
}

// evictAll makes Redis evict (maxmemory with allkeys-lru) by filling it well past a limit just above what it uses.
func evictAll(t *testing.T, p *testProxy, nb *redistest.Conn) {
	used := infoInt(t, nb, "memory", "used_memory")
	t.Cleanup(func() {
		p.redis.Do("CONFIG", "SET", "maxmemory", "0")
		p.redis.Do("CONFIG", "SET", "maxmemory-policy", "noeviction")
	})
	neighbourDo(t, nb, []string{"CONFIG", "SET", "maxmemory-policy", "allkeys-lru"},
		[]string{"CONFIG", "SET", "maxmemory", strconv.Itoa(used + 256<<10)})
	filler := strings.Repeat("x", 8<<10)
	var batch [][]string
	for i := 0; i < 256; i++ {
		batch = append(batch, []string{"SET", "fill:" + strconv.Itoa(i), filler})
	}
	writeRaw(t, nb, encodePipeline(batch...))
	readFrames(t, nb, len(batch))
	if evicted := infoInt(t, nb, "stats", "evicted_keys"); evicted == 0 {
		t.Fatal("nothing evicted")
	}
	neighbourDo(t, nb, []string{"CONFIG", "SET", "maxmemory", "0"})
}

// infoInt reads an integer field of an INFO section.
func infoInt(t *testing.T, c *redistest.Conn, section, field string) int {
	t.Helper()
	info, _, _ := resp.BulkPayload(c.Do("INFO", section))
	for _, line := range strings.Split(string(info), "\r\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				t.Fatalf("INFO %s: %q", field, line)
			}
			return n
		}
	}
	t.Fatalf("INFO %s: no %s", section, field)
	return 0
}

// replicaOfSteps makes the upstream a replica of another redis-server holding other data, until the sync has
// completed, then a primary again (REPLICAOF NO ONE), writing to it afterwards.
func replicaOfSteps() []neighbourStep {
	return []neighbourStep{
		{run: func(t *testing.T, p *testProxy, nb *redistest.Conn) {
			other := redistest.Start(t, "--repl-diskless-sync-delay", "0")
			oc := other.Dial()
			neighbourDo(t, oc, []string{"SET", "s1", "other"}, []string{"HSET", "h1", "f1", "other", "f3", "x"},
				[]string{"SET", "m", "other"})
			t.Cleanup(func() { p.redis.Do("REPLICAOF", "NO", "ONE") })
			neighbourDo(t, nb, []string{"REPLICAOF", "127.0.0.1", strconv.Itoa(other.Port())})
			redistest.Eventually(t, 10*time.Second, "the replica's sync", func() bool {
				info, _, _ := resp.BulkPayload(nb.Do("INFO", "replication"))
				return strings.Contains(string(info), "master_link_status:up")
			})
			neighbourDo(t, oc, []string{"SET", "s2", "after-sync"})
			redistest.Eventually(t, 5*time.Second, "the replica applies the primary's write", func() bool {
				return string(nb.Do("GET", "s2")) == bulk("after-sync")
			})
		}},
		{cmds: [][]string{{"REPLICAOF", "NO", "ONE"}, {"SET", "s1", "primary-again"}, {"DEL", "h1"}}},
	}
}

// TestNeighbourChanges: for each way another client of the same Redis can change cached keys, featcache's reads
// converge to Redis's own replies, byte for byte, in RESP2 and RESP3.
func TestNeighbourChanges(t *testing.T) {
	p := startProxyOn(t, redistest.Start(t, "--enable-debug-command", "yes"), neighbourConfig)
	runNeighbourCases(t, p, p.redis, neighbourCases())
}

// TestNeighbourChangesOnPrimary: featcache in front of a replica, the neighbour on its primary. The replica
// applies the primary's writes, SWAPDB and flushes included, and announces them to featcache as its own.
func TestNeighbourChangesOnPrimary(t *testing.T) {
	primary := redistest.Start(t, "--repl-diskless-sync-delay", "0")
	replica := redistest.Start(t, "--replicaof", "127.0.0.1", strconv.Itoa(primary.Port()))
	redistest.Eventually(t, 10*time.Second, "the replica's sync", func() bool {
		info, _, _ := resp.BulkPayload(replica.Do("INFO", "replication"))
		return strings.Contains(string(info), "master_link_status:up")
	})
	p := startProxyOn(t, replica, neighbourConfig)
	var cases []neighbourCase
	for _, tc := range neighbourCases() {
		switch tc.name {
		case "SET GET", "GETEX EX", "RENAME", "MOVE", "DEL UNLINK", "EXPIRE in the future", "string becomes hash",
			"HDEL last field", "EVAL undeclared keys", "MULTI EXEC", "SWAPDB", "FLUSHALL ASYNC", "FLUSHDB in db 1",
			"active expiry":
			cases = append(cases, tc)
		}
	}
	runNeighbourCases(t, p, primary, cases)
}

// runNeighbourCases runs each case as a subtest: the neighbour, a client of nbServer (featcache's upstream, or
// its primary), sets the data up and makes each step's change, after which featcache must converge to what its
// upstream answers.
func runNeighbourCases(t *testing.T, p *testProxy, nbServer *redistest.Server, cases []neighbourCase) {
	pr := newNeighbourProbe(t, p)
	replicated := nbServer != p.redis
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			nb := nbServer.Dial()
			defer nb.Close()
			neighbourDo(t, nb, []string{"FLUSHALL"})
			neighbourDo(t, nb, neighbourSetup...)
			neighbourDo(t, nb, tc.setup...)
			if replicated {
				expectDo(t, nb, ":1\r\n", "WAIT", "1", "5000")
			}
			pr.warm(t)
			for i, step := range tc.steps {
				_, before := pr.compare(neighbourReads())
				neighbourDo(t, nb, step.cmds...)
				if step.run != nil {
					step.run(t, p, nb)
				}
				if step.wait != nil {
					redistest.Eventually(t, 5*time.Second, "the expiry in Redis", func() bool { return step.wait(nb) })
				}
				pr.converge(t, "step "+strconv.Itoa(i+1), before)
			}
			if bad := pr.mismatches(crossReads()); len(bad) > 0 {
				t.Fatalf("reads of keys of another type:\n%s", strings.Join(bad, "\n"))
			}
		})
	}
}

// TestNeighbourDebugReloadMerge: DEBUG RELOAD NOFLUSH MERGE NOSAVE (a debugging command, refused by Redis 7's
// default enable-debug-command no) puts the snapshot's values back into keys that exist without any invalidation,
// neither per key nor the null one (checked with a CLIENT TRACKING BCAST connection of the test's own): featcache
// cannot see it, and serves what it cached until the entries' hard TTL. After it, featcache's reads are Redis's.
func TestNeighbourDebugReloadMerge(t *testing.T) {
	p := startProxyOn(t, redistest.Start(t, "--enable-debug-command", "yes"), neighbourConfig)
	pr := newNeighbourProbe(t, p)
	nb := p.redis.Dial()
	watcher := p.redis.Dial()
	expectDo(t, watcher, "+OK\r\n", "CLIENT", "TRACKING", "ON", "BCAST")
	if got := watcher.Do("HELLO", "3"); len(got) == 0 || got[0] != '%' {
		t.Fatalf("HELLO 3: %q", got)
	}
	neighbourDo(t, nb, neighbourSetup...)
	neighbourDo(t, nb, []string{"SAVE"}, []string{"SET", "s1", "new"}, []string{"HSET", "h1", "f1", "new"},
		[]string{"SET", "marker", "x"})
	for { // the setup's invalidations, up to the marker's
		got, err := watcher.ReadTimeout(time.Second)
		if err != nil {
			t.Fatalf("the setup's invalidations: %v", err)
		}
		if strings.HasSuffix(string(got), bulk("marker")) {
			break
		}
	}
	pr.warm(t)

	neighbourDo(t, nb, []string{"DEBUG", "RELOAD", "NOFLUSH", "MERGE", "NOSAVE"})
	if got, err := watcher.ReadTimeout(200 * time.Millisecond); err == nil {
		t.Logf("Redis now announces DEBUG RELOAD MERGE: %q (docs/freshness.md says it does not)", got)
	}
	p.settle()
	if bad := pr.mismatches(neighbourReads()); len(bad) == 0 {
		t.Log("featcache already serves the reloaded values")
	} else {
		t.Logf("before the hard TTL, as documented:\n%s", strings.Join(bad, "\n"))
	}
	_, before := pr.compare(neighbourReads())
	p.clock.Advance(2*time.Hour + time.Second) // past hard_ttl
	pr.converge(t, "the entries' hard TTL", before)
}

// TestNeighbourTypeFlips: while readers read a key through featcache (GET and HGET, MGET and HMGET, in RESP2 and
// RESP3), the neighbour writes it over and over with rising numbers, as a string, deleted, as a hash, and as a
// string with a 5 ms TTL. A number a reader has seen is never followed by a smaller one (by the same command),
// and afterwards featcache's reads are Redis's.
func TestNeighbourTypeFlips(t *testing.T) {
	p := startProxy(t, neighbourConfig)
	nb := p.redis.Dial()
	stop := make(chan struct{})
	errs := make(chan string, 64)
	var wg sync.WaitGroup
	var numbers [4]atomic.Int64 // numbers each reader checked
	for r := 0; r < 4; r++ {
		wg.Go(func() {
			c := p.dial()
			if r%2 == 1 {
				c.Do("HELLO", "3")
			}
			reads := [][]string{{"GET", "k"}, {"HGET", "k", "f"}}
			if r >= 2 {
				reads = [][]string{{"MGET", "k", "j"}, {"HMGET", "k", "f", "g"}}
			}
			last := make([]int, len(reads))
			for {
				select {
				case <-stop:
					return
				default:
				}
				for i, read := range reads {
					n, ok := firstNumber(c.Do(read...))
					if !ok {
						continue // nil, or WRONGTYPE while the key is of the other type
					}
					numbers[r].Add(1)
					if n < last[i] {
						select {
						case errs <- fmt.Sprintf("%q: %d after %d", read, n, last[i]):
						default:
						}
					}
					last[i] = n
				}
			}
		})
	}
	writes := 0
	for start := time.Now(); time.Since(start) < 1500*time.Millisecond; {
		writes++
		n := strconv.Itoa(writes)
		switch writes % 4 {
		case 0:
			nb.Do("SET", "k", n)
		case 1:
			nb.Do("DEL", "k")
		case 2:
			nb.Do("HSET", "k", "f", n, "g", n)
		case 3:
			nb.Do("SET", "k", n, "PX", "5")
		}
	}
	close(stop)
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Errorf("went back: %s", e)
	}
	t.Logf("%d writes; numbers checked by each reader: %d, %d, %d, %d", writes,
		numbers[0].Load(), numbers[1].Load(), numbers[2].Load(), numbers[3].Load())
	for r := range numbers {
		if numbers[r].Load() == 0 {
			t.Errorf("reader %d read no number", r)
		}
	}
	nb.Do("HSET", "h", "f", "last")
	nb.Do("SET", "k", "last")
	fc, rc := p.dial(), p.redis.Dial()
	for _, read := range [][]string{{"GET", "k"}, {"MGET", "k", "j"}, {"HGET", "h", "f"}, {"HGETALL", "h"}} {
		redistest.Eventually(t, 2*time.Second, fmt.Sprintf("%q through featcache equals Redis's", read), func() bool {
			return string(fc.Do(read...)) == string(rc.Do(read...))
		})
	}
}

// firstNumber reads the first value of a reply (a bulk string, or the first element of an array) as a number;
// nulls (RESP2's and RESP3's) and errors are not numbers.
func firstNumber(reply []byte) (int, bool) {
	if len(reply) > 0 && reply[0] == '*' {
		i := strings.IndexByte(string(reply), '\n')
		if i < 0 {
			return 0, false
		}
		reply = reply[i+1:]
	}
	v, isNil, ok := resp.BulkPayload(reply)
	if !ok || isNil {
		return 0, false
	}
	n, err := strconv.Atoi(string(v))
	return n, err == nil
}
