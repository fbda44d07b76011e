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
// Memory is the capacity's worth of entries (each the key's bytes plus about 50 bytes) and a hash index of twice the
// capacity, allocated as keys arrive; once full, Add allocates only when a key is longer than the one whose entry it
// takes. A TopK is safe for concurrent use.
type TopK struct {
	mu      sync.Mutex
	entries []topEntry
	heap    []int32 // entry indexes, a min-heap by count
	index   []int32 // open addressing, linear probing: entry index + 1, or 0 for an empty cell
	mask    uint64
	cap     int
}

type topEntry struct {
	key   []byte
	hash  uint64
	count uint64
	err   uint64
	hpos  int32 // position in heap
}

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
		t.entries[i].count += weight
		t.down(int(t.entries[i].hpos))
		return
	}
	if len(t.entries) < t.cap {
		i := int32(len(t.entries))
		t.entries = append(t.entries, topEntry{key: bytes.Clone(key), hash: h, count: weight, hpos: int32(len(t.heap))})
		t.heap = append(t.heap, i)
		t.insert(h, i)
		t.up(len(t.heap) - 1)
		return
	}
	// Take over the counter with the smallest count.
	i := t.heap[0]
	s := &t.entries[i]
	t.remove(s.hash, i)
	s.key = append(s.key[:0], key...)
	s.hash = h
	s.err = s.count
	s.count += weight
	t.insert(h, i)
	t.down(0)
}

// Top returns up to n keys with the highest counts, highest first (ties by key).
func (t *TopK) Top(n int) []HotKey {
	t.mu.Lock()
	out := make([]HotKey, 0, len(t.entries))
	for i := range t.entries {
		s := &t.entries[i]
		if s.count > 0 {
			out = append(out, HotKey{Key: string(s.key), Count: s.count, Error: s.err})
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
		t.entries[i].count /= 2
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

func (t *TopK) less(a, b int) bool { return t.entries[t.heap[a]].count < t.entries[t.heap[b]].count }

func (t *TopK) swap(a, b int) {
	t.heap[a], t.heap[b] = t.heap[b], t.heap[a]
	t.entries[t.heap[a]].hpos = int32(a)
	t.entries[t.heap[b]].hpos = int32(b)
}

func (t *TopK) up(j int) {
	for j > 0 {
		parent := (j - 1) / 2
		if !t.less(j, parent) {
			return
		}
		t.swap(j, parent)
		j = parent
	}
}

func (t *TopK) down(j int) {
	n := len(t.heap)
	for {
		l := 2*j + 1
		if l >= n {
			return
		}
		small := l
		if r := l + 1; r < n && t.less(r, l) {
			small = r
		}
		if !t.less(small, j) {
			return
		}
		t.swap(j, small)
		j = small
	}
}
