package localcache

import "sync/atomic"

// Stats is a snapshot of the tier's counters. Counters only grow over the life of a Cache; Entries is
// a gauge. Each field is read with its own atomic load, so a snapshot taken while the cache is busy is
// not one instant, only close to one.
//
// Bytes in use is not reported: freecache does not expose it and it cannot be derived cheaply (entries
// leave by eviction, expiry and overwrite without telling the caller). The tier's memory is bounded by
// Options.MaxMemory plus freecache's index (16 bytes per entry).
type Stats struct {
	Hits       uint64 // lookups served a fresh entry
	StaleHits  uint64 // lookups served a soft-stale entry (the caller should refresh it)
	DeadServes uint64 // lookups served an entry past its hard deadline under serve-stale
	Misses     uint64 // lookups that served nothing (absent, expired, other epoch, too stale), a leader's second look included

	FillsStored    uint64 // fills whose result was stored
	FillsDiscarded uint64 // fills not stored because the key's generation or the epoch moved during them
	FillsUntrusted uint64 // fills not stored because invalidations were not being received (SetTrusted(false))
	FillsJoined    uint64 // Acquire calls that joined a fill in progress instead of starting one
	Invalidations  uint64 // keys passed to Invalidate
	Flushes        uint64 // Flush calls
	TooLargeKeys   uint64 // fills not stored because the key is longer than MaxKeyLen
	TooLargeValues uint64 // fills not stored because the entry is larger than freecache accepts

	Entries   int64 // entries in freecache, including ones of an old epoch not yet overwritten or evicted
	Evictions int64 // freecache evacuations (entries dropped or moved to make room), kept across Flush
	Expired   int64 // entries freecache dropped past their whole-second expiry, kept across Flush
}

// lookupStripes is the number of stripes of the lookup counters. A power of two.
const lookupStripes = 64

// lookupCounters are the counters AppendGet bumps. They are striped by key hash, each stripe on its own
// cache line, so cores reading different keys do not bounce one line between them; reads of one hot
// key contend on freecache's segment lock anyway.
type lookupCounters struct {
	hits, staleHits, deadServes, misses atomic.Uint64
	_                                   [64 - 32]byte
}

// counters holds the live values behind Stats.
type counters struct {
	lookups [lookupStripes]lookupCounters

	fillsStored, fillsDiscarded, fillsUntrusted, fillsJoined atomic.Uint64
	invalidations, flushes, tooLargeKeys, tooLargeValues     atomic.Uint64

	// evictionsBase and expiredBase carry freecache's counters over Flush, since freecache's Clear
	// resets them.
	evictionsBase, expiredBase atomic.Int64
}

// Stats returns a snapshot of the tier's counters. It is safe for concurrent use.
func (c *Cache) Stats() Stats {
	s := &c.stats
	var l Stats
	for i := range s.lookups {
		l.Hits += s.lookups[i].hits.Load()
		l.StaleHits += s.lookups[i].staleHits.Load()
		l.DeadServes += s.lookups[i].deadServes.Load()
		l.Misses += s.lookups[i].misses.Load()
	}
	return Stats{
		Hits:           l.Hits,
		StaleHits:      l.StaleHits,
		DeadServes:     l.DeadServes,
		Misses:         l.Misses,
		FillsStored:    s.fillsStored.Load(),
		FillsDiscarded: s.fillsDiscarded.Load(),
		FillsUntrusted: s.fillsUntrusted.Load(),
		FillsJoined:    s.fillsJoined.Load(),
		Invalidations:  s.invalidations.Load(),
		Flushes:        s.flushes.Load(),
		TooLargeKeys:   s.tooLargeKeys.Load(),
		TooLargeValues: s.tooLargeValues.Load(),
		Entries:        c.fc.EntryCount(),
		Evictions:      s.evictionsBase.Load() + c.fc.EvacuateCount(),
		Expired:        s.expiredBase.Load() + c.fc.ExpiredCount(),
	}
}
