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
	ops := 20000
	if testing.Short() {
		ops = 2000
	}
	clk := newClock(t0)
	c := newTestCache(t, clk, nil)
	p := &Policy{SoftTTL: 20 * ms, HardTTL: 50 * ms, Jitter: 0.3, ServeStale: true, MaxStale: 20 * ms}

	var keys [nKeys][]byte
	for k := range keys {
		keys[k] = []byte("feature:" + strconv.Itoa(k))
	}
	// upstream is the model store: a version per key, read by fills and bumped by writes.
	var upstream struct {
		sync.Mutex
		ver [nKeys]uint64
	}
	// invalidated[k] is the highest version of k whose invalidation has returned.
	var invalidated [nKeys]atomic.Uint64

	type fillID struct {
		fl         *flight
		gen, stamp uint64
	}
	var inflightMu sync.Mutex
	inflight := map[fillID]bool{}

	var stop atomic.Bool
	var bg sync.WaitGroup
	background := func(loop func(i int)) {
		bg.Add(1)
		go func() {
			defer bg.Done()
			for i := 0; !stop.Load(); i++ {
				loop(i)
				runtime.Gosched()
			}
		}()
	}
	for w := range 2 {
		r := rand.New(rand.NewPCG(uint64(w), 1))
		background(func(int) {
			k := r.IntN(nKeys)
			upstream.Lock()
			upstream.ver[k]++
			v := upstream.ver[k]
			upstream.Unlock()
			c.Invalidate(keys[k])
			for old := invalidated[k].Load(); old < v && !invalidated[k].CompareAndSwap(old, v); old = invalidated[k].Load() {
			}
		})
	}
	background(func(i int) {
		switch i % 64 {
		case 0:
			c.Flush()
		case 32:
			c.SetTrusted(false)
			runtime.Gosched()
			c.SetTrusted(true)
		}
	})
	background(func(i int) {
		if i%100 == 0 {
			clk.Add(40 * ms) // jump past soft and hard deadlines now and then
		} else {
			clk.Add(ms)
		}
	})

	var served, led, waited atomic.Int64
	var rw sync.WaitGroup
	start := time.Now()
	for g := range readers {
		rw.Add(1)
		go func() {
			defer rw.Done()
			r := rand.New(rand.NewPCG(uint64(g), 2))
			buf := make([]byte, 0, 64)
			for range ops {
				k := r.IntN(nKeys)
				floor := invalidated[k].Load()
				var lk Lookup
				buf, lk = c.AppendGet(buf[:0], keys[k], p, clk.Now(), r.IntN(4) == 0)
				if lk.State != StateMiss {
					served.Add(1)
					if v, ok := versionOf(t, buf, k); ok && v < floor {
						t.Errorf("served %s version %d after the invalidation of version %d returned", keys[k], v, floor)
						return
					}
					if lk.State != StateStale {
						continue
					}
				}
				f, leader := c.Acquire(keys[k])
				if leader {
					led.Add(1)
					id := fillID{f.flight, f.gen, f.stamp}
					inflightMu.Lock()
					if inflight[id] {
						t.Errorf("two fills of %s in flight for generation %d stamp %x", keys[k], f.gen, f.stamp)
					}
					inflight[id] = true
					inflightMu.Unlock()

					runtime.Gosched() // widen the window for invalidations and joins
					upstream.Lock()
					v := upstream.ver[k]
					upstream.Unlock()
					runtime.Gosched()
					res := Result{Value: []byte("k" + strconv.Itoa(k) + ":v" + strconv.FormatUint(v, 10)), PTTL: NoExpiry}

					inflightMu.Lock()
					delete(inflight, id)
					inflightMu.Unlock()
					c.Complete(f, res, p)
				} else {
					waited.Add(1)
				}
				res := f.Result()
				reply := []byte("$" + strconv.Itoa(len(res.Value)) + "\r\n" + string(res.Value) + "\r\n")
				if v, ok := versionOf(t, reply, k); ok && v < floor {
					t.Errorf("fill of %s handed version %d to a read that began after the invalidation of version %d", keys[k], v, floor)
					return
				}
			}
		}()
	}
	rw.Wait()
	elapsed := time.Since(start)
	stop.Store(true)
	bg.Wait()

	if n := flightsHeld(c); n != 0 {
		t.Errorf("%d flights held after every fill completed", n)
	}
	s := c.Stats()
	t.Logf("%v: %d lookups, %d served, %d fills led, %d joined; stats %+v", elapsed, readers*ops, served.Load(), led.Load(), waited.Load(), s)
	if served.Load() == 0 || s.FillsStored == 0 || s.FillsDiscarded == 0 || s.FillsJoined == 0 {
		t.Errorf("the run did not exercise hits, stores, discards and joins: %+v", s)
	}
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
