package main

import (
	"bytes"
	le "encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"featcache/feast"
	"featcache/internal/redistest"
	"featcache/internal/resp"
	"featcache/internal/testkit"
)

// These tests use featcache as a Feast deployment does, from outside: materialization writes Feast's rows straight
// to Redis (HSET of a hash per entity, EXPIRE from key_ttl_seconds) while model servers read them through featcache
// with Feast's HMGET per entity and feature view. Keys and fields are built here as Feast 0.3x builds them
// (feast/infra/key_encoding_utils.py serialize_entity_key, version 2; feast/infra/online_stores/redis.py), not with
// featcache's feast package (but for the fields' hash, foField), and every reply is compared with the one Redis sends for the same command.

// foProject is the Feast project featcache is configured for in these tests.
const foProject = "fraud"

// foConfig caches project foProject: view txn_stats (count_1h, sum_1h) and user_profile (age, country) for an
// hour, so that a value served past its invalidation shows.
const foConfig = `
shutdown_delay: 0s
feast:
  project: fraud
  soft_ttl: 1h
  hard_ttl: 1h
  jitter: 0
  feature_views:
    - name: txn_stats
      features: [count_1h, sum_1h]
      soft_ttl: 1h
      hard_ttl: 1h
      jitter: 0
    - name: user_profile
      features: [age, country]
      soft_ttl: 1h
      hard_ttl: 1h
      jitter: 0
`

// foField is the hash field of a feature: Feast's _mmh3("<view>:<feature>"), 4 bytes little endian. It is the one
// piece built with featcache's feast package: feast.FieldID, whose MurmurHash3 is checked against published values
// (feast.TestMurmur3).
func foField(view, feature string) string { return string(feast.FieldID(view, feature)) }

// foTS is the event-time field of a view.
func foTS(view string) string { return "_ts:" + view }

// foJoin is one join key and its value: exactly one of i64, str, raw is used, by kind.
type foJoin struct {
	name string
	kind byte // 'i' int64, 's' string, 'b' bytes
	i64  int64
	str  string
}

// foKey is Feast's Redis key: serialize_entity_key (version 2: join keys sorted by name, each as ValueType STRING
// and its UTF-8 bytes, then each value as its ValueType, its length and its bytes, all lengths and types uint32
// little endian) followed by the project name.
func foKey(project string, joins ...foJoin) string {
	sorted := append([]foJoin(nil), joins...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].name < sorted[j].name })
	var b []byte
	for _, j := range sorted {
		b = le.LittleEndian.AppendUint32(b, 2) // ValueType.STRING
		b = append(b, j.name...)
	}
	for _, j := range sorted {
		var val []byte
		var typ uint32
		switch j.kind {
		case 'i':
			val, typ = le.LittleEndian.AppendUint64(nil, uint64(j.i64)), 4 // INT64
		case 's':
			val, typ = []byte(j.str), 2 // STRING
		case 'b':
			val, typ = []byte(j.str), 1 // BYTES
		}
		b = le.LittleEndian.AppendUint32(b, typ)
		b = le.LittleEndian.AppendUint32(b, uint32(len(val)))
		b = append(b, val...)
	}
	return string(b) + project
}

// foUser is the entity key user_id=<id> (int64) of project.
func foUser(project string, id int64) string {
	return foKey(project, foJoin{name: "user_id", kind: 'i', i64: id})
}

// foInt64 is a serialized ValueProto holding int64_val v (field 4, varint).
func foInt64(v int64) string { return string(append([]byte{0x20}, foVarint(uint64(v))...)) }

// foString is a serialized ValueProto holding string_val s (field 3).
func foString(s string) string {
	return string(append(append([]byte{0x1a}, foVarint(uint64(len(s)))...), s...))
}

// foTimestamp is a serialized google.protobuf.Timestamp of sec seconds (field 1, varint), as Feast writes _ts.
func foTimestamp(sec int64) string { return string(append([]byte{0x08}, foVarint(uint64(sec))...)) }

func foVarint(v uint64) []byte { return le.AppendUvarint(nil, v) }

// foRow is the HSET arguments of one materialized row of view: every feature set to values[i] and _ts to ts.
func foRow(key, view string, features []string, values []string, ts int64) []string {
	args := []string{"HSET", key, foTS(view), foTimestamp(ts)}
	for i, f := range features {
		args = append(args, foField(view, f), values[i])
	}
	return args
}

// foRead is Feast's online read of one entity and view: HMGET of the features' fields and the view's _ts field.
func foRead(key, view string, features ...string) []string {
	args := []string{"HMGET", key}
	for _, f := range features {
		args = append(args, foField(view, f))
	}
	return append(args, foTS(view))
}

// foPair is a Redis and a featcache in front of it, with a connection to each.
type foPair struct {
	t     *testing.T
	redis *redistest.Server
	fc    *instance
	r, f  *redistest.Conn
}

func newFoPair(t *testing.T, cfg string) *foPair {
	redis := redistest.Start(t)
	fc := startBinary(t, redis, cfg)
	return &foPair{t: t, redis: redis, fc: fc, r: redis.Dial(), f: redistest.Dial(t, fc.addr)}
}

// same sends args straight to Redis and through featcache and fails the test unless the replies are the same
// bytes; it returns the reply.
func (p *foPair) same(args ...string) []byte {
	p.t.Helper()
	want := p.r.Do(args...)
	got := p.f.Do(args...)
	if !bytes.Equal(got, want) {
		p.t.Errorf("%.80q: featcache %q; redis %q", args, got, want)
	}
	return got
}

// twice sends args through featcache twice (a fill, then an answer from memory) and compares both with Redis.
func (p *foPair) twice(args ...string) {
	p.t.Helper()
	p.same(args...)
	p.same(args...)
}

// TestOutsideFeastReadsAsRedis: Feast's reads (HMGET of a view's features and _ts, HGET, HGETALL, and the
// edge cases a client may send) answer the bytes Redis does, from a fill and then from memory, for entity keys of
// every value type, several join keys, and keys longer than featcache keeps.
func TestOutsideFeastReadsAsRedis(t *testing.T) {
	p := newFoPair(t, foConfig)
	txn := []string{"count_1h", "sum_1h"}
	prof := []string{"age", "country"}
	keys := map[string]string{
		"int64":           foUser(foProject, 1001),
		"negative int64":  foUser(foProject, -7),
		"string":          foKey(foProject, foJoin{name: "merchant", kind: 's', str: "ACME \r\n\x00 é"}),
		"bytes":           foKey(foProject, foJoin{name: "device", kind: 'b', str: "\x00\xff\r\n*1\r\n"}),
		"two join keys":   foKey(foProject, foJoin{name: "user_id", kind: 'i', i64: 5}, foJoin{name: "merchant", kind: 's', str: "m5"}),
		"long (10 KB)":    foKey(foProject, foJoin{name: "doc", kind: 's', str: strings.Repeat("x", 10<<10)}),
		"too long (70KB)": foKey(foProject, foJoin{name: "doc", kind: 's', str: strings.Repeat("y", 70<<10)}),
		// Keys that end with the project but are no entity key Feast could write: lengths past the end, none.
		"just the project":    foProject,
		"length past the end": "\x02\x00\x00\x00user_id\x04\x00\x00\x00\xff\xff\xff\xff" + foProject,
		"truncated value":     "\x02\x00\x00\x00user_id\x04\x00\x00\x00\x08\x00\x00\x00\x01\x02" + foProject,
	}
	for name, key := range keys {
		t.Run(name, func(t *testing.T) {
			p := &foPair{t: t, redis: p.redis, fc: p.fc, r: p.r, f: p.f}
			p.twice(foRead(key, "txn_stats", txn...)...) // no row yet
			p.twice("HGETALL", key)
			p.r.Do(foRow(key, "txn_stats", txn, []string{foInt64(3), foInt64(120)}, 1700000000)...)
			p.r.Do(foRow(key, "user_profile", prof, []string{foInt64(41), foString("NL")}, 1700000001)...)
			p.twice(foRead(key, "txn_stats", txn...)...)
			p.twice(foRead(key, "user_profile", prof...)...)
			p.twice(foRead(key, "user_profile", "age")...)
			p.twice("HGET", key, foField("txn_stats", "sum_1h"))
			p.twice("HGET", key, foTS("user_profile"))
			p.twice("HGETALL", key)
			p.twice(foRead(key, "txn_stats", txn...)...)
			// A feature the configuration does not name, a view it does not name, a field repeated, a field of
			// another view in the same HMGET.
			p.twice(foRead(key, "txn_stats", "count_24h")...)
			p.twice(foRead(key, "other_view", "x")...)
			p.twice("HMGET", key, foField("txn_stats", "count_1h"), foField("txn_stats", "count_1h"), foTS("txn_stats"))
			p.twice("HMGET", key, foField("txn_stats", "count_1h"), foField("user_profile", "age"), foTS("txn_stats"), foTS("user_profile"))
			p.twice("HMGET", key, "", "\x00", "_ts:", "_ts:txn_stats\x00")
			p.same("HMGET", key)
			p.same("HGET", key)
			p.same("HGETALL", key, "extra")
			if got := p.f.Do("CACHE", "EXPLAIN", key, "txn_stats:count_1h"); !bytes.HasPrefix(got, []byte("*")) {
				t.Errorf("CACHE EXPLAIN: %.200q", got)
			}
		})
	}
}

// TestOutsideFeastMaterializationSeenThroughFeatcache: a row materialized straight to Redis (Feast's HSET of
// the row) is read through featcache, by HMGET and HGETALL, once Redis acknowledged it, within the documented
// invalidation latency (1 s allowed here); then foCheckRowsWhole: a row rewritten continuously in one HSET is
// never read half old, half new, nor long after it was overwritten.
func TestOutsideFeastMaterializationSeenThroughFeatcache(t *testing.T) {
	p := newFoPair(t, foConfig)
	txn := []string{"count_1h", "sum_1h"}
	key := foUser(foProject, 42)
	p.r.Do(foRow(key, "txn_stats", txn, []string{foInt64(1), foInt64(1)}, 1)...)
	p.twice(foRead(key, "txn_stats", txn...)...)
	p.twice("HGETALL", key)

	// One acknowledged HSET straight to Redis, then reads through featcache.
	for i := int64(2); i < 20; i++ {
		p.r.Do(foRow(key, "txn_stats", txn, []string{foInt64(i), foInt64(i)}, i)...)
		want := p.r.Do(foRead(key, "txn_stats", txn...)...)
		redistest.Eventually(t, time.Second, fmt.Sprintf("materialization %d seen through featcache", i), func() bool {
			return bytes.Equal(p.f.Do(foRead(key, "txn_stats", txn...)...), want)
		})
		wantAll := p.r.Do("HGETALL", key)
		redistest.Eventually(t, time.Second, "HGETALL sees it too", func() bool {
			return bytes.Equal(p.f.Do("HGETALL", key), wantAll)
		})
	}

	foCheckRowsWhole(t, p, key, 3*time.Second)
}

// foCheckRowsWhole runs writers that rewrite key's row (every feature of both views and both _ts fields to one
// number) in one HSET, taking turns, one straight to Redis and one through featcache, while readers read the row
// through featcache with Feast's HMGET of each view, HMGETs of some fields, of both views, and HGETALL, one at a
// time and all in one pipeline, for d. It fails the test if a reply holds two numbers (a row Redis never held) or
// a number that had been overwritten more than foStaleBound before the read was sent (the invalidation latency,
// with room for a busy machine). It logs the largest lag seen: how long before a read the value it answered had
// been overwritten.
func foCheckRowsWhole(t *testing.T, p *foPair, key string, d time.Duration) {
	t.Helper()
	txn := []string{"count_1h", "sum_1h"}
	prof := []string{"age", "country"}
	row := func(i int64) []string {
		args := foRow(key, "txn_stats", txn, []string{foInt64(i), foInt64(i)}, i)
		return append(args, foRow(key, "user_profile", prof, []string{foInt64(i), foInt64(i)}, i)[2:]...)
	}
	reads := [][]string{
		foRead(key, "txn_stats", txn...),
		foRead(key, "user_profile", prof...),
		foRead(key, "txn_stats", "sum_1h"),
		{"HMGET", key, foField("txn_stats", "count_1h"), foField("user_profile", "age")},
		append(foRead(key, "txn_stats", txn...), foRead(key, "user_profile", prof...)[2:]...),
		{"HGETALL", key},
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	var writes, checked atomic.Int64
	p.r.Do(row(0)...)
	var seq atomic.Int64
	var writeMu sync.Mutex
	var ackMu sync.Mutex
	acked := []time.Time{time.Now()} // acked[n]: when the write of number n was acknowledged
	ackedAt := func(n int64) (time.Time, bool) {
		ackMu.Lock()
		defer ackMu.Unlock()
		if n < 0 || n >= int64(len(acked)) {
			return time.Time{}, false
		}
		return acked[n], true
	}
	var maxLag atomic.Int64
	for _, addr := range []string{p.redis.Addr(), p.fc.addr} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w, err := redistest.TryDial(t, addr)
			if err != nil {
				return
			}
			for !stop.Load() {
				// Numbers only grow in Redis: the writers take turns, each writing the next number.
				writeMu.Lock()
				err := w.Send(row(seq.Add(1))...)
				if err == nil {
					_, err = w.Read()
				}
				if err == nil {
					ackMu.Lock()
					acked = append(acked, time.Now())
					ackMu.Unlock()
				}
				writeMu.Unlock()
				if err != nil {
					return
				}
				writes.Add(1)
			}
		}()
	}
	errs := make(chan error, 8)
	// check checks one reply to args, a read sent at sent.
	check := func(args []string, frame []byte, sent time.Time) error {
		v, _, err := resp.Decode(frame)
		if err != nil || v.Type != resp.TypeArray {
			return fmt.Errorf("%q: %q", args[0], frame)
		}
		seen := map[int64]bool{}
		for i, e := range v.Elems {
			if args[0] == "HGETALL" && i%2 == 0 {
				continue
			}
			seen[foDecodeNumber(e.Str)] = true
		}
		if len(seen) != 1 {
			return fmt.Errorf("%.70q answered a row Redis never held: %q", args, frame)
		}
		for n := range seen {
			if over, ok := ackedAt(n + 1); ok && over.Before(sent) {
				lag := sent.Sub(over)
				if lag > time.Duration(maxLag.Load()) {
					maxLag.Store(int64(lag))
				}
				if lag > foStaleBound {
					return fmt.Errorf("%.70q answered %d, overwritten %v before the read was sent", args, n, lag)
				}
			}
		}
		checked.Add(1)
		return nil
	}
	// Three readers send one read at a time, a fourth pipelines all the shapes in one batch.
	for r := 0; r < 4; r++ {
		wg.Add(1)
		go func(r int) {
			defer wg.Done()
			c, err := redistest.TryDial(t, p.fc.addr)
			if err != nil {
				errs <- err
				return
			}
			var batch []byte
			for _, args := range reads {
				batch = append(batch, redistest.Encode(args...)...)
			}
			for n := r; !stop.Load(); n++ {
				sent := time.Now()
				batchReads := [][]string{reads[n%len(reads)]}
				if r == 3 {
					batchReads = reads
					_, err = c.NetConn().Write(batch)
				} else {
					err = c.Send(batchReads[0]...)
				}
				if err != nil {
					errs <- err
					return
				}
				for _, args := range batchReads {
					frame, err := c.Read()
					if err == nil {
						err = check(args, frame, sent)
					}
					if err != nil {
						errs <- err
						return
					}
				}
			}
		}(r)
	}
	select {
	case err := <-errs:
		t.Error(err)
	case <-time.After(d):
	}
	stop.Store(true)
	wg.Wait()
	if writes.Load() < 10 || checked.Load() < 100 {
		t.Errorf("only %d writes and %d reads ran", writes.Load(), checked.Load())
	}
	t.Logf("%d writes, %d reads checked, largest lag %v", writes.Load(), checked.Load(), time.Duration(maxLag.Load()))
}

// TestOutsideFeastRowsWholeWithRefreshes: the check of foCheckRowsWhole with soft_ttl 1ms, so that background
// refreshes of the row's fields run all the time next to the reads and the writes.
func TestOutsideFeastRowsWholeWithRefreshes(t *testing.T) {
	p := newFoPair(t, strings.ReplaceAll(foConfig, "soft_ttl: 1h", "soft_ttl: 1ms"))
	key := foUser(foProject, 77)
	foCheckRowsWhole(t, p, key, 3*time.Second)
}

// foStaleBound is how long after a write was acknowledged a read through featcache may still answer the value
// before it: docs/freshness.md gives p99 3.5 ms for the invalidation latency; a busy test machine gets more room.
const foStaleBound = 250 * time.Millisecond

// foDecodeNumber reads the number in a ValueProto int64_val or a Timestamp (both a one-byte tag and a varint).
func foDecodeNumber(b string) int64 {
	if len(b) < 2 {
		return -1
	}
	v, n := le.Uvarint([]byte(b[1:]))
	if n <= 0 {
		return -1
	}
	return int64(v)
}

// foRedisPy runs Feast's online_read (a redis-py pipeline, transaction=False, of one HMGET per entity) against
// addr and prints the repr of what execute() returns.
const foRedisPy = `
import sys, redis
addr, keys_hex, fields_hex = sys.argv[1], sys.argv[2], sys.argv[3]
host, port = addr.rsplit(":", 1)
client = redis.Redis(host=host, port=int(port))
keys = [bytes.fromhex(k) for k in keys_hex.split(",")]
fields = [bytes.fromhex(f) for f in fields_hex.split(",")]
out = []
for _ in range(2):
    with client.pipeline(transaction=False) as pipe:
        for k in keys:
            pipe.hmget(k, fields)
        out.append(pipe.execute())
print(repr(out))
`

// TestOutsideFeastRedisPyOnlineRead: redis-py running Feast's online_read pipeline gets the same result from
// featcache as from Redis, for entities with and without rows, twice (the second time from memory).
func TestOutsideFeastRedisPyOnlineRead(t *testing.T) {
	p := newFoPair(t, foConfig)
	txn := []string{"count_1h", "sum_1h"}
	var keysHex []string
	for id := int64(0); id < 50; id++ {
		key := foUser(foProject, id)
		keysHex = append(keysHex, fmt.Sprintf("%x", key))
		if id%3 != 0 {
			p.r.Do(foRow(key, "txn_stats", txn, []string{foInt64(id), foInt64(id * 10)}, 1700000000+id)...)
		}
	}
	fieldsHex := []string{}
	for _, f := range foRead("", "txn_stats", txn...)[2:] {
		fieldsHex = append(fieldsHex, fmt.Sprintf("%x", f))
	}
	script := testkit.WriteFile(t, t.TempDir(), "online_read.py", foRedisPy)
	run := func(addr string) string {
		out, err := exec.Command("/usr/bin/python3", script, addr, strings.Join(keysHex, ","), strings.Join(fieldsHex, ",")).CombinedOutput()
		if err != nil {
			t.Fatalf("python3 against %s: %v\n%s", addr, err, out)
		}
		return string(out)
	}
	want := run(p.redis.Addr())
	got := run(p.fc.addr)
	if got != want {
		t.Errorf("online_read through featcache:\n%s\nstraight from Redis:\n%s", got, want)
	}
	if !strings.Contains(want, "\\x08") {
		t.Fatalf("the read found no rows: %s", want)
	}
}

// TestOutsideFeastOtherClientsChangeRows: what other clients of the Redis do to Feast's rows (a view removed with
// HDEL, rows deleted, renamed, copied, restored, moved, changed by a script, a transaction or HINCRBY, the database
// flushed) is read through featcache as from Redis, once Redis acknowledged it (1 s allowed for the invalidation).
func TestOutsideFeastOtherClientsChangeRows(t *testing.T) {
	p := newFoPair(t, foConfig)
	txn := []string{"count_1h", "sum_1h"}
	prof := []string{"age", "country"}
	// agree polls until featcache answers every read of key as Redis does.
	agree := func(what string, keys ...string) {
		t.Helper()
		for _, key := range keys {
			for _, args := range [][]string{foRead(key, "txn_stats", txn...), foRead(key, "user_profile", prof...), {"HGETALL", key}, {"HGET", key, foTS("txn_stats")}} {
				want := p.r.Do(args...)
				redistest.Eventually(t, time.Second, fmt.Sprintf("%s: %.60q as Redis answers %q", what, args, want), func() bool {
					return bytes.Equal(p.f.Do(args...), want)
				})
			}
		}
	}
	n := int64(0)
	fill := func(key string) {
		n++
		p.r.Do(foRow(key, "txn_stats", txn, []string{foInt64(n), foInt64(n)}, n)...)
		p.r.Do(foRow(key, "user_profile", prof, []string{foInt64(n), foString("NL")}, n)...)
		agree("materialized", key)
		p.twice(foRead(key, "txn_stats", txn...)...)
		p.twice(foRead(key, "user_profile", prof...)...)
		p.twice("HGETALL", key)
	}
	a, b := foUser(foProject, 1), foUser(foProject, 2)
	steps := []struct {
		name string
		do   func()
	}{
		{"HDEL of a view's fields", func() {
			p.r.Do("HDEL", a, foField("user_profile", "age"), foField("user_profile", "country"), foTS("user_profile"))
		}},
		{"HDEL of every field", func() {
			p.r.Do("HDEL", a, foField("txn_stats", "count_1h"), foField("txn_stats", "sum_1h"), foTS("txn_stats"),
				foField("user_profile", "age"), foField("user_profile", "country"), foTS("user_profile"))
		}},
		{"DEL", func() { p.r.Do("DEL", a, b) }},
		{"UNLINK", func() { p.r.Do("UNLINK", a) }},
		{"RENAME onto a cached row", func() { p.r.Do("HSET", "tmp", foTS("txn_stats"), foTimestamp(9)); p.r.Do("RENAME", "tmp", a) }},
		{"RENAME of a cached row", func() { p.r.Do("RENAME", a, b) }},
		{"COPY REPLACE", func() { p.r.Do("COPY", b, a, "REPLACE") }},
		{"RESTORE REPLACE", func() {
			dump := p.r.Do("DUMP", b)
			body, _, _ := resp.BulkPayload(dump)
			p.r.Do("RESTORE", a, "0", string(body), "REPLACE")
		}},
		{"MOVE to db 1 and back", func() { p.r.Do("MOVE", a, "1"); p.r.Do("SELECT", "1") }},
		{"EVAL HSET", func() {
			p.r.Do("EVAL", "redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])", "1", a, foField("txn_stats", "count_1h"), foInt64(777))
		}},
		{"EVAL HSET of an undeclared key", func() {
			p.r.Do("EVAL", "redis.call('HSET', ARGV[3], ARGV[1], ARGV[2])", "0", foField("txn_stats", "count_1h"), foInt64(778), a)
		}},
		{"MULTI HSET EXPIRE EXEC", func() {
			c := p.redis.Dial()
			c.Do("MULTI")
			c.Do(foRow(a, "txn_stats", txn, []string{foInt64(500), foInt64(500)}, 500)...)
			c.Do("EXPIRE", a, "100")
			c.Do("EXEC")
		}},
		{"HINCRBY", func() { p.r.Do("HSET", a, "ctr", "1"); p.r.Do("HINCRBY", a, foTS("txn_stats"), "5") }},
		{"HSETNX", func() { p.r.Do("HSETNX", a, foField("user_profile", "age"), foInt64(3)) }},
		{"SORT STORE over a row", func() { p.r.Do("RPUSH", "l", "3", "1"); p.r.Do("SORT", "l", "STORE", a) }},
		{"FLUSHDB", func() { p.r.Do("FLUSHDB") }},
		{"SWAPDB", func() {
			c := p.redis.Dial()
			c.Do("SELECT", "1")
			c.Do(foRow(a, "txn_stats", txn, []string{foInt64(900), foInt64(900)}, 900)...)
			p.r.Do("SWAPDB", "0", "1")
		}},
	}
	for _, s := range steps {
		r := p.r
		fill(a)
		fill(b)
		s.do()
		if s.name == "MOVE to db 1 and back" {
			// the row is in db 1 now: read as Redis does, then bring it back
			p.r = p.redis.Dial()
			agree(s.name, a)
			r.Do("MOVE", a, "0")
			r.Do("SELECT", "0")
		}
		if s.name == "SORT STORE over a row" {
			for _, args := range [][]string{{"HGETALL", a}, {"HMGET", a, foTS("txn_stats")}, {"LRANGE", a, "0", "-1"}} {
				want := p.r.Do(args...)
				redistest.Eventually(t, time.Second, fmt.Sprintf("%s: %.60q as Redis answers %q", s.name, args, want), func() bool {
					return bytes.Equal(p.f.Do(args...), want)
				})
			}
			p.r.Do("DEL", a)
			continue
		}
		agree(s.name, a, b)
		p.r = r
	}
}

// TestOutsideFeastKeyTTL: a row written with Feast's key_ttl_seconds (HSET then EXPIRE, straight to Redis) and
// read through featcache is never served after Redis's expiry of the key, whether the expiry is the one the row
// was read with, shortened, or set after the row was cached; PERSIST keeps it.
func TestOutsideFeastKeyTTL(t *testing.T) {
	p := newFoPair(t, foConfig)
	txn := []string{"count_1h", "sum_1h"}
	nilRead := "*3\r\n$-1\r\n$-1\r\n$-1\r\n"
	// expectGone reads key through featcache until its expiry has passed by Redis's clock and then once more,
	// and fails if that read still answers the row.
	expectGone := func(what, key string, expiresAt time.Time) {
		t.Helper()
		for time.Now().Before(expiresAt) {
			p.f.Do(foRead(key, "txn_stats", txn...)...)
			p.f.Do("HGETALL", key)
			time.Sleep(20 * time.Millisecond) // reading at a steady pace, as a model server does
		}
		if got := p.f.Do(foRead(key, "txn_stats", txn...)...); string(got) != nilRead {
			t.Errorf("%s: HMGET after the key's expiry: %q", what, got)
		}
		if got := p.f.Do("HGETALL", key); string(got) != "*0\r\n" {
			t.Errorf("%s: HGETALL after the key's expiry: %q", what, got)
		}
	}

	// writeRow materializes entity id's txn_stats straight to Redis and returns its key.
	writeRow := func(id int64) string {
		key := foUser(foProject, id)
		p.r.Do(foRow(key, "txn_stats", txn, []string{foInt64(id), foInt64(id)}, id)...)
		return key
	}
	k1 := writeRow(1)
	p.r.Do("PEXPIRE", k1, "400")
	expectGone("PEXPIRE 400 at write", k1, time.Now().Add(400*time.Millisecond))

	k2 := writeRow(2)
	p.r.Do("EXPIRE", k2, "100")
	p.twice(foRead(k2, "txn_stats", txn...)...)
	p.r.Do("PEXPIRE", k2, "300")
	expectGone("expiry shortened after the read", k2, time.Now().Add(300*time.Millisecond))

	k3 := writeRow(3)
	p.twice(foRead(k3, "txn_stats", txn...)...)
	p.twice("HGETALL", k3)
	p.r.Do("PEXPIRE", k3, "300")
	expectGone("expiry set after the read", k3, time.Now().Add(300*time.Millisecond))

	k4 := writeRow(4)
	p.r.Do("PEXPIRE", k4, "300")
	p.twice(foRead(k4, "txn_stats", txn...)...)
	p.r.Do("PERSIST", k4)
	want := p.r.Do(foRead(k4, "txn_stats", txn...)...)
	time.Sleep(400 * time.Millisecond) // past the expiry PERSIST removed
	if got := p.f.Do(foRead(k4, "txn_stats", txn...)...); !bytes.Equal(got, want) {
		t.Errorf("after PERSIST: %q; want %q", got, want)
	}
	p.same("PTTL", k4)
}

// TestOutsideFeastViewTTLs: without tracking (TTL-only freshness), each feature view's fields follow the view's
// own hard_ttl: a row changed straight in Redis is read through featcache once the short view's hard_ttl has
// passed, while the long view's fields may still be the cached ones; and a negative entry (negative_ttl) ends
// with materialization once tracking is on.
func TestOutsideFeastViewTTLs(t *testing.T) {
	p := newFoPair(t, `
shutdown_delay: 0s
upstream: {tracking: false}
feast:
  project: fraud
  hard_ttl: 1h
  jitter: 0
  feature_views:
    - {name: fast, features: [a], hard_ttl: 300ms, jitter: 0}
    - {name: slow, features: [b], hard_ttl: 1h, jitter: 0}
`)
	key := foUser(foProject, 1)
	p.r.Do(foRow(key, "fast", []string{"a"}, []string{foInt64(1)}, 1)...)
	p.r.Do(foRow(key, "slow", []string{"b"}, []string{foInt64(1)}, 1)...)
	p.twice(foRead(key, "fast", "a")...)
	p.twice(foRead(key, "slow", "b")...)
	filled := time.Now() // the fills began before this
	p.r.Do(foRow(key, "fast", []string{"a"}, []string{foInt64(2)}, 2)...)
	p.r.Do(foRow(key, "slow", []string{"b"}, []string{foInt64(2)}, 2)...)
	if got := p.f.Do(foRead(key, "slow", "b")...); !bytes.Contains(got, []byte(foInt64(1))) {
		t.Errorf("slow view read again within its hard_ttl (tracking off): %q", got)
	}
	for time.Since(filled) < 300*time.Millisecond {
		time.Sleep(10 * time.Millisecond)
	}
	p.same(foRead(key, "fast", "a")...)
	if got := p.f.Do(foRead(key, "slow", "b")...); !bytes.Contains(got, []byte(foInt64(1))) {
		t.Errorf("slow view read again within its hard_ttl (tracking off): %q", got)
	}
}

// TestOutsideFeastNegativeEntryEndsWithMaterialization: an entity without a row is remembered (negative_ttl)
// until the row is materialized straight to Redis, then read as Redis has it.
func TestOutsideFeastNegativeEntryEndsWithMaterialization(t *testing.T) {
	p := newFoPair(t, `
shutdown_delay: 0s
feast:
  project: fraud
  hard_ttl: 1h
  negative_ttl: 1h
  feature_views:
    - {name: txn_stats, features: [count_1h], hard_ttl: 1h, negative_ttl: 1h}
`)
	key := foUser(foProject, 9)
	p.twice(foRead(key, "txn_stats", "count_1h")...)
	p.twice("HGETALL", key)
	p.twice("HGET", key, foTS("txn_stats"))
	p.r.Do(foRow(key, "txn_stats", []string{"count_1h"}, []string{foInt64(5)}, 5)...)
	for _, args := range [][]string{foRead(key, "txn_stats", "count_1h"), {"HGETALL", key}, {"HGET", key, foTS("txn_stats")}} {
		want := p.r.Do(args...)
		redistest.Eventually(t, time.Second, fmt.Sprintf("%q after materialization", args), func() bool {
			return bytes.Equal(p.f.Do(args...), want)
		})
	}
}

// TestOutsideFeastProjectsTypesAndSizes: two more projects share the Redis (one whose name ends with the
// configured one's, so its keys match the feast policy too), a key of the project holds another type, rows are
// wide (hashtable encoding) or larger than an entry: every read answers as Redis does, and after a change straight
// to Redis as Redis then does.
func TestOutsideFeastProjectsTypesAndSizes(t *testing.T) {
	p := newFoPair(t, foConfig)
	txn := []string{"count_1h", "sum_1h"}
	// agree polls until featcache answers args as Redis does.
	agree := func(args ...string) {
		t.Helper()
		want := p.r.Do(args...)
		redistest.Eventually(t, time.Second, fmt.Sprintf("%.60q as Redis answers %.60q", args, want), func() bool {
			return bytes.Equal(p.f.Do(args...), want)
		})
		p.same(args...)
	}
	for _, project := range []string{foProject, "ads", "antifraud"} {
		key := foUser(project, 7)
		for v := int64(1); v <= 3; v++ {
			p.r.Do(foRow(key, "txn_stats", txn, []string{foInt64(v), foInt64(v)}, v)...)
			agree(foRead(key, "txn_stats", txn...)...)
			agree("HGETALL", key)
		}
		p.r.Do("EXPIRE", key, "1000")
		agree("HGETALL", key)
		p.r.Do("DEL", key)
		agree(foRead(key, "txn_stats", txn...)...)
	}

	// Another type under a key of the project, and a type change behind featcache's back.
	key := foUser(foProject, 8)
	p.r.Do("SET", key, "a string")
	agree(foRead(key, "txn_stats", txn...)...)
	agree("HGETALL", key)
	agree("GET", key)
	p.r.Do("DEL", key)
	p.r.Do(foRow(key, "txn_stats", txn, []string{foInt64(1), foInt64(1)}, 1)...)
	agree(foRead(key, "txn_stats", txn...)...)
	agree("GET", key)
	p.r.Do("DEL", key)
	p.r.Do("SET", key, "a string again")
	agree(foRead(key, "txn_stats", txn...)...)
	agree("HGET", key, foTS("txn_stats"))
	agree("GET", key)

	// A wide row: 300 features of 100 bytes (hashtable encoding in Redis), read by view and whole.
	wide := foUser(foProject, 9)
	var feats, vals []string
	for i := 0; i < 300; i++ {
		feats = append(feats, fmt.Sprintf("f%d", i))
		vals = append(vals, foString(strings.Repeat(strconv.Itoa(i%10), 100)))
	}
	p.r.Do(foRow(wide, "txn_stats", feats, vals, 1)...)
	agree(foRead(wide, "txn_stats", feats...)...)
	agree(foRead(wide, "txn_stats", feats[:3]...)...)
	vals[1] = foString("changed")
	p.r.Do(foRow(wide, "txn_stats", feats, vals, 2)...)
	agree(foRead(wide, "txn_stats", feats...)...)
	agree(foRead(wide, "txn_stats", feats[:3]...)...)

	// A row larger than the largest entry (default 256MB: about 256 KB): read from Redis every time.
	big := foUser(foProject, 10)
	p.r.Do(foRow(big, "txn_stats", txn, []string{foString(strings.Repeat("b", 300<<10)), foInt64(1)}, 1)...)
	agree(foRead(big, "txn_stats", txn...)...)
	agree("HGETALL", big)
	p.r.Do(foRow(big, "txn_stats", txn, []string{foString(strings.Repeat("c", 300<<10)), foInt64(2)}, 2)...)
	agree(foRead(big, "txn_stats", txn...)...)
	agree("HGETALL", big)
}

// TestOutsideFeastWritesThroughFeatcache: Feast's online_write sent through featcache (a pipeline of HMGET _ts
// per entity, then a pipeline of HSET and EXPIRE per row), each pipeline read in one batch, is read back at once
// through featcache, also by the same pipeline and by HGETALL, as Redis answers.
func TestOutsideFeastWritesThroughFeatcache(t *testing.T) {
	p := newFoPair(t, foConfig)
	txn := []string{"count_1h", "sum_1h"}
	var keys []string
	for id := int64(0); id < 20; id++ {
		keys = append(keys, foUser(foProject, id))
	}
	for round := int64(1); round <= 5; round++ {
		var reads, writes [][]string
		for _, key := range keys {
			reads = append(reads, foRead(key, "txn_stats", txn...))
		}
		// Feast checks the previous event times, then writes the rows; here reads and writes also share one
		// batch, as a client that pipelines its check with the previous round's writes would.
		p.f.Pipeline(reads)
		for i, key := range keys {
			if (int64(i)+round)%3 == 0 {
				continue // an entity without new data this round
			}
			writes = append(writes, foRow(key, "txn_stats", txn, []string{foInt64(round), foInt64(round * 10)}, round))
			writes = append(writes, []string{"EXPIRE", key, "3600"})
			writes = append(writes, foRead(key, "txn_stats", txn...))
		}
		gotW := p.f.Pipeline(writes)
		// Redis has the rows now: every read of the batch after its row's write saw it.
		got, want := p.f.Pipeline(reads), p.r.Pipeline(reads)
		if !bytes.Equal(got, want) {
			t.Errorf("round %d: reads after the writes: featcache %q; redis %q", round, got, want)
		}
		if !bytes.Contains(gotW, []byte(foInt64(round*10))) {
			t.Errorf("round %d: reads pipelined after their writes did not see them: %q", round, gotW)
		}
		for _, key := range keys {
			p.same("HGETALL", key)
		}
	}
}

// TestOutsideFeastConfigRefused: featcache -check refuses a bad feast: section with an error naming the field
// and the value (and two features whose fields hash alike), and accepts good ones.
func TestOutsideFeastConfigRefused(t *testing.T) {
	redis := redistest.Start(t)
	// f61922 of v1 and f16887 of v2 hash alike: murmur3("v1:f61922") == murmur3("v2:f16887").
	if foField("v1", "f61922") != foField("v2", "f16887") {
		t.Fatal("the colliding pair does not collide")
	}
	cases := []struct {
		name, yaml string
		want       string // "" = accepted
	}{
		{"no project", "feast:\n  soft_ttl: 1m\n", "feast: project is required"},
		{"empty project", "feast:\n  project: \"\"\n", `feast.project: must not be ""`},
		{"view without features", "feast:\n  project: p\n  feature_views: [{name: v}]\n", `feature view "v": features`},
		{"view without a name", "feast:\n  project: p\n  feature_views: [{features: [a]}]\n", "name is required"},
		{"two views of one name", "feast:\n  project: p\n  feature_views: [{name: v, features: [a]}, {name: v, features: [b]}]\n", `"feast:v"`},
		{"a feature twice", "feast:\n  project: p\n  feature_views: [{name: v, features: [a, a]}]\n", "two features hash alike"},
		{"features of two views hash alike", "feast:\n  project: p\n  feature_views:\n    - {name: v1, features: [f61922]}\n    - {name: v2, features: [f16887]}\n", "two features hash alike"},
		{"negative hard_ttl", "feast:\n  project: p\n  feature_views: [{name: v, features: [a], hard_ttl: -1s}]\n", `hard_ttl: negative duration "-1s"`},
		{"soft_ttl over hard_ttl", "feast:\n  project: p\n  feature_views: [{name: v, features: [a], soft_ttl: 2h, hard_ttl: 1h}]\n", `soft_ttl "2h" is greater than hard_ttl "1h"`},
		{"negative max_event_age", "feast:\n  project: p\n  feature_views: [{name: v, features: [a], max_event_age: -1h}]\n", `max_event_age: negative duration "-1h"`},
		{"max_stale without serve_stale", "feast:\n  project: p\n  feature_views: [{name: v, features: [a], max_stale: 1h}]\n", "max_stale"},
		{"unknown view field", "feast:\n  project: p\n  feature_views: [{name: v, features: [a], bogus: 1}]\n", `unknown field "bogus"`},
		{"unknown feast field", "feast:\n  project: p\n  bogus: 1\n", `unknown field "bogus"`},
		{"prefix in a view", "feast:\n  project: p\n  feature_views: [{name: v, features: [a], prefix: x}]\n", `unknown field "prefix"`},
		{"bad on_upstream_error", "feast:\n  project: p\n  feature_views: [{name: v, features: [a], on_upstream_error: maybe}]\n", `invalid value "maybe"`},
		{"zero hard_ttl", "feast:\n  project: p\n  hard_ttl: 0s\n", `hard_ttl must be greater than 0, got "0s"`},
		{"views as a mapping", "feast:\n  project: p\n  feature_views: {name: v}\n", "expected a list"},
		{"a policy of the feast policy's name", "policies:\n  - {name: feast, prefix: \"x:\"}\nfeast:\n  project: p\n", `duplicate policy name "feast"`},
		{"a policy with the project's suffix", "policies:\n  - {name: other, suffix: p}\nfeast:\n  project: p\n", `suffix "p" is already the suffix of policy "other"`},
		{"good", "feast:\n  project: p\n  feature_views: [{name: v, features: [a, b], soft_ttl: 1s, hard_ttl: 2s, max_event_age: 1h}]\n", ""},
		{"good, serve_stale", "feast:\n  project: p\n  on_upstream_error: serve_stale\n  feature_views: [{name: v, features: [a], on_upstream_error: serve_stale, max_stale: 1h}]\n", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := writeConfig(t, tc.yaml)
			out, err := exec.Command(binary(t), "-config", path, "-check", "-upstream", redis.Addr()).CombinedOutput()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("refused: %v\n%s", err, out)
			case tc.want != "" && err == nil:
				t.Errorf("accepted; want an error with %q\n%s", tc.want, out)
			case tc.want != "" && !strings.Contains(string(out), tc.want):
				t.Errorf("error %q; want it to say %q", out, tc.want)
			}
		})
	}
}

// TestOutsideFeastServeStale: while Redis hangs, a view with on_upstream_error: serve_stale keeps answering
// Feast's HMGET from memory past its hard_ttl, across the tracking loss the hang causes, and never past the key's
// own expiry (key_ttl_seconds); a view without it gets featcache's error, and so does an HGETALL of a row that
// holds such a view's fields.
func TestOutsideFeastServeStale(t *testing.T) {
	p := newFoPair(t, `
shutdown_delay: 0s
upstream: {timeout: 200ms}
feast:
  project: fraud
  hard_ttl: 1h
  on_upstream_error: serve_stale
  max_stale: 1h
  feature_views:
    - {name: kept, features: [a], soft_ttl: 50ms, hard_ttl: 100ms, jitter: 0, on_upstream_error: serve_stale, max_stale: 1h}
    - {name: failing, features: [b], soft_ttl: 50ms, hard_ttl: 100ms, jitter: 0}
`)
	forever, expiring, keptOnly := foUser(foProject, 1), foUser(foProject, 2), foUser(foProject, 3)
	for _, key := range []string{forever, expiring, keptOnly} {
		p.r.Do(foRow(key, "kept", []string{"a"}, []string{foInt64(1)}, 1)...)
		if key != keptOnly {
			p.r.Do(foRow(key, "failing", []string{"b"}, []string{foInt64(1)}, 1)...)
		}
	}
	p.r.Do("PEXPIRE", expiring, "1500")
	expiresAt := time.Now().Add(1500 * time.Millisecond)
	want := map[string][]byte{}
	reads := map[string][]string{
		"kept":           foRead(forever, "kept", "a"),
		"HGETALL":        {"HGETALL", keptOnly},
		"failing":        foRead(forever, "failing", "b"),
		"failing whole":  {"HGETALL", forever},
		"expiring kept":  foRead(expiring, "kept", "a"),
		"expiring whole": {"HGETALL", expiring},
	}
	for name, args := range reads {
		want[name] = p.same(args...)
	}
	foImageCached(t, p, keptOnly)
	p.redis.Pause()
	defer p.redis.Resume()
	// Past the tracking loss (the health check runs every second) and the expiry of the expiring row.
	for start := time.Now(); time.Since(start) < 2500*time.Millisecond; {
		for name, args := range reads {
			before := time.Now()
			got := p.f.Do(args...)
			switch {
			case strings.HasPrefix(name, "expiring") && before.After(expiresAt):
				if bytes.Equal(got, want[name]) {
					t.Fatalf("%s: served %v after the key's expiry: %q", name, before.Sub(expiresAt), got)
				}
			case strings.HasPrefix(name, "expiring"):
			case strings.HasPrefix(name, "failing"):
				if time.Since(start) > 300*time.Millisecond && !strings.HasPrefix(string(got), "-ERR featcache upstream") {
					t.Fatalf("%s: %q; want featcache's upstream error", name, got)
				}
			default:
				if !bytes.Equal(got, want[name]) {
					t.Fatalf("%s: %q after %v of a hung Redis; want the stale %q", name, got, time.Since(start), want[name])
				}
			}
		}
		time.Sleep(50 * time.Millisecond) // a model server's pace
	}
}

// foImageCached reads key whole through featcache until featcache holds its complete image: a fill that began
// before the invalidation of a write made just before it arrived is not stored (so that no value read before an
// invalidation is stored after it), and tests that need the image in memory, to be served while Redis hangs,
// wait for it.
func foImageCached(t *testing.T, p *foPair, key string) {
	t.Helper()
	redistest.Eventually(t, 2*time.Second, fmt.Sprintf("HGETALL %.40q cached", key), func() bool {
		p.f.Do("HGETALL", key)
		return bytes.Contains(p.f.Do("CACHE", "EXPLAIN", key), []byte("+complete:true\r\n"))
	})
}

// TestOutsideFeastEventAgeWhileCached: a row read from memory turns to missing features once its event time is
// older than max_event_age, without any write; a new materialization brings them back.
func TestOutsideFeastEventAgeWhileCached(t *testing.T) {
	p := newFoPair(t, `
shutdown_delay: 0s
feast:
  project: fraud
  hard_ttl: 1h
  feature_views:
    - {name: v, features: [a, b], hard_ttl: 1h, max_event_age: 2s}
`)
	key := foUser(foProject, 1)
	eventTime := time.Now().Add(-time.Second).Truncate(time.Second)
	p.r.Do(foRow(key, "v", []string{"a", "b"}, []string{foInt64(1), foInt64(2)}, eventTime.Unix())...)
	p.twice(foRead(key, "v", "a", "b")...)
	tooOld := "*3\r\n$-1\r\n$-1\r\n$6\r\n" + foTimestamp(eventTime.Unix()) + "\r\n"
	redistest.Eventually(t, 5*time.Second, "features served as missing once the row is older than max_event_age", func() bool {
		return string(p.f.Do(foRead(key, "v", "a", "b")...)) == tooOld
	})
	if age := time.Since(eventTime); age < 2*time.Second {
		t.Errorf("features missing when the row was %v old", age)
	}
	if got := p.f.Do("HGET", key, foField("v", "a")); string(got) != "$-1\r\n" {
		t.Errorf("HGET of a too-old row's feature: %q", got)
	}
	p.r.Do(foRow(key, "v", []string{"a", "b"}, []string{foInt64(3), foInt64(4)}, time.Now().Unix())...)
	want := p.r.Do(foRead(key, "v", "a", "b")...)
	redistest.Eventually(t, time.Second, "a new row served", func() bool {
		return bytes.Equal(p.f.Do(foRead(key, "v", "a", "b")...), want)
	})
}

// TestOutsideFeastWarmStart: Feast's entity keys (int64 ids whose bytes hold a newline, a carriage return, a
// double quote) read through one instance are in the hot-key file it writes at shutdown, and a new instance warms
// them from it: answered from memory at once, as Redis now has them (rows changed while no instance ran), with
// HGETALL and views the configuration does not name read from Redis, not from the warm-up's partial image.
func TestOutsideFeastWarmStart(t *testing.T) {
	redis := redistest.Start(t)
	hot := filepath.Join(t.TempDir(), "hotkeys.txt")
	cfg := foConfig + "warm:\n  hotkeys_file: " + hot + "\n  ready_after: 100\n"
	a := startBinary(t, redis, cfg)
	r := redis.Dial()
	txn := []string{"count_1h", "sum_1h"}
	prof := []string{"age", "country"}
	ids := []int64{'\n', '\r', '"', 1, -1, '\r'<<8 | '\n'}
	fa := redistest.Dial(t, a.addr)
	for _, id := range ids {
		key := foUser(foProject, id)
		r.Do(foRow(key, "txn_stats", txn, []string{foInt64(id), foInt64(id)}, 1)...)
		r.Do(foRow(key, "user_profile", prof, []string{foInt64(id), foInt64(id)}, 1)...)
		r.Do("HSET", key, foField("other", "x"), "a view the configuration does not name")
		for i := 0; i < 200; i++ { // hot keys are sampled one read in 16 on average
			fa.Do(foRead(key, "txn_stats", txn...)...)
		}
	}
	a.signal(syscall.SIGTERM)
	a.wait(20 * time.Second)
	for _, id := range ids {
		key := foUser(foProject, id)
		r.Do(foRow(key, "txn_stats", txn, []string{foInt64(id + 100), foInt64(id + 100)}, 2)...)
	}
	b := startBinary(t, redis, cfg)
	p := &foPair{t: t, redis: redis, fc: b, r: r, f: redistest.Dial(t, b.addr)}
	for _, id := range ids {
		key := foUser(foProject, id)
		if got := p.f.Do("CACHE", "EXPLAIN", key); !bytes.Contains(got, []byte("feature:txn_stats:count_1h policy:feast:txn_stats state:fresh")) {
			t.Errorf("user_id=%d not warmed: %.300q", id, got)
		}
		p.twice(foRead(key, "txn_stats", txn...)...)
		p.twice(foRead(key, "user_profile", prof...)...)
		p.twice("HGETALL", key)
		p.twice(foRead(key, "other", "x")...)
	}
}

// TestOutsideFeastFeatureNames: featcache hashes feature names as Feast does (murmur3 of the UTF-8 bytes of
// "<view>:<feature>", every tail length, non-ASCII names): each field Feast writes is explained as its feature,
// under its view's policy, and read as Redis has it.
func TestOutsideFeastFeatureNames(t *testing.T) {
	feats := []string{"a", "ab", "abc", "abcd", "abcde", "größe", "日本語", "with space", `q"uote`, "x:y"}
	p := newFoPair(t, `
shutdown_delay: 0s
feast:
  project: fraud
  hard_ttl: 1h
  feature_views:
    - name: "vü"
      features: ["a", "ab", "abc", "abcd", "abcde", "größe", "日本語", "with space", "q\"uote", "x:y"]
`)
	key := foUser(foProject, 1)
	var vals []string
	for i := range feats {
		vals = append(vals, foInt64(int64(i)))
	}
	p.r.Do(foRow(key, "vü", feats, vals, 1)...)
	p.twice(foRead(key, "vü", feats...)...)
	explain := string(p.f.Do("CACHE", "EXPLAIN", key))
	for _, f := range feats {
		want := fmt.Sprintf("field:%s feature:vü:%s policy:feast:vü state:fresh", foQuote(foField("vü", f)), f)
		if !strings.Contains(explain, want) {
			t.Errorf("CACHE EXPLAIN does not say %q:\n%s", want, explain)
		}
	}
}

// foQuote quotes b as CACHE EXPLAIN prints keys and fields: a Go-style quoted string with \xNN for other bytes.
func foQuote(b string) string {
	var sb strings.Builder
	sb.WriteByte('"')
	for i := 0; i < len(b); i++ {
		c := b[i]
		if e, ok := foEscapes[c]; ok {
			sb.WriteString(e)
		} else if c < 0x20 || c >= 0x7f {
			fmt.Fprintf(&sb, `\x%02x`, c)
		} else {
			sb.WriteByte(c)
		}
	}
	sb.WriteByte('"')
	return sb.String()
}

// foEscapes are the bytes foQuote writes as Go's escapes.
var foEscapes = map[byte]string{'"': `\"`, '\\': `\\`, '\b': `\b`, '\f': `\f`, '\n': `\n`, '\r': `\r`, '\t': `\t`,
	'\v': `\v`, '\a': `\a`}

// TestOutsideFeastViewRemovedUnderReads: a writer straight to Redis materializes both views of a row, removes
// one view (HDEL of its features and _ts), and now and then deletes the row, while readers read through featcache
// with Feast's HMGET per view, an HMGET of both views and HGETALL: no reply holds fields of two rows, and a view's
// fields are all there or all missing.
func TestOutsideFeastViewRemovedUnderReads(t *testing.T) {
	p := newFoPair(t, foConfig)
	key := foUser(foProject, 5)
	txn := []string{"count_1h", "sum_1h"}
	prof := []string{"age", "country"}
	row := func(i int64) []string {
		args := foRow(key, "txn_stats", txn, []string{foInt64(i), foInt64(i)}, i)
		return append(args, foRow(key, "user_profile", prof, []string{foInt64(i), foInt64(i)}, i)[2:]...)
	}
	isProfile := func(f string) bool {
		return f == foTS("user_profile") || f == foField("user_profile", "age") || f == foField("user_profile", "country")
	}
	hdel := []string{"HDEL", key, foField("user_profile", "age"), foField("user_profile", "country"), foTS("user_profile")}
	reads := [][]string{
		foRead(key, "txn_stats", txn...),
		foRead(key, "user_profile", prof...),
		append(foRead(key, "txn_stats", txn...), foRead(key, "user_profile", prof...)[2:]...),
		{"HGETALL", key},
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		w := redistest.Dial(t, p.redis.Addr())
		for i := int64(1); !stop.Load(); i++ {
			w.Do(row(i)...)
			w.Do(hdel...)
			if i%3 == 0 {
				w.Do("DEL", key)
			}
		}
	}()
	errs := make(chan error, 4)
	var checked atomic.Int64
	for r := 0; r < 3; r++ {
		wg.Add(1)
		go func(r int) {
			defer wg.Done()
			c := redistest.Dial(t, p.fc.addr)
			for n := r; !stop.Load(); n++ {
				args := reads[n%len(reads)]
				if err := c.Send(args...); err != nil {
					errs <- err
					return
				}
				frame, err := c.Read()
				if err != nil {
					errs <- err
					return
				}
				v, _, _ := resp.Decode(frame)
				// txn_stats's fields: one number (all nil after DEL); user_profile's: all nil or the same number.
				txnVals, profVals := map[int64]bool{}, map[int64]bool{}
				if args[0] == "HGETALL" {
					for i := 0; i+1 < len(v.Elems); i += 2 {
						f := v.Elems[i].Str
						if isProfile(f) {
							profVals[foDecodeNumber(v.Elems[i+1].Str)] = true
						} else {
							txnVals[foDecodeNumber(v.Elems[i+1].Str)] = true
						}
					}
					if len(v.Elems) != 0 && len(v.Elems) != 6 && len(v.Elems) != 12 {
						errs <- fmt.Errorf("HGETALL with %d elems: %q", len(v.Elems), frame)
						return
					}
				} else {
					for i, e := range v.Elems {
						f := args[2+i]
						val := int64(-1)
						if !e.Null {
							val = foDecodeNumber(e.Str)
						}
						if isProfile(f) {
							profVals[val] = true
						} else {
							txnVals[val] = true
						}
					}
				}
				if len(txnVals) > 1 || len(profVals) > 1 {
					errs <- fmt.Errorf("mixed: %.60q %q", args, frame)
					return
				}
				for tv := range txnVals {
					for pv := range profVals {
						if pv != -1 && pv != tv {
							errs <- fmt.Errorf("profile of another row: %.60q %q", args, frame)
							return
						}
					}
				}
				checked.Add(1)
			}
		}(r)
	}
	select {
	case err := <-errs:
		t.Error(err)
	case <-time.After(2 * time.Second):
	}
	stop.Store(true)
	wg.Wait()
	if checked.Load() < 100 {
		t.Errorf("only %d reads checked", checked.Load())
	}
}

// TestOutsideFeastTrackingLossAndRestart: rows cached through featcache are rewritten straight to Redis while
// featcache's connections to Redis are killed by another client (CLIENT KILL of every other connection,
// featcache's tracking connection included), or across a restart of Redis (with its data kept by AOF, or
// without): reads through featcache answer Redis's rows within a bound (5 s, for featcache to notice and
// reconnect), never the rows from before.
func TestOutsideFeastTrackingLossAndRestart(t *testing.T) {
	for _, mode := range []string{"kill tracking", "restart with AOF", "restart empty"} {
		t.Run(mode, func(t *testing.T) {
			var args []string
			if mode == "restart with AOF" {
				args = []string{"--appendonly", "yes", "--appendfsync", "always"}
			}
			redis := redistest.Start(t, args...)
			fc := startBinary(t, redis, foConfig)
			p := &foPair{t: t, redis: redis, fc: fc, r: redis.Dial(), f: redistest.Dial(t, fc.addr)}
			txn := []string{"count_1h", "sum_1h"}
			var keys []string
			for id := int64(0); id < 5; id++ {
				key := foUser(foProject, id)
				keys = append(keys, key)
				p.r.Do(foRow(key, "txn_stats", txn, []string{foInt64(1), foInt64(1)}, 1)...)
				p.twice(foRead(key, "txn_stats", txn...)...)
				p.twice("HGETALL", key)
			}
			switch mode {
			case "kill tracking":
				list := string(p.r.Do("CLIENT", "LIST"))
				if !strings.Contains(list, "flags=tB") {
					t.Fatalf("no BCAST tracking connection in CLIENT LIST:\n%s", list)
				}
				self := strings.TrimSpace(strings.TrimPrefix(string(p.r.Do("CLIENT", "ID")), ":"))
				for _, line := range strings.Split(list, "\n") {
					f := strings.Fields(line)
					if len(f) == 0 {
						continue
					}
					id := strings.TrimPrefix(f[0], "id=")
					if strings.TrimPrefix(id, "+") != self && strings.HasPrefix(f[0], "id=") {
						p.r.Do("CLIENT", "KILL", "ID", id)
					}
				}
				for _, key := range keys {
					p.r.Do(foRow(key, "txn_stats", txn, []string{foInt64(2), foInt64(2)}, 2)...)
				}
			default:
				for _, key := range keys {
					p.r.Do(foRow(key, "txn_stats", txn, []string{foInt64(2), foInt64(2)}, 2)...)
				}
				redis.Restart()
				p.r = redis.Dial()
			}
			for _, key := range keys {
				for _, args := range [][]string{foRead(key, "txn_stats", txn...), {"HGETALL", key}} {
					want := p.r.Do(args...)
					redistest.Eventually(t, 5*time.Second, fmt.Sprintf("%s: %.40q as Redis answers", mode, args), func() bool {
						return bytes.Equal(p.f.Do(args...), want)
					})
				}
			}
		})
	}
}

// TestOutsideFeastTwinPipelines: random pipelines of Feast's reads and writes (HMGET, HGET, HGETALL, HSET,
// HDEL, HSETNX, HINCRBY, DEL, EXPIRE, PERSIST, the other hash reads, EXISTS, TYPE, and MULTI/EXEC around some) go through featcache for one
// entity and straight to Redis for its twin, an entity whose row is always the same: every reply must be the
// same bytes (in RESP2, then in RESP3), since no reply names the key. Reads ahead of a write in a pipeline see the row before it, reads
// after it the row after it. It runs with two configurations.
func TestOutsideFeastTwinPipelines(t *testing.T) {
	t.Run("cached an hour", func(t *testing.T) { foTwinPipelines(t, foConfig) })
	// Background refreshes all the time, and missing rows and fields remembered.
	t.Run("refreshed, nils remembered", func(t *testing.T) {
		foTwinPipelines(t, `
shutdown_delay: 0s
feast:
  project: fraud
  soft_ttl: 1ms
  hard_ttl: 1h
  negative_ttl: 1h
  feature_views:
    - {name: txn_stats, features: [count_1h, sum_1h], soft_ttl: 1ms, hard_ttl: 1h, negative_ttl: 1h}
    - {name: user_profile, features: [age, country], hard_ttl: 1h, negative_ttl: 1h}
`)
	})
}

func foTwinPipelines(t *testing.T, cfg string) {
	p := newFoPair(t, cfg)
	txn := []string{"count_1h", "sum_1h"}
	prof := []string{"age", "country"}
	rng := rand.New(rand.NewPCG(foSeed(), 2))
	ids := []int64{1, 2, 3}
	// twin maps an entity read through featcache to the one written straight to Redis.
	twin := func(id int64) (string, string) { return foUser(foProject, id), foUser(foProject, 1000+id) }
	field := func() string {
		switch rng.IntN(6) {
		case 0:
			return foTS("txn_stats")
		case 1:
			return foTS("user_profile")
		case 2:
			return foField("other", "x")
		default:
			return foField([]string{"txn_stats", "user_profile"}[rng.IntN(2)], []string{"count_1h", "sum_1h", "age", "country"}[rng.IntN(4)])
		}
	}
	command := func(key string) []string {
		switch n := rng.IntN(22); {
		case n < 5:
			return foRead(key, "txn_stats", txn...)
		case n < 7:
			return foRead(key, "user_profile", prof...)
		case n < 8:
			return []string{"HMGET", key, field(), field(), field()}
		case n < 9:
			return []string{"HGET", key, field()}
		case n < 11:
			return []string{"HGETALL", key}
		case n < 14:
			v := int64(rng.IntN(1000))
			return foRow(key, []string{"txn_stats", "user_profile"}[rng.IntN(2)], txn, []string{foInt64(v), foInt64(v)}, v)
		case n < 15:
			return []string{"HDEL", key, field(), field()}
		case n < 16:
			return []string{"HSETNX", key, field(), foInt64(int64(rng.IntN(1000)))}
		case n < 17:
			return []string{"HINCRBY", key, "counter", "1"}
		case n < 18:
			return []string{"DEL", key}
		case n < 19:
			return []string{"EXPIRE", key, "1000"}
		case n < 20:
			return []string{"PERSIST", key}
		default:
			return [][]string{{"HLEN", key}, {"HEXISTS", key, field()}, {"HKEYS", key}, {"HVALS", key}, {"HSTRLEN", key, field()},
				{"EXISTS", key}, {"TYPE", key}}[rng.IntN(7)]
		}
	}
	for _, proto := range []string{"2", "3"} {
		p.f.Do("HELLO", proto)
		p.r.Do("HELLO", proto)
		for round := 0; round < foRounds(); round++ {
			id := ids[rng.IntN(len(ids))]
			a, b := twin(id)
			var viaFC, direct [][]string
			multi := rng.IntN(5) == 0
			if multi {
				viaFC, direct = append(viaFC, []string{"MULTI"}), append(direct, []string{"MULTI"})
			}
			for n := 1 + rng.IntN(8); n > 0; n-- {
				cmd := command(a)
				viaFC = append(viaFC, cmd)
				direct = append(direct, append([]string{cmd[0], b}, cmd[2:]...))
			}
			if multi {
				viaFC, direct = append(viaFC, []string{"EXEC"}), append(direct, []string{"EXEC"})
			}
			got, want := p.f.Pipeline(viaFC), p.r.Pipeline(direct)
			if !bytes.Equal(got, want) {
				t.Fatalf("RESP%s, round %d, pipeline %.300q:\nfeatcache %q\nredis     %q", proto, round, viaFC, got, want)
			}
			// Writes straight to Redis, to both twins alike, between the pipelines.
			if rng.IntN(4) == 0 {
				cmd := command("")
				if cmd[0] != "HMGET" && cmd[0] != "HGET" && cmd[0] != "HGETALL" {
					p.r.Do(append([]string{cmd[0], a}, cmd[2:]...)...)
					p.r.Do(append([]string{cmd[0], b}, cmd[2:]...)...)
					// Featcache sees that write within the invalidation latency: wait until it reads the row as
					// Redis has it (the twin's row), before the next pipeline.
					redistest.Eventually(t, time.Second, "a write straight to Redis seen", func() bool {
						return bytes.Equal(p.f.Do("HGETALL", a), p.r.Do("HGETALL", b))
					})
				}
			}
		}
	}
}

// foSeed and foRounds are TestOutsideFeastTwinPipelines's seed and number of pipelines: FO_SEED and FO_ROUNDS
// in the environment explore further.
func foSeed() uint64 {
	if s := os.Getenv("FO_SEED"); s != "" {
		n, _ := strconv.ParseUint(s, 10, 64)
		return n
	}
	return 1
}

func foRounds() int {
	if s := os.Getenv("FO_ROUNDS"); s != "" {
		n, _ := strconv.Atoi(s)
		return n
	}
	return 300
}

// TestOutsideFeastLargeMaterialization: a materialization of 10,000 rows (HSET and EXPIRE per row, pipelined
// straight to Redis) over rows cached through featcache is read through featcache, all of it, within 2 s of its
// acknowledgement: the invalidations of a large batch are not lost or late.
func TestOutsideFeastLargeMaterialization(t *testing.T) {
	p := newFoPair(t, foConfig)
	txn := []string{"count_1h", "sum_1h"}
	const n = 10000
	// pipe sends cmds on c in one batch (written while the replies are read) and returns the replies.
	pipe := func(c *redistest.Conn, cmds [][]string) [][]byte {
		var batch []byte
		for _, cmd := range cmds {
			batch = append(batch, redistest.Encode(cmd...)...)
		}
		go c.NetConn().Write(batch)
		out := make([][]byte, len(cmds))
		for i := range cmds {
			frame, err := c.Read()
			if err != nil {
				t.Fatal(err)
			}
			out[i] = frame
		}
		return out
	}
	var reads [][]string
	for id := int64(0); id < n; id++ {
		reads = append(reads, foRead(foUser(foProject, id), "txn_stats", txn...))
	}
	for v := int64(1); v <= 3; v++ {
		var writes [][]string
		for id := int64(0); id < n; id++ {
			key := foUser(foProject, id)
			writes = append(writes, foRow(key, "txn_stats", txn, []string{foInt64(v), foInt64(v)}, v), []string{"EXPIRE", key, "86400"})
		}
		pipe(p.r, writes)
		acked := time.Now()
		want := pipe(p.r, reads)
		for {
			got := pipe(p.f, reads)
			differ := 0
			for i := range got {
				if !bytes.Equal(got[i], want[i]) {
					differ++
				}
			}
			if differ == 0 {
				break
			}
			if time.Since(acked) > 2*time.Second {
				t.Fatalf("materialization %d: %d of %d rows read through featcache differ from Redis %v after it", v, differ, n, time.Since(acked))
			}
		}
	}
}

// TestOutsideFeastHGetAllStaleAfterTrackingLoss: with on_upstream_error: serve_stale on the feature view only
// (not on the feast: section), HGETALL of a row holding only that view's fields is served stale while Redis
// hangs, as HMGET of the same fields is, also after featcache has noticed the tracking loss the hang causes
// (about 1 s in). It was answered featcache's upstream error from then on: the image of the whole hash followed
// the key's policy (feast:, without serve_stale), which a tracking loss made untrusted.
func TestOutsideFeastHGetAllStaleAfterTrackingLoss(t *testing.T) {
	p := newFoPair(t, `
shutdown_delay: 0s
upstream: {timeout: 200ms}
feast:
  project: fraud
  hard_ttl: 1h
  feature_views:
    - {name: v, features: [a], soft_ttl: 50ms, hard_ttl: 100ms, jitter: 0, on_upstream_error: serve_stale, max_stale: 1h}
    - {name: w, features: [b], soft_ttl: 50ms, hard_ttl: 100ms, jitter: 0}
`)
	key := foUser(foProject, 1)
	p.r.Do(foRow(key, "v", []string{"a"}, []string{foInt64(1)}, 1)...)
	wantRead := p.same(foRead(key, "v", "a")...)
	wantAll := p.same("HGETALL", key)
	foImageCached(t, p, key)
	// A row with a field of w (no serve_stale), and an entity without a row: their HGETALL images have no
	// serve_stale field policy for every field, and get featcache's error while Redis hangs.
	mixed, none := foUser(foProject, 2), foUser(foProject, 3)
	p.r.Do(foRow(mixed, "v", []string{"a"}, []string{foInt64(1)}, 1)...)
	p.r.Do(foRow(mixed, "w", []string{"b"}, []string{foInt64(1)}, 1)...)
	p.same("HGETALL", mixed)
	p.same("HGETALL", none)
	p.redis.Pause()
	defer p.redis.Resume()
	for start := time.Now(); time.Since(start) < 2500*time.Millisecond; time.Sleep(50 * time.Millisecond) {
		if time.Since(start) > 300*time.Millisecond { // past both views' hard_ttl and a fill's timeout
			for _, key := range []string{mixed, none} {
				if got := p.f.Do("HGETALL", key); !bytes.HasPrefix(got, []byte("-ERR featcache upstream")) {
					t.Fatalf("HGETALL of %.40q after %v of a hung Redis: %q; want featcache's error", key, time.Since(start), got)
				}
			}
		}
		if got := p.f.Do(foRead(key, "v", "a")...); !bytes.Equal(got, wantRead) {
			t.Fatalf("HMGET after %v: %q", time.Since(start), got)
		}
		if got := p.f.Do("HGETALL", key); !bytes.Equal(got, wantAll) {
			t.Fatalf("HGETALL after %v of a hung Redis: %q; HMGET of the same fields is still served stale", time.Since(start), got)
		}
	}
}
