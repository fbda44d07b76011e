// Package upstream is featcache's side of Redis: the connections that carry forwarded commands and the local tier's
// fills (pool.go: the Pool; link.go: its shared connections; call.go: one batch on them; conn.go: dedicated
// connections), the tracking connection that keeps the tier consistent (tracking.go), and what makes one
// Client of a single node, a primary found through Sentinel (sentinel.go) or a Redis Cluster (cluster*.go).
//
// # Why a pool of its own for forwarded traffic and fetches
//
// A client of featcache must not be able to tell it from Redis for the commands it forwards: the same reply bytes.
// A RESP client library decodes replies into values and encodes them again, and loses what the bytes said:
// rueidis turns $-1, *-1 and RESP3's _ into one null even over RESP2, and a RESP3 connection would need a mapping
// back to RESP2 per command (XREAD, ZRANGE WITHSCORES, Lua false, EXEC's abort...). The Pool therefore speaks RESP2
// and never decodes a reply: a frame scanner (frame.go) finds where each reply ends, and the bytes are handed to
// the caller as Redis sent them. It multiplexes many clients' batches over a few shared connections, one reader
// goroutine per connection handing frames to calls in order, and hands out dedicated connections (Conn) for state
// that must not be shared: a WATCH session, a transaction, a blocking command, a subscription, MONITOR. Waits are
// bounded as the caller needs: featcache's own reads (Do, Fetch) within the timeout, forwarded commands (Forward)
// as long as Redis takes or the command timeout, and a call abandoned on timeout leaves its connection usable, its
// late replies read and dropped.
//
// # Why rueidis for tracking
//
// Invalidations are pushes on a connection with CLIENT TRACKING on, which rueidis reads and hands to a hook, and
// its hook's error channel tells a null invalidation (FLUSHALL, FLUSHDB) from a dead connection. The Tracker keeps
// one such connection per node, dialed again when it drops, in BCAST mode with the policies' prefixes: the server
// keeps no per-key table, every write under a prefix is announced on that one connection whichever connection
// made it, and so featcache's own reads and writes can travel on the plain pool. Whether tracking is intact is
// then one question about one connection per node (Tracker.Up, OnLost), which decides whether the tier may store
// fills (Invalidator.SetTrusted). rueidis is used for nothing else: its clients are made with DisableCache and
// closed with their session (see Tracker for the library's pitfalls).
//
// # Payloads and Redis Cluster
//
// A round trip's commands are a Payload: RESP bytes plus, for each command, its hash slot, computed when it is
// appended, from its key or from its keys as Redis's key specs find them (featcache/internal/commands). In front of
// a single node a Payload is just its bytes. In front of a cluster, the Client's Do, Forward and Start hand it to
// the Cluster router, which sends each command to the master of its slot, without parsing the payload, follows
// MOVED, ASK and TRYAGAIN, and keeps one tracking connection per master, and the tier's trust per hash slot
// (PartitionedCache). Dedicated connections to a cluster follow redirects too, for a command that left no state
// (Conn.Follow), and a connection switched to RESP3 is switched again on the node it moves to.
//
// A RESP3 client's commands are appended between Payload.AppendHello(3) and AppendHello(2): a single node runs
// them in RESP3 as they come; the router wraps each master's part in HELLO 3 ... HELLO 2. Keyspace streams
// (TrackKeyspace: the keys featcache's tracking clients read outside the policies) have one tracking connection
// on the single node, or one per master, and the masters' tracking connections tell the Watcher what they see.
package upstream
