package proxy

import (
	"bufio"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"featcache/internal/redistest"
	"featcache/internal/resp"
)

// TestHashReadsMatchRedis: HGET, HMGET and HGETALL through featcache, first filling and then from memory, give
// the bytes Redis gives: missing keys and fields, duplicate fields, empty values, binary fields, wrong types,
// wrong arity.
func TestHashReadsMatchRedis(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	for _, cmd := range [][]string{
		{"HSET", "h", "a", "1", "b", "", "c", "three", "\x00\xff", "bin"},
		{"HSET", "h2", "x", "y"},
		{"SET", "s", "string"},
	} {
		p.redis.Do(cmd...)
	}
	p.settle()
	c := p.dial()
	cases := [][]string{
		{"HGET", "h", "a"}, {"HGET", "h", "missing"}, {"HGET", "nohash", "a"}, {"HGET", "s", "a"},
		{"HMGET", "h", "a", "b", "missing", "a", "\x00\xff"}, {"HMGET", "nohash", "a", "b"}, {"HMGET", "s", "a"},
		{"HMGET", "h2", "x"},
		{"HGETALL", "h"}, {"HGETALL", "nohash"}, {"HGETALL", "s"}, {"HGETALL", "h2"},
		{"HGET", "h"}, {"HMGET", "h"}, {"HGETALL"},
	}
	for round := 0; round < 3; round++ {
		for _, cmd := range cases {
			want := string(p.redis.Do(cmd...))
			if got := string(c.Do(cmd...)); got != want {
				t.Fatalf("round %d %q: got %q; want %q", round, cmd, got, want)
			}
		}
	}
	if hits := p.srv.Stats().Hits.Load(); hits == 0 {
		t.Fatal("no hash read was answered from memory")
	}
}

// TestHMGETPartialHitFetchesWholeSet: an HMGET whose fields are partly cached reads all of its fields from Redis
// (seen with MONITOR), so that its reply is of one instant, and one whose fields were all read by one fill reads
// nothing.
func TestHMGETPartialHitFetchesWholeSet(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	p.redis.Do("HSET", "h", "f1", "1", "f2", "2", "f3", "3")
	p.settle()
	mon := redistest.Dial(t, p.redis.Addr())
	mon.Send("MONITOR")
	r := bufio.NewReader(mon.NetConn())
	resp.ReadFrame(r, nil) // +OK
	c := p.dial()
	if got := string(c.Do("HMGET", "h", "f1", "f2")); got != "*2\r\n"+bulk("1")+bulk("2") {
		t.Fatalf("HMGET f1 f2: %q", got)
	}
	if got := string(c.Do("HMGET", "h", "f2", "f3", "f1")); got != "*3\r\n"+bulk("2")+bulk("3")+bulk("1") {
		t.Fatalf("HMGET f2 f3 f1: %q", got)
	}
	if got := string(c.Do("HMGET", "h", "f3", "f1")); got != "*2\r\n"+bulk("3")+bulk("1") {
		t.Fatalf("HMGET f3 f1: %q", got)
	}
	p.redis.Do("ECHO", "end-of-test") // a marker in the MONITOR stream
	var hmgets []string
	mon.NetConn().SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		frame, err := resp.ReadFrame(r, nil)
		if err != nil {
			t.Fatal(err)
		}
		line := string(frame)
		if strings.Contains(line, `"end-of-test"`) {
			break
		}
		if i := strings.Index(line, `"HMGET"`); i >= 0 {
			hmgets = append(hmgets, strings.TrimSpace(line[i:]))
		}
	}
	want := []string{`"HMGET" "h" "f1" "f2"`, `"HMGET" "h" "f2" "f3" "f1"`}
	if strings.Join(hmgets, "|") != strings.Join(want, "|") {
		t.Fatalf("Redis saw %q; want %q (every field of a partly cached read, and nothing for a cached one)", hmgets, want)
	}
}

// TestHashWritesInvalidate: any write to a hash, through featcache or straight to Redis, drops its cached fields.
func TestHashWritesInvalidate(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	p.redis.Do("HSET", "h", "a", "1", "b", "2")
	p.settle()
	c := p.dial()
	c.Do("HGETALL", "h")
	c.Do("HMGET", "h", "a", "b")
	c.Do("HSET", "h", "a", "10") // through featcache: read-your-writes
	if got := string(c.Do("HGET", "h", "a")); got != bulk("10") {
		t.Fatalf("after HSET through featcache: %q", got)
	}
	if got := string(c.Do("HGETALL", "h")); got != string(p.redis.Do("HGETALL", "h")) {
		t.Fatalf("HGETALL after HSET: %q", got)
	}
	p.redis.Do("HDEL", "h", "b") // straight to Redis: tracking
	redistest.Eventually(t, 2*time.Second, "HDEL seen", func() bool { return string(c.Do("HGET", "h", "b")) == "$-1\r\n" })
	p.redis.Do("HINCRBY", "h", "a", "5")
	redistest.Eventually(t, 2*time.Second, "HINCRBY seen", func() bool {
		return string(c.Do("HMGET", "h", "a", "b")) == "*2\r\n"+bulk("15")+"$-1\r\n"
	})
	p.redis.Do("DEL", "h")
	redistest.Eventually(t, 2*time.Second, "DEL seen", func() bool { return string(c.Do("HGETALL", "h")) == "*0\r\n" })
}

// TestPipelinedHMGETsShareOneRoundTrip: Feast's access pattern, a pipeline of HMGETs over many entities, is
// answered with one upstream round trip for all its misses, and none once cached.
func TestPipelinedHMGETsShareOneRoundTrip(t *testing.T) {
	// negative_ttl: the field that does not exist (f3) is remembered too, so the second pipeline reads nothing.
	p := startProxy(t, "policies: [{name: p, prefix: \"\", hard_ttl: 1h, negative_ttl: 1m}]")
	const n = 100
	for i := 0; i < n; i++ {
		p.redis.Do("HSET", "e:"+strconv.Itoa(i), "f1", "a"+strconv.Itoa(i), "f2", "b")
	}
	p.settle()
	c := p.dial()
	pipeline := func() {
		var payload []byte
		for i := 0; i < n; i++ {
			payload = append(payload, redistest.Encode("HMGET", "e:"+strconv.Itoa(i), "f1", "f2", "f3")...)
		}
		c.NetConn().Write(payload)
		for i := 0; i < n; i++ {
			got, err := c.Read()
			if want := "*3\r\n" + bulk("a"+strconv.Itoa(i)) + bulk("b") + "$-1\r\n"; err != nil || string(got) != want {
				t.Fatalf("HMGET e:%d: %q, %v; want %q", i, got, err, want)
			}
		}
	}
	before := p.srv.Stats().RoundTrips.Load()
	pipeline()
	if got := p.srv.Stats().RoundTrips.Load() - before; got != 1 {
		t.Fatalf("a pipeline of %d HMGET misses took %d round trips; want 1", n, got)
	}
	calls := p.redis.Calls("hmget")
	pipeline()
	if got := p.redis.Calls("hmget"); got != calls {
		t.Fatalf("the cached pipeline read Redis: %d HMGETs", got-calls)
	}
}

// TestHashFieldsOutliveNoUpstreamExpiry: a hash field is never served past its key's expiry in Redis.
func TestHashFieldsOutliveNoUpstreamExpiry(t *testing.T) {
	p := startProxy(t, `
upstream: {tracking: false}
policies: [{name: p, prefix: "", soft_ttl: 1h, hard_ttl: 1h}]
`)
	p.redis.Do("HSET", "h", "a", "1")
	p.redis.Do("PEXPIRE", "h", "300")
	c := p.dial()
	if got := string(c.Do("HGET", "h", "a")); got != bulk("1") {
		t.Fatalf("HGET: %q", got)
	}
	redistest.Eventually(t, 3*time.Second, "h expires in Redis", func() bool { return string(p.redis.Do("EXISTS", "h")) == ":0\r\n" })
	if got := string(c.Do("HGET", "h", "a")); got != "$-1\r\n" {
		t.Fatalf("past the hash's expiry: %q", got)
	}
}

// TestHashReadsWithFieldTTLPath runs the per-field expiry path (as against Redis 7.4+, where the command table
// has HPTTL) against Redis 7.0, whose HPTTL fails: every reply is still Redis's, whatever mix of HGET, HMGET and
// HGETALL one connection sends, and fields whose own TTL could not be read are not stored.
func TestHashReadsWithFieldTTLPath(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	p.redis.Do("HSET", "h", "a", "1", "b", "2")
	p.redis.Do("HSET", "h2", "a", "1")
	p.settle()
	p.srv.tbl.Load().fieldTTL = true
	c := p.dial()
	rc := p.redis.Dial()
	for round := 0; round < 2; round++ {
		for _, args := range [][]string{
			{"HGETALL", "h"}, {"HMGET", "h", "a", "b", "x"}, {"HGET", "h", "a"}, {"HGETALL", "h2"},
			{"HMGET", "h2", "a"}, {"HGETALL", "h"},
		} {
			if got, want := string(c.Do(args...)), string(rc.Do(args...)); got != want {
				t.Fatalf("round %d %q: got %q; want %q (Redis)", round, args, got, want)
			}
		}
	}
	if n := p.srv.Stats().Panics.Load(); n != 0 {
		t.Fatalf("%d connections ended by a panic", n)
	}
	// HMGET's fields had no readable TTL: not stored, so the second round read them again.
	if n := p.redis.Calls("hmget"); n < 4 {
		t.Fatalf("%d upstream HMGETs for two rounds; want the fields read again (not stored without their TTLs)", n)
	}
}

// TestHashRefreshLooksAgain: a client that saw a hash read's fields soft-stale, and starts their refresh only after
// another client's refresh of them has stored them fresh and ended, reads nothing from Redis, for HMGET and for
// HGETALL; the fill it led is released, so the next stale read refreshes again.
func TestHashRefreshLooksAgain(t *testing.T) {
	p := startProxy(t, `
upstream: {tracking: false}
policies:
  - name: p
    prefix: ""
    soft_ttl: 10s
    hard_ttl: 20s
    jitter: 0
`)
	p.redis.Do("HSET", "h", "a", "1", "b", "2")
	c := p.dial()
	nc, peer := net.Pipe()
	t.Cleanup(func() { nc.Close(); peer.Close() })
	late := p.srv.newClient(nc)
	for _, read := range []struct {
		args  []string
		calls string
	}{{[]string{"HMGET", "h", "a", "b"}, "hmget"}, {[]string{"HGETALL", "h"}, "hgetall"}} {
		want := string(p.redis.Do(read.args...))
		c.Do(read.args...) // the fill
		p.clock.Advance(11 * time.Second)
		cmd := parsedCommand(read.args...)
		ps, pol, key, ok := late.cachedKey(cmd)
		all := read.args[0] == "HGETALL"
		fields := cmd.Args[2:]
		if !ok || (!all && !late.lookupFields(key, fields, ps, pol, p.clock.Now(), false)) || (!all && !late.hs.stale) {
			t.Fatalf("%s: the late client does not see the fields soft-stale", read.calls)
		}
		var fetch [][]byte
		if !all {
			fetch = cloneAll(late.fetchFields(fields))
		}
		refreshes := p.srv.Stats().Refreshes.Load()
		if got := string(c.Do(read.args...)); got != want {
			t.Fatalf("%s soft-stale: got %q; want %q", read.calls, got, want)
		}
		redistest.Eventually(t, 2*time.Second, "the refresh stores the fields fresh", func() bool {
			fresh, _ := p.srv.freshHash(&hashRead{cmd: map[bool]hashCmd{true: hashGetAll, false: hashMGet}[all], key: key,
				fetch: fetch, ps: ps, pol: pol}, p.clock.Now())
			return fresh != nil
		})
		calls := p.redis.Calls(read.calls)
		late.refreshHash(key, fetch, all, ps, pol)
		if n := p.srv.Stats().Refreshes.Load(); n != refreshes+1 {
			t.Fatalf("%s: %d refreshes; want 1, the late client's finds the fields fresh", read.calls, n-refreshes)
		}
		time.Sleep(50 * time.Millisecond)
		if n := p.redis.Calls(read.calls); n != calls {
			t.Fatalf("%s: %d upstream reads after the late refresh; want none", read.calls, n-calls)
		}
		p.clock.Advance(11 * time.Second)
		c.Do(read.args...)
		if n := p.srv.Stats().Refreshes.Load(); n != refreshes+2 {
			t.Fatalf("%s: the next stale read did not refresh (%d refreshes in all)", read.calls, n-refreshes)
		}
	}
}

// TestHashMissLooksAgain: a client whose hash read missed, and that leads its fill only after another client's fill
// of the same fields stored them and ended, answers from what that fill stored, without an upstream read, for HMGET
// and HGETALL, as a missed GET does.
func TestHashMissLooksAgain(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	p.redis.Do("HSET", "h", "a", "1", "b", "2")
	p.settle()
	c := p.dial()
	for _, read := range []struct {
		kind  hashCmd
		args  []string
		calls string
	}{{hashMGet, []string{"HMGET", "h", "a", "b"}, "hmget"}, {hashGetAll, []string{"HGETALL", "h"}, "hgetall"}} {
		nc, peer := net.Pipe()
		t.Cleanup(func() { nc.Close(); peer.Close() })
		late := p.srv.newClient(nc)
		cmd := parsedCommand(read.args...)
		ps, pol, key, ok := late.cachedKey(cmd)
		var fields [][]byte
		if read.kind != hashGetAll {
			fields = cmd.Args[2:]
			if !ok || late.lookupFields(key, fields, ps, pol, p.clock.Now(), false) {
				t.Fatalf("%s: the late client's lookup does not miss", read.calls)
			}
		} else if _, served := late.serveHashAll(nil, key, ps, pol, p.clock.Now(), false); !ok || served {
			t.Fatalf("%s: the late client's lookup does not miss", read.calls)
		}
		want := string(p.redis.Do(read.args...))
		if got := string(c.Do(read.args...)); got != want { // the other client's fill
			t.Fatalf("%s: got %q; want %q", read.calls, got, want)
		}
		calls := p.redis.Calls(read.calls)
		late.fillHash(read.kind, key, fields, ps, pol, ps.counters[pol.Index])
		if len(late.seg.fetches) != 0 || len(late.seg.holes) != 0 {
			t.Fatalf("%s: the late client's fill went upstream (%d fetches, %d holes)", read.calls,
				len(late.seg.fetches), len(late.seg.holes))
		}
		if got := string(late.out); got != want {
			t.Fatalf("%s: the late client answered %q; want %q", read.calls, got, want)
		}
		if n := p.redis.Calls(read.calls); n != calls {
			t.Fatalf("%s: %d upstream reads for the late client; want none", read.calls, n-calls)
		}
	}
}

// parsedCommand is args as the reader hands a command to the request path.
func parsedCommand(args ...string) *resp.Command {
	cmd := &resp.Command{}
	for _, a := range args {
		cmd.Args = append(cmd.Args, []byte(a))
	}
	return cmd
}
