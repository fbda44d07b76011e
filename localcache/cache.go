package localcache

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"featcache/internal/resp"

	"github.com/coocood/freecache"
)

// MinMemory is the smallest Options.MaxMemory New accepts (1 MiB).
const MinMemory = 1 << 20

// MaxKeyLen is the longest key the tier stores: freecache refuses longer keys. Longer keys still get
// single-flight fills; their results are handed to waiters and not stored.
const MaxKeyLen = 65535

// ErrMaxMemory means Options.MaxMemory is missing, below MinMemory, or too large for this platform.
var ErrMaxMemory = errors.New("localcache: invalid MaxMemory")

// Options configures a Cache.
type Options struct {
	// MaxMemory is the number of bytes given to freecache, allocated up front. Required: at least
	// MinMemory. The largest entry (key + value + 42-byte header) freecache takes is MaxMemory/1024
	// less freecache's 24-byte header (MaxEntry); larger ones are not stored and counted in
	// Stats.TooLargeValues and Stats.NotStored[NotStoredTooLarge].
	MaxMemory int64
	// Now returns the current time. If nil, time.Now is used. It also drives freecache's own
	// whole-second clock (freecache.NewCacheCustomTimer), so tests move one injected clock and never
	// sleep. It is called concurrently, also while freecache holds a segment lock.
	Now func() time.Time
	// Rand returns a number in [0,1) used to draw jitter. If nil, math/rand/v2's Float64 is used.
	// It is called concurrently (from Complete).
	Rand func() float64
	// Admission, with a Threshold above 1, stores a fill only when its key was requested often enough recently
	// (see admission.go). The zero value stores every fill.
	Admission AdmissionOptions
}

// State is what a lookup found.
type State uint8

const (
	// StateMiss means nothing may be served: no entry, an entry of another epoch, or one too old.
	StateMiss State = iota
	// StateFresh means the entry is younger than its soft deadline.
	StateFresh
	// StateStale means the entry is past its soft deadline but before its hard one: serve it and
	// refresh it in the background.
	StateStale
	// StateDead means the entry is past its hard deadline. AppendGet returns it only when it serves
	// the entry under serve-stale; Explain returns it for any entry past its hard deadline.
	StateDead
	// StateUnverified means the entry was filled before a tracking loss its policy survives
	// (Policy.Revalidate) and is within its soft deadline: serve it, and re-fetch it (at a bounded rate).
	StateUnverified
)

var stateNames = [...]string{StateMiss: "miss", StateFresh: "fresh", StateStale: "stale", StateDead: "dead",
	StateUnverified: "unverified"}

// String returns the state's name as CACHE EXPLAIN shows it.
func (s State) String() string { return enumName(stateNames[:], uint8(s), "state") }

// enumName returns names[v], the name of the value v of the enumeration typ, or typ(v) when v has none.
func enumName(names []string, v uint8, typ string) string {
	if int(v) < len(names) && names[v] != "" {
		return names[v]
	}
	return typ + "(" + strconv.Itoa(int(v)) + ")"
}

// Lookup describes what AppendGet served. For StateMiss all other fields are zero.
type Lookup struct {
	State State
	Kind  Kind
	Age   time.Duration // time since the fill that stored the entry began
	// Fill is, for a hash field, the tag of the fill that read it: fields with the same tag were read together,
	// at one instant. 0 for values.
	Fill uint32
}

// from returns lk with the tag of the fill that read what it describes; a miss stays the zero Lookup.
func (lk Lookup) from(tag uint32) Lookup {
	if lk.State != StateMiss {
		lk.Fill = tag
	}
	return lk
}

// freecacheSegments is freecache's fixed segment count (its segmentCount); each segment gets an equal
// share of MaxMemory and takes entries up to a quarter of that share.
const freecacheSegments = 256

// Cache.state packs, in one word so that a lookup reads it with one atomic load and Complete sees it
// consistently: the flush epoch in the high 32 bits, the tracking session in bits 1-31, and the
// untrusted bit. A fill's stamp is the state without the trust bit.
const (
	untrustedBit = 1
	sessionMask  = 1<<31 - 1
)

func epochOf(state uint64) uint32   { return uint32(state >> 32) }
func sessionOf(state uint64) uint32 { return uint32(state>>1) & sessionMask }

// Cache is the in-memory tier. All its methods are safe for concurrent use.
type Cache struct {
	fc   *freecache.Cache
	now  func() time.Time
	rand func() float64
	// maxEntry is the largest len(key)+len(value) freecache's Set accepts: a quarter of a segment's
	// ring buffer minus freecache's own 24-byte entry header (freecache segment.set).
	maxEntry int

	// state is epoch<<32 | session<<1 | untrustedBit (see epochOf, sessionOf). Epoch and session only
	// ever move forward.
	state atomic.Uint64
	// parts is the tracking state per trust partition (EnablePartitions: in front of a Redis Cluster); nil for
	// an unpartitioned cache, whose lookups then never compute a partition.
	parts atomic.Pointer[partitionTable]

	stopTimer func()        // stops the coarse timer; nil with an injected clock
	tags      atomic.Uint32 // the last hash fill tag handed out (nextTag)

	admission *Admission // nil: every fill is stored (admission.go)

	flushMu sync.Mutex // serializes Flush so freecache's counters are carried over once
	shards  [shardCount]shard
	stats   counters
	refused refusals // the last reason recent keys were not stored (notstored.go)
}

// New returns a Cache holding at most opt.MaxMemory bytes of entries. The cache starts trusted (see
// SetTrusted): a proxy that relies on invalidations calls SetTrusted(false) before it serves, and
// SetTrusted(true) once tracking is up.
func New(opt Options) (*Cache, error) {
	if opt.MaxMemory < MinMemory {
		return nil, fmt.Errorf("%w: MaxMemory %d is below the minimum of %d bytes", ErrMaxMemory, opt.MaxMemory, MinMemory)
	}
	if int64(int(opt.MaxMemory)) != opt.MaxMemory {
		return nil, fmt.Errorf("%w: MaxMemory %d does not fit in an int on this platform", ErrMaxMemory, opt.MaxMemory)
	}
	c := &Cache{now: opt.Now, rand: opt.Rand, admission: newAdmission(opt.Admission, opt.MaxMemory)}
	var timer freecache.Timer = clockTimer{opt.Now}
	if c.now == nil {
		c.now = monotonicClock()
		ct := newCoarseTimer()
		c.stopTimer, timer = ct.stop, ct
	}
	if c.rand == nil {
		c.rand = rand.Float64
	}
	size := int(opt.MaxMemory)
	c.fc = freecache.NewCacheCustomTimer(size, timer)
	c.maxEntry = size/freecacheSegments/4 - freecache.ENTRY_HDR_SIZE
	// Epoch 0 is never current, so a zeroed header can never match.
	c.state.Store(1<<32 | 1<<1)
	for i := range c.shards {
		c.shards[i].flights = make(map[string]*flight)
	}
	return c, nil
}

// AppendGet looks key up at time now and, when the entry may be served, appends the RESP2 reply Redis
// would send for GET ("$<len>\r\n<value>\r\n", or "$-1\r\n" for a remembered nil) to dst and returns
// the extended slice. When nothing may be served it returns dst unchanged and StateMiss.
//
// An entry may be served when fresh or soft-stale; when allowDead is true (the upstream just failed
// and the caller wants serve-stale), also a dead entry if p.ServeStale, it is less than p.MaxStale past
// its hard deadline, and it is before the upstream key's expiry.
//
// An entry whose fill began before p.NotBefore is a miss.
//
// With allowDead and p.ServeStale, an unverified entry (of an earlier tracking session, see SetTrusted, or stored
// while the cache was untrusted, see Complete), which an ordinary lookup does not serve unless p.Revalidate, is
// served too, on the same terms, as long as no Flush happened since it was stored: serve-stale accepts values up to HardTTL+MaxStale old while the upstream fails, which
// covers an invalidation missed while tracking was down; an upstream that fails is also why tracking is usually
// down. A Flush (a null invalidation: FLUSHALL, FLUSHDB, SWAPDB, or a server that came back as another one)
// means the values are gone upstream: they are never served again.
//
// Deadlines are recomputed against p at every lookup, so a policy made stricter takes effect at once:
// soft = min(SoftAt, FetchedAt+p.SoftTTL), hard = min(HardAt, FetchedAt+p.HardTTL) (NegativeTTL for
// both on nil entries), both capped at ExpireAt when set, and soft <= hard. Intervals are half-open:
// at the soft instant the entry is stale, at the hard instant dead. An entry of another epoch is a miss.
//
// The value is copied from freecache's buffer straight into dst under the segment lock (GetFn), with
// no copy in between; AppendGet allocates only when dst lacks capacity (or, rarely, when the entry
// wraps around freecache's ring buffer). key is not retained. p must not be nil.
func (c *Cache) AppendGet(dst, key []byte, p *Policy, now time.Time, allowDead bool) ([]byte, Lookup) {
	return c.AppendGetMs(dst, key, p, now.UnixMilli(), allowDead)
}

// AppendGetMs is AppendGet at nowMs, the time in unix milliseconds on the cache's clock (time.Time.UnixMilli):
// for a caller that looks up many keys at one instant and converts it once.
func (c *Cache) AppendGetMs(dst, key []byte, p *Policy, nowMs int64, allowDead bool) ([]byte, Lookup) {
	var lk Lookup
	if len(key) > MaxKeyLen {
		return dst, lk
	}
	st := c.state.Load()
	epoch, session := epochOf(st), sessionOf(st)
	var floor uint32
	if t := c.parts.Load(); t != nil {
		w := t.word(key).Load()
		session, floor = sessionOf(w), floorOf(w)
	}
	out := dst
	// The callback runs under freecache's segment lock: it only decodes and appends.
	_ = c.fc.GetFn(key, func(b []byte) error {
		var h Header
		if h.decode(b) != nil || h.Epoch != epoch || h.Kind == KindHash || h.Session < floor {
			return nil // a hash is not a value: GET of it is Redis's WRONGTYPE error
		}
		unverified := h.Session != session || h.Unverified
		if unverified && !p.Revalidate && !(allowDead && p.ServeStale) {
			return nil
		}
		lk = h.lookup(p, nowMs, allowDead, unverified)
		switch {
		case lk.State == StateMiss:
		case h.Kind == KindNil:
			out = resp.AppendNullBulk(out)
		default:
			out = resp.AppendBulk(out, b[headerSize:])
		}
		return nil
	})
	return out, lk
}

// Explain returns key's entry header, the length of its value and its state at now under p, without
// side effects: it does not count as an access for freecache's eviction, ignores freecache's own
// expiry, and does not touch Stats. ok is false when there is no entry. The state is StateMiss for an
// entry of another epoch, and StateDead for any entry past its hard deadline (whether or not
// serve-stale would still serve it), and StateMiss for one filled before p.NotBefore. It is meant for CACHE
// EXPLAIN, not for the request path.
func (c *Cache) Explain(key []byte, p *Policy, now time.Time) (h Header, size int, st State, ok bool) {
	state := c.state.Load()
	session, floor := sessionOf(state), uint32(0)
	if t := c.parts.Load(); t != nil {
		w := t.word(key).Load()
		session, floor = sessionOf(w), floorOf(w)
	}
	_ = c.fc.PeekFn(key, func(b []byte) error {
		hh, v, err := decodeHeader(b)
		if err != nil {
			return nil
		}
		h, size, ok = hh, len(v), true
		return nil
	})
	if !ok || h.Epoch != epochOf(state) || h.Session < floor || h.before(p) {
		return h, size, StateMiss, ok
	}
	st, _, _ = h.state(p, now.UnixMilli())
	if h.Session != session || h.Unverified {
		switch {
		case !p.Revalidate:
			st = StateMiss
		case st == StateFresh:
			st = StateUnverified
		}
	}
	return h, size, st, ok
}

// deadlines returns the entry's soft and hard deadlines (unix ms) under p.
// Deadlines returns the entry's effective soft and hard deadlines (unix ms) under p: the stored ones, shortened
// by a stricter policy and capped at the upstream expiry.
func (h *Header) Deadlines(p *Policy) (soft, hard int64) { return h.deadlines(p) }

func (h *Header) deadlines(p *Policy) (soft, hard int64) {
	softTTL, hardTTL := p.SoftTTL, p.HardTTL
	if h.Kind == KindNil {
		softTTL, hardTTL = p.NegativeTTL, p.NegativeTTL
	}
	soft = min(h.SoftAt, h.FetchedAt+softTTL.Milliseconds())
	hard = min(h.HardAt, h.FetchedAt+hardTTL.Milliseconds())
	if h.ExpireAt != 0 {
		soft = min(soft, h.ExpireAt)
		hard = min(hard, h.ExpireAt)
	}
	return min(soft, hard), hard
}

// before reports whether the entry's fill began before p.NotBefore, which makes it unservable.
func (h *Header) before(p *Policy) bool {
	return !p.NotBefore.IsZero() && h.FetchedAt < p.NotBefore.UnixMilli()
}

// state classifies the entry at nowMs under p, ignoring serve-stale.
func (h *Header) state(p *Policy, nowMs int64) (st State, soft, hard int64) {
	soft, hard = h.deadlines(p)
	switch {
	case nowMs < soft:
		return StateFresh, soft, hard
	case nowMs < hard:
		return StateStale, soft, hard
	}
	return StateDead, soft, hard
}

// lookup decides whether the entry may be served at nowMs under p.
func (h *Header) lookup(p *Policy, nowMs int64, allowDead, unverified bool) Lookup {
	if h.before(p) {
		return Lookup{}
	}
	// As state decides, without the call: this runs on every hit.
	soft, hard := h.deadlines(p)
	st := StateFresh
	switch {
	case nowMs >= hard:
		st = StateDead
	case nowMs >= soft:
		st = StateStale
	}
	if unverified {
		// An entry that tracking no longer vouches for is served only within its soft TTL (and by
		// serve-stale while the upstream fails), and should be re-fetched.
		switch {
		case st == StateFresh:
			st = StateUnverified
		case allowDead && p.ServeStale:
			st = StateDead
		default:
			return Lookup{}
		}
	}
	if st == StateDead {
		// Serve-stale: past hard, but within MaxStale of it and never at or past the upstream expiry.
		if !allowDead || !p.ServeStale || nowMs >= hard+p.MaxStale.Milliseconds() ||
			(h.ExpireAt != 0 && nowMs >= h.ExpireAt) {
			return Lookup{}
		}
	}
	return Lookup{State: st, Kind: h.Kind, Age: time.Duration(nowMs-h.FetchedAt) * time.Millisecond}
}
