package localcache

import (
	"bytes"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/coocood/freecache"
)

// Fill is one upstream read of one key for one generation and epoch; every concurrent miss of that key
// in that generation shares it (single-flight). The goroutine that started it (the leader) fetches and
// calls Complete; the others wait on Done and read Result. A Fill's methods are safe for concurrent use.
type Fill struct {
	key   []byte    // copy of the key, owned by the Fill
	start time.Time // when Acquire created the fill: before the upstream read is sent
	gen   uint64    // the key's generation when the fill began
	inval uint64    // the key's count of invalidations when the fill began
	stamp uint64    // the cache's epoch and session when the fill began (its state without the trust bit)
	// partWord is the state word of the key's trust partition when the cache is partitioned (EnablePartitions),
	// nil otherwise, and partStamp its value when the fill began, without the trust bit.
	partWord  *atomic.Uint64
	partStamp uint64
	id        uint64  // 0 for a value fill; for a hash fill, a hash of the fields it reads (AcquireHash)
	tag       uint32  // a hash fill's tag, which the field records it stores carry (never 0); 0 for a value fill
	flight    *flight // the key's generation record; alive while this fill is outstanding (refs)
	shard     *shard  // the shard holding flight

	done      chan struct{}
	res       Result // written once, before done is closed
	completed atomic.Bool

	// concurrent holds the answers of the other reads of the key that completed while this one was outstanding:
	// fills, and an MGET's transaction that did not lead the key's fill (Answered). Appended under the shard lock.
	// Reads that overlap reach the upstream in an order nobody knows: this one may have read before them, and
	// their answers may have been served already. That holds across an invalidation too: a read that began before
	// it may reach Redis after one that began after it (they go out on different shared connections), and so have
	// read the newer value. So what this one read otherwise than any of them is stored by neither (Complete, and
	// mergeHash field by field), and a fill whose key was invalidated meanwhile, which stores nothing, deletes an
	// entry they left that differs from its answer. (Nor do later reads join it: the answer ended its generation.)
	concurrent []Result

	skipAdmission bool // set by SkipAdmission: stored whatever the admission filter says
	// refused is why the answer cannot be stored, when the build function of complete finds it cannot; complete
	// counts it (refuse). Written and read under the shard lock.
	refused Reason
}

// session is the tracking session an entry stored by f carries: its key's partition's when the cache is
// partitioned, the cache's otherwise.
func (f *Fill) session() uint32 {
	if f.partWord != nil {
		return sessionOf(f.partStamp)
	}
	return sessionOf(f.stamp)
}

// Done returns a channel that is closed when the fill's result is published.
func (f *Fill) Done() <-chan struct{} { return f.done }

// Result returns the fill's result, waiting for it if Done is not closed yet. The returned Value and
// Reply are shared by every waiter: they must not be modified.
func (f *Fill) Result() Result {
	<-f.done
	return f.res
}

// Start returns the time the fill began, from which the stored entry's age is counted.
func (f *Fill) Start() time.Time { return f.start }

// Result is the outcome of one upstream read, handed by the leader to Complete.
type Result struct {
	// Value is the GET reply payload. Complete copies it into the cache; the Fill keeps the slice and
	// hands it to waiters, so after Complete nobody may modify it.
	Value []byte
	// Nil means the key does not exist upstream.
	Nil bool
	// PTTL is the key's remaining time to live upstream: NoExpiry (Redis PTTL -1; -1ms, a Redis -1
	// multiplied by time.Millisecond, means the same), or > 0. Any other value for an existing key
	// (0, -2ms, unknown) means the value is not stored, since its age could not be bounded by the
	// upstream expiry. Ignored when Nil.
	PTTL time.Duration
	// TTLRefused means the upstream refused the PTTL read with the value: its expiry is unknown, and it is not
	// stored (NotStoredTTLRefused rather than NotStoredExpired). A Nil result needs no expiry and is stored.
	TTLRefused bool
	// Err means the upstream failed: nothing is stored and waiters get the error.
	Err error
	// NoStore means the result is handed to waiters and leaves the tier as it is: it is not what the upstream
	// said of the key now (for example a leader that found the key cached on its second look hands that entry's
	// value to its waiters). Any other result without Err replaces the key's entry (see Complete).
	NoStore bool
	// KeepSame means the result is handed to waiters, and the key's entry stays only if it holds what the result
	// says (the same value, or a remembered nil for Nil); any other entry is deleted, as with Drop. For a caller
	// that may not store what it read (see Drop) but need not lose an entry its read confirms: an entry that
	// differs is older than what the waiters are answered, and serving it after them would go back in time.
	KeepSame bool
	// Reply is optional raw reply bytes for waiters to relay instead of a value, for example an error such as
	// WRONGTYPE that the caller relays verbatim. A result with Reply is never stored; unless NoStore, it deletes
	// the key's entry. Not modified, shared.
	Reply []byte
	// Drop means the result is handed to waiters, and the key's entry deleted rather than replaced by it: the
	// caller read it at one instant with other keys whose values it cannot store with it, and keeping it would
	// pair, in memory, values of two instants (an MGET whose keys' fills are not all its own).
	Drop bool
	// Hash is what a hash fill read (CompleteHash), for its waiters. Not modified, shared.
	Hash *HashResult
}

// NoExpiry is the Result.PTTL of a key without an upstream expiry (Redis PTTL -1).
const NoExpiry time.Duration = -1

// shardCount is the number of shards of the generation table. A power of two.
const shardCount = 256

// shard is one part of the generation table: the flights of keys that have a fill outstanding.
type shard struct {
	mu      sync.Mutex
	flights map[string]*flight
	_       [64 - 16]byte // keep shards on separate cache lines
}

// flight is a key's generation record while at least one fill of the key is in flight (outstanding).
type flight struct {
	key string
	// gen is what a later miss must share with a fill to join it. It moves on Invalidate, and when a read of the
	// key answers while fills of it are outstanding: they may have read before that answer, which may have been
	// served already, so a read that arrives after it starts a fill of its own.
	gen   uint64
	inval uint64 // moved by Invalidate only: a fill of an earlier count stores nothing
	// fills are the key's outstanding fills, in the order they started; a later miss joins the one of its id,
	// generation and stamp (there is at most one).
	fills []*Fill
	refs  int // fills of this key not yet completed; the flight is dropped at 0
}

func (c *Cache) shardFor(key []byte) *shard {
	// freecache picks its segment from the low byte of the same hash; use the high byte here so
	// the two tables are not correlated.
	return &c.shards[xxhash.Sum64(key)>>56]
}

// Acquire returns the fill in progress for key in the key's current generation and the current epoch,
// or starts a new one. leader is true when the caller started it: the caller must then call Complete
// exactly once, also on error, or the waiters wait forever. A read that arrives after Invalidate(key),
// Flush or a SetTrusted transition returned never joins a fill that began before it, nor one that began before
// another read of the key answered (the other may have read the upstream later, and its answer may have been
// served already: see Fill.concurrent). key is copied.
//
// A fill of the same generation may have completed, and stored, between the caller's miss and this
// call; a leader should therefore look the key up again (AppendGet) before going upstream, and when
// that serves, complete the fill with Result{NoStore: true, Reply: reply} so its waiters get the same
// reply without a second upstream read (see the package example).
func (c *Cache) Acquire(key []byte) (f *Fill, leader bool) { return c.acquire(key, 0) }

// acquire is Acquire for fills of one id: fills of different ids of a key run side by side, and share the
// key's generation.
func (c *Cache) acquire(key []byte, id uint64) (f *Fill, leader bool) {
	sh := c.shardFor(key)
	sh.mu.Lock()
	stamp := c.state.Load() &^ untrustedBit
	var partWord *atomic.Uint64
	var partStamp uint64
	if t := c.parts.Load(); t != nil {
		partWord = t.word(key)
		partStamp = partWord.Load() &^ untrustedBit
	}
	fl := sh.flights[string(key)]
	if fl == nil {
		fl = &flight{key: string(key)}
		sh.flights[fl.key] = fl
	}
	for _, f := range fl.fills {
		if f.id == id && f.gen == fl.gen && f.stamp == stamp && f.partStamp == partStamp {
			sh.mu.Unlock()
			c.stats.fillsJoined.Add(1)
			return f, false
		}
	}
	f = &Fill{
		key:   []byte(fl.key),
		start: c.now(),
		gen:   fl.gen,
		inval: fl.inval,
		stamp: stamp,
		id:    id,
		tag:   c.nextTag(id),

		partWord:  partWord,
		partStamp: partStamp,
		flight:    fl,
		shard:     sh,
		done:      make(chan struct{}),
	}
	fl.fills = append(fl.fills, f)
	fl.refs++
	sh.mu.Unlock()
	return f, true
}

// Complete publishes res to the fill's waiters and, unless the key was invalidated or the cache epoch (in a
// partitioned cache, its partition's floor) moved since the fill began, makes it the key's entry:
//
//   - a result with Err or NoStore leaves the entry as it is: an upstream failure says nothing about the key (and
//     serve-stale may still answer from the entry), NoStore was not read from the upstream;
//   - any other result is what the upstream holds now, and replaces the entry: it is stored when it can be (a
//     value, or a remembered nil when p.NegativeTTL > 0), and the entry is deleted when it cannot (a nil without
//     NegativeTTL, a Reply such as WRONGTYPE, an expiry that is not known, an entry too large, a policy that
//     stores nothing, and Drop). An older value must never outlive a read that saw the key change: not for lookups, and
//     not for serve-stale, which would otherwise answer with a value older than one a client already read;
//   - a result with KeepSame is not stored: the entry stays if it holds the same value, and is deleted otherwise;
//   - a result that differs from the answer of another read of the key that completed while this one was
//     outstanding is not stored, and the entry is deleted: which of the two read the upstream last is not known,
//     even when one of them began after an invalidation the other predates (see Fill.concurrent). A fill whose
//     key was invalidated stores nothing, and deletes an entry that differs from its result: only a read that
//     completed while it was outstanding can have left it.
//
// The result is stored verified when the cache was trusted, in one tracking session, from the fill's start to
// now. Otherwise no invalidation vouches for it, and it is stored unverified (Header.Unverified: served only as
// p.Revalidate and serve-stale allow, see AppendGet) when p has either, else the entry is deleted.
//
// It returns whether it stored a verified entry; a Flush or trust change that races with Complete may still make
// it unservable a moment later. It must be called exactly once per fill, by the leader; a second call panics. p
// must not be nil. res.Value is copied into the cache and then belongs to the Fill (see Result).
//
// The stored deadlines count from the fill's start, not from its completion, so they err early:
// with r = Rand()*p.Jitter drawn once, SoftAt = start + SoftTTL*(1-r), HardAt = start + HardTTL*(1-r),
// ExpireAt = start + PTTL when PTTL > 0, and SoftAt <= HardAt <= ExpireAt. freecache's whole-second
// expiry is set from the last instant the entry could ever be served (HardAt, or with ServeStale
// min(HardAt+MaxStale, ExpireAt)), rounded up, so freecache never drops an entry that may be served
// but gives the memory back soon after.
func (c *Cache) Complete(f *Fill, res Result, p *Policy) (stored bool) {
	if f.completed.Swap(true) {
		panic("localcache: Complete called twice for one Fill")
	}
	answered := res.Err == nil && !res.NoStore
	// Encode outside the shard lock, as a verified entry; only the check and the store need the lock.
	var buf *[]byte
	var expire int
	var why Reason
	if answered {
		buf, expire, why = c.encode(f, &res, p)
	}
	stored = c.complete(f, res, answered, func(verified bool) (*[]byte, int) {
		switch {
		case res.Drop:
			f.refused = NotStoredMGETOverlap
			return nil, 0
		case f.contested(&res):
			f.refused = NotStoredContested
			return nil, 0
		case res.KeepSame:
			f.refused = NotStoredMGETOverlap
			if same, _ := c.holds(f.key, &res); same {
				return nil, keepEntry
			}
			return nil, 0
		}
		if buf == nil {
			f.refused = why
		}
		if buf != nil && !verified {
			if !p.Revalidate && !p.ServeStale {
				f.refused = NotStoredUntrusted
				return nil, 0 // nothing would ever serve it
			}
			(*buf)[1] |= unverifiedFlag
		}
		return buf, expire
	})
	if buf != nil {
		putBuf(buf)
	}
	return stored
}

// complete decides, under the shard lock, what f's result does to the key's entry (see Complete): when answered
// (res is what the upstream holds now) and nothing since the fill began rules it out, the entry becomes what build
// returns, or is deleted when build returns nil (and stays as it is when it returns nil and keepEntry). build runs
// under the lock, so it may read the current entry; verified says whether the entry may be stored as verified.
// Then complete releases the fill's flight, hands res to the key's other outstanding fills when it answers what the
// upstream held (Fill.concurrent; this ends their generation), and publishes res to its waiters. It reports
// whether it stored a verified entry.
func (c *Cache) complete(f *Fill, res Result, answered bool, build func(verified bool) (*[]byte, int)) (stored bool) {
	sh, fl := f.shard, f.flight
	sh.mu.Lock()
	if answered && len(f.key) > MaxKeyLen {
		c.refuse(f, NotStoredKeyTooLarge)
	}
	if answered && len(f.key) <= MaxKeyLen {
		// The check and the store happen under the lock Invalidate takes, so an invalidation cannot
		// slip between them: either it ran before (inval moved, nothing stored) or it runs after (and
		// deletes what was stored). A Flush or trust change does not take the lock; it does not need
		// to, because the entry carries f.epoch and its session, and stops being served (or being served
		// as verified) the moment they move.
		st := c.state.Load()
		var sw uint64
		if f.partWord != nil {
			sw = f.partWord.Load()
		}
		switch {
		case f.inval != fl.inval || epochOf(st) != epochOf(f.stamp) || floorOf(sw) != floorOf(f.partStamp):
			// An invalidation or a flush since the fill began: the entry is gone already, and what the fill read
			// may predate it.
			c.stats.fillsDiscarded.Add(1)
			c.refuse(f, NotStoredSuperseded)
			if c.differs(f, &res) {
				// A read of the key that began later completed first and left what it read. Which of the two
				// read the upstream last is not known, and this one's waiters are answered now.
				c.fc.Del(f.key)
			}
		default:
			// Only the tracking session may have moved, or tracking be down: the fill read what the upstream
			// holds, but no invalidation vouches that nothing changed since.
			verified := f.stamp == st && f.partStamp == sw
			if !verified {
				c.stats.fillsUntrusted.Add(1)
			}
			buf, expire := build(verified)
			if buf == nil {
				if f.refused != 0 {
					c.refuse(f, f.refused)
				}
				if expire != keepEntry {
					// Nothing to store: what the entry holds is no longer what the upstream says.
					c.fc.Del(f.key)
				}
				break
			}
			if !c.admit(f) {
				// Not admitted: the key has no entry (a key with one is always admitted), so none is left behind.
				c.refuse(f, NotStoredNotAdmitted)
				break
			}
			switch err := c.fc.Set(f.key, *buf, expire); {
			case err == nil:
				if verified {
					stored = true
					c.stats.fillsStored.Add(1)
					c.stats.storedBytes.Add(uint64(len(f.key) + len(*buf) + freecache.ENTRY_HDR_SIZE))
				}
			case errors.Is(err, freecache.ErrLargeKey):
				c.stats.tooLargeKeys.Add(1)
				c.refuse(f, NotStoredKeyTooLarge)
				c.fc.Del(f.key)
			default: // freecache.ErrLargeEntry; encode checks the same bound first
				c.stats.tooLargeValues.Add(1)
				c.refuse(f, NotStoredTooLarge)
				c.fc.Del(f.key)
			}
		}
	}
	fl.refs--
	for i, g := range fl.fills {
		if g == f {
			fl.fills = append(fl.fills[:i], fl.fills[i+1:]...)
			break
		}
	}
	if res.Err == nil {
		fl.answered(res)
	}
	f.concurrent = nil
	if fl.refs == 0 {
		delete(sh.flights, fl.key)
	}
	sh.mu.Unlock()
	f.res = res
	close(f.done)
	return stored
}

// answered hands a, what a read of the key answered, to the key's outstanding fills (Fill.concurrent) and ends
// their generation. It runs under the shard lock.
func (fl *flight) answered(a Result) {
	if len(fl.fills) == 0 {
		return
	}
	for _, g := range fl.fills {
		g.concurrent = append(g.concurrent, a)
	}
	fl.gen++
}

// Answered tells the cache what a read of key that no fill of it made (an MGET's transaction that did not lead
// the key's fill) answered: the fills of key outstanding store nothing that differs from res, later reads do not
// join them, and an entry that differs from res is deleted (it is older than res, which is about to be served).
// res says what the upstream held (Value, or Nil, or Reply for a key of another type); it is retained until
// those fills complete and must not be modified. key is not retained.
func (c *Cache) Answered(key []byte, res Result) {
	sh := c.shardFor(key)
	sh.mu.Lock()
	if fl := sh.flights[string(key)]; fl != nil {
		fl.answered(res)
	}
	if len(key) <= MaxKeyLen {
		if same, ok := c.holds(key, &res); ok && !same {
			c.fc.Del(key)
		}
	}
	sh.mu.Unlock()
}

// keepEntry is the expiry a build function of complete returns with a nil buffer to leave the entry as it is.
const keepEntry = -1

// contested reports whether res, a value fill's answer, differs from the answer of a read of the key that
// completed while f was outstanding (Fill.concurrent).
func (f *Fill) contested(res *Result) bool {
	for i := range f.concurrent {
		if !sameAnswer(&f.concurrent[i], res) {
			return true
		}
	}
	return false
}

// differs reports whether the key's entry, which only a read that completed while f was outstanding can have
// left once the key was invalidated during f, holds otherwise than res, f's answer: another value (for a value
// fill), or a field that such a read answered otherwise (for a hash fill).
func (c *Cache) differs(f *Fill, res *Result) bool {
	if len(f.concurrent) == 0 {
		return false
	}
	if res.Hash != nil {
		for i := range res.Hash.Fields {
			if f.disputed(&res.Hash.Fields[i]) {
				return true
			}
		}
		return res.Hash.All && f.disputesAbsent(res.Hash)
	}
	same, ok := c.holds(f.key, res)
	return ok && !same
}

// sameAnswer reports whether two value reads answered alike: the same value, both nil, or the same reply.
func sameAnswer(a, b *Result) bool {
	switch {
	case a.Hash != nil || b.Hash != nil:
		return false
	case a.Reply != nil || b.Reply != nil:
		return a.Reply != nil && b.Reply != nil && bytes.Equal(a.Reply, b.Reply)
	case a.Nil || b.Nil:
		return a.Nil == b.Nil
	}
	return bytes.Equal(a.Value, b.Value)
}

// holds reports whether key's entry holds what res says of the key: the same value, or a remembered nil for a
// missing key; ok is false when key has no entry. It does not count as an access for freecache's eviction.
func (c *Cache) holds(key []byte, res *Result) (same, ok bool) {
	_ = c.fc.PeekFn(key, func(b []byte) error {
		ok = true
		h, v, err := decodeHeader(b)
		if err != nil || res.Reply != nil || res.Hash != nil {
			return nil
		}
		switch h.Kind {
		case KindValue:
			same = !res.Nil && bytes.Equal(v, res.Value)
		case KindNil:
			same = res.Nil
		}
		return nil
	})
	return same, ok
}

// maxExpireSeconds caps the freecache expiry (ten years), keeping it far from freecache's uint32
// seconds overflow. Capping only makes freecache drop an entry earlier.
const maxExpireSeconds = 10 * 365 * 24 * 3600

// encode returns the verified entry to store for res (header + value, in a pooled buffer) and its freecache
// expiry in seconds, or nil and why when res cannot be stored (0 for a result that is not an answer to store:
// Err, NoStore, Drop, KeepSame, or a key too long, which complete counts).
func (c *Cache) encode(f *Fill, res *Result, p *Policy) (*[]byte, int, Reason) {
	if res.Reply != nil {
		return nil, 0, NotStoredWrongType
	}
	if res.Err != nil || res.NoStore || res.Drop || res.KeepSame {
		return nil, 0, 0
	}
	if len(f.key) > MaxKeyLen {
		c.stats.tooLargeKeys.Add(1)
		return nil, 0, 0
	}
	fetched := f.start.UnixMilli()
	h := Header{Epoch: epochOf(f.stamp), Session: f.session(), FetchedAt: fetched}
	var softTTL, hardTTL time.Duration
	var value []byte
	if res.Nil {
		if p.NegativeTTL <= 0 {
			return nil, 0, NotStoredNoNegativeTTL
		}
		h.Kind = KindNil
		softTTL, hardTTL = p.NegativeTTL, p.NegativeTTL
	} else {
		if p.HardTTL <= 0 {
			return nil, 0, NotStoredUncachedPolicy
		}
		switch {
		case res.PTTL > 0:
			h.ExpireAt = fetched + res.PTTL.Milliseconds()
		case res.PTTL == NoExpiry || res.PTTL == -time.Millisecond:
		case res.TTLRefused:
			return nil, 0, NotStoredTTLRefused
		default:
			return nil, 0, NotStoredExpired
		}
		h.Kind = KindValue
		softTTL, hardTTL = max(p.SoftTTL, 0), p.HardTTL
		value = res.Value
	}
	if len(f.key)+headerSize+len(value) > c.maxEntry {
		c.stats.tooLargeValues.Add(1)
		return nil, 0, NotStoredTooLarge
	}
	var r float64
	if p.Jitter > 0 {
		r = p.jitter(c.rand())
	}
	// Truncation toward zero: jitter and rounding only ever shorten a deadline.
	h.SoftAt = fetched + int64(float64(softTTL.Milliseconds())*(1-r))
	h.HardAt = fetched + int64(float64(hardTTL.Milliseconds())*(1-r))
	if h.ExpireAt != 0 {
		h.SoftAt = min(h.SoftAt, h.ExpireAt)
		h.HardAt = min(h.HardAt, h.ExpireAt)
	}
	h.SoftAt = min(h.SoftAt, h.HardAt)

	last := h.HardAt // the last instant the entry could ever be served
	if p.ServeStale && p.MaxStale > 0 {
		last += p.MaxStale.Milliseconds()
		if h.ExpireAt != 0 {
			last = min(last, h.ExpireAt)
		}
	}
	nowMs := c.now().UnixMilli()
	if last <= nowMs {
		return nil, 0, NotStoredExpired // the fill outlived every deadline: it could never be served
	}
	// freecache expires an entry at the first whole second >= now's second + expire; floor both ends
	// and add one so the entry outlives last.
	expire := int(min(floorDiv(last, 1000)-floorDiv(nowMs, 1000)+1, maxExpireSeconds))
	if c.stopTimer != nil {
		expire++ // the coarse timer freecache reads may be a period late
	}

	buf := getBuf()
	*buf = append(h.append((*buf)[:0]), value...)
	return buf, expire, 0
}

// nextTag returns the tag of a new fill of id: a hash fill's records carry it, so a lookup can tell whether fields
// were read together (HashEntry.Fields). Value fills need none.
func (c *Cache) nextTag(id uint64) uint32 {
	if id == 0 {
		return 0
	}
	for {
		if t := c.tags.Add(1); t != 0 {
			return t
		}
	}
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}

// bufPool holds entry encoding buffers: freecache copies an entry on Set, so the buffer is reused.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// maxPooledBuf keeps the rare large entry from pinning its buffer in the pool.
const maxPooledBuf = 64 << 10

func getBuf() *[]byte { return bufPool.Get().(*[]byte) }

func putBuf(b *[]byte) {
	if cap(*b) <= maxPooledBuf {
		bufPool.Put(b)
	}
}

// Invalidate drops keys' entries and moves the generation of those that have a fill outstanding, so
// those fills are not stored and later reads do not join them. Keys that have no fill outstanding need
// no generation: deleting their entry under the shard lock is enough, since any fill that starts later
// reads the upstream after this call. keys are not retained.
func (c *Cache) Invalidate(keys ...[]byte) {
	for _, k := range keys {
		sh := c.shardFor(k)
		sh.mu.Lock()
		if fl := sh.flights[string(k)]; fl != nil {
			fl.gen++
			fl.inval++
		}
		c.fc.Del(k) // under the shard lock: Complete's check-and-store cannot interleave
		sh.mu.Unlock()
	}
	c.stats.invalidations.Add(uint64(len(keys)))
}

// Flush makes every entry unservable at once by moving the epoch, then clears freecache to give the
// memory back. The epoch, not the clear, is what makes the flush safe: freecache's Clear goes through
// its 256 segments one at a time, and entries carry the epoch of their fill.
func (c *Cache) Flush() {
	c.state.Add(1 << 32) // moves the epoch, keeps the session and the trust bit
	c.stats.flushes.Add(1)
	c.flushMu.Lock()
	// Clear resets freecache's counters; carry them over. Evictions between the read and the
	// clear are lost from the count.
	ev, ex := c.fc.EvacuateCount(), c.fc.ExpiredCount()
	c.fc.Clear()
	c.stats.evictionsBase.Add(ev)
	c.stats.expiredBase.Add(ex)
	c.flushMu.Unlock()
}

// SetTrusted marks whether invalidations are being received (server-assisted tracking is up). While
// untrusted, nothing is stored. Both transitions move the tracking session: on the way down, so what
// was stored before the tracking loss is no longer served as verified (policies without Revalidate
// drop it, except serve-stale while the upstream fails; with Revalidate it is unverified); on the way
// up, so no value fetched while tracking was down is stored after it comes back. Setting the current
// value again does nothing. A server that comes back as another one (restarted, failed over) needs a
// Flush as well.
func (c *Cache) SetTrusted(trusted bool) {
	var bit uint64
	if !trusted {
		bit = untrustedBit
	}
	for {
		old := c.state.Load()
		if old&untrustedBit == bit {
			return
		}
		next := old&^(sessionMask<<1|untrustedBit) | uint64((sessionOf(old)+1)&sessionMask)<<1 | bit
		if c.state.CompareAndSwap(old, next) {
			return
		}
	}
}

// Trusted reports whether the cache currently stores fills (see SetTrusted); in a partitioned cache
// (EnablePartitions), of keys in every partition.
func (c *Cache) Trusted() bool {
	return c.state.Load()&untrustedBit == 0 && c.UntrustedPartitions() == 0
}

// Epoch returns the current flush epoch. It moves on Flush.
func (c *Cache) Epoch() uint64 { return uint64(epochOf(c.state.Load())) }

// Session returns the current tracking session. It moves on every SetTrusted transition.
func (c *Cache) Session() uint32 { return sessionOf(c.state.Load()) }
