package proxy

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"featcache/internal/redistest"
	"featcache/internal/resp"
)

// CLIENT TRACKING in front of a Redis Cluster: the same scripts as in front of one Redis (tracking_test.go),
// compared with a standalone redis-server, but with their keys spread over the masters of a 3-master cluster, so
// that the invalidations come from every master's streams (the policies' tracking connection and the keyspace
// stream featcache opens on each master while a client tracks). Keys carry hash tags, written after the key so that
// the policies' and the BCAST prefixes still match: {A}, {B} and {C} name the first, second and third master. The
// "x" client of the scripts writes straight to the second master, so its keys are all tagged {B}.

// clusterTrackingCluster is a 3-master cluster and the hash tags of its masters, in the masters' order.
type clusterTrackingCluster struct {
	cl   *redistest.Cluster
	tags [3]string
}

// startTrackingCluster starts the cluster and finds a hash tag served by each master.
func startTrackingCluster(t *testing.T) *clusterTrackingCluster {
	t.Helper()
	ct := &clusterTrackingCluster{cl: redistest.StartCluster(t, 3, 0)}
	for m, master := range ct.cl.Masters {
		ct.tags[m] = tagOn(ct.cl, master)
	}
	return ct
}

// keys replaces {A}, {B} and {C} in the steps' arguments with the masters' tags.
func (ct *clusterTrackingCluster) keys(steps []trackStep) []trackStep {
	r := strings.NewReplacer("{A}", ct.tags[0], "{B}", ct.tags[1], "{C}", ct.tags[2])
	out := make([]trackStep, len(steps))
	for i, st := range steps {
		args := make([]string, len(st.args))
		for j, a := range st.args {
			args[j] = r.Replace(a)
		}
		out[i] = trackStep{who: st.who, args: args}
	}
	return out
}

// startProxy starts a featcache in front of the cluster and waits until its tracking is up on every master.
func (ct *clusterTrackingCluster) startProxy(t *testing.T) *testProxy {
	t.Helper()
	p := startProxyAt(t, ct.cl.Addrs()[:1], nil, trackingTestConfig)
	if p.up.Cluster() == nil {
		t.Fatal("featcache did not find the cluster")
	}
	redistest.Eventually(t, 10*time.Second, "tracking up on every master", func() bool {
		_, up := p.up.Tracking()
		return up
	})
	return p
}

// compare runs steps straight against a standalone Redis, then through a featcache in front of the cluster (its
// "x" client on the second master), and compares every reply and every invalidation. Each run has a fresh
// featcache and an empty cluster.
func (ct *clusterTrackingCluster) compare(t *testing.T, steps []trackStep, resp3 bool) {
	t.Helper()
	steps = ct.keys(steps)
	for _, m := range ct.cl.Masters {
		m.Do("FLUSHALL")
	}
	p := ct.startProxy(t)
	direct := redistest.Start(t)
	want := runTrackingScript(t, direct.Addr(), direct.Addr(), steps, nil, 150*time.Millisecond, nil, resp3)
	got := runTrackingScript(t, p.addr, ct.cl.Masters[1].Addr(), steps, want, 300*time.Millisecond, p.settle, resp3)
	for i := range steps {
		if got[i].String() != want[i].String() {
			t.Errorf("step %d %s %q:\n got %v\nwant %v", i, steps[i].who, steps[i].args, got[i], want[i])
		}
	}
}

// TestClusterClientTracking compares each tracking mode in front of a cluster with Redis's, for a RESP2 client
// redirecting to a subscribed client and for a RESP3 client's pushes.
func TestClusterClientTracking(t *testing.T) {
	ct := startTrackingCluster(t)
	t.Run("DefaultRedirect", func(t *testing.T) { ct.compare(t, defaultModeScript(true), false) })
	t.Run("DefaultRESP3", func(t *testing.T) { ct.compare(t, defaultModeScript(false), true) })
	t.Run("BcastNoloop", func(t *testing.T) { ct.compare(t, bcastScript, false) })
	t.Run("BcastRESP3", func(t *testing.T) {
		ct.compare(t, []trackStep{
			step("a", "CLIENT", "TRACKING", "ON", "BCAST"),
			step("w", "SET", "u:1{A}", "1"),
			step("x", "SET", "c:1{B}", "1"),
			step("w", "SET", "c:1{C}", "1"),
			step("a", "SET", "u:2{C}", "1"),
			step("a", "GET", "u:2{C}"),
		}, true)
	})
	t.Run("OptInOut", func(t *testing.T) { ct.compare(t, optInOutScript, false) })
	t.Run("NoloopAndReset", func(t *testing.T) {
		ct.compare(t, []trackStep{
			step("a", "CLIENT", "TRACKING", "ON", "NOLOOP", "REDIRECT", "$R"),
			step("a", "MGET", "c:1{A}", "u:1{B}", "c:2{C}"),
			step("a", "MSET", "c:1{A}", "a", "u:1{B}", "a"),
			step("a", "MGET", "c:1{A}", "u:1{B}"),
			step("w", "MSET", "c:1{A}", "w", "u:1{B}", "w", "c:2{C}", "w"),
			step("a", "GET", "u:1{B}"),
			step("a", "RESET"),
			step("a", "CLIENT", "TRACKINGINFO"),
			step("a", "CLIENT", "GETREDIR"),
			step("x", "SET", "u:1{B}", "x"), // tracking ended with RESET
		}, false)
	})
	// A NOLOOP client's writes in a transaction featcache queues in front of the cluster.
	t.Run("NoloopTransaction", func(t *testing.T) {
		ct.compare(t, []trackStep{
			step("a", "CLIENT", "TRACKING", "ON", "NOLOOP", "REDIRECT", "$R"),
			step("a", "MGET", "c:1{B}", "u:1{B}", "c:2{C}"),
			step("a", "MULTI"),
			step("a", "SET", "c:1{B}", "a"),
			step("a", "SET", "u:1{B}", "a"),
			step("a", "EXEC"),
			step("a", "MGET", "c:1{B}", "u:1{B}"),
			step("a", "MULTI"),
			step("a", "SET", "c:2{C}", "b"),
			step("a", "EXEC"),
			step("a", "GET", "c:2{C}"),
			step("x", "SET", "c:1{B}", "x"),
		}, false)
	})
}

// pushedInvalidation is the push a RESP3 client receives for keys; pushedNull the null one.
func pushedInvalidation(keys ...string) string {
	b := resp.AppendBulkString(resp.AppendPush(nil, 2), "invalidate")
	b = resp.AppendArray(b, len(keys))
	for _, k := range keys {
		b = resp.AppendBulkString(b, k)
	}
	return string(b)
}

const pushedNull = ">2\r\n$10\r\ninvalidate\r\n_\r\n"

// readPush reads the next push of a RESP3 client, within 5s.
func readPush(t *testing.T, c *redistest.Conn) string {
	t.Helper()
	f, err := c.ReadTimeout(5 * time.Second)
	if err != nil {
		t.Fatalf("no push: %v", err)
	}
	return string(f)
}

// TestClusterClientTrackingEveryMaster: a RESP3 client tracking in the default mode reads a cached and an uncached
// key of each master through featcache; a write straight to each owning master by another client of the cluster
// reaches it as a push. The keyspace stream has one connection on each master while a client tracks, and none
// once the last one has left.
func TestClusterClientTrackingEveryMaster(t *testing.T) {
	ct := startTrackingCluster(t)
	p := ct.startProxy(t)
	for _, m := range ct.cl.Masters {
		if n := len(trackingConns(m)); n != 1 {
			t.Fatalf("%s: tracking connections before any client tracks: %d; want 1", m.Addr(), n)
		}
	}
	a := p.dial()
	a.Do("HELLO", "3")
	expectDo(t, a, "+OK\r\n", "CLIENT", "TRACKING", "ON")
	for _, m := range ct.cl.Masters {
		if n := len(trackingConns(m)); n != 2 {
			t.Fatalf("%s: tracking connections once a client tracks: %d; want 2 (enable waits for the stream)",
				m.Addr(), n)
		}
	}
	for i, m := range ct.cl.Masters {
		for _, key := range []string{"c:" + strconv.Itoa(i) + ct.tags[i], "u:" + strconv.Itoa(i) + ct.tags[i]} {
			expectDo(t, a, "_\r\n", "GET", key)
			expectDo(t, redistest.Dial(t, m.Addr()), "+OK\r\n", "SET", key, "direct")
			if got, want := readPush(t, a), pushedInvalidation(key); got != want {
				t.Errorf("after a write to %s on its master: got %q; want %q", key, got, want)
			}
		}
	}
	a.Close()
	redistest.Eventually(t, 5*time.Second, "the keyspace streams closed with the last tracking client", func() bool {
		for _, m := range ct.cl.Masters {
			if len(trackingConns(m)) != 1 {
				return false
			}
		}
		return true
	})
}

// TestClusterClientTrackingLoss: when featcache's tracking connections on one master are killed (CLIENT KILL on
// that master), its tracking clients get the null invalidation, as Redis's clients flush when their connection
// drops; once they are back, tracking goes on, on that master as on the others.
func TestClusterClientTrackingLoss(t *testing.T) {
	ct := startTrackingCluster(t)
	p := ct.startProxy(t)
	a := p.dial()
	a.Do("HELLO", "3")
	expectDo(t, a, "+OK\r\n", "CLIENT", "TRACKING", "ON")
	lost := ct.cl.Masters[2]
	keys := []string{"c:1" + ct.tags[2], "u:1" + ct.tags[2], "c:1" + ct.tags[0]}
	a.Do(append([]string{"MGET"}, keys...)...)
	if killConns(lost, trackingConns(lost)) == 0 {
		t.Fatal("no tracking connection of featcache found on the master")
	}
	if got := readPush(t, a); got != pushedNull {
		t.Fatalf("after the tracking connections of %s were killed: got %q; want the null invalidation", lost.Addr(), got)
	}
	redistest.Eventually(t, 10*time.Second, "tracking back", func() bool {
		_, up := p.up.Tracking()
		return up && len(trackingConns(lost)) == 2
	})
	// Nulls for the other loss and the returns, then nothing but what the writes below announce.
	for {
		f, err := a.ReadTimeout(300 * time.Millisecond)
		if err != nil {
			break
		}
		if string(f) != pushedNull {
			t.Fatalf("got %q; want only null invalidations", f)
		}
	}
	a.Do(append([]string{"MGET"}, keys...)...)
	for _, k := range keys {
		ct.cl.Do(k, "SET", k, "x")
		if got, want := readPush(t, a), pushedInvalidation(k); got != want {
			t.Fatalf("after a write to %s: got %q; want %q", k, got, want)
		}
	}
}

// TestClusterClientTrackingRefusedWithoutTracking: with upstream.tracking off there is no invalidation stream, in
// front of a cluster as in front of one Redis: CLIENT TRACKING is refused.
func TestClusterClientTrackingRefusedWithoutTracking(t *testing.T) {
	cl := redistest.StartCluster(t, 3, 0)
	p := startProxyAt(t, cl.Addrs()[:1], nil, "upstream:\n  tracking: false\n"+trackingTestConfig)
	expectDo(t, p.dial(), "-ERR 'client|tracking' is not supported by featcache with upstream.tracking off: it has no "+
		"invalidation stream to serve it\r\n", "CLIENT", "TRACKING", "ON")
}

// TestClusterClientTrackingRueidis runs the rueidis client with client-side caching through featcache in front of a
// cluster (ForceSingleClient: featcache answers CLUSTER commands with the real cluster's, which would make rueidis
// connect to the masters themselves): its cached reads of keys on every master are served from its memory until a
// write straight to the key's master, or through featcache, invalidates them; DoMultiCache pipelines across masters.
func TestClusterClientTrackingRueidis(t *testing.T) {
	ct := startTrackingCluster(t)
	p := ct.startProxy(t)
	client, get := cachingClient(t, rueidis.ClientOption{InitAddress: []string{p.addr}, DisableRetry: true,
		ForceSingleClient: true})
	var keys []string
	for i, tag := range ct.tags {
		keys = append(keys, "c:"+strconv.Itoa(i)+tag, "u:"+strconv.Itoa(i)+tag)
	}
	w := p.dial()
	for _, k := range keys {
		expectDo(t, w, "+OK\r\n", "SET", k, "v1")
	}
	p.settle()
	for _, key := range keys {
		if v, _ := get(key); v != "v1" {
			t.Fatalf("GET %s: %q", key, v)
		}
		if v, hit := get(key); v != "v1" || !hit {
			t.Fatalf("GET %s again: %q, cache hit %v; want v1 from rueidis's memory", key, v, hit)
		}
	}
	// Writes straight to each key's master (the "c:" keys) and through featcache (the "u:" keys).
	for i, key := range keys {
		if i%2 == 0 {
			ct.cl.Do(key, "SET", key, "v2")
		} else {
			expectDo(t, w, "+OK\r\n", "SET", key, "v2")
		}
	}
	for _, key := range keys {
		redistest.Eventually(t, 5*time.Second, key+" invalidated in rueidis's memory", func() bool {
			v, _ := get(key)
			return v == "v2"
		})
	}
	for round := range 2 {
		cts := make([]rueidis.CacheableTTL, len(keys)) // a rueidis command is used once
		for i, k := range keys {
			cts[i] = rueidis.CT(client.B().Get().Key(k).Cache(), time.Minute)
		}
		res := client.DoMultiCache(context.Background(), cts...)
		for i := range keys {
			if v, err := res[i].ToString(); err != nil || v != "v2" {
				t.Fatalf("DoMultiCache round %d, %s: %q, %v; want v2", round, keys[i], v, err)
			}
			if round == 1 && !res[i].IsCacheHit() {
				t.Errorf("DoMultiCache round 1, %s: not a cache hit", keys[i])
			}
		}
	}
}
