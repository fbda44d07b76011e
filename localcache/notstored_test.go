package localcache

import (
	"strings"
	"testing"
	"time"
)

// TestNotStoredReasons: every answer the tier refuses to store counts under exactly one reason, the key's last
// reason is remembered (LastNotStored), and answers that are stored, failed or not answers at all count nothing.
func TestNotStoredReasons(t *testing.T) {
	hashPolicy := &Policy{SoftTTL: time.Minute, HardTTL: time.Hour}
	cases := []struct {
		name string
		run  func(t *testing.T, c *Cache, clk *testClock, key []byte)
		want Reason // 0: nothing counted
	}{
		{"stored", func(t *testing.T, c *Cache, _ *testClock, key []byte) {
			c.Complete(acquire(t, c, key), value("v"), fillPolicy)
		}, 0},
		{"stored unverified", func(t *testing.T, c *Cache, _ *testClock, key []byte) {
			c.SetTrusted(false)
			c.Complete(acquire(t, c, key), value("v"), &Policy{HardTTL: time.Hour, Revalidate: true})
		}, 0},
		{"upstream error", func(t *testing.T, c *Cache, _ *testClock, key []byte) {
			c.Complete(acquire(t, c, key), Result{Err: errTest}, fillPolicy)
		}, 0},
		{"no store", func(t *testing.T, c *Cache, _ *testClock, key []byte) {
			c.Complete(acquire(t, c, key), Result{Value: []byte("v"), NoStore: true}, fillPolicy)
		}, 0},
		{"too large", func(t *testing.T, c *Cache, _ *testClock, key []byte) {
			c.Complete(acquire(t, c, key), value(strings.Repeat("x", c.MaxEntry())), fillPolicy)
		}, NotStoredTooLarge},
		{"largest value stored", func(t *testing.T, c *Cache, _ *testClock, key []byte) {
			if !c.Complete(acquire(t, c, key), value(strings.Repeat("x", c.MaxEntry()-headerSize-len(key))), fillPolicy) {
				t.Error("the largest value MaxEntry allows was not stored")
			}
		}, 0},
		{"hash too large", func(t *testing.T, c *Cache, _ *testClock, key []byte) {
			big := strings.Repeat("x", c.MaxEntry())
			hr := &HashResult{Fields: []FieldRead{{Field: []byte("f"), Value: []byte(big), Policy: hashPolicy}}}
			c.CompleteHash(acquireHash(c, key), Result{PTTL: NoExpiry}, hr)
		}, NotStoredTooLarge},
		{"wrong type", func(t *testing.T, c *Cache, _ *testClock, key []byte) {
			c.Complete(acquire(t, c, key), Result{Reply: []byte("-WRONGTYPE x\r\n")}, fillPolicy)
		}, NotStoredWrongType},
		{"hash wrong type", func(t *testing.T, c *Cache, _ *testClock, key []byte) {
			c.CompleteHash(acquireHash(c, key), Result{Reply: []byte("-WRONGTYPE x\r\n")}, nil)
		}, NotStoredWrongType},
		{"expired between GET and PTTL", func(t *testing.T, c *Cache, _ *testClock, key []byte) {
			c.Complete(acquire(t, c, key), Result{Value: []byte("v"), PTTL: -2 * time.Millisecond}, fillPolicy)
		}, NotStoredExpired},
		{"expired during the read", func(t *testing.T, c *Cache, clk *testClock, key []byte) {
			f := acquire(t, c, key)
			clk.Add(2 * time.Second)
			c.Complete(f, Result{Value: []byte("v"), PTTL: time.Second}, fillPolicy)
		}, NotStoredExpired},
		{"hash expired during the read", func(t *testing.T, c *Cache, clk *testClock, key []byte) {
			f := acquireHash(c, key)
			clk.Add(2 * time.Second)
			hr := &HashResult{Fields: []FieldRead{{Field: []byte("f"), Value: []byte("v"), Policy: hashPolicy}}}
			c.CompleteHash(f, Result{PTTL: time.Second}, hr)
		}, NotStoredExpired},
		{"nil without negative ttl", func(t *testing.T, c *Cache, _ *testClock, key []byte) {
			c.Complete(acquire(t, c, key), Result{Nil: true}, &Policy{HardTTL: time.Hour})
		}, NotStoredNoNegativeTTL},
		{"missing field without negative ttl", func(t *testing.T, c *Cache, _ *testClock, key []byte) {
			hr := &HashResult{Fields: []FieldRead{{Field: []byte("f"), Missing: true, Policy: hashPolicy}}}
			c.CompleteHash(acquireHash(c, key), Result{PTTL: -2 * time.Millisecond}, hr)
		}, NotStoredNoNegativeTTL},
		{"uncached policy", func(t *testing.T, c *Cache, _ *testClock, key []byte) {
			c.Complete(acquire(t, c, key), value("v"), &Policy{})
		}, NotStoredUncachedPolicy},
		{"superseded by an invalidation", completeAfter(func(c *Cache, key []byte) { c.Invalidate(key) }), NotStoredSuperseded},
		{"superseded by a flush", completeAfter(func(c *Cache, key []byte) { c.Flush() }), NotStoredSuperseded},
		{"contested", completeAfter(func(c *Cache, key []byte) { c.Answered(key, value("other")) }), NotStoredContested},
		{"mget overlap", func(t *testing.T, c *Cache, _ *testClock, key []byte) {
			c.Complete(acquire(t, c, key), Result{Value: []byte("v"), PTTL: NoExpiry, Drop: true}, fillPolicy)
		}, NotStoredMGETOverlap},
		{"untrusted", completeAfter(func(c *Cache, key []byte) { c.SetTrusted(false) }), NotStoredUntrusted},
		{"key too large", func(t *testing.T, c *Cache, _ *testClock, _ []byte) {
			c.Complete(acquire(t, c, []byte(strings.Repeat("k", MaxKeyLen+1))), value("v"), fillPolicy)
		}, NotStoredKeyTooLarge},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clk := newClock(t0)
			c := newTestCache(t, clk, nil)
			key := []byte("k:" + tc.name)
			before := c.Stats().NotStored
			clk.Add(time.Second)
			at := clk.Now()
			tc.run(t, c, clk, key)
			after := c.Stats().NotStored
			for _, r := range Reasons {
				want := uint64(0)
				if r == tc.want {
					want = 1
				}
				if got := after[r] - before[r]; got != want {
					t.Errorf("not stored %s moved by %d; want %d", r, got, want)
				}
			}
			if tc.want == 0 || tc.want == NotStoredKeyTooLarge {
				if why, _, ok := c.LastNotStored(key); ok {
					t.Errorf("LastNotStored = %s; want none", why)
				}
				return
			}
			why, when, ok := c.LastNotStored(key)
			if !ok || why != tc.want || when.Before(at) {
				t.Errorf("LastNotStored = %s at %v, %v; want %s at or after %v", why, when, ok, tc.want, at)
			}
		})
	}
}

// completeAfter is a TestNotStoredReasons case that starts a fill of key, runs between, then completes the fill with
// the value "v" under fillPolicy.
func completeAfter(between func(c *Cache, key []byte)) func(t *testing.T, c *Cache, _ *testClock, key []byte) {
	return func(t *testing.T, c *Cache, _ *testClock, key []byte) {
		f := acquire(t, c, key)
		between(c, key)
		c.Complete(f, value("v"), fillPolicy)
	}
}

// TestNotStoredRemembersRecentKeys: LastNotStored forgets the oldest refused keys first, and keeps at most
// refusalsKept of them.
func TestNotStoredRemembersRecentKeys(t *testing.T) {
	c := newTestCache(t, newClock(t0), nil)
	p := &Policy{HardTTL: time.Hour}
	for i := range refusalsKept + 10 {
		c.Complete(acquire(t, c, []byte("k:"+itoa(i+1))), Result{Nil: true}, p)
	}
	if _, _, ok := c.LastNotStored([]byte("k:1")); ok {
		t.Error("the oldest refused key is still remembered")
	}
	if why, _, ok := c.LastNotStored([]byte("k:" + itoa(refusalsKept+10))); !ok || why != NotStoredNoNegativeTTL {
		t.Errorf("the newest refused key: %s, %v; want %s", why, ok, NotStoredNoNegativeTTL)
	}
	if n := len(c.refused.last); n != refusalsKept {
		t.Errorf("%d keys remembered; want %d", n, refusalsKept)
	}
	long := []byte(strings.Repeat("k", MaxKeyLen+1))
	if why, _, ok := c.LastNotStored(long); !ok || why != NotStoredKeyTooLarge {
		t.Errorf("a key over MaxKeyLen: %s, %v; want %s", why, ok, NotStoredKeyTooLarge)
	}
}

func acquire(t *testing.T, c *Cache, key []byte) *Fill {
	t.Helper()
	f, leader := c.Acquire(key)
	if !leader {
		t.Fatalf("Acquire(%q) joined a fill", key)
	}
	return f
}

func acquireHash(c *Cache, key []byte) *Fill {
	f, _ := c.AcquireHash(key, HashFillID([][]byte{[]byte("f")}, false))
	return f
}
