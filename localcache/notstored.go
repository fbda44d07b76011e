package localcache

import (
	"sync"
	"time"

	"github.com/cespare/xxhash/v2"
)

// Reason says why a fill's answer (what the upstream said of the key, Result without Err or NoStore) was not
// stored. Every such answer is counted under exactly one reason (Stats.NotStored), and the last reason of a key is
// remembered for a while (LastNotStored). Answers stored unverified (tracking down, a policy that serves
// unverified entries) are stored, and not counted. A hash read counts once, when it stores nothing: a read that
// stores some of its fields and not others is not counted.
type Reason uint8

const (
	// NotStoredTooLarge: key, entry header and value (for a hash, the whole entry) exceed the largest entry
	// freecache accepts (MaxEntry).
	NotStoredTooLarge Reason = iota + 1
	// NotStoredKeyTooLarge: the key is longer than MaxKeyLen.
	NotStoredKeyTooLarge
	// NotStoredWrongType: the upstream answered with an error about the key (WRONGTYPE), relayed and not stored.
	NotStoredWrongType
	// NotStoredExpired: the key's expiry was not known (it expired between GET and PTTL), or the fill outlived
	// every deadline the entry would have had (it expired upstream while the read was in flight).
	NotStoredExpired
	// NotStoredNoNegativeTTL: the key (or every hash field read) does not exist, and its policy's negative_ttl
	// is 0.
	NotStoredNoNegativeTTL
	// NotStoredUncachedPolicy: the policy caches nothing (hard_ttl 0, or hash fields of a Feast view with
	// cache: false).
	NotStoredUncachedPolicy
	// NotStoredSuperseded: the key was invalidated, or the tier (or the key's trust partition) flushed, while the
	// read was in flight: what it read may predate the write.
	NotStoredSuperseded
	// NotStoredContested: another read of the key that overlapped this one answered otherwise; which read Redis
	// last is not known, so neither is stored.
	NotStoredContested
	// NotStoredMGETOverlap: an MGET whose transaction did not lead the fill of every one of its keys: its values
	// are served, not stored (they would pair values read at two instants).
	NotStoredMGETOverlap
	// NotStoredUntrusted: tracking (or the key's trust partition) was down or changed during the read, and the
	// policy neither revalidates nor serves stale, so nothing would serve an unverified entry.
	NotStoredUntrusted
	// NotStoredNotAdmitted: the admission filter refused the key (Options.Admission).
	NotStoredNotAdmitted
	// NotStoredTTLRefused: the upstream refused the PTTL read with the value (Result.TTLRefused: an ACL user
	// without +pttl, a renamed command), so the key's expiry is unknown.
	NotStoredTTLRefused

	numReasons = iota + 1
)

// Reasons lists every Reason, in order: the label set of the not-stored counter.
var Reasons = [...]Reason{NotStoredTooLarge, NotStoredKeyTooLarge, NotStoredWrongType, NotStoredExpired,
	NotStoredNoNegativeTTL, NotStoredUncachedPolicy, NotStoredSuperseded, NotStoredContested, NotStoredMGETOverlap,
	NotStoredUntrusted, NotStoredNotAdmitted, NotStoredTTLRefused}

var reasonNames = [numReasons]string{"", "too_large", "key_too_large", "wrong_type", "expired", "no_negative_ttl",
	"uncached_policy", "superseded", "contested", "mget_overlap", "untrusted", "not_admitted", "ttl_refused"}

// String returns the reason's metric label.
func (r Reason) String() string { return enumName(reasonNames[:], uint8(r), "reason") }

// MaxEntry returns the largest len(key) + headerSize (42) + len(value) the tier stores: a quarter of one of
// freecache's 256 segments (MaxMemory/1024) minus freecache's own 24-byte entry header. So the largest value is
// MaxMemory/1024 - 66 - len(key) bytes: 262,078 - len(key) with MaxMemory 256 MiB. A hash entry (one per key)
// holds all its cached fields, each with its name and a record header of about 40 bytes.
func (c *Cache) MaxEntry() int { return c.maxEntry }

// refusalsKept is how many keys' last refusals the tier remembers (LastNotStored): the oldest is forgotten first.
const refusalsKept = 4096

// refusals remembers the last reason the most recent refused keys were not stored, by a hash of the key (so keys
// of any length cost the same). Only refusals touch it: hits and stores never do.
type refusals struct {
	mu   sync.Mutex
	last map[uint64]refusal
	ring [refusalsKept]uint64 // keys in order of first refusal; next is the oldest once the ring is full
	next int
}

type refusal struct {
	why Reason
	at  int64 // unix ms, on the cache's clock
}

// refuse counts that f's answer was not stored, and why.
func (c *Cache) refuse(f *Fill, why Reason) {
	c.stats.notStored[why].Add(1)
	h := xxhash.Sum64(f.key)
	r := &c.refused
	r.mu.Lock()
	if r.last == nil {
		r.last = make(map[uint64]refusal, refusalsKept)
	}
	if _, ok := r.last[h]; !ok {
		if len(r.last) == refusalsKept {
			delete(r.last, r.ring[r.next])
		}
		r.ring[r.next] = h
		r.next = (r.next + 1) % refusalsKept
	}
	r.last[h] = refusal{why: why, at: c.now().UnixMilli()}
	r.mu.Unlock()
}

// LastNotStored returns the last reason an answer about key was not stored and when, if the tier remembers one:
// it remembers the last refusalsKept keys refused, by a 64-bit hash of the key. A key longer than MaxKeyLen is
// always NotStoredKeyTooLarge (at is zero then if it was never read). key is not retained.
func (c *Cache) LastNotStored(key []byte) (why Reason, at time.Time, ok bool) {
	r := &c.refused
	r.mu.Lock()
	last, found := r.last[xxhash.Sum64(key)]
	r.mu.Unlock()
	switch {
	case found:
		return last.why, time.UnixMilli(last.at), true
	case len(key) > MaxKeyLen:
		return NotStoredKeyTooLarge, time.Time{}, true
	}
	return 0, time.Time{}, false
}

// hashRefusal returns why a hash fill whose merge (mergeHash) kept nothing stored nothing, from what it read: the
// first reason, in the order mergeHash checks them, that rules out one of the fields read (a read of several
// fields that mergeHash skipped for different reasons counts under the first field's).
func (f *Fill) hashRefusal(res *Result, hr *HashResult, verified bool, nowMs int64) Reason {
	switch {
	case res.PTTL > 0, res.PTTL == NoExpiry, res.PTTL == -time.Millisecond:
	case res.PTTL == -2*time.Millisecond && allMissing(hr):
	case res.TTLRefused:
		return NotStoredTTLRefused
	default:
		return NotStoredExpired
	}
	keeps := func(p *Policy) bool { return verified || p.Revalidate || p.ServeStale }
	if len(hr.Fields) == 0 && hr.All && hr.KeyPolicy != nil {
		switch {
		case hr.KeyPolicy.NegativeTTL <= 0:
			return NotStoredNoNegativeTTL
		case !keeps(hr.KeyPolicy):
			return NotStoredUntrusted
		}
	}
	for i := range hr.Fields {
		fr := &hr.Fields[i]
		switch {
		case len(f.concurrent) > 0 && f.disputed(fr):
			return NotStoredContested
		case fr.Policy == nil || fr.Policy.HardTTL <= 0:
			return NotStoredUncachedPolicy
		case fr.Missing && fr.Policy.NegativeTTL <= 0:
			return NotStoredNoNegativeTTL
		case !keeps(fr.Policy):
			return NotStoredUntrusted
		}
	}
	if len(f.concurrent) > 0 && hr.All && f.disputesAbsent(hr) {
		return NotStoredContested
	}
	// Every field was within its policy: the read outlived their deadlines (their upstream expiry).
	return NotStoredExpired
}
