package main

import (
	"bytes"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"featcache/internal/redistest"
	"featcache/internal/resp"
)

// These tests change string and hash keys in every way Redis 7.0 offers, once from another client of the same
// Redis and once through featcache, after warming the key in featcache's memory, and then read the key back in every
// form through featcache and straight from Redis: the replies must be the same bytes. A write by another client may
// take the invalidation's time to show (polled); a write through featcache shows on the next read of any featcache
// connection (read-your-writes). A twin Redis receives every write as well, so that a write's own reply through
// featcache is compared with Redis's.

// owConfig caches every key, misses included, for longer than any test runs: what a read returns after a write
// depends on invalidation alone.
const owConfig = `
shutdown_delay: 0s
policies:
  - {name: all, prefix: "", soft_ttl: 30m, hard_ttl: 1h, jitter: 0, negative_ttl: 1h}
`

// owSeed seeds TestOutsideRandomWrites: a failure is replayed by the same seed.
const owSeed = 1

// owEnv is a Redis, its twin (which receives the same setup and writes, so that a write's reply through featcache
// can be compared with Redis's own), and a featcache in front of the Redis.
type owEnv struct {
	redis, twin   *redistest.Server
	direct, other *redistest.Conn // readers and writers straight on Redis
	twinConn      *redistest.Conn
	twin3         *redistest.Conn // on the twin, after HELLO 3
	fc, fc2       *redistest.Conn // two featcache clients
	fc3, direct3  *redistest.Conn // a featcache client and a Redis client after HELLO 3
	vars          map[string]string
	reads         [][]string // the read forms diff compares: owReads unless a test adds more
	stringLast    bool       // warm leaves a missing key remembered as a string miss, not a hash miss
	t             *testing.T
}

// owStart starts the Redis (DEBUG allowed), its twin and featcache with configuration cfg, and loads the
// scripts and functions the cases call on both servers.
func owStart(t *testing.T, cfg string) *owEnv {
	t.Helper()
	e := &owEnv{redis: redistest.Start(t, "--enable-debug-command", "local"), twin: redistest.Start(t), t: t}
	in := startBinary(t, e.redis, cfg)
	e.direct, e.other, e.twinConn = e.redis.Dial(), e.redis.Dial(), e.twin.Dial()
	e.fc, e.fc2 = redistest.Dial(t, in.addr), redistest.Dial(t, in.addr)
	e.fc3, e.direct3 = redistest.Dial(t, in.addr), e.redis.Dial()
	e.twin3 = e.twin.Dial()
	for _, c := range []*redistest.Conn{e.fc3, e.direct3, e.twin3} {
		c.Do("HELLO", "3")
	}
	// DUMP payloads for RESTORE, made on the same redis-server version.
	e.redis.Do("SET", "ow:dump:str", "restored")
	e.redis.Do("HSET", "ow:dump:hash", "f", "rf", "g", "rg")
	e.reads = owReads
	e.vars = map[string]string{
		"{dumpstr}":  owBulk(t, e.redis.Do("DUMP", "ow:dump:str")),
		"{dumphash}": owBulk(t, e.redis.Do("DUMP", "ow:dump:hash")),
		"{big}":      strings.Repeat("b", 1<<20),
		"{mid}":      strings.Repeat("m", 100<<10),
	}
	e.redis.Do("DEL", "ow:dump:str", "ow:dump:hash")
	for _, c := range []*redistest.Conn{e.direct, e.twinConn} {
		for _, cmd := range [][]string{{"SET", "ow:o1", "one"}, {"SET", "ow:o2", "two"},
			{"FUNCTION", "LOAD", "REPLACE", owFunctions}, {"SCRIPT", "LOAD", owScript}} {
			c.Do(cmd...)
		}
	}
	return e
}

const (
	owFunctions = "#!lua name=owlib\n" +
		"redis.register_function('owset', function(keys, args) return redis.call('SET', keys[1], args[1]) end)\n" +
		"redis.register_function('owhset', function(keys, args) return redis.call('HSET', keys[1], args[1], args[2]) end)"
	owScript = "return redis.call('SET', KEYS[1], ARGV[1])"
)

func owBulk(t *testing.T, frame []byte) string {
	t.Helper()
	body, isNil, ok := resp.BulkPayload(frame)
	if !ok || isNil {
		t.Fatalf("not a bulk string: %q", frame)
	}
	return string(body)
}

// owReads are the read forms compared after each write, for each key a case names.
var owReads = [][]string{
	{"GET", "{k}"}, {"MGET", "ow:o1", "{k}", "ow:o2"}, {"HGET", "{k}", "f"}, {"HMGET", "{k}", "f", "g", "x"},
	{"HGETALL", "{k}"}, {"TTL", "{k}"}, {"PTTL", "{k}"}, {"EXISTS", "{k}"}, {"TYPE", "{k}"}, {"STRLEN", "{k}"},
	{"GETRANGE", "{k}", "0", "-1"}, {"HLEN", "{k}"},
}

// owForwardedReads are more reads featcache forwards, which must not be answered from its memory either;
// TestOutsideWritesOfEveryKind adds them to owReads.
var owForwardedReads = [][]string{
	{"HKEYS", "{k}"}, {"HVALS", "{k}"}, {"HEXISTS", "{k}", "f"}, {"HSTRLEN", "{k}", "f"}, {"SUBSTR", "{k}", "0", "2"},
	{"BITCOUNT", "{k}"}, {"PEXPIRETIME", "{k}"}, {"OBJECT", "ENCODING", "{k}"}, {"GETEX", "{k}"},
	{"EVAL_RO", "return redis.pcall('HGETALL', KEYS[1])", "1", "{k}"}, {"SORT_RO", "{k}", "ALPHA"},
}

// owWrite is one way to change keys {k} and {k2}.
type owWrite struct {
	name      string
	setup     [][]string // straight on Redis and on its twin, before the key is warmed
	write     [][]string // by another client, or through featcache
	pipelined bool       // write is sent in one piece, then its replies read
	only      string     // "direct" or "through" when the case has one way only
}

// expand returns args with {k} and {k2} replaced by k and its second key, and the names of e.vars by their values.
func (e *owEnv) expand(args []string, k string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		a = strings.ReplaceAll(a, "{k2}", k+"\x00two")
		a = strings.ReplaceAll(a, "{k}", k)
		if v, ok := e.vars[a]; ok {
			a = v
		}
		out[i] = a
	}
	return out
}

// diff reads every form of keys through c and straight from Redis (in RESP3 through fc3) and describes the first
// difference, or "".
func (e *owEnv) diff(c *redistest.Conn, keys ...string) string {
	direct := e.direct
	if c == e.fc3 {
		direct = e.direct3
	}
	for _, k := range keys {
		for _, r := range e.reads {
			cmd := e.expand(r, k)
			got, want := c.Do(cmd...), direct.Do(cmd...)
			if !owSame(cmd[0], got, want) {
				return fmt.Sprintf("%q: featcache %.200q; Redis %.200q", cmd, got, want)
			}
		}
	}
	return ""
}

// warm reads keys in the cached forms of their type through featcache (a read that meets another type drops the
// key's entry), twice on one connection and once on the others, so that they are in its memory before a write. A
// missing key is read in every form (misses are remembered). It first waits until featcache has applied the invalidations of every
// write made so far (the setup's), which would otherwise drop what it reads: a counter written after them shows
// through featcache once they are applied, since one connection brings them all, in order.
func (e *owEnv) warm(keys ...string) {
	want := e.other.Do("INCR", "ow:settle")
	want = append([]byte(fmt.Sprintf("$%d\r\n", len(want)-3)), want[1:]...)
	redistest.Eventually(e.t, 10*time.Second, "featcache applying the setup's invalidations", func() bool {
		return bytes.Equal(e.fc.Do("GET", "ow:settle"), want)
	})
	for _, k := range keys {
		reads := owCachedReads(string(e.direct.Do("TYPE", k)), e.stringLast)
		for _, c := range []*redistest.Conn{e.fc, e.fc, e.fc2, e.fc3} {
			for _, r := range reads {
				c.Do(e.expand(r, k)...)
			}
		}
	}
}

// owCachedReads returns the read forms of owReads that featcache answers from memory for a key of type (TYPE's
// reply): GET and MGET for a string, HGET, HMGET and HGETALL for a hash. For a missing key, all five: the miss
// the last of them remembers stays (a hash miss replaces a string miss, and the other way round), the string
// one when stringLast.
func owCachedReads(typ string, stringLast bool) [][]string {
	switch {
	case typ == "+string\r\n":
		return owReads[:2]
	case typ == "+hash\r\n":
		return owReads[2:5]
	case stringLast:
		return slices.Concat(owReads[2:5], owReads[:2])
	}
	return owReads[:5]
}

// owSame compares two replies; a positive TTL or PTTL may have moved on by up to two seconds between them.
func owSame(cmd string, got, want []byte) bool {
	if bytes.Equal(got, want) {
		return true
	}
	if cmd != "TTL" && cmd != "PTTL" || len(got) < 2 || len(want) < 2 || got[0] != ':' || want[0] != ':' {
		return false
	}
	g, err1 := strconv.Atoi(strings.TrimSpace(string(got[1:])))
	w, err2 := strconv.Atoi(strings.TrimSpace(string(want[1:])))
	slack := 2
	if cmd == "PTTL" {
		slack = 2000
	}
	return err1 == nil && err2 == nil && g > 0 && w > 0 && g-w <= slack && w-g <= slack
}

// run applies case c in mode "direct" (another client writes), "through" (a featcache client writes) or
// "through-resp3" (a featcache client writes after HELLO 3) to key k.
func (e *owEnv) run(t *testing.T, c owWrite, mode, k string) {
	t.Helper()
	k2 := k + "\x00two"
	e.direct.Do("DEL", k, k2)
	e.twinConn.Do("DEL", k, k2)
	for _, cmd := range c.setup {
		cmd = e.expand(cmd, k)
		if got, want := e.direct.Do(cmd...), e.twinConn.Do(cmd...); !bytes.Equal(got, want) {
			t.Fatalf("setup %q: Redis %q; twin %q", cmd, got, want)
		}
	}
	e.stringLast = mode != "through"
	e.warm(k, k2)
	writer, twin := e.other, e.twinConn
	switch mode {
	case "through":
		writer = e.fc
	case "through-resp3":
		writer, twin = e.fc3, e.twin3
	}
	var got [][]byte
	if c.pipelined {
		var batch []byte
		for _, cmd := range c.write {
			batch = resp.AppendCommand(batch, e.expand(cmd, k)...)
		}
		if _, err := writer.NetConn().Write(batch); err != nil {
			t.Fatal(err)
		}
		for range c.write {
			frame, err := writer.Read()
			if err != nil {
				t.Fatalf("%s: %v", mode, err)
			}
			got = append(got, frame)
		}
	} else {
		for _, cmd := range c.write {
			got = append(got, writer.Do(e.expand(cmd, k)...))
		}
	}
	for i, cmd := range c.write {
		cmd = e.expand(cmd, k)
		if want := twin.Do(cmd...); !bytes.Equal(got[i], want) {
			t.Errorf("%s %.80q: reply %.200q; Redis answers %.200q", mode, cmd, got[i], want)
		}
	}
	if mode != "direct" {
		for _, conn := range []*redistest.Conn{e.fc, e.fc2, e.fc3} {
			if d := e.diff(conn, k, k2); d != "" {
				t.Errorf("%s, read right after the write's reply: %s", mode, d)
			}
		}
		return
	}
	if last := owConverge(func() string { return e.diff(e.fc, k, k2) }); last != "" {
		t.Errorf("direct, 10s after the write: %s", last)
	} else {
		for _, conn := range []*redistest.Conn{e.fc2, e.fc3} {
			if d := e.diff(conn, k, k2); d != "" {
				t.Errorf("direct, on another connection: %s", d)
			}
		}
	}
}

// owConverge polls diff until it reports no difference or 10 seconds pass (a write by another client shows once
// its invalidation arrives), and returns the last difference.
func owConverge(diff func() string) string {
	deadline := time.Now().Add(10 * time.Second)
	last := diff()
	for last != "" && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
		last = diff()
	}
	return last
}

// owWrites covers the commands that change a string or a hash, its type or its TTL.
var owWrites = []owWrite{
	{name: "set", setup: [][]string{{"SET", "{k}", "v1"}}, write: [][]string{{"SET", "{k}", "v2"}}},
	{name: "set-nx-missing", write: [][]string{{"SET", "{k}", "v2", "NX"}}},
	{name: "set-nx-present", setup: [][]string{{"SET", "{k}", "v1"}}, write: [][]string{{"SET", "{k}", "v2", "NX"}}},
	{name: "set-xx", setup: [][]string{{"SET", "{k}", "v1"}}, write: [][]string{{"SET", "{k}", "v2", "XX"}}},
	{name: "set-xx-missing", write: [][]string{{"SET", "{k}", "v2", "XX"}}},
	{name: "set-get", setup: [][]string{{"SET", "{k}", "v1"}}, write: [][]string{{"SET", "{k}", "v2", "GET"}}},
	{name: "set-get-hash", setup: [][]string{{"HSET", "{k}", "f", "1"}}, write: [][]string{{"SET", "{k}", "v2", "GET"}}},
	{name: "set-keepttl", setup: [][]string{{"SET", "{k}", "v1", "EX", "100"}}, write: [][]string{{"SET", "{k}", "v2", "KEEPTTL"}}},
	{name: "set-ex", setup: [][]string{{"SET", "{k}", "v1"}}, write: [][]string{{"SET", "{k}", "v2", "EX", "100"}}},
	{name: "set-px", setup: [][]string{{"SET", "{k}", "v1"}}, write: [][]string{{"SET", "{k}", "v2", "PX", "100000"}}},
	{name: "set-exat", setup: [][]string{{"SET", "{k}", "v1"}}, write: [][]string{{"SET", "{k}", "v2", "EXAT", "4102444800"}}},
	{name: "set-pxat-past", setup: [][]string{{"SET", "{k}", "v1"}}, write: [][]string{{"SET", "{k}", "v2", "PXAT", "1000"}}},
	{name: "set-empty", setup: [][]string{{"SET", "{k}", "v1"}}, write: [][]string{{"SET", "{k}", ""}}},
	{name: "set-big", setup: [][]string{{"SET", "{k}", "v1"}}, write: [][]string{{"SET", "{k}", "{big}"}}},
	{name: "big-to-small", setup: [][]string{{"SET", "{k}", "{big}"}}, write: [][]string{{"SET", "{k}", "v2"}}},
	{name: "set-mid", setup: [][]string{{"SET", "{k}", "v1"}}, write: [][]string{{"SET", "{k}", "{mid}"}}},
	{name: "setex", setup: [][]string{{"SET", "{k}", "v1"}}, write: [][]string{{"SETEX", "{k}", "100", "v2"}}},
	{name: "psetex", setup: [][]string{{"SET", "{k}", "v1"}}, write: [][]string{{"PSETEX", "{k}", "100000", "v2"}}},
	{name: "setnx", write: [][]string{{"SETNX", "{k}", "v2"}}},
	{name: "mset", setup: [][]string{{"SET", "{k}", "v1"}}, write: [][]string{{"MSET", "{k2}", "w2", "{k}", "v2"}}},
	{name: "msetnx", write: [][]string{{"MSETNX", "{k2}", "w2", "{k}", "v2"}}},
	{name: "getset", setup: [][]string{{"SET", "{k}", "v1"}}, write: [][]string{{"GETSET", "{k}", "v2"}}},
	{name: "getdel", setup: [][]string{{"SET", "{k}", "v1"}}, write: [][]string{{"GETDEL", "{k}"}}},
	{name: "getex-ex", setup: [][]string{{"SET", "{k}", "v1"}}, write: [][]string{{"GETEX", "{k}", "EX", "100"}}},
	{name: "getex-persist", setup: [][]string{{"SET", "{k}", "v1", "EX", "100"}}, write: [][]string{{"GETEX", "{k}", "PERSIST"}}},
	{name: "append", setup: [][]string{{"SET", "{k}", "v1"}}, write: [][]string{{"APPEND", "{k}", "+more"}}},
	{name: "append-missing", write: [][]string{{"APPEND", "{k}", "new"}}},
	{name: "setrange", setup: [][]string{{"SET", "{k}", "v1"}}, write: [][]string{{"SETRANGE", "{k}", "4", "xy"}}},
	{name: "incr", setup: [][]string{{"SET", "{k}", "10"}}, write: [][]string{{"INCR", "{k}"}}},
	{name: "decr", setup: [][]string{{"SET", "{k}", "10"}}, write: [][]string{{"DECR", "{k}"}}},
	{name: "incrby", setup: [][]string{{"SET", "{k}", "10"}}, write: [][]string{{"INCRBY", "{k}", "-25"}}},
	{name: "incrbyfloat", setup: [][]string{{"SET", "{k}", "10"}}, write: [][]string{{"INCRBYFLOAT", "{k}", "0.5"}}},
	{name: "incr-hash", setup: [][]string{{"HSET", "{k}", "f", "1"}}, write: [][]string{{"INCR", "{k}"}}},
	{name: "setbit", setup: [][]string{{"SET", "{k}", "a"}}, write: [][]string{{"SETBIT", "{k}", "6", "1"}}},
	{name: "bitop", setup: [][]string{{"SET", "{k}", "a"}, {"SET", "{k2}", "b"}}, write: [][]string{{"BITOP", "OR", "{k}", "{k}", "{k2}"}}},
	{name: "bitop-dest", setup: [][]string{{"SET", "{k}", "a"}}, write: [][]string{{"BITOP", "NOT", "{k2}", "{k}"}}},
	{name: "bitfield", setup: [][]string{{"SET", "{k}", "a"}}, write: [][]string{{"BITFIELD", "{k}", "SET", "u8", "8", "66", "GET", "u8", "0"}}},
	{name: "del", setup: [][]string{{"SET", "{k}", "v1"}, {"HSET", "{k2}", "f", "1"}}, write: [][]string{{"DEL", "{k2}", "{k}"}}},
	{name: "unlink", setup: [][]string{{"SET", "{k}", "v1"}, {"HSET", "{k2}", "f", "1"}}, write: [][]string{{"UNLINK", "{k}", "{k2}"}}},
	{name: "expire", setup: [][]string{{"SET", "{k}", "v1"}}, write: [][]string{{"EXPIRE", "{k}", "100"}}},
	{name: "expire-nx", setup: [][]string{{"SET", "{k}", "v1"}}, write: [][]string{{"EXPIRE", "{k}", "100", "NX"}}},
	{name: "expire-xx", setup: [][]string{{"SET", "{k}", "v1", "EX", "500"}}, write: [][]string{{"EXPIRE", "{k}", "100", "XX"}}},
	{name: "expire-gt", setup: [][]string{{"SET", "{k}", "v1", "EX", "50"}}, write: [][]string{{"EXPIRE", "{k}", "100", "GT"}}},
	{name: "expire-lt", setup: [][]string{{"SET", "{k}", "v1", "EX", "500"}}, write: [][]string{{"EXPIRE", "{k}", "100", "LT"}}},
	{name: "expire-past", setup: [][]string{{"SET", "{k}", "v1"}}, write: [][]string{{"EXPIRE", "{k}", "-1"}}},
	{name: "pexpire", setup: [][]string{{"HSET", "{k}", "f", "1"}}, write: [][]string{{"PEXPIRE", "{k}", "100000"}}},
	{name: "expireat", setup: [][]string{{"SET", "{k}", "v1"}}, write: [][]string{{"EXPIREAT", "{k}", "4102444800"}}},
	{name: "expireat-past", setup: [][]string{{"HSET", "{k}", "f", "1"}}, write: [][]string{{"EXPIREAT", "{k}", "1"}}},
	{name: "pexpireat-past", setup: [][]string{{"SET", "{k}", "v1"}}, write: [][]string{{"PEXPIREAT", "{k}", "1000"}}},
	{name: "persist", setup: [][]string{{"SET", "{k}", "v1", "EX", "100"}}, write: [][]string{{"PERSIST", "{k}"}}},
	{name: "rename", setup: [][]string{{"SET", "{k}", "v1"}, {"HSET", "{k2}", "f", "1"}}, write: [][]string{{"RENAME", "{k}", "{k2}"}}},
	{name: "rename-onto", setup: [][]string{{"SET", "{k}", "v1"}, {"HSET", "{k2}", "f", "1"}}, write: [][]string{{"RENAME", "{k2}", "{k}"}}},
	{name: "renamenx", setup: [][]string{{"SET", "{k}", "v1"}}, write: [][]string{{"RENAMENX", "{k}", "{k2}"}}},
	{name: "copy", setup: [][]string{{"SET", "{k}", "v1"}}, write: [][]string{{"COPY", "{k}", "{k2}"}}},
	{name: "copy-replace", setup: [][]string{{"SET", "{k}", "v1"}, {"HSET", "{k2}", "f", "1"}}, write: [][]string{{"COPY", "{k}", "{k2}", "REPLACE"}}},
	{name: "move", setup: [][]string{{"SET", "{k}", "v1"}}, write: [][]string{{"MOVE", "{k}", "1"}}},
	{name: "move-back", only: "direct", setup: [][]string{{"SELECT", "1"}, {"SET", "{k}", "in-db1"}, {"SELECT", "0"}},
		write: [][]string{{"SELECT", "1"}, {"MOVE", "{k}", "0"}, {"SELECT", "0"}}},
	{name: "restore", write: [][]string{{"RESTORE", "{k}", "0", "{dumpstr}"}}},
	{name: "restore-replace", setup: [][]string{{"SET", "{k}", "v1"}}, write: [][]string{{"RESTORE", "{k}", "0", "{dumphash}", "REPLACE"}}},
	{name: "restore-busy", setup: [][]string{{"SET", "{k}", "v1"}}, write: [][]string{{"RESTORE", "{k}", "0", "{dumpstr}"}}},
	{name: "sort-store", setup: [][]string{{"SET", "{k}", "v1"}, {"RPUSH", "{k2}", "3", "1", "2"}}, write: [][]string{{"SORT", "{k2}", "STORE", "{k}"}}},
	{name: "hset", setup: [][]string{{"HSET", "{k}", "f", "1", "g", "2"}}, write: [][]string{{"HSET", "{k}", "f", "10", "x", "3"}}},
	{name: "hset-missing", write: [][]string{{"HSET", "{k}", "g", "2"}}},
	{name: "hsetnx", setup: [][]string{{"HSET", "{k}", "g", "2"}}, write: [][]string{{"HSETNX", "{k}", "f", "1"}}},
	{name: "hmset", setup: [][]string{{"HSET", "{k}", "f", "1"}}, write: [][]string{{"HMSET", "{k}", "f", "a", "g", "b"}}},
	{name: "hdel", setup: [][]string{{"HSET", "{k}", "f", "1", "g", "2"}}, write: [][]string{{"HDEL", "{k}", "g"}}},
	{name: "hdel-last", setup: [][]string{{"HSET", "{k}", "f", "1"}}, write: [][]string{{"HDEL", "{k}", "f"}}},
	{name: "hincrby", setup: [][]string{{"HSET", "{k}", "f", "1"}}, write: [][]string{{"HINCRBY", "{k}", "f", "5"}}},
	{name: "hincrbyfloat", setup: [][]string{{"HSET", "{k}", "f", "1"}}, write: [][]string{{"HINCRBYFLOAT", "{k}", "g", "2.5"}}},
	{name: "hset-big", setup: [][]string{{"HSET", "{k}", "f", "1"}}, write: [][]string{{"HSET", "{k}", "g", "{big}"}}},
	{name: "hset-empty", setup: [][]string{{"HSET", "{k}", "f", "1"}}, write: [][]string{{"HSET", "{k}", "f", ""}}},
	{name: "string-to-hash", setup: [][]string{{"SET", "{k}", "v1"}}, write: [][]string{{"DEL", "{k}"}, {"HSET", "{k}", "f", "1", "g", "2"}}},
	{name: "hash-to-list", setup: [][]string{{"HSET", "{k}", "f", "1"}}, write: [][]string{{"DEL", "{k}"}, {"RPUSH", "{k}", "a", "b"}}},
	{name: "list-to-string", setup: [][]string{{"RPUSH", "{k}", "a"}}, write: [][]string{{"SET", "{k}", "v2"}}},
	{name: "hset-on-string", setup: [][]string{{"SET", "{k}", "v1"}}, write: [][]string{{"HSET", "{k}", "f", "1"}}},
	{name: "eval", setup: [][]string{{"SET", "{k}", "v1"}}, write: [][]string{{"EVAL", owScript, "1", "{k}", "v2"}}},
	{name: "eval-undeclared", setup: [][]string{{"HSET", "{k}", "f", "1"}},
		write: [][]string{{"EVAL", "return redis.call('HSET', ARGV[1], 'f', ARGV[2])", "0", "{k}", "2"}}},
	{name: "evalsha", setup: [][]string{{"SET", "{k}", "v1"}}, write: [][]string{{"EVALSHA", owSHA(owScript), "1", "{k}", "v2"}}},
	{name: "fcall", setup: [][]string{{"SET", "{k}", "v1"}}, write: [][]string{{"FCALL", "owset", "1", "{k}", "v2"}}},
	{name: "fcall-hash", setup: [][]string{{"HSET", "{k}", "f", "1"}}, write: [][]string{{"FCALL", "owhset", "1", "{k}", "f", "2"}}},
	{name: "multi", setup: [][]string{{"SET", "{k}", "v1"}, {"HSET", "{k2}", "f", "1"}},
		write: [][]string{{"MULTI"}, {"GET", "{k}"}, {"SET", "{k}", "v2"}, {"GET", "{k}"}, {"HSET", "{k2}", "f", "2"}, {"HGETALL", "{k2}"}, {"EXEC"}}},
	{name: "multi-pipelined", pipelined: true, setup: [][]string{{"SET", "{k}", "v1"}, {"HSET", "{k2}", "f", "1"}},
		write: [][]string{{"MULTI"}, {"GET", "{k}"}, {"SET", "{k}", "v2"}, {"MGET", "{k}", "{k2}"}, {"HSET", "{k2}", "f", "2"}, {"HMGET", "{k2}", "f"}, {"EXEC"}}},
	{name: "pipeline", pipelined: true, setup: [][]string{{"SET", "{k}", "v1"}, {"HSET", "{k2}", "f", "1"}},
		write: [][]string{{"GET", "{k}"}, {"SET", "{k}", "v2"}, {"GET", "{k}"}, {"HGET", "{k2}", "f"}, {"HINCRBY", "{k2}", "f", "1"}, {"HGETALL", "{k2}"}, {"HMGET", "{k2}", "f"}}},
	{name: "sunionstore", setup: [][]string{{"SET", "{k}", "v1"}, {"SADD", "{k2}", "a"}}, write: [][]string{{"SUNIONSTORE", "{k}", "{k2}"}}},
	{name: "zrangestore", setup: [][]string{{"HSET", "{k}", "f", "1"}, {"ZADD", "{k2}", "1", "a"}}, write: [][]string{{"ZRANGESTORE", "{k}", "{k2}", "0", "-1"}}},
	{name: "geosearchstore", setup: [][]string{{"SET", "{k}", "v1"}, {"GEOADD", "{k2}", "13.36", "38.11", "p"}},
		write: [][]string{{"GEOSEARCHSTORE", "{k}", "{k2}", "FROMLONLAT", "13.36", "38.11", "BYRADIUS", "10", "km"}}},
	{name: "pfmerge", setup: [][]string{{"SET", "{k}", "v1"}, {"PFADD", "{k2}", "a"}}, write: [][]string{{"DEL", "{k}"}, {"PFMERGE", "{k}", "{k2}"}}},
	{name: "pfadd", setup: [][]string{{"PFADD", "{k}", "a"}}, write: [][]string{{"PFADD", "{k}", "b", "c"}}},
	{name: "lmove-onto-string", setup: [][]string{{"SET", "{k}", "v1"}, {"RPUSH", "{k2}", "a"}}, write: [][]string{{"LMOVE", "{k2}", "{k}", "LEFT", "LEFT"}}},
	{name: "georadius-store", setup: [][]string{{"SET", "{k}", "v1"}, {"GEOADD", "{k2}", "13.36", "38.11", "p"}},
		write: [][]string{{"GEORADIUS", "{k2}", "13.36", "38.11", "10", "km", "STORE", "{k}"}}},
	{name: "georadiusbymember-storedist", setup: [][]string{{"HSET", "{k}", "f", "1"}, {"GEOADD", "{k2}", "13.36", "38.11", "p"}},
		write: [][]string{{"GEORADIUSBYMEMBER", "{k2}", "p", "10", "km", "STOREDIST", "{k}"}}},
	{name: "sort-by-get-store", setup: [][]string{{"SET", "{k}", "v1"}, {"RPUSH", "{k2}", "b", "a"}},
		write: [][]string{{"SORT", "{k2}", "ALPHA", "GET", "#", "STORE", "{k}"}}},
	{name: "sinterstore", setup: [][]string{{"SET", "{k}", "v1"}, {"SADD", "{k2}", "a"}}, write: [][]string{{"SINTERSTORE", "{k}", "{k2}", "{k2}"}}},
	{name: "zdiffstore", setup: [][]string{{"SET", "{k}", "v1"}, {"ZADD", "{k2}", "1", "a"}}, write: [][]string{{"ZDIFFSTORE", "{k}", "1", "{k2}"}}},
	{name: "blmove-onto-missing", setup: [][]string{{"RPUSH", "{k2}", "a"}}, write: [][]string{{"BLMOVE", "{k2}", "{k}", "LEFT", "LEFT", "0"}}},
	{name: "brpoplpush-onto-string", setup: [][]string{{"SET", "{k}", "v1"}, {"RPUSH", "{k2}", "a"}}, write: [][]string{{"BRPOPLPUSH", "{k2}", "{k}", "0"}}},
	{name: "blpop-last", setup: [][]string{{"RPUSH", "{k}", "a"}}, write: [][]string{{"BLPOP", "{k}", "0"}}},
	{name: "blmpop-last", setup: [][]string{{"RPUSH", "{k}", "a"}, {"SET", "{k2}", "v"}}, write: [][]string{{"BLMPOP", "0", "2", "{k}", "{k2}", "LEFT"}}},
	{name: "getex-exat-past", setup: [][]string{{"SET", "{k}", "v1"}}, write: [][]string{{"GETEX", "{k}", "EXAT", "1"}}},
	{name: "restore-absttl-past", setup: [][]string{{"SET", "{k}", "v1"}}, write: [][]string{{"RESTORE", "{k}", "1000", "{dumpstr}", "REPLACE", "ABSTTL"}}},
	{name: "restore-ttl", write: [][]string{{"RESTORE", "{k}", "100000", "{dumphash}"}}},
	{name: "setrange-grow", setup: [][]string{{"SET", "{k}", "v1"}}, write: [][]string{{"SETRANGE", "{k}", "300000", "x"}}},
	{name: "rename-self", setup: [][]string{{"SET", "{k}", "v1", "EX", "100"}}, write: [][]string{{"RENAME", "{k}", "{k}"}}},
	{name: "hash-fields-odd", setup: [][]string{{"HSET", "{k}", "f", "1"}}, write: [][]string{{"HSET", "{k}", "", "e", "\r\n", "crlf", "\x00", "z", "g", ""}}},
	{name: "watch-exec", setup: [][]string{{"SET", "{k}", "v1"}},
		write: [][]string{{"WATCH", "{k}"}, {"GET", "{k}"}, {"MULTI"}, {"SET", "{k}", "v2"}, {"HSET", "{k2}", "f", "1"}, {"EXEC"}, {"GET", "{k}"}}},
	{name: "eval-error-after-write", setup: [][]string{{"SET", "{k}", "v1"}},
		write: [][]string{{"EVAL", "redis.call('SET', ARGV[1], 'v2'); return redis.error_reply('boom')", "0", "{k}"}}},
	{name: "multi-partial-error", setup: [][]string{{"SET", "{k}", "v1"}, {"HSET", "{k2}", "f", "1"}},
		write: [][]string{{"MULTI"}, {"SET", "{k}", "v2"}, {"INCR", "{k2}"}, {"HDEL", "{k2}", "f"}, {"EXEC"}}},
	{name: "flushdb", setup: [][]string{{"SET", "{k}", "v1"}}, write: [][]string{{"FLUSHDB"}}},
	{name: "flushdb-async", setup: [][]string{{"SET", "{k}", "v1"}}, write: [][]string{{"FLUSHDB", "ASYNC"}}},
	{name: "flushall-sync", setup: [][]string{{"HSET", "{k}", "f", "1"}}, write: [][]string{{"FLUSHALL", "SYNC"}}},
	{name: "flushall-async", setup: [][]string{{"SET", "{k}", "v1"}}, write: [][]string{{"FLUSHALL", "ASYNC"}}},
}

func owSHA(script string) string {
	sum := sha1.Sum([]byte(script))
	return hex.EncodeToString(sum[:])
}

// TestOutsideWritesOfEveryKind: each write of owWrites, by another client of Redis and through featcache, to a key
// featcache holds in memory, is followed by every read form of the key through featcache answering as Redis does.
func TestOutsideWritesOfEveryKind(t *testing.T) {
	e := owStart(t, owConfig)
	e.reads = slices.Concat(owReads, owForwardedReads)
	for _, c := range owWrites {
		for _, mode := range []string{"direct", "through", "through-resp3"} {
			if c.only != "" && c.only != mode {
				continue
			}
			t.Run(c.name+"/"+mode, func(t *testing.T) {
				e.run(t, c, mode, "ow:"+c.name+":"+mode)
			})
		}
	}
}

// TestOutsideKeysExpireWhileCached: keys given an expiry by another client, and through featcache, are warmed in
// featcache's memory and then read through featcache only (nothing touches them on Redis) until they expire: no
// read that starts after a key's expiry time may answer its value, with Redis's active expiry on and off (off,
// Redis deletes an expired key only when it is touched, and announces nothing before). Afterwards every read form
// answers as Redis does.
func TestOutsideKeysExpireWhileCached(t *testing.T) {
	for _, cfg := range []struct{ name, yaml string }{{"long-ttls", owConfig}, {"soft-stale", owSoftConfig}} {
		t.Run(cfg.name, func(t *testing.T) { owExpireWhileCached(t, cfg.yaml) })
	}
}

// owSoftConfig makes every entry soft-stale after 50ms, refreshed in the background while it is served, and
// allows serve_stale: neither may serve a key past its expiry.
const owSoftConfig = `
shutdown_delay: 0s
policies:
  - {name: all, prefix: "", soft_ttl: 50ms, hard_ttl: 1h, jitter: 0, negative_ttl: 1h, on_upstream_error: serve_stale, max_stale: 1h, on_tracking_loss: revalidate}
`

// owExpireWhileCached is TestOutsideKeysExpireWhileCached with featcache configured by cfg.
func owExpireWhileCached(t *testing.T, cfg string) {
	e := owStart(t, cfg)
	for _, active := range []string{"1", "0"} {
		t.Run("active-expire-"+active, func(t *testing.T) {
			if got := string(e.redis.Do("DEBUG", "SET-ACTIVE-EXPIRE", active)); got != "+OK\r\n" {
				t.Fatalf("DEBUG SET-ACTIVE-EXPIRE: %q (redis-server needs enable-debug-command)", got)
			}
			p := "ow:exp" + active + ":"
			// key -> how it is made to expire; the value read back is "v" for strings, field f "v" for hashes.
			writes := []struct {
				key  string
				conn *redistest.Conn
				cmds [][]string
			}{
				{p + "set-px", e.other, [][]string{{"SET", p + "set-px", "v", "PX", "300"}}},
				{p + "set-px-fc", e.fc, [][]string{{"SET", p + "set-px-fc", "v", "PX", "350"}}},
				{p + "pexpire", e.other, [][]string{{"SET", p + "pexpire", "v"}, {"PEXPIRE", p + "pexpire", "400"}}},
				{p + "hash", e.other, [][]string{{"HSET", p + "hash", "f", "v"}, {"PEXPIRE", p + "hash", "450"}}},
				{p + "hash-fc", e.fc, [][]string{{"HSET", p + "hash-fc", "f", "v"}, {"PEXPIRE", p + "hash-fc", "500"}}},
				{p + "getex", e.fc, [][]string{{"SET", p + "getex", "v"}, {"GETEX", p + "getex", "PX", "550"}}},
				{p + "pxat", e.other, [][]string{{"SET", p + "pxat", "v", "PXAT", strconv.FormatInt(time.Now().Add(600*time.Millisecond).UnixMilli(), 10)}}},
			}
			expireAt := map[string]time.Time{}
			var keys []string
			for _, w := range writes {
				keys = append(keys, w.key)
				for _, cmd := range w.cmds {
					w.conn.Do(cmd...)
				}
				ms, err := strconv.ParseInt(strings.TrimSpace(string(e.direct.Do("PEXPIRETIME", w.key)[1:])), 10, 64)
				if err != nil || ms <= 0 {
					t.Fatalf("PEXPIRETIME %s: %v", w.key, err)
				}
				expireAt[w.key] = time.UnixMilli(ms)
			}
			e.warm(keys...)
			// Read every form through featcache until every key has expired, and a little longer.
			var last time.Time
			for _, at := range expireAt {
				if at.After(last) {
					last = at
				}
			}
			reads := map[string][][]string{}
			for _, k := range keys {
				reads[k] = owCachedReads(string(e.direct.Do("TYPE", k)), false)
			}
			for time.Now().Before(last.Add(300 * time.Millisecond)) {
				for _, w := range writes {
					for _, r := range reads[w.key] {
						r = e.expand(r, w.key)
						start := time.Now()
						reply := e.fc.Do(r...)
						// Redis serves a key until its clock passes the expiry's millisecond.
						if bytes.Contains(reply, []byte("$1\r\nv\r\n")) && start.After(expireAt[w.key].Add(time.Millisecond)) {
							t.Errorf("%q answered %q %v after the key expired", r, reply, start.Sub(expireAt[w.key]))
						}
					}
				}
			}
			for _, w := range writes {
				if d := e.diff(e.fc, w.key); d != "" {
					t.Errorf("after expiry: %s", d)
				}
			}
		})
	}
	e.redis.Do("DEBUG", "SET-ACTIVE-EXPIRE", "1")
}

// owGlobConfig has policies whose prefixes and patterns hold glob characters, spaces and CR LF, and no default
// policy: the tracking prefixes featcache derives from them decide which writes it hears of.
const owGlobConfig = `
shutdown_delay: 0s
policies:
  - {name: glob, prefix: "g*?[x]:", hard_ttl: 1h, jitter: 0, negative_ttl: 1h}
  - {name: escaped, pattern: "p\\*:*", hard_ttl: 1h, jitter: 0, negative_ttl: 1h}
  - {name: class, pattern: "h[ab]:*", hard_ttl: 1h, jitter: 0, negative_ttl: 1h}
  - {name: space, prefix: "s p:", hard_ttl: 1h, jitter: 0, negative_ttl: 1h}
  - {name: crlf, prefix: "c\r\n", hard_ttl: 1h, jitter: 0, negative_ttl: 1h}
  - {name: nested, prefix: "g*?[x]:n:", hard_ttl: 1h, jitter: 0, negative_ttl: 1h}
`

// owKeyWrites is the part of owWrites run for each unusual key name.
var owKeyWrites = []string{"set", "hset", "rename-onto", "expire-past", "eval-undeclared"}

// TestOutsideKeyNames: binary keys, the empty key, keys with spaces, CR LF and glob characters, under a default
// policy and under policies whose prefixes and patterns hold such characters, are written and read back as Redis
// does, by another client and through featcache.
func TestOutsideKeyNames(t *testing.T) {
	cases := map[string]owWrite{}
	for _, c := range owWrites {
		cases[c.name] = c
	}
	for _, inst := range []struct {
		name string
		cfg  string
		keys []string
	}{
		{"default-policy", owConfig, []string{"", " ", "a b", "a\r\nb", "\r\n", "\x00\xff\xfe", "*", "?", "[a]", "k*?[x]", "\\*", strings.Repeat("l", 65535), strings.Repeat("m", 65536)}},
		{"glob-policies", owGlobConfig, []string{"g*?[x]:1", "g*?[x]:*", "g*?[x]:n:1", "gab:1", "p*:1", "p*:[", "pa:1", "ha:1", "hc:1", "zq:1", "s p:a b", "c\r\n1", "c\r\n"}},
	} {
		t.Run(inst.name, func(t *testing.T) {
			e := owStart(t, inst.cfg)
			for _, k := range inst.keys {
				for _, name := range owKeyWrites {
					for _, mode := range []string{"direct", "through"} {
						t.Run(fmt.Sprintf("%.20q/%s/%s", k, name, mode), func(t *testing.T) {
							e.run(t, cases[name], mode, k)
						})
					}
				}
			}
		})
	}
}

// TestOutsideMigrate: MIGRATE moves keys between two Redis servers. Out of the Redis featcache is in front of,
// through featcache (the KEYS form, whose keys Redis's key specs cannot name in advance, and the single-key form)
// and by another client; into it, by a client of the other server (Redis runs RESTORE-ASKING on it).
func TestOutsideMigrate(t *testing.T) {
	e := owStart(t, owConfig)
	twinPort := strconv.Itoa(e.twin.Port())
	redisPort := strconv.Itoa(e.redis.Port())
	for _, c := range []struct {
		name string
		conn *redistest.Conn // where MIGRATE is sent
		args []string
	}{
		{"out-keys-through", e.fc, []string{"MIGRATE", "127.0.0.1", twinPort, "", "0", "5000", "KEYS", "ow:mig:1", "ow:mig:2"}},
		{"out-key-through", e.fc, []string{"MIGRATE", "127.0.0.1", twinPort, "ow:mig:1", "0", "5000"}},
		{"out-keys-direct", e.other, []string{"MIGRATE", "127.0.0.1", twinPort, "", "0", "5000", "REPLACE", "KEYS", "ow:mig:1", "ow:mig:2"}},
		{"in-direct", e.twinConn, []string{"MIGRATE", "127.0.0.1", redisPort, "", "0", "5000", "REPLACE", "KEYS", "ow:mig:1", "ow:mig:2"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			src, dst := e.direct, e.twinConn
			if c.conn == e.twinConn {
				src, dst = e.twinConn, e.direct
			}
			for _, conn := range []*redistest.Conn{src, dst} {
				conn.Do("DEL", "ow:mig:1", "ow:mig:2")
			}
			src.Do("SET", "ow:mig:1", "moved")
			src.Do("HSET", "ow:mig:2", "f", "moved")
			e.warm("ow:mig:1", "ow:mig:2")
			if got := string(c.conn.Do(c.args...)); got != "+OK\r\n" {
				t.Fatalf("%q: %q", c.args, got)
			}
			if c.conn == e.fc {
				if d := e.diff(e.fc2, "ow:mig:1", "ow:mig:2"); d != "" {
					t.Errorf("right after the reply: %s", d)
				}
				return
			}
			redistest.Eventually(t, 10*time.Second, "featcache answering as Redis", func() bool {
				return e.diff(e.fc, "ow:mig:1", "ow:mig:2") == ""
			})
		})
	}
}

// TestOutsideSwapDBInScripts: a script or function that runs SWAPDB through featcache is a SWAPDB sent through
// featcache (Redis announces no invalidation for it): the next read of a key cached before it, on any featcache
// connection, answers what database 0 holds after the swap; so does a GET pipelined right after the script.
func TestOutsideSwapDBInScripts(t *testing.T) {
	e := owStart(t, owConfig)
	db1 := e.redis.Dial()
	db1.Do("SELECT", "1")
	e.direct.Do("FUNCTION", "LOAD", "REPLACE", "#!lua name=owswap\nredis.register_function('owswap', function() return redis.call('SWAPDB', 0, 1) end)")
	const swap = "return redis.call('SWAPDB', 0, 1)"
	e.direct.Do("SCRIPT", "LOAD", swap)
	eval := []string{"EVAL", swap, "0"}
	for _, c := range []struct {
		name string
		cmds [][]string // sent one by one through featcache; the last one swaps
	}{
		{"eval", [][]string{eval}},
		{"eval-with-key", [][]string{{"EVAL", swap, "1", "ow:swap:declared"}}},
		{"evalsha", [][]string{{"EVALSHA", owSHA(swap), "0"}}},
		{"fcall", [][]string{{"FCALL", "owswap", "0"}}},
		{"multi", [][]string{{"MULTI"}, eval, {"EXEC"}}},
		{"watch", [][]string{{"WATCH", "ow:swap:watch"}, eval}},
		{"pipeline", nil}, // EVAL and a GET of the key in one write
	} {
		t.Run(c.name, func(t *testing.T) {
			key := "ow:swap:" + c.name
			e.direct.Do("SET", key, "in db 0")
			db1.Do("SET", key, "in db 1")
			e.warm(key)
			for _, cmd := range c.cmds {
				e.fc.Do(cmd...)
			}
			if c.name == "watch" {
				defer e.fc.Do("UNWATCH")
			}
			if c.cmds == nil {
				e.fc.NetConn().Write(slices.Concat(redistest.Encode(eval...), redistest.Encode("GET", key)))
				for _, want := range []string{"+OK\r\n", "$7\r\nin db 1\r\n"} {
					if got, err := e.fc.Read(); err != nil || string(got) != want {
						t.Fatalf("EVAL and GET in one pipeline: %q, %v; want %q", got, err, want)
					}
				}
			}
			for _, conn := range []*redistest.Conn{e.fc, e.fc2} {
				if d := e.diff(conn, key); d != "" {
					t.Errorf("right after the swap's reply: %s", d)
				}
			}
		})
	}
}

// TestOutsidePipelineOfWritesAndReads: one long pipeline of writes and cached reads of a few keys, written at once
// through featcache and straight to the twin Redis, gets the same reply bytes, reply for reply: no read is answered
// from before a write earlier in the pipeline, whichever read batch it arrives in.
func TestOutsidePipelineOfWritesAndReads(t *testing.T) {
	e := owStart(t, owConfig)
	keys := []string{"ow:pl:a", "ow:pl:b", "ow:pl:\r\n", "ow:pl:h"}
	pick := func(i int) string { return keys[(i*7+i/3)%len(keys)] }
	var cmds [][]string
	for i := 0; len(cmds) < 4000; i++ {
		k, k2, v := pick(i), pick(i+1), "v"+strconv.Itoa(i)
		switch i % 17 {
		case 0:
			cmds = append(cmds, []string{"SET", k, v})
		case 1:
			cmds = append(cmds, []string{"HSET", k, "f", v, "g", strconv.Itoa(i)})
		case 2:
			cmds = append(cmds, []string{"DEL", k})
		case 3:
			cmds = append(cmds, []string{"INCR", k})
		case 4:
			cmds = append(cmds, []string{"HINCRBY", k, "g", "3"})
		case 5:
			cmds = append(cmds, []string{"APPEND", k, "+"})
		case 6:
			cmds = append(cmds, []string{"MULTI"}, []string{"SET", k, v}, []string{"GET", k}, []string{"HGETALL", k2}, []string{"EXEC"})
		case 7:
			cmds = append(cmds, []string{"EVAL", "return redis.call('SET', ARGV[1], ARGV[2])", "0", k, v})
		case 8:
			cmds = append(cmds, []string{"RENAME", k, k2})
		case 9:
			cmds = append(cmds, []string{"HDEL", k, "f"})
		case 10:
			cmds = append(cmds, []string{"PEXPIRE", k, "-1"})
		case 11:
			cmds = append(cmds, []string{"MSET", k, v, k2, v})
		}
		for _, r := range [][]string{{"GET", k}, {"MGET", k2, k}, {"HGET", k, "f"}, {"HMGET", k, "g", "f"}, {"HGETALL", k}} {
			cmds = append(cmds, r)
		}
	}
	var batch []byte
	for _, cmd := range cmds {
		batch = resp.AppendCommand(batch, cmd...)
	}
	for pass := 0; pass < 2; pass++ { // the second pass starts from keys cached by the first
		for _, c := range []*redistest.Conn{e.fc, e.twinConn} {
			go c.NetConn().Write(batch)
		}
		for i, cmd := range cmds {
			got, err := e.fc.Read()
			if err != nil {
				t.Fatalf("pass %d, reply %d (%q) through featcache: %v", pass, i, cmd, err)
			}
			want, err := e.twinConn.Read()
			if err != nil {
				t.Fatalf("pass %d, reply %d (%q) from Redis: %v", pass, i, cmd, err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("pass %d, reply %d to %q: featcache %.200q; Redis %.200q", pass, i, cmd, got, want)
			}
		}
	}
}

// TestOutsideCountersUnderReaders: a counter and a hash field are incremented by a client through featcache and
// by another client of Redis, while readers through featcache read them in every cached form, with entries kept
// until invalidated and with entries refreshed in the background every 50ms. No reader is answered a value below
// one it was answered before (monotonic reads), nor below what an increment through featcache answered before the
// read was sent (read-your-writes across connections); once the writers stop, featcache answers the final values
// and keeps answering them (no stale value stuck by a fill or refresh that raced a write).
func TestOutsideCountersUnderReaders(t *testing.T) {
	for _, cfg := range []struct{ name, yaml string }{{"long-ttls", owConfig}, {"soft-stale", owSoftConfig}} {
		t.Run(cfg.name, func(t *testing.T) { owCountersUnderReaders(t, cfg.yaml) })
	}
}

// owCountersUnderReaders is TestOutsideCountersUnderReaders with featcache configured by cfg.
func owCountersUnderReaders(t *testing.T, cfg string) {
	e := owStart(t, cfg)
	const key, hash = "ow:cnt", "ow:cnt:h"
	var acked [2]atomic.Int64 // the highest reply of an increment through featcache: counter, hash field
	deadline := time.Now().Add(1500 * time.Millisecond)
	var wg sync.WaitGroup
	writer := func(c *redistest.Conn, through bool) {
		defer wg.Done()
		for i := 0; time.Now().Before(deadline); i++ {
			cmd := []string{"INCR", key}
			if i%2 == 1 {
				cmd = []string{"HINCRBY", hash, "f", "1"}
			}
			n, _ := strconv.ParseInt(strings.TrimSpace(string(c.Do(cmd...)[1:])), 10, 64)
			if through {
				acked[i%2].Store(n) // one writer through featcache: its replies only grow
			}
		}
	}
	errs := make(chan string, 10)
	reader := func(c *redistest.Conn) {
		defer wg.Done()
		var last [2]int64
		reads := [][]string{{"GET", key}, {"MGET", "ow:o1", key}, {"HGET", hash, "f"}, {"HMGET", hash, "f"}, {"HGETALL", hash}}
		for i := 0; time.Now().Before(deadline); i++ {
			r := reads[i%len(reads)]
			which := 0
			if r[1] == hash {
				which = 1
			}
			floor := acked[which].Load()
			v, _, err := resp.Decode(c.Do(r...))
			if err != nil {
				errs <- err.Error()
				return
			}
			s := v.Str
			if len(v.Elems) > 0 {
				s = v.Elems[len(v.Elems)-1].Str
			}
			n, _ := strconv.ParseInt(s, 10, 64)
			if n < last[which] || n < floor {
				errs <- fmt.Sprintf("%q answered %d after %d, and after an increment through featcache answered %d", r, n, last[which], floor)
				return
			}
			last[which] = n
		}
	}
	wg.Add(5)
	go writer(e.fc, true)
	go writer(e.other, false)
	go reader(e.fc2)
	go reader(redistest.Dial(t, e.fc.NetConn().RemoteAddr().String()))
	go reader(redistest.Dial(t, e.fc.NetConn().RemoteAddr().String()))
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if last := owConverge(func() string { return e.diff(e.fc, key, hash) }); last != "" {
		t.Fatalf("after the writers stopped: %s", last)
	}
	for i := 0; i < 20; i++ { // across several soft TTLs
		if d := e.diff(e.fc2, key, hash); d != "" {
			t.Fatalf("after featcache answered the final values: %s", d)
		}
	}
}

// TestOutsideRandomWrites: a seeded random sequence of the writes of owWrites on three keys, each by another client
// or through featcache, each followed by every read form of the three keys through featcache compared with
// Redis's: state that builds up over many writes (a hash image next to field entries, misses remembered, a type
// changed and changed back, background refreshes of soft-stale entries) is answered as Redis answers it.
func TestOutsideRandomWrites(t *testing.T) {
	e := owStart(t, owSoftConfig)
	keys := []string{"ow:rnd:a", "ow:rnd:b", "ow:rnd:c"}
	rng := rand.New(rand.NewPCG(owSeed, 0))
	var ops [][]string
	for _, c := range owWrites {
		if c.pipelined || c.only != "" || strings.HasPrefix(c.name, "flush") || strings.HasPrefix(c.name, "b") || c.name == "watch-exec" {
			continue
		}
		ops = append(ops, c.setup...)
		ops = append(ops, c.write...)
	}
	for step := 0; step < 300; step++ {
		k := keys[rng.IntN(len(keys))]
		cmd := ops[rng.IntN(len(ops))]
		if cmd[0] == "MULTI" || cmd[0] == "EXEC" || cmd[0] == "SELECT" {
			continue
		}
		args := make([]string, len(cmd))
		for i, a := range cmd {
			a = strings.ReplaceAll(a, "{k2}", keys[(rng.IntN(2)+1+slices.Index(keys, k))%len(keys)])
			a = strings.ReplaceAll(a, "{k}", k)
			if v, ok := e.vars[a]; ok {
				a = v
			}
			args[i] = a
		}
		through := rng.IntN(2) == 0
		e.stringLast = rng.IntN(2) == 0
		e.warm(keys...)
		if through {
			e.fc.Do(args...)
			if d := e.diff(e.fc2, keys...); d != "" {
				t.Fatalf("step %d, %.80q through featcache: %s", step, args, d)
			}
			continue
		}
		e.other.Do(args...)
		if last := owConverge(func() string { return e.diff(e.fc2, keys...) }); last != "" {
			t.Fatalf("step %d, %.80q by another client: %s", step, args, last)
		}
	}
}
