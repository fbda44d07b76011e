package main

import (
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"featcache/internal/redistest"
)

// Probes of featcache behind Redis Sentinel and in front of replicas, written from the documentation alone: each
// test starts real redis-servers, real sentinels and the featcache binary, and compares what a client of featcache
// reads with what a client of the current primary (or of the replica featcache is in front of) reads.

// sentinelConfig finds set's primary through its sentinels, with a caching policy of each kind: "f:" flushed on a
// tracking loss, "s:" serve_stale, "r:" revalidate; extra is appended.
func sentinelConfig(set *redistest.SentinelSet, extra string) string {
	q := make([]string, len(set.Sentinels))
	for i, a := range set.SentinelAddrs() {
		q[i] = strconv.Quote(a)
	}
	return fmt.Sprintf(`
upstream:
  sentinel:
    master_set: %s
    addresses: [%s]
policies:
  - {name: f, prefix: "f:", soft_ttl: 1h, hard_ttl: 1h}
  - {name: s, prefix: "s:", soft_ttl: 1h, hard_ttl: 1h, on_upstream_error: serve_stale, max_stale: 1h}
  - {name: r, prefix: "r:", soft_ttl: 1h, hard_ttl: 1h, on_tracking_loss: revalidate}
%s`, set.Name, strings.Join(q, ", "), extra)
}

// startNotReady runs featcache like startBinaryArgs, with the configuration file's upstream, and returns once it
// accepts connections, ready or not.
func startNotReady(t *testing.T, yamlCfg string) *instance {
	t.Helper()
	listen := "127.0.0.1:" + strconv.Itoa(redistest.FreePort(t))
	admin := "127.0.0.1:" + strconv.Itoa(redistest.FreePort(t))
	in := &instance{t: t, log: &redistest.LogBuffer{}, addr: listen, admin: "http://" + admin}
	cmd := exec.Command(binary(t), "-config", writeConfig(t, yamlCfg), "-listen", listen, "-admin", admin)
	cmd.Stderr = in.log
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("featcache log:\n%s", in.log.String())
		}
	})
	in.process = startProcess(t, cmd, nil, 0)
	redistest.Eventually(t, 30*time.Second, "featcache listening", func() bool {
		c, err := redistest.TryDial(t, in.addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return in
}

var upstreamAddrLine = regexp.MustCompile(`upstream_addr:(\S*)\r\n`)

// primaryInUse is the upstream featcache says it uses (CACHE STATS upstream_addr), "" for none.
func (in *instance) primaryInUse(t *testing.T) string {
	t.Helper()
	c := redistest.Dial(t, in.addr)
	defer c.Close()
	m := upstreamAddrLine.FindSubmatch(c.Do("CACHE", "STATS"))
	if m == nil {
		return ""
	}
	return string(m[1])
}

// unreplicated runs args on primary without propagating them: its replicas never receive the write, as with a
// write acknowledged just before a failover.
func unreplicated(t *testing.T, primary *redistest.Server, args ...string) {
	t.Helper()
	script := "redis.set_repl(redis.REPL_NONE) return redis.call(unpack(ARGV))"
	if reply := primary.Do(append([]string{"EVAL", script, "0"}, args...)...); reply[0] == '-' {
		t.Fatalf("%v: %q", args, reply)
	}
}

func inSync(r *redistest.Server) func() bool {
	return func() bool { return strings.Contains(string(r.Do("INFO", "replication")), "master_link_status:up") }
}

// TestOutsideReplicaRepliesMatchRedis: featcache in front of a replica (replica-read-only, the default) answers
// as the replica does: HELLO's role (Redis says "replica"; featcache said "master" whatever the upstream was,
// and follows REPLICAOF NO ONE run by another client now), READONLY errors for writes, scripts and transactions,
// and reads that follow the primary's writes.
func TestOutsideReplicaRepliesMatchRedis(t *testing.T) {
	primary := redistest.Start(t)
	replica := redistest.Start(t, "--replicaof", "127.0.0.1", strconv.Itoa(primary.Port()))
	redistest.Eventually(t, 10*time.Second, "replica in sync", inSync(replica))
	primary.Do("SET", "f:k", "v1")
	primary.Do("WAIT", "1", "5000")
	in := startBinary(t, replica, `
policies:
  - {name: f, prefix: "f:", soft_ttl: 1h, hard_ttl: 1h}
`)
	fc, direct := redistest.Dial(t, in.addr), replica.Dial()
	same := func(args ...string) {
		t.Helper()
		a, b := fc.Do(args...), direct.Do(args...)
		if args[0] == "HELLO" {
			a, b = helloID.ReplaceAllLiteral(a, []byte("$2\r\nid\r\n:N\r\n")), helloID.ReplaceAllLiteral(b, []byte("$2\r\nid\r\n:N\r\n"))
		}
		if string(a) != string(b) {
			t.Errorf("%q: featcache %q, the replica %q", args, a, b)
		}
	}
	for _, cmd := range [][]string{
		{"HELLO", "3"}, {"HELLO", "2"}, {"GET", "f:k"}, {"SET", "f:k", "x"}, {"MULTI"}, {"SET", "f:k", "y"}, {"GET", "f:k"},
		{"EXEC"}, {"EVAL", "return redis.call('SET', KEYS[1], 'z')", "1", "f:k"},
		{"EVAL_RO", "return redis.call('GET', KEYS[1])", "1", "f:k"}, {"SET", "f:n", "1", "GET"},
		{"GETEX", "f:k", "EX", "10"}, {"GETDEL", "f:k"}, {"INCR", "f:i"}, {"DEL", "f:k"}, {"FLUSHALL"}, {"GET", "f:k"},
	} {
		same(cmd...)
	}
	// The primary writes behind the replica: featcache follows.
	primary.Do("SET", "f:k", "v2")
	redistest.Eventually(t, 5*time.Second, "featcache reads the primary's write", func() bool {
		return string(fc.Do("GET", "f:k")) == "$2\r\nv2\r\n"
	})
	// Another client promotes the replica: HELLO says master, as the replica now does, and writes work.
	if r := replica.Do("REPLICAOF", "NO", "ONE"); string(r) != "+OK\r\n" {
		t.Fatalf("REPLICAOF NO ONE: %q", r)
	}
	redistest.Eventually(t, 10*time.Second, "HELLO's role follows the upstream's", func() bool {
		return strings.Contains(string(fc.Do("HELLO", "2")), "$4\r\nrole\r\n$6\r\nmaster\r\n")
	})
	same("HELLO", "3")
	same("HELLO", "2")
	same("SET", "f:k", "v3")
	same("GET", "f:k")
}

// TestOutsideSentinelFailoverUnderReaders: the primary holds values its replica never received (f:, s:, r:
// strings and hashes, cached through featcache); readers pipeline GET, MGET, HGET, HMGET and HGETALL through
// featcache during a SENTINEL FAILOVER. No read sent once CACHE STATS names the new primary returns a value only
// the old primary held, and afterwards every read equals the new primary's reply. Sessions open across the
// failover: a RESP3 tracking client gets the null invalidation and then invalidations from the new primary; MULTI,
// WATCH and BLPOP get the documented error; a subscriber's and a MONITOR's connections are closed, as the
// sentinel's CLIENT KILL closes a direct client's.
func TestOutsideSentinelFailoverUnderReaders(t *testing.T) {
	set := redistest.StartSentinelSet(t, "m", 1, 1, "")
	old, next := set.Primary, set.Replicas[0]
	var reads [][]string
	for _, k := range []string{"f:a", "s:a", "r:a"} {
		old.Do("SET", k, "v1")
		old.Do("HSET", k+"h", "x", "v1", "y", "v1")
		reads = append(reads, []string{"GET", k}, []string{"HGETALL", k + "h"}, []string{"HGET", k + "h", "x"},
			[]string{"HMGET", k + "h", "x", "y"})
	}
	reads = append(reads, []string{"MGET", "f:a", "s:a", "r:a"})
	old.Do("WAIT", "1", "5000")
	for _, k := range []string{"f:a", "s:a", "r:a"} {
		unreplicated(t, old, "SET", k, "old-only")
		unreplicated(t, old, "HSET", k+"h", "x", "old-only")
	}
	in := startBinaryArgs(t, sentinelConfig(set, "commands:\n  deny: []\n"))
	c := redistest.Dial(t, in.addr)
	for _, r := range reads {
		if f := c.Do(r...); !strings.Contains(string(f), "old-only") {
			t.Fatalf("%q before the failover: %q", r, f)
		}
	}

	tracker := redistest.Dial(t, in.addr)
	tracker.Do("HELLO", "3")
	if r := tracker.Do("CLIENT", "TRACKING", "ON"); string(r) != "+OK\r\n" {
		t.Fatalf("CLIENT TRACKING ON: %q", r)
	}
	tracker.Do("GET", "f:a")
	tracker.Do("GET", "x:a")
	multi := redistest.Dial(t, in.addr)
	multi.Do("MULTI")
	multi.Do("SET", "f:m", "1")
	watch := redistest.Dial(t, in.addr)
	watch.Do("WATCH", "f:a")
	blpop := redistest.Dial(t, in.addr)
	blpop.Send("BLPOP", "l", "0")
	sub := redistest.Dial(t, in.addr)
	sub.Do("SUBSCRIBE", "ch")
	mon := redistest.Dial(t, in.addr)
	mon.Do("MONITOR")

	var wg sync.WaitGroup
	done := make(chan struct{})
	errs := make(chan string, 64)
	report := func(s string) {
		select {
		case errs <- s:
		default:
		}
	}
	for g := 0; g < 3; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rc, stats := redistest.Dial(t, in.addr), redistest.Dial(t, in.addr)
			for {
				select {
				case <-done:
					return
				default:
				}
				switched := strings.Contains(string(stats.Do("CACHE", "STATS")), "upstream_addr:"+next.Addr()+"\r\n")
				for _, r := range reads {
					rc.Send(r...)
				}
				for _, r := range reads {
					f, err := rc.ReadTimeout(10 * time.Second)
					if err != nil {
						report(fmt.Sprintf("%q: %v", r, err))
						return
					}
					if switched && strings.Contains(string(f), "old-only") {
						report(fmt.Sprintf("%q sent after the switch: %q", r, f))
					}
				}
			}
		}()
	}
	set.Failover()
	redistest.Eventually(t, 20*time.Second, "featcache on the new primary", func() bool { return in.primaryInUse(t) == next.Addr() })
	// The readers go on for a while on the new primary.
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		c.Do("PING")
	}
	close(done)
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	for _, r := range reads {
		if a, b := c.Do(r...), next.Do(r...); string(a) != string(b) {
			t.Errorf("%q after the failover: featcache %q, the new primary %q", r, a, b)
		}
	}

	// Sessions.
	const moved = "-ERR featcache upstream unavailable: upstream: connection closed: the primary moved\r\n"
	for name, got := range map[string][]byte{"EXEC": multi.Do("EXEC"), "after WATCH": watch.Do("GET", "f:a")} {
		if string(got) != moved {
			t.Errorf("%s across the failover: %q; want %q", name, got, moved)
		}
	}
	if f, err := blpop.ReadTimeout(10 * time.Second); string(f) != moved {
		t.Errorf("BLPOP across the failover: %q %v; want %q", f, err, moved)
	}
	for name, cn := range map[string]*redistest.Conn{"subscriber": sub, "MONITOR": mon} {
		var err error
		for err == nil {
			_, err = cn.ReadTimeout(10 * time.Second)
		}
		if !strings.Contains(err.Error(), "EOF") && !strings.Contains(err.Error(), "reset") {
			t.Errorf("%s across the failover: %v; want its connection closed", name, err)
		}
	}
	const flush = ">2\r\n$10\r\ninvalidate\r\n_\r\n"
	if f, err := tracker.ReadTimeout(10 * time.Second); string(f) != flush {
		t.Fatalf("tracking client across the failover: %q %v; want %q", f, err, flush)
	}
	for string(tracker.Do("GET", "f:a")) == flush { // a second flush may follow (tracking up on the new primary)
	}
	tracker.Do("GET", "x:a")
	next.Do("SET", "f:a", "new")
	next.Do("SET", "x:a", "new")
	want := map[string]bool{">2\r\n$10\r\ninvalidate\r\n*1\r\n$3\r\nf:a\r\n": true, ">2\r\n$10\r\ninvalidate\r\n*1\r\n$3\r\nx:a\r\n": true}
	for len(want) > 0 {
		f, err := tracker.ReadTimeout(10 * time.Second)
		if err != nil {
			t.Fatalf("tracking client: invalidations from the new primary missing: %v (%v)", want, err)
		}
		delete(want, string(f))
	}
}
