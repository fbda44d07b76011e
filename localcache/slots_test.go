package localcache

import (
	"testing"
	"time"
)

// slotOfFirstByte is a slot function for tests: the key's first byte is its slot, so keys "a..." and "b..." are
// in different slots.
func slotOfFirstByte(key []byte) uint16 {
	if len(key) == 0 {
		return 0
	}
	return uint16(key[0])
}

func slotCache(t *testing.T) (*Cache, *testClock) {
	t.Helper()
	clk := newClock(t0)
	c := newTestCache(t, clk, nil)
	c.EnableSlots(slotOfFirstByte)
	return c, clk
}

func lookupState(c *Cache, key string, p *Policy, now time.Time, allowDead bool) State {
	_, lk := c.AppendGet(nil, []byte(key), p, now, allowDead)
	return lk.State
}

// TestSlotsStartUntrusted: in cluster mode nothing is stored until the key's slot is trusted, and trusting one
// slot does not make another one store.
func TestSlotsStartUntrusted(t *testing.T) {
	c, clk := slotCache(t)
	p := &Policy{SoftTTL: time.Minute, HardTTL: time.Hour}
	if c.Trusted() {
		t.Fatal("Trusted() = true with every slot untrusted; want false")
	}
	if fill(t, c, "a1", value("x"), p) {
		t.Fatal("a fill of an untrusted slot was stored")
	}
	c.SetSlotsTrusted([]uint16{'a'}, true)
	if !fill(t, c, "a1", value("x"), p) {
		t.Fatal("a fill of a trusted slot was not stored")
	}
	if fill(t, c, "b1", value("y"), p) {
		t.Fatal("a fill of another, untrusted slot was stored")
	}
	if got := lookupState(c, "a1", p, clk.Now(), false); got != StateFresh {
		t.Fatalf("a1: got %v; want fresh", got)
	}
	if got, want := c.UntrustedSlots(), SlotCount-1; got != want {
		t.Fatalf("UntrustedSlots() = %d; want %d", got, want)
	}
}

// TestSlotsTrackingLoss: losing the tracking of one slot makes its entries unverified (dropped under flush,
// served within soft TTL under revalidate) and leaves the entries of other slots alone.
func TestSlotsTrackingLoss(t *testing.T) {
	c, clk := slotCache(t)
	flush := &Policy{SoftTTL: time.Minute, HardTTL: time.Hour}
	reval := &Policy{SoftTTL: time.Minute, HardTTL: time.Hour, Revalidate: true}
	c.SetSlotsTrusted([]uint16{'a', 'b'}, true)
	fill(t, c, "a1", value("x"), flush)
	fill(t, c, "a2", value("x"), reval)
	fill(t, c, "b1", value("y"), flush)

	c.SetSlotsTrusted([]uint16{'a'}, false)
	now := clk.Now()
	if got := lookupState(c, "a1", flush, now, false); got != StateMiss {
		t.Errorf("a1 (flush policy) after its slot's loss: got %v; want miss", got)
	}
	if got := lookupState(c, "a2", reval, now, false); got != StateUnverified {
		t.Errorf("a2 (revalidate policy) after its slot's loss: got %v; want unverified", got)
	}
	if got := lookupState(c, "b1", flush, now, false); got != StateFresh {
		t.Errorf("b1, another slot: got %v; want fresh", got)
	}
	if fill(t, c, "a3", value("z"), flush) {
		t.Error("a fill of a slot that lost tracking was stored")
	}
	// Back: the entries of before stay unverified; new fills are stored.
	c.SetSlotsTrusted([]uint16{'a'}, true)
	if got := lookupState(c, "a2", reval, clk.Now(), false); got != StateUnverified {
		t.Errorf("a2 after tracking is back: got %v; want unverified", got)
	}
	if !fill(t, c, "a3", value("z"), flush) {
		t.Error("a fill after tracking is back was not stored")
	}
}

// TestSlotsFlush: a flushed slot's entries are never served, not even stale while the upstream fails; other
// slots keep theirs.
func TestSlotsFlush(t *testing.T) {
	c, clk := slotCache(t)
	p := &Policy{SoftTTL: time.Minute, HardTTL: time.Minute, ServeStale: true, MaxStale: time.Hour, Revalidate: true}
	c.SetSlotsTrusted([]uint16{'a', 'b'}, true)
	fill(t, c, "a1", value("x"), p)
	fill(t, c, "b1", value("y"), p)
	c.SetSlotsTrusted([]uint16{'a', 'b'}, false)
	later := clk.Add(2 * time.Minute) // past hard TTL: only serve-stale serves
	if got := lookupState(c, "a1", p, later, true); got != StateDead {
		t.Fatalf("a1 under serve-stale before the flush: got %v; want dead (served stale)", got)
	}
	c.FlushSlots([]uint16{'a'})
	if got := lookupState(c, "a1", p, later, true); got != StateMiss {
		t.Errorf("a1 under serve-stale after its slot's flush: got %v; want miss", got)
	}
	if got := lookupState(c, "b1", p, later, true); got != StateDead {
		t.Errorf("b1, another slot, under serve-stale: got %v; want dead (served stale)", got)
	}
	if st := c.Stats(); st.SlotFlushes != 1 {
		t.Errorf("SlotFlushes = %d; want 1", st.SlotFlushes)
	}
}

// TestSlotsFillAcrossTransition: a fill that began before its slot's trust moved is not stored, and a read after
// the transition does not join it.
func TestSlotsFillAcrossTransition(t *testing.T) {
	c, _ := slotCache(t)
	p := &Policy{SoftTTL: time.Minute, HardTTL: time.Hour}
	c.SetSlotsTrusted([]uint16{'a', 'b'}, true)
	f, _ := c.Acquire([]byte("a1"))
	c.SetSlotsTrusted([]uint16{'a'}, false)
	c.SetSlotsTrusted([]uint16{'a'}, true)
	if _, leader := c.Acquire([]byte("a1")); !leader {
		t.Fatal("a read after the slot's transition joined a fill that began before it")
	}
	if c.Complete(f, value("old"), p) {
		t.Fatal("a fill that began before its slot's trust moved was stored")
	}
	g, _ := c.Acquire([]byte("b1"))
	c.FlushSlots([]uint16{'a'})
	if !c.Complete(g, value("y"), p) {
		t.Fatal("a fill of another slot was not stored after a flush of slot a")
	}
}
