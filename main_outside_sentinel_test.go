package main

import (
	"fmt"
	"net/http"
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

// outsideSentinelConfig finds set's primary through its sentinels, with a caching policy of each kind: "f:" flushed on a
// tracking loss, "s:" serve_stale, "r:" revalidate; extra is appended.
func outsideSentinelConfig(set *redistest.SentinelSet, extra string) string {
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

// startBinaryNotReady runs featcache like startBinaryArgs, with the configuration file's upstream, and returns once it
// accepts connections, ready or not.
func startBinaryNotReady(t *testing.T, yamlCfg string) *instance {
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

var cacheStatsUpstreamAddr = regexp.MustCompile(`upstream_addr:(\S*)\r\n`)

// primaryInUse is the upstream featcache says it uses (CACHE STATS upstream_addr), "" for none.
func (in *instance) primaryInUse(t *testing.T) string {
	t.Helper()
	c := redistest.Dial(t, in.addr)
	defer c.Close()
	m := cacheStatsUpstreamAddr.FindSubmatch(c.Do("CACHE", "STATS"))
	if m == nil {
		return ""
	}
	return string(m[1])
}

// unreplicated runs args on primary without propagating them: its replicas never receive the write, as with a
// write acknowledged just before a failover.
func writeUnreplicated(t *testing.T, primary *redistest.Server, args ...string) {
	t.Helper()
	script := "redis.set_repl(redis.REPL_NONE) return redis.call(unpack(ARGV))"
	if reply := primary.Do(append([]string{"EVAL", script, "0"}, args...)...); reply[0] == '-' {
		t.Fatalf("%v: %q", args, reply)
	}
}

func replicationUp(r *redistest.Server) func() bool {
	return func() bool { return strings.Contains(string(r.Do("INFO", "replication")), "master_link_status:up") }
}

// TestOutsideReplicaRepliesMatchRedis: featcache in front of a replica (replica-read-only, the default) answers
// as the replica does: HELLO's role (Redis says "replica"; featcache said "master" whatever the upstream was,
// and follows REPLICAOF NO ONE run by another client now), READONLY errors for writes, scripts and transactions,
// and reads that follow the primary's writes.
func TestOutsideReplicaRepliesMatchRedis(t *testing.T) {
	primary := redistest.Start(t)
	replica := redistest.Start(t, "--replicaof", "127.0.0.1", strconv.Itoa(primary.Port()))
	redistest.Eventually(t, 10*time.Second, "replica in sync", replicationUp(replica))
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
		writeUnreplicated(t, old, "SET", k, "old-only")
		writeUnreplicated(t, old, "HSET", k+"h", "x", "old-only")
	}
	in := startBinaryArgs(t, outsideSentinelConfig(set, "commands:\n  deny: []\n"))
	// A second featcache without tracking (TTL-only freshness) follows the same failover.
	ttlOnly := startBinaryArgs(t, strings.Replace(outsideSentinelConfig(set, ""), "upstream:\n", "upstream:\n  tracking: false\n", 1))
	c, c2 := redistest.Dial(t, in.addr), redistest.Dial(t, ttlOnly.addr)
	for _, r := range reads {
		for _, cn := range []*redistest.Conn{c, c2} {
			if f := cn.Do(r...); !strings.Contains(string(f), "old-only") {
				t.Fatalf("%q before the failover: %q", r, f)
			}
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
	redistest.Eventually(t, 20*time.Second, "featcache without tracking on the new primary", func() bool {
		return ttlOnly.primaryInUse(t) == next.Addr()
	})
	for _, r := range reads {
		b := next.Do(r...)
		if a := c.Do(r...); string(a) != string(b) {
			t.Errorf("%q after the failover: featcache %q, the new primary %q", r, a, b)
		}
		if a := c2.Do(r...); string(a) != string(b) {
			t.Errorf("%q after the failover: featcache without tracking %q, the new primary %q", r, a, b)
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
		if string(f) == flush {
			break // a flush (tracking established on the new primary meanwhile) invalidates them too
		}
		delete(want, string(f))
	}
}

// TestOutsideSentinelPrimaryMadeReplica: another client runs REPLICAOF on the primary featcache uses, towards a
// server holding other data. featcache's cached values follow what the node now holds (its full synchronisation
// flushes), its writes get the node's own READONLY error, and once the sentinels fail over (a primary that reports
// itself a replica is down to them) featcache reads what the new primary holds.
func TestOutsideSentinelPrimaryMadeReplica(t *testing.T) {
	set := redistest.StartSentinelSet(t, "m", 1, 1, "")
	other := redistest.Start(t, "--repl-diskless-sync-delay", "0")
	other.Do("SET", "f:k", "other")
	other.Do("HSET", "s:h", "x", "other")
	set.Primary.Do("SET", "f:k", "old")
	set.Primary.Do("HSET", "s:h", "x", "old")
	in := startBinaryArgs(t, outsideSentinelConfig(set, ""))
	c := redistest.Dial(t, in.addr)
	if f := c.Do("GET", "f:k"); string(f) != "$3\r\nold\r\n" {
		t.Fatalf("GET f:k: %q", f)
	}
	c.Do("HGETALL", "s:h")
	if r := set.Primary.Do("REPLICAOF", "127.0.0.1", strconv.Itoa(other.Port())); string(r) != "+OK\r\n" {
		t.Fatalf("REPLICAOF: %q", r)
	}
	redistest.Eventually(t, 10*time.Second, "the primary synchronised from the other server", replicationUp(set.Primary))
	for _, r := range [][]string{{"GET", "f:k"}, {"HGETALL", "s:h"}} {
		redistest.Eventually(t, 10*time.Second, fmt.Sprintf("featcache reads the other server's data for %q", r), func() bool {
			return strings.Contains(string(c.Do(r...)), "other")
		})
	}
	const readonly = "-READONLY You can't write against a read only replica.\r\n"
	if f := c.Do("SET", "f:w", "1"); string(f) != readonly && string(f) != "+OK\r\n" {
		t.Errorf("SET through featcache on a demoted primary: %q; want %q (or +OK once failed over)", f, readonly)
	}
	redistest.Eventually(t, 20*time.Second, "featcache on the sentinels' new primary", func() bool {
		return in.primaryInUse(t) == set.Replicas[0].Addr()
	})
	for _, r := range [][]string{{"SET", "f:w", "2"}, {"GET", "f:w"}, {"GET", "f:k"}, {"HGETALL", "s:h"}} {
		if a, b := c.Do(r...), set.Replicas[0].Do(r...); string(a) != string(b) {
			t.Errorf("%q: featcache %q, the new primary %q", r, a, b)
		}
	}
}

// TestOutsideSentinelsDown: with its only sentinel down at start featcache starts anyway, answers the documented
// error and is not ready; once the sentinel is back it serves the primary. Later all sentinels go down while it
// runs: it keeps serving the primary it knows, and follows writes on it.
func TestOutsideSentinelsDown(t *testing.T) {
	set := redistest.StartSentinelSet(t, "m", 0, 1, "")
	set.Primary.Do("SET", "f:k", "v1")
	set.Sentinels[0].Kill()
	in := startBinaryNotReady(t, outsideSentinelConfig(set, ""))
	c := redistest.Dial(t, in.addr)
	const none = "-ERR featcache upstream unavailable: upstream: no primary known yet\r\n"
	for _, r := range [][]string{{"GET", "f:k"}, {"SET", "f:w", "1"}} {
		if f := c.Do(r...); string(f) != none {
			t.Errorf("%q with no sentinel: %q; want %q", r, f, none)
		}
	}
	if st := in.status("/readyz"); st != http.StatusServiceUnavailable {
		t.Errorf("/readyz with no sentinel: %d", st)
	}
	set.Sentinels[0].Restart()
	redistest.Eventually(t, 20*time.Second, "featcache ready once the sentinel is back", func() bool {
		return in.status("/readyz") == http.StatusOK
	})
	if f := c.Do("GET", "f:k"); string(f) != "$2\r\nv1\r\n" {
		t.Errorf("GET f:k: %q", f)
	}
	set.Sentinels[0].Kill()
	// A few of featcache's one-second checks of the sentinels run, unanswered, meanwhile.
	for i, deadline := 0, time.Now().Add(2500*time.Millisecond); time.Now().Before(deadline); i++ {
		n := strconv.Itoa(i)
		for _, r := range [][]string{{"SET", "f:k", "v" + n}, {"GET", "f:k"}, {"GET", "x:uncached"}} {
			if a, b := c.Do(r...), set.Primary.Do(r[0], r[1]); r[0] == "GET" && string(a) != string(b) {
				t.Errorf("%q with the sentinels down: featcache %q, the primary %q", r, a, b)
			}
		}
		set.Primary.Do("SET", "f:k", "direct"+n)
		redistest.Eventually(t, 5*time.Second, "a direct write read through featcache", func() bool {
			return string(c.Do("GET", "f:k")) == "$"+strconv.Itoa(len("direct"+n))+"\r\ndirect"+n+"\r\n"
		})
	}
	if st := in.status("/readyz"); st != http.StatusOK {
		t.Errorf("/readyz with the sentinels down while running: %d", st)
	}
}

// TestOutsideSentinelNamesNonPrimary: a sentinel monitoring a replica names a node that is not a primary, and then
// one that refuses connections. featcache never sends a write to either: it answers the documented error rather
// than the replica's READONLY or a hang, and is not ready.
func TestOutsideSentinelNamesNonPrimary(t *testing.T) {
	primary := redistest.Start(t)
	replica := redistest.Start(t, "--replicaof", "127.0.0.1", strconv.Itoa(primary.Port()))
	redistest.Eventually(t, 10*time.Second, "replica in sync", replicationUp(replica))
	sentinel := redistest.StartSentinel(t, "bad", replica, 1, "")
	in := startBinaryNotReady(t, fmt.Sprintf(`
upstream:
  sentinel:
    master_set: bad
    addresses: [%q]
policies:
  - {name: f, prefix: "f:", soft_ttl: 1h, hard_ttl: 1h}
`, sentinel.Addr()))
	c := redistest.Dial(t, in.addr)
	const none = "-ERR featcache upstream unavailable: upstream: no primary known yet\r\n"
	check := func(what string) {
		t.Helper()
		for _, r := range [][]string{{"GET", "f:k"}, {"SET", "f:w", "1"}, {"INCR", "n"}} {
			if f := c.Do(r...); string(f) != none {
				t.Errorf("%q, the sentinel naming %s: %q; want %q", r, what, f, none)
			}
		}
		if st := in.status("/readyz"); st != http.StatusServiceUnavailable {
			t.Errorf("/readyz, the sentinel naming %s: %d", what, st)
		}
	}
	check("a replica")
	dead := redistest.Start(t)
	dead.Kill()
	for _, cmd := range [][]string{{"SENTINEL", "REMOVE", "bad"}, {"SENTINEL", "MONITOR", "bad", "127.0.0.1", strconv.Itoa(dead.Port()), "1"}} {
		if r := sentinel.Do(cmd...); string(r) != "+OK\r\n" {
			t.Fatalf("%q: %q", cmd, r)
		}
	}
	// featcache's one-second check of the sentinels runs at least once meanwhile.
	for deadline := time.Now().Add(1500 * time.Millisecond); time.Now().Before(deadline); {
		check("an address that refuses")
	}
}

// TestOutsideSentinelPrimaryPaused: the primary stops answering (SIGSTOP) with a write of a client in flight. The
// sentinel fails over; featcache answers serve_stale keys from memory meanwhile, answers the write with an error
// rather than leaving it waiting, and then serves the new primary's data, not the values only the paused primary
// held.
func TestOutsideSentinelPrimaryPaused(t *testing.T) {
	set := redistest.StartSentinelSet(t, "m", 1, 1, "")
	old, next := set.Primary, set.Replicas[0]
	for _, k := range []string{"f:k", "s:k"} {
		old.Do("SET", k, "v1")
	}
	old.Do("WAIT", "1", "5000")
	for _, k := range []string{"f:k", "s:k"} {
		writeUnreplicated(t, old, "SET", k, "old-only")
	}
	in := startBinaryArgs(t, outsideSentinelConfig(set, ""))
	c := redistest.Dial(t, in.addr)
	for _, k := range []string{"f:k", "s:k"} {
		if f := c.Do("GET", k); string(f) != "$8\r\nold-only\r\n" {
			t.Fatalf("GET %s: %q", k, f)
		}
	}
	old.Pause()
	defer old.Resume()
	w := redistest.Dial(t, in.addr)
	if err := w.Send("SET", "f:w", "during"); err != nil {
		t.Fatal(err)
	}
	// While the sentinels name the paused primary, the serve_stale key is served from memory. Once they name the
	// new one, featcache switches: it flushes what the old primary gave it before it points its connections at the
	// new one (upstream/sentinel.go, switchPrimary), so a read in flight to the paused primary may then fail, as a
	// direct client's would, in the moment before CACHE STATS names the new primary.
	switched := func() bool {
		named := set.SentinelDo(set.Sentinels[0], "SENTINEL", "get-master-addr-by-name", set.Name)
		return strings.Contains(string(named), "\r\n"+strconv.Itoa(next.Port())+"\r\n")
	}
	redistest.Eventually(t, 30*time.Second, "featcache on the new primary", func() bool {
		f := c.Do("GET", "s:k")
		if in.primaryInUse(t) == next.Addr() {
			return true
		}
		failed := strings.HasPrefix(string(f), "-ERR featcache upstream")
		if string(f) != "$8\r\nold-only\r\n" && !(failed && switched()) {
			t.Errorf("serve_stale key while the primary is paused: %q", f)
		}
		return false
	})
	if f, err := w.ReadTimeout(10 * time.Second); err != nil || !strings.HasPrefix(string(f), "-ERR featcache upstream") {
		t.Errorf("a write in flight to the paused primary: %q %v; want featcache's upstream error", f, err)
	}
	for _, r := range [][]string{{"GET", "f:k"}, {"GET", "s:k"}, {"MGET", "f:k", "s:k", "f:w"}} {
		if a, b := c.Do(r...), next.Do(r...); string(a) != string(b) {
			t.Errorf("%q after the failover: featcache %q, the new primary %q", r, a, b)
		}
	}
}

// TestOutsideSentinelPrimaryFailedOverByClient: another client runs Redis's own FAILOVER on the primary, which
// hands over to its replica without the sentinels. Until the sentinels notice, featcache's writes get the demoted
// node's own READONLY error (the sentinels still name it, as they would to any Sentinel client) and its reads
// equal that node's; once they fail over, featcache is on the new primary and writes and reads equal its own.
func TestOutsideSentinelPrimaryFailedOverByClient(t *testing.T) {
	set := redistest.StartSentinelSet(t, "m", 1, 1, "")
	old, next := set.Primary, set.Replicas[0]
	old.Do("SET", "f:k", "v1")
	in := startBinaryArgs(t, outsideSentinelConfig(set, ""))
	c := redistest.Dial(t, in.addr)
	c.Do("GET", "f:k")
	if r := old.Do("FAILOVER"); string(r) != "+OK\r\n" {
		t.Fatalf("FAILOVER: %q", r)
	}
	const readonly = "-READONLY You can't write against a read only replica.\r\n"
	redistest.Eventually(t, 30*time.Second, "featcache on the new primary", func() bool {
		w := c.Do("SET", "f:k", "w")
		if in.primaryInUse(t) == next.Addr() {
			return true
		}
		if string(w) != readonly && string(w) != "+OK\r\n" {
			t.Errorf("SET on the demoted primary: %q; want %q", w, readonly)
		}
		return false
	})
	if r := c.Do("INCR", "f:n"); string(r) != ":1\r\n" {
		t.Errorf("INCR through featcache on the new primary: %q", r)
	}
	for _, r := range [][]string{{"GET", "f:n"}, {"GET", "f:k"}, {"SET", "f:k", "v2"}, {"GET", "f:k"}} {
		if a, b := c.Do(r...), next.Do(r...); string(a) != string(b) {
			t.Errorf("%q: featcache %q, the new primary %q", r, a, b)
		}
	}
}
