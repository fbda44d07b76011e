package localcache

import (
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestAdmissionEstimate: a key's estimate is the number of times it was recorded (the first one in the doorkeeper,
// the rest in the counters), up to 16; other keys stay at 0; once Window requests are recorded every count is
// halved and the doorkeeper forgets.
func TestAdmissionEstimate(t *testing.T) {
	a := newAdmission(AdmissionOptions{Threshold: 3, Counters: 1 << 12, Window: 1000}, MinMemory)
	key := []byte("profile:1")
	for n := 1; n <= 20; n++ {
		a.Record(key)
		if got, want := a.Estimate(key), min(n, 16); got != want {
			t.Fatalf("after %d requests: estimate %d; want %d", n, got, want)
		}
	}
	for i := range 10 {
		if got := a.Estimate([]byte("other:" + strconv.Itoa(i))); got != 0 {
			t.Errorf("estimate of a key never requested: %d; want 0", got)
		}
	}
	// 20 recorded so far; 980 more of other keys reach the window.
	for i := range 980 {
		a.Record([]byte("filler:" + strconv.Itoa(i)))
	}
	if a.Halvings() != 1 {
		t.Fatalf("halvings after a window of requests: %d; want 1", a.Halvings())
	}
	if got := a.Estimate(key); got != 7 { // counters at 15, halved; the doorkeeper cleared
		t.Errorf("estimate after halving: %d; want 7", got)
	}
	if !a.Admit(key) {
		t.Error("Admit of a frequent key after halving: false")
	}
	if a.Admit([]byte("once")) {
		t.Error("Admit of a key requested for the first time: true; want false with threshold 3")
	}
}

func TestAdmissionOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		opt  AdmissionOptions
		off  bool
	}{
		{"zero value", AdmissionOptions{}, true},
		{"threshold 1", AdmissionOptions{Threshold: 1}, true},
		{"threshold 2", AdmissionOptions{Threshold: 2}, false},
	} {
		c, err := New(Options{MaxMemory: MinMemory, Now: newClock(t0).Now, Admission: tc.opt})
		if err != nil {
			t.Fatal(err)
		}
		if off := c.Admission() == nil; off != tc.off {
			t.Errorf("%s: filter off = %t; want %t", tc.name, off, tc.off)
		}
	}
	a := newAdmission(AdmissionOptions{Threshold: 40}, 64<<20)
	if a.threshold != 16 || a.mask+1 != 1<<18 || a.window != 10<<18 {
		t.Errorf("defaults for 64 MiB: threshold %d, %d counters per row, window %d; want 16, 262144, 2621440",
			a.threshold, a.mask+1, a.window)
	}
}

// fullCache returns a 1 MiB tier with an admission filter of threshold 3 that has had to evict: the filter decides.
func fullCache(t *testing.T, clk *testClock) *Cache {
	t.Helper()
	c, err := New(Options{MaxMemory: MinMemory, Now: clk.Now, Admission: AdmissionOptions{Threshold: 3}})
	if err != nil {
		t.Fatal(err)
	}
	p := &Policy{SoftTTL: time.Hour, HardTTL: time.Hour}
	filler := Result{Value: []byte(strings.Repeat("f", 900)), PTTL: NoExpiry}
	for i := 0; c.Stats().Evictions == 0; i++ {
		if i > 10_000 {
			t.Fatal("a 1 MiB tier did not evict after 10,000 fills of 900 bytes")
		}
		f, _ := c.Acquire([]byte("filler:" + strconv.Itoa(i)))
		f.SkipAdmission()
		c.Complete(f, filler, p)
	}
	return c
}

// TestAdmissionRefusedFillAnswersWaiters: once the tier is full, a key's first two fills are not stored, and the
// requests that joined them still get their results; the third is stored and served.
func TestAdmissionRefusedFillAnswersWaiters(t *testing.T) {
	clk := newClock(t0)
	c := fullCache(t, clk)
	p := &Policy{SoftTTL: time.Hour, HardTTL: time.Hour}
	key := []byte("user:7")
	for n := 1; n <= 3; n++ {
		f, leader := c.Acquire(key)
		waiter, joined := c.Acquire(key)
		if !leader || joined || waiter != f {
			t.Fatalf("fill %d: leader %t, second Acquire joined %t", n, leader, !joined)
		}
		v := "v" + strconv.Itoa(n)
		stored := c.Complete(f, value(v), p)
		if stored != (n == 3) {
			t.Errorf("fill %d: stored %t; want %t", n, stored, n == 3)
		}
		if got := string(waiter.Result().Value); got != v {
			t.Errorf("fill %d: the waiter got %q; want %q", n, got, v)
		}
		got, lk := c.AppendGet(nil, key, p, clk.Now(), false)
		if served := lk.State != StateMiss; served != (n == 3) || served && string(got) != bulk(v) {
			t.Errorf("after fill %d: lookup %v %q", n, lk.State, got)
		}
	}
	if s := c.Stats(); s.NotAdmitted != 2 || flightsHeld(c) != 0 {
		t.Errorf("NotAdmitted %d, flights held %d; want 2 and 0", s.NotAdmitted, flightsHeld(c))
	}
}

// TestAdmissionWhileRoom: a tier that never had to evict stores every fill, whatever the filter says.
func TestAdmissionWhileRoom(t *testing.T) {
	clk := newClock(t0)
	c, err := New(Options{MaxMemory: 4 << 20, Now: clk.Now, Admission: AdmissionOptions{Threshold: 16}})
	if err != nil {
		t.Fatal(err)
	}
	p := &Policy{SoftTTL: time.Hour, HardTTL: time.Hour}
	for i := range 100 {
		if !fill(t, c, "k"+strconv.Itoa(i), value("x"), p) {
			t.Fatalf("fill %d of an empty tier not stored", i)
		}
	}
	if s := c.Stats(); s.NotAdmitted != 0 {
		t.Errorf("NotAdmitted %d; want 0", s.NotAdmitted)
	}
}

// TestAdmissionReplacesEntry: a fill of a key that has an entry replaces it whatever the filter says (a refresh of a
// soft-stale entry): refusing would leave the old value.
func TestAdmissionReplacesEntry(t *testing.T) {
	clk := newClock(t0)
	c := fullCache(t, clk)
	p := &Policy{SoftTTL: time.Minute, HardTTL: time.Hour}
	key := []byte("user:8")
	f, _ := c.Acquire(key)
	f.SkipAdmission()
	if !c.Complete(f, value("old"), p) {
		t.Fatal("a fill with SkipAdmission was not stored")
	}
	clk.Add(2 * time.Minute) // soft-stale: the proxy refreshes it
	if _, lk := c.AppendGet(nil, key, p, clk.Now(), false); lk.State != StateStale {
		t.Fatalf("state %v; want stale", lk.State)
	}
	if !fill(t, c, string(key), value("new"), p) {
		t.Fatal("the refresh of a resident key with an estimate of 2 was not stored")
	}
	if got, _ := c.AppendGet(nil, key, p, clk.Now(), false); string(got) != bulk("new") {
		t.Errorf("served %q after the refresh; want the new value", got)
	}
}

// TestAdmissionKeepsGenerations: the filter runs after the generation check: a fill overtaken by an invalidation is
// discarded (not counted as refused), a read after the invalidation starts a fill of its own, and flushing the tier
// gives it room again (every fill stored until it must evict).
func TestAdmissionKeepsGenerations(t *testing.T) {
	clk := newClock(t0)
	c := fullCache(t, clk)
	p := &Policy{SoftTTL: time.Hour, HardTTL: time.Hour}
	key := []byte("user:9")
	for range 3 {
		c.Admission().Record(key) // frequent: the filter would store it
	}
	old, _ := c.Acquire(key)
	c.Invalidate(key)
	f, leader := c.Acquire(key)
	if !leader || f == old {
		t.Fatal("a read after the invalidation joined the fill that began before it")
	}
	// The fill before the invalidation read the same value: had it answered otherwise, neither would be stored
	// (TestInvalidateDuringFill).
	if c.Complete(old, value("after"), p) {
		t.Error("a fill overtaken by an invalidation was stored")
	}
	if !c.Complete(f, value("after"), p) {
		t.Error("the fill after the invalidation, of a frequent key, was not stored")
	}
	s := c.Stats()
	if s.FillsDiscarded != 1 || s.NotAdmitted != 0 {
		t.Errorf("FillsDiscarded %d, NotAdmitted %d; want 1 and 0", s.FillsDiscarded, s.NotAdmitted)
	}
	c.Flush()
	if !fill(t, c, "user:10", value("x"), p) {
		t.Error("the first fill after a Flush, in an empty tier, was not stored")
	}
}

// TestAdmissionStress runs readers, fills, invalidations and a filler that keeps a 1 MiB tier evicting, with the
// filter refusing many fills, and checks what TestStressInvariants checks without a filter: no lookup serves, and
// no fill hands a waiter, a value older than the latest invalidation of its key that returned before the read
// began; every fill completes (no flight held at the end). Run it with -race.
func TestAdmissionStress(t *testing.T) {
	clk := newClock(t0)
	c := fullCache(t, clk)
	p := &Policy{SoftTTL: time.Hour, HardTTL: time.Hour}
	m := newStressModel(16)
	filler := Result{Value: []byte(strings.Repeat("f", 900)), PTTL: NoExpiry}
	m.background(func(i int) { // keeps the tier evicting, so the filter decides
		f, leader := c.Acquire([]byte("filler:" + strconv.Itoa(i%5000)))
		if leader {
			f.SkipAdmission()
			c.Complete(f, filler, p)
		}
	})
	m.background(func(i int) { m.write(c, i%len(m.keys)) })
	m.readers(6, stressOps(6000, 1000), 3, func(_ *rand.Rand, buf []byte, k int, floor uint64) ([]byte, bool) {
		var lk Lookup
		if buf, lk = c.AppendGet(buf[:0], m.keys[k], p, clk.Now(), false); lk.State != StateMiss {
			return buf, m.servedNewEnough(t, buf, k, floor)
		}
		f, leader := c.Acquire(m.keys[k])
		if leader {
			c.Complete(f, m.fetch(k), p)
		}
		return buf, m.fillNewEnough(t, f, k, floor)
	})
	m.stop()
	if n := flightsHeld(c); n != 0 {
		t.Errorf("%d flights held after every fill completed", n)
	}
	s := c.Stats()
	t.Logf("stats %+v", s)
	if s.NotAdmitted == 0 || s.FillsStored == 0 || s.FillsDiscarded == 0 {
		t.Errorf("the run did not exercise refusals, stores and discards: %+v", s)
	}
}

// BenchmarkAdmissionRecord is what counting a request costs: what every hit would pay if hits were counted too
// (they are not: see admission.go), against BenchmarkHitPathGet's whole hit.
func BenchmarkAdmissionRecord(b *testing.B) {
	a := newAdmission(AdmissionOptions{Threshold: 3}, 64<<20)
	keys := make([][]byte, 4096)
	for i := range keys {
		keys[i] = []byte("feat:" + strconv.Itoa(i*7919))
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			a.Record(keys[i&4095])
			i++
		}
	})
}
