package localcache

import (
	"sync"
	"sync/atomic"
)

// SlotCount is the number of hash slots of a Redis Cluster.
const SlotCount = 16384

// slotTable is the tracking state of a cache in front of a Redis Cluster (EnableSlots): one word per hash slot, in
// the layout of Cache.state's low half plus a floor,
//
//	floor<<32 | session<<1 | untrustedBit
//
// because in a cluster every master has its own tracking connection, and losing one of them must only drop what
// that master guarded. An entry then carries the session of its key's slot when it was filled (Header.Session):
// an entry of an earlier session of its slot is unverified, exactly as an entry of an earlier global session is
// for a single node, and one of a session below the slot's floor is never served (the slot was flushed: its
// master restarted or failed over, or the slot moved to another master). The untrusted bit of a slot says that
// its master's invalidations are not being received: fills of its keys are not stored.
//
// The global state keeps its role for everything else: the flush epoch (a null invalidation from any master
// flushes the whole tier), and the global trust bit, which stays set to trusted in cluster mode.
type slotTable struct {
	slotOf func(key []byte) uint16
	words  [SlotCount]atomic.Uint64

	mu        sync.Mutex   // serializes transitions, so that untrusted counts them once each
	untrusted atomic.Int32 // slots with the untrusted bit set
}

func floorOf(word uint64) uint32 { return uint32(word >> 32) }

// word returns the state word of key's slot.
func (t *slotTable) word(key []byte) *atomic.Uint64 { return &t.words[t.slotOf(key)&(SlotCount-1)] }

// EnableSlots switches the cache to per-slot tracking state for a Redis Cluster upstream: slotOf maps a key to
// its hash slot (CRC16 of the key or of its hash tag, modulo SlotCount). Every slot starts untrusted, as the
// whole cache does before tracking is up, and everything cached before is flushed. From then on SetSlotsTrusted
// and FlushSlots act on slots, and SetTrusted should be left at true: a fill is stored only when both the cache
// and its key's slot are trusted. Lookups in cluster mode cost one CRC16 of the key more; without EnableSlots the
// cache does not compute slots at all. It is meant to be called once, before the cache serves.
func (c *Cache) EnableSlots(slotOf func(key []byte) uint16) {
	t := &slotTable{slotOf: slotOf}
	for i := range t.words {
		t.words[i].Store(1<<32 | 1<<1 | untrustedBit) // floor 1, session 1: no entry of session 0 is ever served
	}
	t.untrusted.Store(SlotCount)
	c.slots.Store(t)
	c.Flush()
}

// SetSlotsTrusted is SetTrusted for some hash slots (cluster mode): it says whether the invalidations of the
// master that serves them are being received. Each transition moves the slot's session, so that entries of the
// slot stored before a loss are unverified (served under the rules of on_tracking_loss), and no value fetched
// while the slot was untrusted is stored after it becomes trusted again. Setting a slot's current value again
// does nothing. It does nothing before EnableSlots.
func (c *Cache) SetSlotsTrusted(slots []uint16, trusted bool) {
	t := c.slots.Load()
	if t == nil {
		return
	}
	var bit uint64
	if !trusted {
		bit = untrustedBit
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, s := range slots {
		w := &t.words[s&(SlotCount-1)]
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

// FlushSlots makes every entry of keys in slots unservable, even under serve-stale, as Flush does for the whole
// tier: the slot's session moves and its floor rises to it. Fills of those slots in flight are not stored. It
// does nothing before EnableSlots.
func (c *Cache) FlushSlots(slots []uint16) {
	t := c.slots.Load()
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, s := range slots {
		w := &t.words[s&(SlotCount-1)]
		old := w.Load()
		next := (sessionOf(old) + 1) & sessionMask
		w.Store(uint64(next)<<32 | uint64(next)<<1 | old&untrustedBit)
	}
	c.stats.slotFlushes.Add(uint64(len(slots)))
}

// UntrustedSlots is the number of hash slots whose invalidations are not being received (0 without
// EnableSlots).
func (c *Cache) UntrustedSlots() int {
	if t := c.slots.Load(); t != nil {
		return int(t.untrusted.Load())
	}
	return 0
}
