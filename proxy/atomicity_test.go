package proxy

import (
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"featcache/internal/redistest"
	"featcache/internal/resp"
	"featcache/internal/testkit"
)

// bulkElems reads an array reply of bulk strings; a null element is "(nil)". ok is false for any other shape.
func bulkElems(reply []byte) (elems []string, ok bool) {
	var sc resp.Scanner
	frames, err := resp.ArrayElements(reply, nil)
	if n, serr := sc.Next(reply); err != nil || serr != nil || n != len(reply) {
		return nil, false
	}
	for _, f := range frames {
		v, isNil, ok := resp.BulkPayload(f)
		switch {
		case !ok:
			return nil, false
		case isNil:
			elems = append(elems, "(nil)")
		default:
			elems = append(elems, string(v))
		}
	}
	return elems, true
}

// mixed reports whether the values of a multi-key read (MGET, HMGET; HGETALL's values with all) differ: a state no
// writer that sets them all at once ever made.
func mixed(reply []byte, all bool) (bool, []string) {
	elems, ok := bulkElems(reply)
	if !ok || len(elems) == 0 {
		return false, elems
	}
	step := 1
	if all {
		elems, step = elems[1:], 2
	}
	for i := 0; i < len(elems); i += step {
		if elems[i] != elems[0] {
			return true, elems
		}
	}
	return false, elems
}

// TestMGETPartialHitIsOneInstant (tracking off, so a cached key stays until its TTL): an MGET of a cached key and
// one that is not answers both from one read, as Redis's MGET does, never the cached value next to one fetched
// after a write to both. Its keys are then cached together.
func TestMGETPartialHitIsOneInstant(t *testing.T) {
	p := startProxy(t, `
upstream: {tracking: false}
policies:
  - {name: c, prefix: "c:", soft_ttl: 1h, hard_ttl: 2h, jitter: 0}
`)
	c := p.dial()
	p.redis.Do("MSET", "c:a", "1", "c:b", "1", "u", "1")
	p.redis.Do("RPUSH", "c:list", "x")
	if got := string(c.Do("GET", "c:a")); got != bulk("1") {
		t.Fatalf("GET c:a: %q", got)
	}
	p.redis.Do("MSET", "c:a", "2", "c:b", "2", "u", "2")
	for _, cmd := range [][]string{
		{"MGET", "c:a", "c:b"},
		{"MGET", "c:b", "c:a", "u", "c:a", "c:list", "c:none"}, // duplicates, a key no policy caches, another type
	} {
		if got, want := string(c.Do(cmd...)), string(p.redis.Do(cmd...)); got != want {
			t.Fatalf("%q: featcache %q, Redis %q", cmd, got, want)
		}
	}
	// The keys the MGET read were cached together.
	expectFromMemory(t, p, c, "*2\r\n"+bulk("2")+bulk("2"), "MGET", "c:a", "c:b")
}

// TestHMGETPartialHitIsOneInstant (tracking off): an HMGET of a cached field and one that is not answers both
// from one read of the hash.
func TestHMGETPartialHitIsOneInstant(t *testing.T) {
	p := startProxy(t, monotonicConfig)
	c := p.dial()
	p.redis.Do("HSET", "h", "f1", "1", "f2", "1")
	if got := string(c.Do("HMGET", "h", "f1")); got != "*1\r\n"+bulk("1") {
		t.Fatalf("HMGET h f1: %q", got)
	}
	p.redis.Do("HSET", "h", "f1", "2", "f2", "2")
	if got, want := string(c.Do("HMGET", "h", "f1", "f2")), string(p.redis.Do("HMGET", "h", "f1", "f2")); got != want {
		t.Fatalf("HMGET h f1 f2: featcache %q, Redis %q", got, want)
	}
}

// TestHashReadsServeOneFill (tracking off): fields that different fills read are not served together. After a
// background refresh of one field merges a newer value into a complete image, HGETALL (and an HMGET of both
// fields) reads the hash again instead of answering the image's old field next to the refreshed one.
func TestHashReadsServeOneFill(t *testing.T) {
	p := startProxy(t, `
upstream: {tracking: false}
policies:
  - {name: c, prefix: "", soft_ttl: 1s, hard_ttl: 1h, jitter: 0}
`)
	c := p.dial()
	p.redis.Do("HSET", "h", "f1", "1", "f2", "1")
	if got := string(c.Do("HGETALL", "h")); got != "*4\r\n"+bulk("f1")+bulk("1")+bulk("f2")+bulk("1") {
		t.Fatalf("HGETALL h: %q", got)
	}
	p.redis.Do("HSET", "h", "f1", "2", "f2", "2")
	p.clock.Advance(2 * time.Second) // soft-stale: HMGET h f2 is served and refreshed
	redistest.Eventually(t, 2*time.Second, "the refresh of f2 is merged", func() bool {
		return string(c.Do("HMGET", "h", "f2")) == "*1\r\n"+bulk("2")
	})
	for _, cmd := range [][]string{{"HGETALL", "h"}, {"HMGET", "h", "f1", "f2"}} {
		if got, want := string(c.Do(cmd...)), string(p.redis.Do(cmd...)); got != want {
			t.Fatalf("%q: featcache %q, Redis %q", cmd, got, want)
		}
	}
}

// TestMultiKeyReadsAtomicUnderLoad: writers set three keys (MSET) and three fields (HSET) to one counter value,
// through featcache and straight on Redis; readers on featcache read them with MGET, HMGET (all fields, and two of
// them) and HGETALL. No reply may mix values: Redis never held such a state.
func TestMultiKeyReadsAtomicUnderLoad(t *testing.T) {
	p := startProxy(t, `
policies:
  - {name: c, prefix: "", soft_ttl: 1h, hard_ttl: 2h, jitter: 0}
`)
	var loops testkit.Loops
	var reads, violations atomic.Int64
	for w, addr := range []string{p.addr, p.redis.Addr(), p.addr, p.redis.Addr()} {
		c := redistest.Dial(t, addr)
		loops.Go(func(i int) bool {
			v := strconv.Itoa(w + 4*i)
			if w%2 == 0 {
				c.Do("MSET", "m:a", v, "m:b", v, "m:c", v)
			} else {
				c.Do("HSET", "mh", "f1", v, "f2", v, "f3", v)
			}
			return true
		})
	}
	reads3 := [][]string{
		{"MGET", "m:a", "m:b", "m:c"}, {"HMGET", "mh", "f1", "f2", "f3"}, {"HMGET", "mh", "f3", "f1"}, {"HGETALL", "mh"},
	}
	for r := range 4 {
		c := p.dial()
		rng := rand.New(rand.NewPCG(uint64(r), 3))
		loops.Go(func(int) bool {
			cmd := reads3[rng.IntN(len(reads3))]
			reply := c.Do(cmd...)
			reads.Add(1)
			if bad, elems := mixed(reply, cmd[0] == "HGETALL"); bad {
				if violations.Add(1) <= 10 {
					t.Errorf("%q answered %q: values Redis never held together", cmd, elems)
				}
			}
			return true
		})
	}
	time.Sleep(2 * time.Second) // the load phase
	loops.Stop()
	t.Logf("%d multi-key reads, %d mixed", reads.Load(), violations.Load())
	if reads.Load() == 0 {
		t.Fatal("no read was checked")
	}
}
