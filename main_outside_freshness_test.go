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
)

// These tests look at featcache from outside, as an application sharing its Redis would: they start a real
// redis-server and the real featcache binary, send the same commands straight to Redis and through featcache, and
// compare the reply bytes, or check that no read through featcache returns a value Redis no longer held when the
// read began (beyond the bounds docs/freshness.md gives).

// outsideConfig caches "k:", "g:" and "h:" keys for an hour, so that a value served past its invalidation shows.
const outsideConfig = `
shutdown_delay: 0s
policies:
  - {name: k, prefix: "k:", soft_ttl: 1h, hard_ttl: 1h, jitter: 0}
  - {name: g, prefix: "g:", soft_ttl: 1h, hard_ttl: 1h, jitter: 0}
  - {name: h, prefix: "h:", soft_ttl: 1h, hard_ttl: 1h, jitter: 0}
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

// TestOutsideCheckerUnderFaults runs writers straight to Redis and through two featcache instances, each name
// (three strings, an MSET group of three keys, a hash of four fields) written by one writer with increasing
// sequence numbers, and readers of GET, MGET, HGETALL and HMGET on both instances, while featcache's tracking
// connections are killed (CLIENT KILL ID), all its connections are killed, and Redis is stopped (SIGSTOP) for a
// while. Every read is checked: read-your-writes per instance, monotonic per reader, one instant per multi-key
// reply, and no value whose successor was acknowledged more than staleBound before the read began.
func TestOutsideCheckerUnderFaults(t *testing.T) {
	const staleBound = 2 * time.Second
	redis := redistest.Start(t)
	a := startBinary(t, redis, outsideConfig)
	b := startBinary(t, redis, outsideConfig)
	paths := map[string]string{"redis": redis.Addr(), "A": a.addr, "B": b.addr}
	routes := []string{"redis", "A", "B"}

	log := &writeLog{acked: map[string]map[int64]time.Time{}, lastVia: map[string]map[string]int64{}}
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
	stop := make(chan struct{})
	var wg sync.WaitGroup

	for name, cmd := range writes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conns := map[string]*outsideConn{}
			for _, r := range routes {
				conns[r] = &outsideConn{t: t, addr: paths[r]}
			}
			for seq := int64(1); ; seq++ {
				select {
				case <-stop:
					return
				default:
				}
				via := routes[rand.IntN(len(routes))]
				frame, err := conns[via].do(cmd(strconv.FormatInt(seq, 10))...)
				if err != nil || frame[0] == '-' {
					// Lost with a killed connection: it may or may not have been applied, but not later than now
					// (forwarded writes have no timeout), so the next sequence number still follows it.
					continue
				}
				log.ack(name, via, seq, time.Now())
				writesDone.Add(1)
			}
		}()
	}

	type readOp struct {
		name string
		args []string
		// values turns a reply into the sequence numbers it holds; every one of them must be the same.
		values func(frame []byte) ([]int64, bool)
	}
	single := func(frame []byte) ([]int64, bool) {
		n, ok := bulkSeq(frame)
		return []int64{n}, ok
	}
	ops := []readOp{
		{"k:0", []string{"GET", "k:0"}, single},
		{"k:1", []string{"GET", "k:1"}, single},
		{"k:2", []string{"GET", "k:2"}, single},
		{"g", []string{"MGET", "g:0", "g:1", "g:2"}, func(f []byte) ([]int64, bool) { return seqElems(f, false) }},
		{"g", []string{"GET", "g:1"}, single},
		{"h:0", []string{"HGETALL", "h:0"}, func(f []byte) ([]int64, bool) { return seqElems(f, true) }},
		{"h:0", []string{"HMGET", "h:0", "f0", "f3"}, func(f []byte) ([]int64, bool) { return seqElems(f, false) }},
		{"h:0", []string{"HGET", "h:0", "f2"}, single},
	}
	for _, inst := range []string{"A", "B", "A", "B", "redis"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &outsideConn{t: t, addr: paths[inst]}
			seen := map[string]int64{}
			for {
				select {
				case <-stop:
					return
				default:
				}
				op := ops[rand.IntN(len(ops))]
				own := log.ackedVia(op.name, inst)
				began := time.Now()
				frame, err := c.do(op.args...)
				if err != nil || (len(frame) > 0 && frame[0] == '-') {
					continue // featcache's upstream errors while Redis is stopped
				}
				vals, ok := op.values(frame)
				if !ok || len(vals) == 0 {
					violate("%s %q through %s: unexpected reply %q", op.args[0], op.args[1:], inst, frame)
					continue
				}
				reads.Add(1)
				for _, v := range vals[1:] {
					if v != vals[0] {
						violate("%s %q through %s: %v mixes writes; Redis never held it", op.args[0], op.args[1:], inst, vals)
						break
					}
				}
				v := vals[0]
				if v < seen[op.name] {
					violate("%s %q through %s: %d after this reader saw %d", op.args[0], op.args[1:], inst, v, seen[op.name])
				}
				seen[op.name] = max(seen[op.name], v)
				if inst != "redis" && v < own {
					violate("%s %q through %s: %d after write %d through the same instance was acknowledged", op.args[0], op.args[1:], inst, v, own)
				}
				if at, ok := log.overwrittenAt(op.name, v); ok && began.Sub(at) > staleBound {
					violate("%s %q through %s: %d, overwritten %v before the read began", op.args[0], op.args[1:], inst, v, began.Sub(at))
				}
			}
		}()
	}

	// The faults, one at a time.
	wg.Add(1)
	go func() {
		defer wg.Done()
		admin := &outsideConn{t: t, addr: redis.Addr()}
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(300 * time.Millisecond):
			}
			switch i % 3 {
			case 0, 1:
				prefix := "featcache-tracking"
				if i%3 == 1 {
					prefix = "featcache"
				}
				killClients(admin, prefix)
			case 2:
				redis.Pause()
				time.Sleep(400 * time.Millisecond) // how long Redis stays stopped: the fault itself
				redis.Resume()
			}
			faults.Add(1)
		}
	}()

	time.Sleep(8 * time.Second) // how long the load runs
	close(stop)
	wg.Wait()
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
	log := &writeLog{acked: map[string]map[int64]time.Time{}, lastVia: map[string]map[string]int64{}}
	clients := []*trackingClient{
		newTrackingClient(t, in.addr, true),
		newTrackingClient(t, in.addr, true, "BCAST", "PREFIX", "k:", "PREFIX", "u:"),
		newTrackingClient(t, in.addr, true, "OPTIN"),
		newTrackingClient(t, in.addr, false),
		newTrackingClient(t, in.addr, false, "BCAST"),
	}
	var violations, hits, writesDone atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, key := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conns := map[string]*outsideConn{"redis": {t: t, addr: redis.Addr()}, "A": {t: t, addr: in.addr}}
			for seq := int64(1); ; seq++ {
				select {
				case <-stop:
					return
				default:
				}
				via := []string{"redis", "A"}[rand.IntN(2)]
				if frame, err := conns[via].do("SET", key, strconv.FormatInt(seq, 10)); err != nil || frame[0] == '-' {
					t.Errorf("SET %s through %s: %q %v", key, via, frame, err)
					return
				}
				log.ack(key, via, seq, time.Now())
				writesDone.Add(1)
				if seq%64 == 0 {
					time.Sleep(time.Millisecond) // let readers keep values in their memory for a while
				}
			}
		}()
	}
	for ci, tc := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				key := keys[rand.IntN(len(keys))]
				began := time.Now()
				v, hit, err := tc.get(key)
				if err != nil {
					t.Errorf("client %d: %v", ci, err)
					return
				}
				if hit {
					hits.Add(1)
				}
				if at, ok := log.overwrittenAt(key, v); ok && began.Sub(at) > staleBound {
					if violations.Add(1) <= 10 {
						t.Errorf("client %d (hit %v): %s = %d, overwritten %v before the read", ci, hit, key, v, began.Sub(at))
					}
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		admin := &outsideConn{t: t, addr: redis.Addr()}
		for {
			select {
			case <-stop:
				return
			case <-time.After(250 * time.Millisecond):
			}
			killClients(admin, "featcache-tracking")
		}
	}()
	time.Sleep(5 * time.Second) // how long the load runs
	close(stop)
	wg.Wait()
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

// killClients kills, with CLIENT KILL ID, every connection of Redis whose name starts with prefix.
func killClients(admin *outsideConn, prefix string) {
	list, err := admin.do("CLIENT", "LIST")
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(list), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 4 || !strings.HasPrefix(fields[3], "name="+prefix) {
			continue
		}
		admin.do("CLIENT", "KILL", "ID", strings.TrimPrefix(fields[0], "id="))
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
	revalidate := [][]string{{"GET", "r:1"}, {"HMGET", "r:h", "f", "g"}, {"HGETALL", "r:h"}}
	for _, cmd := range [][]string{{"SET", "k:1", "old"}, {"SET", "r:1", "old"}, {"SET", "s:1", "old"}, {"SET", "k:gone", "old"},
		{"HSET", "k:h", "f", "old"}, {"HSET", "r:h", "f", "old", "g", "old"}, {"HSET", "s:h", "f", "old"}, {"SAVE"}} {
		redis.Do(cmd...)
	}
	for _, cmd := range [][]string{{"SET", "k:1", "new"}, {"SET", "r:1", "new"}, {"SET", "s:1", "new"}, {"DEL", "k:gone"},
		{"HSET", "k:h", "f", "new", "x", "new"}, {"HSET", "r:h", "f", "new", "g", "new"}, {"HSET", "s:h", "f", "new", "x", "new"}} {
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
