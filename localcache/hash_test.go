package localcache

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

// fillHash runs one hash fill of fields (values "" = missing) and returns whether it was stored.
func fillHash(t *testing.T, c *Cache, key string, all bool, keyPol *Policy, pols map[string]*Policy, kv ...string) bool {
	t.Helper()
	var fields [][]byte
	var reads []FieldRead
	for i := 0; i+1 < len(kv); i += 2 {
		fields = append(fields, []byte(kv[i]))
		p := pols[kv[i]]
		if p == nil {
			p = keyPol
		}
		reads = append(reads, FieldRead{Field: []byte(kv[i]), Value: []byte(kv[i+1]), Missing: kv[i+1] == "", Policy: p})
	}
	f, leader := c.AcquireHash([]byte(key), HashFillID(fields, all))
	if !leader {
		t.Fatal("not the leader")
	}
	return c.CompleteHash(f, Result{PTTL: NoExpiry}, &HashResult{Fields: reads, All: all, KeyPolicy: keyPol})
}

// hget looks one field up and returns "value", "(nil)" or "(miss)", with the state.
func hget(c *Cache, key, field string, p *Policy, now time.Time) (string, State) {
	out, st := "(miss)", StateMiss
	c.LookupHash([]byte(key), now, func(e HashEntry) {
		v, missing, lk := e.Field([]byte(field), p, false)
		st = lk.State
		switch {
		case lk.State == StateMiss:
		case missing:
			out = "(nil)"
		default:
			out = string(v)
		}
	})
	return out, st
}

func TestHashPartialFillsMerge(t *testing.T) {
	clk := newClock(t0)
	c := newTestCache(t, clk, nil)
	key := &Policy{SoftTTL: time.Minute, HardTTL: time.Hour, NegativeTTL: 30 * time.Second}
	fast := &Policy{SoftTTL: 5 * time.Second, HardTTL: 10 * time.Second, NegativeTTL: 5 * time.Second}
	pols := map[string]*Policy{"f2": fast}
	if !fillHash(t, c, "h", false, key, pols, "f1", "a", "f2", "b") {
		t.Fatal("first fill not stored")
	}
	if !fillHash(t, c, "h", false, key, pols, "f3", "c", "f4", "") {
		t.Fatal("second fill not stored")
	}
	for field, want := range map[string]string{"f1": "a", "f2": "b", "f3": "c", "f4": "(nil)", "f5": "(miss)"} {
		p := key
		if pols[field] != nil {
			p = pols[field]
		}
		if got, _ := hget(c, "h", field, p, t0); got != want {
			t.Errorf("%s = %s; want %s", field, got, want)
		}
	}
	// Each field keeps its own policy's deadlines: f2 (10s hard) is dead at 11s, f1 (1h) is fresh.
	if got, st := hget(c, "h", "f2", fast, t0.Add(11*time.Second)); got != "(miss)" {
		t.Errorf("f2 past its hard TTL: %s %v", got, st)
	}
	if got, st := hget(c, "h", "f1", key, t0.Add(11*time.Second)); got != "a" || st != StateFresh {
		t.Errorf("f1 at 11s: %s %v", got, st)
	}
	// f4 was remembered missing for its negative TTL (30s) only.
	if got, _ := hget(c, "h", "f4", key, t0.Add(31*time.Second)); got != "(miss)" {
		t.Errorf("f4 past its negative TTL: %s", got)
	}
	// An invalidation of the key drops every field.
	c.Invalidate([]byte("h"))
	if got, _ := hget(c, "h", "f1", key, t0); got != "(miss)" {
		t.Errorf("after Invalidate: %s", got)
	}
}

func TestHashCompleteImage(t *testing.T) {
	c := newTestCache(t, newClock(t0), nil)
	key := &Policy{SoftTTL: time.Minute, HardTTL: time.Hour, NegativeTTL: time.Minute}
	fillHash(t, c, "h", true, key, nil, "a", "1", "b", "2")
	if got, _ := hget(c, "h", "zzz", key, t0); got != "(nil)" {
		t.Errorf("a field absent from a complete image: %s; want (nil) without asking Redis", got)
	}
	var listed []string
	c.LookupHash([]byte("h"), t0, func(e HashEntry) {
		if _, ok := e.Complete(key, false); !ok {
			t.Error("the HGETALL image is not complete")
		}
		e.Each(func(f, v []byte, missing bool) bool { listed = append(listed, string(f)+"="+string(v)); return true })
	})
	if got := strings.Join(listed, ","); got != "a=1,b=2" {
		t.Errorf("Each: %s", got)
	}
	// A partial fill merged into a complete image keeps it complete and updates the field.
	fillHash(t, c, "h", false, key, nil, "a", "9")
	if got, _ := hget(c, "h", "a", key, t0); got != "9" {
		t.Errorf("a after the merge: %s", got)
	}
	c.LookupHash([]byte("h"), t0, func(e HashEntry) {
		if _, ok := e.Complete(key, false); !ok {
			t.Error("a partial fill made the complete image incomplete")
		}
	})
	// A hash that does not exist is remembered as an empty complete image, under the negative TTL.
	fill := func() bool {
		f, _ := c.AcquireHash([]byte("none"), HashFillID(nil, true))
		return c.CompleteHash(f, Result{PTTL: -2 * time.Millisecond}, &HashResult{All: true, KeyPolicy: key})
	}
	if !fill() {
		t.Fatal("the empty hash was not remembered")
	}
	if got, _ := hget(c, "none", "x", key, t0); got != "(nil)" {
		t.Errorf("field of a missing hash: %s", got)
	}
	if got, _ := hget(c, "none", "x", key, t0.Add(61*time.Second)); got != "(miss)" {
		t.Errorf("field of a missing hash past the negative TTL: %s", got)
	}
}

// TestHashFillGenerations (invariant 2): a hash fill that began before an invalidation of its key is not stored,
// and a read after the invalidation does not join it; fills of different field sets run side by side.
func TestHashFillGenerations(t *testing.T) {
	c := newTestCache(t, newClock(t0), nil)
	p := &Policy{SoftTTL: time.Minute, HardTTL: time.Hour}
	id := HashFillID([][]byte{[]byte("f")}, false)
	f1, leader := c.AcquireHash([]byte("h"), id)
	if !leader {
		t.Fatal("first acquire is not the leader")
	}
	if g, leader := c.AcquireHash([]byte("h"), id); leader || g != f1 {
		t.Fatal("a concurrent read of the same fields did not join the fill")
	}
	other, leader := c.AcquireHash([]byte("h"), HashFillID([][]byte{[]byte("g")}, false))
	if !leader || other == f1 {
		t.Fatal("a read of other fields joined the fill")
	}
	c.Invalidate([]byte("h"))
	f2, leader := c.AcquireHash([]byte("h"), id)
	if !leader || f2 == f1 {
		t.Fatal("a read after the invalidation joined the fill that began before it")
	}
	reads := &HashResult{Fields: []FieldRead{{Field: []byte("f"), Value: []byte("old"), Policy: p}}, KeyPolicy: p}
	if c.CompleteHash(f1, Result{PTTL: NoExpiry}, reads) {
		t.Fatal("a fill from before the invalidation was stored")
	}
	c.CompleteHash(other, Result{Err: errors.New("upstream down")}, nil)
	reads.Fields[0].Value = []byte("new")
	if !c.CompleteHash(f2, Result{PTTL: NoExpiry}, reads) {
		t.Fatal("the fill after the invalidation was not stored")
	}
	if got, _ := hget(c, "h", "f", p, t0); got != "new" {
		t.Fatalf("f = %s", got)
	}
	// A value entry is not a hash and a hash is not a value.
	if got, _ := c.AppendGet(nil, []byte("h"), p, t0, false); got != nil {
		t.Fatalf("GET of a hash entry served %q", got)
	}
}

// TestHashStress: concurrent fills of overlapping field sets, invalidations and lookups; every lookup after an
// invalidation completed sees either a miss or a value written after it (the model upstream versions each field).
func TestHashStress(t *testing.T) {
	c := newTestCache(t, newClock(t0), nil)
	p := &Policy{SoftTTL: time.Minute, HardTTL: time.Hour}
	var mu sync.Mutex
	version := 0     // bumped by each write, which then invalidates
	invalidated := 0 // the version of the latest completed invalidation
	read := func() int { mu.Lock(); defer mu.Unlock(); return version }
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 2000; i++ {
			mu.Lock()
			version++
			v := version
			mu.Unlock()
			c.Invalidate([]byte("h"))
			mu.Lock()
			invalidated = v
			mu.Unlock()
		}
		close(stop)
	}()
	sets := [][]string{{"a", "b"}, {"b", "c"}, {"a"}}
	for r := 0; r < 4; r++ {
		wg.Add(1)
		go func(r int) {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				mu.Lock()
				floor := invalidated
				mu.Unlock()
				set := sets[(i+r)%len(sets)]
				for _, field := range set {
					if got, _ := hget(c, "h", field, p, t0); got != "(miss)" {
						var v int
						for _, ch := range got {
							v = v*10 + int(ch-'0')
						}
						if v < floor {
							t.Errorf("field %s served version %d after the invalidation of version %d", field, v, floor)
							return
						}
					}
				}
				var fields [][]byte
				for _, f := range set {
					fields = append(fields, []byte(f))
				}
				f, leader := c.AcquireHash([]byte("h"), HashFillID(fields, false))
				if !leader {
					<-f.Done()
					continue
				}
				v := read()
				var reads []FieldRead
				for _, fd := range fields {
					reads = append(reads, FieldRead{Field: fd, Value: []byte(itoa(v)), Policy: p})
				}
				c.CompleteHash(f, Result{PTTL: NoExpiry}, &HashResult{Fields: reads, KeyPolicy: p})
			}
		}(r)
	}
	wg.Wait()
}

// TestHashFieldTTL: a field's own upstream TTL (HPTTL) caps its deadlines; a field whose TTL is unknown is not
// stored.
func TestHashFieldTTL(t *testing.T) {
	c := newTestCache(t, newClock(t0), nil)
	p := &Policy{SoftTTL: time.Hour, HardTTL: time.Hour}
	f, _ := c.AcquireHash([]byte("h"), HashFillID([][]byte{[]byte("a"), []byte("b"), []byte("c")}, false))
	c.CompleteHash(f, Result{PTTL: NoExpiry}, &HashResult{KeyPolicy: p, Fields: []FieldRead{
		{Field: []byte("a"), Value: []byte("1"), Policy: p, PTTL: 2 * time.Second},
		{Field: []byte("b"), Value: []byte("2"), Policy: p, PTTL: NoExpiry},
		{Field: []byte("c"), Value: []byte("3"), Policy: p, PTTL: -3 * time.Millisecond},
	}})
	if got, _ := hget(c, "h", "a", p, t0.Add(time.Second)); got != "1" {
		t.Fatalf("a within its own TTL: %s", got)
	}
	if got, _ := hget(c, "h", "a", p, t0.Add(2*time.Second)); got != "(miss)" {
		t.Fatalf("a at its own expiry: %s; want a miss", got)
	}
	if got, _ := hget(c, "h", "b", p, t0.Add(10*time.Minute)); got != "2" {
		t.Fatalf("b without a field TTL: %s", got)
	}
	if got, _ := hget(c, "h", "c", p, t0); got != "(miss)" {
		t.Fatalf("c, whose TTL is unknown, was stored: %s", got)
	}
}

// TestMergeHashAllocs: building a hash entry allocates nothing once the pooled buffer has grown, whether the fill
// read some fields into an entry that holds others, the whole hash, or a hash that does not exist; keeping a
// complete image that the fields read are a subset of costs one (the image's header is encoded apart). Under the
// race detector the merges run but their allocations are not counted.
func TestMergeHashAllocs(t *testing.T) {
	clk := newClock(t0)
	c := newTestCache(t, clk, func() float64 { return 0.5 })
	key := &Policy{SoftTTL: time.Minute, HardTTL: time.Hour, NegativeTTL: 30 * time.Second, Jitter: 0.1}
	stale := &Policy{SoftTTL: time.Second, HardTTL: 10 * time.Second, NegativeTTL: 5 * time.Second, ServeStale: true,
		MaxStale: time.Minute}
	pols := map[string]*Policy{"f2": stale}
	if !fillHash(t, c, "h", false, key, pols, "f1", "a", "f2", "b", "f3", "") {
		t.Fatal("first fill not stored")
	}
	if !fillHash(t, c, "all", true, key, pols, "f1", "a", "f2", "b") {
		t.Fatal("HGETALL fill not stored")
	}
	tests := []struct {
		name   string
		key    string
		res    Result
		hr     HashResult
		allocs float64
	}{
		{"some fields into an entry with others", "h", Result{PTTL: NoExpiry}, HashResult{KeyPolicy: key, Fields: []FieldRead{
			{Field: []byte("f2"), Value: []byte("B"), Policy: stale},
			{Field: []byte("f4"), Missing: true, Policy: key, PTTL: 5 * time.Second},
		}}, 0},
		{"some fields of a complete image", "all", Result{PTTL: 20 * time.Minute}, HashResult{KeyPolicy: key, Fields: []FieldRead{
			{Field: []byte("f1"), Value: []byte("A"), Policy: key},
		}}, 1},
		{"the whole hash", "h", Result{PTTL: NoExpiry}, HashResult{All: true, KeyPolicy: key, Fields: []FieldRead{
			{Field: []byte("f1"), Value: []byte("a"), Policy: key},
			{Field: []byte("f2"), Value: []byte("b"), Policy: stale},
		}}, 0},
		{"no hash", "none", Result{PTTL: -2 * time.Millisecond}, HashResult{All: true, KeyPolicy: key}, 0},
	}
	for _, tt := range tests {
		f, leader := c.AcquireHash([]byte(tt.key), 7)
		if !leader {
			t.Fatalf("%s: not the leader", tt.name)
		}
		buf, _ := c.mergeHash(f, &tt.res, &tt.hr, true) // grows the pooled buffer
		if buf == nil {
			t.Fatalf("%s: mergeHash built no entry", tt.name)
		}
		putBuf(buf)
		merge := func() {
			if buf, _ := c.mergeHash(f, &tt.res, &tt.hr, true); buf != nil {
				putBuf(buf)
			}
		}
		if n := testing.AllocsPerRun(100, merge); n > tt.allocs && !raceEnabled {
			t.Errorf("%s: %v allocations per mergeHash; want %v", tt.name, n, tt.allocs)
		}
		c.CompleteHash(f, Result{Err: errors.New("done")}, nil)
	}
}
