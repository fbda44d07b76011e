package proxy

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"featcache/internal/redistest"
	"featcache/internal/resp"
	"featcache/internal/testkit"
)

// checkerDuration runs the consistency checker: `go test ./proxy -run Checker -checker=60s`. scripts/test.sh runs
// it for a few seconds; without the flag the default test run leaves it out.
var checkerDuration = flag.Duration("checker", 0, "run TestConsistencyChecker for this long (0: skip it)")

// staleBound is how long after a write acknowledged elsewhere (the other featcache, or Redis directly) a read
// through featcache may still return the older value. It is the invalidation latency plus, under the faults the
// checker injects, the time featcache takes to notice a lost tracking connection (a killed connection is noticed
// at once; a restarted Redis within the reconnect backoff).
const staleBound = time.Second

// ackLog is the history of one key's acknowledged writes: sequence numbers and when their acks arrived, both
// increasing (each key has one writer).
type ackLog struct {
	mu    sync.Mutex
	seqs  []int64
	times []time.Time
	via   string // "A", "B" or "redis": where the key's writer writes
}

func (l *ackLog) add(seq int64, at time.Time) {
	l.mu.Lock()
	l.seqs = append(l.seqs, seq)
	l.times = append(l.times, at)
	l.mu.Unlock()
}

// ackedBefore returns the highest sequence number acknowledged at or before t (0 if none).
func (l *ackLog) ackedBefore(t time.Time) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	i := sort.Search(len(l.times), func(i int) bool { return l.times[i].After(t) })
	if i == 0 {
		return 0
	}
	return l.seqs[i-1]
}

// checkerValue encodes a write: the key's sequence number, padded so values look like feature payloads.
func checkerValue(seq int64) string {
	return strconv.FormatInt(seq, 10) + ":" + strings.Repeat("f", 64)
}

func checkerSeq(reply []byte) (int64, bool) {
	v, isNil, ok := resp.BulkPayload(reply)
	if !ok {
		return 0, false
	}
	if isNil {
		return 0, true
	}
	s, _, _ := strings.Cut(string(v), ":")
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}

// TestConsistencyChecker runs writers (through featcache A, through featcache B, straight to Redis) and readers
// (on A and B) while featcache's upstream connections are killed and Redis is restarted (with appendonly and
// appendfsync always, so an acknowledged write survives), and checks every read:
//   - a writer reading its own key through its instance right after its write sees exactly that write
//     (read-your-writes);
//   - a reader on the writer's instance never sees a value older than a write acknowledged before its read began;
//   - a reader on the other instance, or of a key written straight to Redis, never sees a value older than a write
//     acknowledged staleBound before its read began;
//   - every reader's values of a key never go backwards (monotonic reads per client);
//   - multi-key reads are atomic: writers set the keys of a group (MSET) and the fields of a hash (HSET) to one
//     value, readers read them whole (MGET, HMGET of every field and of some, HGETALL), and no reply may mix
//     values, a state Redis never held; their values obey the same staleness and monotonicity checks;
//   - after the writers stop, every key converges on Redis's value through both instances.
func TestConsistencyChecker(t *testing.T) {
	if *checkerDuration == 0 {
		t.Skip("the consistency checker runs with -checker=DURATION (scripts/test.sh gives it a few seconds)")
	}
	redis := redistest.Start(t, "--appendonly", "yes", "--appendfsync", "always")
	cfg := `
upstream: {timeout: 500ms}
policies:
  - {name: ck, prefix: "ck:", soft_ttl: 1h, hard_ttl: 2h}
`
	a := startProxyOn(t, redis, cfg)
	b := startProxyOn(t, redis, cfg)
	instances := map[string]*testProxy{"A": a, "B": b}

	const keys = 48
	logs := make([]*ackLog, keys)
	for i := range logs {
		logs[i] = &ackLog{via: []string{"A", "B", "redis"}[i%3]}
	}
	key := func(i int) string { return "ck:" + strconv.Itoa(i) }

	// Groups: keys set together by MSET, and hashes whose fields are set together by HSET, one writer each.
	// Few groups, so that readers and writers meet on them often.
	const groups, groupSize = 2, 3
	groupLogs := make([]*ackLog, 2*groups) // MSET groups, then hashes: written through A, B, Redis, Redis
	for i := range groupLogs {
		groupLogs[i] = &ackLog{via: []string{"A", "redis", "redis", "B"}[i%4]}
	}
	groupRead := func(g int) (cmd []string, all bool) {
		if g < groups {
			cmd = []string{"MGET"}
			for i := range groupSize {
				cmd = append(cmd, "ck:g"+strconv.Itoa(g)+":"+strconv.Itoa(i))
			}
			return cmd, false
		}
		return []string{"HGETALL", "ck:h" + strconv.Itoa(g-groups)}, true
	}
	groupWrite := func(g int, seq int64) []string {
		v := checkerValue(seq)
		if g < groups {
			cmd := []string{"MSET"}
			for i := range groupSize {
				cmd = append(cmd, "ck:g"+strconv.Itoa(g)+":"+strconv.Itoa(i), v)
			}
			return cmd
		}
		cmd := []string{"HSET", "ck:h" + strconv.Itoa(g-groups)}
		for i := range groupSize {
			cmd = append(cmd, "f"+strconv.Itoa(i), v)
		}
		return cmd
	}
	// groupSeq checks that a multi-key reply holds one value and returns its sequence number (0 for nothing
	// written yet); ok is false for a reply that is not an array (an upstream error during a fault).
	groupSeq := func(reply []byte, all bool) (seq int64, mixedValues []string, ok bool) {
		if bad, elems := mixed(reply, all); bad {
			return 0, elems, true
		}
		elems, ok := bulkElems(reply)
		if !ok {
			return 0, nil, false
		}
		if all && len(elems) > 0 {
			elems = elems[1:]
		}
		if len(elems) == 0 || elems[0] == "(nil)" {
			return 0, nil, true
		}
		n, _ := strconv.ParseInt(strings.SplitN(elems[0], ":", 2)[0], 10, 64)
		return n, nil, true
	}

	var (
		reads, writes, faults, violations atomic.Int64
		groupReads                        atomic.Int64
	)
	var loops testkit.Loops
	violation := func(format string, args ...any) {
		if violations.Add(1) <= 20 {
			t.Errorf(format, args...)
		}
	}
	// dial connects, retrying while the server restarts; it gives up (nil) once the checker stops.
	dial := func(addr string) *redistest.Conn {
		for {
			if c, err := redistest.TryDial(t, addr); err == nil {
				return c
			}
			if loops.Stopped() {
				return nil
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	// connect returns a connection through instance via ("redis": straight to Redis) that dials again after a
	// network error.
	connect := func(via string) *checkerConn {
		addr := redis.Addr()
		if via != "redis" {
			addr = instances[via].addr
		}
		return &checkerConn{addr: addr, dial: dial, c: dial(addr)}
	}

	// Writers: one per key, through the key's instance or straight to Redis. After each acknowledged write
	// through featcache, the writer reads the key back through the same connection.
	for k := 0; k < keys; k++ {
		l := logs[k]
		c := connect(l.via)
		loops.Go(func(i int) bool {
			seq := int64(i) + 1
			reply, ok := c.do("SET", key(k), checkerValue(seq))
			if !ok {
				return true
			}
			if string(reply) != "+OK\r\n" {
				return true // an error: the write may or may not have been applied; seq moves on
			}
			l.add(seq, time.Now())
			writes.Add(1)
			if l.via == "redis" {
				time.Sleep(time.Millisecond)
				return true
			}
			got, ok := c.do("GET", key(k))
			if n, seqOK := checkerSeq(got); ok && seqOK {
				reads.Add(1)
				if n != seq {
					violation("read-your-writes: %s written %d through %s, read back %d", key(k), seq, l.via, n)
				}
			}
			return true
		})
	}

	// Group writers: one per group, through its instance or straight to Redis; after each acknowledged write
	// through featcache, the group is read back whole on the same connection.
	for g := range 2 * groups {
		l := groupLogs[g]
		c := connect(l.via)
		read, all := groupRead(g)
		loops.Go(func(i int) bool {
			seq := int64(i) + 1
			reply, ok := c.do(groupWrite(g, seq)...)
			if !ok {
				return true
			}
			if reply[0] == '-' {
				return true // the write may or may not have been applied; seq moves on
			}
			l.add(seq, time.Now())
			writes.Add(1)
			if l.via == "redis" {
				return true
			}
			got, ok := c.do(read...)
			if !ok {
				return true
			}
			n, bad, ok := groupSeq(got, all)
			switch {
			case !ok:
			case bad != nil:
				groupReads.Add(1)
				violation("mixed multi-key read: %q through %s answered %q", read, l.via, bad)
			default:
				groupReads.Add(1)
				if n != seq {
					violation("read-your-writes: %q written %d through %s, read back %d", read, seq, l.via, n)
				}
			}
			return true
		})
	}

	// Group readers on both instances: whole groups (MGET), whole hashes (HMGET of every field, HGETALL) and
	// parts of hashes (HMGET of two fields).
	for r := range 6 {
		name := []string{"A", "B"}[r%2]
		c := connect(name)
		last := make([]int64, 2*groups)
		rng := rand.New(rand.NewPCG(uint64(r), 11))
		loops.Go(func(int) bool {
			g := rng.IntN(2 * groups)
			read, all := groupRead(g)
			if g >= groups && rng.IntN(3) > 0 {
				read, all = []string{"HMGET", read[1], "f2", "f0"}, false
				if rng.IntN(2) == 0 {
					read = []string{"HMGET", read[1], "f0", "f1", "f2"}
				}
			}
			start := time.Now()
			reply, ok := c.do(read...)
			if !ok {
				return true
			}
			n, bad, ok := groupSeq(reply, all)
			if !ok {
				return true // an upstream error during a fault
			}
			groupReads.Add(1)
			if bad != nil {
				violation("mixed multi-key read on %s: %q answered %q", name, read, bad)
				return true
			}
			l := groupLogs[g]
			bound := start.Add(-staleBound)
			if l.via == name {
				bound = start
			}
			if min := l.ackedBefore(bound); n < min {
				violation("stale multi-key read on %s: %q = %d, but %d was acknowledged through %s %v before the read began",
					name, read, n, min, l.via, start.Sub(bound))
			}
			if n < last[g] {
				violation("non-monotonic multi-key read on %s: %q went from %d back to %d", name, read, last[g], n)
			}
			last[g] = n
			return true
		})
	}

	// Readers on both instances: GETs and MGETs of random keys.
	for r := 0; r < 6; r++ {
		name := []string{"A", "B"}[r%2]
		c := connect(name)
		last := make([]int64, keys)
		rng := rand.New(rand.NewPCG(uint64(r), 7))
		check := func(k int, n int64, start time.Time) {
			reads.Add(1)
			l := logs[k]
			bound := start.Add(-staleBound)
			if l.via == name {
				bound = start // written through this instance: no staleness at all
			}
			if min := l.ackedBefore(bound); n < min {
				violation("stale read on %s: %s = %d, but %d was acknowledged through %s %v before the read began",
					name, key(k), n, min, l.via, start.Sub(bound))
			}
			if n < last[k] {
				violation("non-monotonic read on %s: %s went from %d back to %d", name, key(k), last[k], n)
			}
			last[k] = n
		}
		loops.Go(func(int) bool {
			start := time.Now()
			if rng.IntN(4) == 0 {
				ks := []int{rng.IntN(keys), rng.IntN(keys), rng.IntN(keys)}
				reply, ok := c.do("MGET", key(ks[0]), key(ks[1]), key(ks[2]))
				if !ok {
					return true
				}
				elems, err := resp.ArrayElements(reply, nil)
				if err != nil || len(elems) != len(ks) {
					return true // an upstream error during a fault
				}
				for i, k := range ks {
					if n, ok := checkerSeq(elems[i]); ok {
						check(k, n, start)
					}
				}
				return true
			}
			k := rng.IntN(keys)
			reply, ok := c.do("GET", key(k))
			if !ok {
				return true
			}
			if n, ok := checkerSeq(reply); ok {
				check(k, n, start)
			}
			return true
		})
	}

	// Faults: kill featcache's upstream connections (and every other client's), or restart Redis.
	rng := rand.New(rand.NewPCG(1, 2))
	loops.Go(func(int) bool {
		time.Sleep(time.Duration(200+rng.IntN(300)) * time.Millisecond)
		if loops.Stopped() {
			return false
		}
		faults.Add(1)
		if rng.IntN(3) == 0 {
			redis.Restart()
		} else {
			redis.Do("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
		}
		return true
	})

	time.Sleep(*checkerDuration) // the load phase
	loops.Stop()

	// Convergence: every key through both instances equals Redis's value.
	for _, name := range []string{"A", "B"} {
		c := dial(instances[name].addr)
		for k := 0; k < keys; k++ {
			want := string(redis.Do("GET", key(k)))
			redistest.Eventually(t, 5*time.Second, fmt.Sprintf("%s converges on %s through %s", key(k), want[:min(len(want), 12)], name),
				func() bool { return string(c.Do("GET", key(k))) == want })
		}
	}
	for _, name := range []string{"A", "B"} {
		c := dial(instances[name].addr)
		for g := range 2 * groups {
			read, _ := groupRead(g)
			want := string(redis.Do(read...))
			redistest.Eventually(t, 5*time.Second, fmt.Sprintf("%q converges through %s", read, name),
				func() bool { return string(c.Do(read...)) == want })
		}
	}
	fmt.Printf("consistency checker: %v, %d writes acknowledged, %d reads checked (%d multi-key), %d faults injected, %d violations\n",
		*checkerDuration, writes.Load(), reads.Load()+groupReads.Load(), groupReads.Load(), faults.Load(), violations.Load())
	if violations.Load() != 0 {
		t.Fatalf("%d violations", violations.Load())
	}
	if reads.Load() == 0 || groupReads.Load() == 0 || writes.Load() == 0 || faults.Load() == 0 {
		t.Fatal("the checker did not exercise reads, multi-key reads, writes and faults")
	}
}

// checkerConn is a checker client's connection to addr: after a network error it dials again (nil once the
// checker stops, when the client's loop ends).
type checkerConn struct {
	addr string
	dial func(addr string) *redistest.Conn
	c    *redistest.Conn
}

// do sends one command and reads its reply; after a network error it dials again and reports false.
func (cc *checkerConn) do(args ...string) ([]byte, bool) {
	if cc.c == nil {
		return nil, false
	}
	if err := cc.c.Send(args...); err != nil {
		cc.c = cc.dial(cc.addr)
		return nil, false
	}
	reply, err := cc.c.Read()
	if err != nil {
		cc.c = cc.dial(cc.addr)
		return nil, false
	}
	return reply, true
}
