package proxy

import (
	"errors"
	"testing"
	"time"

	"featcache/internal/redistest"
	"featcache/localcache"
)

// Monotonic reads: once featcache has answered a value it read from Redis, no client is answered an older one. The
// tests run in TTL-only mode (upstream.tracking: false), where the tier learns of a write straight on Redis only
// from its own reads, so that what they check does not depend on when an invalidation arrives; with tracking the
// same holds for the time an invalidation takes. A fill "of another client" that read Redis before a write is held
// open by hand (Acquire, then Complete with what it read), since no client can be made to read at a chosen instant.

// monotonicConfig caches every key for an hour in TTL-only mode: a write straight on Redis is seen only by a read.
const monotonicConfig = `
upstream: {tracking: false}
policies:
  - {name: c, prefix: "", soft_ttl: 1h, hard_ttl: 2h, jitter: 0}
`

// localPolicy returns the local-tier policy featcache reads key under.
func localPolicy(p *testProxy, key string) *localcache.Policy {
	ps := p.srv.policies.Load()
	return &ps.local[ps.matcher.Match([]byte(key)).Index]
}

var errNotRead = errors.New("test: the held fill read nothing")

// startCached37 starts a featcache with monotonicConfig and a connection to it through which GET k has cached 37.
func startCached37(t *testing.T) (*testProxy, *redistest.Conn) {
	t.Helper()
	p := startProxy(t, monotonicConfig)
	c := p.dial()
	p.redis.Do("SET", "k", "37")
	if got := string(c.Do("GET", "k")); got != bulk("37") {
		t.Fatalf("GET k: %q", got)
	}
	return p, c
}

// expectFromMemory sends args on c and requires the reply want, answered without an upstream GET (INFO
// commandstats): from an entry featcache kept.
func expectFromMemory(t *testing.T, p *testProxy, c *redistest.Conn, want string, args ...string) {
	t.Helper()
	gets := p.redis.Calls("get")
	expectDo(t, c, want, args...)
	if n := p.redis.Calls("get") - gets; n != 0 {
		t.Errorf("%q went to Redis: %d upstream GETs; want it answered from memory", args, n)
	}
}

// TestMGETDropsOlderKeptEntry: GET k caches 37; a write straight on Redis sets 38; an MGET of k and a key whose fill
// another read leads is answered from one transaction (38), and does not store it. The entry of k, fresh, must not
// stay at 37: the next GET would go back. Here the other read is an earlier GET of the same pipeline, then another
// client's read.
func TestMGETDropsOlderKeptEntry(t *testing.T) {
	t.Run("pipeline", func(t *testing.T) {
		p, c := startCached37(t)
		p.redis.Do("SET", "k", "38")
		// One batch: the GET of m leads m's fill, which the MGET's transaction then joins.
		if err := c.Send("GET", "m"); err != nil {
			t.Fatal(err)
		}
		if err := c.Send("MGET", "k", "m"); err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{string(p.redis.Do("GET", "m")), string(p.redis.Do("MGET", "k", "m"))} {
			if got, err := c.Read(); err != nil || string(got) != want {
				t.Fatalf("featcache %q (%v), Redis %q", got, err, want)
			}
		}
		if got, want := string(c.Do("GET", "k")), string(p.redis.Do("GET", "k")); got != want {
			t.Fatalf("GET k after the MGET answered 38: featcache %q, Redis %q", got, want)
		}
	})
	t.Run("another client", func(t *testing.T) {
		p, c := startCached37(t)
		p.redis.Do("SET", "k", "38")
		held, leader := p.cache.Acquire([]byte("m"))
		if !leader {
			t.Fatal("the held fill of m does not lead")
		}
		defer p.cache.Complete(held, localcache.Result{Err: errNotRead}, localPolicy(p, "m"))
		if got, want := string(c.Do("MGET", "k", "m")), string(p.redis.Do("MGET", "k", "m")); got != want {
			t.Fatalf("MGET k m: featcache %q, Redis %q", got, want)
		}
		if got, want := string(c.Do("GET", "k")), string(p.redis.Do("GET", "k")); got != want {
			t.Fatalf("GET k after the MGET answered 38: featcache %q, Redis %q", got, want)
		}
	})
}

// TestMGETKeepsConfirmedEntry: an MGET that may not store what it read leaves the entries it confirms, so a fresh
// key costs no upstream read afterwards.
func TestMGETKeepsConfirmedEntry(t *testing.T) {
	p, c := startCached37(t)
	held, _ := p.cache.Acquire([]byte("m"))
	defer p.cache.Complete(held, localcache.Result{Err: errNotRead}, localPolicy(p, "m"))
	if got, want := string(c.Do("MGET", "k", "m")), string(p.redis.Do("MGET", "k", "m")); got != want {
		t.Fatalf("MGET k m: featcache %q, Redis %q", got, want)
	}
	// The entry the MGET read the same value for is kept.
	expectFromMemory(t, p, c, bulk("37"), "GET", "k")
}

// TestMGETJoinedFillStoresNothingOlder: another client's GET of k read 37 before a write straight on Redis set 38,
// and has not completed. An MGET of k (and another key) reads 38 and does not lead k's fill; when that fill completes
// afterwards, it must not store 37 behind the MGET's answer.
func TestMGETJoinedFillStoresNothingOlder(t *testing.T) {
	p := startProxy(t, monotonicConfig)
	c := p.dial()
	p.redis.Do("SET", "k", "37")
	held, leader := p.cache.Acquire([]byte("k"))
	if !leader {
		t.Fatal("the held fill of k does not lead")
	}
	p.redis.Do("SET", "k", "38")
	if got, want := string(c.Do("MGET", "k", "m")), string(p.redis.Do("MGET", "k", "m")); got != want {
		t.Fatalf("MGET k m: featcache %q, Redis %q", got, want)
	}
	// A GET after the MGET does not join the held fill, which may have read before it.
	if err := c.Send("GET", "k"); err != nil {
		t.Fatal(err)
	}
	got, err := c.ReadTimeout(5 * time.Second)
	if want := string(p.redis.Do("GET", "k")); err != nil || string(got) != want {
		t.Errorf("GET k while the held fill is outstanding: featcache %q (%v), Redis %q", got, err, want)
	}
	p.cache.Complete(held, localcache.Result{Value: []byte("37"), PTTL: localcache.NoExpiry}, localPolicy(p, "k"))
	if err != nil {
		got, _ = c.Read() // the GET joined the held fill: its reply comes now
	}
	if got := held.Result(); string(got.Value) != "37" {
		t.Errorf("the held fill's waiters got %q; want what it read, 37", got.Value)
	}
	if got, want := string(c.Do("GET", "k")), string(p.redis.Do("GET", "k")); got != want {
		t.Fatalf("GET k after the MGET answered 38: featcache %q, Redis %q", got, want)
	}
}

// holdHashFill starts, by hand, a fill of fields of key as another client's HMGET would, and returns a function
// completing it with what it read (field, value pairs).
func holdHashFill(t *testing.T, p *testProxy, key string, fields ...string) func(kv ...string) {
	t.Helper()
	var fs [][]byte
	for _, f := range fields {
		fs = append(fs, []byte(f))
	}
	f, leader := p.cache.AcquireHash([]byte(key), localcache.HashFillID(fs, false))
	if !leader {
		t.Fatal("the held hash fill does not lead")
	}
	lp := localPolicy(p, key)
	done := false
	complete := func(kv ...string) {
		if done {
			return
		}
		done = true
		hr := &localcache.HashResult{KeyPolicy: lp}
		for i := 0; i+1 < len(kv); i += 2 {
			hr.Fields = append(hr.Fields, localcache.FieldRead{Field: []byte(kv[i]), Value: []byte(kv[i+1]), Policy: lp})
		}
		p.cache.CompleteHash(f, localcache.Result{PTTL: localcache.NoExpiry, Hash: hr}, hr)
	}
	t.Cleanup(func() { complete("f0", "0") })
	return complete
}

// startOvertakenHashFill starts a featcache with monotonicConfig and a connection to it, and holds open another
// client's fill of h's fields f0 f1 f2 that read the value read before a write straight on Redis set them to
// written; it returns what completes the held fill.
func startOvertakenHashFill(t *testing.T, read, written string) (*testProxy, *redistest.Conn, func(kv ...string)) {
	t.Helper()
	p := startProxy(t, monotonicConfig)
	c := p.dial()
	p.redis.Do("HSET", "h", "f0", read, "f1", read, "f2", read)
	complete := holdHashFill(t, p, "h", "f0", "f1", "f2")
	p.redis.Do("HSET", "h", "f0", written, "f1", written, "f2", written)
	return p, c, complete
}

// TestHashFillMergedLateNotOlder: another client's HMGET of f0 f1 f2 read 691 before a write straight on Redis set
// 692, and completes after an HGETALL through featcache read 692. Its fields must not be merged over the newer ones:
// the HMGET after it would be answered 691 from memory.
func TestHashFillMergedLateNotOlder(t *testing.T) {
	p, c, complete := startOvertakenHashFill(t, "691", "692")
	if got, want := string(c.Do("HGETALL", "h")), string(p.redis.Do("HGETALL", "h")); got != want {
		t.Fatalf("HGETALL h: featcache %q, Redis %q", got, want)
	}
	complete("f0", "691", "f1", "691", "f2", "691")
	for _, cmd := range [][]string{{"HMGET", "h", "f0", "f1", "f2"}, {"HGET", "h", "f1"}, {"HGETALL", "h"}} {
		if got, want := string(c.Do(cmd...)), string(p.redis.Do(cmd...)); got != want {
			t.Errorf("%q after the older fill completed: featcache %q, Redis %q", cmd, got, want)
		}
	}
}

// TestHashReadDoesNotJoinOvertakenFill: another client's HMGET of f0 f1 f2 read 1 before a write straight on Redis
// set 2. An HMGET of f2 f0 through featcache reads 2; the HMGET of f0 f1 f2 after it (f1 is not cached) must not
// join the fill that began before, whose answer may be older than what the client was just answered.
func TestHashReadDoesNotJoinOvertakenFill(t *testing.T) {
	p, c, complete := startOvertakenHashFill(t, "1", "2")
	if got, want := string(c.Do("HMGET", "h", "f2", "f0")), string(p.redis.Do("HMGET", "h", "f2", "f0")); got != want {
		t.Fatalf("HMGET h f2 f0: featcache %q, Redis %q", got, want)
	}
	joined := p.cache.Stats().FillsJoined
	if err := c.Send("HMGET", "h", "f0", "f1", "f2"); err != nil {
		t.Fatal(err)
	}
	type reply struct {
		b   []byte
		err error
	}
	replies := make(chan reply, 1)
	go func() {
		b, err := c.Read()
		replies <- reply{b, err}
	}()
	var r reply
	redistest.Eventually(t, 5*time.Second, "the HMGET is answered or joins the held fill", func() bool {
		select {
		case r = <-replies:
			return true
		default:
			return p.cache.Stats().FillsJoined > joined
		}
	})
	if r.b == nil && r.err == nil {
		t.Error("the HMGET joined a fill that began before the fill that answered the client 2")
		complete("f0", "1", "f1", "1", "f2", "1")
		r = <-replies
	}
	if want := string(p.redis.Do("HMGET", "h", "f0", "f1", "f2")); string(r.b) != want {
		t.Fatalf("HMGET h f0 f1 f2: featcache %q (%v), Redis %q", r.b, r.err, want)
	}
}

// TestMGETJoinedFillSameValueStored: a fill that an MGET's transaction joined and that read what the transaction
// read stores it: the transaction costs the key no entry when nothing changed.
func TestMGETJoinedFillSameValueStored(t *testing.T) {
	p := startProxy(t, monotonicConfig)
	c := p.dial()
	p.redis.Do("SET", "k", "37")
	held, _ := p.cache.Acquire([]byte("k"))
	if got, want := string(c.Do("MGET", "k", "m")), string(p.redis.Do("MGET", "k", "m")); got != want {
		t.Fatalf("MGET k m: featcache %q, Redis %q", got, want)
	}
	if !p.cache.Complete(held, localcache.Result{Value: []byte("37"), PTTL: localcache.NoExpiry}, localPolicy(p, "k")) {
		t.Error("the held fill, which read what the MGET read, was not stored")
	}
	expectFromMemory(t, p, c, bulk("37"), "GET", "k")
}
