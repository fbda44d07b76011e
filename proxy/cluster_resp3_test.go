package proxy

import (
	"crypto/sha1"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"featcache/internal/redistest"
)

// RESP3 in front of a Redis Cluster: a client that chose RESP3 cannot tell featcache in front of a cluster from a
// standalone Redis either. TestClusterWireFidelityRESP3 runs resp3Script, its keys given hash tags so that what a
// standalone Redis runs in one keyspace runs in front of the cluster as well (the keys a transaction, a WATCH
// session, COPY or BRPOPLPUSH name share a slot; the others are spread over the masters, so that MGET, MSET and
// EXISTS are split over slots and pipelines go to several masters at once), against a standalone redis-server and
// through featcache in front of a 3-master cluster, and compares the raw reply bytes.

// clusterTag matches a key of resp3Script: a family ("s", "h", "nc", ...), a colon and the rest.
var clusterTag = regexp.MustCompile(`^([a-z0-9]+):[^ ]*$`)

// clusterKeyOf gives a key of resp3Script the hash tag of its family, after the key, so that the policies'
// prefixes still match it. The families a transaction or a WATCH session of the script reads together (t, h, z)
// share a tag; every other family has its own.
func clusterKeyOf(arg string) string {
	m := clusterTag.FindStringSubmatch(arg)
	if m == nil {
		return arg
	}
	tag := m[1]
	switch tag {
	case "t", "h", "z":
		tag = "txn"
	}
	return arg + "{" + tag + "}"
}

// resp3ClusterScript is resp3Script for a cluster: keys tagged (clusterKeyOf), without the two steps whose replies
// a cluster cannot give as one Redis does (INFO keyspace, which one master answers; SCAN, whose cursor says which
// master it walks), and with featcache's merged replies of keyspace-wide commands: RANDOMKEY of an empty keyspace
// (RESP3's null), DBSIZE, KEYS, SCRIPT EXISTS, DEL and EXISTS over several slots, FLUSHALL.
func resp3ClusterScript() []fidStep {
	var out []fidStep
	for _, st := range resp3Script() {
		if len(st.args) >= 2 && strings.EqualFold(st.args[0], "INFO") && strings.EqualFold(st.args[1], "keyspace") ||
			len(st.args) >= 1 && strings.EqualFold(st.args[0], "SCAN") {
			continue
		}
		st.args = slices.Clone(st.args)
		if len(st.args) > 0 && !strings.EqualFold(st.args[0], "EVAL") {
			for i := 1; i < len(st.args); i++ {
				st.args[i] = clusterKeyOf(st.args[i])
			}
		} else {
			for i := 3; i < len(st.args); i++ { // EVAL's keys and arguments
				st.args[i] = clusterKeyOf(st.args[i])
			}
		}
		out = append(out, st)
		if len(st.args) == 2 && st.args[0] == "HELLO" && st.args[1] == "3" && len(out) < 10 {
			// Right after the first HELLO 3, in an empty keyspace.
			out = append(out,
				fc("RANDOMKEY"),
				fc("DBSIZE"),
				fc("KEYS", "*"),
				fc("MGET", clusterKeyOf("s:none"), clusterKeyOf("nc:none"), clusterKeyOf("l:none")),
			)
		}
	}
	// Before the script goes back to RESP2 at its end.
	end := len(out) - 1
	for len(out[end].args) != 2 || out[end].args[0] != "HELLO" || out[end].args[1] != "2" {
		end--
	}
	sha := fmt.Sprintf("%x", sha1.Sum([]byte("return 'merged'")))
	tail := slices.Clone(out[end:])
	out = append(out[:end],
		fc("SCRIPT", "LOAD", "return 'merged'"),
		fc("SCRIPT", "EXISTS", sha, "0000000000000000000000000000000000000000"),
		fc("EXISTS", clusterKeyOf("s:1"), clusterKeyOf("nc:1"), clusterKeyOf("h:1"), clusterKeyOf("s:none")),
		fc("DEL", clusterKeyOf("s:copy"), clusterKeyOf("nc:1"), clusterKeyOf("l:dst"), clusterKeyOf("s:none")),
		fc("KEYS", clusterKeyOf("s:1")),
		fc("FLUSHALL"),
		fc("RANDOMKEY"),
		fc("DBSIZE"),
		fc("KEYS", "*"),
	)
	return append(out, tail...)
}

// fidCluster starts a 3-master cluster (cleared) and a featcache in front of it, seeded with one master; the
// script's side connection goes to the first master.
func fidCluster(t *testing.T, cl *redistest.Cluster) fidTarget {
	t.Helper()
	for _, m := range cl.Masters {
		m.Do("FLUSHALL")
		m.Do("SCRIPT", "FLUSH")
	}
	p := startProxyAt(t, cl.Addrs()[:1], nil, fidelityConfig)
	if p.up.Cluster() == nil {
		t.Fatal("featcache did not find the cluster")
	}
	t.Cleanup(func() {
		if n := p.srv.Stats().Panics.Load(); n != 0 {
			t.Errorf("featcache recovered %d connection panics", n)
		}
	})
	return fidTarget{addr: p.addr, redis: cl.Masters[0]}
}

func TestClusterWireFidelityRESP3(t *testing.T) {
	script := resp3ClusterScript()
	if len(script) < 150 {
		t.Fatalf("script has %d commands; want at least 150", len(script))
	}
	t.Logf("script: %d commands", len(script))
	// The script's keys are spread over the masters.
	cl := redistest.StartCluster(t, 3, 0, fidelityRedisArgs...)
	masters := map[*redistest.Server]bool{}
	for _, k := range []string{"s:1", "nc:1", "h:1", "l:1", "set:1", "st:1", "geo:1", "hll:1"} {
		masters[cl.MasterOf(clusterKeyOf(k))] = true
	}
	if len(masters) < 2 {
		t.Fatalf("the script's keys are all on one master")
	}
	t.Run("OneAtATime", func(t *testing.T) {
		want := fidRunSequential(t, fidDirect(t, false), script)
		got := fidRunSequential(t, fidCluster(t, cl), script)
		fidCompare(t, script, got, want)
	})
	t.Run("Pipelined", func(t *testing.T) {
		want := fidRunPipelined(t, fidDirect(t, false), script)
		got := fidRunPipelined(t, fidCluster(t, cl), script)
		fidCompare(t, script, got, want)
	})
}

// TestClusterRESP3Errors: CROSSSLOT and featcache's own refusals reach a RESP3 client as they reach a RESP2 one
// (an error is the same frame in both protocols), and HELLO 2 goes back.
func TestClusterRESP3Errors(t *testing.T) {
	cl := redistest.StartCluster(t, 3, 0)
	p := startProxyAt(t, cl.Addrs()[:1], nil, defaultTestConfig)
	c := p.dial()
	expectDo(t, c, "$-1\r\n", "GET", "x")
	if got := string(c.Do("HELLO", "3")); !strings.HasPrefix(got, "%7\r\n$6\r\nserver\r\n") {
		t.Fatalf("HELLO 3: got %q", got)
	}
	expectDo(t, c, "_\r\n", "GET", "x")
	expectDo(t, c, "-"+crossSlotError+"\r\n", "SUNION", "{a}x", "{b}y")
	expectDo(t, c, "+OK\r\n", "MULTI")
	expectDo(t, c, "+QUEUED\r\n", "SET", "{a}x", "1")
	expectDo(t, c, "+QUEUED\r\n", "SET", "{b}y", "1")
	expectDo(t, c, "-"+crossSlotError+"\r\n", "EXEC")
	expectDo(t, c, "-"+crossSlotError+"\r\n", "WATCH", "{a}x", "{b}y")
	expectDo(t, c, "+OK\r\n", "MULTI")
	expectDo(t, c, "+QUEUED\r\n", "ZADD", "{a}z", "1.5", "m")
	expectDo(t, c, "+QUEUED\r\n", "ZSCORE", "{a}z", "m")
	expectDo(t, c, "*2\r\n:1\r\n,1.5\r\n", "EXEC")
	if got := string(c.Do("HELLO", "2")); !strings.HasPrefix(got, "*14\r\n") {
		t.Fatalf("HELLO 2: got %q", got)
	}
	expectDo(t, c, "$-1\r\n", "GET", "x")
	expectDo(t, c, "$3\r\n1.5\r\n", "ZSCORE", "{a}z", "m")
}

// TestClusterRESP3Redirects: a RESP3 client's commands that meet MOVED or ASK (a slot migrated, or being migrated,
// behind featcache's back) are sent again to the slot's new master in RESP3, on the shared connections (a
// pipeline over two masters, so that each node's part is wrapped in HELLO 3 ... HELLO 2 by the router) and on a
// dedicated one (a WATCH session's, a BZPOPMIN's), whose re-dial switches the new connection to RESP3 too. Each
// reply is compared with the one the new master gives a RESP3 client of its own.
func TestClusterRESP3Redirects(t *testing.T) {
	cl := redistest.StartCluster(t, 3, 0)
	// "nc:" keys are not cached: their reads are relayed.
	p := startProxyAt(t, cl.Addrs()[:1], nil, fidelityConfig)
	c := p.dial()
	c.Do("HELLO", "3")
	stats := func() (moved, asked int64) {
		st := p.up.Cluster().Stats()
		return st.Moved, st.Asked
	}
	// otherMaster returns a master that does not serve key's slot, and the one that does.
	otherMaster := func(key string) (to, from *redistest.Server) {
		from = cl.MasterOf(key)
		to = cl.Masters[0]
		if to == from {
			to = cl.Masters[1]
		}
		return to, from
	}
	// migrating starts moving key's slot to another master and returns a connection to that master that has sent
	// ASKING, for writing the key there, and finish, which completes the move.
	migrating := func(t *testing.T, key string) (target *redistest.Conn, finish func()) {
		to, from := otherMaster(key)
		slot := strconv.Itoa(cl.Slot(key))
		expectDo(t, redistest.Dial(t, to.Addr()), "+OK\r\n", "CLUSTER", "SETSLOT", slot, "IMPORTING", cl.NodeID(from))
		expectDo(t, redistest.Dial(t, from.Addr()), "+OK\r\n", "CLUSTER", "SETSLOT", slot, "MIGRATING", cl.NodeID(to))
		target = redistest.Dial(t, to.Addr())
		expectDo(t, target, "+OK\r\n", "ASKING")
		return target, func() { cl.Migrate(cl.Slot(key), from, to, 10, nil) }
	}
	// direct3 is what master answers a RESP3 client of its own.
	direct3 := func(master *redistest.Server, args ...string) string {
		d := redistest.Dial(t, master.Addr())
		defer d.Close()
		d.Do("HELLO", "3")
		return string(d.Do(args...))
	}
	// untilMoved moves key's slot to another master behind featcache's back and runs try, until featcache followed a
	// MOVED for it; undo, if not nil, runs after a try that followed none. featcache's periodic slot-map refresh
	// may learn a move first, and then nothing is redirected: the move is tried at most three times.
	untilMoved := func(t *testing.T, key string, try func(to *redistest.Server), undo func()) {
		t.Helper()
		for attempt := 1; ; attempt++ {
			to, from := otherMaster(key)
			moved, _ := stats()
			cl.Migrate(cl.Slot(key), from, to, 10, nil)
			try(to)
			if m, _ := stats(); m > moved {
				return
			}
			if attempt == 3 {
				t.Error("featcache followed no MOVED: its slot map learned each move first, and the test proves nothing")
				return
			}
			if undo != nil {
				undo()
			}
		}
	}
	// A key on another master than the moved one, read in the same pipeline.
	stay := func(moved string) string {
		for i := 0; ; i++ {
			k := "nc:stay" + strconv.Itoa(i)
			if cl.MasterOf(k) != cl.MasterOf(moved) {
				return k
			}
		}
	}

	t.Run("MOVED on shared connections", func(t *testing.T) {
		key := "nc:moved{mv}"
		other := stay(key)
		expectDo(t, c, ":2\r\n", "ZADD", key, "1.5", "a", "2", "b")
		expectDo(t, c, ":1\r\n", "ZADD", other, "3", "c")
		untilMoved(t, key, func(to *redistest.Server) {
			want := direct3(to, "ZRANGE", key, "0", "-1", "WITHSCORES") +
				direct3(cl.MasterOf(other), "ZSCORE", other, "c")
			if want != "*2\r\n*2\r\n$1\r\na\r\n,1.5\r\n*2\r\n$1\r\nb\r\n,2\r\n,3\r\n" {
				t.Fatalf("Redis's own RESP3 replies: %q", want)
			}
			pipe := string(redistest.Encode("ZRANGE", key, "0", "-1", "WITHSCORES")) +
				string(redistest.Encode("ZSCORE", other, "c"))
			if _, err := c.NetConn().Write([]byte(pipe)); err != nil {
				t.Fatal(err)
			}
			var got string
			for i := 0; i < 2; i++ {
				f, err := c.Read()
				if err != nil {
					t.Fatal(err)
				}
				got += string(f)
			}
			if got != want {
				t.Errorf("pipeline after MOVED: got %q; want %q", got, want)
			}
		}, nil)
		// The shared connections went back to RESP2: a RESP2 client's reply is RESP2.
		expectDo(t, p.dial(), "$3\r\n1.5\r\n", "ZSCORE", key, "a")
	})

	t.Run("MOVED of a command alone", func(t *testing.T) {
		// Sent as it is, between its HELLO 3 and HELLO 2, to the old master; then alone to the new one, wrapped
		// by the router.
		key := "nc:alone{al}"
		expectDo(t, c, ":1\r\n", "ZADD", key, "0.5", "a")
		untilMoved(t, key, func(*redistest.Server) {
			expectDo(t, c, "*1\r\n*2\r\n$1\r\na\r\n,0.5\r\n", "ZRANGE", key, "0", "-1", "WITHSCORES")
		}, nil)
		expectDo(t, p.dial(), "$3\r\n0.5\r\n", "ZSCORE", key, "a")
	})

	t.Run("ASK on shared connections", func(t *testing.T) {
		key := "nc:asked{ak}"
		target, finish := migrating(t, key)
		expectDo(t, target, ":1\r\n", "HSET", key, "f", "v")
		_, asked := stats()
		target.Do("HELLO", "3")
		expectDo(t, target, "+OK\r\n", "ASKING")
		want := string(target.Do("HRANDFIELD", key, "1", "WITHVALUES"))
		if want != "*1\r\n*2\r\n$1\r\nf\r\n$1\r\nv\r\n" {
			t.Fatalf("Redis's own RESP3 reply: %q", want)
		}
		expectDo(t, c, want, "HRANDFIELD", key, "1", "WITHVALUES")
		if _, a := stats(); a == asked {
			t.Error("featcache followed no ASK: the test proves nothing")
		}
		finish()
	})

	t.Run("MOVED on a WATCH session", func(t *testing.T) {
		key := "nc:watched{wm}"
		expectDo(t, c, ":1\r\n", "ZADD", key, "1", "a")
		untilMoved(t, key, func(*redistest.Server) { expectDo(t, c, "+OK\r\n", "WATCH", key) },
			func() { expectDo(t, c, "+OK\r\n", "UNWATCH") })
		// The session's connection, re-dialled to the new master, speaks RESP3.
		expectDo(t, c, "*1\r\n*2\r\n$1\r\na\r\n,1\r\n", "ZRANGE", key, "0", "-1", "WITHSCORES")
		expectDo(t, c, "+OK\r\n", "MULTI")
		expectDo(t, c, "+QUEUED\r\n", "ZINCRBY", key, "0.5", "a")
		expectDo(t, c, "+QUEUED\r\n", "ZSCORE", key, "a")
		expectDo(t, c, "*2\r\n,1.5\r\n,1.5\r\n", "EXEC")
		expectDo(t, c, ",1.5\r\n", "ZSCORE", key, "a")
	})

	t.Run("MOVED and ASK on a blocking command", func(t *testing.T) {
		key := "nc:blocked{bz}"
		want := "*3\r\n$" + strconv.Itoa(len(key)) + "\r\n" + key + "\r\n$1\r\nm\r\n,2.5\r\n"
		untilMoved(t, key, func(to *redistest.Server) {
			to.Do("ZADD", key, "2.5", "m")
			expectDo(t, c, want, "BZPOPMIN", key, "1")
		}, nil)

		key = "nc:blockask{ba}"
		target, finish := migrating(t, key)
		expectDo(t, target, ":1\r\n", "ZADD", key, "0.25", "m")
		_, asked := stats()
		want = "*3\r\n$" + strconv.Itoa(len(key)) + "\r\n" + key + "\r\n$1\r\nm\r\n,0.25\r\n"
		expectDo(t, c, want, "BZPOPMIN", key, "1")
		if _, a := stats(); a == asked {
			t.Error("the BZPOPMIN followed no ASK: the test proves nothing")
		}
		finish()
	})
}
