package main

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// runStaleness measures how stale featcache can be: the time from a write being acknowledged until featcache
// serves the new value.
//
//	go run ./bench staleness [-writes N] [-keys K] [-out FILE]
//
// It starts redis-server and two featcache instances, A and B, in front of it (tracking on). One reader
// connection per key polls its key through A as fast as it can, so A holds the key cached and every read shows
// what A serves at that instant. A writer updates the keys one at a time with increasing values, first straight
// to Redis, then through B, and for each write records when its acknowledgement arrived; the reader records when
// it first read the new value. The staleness of a write is the difference (0 when the reader saw it before the
// acknowledgement reached the writer). The resolution is one reader poll, a few tens of microseconds here.
func runStaleness(args []string) error {
	cmd := newLabCommand("staleness")
	writes := cmd.Int("writes", 2000, "writes measured per path (direct to Redis, through the other featcache)")
	keys := cmd.Int("keys", 16, "keys, each polled by its own reader connection through featcache A")
	out := cmd.String("out", "", "also write the Markdown table to this file")
	lab, err := cmd.open(args)
	if err != nil {
		return err
	}
	defer lab.close()
	f, bin, redisAddr := lab.fleet, lab.bin, lab.redisAddr
	aAddr, _, err := f.startFeatcacheAs("featcache-a", bin, redisAddr, 64<<20)
	if err != nil {
		return err
	}
	bAddr, _, err := f.startFeatcacheAs("featcache-b", bin, redisAddr, 64<<20)
	if err != nil {
		return err
	}

	results := []*stalenessResult{{path: "write to Redis directly"}, {path: "write through another featcache"}}
	for i, writeAddr := range []string{redisAddr, bAddr} {
		if err := measureStaleness(results[i], aAddr, writeAddr, *keys, *writes, i); err != nil {
			return fmt.Errorf("%s: %w", results[i].path, err)
		}
		fmt.Fprintf(os.Stderr, "staleness: %s: %d writes measured\n", results[i].path, len(results[i].samples))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Staleness: time from a write's acknowledgement until featcache serves the new value "+
		"(loopback, tracking on, %d keys each polled by its own connection, %d writes per path).\n\n", *keys, *writes)
	b.WriteString(stalenessHeader)
	for _, r := range results {
		r.row(&b)
	}
	return printTable(b.String(), *out)
}

type stalenessResult struct {
	path    string
	samples []time.Duration
}

// stalenessHeader heads a Markdown table of stalenessResult rows (stalenessResult.row), here and in runTracking.
const stalenessHeader = "| path | writes | p50 | p99 | max |\n|---|--:|--:|--:|--:|\n"

// row writes r as a row of the table stalenessHeader heads: its path, its sample count and its quantiles.
func (r *stalenessResult) row(b *strings.Builder) {
	fmt.Fprintf(b, "| %s | %d | %s | %s | %s |\n", r.path, len(r.samples), fmtDur(r.quantile(0.5)),
		fmtDur(r.quantile(0.99)), fmtDur(r.quantile(1)))
}

func (r *stalenessResult) quantile(q float64) time.Duration {
	if len(r.samples) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), r.samples...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(q*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func fmtDur(d time.Duration) string {
	if d < time.Millisecond {
		return fmt.Sprintf("%dµs", d.Microseconds())
	}
	return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
}

// measureStaleness runs one path: readers poll their keys through featcache at readAddr, a writer writes through
// writeAddr.
func measureStaleness(r *stalenessResult, readAddr, writeAddr string, keys, writes, round int) error {
	type watch struct {
		want   atomic.Int64 // the value the reader waits for; 0 = nothing pending
		seenAt atomic.Int64 // unix ns when the reader first read it
		seen   chan struct{}
	}
	watches := make([]*watch, keys)
	key := func(i int) string { return fmt.Sprintf("feat:staleness:%d:%d", round, i) }
	w, err := dialRESP(writeAddr, 5*time.Second)
	if err != nil {
		return err
	}
	defer w.Close()
	for i := range watches {
		watches[i] = &watch{seen: make(chan struct{}, 1)}
		if _, err := w.do("SET", key(i), "0"); err != nil {
			return err
		}
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	errc := make(chan error, keys)
	for i := 0; i < keys; i++ {
		rc, err := dialRESP(readAddr, 5*time.Second)
		if err != nil {
			return err
		}
		wg.Add(1)
		go func(i int, rc *respConn) {
			defer wg.Done()
			defer rc.Close()
			wt := watches[i]
			k := []byte(key(i))
			for !stop.Load() {
				rc.appendGet(k)
				if err := rc.flush(); err != nil {
					errc <- err
					return
				}
				v, err := rc.readValue()
				if err != nil {
					errc <- err
					return
				}
				s, _ := v.(string)
				n, _ := strconv.ParseInt(s, 10, 64)
				if want := wt.want.Load(); want != 0 && n >= want {
					if wt.seenAt.CompareAndSwap(0, time.Now().UnixNano()) {
						wt.seen <- struct{}{}
					}
				}
			}
		}(i, rc)
	}
	defer func() { stop.Store(true); wg.Wait() }()
	time.Sleep(200 * time.Millisecond) // every key cached in A before the first write
	for n := 1; n <= writes; n++ {
		i := n % keys
		wt := watches[i]
		wt.seenAt.Store(0)
		wt.want.Store(int64(n))
		if _, err := w.do("SET", key(i), strconv.Itoa(n)); err != nil {
			return err
		}
		acked := time.Now().UnixNano()
		select {
		case <-wt.seen:
		case err := <-errc:
			return err
		case <-time.After(5 * time.Second):
			return errors.New("a write was not served by featcache within 5s")
		}
		wt.want.Store(0)
		r.samples = append(r.samples, time.Duration(max(0, wt.seenAt.Load()-acked)))
	}
	return nil
}
