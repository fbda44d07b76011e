package main

import (
	"fmt"
	"net"
	"os"
	"slices"
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

// TestNonReadingClientsMemory: five connections each pipeline 1,000 GETs of a 1 MiB value and never read a reply.
// featcache's resident memory, sampled every few milliseconds all along, grows by less than 200 MiB; meanwhile
// other clients' GETs of cached keys keep a p99 under 50 ms, and a serve_stale key past its hard TTL answers within
// upstream.timeout + 100 ms, also while Redis is hung (SIGSTOP) for two seconds; once the five connections close,
// nothing more is executed for them and the heap comes back to its baseline. The value is served from the local
// tier ("cached"), or, in a tier too small to hold it, every GET of a pipeline joins one fill ("too large").
func TestNonReadingClientsMemory(t *testing.T) {
	for _, tc := range []struct {
		name, tier string
		cached     bool
	}{
		{"cached", "1280MB", true},    // largest entry about 1.25 MiB
		{"too large", "256MB", false}, // largest entry about 256 KiB
	} {
		t.Run(tc.name, func(t *testing.T) { nonReadingClients(t, tc.tier, tc.cached) })
	}
}

func nonReadingClients(t *testing.T, tier string, cached bool) {
	const (
		timeout     = 500 * time.Millisecond
		readers     = 5
		pipelined   = 1000
		maxGrowth   = 200 << 20
		p99Bound    = 50 * time.Millisecond
		staleBound  = timeout + 100*time.Millisecond
		heapSlack   = 16 << 20
		hangFor     = 2 * time.Second
		afterEvents = time.Second
	)
	redis := redistest.Start(t)
	big := strings.Repeat("x", 1<<20)
	redis.Do("SET", "f:big", big)
	redis.Do("SET", "s:k", "stale-value")
	for i := 0; i < 20; i++ {
		redis.Do("SET", "f:"+strconv.Itoa(i), "value-"+strconv.Itoa(i))
	}
	// The other clients' keys are kept through the tracking loss that the hang causes (revalidate), so that their
	// reads stay hits all along. The serve_stale key, read every 20 ms, is fetched again each time its 200 ms hard
	// TTL passes, and served stale while Redis hangs.
	in := startBinary(t, redis, fmt.Sprintf(`
shutdown_delay: 0s
admin_pprof: true
upstream: {timeout: %v}
local: {max_memory: %s}
policies:
  - {name: feat, prefix: "f:", soft_ttl: 1h, hard_ttl: 2h, jitter: 0, on_tracking_loss: revalidate}
  - {name: stale, prefix: "s:", soft_ttl: 100ms, hard_ttl: 200ms, jitter: 0,
     on_upstream_error: serve_stale, max_stale: 1h}
`, timeout, tier))
	pid := in.cmd.Process.Pid

	warm := redistest.Dial(t, in.addr)
	for i := 0; i < 20; i++ {
		warm.Do("GET", "f:"+strconv.Itoa(i))
	}
	for i := 0; i < 2; i++ {
		if got := warm.Do("GET", "f:big"); len(got) != len(big)+len("$1048576\r\n\r\n") {
			t.Fatalf("GET f:big: %d bytes", len(got))
		}
	}
	if hits := cacheStat(t, warm, "hits"); (hits == 1) != cached {
		t.Fatalf("the second GET of f:big: %d hits; want it served from the tier: %v", hits, cached)
	}
	warm.Do("GET", "s:k")
	baseRSS := vmRSS(t, pid)
	baseHeap := heapAlloc(t, in)
	baseCommands := cacheStat(t, warm, "commands")

	// Resident memory, sampled every 2 ms from now until the end.
	var peakRSS atomic.Int64
	peakRSS.Store(baseRSS)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			if rss, err := readRSS(pid); err == nil && rss > peakRSS.Load() {
				peakRSS.Store(rss)
			}
		}
	}()

	// Other clients: GETs of cached keys, back to back, each timed.
	var sent atomic.Int64 // commands the other clients sent
	var mu sync.Mutex
	var latencies []time.Duration
	var failures []string
	fail := func(format string, args ...any) {
		mu.Lock()
		failures = append(failures, fmt.Sprintf(format, args...))
		mu.Unlock()
	}
	// client runs body on a goroutine of its own with a connection of its own, until stop.
	client := func(body func(c *redistest.Conn)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := redistest.TryDial(t, in.addr)
			if err != nil {
				fail("dial: %v", err)
				return
			}
			body(c)
		}()
	}
	for g := 0; g < 4; g++ {
		client(func(c *redistest.Conn) {
			var own []time.Duration
			defer func() { mu.Lock(); latencies = append(latencies, own...); mu.Unlock() }()
			for i := g; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				k := strconv.Itoa(i % 20)
				sent.Add(1)
				start := time.Now()
				reply, err := roundTripRaw(c, "GET", "f:"+k)
				own = append(own, time.Since(start))
				if err != nil || reply != "$"+strconv.Itoa(len("value-"+k))+"\r\nvalue-"+k+"\r\n" {
					fail("GET f:%s: %q, %v", k, reply, err)
					return
				}
				time.Sleep(time.Millisecond) // a client at about 1,000 reads a second, not a spin
			}
		})
	}
	// A serve_stale key read every 20 ms: from Redis when the entry is past its hard TTL and Redis answers, from
	// memory when it does not.
	var staleReads atomic.Int64
	var slowestStale atomic.Int64
	client(func(c *redistest.Conn) {
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			sent.Add(1)
			start := time.Now()
			reply, err := roundTripRaw(c, "GET", "s:k")
			took := time.Since(start)
			staleReads.Add(1)
			if int64(took) > slowestStale.Load() {
				slowestStale.Store(int64(took))
			}
			if err != nil || reply != "$11\r\nstale-value\r\n" {
				fail("GET s:k: %q, %v", reply, err)
				return
			}
			if took > staleBound {
				fail("GET s:k took %v; want at most upstream.timeout + 100ms (%v)", took, staleBound)
			}
		}
	})

	// The five connections that send their pipelines and never read.
	var pipeline []byte
	for i := 0; i < pipelined; i++ {
		pipeline = resp.AppendCommand(pipeline, "GET", "f:big")
	}
	var quiet []net.Conn
	for i := 0; i < readers; i++ {
		c, err := net.Dial("tcp", in.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write(pipeline); err != nil {
			t.Fatalf("pipeline %d: %v", i, err)
		}
		quiet = append(quiet, c)
	}
	time.Sleep(afterEvents) // the scenario's timeline, not a wait for a condition
	redis.Pause()
	time.Sleep(hangFor)
	redis.Resume()
	time.Sleep(afterEvents)
	openPeak := peakRSS.Load()
	executed, sentBefore := cacheStat(t, warm, "commands"), sent.Load()
	for _, c := range quiet {
		c.Close()
	}
	time.Sleep(afterEvents)
	close(stop)
	wg.Wait()
	// Nothing more runs for the closed connections: what was executed after they closed is the other clients'
	// commands (and this CACHE STATS), give or take what was in flight when the first CACHE STATS was read: one
	// command of each of the five other clients (counted as sent before it, executed after), and at most the command
	// each closed connection was running (a 1 MiB reply puts it past its output share, so it reads no further) -
	// against the 1,000 each of them had queued.
	after, othersAfter := cacheStat(t, warm, "commands"), sent.Load()-sentBefore
	t.Logf("commands executed: %d while the connections were open (the others' included), %d after they closed "+
		"(the others sent %d)", executed-baseCommands, after-executed, othersAfter)
	if after-executed > othersAfter+1+5+readers {
		t.Errorf("%d commands executed after the connections closed; the other clients sent %d", after-executed, othersAfter)
	}

	mu.Lock()
	defer mu.Unlock()
	for _, f := range failures {
		t.Error(f)
	}
	slices.Sort(latencies)
	if len(latencies) < 100 {
		t.Fatalf("only %d GETs of other clients were timed", len(latencies))
	}
	p99 := latencies[len(latencies)*99/100]
	growth := peakRSS.Load() - baseRSS
	t.Logf("RSS: baseline %d MiB, peak while the %d connections were open %d MiB, peak overall %d MiB (growth %d MiB)",
		baseRSS>>20, readers, openPeak>>20, peakRSS.Load()>>20, growth>>20)
	t.Logf("other clients: %d GETs, p50 %v, p99 %v, max %v; serve_stale key: %d reads, slowest %v",
		len(latencies), latencies[len(latencies)/2], p99, latencies[len(latencies)-1], staleReads.Load(),
		time.Duration(slowestStale.Load()))
	if growth >= maxGrowth {
		t.Errorf("resident memory grew by %d MiB; want less than %d MiB", growth>>20, maxGrowth>>20)
	}
	if p99 >= p99Bound {
		t.Errorf("other clients' GET p99 %v; want under %v", p99, p99Bound)
	}
	var heap int64
	redistest.Eventually(t, 20*time.Second, "the heap back to its baseline", func() bool {
		heap = heapAlloc(t, in)
		return heap < baseHeap+heapSlack
	})
	t.Logf("heap after GC: %d MiB (baseline %d MiB); RSS now %d MiB", heap>>20, baseHeap>>20, vmRSS(t, pid)>>20)
}

// roundTripRaw sends one command on c and reads its reply, within 5 seconds.
func roundTripRaw(c *redistest.Conn, args ...string) (string, error) {
	if err := c.Send(args...); err != nil {
		return "", err
	}
	frame, err := c.ReadTimeout(5 * time.Second)
	return string(frame), err
}

// readRSS returns the resident set size of process pid (VmRSS).
func readRSS(pid int) (int64, error) { return readProcStatus(pid, "VmRSS") }

// readProcStatus returns a "Name: N kB" field of /proc/<pid>/status (VmRSS, VmHWM) in bytes.
func readProcStatus(pid int, field string) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// vmRSS is readRSS for a test: VmRSS of process pid, or the test fails.
func vmRSS(t *testing.T, pid int) int64 { return procStatusBytes(t, pid, "VmRSS") }

// procStatusBytes is readProcStatus for a test: the field of process pid, or the test fails.
func procStatusBytes(t *testing.T, pid int, field string) int64 {
	t.Helper()
	n, err := readProcStatus(pid, field)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// heapAlloc makes the instance collect garbage and returns the bytes of its live heap (/debug/pprof/heap?gc=1,
// which needs admin_pprof).
func heapAlloc(t *testing.T, in *instance) int64 {
	t.Helper()
	_, b := testkit.Get(t, in.admin+"/debug/pprof/heap?gc=1&debug=1")
	_, rest, ok := strings.Cut(string(b), "# HeapAlloc = ")
	if !ok {
		t.Fatalf("no HeapAlloc in the heap profile: %.200q", b)
	}
	n, err := strconv.ParseInt(rest[:strings.IndexByte(rest, '\n')], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// cacheStat returns one counter of CACHE STATS.
func cacheStat(t *testing.T, c *redistest.Conn, name string) int64 {
	t.Helper()
	// An array of status lines: "name:value".
	stats, _, err := resp.Decode(c.Do("CACHE", "STATS"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range stats.Elems {
		if rest, ok := strings.CutPrefix(line.Str, name+":"); ok {
			n, err := strconv.ParseInt(rest, 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("CACHE STATS has no %s", name)
	return 0
}
