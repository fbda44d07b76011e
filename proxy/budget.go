package proxy

import (
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"time"
)

// budget is the byte allowance that every client's buffers beyond its baseline share (limits.max_clients_memory).
// It is safe for concurrent use.
type budget struct {
	limit int64
	used  atomic.Int64

	// With base > 0, the Go memory limit follows the reservations: base plus what is reserved, rounded down to
	// memoryStep, and never below floor (see follow and watchHeap). set is the limit last set; mu serializes
	// changing it, so that the last computed limit is the one in force.
	base  int64
	floor atomic.Int64
	set   atomic.Int64
	mu    sync.Mutex
}

// memoryStep is the granularity at which the Go memory limit follows the clients' reservations, so that it moves
// rarely (debug.SetMemoryLimit stops the world).
const memoryStep = 16 << 20

// gcRoom is the least the Go memory limit leaves for garbage above what the runtime holds for live objects (the
// tier's ring buffers and index, client buffers within their baselines, fills in flight) and for itself; and
// gcRoomShift makes it at least that fraction of the live heap (1/16), so that larger heaps, whose collections and
// returned-then-refaulted pages cost more, are collected no more often. With less, the garbage collector runs back
// to back and, past half the CPU, lets the heap overshoot the limit anyway: a 256MB tier whose 16 MiB index and a
// cold fill's pipelines (50 clients x 64 GETs) left it about 6 MiB measured 1,800 collections for 1,000,000 misses
// and upstream timeouts; with 12 MiB, 1,800 collections and 50% more CPU than with the 30 MiB it had before.
const (
	gcRoom      = 12 << 20
	gcRoomShift = 4
)

// floorSlack is how far the live heap must fall before watchHeap lowers the limit it raised, so that a heap
// that hovers does not move the limit (and stop the world) at every look.
const floorSlack = 8 << 20

// heapWatchPeriod is how often watchHeap compares the memory limit with the live heap.
const heapWatchPeriod = 100 * time.Millisecond

// take reserves n bytes if the allowance has them.
func (b *budget) take(n int64) bool {
	for {
		u := b.used.Load()
		if u+n > b.limit {
			return false
		}
		if b.used.CompareAndSwap(u, u+n) {
			b.follow(u + n)
			return true
		}
	}
}

// give returns n reserved bytes.
func (b *budget) give(n int64) { b.follow(b.used.Add(-n)) }

// follow keeps the Go memory limit at base plus the bytes reserved (used), in whole steps of memoryStep: the
// garbage collector keeps the heap near local.max_memory plus headroom while clients hold little, and lets it grow
// by what they were allowed to reserve when they hold more, instead of collecting continuously. The steps round
// down, so the limit never exceeds base + used: less than a step of reservations comes out of the headroom (a
// prefill's pipelines reserve a few hundred KiB, which rounded up would have let the heap grow 16MB). The limit
// is never below floor either: see watchHeap.
func (b *budget) follow(used int64) {
	if b.base <= 0 {
		return
	}
	want := func() int64 { return max(b.base+used/memoryStep*memoryStep, b.floor.Load()) }
	if b.set.Load() == want() {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	used = b.used.Load() // another follow may have run meanwhile: set what holds now
	if w := want(); b.set.Load() != w {
		b.set.Store(w)
		debug.SetMemoryLimit(w)
	}
}

// heapSamples are the runtime/metrics watchHeap reads: the heap the last collection found live, and the memory the
// runtime holds, of which the heap's objects (live or not yet collected), free pages and pages returned to the OS.
var heapSamples = []string{
	"/gc/heap/live:bytes",
	"/memory/classes/total:bytes",
	"/memory/classes/heap/objects:bytes",
	"/memory/classes/heap/free:bytes",
	"/memory/classes/heap/released:bytes",
}

// watchHeap keeps the Go memory limit at least gcRoom (or a sixteenth of the live heap) above the memory that
// collecting garbage cannot give back: the live heap plus what the runtime holds besides heap objects (stacks,
// metadata, fragmentation). local.max_memory plus headroom covers that with room to spare for a 64MB tier of
// 1-2 KiB values and a few dozen clients, but freecache's index
// grows with the number of entries, not their bytes (16 MiB for a 256MB tier of 1-2 KiB values, 37 MiB for 256MB
// of 200-byte values), and many clients in the middle of a pipeline hold up to their baselines each: then the
// limit rises with them, by what is live, rather than leave the collector no room. It runs until the server stops.
func (s *Server) watchHeap() {
	samples := newHeapSamples()
	s.every(heapWatchPeriod, func() {
		if live, floor, moved := s.budget.watch(samples); moved {
			s.log.Debug("Go memory limit floor", "live_heap", live, "floor", floor, "memory_limit", s.budget.set.Load())
		}
	})
}

func newHeapSamples() []metrics.Sample {
	samples := make([]metrics.Sample, len(heapSamples))
	for i, name := range heapSamples {
		samples[i].Name = name
	}
	return samples
}

// watch reads the runtime's memory and moves floor (and with it the limit) when the live heap needs it: up at once,
// down once it is floorSlack below. It returns the live heap, the floor, and whether the floor moved.
func (b *budget) watch(samples []metrics.Sample) (live, floor int64, moved bool) {
	metrics.Read(samples)
	v := func(i int) int64 {
		if samples[i].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return int64(samples[i].Value.Uint64())
	}
	live, total, objects, free, released := v(0), v(1), v(2), v(3), v(4)
	floor = gcFloor(live, total-released-objects-free)
	old := b.floor.Load()
	if floor <= old && floor >= old-floorSlack {
		return live, old, false
	}
	b.floor.Store(floor)
	b.follow(b.used.Load())
	return live, floor, true
}

// gcFloor is the least memory limit that leaves gcRoom, or a sixteenth of the live heap if more, above a live heap
// of live bytes and other runtime memory of other bytes, rounded up to a MiB.
func gcFloor(live, other int64) int64 {
	const mib = 1 << 20
	return (live + max(other, 0) + max(gcRoom, live>>gcRoomShift) + mib - 1) / mib * mib
}
