package localcache

import (
	"bytes"
	"errors"
	"sync"
	"testing"
	"time"
)

var fillPolicy = &Policy{SoftTTL: 10 * time.Second, HardTTL: 60 * time.Second, NegativeTTL: 5 * time.Second}

// flightsHeld counts the generation table's flights; it must be zero when no fill is outstanding.
func flightsHeld(c *Cache) int {
	n := 0
	for i := range c.shards {
		c.shards[i].mu.Lock()
		n += len(c.shards[i].flights)
		c.shards[i].mu.Unlock()
	}
	return n
}

// TestInvalidateDuringFill: a fill that began before an invalidation stores nothing, a read after the invalidation
// starts a fill of its own, and when the two answer differently neither is stored. Which of the two read Redis last
// is not known: they go out on different shared connections, and the one that began first may reach Redis last
// (read 61127 where the later one read 61126). Storing the later one's answer would then serve a value older than
// the one the earlier fill's readers were just answered (TestOutsideCountersUnderReaders saw a GET go back from
// 61127 to 61126 so). A fill that begins once both are over reads Redis after both, and is stored.
func TestInvalidateDuringFill(t *testing.T) {
	c := newTestCache(t, newClock(t0), nil)
	old, leader := c.Acquire([]byte("k"))
	if !leader {
		t.Fatal("first Acquire did not lead")
	}
	c.Invalidate([]byte("k"))

	// A read after the invalidation must not join the fill that began before it.
	next, leader := c.Acquire([]byte("k"))
	if !leader || next == old {
		t.Fatal("Acquire after Invalidate joined the earlier fill")
	}
	// A read after that joins the new fill.
	if again, leader := c.Acquire([]byte("k")); leader || again != next {
		t.Fatal("Acquire did not join the fill of the current generation")
	}

	if c.Complete(old, value("61127"), fillPolicy) {
		t.Fatal("a fill that began before an invalidation was stored")
	}
	if got, lk := c.AppendGet(nil, []byte("k"), fillPolicy, t0, true); lk.State != StateMiss {
		t.Fatalf("served %q after the invalidated fill completed", got)
	}
	if c.Complete(next, value("61126"), fillPolicy) {
		t.Fatal("the fill after the invalidation was stored although the fill before it answered otherwise")
	}
	if got, lk := c.AppendGet(nil, []byte("k"), fillPolicy, t0, true); lk.State != StateMiss {
		t.Fatalf("served %q after the earlier fill's readers were answered %q", got, "61127")
	}
	if got := old.Result(); string(got.Value) != "61127" {
		t.Errorf("old fill's waiters got %q; want its own result %q", got.Value, "61127")
	}
	if got := next.Result(); string(got.Value) != "61126" {
		t.Errorf("new fill's waiters got %q; want its own result %q", got.Value, "61126")
	}

	last, leader := c.Acquire([]byte("k"))
	if !leader {
		t.Fatal("a read after both fills completed joined one")
	}
	if !c.Complete(last, value("61128"), fillPolicy) {
		t.Fatal("a fill that began after the others completed was not stored")
	}
	if got, _ := c.AppendGet(nil, []byte("k"), fillPolicy, t0, false); string(got) != bulk("61128") {
		t.Fatalf("served %q; want %q", got, bulk("61128"))
	}
	s := c.Stats()
	if s.FillsDiscarded != 1 || s.FillsStored != 1 || s.FillsJoined != 1 || s.Invalidations != 1 {
		t.Errorf("stats %+v; want discarded 1, stored 1, joined 1, invalidations 1", s)
	}
}

func TestInvalidateDropsEntry(t *testing.T) {
	c := newTestCache(t, newClock(t0), nil)
	fill(t, c, "a", value("1"), fillPolicy)
	fill(t, c, "b", value("2"), fillPolicy)
	c.Invalidate([]byte("a"), []byte("absent"))
	if _, lk := c.AppendGet(nil, []byte("a"), fillPolicy, t0, true); lk.State != StateMiss {
		t.Error("invalidated key still served")
	}
	if _, lk := c.AppendGet(nil, []byte("b"), fillPolicy, t0, false); lk.State != StateFresh {
		t.Error("a key not invalidated was dropped")
	}
}

// TestEpochMovesDuringFill: a flush or a trust transition between Acquire and Complete means the fill
// is not stored, and a read after it does not join the fill.
func TestEpochMovesDuringFill(t *testing.T) {
	tests := []struct {
		name       string
		before     func(c *Cache) // before Acquire
		during     func(c *Cache) // between Acquire and Complete
		wantJoin   bool           // a read after `during` joins the fill
		wantStored bool
	}{
		{"nothing", nil, nil, true, true},
		{"flush", nil, (*Cache).Flush, false, false},
		{"tracking lost", nil, func(c *Cache) { c.SetTrusted(false) }, false, false},
		{"tracking back", func(c *Cache) { c.SetTrusted(false) }, func(c *Cache) { c.SetTrusted(true) }, false, false},
		{"tracking lost and back", nil, func(c *Cache) { c.SetTrusted(false); c.SetTrusted(true) }, false, false},
		{"untrusted throughout", func(c *Cache) { c.SetTrusted(false) }, nil, true, false},
		{"trusted again is no transition", nil, func(c *Cache) { c.SetTrusted(true) }, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newTestCache(t, newClock(t0), nil)
			if tt.before != nil {
				tt.before(c)
			}
			f, _ := c.Acquire([]byte("k"))
			if tt.during != nil {
				tt.during(c)
			}
			g, leader := c.Acquire([]byte("k"))
			if leader == tt.wantJoin || (g == f) != tt.wantJoin {
				t.Errorf("second Acquire joined the first fill: %v; want %v", g == f, tt.wantJoin)
			}
			if leader {
				defer c.Complete(g, Result{Err: errors.New("unused")}, fillPolicy)
			}
			if got := c.Complete(f, value("v"), fillPolicy); got != tt.wantStored {
				t.Fatalf("stored %v; want %v", got, tt.wantStored)
			}
			_, lk := c.AppendGet(nil, []byte("k"), fillPolicy, t0, true)
			if (lk.State != StateMiss) != tt.wantStored {
				t.Errorf("lookup state %v; want served %v", lk.State, tt.wantStored)
			}
		})
	}
}

// TestEpochMakesEntriesUnservable: a flush or a tracking loss hides what was stored before it, also
// after tracking comes back (for a policy without Revalidate; see TestRevalidateKeepsUnverified).
func TestEpochMakesEntriesUnservable(t *testing.T) {
	tests := []struct {
		name string
		move func(c *Cache)
	}{
		{"flush", (*Cache).Flush},
		{"tracking lost", func(c *Cache) { c.SetTrusted(false) }},
		{"tracking lost and back", func(c *Cache) { c.SetTrusted(false); c.SetTrusted(true) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newTestCache(t, newClock(t0), nil)
			fill(t, c, "k", value("v"), fillPolicy)
			e, s := c.Epoch(), c.Session()
			tt.move(c)
			if c.Epoch() == e && c.Session() == s {
				t.Fatal("neither the epoch nor the session moved")
			}
			if _, lk := c.AppendGet(nil, []byte("k"), fillPolicy, t0, true); lk.State != StateMiss {
				t.Fatalf("entry from before the epoch move served (%v)", lk.State)
			}
		})
	}
}

func TestTrustedTransitions(t *testing.T) {
	c := newTestCache(t, newClock(t0), nil)
	e, sess := c.Epoch(), c.Session()
	steps := []struct {
		set         bool
		wantTrusted bool
		wantSession uint32
	}{
		{true, true, sess},
		{false, false, sess + 1},
		{false, false, sess + 1},
		{true, true, sess + 2},
	}
	for i, s := range steps {
		c.SetTrusted(s.set)
		if c.Trusted() != s.wantTrusted || c.Session() != s.wantSession || c.Epoch() != e {
			t.Errorf("step %d SetTrusted(%v): trusted %v session %d epoch %d; want %v %d %d", i, s.set, c.Trusted(), c.Session(), c.Epoch(), s.wantTrusted, s.wantSession, e)
		}
	}
	c.SetTrusted(false)
	c.Flush()
	if c.Trusted() {
		t.Error("Flush made an untrusted cache trusted")
	}
	if fill(t, c, "k", value("v"), fillPolicy) {
		t.Error("stored while untrusted")
	}
	if s := c.Stats(); s.FillsUntrusted != 1 {
		t.Errorf("FillsUntrusted %d; want 1", s.FillsUntrusted)
	}
}

// TestSingleFlight: many goroutines missing one cold key share one fill and all get its result.
func TestSingleFlight(t *testing.T) {
	const n = 64
	c := newTestCache(t, newClock(t0), nil)
	var acquired, done sync.WaitGroup
	acquired.Add(n)
	done.Add(n)
	start := make(chan struct{})
	leaders := make(chan int, n)
	results := make([]Result, n)
	for i := range n {
		go func() {
			defer done.Done()
			<-start
			f, leader := c.Acquire([]byte("cold"))
			acquired.Done()
			if leader {
				leaders <- i
				acquired.Wait() // complete only once every goroutine has looked for a fill
				c.Complete(f, value("payload"), fillPolicy)
			}
			<-f.Done()
			results[i] = f.Result()
		}()
	}
	close(start)
	done.Wait()
	if len(leaders) != 1 {
		t.Fatalf("%d leaders; want 1", len(leaders))
	}
	for i, r := range results {
		if string(r.Value) != "payload" || r.Err != nil {
			t.Errorf("goroutine %d got %q, %v; want %q", i, r.Value, r.Err, "payload")
		}
	}
	if s := c.Stats(); s.FillsJoined != n-1 || s.FillsStored != 1 {
		t.Errorf("stats %+v; want joined %d, stored 1", s, n-1)
	}
	if got, _ := c.AppendGet(nil, []byte("cold"), fillPolicy, t0, false); string(got) != bulk("payload") {
		t.Errorf("served %q; want %q", got, bulk("payload"))
	}
	if k := flightsHeld(c); k != 0 {
		t.Errorf("%d flights held with no fill outstanding", k)
	}
}

func TestWaitersGetErrorsAndReplies(t *testing.T) {
	boom := errors.New("upstream: timeout")
	tests := []struct {
		name string
		res  Result
	}{
		{"error", Result{Err: boom}},
		{"relayed reply", Result{NoStore: true, Reply: []byte("-WRONGTYPE Operation against a key holding the wrong kind of value\r\n")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newTestCache(t, newClock(t0), nil)
			f, _ := c.Acquire([]byte("k"))
			w, leader := c.Acquire([]byte("k"))
			if leader {
				t.Fatal("second Acquire led")
			}
			if c.Complete(f, tt.res, fillPolicy) {
				t.Fatal("stored")
			}
			got := w.Result()
			if got.Err != tt.res.Err || !bytes.Equal(got.Reply, tt.res.Reply) {
				t.Errorf("waiter got %+v; want %+v", got, tt.res)
			}
			if _, lk := c.AppendGet(nil, []byte("k"), fillPolicy, t0, true); lk.State != StateMiss {
				t.Error("served after a fill that stored nothing")
			}
		})
	}
}

func TestTooLarge(t *testing.T) {
	// With 1 MiB freecache takes entries up to 1 MiB/1024 - 24 = 1000 bytes of key + value.
	const maxKV = 1000
	tests := []struct {
		name         string
		key          []byte
		valueLen     int
		wantStored   bool
		wantLargeKey uint64
		wantLargeVal uint64
	}{
		{"largest entry", []byte("k"), maxKV - 1 - headerSize, true, 0, 0},
		{"one byte over", []byte("k"), maxKV - headerSize, false, 0, 1},
		{"huge value", []byte("k"), 1 << 20, false, 0, 1},
		{"key over 65535 bytes", bytes.Repeat([]byte("k"), MaxKeyLen+1), 1, false, 1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(Options{MaxMemory: MinMemory, Now: newClock(t0).Now})
			if err != nil {
				t.Fatal(err)
			}
			val := bytes.Repeat([]byte("v"), tt.valueLen)
			f, leader := c.Acquire(tt.key)
			w, wleader := c.Acquire(tt.key)
			if !leader || wleader || w != f {
				t.Fatal("fills of this key are not single-flight")
			}
			if got := c.Complete(f, Result{Value: val, PTTL: NoExpiry}, fillPolicy); got != tt.wantStored {
				t.Fatalf("stored %v; want %v", got, tt.wantStored)
			}
			if got := w.Result(); !bytes.Equal(got.Value, val) {
				t.Errorf("waiter got %d bytes; want %d", len(got.Value), len(val))
			}
			_, lk := c.AppendGet(nil, tt.key, fillPolicy, t0, false)
			if (lk.State == StateFresh) != tt.wantStored {
				t.Errorf("lookup state %v; want served %v", lk.State, tt.wantStored)
			}
			s := c.Stats()
			if s.TooLargeKeys != tt.wantLargeKey || s.TooLargeValues != tt.wantLargeVal {
				t.Errorf("TooLargeKeys %d TooLargeValues %d; want %d %d", s.TooLargeKeys, s.TooLargeValues, tt.wantLargeKey, tt.wantLargeVal)
			}
			if n := flightsHeld(c); n != 0 {
				t.Errorf("%d flights held with no fill outstanding", n)
			}
		})
	}
}

func TestCompleteTwicePanics(t *testing.T) {
	c := newTestCache(t, newClock(t0), nil)
	f, _ := c.Acquire([]byte("k"))
	c.Complete(f, value("v"), fillPolicy)
	defer func() {
		if recover() == nil {
			t.Fatal("second Complete did not panic")
		}
	}()
	c.Complete(f, value("v"), fillPolicy)
}

// TestFillStartsTheClock: an entry's age counts from Acquire, not from Complete, so a slow fill errs
// early.
func TestFillStartsTheClock(t *testing.T) {
	clk := newClock(t0)
	c := newTestCache(t, clk, nil)
	f, _ := c.Acquire([]byte("k"))
	clk.Add(3 * time.Second)
	c.Complete(f, Result{Value: []byte("v"), PTTL: 20 * time.Second}, fillPolicy)
	h, _, _, _ := c.Explain([]byte("k"), fillPolicy, clk.Now())
	if h.FetchedAt != t0.UnixMilli() || h.ExpireAt != t0.Add(20*time.Second).UnixMilli() || h.SoftAt != t0.Add(10*time.Second).UnixMilli() {
		t.Errorf("header %+v; want fetched, soft and expiry counted from the fill start %d", h, t0.UnixMilli())
	}
	if f.Start() != t0 {
		t.Errorf("Start %v; want %v", f.Start(), t0)
	}
}

func TestFlushKeepsEvictionCount(t *testing.T) {
	c, err := New(Options{MaxMemory: MinMemory, Now: newClock(t0).Now})
	if err != nil {
		t.Fatal(err)
	}
	val := bytes.Repeat([]byte("v"), 900)
	for i := range 5000 {
		fill(t, c, "k"+itoa(i), Result{Value: val, PTTL: NoExpiry}, fillPolicy)
	}
	ev := c.Stats().Evictions
	if ev == 0 {
		t.Fatal("no evictions after writing 4.5 MB into 1 MiB")
	}
	c.Flush()
	if s := c.Stats(); s.Evictions != ev || s.Entries != 0 || s.Flushes != 1 {
		t.Errorf("after Flush: %+v; want evictions %d, entries 0, flushes 1", s, ev)
	}
}

// TestRevalidateKeepsUnverified: with Policy.Revalidate, entries survive a tracking loss as unverified:
// served only within their soft deadline (or by serve-stale while the upstream fails), never once past
// it; a Flush (the server that came back is another one) drops them; a fresh fill makes them verified.
func TestRevalidateKeepsUnverified(t *testing.T) {
	clk := newClock(t0)
	c := newTestCache(t, clk, nil)
	p := &Policy{SoftTTL: 10 * time.Second, HardTTL: 20 * time.Second, Revalidate: true, ServeStale: true, MaxStale: time.Minute}
	flushing := &Policy{SoftTTL: 10 * time.Second, HardTTL: 20 * time.Second}
	fill(t, c, "r", value("v1"), p)
	fill(t, c, "f", value("v1"), flushing)
	c.SetTrusted(false)
	c.SetTrusted(true)
	if _, lk := c.AppendGet(nil, []byte("f"), flushing, t0, false); lk.State != StateMiss {
		t.Fatalf("flush policy after a tracking loss: %v; want miss", lk.State)
	}
	got, lk := c.AppendGet(nil, []byte("r"), p, t0.Add(5*time.Second), false)
	if lk.State != StateUnverified || string(got) != "$2\r\nv1\r\n" {
		t.Fatalf("revalidate policy within soft: %v %q; want unverified v1", lk.State, got)
	}
	if _, lk := c.AppendGet(nil, []byte("r"), p, t0.Add(11*time.Second), false); lk.State != StateMiss {
		t.Fatalf("unverified past soft: %v; want miss", lk.State)
	}
	if _, lk := c.AppendGet(nil, []byte("r"), p, t0.Add(25*time.Second), true); lk.State != StateDead {
		t.Fatalf("unverified, upstream failing, serve-stale: %v; want dead (served)", lk.State)
	}
	if _, _, st, _ := c.Explain([]byte("r"), p, t0); st != StateUnverified {
		t.Fatalf("Explain: %v; want unverified", st)
	}
	fill(t, c, "r", value("v2"), p) // the re-fetch
	if got, lk := c.AppendGet(nil, []byte("r"), p, t0, false); lk.State != StateFresh || string(got) != "$2\r\nv2\r\n" {
		t.Fatalf("after the re-fetch: %v %q; want fresh v2", lk.State, got)
	}
	fill(t, c, "s", value("v1"), p)
	c.SetTrusted(false)
	c.Flush() // the server came back as another one
	c.SetTrusted(true)
	if _, lk := c.AppendGet(nil, []byte("s"), p, t0, true); lk.State != StateMiss {
		t.Fatalf("after a flush: %v; want miss", lk.State)
	}
}

// TestServeStaleAcrossTrustLoss: an entry a tracking loss made unservable is still served under serve-stale when
// the upstream fails (allowDead), within the policy's bounds, until a flush; never to an ordinary lookup, never
// under a policy without serve-stale.
func TestServeStaleAcrossTrustLoss(t *testing.T) {
	stale := &Policy{SoftTTL: 10 * time.Second, HardTTL: 60 * time.Second, ServeStale: true, MaxStale: 30 * time.Second}
	fail := &Policy{SoftTTL: 10 * time.Second, HardTTL: 60 * time.Second}
	tests := []struct {
		name      string
		move      func(c *Cache)
		p         *Policy
		at        time.Duration // lookup time after the fill
		wantServe bool
	}{
		{"tracking lost", func(c *Cache) { c.SetTrusted(false) }, stale, 0, true},
		{"tracking lost and back", func(c *Cache) { c.SetTrusted(false); c.SetTrusted(true) }, stale, 0, true},
		{"lost, back, lost", func(c *Cache) { c.SetTrusted(false); c.SetTrusted(true); c.SetTrusted(false) }, stale, 0, true},
		{"tracking lost, past hard ttl", func(c *Cache) { c.SetTrusted(false) }, stale, 80 * time.Second, true},
		{"tracking lost, past max_stale", func(c *Cache) { c.SetTrusted(false) }, stale, 90 * time.Second, false},
		{"tracking lost, fail policy", func(c *Cache) { c.SetTrusted(false) }, fail, 0, false},
		{"flush", (*Cache).Flush, stale, 0, false},
		{"tracking lost then flush", func(c *Cache) { c.SetTrusted(false); c.Flush() }, stale, 0, false},
		{"flush while untrusted, then back", func(c *Cache) { c.SetTrusted(false); c.Flush(); c.SetTrusted(true) }, stale, 0, false},
		{"invalidated while untrusted", func(c *Cache) { c.SetTrusted(false); c.Invalidate([]byte("k")) }, stale, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newTestCache(t, newClock(t0), nil)
			if !fill(t, c, "k", value("v"), tt.p) {
				t.Fatal("not stored")
			}
			tt.move(c)
			at := t0.Add(tt.at)
			if got, lk := c.AppendGet(nil, []byte("k"), tt.p, at, false); lk.State != StateMiss || len(got) != 0 {
				t.Fatalf("an ordinary lookup served the entry (%v)", lk.State)
			}
			got, lk := c.AppendGet(nil, []byte("k"), tt.p, at, true)
			if served := lk.State != StateMiss; served != tt.wantServe {
				t.Fatalf("serve-stale lookup: served %v (%v); want %v", served, lk.State, tt.wantServe)
			}
			if tt.wantServe && string(got) != bulk("v") {
				t.Fatalf("served %q", got)
			}
		})
	}
	// A value stored after the loss replaces the old one, and is what serve-stale serves.
	c := newTestCache(t, newClock(t0), nil)
	fill(t, c, "k", value("old"), stale)
	c.SetTrusted(false)
	c.SetTrusted(true)
	fill(t, c, "k", value("new"), stale)
	c.SetTrusted(false)
	if got, _ := c.AppendGet(nil, []byte("k"), stale, t0, true); string(got) != bulk("new") {
		t.Fatalf("got %q; want the newer value", got)
	}
}
