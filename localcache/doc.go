// Package localcache is featcache's in-memory tier: values, remembered nils and hashes (some or all of their
// fields, each with its own deadlines: hash.go), stored in freecache under the physical Redis key, each with
// millisecond deadlines in a small header (entry.go), served as the exact RESP2 reply Redis would send.
//
// # Serving
//
// AppendGet decides from the entry header and the caller's Policy whether an entry is fresh, soft-stale
// (serve, and refresh in the background), unverified (stored before a tracking loss that the policy
// survives: served within its soft deadline and re-fetched), or dead (served only under serve-stale while
// the upstream fails, within MaxStale and never past the upstream key's expiry). Deadlines are the minimum
// of those stored at fill time and those the current policy gives, so a stricter policy applies at once.
// The reply is appended to the caller's buffer from inside freecache's GetFn, without allocating when the
// buffer has room (but for the rare entry that wraps around freecache's ring buffer). LookupHash does the same
// for hash entries, field by field.
//
// # Never storing a value fetched before an invalidation
//
// A miss has no entry to carry a version, so the proof that a fill is still current lives outside the
// entries, in two places:
//
//   - A generation per key, kept only while the key has a fill outstanding: a table of 256 shards,
//     each a mutex and a map from key to its flight{gen, inval, fills, refs}. Acquire finds or creates
//     the key's flight and joins the fill in it that was started for the same fill id (a value, or one
//     set of hash fields) in the flight's current generation, epoch and tracking session, or else starts
//     a new fill that records them, the count of invalidations and its start time. Invalidate moves the
//     flight's generation and count, if there is a flight, and deletes the freecache entry, holding the
//     shard lock; a read that answers while fills are in flight moves the generation too (see Overlapping
//     reads below). Complete touches the entry only if the count and epoch are still the fill's, checking
//     and storing under that same
//     lock, so an invalidation is either before the check (nothing stored) or after the store (the entry
//     is deleted). A key with no fill outstanding has no flight: deleting its entry is all an
//     invalidation needs, since any later fill reads the upstream after it. refs counts the key's
//     outstanding fills and the flight is dropped when it reaches zero, so the table holds only keys
//     being fetched.
//   - A global state word, one atomic load: the flush epoch, the tracking session and the trust bit. The
//     epoch and the session are stored in every entry header and compared at every lookup. Flush moves
//     the epoch and then clears freecache; freecache's Clear is not atomic across its 256 segments, but an
//     entry of an old epoch is a miss from the instant the epoch moves, wherever the clear has got to.
//     SetTrusted moves the session on both transitions: a tracking loss makes everything stored before it
//     unverified, and a fill that began while tracking was down, or completed after it went down, is
//     stored unverified (Header.Unverified), never as verified. Since the three share the word, Complete
//     sees them at once.
//
// # Trust partitions
//
// When invalidations arrive over several connections that fail apart (one per master of a Redis Cluster),
// EnablePartitions splits the tracking state into partitions, with a function from key to partition that the
// caller provides (partitions.go). Each partition has its own session, trust bit and flush floor, and an entry
// carries its partition's session: one connection's loss (SetPartitionsTrusted) or a partition's flush
// (FlushPartitions) touches only its partitions' keys. A fill records its partition's word too, and is neither
// joined nor stored as verified across a change of it, nor stored at all across a flush of it. The global epoch
// still flushes everything.
//
// # An answer replaces the entry
//
// What a fill read from the upstream replaces the key's entry: it is stored when it can be, and the entry
// is deleted when it cannot (a nil without NegativeTTL, a relayed error such as WRONGTYPE, an unknown
// expiry, an entry too large, Result.Drop). An older value therefore never outlives a read that saw the key
// change, not for lookups and not for serve-stale. Upstream failures (Result.Err) and results not read from
// the upstream (Result.NoStore) leave the entry as it is.
//
// Because a read after an invalidation never joins a fill that began before it, and fills are shared by
// every concurrent miss of a key in a generation, there is one upstream read per key per generation
// while a fill is outstanding, background refreshes included (they go through Acquire too).
//
// # Overlapping reads
//
// Reads of one key that overlap (fills of different fields of a hash, a fill and an MGET's transaction, fills
// of two tracking sessions, a fill that began before an invalidation and one that began after it) reach the
// upstream in an order the cache cannot see: they go out on different shared connections, and the one that
// completes last, or began first, may have read last. So a read that answers hands its answer to the key's fills
// still in flight and ends their generation (a later miss starts its own fill rather than join one that may be
// older than an answer already served), and what they read otherwise they do not store (Fill.concurrent).
//
// # Memory
//
// freecache allocates Options.MaxMemory up front and never more for entries. Its index is outside
// MaxMemory: 16 bytes for each of the 256 index buckets (freecache's "slots") of each of its 256 segments,
// times the segment's bucket capacity, which doubles whenever the segment's fullest bucket overflows and
// never shrinks (Flush resets it): 1 MiB per unit of capacity, far more than 16 bytes per entry. Measured:
// 8 MiB for a 64 MiB tier of 1-2 KiB entries, 16 MiB for 256 MiB and 32 MiB for 1 GiB; 16 MiB for 64 MiB
// of 200-byte values and 37 MiB for 256 MiB of them. Keys longer than MaxKeyLen and entries larger than
// about MaxMemory/1024 are not stored (they are counted in Stats); their fills still coalesce misses and
// hand the result to waiters.
//
// # Admission
//
// With Options.Admission, a frequency filter decides, once the tier has had to evict, which fills are
// worth storing (admission.go); a fill it refuses is handed to its waiters like one too large to store.
package localcache
