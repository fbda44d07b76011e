package proxy

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"featcache/internal/redistest"
)

// feastWarmConfig is a Feast project of two feature views, with tracking on, hot keys kept in a file (and a
// sorted set), a plain hash policy and a string policy.
func feastWarmConfig(file string) string {
	return fmt.Sprintf(`
warm:
  ready_after: 21
  rate: 1000000
  hotkeys_file: %q
  hotkeys_zset: "featcache:hotkeys"
  hotkeys_size: 100
feast:
  project: fraud_detection
  hard_ttl: 1h
  feature_views:
    - name: txn_stats
      features: [count_1h, sum_1h]
      hard_ttl: 1h
      negative_ttl: 1h
    - name: user_profile
      features: [age, country]
      hard_ttl: 1h
      negative_ttl: 1h
      max_event_age: 24h
policies:
  - {name: h, prefix: "h:", hard_ttl: 1h}
  - {name: s, prefix: "s:", hard_ttl: 1h}
`, file)
}

// TestRestartWarmsFeastHashes: Feast entities read through featcache with Feast's pattern (HMGET per entity and
// feature view) are hot keys like any other: the tracker records them, the list written at shutdown holds them,
// and a new instance warms them from it (from the file, or from the sorted set when its disk was lost) by
// reading every configured view's features, so that Feast's reads are answered from memory from the first one.
// A plain hash read with HGETALL is warmed whole, and a string with GET, from the same list.
func TestRestartWarmsFeastHashes(t *testing.T) {
	redis := redistest.Start(t)
	now := time.Now()
	users := make([]int64, 20)
	for i := range users {
		users[i] = int64(1000 + i)
		writeFeastRow(t, redis, users[i], int64(i), float64(i)/2, int64(20+i), "NL", now.Add(-time.Minute), now.Add(-time.Hour))
	}
	redis.Do("HSET", "h:1", "a", "1", "b", "2")
	redis.Do("SET", "s:1", "x")
	file := filepath.Join(t.TempDir(), "hotkeys.txt")

	first := startProxyOn(t, redis, feastWarmConfig(file))
	first.srv.StartWarmup()
	c := first.dial()
	var want struct{ txn, profile []string }
	for round := 0; round < 100; round++ {
		txn, profile := feastRead(t, c, users)
		if round == 0 {
			want.txn, want.profile = txn, profile
		}
		expectDo(t, c, "*4\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\nb\r\n$1\r\n2\r\n", "HGETALL", "h:1")
		expectDo(t, c, bulk("x"), "GET", "s:1")
	}
	// Reference replies straight from Redis: featcache relayed them.
	direct := redis.Dial()
	txn, profile := feastRead(t, direct, users)
	if strings.Join(txn, "") != strings.Join(want.txn, "") || strings.Join(profile, "") != strings.Join(want.profile, "") {
		t.Fatalf("featcache's Feast replies differ from Redis's:\n%q\n%q", want.txn, txn)
	}
	hot := parseLines(t, string(c.Do("CACHE", "HOTKEYS", "100")))
	feastLine := regexp.MustCompile(`^key:"\\x01.*fraud_detection" requests:\d+ policy:feast entity:user_id=10\d\d$`)
	entities := 0
	for _, l := range hot {
		if feastLine.MatchString(l) {
			entities++
		}
	}
	if entities != len(users) || len(hot) != len(users)+2 {
		t.Fatalf("CACHE HOTKEYS lists %d Feast entities of %d lines; want the %d entities, h:1 and s:1:\n%s",
			entities, len(hot), len(users), strings.Join(hot, "\n"))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := first.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(file); err != nil || strings.Count(string(b), "fraud_detection") != len(users) {
		t.Fatalf("hot-key file (%v) does not list the %d entities:\n%q", err, len(users), b)
	}

	for _, tc := range hotKeySources(t, file) {
		next := startWarmed(t, redis, feastWarmConfig(tc.file), tc.name)
		if st := next.srv.warmer.Stats(); st.Fetched != int64(len(users))+2 {
			t.Errorf("%s: the warm-up fetched %d keys; want the %d entities, h:1 and s:1", tc.name, st.Fetched, len(users))
		}
		calls := func() (n int) {
			for _, cmd := range []string{"hmget", "hgetall", "hget", "get"} {
				n += redis.Calls(cmd)
			}
			return n
		}
		before := calls()
		nc := next.dial()
		txn, profile := feastRead(t, nc, users)
		if strings.Join(txn, "") != strings.Join(want.txn, "") || strings.Join(profile, "") != strings.Join(want.profile, "") {
			t.Fatalf("%s: Feast replies after the warm-up differ from Redis's:\n%q\n%q", tc.name, txn, want.txn)
		}
		expectDo(t, nc, "$1\r\n2\r\n", "HGET", "h:1", "b")
		expectDo(t, nc, bulk("x"), "GET", "s:1")
		if got := calls() - before; got != 0 {
			t.Errorf("%s: the first reads of the warmed keys made %d upstream reads; want 0", tc.name, got)
		}
		if hits := next.srv.Stats().Hits.Load(); hits != int64(2*len(users)+2) {
			t.Errorf("%s: %d reads answered from memory; want all %d", tc.name, hits, 2*len(users)+2)
		}
		next.srv.Close()
	}
}
