package proxy

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"featcache/internal/redistest"
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
// redisAddr. When want is nil, the invalidations of each step are read until the target has been quiet for
// quiet; otherwise exactly as many as want says are read (waiting up to 5s for each), and at the end none more
// may come within quiet.
func runTrackingScript(t *testing.T, addr, redisAddr string, steps []trackStep, want []trackObservation,
	quiet time.Duration) []trackObservation {
	t.Helper()
	r := redistest.Dial(t, addr)
	defer r.Close()
	rid := strings.TrimSuffix(strings.TrimPrefix(string(r.Do("CLIENT", "ID")), ":"), "\r\n")
	if got := string(r.Do("SUBSCRIBE", "__redis__:invalidate")); !strings.HasPrefix(got, "*3\r\n$9\r\nsubscribe") {
		t.Fatalf("SUBSCRIBE: got %q", got)
	}
	a := redistest.Dial(t, addr)
	defer a.Close()
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
		var reply []byte
		switch st.who {
		case "a":
			reply = a.Do(args...)
		case "w":
			reply = w.Do(args...)
		case "x":
			reply = x.Do(args...)
		case "r":
			r.Close()
			rOpen = false
		}
		obs := trackObservation{reply: string(reply)}
		if len(args) > 1 && (strings.EqualFold(args[1], "getredir") || strings.EqualFold(args[1], "trackinginfo")) {
			// The target's id differs between Redis and featcache: these replies name it as $R.
			obs.reply = strings.ReplaceAll(obs.reply, ":"+rid+"\r\n", ":$R\r\n")
		}
		if rOpen {
			if want == nil {
				for {
					f, err := r.ReadTimeout(quiet)
					if err != nil {
						break
					}
					obs.messages = append(obs.messages, string(f))
				}
			} else {
				for range want[i].messages {
					f, err := r.ReadTimeout(5 * time.Second)
					if err != nil {
						t.Fatalf("step %d %q: invalidation not received: %v (so far %q)", i, st.args, err, obs.messages)
					}
					obs.messages = append(obs.messages, string(f))
				}
			}
		}
		slices.Sort(obs.messages)
		seen = append(seen, obs)
	}
	if want != nil && rOpen {
		if f, err := r.ReadTimeout(quiet); err == nil {
			t.Errorf("an invalidation more than Redis sends: %q", f)
		}
	}
	return seen
}

// compareTracking runs steps straight against Redis, then through featcache, and compares every reply and every
// invalidation.
func compareTracking(t *testing.T, steps []trackStep) {
	t.Helper()
	p := startProxy(t, trackingTestConfig)
	direct := redistest.Start(t)
	want := runTrackingScript(t, direct.Addr(), direct.Addr(), steps, nil, 150*time.Millisecond)
	got := runTrackingScript(t, p.addr, p.redis.Addr(), steps, want, 300*time.Millisecond)
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
func TestClientTrackingDefaultMode(t *testing.T) {
	compareTracking(t, []trackStep{
		step("w", "MSET", "c:1", "v", "c:2", "v", "u:1", "v", "u:2", "v"),
		step("w", "HSET", "c:h", "f", "v"),
		step("a", "CLIENT", "TRACKING", "ON", "REDIRECT", "$R"),
		step("a", "CLIENT", "GETREDIR"),
		step("a", "CLIENT", "TRACKINGINFO"),
		step("a", "GET", "c:1"),
		step("a", "GET", "c:1"), // from featcache's memory the second time
		step("a", "MGET", "c:2", "u:1"),
		step("a", "HGET", "c:h", "f"),
		step("a", "STRLEN", "u:2"),
		step("w", "SET", "c:1", "w"),
		step("w", "SET", "c:1", "w2"), // forgotten once invalidated: nothing
		step("x", "SET", "u:1", "x"),
		step("w", "HSET", "c:h", "f", "w"),
		step("w", "MSET", "c:2", "w", "u:2", "w"),
		step("a", "GET", "u:1"),
		step("a", "SET", "u:1", "self"), // the client's own write
		step("a", "GET", "c:1"),
		step("x", "DEL", "c:1"),
		step("a", "GET", "c:1"),
		step("w", "FLUSHALL"),
		step("w", "SET", "c:1", "after"), // the flush emptied the table
		step("a", "CLIENT", "TRACKING", "OFF"),
		step("a", "CLIENT", "TRACKINGINFO"),
		step("a", "CLIENT", "GETREDIR"),
	})
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
func TestClientTrackingBcast(t *testing.T) {
	compareTracking(t, []trackStep{
		step("a", "CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "u:a", "PREFIX", "u:b", "REDIRECT", "$R", "NOLOOP"),
		step("a", "CLIENT", "TRACKINGINFO"),
		step("w", "MSET", "u:a1", "1", "u:b1", "2", "u:c1", "3", "u:a2", "4"),
		step("x", "SET", "u:b2", "x"),
		step("a", "MSET", "u:a1", "1", "u:b1", "2"), // NOLOOP: not announced to the writer
		step("a", "SET", "u:a3", "3"),
		step("w", "DEL", "u:a1"),
		step("a", "CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "c:"),
		step("a", "CLIENT", "TRACKINGINFO"),
		step("w", "SET", "c:1", "v"),
		step("x", "SET", "c:2", "v"),
		step("w", "SET", "other", "v"),
		step("w", "FLUSHDB"),
	})
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
func TestClientTrackingOptInOut(t *testing.T) {
	compareTracking(t, []trackStep{
		step("a", "CLIENT", "TRACKING", "ON", "OPTIN", "REDIRECT", "$R"),
		step("a", "GET", "c:1"), // not tracked
		step("a", "CLIENT", "CACHING", "yes"),
		step("a", "CLIENT", "TRACKINGINFO"),
		step("a", "GET", "c:2"), // tracked
		step("a", "CLIENT", "TRACKINGINFO"),
		step("a", "GET", "u:3"), // not tracked
		step("a", "CLIENT", "CACHING", "yes"),
		step("a", "MGET", "u:4", "c:5"),
		step("w", "MSET", "c:1", "v", "c:2", "v", "u:3", "v", "u:4", "v", "c:5", "v"),
		step("a", "CLIENT", "CACHING", "no"),
		step("a", "CLIENT", "TRACKING", "ON", "OPTOUT"),
		step("a", "CLIENT", "TRACKING", "OFF"),
		step("a", "CLIENT", "TRACKING", "ON", "OPTOUT", "REDIRECT", "$R"),
		step("a", "GET", "c:1"), // tracked
		step("a", "CLIENT", "CACHING", "no"),
		step("a", "CLIENT", "TRACKINGINFO"),
		step("a", "GET", "u:3"), // not tracked
		step("a", "GET", "u:4"), // tracked
		step("x", "MSET", "c:1", "x", "u:3", "x", "u:4", "x"),
		step("a", "CLIENT", "CACHING", "yes"),
	})
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
		step("a", "CLIENT", "TRACKING", "ON", "REDIRECT", "$R"),
		step("a", "GET", "u:1"),
		step("a", "GET", "c:1"),
		step("r", "close"),
		step("a", "CLIENT", "TRACKINGINFO"),
		step("w", "SET", "u:1", "v"),
		step("a", "CLIENT", "TRACKINGINFO"),
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
