package proxy

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"featcache/internal/redistest"
)

// tagOn returns a hash tag that master m of cl serves.
func tagOn(cl *redistest.Cluster, m *redistest.Server) string {
	for i := 0; ; i++ {
		if tag := "{t" + strconv.Itoa(i) + "}"; cl.MasterOf(tag) == m {
			return tag
		}
	}
}

// TestClusterBusyMaster: one master of a 3-master cluster runs a Lua loop past busy-reply-threshold (started by
// another client, straight on that master), four times, its tracking connections (the policies' and the keyspace
// stream of a RESP3 client with CLIENT TRACKING on) killed just before every other loop. Under client traffic
// through featcache, while the master is busy: serve_stale keys on it are answered from memory, fresh or past their
// hard TTL, to RESP2 and RESP3 clients; commands forwarded to it get its own -BUSY; the other masters' keys are read
// and written as usual. After each loop: tracking is up on every master, a direct write on the busy master reaches
// featcache's entries and the tracking client (an invalidation naming the key, or a flush of every key after the
// loss), and the process lives (a panic on any goroutine would end this test binary).
func TestClusterBusyMaster(t *testing.T) {
	cl := redistest.StartCluster(t, 3, 0, "--busy-reply-threshold", "100")
	busy, other := cl.Masters[0], cl.Masters[1]
	p := startProxyAt(t, cl.Addrs()[:1], nil, busyConfig)
	if p.up.Cluster() == nil {
		t.Fatal("featcache did not find the cluster")
	}
	trackingUp := func(what string) {
		t.Helper()
		redistest.Eventually(t, 10*time.Second, what+": tracking up on every master", func() bool {
			_, up := p.up.Tracking()
			return up
		})
	}
	trackingUp("start")
	bt, ot := tagOn(cl, busy), tagOn(cl, other)
	// sb and so: serve_stale keys on the busy master and on another; db: past its hard TTL once the clock moves;
	// ub and uo: keys no policy caches.
	sb, so, db, ub, uo := "s:"+bt+"b", "s:"+ot+"o", "d:"+bt+"d", "u:"+bt+"u", "u:"+ot+"u"
	values := map[string]string{sb: "busy-side", so: "other-side", db: "dead", ub: "uncached-busy", uo: "uncached-other",
		// startBusyTraffic's keys, wherever they land
		"s:1": "one", "s:2": "two", "d:1": "dead", "u:1": "uncached"}
	for k, v := range values {
		if r := string(cl.Do(k, "SET", k, v)); r != "+OK\r\n" {
			t.Fatalf("SET %s: %q", k, r)
		}
	}
	p.settle()
	c := p.dial()
	for _, k := range []string{sb, so, db, ub, uo, "s:1", "s:2", "d:1", "u:1"} {
		expectDo(t, c, bulk(values[k]), "GET", k)
	}
	tc := p.dial()
	expectDo3 := func(what, want string, args ...string) (pushes []string) {
		t.Helper()
		if err := tc.Send(args...); err != nil {
			t.Fatal(err)
		}
		for {
			r, err := tc.ReadTimeout(5 * time.Second)
			if err != nil {
				t.Fatalf("%s: %q: %v", what, args, err)
			}
			if strings.HasPrefix(string(r), ">") {
				pushes = append(pushes, string(r))
				continue
			}
			if string(r) != want {
				t.Fatalf("%s: %q: got %q, want %q", what, args, r, want)
			}
			return pushes
		}
	}
	if r := string(tc.Do("HELLO", "3")); !strings.HasPrefix(r, "%") {
		t.Fatalf("HELLO 3: %q", r)
	}
	expectDo3("tracking client", "+OK\r\n", "CLIENT", "TRACKING", "ON")
	expectDo3("tracking client", bulk(values[sb]), "GET", sb)
	expectDo3("tracking client", bulk(values[so]), "GET", so)
	traffic := startBusyTraffic(t, p.addr, 3)

	for cycle := 0; cycle < 4; cycle++ {
		phase := "cycle " + strconv.Itoa(cycle)
		p.clock.Advance(2 * time.Second) // d: entries past their hard TTL: their reads go upstream
		looper := busy.Dial()
		var killed []string
		if cycle%2 == 1 {
			// The tracking connections die just before the loop starts: they are set up again while it runs.
			for _, line := range trackingConns(busy) {
				if err := looper.Send("CLIENT", "KILL", "ID", clientField(line, "id")); err != nil {
					t.Fatal(err)
				}
				killed = append(killed, line)
			}
			if len(killed) < 2 {
				t.Fatalf("%s: %d tracking connections on the busy master; want the policies' and the keyspace stream", phase, len(killed))
			}
		}
		if err := looper.Send("EVAL", "while true do end", "0"); err != nil {
			t.Fatal(err)
		}
		var busyReply string
		redistest.Eventually(t, 10*time.Second, phase+": the master busy", func() bool {
			busyReply = string(busy.Do("GET", ub))
			return strings.HasPrefix(busyReply, "-BUSY ")
		})
		traffic.busy.Store(true)
		before := traffic.duringBy.Load()
		redistest.Eventually(t, 10*time.Second, phase+": traffic served while the master is busy", func() bool {
			return traffic.duringBy.Load() >= before+20
		})
		p.runFaultChecks(t, phase, []faultCheck{
			{[]string{"GET", sb}, replyIs(bulk(values[sb])), "the value from memory"},
			{[]string{"GET", so}, replyIs(bulk(values[so])), "the value from memory"},
			{[]string{"MGET", sb, so}, replyIs("*2\r\n" + bulk(values[sb]) + bulk(values[so])), "the values from memory"},
			{[]string{"GET", db}, replyIs(bulk(values[db])), "the value from memory, past its hard TTL"},
			{[]string{"GET", ub}, replyIs(busyReply), "the busy master's -BUSY"},
			{[]string{"SET", ub, "x"}, replyIs(busyReply), "the busy master's -BUSY"},
			{[]string{"GET", uo}, replyIs(bulk(values[uo])), "the other master's reply"},
			{[]string{"SET", "u:" + ot + "w", phase}, replyIs("+OK\r\n"), "the other master's reply"},
		})
		expectDo3(phase, bulk(values[sb]), "GET", sb)
		// A transaction featcache queues gets the master's reply at EXEC (docs/cluster.md), the one a direct
		// transaction gets at its EXEC, and nothing is applied.
		direct := busy.Dial()
		if r := string(direct.Do("MULTI")); r != "+OK\r\n" {
			t.Fatalf("%s: MULTI straight to the busy master: %q", phase, r)
		}
		if r := string(direct.Do("SET", ub, "tx")); r != busyReply {
			t.Fatalf("%s: SET in MULTI straight to the busy master: %q", phase, r)
		}
		execReply := string(direct.Do("EXEC"))
		expectDo(t, c, "+OK\r\n", "MULTI")
		expectDo(t, c, "+QUEUED\r\n", "SET", ub, "tx")
		expectDo(t, c, execReply, "EXEC")
		// Pipelined, the transaction gets the master's replies to every command.
		pipelinedTx := [][]string{{"MULTI"}, {"SET", ub, "tx"}, {"GET", ub}, {"EXEC"}}
		if want, got := sendPipeline(t, direct, pipelinedTx...), sendPipeline(t, c, pipelinedTx...); got != want {
			t.Errorf("%s: a pipelined transaction through featcache:\n%q\nstraight to the busy master:\n%q", phase, got, want)
		}
		direct.Close()
		traffic.busy.Store(false)
		killBusy(t, busy.Do, "SCRIPT", "KILL")
		for range killed {
			if r, err := looper.ReadTimeout(5 * time.Second); err != nil || string(r) != ":1\r\n" {
				t.Fatalf("%s: CLIENT KILL of a tracking connection: %q, %v", phase, r, err)
			}
		}
		if r, err := looper.ReadTimeout(5 * time.Second); err != nil || !strings.HasPrefix(string(r), "-") {
			t.Fatalf("%s: the killed loop's reply: %q, %v", phase, r, err)
		}
		looper.Close()

		// Everything works again: tracking on every master, a direct write on the busy master reaches featcache's
		// entry and the tracking client, forwarded commands and cached reads.
		trackingUp(phase)
		v := "v" + strconv.Itoa(cycle)
		if r := string(busy.Do("SET", sb, v)); r != "+OK\r\n" {
			t.Fatalf("%s: direct SET: %q", phase, r)
		}
		redistest.Eventually(t, 5*time.Second, phase+": the direct write's invalidation applied", func() bool {
			return p.do("GET", sb) == bulk(v)
		})
		told := false
		for !told {
			r, err := tc.ReadTimeout(5 * time.Second)
			if err != nil {
				t.Fatalf("%s: the tracking client was not told of the direct write: %v", phase, err)
			}
			told = string(r) == ">2\r\n$10\r\ninvalidate\r\n*1\r\n"+bulk(sb) || string(r) == ">2\r\n$10\r\ninvalidate\r\n_\r\n"
		}
		values[sb] = v
		expectDo3(phase, bulk(v), "GET", sb) // tracked again
		expectDo(t, c, bulk(v), "GET", sb)
		expectDo(t, c, "+OK\r\n", "SET", ub, v)
		expectDo(t, c, bulk(v), "GET", ub) // not the transaction's "tx"
		expectDo(t, c, "+OK\r\n", "SET", ub, values[ub])
		expectDo(t, c, bulk(values[db]), "GET", db)
		if t.Failed() {
			t.Fatalf("%s failed", phase)
		}
	}
	traffic.finish(t)
	t.Logf("requests served: %d, %d of them while a master was busy", traffic.served.Load(), traffic.duringBy.Load())
}

// TestClusterOOMMaster: one master of a 3-master cluster is set past its maxmemory (noeviction) by another client.
// Through featcache, writes to it get its own -OOM, in a transaction too (the same replies as a direct client's of
// that master, for RESP2 and RESP3 clients), its keys are still read and cached, and the other masters take
// writes; once its limit is lifted, writes pass again and reach featcache's entries.
func TestClusterOOMMaster(t *testing.T) {
	cl := redistest.StartCluster(t, 3, 0)
	full, other := cl.Masters[0], cl.Masters[1]
	p := startProxyAt(t, cl.Addrs()[:1], nil, busyConfig)
	if p.up.Cluster() == nil {
		t.Fatal("featcache did not find the cluster")
	}
	ft, ot := tagOn(cl, full), tagOn(cl, other)
	sf, so, uf := "s:"+ft+"f", "s:"+ot+"o", "u:"+ft+"u"
	for _, k := range []string{sf, so, uf} {
		cl.Do(k, "SET", k, "before")
	}
	p.settle()
	c, c3 := p.dial(), p.dial()
	if r := string(c3.Do("HELLO", "3")); !strings.HasPrefix(r, "%") {
		t.Fatalf("HELLO 3: %q", r)
	}
	expectDo(t, c, bulk("before"), "GET", sf)

	if r := string(full.Do("CONFIG", "SET", "maxmemory", "1")); r != "+OK\r\n" {
		t.Fatalf("CONFIG SET maxmemory: %q", r)
	}
	t.Cleanup(func() { full.Do("CONFIG", "SET", "maxmemory", "0") })
	direct, direct3 := full.Dial(), full.Dial()
	if r := string(direct3.Do("HELLO", "3")); !strings.HasPrefix(r, "%") {
		t.Fatalf("HELLO 3: %q", r)
	}
	oom := string(direct.Do("SET", uf, "x"))
	if !strings.HasPrefix(oom, "-OOM ") {
		t.Fatalf("a direct SET on the full master: %q; want -OOM", oom)
	}
	for _, cs := range []struct {
		name          string
		proxy, direct *redistest.Conn
	}{{"RESP2", c, direct}, {"RESP3", c3, direct3}} {
		inMulti := false
		for _, args := range [][]string{
			{"SET", sf, "during"}, {"SET", uf, "during"}, {"INCR", uf + "n"}, {"GET", uf}, {"GET", sf},
			{"EVAL", "return redis.call('SET', KEYS[1], 'lua')", "1", uf},
			{"MULTI"}, {"SET", uf, "tx"}, {"GET", uf}, {"EXEC"},
			{"MULTI"}, {"GET", uf}, {"EXEC"},
		} {
			want, got := string(cs.direct.Do(args...)), string(cs.proxy.Do(args...))
			// featcache queues a cluster transaction itself (docs/cluster.md): a command Redis refuses at queue
			// time for OOM is answered +QUEUED, and EXEC aborts as Redis's does.
			queued := inMulti && want == oom && got == "+QUEUED\r\n"
			if got != want && !queued {
				t.Errorf("%s %q: through featcache %q, straight to the master %q", cs.name, args, got, want)
			}
			inMulti = (inMulti || args[0] == "MULTI") && args[0] != "EXEC"
		}
	}
	// A pipelined transaction (as redis-py sends one) gets the master's own queue-time replies: its -OOM.
	pipelinedTx := [][]string{{"GET", sf}, {"MULTI"}, {"SET", uf, "tx"}, {"GET", uf}, {"INCR", uf + "n"}, {"EXEC"}, {"GET", so}}
	for _, cs := range []struct {
		name          string
		proxy, direct *redistest.Conn
	}{{"RESP2", c, direct}, {"RESP3", c3, direct3}} {
		want, got := sendPipeline(t, cs.direct, pipelinedTx...), sendPipeline(t, cs.proxy, pipelinedTx...)
		// The GETs of sf and so, around the transaction, are the only replies that differ (so is on another
		// master): compare what is between them.
		if strings.Count(want, oom) != 3 || !strings.Contains(got, "+OK\r\n"+strings.Repeat(oom, 3)+"-EXECABORT") {
			t.Errorf("%s: a pipelined transaction through featcache:\n%q\nstraight to the master:\n%q", cs.name, got, want)
		}
	}
	expectDo(t, c, bulk("before"), "GET", sf) // still cached, still right
	expectDo(t, c, "+OK\r\n", "SET", so, "during")
	expectDo(t, c, bulk("during"), "GET", so)

	if r := string(full.Do("CONFIG", "SET", "maxmemory", "0")); r != "+OK\r\n" {
		t.Fatalf("CONFIG SET maxmemory: %q", r)
	}
	expectDo(t, c, "+OK\r\n", "SET", sf, "after")
	expectDo(t, c, bulk("after"), "GET", sf)
	expectDo(t, c3, bulk("after"), "GET", sf)
	if r := string(cl.Do(sf, "GET", sf)); r != bulk("after") {
		t.Fatalf("the master holds %q", r)
	}
}

// TestClusterPauseWrite: CLIENT PAUSE WRITE on one master of a 3-master cluster (what a manual failover does).
// Writes of several clients through featcache to that master are held, one after the other, and writes fanned out
// to every master (FUNCTION FLUSH), so that before they held every shared connection to it; reads of the same master's keys through featcache (a fill, a forwarded read,
// an MGET across masters) are answered at once, as a direct client's reads are, and the writes get +OK after the
// pause.
func TestClusterPauseWrite(t *testing.T) {
	cl := redistest.StartCluster(t, 3, 0)
	paused, other := cl.Masters[0], cl.Masters[1]
	p := startProxyAt(t, cl.Addrs()[:1], nil, busyConfig)
	if p.up.Cluster() == nil {
		t.Fatal("featcache did not find the cluster")
	}
	pt, ot := tagOn(cl, paused), tagOn(cl, other)
	fill, fwd, far := "s:"+pt+"f", "u:"+pt+"r", "s:"+ot+"o"
	for k, v := range map[string]string{fill: "filled", fwd: "read", far: "far"} {
		cl.Do(k, "SET", k, v)
	}
	p.settle()
	expectDo(t, paused.Dial(), "+OK\r\n", "CLIENT", "PAUSE", "3000", "WRITE")
	var writers []*redistest.Conn
	for i := 0; i < 4; i++ {
		w := p.dial()
		sent := p.srv.Stats().Forwarded.Load()
		if err := w.Send("SET", "u:"+pt+"w"+strconv.Itoa(i), "x"); err != nil {
			t.Fatal(err)
		}
		writers = append(writers, w)
		redistest.Eventually(t, 2*time.Second, "write held", func() bool {
			return p.srv.Stats().Forwarded.Load() > sent && heldCommands(t, paused) >= 1
		})
	}
	// Writes fanned out to every master (FUNCTION FLUSH) are held on the paused one too, and no read waits behind
	// them either.
	for i := 0; i < 4; i++ {
		w := p.dial()
		if err := w.Send("FUNCTION", "FLUSH"); err != nil {
			t.Fatal(err)
		}
		writers = append(writers, w)
	}
	redistest.Eventually(t, 2*time.Second, "fanned-out writes held", func() bool { return heldCommands(t, paused) >= 2 })
	// Straight on the paused master, reads are answered at once: featcache's must be too, with the same replies.
	direct := concurrently(t, paused.Dial, []string{"GET", fill}, []string{"GET", fwd})
	for i, r := range direct {
		if r.took > 500*time.Millisecond || !strings.HasPrefix(r.reply, "$") {
			t.Fatalf("read %d straight on the paused master: %q after %v; want a value at once", i, r.reply, r.took)
		}
	}
	start := time.Now()
	p.runFaultChecks(t, "writes paused on one master", []faultCheck{
		{[]string{"GET", fill}, replyIs(direct[0].reply), "the master's reply, filled at once"},
		{[]string{"GET", fwd}, replyIs(direct[1].reply), "the master's reply at once"},
		{[]string{"MGET", fill, far}, replyIs("*2\r\n" + bulk("filled") + bulk("far")), "the values at once"},
	})
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("the reads took %v while writes were paused; want them answered at once", took)
	}
	for _, w := range writers {
		expectRead(t, w, "+OK\r\n")
	}
}
