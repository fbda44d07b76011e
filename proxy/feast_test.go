package proxy

import (
	"encoding/binary"
	"math"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"featcache/feast"
	"featcache/internal/redistest"
)

// feastConfig is a Feast project with a fast-changing feature view (short TTLs) and a slow one whose rows expire
// by event time. Tracking is off so that only TTLs and event times decide, which the test controls with the
// injected clock.
const feastConfig = `
upstream: {tracking: false}
feast:
  project: fraud_detection
  soft_ttl: 1h
  hard_ttl: 1h
  feature_views:
    - name: txn_stats
      features: [count_1h, sum_1h]
      soft_ttl: 5s
      hard_ttl: 10s
      negative_ttl: 10s
      jitter: 0
    - name: user_profile
      features: [age, country]
      soft_ttl: 1h
      hard_ttl: 2h
      negative_ttl: 1h
      jitter: 0
      max_event_age: 24h
`

// feastDouble and feastInt64 serialize feast.types.Value protos: double_val is field 5 (fixed64), int64_val
// field 4 (varint), string_val field 2 (bytes).
func feastDouble(v float64) string {
	return string(binary.LittleEndian.AppendUint64([]byte{0x29}, math.Float64bits(v)))
}
func feastInt64(v int64) string { return string(binary.AppendUvarint([]byte{0x20}, uint64(v))) }
func feastStr(s string) string  { return string(append([]byte{0x12, byte(len(s))}, s...)) }

func feastKey(userID int64) string {
	return string(feast.AppendKey(nil, "fraud_detection", []string{"user_id"}, []feast.Value{feast.Int64(userID)}))
}

func fid(view, feature string) string { return string(feast.FieldID(view, feature)) }

// writeFeastRow writes one entity's rows as Feast's materialization does: HSET of the fields and the event time.
func writeFeastRow(t *testing.T, redis *redistest.Server, user int64, count int64, sum float64, age int64, country string, txnTS, profileTS time.Time) {
	t.Helper()
	redis.Do("HSET", feastKey(user),
		fid("txn_stats", "count_1h"), feastInt64(count),
		fid("txn_stats", "sum_1h"), feastDouble(sum),
		"_ts:txn_stats", string(feast.AppendTimestamp(nil, txnTS)),
		fid("user_profile", "age"), feastInt64(age),
		fid("user_profile", "country"), feastStr(country),
		"_ts:user_profile", string(feast.AppendTimestamp(nil, profileTS)),
	)
}

// feastRead sends Feast's read pattern for users through c: a pipeline of one HMGET per entity and feature view,
// the view's feature fields then its "_ts:" field, and returns the replies.
func feastRead(t *testing.T, c *redistest.Conn, users []int64) (txn, profile []string) {
	t.Helper()
	var payload []byte
	for _, u := range users {
		payload = append(payload, redistest.Encode("HMGET", feastKey(u), fid("txn_stats", "count_1h"), fid("txn_stats", "sum_1h"), "_ts:txn_stats")...)
		payload = append(payload, redistest.Encode("HMGET", feastKey(u), fid("user_profile", "age"), fid("user_profile", "country"), "_ts:user_profile")...)
	}
	if _, err := c.NetConn().Write(payload); err != nil {
		t.Fatal(err)
	}
	for range users {
		for _, out := range []*[]string{&txn, &profile} {
			r, err := c.Read()
			if err != nil {
				t.Fatal(err)
			}
			*out = append(*out, string(r))
		}
	}
	return txn, profile
}

func feastReply(elems ...string) string {
	out := "*" + strconv.Itoa(len(elems)) + "\r\n"
	for _, e := range elems {
		if e == "(nil)" {
			out += "$-1\r\n"
		} else {
			out += bulk(e)
		}
	}
	return out
}

func TestFeastLayout(t *testing.T) {
	p := startProxy(t, feastConfig)
	now := p.clock.Now()
	writeFeastRow(t, p.redis, 1, 7, 12.5, 41, "NL", now.Add(-time.Minute), now.Add(-time.Hour))
	writeFeastRow(t, p.redis, 2, 3, 1.25, 29, "FR", now.Add(-time.Minute), now.Add(-30*time.Hour)) // profile row too old
	c := p.dial()
	users := []int64{1, 2, 3} // user 3 has no row at all

	txnTS := func(u int64) string {
		return string(feast.AppendTimestamp(nil, now.Add(-time.Minute)))
	}
	wantTxn := []string{
		feastReply(feastInt64(7), feastDouble(12.5), txnTS(1)),
		feastReply(feastInt64(3), feastDouble(1.25), txnTS(2)),
		feastReply("(nil)", "(nil)", "(nil)"),
	}
	wantProfile := []string{
		feastReply(feastInt64(41), feastStr("NL"), string(feast.AppendTimestamp(nil, now.Add(-time.Hour)))),
		// The profile row is older than max_event_age: its features are missing, its event time is served.
		feastReply("(nil)", "(nil)", string(feast.AppendTimestamp(nil, now.Add(-30*time.Hour)))),
		feastReply("(nil)", "(nil)", "(nil)"),
	}
	for round := 0; round < 2; round++ { // the second round is answered from memory
		txn, profile := feastRead(t, c, users)
		for i := range users {
			if txn[i] != wantTxn[i] {
				t.Fatalf("round %d user %d txn_stats: got %q; want %q", round, users[i], txn[i], wantTxn[i])
			}
			if profile[i] != wantProfile[i] {
				t.Fatalf("round %d user %d user_profile: got %q; want %q", round, users[i], profile[i], wantProfile[i])
			}
		}
	}
	if n := p.redis.Calls("hmget"); n != 6 {
		t.Fatalf("%d upstream HMGETs for two rounds of 6; want 6 (the second round from memory)", n)
	}
	// Each HMGET is counted once, under its feature view's policy: a miss in the first round, a hit in the second,
	// with the age of what was served.
	m := scrapeMetrics(t, p.adminURL())
	for _, view := range []string{"feast:txn_stats", "feast:user_profile"} {
		for result, want := range map[string]float64{"miss": 3, "hit": 3} {
			if got := m.value(t, "featcache_requests_total", "policy", view, "result", result); got != want {
				t.Errorf("featcache_requests_total{policy=%q,result=%q} = %v; want %v", view, result, got, want)
			}
		}
		if got := m.value(t, "featcache_served_age_seconds", "policy", view); got != 3 {
			t.Errorf("featcache_served_age_seconds{policy=%q} counts %v values; want 3", view, got)
		}
	}
	// CACHE EXPLAIN shows the hash's fields and a field's feature-view policy; binary keys print quoted.
	explain := string(c.Do("CACHE", "EXPLAIN", feastKey(1), fid("txn_stats", "sum_1h")))
	for _, want := range []string{"policy:feast\r\n", "kind:hash", "field_policy:feast:txn_stats", "field_state:fresh", `key:"\x01\x00`} {
		if !strings.Contains(explain, want) {
			t.Fatalf("CACHE EXPLAIN of a Feast field lacks %q: %q", want, explain)
		}
	}
	if explain := string(c.Do("CACHE", "EXPLAIN", feastKey(1))); !strings.Contains(explain, "fields:6") {
		t.Fatalf("CACHE EXPLAIN of a Feast hash: %q", explain)
	}

	// Per-feature-view TTLs: 11s later txn_stats (hard 10s) is read again, user_profile (hard 2h) is not.
	p.clock.Advance(11 * time.Second)
	feastRead(t, c, users)
	if n := p.redis.Calls("hmget"); n != 9 {
		t.Fatalf("after 11s: %d upstream HMGETs; want 9 (txn_stats for three users again, user_profile not)", n)
	}

	// Event-age expiry moves with time: 24h later user 1's profile row is too old as well.
	p.clock.Advance(23 * time.Hour)
	_, profile := feastRead(t, c, []int64{1})
	if want := feastReply("(nil)", "(nil)", string(feast.AppendTimestamp(nil, now.Add(-time.Hour)))); profile[0] != want {
		t.Fatalf("user 1's profile past max_event_age: got %q; want %q", profile[0], want)
	}

	// Invalidation on HSET: a materialization through featcache updates what is served at once.
	now = p.clock.Now()
	c.Do("HSET", feastKey(1), fid("user_profile", "age"), feastInt64(42), "_ts:user_profile", string(feast.AppendTimestamp(nil, now)))
	_, profile = feastRead(t, c, []int64{1})
	if want := feastReply(feastInt64(42), feastStr("NL"), string(feast.AppendTimestamp(nil, now))); profile[0] != want {
		t.Fatalf("after HSET: got %q; want %q", profile[0], want)
	}
}

// TestFeastRedisPy reads Feast's layout with redis-py: a pipeline of HMGETs per entity, as Feast's online store
// does, through featcache and straight from Redis, and compares.
func TestFeastRedisPy(t *testing.T) {
	p := startProxy(t, `
feast:
  project: fraud_detection
  hard_ttl: 1h
  feature_views:
    - name: txn_stats
      features: [count_1h, sum_1h]
      hard_ttl: 10m
`)
	python := "/usr/bin/python3"
	if out, err := exec.Command(python, "-c", "import redis").CombinedOutput(); err != nil {
		t.Fatalf("%s with the redis module is needed (apt-get install -y python3-redis): %v %s", python, err, out)
	}
	_, port, _ := strings.Cut(p.addr, ":")
	_, upPort, _ := strings.Cut(p.redis.Addr(), ":")
	cmd := exec.Command(python, "-B", "testdata/redispy/feast.py", "127.0.0.1", port, upPort)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("feast.py: %v\n%s", err, out)
	}
	if hits := p.srv.Stats().Hits.Load(); hits == 0 {
		t.Fatalf("redis-py's Feast reads were never answered from memory\n%s", out)
	}
}

// TestFeastStaleAndFaults: hash reads go through the same states as GET, each feature view under its own policy.
// Past its soft TTL a view's fields are served from memory while one background refresh re-reads them; with
// Redis hung, a serve_stale view answers from memory past its hard TTL while a fail view gets an error within
// upstream.timeout.
func TestFeastStaleAndFaults(t *testing.T) {
	cfg := strings.Replace(feastConfig, "upstream: {tracking: false}", "upstream: {tracking: false, timeout: 300ms}", 1)
	cfg = strings.Replace(cfg, "      max_event_age: 24h\n", "      max_event_age: 24h\n      on_upstream_error: serve_stale\n      max_stale: 1h\n", 1)
	p := startProxy(t, cfg)
	now := p.clock.Now()
	writeFeastRow(t, p.redis, 1, 7, 12.5, 41, "NL", now, now)
	c := p.dial()
	users := []int64{1}
	txn, profile := feastRead(t, c, users)
	before := p.redis.Calls("hmget")

	// Soft-stale: Redis changed meanwhile (tracking is off); the old row is served, and one refresh per view
	// brings the new one.
	writeFeastRow(t, p.redis, 1, 8, 13.5, 41, "NL", now, now)
	p.clock.Advance(6 * time.Second) // txn_stats: past soft (5s), before hard (10s)
	txn2, _ := feastRead(t, c, users)
	if txn2[0] != txn[0] {
		t.Fatalf("soft-stale txn_stats: got %q; want the cached %q", txn2[0], txn[0])
	}
	redistest.Eventually(t, 5*time.Second, "one background refresh of txn_stats", func() bool {
		return p.redis.Calls("hmget") == before+1
	})
	want := feastReply(feastInt64(8), feastDouble(13.5), string(feast.AppendTimestamp(nil, now)))
	redistest.Eventually(t, 5*time.Second, "the refreshed row", func() bool {
		got, _ := feastRead(t, c, users)
		return got[0] == want
	})
	if n := p.redis.Calls("hmget"); n != before+1 {
		t.Fatalf("%d upstream HMGETs after the refresh; want %d (one refresh, then memory)", n, before+1)
	}

	// Redis hangs, both views past their hard TTLs: user_profile (serve_stale) is answered from memory,
	// txn_stats (fail) gets the upstream's error.
	p.clock.Advance(150 * time.Minute) // user_profile: past hard (2h), within max_stale (1h)
	p.redis.Pause()
	defer p.redis.Resume()
	start := time.Now()
	txn3, profile3 := feastRead(t, c, users)
	if !strings.HasPrefix(txn3[0], "-ERR featcache upstream") {
		t.Fatalf("fail view with Redis hung: got %q; want featcache's upstream error", txn3[0])
	}
	if profile3[0] != profile[0] {
		t.Fatalf("serve_stale view with Redis hung: got %q; want the cached %q", profile3[0], profile[0])
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("the reads took %v with upstream.timeout 300ms", d)
	}
	m := scrapeMetrics(t, p.adminURL())
	if got := m.value(t, "featcache_stale_on_error_total", "policy", "feast:user_profile"); got != 1 {
		t.Errorf("stale_on_error_total{policy=feast:user_profile} = %v; want 1", got)
	}
	if got := m.value(t, "featcache_requests_total", "policy", "feast:txn_stats", "result", "error"); got != 1 {
		t.Errorf("requests_total{policy=feast:txn_stats,result=error} = %v; want 1", got)
	}
}
