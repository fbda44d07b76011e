package proxy

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"featcache/config"
	"featcache/internal/redistest"
	"featcache/internal/resp"
)

// trackingTestConfig caches keys under "c:" only: reads of other keys go to Redis, so that both invalidation
// streams (the policies' and the keyspace's) are exercised.
const trackingTestConfig = `
policies:
  - name: cached
    prefix: "c:"
    soft_ttl: 1h
    hard_ttl: 2h
    jitter: 0
`

// trackStep is one command of a tracking script: who sends it ("a" the tracking client, "w" another client of the
// same endpoint, "x" another client of Redis itself, "r" the redirect target, whose "close" closes it) and its
// arguments; "$R" stands for the redirect target's client id.
type trackStep struct {
	who  string
	args []string
}

// trackObservation is what a tracking script saw at one step: the command's reply, and the invalidation messages
// the redirect target received after it (sorted: the order of keys of one write is not compared).
type trackObservation struct {
	reply    string
	messages []string
}

func (o trackObservation) String() string {
	return fmt.Sprintf("reply %q, messages %q", o.reply, o.messages)
}

// runTrackingScript runs steps with the tracking client and the writer connected to addr, and the "x" client to
// redisAddr; with resp3 the tracking client speaks RESP3 (HELLO 3), and pushes on its own connection count as
// invalidations too. When want is nil, the invalidations of each step are read until the connections have been
// quiet for quiet; otherwise exactly as many as want says are read (waiting up to 5s for each), and at the end none
// more may come within quiet. Invalidations are "r " (the redirect target) or "a " (a push to the client) and the
// frame.
func runTrackingScript(t *testing.T, addr, redisAddr string, steps []trackStep, want []trackObservation,
	quiet time.Duration, settle func(), resp3 bool) []trackObservation {
	t.Helper()
	r := redistest.Dial(t, addr)
	defer r.Close()
	rid := strings.TrimSuffix(strings.TrimPrefix(string(r.Do("CLIENT", "ID")), ":"), "\r\n")
	if got := string(r.Do("SUBSCRIBE", "__redis__:invalidate")); !strings.HasPrefix(got, "*3\r\n$9\r\nsubscribe") {
		t.Fatalf("SUBSCRIBE: got %q", got)
	}
	a := redistest.Dial(t, addr)
	defer a.Close()
	if resp3 {
		if got := string(a.Do("HELLO", "3")); !strings.HasPrefix(got, "%") {
			t.Fatalf("HELLO 3: got %q", got)
		}
	}
	w := redistest.Dial(t, addr)
	defer w.Close()
	x := redistest.Dial(t, redisAddr)
	defer x.Close()
	rOpen := true
	var seen []trackObservation
	for i, st := range steps {
		args := slices.Clone(st.args)
		for j := range args {
			if args[j] == "$R" {
				args[j] = rid
			}
		}
		obs := trackObservation{}
		var reply []byte
		switch st.who {
		case "a":
			if err := a.Send(args...); err != nil {
				t.Fatal(err)
			}
			for {
				f, err := a.Read()
				if err != nil {
					t.Fatalf("step %d %q: reply: %v", i, st.args, err)
				}
				if f[0] != '>' {
					reply = f
					break
				}
				obs.messages = append(obs.messages, "a "+string(f))
			}
		case "w":
			reply = w.Do(args...)
		case "x":
			reply = x.Do(args...)
		case "r":
			r.Close()
			rOpen = false
		}
		if settle != nil && st.who != "a" {
			settle() // the policies' stream has applied the write: a later read is not invalidated by it
		}
		obs.reply = string(reply)
		if len(args) > 1 && strings.EqualFold(args[1], "info") {
			// CLIENT INFO: the fields tracking shows (the others name sockets and Redis's buffers).
			obs.reply = clientInfoFields(obs.reply, "flags", "redir")
		}
		if len(args) > 1 && (strings.EqualFold(args[1], "getredir") || strings.EqualFold(args[1], "trackinginfo") ||
			strings.EqualFold(args[1], "info")) {
			// The target's id differs between Redis and featcache: these replies name it as $R.
			obs.reply = strings.ReplaceAll(obs.reply, ":"+rid+"\r\n", ":$R\r\n")
			obs.reply = strings.ReplaceAll(obs.reply, "redir="+rid+"\r\n", "redir=$R\r\n")
		}
		conns := []struct {
			name string
			c    *redistest.Conn
			open bool
		}{{"r ", r, rOpen}, {"a ", a, resp3}}
		for _, cn := range conns {
			if !cn.open {
				continue
			}
			if want == nil {
				for {
					f, err := cn.c.ReadTimeout(quiet)
					if err != nil {
						break
					}
					obs.messages = append(obs.messages, cn.name+string(f))
				}
				continue
			}
			n := 0
			for _, m := range want[i].messages {
				if strings.HasPrefix(m, cn.name) {
					n++
				}
			}
			for _, m := range obs.messages {
				if strings.HasPrefix(m, cn.name) {
					n--
				}
			}
			for ; n > 0; n-- {
				f, err := cn.c.ReadTimeout(5 * time.Second)
				if err != nil {
					t.Fatalf("step %d %q: invalidation not received: %v (so far %q)", i, st.args, err, obs.messages)
				}
				obs.messages = append(obs.messages, cn.name+string(f))
			}
		}
		for j, m := range obs.messages {
			if strings.Contains(m, "tracking-redir-broken") { // it names the target, whose id differs
				obs.messages[j] = strings.ReplaceAll(m, ":"+rid+"\r\n", ":$R\r\n")
			}
		}
		slices.Sort(obs.messages)
		seen = append(seen, obs)
	}
	if want != nil {
		if f, err := r.ReadTimeout(quiet); rOpen && err == nil {
			t.Errorf("an invalidation more than Redis sends: %q", f)
		}
		if f, err := a.ReadTimeout(quiet); resp3 && err == nil {
			t.Errorf("a push more than Redis sends: %q", f)
		}
	}
	return seen
}

// clientInfoFields keeps the named fields of a CLIENT INFO reply, in order.
func clientInfoFields(reply string, names ...string) string {
	var kept []string
	for _, f := range strings.Fields(reply) {
		for _, n := range names {
			if strings.HasPrefix(f, n+"=") {
				kept = append(kept, f)
			}
		}
	}
	return strings.Join(kept, " ") + "\r\n"
}

// compareTracking runs steps straight against Redis, then through featcache, and compares every reply and every
// invalidation.
func compareTracking(t *testing.T, steps []trackStep) { compareTrackingIn(t, steps, false) }

// compareTrackingIn is compareTracking with the tracking client in RESP3 when resp3 is set.
func compareTrackingIn(t *testing.T, steps []trackStep, resp3 bool) {
	t.Helper()
	p := startProxy(t, trackingTestConfig)
	direct := redistest.Start(t)
	want := runTrackingScript(t, direct.Addr(), direct.Addr(), steps, nil, 150*time.Millisecond, nil, resp3)
	got := runTrackingScript(t, p.addr, p.redis.Addr(), steps, want, 300*time.Millisecond, p.settle, resp3)
	for i := range steps {
		if got[i].String() != want[i].String() {
			t.Errorf("step %d %s %q:\n got %v\nwant %v", i, steps[i].who, steps[i].args, got[i], want[i])
		}
	}
}

func step(who string, args ...string) trackStep { return trackStep{who: who, args: args} }

// TestClientTrackingDefaultMode compares the default mode with Redis's: the keys a client read (from featcache's
// memory, fetched, or forwarded: GET, MGET, HGET, STRLEN) are invalidated once when written, by a client of
// featcache or of Redis, and forgotten until read again; the client's own writes invalidate too; FLUSHALL sends
// the null invalidation.
func TestClientTrackingDefaultMode(t *testing.T) { compareTracking(t, defaultModeScript(true)) }

// defaultModeScript is TestClientTrackingDefaultMode's script, and TestClusterClientTracking's over three masters
// (its keys' hash tags, which one Redis ignores, spread them): reads (from featcache's memory, fetched, forwarded,
// an MGET across slots) and writes through featcache, by the client itself and by another client of Redis, a DEL
// and a FLUSHALL (one null invalidation in front of a cluster too, though every master announces its own). With
// redirect the invalidations go to the redirect target; without, a RESP3 client gets them as pushes.
func defaultModeScript(redirect bool) []trackStep {
	on := step("a", "CLIENT", "TRACKING", "ON")
	if redirect {
		on = step("a", "CLIENT", "TRACKING", "ON", "REDIRECT", "$R")
	}
	return []trackStep{
		step("w", "MSET", "c:1{A}", "v", "c:2{B}", "v", "u:1{C}", "v", "u:2{B}", "v"),
		step("w", "HSET", "c:h{C}", "f", "v"),
		on,
		step("a", "CLIENT", "GETREDIR"),
		step("a", "CLIENT", "TRACKINGINFO"),
		step("a", "GET", "c:1{A}"),
		step("a", "GET", "c:1{A}"), // from featcache's memory the second time
		step("a", "MGET", "c:2{B}", "u:1{C}"),
		step("a", "HGET", "c:h{C}", "f"),
		step("a", "STRLEN", "u:2{B}"),
		step("w", "SET", "c:1{A}", "w"),
		step("w", "SET", "c:1{A}", "w2"), // forgotten once invalidated: nothing
		step("x", "SET", "u:2{B}", "x"),
		step("w", "HSET", "c:h{C}", "f", "w"),
		step("w", "MSET", "c:2{B}", "w", "u:1{C}", "w"),
		step("a", "GET", "u:1{C}"),
		step("a", "SET", "u:1{C}", "self"), // the client's own write
		step("a", "GET", "c:2{B}"),
		step("x", "DEL", "c:2{B}"),
		step("a", "MGET", "c:1{A}", "c:2{B}", "u:2{B}"),
		step("w", "FLUSHALL"),
		step("w", "SET", "c:1{A}", "after"), // the flush emptied the table
		step("a", "GET", "u:2{B}"),
		step("x", "FLUSHALL"), // Redis's own (in front of a cluster, one master's): its null invalidation
		step("a", "GET", "u:2{B}"),
		step("a", "FLUSHDB"), // the client's own (on every master of a cluster): one null invalidation
		step("a", "CLIENT", "TRACKING", "OFF"),
		step("a", "CLIENT", "TRACKINGINFO"),
		step("a", "CLIENT", "GETREDIR"),
	}
}

// TestClientTrackingOffKeepsKeys: keys read before CLIENT TRACKING OFF are still invalidated after tracking is
// turned on again, as in Redis.
func TestClientTrackingOffKeepsKeys(t *testing.T) {
	compareTracking(t, []trackStep{
		step("a", "CLIENT", "TRACKING", "ON", "REDIRECT", "$R"),
		step("a", "GET", "c:1"),
		step("a", "GET", "u:1"),
		step("a", "CLIENT", "TRACKING", "OFF"),
		step("a", "CLIENT", "TRACKING", "ON", "REDIRECT", "$R"),
		step("w", "MSET", "c:1", "v", "u:1", "v"),
	})
}

// TestClientTrackingBcast compares BCAST mode with prefixes and NOLOOP: every write under a prefix is announced,
// the keys of one write grouped per prefix, except the NOLOOP client's own writes.
func TestClientTrackingBcast(t *testing.T) { compareTracking(t, bcastScript) }

// bcastScript is TestClientTrackingBcast's script, and TestClusterClientTracking's, whose keys' hash tags spread a
// write's keys over the masters or keep them in one slot.
var bcastScript = []trackStep{
	step("a", "CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "u:a", "PREFIX", "u:b", "REDIRECT", "$R", "NOLOOP"),
	step("a", "CLIENT", "TRACKINGINFO"),
	step("a", "CLIENT", "INFO"),
	step("w", "MSET", "u:a1{A}", "1", "u:b1{A}", "2", "u:c1{A}", "3", "u:a2{A}", "4"), // one slot: per prefix
	step("w", "SET", "u:a3{B}", "1"),
	step("w", "SET", "u:b3{C}", "1"),
	step("x", "SET", "u:b2{B}", "x"),
	step("a", "MSET", "u:a1{C}", "1", "u:b1{C}", "2"), // NOLOOP: not announced to the writer
	step("a", "SET", "u:a3{A}", "3"),
	step("w", "DEL", "u:a1{A}"),
	step("a", "CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "c:"),
	step("a", "CLIENT", "TRACKINGINFO"),
	step("w", "SET", "c:1{A}", "v"),
	step("x", "SET", "c:2{B}", "v"),
	step("w", "SET", "c:3{C}", "v"),
	step("w", "SET", "other{C}", "v"),
	step("w", "FLUSHDB"),
}

// TestClientTrackingBcastAll: BCAST without PREFIX tracks every key.
func TestClientTrackingBcastAll(t *testing.T) {
	compareTracking(t, []trackStep{
		step("a", "CLIENT", "TRACKING", "ON", "BCAST", "REDIRECT", "$R"),
		step("a", "CLIENT", "TRACKINGINFO"),
		step("w", "SET", "u:1", "1"),
		step("x", "SET", "c:1", "1"),
		step("a", "SET", "u:2", "1"),
	})
}

// TestClientTrackingOptInOut compares OPTIN and OPTOUT with CLIENT CACHING, which applies to the next command only
// (CLIENT commands keep it).
func TestClientTrackingOptInOut(t *testing.T) { compareTracking(t, optInOutScript) }

// optInOutScript is TestClientTrackingOptInOut's script, and TestClusterClientTracking's: its keys carry the hash
// tags that spread them over the masters of a cluster (cluster_tracking_test.go), which one Redis ignores.
var optInOutScript = []trackStep{
	step("a", "CLIENT", "TRACKING", "ON", "OPTIN", "REDIRECT", "$R"),
	step("a", "GET", "c:1{B}"), // not tracked
	step("a", "CLIENT", "CACHING", "yes"),
	step("a", "CLIENT", "TRACKINGINFO"),
	step("a", "GET", "c:2{A}"), // tracked
	step("a", "CLIENT", "TRACKINGINFO"),
	step("a", "GET", "u:3{B}"), // not tracked
	step("a", "CLIENT", "CACHING", "yes"),
	step("a", "MGET", "u:4{B}", "c:5{C}"),
	step("w", "MSET", "c:1{B}", "v", "c:2{A}", "v", "u:3{B}", "v", "u:4{B}", "v", "c:5{C}", "v"),
	step("a", "CLIENT", "CACHING", "no"),
	step("a", "CLIENT", "TRACKING", "ON", "OPTOUT"),
	step("a", "CLIENT", "TRACKING", "OFF"),
	step("a", "CLIENT", "TRACKING", "ON", "OPTOUT", "REDIRECT", "$R"),
	step("a", "GET", "c:1{B}"), // tracked
	step("a", "CLIENT", "CACHING", "no"),
	step("a", "CLIENT", "TRACKINGINFO"),
	step("a", "GET", "u:3{B}"), // not tracked
	step("a", "GET", "u:4{B}"), // tracked
	step("x", "MSET", "c:1{B}", "x", "u:3{B}", "x", "u:4{B}", "x"),
	step("a", "CLIENT", "CACHING", "yes"),
}

// TestClientTrackingNoloop: in the default mode a NOLOOP client is not told of its own writes, and is of others'.
func TestClientTrackingNoloop(t *testing.T) {
	compareTracking(t, []trackStep{
		step("a", "CLIENT", "TRACKING", "ON", "NOLOOP", "REDIRECT", "$R"),
		step("a", "MGET", "c:1", "u:1"),
		step("a", "MSET", "c:1", "a", "u:1", "a"),
		step("a", "MGET", "c:1", "u:1"),
		step("w", "MSET", "c:1", "w", "u:1", "w"),
	})
}

// TestClientTrackingErrors compares every option error and reply of CLIENT TRACKING, CACHING, GETREDIR and
// TRACKINGINFO with Redis's.
func TestClientTrackingErrors(t *testing.T) {
	compareTracking(t, []trackStep{
		step("a", "CLIENT", "CACHING", "yes"),
		step("a", "CLIENT", "GETREDIR"),
		step("a", "CLIENT", "TRACKINGINFO"),
		step("a", "CLIENT", "TRACKING"),
		step("a", "CLIENT", "TRACKING", "MAYBE"),
		step("a", "CLIENT", "TRACKING", "ON", "FOO"),
		step("a", "CLIENT", "TRACKING", "ON", "REDIRECT"),
		step("a", "CLIENT", "TRACKING", "ON", "REDIRECT", "abc"),
		step("a", "CLIENT", "TRACKING", "ON", "REDIRECT", "987654"),
		step("a", "CLIENT", "TRACKING", "ON", "REDIRECT", "$R", "REDIRECT", "$R"),
		step("a", "CLIENT", "TRACKING", "ON", "PREFIX", "a"),
		step("a", "CLIENT", "TRACKING", "ON", "OPTIN", "OPTOUT"),
		step("a", "CLIENT", "TRACKING", "ON", "BCAST", "OPTIN"),
		step("a", "CLIENT", "TRACKING", "ON", "BCAST", "OPTOUT"),
		step("a", "CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "ab", "PREFIX", "a"),
		step("a", "CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "a", "PREFIX", "a"),
		step("a", "CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "a", "PREFIX", ""),
		step("a", "CLIENT", "TRACKING", "MAYBE", "BCAST"),
		step("a", "CLIENT", "TRACKING", "OFF", "BCAST", "PREFIX", "x"),
		step("a", "CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "a"),
		step("a", "CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "ab"),
		step("a", "CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "a"),
		step("a", "CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "b", "NOLOOP"),
		step("a", "CLIENT", "TRACKINGINFO"),
		step("a", "CLIENT", "TRACKING", "ON"),
		step("a", "CLIENT", "CACHING", "yes"),
		step("a", "CLIENT", "CACHING", "no"),
		step("a", "CLIENT", "CACHING", "maybe"),
		step("a", "CLIENT", "TRACKING", "ON", "BCAST"),
		step("a", "CLIENT", "TRACKINGINFO"),
		step("a", "CLIENT", "TRACKING", "OFF"),
		step("a", "CLIENT", "TRACKING", "ON", "OPTIN"),
		step("a", "CLIENT", "TRACKING", "ON", "OPTOUT"),
		step("a", "CLIENT", "CACHING", "no"),
		step("a", "CLIENT", "TRACKING", "ON", "NOLOOP", "NOLOOP"),
		step("a", "CLIENT", "TRACKINGINFO"),
		step("a", "RESET"),
		step("a", "CLIENT", "TRACKINGINFO"),
		step("a", "CLIENT", "GETREDIR"),
	})
}

// TestClientTrackingBrokenRedirect: once the redirect target has left, the next invalidation marks the redirect
// broken (CLIENT TRACKINGINFO), as in Redis; GETREDIR still names it.
func TestClientTrackingBrokenRedirect(t *testing.T) {
	compareTracking(t, []trackStep{
		step("a", "CLIENT", "INFO"),
		step("a", "CLIENT", "TRACKING", "ON", "REDIRECT", "$R"),
		step("a", "CLIENT", "INFO"),
		step("a", "GET", "u:1"),
		step("a", "GET", "c:1"),
		step("r", "close"),
		step("a", "CLIENT", "TRACKINGINFO"),
		step("w", "SET", "u:1", "v"),
		step("a", "CLIENT", "TRACKINGINFO"),
		step("a", "CLIENT", "INFO"),
		step("a", "CLIENT", "GETREDIR"),
		step("a", "CLIENT", "TRACKING", "ON"),
		step("a", "CLIENT", "TRACKINGINFO"),
	})
}

// TestClientTrackingSwapdb: Redis announces nothing for SWAPDB; featcache, which detects it, sends the null
// invalidation to its tracking clients, through it or by another client of Redis.
func TestClientTrackingSwapdb(t *testing.T) {
	p := startProxy(t, trackingTestConfig)
	r := p.dial()
	rid := strings.TrimSuffix(strings.TrimPrefix(string(r.Do("CLIENT", "ID")), ":"), "\r\n")
	r.Do("SUBSCRIBE", "__redis__:invalidate")
	a := p.dial()
	if got := string(a.Do("CLIENT", "TRACKING", "ON", "REDIRECT", rid)); got != "+OK\r\n" {
		t.Fatalf("CLIENT TRACKING: got %q", got)
	}
	for _, swap := range []func(){
		func() { a.Do("SWAPDB", "0", "1") },
		func() { p.redis.Do("SWAPDB", "0", "1") },
	} {
		swap()
		f, err := r.ReadTimeout(5 * time.Second)
		if want := string(invalidateNull); err != nil || string(f) != want {
			t.Fatalf("after SWAPDB: got %q, %v; want %q", f, err, want)
		}
		// Featcache's own SWAPDB is seen by the check too: a second null at most.
		r.ReadTimeout(300 * time.Millisecond)
	}
}

// redirected connects a target subscribed to __redis__:invalidate and a client tracking with opts redirected to
// it.
func redirected(t *testing.T, p *testProxy, opts ...string) (target, client *redistest.Conn) {
	t.Helper()
	target = p.dial()
	rid := strings.TrimSuffix(strings.TrimPrefix(string(target.Do("CLIENT", "ID")), ":"), "\r\n")
	target.Do("SUBSCRIBE", "__redis__:invalidate")
	client = p.dial()
	args := append([]string{"CLIENT", "TRACKING", "ON", "REDIRECT", rid}, opts...)
	if got := string(client.Do(args...)); got != "+OK\r\n" {
		t.Fatalf("%q: got %q", args, got)
	}
	return target, client
}

// invalidation is the message a RESP2 redirect target receives for keys.
func invalidation(keys ...string) string {
	b := resp.AppendArray(append([]byte(nil), invalidateMessage...), len(keys))
	for _, k := range keys {
		b = resp.AppendBulkString(b, k)
	}
	return string(b)
}

// TestClientTrackingStream: the keyspace stream is open while some client tracks, and only then.
func TestClientTrackingStream(t *testing.T) {
	p := startProxy(t, trackingTestConfig)
	if n := len(trackingConns(p.redis)); n != 1 {
		t.Fatalf("tracking connections before any client tracks: %d; want 1", n)
	}
	_, a := redirected(t, p)
	if n := len(trackingConns(p.redis)); n != 2 {
		t.Fatalf("tracking connections once a client tracks: %d; want 2 (enable waits for the stream)", n)
	}
	b := p.dial()
	b.Do("CLIENT", "TRACKING", "ON", "BCAST")
	a.Do("CLIENT", "TRACKING", "OFF")
	if n := len(trackingConns(p.redis)); n != 2 {
		t.Fatalf("tracking connections while one client still tracks: %d; want 2", n)
	}
	b.Close()
	redistest.Eventually(t, 5*time.Second, "the keyspace stream closed with the last tracking client", func() bool {
		return len(trackingConns(p.redis)) == 1
	})
}

// TestClientTrackingLoss: when featcache's tracking connections are lost, its tracking clients get the null
// invalidation, as Redis's clients flush when their connection drops; once they are back, tracking goes on.
func TestClientTrackingLoss(t *testing.T) {
	p := startProxy(t, trackingTestConfig)
	r, a := redirected(t, p)
	a.Do("MGET", "c:1", "u:1")
	killConns(p.redis, upstreamConns(p.redis, "featcache-tracking"))
	if f, err := r.ReadTimeout(5 * time.Second); err != nil || string(f) != string(invalidateNull) {
		t.Fatalf("after the tracking connections were killed: got %q, %v; want the null invalidation", f, err)
	}
	redistest.Eventually(t, 10*time.Second, "tracking back", func() bool { return len(trackingConns(p.redis)) == 2 })
	// Nulls for the other loss and the returns, then nothing but what the writes below announce.
	skipNullInvalidations(t, r, 300*time.Millisecond)
	a.Do("MGET", "c:1", "u:1")
	p.redis.Do("SET", "u:1", "x")
	p.redis.Do("SET", "c:1", "x")
	for _, want := range []string{invalidation("u:1"), invalidation("c:1")} {
		f, err := r.ReadTimeout(5 * time.Second)
		if err != nil || string(f) != want {
			t.Fatalf("got %q, %v; want %q", f, err, want)
		}
	}
}

// skipNullInvalidations reads r's null invalidations (what a tracking loss, its end or a switch of primary sends)
// until none comes for quiet or the connection ends; any other frame fails the test.
func skipNullInvalidations(t *testing.T, r *redistest.Conn, quiet time.Duration) {
	t.Helper()
	for {
		f, err := r.ReadTimeout(quiet)
		if err != nil {
			return
		}
		if string(f) != string(invalidateNull) {
			t.Fatalf("got %q; want only null invalidations", f)
		}
	}
}

// TestClientTrackingMaxKeys: past limits.max_tracked_keys, keys are invalidated (and forgotten) at random, as
// Redis does past tracking-table-max-keys; each key read is invalidated once in all.
func TestClientTrackingMaxKeys(t *testing.T) {
	p := startProxy(t, trackingTestConfig+"limits:\n  max_tracked_keys: 3\n")
	keys := []string{"c:1", "c:2", "u:1", "u:2", "u:3"}
	for _, k := range keys {
		p.redis.Do("SET", k, "v") // DEL announces only keys that exist
	}
	p.settle() // their invalidations are applied before any client tracks
	r, a := redirected(t, p)
	a.Do(append([]string{"MGET"}, keys...)...)
	var got []string
	for range 2 {
		f, err := r.ReadTimeout(5 * time.Second)
		if err != nil {
			t.Fatalf("evictions: %v", err)
		}
		got = append(got, string(f))
	}
	p.redis.Do(append([]string{"DEL"}, keys...)...)
	for range 3 {
		f, err := r.ReadTimeout(5 * time.Second)
		if err != nil {
			t.Fatalf("invalidations after DEL: %v (so far %q)", err, got)
		}
		got = append(got, string(f))
	}
	var want []string
	for _, k := range keys {
		want = append(want, invalidation(k))
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("got %q; want each key once: %q", got, want)
	}
}

// TestClientTrackingRefused: without upstream tracking (TTL-only) featcache receives no invalidation, and refuses
// CLIENT TRACKING, saying why.
func TestClientTrackingRefused(t *testing.T) {
	p := startProxy(t, ttlOnlyConfig)
	c := p.dial()
	expectDo(t, c, "-ERR 'client|tracking' is not supported by featcache with upstream.tracking off: it has no invalidation stream to serve it\r\n",
		"CLIENT", "TRACKING", "ON")
	expectDo(t, c, "*6\r\n$5\r\nflags\r\n*1\r\n$3\r\noff\r\n$8\r\nredirect\r\n:-1\r\n$8\r\nprefixes\r\n*0\r\n",
		"CLIENT", "TRACKINGINFO")
}

// TestClientTrackingBetweenFrames: invalidations written to a redirect target that also receives Pub/Sub messages
// never cut into one of them: every frame the target reads is whole.
func TestClientTrackingBetweenFrames(t *testing.T) {
	p := startProxy(t, trackingTestConfig)
	r, _ := redirected(t, p, "BCAST", "PREFIX", "u:")
	r.Do("SUBSCRIBE", "ch")
	payload := strings.Repeat("p", 100<<10)
	const n = 50
	done := make(chan struct{})
	go func() {
		defer close(done)
		pub := redistest.Dial(t, p.redis.Addr())
		defer pub.Close()
		for range n {
			pub.Do("PUBLISH", "ch", payload)
		}
	}()
	w := p.dial()
	for i := range n {
		w.Do("SET", "u:"+strconv.Itoa(i), "v")
	}
	<-done
	messages, invalidations := 0, 0
	for messages < n || invalidations < n {
		f, err := r.ReadTimeout(5 * time.Second)
		if err != nil {
			t.Fatalf("after %d messages and %d invalidations: %v", messages, invalidations, err)
		}
		switch {
		case strings.HasPrefix(string(f), "*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n") && strings.Contains(string(f), payload):
			messages++
		case strings.HasPrefix(string(f), string(invalidateMessage)):
			invalidations++
		default:
			t.Fatalf("a frame neither a message nor an invalidation: %.200q", f)
		}
	}
}

// TestClientTrackingOutputLimit: a redirect target that leaves more than limits.max_output_bytes of invalidations
// unread is disconnected, as Redis disconnects a client over its output buffer limit; the streams go on.
func TestClientTrackingOutputLimit(t *testing.T) {
	p := startProxy(t, trackingTestConfig+"limits:\n  max_output_bytes: 1MB\n")
	_, _ = redirected(t, p, "BCAST", "PREFIX", "u:")
	key := "u:" + strings.Repeat("k", 60<<10)
	x := redistest.Dial(t, p.redis.Addr())
	redistest.Eventually(t, 30*time.Second, "the target disconnected", func() bool {
		for range 50 {
			x.Do("SET", key, "v")
		}
		return p.srv.stats.OutputLimits.Load() > 0
	})
	// What Redis announced of the writes above is delivered (to no one: the target is gone) before the next
	// target comes, which would otherwise get all of it at once.
	p.srv.ctrack.mu.Lock()
	stream := p.srv.ctrack.stream
	p.srv.ctrack.mu.Unlock()
	if err := stream.Barrier(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Tracking goes on for the others.
	r, _ := redirected(t, p, "BCAST", "PREFIX", "u:")
	x.Do("SET", "u:after", "v")
	for {
		f, err := r.ReadTimeout(5 * time.Second)
		if err != nil {
			t.Fatalf("the invalidation of u:after: %v", err)
		}
		if string(f) == invalidation("u:after") {
			break
		}
		if string(f) != invalidation(key) { // the writes above that the stream had not delivered yet
			t.Fatalf("got %.100q; want the invalidation of u:after", f)
		}
	}
}

// TestClientTrackingStreamPrefixes: while only BCAST clients track, the keyspace stream covers their prefixes
// alone (Redis sends featcache nothing else); a client in the default mode widens it to every key. Redis's INFO
// counts the prefixes of all tracking connections: featcache's policies' "c:" and the stream's.
func TestClientTrackingStreamPrefixes(t *testing.T) {
	p := startProxy(t, trackingTestConfig)
	prefixes := func() int64 { return infoField(string(p.redis.Do("INFO", "stats")), "tracking_total_prefixes") }
	expect := func(want int64, what string) {
		t.Helper()
		redistest.Eventually(t, 5*time.Second, what, func() bool { return prefixes() == want })
	}
	r, a := redirected(t, p, "BCAST", "PREFIX", "u:a")
	expect(2, "the stream over u:a")
	b := p.dial()
	b.Do("CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "u:b")
	expect(3, "the stream over u:a and u:b")
	x := redistest.Dial(t, p.redis.Addr())
	x.Do("MSET", "u:a1", "1", "u:b1", "1", "other", "1")
	if f, err := r.ReadTimeout(5 * time.Second); err != nil || string(f) != invalidation("u:a1") {
		t.Fatalf("got %q, %v; want the invalidation of u:a1", f, err)
	}
	d := p.dial()
	d.Do("CLIENT", "TRACKING", "ON")
	expect(2, "the stream over every key")
	a.Do("CLIENT", "TRACKING", "OFF")
	b.Close()
	d.Close()
	expect(1, "the stream closed with the last tracking client")
}

// TestClientTrackingWriteBeforeReply: a write through featcache has its invalidations queued for the tracking
// clients before its reply (INFO featcache counts them as queued when the writer reads the reply), whichever
// stream covers the key, for a script's undeclared keys too and for FLUSHALL; a NOLOOP writer's own are not.
func TestClientTrackingWriteBeforeReply(t *testing.T) {
	p := startProxy(t, trackingTestConfig)
	_, a := redirected(t, p)
	_, n := redirected(t, p, "NOLOOP")
	w := p.dial()
	queued := func() int64 {
		return infoField(string(w.Do("INFO", "featcache")), "featcache_tracking_invalidations")
	}
	for _, tc := range []struct {
		name   string
		read   []string
		writer *redistest.Conn
		write  []string
		want   int64
	}{
		{"cached key", []string{"GET", "c:1"}, w, []string{"SET", "c:1", "v"}, 2},
		{"uncached key", []string{"GET", "u:1"}, w, []string{"SET", "u:1", "v"}, 2},
		{"undeclared key of a script", []string{"GET", "u:2"}, w,
			[]string{"EVAL", "return redis.call('SET', 'u:2', 'v')", "0"}, 2},
		{"NOLOOP writer", []string{"GET", "c:2"}, n, []string{"SET", "c:2", "v"}, 1},
		{"FLUSHALL", []string{"GET", "c:3"}, w, []string{"FLUSHALL"}, 2},
	} {
		a.Do(tc.read...)
		n.Do(tc.read...)
		before := queued()
		tc.writer.Do(tc.write...)
		if got := queued() - before; got != tc.want {
			t.Errorf("%s: %d invalidations queued by the write's reply; want %d", tc.name, got, tc.want)
		}
	}
}

// TestClientTrackingFailover: when featcache follows a failover (Sentinel), its tracking clients get the null
// invalidation, the keyspace stream moves to the new primary with the policies' one, and invalidations of writes
// on the new primary reach the clients.
func TestClientTrackingFailover(t *testing.T) {
	set := redistest.StartSentinelSet(t, "mymaster", 1, 1, "")
	newP := set.Replicas[0]
	p := startProxyOn(t, set.Primary, `
upstream:
  sentinel: {master_set: mymaster, addresses: ["`+set.Sentinels[0].Addr()+`"]}
`+trackingTestConfig)
	r, a := redirected(t, p)
	a.Do("MGET", "c:1", "u:1")
	set.Failover()
	// The target's subscription was on the old primary: its connection closes, as a subscriber of Redis's would,
	// after the null invalidation or before it.
	skipNullInvalidations(t, r, 30*time.Second)
	prefixes := func() int64 { return infoField(string(newP.Do("INFO", "stats")), "tracking_total_prefixes") }
	redistest.Eventually(t, 30*time.Second, "both tracking connections on the new primary", func() bool {
		return prefixes() == 2 && p.up.Addr() == newP.Addr()
	})
	// The application subscribes again and redirects to its new target.
	r = p.dial()
	rid := strings.TrimSuffix(strings.TrimPrefix(string(r.Do("CLIENT", "ID")), ":"), "\r\n")
	r.Do("SUBSCRIBE", "__redis__:invalidate")
	expectDo(t, a, "+OK\r\n", "CLIENT", "TRACKING", "ON", "REDIRECT", rid)
	skipNullInvalidations(t, r, 300*time.Millisecond) // the nulls of the switch
	a.Do("MGET", "c:1", "u:1")
	newP.Do("MSET", "c:1", "x", "u:1", "x")
	var got []string
	for range 2 {
		f, err := r.ReadTimeout(5 * time.Second)
		if err != nil {
			t.Fatalf("invalidations from the new primary: %v (so far %q)", err, got)
		}
		got = append(got, string(f))
	}
	slices.Sort(got)
	if want := []string{invalidation("c:1"), invalidation("u:1")}; !slices.Equal(got, want) {
		t.Errorf("got %q; want %q", got, want)
	}
}

// TestClientTrackingSnapshots: a client reads the logical keys of a snapshot policy while featcache reads their
// physical keys: a change of the physical key invalidates the logical one, and a flip of the pointer flushes the
// tracking clients (every logical key may now read another version).
func TestClientTrackingSnapshots(t *testing.T) {
	p := startSnapshots(t, 4)
	r, a := redirected(t, p)
	if got := string(a.Do("GET", "credit:3")); got != bulk("v7-3") {
		t.Fatalf("GET credit:3: %q", got)
	}
	p.redis.Do("SET", "credit:3:v7", "changed")
	if f, err := r.ReadTimeout(5 * time.Second); err != nil || string(f) != invalidation("credit:3") {
		t.Fatalf("after a write of credit:3:v7: got %q, %v; want the invalidation of credit:3", f, err)
	}
	a.Do("GET", "credit:2")
	p.redis.Do("SET", "fs:version:credit", "v8")
	if f, err := r.ReadTimeout(5 * time.Second); err != nil || string(f) != string(invalidateNull) {
		t.Fatalf("after the pointer's flip: got %q, %v; want the null invalidation", f, err)
	}
}

// TestClientTrackingNoloopSessions: a NOLOOP client is not told of its own writes in a transaction, a WATCH session
// or a blocking command either, and is of others' after them.
func TestClientTrackingNoloopSessions(t *testing.T) {
	compareTracking(t, []trackStep{
		step("a", "CLIENT", "TRACKING", "ON", "NOLOOP", "REDIRECT", "$R"),
		step("a", "MGET", "c:1", "u:1", "u:l"),
		step("a", "MULTI"),
		step("a", "SET", "c:1", "a"),
		step("a", "SET", "u:1", "a"),
		step("a", "EXEC"),
		step("a", "MGET", "c:1", "u:1"),
		step("a", "WATCH", "c:1"),
		step("a", "SET", "c:1", "b"),
		step("a", "UNWATCH"),
		step("w", "RPUSH", "u:l0", "x"),
		step("a", "BLMOVE", "u:l0", "u:l", "LEFT", "RIGHT", "1"),
		step("w", "MSET", "c:1", "w", "u:1", "w"),
		step("w", "RPUSH", "u:l", "y"),
	})
}

// BenchmarkTrackingTable measures what the default mode's table holds per tracked key: one client remembers b.N
// distinct keys of about 12 bytes; B/key is the heap's growth per key after a collection.
func BenchmarkTrackingTable(b *testing.B) {
	cfg := config.Default()
	cfg.Limits.MaxTrackedKeys = max(b.N, 1)
	t := newClientTracking(&Server{opt: Options{Config: cfg}})
	keys := make([][]byte, b.N)
	for i := range keys {
		keys[i] = []byte("feat:" + strconv.Itoa(1000000+i))
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	for i := range keys {
		t.remember(1, keys[i:i+1])
	}
	b.StopTimer()
	keys = nil
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/float64(b.N), "B/key")
	runtime.KeepAlive(t)
}
