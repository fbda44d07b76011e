// Package proxy is featcache's request path: it accepts Redis clients, answers their feature reads (GET, MGET,
// HGET, HMGET, HGETALL) from the local tier, and sends everything else to Redis over upstream's connections, with
// replies a client cannot tell from Redis's own.
//
// A Server owns the listener, the command table, the policies and the counters; each client connection is a
// client, run by one goroutine, that reads a pipeline (a batch), executes its commands in order and writes their
// replies. Replies known at once (hits, featcache's own answers) are appended to the client's output as they are
// made; replies that need Redis (misses, forwarded commands, writes) are holes filled after the batch's segment has
// made its one upstream round trip, then assembled in order.
//
// The files, in the order a request meets them:
//
//	server.go       Server, New, the accept loop (Serve), limits.max_clients (reject), a connection's panic
//	                recovery (serveClient), Close, Drain, Shutdown
//	client.go       one connection: its state, the read loop over the bounded resp.Reader (the guard: limits before
//	                parsing), TLS handshake, gentle close, flush and send
//	table.go        the command table: each command's class, how it is refused, and isWrite
//	handler.go      execBatch and exec (dispatch by class), cached GET and MGET reads, forwarded commands, writes
//	policies.go     the policies as the request path uses them (policySet) and the key -> policy lookup
//	hashread.go     cached HGET, HMGET and HGETALL: per-field policies, Feast event times, whole-hash fills
//	snapshot.go     snapshot pointers: logical keys resolved to the version a pointer names
//	reply.go        the reply helpers and the one place an upstream failure becomes a client's error
//	replies.go      the reply builder: the batch's replies in order, known now (out) or waiting (holes)
//	resp3.go        RESP3 for clients that ask (HELLO 3): replies in the client's protocol, shared connections
//	                switched around its forwarded commands, dedicated ones prepared, commands beside subscriptions
//	segment.go      the segment: one upstream round trip's payload, fills, holes and their assembly
//	roundtrip.go    the segment's round trip (runSegment): fills completed from it, the invalidation of written
//	                keys (and the barrier for writes whose keys are not all known), the replies assembled
//	mgettx.go       an MGET not answered from memory whole, answered from one MULTI/EXEC
//	cluster.go      in front of a Redis Cluster: slots, commands split by slot or fanned out to every master, SCAN
//	tx.go           transactions: MULTI, EXEC, DISCARD, contiguous or pinned, and featcache's queue in a cluster
//	pinned.go       WATCH sessions on a dedicated connection, and waiting on one while watching the client socket
//	blocking.go     blocking commands (BLPOP, XREAD BLOCK, ...) on a dedicated connection
//	pubsub.go       subscribed mode: the SUBSCRIBE family, its pump and the subscription model
//	monitor.go      MONITOR sessions
//	ldb.go          Lua debugging sessions (SCRIPT DEBUG YES, then EVAL): relayed on a dedicated connection
//	connection.go   connection commands answered from the connection's state: PING, ECHO, QUIT, RESET, HELLO,
//	                AUTH, SELECT, READONLY
//	serverinfo.go   what HELLO reports of the upstream
//	clientcmd.go    CLIENT subcommands: SETNAME, REPLY, LIST, KILL, UNBLOCK, ...
//	clientinfo.go   what the other clients may see of a client (CLIENT LIST, KILL, UNBLOCK)
//	tracking.go     CLIENT TRACKING, CACHING, GETREDIR, TRACKINGINFO for featcache's clients, and the request
//	                path's hooks: the keys a tracking client reads, the writes that wait for the streams
//	trackingtable.go  what featcache keeps for them: the keys each read, the two invalidation streams that
//	                invalidate them, the keyspace stream's prefixes
//	pushes.go       invalidations in the form Redis sends them, queued per connection and written between replies
//	configget.go    CONFIG GET with secrets redacted
//	info.go         INFO with featcache's section
//	admin.go        CACHE: STATS, EXPLAIN, FLUSH, WARM, HOTKEYS, RELOAD
//	notstored.go    EXPLAIN's account of why a key's last answer was not stored
//	reload.go       a configuration reload
//	warm.go         warming the local tier at start and on CACHE WARM
//	limits.go       what a client does against the limits: buffer accounting, output bounds, fail
//	budget.go       the memory budget clients share, and the Go memory limit that follows it
//	watchdog.go     idle and output timeouts
//	tokenbucket.go  a rate bound (re-fetches of unverified entries)
//	peer_linux.go   whether the client closed its end, from the TCP state (peer_other.go: never known)
//	metrics.go      the request path's per-policy, per-command and latency counters
//	statscollector.go the Prometheus collector that exports them, and the tier's figures, at scrape time
//	stats.go        Stats, the request path's counters
//	runtime.go      process figures for CACHE STATS
//	http.go         the admin HTTP handler: /metrics, /healthz, /readyz
package proxy
