package proxy

import (
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"featcache/internal/redistest"
)

// A Redis shared with other applications: scripts and functions that keep it busy, run straight on Redis by
// another client and killed (SCRIPT KILL, FUNCTION KILL); slow scripts sent through featcache; SWAPDB by another
// client. Everything for real, against redis-server.

// busyLibrary is a function library whose function loops until FUNCTION KILL.
const busyLibrary = "#!lua name=busylib\nredis.register_function('busy', function() while true do end end)"

// busyConfig: "s:" entries stay fresh, "d:" entries are past their hard TTL once the clock moves 2s (every read
// goes upstream, and is served stale when Redis fails), both serve_stale; "f:" fails; "u:" keys match no policy.
const busyConfig = `
upstream: {timeout: 300ms}
policies:
  - {name: stale, prefix: "s:", soft_ttl: 1h, hard_ttl: 1h, jitter: 0, on_upstream_error: serve_stale, max_stale: 1h}
  - {name: dead, prefix: "d:", soft_ttl: 1s, hard_ttl: 1s, jitter: 0, on_upstream_error: serve_stale, max_stale: 24h}
  - {name: fail, prefix: "f:", soft_ttl: 1h, hard_ttl: 1h, jitter: 0}
`

// busyTimeout is busyConfig's upstream.timeout.
const busyTimeout = 300 * time.Millisecond

// waitBusy waits until Redis answers a direct client -BUSY, and returns that reply.
func waitBusy(t *testing.T, redis *redistest.Server) string {
	t.Helper()
	var reply string
	redistest.Eventually(t, 10*time.Second, "Redis busy", func() bool {
		reply = string(redis.Do("GET", "x"))
		return strings.HasPrefix(reply, "-BUSY ")
	})
	return reply
}

// killBusy ends the running script or function with kill (SCRIPT KILL or FUNCTION KILL), sent by do, and waits
// until Redis answers do again.
func killBusy(t *testing.T, do func(args ...string) []byte, kill ...string) {
	t.Helper()
	redistest.Eventually(t, 10*time.Second, strings.Join(kill, " "), func() bool {
		return string(do(kill...)) == "+OK\r\n"
	})
	redistest.Eventually(t, 10*time.Second, "Redis free", func() bool { return string(do("PING")) == "+PONG\r\n" })
}

// busyTraffic is client traffic through featcache while busy cycles run: cached reads, forwarded reads and
// writes, each client on its own connection. It counts the replies, those received while Redis was busy apart.
type busyTraffic struct {
	busy             atomic.Bool
	served, duringBy atomic.Int64
	stop             chan struct{}
	once             sync.Once
	wg               sync.WaitGroup
	mu               sync.Mutex
	bad              []string
}

func startBusyTraffic(t *testing.T, addr string, clients int) *busyTraffic {
	tr := &busyTraffic{stop: make(chan struct{})}
	for i := 0; i < clients; i++ {
		c := redistest.Dial(t, addr)
		tr.wg.Add(1)
		go func() {
			defer tr.wg.Done()
			n := strconv.Itoa(i)
			cmds := [][]string{{"GET", "s:1"}, {"MGET", "s:1", "s:2"}, {"GET", "d:1"}, {"SET", "u:t" + n, "x"},
				{"GET", "u:1"}, {"INCR", "u:cnt"}}
			for k := 0; ; k++ {
				select {
				case <-tr.stop:
					return
				default:
				}
				busy := tr.busy.Load()
				args := cmds[k%len(cmds)]
				var r string
				if err := c.Send(args...); err == nil {
					var b []byte
					b, err = c.ReadTimeout(10 * time.Second)
					r = string(b)
					if err != nil {
						r = "no reply: " + err.Error()
					}
				}
				// A serve_stale read is answered from memory; a forwarded command gets Redis's own reply (-BUSY
				// while it is busy); featcache's own errors never come.
				if strings.HasPrefix(r, "-ERR featcache") || strings.HasPrefix(r, "no reply") || (k%len(cmds) < 3 && strings.HasPrefix(r, "-")) {
					tr.mu.Lock()
					tr.bad = append(tr.bad, strings.Join(args, " ")+" -> "+r)
					tr.mu.Unlock()
					if strings.HasPrefix(r, "no reply") {
						return
					}
				}
				tr.served.Add(1)
				if busy && tr.busy.Load() {
					tr.duringBy.Add(1)
				}
			}
		}()
	}
	t.Cleanup(tr.halt) // before the connections close
	return tr
}

// halt stops the traffic and waits for it; it may be called more than once.
func (tr *busyTraffic) halt() {
	tr.once.Do(func() { close(tr.stop) })
	tr.wg.Wait()
}

func (tr *busyTraffic) finish(t *testing.T) {
	t.Helper()
	tr.halt()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for i, b := range tr.bad {
		if i == 10 {
			t.Errorf("... and %d more", len(tr.bad)-10)
			break
		}
		t.Errorf("traffic: %q", b)
	}
}

// TestBusyScriptCycles: ten cycles of a Lua loop run straight on Redis past busy-reply-threshold, then SCRIPT
// KILL, and ten of a function that loops (FCALL, then FUNCTION KILL), under client traffic through featcache. In
// every other cycle featcache's tracking connection is killed just before the loop starts, so that tracking is
// set up again while Redis answers -BUSY (what made rueidis panic and end the process). The process lives (a
// panic on any goroutine would end this test binary); during each cycle serve_stale keys are answered from
// memory, fresh or past their hard TTL, and forwarded commands get Redis's own -BUSY; after each cycle reads,
// writes, tracking and invalidations work again.
func TestBusyScriptCycles(t *testing.T) {
	redis := redistest.Start(t, "--busy-reply-threshold", "100")
	p := startProxyOn(t, redis, busyConfig)
	for _, kv := range [][2]string{{"s:1", "one"}, {"s:2", "two"}, {"d:1", "dead"}, {"f:1", "kept"}, {"u:1", "uncached"}} {
		redis.Do("SET", kv[0], kv[1])
	}
	expectDo(t, redis.Dial(), "$7\r\nbusylib\r\n", "FUNCTION", "LOAD", busyLibrary)
	p.settle()
	c := p.dial()
	expectDo(t, c, bulk("one"), "GET", "s:1")
	expectDo(t, c, bulk("two"), "GET", "s:2")
	expectDo(t, c, bulk("dead"), "GET", "d:1")
	traffic := startBusyTraffic(t, p.addr, 4)

	cycles := longOr(10, 50)
	var slowest time.Duration
	for cycle := 0; cycle < 2*cycles; cycle++ {
		function := cycle >= cycles
		kind, loop, kill := "script", []string{"EVAL", "while true do end", "0"}, []string{"SCRIPT", "KILL"}
		if function {
			kind, loop, kill = "function", []string{"FCALL", "busy", "0"}, []string{"FUNCTION", "KILL"}
		}
		phase := kind + " cycle " + strconv.Itoa(cycle%cycles)
		p.clock.Advance(2 * time.Second) // d: entries past their hard TTL: their reads go upstream
		looper := redis.Dial()
		killed := false
		if cycle%2 == 1 {
			// The tracking connection dies just before the loop starts: tracking is set up while Redis is busy.
			if id := trackingID(redis); id != "" {
				if err := looper.Send("CLIENT", "KILL", "ID", id); err != nil {
					t.Fatal(err)
				}
				killed = true
			}
		}
		if err := looper.Send(loop...); err != nil {
			t.Fatal(err)
		}
		busyReply := waitBusy(t, redis)
		traffic.busy.Store(true)
		before := traffic.duringBy.Load()
		redistest.Eventually(t, 10*time.Second, phase+": traffic served while Redis is busy", func() bool {
			return traffic.duringBy.Load() >= before+20
		})
		slowest = max(slowest, p.runFaultChecks(t, phase, []faultCheck{
			{[]string{"GET", "s:1"}, replyIs(bulk("one")), "the value from memory"},
			{[]string{"MGET", "s:1", "s:2"}, replyIs("*2\r\n" + bulk("one") + bulk("two")), "the values from memory"},
			{[]string{"GET", "d:1"}, replyIs(bulk("dead")), "the value from memory, past its hard TTL"},
			{[]string{"GET", "u:1"}, replyIs(busyReply), "Redis's -BUSY"},
			{[]string{"GET", "x"}, replyIs(busyReply), "Redis's -BUSY"},
			{[]string{"SET", "u:w", strconv.Itoa(cycle)}, replyIs(string(redis.Do("SET", "u:w", "direct"))), "Redis's -BUSY"},
		}))
		traffic.busy.Store(false)
		killBusy(t, redis.Do, kill...)
		if killed {
			if r, err := looper.ReadTimeout(5 * time.Second); err != nil || string(r) != ":1\r\n" {
				t.Fatalf("%s: CLIENT KILL of the tracking connection: %q, %v", phase, r, err)
			}
		}
		if r, err := looper.ReadTimeout(5 * time.Second); err != nil || !strings.HasPrefix(string(r), "-") {
			t.Fatalf("%s: the killed loop's reply: %q, %v", phase, r, err)
		}

		// Everything works again: tracking, invalidations, writes, forwarded and cached reads.
		redistest.Eventually(t, 10*time.Second, phase+": tracking up", func() bool { _, up := p.up.Tracking(); return up })
		v := "v" + strconv.Itoa(cycle)
		redis.Do("SET", "s:1", v)
		redistest.Eventually(t, 5*time.Second, phase+": the direct write's invalidation applied", func() bool {
			return p.do("GET", "s:1") == bulk(v)
		})
		redis.Do("SET", "s:1", "one")
		p.settle()
		expectDo(t, c, bulk("one"), "GET", "s:1")
		// Stored, and still stored: a traffic MGET that read s:1's previous value and completes after this read
		// drops the entry this read stored (an entry that differs from what an MGET read is dropped, mgettx.go),
		// and a key with no entry can only get Redis's -BUSY in the next cycle.
		redistest.Eventually(t, 10*time.Second, phase+": s:1 stored", func() bool {
			c.Do("GET", "s:1")
			return strings.Contains(p.do("CACHE", "EXPLAIN", "s:1"), "state:fresh")
		})
		expectDo(t, c, "+OK\r\n", "SET", "s:w", v)
		expectDo(t, c, bulk(v), "GET", "s:w")
		expectDo(t, c, bulk("uncached"), "GET", "u:1")
		expectDo(t, c, bulk("kept"), "GET", "f:1")
		expectDo(t, c, bulk("dead"), "GET", "d:1")
		if t.Failed() {
			t.Fatalf("%s failed", phase)
		}
	}
	traffic.finish(t)
	t.Logf("%d script and %d function cycles past busy-reply-threshold, tracking killed before every other one; "+
		"requests served: %d, %d of them while Redis was busy; slowest check reply while busy: %v (upstream.timeout %v); "+
		"served stale on error: %d; restarts: 0", cycles, cycles, traffic.served.Load(), traffic.duringBy.Load(), slowest,
		busyTimeout, p.srv.Stats().StaleOnError.Load())
}

// busyStarted reports whether Redis has stopped answering direct clients (a script or command is running): a
// PING on a fresh connection gets no reply within 50ms.
func busyStarted(t *testing.T, redis *redistest.Server) bool {
	c := redis.Dial()
	if err := c.Send("PING"); err != nil {
		t.Fatal(err)
	}
	_, err := c.ReadTimeout(50 * time.Millisecond)
	return err != nil
}

// TestSlowScriptThroughFeatcache: a script that keeps Redis busy for 2.5s (less than busy-reply-threshold, so
// Redis answers nothing meanwhile) answers :1 through featcache, as it does straight on Redis, however far past
// upstream.timeout. While it runs, other clients' forwarded commands, on the same shared connections, get Redis's
// replies once Redis is free; serve_stale keys are answered from memory within upstream.timeout (+100ms).
func TestSlowScriptThroughFeatcache(t *testing.T) {
	redis := redistest.Start(t)
	start := time.Now()
	want := string(redis.Do("EVAL", redistest.SleepScript, "0", "2500"))
	if want != ":1\r\n" || time.Since(start) < 2500*time.Millisecond {
		t.Fatalf("straight on Redis: %q after %v", want, time.Since(start))
	}
	p := startProxyOn(t, redis, strings.Replace(busyConfig, "{timeout: 300ms}", "{timeout: 300ms, conns: 2}", 1))
	redis.Do("SET", "s:1", "one")
	redis.Do("SET", "d:1", "dead")
	p.settle()
	c := p.dial()
	expectDo(t, c, bulk("one"), "GET", "s:1")
	expectDo(t, c, bulk("dead"), "GET", "d:1")
	p.clock.Advance(2 * time.Second)

	script := p.dial()
	start = time.Now()
	if err := script.Send("EVAL", redistest.SleepScript, "0", "2500"); err != nil {
		t.Fatal(err)
	}
	redistest.Eventually(t, 5*time.Second, "the script running", func() bool { return busyStarted(t, redis) })

	// Other clients' forwarded commands, more of them than shared connections.
	const others = 6
	replies := make(chan string, others)
	for i := 0; i < others; i++ {
		o := p.dial()
		go func() {
			switch i % 3 {
			case 0:
				replies <- string(o.Do("ECHO", "e"+strconv.Itoa(i)))
			case 1:
				replies <- string(o.Do("SET", "u:k"+strconv.Itoa(i), "v"))
			default:
				replies <- string(o.Do("INCR", "u:n"))
			}
		}()
	}
	fresh, tookFresh := p.timedDo("GET", "s:1")
	dead, tookDead := p.timedDo("GET", "d:1")
	if fresh != bulk("one") || dead != bulk("dead") {
		t.Errorf("serve_stale keys while the script runs: %q, %q; want the values from memory", fresh, dead)
	}
	// The fresh one is answered at once unless the tracking connection's check has just given up on the silent
	// Redis (then it is read like the other); either way within the timeout.
	if tookFresh > busyTimeout+100*time.Millisecond || tookDead > busyTimeout+100*time.Millisecond {
		t.Errorf("serve_stale keys while the script runs took %v (fresh) and %v (past hard TTL); want within "+
			"upstream.timeout (%v) + 100ms", tookFresh, tookDead, busyTimeout)
	}

	got, err := script.ReadTimeout(10 * time.Second)
	took := time.Since(start)
	if err != nil || string(got) != want {
		t.Fatalf("the script through featcache: %q, %v; want Redis's %q", got, err, want)
	}
	if took < 2500*time.Millisecond {
		t.Fatalf("the script answered after %v; want after its 2.5s", took)
	}
	incrs := map[string]bool{}
	for i := 0; i < others; i++ {
		select {
		case r := <-replies:
			switch {
			case strings.HasPrefix(r, "$2\r\ne"), r == "+OK\r\n":
			case strings.HasPrefix(r, ":"):
				incrs[r] = true
			default:
				t.Errorf("a forwarded command behind the script: got %q; want Redis's reply", r)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a forwarded command behind the script got no reply")
		}
	}
	if len(incrs) != 2 || !incrs[":1\r\n"] || !incrs[":2\r\n"] {
		t.Errorf("INCR replies %v; want :1 and :2", incrs)
	}
	t.Logf("a 2.5s script through featcache answered %q after %v (upstream.timeout %v); meanwhile serve_stale "+
		"answered in %v (fresh) and %v (past hard TTL)", got, took, busyTimeout, tookFresh, tookDead)
	expectDo(t, c, "$5\r\nafter\r\n", "ECHO", "after")
}

// TestForwardedDuringBusyGetsRedisReply: while a script keeps Redis busy past busy-reply-threshold, forwarded
// commands through featcache get Redis's own reply, byte for byte, also on connections featcache opens then
// (shared ones, and the dedicated one of a blocking command): AUTH passes while Redis is busy, and the -BUSY that
// CLIENT SETNAME gets does not turn into featcache's own error.
func TestForwardedDuringBusyGetsRedisReply(t *testing.T) {
	redis := redistest.Start(t, "--busy-reply-threshold", "50", "--requirepass", "pw")
	p := startProxyOn(t, redis, "upstream: {password: pw, timeout: 300ms, conns: 4}\n"+busyConfig[strings.Index(busyConfig, "policies:"):])
	direct := redis.Dial()
	expectDo(t, direct, "+OK\r\n", "AUTH", "pw")
	looper := redis.Dial()
	expectDo(t, looper, "+OK\r\n", "AUTH", "pw")
	looper.Loop()
	redistest.Eventually(t, 10*time.Second, "Redis busy", func() bool {
		return strings.HasPrefix(string(direct.Do("GET", "x")), "-BUSY ")
	})
	cmds := [][]string{
		{"SET", "u:k", "v"}, {"INCR", "u:n"}, {"GET", "u:k"}, {"DEL", "u:k"}, {"EVAL", "return 1", "0"},
		{"HSET", "u:h", "f", "v"}, {"EXPIRE", "u:k", "10"}, {"MGET", "u:a", "u:b"}, {"TTL", "u:k"},
		{"BLPOP", "u:q", "1"},
	}
	c := p.dial()
	for round := 0; round < 2; round++ { // every shared connection gets used, some opened while Redis is busy
		for _, args := range cmds {
			want := string(direct.Do(args...))
			if got := string(c.Do(args...)); got != want {
				t.Errorf("%q while Redis is busy: got %q; want Redis's %q", args, got, want)
			}
		}
	}
	killBusy(t, direct.Do, "SCRIPT", "KILL")
	expectDo(t, c, "+OK\r\n", "SET", "u:k", "after")
	expectDo(t, c, bulk("after"), "GET", "u:k")
}

// TestServeStaleWithinTimeout: while Redis is hung (SIGSTOP) or busy with a script (below busy-reply-threshold:
// it answers nothing), serve_stale keys past their hard TTL are answered from memory within upstream.timeout
// (+100ms): the first read gives up on Redis after the timeout, and later ones do not queue behind a call
// already late.
func TestServeStaleWithinTimeout(t *testing.T) {
	for _, how := range []string{"hung", "busy"} {
		t.Run(how, func(t *testing.T) {
			redis := redistest.Start(t)
			p := startProxyOn(t, redis, busyConfig)
			for i := 1; i <= 3; i++ {
				redis.Do("SET", "d:"+strconv.Itoa(i), "dead"+strconv.Itoa(i))
			}
			p.settle()
			c := p.dial()
			for i := 1; i <= 3; i++ {
				expectDo(t, c, bulk("dead"+strconv.Itoa(i)), "GET", "d:"+strconv.Itoa(i))
			}
			p.clock.Advance(2 * time.Second)
			if how == "hung" {
				redis.Pause()
				defer redis.Resume()
			} else {
				script := redis.Dial()
				if err := script.Send("EVAL", redistest.SleepScript, "0", "3000"); err != nil {
					t.Fatal(err)
				}
				redistest.Eventually(t, 5*time.Second, "the script running", func() bool { return busyStarted(t, redis) })
			}
			var slowest time.Duration
			for round := 0; round < 3; round++ {
				for _, args := range [][]string{{"GET", "d:1"}, {"MGET", "d:2", "d:3"}} {
					got, took := p.timedDo(args...)
					want := bulk("dead1")
					if args[0] == "MGET" {
						want = "*2\r\n" + bulk("dead2") + bulk("dead3")
					}
					if got != want {
						t.Errorf("%s: %q: got %q; want %q from memory", how, args, got, want)
					}
					// Without serve_stale the reply would wait for the 3 s script; the slack is the one every
					// fault test allows a loaded machine (100 ms was exceeded once at a load average of 6).
					if took > busyTimeout+faultSlack {
						t.Errorf("%s: %q took %v; want within upstream.timeout (%v) + %v", how, args, took, busyTimeout, faultSlack)
					}
					slowest = max(slowest, took)
				}
			}
			t.Logf("%s: slowest serve_stale reply %v (upstream.timeout %v)", how, slowest, busyTimeout)
		})
	}
}

// TestCommandTimeoutGivesUp: with upstream.command_timeout set, a script that runs longer gets featcache's
// timeout error once command_timeout has passed; Redis's late reply is dropped and the connection is used on.
func TestCommandTimeoutGivesUp(t *testing.T) {
	redis := redistest.Start(t)
	p := startProxyOn(t, redis, strings.Replace(busyConfig, "{timeout: 300ms}", "{timeout: 300ms, command_timeout: 500ms, conns: 1}", 1))
	c := p.dial()
	start := time.Now()
	got := string(c.Do("EVAL", redistest.SleepScript, "0", "1500"))
	took := time.Since(start)
	const want = "-ERR featcache upstream timeout: Redis did not answer within upstream.command_timeout (the command may have been applied)\r\n"
	if got != want {
		t.Fatalf("a script longer than command_timeout: got %q; want %q", got, want)
	}
	// EVAL is followed by the tracking barrier, which Redis, still running the script, does not answer either:
	// the error comes after command_timeout plus at most upstream.timeout.
	if took < 500*time.Millisecond || took > 500*time.Millisecond+faultSlack {
		t.Errorf("the timeout error came after %v; want after command_timeout (500ms)", took)
	}
	redis.Do("PING") // answered once the script is over
	for i := 0; i < 3; i++ {
		expectDo(t, c, "$4\r\nnext\r\n", "ECHO", "next")
	}
	t.Logf("command_timeout 500ms: the 1.5s script got the timeout error after %v", took)
}

// swapBound is how long after a SWAPDB by another client featcache may still serve pre-swap values: the tracking
// connection's check interval (1s) plus the check's round trip (at most upstream.timeout, 300ms here).
const swapBound = time.Second + busyTimeout

// TestSwapDBByAnotherClient: Redis sends no invalidation for SWAPDB. After a SWAPDB straight on Redis, GET, MGET,
// HGET and HGETALL through featcache show the swapped-in values (and nil for a key only the old database had, a
// value for one only the new one has) within swapBound, plus room for a loaded machine.
func TestSwapDBByAnotherClient(t *testing.T) {
	redis := redistest.Start(t)
	p := startProxyOn(t, redis, `
upstream: {timeout: 300ms}
policies:
  - {name: sw, prefix: "sw:", soft_ttl: 1h, hard_ttl: 2h, negative_ttl: 1h, jitter: 0}
`)
	db0, db1 := redis.Dial(), redis.Dial()
	expectDo(t, db1, "+OK\r\n", "SELECT", "1")
	for _, w := range []struct {
		c    *redistest.Conn
		args []string
	}{
		{db0, []string{"SET", "sw:str", "db0"}}, {db0, []string{"HSET", "sw:h", "f", "db0"}}, {db0, []string{"SET", "sw:gone", "only0"}},
		{db1, []string{"SET", "sw:str", "db1"}}, {db1, []string{"HSET", "sw:h", "f", "db1"}}, {db1, []string{"SET", "sw:new", "only1"}},
	} {
		w.c.Do(w.args...)
	}
	p.settle()
	c := p.dial()
	before := []replyCase{
		{[]string{"GET", "sw:str"}, bulk("db0")},
		{[]string{"MGET", "sw:str", "sw:new", "sw:gone"}, "*3\r\n" + bulk("db0") + "$-1\r\n" + bulk("only0")},
		{[]string{"HGET", "sw:h", "f"}, bulk("db0")},
		{[]string{"HGETALL", "sw:h"}, "*2\r\n" + bulk("f") + bulk("db0")},
		{[]string{"GET", "sw:new"}, "$-1\r\n"},
	}
	expectReplies(t, before, c)
	hits := p.srv.Stats().Hits.Load()
	expectReplies(t, before, c)
	if p.srv.Stats().Hits.Load() == hits {
		t.Fatal("the reads were not served from memory before the SWAPDB")
	}

	start := time.Now()
	expectDo(t, db0, "+OK\r\n", "SWAPDB", "0", "1")
	after := []replyCase{
		{[]string{"GET", "sw:str"}, bulk("db1")},
		{[]string{"MGET", "sw:str", "sw:new", "sw:gone"}, "*3\r\n" + bulk("db1") + bulk("only1") + "$-1\r\n"},
		{[]string{"HGET", "sw:h", "f"}, bulk("db1")},
		{[]string{"HGETALL", "sw:h"}, "*2\r\n" + bulk("f") + bulk("db1")},
		{[]string{"GET", "sw:new"}, bulk("only1")},
	}
	// Polled until every read shows the swapped-in values.
	redistest.Eventually(t, swapBound+5*time.Second, "post-swap values", func() bool {
		for _, r := range after {
			if string(c.Do(r.args...)) != r.want {
				return false
			}
		}
		return true
	})
	took := time.Since(start)
	t.Logf("after SWAPDB straight on Redis, featcache served the swapped-in values after %v (bound %v)", took, swapBound)
	if took > swapBound+time.Second {
		t.Errorf("pre-swap values served for %v after SWAPDB; want at most %v (+1s on a loaded machine)", took, swapBound)
	}
}

// TestCloseDoesNotWaitForHungRedis: forwarded commands wait for a hung Redis without bound, but a server that
// closes ends those waits: a forwarded command on a shared connection, a transaction and a WATCH session's
// command, all waiting on a SIGSTOPped Redis, do not hold Close up.
func TestCloseDoesNotWaitForHungRedis(t *testing.T) {
	redis := redistest.Start(t)
	p := startProxyOn(t, redis, busyConfig)
	shared, tx, pinned := p.dial(), p.dial(), p.dial()
	expectDo(t, tx, "+OK\r\n", "MULTI")
	expectDo(t, tx, "+QUEUED\r\n", "SET", "u:tx", "v")
	expectDo(t, pinned, "+OK\r\n", "WATCH", "u:w")
	redis.Pause()
	defer redis.Resume()
	for _, s := range []struct {
		c    *redistest.Conn
		args []string
	}{{shared, []string{"SET", "u:k", "v"}}, {tx, []string{"EXEC"}}, {pinned, []string{"GET", "u:w"}}} {
		if err := s.c.Send(s.args...); err != nil {
			t.Fatal(err)
		}
	}
	// Past upstream.timeout, so that every wait is one featcache would otherwise keep up.
	if r, err := shared.ReadTimeout(2 * busyTimeout); err == nil {
		t.Fatalf("a forwarded command was answered while Redis hangs: %q", r)
	}
	start := time.Now()
	closed := make(chan struct{})
	go func() { p.srv.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close waits for a hung Redis")
	}
	t.Logf("Close returned after %v with three clients waiting on a hung Redis", time.Since(start))
}
