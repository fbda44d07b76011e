package localcache

import (
	"sync"
	"sync/atomic"
)

// partitionTable is the tracking state of a partitioned cache (EnablePartitions): one word per trust partition,
// in the layout of Cache.state's low half plus a floor,
//
//	floor<<32 | session<<1 | untrustedBit
//
// because when invalidations arrive over several connections (one per master of a Redis Cluster), losing one of
// them must only drop what that connection guarded. An entry then carries the session of its key's partition when
// it was filled (Header.Session): an entry of an earlier session of its partition is unverified, exactly as an
// entry of an earlier global session is for a whole cache, and one of a session below the partition's floor is
// never served (the partition was flushed: the server that held its keys restarted, failed over, or no longer
// holds them). The untrusted bit of a partition says that the invalidations of its keys are not being received:
// fills of its keys are not stored.
//
// The global state keeps its role for everything else: the flush epoch (a null invalidation flushes the whole
// tier), and the global trust bit, which stays set to trusted in a partitioned cache.
type partitionTable struct {
	partitionOf func(key []byte) int
	words       []atomic.Uint64

	mu        sync.Mutex   // serializes transitions, so that untrusted counts them once each
	untrusted atomic.Int32 // partitions with the untrusted bit set
}

func floorOf(word uint64) uint32 { return uint32(word >> 32) }

// word returns the state word of key's partition.
func (t *partitionTable) word(key []byte) *atomic.Uint64 { return &t.words[t.partitionOf(key)] }

// EnablePartitions switches the cache to n trust partitions, each with its own tracking state, for an upstream
// whose invalidations arrive over several connections that may fail apart: partitionOf maps a key to its
// partition, in [0, n) (in front of a Redis Cluster, the upstream package partitions keys as the cluster spreads
// them over its masters). Every partition starts untrusted, as the whole cache does before tracking is up, and
// everything cached before is flushed. From then on SetPartitionsTrusted and FlushPartitions act on partitions,
// and SetTrusted should be left at true: a fill is stored only when both the cache and its key's partition are
// trusted. Lookups in a partitioned cache cost a call of partitionOf more; an unpartitioned cache calls nothing.
// It is meant to be called once, before the cache serves; n must be at least 1.
func (c *Cache) EnablePartitions(n int, partitionOf func(key []byte) int) {
	t := &partitionTable{partitionOf: partitionOf, words: make([]atomic.Uint64, n)}
	for i := range t.words {
		t.words[i].Store(1<<32 | 1<<1 | untrustedBit) // floor 1, session 1: no entry of session 0 is ever served
	}
	t.untrusted.Store(int32(n))
	c.parts.Store(t)
	c.Flush()
}

// SetPartitionsTrusted is SetTrusted for some partitions: it says whether the invalidations of their keys are
// being received. Each transition moves the partition's session, so that entries of the partition stored before
// a loss are unverified (served under the rules of on_tracking_loss), and no value fetched while the partition
// was untrusted is stored after it becomes trusted again. Setting a partition's current value again does nothing.
// It does nothing before EnablePartitions; parts must be in [0, n).
func (c *Cache) SetPartitionsTrusted(parts []int, trusted bool) {
	t := c.parts.Load()
	if t == nil {
		return
	}
	var bit uint64
	if !trusted {
		bit = untrustedBit
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, p := range parts {
		w := &t.words[p]
		old := w.Load()
		if old&untrustedBit == bit {
			continue
		}
		w.Store(old&^(sessionMask<<1|untrustedBit) | uint64((sessionOf(old)+1)&sessionMask)<<1 | bit)
		if trusted {
			t.untrusted.Add(-1)
		} else {
			t.untrusted.Add(1)
		}
	}
}

// FlushPartitions makes every entry of keys in parts unservable, even under serve-stale, as Flush does for the
// whole tier: the partition's session moves and its floor rises to it. Fills of those partitions in flight are
// not stored. It does nothing before EnablePartitions; parts must be in [0, n).
func (c *Cache) FlushPartitions(parts []int) {
	t := c.parts.Load()
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, p := range parts {
		w := &t.words[p]
		old := w.Load()
		next := (sessionOf(old) + 1) & sessionMask
		w.Store(uint64(next)<<32 | uint64(next)<<1 | old&untrustedBit)
	}
	c.stats.partitionFlushes.Add(uint64(len(parts)))
}

// UntrustedPartitions is the number of partitions whose invalidations are not being received (0 without
// EnablePartitions).
func (c *Cache) UntrustedPartitions() int {
	if t := c.parts.Load(); t != nil {
		return int(t.untrusted.Load())
	}
	return 0
}
