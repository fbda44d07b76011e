package localcache

import (
	"testing"
	"time"
)

// partitionOfFirstByte is a partition function for tests: the key's first byte is its partition, so keys "a..."
// and "b..." are in different partitions.
func partitionOfFirstByte(key []byte) int {
	if len(key) == 0 {
		return 0
	}
	return int(key[0])
}

// testPartitions is the number of partitions of partitionedCache: one per byte value.
const testPartitions = 256

func partitionedCache(t *testing.T) (*Cache, *testClock) {
	t.Helper()
	clk := newClock(t0)
	c := newTestCache(t, clk, nil)
	c.EnablePartitions(testPartitions, partitionOfFirstByte)
	return c, clk
}

func lookupState(c *Cache, key string, p *Policy, now time.Time, allowDead bool) State {
	_, lk := c.AppendGet(nil, []byte(key), p, now, allowDead)
	return lk.State
}

// TestPartitionsStartUntrusted: in a partitioned cache nothing is stored until the key's partition is trusted, and trusting one
// partition does not make another one store.
func TestPartitionsStartUntrusted(t *testing.T) {
	c, clk := partitionedCache(t)
	p := &Policy{SoftTTL: time.Minute, HardTTL: time.Hour}
	if c.Trusted() {
		t.Fatal("Trusted() = true with every partition untrusted; want false")
	}
	if fill(t, c, "a1", value("x"), p) {
		t.Fatal("a fill of an untrusted partition was stored")
	}
	c.SetPartitionsTrusted([]int{'a'}, true)
	if !fill(t, c, "a1", value("x"), p) {
		t.Fatal("a fill of a trusted partition was not stored")
	}
	if fill(t, c, "b1", value("y"), p) {
		t.Fatal("a fill of another, untrusted partition was stored")
	}
	if got := lookupState(c, "a1", p, clk.Now(), false); got != StateFresh {
		t.Fatalf("a1: got %v; want fresh", got)
	}
	if got, want := c.UntrustedPartitions(), testPartitions-1; got != want {
		t.Fatalf("UntrustedPartitions() = %d; want %d", got, want)
	}
}

// TestPartitionsTrackingLoss: losing the tracking of one partition makes its entries unverified (dropped under flush,
// served within soft TTL under revalidate) and leaves the entries of other partitions alone.
func TestPartitionsTrackingLoss(t *testing.T) {
	c, clk := partitionedCache(t)
	flush := &Policy{SoftTTL: time.Minute, HardTTL: time.Hour}
	reval := &Policy{SoftTTL: time.Minute, HardTTL: time.Hour, Revalidate: true}
	c.SetPartitionsTrusted([]int{'a', 'b'}, true)
	fill(t, c, "a1", value("x"), flush)
	fill(t, c, "a2", value("x"), reval)
	fill(t, c, "b1", value("y"), flush)

	c.SetPartitionsTrusted([]int{'a'}, false)
	now := clk.Now()
	if got := lookupState(c, "a1", flush, now, false); got != StateMiss {
		t.Errorf("a1 (flush policy) after its partition's loss: got %v; want miss", got)
	}
	if got := lookupState(c, "a2", reval, now, false); got != StateUnverified {
		t.Errorf("a2 (revalidate policy) after its partition's loss: got %v; want unverified", got)
	}
	if got := lookupState(c, "b1", flush, now, false); got != StateFresh {
		t.Errorf("b1, another partition: got %v; want fresh", got)
	}
	if fill(t, c, "a3", value("z"), flush) {
		t.Error("a fill of a partition that lost tracking was stored")
	}
	// Back: the entries of before stay unverified; new fills are stored.
	c.SetPartitionsTrusted([]int{'a'}, true)
	if got := lookupState(c, "a2", reval, clk.Now(), false); got != StateUnverified {
		t.Errorf("a2 after tracking is back: got %v; want unverified", got)
	}
	if !fill(t, c, "a3", value("z"), flush) {
		t.Error("a fill after tracking is back was not stored")
	}
}

// TestPartitionsFlush: a flushed partition's entries are never served, not even stale while the upstream fails; other
// partitions keep theirs.
func TestPartitionsFlush(t *testing.T) {
	c, clk := partitionedCache(t)
	p := &Policy{SoftTTL: time.Minute, HardTTL: time.Minute, ServeStale: true, MaxStale: time.Hour, Revalidate: true}
	c.SetPartitionsTrusted([]int{'a', 'b'}, true)
	fill(t, c, "a1", value("x"), p)
	fill(t, c, "b1", value("y"), p)
	c.SetPartitionsTrusted([]int{'a', 'b'}, false)
	later := clk.Add(2 * time.Minute) // past hard TTL: only serve-stale serves
	if got := lookupState(c, "a1", p, later, true); got != StateDead {
		t.Fatalf("a1 under serve-stale before the flush: got %v; want dead (served stale)", got)
	}
	c.FlushPartitions([]int{'a'})
	if got := lookupState(c, "a1", p, later, true); got != StateMiss {
		t.Errorf("a1 under serve-stale after its partition's flush: got %v; want miss", got)
	}
	if got := lookupState(c, "b1", p, later, true); got != StateDead {
		t.Errorf("b1, another partition, under serve-stale: got %v; want dead (served stale)", got)
	}
	if st := c.Stats(); st.PartitionFlushes != 1 {
		t.Errorf("PartitionFlushes = %d; want 1", st.PartitionFlushes)
	}
}

// TestPartitionsFillAcrossTransition: a fill that began before its partition's trust moved is not stored, and a read after
// the transition does not join it.
func TestPartitionsFillAcrossTransition(t *testing.T) {
	c, _ := partitionedCache(t)
	p := &Policy{SoftTTL: time.Minute, HardTTL: time.Hour}
	c.SetPartitionsTrusted([]int{'a', 'b'}, true)
	f, _ := c.Acquire([]byte("a1"))
	c.SetPartitionsTrusted([]int{'a'}, false)
	c.SetPartitionsTrusted([]int{'a'}, true)
	if _, leader := c.Acquire([]byte("a1")); !leader {
		t.Fatal("a read after the partition's transition joined a fill that began before it")
	}
	if c.Complete(f, value("old"), p) {
		t.Fatal("a fill that began before its partition's trust moved was stored")
	}
	g, _ := c.Acquire([]byte("b1"))
	c.FlushPartitions([]int{'a'})
	if !c.Complete(g, value("y"), p) {
		t.Fatal("a fill of another partition was not stored after a flush of partition a")
	}
}
