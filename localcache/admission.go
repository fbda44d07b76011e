package localcache

import (
	"math/bits"
	"sync/atomic"

	"github.com/cespare/xxhash/v2"
)

// The admission filter keeps one-off keys out of the tier. freecache evicts the least recently used entry of a
// segment to make room, so every fill, even of a key that is never read again (a scan, a batch job's sweep,
// the long tail of a Zipf distribution), pushes out something that may be read again. With a filter, a fill
// is stored only when its key was asked for often enough recently; otherwise its result is handed to its
// waiters and not stored, exactly as a fill too large to store.
//
// It is TinyLFU's frequency sketch (Einziger, Friedman, Manes: "TinyLFU: A Highly Efficient Cache Admission
// Policy", 2017): a count-min sketch of 4-bit counters in 4 rows, in front of it a doorkeeper (a Bloom filter
// that takes each key's first request in a window, so that one-off keys never reach the counters), and every
// Window recorded requests all counters are halved and the doorkeeper cleared, so the counts are of recent
// requests. A key's estimate is its smallest counter, plus one if the doorkeeper holds it.
//
// Classic TinyLFU admits a candidate when its estimate beats that of the entry it would evict. freecache does
// not say which entry that is (it evicts inside Set, from a ring buffer, by its own rule), so the filter
// compares with a fixed threshold instead: a key is stored from its Threshold-th request within the window.
// With a window of ten times the entries the tier holds, a key that reaches the threshold is requested more
// often than the typical resident key is, which is what the comparison with the victim would ask.
//
// Requests are recorded where the tier sees them for sure: at the fill (a miss). A hit is not recorded, which
// keeps the filter off the hit path; a key that keeps hitting does not need its count until it is evicted, and
// then its misses count again (see docs/performance.md for what counting hits too would add).
//
// An admission is only ever a decision not to store: a fill that is not admitted still answers every request
// that waits for it, and generations, epochs and invalidations work as without the filter.

// AdmissionOptions configures the admission filter (Options.Admission). The zero value turns it off.
type AdmissionOptions struct {
	// Threshold is how many recent requests of a key, the one being filled included, its fill needs to be stored.
	// 0 or 1 turns the filter off: every fill is stored. At most 16 (the counters count to 15, the doorkeeper adds
	// one); larger values are treated as 16.
	Threshold int
	// Counters is the number of counters per row of the sketch, rounded up to a power of two. If zero, one per 256
	// bytes of MaxMemory (for 1-2 KiB entries, about six per entry the tier holds), at least 4096 and at most 2^24.
	// The sketch takes 2 bytes per counter of a row and the doorkeeper 1: MaxMemory/85 by default.
	Counters int
	// Window is how many recorded requests make every count halve. If zero, ten times Counters.
	Window int
}

// admissionRows is the depth of the count-min sketch.
const admissionRows = 4

// Admission is the filter. All its methods are safe for concurrent use; they take no lock.
type Admission struct {
	threshold int
	mask      uint64          // counters per row - 1
	rowWords  uint64          // words per row: 16 counters of 4 bits per word
	table     []atomic.Uint64 // admissionRows rows of rowWords words
	door      []atomic.Uint64 // the doorkeeper's bits
	doorMask  uint64          // doorkeeper bits - 1
	window    int64
	recorded  atomic.Int64 // requests recorded since the counts were last halved (halved with them)
	halving   atomic.Bool
	halvings  atomic.Uint64
}

// newAdmission returns the filter opt asks for in front of a tier of maxMemory bytes, or nil for none.
func newAdmission(opt AdmissionOptions, maxMemory int64) *Admission {
	if opt.Threshold <= 1 {
		return nil
	}
	counters := opt.Counters
	if counters <= 0 {
		counters = int(min(max(maxMemory>>8, 4096), 1<<24))
	}
	width := uint64(1) << bits.Len64(uint64(counters-1)) // a power of two >= counters
	width = max(width, 64)
	window := int64(opt.Window)
	if window <= 0 {
		window = 10 * int64(width)
	}
	// The doorkeeper holds the keys requested in a window, two bits each. Eight bits per counter of a row keep its
	// false positives under 3% for as many distinct keys as a row has counters, under 25% for three times as many.
	doorBits := 8 * width
	a := &Admission{
		threshold: min(opt.Threshold, 16),
		mask:      width - 1,
		rowWords:  width / 16,
		table:     make([]atomic.Uint64, admissionRows*width/16),
		door:      make([]atomic.Uint64, doorBits/64),
		doorMask:  doorBits - 1,
		window:    window,
	}
	return a
}

// Admit records a request of key and reports whether a fill of key may be stored: whether its estimated
// number of recent requests, this one included, reaches the threshold. key is not retained.
func (a *Admission) Admit(key []byte) bool {
	h := xxhash.Sum64(key)
	return a.record(h) >= a.threshold
}

// Record records a request of key without deciding anything. key is not retained.
func (a *Admission) Record(key []byte) { a.record(xxhash.Sum64(key)) }

// Estimate returns key's estimated number of recent requests, without recording one.
func (a *Admission) Estimate(key []byte) int {
	h := xxhash.Sum64(key)
	n := a.count(h)
	if a.doorHas(h) {
		n++
	}
	return n
}

// Halvings returns how many times the counts were halved.
func (a *Admission) Halvings() uint64 { return a.halvings.Load() }

// record counts a request of the key hashed to h and returns its estimate afterwards.
func (a *Admission) record(h uint64) int {
	var n int
	if !a.doorAdd(h) {
		n = 1 // the first request of the window: the doorkeeper holds it, the counters do not
		n += a.count(h)
	} else {
		n = a.increment(h) + 1
	}
	if a.recorded.Add(1) >= a.window {
		a.halve()
	}
	return n
}

// index returns the word and the shift of the key's counter in row r. Rows use independent positions derived
// from one 64-bit hash (double hashing): h1 + r*h2 with h2 odd.
func (a *Admission) index(h uint64, r int) (word *atomic.Uint64, shift uint) {
	h2 := h>>32 | 1
	i := (h + uint64(r)*h2*0x9e3779b97f4a7c15) & a.mask
	return &a.table[uint64(r)*a.rowWords+i>>4], uint(i&15) * 4
}

// count returns the key's smallest counter.
func (a *Admission) count(h uint64) int {
	m := 15
	for r := range admissionRows {
		w, s := a.index(h, r)
		m = min(m, int(w.Load()>>s&15))
	}
	return m
}

// increment adds one to the key's smallest counters only (a conservative update, which keeps the others from
// growing on collisions) and returns the new smallest count.
func (a *Admission) increment(h uint64) int {
	m := a.count(h)
	if m == 15 {
		return m
	}
	for r := range admissionRows {
		w, s := a.index(h, r)
		for {
			old := w.Load()
			if int(old>>s&15) != m || w.CompareAndSwap(old, old+1<<s) {
				break
			}
		}
	}
	return m + 1
}

// doorAdd sets the key's two doorkeeper bits and reports whether both were set already.
func (a *Admission) doorAdd(h uint64) bool {
	b1, b2 := h&a.doorMask, (h>>32|h<<32)*0xbf58476d1ce4e5b9&a.doorMask
	had1 := a.door[b1>>6].Or(1<<(b1&63))&(1<<(b1&63)) != 0
	had2 := a.door[b2>>6].Or(1<<(b2&63))&(1<<(b2&63)) != 0
	return had1 && had2
}

func (a *Admission) doorHas(h uint64) bool {
	b1, b2 := h&a.doorMask, (h>>32|h<<32)*0xbf58476d1ce4e5b9&a.doorMask
	return a.door[b1>>6].Load()&(1<<(b1&63)) != 0 && a.door[b2>>6].Load()&(1<<(b2&63)) != 0
}

// halve divides every counter by two and clears the doorkeeper, so that the counts are of recent requests. One
// caller does it; requests recorded meanwhile by others land before or after it, which the estimate tolerates.
func (a *Admission) halve() {
	if !a.halving.CompareAndSwap(false, true) {
		return
	}
	defer a.halving.Store(false)
	for i := range a.table {
		w := &a.table[i]
		for {
			old := w.Load()
			if w.CompareAndSwap(old, old>>1&0x7777777777777777) {
				break
			}
		}
	}
	for i := range a.door {
		a.door[i].Store(0)
	}
	a.recorded.Add(-a.window / 2)
	a.halvings.Add(1)
}

// admit reports whether f's result may be stored. Without a filter, always. With one, the request is recorded,
// and the fill is stored when its key's estimate reaches the threshold; and also, whatever the estimate, while
// the tier has never had to evict since it was created or flushed (a tier with room keeps everything: the filter
// chooses between keys only when one must go, and refusing would only cost a cold tier more upstream reads), when
// the key has an entry already (the fill replaces it: a background refresh of a soft-stale entry, a hash fill
// merged into the key's entry; refusing would leave the older one in place), and when the leader asked for it
// (SkipAdmission). It runs under the key's shard lock, just before the store.
func (c *Cache) admit(f *Fill) bool {
	a := c.admission
	if a == nil || a.Admit(f.key) || f.skipAdmission {
		return true
	}
	if c.fc.EvacuateCount() == 0 {
		return true
	}
	if _, err := c.fc.TTL(f.key); err == nil {
		return true
	}
	c.stats.fillsNotAdmitted.Add(1)
	return false
}

// SkipAdmission makes the fill's result stored whatever the admission filter says about its key, as without a
// filter (generations, epochs and trust still decide). The warmer uses it: the keys it loads are known to be read.
// Only the leader may call it, before Complete.
func (f *Fill) SkipAdmission() { f.skipAdmission = true }

// Admission returns the tier's admission filter, or nil when it has none (Options.Admission).
func (c *Cache) Admission() *Admission { return c.admission }
