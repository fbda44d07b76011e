package warm

import (
	"bytes"
	"cmp"
	"slices"
	"sync"

	"github.com/cespare/xxhash/v2"
)

// TopK keeps the most frequent keys of a stream in bounded memory with the space-saving algorithm (Metwally,
// Agrawal and El Abbadi, "Efficient computation of frequent and top-k elements in data streams", 2005): it holds
// at most its capacity of counters; a key it does not hold takes over the counter with the smallest count and
// inherits that count as its error. Every key recorded more than total/capacity times is held, and a held key's
// count exceeds its true count by at most its error.
//
// Memory is the capacity's worth of entries (each the key's bytes plus about 60 bytes) and a hash index of twice the
// capacity, allocated as keys arrive; once full, Add allocates only when a key is longer than the one whose entry it
// takes. A TopK is safe for concurrent use.
type TopK struct {
	mu      sync.Mutex
	entries []topEntry
	heap    []heapSlot // a 4-ary min-heap by count: a slot's children are 4j+1 to 4j+4
	index   []int32    // open addressing, linear probing: entry index + 1, or 0 for an empty cell
	mask    uint64
	cap     int
}

type topEntry struct {
	key  []byte
	hash uint64
	err  uint64
	hpos int32 // position in heap, whose slot holds the entry's count
}

// heapSlot is an entry's place in the heap, with its count beside it: sifting compares the counts of a slot's four
// children, which lie side by side in one 64-byte line, without reaching into the entries, and writes one entry's
// hpos per level. Recording a key raises its count and sifts it down, through about log4(capacity) levels: the cost
// of an Add on the request path is the cache lines those levels touch.
type heapSlot struct {
	count uint64
	entry int32
}

// heapArity is the number of children of a heap slot.
const heapArity = 4

// HotKey is one key of a TopK summary.
type HotKey struct {
	Key    string
	Count  uint64 // recorded weight, an overestimate by at most Error
	Error  uint64
	Policy string // the policy's name, in HotKeys.Top
}

// NewTopK returns a TopK that holds up to capacity keys (at least 1).
func NewTopK(capacity int) *TopK {
	capacity = max(capacity, 1)
	size := 1
	for size < 2*capacity {
		size <<= 1
	}
	return &TopK{index: make([]int32, size), mask: uint64(size - 1), cap: capacity}
}

// Add records weight occurrences of key. key is not retained.
func (t *TopK) Add(key []byte, weight uint64) {
	h := xxhash.Sum64(key)
	t.mu.Lock()
	defer t.mu.Unlock()
	if i, ok := t.find(key, h); ok {
		j := int(t.entries[i].hpos)
		t.heap[j].count += weight
		t.down(j)
		return
	}
	if len(t.entries) < t.cap {
		i := int32(len(t.entries))
		t.entries = append(t.entries, topEntry{key: bytes.Clone(key), hash: h, hpos: int32(len(t.heap))})
		t.heap = append(t.heap, heapSlot{count: weight, entry: i})
		t.insert(h, i)
		t.up(len(t.heap) - 1)
		return
	}
	// Take over the counter with the smallest count.
	i := t.heap[0].entry
	s := &t.entries[i]
	t.remove(s.hash, i)
	s.key = append(s.key[:0], key...)
	s.hash = h
	s.err = t.heap[0].count
	t.heap[0].count += weight
	t.insert(h, i)
	t.down(0)
}

// Top returns up to n keys with the highest counts, highest first (ties by key).
func (t *TopK) Top(n int) []HotKey {
	t.mu.Lock()
	out := make([]HotKey, 0, len(t.entries))
	for i := range t.entries {
		s := &t.entries[i]
		if n := t.heap[s.hpos].count; n > 0 {
			out = append(out, HotKey{Key: string(s.key), Count: n, Error: s.err})
		}
	}
	t.mu.Unlock()
	SortHotKeys(out)
	if n >= 0 && len(out) > n {
		out = out[:n]
	}
	return out
}

// SortHotKeys sorts keys by count, highest first, and by key among equal counts.
func SortHotKeys(keys []HotKey) {
	slices.SortFunc(keys, func(a, b HotKey) int {
		if c := cmp.Compare(b.Count, a.Count); c != 0 {
			return c
		}
		return cmp.Compare(a.Key, b.Key)
	})
}

// Decay halves every count and error, so that the summary follows what is frequent now rather than since start.
// Halving keeps the heap's order.
func (t *TopK) Decay() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := range t.entries {
		t.heap[i].count /= 2
		t.entries[i].err /= 2
	}
}

// Len returns the number of keys held.
func (t *TopK) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.entries)
}

// find returns the entry holding key.
func (t *TopK) find(key []byte, h uint64) (int32, bool) {
	for p := h & t.mask; ; p = (p + 1) & t.mask {
		v := t.index[p]
		if v == 0 {
			return 0, false
		}
		if s := &t.entries[v-1]; s.hash == h && bytes.Equal(s.key, key) {
			return v - 1, true
		}
	}
}

func (t *TopK) insert(h uint64, i int32) {
	p := h & t.mask
	for t.index[p] != 0 {
		p = (p + 1) & t.mask
	}
	t.index[p] = i + 1
}

// remove deletes entry i, whose key hashes to h, from the index, shifting later cells of its probe run back so
// that no lookup stops early (deletion without tombstones for linear probing).
func (t *TopK) remove(h uint64, i int32) {
	p := h & t.mask
	for t.index[p] != i+1 {
		p = (p + 1) & t.mask
	}
	for q := (p + 1) & t.mask; t.index[q] != 0; q = (q + 1) & t.mask {
		home := t.entries[t.index[q]-1].hash & t.mask
		// The entry at q may move to p unless its home lies cyclically in (p, q].
		if (q > p && (home <= p || home > q)) || (q < p && home <= p && home > q) {
			t.index[p] = t.index[q]
			p = q
		}
	}
	t.index[p] = 0
}

// up moves slot j towards the root while its count is smaller than its parent's.
func (t *TopK) up(j int) {
	x := t.heap[j]
	for j > 0 {
		parent := (j - 1) / heapArity
		if x.count >= t.heap[parent].count {
			break
		}
		t.place(j, t.heap[parent])
		j = parent
	}
	t.place(j, x)
}

// down moves slot j towards the leaves while a child's count is smaller: each level moves the smallest child up
// into the hole, and the slot is written once, where it stops.
func (t *TopK) down(j int) {
	x := t.heap[j]
	n := len(t.heap)
	for {
		first := heapArity*j + 1
		if first >= n {
			break
		}
		small := first
		for c := first + 1; c < min(first+heapArity, n); c++ {
			if t.heap[c].count < t.heap[small].count {
				small = c
			}
		}
		if t.heap[small].count >= x.count {
			break
		}
		t.place(j, t.heap[small])
		j = small
	}
	t.place(j, x)
}

// place puts slot x at heap position j.
func (t *TopK) place(j int, x heapSlot) {
	t.heap[j] = x
	t.entries[x.entry].hpos = int32(j)
}
