package localcache

import (
	"bytes"
	"strconv"
	"testing"
	"time"

	"featcache/upstream"
)

// TestAppendGetAllocs: the hot path allocates nothing when dst has room, for hits and misses.
func TestAppendGetAllocs(t *testing.T) {
	clk := newClock(t0)
	c := newTestCache(t, clk, nil)
	p := &Policy{SoftTTL: time.Second, HardTTL: 2 * time.Second, NegativeTTL: time.Second, ServeStale: true, MaxStale: time.Hour}
	fill(t, c, "value", Result{Value: bytes.Repeat([]byte("x"), 1024), PTTL: NoExpiry}, p)
	fill(t, c, "nil", Result{Nil: true}, p)
	dst := make([]byte, 0, 2048)
	tests := []struct {
		name string
		key  []byte
		at   time.Duration
		dead bool
	}{
		{"fresh value", []byte("value"), 0, false},
		{"stale value", []byte("value"), 1500 * ms, false},
		{"dead value served stale", []byte("value"), 3 * time.Second, true},
		{"nil", []byte("nil"), 0, false},
		{"absent", []byte("absent"), 0, false},
	}
	for _, tt := range tests {
		now := t0.Add(tt.at)
		if n := testing.AllocsPerRun(1000, func() { c.AppendGet(dst[:0], tt.key, p, now, tt.dead) }); n != 0 {
			t.Errorf("%s: %v allocations per AppendGet; want 0", tt.name, n)
		}
	}
}

func benchCache(b *testing.B, keys int, size int) (*Cache, [][]byte, *Policy) {
	c, err := New(Options{MaxMemory: 256 << 20})
	if err != nil {
		b.Fatal(err)
	}
	ks, p := benchFill(b, c, keys, size)
	return c, ks, p
}

// benchFill stores keys values of size bytes in c under an hour-long policy and returns the keys and the policy.
func benchFill(b *testing.B, c *Cache, keys int, size int) ([][]byte, *Policy) {
	p := &Policy{SoftTTL: time.Hour, HardTTL: 2 * time.Hour}
	val := bytes.Repeat([]byte("x"), size)
	ks := make([][]byte, keys)
	for i := range ks {
		ks[i] = []byte("user:" + strconv.Itoa(i) + ":features")
		f, _ := c.Acquire(ks[i])
		if !c.Complete(f, Result{Value: val, PTTL: NoExpiry}, p) {
			b.Fatal("not stored")
		}
	}
	return ks, p
}

// benchHits measures fresh hits of ks, 1 KiB values, one lookup at a time.
func benchHits(b *testing.B, c *Cache, ks [][]byte, p *Policy) {
	dst := make([]byte, 0, 2048)
	now := time.Now()
	b.ReportAllocs()
	b.SetBytes(1024)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, lk := c.AppendGet(dst[:0], ks[i%len(ks)], p, now, false); lk.State != StateFresh {
			b.Fatal("miss")
		}
	}
}

// BenchmarkAppendGet measures a fresh hit of a 1 KiB value.
func BenchmarkAppendGet(b *testing.B) {
	c, ks, p := benchCache(b, 1000, 1024)
	benchHits(b, c, ks, p)
}

// BenchmarkAppendGetSlots is BenchmarkAppendGet in cluster mode (a partition per hash slot, with Redis's CRC16 slot
// function, as the upstream package sets it up): each lookup also computes the key's partition and reads its
// state word.
func BenchmarkAppendGetSlots(b *testing.B) {
	c, err := New(Options{MaxMemory: 256 << 20})
	if err != nil {
		b.Fatal(err)
	}
	c.EnablePartitions(upstream.SlotCount, func(key []byte) int { return int(upstream.Slot(key)) })
	all := make([]int, upstream.SlotCount)
	for i := range all {
		all[i] = i
	}
	c.SetPartitionsTrusted(all, true)
	ks, p := benchFill(b, c, 1000, 1024)
	benchHits(b, c, ks, p)
}

// BenchmarkAppendGetParallel is BenchmarkAppendGet from GOMAXPROCS goroutines.
func BenchmarkAppendGetParallel(b *testing.B) {
	c, ks, p := benchCache(b, 1000, 1024)
	now := time.Now()
	b.ReportAllocs()
	b.SetBytes(1024)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		dst := make([]byte, 0, 2048)
		i := 0
		for pb.Next() {
			if _, lk := c.AppendGet(dst[:0], ks[i%len(ks)], p, now, false); lk.State != StateFresh {
				b.Fatal("miss")
			}
			i++
		}
	})
}

// BenchmarkAppendGetMiss measures a lookup of an absent key.
func BenchmarkAppendGetMiss(b *testing.B) {
	c, _, p := benchCache(b, 1000, 1024)
	key := []byte("user:absent:features")
	dst := make([]byte, 0, 2048)
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		c.AppendGet(dst[:0], key, p, now, false)
	}
}

// BenchmarkFill measures one leader's Acquire + Complete storing a 1 KiB value (the miss path without
// the upstream read).
func BenchmarkFill(b *testing.B) {
	c, ks, p := benchCache(b, 1000, 1024)
	val := bytes.Repeat([]byte("y"), 1024)
	b.ReportAllocs()
	b.SetBytes(1024)
	for i := 0; b.Loop(); i++ {
		f, _ := c.Acquire(ks[i%len(ks)])
		c.Complete(f, Result{Value: val, PTTL: NoExpiry}, p)
	}
}
