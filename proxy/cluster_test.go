package proxy

import (
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"featcache/internal/redistest"
	"featcache/internal/resp"
)

// Redis Cluster upstream: every test here runs against real clusters of redis-server processes started on loopback
// ports (redistest.StartCluster, which uses redis-cli --cluster create), with featcache given the masters as seeds.

// clusterKeys returns n keys, key i served by master i%len(masters), named prefix<number>.
func clusterKeys(t *testing.T, cl *redistest.Cluster, prefix string, n int) []string {
	t.Helper()
	var keys []string
	for i := 0; len(keys) < n; i++ {
		k := prefix + strconv.Itoa(i)
		if cl.MasterOf(k) == cl.Masters[len(keys)%len(cl.Masters)] {
			keys = append(keys, k)
		}
	}
	return keys
}

// TestCluster runs featcache in front of a 3-master cluster: routing of reads and writes, MGET and the split
// multi-key commands across slots, CROSSSLOT for transactions, scripts and WATCH sessions, the keyspace-wide
// commands' fan-out, SCAN over every master, invalidations from every master, and the loss of one master's
// tracking connection.
func TestCluster(t *testing.T) {
	cl := redistest.StartCluster(t, 3, 0)
	// One seed is enough. "rv:" keys keep their entries, unverified, through a tracking loss.
	p := startProxyAt(t, cl.Addrs()[:1], nil, defaultTestConfig+
		`  - {name: revalidated, prefix: "rv:", soft_ttl: 1h, hard_ttl: 2h, jitter: 0, on_tracking_loss: revalidate}
`)
	if p.up.Cluster() == nil || p.up.Cluster().Masters() != 3 {
		t.Fatal("featcache did not find the cluster's 3 masters from one seed")
	}
	keys := clusterKeys(t, cl, "key", 6) // two keys per master

	t.Run("RESP3", func(t *testing.T) {
		// HELLO 3 is accepted (cluster_resp3_test.go compares RESP3 replies with a standalone Redis's).
		c := p.dial()
		if got := string(c.Do("HELLO", "3")); !strings.HasPrefix(got, "%7\r\n") {
			t.Errorf("HELLO 3: got %q", got)
		}
		expectDo(t, c, "_\r\n", "GET", keys[0]+":missing")
	})

	t.Run("reads and writes across slots", func(t *testing.T) {
		c := p.dial()
		for i, k := range keys {
			expectDo(t, c, "+OK\r\n", "SET", k, "v"+strconv.Itoa(i))
		}
		for i, k := range keys {
			if got, want := string(cl.Masters[i%3].Do("GET", k)), bulk("v"+strconv.Itoa(i)); got != want {
				t.Errorf("%s on its master: got %q; want %q", k, got, want)
			}
		}
		// MGET across every master, with a duplicate and a missing key, in request order; twice (misses, then hits).
		want := "*8\r\n"
		for i := range keys {
			want += bulk("v" + strconv.Itoa(i))
		}
		want += bulk("v0") + "$-1\r\n"
		args := append(append([]string{"MGET"}, keys...), keys[0], "missing")
		expectDo(t, c, want, args...)
		hits := p.srv.Stats().Hits.Load()
		expectDo(t, c, want, args...)
		if got := p.srv.Stats().Hits.Load() - hits; got != 7 {
			t.Errorf("the second MGET had %d hits; want 7", got)
		}
		// A pipeline mixing masters keeps its order, and reads after a write see it.
		var pipe []byte
		for i, k := range keys {
			pipe = append(pipe, redistest.Encode("SET", k, "p"+strconv.Itoa(i))...)
			pipe = append(pipe, redistest.Encode("GET", keys[(i+1)%len(keys)])...)
		}
		if _, err := c.NetConn().Write(pipe); err != nil {
			t.Fatal(err)
		}
		for i := range keys {
			next := (i + 1) % len(keys)
			wantGet := bulk("v" + strconv.Itoa(next))
			if next == 0 {
				wantGet = bulk("p0")
			}
			if got, _ := c.Read(); string(got) != "+OK\r\n" {
				t.Fatalf("pipelined SET %d: got %q", i, got)
			}
			if got, _ := c.Read(); string(got) != wantGet {
				t.Fatalf("pipelined GET %s: got %q; want %q", keys[next], got, wantGet)
			}
		}
	})

	t.Run("split multi-key commands", func(t *testing.T) {
		c := p.dial()
		mset := []string{"MSET"}
		for i, k := range keys {
			mset = append(mset, k, "m"+strconv.Itoa(i))
		}
		expectDo(t, c, "+OK\r\n", mset...)
		for i, k := range keys {
			if got := string(cl.Masters[i%3].Do("GET", k)); got != bulk("m"+strconv.Itoa(i)) {
				t.Errorf("MSET: %s on its master: got %q", k, got)
			}
		}
		withMissing := append(slices.Clone(keys), "missing", keys[0])
		expectDo(t, c, ":7\r\n", append([]string{"EXISTS"}, withMissing...)...)
		expectDo(t, c, ":7\r\n", append([]string{"TOUCH"}, withMissing...)...)
		expectDo(t, c, ":3\r\n", "DEL", keys[0], keys[1], keys[2], "missing")
		expectDo(t, c, ":3\r\n", "UNLINK", keys[3], keys[4], keys[5], keys[3])
		expectDo(t, c, ":0\r\n", append([]string{"EXISTS"}, keys...)...)
		// Read-your-writes across the split: a pipeline's MGET after its DEL sees every key gone.
		expectDo(t, c, "+OK\r\n", mset...)
		expectDo(t, c, "*6\r\n"+bulk("m0")+bulk("m1")+bulk("m2")+bulk("m3")+bulk("m4")+bulk("m5"),
			append([]string{"MGET"}, keys...)...)
		if _, err := c.NetConn().Write(append(redistest.Encode(append([]string{"DEL"}, keys...)...),
			redistest.Encode(append([]string{"MGET"}, keys...)...)...)); err != nil {
			t.Fatal(err)
		}
		if got, _ := c.Read(); string(got) != ":6\r\n" {
			t.Fatalf("DEL: got %q", got)
		}
		if got, _ := c.Read(); string(got) != "*6\r\n$-1\r\n$-1\r\n$-1\r\n$-1\r\n$-1\r\n$-1\r\n" {
			t.Fatalf("MGET after DEL in one pipeline: got %q", got)
		}
		// An MSET whose last key has no value gets one Redis's arity error, where a cluster node, which checks the
		// slots before MSET counts its arguments, would answer CROSSSLOT; nothing is applied.
		expectDo(t, c, "-ERR wrong number of arguments for 'mset' command\r\n", "MSET", keys[0], "1", keys[1])
		expectDo(t, c, ":0\r\n", "EXISTS", keys[0])
	})

	t.Run("CROSSSLOT", func(t *testing.T) {
		c := p.dial()
		a, b := keys[0], keys[1] // different masters
		expectExec(t, c, "-"+crossSlotError+"\r\n", []string{"SET", a, "1"}, []string{"SET", b, "1"})
		// One command whose own keys span slots: refused at once, EXEC aborts.
		expectDo(t, c, "+OK\r\n", "MULTI")
		expectDo(t, c, "-"+crossSlotError+"\r\n", "MSETNX", a, "1", b, "2")
		expectDo(t, c, "-EXECABORT Transaction discarded because of previous errors.\r\n", "EXEC")
		// Keys sharing a hash tag share a slot: the transaction runs, on their master.
		expectExec(t, c, "*3\r\n+OK\r\n:2\r\n$-1\r\n",
			[]string{"SET", "{u1}a", "1"}, []string{"INCR", "{u1}a"}, []string{"GET", "{u1}b"})
		expectDo(t, c, bulk("2"), "GET", "{u1}a")
		// Keyspace-wide commands are refused inside MULTI.
		expectDo(t, c, "+OK\r\n", "MULTI")
		expectDo(t, c, "-ERR 'keys' inside MULTI is not supported by featcache in front of a Redis Cluster: it runs on every master\r\n",
			"KEYS", "*")
		expectDo(t, c, "-EXECABORT Transaction discarded because of previous errors.\r\n", "EXEC")
		// Scripts: Redis's own CROSSSLOT across slots; they run on their keys' master otherwise.
		expectDo(t, c, "-"+crossSlotError+"\r\n", "EVAL", "return 1", "2", a, b)
		expectDo(t, c, bulk("2"), "EVAL", "return redis.call('get', KEYS[1])", "2", "{u1}a", "{u1}b")
		// MSETNX is all-or-nothing, so it is not split: Redis's CROSSSLOT.
		expectDo(t, c, "-"+crossSlotError+"\r\n", "MSETNX", a, "1", b, "2")
		// A WATCH session lives on its keys' master; a command for another slot gets CROSSSLOT.
		expectDo(t, c, "+OK\r\n", "WATCH", "{u1}a")
		expectDo(t, c, bulk("2"), "GET", "{u1}a")
		expectDo(t, c, "-"+crossSlotError+"\r\n", "GET", a)
		expectExec(t, c, "*1\r\n:3\r\n", []string{"INCR", "{u1}a"})
		expectDo(t, c, "-"+crossSlotError+"\r\n", "WATCH", a, b)
		// A blocking command goes to its key's master.
		expectDo(t, c, ":1\r\n", "RPUSH", "{u2}list", "x")
		expectDo(t, c, "*2\r\n$8\r\n{u2}list\r\n$1\r\nx\r\n", "BLPOP", "{u2}list", "1")
	})

	t.Run("keyspace-wide commands", func(t *testing.T) {
		c := p.dial()
		expectDo(t, c, "+OK\r\n", "FLUSHDB")
		expectDo(t, c, ":0\r\n", "DBSIZE")
		expectDo(t, c, "$-1\r\n", "RANDOMKEY")
		var all []string
		for i := 0; i < 300; i++ {
			all = append(all, "scan:"+strconv.Itoa(i))
		}
		mset := []string{"MSET"}
		for _, k := range all {
			mset = append(mset, k, "x")
		}
		expectDo(t, c, "+OK\r\n", mset...)
		expectDo(t, c, ":300\r\n", "DBSIZE")
		for _, m := range cl.Masters {
			if n := string(m.Do("DBSIZE")); n == ":0\r\n" || n == ":300\r\n" {
				t.Fatalf("master %s holds %s keys: the keys are not spread", m.Addr(), n)
			}
		}
		got := parseArray(t, c.Do("KEYS", "scan:*"))
		if slices.Sort(got); !slices.Equal(got, sortedCopy(all)) {
			t.Errorf("KEYS returned %d keys; want all %d", len(got), len(all))
		}
		if k := string(c.Do("RANDOMKEY")); !strings.Contains(k, "scan:") {
			t.Errorf("RANDOMKEY: got %q", k)
		}
		// SCAN walks every master: every key exactly once here (nothing moves).
		seen := map[string]int{}
		cursor, pages := "0", 0
		for {
			reply := string(c.Do("SCAN", cursor, "MATCH", "scan:*", "COUNT", "40"))
			next, page := parseScan(t, reply)
			for _, k := range page {
				seen[k]++
			}
			pages++
			if cursor = next; cursor == "0" || pages > 1000 {
				break
			}
		}
		if len(seen) != len(all) {
			t.Errorf("SCAN found %d keys; want %d", len(seen), len(all))
		}
		for k, n := range seen {
			if n != 1 {
				t.Errorf("SCAN returned %s %d times", k, n)
			}
		}
		expectDo(t, c, "-ERR invalid cursor\r\n", "SCAN", "1023")
		expectDo(t, c, "-ERR invalid cursor\r\n", "SCAN", "x")
		// Scripts and functions are loaded on every master: EVALSHA and FCALL work on keys of each.
		loaded, _, _ := resp.BulkPayload(c.Do("SCRIPT", "LOAD", "return redis.call('get', KEYS[1])"))
		sha := string(loaded)
		for _, k := range keys[:3] {
			expectDo(t, c, "+OK\r\n", "SET", k, "s")
			expectDo(t, c, bulk("s"), "EVALSHA", sha, "1", k)
		}
		expectDo(t, c, "*2\r\n:1\r\n:0\r\n", "SCRIPT", "EXISTS", sha, strings.Repeat("0", 40))
		cl.Masters[2].Do("SCRIPT", "FLUSH")
		expectDo(t, c, "*2\r\n:0\r\n:0\r\n", "SCRIPT", "EXISTS", sha, strings.Repeat("0", 40))
		expectDo(t, c, "$3\r\nfcl\r\n", "FUNCTION", "LOAD",
			"#!lua name=fcl\nredis.register_function('fget', function(keys, args) return redis.call('get', keys[1]) end)")
		for _, k := range keys[:3] {
			expectDo(t, c, bulk("s"), "FCALL", "fget", "1", k)
		}
		expectDo(t, c, "+OK\r\n", "FUNCTION", "DELETE", "fcl")
		// FLUSHALL empties every master and the local tier.
		expectDo(t, c, bulk("s"), "GET", keys[0])
		expectDo(t, c, "+OK\r\n", "FLUSHALL")
		expectDo(t, c, ":0\r\n", "DBSIZE")
		expectDo(t, c, "$-1\r\n", "GET", keys[0])
	})

	t.Run("invalidations from every master", func(t *testing.T) {
		c := p.dial()
		for i, k := range keys[:3] {
			cl.Masters[i].Do("SET", k, "before")
		}
		p.settle()
		for _, k := range keys[:3] {
			expectDo(t, c, bulk("before"), "GET", k)
			expectDo(t, c, bulk("before"), "GET", k) // cached now
		}
		for i, k := range keys[:3] {
			cl.Masters[i].Do("SET", k, "after")
			redistest.Eventually(t, 5*time.Second, "featcache serves the write made on "+cl.Masters[i].Addr(), func() bool {
				return p.do("GET", k) == bulk("after")
			})
		}
	})

	t.Run("one master's tracking lost", func(t *testing.T) {
		c := p.dial()
		for i, k := range keys[:3] {
			cl.Masters[i].Do("SET", k, "v")
		}
		rv := clusterKeys(t, cl, "rv:", 2)[1] // on master 1, under the revalidate policy
		cl.Masters[1].Do("SET", rv, "r")
		p.settle()
		for _, k := range keys[:3] {
			expectDo(t, c, bulk("v"), "GET", k)
		}
		expectDo(t, c, bulk("r"), "GET", rv)
		gets := func() []int {
			var n []int
			for _, m := range cl.Masters {
				n = append(n, m.Calls("get"))
			}
			return n
		}
		before := gets()
		for _, k := range keys[:3] {
			expectDo(t, c, bulk("v"), "GET", k) // hits: no GET reaches any master
		}
		if after := gets(); !slices.Equal(before, after) {
			t.Fatalf("cached reads reached the masters: GET calls %v -> %v", before, after)
		}
		flushes := p.cache.Stats().Flushes
		if killConns(cl.Masters[1], trackingConns(cl.Masters[1])) == 0 {
			t.Fatalf("no featcache tracking connection on master 1: %s", cl.Masters[1].Do("CLIENT", "LIST"))
		}
		// Master 1's revalidate entry stays, unverified (served, and counted so).
		unverified := p.srv.Stats().Unverified.Load()
		redistest.Eventually(t, 5*time.Second, "the revalidate entry served unverified", func() bool {
			return p.do("GET", rv) == bulk("r") && p.srv.Stats().Unverified.Load() > unverified
		})
		// Written while master 1's invalidations may be missed: featcache must not serve the old value.
		cl.Masters[1].Do("SET", keys[1], "changed")
		expectDo(t, c, bulk("changed"), "GET", keys[1])
		redistest.Eventually(t, 5*time.Second, "tracking back on master 1", func() bool { _, up := p.up.Tracking(); return up })
		// Masters 0 and 2 kept their entries: still answered from memory.
		before = gets()
		expectDo(t, c, bulk("v"), "GET", keys[0])
		expectDo(t, c, bulk("v"), "GET", keys[2])
		if after := gets(); after[0] != before[0] || after[2] != before[2] {
			t.Errorf("entries of masters whose tracking stayed up were dropped: GET calls %v -> %v", before, after)
		}
		if got := p.cache.Stats().Flushes; got != flushes {
			t.Errorf("the local tier was flushed (%d -> %d): a lost master must not flush everything", flushes, got)
		}
	})

	t.Run("CACHE STATS and metrics", func(t *testing.T) {
		stats := p.do("CACHE", "STATS")
		for _, want := range []string{"# cluster\r\n", "cluster_masters:3\r\n", "cluster_untrusted_slots:0\r\n"} {
			if !strings.Contains(stats, want) {
				t.Errorf("CACHE STATS lacks %q:\n%s", want, stats)
			}
		}
		m := scrapeMetrics(t, p.adminURL())
		if got := m.value(t, "featcache_cluster_masters"); got != 3 {
			t.Errorf("featcache_cluster_masters = %v; want 3", got)
		}
		if got := m.value(t, "featcache_cluster_untrusted_slots"); got != 0 {
			t.Errorf("featcache_cluster_untrusted_slots = %v; want 0", got)
		}
		m.value(t, "featcache_cluster_redirects_total", "kind", "moved")
	})
}

func sortedCopy(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}

// parseArray reads a flat array of bulk strings.
func parseArray(t *testing.T, reply []byte) []string {
	t.Helper()
	elems, err := resp.ParseBulkArray(reply, nil)
	if err != nil {
		t.Fatalf("not an array: %q: %v", reply, err)
	}
	var out []string
	for _, e := range elems {
		out = append(out, string(e))
	}
	return out
}

// parseScan reads SCAN's reply: the next cursor and the page's keys.
func parseScan(t *testing.T, reply string) (string, []string) {
	t.Helper()
	v, _, err := resp.Decode([]byte(reply))
	if err != nil || len(v.Elems) != 2 {
		t.Fatalf("SCAN reply: %q", reply)
	}
	var keys []string
	for _, k := range v.Elems[1].Elems {
		keys = append(keys, k.Str)
	}
	return v.Elems[0].Str, keys
}

// TestClusterRedisPy: redis-py, written for one Redis, pipelines across slots through featcache.
func TestClusterRedisPy(t *testing.T) {
	cl := redistest.StartCluster(t, 3, 0)
	p := startProxyAt(t, cl.Addrs(), nil, defaultTestConfig)
	port := p.addr[strings.LastIndexByte(p.addr, ':')+1:]
	script := `
import redis, sys
r = redis.Redis(host="127.0.0.1", port=` + port + `, decode_responses=True)
keys = ["py:%d" % i for i in range(20)]
with r.pipeline(transaction=False) as p:
    for i, k in enumerate(keys):
        p.set(k, i)
    p.mget(keys)
    p.delete(*keys[:10])
    p.exists(*keys)
    res = p.execute()
print(res[20] == [str(i) for i in range(20)], res[21], res[22])
with r.pipeline() as p:          # transaction=True: MULTI/EXEC across slots
    p.set("py:a", 1).set("py:b", 2)
    try:
        p.execute()
        print("no error")
    except redis.ResponseError as e:
        print(str(e).split()[0])
with r.pipeline() as p:          # one hash tag: one slot
    p.set("{py}a", 1).incr("{py}a").get("{py}a")
    print(p.execute())
`
	out, err := exec.Command("/usr/bin/python3", "-c", script).CombinedOutput()
	if err != nil {
		t.Fatalf("python3: %v\n%s", err, out)
	}
	want := "True 10 10\nCROSSSLOT\n[True, 2, '2']\n"
	if string(out) != want {
		t.Errorf("redis-py through featcache:\n got %q\nwant %q", out, want)
	}
}

// clusterTraffic runs readers and writers through featcache over keys until stop, checking every reply: a
// writer's own read after its acknowledged write sees it (read-your-writes), and a reader never sees a key's
// counter go back. It counts what the clients saw.
type clusterTraffic struct {
	t       *testing.T
	p       *testProxy
	keys    []string
	stop    chan struct{}
	wg      sync.WaitGroup
	writes  atomic.Int64
	reads   atomic.Int64
	errs    sync.Map       // error text (first words) -> *atomic.Int64
	written []atomic.Int64 // the last counter acknowledged per key
	bad     atomic.Int64
	// GETs of single keys, and the error replies they got, per key.
	gets, getErrs []atomic.Int64
	// txWriters: writers below this index write in transactions (MULTI, SET, GET, EXEC), counted in txs.
	txWriters int
	txs       atomic.Int64
}

func startClusterTraffic(t *testing.T, p *testProxy, keys []string, writers, readers, txWriters int) *clusterTraffic {
	tr := &clusterTraffic{t: t, p: p, keys: keys, stop: make(chan struct{}), written: make([]atomic.Int64, len(keys)),
		gets: make([]atomic.Int64, len(keys)), getErrs: make([]atomic.Int64, len(keys)), txWriters: txWriters}
	for w := 0; w < writers; w++ {
		tr.run(func(c *redistest.Conn) { tr.writer(c, w, writers) })
	}
	for r := 0; r < readers; r++ {
		tr.run(tr.reader)
		tr.run(tr.getter)
	}
	return tr
}

// run runs client on a goroutine of its own, on a connection of its own to featcache, until stop; a client that
// cannot connect is counted bad.
func (tr *clusterTraffic) run(client func(c *redistest.Conn)) {
	tr.wg.Add(1)
	go func() {
		defer tr.wg.Done()
		c, err := redistest.TryDial(tr.t, tr.p.addr)
		if err != nil {
			tr.bad.Add(1)
			return
		}
		client(c)
	}()
}

// getter GETs the keys one by one, counting errors per key, and checks no counter goes back.
func (tr *clusterTraffic) getter(c *redistest.Conn) {
	seen := make([]int64, len(tr.keys))
	for {
		for i, k := range tr.keys {
			select {
			case <-tr.stop:
				return
			default:
			}
			c.Send("GET", k)
			reply, err := c.Read()
			if err != nil {
				tr.bad.Add(1)
				return
			}
			tr.gets[i].Add(1)
			if reply[0] == '-' {
				tr.getErrs[i].Add(1)
				tr.sawError(string(reply))
				continue
			}
			vals, ok := mgetValues("*1\r\n"+string(reply), 1)
			if !ok || vals[0] == "" {
				tr.t.Errorf("GET %s answered %q", k, reply)
				tr.bad.Add(1)
				continue
			}
			if n, err := strconv.ParseInt(vals[0], 10, 64); err == nil {
				if n < seen[i] {
					tr.t.Errorf("%s went back from %d to %d", k, seen[i], n)
					tr.bad.Add(1)
				}
				seen[i] = n
			}
		}
	}
}

func (tr *clusterTraffic) sawError(reply string) {
	f := strings.Fields(strings.TrimPrefix(reply, "-"))
	kind := strings.Join(f[:min(len(f), 4)], " ")
	n, _ := tr.errs.LoadOrStore(kind, new(atomic.Int64))
	n.(*atomic.Int64).Add(1)
}

func (tr *clusterTraffic) errors() (total int64, kinds []string) {
	tr.errs.Range(func(k, v any) bool {
		n := v.(*atomic.Int64).Load()
		total += n
		kinds = append(kinds, fmt.Sprintf("%q x%d", k, n))
		return true
	})
	return total, kinds
}

// writer owns the keys i with i%of == w: SET key <counter>, then GET key must answer it.
func (tr *clusterTraffic) writer(c *redistest.Conn, w, of int) {
	for n := int64(1); ; n++ {
		for i := w; i < len(tr.keys); i += of {
			select {
			case <-tr.stop:
				return
			default:
			}
			v := strconv.FormatInt(n, 10)
			if w < tr.txWriters {
				if !tr.transaction(c, i, n) {
					return
				}
				continue
			}
			c.Send("SET", tr.keys[i], v)
			reply, err := c.Read()
			if err != nil {
				tr.bad.Add(1)
				return
			}
			if string(reply) != "+OK\r\n" {
				if reply[0] != '-' {
					tr.t.Errorf("SET %s answered %q", tr.keys[i], reply)
					tr.bad.Add(1)
				}
				tr.sawError(string(reply))
				continue
			}
			tr.writes.Add(1)
			tr.written[i].Store(n)
			c.Send("GET", tr.keys[i])
			reply, err = c.Read()
			if err != nil {
				tr.bad.Add(1)
				return
			}
			switch {
			case reply[0] == '-':
				tr.sawError(string(reply))
			case string(reply) != bulk(v):
				tr.t.Errorf("read-your-writes: GET %s after SET %s answered %q", tr.keys[i], v, reply)
				tr.bad.Add(1)
			}
		}
	}
}

// transaction writes key i in a transaction and reads it back in it; it reports false when the connection broke.
func (tr *clusterTraffic) transaction(c *redistest.Conn, i int, n int64) bool {
	v := strconv.FormatInt(n, 10)
	pipe := append(redistest.Encode("MULTI"), redistest.Encode("SET", tr.keys[i], v)...)
	pipe = append(pipe, redistest.Encode("GET", tr.keys[i])...)
	pipe = append(pipe, redistest.Encode("EXEC")...)
	if _, err := c.NetConn().Write(pipe); err != nil {
		tr.bad.Add(1)
		return false
	}
	var replies []string
	for range 4 {
		r, err := c.Read()
		if err != nil {
			tr.bad.Add(1)
			return false
		}
		replies = append(replies, string(r))
	}
	switch exec := replies[3]; {
	case exec == "*2\r\n+OK\r\n"+bulk(v):
		tr.txs.Add(1)
		tr.writes.Add(1)
		tr.written[i].Store(n)
	case exec[0] == '-':
		tr.sawError(exec)
	default:
		tr.t.Errorf("transaction SET/GET %s %s: EXEC answered %q", tr.keys[i], v, exec)
		tr.bad.Add(1)
	}
	return true
}

// reader MGETs every key and checks no counter goes back.
func (tr *clusterTraffic) reader(c *redistest.Conn) {
	seen := make([]int64, len(tr.keys))
	args := append([]string{"MGET"}, tr.keys...)
	for {
		select {
		case <-tr.stop:
			return
		default:
		}
		c.Send(args...)
		reply, err := c.Read()
		if err != nil {
			tr.bad.Add(1)
			return
		}
		if reply[0] == '-' {
			tr.sawError(string(reply))
			continue
		}
		tr.reads.Add(1)
		vals, ok := mgetValues(string(reply), len(tr.keys))
		if !ok {
			tr.t.Errorf("MGET answered %q", reply)
			tr.bad.Add(1)
			continue
		}
		for i, v := range vals {
			if v == "" {
				tr.t.Errorf("MGET answered nil for %s, which exists: %q", tr.keys[i], reply)
				tr.bad.Add(1)
				continue
			}
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				continue // a value another test step wrote
			}
			if n < seen[i] {
				tr.t.Errorf("%s went back from %d to %d", tr.keys[i], seen[i], n)
				tr.bad.Add(1)
			}
			seen[i] = n
		}
	}
}

// mgetValues reads an MGET reply of n bulk strings; a nil is "".
func mgetValues(reply string, n int) ([]string, bool) {
	elems, err := resp.ParseBulkArray([]byte(reply), nil)
	if err != nil || len(elems) != n {
		return nil, false
	}
	out := make([]string, 0, n)
	for _, e := range elems {
		out = append(out, string(e))
	}
	return out, true
}

func (tr *clusterTraffic) finish() {
	close(tr.stop)
	tr.wg.Wait()
}

// TestClusterReshard moves a slot from one master to another (IMPORTING/MIGRATING, MIGRATE key by key, SETSLOT
// NODE, as redis-cli --cluster reshard does) while clients read and write its keys through featcache: no client
// sees a redirect or a value older than one it saw or wrote, and featcache ends with every value equal to Redis's.
func TestClusterReshard(t *testing.T) {
	cl := redistest.StartCluster(t, 3, 0)
	p := startProxyAt(t, cl.Addrs(), nil, defaultTestConfig)
	var keys []string
	for i := 0; i < 40; i++ {
		keys = append(keys, "{resh}"+strconv.Itoa(i)) // one slot
	}
	slot := cl.Slot(keys[0])
	from := cl.MasterOfSlot(slot)
	to := cl.Masters[0]
	if to == from {
		to = cl.Masters[1]
	}
	c := p.dial()
	for _, k := range keys {
		expectDo(t, c, "+OK\r\n", "SET", k, "0")
	}
	tr := startClusterTraffic(t, p, keys, 3, 2, 1)
	time.Sleep(100 * time.Millisecond) // traffic under way, values cached
	cl.Migrate(slot, from, to, 4, func() { time.Sleep(20 * time.Millisecond) })
	time.Sleep(200 * time.Millisecond) // traffic after the move
	tr.finish()

	st := p.up.Cluster().Stats()
	errs, kinds := tr.errors()
	t.Logf("reshard of slot %d (%s -> %s): %d writes (%d of them in transactions), %d MGETs through featcache; "+
		"errors seen by clients: %d %v; featcache followed %d MOVED, %d ASK, %d TRYAGAIN", slot, from.Addr(),
		to.Addr(), tr.writes.Load(), tr.txs.Load(), tr.reads.Load(), errs, kinds, st.Moved, st.Asked, st.TryAgain)
	if tr.bad.Load() > 0 {
		t.Fatalf("%d violations or broken connections", tr.bad.Load())
	}
	if errs > 0 {
		t.Errorf("clients saw %d errors during the reshard: %v", errs, kinds)
	}
	if tr.writes.Load() == 0 || tr.reads.Load() == 0 || tr.txs.Load() == 0 {
		t.Fatal("no traffic ran")
	}
	if st.Moved+st.Asked == 0 {
		t.Error("featcache followed no redirect: the reshard did not happen under the traffic")
	}
	if got := scrapeMetrics(t, p.adminURL()).value(t, "featcache_cluster_redirects_total", "kind", "ask"); got != float64(st.Asked) {
		t.Errorf("featcache_cluster_redirects_total{kind=ask} = %v; want %d", got, st.Asked)
	}
	// Everything converged: featcache answers what the slot's new master holds.
	for _, k := range keys {
		want := string(to.Do("GET", k))
		redistest.Eventually(t, 5*time.Second, "featcache agrees with Redis on "+k, func() bool { return p.do("GET", k) == want })
	}
	if got := p.up.Cluster().Stats(); got.Masters != 3 {
		t.Errorf("masters after the reshard: %d", got.Masters)
	}

	// Slots moved behind featcache's back (its slot map is behind): a transaction, a WATCH session and a
	// blocking command each get MOVED on their first try and follow it to the slot's new master.
	moveBehind := func(key string) *redistest.Server {
		t.Helper()
		slot := cl.Slot(key)
		from := cl.MasterOfSlot(slot)
		to := cl.Masters[0]
		if to == from {
			to = cl.Masters[1]
		}
		cl.Migrate(slot, from, to, 10, nil)
		return to
	}
	moved := p.up.Cluster().Stats().Moved
	moveBehind("{tx}a")
	expectExec(t, c, "*2\r\n+OK\r\n:2\r\n", []string{"SET", "{tx}a", "1"}, []string{"INCR", "{tx}a"})
	to = moveBehind("{w}x")
	to.Do("SET", "{w}x", "1")
	expectDo(t, c, "+OK\r\n", "WATCH", "{w}x")
	expectDo(t, c, bulk("1"), "GET", "{w}x")
	expectExec(t, c, "*1\r\n:2\r\n", []string{"INCR", "{w}x"})
	to = moveBehind("{bl}list")
	to.Do("RPUSH", "{bl}list", "e")
	expectDo(t, c, "*2\r\n$8\r\n{bl}list\r\n$1\r\ne\r\n", "BLPOP", "{bl}list", "1")
	if got := p.up.Cluster().Stats().Moved - moved; got < 3 {
		t.Errorf("%d MOVED followed for the transaction, the WATCH and the BLPOP; want 3", got)
	}

	// A blocking command whose key has left a slot being migrated gets ASK, and follows it: ASKING goes right
	// before the command on the target, where the key is (Redis applies ASKING to the next command only).
	slot = cl.Slot("{ask}list")
	from = cl.MasterOfSlot(slot)
	to = cl.Masters[0]
	if to == from {
		to = cl.Masters[1]
	}
	s := strconv.Itoa(slot)
	expectDo(t, redistest.Dial(t, to.Addr()), "+OK\r\n", "CLUSTER", "SETSLOT", s, "IMPORTING", cl.NodeID(from))
	expectDo(t, redistest.Dial(t, from.Addr()), "+OK\r\n", "CLUSTER", "SETSLOT", s, "MIGRATING", cl.NodeID(to))
	target := redistest.Dial(t, to.Addr())
	expectDo(t, target, "+OK\r\n", "ASKING")
	expectDo(t, target, ":1\r\n", "RPUSH", "{ask}list", "e")
	asked := p.up.Cluster().Stats().Asked
	expectDo(t, c, "*2\r\n$9\r\n{ask}list\r\n$1\r\ne\r\n", "BLPOP", "{ask}list", "1")
	if p.up.Cluster().Stats().Asked == asked {
		t.Error("the BLPOP got its element without following an ASK: the test proves nothing")
	}
	cl.Migrate(slot, from, to, 10, nil)
}

// TestClusterFailover kills a master of a cluster with replicas and promotes its replica (CLUSTER FAILOVER
// TAKEOVER) while clients read and write through featcache: the dead master's keys fail until the slot map
// names the promoted replica, the other masters' keys keep being served, nothing cached from the dead master is
// served afterwards, and the new master's writes are tracked.
func TestClusterFailover(t *testing.T) {
	cl := redistest.StartCluster(t, 3, 1)
	p := startProxyAt(t, cl.Addrs(), nil, defaultTestConfig)
	keys := clusterKeys(t, cl, "fo", 9)
	c := p.dial()
	for _, k := range keys {
		expectDo(t, c, "+OK\r\n", "SET", k, "0")
	}
	dead, promoted := cl.Masters[1], cl.Replicas[1]
	redistest.Eventually(t, 10*time.Second, "the replica has the keys", func() bool {
		return string(promoted.Do("DBSIZE")) == string(dead.Do("DBSIZE"))
	})
	tr := startClusterTraffic(t, p, keys, 3, 2, 0)
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	cl.Failover(dead, promoted)
	// featcache serves the dead master's keys again once its slot map names the promoted replica.
	probe := "{" + keys[1] + "}probe" // in the dead master's slot, outside the traffic
	redistest.Eventually(t, 15*time.Second, "featcache writes to the promoted master", func() bool {
		return p.do("SET", probe, "x") == "+OK\r\n"
	})
	recovered := time.Since(start)
	time.Sleep(200 * time.Millisecond)
	tr.finish()

	st := p.up.Cluster().Stats()
	errs, kinds := tr.errors()
	var deadGets, deadErrs, liveGets, liveErrs int64
	for i := range keys {
		if i%3 == 1 {
			deadGets, deadErrs = deadGets+tr.gets[i].Load(), deadErrs+tr.getErrs[i].Load()
		} else {
			liveGets, liveErrs = liveGets+tr.gets[i].Load(), liveErrs+tr.getErrs[i].Load()
		}
	}
	t.Logf("failover of %s to %s: featcache wrote to the new master %v after the kill; %d writes, %d MGETs; "+
		"GETs of the dead master's keys: %d, %d failed; GETs of the other masters' keys: %d, %d failed; "+
		"all errors seen by clients: %d %v; slot map refreshes %d, changes %d, MOVED followed %d; slots flushed %d",
		dead.Addr(), promoted.Addr(), recovered.Round(time.Millisecond), tr.writes.Load(), tr.reads.Load(),
		deadGets, deadErrs, liveGets, liveErrs, errs, kinds, st.Refreshes, st.MapChanges, st.Moved,
		p.cache.Stats().PartitionFlushes)
	if tr.bad.Load() > 0 {
		t.Fatalf("%d violations or broken connections", tr.bad.Load())
	}
	if liveErrs > 0 {
		t.Errorf("GETs of keys on the masters that stayed up failed %d times", liveErrs)
	}
	if p.cache.Stats().PartitionFlushes == 0 {
		t.Error("the dead master's slots were not flushed when they passed to its replica")
	}
	redistest.Eventually(t, 10*time.Second, "tracking up on every master", func() bool { _, up := p.up.Tracking(); return up })
	// Every key agrees with Redis, and a write straight to the new master reaches featcache.
	for i, k := range keys {
		want := string(cl.MasterOf(k).Do("GET", k))
		redistest.Eventually(t, 5*time.Second, "featcache agrees with Redis on "+k, func() bool { return p.do("GET", k) == want })
		if i%3 == 1 {
			expectDo(t, c, want, "GET", k)
			promoted.Do("SET", k, "direct")
			redistest.Eventually(t, 5*time.Second, "featcache serves the new master's write of "+k, func() bool {
				return p.do("GET", k) == bulk("direct")
			})
		}
	}
}

// TestClusterDetectedLate: a featcache that starts while no seed answers decides what the upstream is when one
// does; a Redis Cluster then gets its rules (a split MSET) and tracking on every master.
func TestClusterDetectedLate(t *testing.T) {
	cl := redistest.StartCluster(t, 3, 0)
	for _, m := range cl.Masters {
		m.Pause()
	}
	resumed := make(chan struct{})
	go func() {
		defer close(resumed)
		time.Sleep(1500 * time.Millisecond)
		for _, m := range cl.Masters {
			m.Resume()
		}
	}()
	t.Cleanup(func() { <-resumed })
	p := startProxyAt(t, cl.Addrs(), nil, "upstream: {timeout: 200ms}\n"+defaultTestConfig)
	<-resumed
	redistest.Eventually(t, 10*time.Second, "the cluster found", func() bool { return p.up.Cluster() != nil })
	keys := clusterKeys(t, cl, "late", 3)
	c := p.dial()
	redistest.Eventually(t, 10*time.Second, "a split MSET", func() bool {
		return string(c.Do("MSET", keys[0], "a", keys[1], "b", keys[2], "c")) == "+OK\r\n"
	})
	expectDo(t, c, "*3\r\n"+bulk("a")+bulk("b")+bulk("c"), "MGET", keys[0], keys[1], keys[2])
	redistest.Eventually(t, 10*time.Second, "tracking up on every master", func() bool { _, up := p.up.Tracking(); return up })
}
