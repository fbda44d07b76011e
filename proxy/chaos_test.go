package proxy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"featcache/internal/redistest"
	"featcache/internal/resp"
)

// TestChaos puts featcache under load from many clients (reads, writes, MGET, transactions, WATCH) for a fixed
// time while it kills featcache's upstream connections, hangs Redis, restarts it (an append-only file fsynced at
// every write, so an acknowledged write survives), and sends garbage on other connections. Then it checks that
// every acknowledged write is in Redis, that no read returned a value that was never written, that no client read
// an older value of its own key than its last acknowledged write, that featcache serves what Redis holds, and
// that goroutines and memory return to their baseline. It runs for a few seconds; -tags long runs it for minutes.
func TestChaos(t *testing.T) {
	duration := longOr(8*time.Second, 3*time.Minute)
	redis := redistest.Start(t, "--appendonly", "yes", "--appendfsync", "always")
	p := startProxyOn(t, redis, `
upstream: {timeout: 500ms}
limits: {output_timeout: 1s}
policies:
  - {name: stale, prefix: "cs:", soft_ttl: 300ms, hard_ttl: 1s, jitter: 0.2, negative_ttl: 500ms, on_upstream_error: serve_stale, max_stale: 1h}
  - {name: fail, prefix: "cf:", soft_ttl: 300ms, hard_ttl: 2s, jitter: 0.2}
`)
	// Every shared upstream connection is dialed before the baseline is taken (they are dialed on first use).
	warm := p.dial()
	for i := 0; i < 8; i++ {
		expectDo(t, warm, "$-1\r\n", "GET", "cu:warm")
	}
	warm.Close()
	runtime.GC()
	baseGoroutines := runtime.NumGoroutine()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	baseHeap := ms.HeapAlloc

	h := newChaosHistory()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	const clients = 12
	for id := 0; id < clients; id++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			newChaosClient(p.addr, id, clients, h).run(stop)
		}()
	}
	var garbage atomic.Int64
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sendGarbage(p.addr, uint64(i), stop, &garbage)
		}()
	}

	// The faults, from the test goroutine, one after another until the time is up.
	faults := map[string]int{}
	rng := rand.New(rand.NewPCG(7, 11))
	for i, end := 0, time.Now().Add(duration); time.Now().Before(end); i++ {
		<-time.After(time.Duration(200+rng.IntN(400)) * time.Millisecond)
		switch i % 4 {
		case 0, 2:
			// featcache's upstream connections: shared, dedicated and tracking.
			faults["client kill"] += killConns(redis, upstreamConns(redis, "featcache"))
		case 1:
			redis.Pause()
			<-time.After(time.Duration(100+rng.IntN(700)) * time.Millisecond)
			redis.Resume()
			faults["hang"]++
		case 3:
			h.restarting(true)
			redis.Restart()
			// Loading the append-only file writes every key again: a WATCH that Redis accepted meanwhile (it
			// does while loading) sees its key modified, and the EXEC aborts, as it should.
			rc := redis.Dial()
			redistest.Eventually(t, 10*time.Second, "Redis loaded its data", func() bool {
				return strings.Contains(string(rc.Do("INFO", "persistence")), "loading:0\r\n")
			})
			rc.Close()
			h.restarting(false)
			faults["restart"]++
		}
	}
	close(stop)
	wg.Wait()

	// Verification: Redis holds every acknowledged write (or a later attempt of the same client).
	redistest.Eventually(t, 10*time.Second, "featcache recovered", func() bool {
		_, up := p.up.Tracking()
		return up && p.do("PING") == "+PONG\r\n"
	})
	p.settle()
	rc := redis.Dial()
	verified := 0
	for _, key := range h.keys() {
		v, isNil, _ := resp.BulkPayload(rc.Do("GET", key))
		if ok, why := h.allowed(key, string(v), isNil); !ok {
			h.violate("key %s: Redis holds %s", key, why)
		} else {
			verified += h.ackedCount(key)
		}
		// featcache converges on what Redis holds: no stale value is stuck in memory.
		want := string(rc.Do("GET", key))
		redistest.Eventually(t, 5*time.Second, "featcache serves what Redis holds for "+key, func() bool {
			return p.do("GET", key) == want
		})
	}
	for key, value := range h.logs {
		if got := string(rc.Do("GET", key)); got != bulk(value) {
			h.violate("log key %s: acknowledged %q, Redis holds %q", key, value, got)
		} else {
			verified++
		}
	}

	// The history is the test's own memory, not featcache's: it is dropped before the heap is compared.
	logs := len(h.logs)
	h.forget()
	backToBaseline(t, baseGoroutines, baseHeap, 16<<20, func() string {
		if n, m := p.srv.Clients(), p.srv.ClientMemory(); n != 0 || m != 0 {
			return fmt.Sprintf("%d clients still connected, %d bytes of client buffers reserved", n, m)
		}
		return ""
	})
	runtime.ReadMemStats(&ms)

	st := p.srv.Stats()
	t.Logf("chaos for %v: %d requests (%d error replies), faults injected %v, bad inputs sent %d, "+
		"acknowledged writes %d (%d of them to log keys), verified %d, stale served on error %d, panics %d, "+
		"violations %d; goroutines %d (baseline %d), heap %d KB (baseline %d KB)",
		duration, h.requests.Load(), h.errors.Load(), faults, garbage.Load(), h.ackedWrites.Load(), logs, verified,
		st.StaleOnError.Load(), st.Panics.Load(), len(h.violations), runtime.NumGoroutine(), baseGoroutines,
		ms.HeapAlloc>>10, baseHeap>>10)
	for i, v := range h.violations {
		if i == 20 {
			t.Errorf("... and %d more", len(h.violations)-20)
			break
		}
		t.Error(v)
	}
	if verified != int(h.ackedWrites.Load()) {
		t.Errorf("verified %d of %d acknowledged writes", verified, h.ackedWrites.Load())
	}
	if st.Panics.Load() != 0 {
		t.Errorf("%d connection panics", st.Panics.Load())
	}
	if h.requests.Load() < 1000 || h.ackedWrites.Load() < 100 || faults["restart"] == 0 || faults["hang"] == 0 {
		t.Errorf("the run was too small to mean much: %d requests, %d acknowledged writes, faults %v",
			h.requests.Load(), h.ackedWrites.Load(), faults)
	}
}

// backToBaseline waits until the goroutines and the heap are back to their baselines (the heap within slack) and
// other() reports nothing, or fails the test with what is left, goroutine stacks included.
func backToBaseline(t *testing.T, goroutines int, heap, slack uint64, other func() string) {
	t.Helper()
	var ms runtime.MemStats
	var why string
	for deadline := time.Now().Add(20 * time.Second); ; {
		runtime.GC()
		runtime.ReadMemStats(&ms)
		n := runtime.NumGoroutine()
		switch {
		case n > goroutines+2:
			why = fmt.Sprintf("%d goroutines; baseline %d", n, goroutines)
		case ms.HeapAlloc > heap+slack:
			why = fmt.Sprintf("heap %d KB; baseline %d KB", ms.HeapAlloc>>10, heap>>10)
		default:
			why = other()
		}
		if why == "" {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("not back to the baseline within 20s: %s\n%s", why, buf[:runtime.Stack(buf, true)])
		}
		<-time.After(50 * time.Millisecond)
	}
}

// chaosHistory is what the clients did: every value ever sent for a key, which of them were acknowledged, the
// last acknowledged write of each key, the keys with writes that failed, and the violations found. Safe for
// concurrent use.
//
// A write that failed (an error, a timeout) may still be applied, and later than writes the same client made
// after it: Redis runs what it had read from a connection featcache gave up on, possibly after commands that
// arrived on new connections. So a key may end up holding a failed write of its client even after an acknowledged
// one; what it may never hold is an acknowledged value older than the last acknowledged one, or nothing at all
// once a write was acknowledged. Log keys, each written once, make the durability check exact: every
// acknowledged one must be in Redis with its value.
type chaosHistory struct {
	mu        sync.Mutex
	tried     map[string]map[string]bool // key -> values sent in writes, recorded before the write is sent
	ackedVals map[string]map[string]bool // key -> values acknowledged
	last      map[string]chaosAck        // key -> last acknowledged write
	failed    map[string]int             // key -> writes that got an error: applied or not, maybe later
	logs      map[string]string          // log key -> its acknowledged value
	// restarts are the intervals from the start of a Redis restart until it finished loading its data; the last
	// one's end is zero while it runs.
	restarts   [][2]time.Time
	violations []string

	requests, errors, ackedWrites atomic.Int64
}

// chaosAck is the last acknowledged write of a key, and how many acknowledged writes the key had.
type chaosAck struct {
	value  string
	seq    int64
	writes int
}

func newChaosHistory() *chaosHistory {
	return &chaosHistory{tried: map[string]map[string]bool{}, ackedVals: map[string]map[string]bool{},
		last: map[string]chaosAck{}, failed: map[string]int{}, logs: map[string]string{}}
}

func (h *chaosHistory) try(key, value string) {
	h.mu.Lock()
	if h.tried[key] == nil {
		h.tried[key] = map[string]bool{}
	}
	h.tried[key][value] = true
	h.mu.Unlock()
}

func (h *chaosHistory) acknowledge(key, value string) {
	h.ackedWrites.Add(1)
	h.mu.Lock()
	defer h.mu.Unlock()
	if strings.Contains(key, ":log:") {
		h.logs[key] = value
		return
	}
	if h.ackedVals[key] == nil {
		h.ackedVals[key] = map[string]bool{}
	}
	h.ackedVals[key][value] = true
	a := h.last[key]
	h.last[key] = chaosAck{value: value, seq: chaosSeq(value), writes: a.writes + 1}
}

// restarting marks the beginning (true) or the end (false) of a Redis restart and the loading of its data.
func (h *chaosHistory) restarting(begin bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if begin {
		h.restarts = append(h.restarts, [2]time.Time{time.Now()})
	} else {
		h.restarts[len(h.restarts)-1][1] = time.Now()
	}
}

// duringRestart reports whether a Redis restart, loading included, overlapped the interval [from, to].
func (h *chaosHistory) duringRestart(from, to time.Time) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range h.restarts {
		if !r[0].After(to) && (r[1].IsZero() || !r[1].Before(from)) {
			return true
		}
	}
	return false
}

func (h *chaosHistory) fail(key string) {
	h.mu.Lock()
	h.failed[key]++
	h.mu.Unlock()
}

// allowed says whether key may hold value (or nothing, for "") once its writer's acknowledged writes so far are
// done, and why not.
func (h *chaosHistory) allowed(key, value string, isNil bool) (bool, string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	last := h.last[key]
	switch {
	case isNil && last.seq > 0:
		return false, "nothing, after the acknowledged write " + last.value
	case isNil:
		return true, ""
	case !h.tried[key][value]:
		return false, strconv.Quote(value) + ", which nobody wrote"
	case h.ackedVals[key][value] && chaosSeq(value) < last.seq:
		return false, strconv.Quote(value) + ", an acknowledged value older than the acknowledged " + last.value
	}
	return true, ""
}

func (h *chaosHistory) attempted(key, value string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.tried[key][value]
}

// ackedCount is the number of acknowledged writes of key.
func (h *chaosHistory) ackedCount(key string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.last[key].writes
}

func (h *chaosHistory) failedWrites(key string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.failed[key]
}

func (h *chaosHistory) keys() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	keys := make([]string, 0, len(h.tried))
	for k := range h.tried {
		if !strings.Contains(k, ":log:") {
			keys = append(keys, k)
		}
	}
	return keys
}

// forget drops what the history recorded, all but the counters and the violations.
func (h *chaosHistory) forget() {
	h.mu.Lock()
	h.tried, h.ackedVals, h.last, h.failed, h.logs = nil, nil, nil, nil, nil
	h.mu.Unlock()
}

func (h *chaosHistory) violate(format string, args ...any) {
	h.mu.Lock()
	h.violations = append(h.violations, fmt.Sprintf(format, args...))
	h.mu.Unlock()
}

// chaosSeq reads the sequence number of a value written by a chaos client ("c<id>-<seq>").
func chaosSeq(v string) int64 {
	_, seq, _ := strings.Cut(v, "-")
	n, _ := strconv.ParseInt(seq, 10, 64)
	return n
}

// chaosClient is one client of the chaos test. It writes only its own keys, so what it reads of them can be held
// to read-your-writes; it reads everyone's.
type chaosClient struct {
	addr    string
	id, all int
	h       *chaosHistory
	rng     *rand.Rand
	seq     int64
	logs    int
	nc      net.Conn
	r       *bufio.Reader
}

const chaosKeys = 6

func newChaosClient(addr string, id, all int, h *chaosHistory) *chaosClient {
	return &chaosClient{addr: addr, id: id, all: all, h: h, rng: rand.New(rand.NewPCG(uint64(id), 42))}
}

// key returns key i of client id, under one of the three prefixes (serve_stale, fail, and no policy).
func chaosKey(id, i int) string {
	return [...]string{"cs:", "cf:", "cu:"}[i%3] + strconv.Itoa(id) + ":" + strconv.Itoa(i)
}

func (c *chaosClient) ownKey() string { return chaosKey(c.id, c.rng.IntN(chaosKeys)) }

func (c *chaosClient) anyKey() string { return chaosKey(c.rng.IntN(c.all), c.rng.IntN(chaosKeys)) }

// logKey returns a new key this client writes once, under one of the three prefixes.
func (c *chaosClient) logKey() string {
	c.logs++
	return [...]string{"cs:", "cf:", "cu:"}[c.logs%3] + "log:" + strconv.Itoa(c.id) + ":" + strconv.Itoa(c.logs)
}

func (c *chaosClient) value() string {
	c.seq++
	return "c" + strconv.Itoa(c.id) + "-" + strconv.FormatInt(c.seq, 10)
}

func (c *chaosClient) run(stop <-chan struct{}) {
	defer func() {
		if c.nc != nil {
			c.nc.Close()
		}
	}()
	for {
		select {
		case <-stop:
			return
		default:
		}
		if c.nc == nil {
			nc, err := net.DialTimeout("tcp", c.addr, 5*time.Second)
			if err != nil {
				c.h.violate("client %d: cannot connect: %v", c.id, err)
				return
			}
			c.nc, c.r = nc, bufio.NewReader(nc)
		}
		var err error
		switch op := c.rng.IntN(10); {
		case op < 3:
			err = c.set()
		case op < 6:
			err = c.get(c.rng.IntN(2) == 0)
		case op < 7:
			err = c.mset()
		case op < 8:
			err = c.mget()
		case op < 9:
			err = c.transaction()
		default:
			err = c.watched()
		}
		if err != nil {
			// featcache closes no well-behaved client, whatever Redis does.
			c.h.violate("client %d: connection failed: %v", c.id, err)
			c.nc.Close()
			c.nc = nil
		}
	}
}

// send writes cmds as one pipeline and reads one reply per command.
func (c *chaosClient) send(cmds ...[]string) ([]string, error) {
	var b []byte
	for _, cmd := range cmds {
		b = append(b, redistest.Encode(cmd...)...)
	}
	c.nc.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.nc.Write(b); err != nil {
		return nil, err
	}
	replies := make([]string, len(cmds))
	for i := range cmds {
		frame, err := resp.ReadFrame(c.r, nil)
		if err != nil {
			return nil, err
		}
		replies[i] = string(frame)
		c.h.requests.Add(1)
		if strings.HasPrefix(replies[i], "-") {
			c.h.errors.Add(1)
		}
	}
	return replies, nil
}

func (c *chaosClient) set() error {
	key, v := c.ownKey(), c.value()
	if c.rng.IntN(3) == 0 {
		key = c.logKey()
	}
	c.h.try(key, v)
	r, err := c.send([]string{"SET", key, v})
	if err != nil {
		return err
	}
	c.ackIf(r[0] == "+OK\r\n", r[0], key, v)
	return nil
}

func (c *chaosClient) mset() error {
	k1, k2 := c.ownKey(), c.ownKey()
	if k1 == k2 {
		return c.set()
	}
	v1, v2 := c.value(), c.value()
	c.h.try(k1, v1)
	c.h.try(k2, v2)
	r, err := c.send([]string{"MSET", k1, v1, k2, v2})
	if err != nil {
		return err
	}
	c.ackIf(r[0] == "+OK\r\n", r[0], k1, v1)
	c.ackIf(r[0] == "+OK\r\n", r[0], k2, v2)
	return nil
}

// ackIf records an acknowledged write, and any reply to a write that is neither +OK nor an error as a violation.
func (c *chaosClient) ackIf(ok bool, reply, key, v string) {
	switch {
	case ok:
		c.h.acknowledge(key, v)
		return
	case !strings.HasPrefix(reply, "-"):
		c.h.violate("client %d: write of %s: unexpected reply %q", c.id, key, reply)
	}
	c.h.fail(key)
}

func (c *chaosClient) get(own bool) error {
	key := c.anyKey()
	if own {
		key = c.ownKey()
	}
	r, err := c.send([]string{"GET", key})
	if err != nil {
		return err
	}
	c.checkRead(key, r[0])
	return nil
}

func (c *chaosClient) mget() error {
	keys := []string{c.ownKey(), c.anyKey(), c.anyKey()}
	r, err := c.send(append([]string{"MGET"}, keys...))
	if err != nil {
		return err
	}
	if strings.HasPrefix(r[0], "-") {
		return nil
	}
	items, ok := splitBulkArray(r[0], len(keys))
	if !ok {
		c.h.violate("client %d: MGET %q: malformed reply %q", c.id, keys, r[0])
		return nil
	}
	for i, key := range keys {
		c.checkRead(key, items[i])
	}
	return nil
}

// transaction writes two own keys and reads one in MULTI/EXEC, as redis-py's default pipeline does.
func (c *chaosClient) transaction() error {
	k1, k2 := c.ownKey(), c.ownKey()
	for k2 == k1 {
		k2 = c.ownKey()
	}
	// k2 is a log key half the time: written once, so its acknowledgement must be in Redis exactly.
	if c.rng.IntN(2) == 0 {
		k2 = c.logKey()
	}
	v1, v2 := c.value(), c.value()
	c.h.try(k1, v1)
	c.h.try(k2, v2)
	r, err := c.send([]string{"MULTI"}, []string{"SET", k1, v1}, []string{"SET", k2, v2}, []string{"GET", k1})
	if err != nil {
		return err
	}
	exec, err := c.send([]string{"EXEC"})
	if err != nil {
		return err
	}
	want := "*3\r\n+OK\r\n+OK\r\n" + bulk(v1)
	// The transaction's EXEC is sent apart: it is pinned to a dedicated connection from its MULTI on, and a fault
	// of that connection shows in the queue-time replies; EXEC must then fail.
	// Redis's own queue-time errors (LOADING while it restarts) too.
	queuedOK := r[0] == "+OK\r\n" && r[1] == "+QUEUED\r\n" && r[2] == "+QUEUED\r\n" && r[3] == "+QUEUED\r\n"
	queueErr := false
	for _, reply := range r {
		queueErr = queueErr || strings.HasPrefix(reply, "-")
	}
	switch {
	case !queuedOK && !queueErr:
		c.h.violate("client %d: MULTI replies %q", c.id, r)
	case !queuedOK && !strings.HasPrefix(exec[0], "-"):
		c.h.violate("client %d: EXEC answered %q after the queue-time replies %q", c.id, exec[0], r)
	case exec[0] == want:
		c.h.acknowledge(k1, v1)
		c.h.acknowledge(k2, v2)
	case !strings.HasPrefix(exec[0], "-"):
		c.h.violate("client %d: EXEC: got %q; want %q or an error", c.id, exec[0], want)
	default:
		c.h.fail(k1)
		c.h.fail(k2)
	}
	return nil
}

// watched reads an own key under WATCH and writes it in a transaction: an optimistic update on a pinned connection.
func (c *chaosClient) watched() error {
	key, v := c.ownKey(), c.value()
	start := time.Now()
	r, err := c.send([]string{"WATCH", key}, []string{"GET", key})
	if err != nil {
		return err
	}
	if r[0] != "+OK\r\n" {
		if !strings.HasPrefix(r[0], "-") {
			c.h.violate("client %d: WATCH: %q", c.id, r[0])
		}
		_, err := c.send([]string{"UNWATCH"})
		return err
	}
	c.checkRead(key, r[1])
	watchFailed := strings.HasPrefix(r[1], "-")
	c.h.try(key, v)
	r, err = c.send([]string{"MULTI"}, []string{"SET", key, v}, []string{"EXEC"})
	if err != nil {
		return err
	}
	switch {
	case r[2] == "*1\r\n+OK\r\n":
		c.h.acknowledge(key, v)
	case r[2] == "*-1\r\n" && c.h.failedWrites(key) == 0 && !c.h.duringRestart(start, time.Now()) && !watchFailed:
		// The watched key changed: only this client writes it, none of its writes failed (one that failed may be
		// applied late), Redis was not loading its data (which rewrites every key), and the WATCH session did not
		// fail (featcache then answers *-1: the watch was lost), so that would be a violation.
		c.h.violate("client %d: EXEC after WATCH %s aborted, though nobody else writes the key", c.id, key)
	case r[2] == "*-1\r\n":
		c.h.fail(key)
	case !strings.HasPrefix(r[2], "-") && !strings.HasPrefix(r[1], "-"):
		c.h.violate("client %d: WATCH transaction: %q", c.id, r)
	default:
		c.h.fail(key)
	}
	if strings.HasPrefix(r[0], "-") || strings.HasPrefix(r[1], "-") || strings.HasPrefix(r[2], "-") {
		_, err = c.send([]string{"DISCARD"}, []string{"UNWATCH"})
	}
	return err
}

// checkRead holds a read reply of key to the history: an error, or a value some client wrote (or nil); for the
// reader's own key, what Redis may hold after the reader's acknowledged writes (chaosHistory).
func (c *chaosClient) checkRead(key, reply string) {
	if strings.HasPrefix(reply, "-") {
		return
	}
	v, isNil, ok := resp.BulkPayload([]byte(reply))
	switch {
	case !ok:
		c.h.violate("client %d: read of %s: unexpected reply %q", c.id, key, reply)
	case strings.HasPrefix(key[3:], strconv.Itoa(c.id)+":"):
		if ok, why := c.h.allowed(key, string(v), isNil); !ok {
			c.h.violate("client %d: read its own key %s: %s", c.id, key, why)
		}
	case !isNil && !c.h.attempted(key, string(v)):
		c.h.violate("client %d: read %q for %s, which nobody wrote", c.id, v, key)
	}
}

// splitBulkArray splits an array reply of n elements into their frames.
func splitBulkArray(reply string, n int) ([]string, bool) {
	elems, err := resp.ArrayElements([]byte(reply), nil)
	if err != nil || len(elems) != n {
		return nil, false
	}
	items := make([]string, n)
	for i, e := range elems {
		items[i] = string(e)
	}
	return items, true
}

// garbageInputs are what sendGarbage sends, cycling; each is a bad input a buggy or hostile client could send.
var garbageInputs = []func(rng *rand.Rand) []byte{
	func(*rand.Rand) []byte { return []byte("*2147483647\r\n") },
	func(*rand.Rand) []byte { return []byte("*1\r\n$2000000000\r\n") },
	func(*rand.Rand) []byte { return []byte("SET k \"unbalanced\r\n") },
	func(*rand.Rand) []byte { return []byte("*2\r\n$3\r\nGET\r\nnot-a-bulk\r\n") },
	func(*rand.Rand) []byte { return bytes.Repeat([]byte("x"), 70<<10) }, // an inline line over 64 KiB
	func(rng *rand.Rand) []byte { // random bytes
		b := make([]byte, 1+rng.IntN(512))
		for i := range b {
			b[i] = byte(rng.UintN(256))
		}
		return b
	},
	func(*rand.Rand) []byte { return []byte("*3\r\n$3\r\nSET\r\n$1\r\nk") },                   // cut off, then closed
	func(*rand.Rand) []byte { return []byte("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03") }, // a TLS ClientHello's start
	func(*rand.Rand) []byte {
		return append(redistest.Encode("GET", "cs:0:0"), "*-5\r\n$-1\r\n*0\r\n\r\n\n"...)
	},
	func(*rand.Rand) []byte { // a pipeline whose replies are never read
		var b []byte
		for i := 0; i < 2000; i++ {
			b = append(b, redistest.Encode("MGET", "cs:0:0", "cs:1:0", "cf:0:1")...)
		}
		return b
	},
}

// sendGarbage opens connections to addr and sends bad inputs until stop, counting them in sent.
func sendGarbage(addr string, seed uint64, stop <-chan struct{}, sent *atomic.Int64) {
	rng := rand.New(rand.NewPCG(seed, 99))
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		nc, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			continue
		}
		nc.SetDeadline(time.Now().Add(500 * time.Millisecond))
		nc.Write(garbageInputs[i%len(garbageInputs)](rng))
		sent.Add(1)
		io.Copy(io.Discard, io.LimitReader(nc, 1<<10)) // whatever featcache answers, until it closes or the deadline
		nc.Close()
	}
}
