package main

import "container/list"

// lruEntryOverhead is what the simulated LRU charges per entry on top of key and value bytes: freecache's
// 24-byte entry header plus featcache's 42-byte entry header (times, kind, epoch) stored in front of each value.
// freecache's index slots live outside its ring buffer and are not counted, as they are not by local.max_memory.
const lruEntryOverhead = 24 + 42

// lru is an exact least-recently-used cache of a byte capacity over key indexes: the reference featcache's hit
// ratio is compared with for the same trace and the same memory.
type lru struct {
	capacity, used int64
	ll             *list.List // front: most recently used; values are lruEntry
	m              map[uint32]*list.Element
	size           func(uint32) int64
}

type lruEntry struct {
	key  uint32
	size int64
}

func newLRU(capacity int64, size func(uint32) int64) *lru {
	return &lru{capacity: capacity, ll: list.New(), m: make(map[uint32]*list.Element), size: size}
}

// get reads key: a hit moves it to the front; a miss stores it, evicting from the back until it fits, as a
// cache-aside fill would. An entry larger than the whole capacity is never stored.
func (c *lru) get(key uint32) bool {
	if e, ok := c.m[key]; ok {
		c.ll.MoveToFront(e)
		return true
	}
	sz := c.size(key)
	if sz > c.capacity {
		return false
	}
	for c.used+sz > c.capacity {
		back := c.ll.Back()
		ent := back.Value.(lruEntry)
		c.ll.Remove(back)
		delete(c.m, ent.key)
		c.used -= ent.size
	}
	c.m[key] = c.ll.PushFront(lruEntry{key, sz})
	c.used += sz
	return false
}

// remove drops key, as featcache invalidates a key it forwarded a write for.
func (c *lru) remove(key uint32) {
	if e, ok := c.m[key]; ok {
		c.used -= e.Value.(lruEntry).size
		c.ll.Remove(e)
		delete(c.m, key)
	}
}

// lruResult compares featcache's measured hit ratio with the exact LRU's over the same requests.
type lruResult struct {
	CapacityBytes  int64   `json:"capacity_bytes"`
	EntryOverhead  int     `json:"entry_overhead_bytes"`
	Reads          int64   `json:"reads"`    // key reads in the measured rounds (an MGET of n keys is n)
	LRUHits        int64   `json:"lru_hits"` // of those, hits in the simulated LRU
	LRUHitRatio    float64 `json:"lru_hit_ratio"`
	FeatcacheReads int64   `json:"featcache_reads"` // hits + stale + misses from CACHE STATS, same rounds
	FeatcacheRatio float64 `json:"featcache_hit_ratio"`
	// FeatcacheFetchRatio is 1 - upstream_reads / key reads: misses that joined one fill (the same key missed by
	// several connections at once, or twice in one MGET) count once, as they do in the LRU, where the first
	// miss stores the key before the next request.
	FeatcacheFetchRatio float64 `json:"featcache_fetch_hit_ratio"`
	LRUEntriesAtEnd     int     `json:"lru_entries_at_end"`
	Prefilled           bool    `json:"prefilled"`
}

// simulateLRU replays, through an exact LRU of capacity bytes, every request featcache was sent: the optional
// prefill (every key once, in prefillOrder), then each phase (warm-up, then the rounds) with the connections' streams
// regenerated from their seeds and interleaved round-robin up to where each connection stood at the end of the
// phase. Only the rounds count towards the ratio; the prefill and warm-up warm it, as they warmed featcache.
//
// Phases run in the order they ran for real, target after target. The writes that others sent to the same Redis
// in their phases (writers) reach featcache as invalidations, so they are replayed as removals.
//
// The one approximation is the interleaving within a phase: the real arrival order across connections is not
// recorded, and with independent draws from the same distribution it does not change the expected hit ratio.
func simulateLRU(w *workload, order []*loadTarget, fc *loadTarget, writers map[*loadTarget]bool, capacity int64, prefill bool) lruResult {
	size := func(k uint32) int64 {
		return int64(w.keyLen(int(k)) + w.valueLen(int(k)) + lruEntryOverhead)
	}
	c := newLRU(capacity, size)
	res := lruResult{CapacityBytes: capacity, EntryOverhead: lruEntryOverhead, Prefilled: prefill}
	if prefill {
		for n := range w.Keys {
			c.get(uint32(w.prefillOrder(n)))
		}
	}
	type replay struct {
		streams []*stream
		pos     []int64
	}
	replays := map[*loadTarget]*replay{}
	for _, lt := range order {
		if lt != fc && (w.Writes == 0 || !writers[lt]) {
			continue // its phases cannot change what featcache holds
		}
		r := &replay{streams: make([]*stream, len(lt.conns)), pos: make([]int64, len(lt.conns))}
		for i := range r.streams {
			r.streams[i] = newStream(w, i)
		}
		replays[lt] = r
	}
	var req request
	for phase := range fc.marks {
		for _, lt := range order {
			r := replays[lt]
			if r == nil || phase >= len(lt.marks) {
				continue
			}
			mark := lt.marks[phase]
			counted := lt == fc && phase > 0
			for progress := true; progress; {
				progress = false
				for i, st := range r.streams {
					if r.pos[i] >= mark[i] {
						continue
					}
					progress = true
					r.pos[i]++
					st.next(&req)
					switch {
					case req.Write:
						c.remove(req.Keys[0])
						continue
					case lt != fc:
						continue
					}
					for _, k := range req.Keys {
						hit := c.get(k)
						if counted {
							res.Reads++
							if hit {
								res.LRUHits++
							}
						}
					}
				}
			}
		}
	}
	if res.Reads > 0 {
		res.LRUHitRatio = float64(res.LRUHits) / float64(res.Reads)
	}
	res.LRUEntriesAtEnd = len(c.m)
	return res
}
