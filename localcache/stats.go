package localcache

import "sync/atomic"

// Stats is a snapshot of the tier's counters. Lookups are not counted here: the proxy counts requests by policy
// and result, and a shared counter would cost every lookup on the hit path.
//
// Stats is a snapshot of the tier's counters. Counters only grow over the life of a Cache; Entries is
// a gauge. Each field is read with its own atomic load, so a snapshot taken while the cache is busy is
// not one instant, only close to one.
//
// Bytes in use cannot be read from freecache, which does not expose it, nor counted exactly, since entries
// leave by eviction, expiry and overwrite without telling the caller: Bytes estimates it as Entries times the
// mean size of the entries stored so far. The tier's memory is bounded by Options.MaxMemory plus freecache's
// index (see the package documentation: 8 MiB for 64 MiB of 1-2 KiB entries) whatever Bytes says.
type Stats struct {
	FillsStored      uint64 // fills whose result was stored
	FillsDiscarded   uint64 // fills not stored because the key's generation or the epoch moved during them
	FillsUntrusted   uint64 // fills completed while invalidations were not being received, or across a change of that (SetTrusted): stored unverified, or not at all
	FillsJoined      uint64 // Acquire calls that joined a fill in progress instead of starting one
	Invalidations    uint64 // keys passed to Invalidate
	Flushes          uint64 // Flush calls
	PartitionFlushes uint64 // partitions flushed by FlushPartitions (a partitioned cache)
	TooLargeKeys     uint64 // fills not stored because the key is longer than MaxKeyLen
	TooLargeValues   uint64 // fills not stored because the entry is larger than freecache accepts
	NotAdmitted      uint64 // fills not stored because the admission filter refused their key (Options.Admission)
	// NotStored counts, by Reason (indexed by it; index 0 is unused), the answers of the upstream about a key that
	// were not stored. Each refused answer counts under one reason.
	NotStored [numReasons]uint64

	Entries   int64 // entries in freecache, including ones of an old epoch not yet overwritten or evicted
	Bytes     int64 // estimated bytes those entries take in freecache (key, header, value, freecache's header)
	Evictions int64 // freecache evacuations (entries dropped or moved to make room), kept across Flush
	Expired   int64 // entries freecache dropped past their whole-second expiry, kept across Flush
}

// counters holds the live values behind Stats.
type counters struct {
	fillsStored, fillsDiscarded, fillsUntrusted, fillsJoined atomic.Uint64
	invalidations, flushes, tooLargeKeys, tooLargeValues     atomic.Uint64
	partitionFlushes, fillsNotAdmitted                       atomic.Uint64
	storedBytes                                              atomic.Uint64 // sum of the sizes of stored entries
	notStored                                                [numReasons]atomic.Uint64

	// evictionsBase and expiredBase carry freecache's counters over Flush, since freecache's Clear
	// resets them.
	evictionsBase, expiredBase atomic.Int64
}

// Stats returns a snapshot of the tier's counters. It is safe for concurrent use.
func (c *Cache) Stats() Stats {
	s := &c.stats
	entries := c.fc.EntryCount()
	var bytes int64
	if stored := s.fillsStored.Load(); stored > 0 {
		bytes = int64(float64(entries) * float64(s.storedBytes.Load()) / float64(stored))
	}
	var notStored [numReasons]uint64
	for i := range notStored {
		notStored[i] = s.notStored[i].Load()
	}
	return Stats{
		NotStored:        notStored,
		FillsStored:      s.fillsStored.Load(),
		FillsDiscarded:   s.fillsDiscarded.Load(),
		FillsUntrusted:   s.fillsUntrusted.Load(),
		FillsJoined:      s.fillsJoined.Load(),
		Invalidations:    s.invalidations.Load(),
		Flushes:          s.flushes.Load(),
		PartitionFlushes: s.partitionFlushes.Load(),
		TooLargeKeys:     s.tooLargeKeys.Load(),
		TooLargeValues:   s.tooLargeValues.Load(),
		NotAdmitted:      s.fillsNotAdmitted.Load(),
		Entries:          entries,
		Bytes:            bytes,
		Evictions:        s.evictionsBase.Load() + c.fc.EvacuateCount(),
		Expired:          s.expiredBase.Load() + c.fc.ExpiredCount(),
	}
}
