//go:build linux

package proxy

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"featcache/internal/redistest"
)

// TestEventLoopHandsOverWhatItCannotAnswer: batches of cached GETs are answered by the event loop, and every
// other batch, or the rest of one, by the client's goroutine, in order: the same bytes Redis sends for the same
// pipelines, whichever part of a batch needs the goroutine (a miss first, last or in the middle, a write, a
// command featcache answers itself).
func TestEventLoopHandsOverWhatItCannotAnswer(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	for i := range 4 {
		p.redis.Do("SET", "loop:"+strconv.Itoa(i), "v"+strconv.Itoa(i))
	}
	p.settle()
	p.redis.Do("SET", "loop:big", strings.Repeat("b", 8<<10))
	rc := redistest.Dial(t, p.redis.Addr())
	defer rc.Close()
	get := func(k string) []string { return []string{"GET", "loop:" + k} }
	var big [][]string
	for range 12 { // 96 KiB of replies, past outputFlushBytes
		big = append(big, get("big"))
	}
	fc := p.dial()
	compareWithRedis(t, fc, rc, nil, get("0"), get("1"), get("big")) // misses: fills
	fc.Close()
	before := p.srv.Stats()
	pipelines := [][][]string{
		{get("0")},
		{get("0"), get("1")},
		{get("0"), get("2"), get("1")},               // a miss in the middle
		{get("3"), get("0"), get("1")},               // a miss first
		{get("0"), get("1"), get("none")},            // a miss last (nil)
		{get("0"), {"SET", "loop:1", "w"}, get("1")}, // a write: the GET after it reads it
		{get("1"), get("1")},
		{get("0"), {"PING"}, get("1")},
		{{"GET", "loop:0", "extra"}, get("0")}, // a wrong arity, as Redis answers it
		{get("2"), get("3"), get("0")},
		big, // more than settleOutput lets wait: the goroutine writes them as they come
	}
	for _, cmds := range pipelines {
		// Each on a new connection, whose first batch the loop reads (a client whose batches the loop hands
		// over in a row is served by its goroutine for a while: loopMaxSkip).
		fc := p.dial()
		compareWithRedis(t, fc, rc, nil, cmds...)
		fc.Close()
	}
	after := p.srv.Stats()
	served := after.LoopBatches.Load() - before.LoopBatches.Load()
	handed := after.LoopHandovers.Load() - before.LoopHandovers.Load()
	// The first, second and last pipelines are hits only; the others need the goroutine (the seventh reads a
	// key the sixth wrote).
	if served < 3 || handed < 7 {
		t.Errorf("event loop batches %d, handed over %d; want at least 3 and 7", served, handed)
	}
	if !strings.Contains(p.do("CACHE", "STATS"), "loop_batches:") {
		t.Errorf("CACHE STATS has no loop_batches")
	}
}

// TestEventLoopWritesWhatTheSocketTakes: a client that sends GETs and does not read its replies fills its socket;
// the event loop writes what the socket takes and hands the rest to the client's goroutine, whose write waits for
// the client. Every reply arrives whole and in order once the client reads.
func TestEventLoopWritesWhatTheSocketTakes(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	value := strings.Repeat("x", 8<<10) // a reply the socket takes at once while it has room
	p.redis.Do("SET", "loop:big", value)
	p.settle()
	c := p.dial()
	defer c.Close()
	expectDo(t, c, bulk(value), "GET", "loop:big") // cached
	before := p.srv.Stats()
	const n = 2500 // 20 MB of replies, more than the sockets hold
	for range n {
		writeRaw(t, c, redistest.Encode("GET", "loop:big"))
		time.Sleep(50 * time.Microsecond) // one batch each, mostly
	}
	for i := range n {
		got, err := c.ReadTimeout(10 * time.Second)
		if err != nil || string(got) != bulk(value) {
			t.Fatalf("reply %d: %d bytes, err %v; want the value", i, len(got), err)
		}
	}
	after := p.srv.Stats()
	if after.LoopHandovers.Load() == before.LoopHandovers.Load() {
		t.Errorf("no batch was handed over: the socket never filled")
	}
	if after.LoopBatches.Load() == before.LoopBatches.Load() {
		t.Errorf("no batch was answered by the event loop")
	}
	expectDo(t, c, bulk(value), "GET", "loop:big")
}

// TestEventLoopClientsKeepTheirOwnReplies: clients whose pipelines mix hits, misses, writes of their own keys
// and reads of keys another client of the Redis rewrites, all at once, each get exactly their replies, under the
// race detector; some batches are answered by the event loop and some handed over.
func TestEventLoopClientsKeepTheirOwnReplies(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	const shared = 50
	for i := range shared {
		p.redis.Do("SET", "loopshared:"+strconv.Itoa(i), "s"+strconv.Itoa(i))
	}
	p.settle()
	stop := make(chan struct{})
	var other sync.WaitGroup
	other.Add(1)
	go func() { // another client of the Redis, rewriting the shared keys with the same values
		defer other.Done()
		rc := redistest.Dial(t, p.redis.Addr())
		defer rc.Close()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			k := strconv.Itoa(i % shared)
			rc.Do("SET", "loopshared:"+k, "s"+k)
		}
	}()
	before := p.srv.Stats()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := p.dial()
			defer c.Close()
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			mine := map[string]string{}
			for round := range 300 {
				var cmds [][]string
				var want []string
				for range 1 + rng.IntN(6) {
					switch r := rng.IntN(10); {
					case r < 6:
						k := strconv.Itoa(rng.IntN(shared))
						cmds = append(cmds, []string{"GET", "loopshared:" + k})
						want = append(want, bulk("s"+k))
					case r < 9:
						k := fmt.Sprintf("loopown:%d:%d", w, rng.IntN(5))
						cmds = append(cmds, []string{"GET", k})
						if v, ok := mine[k]; ok {
							want = append(want, bulk(v))
						} else {
							want = append(want, "$-1\r\n")
						}
					default:
						k := fmt.Sprintf("loopown:%d:%d", w, rng.IntN(5))
						v := fmt.Sprintf("v%d", round)
						cmds = append(cmds, []string{"SET", k, v})
						want = append(want, "+OK\r\n")
						mine[k] = v
					}
				}
				c.NetConn().Write(encodePipeline(cmds...))
				for i := range cmds {
					got, err := c.ReadTimeout(10 * time.Second)
					if err != nil || string(got) != want[i] {
						errs <- fmt.Errorf("client %d round %d: %q got %q (%v); want %q", w, round, cmds[i], got, err, want[i])
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	other.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	after := p.srv.Stats()
	if after.LoopBatches.Load() == before.LoopBatches.Load() || after.LoopHandovers.Load() == before.LoopHandovers.Load() {
		t.Errorf("event loop batches %d, handed over %d: want both", after.LoopBatches.Load()-before.LoopBatches.Load(),
			after.LoopHandovers.Load()-before.LoopHandovers.Load())
	}
}

// TestEventLoopWaitingClientsClosed: a client the event loop waits for, which sends nothing more, is closed as
// any other by CLIENT KILL, by limits.idle_timeout and by limits.max_conn_age (each counted as such): the loop
// wakes its goroutine for each.
func TestEventLoopWaitingClientsClosed(t *testing.T) {
	// parked returns a client of p that read a cached key twice: the loop waits for its next batch.
	parked := func(p *testProxy) *redistest.Conn {
		c := p.dial()
		expectDo(t, c, bulk("v"), "GET", "loop:k")
		expectDo(t, c, bulk("v"), "GET", "loop:k")
		return c
	}
	start := func(cfg string) *testProxy {
		p := startProxy(t, defaultTestConfig+cfg)
		p.redis.Do("SET", "loop:k", "v")
		p.settle()
		return p
	}
	t.Run("client kill", func(t *testing.T) {
		p := start("")
		a := parked(p)
		defer a.Close()
		id := strings.TrimSpace(strings.TrimPrefix(string(a.Do("CLIENT", "ID")), ":"))
		expectDo(t, a, bulk("v"), "GET", "loop:k")
		b := p.dial()
		defer b.Close()
		expectDo(t, b, ":1\r\n", "CLIENT", "KILL", "ID", id)
		expectClosed(t, a, 2*time.Second)
		expectDo(t, b, bulk("v"), "GET", "loop:k")
	})
	t.Run("idle_timeout", func(t *testing.T) {
		p := start("limits: {idle_timeout: 1s}\n")
		c := parked(p)
		defer c.Close()
		expectClosed(t, c, 5*time.Second)
		if n := p.srv.Stats().IdleTimeouts.Load(); n != 1 {
			t.Errorf("idle timeouts %d; want 1", n)
		}
	})
	t.Run("max_conn_age", func(t *testing.T) {
		p := start("limits: {max_conn_age: 1s}\n")
		c := parked(p)
		defer c.Close()
		expectClosed(t, c, 5*time.Second)
		if n := p.srv.metrics.agedOut.Load(); n != 1 {
			t.Errorf("connections aged out %d; want 1", n)
		}
	})
}

// TestEventLoopAnswersHitsWhileRedisIsBusy: another client of the same Redis runs a script for 800 ms. A client
// whose GET misses waits for Redis, as it would going direct, and gets the value Redis then has (a fill waits up to
// upstream.timeout, 1 s: docs/upstream-faults.md); meanwhile the event loop goes on answering another client's
// cached GET: that client's reply arrives while the first still waits.
func TestEventLoopAnswersHitsWhileRedisIsBusy(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	p.redis.Do("SET", "loop:hot", "v")
	p.redis.Do("SET", "loop:cold", "c")
	p.settle()
	hot := p.dial()
	defer hot.Close()
	expectDo(t, hot, bulk("v"), "GET", "loop:hot") // cached
	other := redistest.Dial(t, p.redis.Addr())
	defer other.Close()
	if err := other.Send("EVAL", redistest.SleepScript, "0", "800"); err != nil {
		t.Fatal(err)
	}
	cold := p.dial()
	defer cold.Close()
	redistest.Eventually(t, 5*time.Second, "the script running", func() bool {
		// Redis is busy once a PING straight to it goes unanswered for a moment.
		rc := redistest.Dial(t, p.redis.Addr())
		defer rc.Close()
		rc.Send("PING")
		_, err := rc.ReadTimeout(100 * time.Millisecond)
		return err != nil
	})
	writeRaw(t, cold, redistest.Encode("GET", "loop:cold"))
	before := p.srv.Stats().LoopBatches.Load()
	expectDo(t, hot, bulk("v"), "GET", "loop:hot")
	if got, err := cold.ReadTimeout(50 * time.Millisecond); err == nil {
		t.Fatalf("the miss was answered (%q) before the hit: Redis was not busy, or the hit waited", got)
	}
	if p.srv.Stats().LoopBatches.Load() == before {
		t.Errorf("the hit was not answered by the event loop")
	}
	got, err := cold.ReadTimeout(10 * time.Second)
	if err != nil || string(got) != bulk("c") {
		t.Errorf("the miss after the script: %q, %v; want %q", got, err, bulk("c"))
	}
	if got, err := other.ReadTimeout(10 * time.Second); err != nil || string(got) != ":1\r\n" {
		t.Errorf("the script: %q, %v", got, err)
	}
}

// TestWithoutEventLoops: with event_loops: false every batch is served by the client's goroutine, with the same
// replies.
func TestWithoutEventLoops(t *testing.T) {
	p := startProxy(t, defaultTestConfig+"event_loops: false\n")
	p.redis.Do("SET", "loop:k", "v")
	p.settle()
	fc, rc := p.dial(), redistest.Dial(t, p.redis.Addr())
	defer fc.Close()
	defer rc.Close()
	get := []string{"GET", "loop:k"}
	for range 3 {
		compareWithRedis(t, fc, rc, nil, get, get, []string{"GET", "loop:none"}, get)
	}
	if st := p.srv.Stats(); st.LoopBatches.Load() != 0 || st.LoopHandovers.Load() != 0 {
		t.Errorf("event loop batches %d, handed over %d; want none", st.LoopBatches.Load(), st.LoopHandovers.Load())
	}
}

// TestHandedOverBacksOff: a client whose batches the loop hands over in a row is served by its goroutine for 1,
// 2, 4, ... and then 64 batches before it parks again, however long the run; one the loop served parks at once.
func TestHandedOverBacksOff(t *testing.T) {
	var lp loopClient
	var got []int
	for range 1000 {
		lp.handedOver()
		got = append(got, lp.skip)
	}
	want := []int{0, 1, 2, 4, 8, 16, 32, 64}
	for i, w := range want {
		if got[i] != w {
			t.Fatalf("skips %v...; want %v, then 64", got[:10], want)
		}
	}
	for i, s := range got[len(want):] {
		if s != loopMaxSkip {
			t.Fatalf("hand-over %d: skip %d; want %d", len(want)+i+1, s, loopMaxSkip)
		}
	}
	lp.streak = 0 // a batch the loop served
	if lp.handedOver(); lp.skip != 0 {
		t.Errorf("after a served batch: skip %d; want 0", lp.skip)
	}
}
