package main

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"featcache/internal/redistest"
	"featcache/internal/resp"
	"featcache/internal/testkit"
)

// These tests look at featcache from outside, as an application sharing its Redis would: they start a real
// redis-server and the real featcache binary, send the same commands straight to Redis and through featcache, and
// compare the reply bytes, or check that no read through featcache returns a value Redis no longer held when the
// read began (beyond the bounds docs/freshness.md gives).

// outsideConfig caches "k:", "g:" and "h:" keys for an hour, so that a value served past its invalidation shows;
// "g:" and "h:" are refreshed in the background after 10 ms, "g:" is served stale while Redis fails, and "h:" keeps
// its entries unverified when tracking is lost.
const outsideConfig = `
shutdown_delay: 0s
policies:
  - {name: k, prefix: "k:", soft_ttl: 1h, hard_ttl: 1h, jitter: 0}
  - {name: g, prefix: "g:", soft_ttl: 10ms, hard_ttl: 1h, jitter: 0, on_upstream_error: serve_stale, max_stale: 1h}
  - {name: h, prefix: "h:", soft_ttl: 10ms, hard_ttl: 1h, jitter: 0, on_tracking_loss: revalidate}
`

// outsideConn is a raw RESP connection whose errors are returned, for goroutines that must not stop the test.
type outsideConn struct {
	t    *testing.T
	addr string
	c    *redistest.Conn
}

// do sends one command and returns its reply frame, dialing again after a failure.
func (oc *outsideConn) do(args ...string) ([]byte, error) {
	if oc.c == nil {
		c, err := redistest.TryDial(oc.t, oc.addr)
		if err != nil {
			return nil, err
		}
		oc.c = c
	}
	if err := oc.c.Send(args...); err != nil {
		oc.c.Close()
		oc.c = nil
		return nil, err
	}
	frame, err := oc.c.ReadTimeout(10 * time.Second)
	if err != nil {
		oc.c.Close()
		oc.c = nil
	}
	return frame, err
}

// bulkSeq reads a bulk string holding a sequence number; ok is false for anything else (nil: -1, true).
func bulkSeq(frame []byte) (int64, bool) {
	body, isNil, ok := resp.BulkPayload(frame)
	if isNil {
		return -1, true
	}
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(string(body), 10, 64)
	return n, err == nil
}

// seqElems decodes an array of bulk strings holding sequence numbers (MGET, HMGET, HGETALL's values).
func seqElems(frame []byte, valuesOnly bool) ([]int64, bool) {
	v, _, err := resp.Decode(frame)
	if err != nil || v.Type != resp.TypeArray || v.Null {
		return nil, false
	}
	var out []int64
	for i, e := range v.Elems {
		if valuesOnly && i%2 == 0 {
			continue // HGETALL's field names
		}
		if e.Null {
			out = append(out, -1)
			continue
		}
		n, err := strconv.ParseInt(e.Str, 10, 64)
		if err != nil {
			return nil, false
		}
		out = append(out, n)
	}
	return out, true
}

// writeLog remembers, for each written name (a key, a group, a hash), when each sequence number was acknowledged
// and through which path.
type writeLog struct {
	mu    sync.Mutex
	acked map[string]map[int64]time.Time
	// lastVia is the highest sequence number acknowledged through each path ("redis", "A", "B") per name.
	lastVia map[string]map[string]int64
}

func newWriteLog() *writeLog {
	return &writeLog{acked: map[string]map[int64]time.Time{}, lastVia: map[string]map[string]int64{}}
}

func (w *writeLog) ack(name, via string, seq int64, at time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.acked[name] == nil {
		w.acked[name] = map[int64]time.Time{}
		w.lastVia[name] = map[string]int64{}
	}
	w.acked[name][seq] = at
	if seq > w.lastVia[name][via] {
		w.lastVia[name][via] = seq
	}
}

// ackedVia is the highest sequence number of name acknowledged through via so far (0: none).
func (w *writeLog) ackedVia(name, via string) int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lastVia[name][via]
}

// overwrittenAt says when the write that replaced seq was acknowledged, if it has been.
func (w *writeLog) overwrittenAt(name string, seq int64) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	at, ok := w.acked[name][seq+1]
	return at, ok
}

// seqRead is a read whose reply holds sequence numbers of the written name: values turns the reply into them, and
// every one of them must be the same (one instant).
type seqRead struct {
	name   string
	args   []string
	values func(frame []byte) ([]int64, bool)
}

// oneSeq reads the sequence number a bulk reply holds.
func oneSeq(frame []byte) ([]int64, bool) {
	n, ok := bulkSeq(frame)
	return []int64{n}, ok
}

// arraySeqs and hashSeqs read those of an array reply (MGET, HMGET) and of a field-value one (HGETALL).
func arraySeqs(f []byte) ([]int64, bool) { return seqElems(f, false) }
func hashSeqs(f []byte) ([]int64, bool)  { return seqElems(f, true) }

// TestOutsideCheckerUnderFaults runs writers straight to Redis and through two featcache instances, each name
// (three strings, an MSET group of three keys, a hash of four fields) written by one writer with increasing
// sequence numbers, and readers of GET, MGET, HGET, HGETALL and HMGET on both instances, while, every 300 ms in
// turn: featcache's tracking connections are killed (CLIENT KILL ID), all its connections are killed by address
// (CLIENT KILL ADDR from CLIENT LIST), every client but the killer is killed (CLIENT KILL TYPE normal), Redis is
// stopped for 400 ms (SIGSTOP), and Redis is restarted (AOF, appendfsync always). Every read is checked:
// read-your-writes per instance, monotonic per reader, one instant per multi-key reply, and no value whose
// successor was acknowledged more than staleBound before the read began.
func TestOutsideCheckerUnderFaults(t *testing.T) {
	const staleBound = 2 * time.Second
	redis := redistest.Start(t, "--appendonly", "yes", "--appendfsync", "always")
	a := startBinary(t, redis, outsideConfig)
	b := startBinary(t, redis, outsideConfig)
	paths := map[string]string{"redis": redis.Addr(), "A": a.addr, "B": b.addr}
	routes := []string{"redis", "A", "B"}

	log := newWriteLog()
	writes := map[string]func(seq string) []string{
		"k:0": func(s string) []string { return []string{"SET", "k:0", s} },
		"k:1": func(s string) []string { return []string{"SET", "k:1", s} },
		"k:2": func(s string) []string { return []string{"SET", "k:2", s} },
		"g":   func(s string) []string { return []string{"MSET", "g:0", s, "g:1", s, "g:2", s} },
		"h:0": func(s string) []string { return []string{"HSET", "h:0", "f0", s, "f1", s, "f2", s, "f3", s} },
	}
	for name, cmd := range writes {
		if got := string(redis.Do(cmd("0")...)); strings.HasPrefix(got, "-") {
			t.Fatalf("%s: %q", name, got)
		}
	}

	var violations atomic.Int64
	var reads, writesDone, faults atomic.Int64
	violate := func(format string, args ...any) {
		if violations.Add(1) <= 20 {
			t.Errorf(format, args...)
		}
	}
	var loops testkit.Loops

	for name, cmd := range writes {
		conns := map[string]*outsideConn{}
		for _, r := range routes {
			conns[r] = &outsideConn{t: t, addr: paths[r]}
		}
		loops.Go(func(i int) bool {
			seq := int64(i + 1)
			via := routes[rand.IntN(len(routes))]
			frame, err := conns[via].do(cmd(strconv.FormatInt(seq, 10))...)
			if err != nil || frame[0] == '-' {
				// Lost with a killed connection: it may or may not have been applied, but not later than now
				// (forwarded writes have no timeout), so the next sequence number still follows it.
				return true
			}
			log.ack(name, via, seq, time.Now())
			writesDone.Add(1)
			return true
		})
	}

	ops := []seqRead{
		{"k:0", []string{"GET", "k:0"}, oneSeq},
		{"k:1", []string{"GET", "k:1"}, oneSeq},
		{"k:2", []string{"GET", "k:2"}, oneSeq},
		{"g", []string{"MGET", "g:0", "g:1", "g:2"}, arraySeqs},
		{"g", []string{"GET", "g:1"}, oneSeq},
		{"h:0", []string{"HGETALL", "h:0"}, hashSeqs},
		{"h:0", []string{"HMGET", "h:0", "f0", "f3"}, arraySeqs},
		{"h:0", []string{"HGET", "h:0", "f2"}, oneSeq},
	}
	for _, inst := range []string{"A", "B", "A", "B", "redis"} {
		c := &outsideConn{t: t, addr: paths[inst]}
		seen := map[string]int64{}
		loops.Go(func(int) bool {
			op := ops[rand.IntN(len(ops))]
			own := log.ackedVia(op.name, inst)
			began := time.Now()
			frame, err := c.do(op.args...)
			if err != nil || (len(frame) > 0 && frame[0] == '-') {
				return true // featcache's upstream errors while Redis is stopped
			}
			vals, ok := op.values(frame)
			if !ok || len(vals) == 0 {
				violate("%s %q through %s: unexpected reply %q", op.args[0], op.args[1:], inst, frame)
				return true
			}
			reads.Add(1)
			for _, v := range vals[1:] {
				if v != vals[0] {
					violate("%s %q through %s: %v mixes writes; Redis never held it", op.args[0], op.args[1:], inst, vals)
					break
				}
			}
			v := vals[0]
			// Monotonic per key; for h:, per set of fields read: after a tracking loss its policy
			// (revalidate) serves each field's unverified entry within the soft TTL, and the guarantee is
			// field by field (docs/freshness.md, Monotonic reads), so another field may be older.
			mono := op.name
			if op.name == "h:0" {
				mono = strings.Join(op.args, " ")
			}
			if v < seen[mono] {
				violate("%s %q through %s: %d after this reader saw %d", op.args[0], op.args[1:], inst, v, seen[mono])
			}
			seen[mono] = max(seen[mono], v)
			if inst != "redis" && v < own {
				violate("%s %q through %s: %d after write %d through the same instance was acknowledged", op.args[0], op.args[1:], inst, v, own)
			}
			if at, ok := log.overwrittenAt(op.name, v); ok && began.Sub(at) > staleBound {
				violate("%s %q through %s: %d, overwritten %v before the read began", op.args[0], op.args[1:], inst, v, began.Sub(at))
			}
			return true
		})
	}

	// The faults, one at a time.
	admin := &outsideConn{t: t, addr: redis.Addr()}
	loops.Go(func(i int) bool {
		time.Sleep(300 * time.Millisecond)
		if loops.Stopped() {
			return false
		}
		switch i % 5 {
		case 0:
			killClients(admin, "featcache-tracking", "ID")
		case 1:
			killClients(admin, "featcache", "ADDR") // every connection of both instances
		case 2:
			admin.do("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes") // writers' too
		case 3:
			redis.Pause()
			time.Sleep(400 * time.Millisecond) // how long Redis stays stopped: the fault itself
			redis.Resume()
		case 4:
			redis.Restart() // appendfsync always: every acknowledged write survives
		}
		faults.Add(1)
		return true
	})

	time.Sleep(8 * time.Second) // how long the load runs
	loops.Stop()
	t.Logf("%d writes acknowledged, %d reads checked, %d faults, %d violations", writesDone.Load(), reads.Load(), faults.Load(), violations.Load())
	if reads.Load() < 1000 || writesDone.Load() < 100 {
		t.Fatalf("too little load to judge")
	}

	// Every instance converges on Redis.
	for _, in := range []*instance{a, b} {
		c := redistest.Dial(t, in.addr)
		for _, op := range ops {
			redistest.Eventually(t, 5*time.Second, fmt.Sprintf("%q through featcache equal to Redis", op.args), func() bool {
				return bytes.Equal(c.Do(op.args...), redis.Do(op.args...))
			})
		}
	}
}

// trackingClient is an application's own cache in front of featcache, kept with CLIENT TRACKING as client-side
// caching libraries keep it: invalidations are applied as they arrive (a reader goroutine per connection), and a
// reply to a read during which its key was invalidated is not kept. Over RESP3 the invalidations are pushes on
// the client's connection; over RESP2 they arrive as Pub/Sub messages on a second connection it redirects them to.
type trackingClient struct {
	conn    *redistest.Conn
	replies chan []byte
	optin   bool // CLIENT CACHING yes before each read

	mu      sync.Mutex
	cache   map[string]int64
	pending map[string]bool // keys being read; true once invalidated meanwhile
}

// newTrackingClient connects to addr with RESP3 (or RESP2 and a redirect) and turns tracking on with options.
func newTrackingClient(t *testing.T, addr string, resp3 bool, options ...string) *trackingClient {
	t.Helper()
	tc := &trackingClient{conn: redistest.Dial(t, addr), replies: make(chan []byte, 1), cache: map[string]int64{}, pending: map[string]bool{}}
	for _, o := range options {
		tc.optin = tc.optin || o == "OPTIN"
	}
	if resp3 {
		if got := tc.conn.Do("HELLO", "3"); got[0] != '%' {
			t.Fatalf("HELLO 3: %q", got)
		}
	} else {
		sub := redistest.Dial(t, addr)
		id, _ := resp.IntegerValue(sub.Do("CLIENT", "ID"))
		if got := string(sub.Do("SUBSCRIBE", "__redis__:invalidate")); !strings.HasPrefix(got, "*3\r\n$9\r\nsubscribe") {
			t.Fatalf("SUBSCRIBE __redis__:invalidate: %q", got)
		}
		options = append(options, "REDIRECT", strconv.FormatInt(id, 10))
		go tc.read(sub, nil)
	}
	if got := string(tc.conn.Do(append([]string{"CLIENT", "TRACKING", "ON"}, options...)...)); got != "+OK\r\n" {
		t.Fatalf("CLIENT TRACKING ON %q: %q", options, got)
	}
	go tc.read(tc.conn, tc.replies)
	return tc
}

// read applies the invalidations c receives and hands its other frames to replies.
func (tc *trackingClient) read(c *redistest.Conn, replies chan<- []byte) {
	for {
		frame, err := c.ReadTimeout(time.Hour)
		if err != nil {
			if replies != nil {
				close(replies)
			}
			return
		}
		if resp.IsPush(frame) || replies == nil {
			tc.invalidate(frame)
			continue
		}
		replies <- frame
	}
}

// invalidate applies an invalidation, a push (">2 invalidate keys") or a message ("*3 message
// __redis__:invalidate keys"), whose keys are null for every key.
func (tc *trackingClient) invalidate(frame []byte) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	_, keys, ok := bytes.Cut(frame, []byte("invalidate\r\n"))
	if !ok {
		return
	}
	if keys[0] == '_' || bytes.HasPrefix(keys, []byte("*-1")) || bytes.HasPrefix(keys, []byte("$-1")) {
		clear(tc.cache)
		for k := range tc.pending {
			tc.pending[k] = true
		}
		return
	}
	v, _, err := resp.Decode(keys)
	if err != nil {
		return
	}
	for _, e := range v.Elems {
		delete(tc.cache, e.Str)
		if _, ok := tc.pending[e.Str]; ok {
			tc.pending[e.Str] = true
		}
	}
}

// get answers key from the client's own cache, or reads it through featcache and keeps it; hit says which.
func (tc *trackingClient) get(key string) (seq int64, hit bool, err error) {
	tc.mu.Lock()
	if v, ok := tc.cache[key]; ok {
		tc.mu.Unlock()
		return v, true, nil
	}
	tc.pending[key] = false
	tc.mu.Unlock()
	if tc.optin {
		if err := tc.conn.Send("CLIENT", "CACHING", "yes"); err != nil {
			return 0, false, err
		}
		if frame := <-tc.replies; string(frame) != "+OK\r\n" {
			return 0, false, fmt.Errorf("CLIENT CACHING yes: %q", frame)
		}
	}
	if err := tc.conn.Send("GET", key); err != nil {
		return 0, false, err
	}
	frame, ok := <-tc.replies
	if !ok {
		return 0, false, fmt.Errorf("connection closed")
	}
	n, ok := bulkSeq(frame)
	if !ok {
		return 0, false, fmt.Errorf("GET %s: %q", key, frame)
	}
	tc.mu.Lock()
	if !tc.pending[key] {
		tc.cache[key] = n
	}
	delete(tc.pending, key)
	tc.mu.Unlock()
	return n, false, nil
}

// TestOutsideClientTrackingChecker: applications keep featcache's values in their own memory with CLIENT
// TRACKING, as docs/freshness.md offers (RESP3: default mode, BCAST, OPTIN; RESP2 with REDIRECT: default mode and
// BCAST), while writers change the keys straight on Redis and through featcache, keys a caching policy covers
// ("k:") and keys it does not ("u:"), and featcache's tracking connections are killed every 250 ms. No value an
// application answers from its own memory may have been overwritten more than staleBound before, and once the
// writers stop every value it keeps equals Redis's.
func TestOutsideClientTrackingChecker(t *testing.T) {
	const staleBound = time.Second
	redis := redistest.Start(t)
	in := startBinary(t, redis, outsideConfig)
	keys := []string{"k:0", "k:1", "u:0", "u:1"}
	for _, k := range keys {
		redis.Do("SET", k, "0")
	}
	log := newWriteLog()
	clients := []*trackingClient{
		newTrackingClient(t, in.addr, true),
		newTrackingClient(t, in.addr, true, "BCAST", "PREFIX", "k:", "PREFIX", "u:"),
		newTrackingClient(t, in.addr, true, "OPTIN"),
		newTrackingClient(t, in.addr, false),
		newTrackingClient(t, in.addr, false, "BCAST"),
	}
	var violations, hits, writesDone atomic.Int64
	var loops testkit.Loops
	for _, key := range keys {
		conns := map[string]*outsideConn{"redis": {t: t, addr: redis.Addr()}, "A": {t: t, addr: in.addr}}
		loops.Go(func(i int) bool {
			seq := int64(i + 1)
			via := []string{"redis", "A"}[rand.IntN(2)]
			if frame, err := conns[via].do("SET", key, strconv.FormatInt(seq, 10)); err != nil || frame[0] == '-' {
				t.Errorf("SET %s through %s: %q %v", key, via, frame, err)
				return false
			}
			log.ack(key, via, seq, time.Now())
			writesDone.Add(1)
			if seq%64 == 0 {
				time.Sleep(time.Millisecond) // let readers keep values in their memory for a while
			}
			return true
		})
	}
	for ci, tc := range clients {
		loops.Go(func(int) bool {
			key := keys[rand.IntN(len(keys))]
			began := time.Now()
			v, hit, err := tc.get(key)
			if err != nil {
				t.Errorf("client %d: %v", ci, err)
				return false
			}
			if hit {
				hits.Add(1)
			}
			if at, ok := log.overwrittenAt(key, v); ok && began.Sub(at) > staleBound {
				if violations.Add(1) <= 10 {
					t.Errorf("client %d (hit %v): %s = %d, overwritten %v before the read", ci, hit, key, v, began.Sub(at))
				}
			}
			return true
		})
	}
	admin := &outsideConn{t: t, addr: redis.Addr()}
	loops.Go(func(int) bool {
		time.Sleep(250 * time.Millisecond)
		if !loops.Stopped() {
			killClients(admin, "featcache-tracking", "ID")
		}
		return true
	})
	time.Sleep(5 * time.Second) // how long the load runs
	loops.Stop()
	t.Logf("%d writes, %d reads from the clients' own memory, %d violations", writesDone.Load(), hits.Load(), violations.Load())
	for ci, tc := range clients {
		for _, key := range keys {
			want, _ := bulkSeq(redis.Do("GET", key))
			redistest.Eventually(t, 3*time.Second, fmt.Sprintf("client %d's copy of %s equal to Redis's %d", ci, key, want), func() bool {
				tc.mu.Lock()
				defer tc.mu.Unlock()
				v, ok := tc.cache[key]
				return !ok || v == want
			})
		}
	}
}

// killClients kills every connection of Redis whose name starts with prefix, with CLIENT KILL ID or ADDR (by the
// address CLIENT LIST shows).
func killClients(admin *outsideConn, prefix, by string) {
	list, err := admin.do("CLIENT", "LIST")
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(list), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 4 || !strings.HasPrefix(fields[3], "name="+prefix) {
			continue
		}
		switch by {
		case "ID":
			admin.do("CLIENT", "KILL", "ID", strings.TrimPrefix(fields[0], "id="))
		case "ADDR":
			admin.do("CLIENT", "KILL", "ADDR", strings.TrimPrefix(fields[1], "addr="))
		}
	}
}

// TestOutsideRestartWithOlderData: Redis is killed and, after a while, started again from a snapshot older than
// the values featcache cached (a restore from backup, a restart without the last writes in its AOF). From the
// moment the new server answers, no read through featcache may return a value of the old server under the default
// on_tracking_loss flush, nor under serve_stale, nor a remembered nil (negative_ttl). Under on_tracking_loss
// revalidate, entries are served unverified within their soft TTL while tracking is down (docs/freshness.md), and
// a read right after the restart may still get the old server's value; those keys must come back to Redis's
// values within a few seconds, without writes.
func TestOutsideRestartWithOlderData(t *testing.T) {
	redis := redistest.Start(t)
	in := startBinary(t, redis, `
shutdown_delay: 0s
policies:
  - {name: k, prefix: "k:", soft_ttl: 1h, hard_ttl: 1h, jitter: 0, negative_ttl: 1h}
  - {name: r, prefix: "r:", soft_ttl: 1h, hard_ttl: 1h, jitter: 0, on_tracking_loss: revalidate}
  - {name: s, prefix: "s:", soft_ttl: 1h, hard_ttl: 1h, jitter: 0, on_upstream_error: serve_stale, max_stale: 1h}
`)
	strict := [][]string{
		{"GET", "k:1"}, {"GET", "s:1"}, {"GET", "k:gone"}, {"MGET", "k:1", "s:1", "k:gone"},
		{"HGETALL", "k:h"}, {"HGET", "s:h", "f"}, {"HMGET", "s:h", "f", "x"},
	}
	revalidate := [][]string{{"GET", "r:1"}, {"HMGET", "r:h", "f", "g"}, {"HGETALL", "r:h"}, {"GET", "r:later"}, {"HGET", "r:flip", "f"}}
	for _, cmd := range [][]string{{"SET", "k:1", "old"}, {"SET", "r:1", "old"}, {"SET", "s:1", "old"}, {"SET", "k:gone", "old"},
		{"HSET", "k:h", "f", "old"}, {"HSET", "r:h", "f", "old", "g", "old"}, {"HSET", "s:h", "f", "old"}, {"SET", "r:flip", "string"}, {"SAVE"}} {
		redis.Do(cmd...)
	}
	for _, cmd := range [][]string{{"SET", "k:1", "new"}, {"SET", "r:1", "new"}, {"SET", "s:1", "new"}, {"DEL", "k:gone"},
		{"HSET", "k:h", "f", "new", "x", "new"}, {"HSET", "r:h", "f", "new", "g", "new"}, {"HSET", "s:h", "f", "new", "x", "new"},
		{"SET", "r:later", "new"}, {"DEL", "r:flip"}, {"HSET", "r:flip", "f", "new"}} {
		redis.Do(cmd...)
	}
	c := redistest.Dial(t, in.addr)
	for _, r := range append(strict, revalidate...) {
		c.Do(r...)
		if got := string(c.Do(r...)); strings.Contains(got, "old") {
			t.Fatalf("%q before the restart: %q", r, got)
		}
	}
	redis.Kill()
	// Down long enough for featcache's tracking reconnection to back off (docs/freshness.md: up to 1 s).
	time.Sleep(1500 * time.Millisecond)
	redis.Restart() // loads the snapshot: every value is "old" again, and k:gone exists
	for until := time.Now().Add(time.Second); time.Now().Before(until); {
		for _, r := range strict {
			got := c.Do(r...)
			if got[0] == '-' {
				continue // featcache's own upstream error while Redis loads
			}
			if want := redis.Do(r...); !bytes.Equal(got, want) {
				t.Fatalf("%q through featcache after the restart: %q; Redis: %q", r, got, want)
			}
		}
	}
	for _, r := range revalidate {
		redistest.Eventually(t, 3*time.Second, fmt.Sprintf("%q through featcache equal to Redis", r), func() bool {
			return bytes.Equal(c.Do(r...), redis.Do(r...))
		})
	}
}

// outsideReads are the reads whose replies the write tables compare, through featcache and straight from Redis:
// every cached read of the keys the writes change, and TYPE (forwarded) as a witness.
var outsideReads = [][]string{
	{"GET", "k:a"}, {"GET", "k:b"}, {"GET", "k:c"}, {"GET", "k:nil"}, {"MGET", "k:a", "k:b", "k:nil"},
	{"HGETALL", "k:h"}, {"HGET", "k:h", "f"}, {"HMGET", "k:h", "f", "g", "z"}, {"HGETALL", "k:nilh"},
	{"TYPE", "k:a"}, {"TYPE", "k:nil"},
}

// outsideWrites are writes of every kind that change the keys outsideReads read: each runs on a Redis holding
// k:a, k:b (strings), k:h (a hash) and no k:nil, k:nilh, after featcache cached every read. Only the commands of
// writes whose names say they fail may answer an error.
var outsideWrites = []struct {
	name string
	cmds [][]string
}{
	{"SET KEEPTTL", [][]string{{"SET", "k:a", "x", "KEEPTTL"}}},
	{"SET PXAT in the past", [][]string{{"SET", "k:a", "x", "PXAT", "1"}}},
	{"SETRANGE", [][]string{{"SETRANGE", "k:a", "0", "X"}}},
	{"APPEND", [][]string{{"APPEND", "k:a", "X"}}},
	{"INCRBY", [][]string{{"SET", "k:a", "1"}, {"INCRBY", "k:a", "5"}}},
	{"INCRBYFLOAT", [][]string{{"INCRBYFLOAT", "k:nil", "1.5"}}},
	{"GETSET", [][]string{{"GETSET", "k:a", "x"}}},
	{"GETDEL", [][]string{{"GETDEL", "k:a"}}},
	{"GETEX PXAT in the past", [][]string{{"GETEX", "k:a", "PXAT", "1"}}},
	{"PSETEX", [][]string{{"PSETEX", "k:nil", "100000", "x"}}},
	{"MSETNX", [][]string{{"MSETNX", "k:nil", "x", "k:c", "y"}}},
	{"SETBIT", [][]string{{"SETBIT", "k:a", "1", "1"}}},
	{"BITFIELD", [][]string{{"BITFIELD", "k:a", "SET", "u8", "0", "65", "INCRBY", "u8", "8", "1"}}},
	{"BITOP", [][]string{{"BITOP", "NOT", "k:a", "k:b"}}},
	{"PFADD into a string", [][]string{{"PFADD", "k:nil", "x"}}},
	{"PFMERGE", [][]string{{"PFADD", "k:hll", "x"}, {"PFMERGE", "k:nil", "k:hll"}}},
	{"PFDEBUG TODENSE", [][]string{{"DEL", "k:a"}, {"PFADD", "k:a", "x"}, {"GET", "k:a"}, {"PFDEBUG", "TODENSE", "k:a"}}},
	{"RENAME", [][]string{{"RENAME", "k:a", "k:b"}}},
	{"RENAME onto itself", [][]string{{"RENAME", "k:a", "k:a"}}},
	{"RENAMENX", [][]string{{"RENAMENX", "k:a", "k:nil"}}},
	{"COPY REPLACE", [][]string{{"COPY", "k:a", "k:b", "REPLACE"}}},
	{"MOVE", [][]string{{"MOVE", "k:a", "1"}}},
	{"RESTORE REPLACE", [][]string{{"RESTORE", "k:a", "0", outsideDump, "REPLACE"}}},
	{"RESTORE-ASKING", [][]string{{"RESTORE-ASKING", "k:nil", "0", outsideDump}}},
	{"EXPIRE 0", [][]string{{"EXPIRE", "k:a", "0"}}},
	{"PEXPIRE negative", [][]string{{"PEXPIRE", "k:h", "-5"}}},
	{"EXPIRE XX, then LT", [][]string{{"EXPIRE", "k:a", "100", "NX"}, {"EXPIRE", "k:a", "0", "LT"}}},
	{"EXPIRE GT", [][]string{{"EXPIRE", "k:a", "100"}, {"PEXPIRE", "k:a", "200000", "GT"}}},
	{"EXPIREAT in the past", [][]string{{"EXPIREAT", "k:b", "1"}}},
	{"PERSIST", [][]string{{"EXPIRE", "k:a", "100"}, {"PERSIST", "k:a"}}},
	{"UNLINK", [][]string{{"UNLINK", "k:a", "k:h"}}},
	{"LPUSH onto a nil", [][]string{{"LPUSH", "k:nil", "x"}}},
	{"LMOVE into a nil", [][]string{{"RPUSH", "k:l", "x"}, {"LMOVE", "k:l", "k:nil", "LEFT", "LEFT"}}},
	{"XADD onto a nil", [][]string{{"XADD", "k:nilh", "*", "f", "v"}}},
	{"SORT STORE", [][]string{{"RPUSH", "k:l", "3", "1"}, {"SORT", "k:l", "STORE", "k:a"}}},
	{"SORT BY nosort STORE", [][]string{{"RPUSH", "k:l", "3", "1"}, {"SORT", "k:l", "BY", "nosort", "STORE", "k:h"}}},
	{"ZUNIONSTORE", [][]string{{"ZADD", "k:z", "1", "m"}, {"ZUNIONSTORE", "k:a", "1", "k:z"}}},
	{"ZRANGESTORE", [][]string{{"ZADD", "k:z", "1", "m"}, {"ZRANGESTORE", "k:h", "k:z", "0", "-1"}}},
	{"SINTERSTORE", [][]string{{"SADD", "k:s", "m"}, {"SINTERSTORE", "k:b", "k:s"}}},
	{"GEORADIUS STORE", [][]string{{"GEOADD", "k:geo", "13.36", "38.11", "p"}, {"GEORADIUS", "k:geo", "15", "37", "200", "km", "STORE", "k:a"}}},
	{"GEORADIUSBYMEMBER STOREDIST", [][]string{{"GEOADD", "k:geo", "13.36", "38.11", "p"}, {"GEORADIUSBYMEMBER", "k:geo", "p", "200", "km", "STOREDIST", "k:nil"}}},
	{"GEOSEARCHSTORE", [][]string{{"GEOADD", "k:geo", "13.36", "38.11", "p"}, {"GEOSEARCHSTORE", "k:b", "k:geo", "FROMLONLAT", "15", "37", "BYRADIUS", "200", "km"}}},
	{"HSET a new field", [][]string{{"HSET", "k:h", "z", "new"}}},
	{"HMSET", [][]string{{"HMSET", "k:h", "f", "9", "z", "3"}}},
	{"HSETNX", [][]string{{"HSETNX", "k:h", "z", "3"}}},
	{"HINCRBY", [][]string{{"HINCRBY", "k:h", "f", "5"}}},
	{"HINCRBYFLOAT", [][]string{{"HINCRBYFLOAT", "k:h", "g", "1.5"}}},
	{"HDEL one field", [][]string{{"HDEL", "k:h", "f"}}},
	{"HDEL every field", [][]string{{"HDEL", "k:h", "f", "g"}}},
	{"HSET onto a nil", [][]string{{"HSET", "k:nilh", "f", "x"}}},
	{"EVAL with its key declared", [][]string{{"EVAL", "redis.call('set', KEYS[1], 'E') redis.call('hset', KEYS[2], 'f', 'E')", "2", "k:a", "k:h"}}},
	{"EVAL writing keys it does not declare", [][]string{{"EVAL", "redis.call('set', 'k:a', 'E') redis.call('hdel', 'k:h', 'g')", "0"}}},
	{"EVAL that fails after its write", [][]string{{"EVAL", "redis.call('set', 'k:a', 'E') error('boom')", "0"}}},
	{"EVAL that fails after writing its declared key", [][]string{{"EVAL", "redis.call('set', KEYS[1], 'E') return redis.call('incr', KEYS[2])", "2", "k:b", "k:h"}}},
	{"FCALL writing keys it does not declare", [][]string{
		{"FUNCTION", "LOAD", "REPLACE", "#!lua name=outside\nredis.register_function('outside', function(keys, args) redis.call('set', 'k:b', 'F') end)"},
		{"FCALL", "outside", "0"}}},
	{"MULTI", [][]string{{"MULTI"}, {"SET", "k:a", "M"}, {"HSET", "k:h", "f", "M"}, {"DEL", "k:b"}, {"EXEC"}}},
	{"MULTI with a failing command", [][]string{{"MULTI"}, {"SET", "k:a", "M"}, {"INCR", "k:a"}, {"EXEC"}}},
	{"MULTI with EVAL", [][]string{{"MULTI"}, {"EVAL", "redis.call('set', 'k:a', 'E')", "0"}, {"EXEC"}}},
	{"FLUSHALL ASYNC", [][]string{{"FLUSHALL", "ASYNC"}, {"SET", "k:c", "after"}}},
	{"MOVE, then SWAPDB", [][]string{{"MOVE", "k:a", "1"}, {"SWAPDB", "0", "1"}}},
	{"SWAPDB in MULTI", [][]string{{"MOVE", "k:b", "1"}, {"MULTI"}, {"SWAPDB", "1", "0"}, {"EXEC"}}},
	{"SWAPDB in a script", [][]string{{"MOVE", "k:h", "1"}, {"EVAL", "redis.call('swapdb', 0, 1)", "0"}}},
}

// outsideDump is DUMP's payload for the string "x" (Redis 7.0, RDB version 10).
const outsideDump = "\x00\x01x\n\x00\"\x80\x86_\xbd\xe8H\xd0"

// outsideWriteSetup returns Redis to the state every write of outsideWrites starts from and empties featcache's
// tier, then caches every read of outsideReads through c.
func outsideWriteSetup(t *testing.T, redis *redistest.Server, c *redistest.Conn) {
	t.Helper()
	for _, cmd := range [][]string{{"FLUSHALL"}, {"SET", "k:a", "v1"}, {"SET", "k:b", "v2"}, {"HSET", "k:h", "f", "1", "g", "2"}} {
		redis.Do(cmd...)
	}
	c.Do("CACHE", "FLUSH")
	for _, r := range outsideReads {
		c.Do(r...)
	}
}

// outsideWrite sends one command of the write named name and fails the test on an error reply the write does not
// expect.
func outsideWrite(t *testing.T, c *redistest.Conn, name string, cmd []string) {
	t.Helper()
	if got := c.Do(cmd...); got[0] == '-' && !strings.Contains(name, "fail") {
		t.Fatalf("%s: %q answered %q", name, cmd, got)
	}
}

// TestOutsideReadYourWritesOfEveryKind: with tracking off, only featcache's own invalidations keep a client from
// reading what a write through featcache replaced. Every write of outsideWrites is sent through featcache, and
// the very next reads, on the same connection and on another one, must answer exactly what Redis answers.
func TestOutsideReadYourWritesOfEveryKind(t *testing.T) {
	redis := redistest.Start(t)
	in := startBinary(t, redis, "shutdown_delay: 0s\nupstream:\n  tracking: false\n"+
		"policies:\n  - {name: k, prefix: \"k:\", soft_ttl: 1h, hard_ttl: 1h, jitter: 0, negative_ttl: 1h}\n")
	c := redistest.Dial(t, in.addr)
	other := redistest.Dial(t, in.addr)
	for _, w := range outsideWrites {
		outsideWriteSetup(t, redis, c)
		for _, cmd := range w.cmds {
			outsideWrite(t, c, w.name, cmd)
		}
		for _, r := range outsideReads {
			want := redis.Do(r...)
			if got := c.Do(r...); !bytes.Equal(got, want) {
				t.Errorf("%s, then %q on the writer's connection: %q; Redis: %q", w.name, r, got, want)
			}
			if got := other.Do(r...); !bytes.Equal(got, want) {
				t.Errorf("%s, then %q on another connection: %q; Redis: %q", w.name, r, got, want)
			}
		}
	}
}

// TestOutsideNeighbourWritesOfEveryKind: every write of outsideWrites made straight on Redis by another client is
// seen through featcache (tracking on) within the invalidation delay, or, for SWAPDB, which Redis does not
// announce, within one check interval plus upstream.timeout (docs/freshness.md: 2 s); the test allows 5 s.
func TestOutsideNeighbourWritesOfEveryKind(t *testing.T) {
	redis := redistest.Start(t)
	in := startBinary(t, redis, "shutdown_delay: 0s\n"+
		"policies:\n  - {name: k, prefix: \"k:\", soft_ttl: 1h, hard_ttl: 1h, jitter: 0, negative_ttl: 1h}\n")
	c := redistest.Dial(t, in.addr)
	neighbour := redis.Dial()
	for _, w := range outsideWrites {
		outsideWriteSetup(t, redis, c)
		for _, cmd := range w.cmds {
			outsideWrite(t, neighbour, w.name, cmd)
		}
		for _, r := range outsideReads {
			want := redis.Do(r...)
			redistest.Eventually(t, 5*time.Second, fmt.Sprintf("%s by another client, then %q through featcache: Redis's %q", w.name, r, want), func() bool {
				return bytes.Equal(c.Do(r...), want)
			})
		}
	}
}

// outsideTranscript sends payload on a new connection to addr, then ECHO of a marker, and returns every frame
// received before the marker's reply, HELLO's connection id zeroed.
func outsideTranscript(t *testing.T, addr string, payload []byte) []byte {
	t.Helper()
	c := redistest.Dial(t, addr)
	defer c.Close()
	marker := "$12\r\noutside:done\r\n"
	if _, err := c.NetConn().Write(append(payload, redistest.Encode("ECHO", "outside:done")...)); err != nil {
		t.Fatal(err)
	}
	var out []byte
	for {
		frame, err := c.ReadTimeout(10 * time.Second)
		if err != nil {
			t.Fatalf("after %q: %v", out, err)
		}
		if string(frame) == marker {
			break
		}
		if i := bytes.Index(frame, []byte("$2\r\nid\r\n:")); i >= 0 {
			j := i + len("$2\r\nid\r\n:")
			k := j + bytes.IndexByte(frame[j:], '\r')
			frame = append(append(append([]byte{}, frame[:j]...), '0'), frame[k:]...)
		}
		out = append(out, frame...)
	}
	return out
}

// TestOutsideReadYourWritesOffTheSharedPath: with tracking off, writes that travel outside the shared upstream
// connections or outside the usual request shape (a WATCH session, an interactive MULTI, CLIENT REPLY OFF and
// SKIP, inline commands, blocking commands that create a key featcache remembers as nil, a RESP3 client in
// subscribed mode, a pipeline that reads, writes and reads again) are followed by reads of their keys, on the same
// connection; the whole transcript must equal Redis's, byte for byte.
func TestOutsideReadYourWritesOffTheSharedPath(t *testing.T) {
	redis := redistest.Start(t)
	in := startBinary(t, redis, "shutdown_delay: 0s\nupstream:\n  tracking: false\n"+
		"policies:\n  - {name: k, prefix: \"k:\", soft_ttl: 1h, hard_ttl: 1h, jitter: 0, negative_ttl: 1h}\n")
	c := redistest.Dial(t, in.addr)
	enc := func(cmds ...[]string) []byte {
		var b []byte
		for _, cmd := range cmds {
			b = append(b, redistest.Encode(cmd...)...)
		}
		return b
	}
	var reads []byte
	for _, r := range outsideReads {
		reads = append(reads, redistest.Encode(r...)...)
	}
	cases := []struct {
		name    string
		payload []byte
	}{
		{"pipeline: read, write, read", append(append(enc([]string{"GET", "k:a"}, []string{"SET", "k:a", "P"}), reads...), enc([]string{"DEL", "k:a"}, []string{"GET", "k:a"})...)},
		{"WATCH session", append(enc([]string{"WATCH", "k:w"}, []string{"SET", "k:a", "W"}, []string{"HSET", "k:nilh", "f", "W"}, []string{"GET", "k:a"}, []string{"UNWATCH"}), reads...)},
		{"WATCH, MULTI, EXEC", append(enc([]string{"WATCH", "k:a"}, []string{"MULTI"}, []string{"SET", "k:a", "W"}, []string{"SET", "k:nil", "W"}, []string{"EXEC"}), reads...)},
		{"WATCH, EVAL writing undeclared keys", append(enc([]string{"WATCH", "k:w"}, []string{"EVAL", "redis.call('set', 'k:a', 'E')", "0"}, []string{"UNWATCH"}), reads...)},
		{"CLIENT REPLY OFF", append(enc([]string{"CLIENT", "REPLY", "OFF"}, []string{"SET", "k:a", "R"}, []string{"HDEL", "k:h", "f"}, []string{"EVAL", "redis.call('set', 'k:b', 'E')", "0"}, []string{"CLIENT", "REPLY", "ON"}), reads...)},
		{"CLIENT REPLY SKIP", append(enc([]string{"CLIENT", "REPLY", "SKIP"}, []string{"SET", "k:a", "R"}), reads...)},
		{"inline commands", append([]byte("SET k:a inline\r\nHSET k:h f inline\r\nGET k:a\r\nHGET k:h f\r\n"), reads...)},
		{"BLMOVE into a nil", append(enc([]string{"RPUSH", "k:l", "x"}, []string{"BLMOVE", "k:l", "k:nil", "LEFT", "LEFT", "1"}), reads...)},
		{"BRPOPLPUSH into a nil", append(enc([]string{"RPUSH", "k:l", "x"}, []string{"BRPOPLPUSH", "k:l", "k:nil", "1"}), reads...)},
		{"BLMPOP empties a key", append(enc([]string{"DEL", "k:a"}, []string{"RPUSH", "k:a", "x"}, []string{"GET", "k:a"}, []string{"BLMPOP", "1", "1", "k:a", "LEFT"}), reads...)},
		{"RESP3", append(enc([]string{"HELLO", "3"}, []string{"SET", "k:a", "3"}, []string{"HSET", "k:nilh", "f", "3"}), reads...)},
		{"RESP3, subscribed", append(enc([]string{"HELLO", "3"}, []string{"SUBSCRIBE", "ch"}, []string{"SET", "k:a", "3"}, []string{"EVAL", "redis.call('hset', 'k:h', 'f', 'E')", "0"}), reads...)},
		{"MULTI with a queue-time error", append(enc([]string{"MULTI"}, []string{"SET", "k:a", "M"}, []string{"SET", "k:a"}, []string{"EXEC"}), reads...)},
		{"DISCARD", append(enc([]string{"MULTI"}, []string{"SET", "k:a", "M"}, []string{"DISCARD"}), reads...)},
	}
	for _, tc := range cases {
		outsideWriteSetup(t, redis, c)
		got := outsideTranscript(t, in.addr, tc.payload)
		outsideWriteSetup(t, redis, c)
		want := outsideTranscript(t, redis.Addr(), tc.payload)
		if !bytes.Equal(got, want) {
			t.Errorf("%s:\nfeatcache %q\nRedis     %q", tc.name, got, want)
		}
	}
}

// TestOutsideMgetErrorWhileRedisFails: an MGET of cached keys that are not in memory, while Redis is stopped or
// down, gets featcache's error for what happened (docs/upstream-faults.md: the fill's timeout, the dial error), as
// GET does. It got "-ERR featcache upstream unavailable: featcache internal error": the transaction's error was
// read before the round trip's error was recorded.
func TestOutsideMgetErrorWhileRedisFails(t *testing.T) {
	redis := redistest.Start(t)
	in := startBinary(t, redis, "shutdown_delay: 0s\nupstream:\n  timeout: 300ms\n"+
		"policies:\n  - {name: k, prefix: \"k:\", hard_ttl: 1h}\n")
	c := redistest.Dial(t, in.addr)
	redis.Do("SET", "k:1", "v")

	redis.Pause()
	got := string(c.Do("MGET", "k:1", "k:2"))
	redis.Resume()
	if want := "-ERR featcache upstream timeout: Redis did not answer in time (the command may have been applied)\r\n"; got != want {
		t.Errorf("MGET while Redis is stopped: %q; want %q", got, want)
	}

	redis.Kill()
	got = string(c.Do("MGET", "k:1", "k:2"))
	if want := "-ERR featcache upstream unavailable: upstream: dial " + redis.Addr(); !strings.HasPrefix(got, want) {
		t.Errorf("MGET while Redis is down: %q; want %q...", got, want)
	}
	for _, r := range [][]string{{"GET", "k:1"}, {"HGETALL", "k:h"}, {"HMGET", "k:h", "f"}, {"MGET", "k:1", "k:1"}} {
		if got := string(c.Do(r...)); strings.Contains(got, "internal") {
			t.Errorf("%q while Redis is down: %q", r, got)
		}
	}
}

// TestOutsideHardTTLWithoutTracking: with tracking off, featcache cannot see writes made straight on Redis, and
// hard_ttl is the bound: no read may return a value overwritten more than hard_ttl before it began (jitter only
// shortens deadlines; soft-stale reads are answered from memory while the background refresh runs). One writer
// per key, straight on Redis; readers of GET, MGET and HGETALL through featcache.
func TestOutsideHardTTLWithoutTracking(t *testing.T) {
	const hardTTL = 300 * time.Millisecond
	// The reader's and writer's clock reads around their round trips, and a fill's own round trip on a loaded machine.
	const slack = 100 * time.Millisecond
	redis := redistest.Start(t)
	in := startBinary(t, redis, fmt.Sprintf(`
shutdown_delay: 0s
upstream:
  tracking: false
policies:
  - {name: k, prefix: "k:", soft_ttl: 100ms, hard_ttl: %v, jitter: 0.5}
  - {name: g, prefix: "g:", hard_ttl: %v, jitter: 0}
  - {name: h, prefix: "h:", soft_ttl: 1ms, hard_ttl: %v, jitter: 0}
`, hardTTL, hardTTL, hardTTL))
	writes := map[string]func(seq string) []string{
		"k:0": func(s string) []string { return []string{"SET", "k:0", s} },
		"g":   func(s string) []string { return []string{"MSET", "g:0", s, "g:1", s} },
		"h:0": func(s string) []string { return []string{"HSET", "h:0", "f0", s, "f1", s} },
	}
	log := newWriteLog()
	var violations, reads atomic.Int64
	var loops testkit.Loops
	for name, cmd := range writes {
		redis.Do(cmd("0")...)
		c := &outsideConn{t: t, addr: redis.Addr()}
		loops.Go(func(i int) bool {
			time.Sleep(time.Duration(rand.IntN(3)) * time.Millisecond)
			seq := int64(i + 1)
			if frame, err := c.do(cmd(strconv.FormatInt(seq, 10))...); err != nil || frame[0] == '-' {
				t.Errorf("%s: %q %v", name, frame, err)
				return false
			}
			log.ack(name, "redis", seq, time.Now())
			return true
		})
	}
	ops := []seqRead{
		{"k:0", []string{"GET", "k:0"}, oneSeq},
		{"g", []string{"MGET", "g:0", "g:1"}, arraySeqs},
		{"g", []string{"GET", "g:1"}, oneSeq},
		{"h:0", []string{"HGETALL", "h:0"}, hashSeqs},
		{"h:0", []string{"HGET", "h:0", "f1"}, oneSeq},
	}
	for r := 0; r < 3; r++ {
		c := &outsideConn{t: t, addr: in.addr}
		loops.Go(func(int) bool {
			op := ops[rand.IntN(len(ops))]
			began := time.Now()
			frame, err := c.do(op.args...)
			vals, ok := op.values(frame)
			if err != nil || !ok {
				t.Errorf("%q: %q %v", op.args, frame, err)
				return false
			}
			reads.Add(1)
			for _, v := range vals {
				if at, ok := log.overwrittenAt(op.name, v); ok && began.Sub(at) > hardTTL+slack {
					if violations.Add(1) <= 10 {
						t.Errorf("%q: %d, overwritten %v before the read began; hard_ttl %v", op.args, v, began.Sub(at), hardTTL)
					}
				}
			}
			return true
		})
	}
	time.Sleep(3 * time.Second) // how long the load runs
	loops.Stop()
	t.Logf("%d reads checked, %d violations", reads.Load(), violations.Load())
}

// TestOutsideServeStaleNeverAnswersWhatRedisReplaced: with on_upstream_error serve_stale, featcache answers from
// memory past hard_ttl while Redis fails (here: stopped), but never a value it knows Redis replaced: a key another
// client wrote or deleted (its invalidation arrived), a hash whose field another client deleted, a key the client
// itself wrote through featcache (even when that write timed out: it may apply), nor past the key's own expiry.
func TestOutsideServeStaleNeverAnswersWhatRedisReplaced(t *testing.T) {
	redis := redistest.Start(t)
	in := startBinary(t, redis, `
shutdown_delay: 0s
upstream:
  timeout: 300ms
  command_timeout: 300ms
policies:
  - {name: s, prefix: "s:", soft_ttl: 200ms, hard_ttl: 400ms, jitter: 0, on_upstream_error: serve_stale, max_stale: 1h}
`)
	c := redistest.Dial(t, in.addr)
	for _, cmd := range [][]string{
		{"SET", "s:kept", "same"}, {"SET", "s:set", "old"}, {"SET", "s:del", "old"}, {"SET", "s:own", "old"},
		{"HSET", "s:h", "f", "same", "g", "old"},
	} {
		redis.Do(cmd...)
	}
	redis.Do("SET", "s:ttl", "old", "PX", "2500")
	expired := time.Now().Add(2500 * time.Millisecond) // s:ttl is gone from Redis by then
	reads := [][]string{{"GET", "s:kept"}, {"GET", "s:set"}, {"GET", "s:del"}, {"GET", "s:own"}, {"GET", "s:ttl"},
		{"HGETALL", "s:h"}, {"HGET", "s:h", "g"}, {"HMGET", "s:h", "f", "g"}, {"MGET", "s:set", "s:kept"}}
	for _, r := range reads {
		c.Do(r...)
	}
	// Another client changes what featcache cached; featcache sees it.
	redis.Do("SET", "s:set", "new")
	redis.Do("DEL", "s:del")
	redis.Do("HDEL", "s:h", "g")
	for _, r := range reads {
		want := redis.Do(r...)
		redistest.Eventually(t, 2*time.Second, fmt.Sprintf("%q through featcache equal to Redis's %q", r, want), func() bool {
			return bytes.Equal(c.Do(r...), want)
		})
	}
	time.Sleep(500 * time.Millisecond) // every entry past its hard_ttl: only serve_stale answers from here
	redis.Pause()
	defer redis.Resume()
	if got := string(c.Do("SET", "s:own", "new")); !strings.HasPrefix(got, "-ERR featcache upstream timeout") {
		t.Fatalf("SET while Redis is stopped: %q", got)
	}
	if got := string(c.Do("GET", "s:kept")); got != "$4\r\nsame\r\n" {
		t.Logf("GET s:kept while Redis is stopped: %q (serve_stale did not answer)", got)
	}
	for {
		for _, r := range reads[1:] {
			if r[1] == "s:ttl" && time.Now().Before(expired) {
				continue // Redis still holds it
			}
			if got := c.Do(r...); bytes.Contains(got, []byte("old")) {
				t.Errorf("%q while Redis is stopped: %q, a value Redis no longer holds (or may not)", r, got)
			}
		}
		if time.Now().After(expired.Add(300 * time.Millisecond)) {
			break
		}
		time.Sleep(100 * time.Millisecond) // read again later, past s:ttl's expiry
	}
}

// TestOutsideKeysExpiringWhileCached: keys given a TTL straight on Redis (PX, PEXPIRE, a hash, an MGET's key) are
// read through featcache in a loop; once the TTL has passed, no read may return the value, with tracking on and
// off (featcache reads PTTL with every fill), and with Redis's active expiry off (DEBUG SET-ACTIVE-EXPIRE 0: the
// expired keys stay in Redis's memory, unannounced, until something reads them).
func TestOutsideKeysExpiringWhileCached(t *testing.T) {
	redis := redistest.Start(t, "--enable-debug-command", "yes")
	on := startBinary(t, redis, outsideConfig)
	off := startBinary(t, redis, "shutdown_delay: 0s\nupstream:\n  tracking: false\n"+
		"policies:\n  - {name: k, prefix: \"k:\", soft_ttl: 1h, hard_ttl: 1h, jitter: 0}\n")
	reads := [][]string{{"GET", "k:e"}, {"HGET", "k:h", "f"}, {"HGETALL", "k:h2"}, {"HMGET", "k:h3", "f", "g"}, {"MGET", "k:m", "k:kept"}}
	for _, activeExpire := range []string{"1", "0"} {
		redis.Do("DEBUG", "SET-ACTIVE-EXPIRE", activeExpire)
		for _, ttl := range []int{150, 250} {
			ms := strconv.Itoa(ttl)
			for _, cmd := range [][]string{{"SET", "k:kept", "kept"}, {"SET", "k:e", "v", "PX", ms}, {"HSET", "k:h", "f", "v"}, {"PEXPIRE", "k:h", ms},
				{"HSET", "k:h2", "f", "v"}, {"PEXPIRE", "k:h2", ms}, {"HSET", "k:h3", "f", "v", "g", "v"}, {"PEXPIRE", "k:h3", ms}, {"SET", "k:m", "v", "PX", ms}} {
				redis.Do(cmd...)
			}
			// Redis counts expiry in whole milliseconds (a key lives until the millisecond after its deadline).
			expired := time.Now().Add(time.Duration(ttl)*time.Millisecond + 2*time.Millisecond)
			cs := []*redistest.Conn{redistest.Dial(t, on.addr), redistest.Dial(t, off.addr)}
			for time.Now().Before(expired.Add(200 * time.Millisecond)) {
				for i, c := range cs {
					for _, r := range reads {
						began := time.Now()
						if got := c.Do(r...); bytes.Contains(got, []byte("$1\r\nv\r\n")) && began.After(expired) {
							t.Fatalf("active expiry %s, tracking %v: %q %v after the key's expiry: %q", activeExpire, i == 0, r, began.Sub(expired), got)
						}
					}
				}
			}
		}
	}
}
