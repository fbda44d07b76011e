package proxy

import (
	"context"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"featcache/internal/redistest"
)

// Transactions as Redis runs them (tx.go): every reply of a transaction is Redis's own, whether the
// transaction arrives whole (pipelined: contiguous on a shared connection) or command by command (interactive:
// pinned to a dedicated connection from MULTI on). Each test sends the same commands to featcache and to a Redis of
// its own and compares the raw replies.

// txStep is one step of an interactive comparison: a command sent to featcache and to the reference Redis, or an
// action applied to both Redis servers between commands.
type txStep struct {
	cmd    []string
	action func(t *testing.T, redis *redistest.Server)
}

// compareInteractive sends each command on its own, waiting for its reply before the next, to featcache and to
// ref, and compares the replies byte for byte; actions run on featcache's Redis and on ref in between.
func compareInteractive(t *testing.T, p *testProxy, ref *redistest.Server, steps ...txStep) {
	t.Helper()
	fc, rc := p.dial(), redistest.Dial(t, ref.Addr())
	for _, s := range steps {
		if s.action != nil {
			s.action(t, p.redis)
			s.action(t, ref)
			continue
		}
		got, want := string(fc.Do(s.cmd...)), string(rc.Do(s.cmd...))
		if got != want {
			t.Errorf("%q: got %q; want %q (Redis)", s.cmd, got, want)
		}
	}
}

func cmdStep(args ...string) txStep { return txStep{cmd: args} }

// oomBegins makes Redis run out of memory for real: maxmemory a little above what it uses, then values written
// until Redis refuses one with -OOM. The limit is then held just under what Redis uses, so that the state does not
// flicker as client buffers come and go.
func oomBegins(t *testing.T, redis *redistest.Server) {
	t.Helper()
	c := redis.Dial()
	defer c.Close()
	used := infoField(string(c.Do("INFO", "memory")), "used_memory")
	if used <= 0 {
		t.Fatalf("INFO memory: no used_memory")
	}
	if got := string(c.Do("CONFIG", "SET", "maxmemory", strconv.FormatInt(used+2<<20, 10))); got != "+OK\r\n" {
		t.Fatalf("CONFIG SET maxmemory: %q", got)
	}
	value := strings.Repeat("f", 64<<10)
	for i := 0; ; i++ {
		reply := string(c.Do("SET", "fill:"+strconv.Itoa(i), value))
		if strings.HasPrefix(reply, "-OOM ") {
			used = infoField(string(c.Do("INFO", "memory")), "used_memory")
			if got := string(c.Do("CONFIG", "SET", "maxmemory", strconv.FormatInt(used-512<<10, 10))); got != "+OK\r\n" {
				t.Fatalf("CONFIG SET maxmemory: %q", got)
			}
			return
		}
		if reply != "+OK\r\n" || i > 1000 {
			t.Fatalf("filling Redis up: SET %d answered %q", i, reply)
		}
	}
}

// oomEnds lifts the memory limit again.
func oomEnds(t *testing.T, redis *redistest.Server) {
	t.Helper()
	if got := string(redis.Do("CONFIG", "SET", "maxmemory", "0")); got != "+OK\r\n" {
		t.Fatalf("CONFIG SET maxmemory 0: %q", got)
	}
}

// TestTransactionOOMInteractive: an interactive MULTI gets Redis's queue-time errors at queue time, as from
// Redis: the command refused for memory answers -OOM when it is queued, and EXEC aborts with nothing applied.
func TestTransactionOOMInteractive(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	ref := redistest.Start(t)
	begin, end := txStep{action: oomBegins}, txStep{action: oomEnds}
	compareInteractive(t, p, ref,
		cmdStep("SET", "a", "old"), cmdStep("GET", "a"), cmdStep("GET", "a"),
		cmdStep("MULTI"),
		cmdStep("SET", "a", "1"),
		begin,
		cmdStep("LPUSH", "l", "x"),
		end,
		cmdStep("SET", "b", "1"),
		cmdStep("EXEC"),
		cmdStep("GET", "a"), cmdStep("GET", "b"), cmdStep("LLEN", "l"),
		// A read-only transaction whose EXEC comes once Redis is out of memory runs (featcache used to send the
		// whole transaction at EXEC, and Redis refused its reads then).
		cmdStep("MULTI"), cmdStep("GET", "a"), cmdStep("EXISTS", "b"), cmdStep("PING"),
		begin,
		cmdStep("EXEC"),
		// Queued while out of memory, reads too are refused at queue time (Redis 7.0), and EXEC aborts.
		cmdStep("MULTI"), cmdStep("GET", "a"), cmdStep("SET", "a", "2"), cmdStep("EXEC"),
		// A transaction whose writes were queued before: EXEC is refused for memory, as from Redis.
		end,
		cmdStep("MULTI"), cmdStep("SET", "a", "3"),
		begin,
		cmdStep("EXEC"),
		end,
		cmdStep("GET", "a"),
	)
}

// TestTransactionOOMPipelined: the same under a MULTI ... EXEC sent in one write, which travels contiguous on a
// shared connection: every reply is Redis's.
func TestTransactionOOMPipelined(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	ref := redistest.Start(t)
	fc, rc := p.dial(), redistest.Dial(t, ref.Addr())
	compareWithRedis(t, fc, rc, nil, []string{"SET", "a", "old"}, []string{"GET", "a"}, []string{"GET", "a"})
	oomBegins(t, p.redis)
	oomBegins(t, ref)
	const oom = "-OOM command not allowed when used memory > 'maxmemory'.\r\n"
	compareWithRedis(t, fc, rc, []string{"+OK\r\n", oom, oom, "-EXECABORT Transaction discarded because of previous errors.\r\n", "$3\r\nold\r\n"},
		[]string{"MULTI"}, []string{"SET", "a", "1"}, []string{"GET", "a"}, []string{"EXEC"}, []string{"GET", "a"})
	// Redis 7.0 refuses any command queued while it is out of memory, reads too.
	compareWithRedis(t, fc, rc, nil, []string{"MULTI"}, []string{"GET", "a"}, []string{"EXISTS", "b"}, []string{"EXEC"})
	oomEnds(t, p.redis)
	oomEnds(t, ref)
	compareWithRedis(t, fc, rc, nil, []string{"MULTI"}, []string{"SET", "a", "new"}, []string{"EXEC"}, []string{"GET", "a"})
}

// TestTransactionInteractiveErrors runs, one command at a time, what TestMultiErrors pipelines: unknown commands
// and wrong arities at queue time, DISCARD, nested MULTI, EXEC and DISCARD without MULTI.
func TestTransactionInteractiveErrors(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	ref := redistest.Start(t)
	for name, steps := range map[string][]txStep{
		"unknown command": {cmdStep("MULTI"), cmdStep("SET", "e:a", "1"), cmdStep("FOO", "a"), cmdStep("EXEC"), cmdStep("GET", "e:a")},
		"unknown subcommand": {cmdStep("MULTI"), cmdStep("OBJECT", "NOSUCH", "x"), cmdStep("CLIENT", "NOSUCH"),
			cmdStep("SET", "e:a", "1"), cmdStep("EXEC"), cmdStep("GET", "e:a")},
		"wrong arity": {cmdStep("MULTI"), cmdStep("SET", "e:a"), cmdStep("GET"), cmdStep("SET", "e:a", "1"),
			cmdStep("EXEC"), cmdStep("GET", "e:a")},
		"wrong arity of exec": {cmdStep("MULTI"), cmdStep("SET", "e:x", "1"), cmdStep("EXEC", "x"),
			cmdStep("DISCARD", "x"), cmdStep("MULTI", "x"), cmdStep("PING"), cmdStep("EXEC"), cmdStep("GET", "e:x")},
		"discard": {cmdStep("MULTI"), cmdStep("SET", "e:d", "1"), cmdStep("DISCARD"), cmdStep("GET", "e:d"),
			cmdStep("DISCARD")},
		"nested multi": {cmdStep("MULTI"), cmdStep("SET", "e:m", "1"), cmdStep("MULTI"), cmdStep("WATCH", "e:m"),
			cmdStep("EXEC"), cmdStep("GET", "e:m")},
		"exec without multi": {cmdStep("EXEC"), cmdStep("DISCARD"), cmdStep("PING")},
		"empty transaction":  {cmdStep("MULTI"), cmdStep("EXEC"), cmdStep("EXEC")},
		"runtime errors":     {cmdStep("SET", "e:s", "x"), cmdStep("MULTI"), cmdStep("INCR", "e:s"), cmdStep("LPUSH", "e:s", "1"), cmdStep("SET", "e:s", "y"), cmdStep("EXEC"), cmdStep("GET", "e:s")},
		"blocking in multi":  {cmdStep("MULTI"), cmdStep("BLPOP", "e:q", "0"), cmdStep("WAIT", "0", "0"), cmdStep("EXEC")},
		"unwatch in multi":   {cmdStep("MULTI"), cmdStep("UNWATCH"), cmdStep("EXEC")},
		"reset in multi":     {cmdStep("MULTI"), cmdStep("SET", "e:r", "1"), cmdStep("RESET"), cmdStep("EXEC"), cmdStep("GET", "e:r")},
		"large arguments":    {cmdStep("MULTI"), cmdStep("SET", "e:l", strings.Repeat("x", 100<<10)), cmdStep("STRLEN", "e:l"), cmdStep("EXEC")},
		"watch then multi":   {cmdStep("WATCH", "e:w"), cmdStep("MULTI"), cmdStep("FOO"), cmdStep("SET", "e:w", "1"), cmdStep("EXEC"), cmdStep("GET", "e:w")},
		"many transactions in a row": {cmdStep("MULTI"), cmdStep("INCR", "e:c"), cmdStep("EXEC"), cmdStep("MULTI"),
			cmdStep("INCR", "e:c"), cmdStep("EXEC"), cmdStep("MULTI"), cmdStep("INCR", "e:c"), cmdStep("DISCARD"), cmdStep("GET", "e:c")},
	} {
		t.Run(name, func(t *testing.T) {
			p.redis.Do("FLUSHALL")
			ref.Do("FLUSHALL")
			compareInteractive(t, p, ref, steps...)
		})
	}

	// Denied commands never reach Redis, not even queued (featcache refuses them and EXEC aborts); without a deny
	// list, Redis refuses SYNC at queue time and MONITOR at EXEC.
	open := startProxy(t, "commands: {deny: []}\n"+defaultTestConfig)
	for name, steps := range map[string][]txStep{
		"not allowed in multi": {cmdStep("MULTI"), cmdStep("SET", "e:n", "1"), cmdStep("SYNC"), cmdStep("PSYNC", "?", "-1"),
			cmdStep("EXEC"), cmdStep("GET", "e:n")},
		"monitor in multi": {cmdStep("MULTI"), cmdStep("MONITOR"), cmdStep("EXEC"), cmdStep("PING")},
	} {
		t.Run(name, func(t *testing.T) {
			compareInteractive(t, open, ref, steps...)
		})
	}
}

// TestTransactionReadYourWrites: the keys a transaction writes are invalidated before EXEC's reply, whether it
// was pipelined or interactive, and whatever EXEC answered.
func TestTransactionReadYourWrites(t *testing.T) {
	p := startProxy(t, ttlOnlyConfig) // no tracking: only featcache's own invalidation can make the reads new
	c := p.dial()
	cache := func(key, value string) {
		t.Helper()
		p.redis.Do("SET", key, value)
		expectDo(t, c, bulk(value), "GET", key)
		expectDo(t, c, bulk(value), "GET", key)
	}
	// Pipelined, with a read after EXEC in the same write: it is not answered from memory ahead of EXEC.
	cache("ryw:a", "old")
	expectPipeline(t, c, "+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n+OK\r\n$3\r\nnew\r\n$3\r\nnew\r\n",
		[]string{"MULTI"}, []string{"SET", "ryw:a", "new"}, []string{"GET", "ryw:a"}, []string{"EXEC"}, []string{"GET", "ryw:a"})
	// Interactive.
	cache("ryw:b", "old")
	expectExec(t, c, "*2\r\n:5\r\n:1\r\n", []string{"APPEND", "ryw:b", "er"}, []string{"HSET", "ryw:h", "f", "v"})
	expectDo(t, c, "$5\r\nolder\r\n", "GET", "ryw:b")
	// An EXEC that aborts for WATCH applied nothing; the keys are invalidated all the same.
	cache("ryw:c", "old")
	expectDo(t, c, "+OK\r\n", "WATCH", "ryw:c")
	p.redis.Do("SET", "ryw:c", "theirs")
	expectExec(t, c, "*-1\r\n", []string{"SET", "ryw:c", "mine"})
	expectDo(t, c, "$6\r\ntheirs\r\n", "GET", "ryw:c")
	// A runtime error inside EXEC: the other writes applied, and are read back.
	cache("ryw:d", "old")
	expectExec(t, c, "*2\r\n-ERR value is not an integer or out of range\r\n+OK\r\n",
		[]string{"INCR", "ryw:d"}, []string{"SET", "ryw:d", "7"})
	expectDo(t, c, "$1\r\n7\r\n", "GET", "ryw:d")
	// Another client of featcache sees them too.
	expectDo(t, p.dial(), "$1\r\n7\r\n", "GET", "ryw:d")
	expectDo(t, p.dial(), "$5\r\nolder\r\n", "GET", "ryw:b")
}

// connectionsReceived is Redis's count of connections accepted since it started, read on rc (a connection of its
// own, opened before, so that reading it does not count).
func connectionsReceived(t *testing.T, rc *redistest.Conn) int64 {
	t.Helper()
	return infoField(string(rc.Do("INFO", "stats")), "total_connections_received")
}

// warmShared makes featcache dial all its shared upstream connections, which it otherwise opens on first use, so
// that a new connection to Redis afterwards is a dedicated one.
func warmShared(t *testing.T, p *testProxy) {
	t.Helper()
	c := p.dial()
	defer c.Close()
	for i := 0; i < 4*p.cfg.Upstream.Conns; i++ {
		expectDo(t, c, ":"+strconv.Itoa(i+1)+"\r\n", "INCR", "warm:shared")
	}
}

// TestTransactionPath: a transaction that arrives whole travels on a shared connection (no dedicated connection is
// dialed for it); one whose EXEC has not arrived is pinned to a dedicated one, which goes back to the pool after
// EXEC and is reused by the next.
func TestTransactionPath(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	c := p.dial()
	rc := redistest.Dial(t, p.redis.Addr())
	warmShared(t, p)
	before := connectionsReceived(t, rc)
	for i := 0; i < 20; i++ {
		expectPipeline(t, c, "+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n:"+strconv.Itoa(i+1)+"\r\n$"+strconv.Itoa(len(strconv.Itoa(i+1)))+"\r\n"+strconv.Itoa(i+1)+"\r\n",
			[]string{"MULTI"}, []string{"INCR", "path:n"}, []string{"GET", "path:n"}, []string{"EXEC"})
	}
	if after := connectionsReceived(t, rc); after != before {
		t.Errorf("pipelined transactions made Redis accept %d connections; want them on the shared ones", after-before)
	}
	// Interactive: one dedicated connection, reused.
	for i := 0; i < 5; i++ {
		expectExec(t, c, "*1\r\n:"+strconv.Itoa(i+1)+"\r\n", []string{"INCR", "path:m"})
	}
	if after := connectionsReceived(t, rc); after != before+1 {
		t.Errorf("5 interactive transactions made Redis accept %d connections; want 1, reused", after-before)
	}
	// The shared connections are untouched: not in MULTI, not named otherwise, in db 0.
	for _, line := range clientList(t, rc) {
		if strings.Contains(line, " flags=x") || strings.Contains(line, " multi=0") ||
			strings.Contains(line, "name=featcache") && !strings.Contains(line, " db=0 ") {
			t.Errorf("Redis connection left in a transaction: %s", line)
		}
	}
}

// TestTransactionRedisPy: redis-py's default pipeline (transaction=True) sends MULTI ... EXEC in one write; it runs
// on a shared connection, and its replies are Redis's, errors included.
func TestTransactionRedisPy(t *testing.T) {
	requireRedisPy(t)
	p := startProxy(t, defaultTestConfig)
	rc := redistest.Dial(t, p.redis.Addr())
	warmShared(t, p)
	before := connectionsReceived(t, rc)
	host, port := splitHostPort(t, p.addr)
	const script = `
import sys, redis
r = redis.Redis(host=sys.argv[1], port=int(sys.argv[2]))
for i in range(50):
    with r.pipeline() as pipe:
        for j in range(100):
            pipe.incr("py:n")
        pipe.get("py:n")
        res = pipe.execute()
    assert res[-1] == str((i + 1) * 100).encode(), res[-1]
with r.pipeline() as pipe:
    pipe.set("py:s", "x").incr("py:s").set("py:t", "1")
    res = pipe.execute(raise_on_error=False)
assert res[0] is True and isinstance(res[1], redis.ResponseError) and res[2] is True, res
print("ok")
`
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, redisPyPython, "-c", script, host, port).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "ok" {
		t.Fatalf("redis-py transactions: %v\n%s", err, out)
	}
	if after := connectionsReceived(t, rc); after != before {
		t.Errorf("redis-py's transactional pipelines made Redis accept %d connections; want the shared ones", after-before)
	}
}

// TestTransactionLargePipelined: a pipelined transaction too large for one read batch is pinned when its first
// part is sent, and still runs whole, with Redis's replies.
func TestTransactionLargePipelined(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	ref := redistest.Start(t)
	cmds := [][]string{{"MULTI"}}
	for i := 0; i < 3000; i++ {
		cmds = append(cmds, []string{"RPUSH", "big:l", strconv.Itoa(i)})
	}
	cmds = append(cmds, []string{"FOO"}, []string{"EXEC"}, []string{"LLEN", "big:l"})
	compareWithRedis(t, p.dial(), redistest.Dial(t, ref.Addr()), nil, cmds...)
	cmds = append(cmds[:3001], []string{"EXEC"}, []string{"LLEN", "big:l"}, []string{"LINDEX", "big:l", "-1"})
	compareWithRedis(t, p.dial(), redistest.Dial(t, ref.Addr()), nil, cmds...)
}
