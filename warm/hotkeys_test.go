package warm

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"
)

func TestTopKExactWhileUnderCapacity(t *testing.T) {
	tk := NewTopK(10)
	for i, k := range []string{"a", "b", "a", "c", "a", "b"} {
		tk.Add([]byte(k), uint64(1+i%2))
	}
	got := tk.Top(-1)
	want := []HotKey{{Key: "b", Count: 4}, {Key: "a", Count: 3}, {Key: "c", Count: 2}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("Top = %v; want %v", got, want)
	}
	if got := tk.Top(1); len(got) != 1 || got[0].Key != "b" {
		t.Fatalf("Top(1) = %v; want b", got)
	}
}

// TestTopKHeavyHitters: on a Zipf stream over 100,000 keys, a summary of 1,000 counters holds the 100 most frequent
// keys, in the right order where their true counts differ by more than the error bound.
func TestTopKHeavyHitters(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	zipf := rand.NewZipf(rng, 1.1, 1, 100000-1)
	tk := NewTopK(1000)
	truth := map[string]uint64{}
	const n = 500000
	for i := 0; i < n; i++ {
		k := "key:" + strconv.FormatUint(zipf.Uint64(), 10)
		truth[k]++
		tk.Add([]byte(k), 1)
	}
	top := tk.Top(-1)
	held := map[string]HotKey{}
	for _, h := range top {
		held[h.Key] = h
		if h.Count < truth[h.Key] || h.Count-h.Error > truth[h.Key] {
			t.Fatalf("%s: count %d error %d; true count %d is not within [count-error, count]", h.Key, h.Count, h.Error, truth[h.Key])
		}
	}
	for i := 0; i < 100; i++ {
		k := "key:" + strconv.Itoa(i)
		if _, ok := held[k]; !ok {
			t.Errorf("%s (true count %d) is not held", k, truth[k])
		}
	}
	for i, h := range top[:20] {
		if want := "key:" + strconv.Itoa(i); h.Key != want {
			t.Errorf("rank %d: %s; want %s", i, h.Key, want)
		}
	}
	if tk.Len() != 1000 {
		t.Errorf("Len = %d; want 1000", tk.Len())
	}
}

// TestTopKIndexConsistent: after many replacements every held key is found by its own hash and counts the
// weight added to it, so deletions from the index never hide a key.
func TestTopKIndexConsistent(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	tk := NewTopK(64)
	for i := 0; i < 200000; i++ {
		tk.Add([]byte("k"+strconv.Itoa(rng.IntN(300))), 1)
		if i%1000 == 0 {
			for j := range tk.entries {
				s := &tk.entries[j]
				if got, ok := tk.find(s.key, s.hash); !ok || int(got) != j {
					t.Fatalf("after %d adds, entry %d (%q) is found at %d, %v", i, j, s.key, got, ok)
				}
				if tk.heap[s.hpos].entry != int32(j) {
					t.Fatalf("heap position of entry %d is wrong", j)
				}
			}
			for p := 1; p < len(tk.heap); p++ {
				if tk.heap[p].count < tk.heap[(p-1)/heapArity].count {
					t.Fatalf("heap order broken at %d", p)
				}
			}
		}
	}
}

func TestTopKDecay(t *testing.T) {
	tk := NewTopK(2)
	tk.Add([]byte("old"), 100)
	tk.Add([]byte("x"), 1)
	for i := 0; i < 6; i++ { // 100 -> 1, 1 -> 0
		tk.Decay()
	}
	tk.Add([]byte("new"), 5) // takes over x's counter (count 0 after decay)
	top := tk.Top(-1)
	if len(top) != 2 || top[0].Key != "new" || top[1].Key != "old" {
		t.Fatalf("Top after decay = %v; want new before old", top)
	}
}

// TestTopKAddDoesNotAllocate: once full, recording keys no longer than those held allocates nothing.
func TestTopKAddDoesNotAllocate(t *testing.T) {
	tk := NewTopK(100)
	keys := make([][]byte, 1000)
	for i := range keys {
		keys[i] = []byte(fmt.Sprintf("key:%06d", i))
	}
	for _, k := range keys {
		tk.Add(k, 1)
	}
	i := 0
	if n := testing.AllocsPerRun(10000, func() { tk.Add(keys[i%len(keys)], 1); i += 7 }); n != 0 {
		t.Fatalf("Add allocates %v times per call; want 0", n)
	}
}

func BenchmarkTopKAdd(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 2))
	zipf := rand.NewZipf(rng, 1.1, 1, 1000000-1)
	keys := make([][]byte, 1<<16)
	for i := range keys {
		keys[i] = []byte("customer:" + strconv.FormatUint(zipf.Uint64(), 10) + ":features")
	}
	tk := NewTopK(10000)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		tk.Add(keys[i&(len(keys)-1)], 1)
	}
}

// BenchmarkTopKAddUniform is the request path's case in the bench's hit profile: as many keys as counters, read
// uniformly, each sample counting for 16 (proxy's hotSampleMean), so that every Add raises a key held among
// others of nearly the same count.
func BenchmarkTopKAddUniform(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 2))
	keys := make([][]byte, 1<<16)
	for i := range keys {
		keys[i] = []byte(fmt.Sprintf("key:%012d", rng.IntN(10000)))
	}
	tk := NewTopK(10000)
	for i := range 10000 {
		tk.Add([]byte(fmt.Sprintf("key:%012d", i)), 16)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		tk.Add(keys[i&(len(keys)-1)], 16)
	}
}
