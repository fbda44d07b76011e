package proxy

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"featcache/internal/redistest"
)

// failoverBound is how long the tests wait for a forced failover to complete and featcache to follow it:
// generous, since Sentinel's own timers run in seconds and the machine is shared.
const failoverBound = 30 * time.Second

// onlyOld is a value written to the old primary alone, just before the failover: the replica never receives it.
const onlyOld = "only-on-the-old-primary"

// writeUnreplicated sets key on s without propagating the write to its replicas (a Lua script with
// redis.set_repl(redis.REPL_NONE)): the state of a primary that acknowledged a write its replica had not received
// when it was promoted.
func writeUnreplicated(t *testing.T, s *redistest.Server, key, value string) {
	t.Helper()
	script := "redis.set_repl(redis.REPL_NONE) return redis.call('SET', KEYS[1], ARGV[1])"
	if got := string(s.Do("EVAL", script, "1", key, value)); got != "+OK\r\n" {
		t.Fatalf("unreplicated SET %s: %q", key, got)
	}
}

// clientOp is one command a client sent through featcache during a failover.
type clientOp struct {
	start, end time.Time
	switched   bool // featcache had switched to the new primary before the command was sent
	args       []string
	reply      string
}

// failoverPrefixes are the key prefixes of failoverConfig's policies: one per way a policy treats a tracking loss
// or an upstream failure.
var failoverPrefixes = []string{"fl:", "rv:", "st:"}

const failoverConfig = `
policies:
  - {name: flush, prefix: "fl:", soft_ttl: 1h, hard_ttl: 2h, jitter: 0}
  - {name: revalidate, prefix: "rv:", soft_ttl: 1h, hard_ttl: 2h, jitter: 0, on_tracking_loss: revalidate}
  - {name: stale, prefix: "st:", soft_ttl: 1h, hard_ttl: 2h, jitter: 0, on_upstream_error: serve_stale, max_stale: 1h}
`

// TestSentinelFailover forces a failover (SENTINEL FAILOVER) under a client's traffic: featcache follows the
// promoted replica, writes go to it, and nothing cached from the old primary that the new one does not hold is
// served once featcache has switched, whatever the policy's on_tracking_loss or on_upstream_error. The old
// primary then comes back as a replica; featcache stays. What the client saw is measured and logged.
func TestSentinelFailover(t *testing.T) {
	testFailover(t, func(set *redistest.SentinelSet) { set.Failover() }, func(set *redistest.SentinelSet) {
		old, cur := set.Primary, set.Replicas[0]
		if got := string(old.Do("REPLICAOF", "127.0.0.1", strconv.Itoa(cur.Port()))); got != "+OK\r\n" {
			t.Fatalf("REPLICAOF on the old primary: %q", got)
		}
		redistest.Eventually(t, 10*time.Second, "the old primary is a replica in sync", func() bool {
			return strings.Contains(string(old.Do("INFO", "replication")), "master_link_status:up")
		})
	})
}

// TestSentinelPrimaryCrash: the primary is killed (SIGKILL); the sentinel notices after down-after-milliseconds
// and fails over, and featcache follows as after a forced failover. The old primary then restarts empty, as a
// master that the sentinels no longer name: featcache stays with the new one.
func TestSentinelPrimaryCrash(t *testing.T) {
	testFailover(t, func(set *redistest.SentinelSet) { set.Primary.Kill() }, func(set *redistest.SentinelSet) {
		set.Primary.Restart()
	})
}

// testFailover runs a failover scenario: trigger starts the failover, comeBack brings the old primary back once
// featcache has switched.
func testFailover(t *testing.T, trigger, comeBack func(*redistest.SentinelSet)) {
	set := redistest.StartSentinelSet(t, "mymaster", 1, 1, "")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("Redis and Sentinel logs:\n%s", set.LogTail(30))
		}
	})
	oldP, newP := set.Primary, set.Replicas[0]
	p := startProxyOn(t, oldP, `
upstream:
  sentinel: {master_set: mymaster, addresses: ["`+set.Sentinels[0].Addr()+`"]}
`+failoverConfig)
	c := p.dial()

	// Cached before the failover: values both nodes hold, and values only the old primary holds.
	for _, pre := range failoverPrefixes {
		expectDo(t, c, "+OK\r\n", "SET", pre+"both", "v1")
	}
	redistest.Eventually(t, 5*time.Second, "the replica caught up", func() bool {
		return string(newP.Do("GET", "st:both")) == "$2\r\nv1\r\n"
	})
	for _, pre := range failoverPrefixes {
		writeUnreplicated(t, oldP, pre+"lost", onlyOld)
	}
	p.settle()
	lostValue := "$" + strconv.Itoa(len(onlyOld)) + "\r\n" + onlyOld + "\r\n"
	for _, pre := range failoverPrefixes {
		expectDo(t, c, "$2\r\nv1\r\n", "GET", pre+"both")
		expectDo(t, c, lostValue, "GET", pre+"lost")
	}
	gets := oldP.Calls("get")
	for _, pre := range failoverPrefixes {
		expectDo(t, c, lostValue, "GET", pre+"lost")
	}
	if n := oldP.Calls("get") - gets; n != 0 {
		t.Fatalf("the values only the old primary holds are not cached: %d GETs reached it", n)
	}
	if got := string(newP.Do("GET", "fl:lost")); got != "$-1\r\n" {
		t.Fatalf("the replica holds fl:lost = %q; the test needs a value it never received", got)
	}

	// A client blocked in BLPOP through featcache, on a dedicated connection to the old primary.
	blocked := p.dial()
	if err := blocked.Send("BLPOP", "fl:queue", "0"); err != nil {
		t.Fatal(err)
	}
	blockedReply := make(chan string, 1)
	go func() {
		r, err := blocked.ReadTimeout(failoverBound + 10*time.Second)
		if err != nil {
			r = []byte("read error: " + err.Error())
		}
		blockedReply <- string(r)
	}()

	// A subscriber and a WATCH session, on more dedicated connections to the old primary.
	sub := p.dial()
	expectDo(t, sub, "*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n", "SUBSCRIBE", "ch")
	watch := p.dial()
	expectDo(t, watch, "+OK\r\n", "WATCH", "fl:both")

	stopTraffic := runTraffic(p, newP.Addr())
	time.Sleep(200 * time.Millisecond) // some traffic before the failover
	t0 := time.Now()
	trigger(set)
	redistest.Eventually(t, failoverBound, "featcache follows the promoted replica", func() bool {
		return p.up.Addr() == newP.Addr()
	})
	switchedAfter := time.Since(t0)
	if role := redistest.Role(t, newP); role != "master" {
		t.Fatalf("featcache follows %s, whose role is %s", newP.Addr(), role)
	}
	if stats := string(c.Do("CACHE", "STATS")); !strings.Contains(stats, "upstream_addr:"+newP.Addr()+"\r\n") {
		t.Errorf("CACHE STATS does not name the new primary %s:\n%s", newP.Addr(), stats)
	}
	redistest.Eventually(t, 10*time.Second, "tracking up on the new primary", func() bool {
		_, up := p.up.Tracking()
		return up
	})
	time.Sleep(300 * time.Millisecond) // traffic after the switch, with tracking up
	ops := stopTraffic()

	// The BLPOP on the old primary ended with an error, at the latest when featcache switched.
	select {
	case r := <-blockedReply:
		if !strings.HasPrefix(r, "-ERR featcache upstream unavailable") {
			t.Errorf("the client blocked in BLPOP got %q; want featcache's upstream error", r)
		}
		t.Logf("the client blocked in BLPOP on the old primary got %q", strings.TrimSpace(r))
	case <-time.After(5 * time.Second):
		t.Error("the client blocked in BLPOP on the old primary is still blocked after the switch")
	}

	// The WATCH session's next command fails: its connection went to the old primary.
	if got := string(watch.Do("GET", "fl:both")); !strings.HasPrefix(got, "-ERR featcache upstream unavailable") {
		t.Errorf("a WATCH session's command after the switch got %q; want featcache's upstream error", got)
	} else {
		t.Logf("the WATCH session's next command got %q", strings.TrimSpace(got))
	}

	// The subscriber's connection was closed, as Redis's would be, so that it reconnects and subscribes again.
	if got, err := sub.ReadTimeout(5 * time.Second); !closedCleanly(err) {
		t.Errorf("the subscriber got %q, %v; want its connection closed", got, err)
	}

	// No read sent after the switch returned a value the new primary does not hold (an error is no value).
	for _, op := range ops {
		if op.switched && op.args[0] == "GET" && strings.HasSuffix(op.args[1], "lost") &&
			strings.HasPrefix(op.reply, "$") && op.reply != "$-1\r\n" {
			t.Errorf("%s %s sent %v after the failover began, after the switch, got %q; the new primary holds nil",
				op.args[0], op.args[1], op.start.Sub(t0), op.reply)
		}
	}
	reportFailover(t, ops, t0, switchedAfter, newP)

	// Every key reads as the new primary holds it, and cached reads are answered from memory again.
	for _, pre := range failoverPrefixes {
		for _, k := range []string{pre + "both", pre + "lost"} {
			expectDo(t, c, string(newP.Do("GET", k)), "GET", k)
		}
	}
	p.settle()
	gets = newP.Calls("get")
	for _, pre := range failoverPrefixes {
		expectDo(t, c, "$2\r\nv1\r\n", "GET", pre+"both")
	}
	if n := newP.Calls("get") - gets; n != 0 {
		t.Errorf("after the switch, cached reads are not answered from memory: %d GETs reached the new primary", n)
	}

	// Writes through featcache reach the new primary.
	expectDo(t, c, "+OK\r\n", "SET", "fl:after", "new")
	if got := string(newP.Do("GET", "fl:after")); got != "$3\r\nnew\r\n" {
		t.Fatalf("GET fl:after on the new primary = %q; want the write made through featcache", got)
	}

	// The old primary comes back; featcache stays with the new one and serves its values.
	comeBack(set)
	time.Sleep(1500 * time.Millisecond) // a periodic sentinel check (every second) must not move featcache back
	if got := p.up.Addr(); got != newP.Addr() {
		t.Fatalf("featcache follows %s after the old primary came back; want %s", got, newP.Addr())
	}
	expectDo(t, c, "$-1\r\n", "GET", "fl:lost")
	expectDo(t, c, "$2\r\nv1\r\n", "GET", "st:both")
	expectDo(t, c, "$3\r\nnew\r\n", "GET", "fl:after")
}

// runTraffic sends a client's commands through featcache in a loop (a write, then reads of the keys
// testFailover cached) until the returned function is called, which returns every command sent. newAddr is the
// primary featcache will switch to.
func runTraffic(p *testProxy, newAddr string) (stop func() []clientOp) {
	var (
		ops  []clientOp
		quit = make(chan struct{})
		done = make(chan struct{})
	)
	conn := p.dial()
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-quit:
				return
			default:
			}
			cmds := [][]string{{"SET", "fl:w:" + strconv.Itoa(i), strconv.Itoa(i)}}
			for _, pre := range failoverPrefixes {
				cmds = append(cmds, []string{"GET", pre + "lost"}, []string{"GET", pre + "both"})
			}
			for _, args := range cmds {
				op := clientOp{start: time.Now(), switched: p.up.Addr() == newAddr, args: args}
				if err := conn.Send(args...); err != nil {
					op.reply = "send error: " + err.Error()
				} else if r, err := conn.ReadTimeout(10 * time.Second); err != nil {
					op.reply = "read error: " + err.Error()
				} else {
					op.reply = string(r)
				}
				op.end = time.Now()
				ops = append(ops, op)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	return func() []clientOp {
		close(quit)
		<-done
		return ops
	}
}

// reportFailover logs what the client saw: errors (which, when), the slowest command, and acknowledged writes the
// new primary does not hold.
func reportFailover(t *testing.T, ops []clientOp, t0 time.Time, switchedAfter time.Duration, newP *redistest.Server) {
	t.Helper()
	var (
		errs                = map[string]int{}
		nErr                int
		writes, lost        [3]int // acknowledged before the failover, during it (before the switch), after the switch
		firstErr, lastErr   time.Duration
		slowest, slowestAt  time.Duration
		stale, staleErrored int
	)
	for _, op := range ops {
		at := op.start.Sub(t0)
		if d := op.end.Sub(op.start); d > slowest {
			slowest, slowestAt = d, at
		}
		failed := !strings.HasPrefix(op.reply, "$") && !strings.HasPrefix(op.reply, "+") && !strings.HasPrefix(op.reply, ":")
		if strings.HasPrefix(op.args[1], "st:") && at > 0 && !op.switched {
			stale++
			if failed {
				staleErrored++
			}
		}
		if !failed {
			if op.args[0] == "SET" {
				phase := 0
				switch {
				case op.switched:
					phase = 2
				case at >= 0:
					phase = 1
				}
				writes[phase]++
				if string(newP.Do("GET", op.args[1])) == "$-1\r\n" {
					lost[phase]++
				}
			}
			continue
		}
		if nErr == 0 {
			firstErr = at
		}
		lastErr = at
		nErr++
		errs[strings.TrimSpace(op.reply)]++
	}
	var kinds []string
	for e, n := range errs {
		kinds = append(kinds, fmt.Sprintf("%dx %q", n, e))
	}
	sort.Strings(kinds)
	t.Logf("failover: featcache switched %v after the failover began; %d commands sent, %d errors",
		switchedAfter.Round(time.Millisecond), len(ops), nErr)
	if nErr > 0 {
		t.Logf("failover: errors from %v to %v after the failover began: %s", firstErr.Round(time.Millisecond),
			lastErr.Round(time.Millisecond), strings.Join(kinds, ", "))
	}
	t.Logf("failover: serve_stale reads between the failover and the switch: %d, %d of them errors", stale, staleErrored)
	t.Logf("failover: slowest command %v, sent %v after the failover began", slowest.Round(time.Millisecond),
		slowestAt.Round(time.Millisecond))
	t.Logf("failover: writes acknowledged through featcache and missing on the new primary: before the failover "+
		"%d of %d, during it %d of %d, after the switch %d of %d", lost[0], writes[0], lost[1], writes[1], lost[2], writes[2])
}
