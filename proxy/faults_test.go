package proxy

import (
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"featcache/internal/redistest"
)

// Upstream faults: a hung Redis (SIGSTOP), a killed one, a restarted one, and the errors Redis answers while it
// cannot serve (LOADING, BUSY, MASTERDOWN, CLUSTERDOWN), all produced for real.

// faultConfig has a serve_stale policy ("s:"), a fail policy ("f:"); "u:" keys match no policy and are forwarded.
const faultConfig = `
upstream: {timeout: 300ms}
policies:
  - {name: stale, prefix: "s:", soft_ttl: 1h, hard_ttl: 1h, jitter: 0, on_upstream_error: serve_stale, max_stale: 1h}
  - {name: fail, prefix: "f:", soft_ttl: 1h, hard_ttl: 1h, jitter: 0}
`

// faultTimeout is faultConfig's upstream.timeout; faultSlack is what a reply may take beyond it on a loaded machine.
const (
	faultTimeout = 300 * time.Millisecond
	faultSlack   = 1500 * time.Millisecond
)

// timedDo sends one command on a new connection and returns its reply and how long it took.
func (p *testProxy) timedDo(args ...string) (string, time.Duration) {
	c := p.dial()
	defer c.Close()
	start := time.Now()
	reply := string(c.Do(args...))
	return reply, time.Since(start)
}

// faultCheck is one command sent while Redis fails, and what its reply must look like.
type faultCheck struct {
	args []string
	want func(reply string) bool
	what string
}

func replyIs(want string) func(string) bool { return func(r string) bool { return r == want } }

func replyIsError(r string) bool { return strings.HasPrefix(r, "-") }

// runFaultChecks sends the checks concurrently, each on its own connection, and requires each reply to match and
// to come within the timeout (plus slack). It returns the slowest reply's time.
func (p *testProxy) runFaultChecks(t *testing.T, phase string, checks []faultCheck) time.Duration {
	t.Helper()
	type result struct {
		reply string
		took  time.Duration
	}
	results := make([]result, len(checks))
	var wg sync.WaitGroup
	for i, ck := range checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, took := p.timedDo(ck.args...)
			results[i] = result{r, took}
		}()
	}
	wg.Wait()
	var slowest time.Duration
	for i, ck := range checks {
		r := results[i]
		if !ck.want(r.reply) {
			t.Errorf("%s: %q: got %.200q; want %s", phase, ck.args, r.reply, ck.what)
		}
		if r.took > faultTimeout+faultSlack {
			t.Errorf("%s: %q took %v; want a reply within the timeout (%v)", phase, ck.args, r.took, faultTimeout)
		}
		slowest = max(slowest, r.took)
	}
	return slowest
}

// faultCycles runs n cycles of hang, resume, kill and restart against a Redis with an append-only file fsynced at
// every write, checking in each phase that serve_stale keys are answered from memory and fail-policy keys get an
// error within the timeout; that forwarded commands (uncached keys, writes) wait for a hung Redis as a direct
// client would and get its replies when it continues, and fail at once when it is dead; that writes are
// acknowledged only when Redis acknowledged them; and that featcache recovers by itself. Goroutines and heap must
// return to their baseline afterwards.
func faultCycles(t *testing.T, n int) {
	redis := redistest.Start(t, "--appendonly", "yes", "--appendfsync", "always")
	p := startProxyOn(t, redis, faultConfig)
	const keys = 8
	c := p.dial()
	for i := 0; i < keys; i++ {
		expectDo(t, c, "+OK\r\n", "SET", "s:"+strconv.Itoa(i), "stale-"+strconv.Itoa(i))
		expectDo(t, c, "+OK\r\n", "SET", "f:"+strconv.Itoa(i), "fail-"+strconv.Itoa(i))
	}
	expectDo(t, c, "+OK\r\n", "SET", "u:1", "uncached")
	p.settle()
	c.Close()
	warm := func() {
		w := p.dial()
		defer w.Close()
		for i := 0; i < keys; i++ {
			w.Do("GET", "s:"+strconv.Itoa(i))
			w.Do("GET", "f:"+strconv.Itoa(i))
		}
	}
	warm()

	runtime.GC()
	baseGoroutines := runtime.NumGoroutine()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	baseHeap := ms.HeapAlloc

	staleCheck := func(i int) faultCheck {
		k := strconv.Itoa(i)
		return faultCheck{[]string{"GET", "s:" + k}, replyIs(bulk("stale-" + k)), "the value from memory"}
	}
	// cachedReads are the reads featcache answers itself while Redis fails: from memory, or with an error once
	// upstream.timeout has passed.
	cachedReads := func(cycle int) []faultCheck {
		cy := strconv.Itoa(cycle)
		return []faultCheck{
			staleCheck(0), staleCheck(cycle % keys),
			{[]string{"MGET", "s:1", "s:2", "s:3"}, replyIs("*3\r\n" + bulk("stale-1") + bulk("stale-2") + bulk("stale-3")), "the values from memory"},
			{[]string{"GET", "f:never-read-" + cy}, replyIsError, "an error"},
			{[]string{"MGET", "s:1", "f:never-read-" + cy}, replyIsError, "an error (one key cannot be answered)"},
		}
	}
	// failing adds forwarded commands, which a dead Redis fails at once.
	failing := func(cycle int) []faultCheck {
		cy := strconv.Itoa(cycle)
		return append(cachedReads(cycle),
			faultCheck{[]string{"GET", "u:1"}, replyIsError, "an error"},
			faultCheck{[]string{"SET", "w:" + cy, "lost"}, replyIsError, "an error: Redis did not acknowledge the write"})
	}
	// forwardWhileHung sends forwarded commands to a hung Redis, each on its own connection: they wait for Redis,
	// as direct clients would. check, called after Redis continues, requires Redis's replies, none before.
	forwardWhileHung := func(cycle int) (check func(resumed time.Time)) {
		cy := strconv.Itoa(cycle)
		cmds := [][]string{{"GET", "u:1"}, {"SET", "w:hung-" + cy, "applied"}}
		want := []string{bulk("uncached"), "+OK\r\n"}
		type answer struct {
			reply string
			at    time.Time
		}
		answers := make([]chan answer, len(cmds))
		for i, args := range cmds {
			answers[i] = make(chan answer, 1)
			c := p.dial()
			go func() {
				defer c.Close()
				r := string(c.Do(args...))
				answers[i] <- answer{r, time.Now()}
			}()
		}
		return func(resumed time.Time) {
			for i, args := range cmds {
				select {
				case a := <-answers[i]:
					if a.reply != want[i] {
						t.Errorf("hung: %q: got %.200q; want Redis's reply %q once it continues", args, a.reply, want[i])
					}
					if a.at.Before(resumed) {
						t.Errorf("hung: %q was answered before Redis continued", args)
					}
				case <-time.After(10 * time.Second):
					t.Errorf("hung: %q got no reply after Redis continued", args)
				}
			}
			if got := string(redis.Do("GET", "w:hung-"+cy)); got != bulk("applied") {
				t.Errorf("hung: the write sent while Redis hung is not in Redis: %q", got)
			}
		}
	}
	recovered := func(phase string) {
		redistest.Eventually(t, 10*time.Second, phase+": featcache recovers by itself", func() bool {
			_, up := p.up.Tracking()
			return up && p.do("GET", "f:0") == bulk("fail-0") && p.do("GET", "u:1") == bulk("uncached")
		})
		// Every shared connection is back: a write on each of them is acknowledged (upstream.conns is 4).
		for i := 0; i < 8; i++ {
			if got := p.do("SET", "w:acked", phase); got != "+OK\r\n" {
				t.Fatalf("%s: SET after recovery: %q", phase, got)
			}
		}
		if got := string(redis.Do("GET", "w:acked")); got != bulk(phase) {
			t.Fatalf("%s: the acknowledged write is not in Redis: %q", phase, got)
		}
	}

	var slowest time.Duration
	for cycle := 0; cycle < n; cycle++ {
		redis.Pause()
		forwarded := forwardWhileHung(cycle)
		slowest = max(slowest, p.runFaultChecks(t, "hung", cachedReads(cycle)))
		if cycle == 0 {
			// Once the tracking connection's health check gives up on the hung server, what tracking guarded is no
			// longer trusted: cached fail-policy keys fail too, serve_stale ones are still answered from memory.
			redistest.Eventually(t, 10*time.Second, "tracking loss noticed", func() bool { _, up := p.up.Tracking(); return !up })
			p.runFaultChecks(t, "hung, tracking lost", []faultCheck{
				staleCheck(1),
				{[]string{"GET", "f:1"}, replyIsError, "an error"},
			})
		}
		resumed := time.Now()
		redis.Resume()
		forwarded(resumed)
		recovered("resumed")
		warm()

		redis.Kill()
		// The tracking connection's end is noticed at once; until then, cached fail-policy keys are still trusted.
		redistest.Eventually(t, 5*time.Second, "tracking loss noticed", func() bool { _, up := p.up.Tracking(); return !up })
		slowest = max(slowest, p.runFaultChecks(t, "killed", append(failing(cycle), faultCheck{[]string{"GET", "f:2"}, replyIsError, "an error"})))
		redis.Restart()
		recovered("restarted")
		warm()
		if t.Failed() {
			t.Fatalf("cycle %d failed", cycle)
		}
	}
	if stale := p.srv.Stats().StaleOnError.Load(); stale < int64(n) {
		t.Errorf("stale_on_error = %d; want serve_stale replies in every cycle", stale)
	}
	t.Logf("%d cycles of hang/resume/kill/restart; slowest reply while Redis failed: %v (upstream.timeout %v); "+
		"served stale on error: %d", n, slowest, faultTimeout, p.srv.Stats().StaleOnError.Load())

	var heap uint64
	redistest.Eventually(t, 20*time.Second, "goroutines and heap back to their baseline", func() bool {
		runtime.GC()
		runtime.ReadMemStats(&ms)
		heap = ms.HeapAlloc
		return runtime.NumGoroutine() <= baseGoroutines+2 && heap <= baseHeap+8<<20
	})
	t.Logf("goroutines %d (baseline %d), heap %d KB (baseline %d KB)", runtime.NumGoroutine(), baseGoroutines,
		heap>>10, baseHeap>>10)
}

// TestUpstreamFaultCycles runs faultCycles' ten cycles (a hundred with -tags long).
func TestUpstreamFaultCycles(t *testing.T) {
	faultCycles(t, longOr(10, 100))
}

// TestSingleFlightReleasedOnTimeout: with Redis hung, many clients missing the same key share one fill, and all of
// them get the timeout error when it gives up, within the timeout; no waiter stays behind.
func TestSingleFlightReleasedOnTimeout(t *testing.T) {
	redis := redistest.Start(t)
	p := startProxyOn(t, redis, faultConfig)
	expectDo(t, p.dial(), "+PONG\r\n", "PING")
	reads := p.srv.Stats().UpstreamReads.Load()
	redis.Pause()
	defer redis.Resume()
	const clients = 20
	replies := make(chan string, clients)
	took := make(chan time.Duration, clients)
	var conns []*redistest.Conn
	for i := 0; i < clients; i++ {
		conns = append(conns, p.dial())
	}
	start := time.Now()
	for _, c := range conns {
		go func() {
			replies <- string(c.Do("GET", "f:shared"))
			took <- time.Since(start)
		}()
	}
	for i := 0; i < clients; i++ {
		if r := <-replies; !strings.HasPrefix(r, "-ERR featcache upstream") {
			t.Errorf("waiter %d: got %q; want the upstream error", i, r)
		}
		if d := <-took; d > faultTimeout+faultSlack {
			t.Errorf("waiter %d released after %v; want within the timeout (%v)", i, d, faultTimeout)
		}
	}
	if n := p.srv.Stats().UpstreamReads.Load() - reads; n != 1 {
		t.Errorf("upstream reads = %d; want the %d clients to share one fill", n, clients)
	}
	if joined := p.cache.Stats().FillsJoined; joined == 0 {
		t.Errorf("no fill was joined")
	}
}

// TestServeStaleOnRedisErrors produces each error Redis answers while it cannot serve, for real, and checks that
// serve_stale keys are answered from memory, fail-policy and uncached keys get Redis's error, and writes get it too.
func TestServeStaleOnRedisErrors(t *testing.T) {
	type scenario struct {
		name string
		want string // the error prefix Redis answers to reads
		// start starts the Redis featcache reads from, and returns it with the one writes go to (a replica's master).
		start func(t *testing.T) (upstream, writer *redistest.Server)
		// fail makes upstream answer the error; restore ends it.
		fail func(t *testing.T, upstream, writer *redistest.Server) (restore func())
	}
	scenarios := []scenario{
		{
			// A script that loops longer than busy-reply-threshold: Redis answers every other command -BUSY.
			name: "BUSY", want: "-BUSY ",
			start: func(t *testing.T) (*redistest.Server, *redistest.Server) {
				r := redistest.Start(t, "--busy-reply-threshold", "50")
				return r, r
			},
			fail: func(t *testing.T, redis, _ *redistest.Server) func() {
				script := redis.Dial()
				script.Loop()
				redistest.Eventually(t, 5*time.Second, "the script makes Redis busy", func() bool {
					return strings.HasPrefix(string(redis.Do("GET", "x")), "-BUSY")
				})
				return func() {
					redistest.Eventually(t, 5*time.Second, "SCRIPT KILL", func() bool {
						return string(redis.Do("SCRIPT", "KILL")) == "+OK\r\n"
					})
				}
			},
		},
		{
			// DEBUG RELOAD with a delay per key loaded: Redis answers -LOADING while it loads its own snapshot.
			// MERGE NOFLUSH reloads without emptying the dataset first, which would be a flush for tracking.
			name: "LOADING", want: "-LOADING ",
			start: func(t *testing.T) (*redistest.Server, *redistest.Server) {
				r := redistest.Start(t, "--enable-debug-command", "yes", "--loading-process-events-interval-bytes", "1024")
				return r, r
			},
			fail: func(t *testing.T, redis, _ *redistest.Server) func() {
				expectDo(t, redis.Dial(), "+OK\r\n", "DEBUG", "POPULATE", "20000", "filler")
				expectDo(t, redis.Dial(), "+OK\r\n", "CONFIG", "SET", "key-load-delay", "200")
				reload := redis.Dial()
				reload.Send("DEBUG", "RELOAD", "MERGE", "NOFLUSH")
				redistest.Eventually(t, 5*time.Second, "Redis loading", func() bool {
					return strings.HasPrefix(string(redis.Do("GET", "x")), "-LOADING")
				})
				return func() {
					expectDo(t, redis.Dial(), "+OK\r\n", "CONFIG", "SET", "key-load-delay", "0")
					if r, err := reload.ReadTimeout(30 * time.Second); err != nil || string(r) != "+OK\r\n" {
						t.Fatalf("DEBUG RELOAD: %q, %v", r, err)
					}
				}
			},
		},
		{
			// A replica with replica-serve-stale-data no whose master dies: -MASTERDOWN.
			name: "MASTERDOWN", want: "-MASTERDOWN ",
			start: func(t *testing.T) (*redistest.Server, *redistest.Server) {
				// The master keeps its data across its restart, so the replica finds it again.
				master := redistest.Start(t, "--appendonly", "yes", "--appendfsync", "always", "--repl-diskless-sync-delay", "0")
				replica := redistest.Start(t, "--replica-serve-stale-data", "no", "--replicaof", "127.0.0.1", strconv.Itoa(master.Port()))
				redistest.Eventually(t, 10*time.Second, "replica in sync", func() bool {
					return strings.Contains(string(replica.Do("INFO", "replication")), "master_link_status:up")
				})
				return replica, master
			},
			fail: func(t *testing.T, replica, master *redistest.Server) func() {
				master.Kill()
				redistest.Eventually(t, 10*time.Second, "replica link down", func() bool {
					return strings.HasPrefix(string(replica.Do("GET", "x")), "-MASTERDOWN")
				})
				return func() {
					master.Restart()
					redistest.Eventually(t, 15*time.Second, "replica in sync again", func() bool {
						return strings.Contains(string(replica.Do("INFO", "replication")), "master_link_status:up")
					})
				}
			},
		},
		{
			// A cluster node that owns every slot, then none: -CLUSTERDOWN.
			name: "CLUSTERDOWN", want: "-CLUSTERDOWN ",
			start: func(t *testing.T) (*redistest.Server, *redistest.Server) {
				// A short node timeout makes the node serve again soon after it gets its slots back.
				node := redistest.Start(t, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
					"--cluster-node-timeout", "500")
				expectDo(t, node.Dial(), "+OK\r\n", "CLUSTER", "ADDSLOTSRANGE", "0", "16383")
				redistest.Eventually(t, 10*time.Second, "cluster state ok", func() bool {
					return strings.Contains(string(node.Do("CLUSTER", "INFO")), "cluster_state:ok")
				})
				return node, node
			},
			fail: func(t *testing.T, node, _ *redistest.Server) func() {
				expectDo(t, node.Dial(), "+OK\r\n", "CLUSTER", "DELSLOTSRANGE", "0", "16383")
				redistest.Eventually(t, 5*time.Second, "slots not served", func() bool {
					return strings.HasPrefix(string(node.Do("GET", "x")), "-CLUSTERDOWN")
				})
				return func() {
					expectDo(t, node.Dial(), "+OK\r\n", "CLUSTER", "ADDSLOTSRANGE", "0", "16383")
					redistest.Eventually(t, 10*time.Second, "cluster state ok", func() bool {
						return strings.Contains(string(node.Do("CLUSTER", "INFO")), "cluster_state:ok")
					})
				}
			},
		},
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			redis, writer := sc.start(t)
			p := startProxyOn(t, redis, faultConfig)
			c := p.dial()
			// The keys are written to Redis directly (a replica takes them from its master), one by one: a cluster
			// node refuses a multi-key command across slots.
			w := writer.Dial()
			for _, kv := range [][2]string{{"s:1", "one"}, {"s:2", "two"}, {"f:1", "kept"}, {"u:1", "uncached"}} {
				expectDo(t, w, "+OK\r\n", "SET", kv[0], kv[1])
			}
			redistest.Eventually(t, 5*time.Second, "the keys are readable", func() bool {
				return p.do("GET", "s:2") == bulk("two")
			})
			p.settle()
			expectDo(t, c, bulk("one"), "GET", "s:1")
			expectDo(t, c, bulk("two"), "GET", "s:2")
			expectDo(t, c, bulk("kept"), "GET", "f:1")
			stale := p.srv.Stats().StaleOnError.Load()
			// The entries must be past their hard TTL (1h) for a read to go upstream at all while tracking is up,
			// and within max_stale (1h) of it to be served stale.
			p.clock.Advance(90 * time.Minute)

			restore := sc.fail(t, redis, writer)
			isRedisErr := func(r string) bool { return strings.HasPrefix(r, sc.want) }
			p.runFaultChecks(t, sc.name, []faultCheck{
				{[]string{"GET", "s:1"}, replyIs(bulk("one")), "the value from memory"},
				{[]string{"MGET", "s:1", "s:2"}, replyIs("*2\r\n" + bulk("one") + bulk("two")), "the values from memory"},
				{[]string{"GET", "f:1"}, isRedisErr, "Redis's " + sc.want + "error"},
				{[]string{"GET", "u:1"}, isRedisErr, "Redis's " + sc.want + "error"},
				{[]string{"SET", "s:3", "x"}, replyIsError, "Redis's error (a replica says READONLY)"},
			})
			if got := p.srv.Stats().StaleOnError.Load() - stale; got < 3 {
				t.Errorf("stale_on_error moved by %d; want 3", got)
			}
			restore()
			redistest.Eventually(t, 15*time.Second, "featcache serves from Redis again", func() bool {
				return p.do("GET", "f:1") == bulk("kept")
			})
			// The failed write was not applied: Redis refused it.
			expectDo(t, c, "$-1\r\n", "GET", "s:3")
		})
	}
}

// longOr returns short, or long under -tags long.
func longOr[T any](short, long T) T {
	if longRun {
		return long
	}
	return short
}

// TestUnsubscribeFromHungRedis: leaving subscribed mode waits for Redis's confirmation as a direct client would:
// with Redis hung the reply comes when Redis continues. With upstream.command_timeout set, the client gets the
// timeout error after it instead, and an ordinary connection back.
func TestUnsubscribeFromHungRedis(t *testing.T) {
	for _, bounded := range []bool{false, true} {
		name, cfg := "no command_timeout", faultConfig
		if bounded {
			name, cfg = "command_timeout", strings.Replace(faultConfig, "timeout: 300ms", "timeout: 300ms, command_timeout: 300ms", 1)
		}
		t.Run(name, func(t *testing.T) {
			redis := redistest.Start(t)
			p := startProxyOn(t, redis, cfg)
			c := p.dial()
			expectDo(t, c, "*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n", "SUBSCRIBE", "ch")
			redis.Pause()
			start := time.Now()
			if err := c.Send("UNSUBSCRIBE"); err != nil {
				t.Fatal(err)
			}
			if !bounded {
				if got, err := c.ReadTimeout(3 * faultTimeout); err == nil {
					redis.Resume()
					t.Fatalf("UNSUBSCRIBE from a hung Redis answered %q before Redis did", got)
				}
				redis.Resume()
				if got, err := c.ReadTimeout(5 * time.Second); err != nil || string(got) != "*3\r\n$11\r\nunsubscribe\r\n$2\r\nch\r\n:0\r\n" {
					t.Fatalf("UNSUBSCRIBE once Redis continues: got %q, %v; want Redis's confirmation", got, err)
				}
			} else {
				got, err := c.ReadTimeout(5 * time.Second)
				redis.Resume()
				if err != nil || !strings.HasPrefix(string(got), "-ERR featcache upstream timeout: Redis did not answer within upstream.command_timeout") {
					t.Fatalf("UNSUBSCRIBE from a hung Redis: got %q, %v; want the command timeout error", got, err)
				}
				if took := time.Since(start); took > faultTimeout+faultSlack {
					t.Errorf("the error came after %v; want within command_timeout (%v)", took, faultTimeout)
				}
			}
			expectDo(t, c, "+PONG\r\n", "PING")
			expectDo(t, c, "+OK\r\n", "SET", "s:after", "v")
			expectDo(t, c, bulk("v"), "GET", "s:after")
		})
	}
}
