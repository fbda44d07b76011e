package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"

	"featcache/internal/resp"
)

// runTracking measures CLIENT TRACKING served by featcache next to the same done straight against Redis.
//
//	go run ./bench tracking [-writes N] [-flood D] [-keys K] [-out FILE]
//
// It starts redis-server and a featcache in front of it (a policy caching "feat:"; "u:" keys are not cached, and
// their invalidations come from featcache's keyspace stream). For each path a client turns tracking on with
// REDIRECT to a connection subscribed to __redis__:invalidate, as a RESP2 client does:
//
//   - staleness: the client reads a key (tracked in the default mode), a writer writes it, and the time from the
//     write's acknowledgement until the invalidation reaches the target is recorded (0 when it arrived first);
//     the writer writes straight to Redis (another client of the store) or, for featcache, through featcache;
//     and the same for a RESP3 client, rueidis with client-side caching, until its invalidation hook runs;
//   - throughput: with BCAST over "u:" and "feat:", a writer floods Redis with pipelined SETs for -flood, and the
//     invalidation messages the target receives per second are counted;
//   - memory: the client reads -keys distinct keys in MGETs of 100 (each tracked), and the server's memory grows
//     by so much per key: featcache's resident set (VmRSS), Redis's used_memory.
func runTracking(args []string) error {
	cmd := newLabCommand("tracking")
	writes := cmd.Int("writes", 2000, "writes measured per staleness path")
	flood := cmd.Duration("flood", 3*time.Second, "how long the writer floods Redis for the throughput figure")
	keys := cmd.Int("keys", 500000, "distinct keys the client tracks for the memory figure")
	out := cmd.String("out", "", "also write the Markdown tables to this file")
	lab, err := cmd.open(args)
	if err != nil {
		return err
	}
	defer lab.close()
	redisAddr := lab.redisAddr
	fcAddr, fcProc, err := lab.fleet.startFeatcacheConfig("featcache", lab.bin, redisAddr,
		"local:\n  max_memory: 64MB\npolicies:\n  - name: feat\n    prefix: \"feat:\"\n    soft_ttl: 1h\n    hard_ttl: 2h\n")
	if err != nil {
		return err
	}

	var b strings.Builder
	fmt.Fprintf(&b, "Staleness of a tracked client: time from a write's acknowledgement until the invalidation reaches "+
		"the client's redirect target (RESP2, loopback, %d writes per path).\n\n", *writes)
	err = stalenessTable(&b, "staleness", []trackedPath{
		{"Redis directly", redisAddr, redisAddr, "feat:t:"},
		{"featcache, cached key, write straight to Redis", fcAddr, redisAddr, "feat:t:"},
		{"featcache, uncached key, write straight to Redis", fcAddr, redisAddr, "u:t:"},
		{"featcache, cached key, write through featcache", fcAddr, fcAddr, "feat:w:"},
		{"featcache, uncached key, write through featcache", fcAddr, fcAddr, "u:w:"},
	}, *writes, measureTrackedStaleness)
	if err != nil {
		return err
	}

	fmt.Fprintf(&b, "\nThe same for a RESP3 client, rueidis with client-side caching (DoCache, OPTIN), from a write's "+
		"acknowledgement until its invalidation hook runs:\n\n")
	err = stalenessTable(&b, "RESP3 staleness", []trackedPath{
		{"Redis directly", redisAddr, redisAddr, "feat:r:"},
		{"featcache, cached key, write straight to Redis", fcAddr, redisAddr, "feat:r:"},
		{"featcache, uncached key, write straight to Redis", fcAddr, redisAddr, "u:r:"},
		{"featcache, cached key, write through featcache", fcAddr, fcAddr, "feat:rw:"},
	}, *writes, measureRueidisStaleness)
	if err != nil {
		return err
	}

	fmt.Fprintf(&b, "\nInvalidations delivered per second to a BCAST client (prefixes u: and feat:) while one "+
		"connection floods Redis with pipelined SETs for %v:\n\n", *flood)
	b.WriteString("| path | writes/s | invalidation messages/s | keys/s |\n|---|--:|--:|--:|\n")
	for _, p := range []struct{ name, addr string }{{"Redis directly", redisAddr}, {"featcache", fcAddr}} {
		w, msgs, keys, err := measureInvalidationRate(p.addr, redisAddr, *flood)
		if err != nil {
			return fmt.Errorf("throughput, %s: %w", p.name, err)
		}
		fmt.Fprintf(os.Stderr, "tracking: throughput, %s: done\n", p.name)
		fmt.Fprintf(&b, "| %s | %.0f | %.0f | %.0f |\n", p.name, w, msgs, keys)
	}

	fmt.Fprintf(&b, "\nServer memory per tracked key (default mode, %d distinct keys of about 12 bytes, read in "+
		"MGETs of 100 by one tracking client):\n\n", *keys)
	b.WriteString("| server | memory before | after | per key |\n|---|--:|--:|--:|\n")
	rb, ra, err := trackedMemory(redisAddr, "", *keys, func() (int64, error) { return redisUsedMemory(redisAddr) })
	if err != nil {
		return fmt.Errorf("memory, Redis: %w", err)
	}
	fmt.Fprintf(&b, "| Redis (used_memory) | %s | %s | %d B |\n", mib(rb), mib(ra), (ra-rb)/int64(*keys))
	fb, fa, err := trackedMemory(fcAddr, "m:", *keys, func() (int64, error) { return rssOf(fcProc.pid()) })
	if err != nil {
		return fmt.Errorf("memory, featcache: %w", err)
	}
	fmt.Fprintf(&b, "| featcache (VmRSS) | %s | %s | %d B |\n", mib(fb), mib(fa), (fa-fb)/int64(*keys))
	if n, err := featcacheInfo(fcAddr, "featcache_tracking_keys"); err == nil {
		fmt.Fprintf(&b, "\nfeatcache remembered %d keys (INFO featcache_tracking_keys); VmRSS moves with the Go "+
			"heap's growth and collections, `go test -run '^$' -bench TrackingTable ./proxy` measures the table "+
			"alone.\n", n)
	}

	fmt.Print(b.String())
	if *out != "" {
		if err := os.MkdirAll(filepath.Dir(*out), 0o755); err != nil {
			return err
		}
		return os.WriteFile(*out, []byte(b.String()), 0o644)
	}
	return nil
}

// target is a connection subscribed to __redis__:invalidate whose frames a goroutine reads, counting the
// invalidation messages and their keys and handing the arrival times of those naming a watched key to arrived.
type target struct {
	nc       net.Conn
	id       string
	msgs     atomic.Int64
	keys     atomic.Int64
	watch    atomic.Pointer[string]
	arrived  chan time.Time
	finished chan error
}

func dialTarget(addr string) (*target, error) {
	c, err := dialRESP(addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	v, err := c.do("CLIENT", "ID")
	if err != nil {
		c.Close()
		return nil, err
	}
	id, _ := v.(int64)
	c.appendArgs([]byte("SUBSCRIBE"), []byte("__redis__:invalidate"))
	if err := c.flush(); err != nil {
		c.Close()
		return nil, err
	}
	if _, _, err := c.skipReply(); err != nil {
		c.Close()
		return nil, err
	}
	t := &target{nc: c.nc, id: strconv.FormatInt(id, 10), arrived: make(chan time.Time, 1), finished: make(chan error, 1)}
	go t.read(c.r)
	return t, nil
}

func (t *target) read(r *bufio.Reader) {
	var frame []byte
	var elems, keys [][]byte
	for {
		var err error
		frame, err = resp.ReadFrame(r, frame[:0])
		if err != nil {
			t.finished <- err
			return
		}
		now := time.Now()
		elems, err = resp.ArrayElements(frame, elems[:0])
		if err != nil || len(elems) != 3 {
			continue
		}
		t.msgs.Add(1)
		keys, err = resp.ArrayElements(elems[2], keys[:0])
		if err != nil {
			continue // the null invalidation
		}
		t.keys.Add(int64(len(keys)))
		if w := t.watch.Load(); w != nil {
			for _, k := range keys {
				if p, _, ok := resp.BulkPayload(k); ok && string(p) == *w {
					select {
					case t.arrived <- now:
					default:
					}
				}
			}
		}
	}
}

func (t *target) Close() { t.nc.Close() }

// trackedPath is one row of a staleness table: a client tracks keys with the prefix key through track while a
// writer writes them through write.
type trackedPath struct{ name, track, write, key string }

// stalenessTable measures each path with measure and writes the table, its header and a row a path, to b; what
// names the table in errors and progress lines.
func stalenessTable(b *strings.Builder, what string, paths []trackedPath, writes int,
	measure func(r *stalenessResult, trackAddr, writeAddr, prefix string, writes int) error) error {
	b.WriteString(stalenessHeader)
	for _, p := range paths {
		r := &stalenessResult{path: p.name}
		if err := measure(r, p.track, p.write, p.key, writes); err != nil {
			return fmt.Errorf("%s, %s: %w", what, p.name, err)
		}
		fmt.Fprintf(os.Stderr, "tracking: %s, %s: %d writes\n", what, p.name, len(r.samples))
		r.row(b)
	}
	return nil
}

// measureTrackedStaleness: a client tracking through trackAddr reads a key, a writer at writeAddr writes it, and
// the time from the write's acknowledgement until the target receives the key's invalidation is recorded.
func measureTrackedStaleness(r *stalenessResult, trackAddr, writeAddr, prefix string, writes int) error {
	t, err := dialTarget(trackAddr)
	if err != nil {
		return err
	}
	defer t.Close()
	c, err := dialRESP(trackAddr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.do("CLIENT", "TRACKING", "ON", "REDIRECT", t.id); err != nil {
		return err
	}
	w, err := dialRESP(writeAddr, 5*time.Second)
	if err != nil {
		return err
	}
	defer w.Close()
	for n := 1; n <= writes; n++ {
		key := prefix + strconv.Itoa(n%16)
		if _, err := c.do("GET", key); err != nil && !errors.Is(err, errNil) {
			return err
		}
		t.watch.Store(&key)
		if _, err := w.do("SET", key, strconv.Itoa(n)); err != nil {
			return err
		}
		acked := time.Now()
		select {
		case at := <-t.arrived:
			r.samples = append(r.samples, max(0, at.Sub(acked)))
		case err := <-t.finished:
			return err
		case <-time.After(5 * time.Second):
			return errors.New("an invalidation did not arrive within 5s")
		}
		t.watch.Store(nil)
	}
	return nil
}

// measureInvalidationRate floods Redis (writeAddr) with pipelined SETs under u: and feat: for d while a BCAST
// client of trackAddr counts what its target receives; it returns writes, messages and keys per second.
func measureInvalidationRate(trackAddr, writeAddr string, d time.Duration) (writes, msgs, keys float64, err error) {
	t, err := dialTarget(trackAddr)
	if err != nil {
		return 0, 0, 0, err
	}
	defer t.Close()
	c, err := dialRESP(trackAddr, 5*time.Second)
	if err != nil {
		return 0, 0, 0, err
	}
	defer c.Close()
	if _, err := c.do("CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "u:", "PREFIX", "feat:", "REDIRECT", t.id); err != nil {
		return 0, 0, 0, err
	}
	w, err := dialRESP(writeAddr, 5*time.Second)
	if err != nil {
		return 0, 0, 0, err
	}
	defer w.Close()
	start := time.Now()
	n := 0
	value := []byte("v")
	for time.Since(start) < d {
		for i := range 64 {
			prefix := "u:f:"
			if i%2 == 1 {
				prefix = "feat:f:"
			}
			w.appendSet([]byte(prefix+strconv.Itoa((n+i)%100000)), value)
		}
		if err := w.flush(); err != nil {
			return 0, 0, 0, err
		}
		for range 64 {
			if _, _, err := w.skipReply(); err != nil {
				return 0, 0, 0, err
			}
		}
		n += 64
	}
	// What Redis announced by the end of the flood, delivered since: counted once the target has been quiet.
	last := t.keys.Load()
	for {
		time.Sleep(100 * time.Millisecond)
		if k := t.keys.Load(); k == last {
			break
		} else {
			last = k
		}
	}
	secs := time.Since(start).Seconds() - 0.1
	return float64(n) / secs, float64(t.msgs.Load()) / secs, float64(t.keys.Load()) / secs, nil
}

// trackedMemory has one client track n distinct keys (under prefix) through addr and returns the server's memory,
// as mem reads it, before and after.
func trackedMemory(addr, prefix string, n int, mem func() (int64, error)) (before, after int64, err error) {
	t, err := dialTarget(addr)
	if err != nil {
		return 0, 0, err
	}
	defer t.Close()
	c, err := dialRESP(addr, 5*time.Second)
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	if _, err := c.do("CLIENT", "TRACKING", "ON", "REDIRECT", t.id); err != nil {
		return 0, 0, err
	}
	if before, err = mem(); err != nil {
		return 0, 0, err
	}
	const batch = 100
	for i := 0; i < n; i += batch {
		c.appendMgetHeader(batch)
		for j := range batch {
			c.out = resp.AppendBulkString(c.out, prefix+"mem:"+strconv.Itoa(i+j))
		}
		if err := c.flush(); err != nil {
			return 0, 0, err
		}
		if _, _, err := c.skipReply(); err != nil {
			return 0, 0, err
		}
	}
	after, err = mem()
	return before, after, err
}

// redisUsedMemory reads used_memory from INFO memory.
func redisUsedMemory(addr string) (int64, error) {
	c, err := dialRESP(addr, 5*time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	v, err := c.do("INFO", "memory")
	if err != nil {
		return 0, err
	}
	s, _ := v.(string)
	return parseInfo(s)["used_memory"], nil
}

// rssOf reads a process's resident set (VmRSS) from /proc.
func rssOf(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmRSS")
}

// featcacheInfo reads one field of INFO featcache.
func featcacheInfo(addr, field string) (int64, error) {
	c, err := dialRESP(addr, 5*time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	v, err := c.do("INFO", "featcache")
	if err != nil {
		return 0, err
	}
	s, _ := v.(string)
	n, ok := parseInfo(s)[field]
	if !ok {
		return 0, fmt.Errorf("INFO featcache has no %s", field)
	}
	return n, nil
}

// measureRueidisStaleness: a rueidis client with client-side caching on, connected to trackAddr, reads a key with
// DoCache (tracked: CLIENT CACHING yes before the read), a writer at writeAddr writes it, and the time from the
// write's acknowledgement until rueidis's invalidation hook sees the key is recorded.
func measureRueidisStaleness(r *stalenessResult, trackAddr, writeAddr, prefix string, writes int) error {
	var watch atomic.Pointer[string]
	arrived := make(chan time.Time, 1)
	client, err := rueidis.NewClient(rueidis.ClientOption{
		InitAddress:  []string{trackAddr},
		DisableRetry: true,
		OnInvalidations: func(msgs []rueidis.RedisMessage) {
			now := time.Now()
			w := watch.Load()
			for _, m := range msgs {
				if k, err := m.ToString(); err == nil && w != nil && k == *w {
					select {
					case arrived <- now:
					default:
					}
				}
			}
		},
	})
	if err != nil {
		return err
	}
	defer client.Close()
	w, err := dialRESP(writeAddr, 5*time.Second)
	if err != nil {
		return err
	}
	defer w.Close()
	ctx := context.Background()
	for n := 1; n <= writes; n++ {
		key := prefix + strconv.Itoa(n%16)
		if err := client.DoCache(ctx, client.B().Get().Key(key).Cache(), time.Minute).Error(); err != nil &&
			!rueidis.IsRedisNil(err) {
			return err
		}
		watch.Store(&key)
		if _, err := w.do("SET", key, strconv.Itoa(n)); err != nil {
			return err
		}
		acked := time.Now()
		select {
		case at := <-arrived:
			r.samples = append(r.samples, max(0, at.Sub(acked)))
		case <-time.After(5 * time.Second):
			return errors.New("an invalidation did not arrive within 5s")
		}
		watch.Store(nil)
	}
	return nil
}
