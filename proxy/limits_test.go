package proxy

import (
	"net"
	"net/http/httptest"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"featcache/internal/redistest"
)

// The connection and memory limits as a client meets them, through a real featcache in front of a real Redis.

func TestMaxClients(t *testing.T) {
	p := startProxy(t, "limits: {max_clients: 3}\n"+defaultTestConfig)
	const full = "-ERR max number of clients reached\r\n"
	var conns []*redistest.Conn
	for i := 0; i < 3; i++ {
		c := p.dial()
		expectDo(t, c, "+PONG\r\n", "PING")
		conns = append(conns, c)
	}
	extra := p.dial()
	start := time.Now()
	got, _ := extra.ReadTimeout(3 * time.Second)
	if string(got) != full {
		t.Fatalf("fourth client: got %q; want %q", got, full)
	}
	expectClosed(t, extra, time.Second)
	if took := time.Since(start); took > time.Second {
		t.Errorf("refused after %v; want at once", took)
	}
	if n := p.srv.Stats().Rejected.Load(); n != 1 {
		t.Errorf("rejected = %d; want 1", n)
	}
	rec := httptest.NewRecorder()
	p.srv.AdminHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, want := range []string{"featcache_rejected_connections_total 1\n", "featcache_client_buffer_bytes 0\n",
		`featcache_client_limit_disconnects_total{reason="idle_timeout"} 0`} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if stats := string(conns[0].Do("CACHE", "STATS")); !strings.Contains(stats, "rejected_connections:1\r\n") {
		t.Errorf("CACHE STATS lacks rejected_connections:1")
	}
	// The clients already in are served meanwhile; once one leaves, a new one gets in.
	expectDo(t, conns[0], "+PONG\r\n", "PING")
	conns[2].Close()
	redistest.Eventually(t, 5*time.Second, "a slot frees when a client leaves", func() bool {
		c, err := net.DialTimeout("tcp", p.addr, time.Second)
		if err != nil {
			return false
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		c.Write([]byte("PING\r\n"))
		b := make([]byte, 64)
		n, _ := c.Read(b)
		return string(b[:n]) == "+PONG\r\n"
	})

	// The refusal is Redis's own, byte for byte.
	ref := redistest.Start(t, "--maxclients", "1")
	first := redistest.Dial(t, ref.Addr())
	expectDo(t, first, "+PONG\r\n", "PING")
	second := redistest.Dial(t, ref.Addr())
	if got, _ := second.ReadTimeout(3 * time.Second); string(got) != full {
		t.Errorf("Redis --maxclients 1: got %q; the test expects %q", got, full)
	}
}

func TestIdleTimeout(t *testing.T) {
	p := startProxy(t, "limits: {idle_timeout: 1s}\n"+defaultTestConfig)
	rc := p.redis.Dial()

	active := p.dial()
	sub := p.dial()
	expectDo(t, sub, "*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n", "SUBSCRIBE", "ch")
	blocked := p.dial()
	if err := blocked.Send("BLPOP", "idle:q", "0"); err != nil {
		t.Fatal(err)
	}
	idle := p.dial()
	expectDo(t, idle, "+PONG\r\n", "PING")
	start := time.Now()
	closed := make(chan time.Duration, 1)
	go func() {
		got, err := idle.ReadTimeout(10 * time.Second)
		if len(got) > 0 || err == nil || strings.Contains(err.Error(), "timeout") {
			closed <- -1
			return
		}
		closed <- time.Since(start)
	}()

	// A client that keeps sending stays, while the idle one is closed after about a second, silently (as Redis
	// closes idle clients), and for two more idle periods after that.
	var idleFor time.Duration
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); {
		expectDo(t, active, "+PONG\r\n", "PING")
		if idleFor == 0 {
			select {
			case idleFor = <-closed:
				if idleFor < 0 {
					t.Fatal("the idle client got a reply or was not closed within 10s")
				}
				end = time.Now().Add(2 * time.Second)
			default:
			}
		}
		<-time.After(50 * time.Millisecond)
	}
	if idleFor < time.Second {
		t.Errorf("idle client closed after %v; want no sooner than idle_timeout (1s)", idleFor)
	}
	// Subscribed and blocked clients were never idle.
	if n := blockedOn(t, rc, "blpop"); n != 1 {
		t.Fatalf("blocked clients in Redis: %d; want the BLPOP still waiting", n)
	}
	expectDo(t, rc, ":1\r\n", "PUBLISH", "ch", "still here")
	expectRead(t, sub, "*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$10\r\nstill here\r\n")
	expectDo(t, rc, ":1\r\n", "RPUSH", "idle:q", "x")
	expectRead(t, blocked, "*2\r\n$6\r\nidle:q\r\n$1\r\nx\r\n")
	if n := p.srv.Stats().IdleTimeouts.Load(); n != 1 {
		t.Errorf("idle timeouts = %d; want 1", n)
	}
	// Back from the blocking command, the client is an ordinary one again, and idles out.
	expectClosed(t, blocked, 5*time.Second)
}

func TestIdleTimeoutOffByDefault(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	if p.cfg.Limits.IdleTimeout != 0 {
		t.Fatalf("idle_timeout defaults to %v; want 0", p.cfg.Limits.IdleTimeout)
	}
	c := p.dial()
	expectDo(t, c, "+PONG\r\n", "PING")
	if got, err := c.ReadTimeout(1500 * time.Millisecond); err == nil || len(got) > 0 {
		t.Fatalf("got %q, %v; want the connection open and silent", got, err)
	}
	expectDo(t, c, "+PONG\r\n", "PING")
}

// TestSlowReaderDisconnected: a client that pipelines requests and never reads their replies is disconnected after
// limits.output_timeout, holding at most about one flush of replies meanwhile, and other clients are served all along.
func TestSlowReaderDisconnected(t *testing.T) {
	p := startProxy(t, "limits: {output_timeout: 300ms}\n"+defaultTestConfig)
	value := strings.Repeat("v", 100<<10)
	setup := p.dial()
	expectDo(t, setup, "+OK\r\n", "SET", "slow:k", value)
	setup.Close()

	slow := p.dial()
	var pipeline []byte
	for i := 0; i < 400; i++ { // 40 MB of replies
		pipeline = append(pipeline, redistest.Encode("GET", "slow:k")...)
	}
	go func() {
		slow.NetConn().SetWriteDeadline(time.Now().Add(20 * time.Second))
		slow.NetConn().Write(pipeline) // stalls once featcache stops reading: that is the point
	}()
	other := p.dial()
	redistest.Eventually(t, 10*time.Second, "the slow reader is disconnected", func() bool {
		expectDo(t, other, "+PONG\r\n", "PING")
		return p.srv.Stats().OutputTimeouts.Load() == 1
	})
	redistest.Eventually(t, 5*time.Second, "its memory is given back", func() bool {
		return p.srv.Clients() == 1 && p.srv.ClientMemory() == 0
	})
	if got := bulk(value); string(other.Do("GET", "slow:k")) != got {
		t.Errorf("GET after the slow reader left: wrong reply")
	}
}

// TestSlowSubscriberDisconnected: the same for a subscriber that stops reading its messages.
func TestSlowSubscriberDisconnected(t *testing.T) {
	p := startProxy(t, "limits: {output_timeout: 300ms}\n"+defaultTestConfig)
	sub := p.dial()
	expectDo(t, sub, "*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n", "SUBSCRIBE", "ch")
	pub := p.redis.Dial()
	msg := strings.Repeat("m", 64<<10)
	redistest.Eventually(t, 10*time.Second, "the subscriber that does not read is disconnected", func() bool {
		pub.Do("PUBLISH", "ch", msg)
		return p.srv.Stats().OutputTimeouts.Load() == 1
	})
	redistest.Eventually(t, 5*time.Second, "its dedicated upstream connection is closed", func() bool {
		return strings.HasPrefix(string(pub.Do("PUBLISH", "ch", "x")), ":0")
	})
}

func TestMaxOutputBytes(t *testing.T) {
	p := startProxy(t, "limits: {max_output_bytes: 1MB}\n"+defaultTestConfig)
	value := strings.Repeat("v", 100<<10)
	c := p.dial()
	expectDo(t, c, "+OK\r\n", "SET", "out:k", value)
	expectDo(t, c, bulk(value), "GET", "out:k")

	// A pipeline whose replies add up to 5 MB is fine: they are written as they are produced.
	var cmds [][]string
	for i := 0; i < 50; i++ {
		cmds = append(cmds, []string{"GET", "out:k"})
	}
	writeRaw(t, c, encodePipeline(cmds...))
	for i, f := range readFrames(t, c, len(cmds)) {
		if f != bulk(value) {
			t.Fatalf("reply %d of the pipeline is wrong", i)
		}
	}

	// One reply over 1 MB is not: from memory (an MGET naming a cached key twenty times) or from Redis (LRANGE).
	const closed = "-ERR featcache reply exceeds limits.max_output_bytes, connection closed\r\n"
	mget := []string{"MGET"}
	for i := 0; i < 20; i++ {
		mget = append(mget, "out:k")
	}
	rpush := []string{"RPUSH", "out:list"}
	for i := 0; i < 12; i++ {
		rpush = append(rpush, value)
	}
	expectDo(t, c, ":12\r\n", rpush...)
	for _, tc := range [][]string{mget, {"LRANGE", "out:list", "0", "-1"}} {
		c := p.dial()
		expectDo(t, c, "+PONG\r\n", "PING")
		expectDo(t, c, closed, tc...)
		expectClosed(t, c, time.Second)
	}
	if n := p.srv.Stats().OutputLimits.Load(); n != 2 {
		t.Errorf("output limit disconnects = %d; want 2", n)
	}
	// A big MGET is cut short while it is built, not after: featcache never held 20 values for it.
	expectDo(t, p.dial(), "+PONG\r\n", "PING")
}

// TestClientMemoryBudget: the read buffers of clients sending large commands are reserved from
// limits.max_clients_memory before they grow; a client that would pass it is refused and closed, the others are not
// disturbed, and the memory returns to the budget when a client leaves or its large command is done.
func TestClientMemoryBudget(t *testing.T) {
	p := startProxy(t, "limits: {max_request_bytes: 1MB, max_output_bytes: 1MB, max_clients_memory: 3MB}\n"+defaultTestConfig)
	const size = 900 << 10
	value := strings.Repeat("x", size)
	header := "*3\r\n$3\r\nSET\r\n$7\r\nbudget1\r\n$" + strconv.Itoa(size) + "\r\n"
	// Three clients send most of a 900 KB SET and wait: each holds a read buffer of about 1 MB, 900 KB of it
	// beyond its baseline.
	var senders []*redistest.Conn
	for i := 0; i < 3; i++ {
		c := p.dial()
		writeRaw(t, c, []byte(header+value[:size-10]))
		senders = append(senders, c)
		redistest.Eventually(t, 5*time.Second, "the large command's buffer is reserved", func() bool {
			return p.srv.ClientMemory() > int64(i+1)*800<<10
		})
	}
	if used := p.srv.ClientMemory(); used > 3<<20 {
		t.Fatalf("client memory %d is over the budget", used)
	}
	// A fourth one cannot: it is told, and closed.
	fourth := p.dial()
	writeRaw(t, fourth, []byte(header+value[:size-10]))
	got, _ := fourth.ReadTimeout(5 * time.Second)
	if want := "-ERR featcache client buffers are full (limits.max_clients_memory), connection closed\r\n"; string(got) != want {
		t.Fatalf("fourth large command: got %q; want %q", got, want)
	}
	expectClosed(t, fourth, time.Second)
	// Small clients are served meanwhile: they need no more than their baseline.
	expectDo(t, p.dial(), "+PONG\r\n", "PING")

	// A client that leaves gives its share back; then a large command can complete, which needs its request
	// twice (read, and sent upstream), and gives it all back once it is done.
	senders[2].Close()
	redistest.Eventually(t, 5*time.Second, "the leaving client's buffer returns to the budget", func() bool {
		return p.srv.ClientMemory() < 2<<20
	})
	for _, c := range senders[:2] {
		writeRaw(t, c, []byte(value[size-10:]+"\r\n"))
		expectRead(t, c, "+OK\r\n")
	}
	redistest.Eventually(t, 5*time.Second, "the buffers return to the budget", func() bool { return p.srv.ClientMemory() == 0 })
	expectDo(t, senders[0], ":921600\r\n", "STRLEN", "budget1")
	if n := p.srv.Stats().MemoryLimits.Load(); n != 1 {
		t.Errorf("memory limit disconnects = %d; want 1", n)
	}
}

// TestMultiQueueBounded: Redis holds a transaction's queue, so a transaction larger than max_request_bytes runs
// as it would on Redis; featcache keeps copies of the queued writes' arguments only up to that bound, and past it
// EXEC flushes the local tier instead of invalidating key by key, so that read-your-writes holds in bounded memory.
func TestMultiQueueBounded(t *testing.T) {
	p := startProxy(t, "limits: {max_request_bytes: 64KB}\n"+ttlOnlyConfig)
	c := p.dial()
	for _, k := range []string{"tx:a", "tx:b", "tx:c", "tx:other"} {
		expectDo(t, c, "+OK\r\n", "SET", k, "old")
		expectDo(t, c, "$3\r\nold\r\n", "GET", k)
	}
	v := strings.Repeat("v", 30<<10)
	expectExec(t, c, "*3\r\n+OK\r\n+OK\r\n+OK\r\n",
		[]string{"SET", "tx:a", v}, []string{"SET", "tx:b", v}, []string{"SET", "tx:c", v})
	for _, k := range []string{"tx:a", "tx:b", "tx:c"} {
		expectDo(t, c, bulk(v), "GET", k)
	}
	// The flush took the unrelated key too: without tracking, its value changed behind featcache shows it.
	p.redis.Do("SET", "tx:other", "new")
	expectDo(t, c, "$3\r\nnew\r\n", "GET", "tx:other")
	// Within the bound, the writes' own keys are invalidated and nothing else.
	expectDo(t, c, "$3\r\nnew\r\n", "GET", "tx:other")
	p.redis.Do("SET", "tx:other", "newer")
	expectExec(t, c, "*1\r\n+OK\r\n", []string{"SET", "tx:a", "small"})
	expectDo(t, c, "$5\r\nsmall\r\n", "GET", "tx:a")
	expectDo(t, c, "$3\r\nnew\r\n", "GET", "tx:other")
}

// TestShutdownClosesIdleClients: Shutdown does not wait for clients that have nothing in progress (an idle one,
// a subscriber): they are closed at once and Shutdown returns long before its deadline.
func TestShutdownClosesIdleClients(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	idle := p.dial()
	expectDo(t, idle, "+PONG\r\n", "PING")
	sub := p.dial()
	expectDo(t, sub, "*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n", "SUBSCRIBE", "ch")
	shutdownIdle(t, p, 2*time.Second)
	expectClosed(t, idle, time.Second)
	expectClosed(t, sub, time.Second)
}

// TestConfiguredProtocolLimits: the limits.* request bounds of the configuration reach the connection guard.
func TestConfiguredProtocolLimits(t *testing.T) {
	p := startProxy(t, "limits: {max_args: 4, max_request_bytes: 2KB, max_inline_bytes: 1KB}\n"+defaultTestConfig)
	other := p.dial()
	cases := []struct {
		name, in, want string
	}{
		{"five arguments", string(redistest.Encode("MGET", "a", "b", "c", "d")), "-ERR Protocol error: invalid multibulk length\r\n"},
		{"a bulk over max_request_bytes", "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3000\r\n", "-ERR Protocol error: invalid bulk length\r\n"},
		{"an inline line over max_inline_bytes", "ECHO " + strings.Repeat("x", 1100) + "\r\n", "-ERR Protocol error: too big inline request\r\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := sendUntilClose(t, p.addr, []byte(tc.in), 3*time.Second, "")
			if got.out != tc.want || !got.closed || got.took > time.Second {
				t.Errorf("got %q (closed %v after %v); want %q and the connection closed within 1s", got.out, got.closed, got.took, tc.want)
			}
			expectDo(t, other, "+PONG\r\n", "PING")
		})
	}
	// Just within the limits, the same commands are served.
	expectDo(t, other, "*3\r\n$-1\r\n$-1\r\n$-1\r\n", "MGET", "a", "b", "c")
	expectDo(t, other, "+OK\r\n", "SET", "k", strings.Repeat("v", 1900))
	writeRaw(t, other, []byte("ECHO "+strings.Repeat("x", 1000)+"\r\n"))
	expectRead(t, other, bulk(strings.Repeat("x", 1000)))
	if n := p.srv.Stats().ProtocolErrors.Load(); n != 3 {
		t.Errorf("protocol errors = %d; want 3", n)
	}
}

// TestMemoryLimitFollowsReservations: with a base, the Go memory limit is the base plus what clients reserved,
// in whole memoryStep steps rounded down (a reservation under a step leaves it at the base), and comes back down
// when they give it back.
func TestMemoryLimitFollowsReservations(t *testing.T) {
	old := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(old) })
	const base = 1 << 30
	b := &budget{limit: 256 << 20, base: base}
	for _, step := range []struct {
		take, give int64
		want       int64 // limit - base
	}{
		{take: 1 << 20, want: 0},
		{take: 19 << 20, want: memoryStep},
		{take: 20 << 20, want: 2 * memoryStep},
		{give: 40 << 20, want: 0},
	} {
		if step.take > 0 && !b.take(step.take) {
			t.Fatal("take refused")
		}
		if step.give > 0 {
			b.give(step.give)
		}
		if got := debug.SetMemoryLimit(-1); got-base != step.want {
			t.Fatalf("limit with %d MiB reserved: base + %d MiB; want base + %d MiB", b.used.Load()>>20, (got-base)>>20, step.want>>20)
		}
	}
}

// TestMemoryLimitKeepsGCRoom: when the live heap leaves the collector less than gcRoom under the base limit, the
// limit rises to the live heap plus the runtime's other memory plus gcRoom, and comes back to the base once the
// floor is no longer needed.
func TestMemoryLimitKeepsGCRoom(t *testing.T) {
	old := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(old) })
	runtime.GC() // /gc/heap/live:bytes is what the last collection found
	b := &budget{limit: 256 << 20, base: 1 << 20}
	live, floor, moved := b.watch(newHeapSamples())
	if !moved || live <= 0 {
		t.Fatalf("watch: live %d, moved %t; want a live heap and a floor set", live, moved)
	}
	if floor < live+gcRoom {
		t.Errorf("floor %d MiB; want at least the live heap (%d MiB) + gcRoom", floor>>20, live>>20)
	}
	if got := debug.SetMemoryLimit(-1); got != floor {
		t.Errorf("limit %d MiB; want the floor, %d MiB", got>>20, floor>>20)
	}
	if _, _, moved := b.watch(newHeapSamples()); moved && b.floor.Load() > floor {
		t.Errorf("a second look moved the floor up to %d MiB from %d MiB with nothing allocated", b.floor.Load()>>20, floor>>20)
	}

	b.base = floor + 64<<20 // plenty: the base rules again
	b.follow(0)
	if got := debug.SetMemoryLimit(-1); got != b.base {
		t.Errorf("limit %d MiB with a base above the floor; want the base, %d MiB", got>>20, b.base>>20)
	}
}

func TestGCFloor(t *testing.T) {
	for _, tc := range []struct {
		name        string
		live, other int64
		want        int64
	}{
		{"whole MiB", 100 << 20, 10 << 20, 110<<20 + gcRoom},
		{"rounded up", 100<<20 + 1, 0, 101<<20 + gcRoom},
		{"negative other ignored", 50 << 20, -5, 50<<20 + gcRoom},
		{"a sixteenth of a large heap", 320 << 20, 8 << 20, 328<<20 + 20<<20},
	} {
		if got := gcFloor(tc.live, tc.other); got != tc.want {
			t.Errorf("%s: gcFloor = %d; want %d", tc.name, got, tc.want)
		}
	}
}
