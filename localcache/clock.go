package localcache

import (
	"sync/atomic"
	"time"
)

// Clock reads are on the hit path: freecache reads its timer on every lookup, and the proxy reads the time once
// per pipeline. On a VM with kvm-clock one read costs about 30 ns and time.Now makes two (wall and monotonic).

// monotonicClock returns a clock that reads the wall clock once and only the monotonic clock afterwards: one
// read per call. Entries live in this process's memory only, so a clock that NTP cannot step is the right one
// for their deadlines anyway.
func monotonicClock() func() time.Time {
	base := time.Now()
	return func() time.Time { return base.Add(time.Since(base)) }
}

// coarseTimerPeriod is how often the coarse timer refreshes the seconds freecache reads.
const coarseTimerPeriod = 100 * time.Millisecond

// coarseTimer gives freecache whole seconds from a value refreshed in the background, so a lookup does not read
// the clock. freecache uses the timer for its own whole-second expiry and its access times; the deadlines that
// decide what is served are in each entry's header and checked against the exact clock, so a timer late by a
// period costs nothing but an entry dropped that much earlier (Complete adds a second to freecache's expiry
// for that).
type coarseTimer struct {
	sec  atomic.Uint32
	done chan struct{}
}

func newCoarseTimer() *coarseTimer {
	t := &coarseTimer{done: make(chan struct{})}
	t.sec.Store(uint32(time.Now().Unix()))
	go func() {
		tick := time.NewTicker(coarseTimerPeriod)
		defer tick.Stop()
		for {
			select {
			case <-t.done:
				return
			case now := <-tick.C:
				t.sec.Store(uint32(now.Unix()))
			}
		}
	}()
	return t
}

// Now returns the current unix second, at most about a period late.
func (t *coarseTimer) Now() uint32 { return t.sec.Load() }

func (t *coarseTimer) stop() { close(t.done) }

// clockTimer gives freecache an injected clock, in the whole seconds freecache uses.
type clockTimer struct{ now func() time.Time }

func (t clockTimer) Now() uint32 { return uint32(t.now().Unix()) }

// Now is the cache's clock: the injected Options.Now, or a monotonic clock read once per call. Callers that
// pass a time to AppendGet should use it.
func (c *Cache) Now() time.Time { return c.now() }

// Clock returns the cache's clock itself, for a caller that reads it on every request: calling it costs one
// call, where the method value c.Now costs two more.
func (c *Cache) Clock() func() time.Time { return c.now }

// Close stops the cache's background timer. The cache must not be used afterwards.
func (c *Cache) Close() {
	if c.stopTimer != nil {
		c.stopTimer()
	}
}
