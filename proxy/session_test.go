package proxy

import (
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"featcache/internal/redistest"
	"featcache/internal/testkit"
)

// The tests of the pinned class (tx.go, pinned.go, blocking.go, pubsub.go): transactions, WATCH sessions, pub/sub
// and blocking commands, each against a real Redis, with replies compared to what Redis sends for the same bytes.

// ttlOnlyConfig caches every key for an hour without tracking: a value changed in Redis behind featcache's back
// stays stale in the cache, which shows whether a reply came from the cache or from Redis.
const ttlOnlyConfig = "upstream: {tracking: false}\n" + defaultTestConfig

const execAbort = "-EXECABORT Transaction discarded because of previous errors.\r\n"

func TestMultiExec(t *testing.T) {
	p := startProxy(t, ttlOnlyConfig)
	rc := redistest.Dial(t, p.redis.Addr())
	c := p.dial()

	// A key cached through featcache, then written in a transaction, is read back new.
	expectDo(t, c, "+OK\r\n", "SET", "tx:k", "old")
	expectDo(t, c, "$3\r\nold\r\n", "GET", "tx:k")
	expectDo(t, c, "$3\r\nold\r\n", "GET", "tx:k")
	expectExec(t, c, "*5\r\n+OK\r\n$3\r\nnew\r\n:1\r\n-WRONGTYPE Operation against a key holding the wrong kind of value\r\n+PONG\r\n",
		[]string{"SET", "tx:k", "new"}, []string{"GET", "tx:k"}, []string{"INCR", "tx:n"}, []string{"LPUSH", "tx:k", "x"},
		[]string{"PING"})
	expectDo(t, c, "$3\r\nnew\r\n", "GET", "tx:k")
	// Another client, which never took part, sees it too.
	expectDo(t, p.dial(), "$3\r\nnew\r\n", "GET", "tx:k")
	// Keys of every queued write are invalidated: MSET, DEL and a write whose keys come after an option.
	expectDo(t, c, "+OK\r\n", "MSET", "tx:a", "1", "tx:b", "1")
	expectDo(t, c, "*2\r\n$1\r\n1\r\n$1\r\n1\r\n", "MGET", "tx:a", "tx:b")
	expectExec(t, c, "*2\r\n+OK\r\n:1\r\n", []string{"MSET", "tx:a", "2", "tx:c", "2"}, []string{"DEL", "tx:b"})
	expectDo(t, c, "*3\r\n$1\r\n2\r\n$-1\r\n$1\r\n2\r\n", "MGET", "tx:a", "tx:b", "tx:c")
	expectDo(t, rc, "$1\r\n2\r\n", "GET", "tx:a")

	// The same transaction sent to Redis directly gives the same bytes.
	ref := redistest.Dial(t, redistest.Start(t).Addr())
	compareWithRedis(t, p.dial(), ref, nil,
		[]string{"SET", "cmp:k", "v"}, []string{"MULTI"}, []string{"SET", "cmp:k", "w"}, []string{"GET", "cmp:k"},
		[]string{"INCR", "cmp:k"}, []string{"HSET", "cmp:h", "f", "1"}, []string{"HGETALL", "cmp:h"},
		[]string{"ECHO", "e"}, []string{"EXEC"}, []string{"GET", "cmp:k"})
}

func TestMultiErrors(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	ref := redistest.Start(t)
	cases := []struct {
		name string
		cmds [][]string
		want []string
	}{
		{"unknown command", [][]string{{"MULTI"}, {"SET", "e:a", "1"}, {"FOO", "a"}, {"EXEC"}, {"GET", "e:a"}},
			[]string{"+OK\r\n", "+QUEUED\r\n", "-ERR unknown command 'FOO', with args beginning with: 'a' \r\n", execAbort, "$-1\r\n"}},
		{"wrong arity", [][]string{{"MULTI"}, {"SET", "e:a"}, {"SET", "e:a", "1"}, {"EXEC"}, {"GET", "e:a"}},
			[]string{"+OK\r\n", "-ERR wrong number of arguments for 'set' command\r\n", "+QUEUED\r\n", execAbort, "$-1\r\n"}},
		{"unknown subcommand", [][]string{{"MULTI"}, {"SET", "e:a", "1"}, {"object", "nosuchsub", "x"}, {"CLIENT", "NOSUCHSUB"}, {"EXEC"}, {"GET", "e:a"}},
			[]string{"+OK\r\n", "+QUEUED\r\n", "-ERR unknown subcommand 'nosuchsub'. Try OBJECT HELP.\r\n",
				"-ERR unknown subcommand 'NOSUCHSUB'. Try CLIENT HELP.\r\n", execAbort, "$-1\r\n"}},
		{"container without subcommand", [][]string{{"MULTI"}, {"OBJECT"}, {"EXEC"}},
			[]string{"+OK\r\n", "-ERR wrong number of arguments for 'object' command\r\n", execAbort}},
		{"known subcommands are queued", [][]string{{"SET", "e:o", "1"}, {"MULTI"}, {"OBJECT", "ENCODING", "e:o"}, {"XINFO", "HELP"}, {"EXEC"}},
			nil},
		{"discard", [][]string{{"MULTI"}, {"SET", "e:d", "1"}, {"DISCARD"}, {"GET", "e:d"}},
			[]string{"+OK\r\n", "+QUEUED\r\n", "+OK\r\n", "$-1\r\n"}},
		{"nested multi", [][]string{{"MULTI"}, {"SET", "e:n", "1"}, {"MULTI"}, {"EXEC"}, {"GET", "e:n"}},
			[]string{"+OK\r\n", "+QUEUED\r\n", "-ERR MULTI calls can not be nested\r\n", "*1\r\n+OK\r\n", "$1\r\n1\r\n"}},
		{"exec and discard without multi", [][]string{{"EXEC"}, {"DISCARD"}},
			[]string{"-ERR EXEC without MULTI\r\n", "-ERR DISCARD without MULTI\r\n"}},
		{"watch inside multi", [][]string{{"MULTI"}, {"WATCH", "e:w"}, {"SET", "e:w", "1"}, {"EXEC"}},
			[]string{"+OK\r\n", "-ERR WATCH inside MULTI is not allowed\r\n", "+QUEUED\r\n", "*1\r\n+OK\r\n"}},
		{"unwatch inside multi", [][]string{{"MULTI"}, {"UNWATCH"}, {"EXEC"}},
			[]string{"+OK\r\n", "+QUEUED\r\n", "*1\r\n+OK\r\n"}},
		{"exec after exec", [][]string{{"MULTI"}, {"EXEC"}, {"EXEC"}},
			[]string{"+OK\r\n", "*0\r\n", "-ERR EXEC without MULTI\r\n"}},
		{"not allowed in a transaction", [][]string{{"MULTI"}, {"WAIT", "0", "0"}, {"EXEC"}},
			[]string{"+OK\r\n", "+QUEUED\r\n", "*1\r\n:0\r\n"}},
		// A transaction-only pipeline in one write, as redis-py's pipeline(transaction=True) sends it.
		{"redis-py pipeline", [][]string{{"MULTI"}, {"SET", "e:p", "1"}, {"INCR", "e:p"}, {"GET", "e:p"}, {"EXEC"}},
			[]string{"+OK\r\n", "+QUEUED\r\n", "+QUEUED\r\n", "+QUEUED\r\n", "*3\r\n+OK\r\n:2\r\n$1\r\n2\r\n"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			compareWithRedis(t, p.dial(), redistest.Dial(t, ref.Addr()), tc.want, tc.cmds...)
		})
	}

	// featcache refuses what would change the connection a transaction runs on, and the transaction aborts
	// (Redis would queue SUBSCRIBE and CLIENT SETNAME).
	c := p.dial()
	expectDo(t, c, "+OK\r\n", "MULTI")
	expectDo(t, c, "+QUEUED\r\n", "SET", "e:s", "1")
	expectDo(t, c, "-ERR 'subscribe' inside MULTI is not supported by featcache\r\n", "SUBSCRIBE", "ch")
	expectDo(t, c, "-ERR 'client|setname' inside MULTI is not supported by featcache\r\n", "CLIENT", "SETNAME", "x")
	expectDo(t, c, execAbort, "EXEC")
	expectDo(t, c, "$-1\r\n", "GET", "e:s")
	expectDo(t, c, "+OK\r\n", "MULTI")
	expectDo(t, c, "-ERR command 'config|set' is disabled by featcache (commands.deny)\r\n", "CONFIG", "SET", "maxmemory", "1")
	expectDo(t, c, execAbort, "EXEC")
	expectDo(t, c, "+PONG\r\n", "PING")
}

func TestWatchSession(t *testing.T) {
	p := startProxy(t, ttlOnlyConfig)
	rc := redistest.Dial(t, p.redis.Addr())
	c := p.dial()

	// Make featcache's cached value of w stale.
	expectDo(t, rc, "+OK\r\n", "SET", "w", "1")
	expectDo(t, c, "$1\r\n1\r\n", "GET", "w")
	expectDo(t, rc, "+OK\r\n", "SET", "w", "2")
	expectDo(t, c, "$1\r\n1\r\n", "GET", "w")

	// After WATCH, reads come from Redis on the pinned connection.
	expectDo(t, c, "+OK\r\n", "WATCH", "w")
	expectDo(t, c, "$1\r\n2\r\n", "GET", "w")
	expectDo(t, c, "*1\r\n$1\r\n2\r\n", "MGET", "w")
	expectExec(t, c, "*2\r\n+OK\r\n$1\r\n3\r\n", []string{"SET", "w", "3"}, []string{"GET", "w"})
	expectDo(t, rc, "$1\r\n3\r\n", "GET", "w")
	// EXEC invalidated the transaction's keys and ended the session: the read is cached again, and new.
	expectDo(t, c, "$1\r\n3\r\n", "GET", "w")
	expectDo(t, rc, "+OK\r\n", "SET", "w", "4")
	expectDo(t, c, "$1\r\n3\r\n", "GET", "w")

	// A conflict: another connection changes w after WATCH.
	expectDo(t, c, "+OK\r\n", "WATCH", "w")
	expectDo(t, rc, "+OK\r\n", "SET", "w", "other")
	expectExec(t, c, "*-1\r\n", []string{"SET", "w", "mine"})
	expectDo(t, rc, "$5\r\nother\r\n", "GET", "w")
	expectDo(t, c, "$5\r\nother\r\n", "GET", "w")

	// UNWATCH ends the session: reads are served from the cache again (stale here, by design of the test).
	expectDo(t, rc, "+OK\r\n", "SET", "w", "behind")
	expectDo(t, c, "+OK\r\n", "WATCH", "w")
	expectDo(t, c, "$6\r\nbehind\r\n", "GET", "w")
	expectDo(t, c, "+OK\r\n", "UNWATCH")
	expectDo(t, c, "$5\r\nother\r\n", "GET", "w")
	expectDo(t, rc, "+OK\r\n", "SET", "w", "after-unwatch")
	expectExec(t, c, "*1\r\n+OK\r\n", []string{"SET", "w", "mine"})

	// DISCARD inside a watched transaction ends it too.
	expectDo(t, c, "+OK\r\n", "WATCH", "w")
	expectDo(t, c, "+OK\r\n", "MULTI")
	expectDo(t, c, "+QUEUED\r\n", "SET", "w", "discarded")
	expectDo(t, c, "+OK\r\n", "DISCARD")
	expectDo(t, rc, "$4\r\nmine\r\n", "GET", "w")
	expectDo(t, rc, "+OK\r\n", "SET", "w", "x")
	expectExec(t, c, "*1\r\n+OK\r\n", []string{"SET", "w", "y"})
}

// TestWatchSessionAsRedis runs WATCH sequences on featcache and on a Redis of its own and compares every reply.
func TestWatchSessionAsRedis(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	ref := redistest.Start(t)
	cases := []struct {
		name  string
		cmds  [][]string
		other []string // run on another direct connection to each Redis after cmds[split-1]
		split int
		rest  [][]string
	}{
		{name: "exec without multi keeps the watch",
			cmds:  [][]string{{"WATCH", "s:a"}, {"EXEC"}},
			other: []string{"SET", "s:a", "x"},
			rest:  [][]string{{"MULTI"}, {"SET", "s:a", "mine"}, {"EXEC"}, {"GET", "s:a"}}},
		{name: "discard without multi keeps the watch",
			cmds:  [][]string{{"WATCH", "s:b"}, {"DISCARD"}},
			other: []string{"SET", "s:b", "x"},
			rest:  [][]string{{"MULTI"}, {"SET", "s:b", "mine"}, {"EXEC"}, {"GET", "s:b"}}},
		{name: "a second watch adds keys",
			cmds:  [][]string{{"WATCH", "s:c"}, {"WATCH", "s:d"}},
			other: []string{"SET", "s:c", "x"},
			rest:  [][]string{{"MULTI"}, {"SET", "s:d", "mine"}, {"EXEC"}, {"GET", "s:d"}}},
		{name: "errors inside a watched transaction abort it",
			cmds:  [][]string{{"WATCH", "s:e"}, {"MULTI"}, {"SET", "s:e", "1"}, {"FOO"}, {"SET", "s:e"}},
			other: []string{"PING"},
			rest:  [][]string{{"EXEC"}, {"GET", "s:e"}, {"MULTI"}, {"SET", "s:e", "2"}, {"EXEC"}}},
		{name: "multi nested and watch inside a watched transaction",
			cmds:  [][]string{{"WATCH", "s:f"}, {"MULTI"}, {"MULTI"}, {"WATCH", "s:f"}, {"INCR", "s:f"}},
			other: []string{"PING"},
			rest:  [][]string{{"EXEC"}, {"GET", "s:f"}}},
		{name: "local commands in a session",
			cmds:  [][]string{{"WATCH", "s:g"}, {"PING"}, {"ECHO", "e"}, {"CLIENT", "SETNAME", "n"}, {"CLIENT", "GETNAME"}},
			other: []string{"SET", "s:g", "x"},
			rest:  [][]string{{"MULTI"}, {"PING"}, {"ECHO", "f"}, {"SET", "s:g", "mine"}, {"EXEC"}, {"GET", "s:g"}}},
		{name: "unwatch inside a watched transaction is queued",
			cmds:  [][]string{{"WATCH", "s:h"}, {"MULTI"}, {"UNWATCH"}, {"SET", "s:h", "1"}, {"EXEC"}},
			other: []string{"SET", "s:h", "x"},
			rest:  [][]string{{"MULTI"}, {"SET", "s:h", "2"}, {"EXEC"}, {"GET", "s:h"}}},
		{name: "blocking command in a watched transaction does not block",
			cmds:  [][]string{{"WATCH", "s:i"}, {"MULTI"}, {"BLPOP", "s:q", "0"}, {"SET", "s:i", "1"}, {"EXEC"}},
			other: []string{"PING"},
			rest:  [][]string{{"GET", "s:i"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fc, rc := p.dial(), redistest.Dial(t, ref.Addr())
			compareWithRedis(t, fc, rc, nil, tc.cmds...)
			got, want := p.redis.Do(tc.other...), ref.Do(tc.other...)
			if string(got) != string(want) {
				t.Fatalf("setup %q: %q and %q", tc.other, got, want)
			}
			compareWithRedis(t, fc, rc, nil, tc.rest...)
		})
	}
}

func TestWatchRefusedCommands(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	rc := redistest.Dial(t, p.redis.Addr())
	c := p.dial()
	expectDo(t, c, "+OK\r\n", "WATCH", "r:w")
	// Denied and refused commands get the same errors as outside a session, and the session goes on.
	expectDo(t, c, "-ERR command 'config|set' is disabled by featcache (commands.deny)\r\n", "CONFIG", "SET", "maxmemory", "1")
	expectDo(t, c, "-ERR 'script|debug' is not supported by featcache: it would change a shared upstream connection\r\n", "SCRIPT", "DEBUG", "yes")
	expectDo(t, c, "-ERR SUBSCRIBE while WATCH is active is not supported by featcache\r\n", "SUBSCRIBE", "ch")
	expectDo(t, c, "+PONG\r\n", "PING")
	expectDo(t, rc, "+OK\r\n", "SET", "r:w", "changed")
	expectExec(t, c, "*-1\r\n", []string{"SET", "r:w", "mine"})

	// Inside a watched transaction they abort it, as they do in a transaction without WATCH.
	for _, refused := range [][]string{
		{"CONFIG", "SET", "maxmemory", "1"}, {"SCRIPT", "DEBUG", "yes"}, {"CLIENT", "SETNAME", "n"}, {"CACHE", "STATS"},
	} {
		expectDo(t, c, "+OK\r\n", "WATCH", "r:w")
		expectDo(t, c, "+OK\r\n", "MULTI")
		expectDo(t, c, "+QUEUED\r\n", "SET", "r:w", "refused")
		if got := string(c.Do(refused...)); !strings.HasPrefix(got, "-ERR ") {
			t.Errorf("%q inside a watched transaction: got %q; want an error", refused, got)
		}
		expectDo(t, c, execAbort, "EXEC")
		expectDo(t, rc, "$7\r\nchanged\r\n", "GET", "r:w")
		// The session ended with the EXEC: nothing watched any more.
		expectDo(t, rc, "+OK\r\n", "SET", "r:other", "1")
		expectExec(t, c, "*1\r\n$1\r\n1\r\n", []string{"GET", "r:other"})
	}
}

// TestWatchCycles runs many WATCH/MULTI/EXEC sessions on many clients: pinned connections go back and are
// reused, so Redis's connection count stays small, and no session inherits another's watched keys.
func TestWatchCycles(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	rc := redistest.Dial(t, p.redis.Addr())
	clients := make([]*redistest.Conn, 10)
	for i := range clients {
		clients[i] = p.dial()
	}
	for i := 0; i < 200; i++ {
		c := clients[i%len(clients)]
		key := "cycle:" + strconv.Itoa(i%7)
		expectDo(t, c, "+OK\r\n", "WATCH", key)
		if i%3 == 0 {
			// A session that ends with UNWATCH, and one that leaves a watched key behind on a discarded EXEC.
			expectDo(t, c, "+OK\r\n", "UNWATCH")
			expectDo(t, c, "+OK\r\n", "WATCH", "cycle:stale")
		}
		expectDo(t, c, "+OK\r\n", "MULTI")
		expectDo(t, c, "+QUEUED\r\n", "INCR", "cycle:count")
		expectDo(t, c, "+QUEUED\r\n", "INCR", key)
		got := string(c.Do("EXEC"))
		if !strings.HasPrefix(got, "*2\r\n:"+strconv.Itoa(i+1)+"\r\n:") {
			t.Fatalf("cycle %d: EXEC got %q", i, got)
		}
		if i%3 == 0 {
			// Change the key the session watched: a later session must not see it.
			expectDo(t, rc, ":"+strconv.Itoa(i/3+1)+"\r\n", "INCR", "cycle:stale")
		}
	}
	connected := regexp.MustCompile(`connected_clients:([0-9]+)`).FindStringSubmatch(string(rc.Do("INFO", "clients")))
	if connected == nil {
		t.Fatalf("INFO clients: no connected_clients")
	}
	if n, _ := strconv.Atoi(connected[1]); n > 20 {
		t.Errorf("Redis has %d connections after 200 sessions of 10 clients; want them reused", n)
	}
}

func TestPubSub(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	rc := redistest.Dial(t, p.redis.Addr())
	sub, pub := p.dial(), p.dial()

	writeRaw(t, sub, encodePipeline([]string{"SUBSCRIBE", "a", "b"}))
	expectRead(t, sub, "*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n")
	expectRead(t, sub, "*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n")
	expectDo(t, pub, ":1\r\n", "PUBLISH", "a", "hello")
	expectRead(t, sub, "*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$5\r\nhello\r\n")
	expectDo(t, pub, ":1\r\n", "PUBLISH", "b", "")
	expectRead(t, sub, "*3\r\n$7\r\nmessage\r\n$1\r\nb\r\n$0\r\n\r\n")

	expectDo(t, sub, "*3\r\n$10\r\npsubscribe\r\n$2\r\np*\r\n:3\r\n", "PSUBSCRIBE", "p*")
	expectDo(t, pub, ":1\r\n", "PUBLISH", "pq", "x")
	expectRead(t, sub, "*4\r\n$8\r\npmessage\r\n$2\r\np*\r\n$2\r\npq\r\n$1\r\nx\r\n")
	expectDo(t, sub, "*2\r\n$4\r\npong\r\n$0\r\n\r\n", "PING")
	expectDo(t, sub, "*2\r\n$4\r\npong\r\n$1\r\nm\r\n", "PING", "m")
	expectDo(t, sub, "-ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n", "GET", "k")
	expectDo(t, sub, "-ERR Can't execute 'client|setname': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n", "CLIENT", "SETNAME", "x")

	// Many messages in a burst arrive whole and in order.
	var want strings.Builder
	var burst [][]string
	for i := 0; i < 200; i++ {
		msg := strings.Repeat("m", i)
		burst = append(burst, []string{"PUBLISH", "a", msg})
		want.WriteString("*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$" + strconv.Itoa(len(msg)) + "\r\n" + msg + "\r\n")
	}
	writeRaw(t, pub, encodePipeline(burst...))
	readFrames(t, pub, len(burst))
	if got := strings.Join(readFrames(t, sub, len(burst)), ""); got != want.String() {
		t.Errorf("burst: got %d bytes; want %d, the messages in order", len(got), want.Len())
	}

	// Unsubscribing from everything returns the connection to normal: a GET goes through the cache path.
	expectDo(t, rc, "+OK\r\n", "SET", "k", "v")
	writeRaw(t, sub, encodePipeline([]string{"UNSUBSCRIBE", "a", "b"}, []string{"PUNSUBSCRIBE"}))
	expectRead(t, sub, "*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:2\r\n")
	expectRead(t, sub, "*3\r\n$11\r\nunsubscribe\r\n$1\r\nb\r\n:1\r\n")
	expectRead(t, sub, "*3\r\n$12\r\npunsubscribe\r\n$2\r\np*\r\n:0\r\n")
	reads := p.srv.Stats().Misses.Load() + p.srv.Stats().Hits.Load()
	expectDo(t, sub, "$1\r\nv\r\n", "GET", "k")
	if got := p.srv.Stats().Misses.Load() + p.srv.Stats().Hits.Load() - reads; got != 1 {
		t.Errorf("GET after UNSUBSCRIBE: %d cached reads; want 1", got)
	}
	expectDo(t, sub, "+PONG\r\n", "PING")
	expectDo(t, pub, ":0\r\n", "PUBLISH", "a", "nobody")

	// Subscribing again works, and UNSUBSCRIBE without arguments ends the mode.
	expectDo(t, sub, "*3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n", "SUBSCRIBE", "c")
	expectDo(t, sub, "*3\r\n$11\r\nunsubscribe\r\n$1\r\nc\r\n:0\r\n", "UNSUBSCRIBE")
	expectDo(t, sub, "$1\r\nv\r\n", "GET", "k")
	// UNSUBSCRIBE while not subscribed is answered as Redis does, and leaves the connection normal.
	expectDo(t, sub, "*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n", "UNSUBSCRIBE")
	expectDo(t, sub, "+PONG\r\n", "PING")
	expectDo(t, redistest.Dial(t, p.redis.Addr()), "*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n", "UNSUBSCRIBE")

	// A pipeline that subscribes after other commands gets its replies in order.
	c := p.dial()
	writeRaw(t, c, encodePipeline([]string{"SET", "k2", "1"}, []string{"GET", "k2"}, []string{"SUBSCRIBE", "d"}, []string{"PING"}))
	for _, want := range []string{"+OK\r\n", "$1\r\n1\r\n", "*3\r\n$9\r\nsubscribe\r\n$1\r\nd\r\n:1\r\n", "*2\r\n$4\r\npong\r\n$0\r\n\r\n"} {
		expectRead(t, c, want)
	}
	// RESET while subscribed.
	expectDo(t, c, "+RESET\r\n", "RESET")
	expectDo(t, c, "$1\r\nv\r\n", "GET", "k")
	redistest.Eventually(t, 5*time.Second, "subscriber of d gone", func() bool {
		return string(rc.Do("PUBSUB", "NUMSUB", "d")) == "*2\r\n$1\r\nd\r\n:0\r\n"
	})
}

func TestPubSubDisconnect(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	rc := redistest.Dial(t, p.redis.Addr())
	subscribers := func() int {
		n := 0
		for _, line := range clientList(t, rc) {
			if regexp.MustCompile(` (p?sub)=[1-9]`).MatchString(line) {
				n++
			}
		}
		return n
	}
	for _, cmd := range [][]string{{"SUBSCRIBE", "gone"}, {"PSUBSCRIBE", "gone*"}} {
		c := p.dial()
		if got := string(c.Do(cmd...)); !strings.HasSuffix(got, ":1\r\n") {
			t.Fatalf("%q: got %q", cmd, got)
		}
		if n := subscribers(); n != 1 {
			t.Fatalf("Redis shows %d subscribed connections; want 1", n)
		}
		c.Close()
		redistest.Eventually(t, 5*time.Second, "the dedicated connection is closed when the client leaves", func() bool {
			return subscribers() == 0
		})
	}
	expectDo(t, rc, ":0\r\n", "PUBLISH", "gone", "x")
}

// TestPubSubUpstreamLost: when a subscriber's upstream connection is lost (here CLIENT KILL; a Redis restart or a
// Sentinel failover alike), featcache closes the client's connection, as Redis's own loss would, so that the
// client reconnects and subscribes again instead of waiting for messages that will never come. A client that has
// left subscribed mode keeps its connection.
func TestPubSubUpstreamLost(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	rc := redistest.Dial(t, p.redis.Addr())
	sub, left := p.dial(), p.dial()
	expectDo(t, sub, "*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n", "SUBSCRIBE", "ch")
	expectDo(t, left, "*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n", "SUBSCRIBE", "ch")
	expectDo(t, left, "*3\r\n$11\r\nunsubscribe\r\n$2\r\nch\r\n:0\r\n", "UNSUBSCRIBE", "ch")
	if got := string(rc.Do("CLIENT", "KILL", "TYPE", "pubsub")); got != ":1\r\n" {
		t.Fatalf("CLIENT KILL TYPE pubsub: %q; want the one subscribed connection", got)
	}
	if got, err := sub.ReadTimeout(5 * time.Second); !closedCleanly(err) {
		t.Fatalf("the subscriber got %q, %v; want its connection closed", got, err)
	}
	expectDo(t, left, "+PONG\r\n", "PING")
	expectDo(t, p.dial(), "*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n", "SUBSCRIBE", "ch")
}

// TestPubSubAfterReplyOff subscribes while replies are off after other replies in the same write: those replies
// are sent once.
func TestPubSubAfterReplyOff(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	c := p.dial()
	writeRaw(t, c, encodePipeline([]string{"PING", "before"}, []string{"CLIENT", "REPLY", "OFF"}, []string{"SUBSCRIBE", "off"}))
	expectRead(t, c, "$6\r\nbefore\r\n")
	// featcache relays the confirmation from the subscription's own connection (Redis 7.2 does too; 7.0 drops it).
	expectRead(t, c, "*3\r\n$9\r\nsubscribe\r\n$3\r\noff\r\n:1\r\n")
	expectDo(t, c, "*3\r\n$11\r\nunsubscribe\r\n$3\r\noff\r\n:0\r\n", "UNSUBSCRIBE")
	expectPipeline(t, c, "+OK\r\n", []string{"PING"}, []string{"CLIENT", "REPLY", "ON"})
}

// blockingConfig caches every key, with an upstream timeout (100ms) shorter than the blocking commands' own
// timeouts: they must wait as Redis says, not as upstream.timeout says.
const blockingConfig = "upstream: {timeout: 100ms}\n" + defaultTestConfig

// blockedOn reports how many connections Redis shows blocked in cmd.
func blockedOn(t *testing.T, rc *redistest.Conn, cmd string) int {
	n := 0
	for _, line := range clientList(t, rc) {
		if strings.Contains(line, " flags=b ") && strings.Contains(line, " cmd="+cmd+" ") {
			n++
		}
	}
	return n
}

// blockInBLPOP sends BLPOP key 0 on c and waits until Redis, asked on rc, shows one client blocked in BLPOP.
func blockInBLPOP(t *testing.T, c, rc *redistest.Conn, key string) {
	t.Helper()
	if err := c.Send("BLPOP", key, "0"); err != nil {
		t.Fatal(err)
	}
	redistest.Eventually(t, 5*time.Second, "BLPOP blocked in Redis", func() bool { return blockedOn(t, rc, "blpop") == 1 })
}

func TestBlockingWaitsPastTimeout(t *testing.T) {
	p := startProxy(t, blockingConfig)
	rc := redistest.Dial(t, p.redis.Addr())
	c := p.dial()
	start := time.Now()
	blockInBLPOP(t, c, rc, "bq")
	<-time.After(400*time.Millisecond - time.Since(start)) // four times upstream.timeout before the push
	pushed := time.Now()
	expectDo(t, p.dial(), ":1\r\n", "RPUSH", "bq", "x")
	expectRead(t, c, "*2\r\n$2\r\nbq\r\n$1\r\nx\r\n")
	if waited := pushed.Sub(start); waited < 400*time.Millisecond {
		t.Errorf("BLPOP answered after %v", waited)
	}
	expectDo(t, c, "+PONG\r\n", "PING")
}

func TestBlockingTimeouts(t *testing.T) {
	p := startProxy(t, blockingConfig)
	ref := redistest.Start(t)
	rc := redistest.Dial(t, ref.Addr())
	c := p.dial()
	cases := []struct {
		args []string
		want string
		wait time.Duration
	}{
		{[]string{"BLPOP", "tq", "0.2"}, "*-1\r\n", 200 * time.Millisecond},
		{[]string{"BRPOP", "tq", "tq2", "0.2"}, "*-1\r\n", 200 * time.Millisecond},
		// Redis 7.0 sends a null array, not a null bulk, when BLMOVE and BRPOPLPUSH time out.
		{[]string{"BLMOVE", "tq", "tq2", "LEFT", "RIGHT", "0.1"}, "*-1\r\n", 100 * time.Millisecond},
		{[]string{"BRPOPLPUSH", "tq", "tq2", "0.1"}, "*-1\r\n", 100 * time.Millisecond},
		{[]string{"BZPOPMIN", "tz", "0.1"}, "*-1\r\n", 100 * time.Millisecond},
		{[]string{"BLMPOP", "0.1", "1", "tq", "LEFT"}, "*-1\r\n", 100 * time.Millisecond},
		{[]string{"XREAD", "BLOCK", "100", "STREAMS", "ts", "$"}, "*-1\r\n", 100 * time.Millisecond},
		{[]string{"XREAD", "COUNT", "1", "BLOCK", "100", "STREAMS", "ts", "0"}, "*-1\r\n", 100 * time.Millisecond},
		// Not blocking.
		{[]string{"XREAD", "STREAMS", "ts", "0"}, "*-1\r\n", 0},
		{[]string{"BLPOP", "tq", "x"}, "-ERR timeout is not a float or out of range\r\n", 0},
		{[]string{"BLPOP", "tq", "-1"}, "-ERR timeout is negative\r\n", 0},
	}
	for _, tc := range cases {
		start := time.Now()
		expectDo(t, c, tc.want, tc.args...)
		if took := time.Since(start); took < tc.wait || took > tc.wait+2*time.Second {
			t.Errorf("%q: answered after %v; want about %v", tc.args, took, tc.wait)
		}
		expectDo(t, rc, tc.want, tc.args...)
	}
	// With data, the same commands answer at once, as Redis does.
	data := [][]string{
		{"RPUSH", "dq", "a", "b", "c"}, {"ZADD", "dz", "1", "m"}, {"XADD", "ds", "1-1", "f", "v"},
		{"BLPOP", "dq", "0"}, {"BLMOVE", "dq", "dq2", "LEFT", "RIGHT", "0"}, {"BRPOPLPUSH", "dq", "dq2", "0"},
		{"BZPOPMIN", "dz", "0"}, {"XREAD", "BLOCK", "0", "STREAMS", "ds", "0"}, {"XREAD", "STREAMS", "ds", "0"},
		{"LRANGE", "dq2", "0", "-1"},
	}
	compareWithRedis(t, p.dial(), rc, nil, data...)
}

func TestBlockingPipelineOrder(t *testing.T) {
	p := startProxy(t, blockingConfig)
	rc := redistest.Dial(t, redistest.Start(t).Addr())
	compareWithRedis(t, p.dial(), rc, nil,
		[]string{"SET", "o:a", "1"}, []string{"BLPOP", "o:q", "0.1"}, []string{"GET", "o:a"}, []string{"PING"},
		[]string{"RPUSH", "o:q2", "v"}, []string{"BLPOP", "o:q2", "0"}, []string{"ECHO", "after"},
		[]string{"INCR", "o:a"}, []string{"XREAD", "BLOCK", "50", "STREAMS", "o:s", "$"}, []string{"GET", "o:a"},
	)
}

func TestBlockingClientLeaves(t *testing.T) {
	p := startProxy(t, blockingConfig)
	rc := redistest.Dial(t, p.redis.Addr())
	for _, cmd := range [][]string{
		{"BLPOP", "leave:q", "0"},
		{"XREAD", "BLOCK", "0", "STREAMS", "leave:s", "$"},
	} {
		name := strings.ToLower(cmd[0])
		c := p.dial()
		if err := c.Send(cmd...); err != nil {
			t.Fatal(err)
		}
		redistest.Eventually(t, 5*time.Second, name+" blocked in Redis", func() bool { return blockedOn(t, rc, name) == 1 })
		c.Close()
		redistest.Eventually(t, 5*time.Second, "the blocked upstream connection is released when the client leaves", func() bool {
			return blockedOn(t, rc, name) == 0
		})
	}
	// Nobody took the element pushed afterwards.
	expectDo(t, rc, ":1\r\n", "RPUSH", "leave:q", "x")
	expectDo(t, rc, ":1\r\n", "LLEN", "leave:q")

	// The same in a WATCH session, where the blocking command runs on the pinned connection.
	c := p.dial()
	expectDo(t, c, "+OK\r\n", "WATCH", "leave:w")
	blockInBLPOP(t, c, rc, "leave:q2")
	c.Close()
	redistest.Eventually(t, 5*time.Second, "the pinned connection is closed when the client leaves", func() bool {
		return blockedOn(t, rc, "blpop") == 0
	})
}

func TestBlockingConcurrentClients(t *testing.T) {
	p := startProxy(t, blockingConfig)
	const n = 20
	var wg sync.WaitGroup
	replies := make([]string, n)
	for i := 0; i < n; i++ {
		c := p.dial()
		if err := c.Send("BLPOP", "cc:q"+strconv.Itoa(i), "0"); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			r, _ := c.ReadTimeout(10 * time.Second)
			replies[i] = string(r)
		}(i)
	}
	rc := redistest.Dial(t, p.redis.Addr())
	redistest.Eventually(t, 5*time.Second, "all blocked", func() bool { return blockedOn(t, rc, "blpop") == n })
	// Shared-connection traffic is not held up by the blocked clients.
	expectDo(t, p.dial(), "+OK\r\n", "SET", "cc:k", "v")
	for i := 0; i < n; i++ {
		expectDo(t, rc, ":1\r\n", "RPUSH", "cc:q"+strconv.Itoa(i), strconv.Itoa(i))
	}
	wg.Wait()
	for i, r := range replies {
		q, v := "cc:q"+strconv.Itoa(i), strconv.Itoa(i)
		if want := "*2\r\n$" + strconv.Itoa(len(q)) + "\r\n" + q + "\r\n$" + strconv.Itoa(len(v)) + "\r\n" + v + "\r\n"; r != want {
			t.Errorf("client %d: got %q; want %q", i, r, want)
		}
	}
}

// TestPubSubResetUnderTraffic resets subscribed clients while messages keep arriving: nothing of the subscription
// may follow +RESET (or QUIT's +OK), as with Redis.
func TestPubSubResetUnderTraffic(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	var loops testkit.Loops
	pub := redistest.Dial(t, p.redis.Addr())
	batch := encodePipeline([]string{"PUBLISH", "busy", "m"}, []string{"PUBLISH", "busy", "m"}, []string{"PUBLISH", "busy", "m"})
	loops.Go(func(int) bool {
		if _, err := pub.NetConn().Write(batch); err != nil {
			return false
		}
		for i := 0; i < 3; i++ {
			if _, err := pub.Read(); err != nil {
				return false
			}
		}
		return true
	})
	defer loops.Stop()
	const message = "*3\r\n$7\r\nmessage\r\n$4\r\nbusy\r\n$1\r\nm\r\n"
	for i := 0; i < 200; i++ {
		c := p.dial()
		expectDo(t, c, "*3\r\n$9\r\nsubscribe\r\n$4\r\nbusy\r\n:1\r\n", "SUBSCRIBE", "busy")
		expectRead(t, c, message)
		end, final := []string{"RESET"}, "+RESET\r\n"
		if i%2 == 1 {
			end, final = []string{"QUIT"}, "+OK\r\n"
		}
		writeRaw(t, c, encodePipeline(end, []string{"PING", "after"}))
		for {
			f, err := c.Read()
			if err != nil {
				t.Fatalf("round %d: %v before %q", i, err, final)
			}
			if string(f) == final {
				break
			}
			if string(f) != message {
				t.Fatalf("round %d: got %q; want a message or %q", i, f, final)
			}
		}
		if i%2 == 1 {
			expectClosed(t, c, 2*time.Second)
			continue
		}
		expectRead(t, c, "$5\r\nafter\r\n")
	}
}

// TestBlockingTimeoutLowHz runs short blocking timeouts against a Redis whose timer ticks twice a second: Redis
// answers up to half a second after the timeout, and the client must get Redis's nil, not a featcache timeout.
func TestBlockingTimeoutLowHz(t *testing.T) {
	p := startProxyOn(t, redistest.Start(t, "--hz", "2"), blockingConfig)
	c := p.dial()
	for _, args := range [][]string{
		{"BLPOP", "hz:q", "hz:q2", "0.05"}, {"BLMOVE", "hz:q", "hz:q2", "LEFT", "LEFT", "0.05"}, {"BLPOP", "hz:q", "0.05"},
	} {
		expectDo(t, c, "*-1\r\n", args...)
	}
}

// TestBlockingAbandonedPop is a worker that gives up on BLPOP 0 and disconnects: an item pushed soon afterwards
// must stay in the list for the next worker, as with Redis, which drops a blocked client as soon as it leaves.
func TestBlockingAbandonedPop(t *testing.T) {
	p := startProxy(t, blockingConfig)
	rc := redistest.Dial(t, p.redis.Addr())
	for i, watch := range []bool{false, true} {
		q := "abandoned:q" + strconv.Itoa(i)
		worker := p.dial()
		if watch {
			expectDo(t, worker, "+OK\r\n", "WATCH", "abandoned:w")
		}
		blockInBLPOP(t, worker, rc, q)
		worker.Close()
		<-time.After(50 * time.Millisecond) // the push comes 50 ms after the worker left
		expectDo(t, p.dial(), ":1\r\n", "RPUSH", q, "job")
		expectDo(t, rc, "*1\r\n$3\r\njob\r\n", "LRANGE", q, "0", "-1")
		expectDo(t, p.dial(), "*2\r\n$"+strconv.Itoa(len(q))+"\r\n"+q+"\r\n$3\r\njob\r\n", "BLPOP", q, "1")
	}
}
