package main

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"featcache/internal/redistest"
	"featcache/internal/resp"
	"featcache/internal/testkit"
)

// These tests drive warm-ups, the hot-key lists and the local tier's bounds from outside, as an operator and as
// the other applications writing the same Redis would: whatever a warm-up read, and whatever the tier evicted or
// refused, every value read through featcache once the writers stop is the one Redis holds.

// wpGetAll sends GET of every key on c, in pipelines of 200, and returns the raw reply frames.
func wpGetAll(t *testing.T, c *redistest.Conn, keys []string) [][]byte {
	t.Helper()
	out := make([][]byte, 0, len(keys))
	for start := 0; start < len(keys); start += 200 {
		end := min(start+200, len(keys))
		var batch []byte
		for _, k := range keys[start:end] {
			batch = resp.AppendCommand(batch, "GET", k)
		}
		if _, err := c.NetConn().Write(batch); err != nil {
			t.Fatal(err)
		}
		for range keys[start:end] {
			frame, err := c.Read()
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, frame)
		}
	}
	return out
}

// wpDiff reads every key through featcache, then straight from Redis, and returns the keys whose replies differ
// (at most 5, with both replies).
func wpDiff(t *testing.T, fc, direct *redistest.Conn, keys []string) []string {
	t.Helper()
	got := wpGetAll(t, fc, keys)
	want := wpGetAll(t, direct, keys)
	var diff []string
	for i := range keys {
		if !bytes.Equal(got[i], want[i]) {
			if len(diff) < 5 {
				diff = append(diff, fmt.Sprintf("%s: featcache %.60q, redis %.60q", keys[i], got[i], want[i]))
			} else {
				diff = append(diff, keys[i])
			}
		}
	}
	return diff
}

// wpConverge waits until every key reads through featcache as it does from Redis (another client's writes reach
// featcache through invalidations, within milliseconds), then reads them all once more: a value that stays old is
// a stuck stale value, and one that comes back is an evicted or discarded value stored again.
func wpConverge(t *testing.T, in *instance, redis *redistest.Server, keys []string) {
	t.Helper()
	fc, direct := redistest.Dial(t, in.addr), redis.Dial()
	var last []string
	deadline := time.Now().Add(10 * time.Second)
	for {
		if last = wpDiff(t, fc, direct, keys); len(last) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d keys still read through featcache otherwise than from Redis: %q", len(last), last[:min(5, len(last))])
		}
		time.Sleep(50 * time.Millisecond) // between two full passes, not waiting for a condition
	}
	if again := wpDiff(t, fc, direct, keys); len(again) > 0 {
		t.Fatalf("after agreeing with Redis, %d keys read otherwise: %q", len(again), again[:min(5, len(again))])
	}
}

// wpTTLsRunOut waits until no key matching pattern has a TTL left in Redis, so that no key expires between the
// two reads of a comparison.
func wpTTLsRunOut(t *testing.T, redis *redistest.Server, pattern string) {
	t.Helper()
	const script = `local n = 0
for _, k in ipairs(redis.call('KEYS', ARGV[1])) do if redis.call('PTTL', k) > 0 then n = n + 1 end end
return n`
	redistest.Eventually(t, 10*time.Second, "the TTLs of "+pattern+" run out", func() bool {
		return string(redis.Do("EVAL", script, "0", pattern)) == ":0\r\n"
	})
}

// wpMetric reads one series from the instance's /metrics; 0 when it is absent.
func wpMetric(t *testing.T, in *instance, series string) float64 {
	t.Helper()
	_, body := testkit.Get(t, in.admin+"/metrics")
	return opsMetric(body, series)
}

// wpPolicy caches the "w:" keys for an hour, missing ones too.
const wpPolicy = `{name: w, prefix: "w:", soft_ttl: 1h, hard_ttl: 1h, negative_ttl: 1h}`

// wpWarmConfig is a configuration that warms the keys of file at rate keys a second with one caching policy
// (a YAML flow mapping); extra is more of the file's top level.
func wpWarmConfig(extra string, rate int, file, policy string) string {
	return fmt.Sprintf("shutdown_delay: 0s\n%swarm:\n  rate: %d\n  sources: [{file: %q}]\npolicies:\n  - %s\n",
		extra, rate, file, policy)
}

// wpKeys writes n string keys prefix0..prefix<n-1> straight to Redis and a keys file listing them, and returns the
// keys and the file.
func wpKeys(t *testing.T, redis *redistest.Server, prefix string, n int) ([]string, string) {
	t.Helper()
	c := redis.Dial()
	keys := make([]string, n)
	var batch, file []byte
	for i := range keys {
		keys[i] = prefix + strconv.Itoa(i)
		batch = resp.AppendCommand(batch, "SET", keys[i], "v0-"+keys[i])
		file = append(append(file, keys[i]...), '\n')
	}
	if _, err := c.NetConn().Write(batch); err != nil {
		t.Fatal(err)
	}
	for range keys {
		if frame, err := c.Read(); err != nil || string(frame) != "+OK\r\n" {
			t.Fatalf("SET: %q %v", frame, err)
		}
	}
	return keys, testkit.WriteFile(t, t.TempDir(), "warm.txt", string(file))
}

// wpWarmDone waits until the instance's warm-ups have handled want keys and none runs.
func wpWarmDone(t *testing.T, in *instance, want int, d time.Duration) {
	t.Helper()
	redistest.Eventually(t, d, "the warm-up done", func() bool {
		_, body := testkit.Get(t, in.admin+"/metrics")
		handled := opsMetric(body, `featcache_warm_keys_total{result="fetched"}`) +
			opsMetric(body, `featcache_warm_keys_total{result="present"}`) +
			opsMetric(body, `featcache_warm_keys_total{result="skipped"}`)
		return handled >= float64(want) && opsMetric(body, "featcache_warm_running") == 0
	})
}

// neighbourWrite changes key straight on Redis the way another application could: a new value, a delete, a short
// expiry, a new type, an append, a rename onto another key, or a value with a TTL.
func neighbourWrite(c *redistest.Conn, rng *rand.Rand, keys []string, seq int) {
	k := keys[rng.IntN(len(keys))]
	v := "v" + strconv.Itoa(seq) + "-" + k
	switch rng.IntN(8) {
	case 0, 1:
		c.Do("SET", k, v)
	case 2:
		c.Do("DEL", k)
	case 3:
		c.Do("PEXPIRE", k, strconv.Itoa(1+rng.IntN(50)))
	case 4:
		c.Do("EVAL", "redis.call('DEL', KEYS[1]) return redis.call('HSET', KEYS[1], 'f', ARGV[1])", "1", k, v)
	case 5:
		c.Do("APPEND", k, "+"+strconv.Itoa(seq))
	case 6:
		c.Do("RENAME", k, keys[rng.IntN(len(keys))])
	case 7:
		c.Do("SET", k, v, "PX", strconv.Itoa(1+rng.IntN(300)))
	}
}

// TestOutsideWarmWritesDuringWarmUp: a start-up warm-up of 6,000 keys held to 2,000 keys a second into a tier that
// holds less than half of them (so it evicts, with the admission filter on), while two other applications change
// those keys straight on Redis (new values, deletes, expiries, new types, appends, renames) and a client reads
// them through featcache; some keys carry TTLs that run out during the warm-up, and the policy remembers missing
// keys. Once the writers stop, every key reads through featcache as it does from Redis.
func TestOutsideWarmWritesDuringWarmUp(t *testing.T) {
	redis := redistest.Start(t)
	keys, file := wpKeys(t, redis, "w:", 6000)
	setup := redis.Dial()
	pad := strings.Repeat("p", 400) // 6,000 values of about 420 bytes: more than twice the tier
	for i, k := range keys {
		setup.Do("APPEND", k, pad)
		if i%10 == 0 {
			setup.Do("PEXPIRE", k, strconv.Itoa(200+i/3)) // the last at 2.2 s, while the warm-up still runs
		}
	}
	in := startBinary(t, redis, wpWarmConfig("local: {max_memory: 1MB, admission_threshold: 3}\n", 2000, file,
		wpPolicy))

	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			c, rng := redis.Dial(), rand.New(rand.NewPCG(uint64(w), 7))
			pace := time.NewTicker(time.Millisecond) // about 2,000 writes a second in all: a part of the keys
			defer pace.Stop()
			for seq := 0; ; seq++ {
				select {
				case <-stop:
					return
				case <-pace.C:
				}
				neighbourWrite(c, rng, keys, seq)
			}
		}(w)
	}
	wg.Add(1)
	go func() { // a client of featcache reading keys the warm-up is loading, or has loaded
		defer wg.Done()
		c, rng := redistest.Dial(t, in.addr), rand.New(rand.NewPCG(9, 9))
		for {
			select {
			case <-stop:
				return
			default:
			}
			c.Do("GET", keys[rng.IntN(len(keys))])
		}
	}()
	wpWarmDone(t, in, len(keys), 30*time.Second)
	close(stop)
	wg.Wait()
	if fetched := wpMetric(t, in, `featcache_warm_keys_total{result="fetched"}`); fetched < 1000 {
		t.Fatalf("the warm-up fetched %v keys; want most of them", fetched)
	}
	wpTTLsRunOut(t, redis, "w:*")
	wpConverge(t, in, redis, keys)
	if evicted := wpMetric(t, in, "featcache_evictions_total"); evicted == 0 {
		t.Fatalf("featcache_evictions_total 0: the tier never had to evict")
	}
}

// TestOutsideWarmRedisRestartedMidWarmUp: Redis restarts empty (no persistence) while a start-up warm-up is
// loading, and another application writes half the keys again: nothing the warm-up read from the old server is
// served, and the keys it never got to are read from the new one.
func TestOutsideWarmRedisRestartedMidWarmUp(t *testing.T) {
	redis := redistest.Start(t)
	keys, file := wpKeys(t, redis, "w:", 4000)
	in := startBinary(t, redis, wpWarmConfig("", 1000, file, `{name: w, prefix: "w:", soft_ttl: 1h, hard_ttl: 1h}`))
	redistest.Eventually(t, 20*time.Second, "a part of the warm-up loaded", func() bool {
		return wpMetric(t, in, "featcache_warm_startup_loaded_keys") >= 600
	})
	redis.Restart()
	c := redis.Dial()
	for i := 0; i < len(keys); i += 2 {
		c.Do("SET", keys[i], "after-restart-"+keys[i])
	}
	wpWarmDone(t, in, len(keys), 30*time.Second)
	wpConverge(t, in, redis, keys)
}

// TestOutsideWarmReadinessWhileRedisStalls: a start-up warm-up that waits for more keys than it can load while
// Redis is paused (SIGSTOP) or busy with another application's script answers /readyz 503 with the reason, then 200
// once ready_timeout has passed, while Redis still stalls; once Redis answers again the warm-up completes and every
// key, written meanwhile by another application, reads as Redis holds it.
func TestOutsideWarmReadinessWhileRedisStalls(t *testing.T) {
	for _, stall := range []string{"paused", "busy script"} {
		t.Run(stall, func(t *testing.T) {
			redis := redistest.Start(t, "--busy-reply-threshold", "100")
			keys, file := wpKeys(t, redis, "w:", 1600)
			const readyTimeout = 2 * time.Second
			in := startBinaryNotReady(t, fmt.Sprintf(`
shutdown_delay: 0s
upstream: {addresses: [%q]}
warm:
  rate: 400
  ready_after: 1600
  ready_timeout: %s
  sources: [{file: %q}]
policies:
  - {name: w, prefix: "w:", soft_ttl: 1h, hard_ttl: 1h}
`, redis.Addr(), readyTimeout, file))
			started := time.Now()
			redistest.Eventually(t, 10*time.Second, "the warm-up loading", func() bool {
				return wpMetric(t, in, "featcache_warm_startup_loaded_keys") > 0
			})
			code, body := testkit.Get(t, in.admin+"/readyz")
			if code != http.StatusServiceUnavailable || !strings.Contains(body, "warming up") {
				t.Fatalf("/readyz during the warm-up: %d %q; want 503 warming up", code, body)
			}
			script := redis.Dial()
			if stall == "paused" {
				redis.Pause()
			} else {
				if err := script.Send("EVAL", redistest.SleepScript, "0", strconv.Itoa(int(readyTimeout.Milliseconds())+3000)); err != nil {
					t.Fatal(err)
				}
			}
			redistest.Eventually(t, readyTimeout+5*time.Second, "/readyz 200 after ready_timeout while Redis stalls", func() bool {
				return in.status("/readyz") == http.StatusOK
			})
			if since := time.Since(started); since < readyTimeout-500*time.Millisecond {
				t.Fatalf("ready after %v; want ready_timeout (%v) first", since, readyTimeout)
			}
			if stall == "paused" {
				redis.Resume()
			} else if frame, err := script.ReadTimeout(15 * time.Second); err != nil || string(frame) != ":1\r\n" {
				t.Fatalf("the script: %q %v", frame, err)
			}
			c := redis.Dial()
			for i := 0; i < len(keys); i += 3 {
				c.Do("SET", keys[i], "after-stall-"+keys[i])
			}
			for i := 1; i < len(keys); i += 7 {
				c.Do("DEL", keys[i])
			}
			wpWarmDone(t, in, len(keys), 40*time.Second)
			wpConverge(t, in, redis, keys)
		})
	}
}

// TestOutsideWarmSourceThatBlocks: a warm source whose open never returns, a named pipe nobody writes to (as the
// hot-key file, or given to CACHE WARM FILE), fails at once as not a regular file: the sources after it are still
// loaded, later CACHE WARMs still run, and SIGTERM still ends the process within shutdown_timeout rather than
// waiting for a writer that never comes.
func TestOutsideWarmSourceThatBlocks(t *testing.T) {
	redis := redistest.Start(t)
	keys, file := wpKeys(t, redis, "w:", 300)
	more, moreFile := wpKeys(t, redis, "m:", 50)
	fifo := filepath.Join(t.TempDir(), "hotkeys.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	in := startBinary(t, redis, fmt.Sprintf(`
shutdown_delay: 0s
shutdown_timeout: 2s
warm:
  hotkeys_file: %q
  ready_after: 300
  ready_timeout: 20s
  sources: [{file: %q}]
policies:
  - {name: w, prefix: "w:", soft_ttl: 1h, hard_ttl: 1h}
  - {name: m, prefix: "m:", soft_ttl: 1h, hard_ttl: 1h}
`, fifo, file))
	wpWarmDone(t, in, len(keys), 10*time.Second)
	c := redistest.Dial(t, in.addr)
	c.Do("CACHE", "WARM", "FILE", fifo)
	if got := string(c.Do("CACHE", "WARM", "FILE", moreFile)); got != "+OK\r\n" {
		t.Fatalf("CACHE WARM FILE: %q", got)
	}
	wpWarmDone(t, in, len(keys)+len(more), 10*time.Second)
	gets := redis.Calls("get")
	wpGetAll(t, c, append(keys, more...))
	if n := redis.Calls("get") - gets; n != 0 {
		t.Fatalf("reading the warmed keys made %d upstream GETs; want 0", n)
	}
	in.signal(syscall.SIGTERM)
	in.wait(10 * time.Second)
	if _, err := os.Stat(fifo); err != nil {
		t.Fatal(err)
	}
}

// wpSameEventually waits until each command answers through featcache as it does straight from Redis, then asks
// each once more: the second answers must agree too.
func wpSameEventually(t *testing.T, in *instance, redis *redistest.Server, cmds [][]string) {
	t.Helper()
	fc, direct := redistest.Dial(t, in.addr), redis.Dial()
	pass := func() string {
		for _, cmd := range cmds {
			got, want := fc.Do(cmd...), direct.Do(cmd...)
			if !bytes.Equal(got, want) {
				return fmt.Sprintf("%q: featcache %.80q, redis %.80q", cmd, got, want)
			}
		}
		return ""
	}
	var last string
	deadline := time.Now().Add(10 * time.Second)
	for last = pass(); last != ""; last = pass() {
		if time.Now().After(deadline) {
			t.Fatalf("still different: %s", last)
		}
		time.Sleep(20 * time.Millisecond) // between two passes, not waiting for a condition
	}
	if again := pass(); again != "" {
		t.Fatalf("after agreeing with Redis: %s", again)
	}
}

// TestOutsideCacheWarmKindsOfKeys: CACHE WARM FILE of a string, a key about to expire, a missing key under a policy
// that remembers missing keys, a hash, a hash about to expire, a list, a value and a hash larger than the tier
// stores, and a key no policy covers. Each reads through featcache as from Redis, the expiring ones are gone
// through featcache as soon as Redis has dropped them, and after another application changes every one of them
// straight on Redis, each reads as Redis holds it again.
func TestOutsideCacheWarmKindsOfKeys(t *testing.T) {
	redis := redistest.Start(t)
	c := redis.Dial()
	big := strings.Repeat("x", 2000)
	c.Do("SET", "w:str", "plain")
	c.Do("SET", "w:ttl", "short", "PX", "400")
	c.Do("HSET", "w:hash", "a", "1", "b", "2")
	c.Do("HSET", "w:hashttl", "a", "1")
	c.Do("PEXPIRE", "w:hashttl", "400")
	c.Do("RPUSH", "w:list", "x", "y")
	c.Do("SET", "w:big", big)
	bigHash := []string{"HSET", "w:bighash"}
	for i := 0; i < 100; i++ {
		bigHash = append(bigHash, "field"+strconv.Itoa(i), strings.Repeat("v", 20))
	}
	c.Do(bigHash...)
	c.Do("SET", "nopolicy:1", "np")
	keys := []string{"w:str", "w:ttl", "w:gone", "w:hash", "w:hashttl", "w:list", "w:big", "w:bighash", "nopolicy:1"}
	file := testkit.WriteFile(t, t.TempDir(), "keys.txt", strings.Join(keys, "\n")+"\n")
	in := startBinary(t, redis, `
shutdown_delay: 0s
local: {max_memory: 1MB}
policies:
  - {name: w, prefix: "w:", soft_ttl: 1h, hard_ttl: 1h, negative_ttl: 1h}
`)
	fc := redistest.Dial(t, in.addr)
	if got := string(fc.Do("CACHE", "WARM", "FILE", file)); got != "+OK\r\n" {
		t.Fatalf("CACHE WARM FILE: %q", got)
	}
	wpWarmDone(t, in, len(keys), 10*time.Second)
	var reads [][]string
	for _, k := range keys {
		reads = append(reads, []string{"GET", k}, []string{"HGETALL", k}, []string{"HGET", k, "a"},
			[]string{"HMGET", k, "a", "b", "field7"}, []string{"MGET", k, "w:str", "w:gone"}, []string{"PTTL", k})
	}
	// The keys with TTLs: gone through featcache once Redis has dropped them.
	redistest.Eventually(t, 5*time.Second, "the short TTLs run out in Redis", func() bool {
		return string(c.Do("EXISTS", "w:ttl", "w:hashttl")) == ":0\r\n"
	})
	for _, cmd := range [][]string{{"GET", "w:ttl"}, {"HGETALL", "w:hashttl"}, {"HGET", "w:hashttl", "a"}} {
		if got, want := fc.Do(cmd...), c.Do(cmd...); !bytes.Equal(got, want) {
			t.Fatalf("%q once Redis dropped the key: featcache %q, redis %q", cmd, got, want)
		}
	}
	wpSameEventually(t, in, redis, reads)

	// Another application changes every key.
	c.Do("APPEND", "w:str", "-more")
	c.Do("SET", "w:ttl", "back")
	c.Do("SET", "w:gone", "now here")
	c.Do("HSET", "w:hash", "a", "changed", "field7", "new")
	c.Do("HSET", "w:hashttl", "b", "2")
	c.Do("DEL", "w:list")
	c.Do("SET", "w:list", "a string now")
	c.Do("SET", "w:big", "small")
	c.Do("HDEL", "w:bighash", "field7")
	c.Do("SET", "nopolicy:1", "np2")
	wpSameEventually(t, in, redis, reads)
}

// TestOutsideTierBounds: a 1MB tier, and 4,000 keys of values around the largest it stores (about 3.6MB of them),
// read through featcache twice, so that the tier evicts again and again; then another application rewrites,
// appends to and deletes them straight on Redis, and every key reads as Redis holds it. The largest value the
// docs promise is kept (a second read costs Redis nothing), one byte more is read from Redis every time, and an
// APPEND by another application that grows a kept value past the bound is seen. A hash of 200 fields is read
// whole and by field as Redis answers. The resident set stays within the documented bound.
func TestOutsideTierBounds(t *testing.T) {
	redis := redistest.Start(t)
	in := startBinary(t, redis, `
shutdown_delay: 0s
local: {max_memory: 1MB}
policies:
  - {name: b, prefix: "b:", soft_ttl: 1h, hard_ttl: 1h}
`)
	c := redis.Dial()
	fc := redistest.Dial(t, in.addr)

	// The largest value kept: max_memory/1024 - 66 bytes - the key. upstreamGets reads b:edge through featcache,
	// checks the value against Redis's, and says how many GETs Redis ran for it.
	const maxKept = 1024 - 66 - len("b:edge")
	upstreamGets := func() int {
		gets := redis.Calls("get")
		if got, want := fc.Do("GET", "b:edge"), c.Do("GET", "b:edge"); !bytes.Equal(got, want) {
			return -1 // not yet: the write's invalidation is on its way
		}
		return redis.Calls("get") - gets - 1
	}
	c.Do("SET", "b:edge", strings.Repeat("e", maxKept+1))
	redistest.Eventually(t, 5*time.Second, "the value over the bound read", func() bool { return upstreamGets() == 1 })
	for i := 0; i < 3; i++ {
		if n := upstreamGets(); n != 1 {
			t.Fatalf("a read of a value of %d bytes made %d upstream GETs; want 1: it is over the bound", maxKept+1, n)
		}
	}
	c.Do("SET", "b:edge", strings.Repeat("e", maxKept))
	redistest.Eventually(t, 5*time.Second, "the largest kept value kept", func() bool { return upstreamGets() == 0 })
	c.Do("APPEND", "b:edge", "+")
	wpSameEventually(t, in, redis, [][]string{{"GET", "b:edge"}, {"STRLEN", "b:edge"}})

	// A hash of many fields, larger than the tier stores.
	hset := []string{"HSET", "b:hash"}
	for i := 0; i < 200; i++ {
		hset = append(hset, "f"+strconv.Itoa(i), strings.Repeat("h", i%40))
	}
	c.Do(hset...)
	hashReads := [][]string{{"HGETALL", "b:hash"}, {"HGET", "b:hash", "f7"}, {"HMGET", "b:hash", "f1", "f199", "none"}}
	wpSameEventually(t, in, redis, hashReads)
	c.Do("HSET", "b:hash", "f7", "changed")
	c.Do("HDEL", "b:hash", "f199")
	wpSameEventually(t, in, redis, hashReads)

	// Far more values than the tier holds, around the largest it keeps.
	keys := make([]string, 4000)
	var batch []byte
	for i := range keys {
		keys[i] = "b:" + strconv.Itoa(i)
		batch = resp.AppendCommand(batch, "SET", keys[i], strconv.Itoa(i)+strings.Repeat("a", 700+i%400))
	}
	c.NetConn().Write(batch)
	for range keys {
		if _, err := c.Read(); err != nil {
			t.Fatal(err)
		}
	}
	wpGetAll(t, fc, keys)
	wpGetAll(t, fc, keys)
	batch = batch[:0]
	for i, k := range keys {
		switch i % 4 {
		case 0:
			batch = resp.AppendCommand(batch, "SET", k, "new"+strconv.Itoa(i)+strings.Repeat("n", (i*7)%1200))
		case 1:
			batch = resp.AppendCommand(batch, "APPEND", k, strings.Repeat("+", i%300))
		case 2:
			batch = resp.AppendCommand(batch, "DEL", k)
		case 3:
			batch = resp.AppendCommand(batch, "SETRANGE", k, "0", "R")
		}
	}
	c.NetConn().Write(batch)
	for range keys {
		if _, err := c.Read(); err != nil {
			t.Fatal(err)
		}
	}
	wpConverge(t, in, redis, keys)
	if evicted := wpMetric(t, in, "featcache_evictions_total"); evicted == 0 {
		t.Fatalf("featcache_evictions_total 0: the tier never had to evict")
	}
	wpMemoryWithin(t, in, "VmRSS", (1+64+16)<<20) // max_memory + 64MB, and room for the test's own pipelines
}

// TestOutsideHotKeysFiles: the hot-key file read at start is empty, binary garbage, cut short inside a quoted
// key, holds a corrupt line between good ones, is huge and names keys that no longer exist, or is a directory.
// featcache starts and turns ready every time; every key the file names validly is loaded (reading it costs Redis
// nothing), keys that are gone read as missing and then as another application writes them, and at shutdown the
// process exits 0 having written what traffic read, which the next start loads.
func TestOutsideHotKeysFiles(t *testing.T) {
	redis := redistest.Start(t)
	keys, _ := wpKeys(t, redis, "w:", 100)
	lines := func(ks []string) string { return strings.Join(ks, "\n") + "\n" }
	var huge strings.Builder
	huge.WriteString(lines(keys))
	for i := 0; i < 100000; i++ {
		huge.WriteString("w:gone:" + strconv.Itoa(i) + "\n")
	}
	garbage := make([]byte, 4096)
	for i := range garbage {
		garbage[i] = byte(i * 7)
	}
	for _, tc := range []struct {
		name, text string
		dir        bool
		loaded     []string // keys the file names validly
	}{
		{name: "empty"},
		{name: "garbage", text: string(garbage)},
		{name: "cut inside a quoted key", text: lines(keys[:50]) + `"w:\x31`, loaded: keys[:50]},
		{name: "corrupt line between good ones", text: lines(keys[:50]) + "\"w:unterminated\n" + lines(keys[50:]), loaded: keys},
		{name: "huge, naming keys that are gone", text: huge.String(), loaded: keys},
		{name: "a directory", dir: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			redis.Do("FLUSHALL")
			wpKeys(t, redis, "w:", 100)
			path := filepath.Join(t.TempDir(), "hotkeys.txt")
			if tc.dir {
				if err := os.Mkdir(path, 0o700); err != nil {
					t.Fatal(err)
				}
			} else if err := os.WriteFile(path, []byte(tc.text), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg := fmt.Sprintf(`
shutdown_delay: 0s
warm:
  hotkeys_file: %q
  hotkeys_size: 1000
  ready_after: 50
  ready_timeout: 20s
  rate: 1000000
policies:
  - {name: w, prefix: "w:", soft_ttl: 1h, hard_ttl: 1h, negative_ttl: 1h}
`, path)
			in := startBinary(t, redis, cfg)
			wpWarmDone(t, in, len(tc.loaded), 20*time.Second)
			fc := redistest.Dial(t, in.addr)
			gets := redis.Calls("get")
			wpGetAll(t, fc, tc.loaded)
			if n := redis.Calls("get") - gets; n != 0 {
				t.Fatalf("reading the %d keys the file names made %d upstream GETs; want 0", len(tc.loaded), n)
			}
			gone := []string{"w:gone:0", "w:gone:99999"}
			reads := [][]string{{"GET", gone[0]}, {"GET", gone[1]}, {"GET", keys[0]}, {"GET", keys[99]}}
			wpSameEventually(t, in, redis, reads)
			redis.Do("SET", gone[0], "written")
			redis.Do("SET", keys[99], "rewritten")
			wpSameEventually(t, in, redis, reads)
			for i := 0; i < 40; i++ { // traffic for the hot-key list (one read in 16 is sampled)
				wpGetAll(t, fc, keys)
			}
			in.signal(syscall.SIGTERM)
			in.wait(10 * time.Second)
			if tc.dir {
				return
			}
			next := startBinary(t, redis, cfg)
			wpWarmDone(t, next, 1, 10*time.Second)
			if n := wpMetric(t, next, `featcache_warm_keys_total{result="fetched"}`); n < 50 {
				t.Fatalf("the next start loaded %v keys from the file written at shutdown; want the keys read", n)
			}
			wpSameEventually(t, next, redis, reads)
		})
	}
}

// TestOutsideWarmSwapDBAndFlushDuringWarmUp: while a start-up warm-up loads keys, another application swaps
// databases 0 and 1 (Redis announces no invalidation for SWAPDB), and later flushes database 0 and writes some
// keys again. Whatever the warm-up read before either, every key then reads as Redis holds it, the warm-up
// running or done.
func TestOutsideWarmSwapDBAndFlushDuringWarmUp(t *testing.T) {
	redis := redistest.Start(t)
	keys, file := wpKeys(t, redis, "w:", 4000)
	other := redis.Dial()
	other.Do("SELECT", "1")
	for i, k := range keys {
		if i%2 == 0 {
			other.Do("SET", k, "db1-"+k)
		}
	}
	in := startBinary(t, redis, wpWarmConfig("", 2000, file, wpPolicy))
	redistest.Eventually(t, 20*time.Second, "a part of the warm-up loaded", func() bool {
		return wpMetric(t, in, "featcache_warm_startup_loaded_keys") >= 800
	})
	if got := string(redis.Do("SWAPDB", "0", "1")); got != "+OK\r\n" {
		t.Fatalf("SWAPDB: %q", got)
	}
	redistest.Eventually(t, 20*time.Second, "more of the warm-up loaded", func() bool {
		return wpMetric(t, in, "featcache_warm_startup_loaded_keys") >= 2400
	})
	wpConverge(t, in, redis, keys) // while the warm-up goes on
	redis.Do("FLUSHDB")
	c := redis.Dial()
	for i := 0; i < len(keys); i += 3 {
		c.Do("SET", keys[i], "after-flush-"+keys[i])
	}
	wpWarmDone(t, in, len(keys), 30*time.Second)
	wpConverge(t, in, redis, keys)
}

// wpMemoryWithin fails the test when the instance's field of /proc/<pid>/status (VmRSS now, VmHWM its peak) is
// above bound, and logs it; under the race detector, whose shadow memory is outside the bound, it checks nothing.
func wpMemoryWithin(t *testing.T, in *instance, field string, bound int64) {
	t.Helper()
	if raceEnabled {
		return
	}
	got := procStatusBytes(t, in.cmd.Process.Pid, field)
	if got > bound {
		t.Fatalf("%s %d MiB; want at most %d MiB", field, got>>20, bound>>20)
	}
	t.Logf("%s %.1f MiB", field, float64(got)/(1<<20))
}

// TestOutsideWarmLargeValues: CACHE WARM FILE of 300 values of 512KB (150MB, each far over what an 8MB tier
// stores), then 100 small ones. The warm-up reads the large values a few at a time, so the process's peak resident
// set stays within local.max_memory + 64MB (a batch of 200 keys read at once held 100MB of replies, and at 1MB
// each could not arrive within upstream.timeout, retried forever); it completes, the small keys are kept, and
// every value reads as Redis holds it.
func TestOutsideWarmLargeValues(t *testing.T) {
	redis := redistest.Start(t)
	if got := string(redis.Do("EVAL", "for i = 0, 299 do redis.call('SET', 'w:big' .. i, string.rep('x', 524288)) end return 1", "0")); got != ":1\r\n" {
		t.Fatalf("EVAL: %q", got)
	}
	small, _ := wpKeys(t, redis, "w:small", 100)
	var file strings.Builder
	for i := 0; i < 300; i++ {
		file.WriteString("w:big" + strconv.Itoa(i) + "\n")
	}
	file.WriteString(strings.Join(small, "\n") + "\n")
	path := testkit.WriteFile(t, t.TempDir(), "keys.txt", file.String())
	in := startBinary(t, redis, `
shutdown_delay: 0s
local: {max_memory: 8MB}
warm: {rate: 1000000}
policies:
  - {name: w, prefix: "w:", soft_ttl: 1h, hard_ttl: 1h}
`)
	fc := redistest.Dial(t, in.addr)
	if got := string(fc.Do("CACHE", "WARM", "FILE", path)); got != "+OK\r\n" {
		t.Fatalf("CACHE WARM FILE: %q", got)
	}
	wpWarmDone(t, in, 400, 30*time.Second)
	if n := wpMetric(t, in, `featcache_not_stored_total{reason="too_large"}`); n < 300 {
		t.Fatalf("featcache_not_stored_total{reason=\"too_large\"} %v; want the 300 large values", n)
	}
	gets := redis.Calls("get")
	wpGetAll(t, fc, small)
	if n := redis.Calls("get") - gets; n != 0 {
		t.Fatalf("reading the warmed small keys made %d upstream GETs; want 0", n)
	}
	wpConverge(t, in, redis, append(small, "w:big0", "w:big150", "w:big299"))
	wpMemoryWithin(t, in, "VmHWM", (8+64)<<20) // local.max_memory + 64MB, at its peak
}

// TestOutsideWarmReadYourWritesDuringWarmUp: while a start-up warm-up loads 4,000 keys, a client of featcache
// writes keys (a value, a delete, a new type) and reads each straight after its write's reply: it reads its own
// write every time, whatever the warm-up had read or was reading of that key, as it would from Redis.
func TestOutsideWarmReadYourWritesDuringWarmUp(t *testing.T) {
	redis := redistest.Start(t)
	keys, file := wpKeys(t, redis, "w:", 4000)
	in := startBinary(t, redis, wpWarmConfig("", 2000, file, wpPolicy))
	fc, direct := redistest.Dial(t, in.addr), redis.Dial()
	rng := rand.New(rand.NewPCG(3, 4))
	direct.Do("HSET", "w:a-hash", "f", "v")
	wrongType := string(direct.Do("GET", "w:a-hash")) // Redis's reply to GET of a hash
	writes := 0
	for wpMetric(t, in, "featcache_warm_running") == 1 || writes == 0 {
		for i := 0; i < 100; i++ {
			k := keys[rng.IntN(len(keys))]
			v := "mine-" + strconv.Itoa(writes)
			var want string
			switch writes % 3 {
			case 0:
				fc.Do("SET", k, v)
				want = "$" + strconv.Itoa(len(v)) + "\r\n" + v + "\r\n"
			case 1:
				fc.Do("DEL", k)
				want = "$-1\r\n"
			case 2:
				fc.Do("DEL", k)
				fc.Do("HSET", k, "f", v)
				want = wrongType
			}
			if got := string(fc.Do("GET", k)); got != want {
				t.Fatalf("write %d of %s: GET through featcache = %q; want %q", writes, k, got, want)
			}
			writes++
		}
	}
	t.Logf("%d writes read back during the warm-up", writes)
	wpWarmDone(t, in, len(keys), 30*time.Second)
	wpConverge(t, in, redis, keys)
}

// TestOutsideHotKeysOddNames: keys holding newlines, carriage returns, a leading double quote or space, NUL and
// invalid UTF-8 bytes, read through featcache, are written to the hot-key file at shutdown and loaded by the next
// start under their exact names: reading them then costs Redis nothing and answers Redis's values.
func TestOutsideHotKeysOddNames(t *testing.T) {
	redis := redistest.Start(t)
	names := []string{"w:a\nb", "w:cr\r", "w:\r\nboth", `w:"quoted"`, "w: space", "w:nul\x00byte", "w:\xff\xfe", "w:tab\tx", `w:\n literal`}
	c := redis.Dial()
	for i, k := range names {
		c.Do("SET", k, "value "+strconv.Itoa(i))
	}
	path := filepath.Join(t.TempDir(), "hotkeys.txt")
	cfg := fmt.Sprintf(`
shutdown_delay: 0s
warm: {hotkeys_file: %q, hotkeys_size: 100}
policies:
  - {name: w, prefix: "w:", soft_ttl: 1h, hard_ttl: 1h}
`, path)
	in := startBinary(t, redis, cfg)
	fc := redistest.Dial(t, in.addr)
	for i := 0; i < 200; i++ { // one read in 16 is sampled for the hot-key list
		wpGetAll(t, fc, names)
	}
	in.signal(syscall.SIGTERM)
	in.wait(10 * time.Second)
	next := startBinary(t, redis, cfg)
	wpWarmDone(t, next, len(names), 10*time.Second)
	fc = redistest.Dial(t, next.addr)
	gets := redis.Calls("get")
	got := wpGetAll(t, fc, names)
	if n := redis.Calls("get") - gets; n != 0 {
		text, _ := os.ReadFile(path)
		t.Fatalf("reading the hot keys after a restart made %d upstream GETs; want 0 (file %q)", n, text)
	}
	for i, k := range names {
		if want := c.Do("GET", k); !bytes.Equal(got[i], want) {
			t.Fatalf("GET %q = %q; want %q", k, got[i], want)
		}
	}
}

// TestOutsideWarmReloadMidWarmUp: while a start-up warm-up loads keys, CACHE RELOAD switches their policy to
// cache: false (and lowers warm.rate); another application then rewrites every key straight on Redis. Nothing the
// warm-up loaded, before or after the reload, is served: every key reads as Redis holds it, at once.
func TestOutsideWarmReloadMidWarmUp(t *testing.T) {
	redis := redistest.Start(t)
	keys, file := wpKeys(t, redis, "w:", 3000)
	cfg := `
shutdown_delay: 0s
warm:
  rate: %d
  sources: [{file: %q}]
policies:
  - {name: w, prefix: "w:", %s}
`
	in := startBinary(t, redis, fmt.Sprintf(cfg, 2000, file, "soft_ttl: 1h, hard_ttl: 1h"))
	redistest.Eventually(t, 20*time.Second, "a part of the warm-up loaded", func() bool {
		return wpMetric(t, in, "featcache_warm_startup_loaded_keys") >= 600
	})
	if err := os.WriteFile(in.configPath(), []byte(fmt.Sprintf(cfg, 5000, file, "cache: false")), 0o600); err != nil {
		t.Fatal(err)
	}
	fc := redistest.Dial(t, in.addr)
	if got := string(fc.Do("CACHE", "RELOAD")); !strings.Contains(got, "+reloaded:") {
		t.Fatalf("CACHE RELOAD: %q", got)
	}
	c := redis.Dial()
	for i, k := range keys {
		if i%2 == 0 {
			c.Do("SET", k, "after-reload-"+k)
		}
	}
	// No waiting for invalidations: the keys are not cached any more, so every read goes to Redis.
	if diff := wpDiff(t, fc, c, keys); len(diff) > 0 {
		t.Fatalf("%d keys read through featcache otherwise than from Redis after the reload: %q", len(diff), diff[:min(5, len(diff))])
	}
	wpWarmDone(t, in, len(keys), 30*time.Second)
	if diff := wpDiff(t, fc, c, keys); len(diff) > 0 {
		t.Fatalf("%d keys read through featcache otherwise than from Redis after the warm-up: %q", len(diff), diff[:min(5, len(diff))])
	}
}

// TestOutsideWarmReloadStartsCaching: the reverse: a warm-up runs over cached keys and, between them, keys no
// policy caches (skipped), and CACHE RELOAD makes a policy cache those (new tracking prefixes) while it runs, so
// that the rest are stored; another application then rewrites every key straight on Redis, and every key reads
// as Redis holds it.
func TestOutsideWarmReloadStartsCaching(t *testing.T) {
	redis := redistest.Start(t)
	keys, _ := wpKeys(t, redis, "w:", 3000)
	xs, _ := wpKeys(t, redis, "x:", 3000) // cached all along: they hold the warm-up to its rate
	var list strings.Builder
	for i := range keys {
		list.WriteString(xs[i] + "\n" + keys[i] + "\n")
	}
	file := testkit.WriteFile(t, t.TempDir(), "keys.txt", list.String())
	cfg := `
shutdown_delay: 0s
warm:
  rate: 2000
  sources: [{file: %q}]
policies:
  - {name: x, prefix: "x:", soft_ttl: 1h, hard_ttl: 1h}
%s`
	in := startBinary(t, redis, fmt.Sprintf(cfg, file, ""))
	redistest.Eventually(t, 20*time.Second, "a part of the warm-up skipped", func() bool {
		return wpMetric(t, in, `featcache_warm_keys_total{result="skipped"}`) >= 400
	})
	if err := os.WriteFile(in.configPath(), []byte(fmt.Sprintf(cfg, file, `  - {name: w, prefix: "w:", soft_ttl: 1h, hard_ttl: 1h}`)), 0o600); err != nil {
		t.Fatal(err)
	}
	fc := redistest.Dial(t, in.addr)
	if got := string(fc.Do("CACHE", "RELOAD")); !strings.Contains(got, "+reloaded:") {
		t.Fatalf("CACHE RELOAD: %q", got)
	}
	wpWarmDone(t, in, 2*len(keys), 30*time.Second)
	if fetched := wpMetric(t, in, `featcache_warm_keys_total{result="fetched"}`); fetched < float64(len(xs)+500) {
		t.Fatalf("the warm-up fetched %v keys; want the x: keys and the w: keys after the reload", fetched)
	}
	c := redis.Dial()
	for _, k := range keys {
		c.Do("SET", k, "rewritten-"+k)
	}
	wpConverge(t, in, redis, append(keys, xs...))
}

// TestOutsideWarmHashesDuringWrites: a start-up warm-up of 1,500 hashes held to 1,000 keys a second, while
// another application sets, deletes and expires their fields and whole hashes straight on Redis, and a client
// reads them through featcache with HGET, HMGET and HGETALL. Once the writer stops, every hash reads as Redis holds
// it, whole and by field.
func TestOutsideWarmHashesDuringWrites(t *testing.T) {
	redis := redistest.Start(t)
	c := redis.Dial()
	keys := make([]string, 1500)
	var batch []byte
	for i := range keys {
		keys[i] = "h:" + strconv.Itoa(i)
		batch = resp.AppendCommand(batch, "HSET", keys[i], "a", "a0", "b", "b0", "c", strconv.Itoa(i))
	}
	c.NetConn().Write(batch)
	for range keys {
		if _, err := c.Read(); err != nil {
			t.Fatal(err)
		}
	}
	file := testkit.WriteFile(t, t.TempDir(), "keys.txt", strings.Join(keys, "\n")+"\n")
	in := startBinary(t, redis, wpWarmConfig("", 1000, file,
		`{name: h, prefix: "h:", soft_ttl: 1h, hard_ttl: 1h, negative_ttl: 1h}`))
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(2)
	go func() {
		defer wg.Done()
		c, rng := redis.Dial(), rand.New(rand.NewPCG(5, 6))
		for seq := 0; ; seq++ {
			select {
			case <-stop:
				return
			default:
			}
			k, v := keys[rng.IntN(len(keys))], "v"+strconv.Itoa(seq)
			switch rng.IntN(6) {
			case 0, 1:
				c.Do("HSET", k, "a", v)
			case 2:
				c.Do("HSET", k, "b", v, "d", v)
			case 3:
				c.Do("HDEL", k, "a")
			case 4:
				c.Do("DEL", k)
			case 5:
				c.Do("PEXPIRE", k, strconv.Itoa(1+rng.IntN(100)))
			}
		}
	}()
	go func() {
		defer wg.Done()
		fc, rng := redistest.Dial(t, in.addr), rand.New(rand.NewPCG(7, 8))
		for {
			select {
			case <-stop:
				return
			default:
			}
			k := keys[rng.IntN(len(keys))]
			switch rng.IntN(3) {
			case 0:
				fc.Do("HGET", k, "a")
			case 1:
				fc.Do("HMGET", k, "a", "b", "d")
			case 2:
				fc.Do("HGETALL", k)
			}
		}
	}()
	wpWarmDone(t, in, len(keys), 30*time.Second)
	close(stop)
	wg.Wait()
	var reads [][]string
	for _, k := range keys {
		reads = append(reads, []string{"HGETALL", k}, []string{"HMGET", k, "a", "b", "c", "d"})
	}
	wpTTLsRunOut(t, redis, "h:*")
	wpSameEventually(t, in, redis, reads)
}

// TestOutsideWarmACLRefusals: featcache's upstream user may not read some of the keys a warm-up lists (an ACL key
// pattern), or may not run PTTL at all. The warm-up neither hangs nor retries them for ever: /readyz turns 200
// well before ready_timeout, and every key reads through featcache exactly as it does for a direct client of Redis
// logged in as the same user, refusals included, also after another application rewrites them.
func TestOutsideWarmACLRefusals(t *testing.T) {
	for _, tc := range []struct{ name, rules string }{
		{"key pattern", "~w:* &* +@all"},
		{"no PTTL", "~* &* +@all -pttl"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			redis := redistest.Start(t)
			wk, _ := wpKeys(t, redis, "w:", 200)
			xk, _ := wpKeys(t, redis, "x:", 200)
			keys := append(wk, xk...)
			file := testkit.WriteFile(t, t.TempDir(), "keys.txt", strings.Join(keys, "\n")+"\n")
			args := append([]string{"ACL", "SETUSER", "fc", "on", ">pw"}, strings.Fields(tc.rules)...)
			if got := string(redis.Do(args...)); got != "+OK\r\n" {
				t.Fatalf("ACL SETUSER: %q", got)
			}
			start := time.Now()
			in := startBinary(t, redis, fmt.Sprintf(`
shutdown_delay: 0s
upstream: {username: fc, password: pw}
warm:
  ready_after: 400
  ready_timeout: 30s
  sources: [{file: %q}]
policies:
  - {name: w, prefix: "w:", soft_ttl: 1h, hard_ttl: 1h}
  - {name: x, prefix: "x:", soft_ttl: 1h, hard_ttl: 1h}
`, file))
			if d := time.Since(start); d > 15*time.Second {
				t.Fatalf("ready after %v; want the warm-up done well before ready_timeout", d)
			}
			asUser := redis.Dial()
			if got := string(asUser.Do("AUTH", "fc", "pw")); got != "+OK\r\n" {
				t.Fatalf("AUTH: %q", got)
			}
			fc := redistest.Dial(t, in.addr)
			if diff := wpDiff(t, fc, asUser, keys); len(diff) > 0 {
				t.Fatalf("%d keys read otherwise than by a direct client of the same user: %q", len(diff), diff[:min(5, len(diff))])
			}
			c := redis.Dial()
			for _, k := range keys {
				c.Do("SET", k, "rewritten-"+k)
			}
			fc2 := redistest.Dial(t, in.addr)
			redistest.Eventually(t, 10*time.Second, "every key as Redis answers the same user", func() bool {
				return len(wpDiff(t, fc2, asUser, keys)) == 0
			})
		})
	}
}

// TestOutsideHotKeysZset: the hot-key list kept in Redis. At start the sorted set is another application's string
// (WRONGTYPE): featcache turns ready and serves. At shutdown it writes the keys traffic read; another application
// then rewrites and deletes some of them; the next start warms from the set and every key reads as Redis holds it.
func TestOutsideHotKeysZset(t *testing.T) {
	redis := redistest.Start(t)
	keys, _ := wpKeys(t, redis, "w:", 50)
	redis.Do("SET", "fc:hot", "not a sorted set")
	cfg := `
shutdown_delay: 0s
warm: {hotkeys_zset: "fc:hot", hotkeys_size: 100, ready_after: 50, ready_timeout: 30s}
policies:
  - {name: w, prefix: "w:", soft_ttl: 1h, hard_ttl: 1h}
`
	start := time.Now()
	in := startBinary(t, redis, cfg)
	if d := time.Since(start); d > 15*time.Second {
		t.Fatalf("ready after %v with a hot-key set of the wrong type", d)
	}
	fc := redistest.Dial(t, in.addr)
	for i := 0; i < 200; i++ { // one read in 16 is sampled: every key is, many times
		wpGetAll(t, fc, keys)
	}
	in.signal(syscall.SIGTERM)
	in.wait(10 * time.Second)
	if got := string(redis.Do("ZCARD", "fc:hot")); got != ":50\r\n" {
		t.Fatalf("ZCARD of the hot-key set after shutdown: %q; want the 50 keys read", got)
	}
	c := redis.Dial()
	for i, k := range keys {
		switch i % 3 {
		case 0:
			c.Do("SET", k, "rewritten")
		case 1:
			c.Do("DEL", k)
		}
	}
	next := startBinary(t, redis, cfg)
	wpWarmDone(t, next, len(keys), 10*time.Second)
	wpConverge(t, next, redis, keys)
}
