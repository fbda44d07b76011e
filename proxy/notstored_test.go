package proxy

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"featcache/internal/redistest"
	"featcache/localcache"
)

// notStoredConfig: a 1MB local tier, whose largest entry is 1MB/1024 - 24 = 1000 bytes (key, 42-byte header and
// value), every key cached without negative_ttl, and an upstream timeout long enough for the reads the tests hold
// in flight by stopping Redis.
const notStoredConfig = `
upstream: {timeout: 10s}
local: {max_memory: 1MB}
policies:
  - {name: default, prefix: "", soft_ttl: 1h, hard_ttl: 2h, jitter: 0}
`

// notStored returns featcache_not_stored_total by reason, every reason of the label set included.
func notStored(t *testing.T, base string) map[string]float64 {
	t.Helper()
	m := scrapeMetrics(t, base)
	out := make(map[string]float64, len(localcache.Reasons))
	for _, r := range localcache.Reasons {
		out[r.String()] = m.value(t, "featcache_not_stored_total", "reason", r.String())
	}
	return out
}

// expectNotStored runs read and checks that featcache_not_stored_total moved by one for reason and by nothing for
// every other reason (reason "": nothing moved), and that CACHE EXPLAIN key names the reason.
func expectNotStored(t *testing.T, p *testProxy, base, reason, key string, read func()) {
	t.Helper()
	before := notStored(t, base)
	read()
	after := notStored(t, base)
	for r, n := range after {
		want := 0.0
		if r == reason {
			want = 1
		}
		if got := n - before[r]; got != want {
			t.Errorf("featcache_not_stored_total{reason=%q} moved by %v; want %v", r, got, want)
		}
	}
	explain := p.do("CACHE", "EXPLAIN", key)
	if reason == "" {
		if strings.Contains(explain, "not_stored:") {
			t.Errorf("CACHE EXPLAIN of a stored key names a reason:\n%s", explain)
		}
		return
	}
	if line := "+not_stored:" + reason; !strings.Contains(explain, line+" ") && !strings.Contains(explain, line+"\r\n") {
		t.Errorf("CACHE EXPLAIN does not say %q:\n%.300s", "not_stored:"+reason, explain)
	}
}

// sameAsRedis sends args straight to Redis and through featcache and fails unless the replies are the same bytes.
func sameAsRedis(t *testing.T, p *testProxy, args ...string) string {
	t.Helper()
	want := string(p.redis.Do(args...))
	if got := p.do(args...); got != want {
		t.Fatalf("%.40q through featcache: %.200q; Redis answers %.200q", args, got, want)
	}
	return want
}

// TestNotStoredSimpleReasons: values featcache reads and may not store (a value over the tier's largest entry, a
// key over 65535 bytes, a key of another type, a missing key without negative_ttl) are answered as Redis answers,
// counted once each under their reason, and named by CACHE EXPLAIN; a value that is stored moves no counter.
func TestNotStoredSimpleReasons(t *testing.T) {
	p := startProxy(t, notStoredConfig)
	base := p.adminURL()
	if got := p.cache.MaxEntry(); got != 1000 {
		t.Fatalf("MaxEntry of a 1MB tier = %d; want 1000", got)
	}
	longKey := strings.Repeat("k", localcache.MaxKeyLen+1)
	p.redis.Do("SET", "ok:1", "v")
	p.redis.Do("HSET", "ok:h", "f", "v")
	p.redis.Do("SET", "big:1", strings.Repeat("x", 1000-42-len("big:1")+1)) // one byte over the bound
	p.redis.Do("SET", "big:fits", strings.Repeat("x", 1000-42-len("big:fits")))
	p.redis.Do("HSET", "big:h", "f", strings.Repeat("x", 1000))
	p.redis.Do("SET", longKey, "v")
	p.redis.Do("RPUSH", "list:1", "a")
	p.redis.Do("SET", "str:1", "v")
	// TTLs Redis takes that a time.Duration of nanoseconds cannot hold (about 292 years).
	p.redis.Do("SET", "ok:far", "v", "EX", "9000000000000")
	p.redis.Do("HSET", "ok:farh", "f", "v")
	p.redis.Do("PEXPIREAT", "ok:farh", "9000000000000000")
	p.settle()

	cases := []struct {
		name, reason, key string
		read              []string
	}{
		{"stored value", "", "ok:1", []string{"GET", "ok:1"}},
		{"stored hash", "", "ok:h", []string{"HGET", "ok:h", "f"}},
		{"stored with a TTL past 292 years", "", "ok:far", []string{"GET", "ok:far"}},
		{"hash stored with a TTL past 292 years", "", "ok:farh", []string{"HGET", "ok:farh", "f"}},
		{"largest value stored", "", "big:fits", []string{"GET", "big:fits"}},
		{"too large", "too_large", "big:1", []string{"GET", "big:1"}},
		{"hash too large", "too_large", "big:h", []string{"HGETALL", "big:h"}},
		{"key too large", "key_too_large", longKey, []string{"GET", longKey}},
		{"wrong type", "wrong_type", "list:1", []string{"GET", "list:1"}},
		{"hash read of a string", "wrong_type", "str:1", []string{"HGET", "str:1", "f"}},
		{"missing key", "no_negative_ttl", "none:1", []string{"GET", "none:1"}},
		{"missing hash", "no_negative_ttl", "none:h", []string{"HGETALL", "none:h"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			expectNotStored(t, p, base, tc.reason, tc.key, func() { sameAsRedis(t, p, tc.read...) })
			// A value not stored is read from Redis again; one that is stored is not.
			want := string(p.redis.Do(tc.read...))
			reads := p.srv.stats.UpstreamReads.Load()
			if got := p.do(tc.read...); got != want {
				t.Fatalf("second read through featcache: %.200q; Redis answers %.200q", got, want)
			}
			if upstream := p.srv.stats.UpstreamReads.Load() - reads; (upstream > 0) != (tc.reason != "") {
				t.Errorf("%d upstream reads by the second read through featcache; want them only if not stored", upstream)
			}
		})
	}
	if explain := p.do("CACHE", "EXPLAIN", "big:1"); !strings.Contains(explain, " max_entry_bytes:1000\r\n") {
		t.Errorf("CACHE EXPLAIN of a value too large does not give the bound:\n%s", explain)
	}
}

// inFlight sends args through featcache on two connections while Redis is stopped, waits until the second read
// joined the first one's fill (so a fill of the key is in flight), runs during, resumes Redis and returns the
// replies of both, which must be the same.
func inFlight(t *testing.T, p *testProxy, during func(), args ...string) string {
	t.Helper()
	a, b := p.dial(), p.dial()
	defer a.Close()
	defer b.Close()
	joined := p.cache.Stats().FillsJoined
	p.redis.Pause()
	t.Cleanup(p.redis.Resume)
	if err := a.Send(args...); err != nil {
		t.Fatal(err)
	}
	if err := b.Send(args...); err != nil {
		t.Fatal(err)
	}
	redistest.Eventually(t, 5*time.Second, "a read joined the fill in flight", func() bool {
		return p.cache.Stats().FillsJoined > joined
	})
	during()
	p.redis.Resume()
	ra, err := a.ReadTimeout(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	rb, err := b.ReadTimeout(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if string(ra) != string(rb) {
		t.Fatalf("two reads of one fill answered %q and %q", ra, rb)
	}
	return string(ra)
}

// TestNotStoredExpiredInFlight: a value whose upstream expiry passes while its read is in flight is served (what
// Redis said when it read it) and not stored: counted once under expired.
func TestNotStoredExpiredInFlight(t *testing.T) {
	p := startProxy(t, notStoredConfig)
	base := p.adminURL()
	p.redis.Do("SET", "exp:1", "v", "PX", "60000")
	p.settle()
	expectNotStored(t, p, base, "expired", "exp:1", func() {
		// The key's PTTL, read once Redis resumes, is under a minute; the clock moves two while the read waits.
		if got := inFlight(t, p, func() { p.clock.Advance(2 * time.Minute) }, "GET", "exp:1"); got != "$1\r\nv\r\n" {
			t.Errorf("GET exp:1 = %q; want the value Redis held", got)
		}
	})
}

// TestNotStoredSuperseded: a read in flight while the tier is flushed (CACHE FLUSH) answers, and stores nothing:
// counted once under superseded.
func TestNotStoredSuperseded(t *testing.T) {
	p := startProxy(t, notStoredConfig)
	base := p.adminURL()
	p.redis.Do("SET", "sup:1", "v")
	p.settle()
	expectNotStored(t, p, base, "superseded", "sup:1", func() {
		if got := inFlight(t, p, func() { p.do("CACHE", "FLUSH") }, "GET", "sup:1"); got != "$1\r\nv\r\n" {
			t.Errorf("GET sup:1 = %q; want the value Redis held", got)
		}
	})
}

// TestNotStoredMGETOverlap: an MGET that arrives while another read's fill of one of its keys is in flight answers
// from its own transaction and stores none of its keys' values: the key whose fill it led counts once under
// mget_overlap (the other key is stored by the read that leads its fill).
func TestNotStoredMGETOverlap(t *testing.T) {
	p := startProxy(t, notStoredConfig)
	base := p.adminURL()
	p.redis.Do("SET", "m:1", "one")
	p.redis.Do("SET", "m:2", "two")
	p.settle()
	want := string(p.redis.Do("MGET", "m:1", "m:2"))
	expectNotStored(t, p, base, "mget_overlap", "m:2", func() {
		c := p.dial()
		defer c.Close()
		inFlight(t, p, func() {
			joined := p.cache.Stats().FillsJoined
			if err := c.Send("MGET", "m:1", "m:2"); err != nil {
				t.Fatal(err)
			}
			redistest.Eventually(t, 5*time.Second, "the MGET met the fill of m:1", func() bool {
				return p.cache.Stats().FillsJoined > joined
			})
		}, "GET", "m:1")
		if got, err := c.ReadTimeout(10 * time.Second); err != nil || string(got) != want {
			t.Errorf("MGET m:1 m:2 = %q, %v; Redis answers %q", got, err, want)
		}
	})
}

// TestNotStoredUntrusted: a read that starts while featcache's tracking connection is down (killed by another
// client of Redis) is answered and not stored under a policy that neither revalidates nor serves stale: counted
// once under untrusted.
func TestNotStoredUntrusted(t *testing.T) {
	p := startProxy(t, notStoredConfig)
	base := p.adminURL()
	p.redis.Do("SET", "u:1", "v")
	p.settle()
	id := mustTrackingID(t, p.redis)
	expectNotStored(t, p, base, "untrusted", "u:1", func() {
		// One write: Redis kills the tracking connection, then holds every client's commands (the reconnection's
		// included) for two seconds, so the GET below starts while tracking is down.
		d := redistest.Dial(t, p.redis.Addr())
		defer d.Close()
		pause := append(redistest.Encode("CLIENT", "KILL", "ID", id), redistest.Encode("CLIENT", "PAUSE", "2000", "ALL")...)
		if _, err := d.NetConn().Write(pause); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			if r, err := d.Read(); err != nil || !strings.HasPrefix(string(r), "+OK") && string(r) != ":1\r\n" {
				t.Fatalf("CLIENT KILL, CLIENT PAUSE: %q, %v", r, err)
			}
		}
		redistest.Eventually(t, 5*time.Second, "tracking lost", func() bool { return !p.cache.Trusted() })
		if got := p.do("GET", "u:1"); got != "$1\r\nv\r\n" {
			t.Errorf("GET u:1 = %q; want the value Redis held", got)
		}
	})
}

// TestNotStoredNotAdmitted: with an admission filter, a key read for the first time once the tier evicts is
// answered and not stored: counted once under not_admitted.
func TestNotStoredNotAdmitted(t *testing.T) {
	p := startProxy(t, `
local: {max_memory: 1MB, admission_threshold: 3}
policies:
  - {name: f, prefix: "f:", hard_ttl: 1h}
`)
	base := p.adminURL()
	p.redis.Do("SET", "f:new", "v")
	fillUntilEvicting(t, p)
	expectNotStored(t, p, base, "not_admitted", "f:new", func() { sameAsRedis(t, p, "GET", "f:new") })
}

// TestNotStoredTTLRefused: featcache's upstream user may not run PTTL (an ACL without +pttl). Every read is
// answered as Redis answers that user, nothing with a value is stored (a missing key, which needs no expiry, is),
// each value counts under ttl_refused rather than expired, CACHE EXPLAIN names it, and the log says why once, not
// once per read.
func TestNotStoredTTLRefused(t *testing.T) {
	redis := redistest.Start(t)
	if got := string(redis.Do("ACL", "SETUSER", "fc", "on", ">pw", "~*", "&*", "+@all", "-pttl")); got != "+OK\r\n" {
		t.Fatalf("ACL SETUSER: %q", got)
	}
	logs := &redistest.LogBuffer{}
	p := startProxyOn(t, redis, `
upstream: {username: fc, password: pw}
policies:
  - {name: default, prefix: "", soft_ttl: 1h, hard_ttl: 2h, negative_ttl: 1m, jitter: 0}
`, func(o *Options) { o.Logger = slog.New(slog.NewTextHandler(logs, nil)) })
	base := p.adminURL()
	asUser := redis.Dial() // a direct client of the same user: what featcache's clients must get
	if got := string(asUser.Do("AUTH", "fc", "pw")); got != "+OK\r\n" {
		t.Fatalf("AUTH: %q", got)
	}
	sameAsUser := func(args ...string) {
		t.Helper()
		if got, want := p.do(args...), string(asUser.Do(args...)); got != want {
			t.Fatalf("%q through featcache: %.200q; Redis answers the user %.200q", args, got, want)
		}
	}
	redis.Do("SET", "s:1", "v1")
	redis.Do("SET", "s:ttl", "v2", "EX", "100")
	redis.Do("HSET", "h:1", "f", "v", "g", "w")
	p.settle()
	for _, tc := range []struct {
		name, key string
		read      []string
	}{
		{"value", "s:1", []string{"GET", "s:1"}},
		{"value with a TTL", "s:ttl", []string{"GET", "s:ttl"}},
		{"MGET", "s:1", []string{"MGET", "s:1", "s:ttl"}},
		{"hash field", "h:1", []string{"HGET", "h:1", "f"}},
		{"hash fields", "h:1", []string{"HMGET", "h:1", "f", "g", "nope"}},
		{"whole hash", "h:1", []string{"HGETALL", "h:1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for i := 0; i < 2; i++ { // not stored: the second read goes to Redis too, and counts again
				before := notStored(t, base)
				reads := p.srv.stats.UpstreamReads.Load()
				sameAsUser(tc.read...)
				after := notStored(t, base)
				if p.srv.stats.UpstreamReads.Load() == reads {
					t.Fatalf("read %d of %q answered from memory", i+1, tc.read)
				}
				if got := after["ttl_refused"] - before["ttl_refused"]; got < 1 {
					t.Errorf("read %d: featcache_not_stored_total{reason=\"ttl_refused\"} moved by %v; want at least 1", i+1, got)
				}
				if got := after["expired"] - before["expired"]; got != 0 {
					t.Errorf("read %d: featcache_not_stored_total{reason=\"expired\"} moved by %v; want 0", i+1, got)
				}
			}
			if explain := p.do("CACHE", "EXPLAIN", tc.key); !strings.Contains(explain, "not_stored:ttl_refused") {
				t.Errorf("CACHE EXPLAIN %s does not say not_stored:ttl_refused:\n%.300s", tc.key, explain)
			}
		})
	}
	// A missing key needs no expiry: it is remembered (negative_ttl) and served from memory.
	sameAsUser("GET", "none:1")
	reads := p.srv.stats.UpstreamReads.Load()
	sameAsUser("GET", "none:1")
	if p.srv.stats.UpstreamReads.Load() != reads {
		t.Errorf("a missing key was read from Redis again: its nil was not remembered")
	}
	if n := strings.Count(logs.String(), "upstream refused PTTL"); n != 1 {
		t.Errorf("the log says %d times that PTTL is refused; want once:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "NOPERM") {
		t.Errorf("the log does not give Redis's refusal:\n%s", logs.String())
	}
}
