package localcache

import (
	"encoding/binary"
	"iter"
	"time"

	"github.com/cespare/xxhash/v2"
)

// Hash entries cache some of the fields of one Redis hash (HGET, HMGET, HGETALL), each field with its own
// deadlines, because fields of one hash may follow different policies (Feast keeps every feature view of an
// entity in one hash, each with its own TTL). One entry per key means an invalidation of the key, which is all
// Redis tracking names, drops every cached field at once with the same mechanism as a value.
//
// A fill reads some fields (HMGET) or all of them (HGETALL) and is merged into the entry under the shard lock
// Complete takes, after the same generation check. Since an invalidation deletes the whole entry under that lock,
// the fields a merge finds were read in the fill's generation too, and merging keeps none from before an
// invalidation. A complete entry (from HGETALL) also knows which fields do not exist: a field absent from it is
// nil, without asking Redis, for as long as the entry's own deadlines say.
//
// Fields that different fills read were read at different instants: a write between the two reads is announced
// by an invalidation that may arrive only after both were merged. So every record carries the tag of the fill
// that read it (Lookup.Fill), and a read that must answer from one instant (HMGET, HGETALL) serves only fields of
// one fill together.
//
// Fills of different fields of one key may overlap, and nothing tells in which order the upstream saw their reads:
// the one that completes last may have read first. So a field that two overlapping fills read differently is
// kept by neither, and a read that arrives once one of them has completed does not join the other (see
// Fill.concurrent): no client is answered a field older than one already answered.
//
// Entry layout after the Header (whose deadlines are those of the entry's completeness):
//
//	1 byte   flags (1 = complete)
//	4 bytes  the tag of the fill that read the complete image (uint32 little endian; 0 when not complete)
//	records  until the end, each:
//	         uvarint field length, field bytes,
//	         1 byte kind (KindValue, or KindNil: the field does not exist),
//	         4 bytes the tag of the fill that read it (uint32 little endian),
//	         4 x int64 little endian: FetchedAt, SoftAt, HardAt, ExpireAt (unix ms, as in Header),
//	         uvarint value length, value bytes
const hashComplete = 1

// hashPrefix is the size of what precedes a hash entry's records after its Header: flags and the image's tag.
const hashPrefix = 5

// FieldRead is one field a hash fill read: its value, or Missing when the field (or the hash) does not exist.
type FieldRead struct {
	Field   []byte
	Value   []byte
	Missing bool
	// Policy is the field's policy (its feature view's, or its key's). Nil means the field is not stored.
	Policy *Policy
	// PTTL is the field's own remaining time to live, from an upstream with per-field expiry (HPTTL): > 0 caps the
	// field's deadlines; 0 or NoExpiry means none; any other negative value means unknown, and the field is not
	// stored.
	PTTL time.Duration
}

// HashResult is what a hash fill read, handed to CompleteHash.
type HashResult struct {
	// Fields are the fields read. CompleteHash copies what it stores; the fill keeps the slices for waiters.
	Fields []FieldRead
	// All is true when Fields are all the hash's fields (HGETALL): the entry then answers for absent fields too.
	All bool
	// KeyPolicy is the key's policy: it bounds how long the entry answers for absent fields (All), with its
	// NegativeTTL for a hash that does not exist.
	KeyPolicy *Policy
}

// HashFillID returns the fill id of a hash read of fields: concurrent reads of the same fields of a key share one
// fill. all marks HGETALL.
func HashFillID(fields [][]byte, all bool) uint64 {
	d := xxhash.New()
	if all {
		d.Write([]byte{1})
	}
	var n [binary.MaxVarintLen64]byte
	for _, f := range fields {
		d.Write(n[:binary.PutUvarint(n[:], uint64(len(f)))])
		d.Write(f)
	}
	return d.Sum64() | 1 // never 0, the id of value fills
}

// AcquireHash is Acquire for a hash read of the fields id names (HashFillID). It shares the key's generation
// with every other fill of the key.
func (c *Cache) AcquireHash(key []byte, id uint64) (f *Fill, leader bool) { return c.acquire(key, id) }

// CompleteHash publishes res (and the hash result hr) to the fill's waiters, and merges the fields read into
// key's hash entry, under the rules of Complete: unless the key's generation or the epoch moved since the fill
// began, what the upstream answered (res without Err or NoStore) replaces what the entry held for the fields
// read, and an entry left with nothing to serve is deleted (as it is for a Reply such as WRONGTYPE, or hr nil).
// The fields are stored verified when the cache was trusted, in one session, throughout the fill; otherwise
// unverified, those whose policy serves unverified entries (Policy.Revalidate or ServeStale). Fields keep their
// own deadlines, computed from the fill's start and their policies. It returns whether it stored a verified
// entry.
func (c *Cache) CompleteHash(f *Fill, res Result, hr *HashResult) (stored bool) {
	if f.completed.Swap(true) {
		panic("localcache: Complete called twice for one Fill")
	}
	answered := res.Err == nil && !res.NoStore
	if len(f.key) > MaxKeyLen {
		c.stats.tooLargeKeys.Add(1)
	}
	if res.Hash == nil && res.Err == nil && res.Reply == nil {
		res.Hash = hr // what the waiters get, and what the key's overlapping fills compare their reads with
	}
	var buf *[]byte
	stored = c.complete(f, res, answered, func(verified bool) (*[]byte, int) {
		if hr == nil || res.Reply != nil {
			if res.Reply != nil {
				f.refused = NotStoredWrongType
			}
			return nil, 0
		}
		var expire int
		buf, expire = c.mergeHash(f, &res, hr, verified)
		if buf == nil && f.refused == 0 {
			f.refused = f.hashRefusal(&res, hr, verified, c.now().UnixMilli())
		}
		return buf, expire
	})
	if buf != nil {
		putBuf(buf)
	}
	return stored
}

// mergeHash builds key's new hash entry from the current one (if it is of the fill's epoch and session, and as
// verified) and the fields read, or returns nil when the entry would hold nothing to serve. It runs under the
// shard lock. Its steps: the key's expiry, the fields in dispute, the header (and whether the image is complete),
// the fields read, then the current entry's fields that this read did not cover.
func (c *Cache) mergeHash(f *Fill, res *Result, hr *HashResult, verified bool) (*[]byte, int) {
	m := hashMerge{c: c, f: f, hr: hr, verified: verified, fetched: f.start.UnixMilli(), nowMs: c.now().UnixMilli()}
	var ok bool
	if m.expireAt, ok = hashExpireAt(res.PTTL, hr, m.fetched); !ok {
		return nil, 0
	}
	m.disputed = f.disputedReads(hr)
	h := Header{Kind: KindHash, Epoch: epochOf(f.stamp), Session: f.session(), FetchedAt: m.fetched, Unverified: !verified}
	flags, imageTag := m.image(&h)
	buf := getBuf()
	b := binary.LittleEndian.AppendUint32(append(h.append((*buf)[:0]), flags), imageTag)
	b, kept := m.appendReads(b)
	if !hr.All {
		var more int
		b, more = m.keepCurrent(b, &h)
		kept += more
	}
	*buf = b
	if kept == 0 && b[headerSize]&hashComplete == 0 {
		putBuf(buf)
		return nil, 0
	}
	if len(f.key)+len(b) > c.maxEntry {
		c.stats.tooLargeValues.Add(1)
		f.refused = NotStoredTooLarge
		putBuf(buf)
		return nil, 0
	}
	expire := int(min(floorDiv(m.last, 1000)-floorDiv(m.nowMs, 1000)+1, maxExpireSeconds))
	if c.stopTimer != nil {
		expire++
	}
	return buf, expire
}

// hashMerge is one mergeHash in progress: the fill, its times, and what the steps decided so far.
type hashMerge struct {
	c        *Cache
	f        *Fill
	hr       *HashResult
	verified bool
	fetched  int64  // when the fill began, in Unix milliseconds: records' deadlines count from it
	nowMs    int64  // now, in Unix milliseconds
	expireAt int64  // the key's upstream expiry in Unix milliseconds; 0: none
	disputed []bool // per field read, whether it is in dispute; nil when none is
	// r is the jitter fraction drawn last: a record of a policy without jitter takes the fraction of the record
	// before it.
	r    float64
	last int64 // the latest moment a record built so far may be served: the entry's freecache lifetime
}

// hashExpireAt turns the key's PTTL, read with the fields, into its expiry in Unix milliseconds (0: none), and
// reports false when the reply leaves nothing to store.
func hashExpireAt(pttl time.Duration, hr *HashResult, fetched int64) (int64, bool) {
	switch {
	case pttl > 0:
		return fetched + pttl.Milliseconds(), true
	case pttl == NoExpiry || pttl == -time.Millisecond:
		return 0, true
	case pttl == -2*time.Millisecond && allMissing(hr):
		// A hash that does not exist (PTTL -2): its fields are remembered as missing, or, read with HGETALL,
		// as an empty complete hash.
		return 0, true
	}
	return 0, false
}

// keeps reports whether p may store a record of this fill: an unverified one only serves Revalidate and
// serve-stale.
func (m *hashMerge) keeps(p *Policy) bool { return m.verified || p.Revalidate || p.ServeStale }

// deadlines returns the soft and hard deadlines of a record of p (missing: of a field that does not exist) that
// expires upstream at expireAt (0: never), and moves m.last to the latest moment it may be served.
func (m *hashMerge) deadlines(p *Policy, missing bool, expireAt int64) (soft, hard int64) {
	softTTL, hardTTL := max(p.SoftTTL, 0), p.HardTTL
	if missing {
		softTTL, hardTTL = p.NegativeTTL, p.NegativeTTL
	}
	if p.Jitter > 0 {
		m.r = p.jitter(m.c.rand())
	}
	soft = m.fetched + int64(float64(softTTL.Milliseconds())*(1-m.r))
	hard = m.fetched + int64(float64(hardTTL.Milliseconds())*(1-m.r))
	if expireAt != 0 {
		soft, hard = min(soft, expireAt), min(hard, expireAt)
	}
	soft = min(soft, hard)
	l := hard
	if p.ServeStale && p.MaxStale > 0 {
		l += p.MaxStale.Milliseconds()
		if expireAt != 0 {
			l = min(l, expireAt)
		}
	}
	m.last = max(m.last, l)
	return soft, hard
}

// disputedReads says, per field of hr, whether it is in dispute, or returns nil when none is. A field that a fill
// of the key which completed while this one was outstanding read otherwise is stored by neither (the current
// entry's record of it is dropped too): which of the two read the upstream last is not known, and a client may
// already have been answered either. An image with such a field is not complete.
func (f *Fill) disputedReads(hr *HashResult) []bool {
	if len(f.concurrent) == 0 {
		return nil
	}
	var disputed []bool
	for i := range hr.Fields {
		if f.disputed(&hr.Fields[i]) {
			if disputed == nil {
				disputed = make([]bool, len(hr.Fields))
			}
			disputed[i] = true
		}
	}
	if disputed == nil && hr.All && f.disputesAbsent(hr) {
		disputed = make([]bool, len(hr.Fields))
	}
	return disputed
}

// image decides whether the entry is the complete image of the hash (a read of the whole hash, in no dispute, that
// its key policy keeps), setting h's deadlines from the key policy when the read was of the whole hash, and
// returns the entry's flags and the image's tag.
func (m *hashMerge) image(h *Header) (flags byte, imageTag uint32) {
	hr := m.hr
	if hr.All && hr.KeyPolicy != nil && m.disputed == nil {
		flags = hashComplete
		h.SoftAt, h.HardAt = m.deadlines(hr.KeyPolicy, len(hr.Fields) == 0, m.expireAt)
		h.ExpireAt = m.expireAt
		if h.HardAt <= m.nowMs || (len(hr.Fields) == 0 && hr.KeyPolicy.NegativeTTL <= 0) || !m.keeps(hr.KeyPolicy) {
			flags = 0
		}
	}
	if flags&hashComplete != 0 {
		imageTag = m.f.tag
	}
	return flags, imageTag
}

// appendReads appends a record for each field read that may be stored, and returns b and how many it appended.
func (m *hashMerge) appendReads(b []byte) ([]byte, int) {
	kept := 0
	for i := range m.hr.Fields {
		fr := &m.hr.Fields[i]
		if !m.storable(i) {
			continue
		}
		fieldExpire := m.expireAt
		if fr.PTTL > 0 {
			if at := m.fetched + fr.PTTL.Milliseconds(); fieldExpire == 0 || at < fieldExpire {
				fieldExpire = at
			}
		}
		soft, hard := m.deadlines(fr.Policy, fr.Missing, fieldExpire)
		if hard <= m.nowMs {
			continue
		}
		b = appendRecord(b, fr.Field, fr.Missing, m.f.tag, m.fetched, soft, hard, fieldExpire, fr.Value)
		kept++
	}
	return b, kept
}

// storable reports whether field read i may be stored: not in dispute, of a policy that caches it (and keeps
// this fill's records), and of a known TTL.
func (m *hashMerge) storable(i int) bool {
	fr := &m.hr.Fields[i]
	return !(m.disputed != nil && m.disputed[i] || fr.Policy == nil || fr.Policy.HardTTL <= 0 ||
		fr.Missing && fr.Policy.NegativeTTL <= 0 || !m.keeps(fr.Policy) ||
		fr.PTTL < 0 && fr.PTTL != NoExpiry && fr.PTTL != -time.Millisecond)
}

// keepCurrent appends the fields of the current entry that this read did not cover, if it is of the fill's stamp
// (an entry of an older epoch or session is not vouched for by the tracking that guards this fill), and keeps the
// entry complete when the fields read are a subset of a complete image that is still valid. It returns b and how
// many records it appended.
func (m *hashMerge) keepCurrent(b []byte, h *Header) ([]byte, int) {
	c, f, nowMs := m.c, m.f, m.nowMs
	// The current entry's records do not say which policy stored them, so how long serve-stale may still use
	// one past its hard deadline is not known here; the current entry's freecache lifetime was set from that
	// (see Complete), so kept records keep it.
	// oldLast undoes the rounding up that set that lifetime (mergeHash), so that merging again and again does not
	// stretch it.
	var oldLast int64
	if left, err := c.fc.TTL(f.key); err == nil && left > 0 {
		up := int64(1)
		if c.stopTimer != nil {
			up = 2
		}
		oldLast = (floorDiv(nowMs, 1000) + int64(left) - up) * 1000
	}
	kept := 0
	_ = c.fc.PeekFn(f.key, func(e []byte) error {
		oh, rest, err := decodeHeader(e)
		if err != nil || oh.Kind != KindHash || oh.Epoch != h.Epoch || oh.Session != h.Session ||
			oh.Unverified != h.Unverified || len(rest) < hashPrefix {
			return nil
		}
		if rest[0]&hashComplete != 0 && oh.HardAt > nowMs && m.disputed == nil {
			// The fields read are a subset of a complete image that is still valid: keep it complete (with
			// the tag of the fill that read it whole).
			copy(b[:headerSize+hashPrefix], (&Header{Kind: KindHash, Epoch: oh.Epoch, Session: oh.Session,
				Unverified: oh.Unverified, FetchedAt: oh.FetchedAt, SoftAt: oh.SoftAt, HardAt: oh.HardAt,
				ExpireAt: oh.ExpireAt}).append(nil))
			copy(b[headerSize:headerSize+hashPrefix], rest[:hashPrefix])
			m.last = max(m.last, oh.HardAt)
		}
		eachRecord(rest[hashPrefix:], func(rec record) bool {
			if lists(m.hr, rec.field) {
				return true // replaced by what this fill read
			}
			if rec.hard > nowMs || oldLast > nowMs {
				b = appendRecord(b, rec.field, rec.kind == KindNil, rec.tag, rec.fetched, rec.soft, rec.hard, rec.expire, rec.value)
				m.last = max(m.last, rec.hard, oldLast)
				kept++
			}
			return true
		})
		return nil
	})
	return b, kept
}

// disputed reports whether a read of the key that completed while f was outstanding (Fill.concurrent) read fr's
// field otherwise: with another value, or as missing when f found it, or the reverse. A fill of the whole hash
// says that a field it does not list does not exist; a value read's answer (the key was not a hash) disputes every
// field.
func (f *Fill) disputed(fr *FieldRead) bool {
	for o := range f.overlapping() {
		if o == nil {
			return true
		}
		found := false
		for i := range o.Fields {
			r := &o.Fields[i]
			if string(r.Field) != string(fr.Field) {
				continue
			}
			found = true
			if r.Missing != fr.Missing || !r.Missing && string(r.Value) != string(fr.Value) {
				return true
			}
			break
		}
		if !found && o.All && !fr.Missing {
			return true
		}
	}
	return false
}

// disputesAbsent reports whether a read of the key that completed while f was outstanding found a field that hr,
// f's read of the whole hash, does not list (so says does not exist).
func (f *Fill) disputesAbsent(hr *HashResult) bool {
	for o := range f.overlapping() {
		if o == nil {
			return true
		}
		for i := range o.Fields {
			if r := &o.Fields[i]; !r.Missing && !lists(hr, r.Field) {
				return true
			}
		}
	}
	return false
}

// overlapping yields the answers of the key's reads that completed while f was outstanding (Fill.concurrent): a
// read's hash result, or nil when its answer was not a hash.
func (f *Fill) overlapping() iter.Seq[*HashResult] {
	return func(yield func(*HashResult) bool) {
		for j := range f.concurrent {
			if !yield(f.concurrent[j].Hash) {
				return
			}
		}
	}
}

// lists reports whether hr holds a read of field.
func lists(hr *HashResult, field []byte) bool {
	for i := range hr.Fields {
		if string(hr.Fields[i].Field) == string(field) {
			return true
		}
	}
	return false
}

func appendRecord(b, field []byte, missing bool, tag uint32, fetched, soft, hard, expire int64, value []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(field)))
	b = append(b, field...)
	kind := KindValue
	if missing {
		kind, value = KindNil, nil
	}
	b = append(b, byte(kind))
	b = binary.LittleEndian.AppendUint32(b, tag)
	b = binary.LittleEndian.AppendUint64(b, uint64(fetched))
	b = binary.LittleEndian.AppendUint64(b, uint64(soft))
	b = binary.LittleEndian.AppendUint64(b, uint64(hard))
	b = binary.LittleEndian.AppendUint64(b, uint64(expire))
	b = binary.AppendUvarint(b, uint64(len(value)))
	return append(b, value...)
}

// record is one decoded field record; its slices alias the entry.
type record struct {
	field, value                []byte
	kind                        Kind
	tag                         uint32
	fetched, soft, hard, expire int64
}

// eachRecord decodes the records of an entry (after its flags and image tag) until fn returns false or the input
// ends or is malformed.
func eachRecord(b []byte, fn func(record) bool) {
	for len(b) > 0 {
		var r record
		n, m := binary.Uvarint(b)
		if m <= 0 || uint64(len(b)-m) < n+1+4+32 {
			return
		}
		r.field = b[m : m+int(n)]
		b = b[m+int(n):]
		r.kind = Kind(b[0])
		r.tag = binary.LittleEndian.Uint32(b[1:])
		r.fetched = int64(binary.LittleEndian.Uint64(b[5:]))
		r.soft = int64(binary.LittleEndian.Uint64(b[13:]))
		r.hard = int64(binary.LittleEndian.Uint64(b[21:]))
		r.expire = int64(binary.LittleEndian.Uint64(b[29:]))
		b = b[37:]
		n, m = binary.Uvarint(b)
		if m <= 0 || uint64(len(b)-m) < n {
			return
		}
		r.value = b[m : m+int(n)]
		b = b[m+int(n):]
		if !fn(r) {
			return
		}
	}
}

// HashEntry is a cached hash as a lookup sees it; it is valid only during the LookupHash callback.
type HashEntry struct {
	h          Header
	records    []byte
	complete   bool
	tag        uint32 // the tag of the fill that read the complete image
	unverified bool
	nowMs      int64
}

// LookupHash calls fn with key's hash entry when there is one of the current epoch (and session, or an earlier
// session when fn's policies allow revalidation: see Field). It reports whether fn was called. fn runs under
// freecache's segment lock: it must only read the entry and copy what it needs. The entry is passed by value so
// that it stays on the stack.
func (c *Cache) LookupHash(key []byte, now time.Time, fn func(e HashEntry)) bool {
	if len(key) > MaxKeyLen {
		return false
	}
	st := c.state.Load()
	session, floor := sessionOf(st), uint32(0)
	if t := c.parts.Load(); t != nil {
		w := t.word(key).Load()
		session, floor = sessionOf(w), floorOf(w)
	}
	called := false
	_ = c.fc.GetFn(key, func(b []byte) error {
		h, rest, err := decodeHeader(b)
		if err != nil || h.Kind != KindHash || h.Epoch != epochOf(st) || h.Session < floor || len(rest) < hashPrefix {
			return nil
		}
		e := HashEntry{h: h, records: rest[hashPrefix:], complete: rest[0]&hashComplete != 0,
			tag: binary.LittleEndian.Uint32(rest[1:]), unverified: h.Session != session || h.Unverified, nowMs: now.UnixMilli()}
		called = true
		fn(e)
		return nil
	})
	return called
}

// hidden reports whether the entry's fields may not be served under p at all: an entry of an earlier tracking
// session is served only under Revalidate, or by serve-stale while the upstream fails (as AppendGet does).
func (e *HashEntry) hidden(p *Policy, allowDead bool) bool {
	return e.unverified && !p.Revalidate && !(allowDead && p.ServeStale)
}

// Field looks field up under its policy p. It returns the field's value (nil with missing for a field that does
// not exist) and its state: StateMiss when the entry does not hold the field, or holds it past what p allows;
// otherwise fresh, stale, unverified, or dead (served only with allowDead and p.ServeStale), as for values.
// A field a complete entry does not list does not exist, as long as the entry's own deadlines allow.
func (e *HashEntry) Field(field []byte, p *Policy, allowDead bool) (value []byte, missing bool, lk Lookup) {
	if e.hidden(p, allowDead) {
		return nil, false, Lookup{}
	}
	found := false
	eachRecord(e.records, func(r record) bool {
		if string(r.field) != string(field) {
			return true
		}
		found = true
		h := Header{Kind: r.kind, FetchedAt: r.fetched, SoftAt: r.soft, HardAt: r.hard, ExpireAt: r.expire}
		lk = h.lookup(p, e.nowMs, allowDead, e.unverified).from(r.tag)
		value, missing = r.value, r.kind == KindNil
		return false
	})
	if found || !e.complete {
		return value, missing, lk
	}
	h := e.h
	h.Kind = KindNil // absent from a complete image: the field does not exist, under the key's negative TTL
	return nil, true, h.lookup(p, e.nowMs, allowDead, e.unverified).from(e.tag)
}

// Fields looks several fields up in one pass over the entry: for each field i of fields that the entry holds,
// or that a complete entry knows does not exist, it calls fn with the field's value and its state under pol(i),
// as Field would; fields it does not call fn for are not cached. A field asked for twice is reported twice.
func (e *HashEntry) Fields(fields [][]byte, pol func(i int) *Policy, allowDead bool, fn func(i int, value []byte, missing bool, lk Lookup)) {
	if len(fields) > 64 {
		for i, f := range fields {
			if v, missing, lk := e.Field(f, pol(i), allowDead); lk.State != StateMiss || e.complete {
				fn(i, v, missing, lk)
			}
		}
		return
	}
	var found uint64
	eachRecord(e.records, func(r record) bool {
		h := Header{Kind: r.kind, FetchedAt: r.fetched, SoftAt: r.soft, HardAt: r.hard, ExpireAt: r.expire}
		for i, f := range fields {
			if string(f) != string(r.field) {
				continue
			}
			found |= 1 << i
			p := pol(i)
			var lk Lookup
			if !e.hidden(p, allowDead) {
				lk = h.lookup(p, e.nowMs, allowDead, e.unverified).from(r.tag)
			}
			fn(i, r.value, r.kind == KindNil, lk)
		}
		return found != 1<<len(fields)-1
	})
	if !e.complete {
		return
	}
	for i := range fields {
		if found&(1<<i) == 0 {
			p := pol(i)
			if e.hidden(p, allowDead) {
				fn(i, nil, true, Lookup{})
				continue
			}
			h := e.h
			h.Kind = KindNil
			fn(i, nil, true, h.lookup(p, e.nowMs, allowDead, e.unverified).from(e.tag))
		}
	}
}

// Complete reports whether the entry is an image of the whole hash (from HGETALL) that keyPolicy still allows
// to answer for it (allowDead: serve-stale while the upstream fails); then Each lists every field the hash has.
func (e *HashEntry) Complete(keyPolicy *Policy, allowDead bool) (Lookup, bool) {
	if !e.complete || e.hidden(keyPolicy, allowDead) {
		return Lookup{}, false
	}
	h := e.h
	lk := h.lookup(keyPolicy, e.nowMs, allowDead, e.unverified).from(e.tag)
	return lk, lk.State != StateMiss
}

// Each calls fn for every field the entry lists, in entry order, with its value (missing for a field cached as
// not existing), until fn returns false.
func (e *HashEntry) Each(fn func(field, value []byte, missing bool) bool) {
	eachRecord(e.records, func(r record) bool { return fn(r.field, r.value, r.kind == KindNil) })
}

// Raw returns a field's cached value regardless of deadlines (for reading a row's event time alongside it).
func (e *HashEntry) Raw(field []byte) (value []byte, ok bool) {
	eachRecord(e.records, func(r record) bool {
		if string(r.field) == string(field) && r.kind == KindValue {
			value, ok = r.value, true
			return false
		}
		return true
	})
	return value, ok
}

// EachField calls fn for every field the entry lists, with its value and its state under the policy pol gives
// for it (StateMiss: the field may not be served), until fn returns false.
func (e *HashEntry) EachField(pol func(field []byte) *Policy, allowDead bool, fn func(field, value []byte, missing bool, lk Lookup) bool) {
	eachRecord(e.records, func(r record) bool {
		p := pol(r.field)
		if e.hidden(p, allowDead) {
			return fn(r.field, r.value, r.kind == KindNil, Lookup{})
		}
		h := Header{Kind: r.kind, FetchedAt: r.fetched, SoftAt: r.soft, HardAt: r.hard, ExpireAt: r.expire}
		return fn(r.field, r.value, r.kind == KindNil, h.lookup(p, e.nowMs, allowDead, e.unverified).from(r.tag))
	})
}

func allMissing(hr *HashResult) bool {
	for i := range hr.Fields {
		if !hr.Fields[i].Missing {
			return false
		}
	}
	return true
}

// FieldHeader returns a field's record as a Header (its kind, times and deadlines) and its value's size, for
// CACHE EXPLAIN; ok is false when the entry does not list the field.
func (e *HashEntry) FieldHeader(field []byte) (h Header, size int, ok bool) {
	eachRecord(e.records, func(r record) bool {
		if string(r.field) != string(field) {
			return true
		}
		h = Header{Kind: r.kind, Epoch: e.h.Epoch, Session: e.h.Session, Unverified: e.h.Unverified,
			FetchedAt: r.fetched, SoftAt: r.soft, HardAt: r.hard, ExpireAt: r.expire}
		size, ok = len(r.value), true
		return false
	})
	return h, size, ok
}

// IsComplete reports whether the entry is an image of the whole hash (from HGETALL), whatever its deadlines.
func (e *HashEntry) IsComplete() bool { return e.complete }
