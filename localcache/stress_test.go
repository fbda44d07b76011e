package localcache

import (
	"bytes"
	"math/rand/v2"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"featcache/internal/resp"
	"featcache/internal/testkit"
)

// TestStressInvariants runs readers (AppendGet, and Acquire/Complete on a miss or a soft-stale hit),
// writers (bump a key's version upstream, then Invalidate it), a flusher that also drops and restores
// trust, and a clock that keeps moving, all on a few keys, and checks:
//
//   - invariant 2: no lookup serves, and no fill hands a waiter, a value older than the latest
//     invalidation of its key that completed before the lookup began;
//   - invariant 5: never two fills of one key in flight for the same generation and epoch.
//
// Values carry the upstream version they were read at. Run it with -race.
func TestStressInvariants(t *testing.T) {
	const (
		nKeys   = 8
		readers = 8
	)
	ops := stressOps(20000, 2000)
	clk := newClock(t0)
	c := newTestCache(t, clk, nil)
	p := &Policy{SoftTTL: 20 * ms, HardTTL: 50 * ms, Jitter: 0.3, ServeStale: true, MaxStale: 20 * ms}
	m := newStressModel(nKeys)

	type fillID struct {
		fl         *flight
		gen, stamp uint64
	}
	var inflightMu sync.Mutex
	inflight := map[fillID]bool{}

	for w := range 2 {
		r := rand.New(rand.NewPCG(uint64(w), 1))
		m.background(func(int) { m.write(c, r.IntN(nKeys)) })
	}
	m.background(func(i int) {
		switch i % 64 {
		case 0:
			c.Flush()
		case 32:
			c.SetTrusted(false)
			runtime.Gosched()
			c.SetTrusted(true)
		}
	})
	m.background(func(i int) {
		if i%100 == 0 {
			clk.Add(40 * ms) // jump past soft and hard deadlines now and then
		} else {
			clk.Add(ms)
		}
	})

	var served, led, waited atomic.Int64
	start := time.Now()
	m.readers(readers, ops, 2, func(r *rand.Rand, buf []byte, k int, floor uint64) ([]byte, bool) {
		var lk Lookup
		buf, lk = c.AppendGet(buf[:0], m.keys[k], p, clk.Now(), r.IntN(4) == 0)
		if lk.State != StateMiss {
			served.Add(1)
			if !m.servedNewEnough(t, buf, k, floor) {
				return buf, false
			}
			if lk.State != StateStale {
				return buf, true
			}
		}
		f, leader := c.Acquire(m.keys[k])
		if leader {
			led.Add(1)
			id := fillID{f.flight, f.gen, f.stamp}
			inflightMu.Lock()
			if inflight[id] {
				t.Errorf("two fills of %s in flight for generation %d stamp %x", m.keys[k], f.gen, f.stamp)
			}
			inflight[id] = true
			inflightMu.Unlock()

			runtime.Gosched() // widen the window for invalidations and joins
			res := m.fetch(k)

			inflightMu.Lock()
			delete(inflight, id)
			inflightMu.Unlock()
			c.Complete(f, res, p)
		} else {
			waited.Add(1)
		}
		return buf, m.fillNewEnough(t, f, k, floor)
	})
	elapsed := time.Since(start)
	m.stop()

	if n := flightsHeld(c); n != 0 {
		t.Errorf("%d flights held after every fill completed", n)
	}
	s := c.Stats()
	t.Logf("%v: %d lookups, %d served, %d fills led, %d joined; stats %+v", elapsed, readers*ops, served.Load(), led.Load(), waited.Load(), s)
	if served.Load() == 0 || s.FillsStored == 0 || s.FillsDiscarded == 0 || s.FillsJoined == 0 {
		t.Errorf("the run did not exercise hits, stores, discards and joins: %+v", s)
	}
}

// stressOps is how many lookups each reader of a stress test makes: full, or short with -short.
func stressOps(full, short int) int {
	if testing.Short() {
		return short
	}
	return full
}

// stressModel is the upstream of a stress test and what the test knows of it: a version per key, read by fills
// and bumped by writes, and for each key the highest version whose invalidation has returned. It also runs the
// test's background loops. Its methods are safe for concurrent use.
type stressModel struct {
	keys [][]byte

	mu  sync.Mutex
	ver []uint64

	// invalidated[k] is the highest version of k whose invalidation has returned.
	invalidated []atomic.Uint64

	bg testkit.Loops
}

// newStressModel returns a model of nKeys keys, "feature:0" to "feature:<nKeys-1>", all at version 0.
func newStressModel(nKeys int) *stressModel {
	m := &stressModel{keys: make([][]byte, nKeys), ver: make([]uint64, nKeys), invalidated: make([]atomic.Uint64, nKeys)}
	for k := range m.keys {
		m.keys[k] = []byte("feature:" + strconv.Itoa(k))
	}
	return m
}

// background runs loop(0), loop(1), ... on a goroutine of its own until stop, yielding between calls.
func (m *stressModel) background(loop func(i int)) {
	m.bg.Go(func(i int) bool {
		loop(i)
		runtime.Gosched()
		return true
	})
}

// readers runs n reader goroutines and waits for them. Each makes ops reads of random keys (its random source
// seeded by its index and seed): read(r, buf, k, floor) reads key k, with buf for the reply, for a lookup that began
// when floor was k's latest returned invalidation, and returns buf and whether the goroutine goes on.
func (m *stressModel) readers(n, ops int, seed uint64, read func(r *rand.Rand, buf []byte, k int, floor uint64) ([]byte, bool)) {
	var wg sync.WaitGroup
	for g := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), seed))
			buf := make([]byte, 0, 64)
			for range ops {
				k := r.IntN(len(m.keys))
				var ok bool
				if buf, ok = read(r, buf, k, m.invalidated[k].Load()); !ok {
					return
				}
			}
		}()
	}
	wg.Wait()
}

// stop ends the background loops and waits for them.
func (m *stressModel) stop() { m.bg.Stop() }

// write bumps key k's version upstream, then invalidates k in c, and records the invalidation as returned.
func (m *stressModel) write(c *Cache, k int) {
	m.mu.Lock()
	m.ver[k]++
	v := m.ver[k]
	m.mu.Unlock()
	c.Invalidate(m.keys[k])
	for old := m.invalidated[k].Load(); old < v && !m.invalidated[k].CompareAndSwap(old, v); old = m.invalidated[k].Load() {
	}
}

// fetch is what a fill of key k reads upstream now: "k<k>:v<version>".
func (m *stressModel) fetch(k int) Result {
	m.mu.Lock()
	v := m.ver[k]
	m.mu.Unlock()
	runtime.Gosched()
	return Result{Value: []byte("k" + strconv.Itoa(k) + ":v" + strconv.FormatUint(v, 10)), PTTL: NoExpiry}
}

// servedNewEnough reports whether reply, served for key k by a lookup that began when floor was k's latest
// returned invalidation, is no older than floor; it reports an older one as a test error.
func (m *stressModel) servedNewEnough(t *testing.T, reply []byte, k int, floor uint64) bool {
	if v, ok := versionOf(t, reply, k); ok && v < floor {
		t.Errorf("served %s version %d after the invalidation of version %d returned", m.keys[k], v, floor)
		return false
	}
	return true
}

// fillNewEnough is servedNewEnough for what fill f hands a read of key k.
func (m *stressModel) fillNewEnough(t *testing.T, f *Fill, k int, floor uint64) bool {
	res := f.Result()
	reply := []byte("$" + strconv.Itoa(len(res.Value)) + "\r\n" + string(res.Value) + "\r\n")
	if v, ok := versionOf(t, reply, k); ok && v < floor {
		t.Errorf("fill of %s handed version %d to a read that began after the invalidation of version %d", m.keys[k], v, floor)
		return false
	}
	return true
}

// versionOf parses the version out of a bulk reply "k<k>:v<version>". It reports a malformed reply as a test error
// (it runs on reader goroutines, so it must not call Fatal).
func versionOf(t *testing.T, reply []byte, k int) (uint64, bool) {
	prefix := []byte("k" + strconv.Itoa(k) + ":v")
	value, isNil, ok := resp.BulkPayload(reply)
	if !ok || isNil || !bytes.HasPrefix(value, prefix) {
		t.Errorf("reply %q is not a value of key %d", reply, k)
		return 0, false
	}
	v, err := strconv.ParseUint(string(value[len(prefix):]), 10, 64)
	if err != nil {
		t.Errorf("reply %q: %v", reply, err)
		return 0, false
	}
	return v, true
}
