package proxy

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"featcache/internal/redistest"
)

// Server-level events caused by another client of the same Redis, connected straight to it: CLIENT PAUSE, CONFIG
// SET of maxclients, requirepass, timeout, client-output-buffer-limit, CLIENT KILL by type, REPLICAOF, DEBUG
// SLEEP. Each is run against featcache and against a direct client doing the same traffic, side by side; what
// featcache answers must be what the direct client gets, and no value Redis no longer holds is served after it.

// eventsConfig caches "c:" keys (failing on upstream errors); other keys match no policy and are forwarded.
const eventsConfig = `
policies:
  - {name: cached, prefix: "c:", soft_ttl: 1h, hard_ttl: 2h, jitter: 0}
`

// mixStep is one round of the traffic a featcache client and a direct client each run: a cached read, a
// forwarded write and read, a transaction and a blocking pop that finds an element. tag keeps the two clients'
// keys apart where they write; the replies are the same for both.
func mixStep(t *testing.T, c *redistest.Conn, tag string) []string {
	t.Helper()
	var got []string
	do := func(args ...string) {
		got = append(got, strings.Join(args, " ")+" -> "+string(c.Do(args...)))
	}
	do("GET", "c:1")
	do("SET", "u:w"+tag, "x")
	do("GET", "u:w"+tag)
	do("MULTI")
	do("INCR", "u:n"+tag)
	do("GET", "c:1")
	do("EXEC")
	do("DEL", "u:n"+tag)
	do("RPUSH", "u:l"+tag, "e")
	do("BLPOP", "u:l"+tag, "1")
	return got
}

// compareMix runs mixStep on featcache's fc and Redis's rc at the same time and requires the same replies (with
// tags replaced); it returns featcache's. Clients running it at the same time pass a suffix each.
func compareMix(t *testing.T, phase string, fc, rc *redistest.Conn, suffix ...string) []string {
	t.Helper()
	var got, want []string
	var wg sync.WaitGroup
	wg.Add(1)
	sfx := strings.Join(suffix, "")
	go func() {
		defer wg.Done()
		want = mixStep(t, rc, "D"+sfx)
	}()
	got = mixStep(t, fc, "F"+sfx)
	wg.Wait()
	for i := range got {
		g := strings.ReplaceAll(got[i], "F"+sfx, "D"+sfx)
		if i >= len(want) || g != want[i] {
			t.Errorf("%s: featcache %q; Redis %q", phase, got[i], want[min(i, len(want)-1)])
		}
	}
	return got
}

// subscriberPair subscribes a featcache client and a direct client to one channel.
func subscriberPair(t *testing.T, p *testProxy, channel string) (fs, rs *redistest.Conn) {
	t.Helper()
	fs, rs = p.dial(), p.redis.Dial()
	want := "*3\r\n$9\r\nsubscribe\r\n" + bulk(channel) + ":1\r\n"
	expectDo(t, fs, want, "SUBSCRIBE", channel)
	expectDo(t, rs, want, "SUBSCRIBE", channel)
	return fs, rs
}

// expectMessage publishes msg on channel straight on Redis and requires both subscribers to receive it.
func expectMessage(t *testing.T, p *testProxy, channel, msg string, subs ...*redistest.Conn) {
	t.Helper()
	want := "*3\r\n$7\r\nmessage\r\n" + bulk(channel) + bulk(msg)
	redistest.Eventually(t, 5*time.Second, "subscriptions in place", func() bool {
		return string(p.redis.Do("PUBSUB", "NUMSUB", channel)) == "*2\r\n"+bulk(channel)+":"+strconv.Itoa(len(subs))+"\r\n"
	})
	p.redis.Do("PUBLISH", channel, msg)
	for _, s := range subs {
		expectRead(t, s, want)
	}
}

// primeNeighbour writes c:1 and reads it through featcache, so that it is cached.
func primeNeighbour(t *testing.T, p *testProxy, value string) {
	t.Helper()
	p.redis.Do("SET", "c:1", value)
	p.settle()
	if got := p.do("GET", "c:1"); got != bulk(value) {
		t.Fatalf("GET c:1: got %q; want %q", got, bulk(value))
	}
}

// expectFresh changes c:1 straight on Redis and waits until featcache answers the new value: tracking works.
func expectFresh(t *testing.T, p *testProxy, phase, value string) {
	t.Helper()
	redistest.Eventually(t, 10*time.Second, phase+": tracking up", func() bool { _, up := p.up.Tracking(); return up })
	p.redis.Do("SET", "c:1", value)
	redistest.Eventually(t, 5*time.Second, phase+": featcache answers "+value, func() bool {
		return p.do("GET", "c:1") == bulk(value)
	})
}

// TestNeighbourIdleTimeout: another client sets CONFIG SET timeout 1, and Redis closes connections idle for more
// than a second. featcache's idle shared connections, its idle dedicated connections (kept for reuse after a
// transaction or a blocking pop) and its tracking connection are closed while nobody uses them; the clients that
// come later get the replies a direct client gets, and no stale value.
func TestNeighbourIdleTimeout(t *testing.T) {
	redis := redistest.Start(t)
	p := startProxyOn(t, redis, eventsConfig)
	primeNeighbour(t, p, "one")
	fs, rs := subscriberPair(t, p, "ch")
	fc, rc := p.dial(), redis.Dial()
	compareMix(t, "before", fc, rc)
	expectDo(t, redis.Dial(), "+OK\r\n", "CONFIG", "SET", "timeout", "1")
	t.Cleanup(func() { redis.Do("CONFIG", "SET", "timeout", "0") })
	// Every connection of featcache's that was used before the change is closed once it has been idle long enough.
	// One that featcache itself keeps using is never idle that long: its role check (INFO replication, every
	// second) and its health PING go on a shared connection, the first one while nothing else is in flight.
	before := upstreamConns(redis, "featcache")
	redistest.Eventually(t, 10*time.Second, "Redis closes featcache's idle connections", func() bool {
		live := map[string]string{}
		for _, line := range upstreamConns(redis, "featcache") {
			live[clientField(line, "id")] = line
		}
		closed := 0
		for _, line := range before {
			// Redis closes neither the tracking connection (checked every second) nor subscribers for idleness.
			subscribed := clientField(line, "sub") != "0" || clientField(line, "psub") != "0"
			if subscribed || strings.HasPrefix(clientField(line, "name"), "featcache-tracking") {
				continue
			}
			now, ok := live[clientField(line, "id")]
			switch cmd := clientField(now, "cmd"); {
			case !ok:
				closed++
			case (cmd == "info" || cmd == "ping") && (clientField(now, "idle") == "0" || clientField(now, "idle") == "1"):
				// in use by featcache's own periodic commands
			default:
				return false
			}
		}
		return closed > 0
	})
	fc2, rc2 := p.dial(), redis.Dial()
	compareMix(t, "after the idle close", fc2, rc2)
	expectMessage(t, p, "ch", "after-idle", fs, rs) // Redis does not close subscribers for idleness
	expectFresh(t, p, "after the idle close", "two")
}

// TestNeighbourDebugSleep: DEBUG SLEEP 2 straight on Redis. Forwarded reads and writes through featcache wait
// and get Redis's replies after the sleep, as a direct client's do; afterwards tracking works.
func TestNeighbourDebugSleep(t *testing.T) {
	redis := redistest.Start(t, "--enable-debug-command", "yes")
	p := startProxyOn(t, redis, eventsConfig)
	primeNeighbour(t, p, "one")
	fs, rs := subscriberPair(t, p, "ch")
	fc, rc := p.dial(), redis.Dial()
	sleeper := redis.Dial()
	if err := sleeper.Send("DEBUG", "SLEEP", "2"); err != nil {
		t.Fatal(err)
	}
	redistest.Eventually(t, 5*time.Second, "Redis asleep", func() bool { return busyStarted(t, redis) })
	compareMix(t, "during DEBUG SLEEP", fc, rc)
	expectRead(t, sleeper, "+OK\r\n")
	expectMessage(t, p, "ch", "after-sleep", fs, rs)
	expectFresh(t, p, "after DEBUG SLEEP", "two")
}

// directRefusal is what Redis writes to a client it refuses as it connects (max clients reached): it reads the
// first frame of a fresh connection that sends PING.
func directRefusal(t *testing.T, redis *redistest.Server) string {
	t.Helper()
	c := redis.Dial()
	defer c.Close()
	if err := c.Send("PING"); err != nil {
		return "no reply: " + err.Error()
	}
	r, err := c.Read()
	if err != nil {
		return "no reply: " + err.Error()
	}
	return string(r)
}

// killFeatcache closes every connection of featcache's to Redis, through admin (CLIENT LIST, CLIENT KILL ID), and
// returns how many Redis closed.
func killFeatcache(t *testing.T, admin *redistest.Conn) int {
	t.Helper()
	return killVia(admin.Do, connsVia(admin.Do, "featcache"))
}

// cutOff kills featcache's connections to Redis, with admin, a connection of another client, once Redis has been
// set to refuse them back; waits until tracking is lost, then changes c:1 while featcache cannot see it.
func cutOff(t *testing.T, p *testProxy, admin *redistest.Conn) {
	t.Helper()
	killFeatcache(t, admin)
	redistest.Eventually(t, 5*time.Second, "tracking lost", func() bool { _, up := p.up.Tracking(); return !up })
	expectDo(t, admin, "+OK\r\n", "SET", "c:1", "changed-while-down")
}

// expectReconnected waits until featcache, let back in, answers c:1 with the value cutOff wrote while it was out.
func expectReconnected(t *testing.T, fc *redistest.Conn) {
	t.Helper()
	redistest.Eventually(t, 10*time.Second, "featcache reconnects", func() bool {
		return string(fc.Do("GET", "c:1")) == bulk("changed-while-down")
	})
}

// TestNeighbourMaxClients: another client lowers maxclients below the number of connected clients. Connections
// already open keep working; a command through featcache that needs a new connection (a transaction, a blocking
// pop, a reconnect after CLIENT KILL) gets Redis's own refusal, as a direct client that connects then does; the
// tracking connection that cannot come back leaves no entry trusted; when the limit is raised, featcache
// recovers by itself.
func TestNeighbourMaxClients(t *testing.T) {
	redis := redistest.Start(t)
	p := startProxyOn(t, redis, eventsConfig)
	primeNeighbour(t, p, "one")
	admin := redis.Dial()
	fc := p.dial()
	expectDo(t, fc, "+OK\r\n", "SET", "u:w", "x") // a shared connection is open
	expectDo(t, admin, "+OK\r\n", "CONFIG", "SET", "maxclients", "1")
	t.Cleanup(func() { admin.Do("CONFIG", "SET", "maxclients", "10000") })
	refusal := directRefusal(t, redis)
	if refusal != "-ERR max number of clients reached\r\n" {
		t.Fatalf("a direct client connecting: got %q", refusal)
	}
	// Open connections keep working: the cached read, a forwarded one.
	expectDo(t, fc, bulk("one"), "GET", "c:1")
	expectDo(t, fc, bulk("x"), "GET", "u:w")
	// A transaction and a blocking pop need a connection of their own.
	expectDo(t, fc, refusal, "MULTI")
	expectDo(t, fc, refusal, "INCR", "u:n")
	expectDo(t, fc, "-EXECABORT Transaction discarded because of previous errors.\r\n", "EXEC")
	expectDo(t, fc, refusal, "BLPOP", "u:l", "1")

	// featcache's connections are killed: none can come back. The cached entry is not trusted any more.
	cutOff(t, p, admin)
	for _, args := range [][]string{{"GET", "c:1"}, {"GET", "u:w"}, {"SET", "u:w", "y"}} {
		if got := string(fc.Do(args...)); got != refusal {
			t.Errorf("%q while featcache cannot connect: got %q; want %q", args, got, refusal)
		}
	}

	expectDo(t, admin, "+OK\r\n", "CONFIG", "SET", "maxclients", "10000")
	expectReconnected(t, fc)
	compareMix(t, "after the limit is raised", fc, redis.Dial())
	expectFresh(t, p, "after the limit is raised", "two")
}

// TestNeighbourPasswordChange: another client sets a password featcache does not have (CONFIG SET requirepass)
// and kills featcache's connections. featcache cannot reconnect: its cached entries are not served (tracking is
// lost), clients get an error that says why, and once the password is removed featcache recovers by itself.
func TestNeighbourPasswordChange(t *testing.T) {
	redis := redistest.Start(t)
	p := startProxyOn(t, redis, eventsConfig)
	primeNeighbour(t, p, "one")
	admin := redis.Dial()
	fc := p.dial()
	expectDo(t, fc, "+OK\r\n", "SET", "u:w", "x")
	expectDo(t, admin, "+OK\r\n", "CONFIG", "SET", "requirepass", "neighbour-secret")
	t.Cleanup(func() { admin.Do("CONFIG", "SET", "requirepass", "") })
	// Connections already authenticated keep working.
	expectDo(t, fc, bulk("one"), "GET", "c:1")
	expectDo(t, fc, bulk("x"), "GET", "u:w")

	cutOff(t, p, admin)
	for _, args := range [][]string{{"GET", "c:1"}, {"GET", "u:w"}, {"SET", "u:w", "y"}, {"MULTI"}} {
		got := string(fc.Do(args...))
		if !strings.HasPrefix(got, "-ERR featcache upstream unavailable: ") || !strings.Contains(got, "NOAUTH") {
			t.Errorf("%q while featcache cannot authenticate: got %q; want featcache's error naming NOAUTH", args, got)
		}
	}
	expectDo(t, fc, "-EXECABORT Transaction discarded because of previous errors.\r\n", "EXEC")

	expectDo(t, admin, "+OK\r\n", "CONFIG", "SET", "requirepass", "")
	expectReconnected(t, fc)
	compareMix(t, "after the password is removed", fc, redis.Dial())
	expectFresh(t, p, "after the password is removed", "two")
}

// TestNeighbourClientKillTypes: CLIENT KILL TYPE pubsub, then TYPE normal, straight on Redis while a subscriber
// and a transaction run through featcache and straight on Redis.
func TestNeighbourClientKillTypes(t *testing.T) {
	redis := redistest.Start(t)
	p := startProxyOn(t, redis, eventsConfig)
	primeNeighbour(t, p, "one")
	admin := redis.Dial()
	fs, rs := subscriberPair(t, p, "ch")
	fc, rc := p.dial(), redis.Dial()
	for _, c := range []*redistest.Conn{fc, rc} {
		expectDo(t, c, "+OK\r\n", "MULTI")
		expectDo(t, c, "+QUEUED\r\n", "INCR", "u:n")
	}
	admin.Do("CLIENT", "KILL", "TYPE", "pubsub")
	// Both subscribers are closed; the transactions go on.
	expectClosed(t, rs, 5*time.Second)
	expectClosed(t, fs, 5*time.Second)
	for _, c := range []*redistest.Conn{fc, rc} {
		expectDo(t, c, "+QUEUED\r\n", "GET", "c:1")
	}
	expectDo(t, rc, "*2\r\n:1\r\n"+bulk("one"), "EXEC")
	expectDo(t, fc, "*2\r\n:2\r\n"+bulk("one"), "EXEC")

	fs, rs = subscriberPair(t, p, "ch")
	fc, rc = p.dial(), redis.Dial()
	for _, c := range []*redistest.Conn{fc, rc} {
		expectDo(t, c, "+OK\r\n", "MULTI")
		expectDo(t, c, "+QUEUED\r\n", "INCR", "u:n")
	}
	admin.Do("CLIENT", "KILL", "TYPE", "normal")
	expectClosed(t, rc, 5*time.Second)
	// featcache's transaction lost its connection: it is over (documented in upstream-faults.md).
	if got := string(fc.Do("GET", "c:1")); !strings.HasPrefix(got, "-") {
		t.Errorf("GET c:1 in a transaction whose connection was killed: got %q; want an error", got)
	}
	expectDo(t, fc, "-EXECABORT Transaction discarded because of previous errors.\r\n", "EXEC")
	expectMessage(t, p, "ch", "after-kill", fs, rs)
	expectFresh(t, p, "after CLIENT KILL TYPE normal", "two")
	compareMix(t, "after CLIENT KILL TYPE normal", fc, redis.Dial())
}

// timedReply is a reply and how long it took.
type timedReply struct {
	reply string
	took  time.Duration
}

// concurrently runs each command on a connection of its own from dial (featcache's or Redis's), all at the same
// time, and returns each reply with how long it took.
func concurrently(t *testing.T, dial func() *redistest.Conn, cmds ...[]string) []timedReply {
	t.Helper()
	out := make([]timedReply, len(cmds))
	conns := make([]*redistest.Conn, len(cmds))
	for i := range cmds {
		conns[i] = dial()
	}
	var wg sync.WaitGroup
	for i, args := range cmds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			if err := conns[i].Send(args...); err != nil {
				out[i] = timedReply{"no reply: " + err.Error(), time.Since(start)}
				return
			}
			r, err := conns[i].ReadTimeout(10 * time.Second)
			if err != nil {
				out[i] = timedReply{"no reply: " + err.Error(), time.Since(start)}
				return
			}
			out[i] = timedReply{string(r), time.Since(start)}
		}()
	}
	wg.Wait()
	return out
}

// TestNeighbourClientPauseWrite: CLIENT PAUSE WRITE straight on Redis, for longer than upstream.timeout. Redis
// holds every write and answers reads: a direct client's reads are answered at once while other clients' writes
// wait. Through featcache, writes of other clients are held on its shared connections first, one after another
// (so that, before, every shared connection held one); cached reads that miss, forwarded reads and an MGET must
// still be answered at once, not wait behind the held writes nor time out, and the writes get +OK after the
// pause.
func TestNeighbourClientPauseWrite(t *testing.T) {
	redis := redistest.Start(t)
	p := startProxyOn(t, redis, eventsConfig)
	primeNeighbour(t, p, "one")
	redis.Do("SET", "c:2", "two")
	redis.Do("SET", "u:r", "read")
	p.settle()
	reads := [][]string{{"GET", "c:1"}, {"GET", "c:2"}, {"GET", "u:r"}, {"MGET", "u:r", "c:2"}}
	want := []string{bulk("one"), bulk("two"), bulk("read"), "*2\r\n" + bulk("read") + bulk("two")}
	for _, who := range []string{"Redis", "featcache"} {
		dial := redis.Dial
		if who == "featcache" {
			dial = p.dial
		}
		expectDo(t, redis.Dial(), "+OK\r\n", "CLIENT", "PAUSE", "2500", "WRITE")
		// One write after the other, each held before the next is sent: round the shared connections.
		var writers []*redistest.Conn
		for i := 0; i < 4; i++ {
			w := dial()
			sent := p.srv.Stats().Forwarded.Load()
			if err := w.Send("SET", "u:w"+strconv.Itoa(i), "x"); err != nil {
				t.Fatal(err)
			}
			writers = append(writers, w)
			redistest.Eventually(t, 2*time.Second, who+": write held", func() bool {
				if who == "featcache" {
					return p.srv.Stats().Forwarded.Load() > sent && heldCommands(t, redis) >= 1
				}
				return heldCommands(t, redis) >= i+1
			})
		}
		got := concurrently(t, dial, reads...)
		// "At once": before upstream.timeout (1s), at which a fill held behind a write used to fail, and well before
		// the end of the pause (2.5s), which a forwarded read held so used to wait for.
		for i, r := range got {
			if r.reply != want[i] || r.took > 800*time.Millisecond {
				t.Errorf("%s: %q while writes are paused: got %q after %v; want %q at once", who, reads[i], r.reply, r.took, want[i])
			}
		}
		for _, w := range writers {
			expectRead(t, w, "+OK\r\n")
			w.Close()
		}
		p.cache.Flush() // c:2 is a miss again for featcache's round
	}
	expectFresh(t, p, "after CLIENT PAUSE WRITE", "three")
}

// heldCommands counts the connections to redis that hold a command Redis has parsed and not run (a paused
// client's: argv-mem above zero in CLIENT LIST).
func heldCommands(t *testing.T, redis *redistest.Server) int {
	n := 0
	for _, line := range listLines(t, redis.Do("CLIENT", "LIST")) {
		if v := clientField(line, "argv-mem"); v != "" && v != "0" {
			n++
		}
	}
	return n
}

// TestNeighbourClientPauseAll: CLIENT PAUSE 1500 ALL straight on Redis. A direct client's commands wait until the
// pause ends and get their replies then; through featcache the cached read is answered from memory, and the rest
// (writes, a transaction, a blocking pop) wait as the direct client's do and get the same replies, also when the
// transaction needs a connection featcache opens during the pause. Afterwards tracking works.
func TestNeighbourClientPauseAll(t *testing.T) {
	redis := redistest.Start(t)
	p := startProxyOn(t, redis, eventsConfig)
	primeNeighbour(t, p, "one")
	fs, rs := subscriberPair(t, p, "ch")
	fc, rc := p.dial(), redis.Dial()
	redis.Do("RPUSH", "u:lFp", "e")
	redis.Do("RPUSH", "u:lDp", "e")
	expectDo(t, redis.Dial(), "+OK\r\n", "CLIENT", "PAUSE", "1500", "ALL")
	// Clients that start with a transaction and a blocking pop need dedicated connections, which featcache opens
	// during the pause.
	var wg sync.WaitGroup
	for _, tag := range []string{"F", "D"} {
		c, c2 := p.dial(), p.dial()
		if tag == "D" {
			c, c2 = redis.Dial(), redis.Dial()
		}
		wg.Add(2)
		go func() {
			defer wg.Done()
			expectExec(t, c, "*1\r\n:1\r\n", []string{"INCR", "u:np" + tag})
		}()
		go func() {
			defer wg.Done()
			expectDo(t, c2, "*2\r\n"+bulk("u:l"+tag+"p")+bulk("e"), "BLPOP", "u:l"+tag+"p", "1")
		}()
	}
	compareMix(t, "during CLIENT PAUSE ALL", fc, rc)
	wg.Wait()
	expectMessage(t, p, "ch", "after-pause", fs, rs)
	expectFresh(t, p, "after CLIENT PAUSE ALL", "two")
}

// TestNeighbourReplicaOf: another client makes featcache's Redis a replica of another redis-server (REPLICAOF),
// then a primary again (REPLICAOF NO ONE). While it replicates, featcache serves the primary's data, never the
// values the replica dropped when it synchronised; writes get Redis's -READONLY verbatim; writes on the primary
// reach featcache's cache through the replica's invalidations; afterwards writes work again.
func TestNeighbourReplicaOf(t *testing.T) {
	redis := redistest.Start(t)
	primary := redistest.Start(t)
	p := startProxyOn(t, redis, eventsConfig)
	primeNeighbour(t, p, "one")
	primary.Do("SET", "c:1", "primary")
	admin := redis.Dial()
	fc, rc := p.dial(), redis.Dial()
	expectDo(t, admin, "+OK\r\n", "REPLICAOF", "127.0.0.1", strconv.Itoa(primary.Port()))
	t.Cleanup(func() { admin.Do("REPLICAOF", "NO", "ONE") })
	redistest.Eventually(t, 10*time.Second, "replication up", func() bool {
		return strings.Contains(string(admin.Do("INFO", "replication")), "master_link_status:up")
	})
	p.settle()
	compareWithRedis(t, fc, rc, []string{bulk("primary"), "-READONLY You can't write against a read only replica.\r\n"},
		[]string{"GET", "c:1"}, []string{"SET", "c:1", "x"})
	compareMix(t, "as a replica", fc, rc)
	primary.Do("SET", "c:1", "primary-2")
	redistest.Eventually(t, 5*time.Second, "the primary's write reaches featcache", func() bool {
		return p.do("GET", "c:1") == bulk("primary-2")
	})

	expectDo(t, admin, "+OK\r\n", "REPLICAOF", "NO", "ONE")
	compareMix(t, "a primary again", fc, rc)
	expectFresh(t, p, "a primary again", "two")
}

// readersOf runs clients readers at once, each on its own connection from dial, each reading every key of keys
// in turn rounds times, and returns the replies that were not the key's value (at most 10), and how many there were.
func readersOf(t *testing.T, dial func() *redistest.Conn, clients, rounds int, keys []string, value string) (bad []string, n int) {
	t.Helper()
	conns := make([]*redistest.Conn, clients)
	for i := range conns {
		conns[i] = dial()
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := 0; r < rounds; r++ {
				key := keys[(i+r)%len(keys)]
				if err := c.Send("GET", key); err != nil {
					mu.Lock()
					bad, n = append(bad, key+": "+err.Error()), n+1
					mu.Unlock()
					return
				}
				got, err := c.Read()
				if err == nil && string(got) == bulk(value) {
					continue
				}
				mu.Lock()
				if n++; len(bad) < 10 {
					bad = append(bad, fmt.Sprintf("%s: %.80q %v", key, got, err))
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	return bad, n
}

// bigValues starts featcache in front of redis and writes 300KB values under 4 cached ("c:") and 4 uncached ("u:")
// keys, for the tests of limits that many clients reading big values at once may pass. A long upstream.timeout:
// the fills of 300KB values, many at once on a loaded machine, must not time out.
func bigValues(t *testing.T, redis *redistest.Server) (p *testProxy, keys []string, value string) {
	p = startProxyOn(t, redis, "upstream: {timeout: 5s}\n"+eventsConfig)
	value = strings.Repeat("v", 300<<10)
	for i := 0; i < 4; i++ {
		keys = append(keys, "u:big"+strconv.Itoa(i), "c:big"+strconv.Itoa(i))
	}
	for _, k := range keys {
		redis.Do("SET", k, value)
	}
	return p, keys, value
}

// TestNeighbourOutputBufferLimit: another client sets client-output-buffer-limit "normal 1mb 1mb 0" and many
// clients read 300KB values at once. Each direct client's replies stay under the limit; featcache carries many
// clients' reads on each shared connection, whose replies together would pass it if Redis ran them in one go:
// featcache's clients must get their values as the direct clients do.
func TestNeighbourOutputBufferLimit(t *testing.T) {
	redis := redistest.Start(t)
	p, keys, value := bigValues(t, redis)
	expectDo(t, redis.Dial(), "+OK\r\n", "CONFIG", "SET", "client-output-buffer-limit", "normal 1mb 1mb 0")
	t.Cleanup(func() { redis.Do("CONFIG", "SET", "client-output-buffer-limit", "normal 0 0 0") })
	for _, who := range []string{"Redis", "featcache"} {
		dial := redis.Dial
		if who == "featcache" {
			dial = p.dial
		}
		start := time.Now()
		if bad, n := readersOf(t, dial, 24, 8, keys, value); n > 0 {
			t.Errorf("%s: %d of 192 reads failed: %q", who, n, bad)
		}
		log, _ := os.ReadFile(filepath.Join(redis.Dir(), "redis.log"))
		t.Logf("%s: 192 reads in %v; connections Redis has closed for the limit so far: %d", who,
			time.Since(start).Round(time.Millisecond), strings.Count(string(log), "output buffer limits"))
	}
}

// TestNeighbourACLPassword: featcache authenticates to Redis; another client changes that user's password (ACL
// SETUSER) and kills featcache's connections. featcache cannot reconnect: its entries are not served, clients get
// featcache's error naming WRONGPASS; once the password is restored, featcache recovers by itself.
func TestNeighbourACLPassword(t *testing.T) {
	redis := redistest.Start(t, "--requirepass", "first-secret")
	p := startProxyOn(t, redis, "upstream: {password: first-secret}\n"+eventsConfig)
	admin := redis.Dial()
	expectDo(t, admin, "+OK\r\n", "AUTH", "first-secret")
	expectDo(t, admin, "+OK\r\n", "SET", "c:1", "one")
	p.settle()
	fc := p.dial()
	expectDo(t, fc, bulk("one"), "GET", "c:1")
	expectDo(t, admin, "+OK\r\n", "ACL", "SETUSER", "default", "resetpass", ">second-secret")
	cutOff(t, p, admin)
	for _, args := range [][]string{{"GET", "c:1"}, {"SET", "u:w", "y"}, {"BLPOP", "u:l", "1"}} {
		got := string(fc.Do(args...))
		if !strings.HasPrefix(got, "-ERR featcache upstream unavailable: ") || !strings.Contains(got, "WRONGPASS") ||
			strings.Contains(got, "secret") {
			t.Errorf("%q with the password changed: got %q; want featcache's error naming WRONGPASS, not the password", args, got)
		}
	}
	expectDo(t, admin, "+OK\r\n", "ACL", "SETUSER", "default", "resetpass", ">first-secret")
	expectReconnected(t, fc)
	redistest.Eventually(t, 10*time.Second, "tracking up", func() bool { _, up := p.up.Tracking(); return up })
	expectDo(t, admin, "+OK\r\n", "SET", "c:1", "two")
	redistest.Eventually(t, 5*time.Second, "the write's invalidation applied", func() bool {
		return string(fc.Do("GET", "c:1")) == bulk("two")
	})
}

// TestNeighbourPubSubOutputLimit: another client sets client-output-buffer-limit "pubsub 1mb 1mb 0". Messages
// of 300KB published one at a time reach featcache's subscriber and a direct one alike; a burst that Redis
// queues past the limit at once (a script that publishes eight) closes both: featcache closes its client's connection, as Redis closes the direct
// subscriber's.
func TestNeighbourPubSubOutputLimit(t *testing.T) {
	redis := redistest.Start(t)
	p := startProxyOn(t, redis, eventsConfig)
	expectDo(t, redis.Dial(), "+OK\r\n", "CONFIG", "SET", "client-output-buffer-limit", "pubsub 1mb 1mb 0")
	fs, rs := subscriberPair(t, p, "big")
	msg := strings.Repeat("m", 300<<10)
	for i := 0; i < 8; i++ {
		expectMessage(t, p, "big", msg, fs, rs)
	}
	// One script publishes eight at once: Redis queues them all before it writes to the subscribers.
	burst := "for i = 1, 8 do redis.call('PUBLISH', 'big', ARGV[1]) end"
	expectDo(t, redis.Dial(), "$-1\r\n", "EVAL", burst, "0", msg)
	for _, who := range []struct {
		name string
		c    *redistest.Conn
	}{{"Redis", rs}, {"featcache", fs}} {
		for {
			f, err := who.c.ReadTimeout(5 * time.Second)
			if err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					t.Errorf("%s: subscriber still open after the burst", who.name)
				}
				break
			}
			if string(f) != "*3\r\n$7\r\nmessage\r\n"+bulk("big")+bulk(msg) {
				t.Errorf("%s: got %.60q; want a message or the close", who.name, f)
			}
		}
	}
	// featcache's subscribers that come after are served.
	fs, rs = subscriberPair(t, p, "big")
	expectMessage(t, p, "big", "small", fs, rs)
}

// TestNeighbourMaxMemoryClients: another client sets maxmemory-clients, and many clients read 300KB values at
// once. Redis evicts the clients that use the most memory, and featcache carries many clients' reads on each shared
// connection: where direct clients lose no read at a limit, featcache's clients must lose none either. 4mb evicts
// direct readers too, and how many reads each side loses there is logged, not compared: it moves with the load.
func TestNeighbourMaxMemoryClients(t *testing.T) {
	redis := redistest.Start(t)
	p, keys, value := bigValues(t, redis)
	t.Cleanup(func() { redis.Do("CONFIG", "SET", "maxmemory-clients", "0") })
	for _, limit := range []string{"4mb", "8mb"} {
		expectDo(t, redis.Dial(), "+OK\r\n", "CONFIG", "SET", "maxmemory-clients", limit)
		failed := map[string]int{}
		for _, who := range []string{"Redis", "featcache"} {
			dial := redis.Dial
			if who == "featcache" {
				dial = p.dial
			}
			before := infoField(string(redis.Do("INFO", "stats")), "evicted_clients")
			bad, n := readersOf(t, dial, 24, 8, keys, value)
			failed[who] = n
			t.Logf("maxmemory-clients %s, %s: %d of 192 reads failed %q; clients evicted %d", limit, who, n, bad,
				infoField(string(redis.Do("INFO", "stats")), "evicted_clients")-before)
		}
		if failed["Redis"] == 0 && failed["featcache"] > 0 {
			t.Errorf("maxmemory-clients %s: %d reads failed through featcache, none straight to Redis", limit,
				failed["featcache"])
		}
	}
}
