package proxy

import (
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"featcache/feast"
	"featcache/internal/resp"
)

// lines is the reply frame of an array of status lines, as CACHE STATS, EXPLAIN and HOTKEYS answer.
func lines(ls ...string) string {
	var b strings.Builder
	b.WriteString("*" + strconv.Itoa(len(ls)) + "\r\n")
	for _, l := range ls {
		b.WriteString("+" + l + "\r\n")
	}
	return b.String()
}

// parseLines reads an array-of-status-lines frame and fails the test if frame is anything else (a bulk string,
// nested arrays, a wrong count, bytes after the frame).
func parseLines(t *testing.T, frame string) []string {
	t.Helper()
	v, n, err := resp.Decode([]byte(frame))
	if err != nil || v.Type != resp.TypeArray {
		t.Fatalf("not an array: %.200q", frame)
	}
	out := make([]string, 0, len(v.Elems))
	for i, e := range v.Elems {
		if e.Type != resp.TypeSimple {
			t.Fatalf("element %d of %d is not a status line: %.200q", i, len(v.Elems), frame)
		}
		out = append(out, e.Str)
	}
	if n != len(frame) {
		t.Fatalf("%d bytes after the array's %d lines: %.100q", len(frame)-n, len(v.Elems), frame[n:])
	}
	return out
}

// TestCacheRepliesAreLines: CACHE STATS, EXPLAIN and HOTKEYS answer arrays of status lines, so that redis-cli
// prints one line each instead of one escaped bulk string.
func TestCacheRepliesAreLines(t *testing.T) {
	p := startProxy(t, `
policies:
  - {name: p, prefix: "p:", soft_ttl: 1h, hard_ttl: 2h, jitter: 0}
`)
	c := p.dial()
	p.redis.Do("SET", "p:1", "x")
	p.settle()

	expectFrame := func(want string, args ...string) {
		t.Helper()
		if got := string(c.Do(args...)); got != want {
			t.Errorf("%q:\n got %q\nwant %q", args, got, want)
		}
	}
	expectFrame(lines(`key:"other"`, "policy:(none)", "state:uncached (no policy matches: forwarded)"), "CACHE", "EXPLAIN", "other")
	expectFrame(lines(`key:"p:1"`, "policy:p", "state:miss"), "CACHE", "EXPLAIN", "p:1")
	expectFrame(lines(`key:"p:\x00\r\n"`, "policy:p", "state:miss"), "CACHE", "EXPLAIN", "p:\x00\r\n")
	expectFrame(bulk("x"), "GET", "p:1")
	explain := parseLines(t, string(c.Do("CACHE", "EXPLAIN", "p:1")))
	want := []string{`key:"p:1"`, "policy:p", "state:fresh", "kind:value", "size:1", "age_ms:", "soft_left_ms:",
		"hard_left_ms:", "upstream_ttl_ms:-1", "fetched_at:"}
	if len(explain) != len(want) {
		t.Fatalf("CACHE EXPLAIN p:1 = %q; want lines %q", explain, want)
	}
	for i := range want {
		if !strings.HasPrefix(explain[i], want[i]) {
			t.Errorf("CACHE EXPLAIN p:1 line %d = %q; want %q...", i+1, explain[i], want[i])
		}
	}

	expectFrame(bulk("x"), "GET", "p:1")
	stats := parseLines(t, string(c.Do("CACHE", "STATS")))
	if stats[0] != "# requests" {
		t.Errorf("CACHE STATS starts with %q; want \"# requests\"", stats[0])
	}
	for _, l := range stats {
		if !strings.HasPrefix(l, "# ") && !regexp.MustCompile(`^[a-z0-9_]+:\S*$`).MatchString(l) {
			t.Errorf("CACHE STATS line %q is neither a section nor name:value", l)
		}
	}
	for _, w := range []string{"hits:1", "misses:1", "tracking:up", "# local", "entries:1"} {
		if !slicesContains(stats, w) {
			t.Errorf("CACHE STATS lacks the line %q: %q", w, stats)
		}
	}

	for i := 0; i < 200; i++ {
		c.Do("GET", "p:1")
	}
	hot := parseLines(t, string(c.Do("CACHE", "HOTKEYS")))
	if len(hot) != 1 || !regexp.MustCompile(`^key:"p:1" requests:\d+ policy:p$`).MatchString(hot[0]) {
		t.Errorf("CACHE HOTKEYS = %q; want one line for p:1", hot)
	}
	expectFrame("*0\r\n", "CACHE", "HOTKEYS", "0")

	// What a user sees: redis-cli prints one line per counter, no escaped "\r\n".
	out := redisCLI(t, p.addr, nil, "cache", "stats")
	printed := strings.Split(strings.TrimSpace(out), "\n")
	if len(printed) != len(stats) || printed[0] != "# requests" || strings.Contains(out, `\r\n`) {
		t.Errorf("redis-cli cache stats printed %d lines:\n%s\nwant %d, one per counter", len(printed), out, len(stats))
	}
	if out := redisCLI(t, p.addr, nil, "cache", "explain", "p:1"); !strings.HasPrefix(out, "key:\"p:1\"\npolicy:p\nstate:fresh\n") {
		t.Errorf("redis-cli cache explain p:1:\n%s", out)
	}
	if out := redisCLI(t, p.addr, nil, "info", "featcache"); !strings.HasPrefix(out, "# Featcache\r\nfeatcache_version:") {
		t.Errorf("redis-cli info featcache:\n%q", out)
	}
}

func slicesContains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestExplainNamesFeastFeatures: CACHE EXPLAIN of a Feast key names its entity and each cached field's feature,
// where the configuration lists it, next to the hashed field id Feast stores; a field may be asked for as
// "<view>:<feature>".
func TestExplainNamesFeastFeatures(t *testing.T) {
	p := startProxy(t, feastConfig)
	now := p.clock.Now()
	writeFeastRow(t, p.redis, 1, 7, 12.5, 41, "NL", now.Add(-time.Minute), now.Add(-time.Hour))
	c := p.dial()
	key := feastKey(1)
	c.Do("HMGET", key, fid("txn_stats", "count_1h"), fid("txn_stats", "sum_1h"), "_ts:txn_stats")
	c.Do("HMGET", key, fid("user_profile", "age"), fid("user_profile", "country"), "_ts:user_profile")
	q := strconv.Quote
	head := []string{"key:" + q(key), "policy:feast", "entity:user_id=1", "kind:hash", "complete:false"}
	fields := []string{
		"field:" + q(fid("txn_stats", "count_1h")) + " feature:txn_stats:count_1h policy:feast:txn_stats state:fresh",
		"field:" + q(fid("txn_stats", "sum_1h")) + " feature:txn_stats:sum_1h policy:feast:txn_stats state:fresh",
		`field:"_ts:txn_stats" policy:feast:txn_stats state:fresh`,
		"field:" + q(fid("user_profile", "age")) + " feature:user_profile:age policy:feast:user_profile state:fresh",
		"field:" + q(fid("user_profile", "country")) + " feature:user_profile:country policy:feast:user_profile state:fresh",
		`field:"_ts:user_profile" policy:feast:user_profile state:fresh`,
	}
	// The fields come in the entry's order, which is the local tier's business: compare them as a set.
	got := parseLines(t, string(c.Do("CACHE", "EXPLAIN", key)))
	if len(got) != len(head)+len(fields)+1 || !slices.Equal(got[:len(head)], head) ||
		!sameSet(got[len(head):len(head)+len(fields)], fields) || got[len(got)-1] != "fields:6" {
		t.Errorf("CACHE EXPLAIN of a Feast key:\n got %q\nwant %q, the fields %q in some order, \"fields:6\"", got, head, fields)
	}
	for _, field := range []string{"txn_stats:sum_1h", fid("txn_stats", "sum_1h")} {
		got := parseLines(t, string(c.Do("CACHE", "EXPLAIN", key, field)))
		head := []string{"key:" + q(key), "policy:feast", "entity:user_id=1", "kind:hash", "complete:false",
			"field:" + q(fid("txn_stats", "sum_1h")), "feature:txn_stats:sum_1h", "field_policy:feast:txn_stats",
			"field_state:fresh", "field_size:9", "field_missing:false"}
		if len(got) < len(head) || strings.Join(got[:len(head)], "\n") != strings.Join(head, "\n") {
			t.Errorf("CACHE EXPLAIN key %q:\n got %q\nwant %q then the field's age and deadlines", field, got, head)
		}
	}

}

func TestFeastEntity(t *testing.T) {
	for _, tc := range []struct {
		name  string
		key   string
		want  string
		valid bool
	}{
		{"int64", feastKey(1001), "user_id=1001", true},
		{"two join keys, sorted by name", feastKeyOf("p", []string{"z", "a"}, 1, "x y"), `a="x y",z=1`, true},
		{"int32 and bytes", feastKeyOf("p", []string{"n", "raw"}, int32(-3), []byte{0, 1}), `n=-3,raw="\x00\x01"`, true},
		{"other project", feastKey(1) + "x", "", false},
		{"truncated", feastKey(1)[:10] + "fraud_detection", "", false},
		{"not feast", "fraud_detection", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			project := "fraud_detection"
			if strings.HasPrefix(tc.name, "two") || strings.HasPrefix(tc.name, "int32") {
				project = "p"
			}
			got, ok := feastEntity([]byte(tc.key), project)
			if ok != tc.valid || got != tc.want {
				t.Errorf("feastEntity = %q, %v; want %q, %v", got, ok, tc.want, tc.valid)
			}
		})
	}
}

// feastKeyOf builds a Feast entity key of join keys with values of Go types int (int64), int32, string and []byte.
func feastKeyOf(project string, joinKeys []string, values ...any) string {
	var vs []feast.Value
	for _, v := range values {
		switch v := v.(type) {
		case int:
			vs = append(vs, feast.Int64(int64(v)))
		case int32:
			vs = append(vs, feast.Int32(v))
		case string:
			vs = append(vs, feast.String(v))
		case []byte:
			vs = append(vs, feast.Value{Type: 1, Bytes: v})
		}
	}
	return string(feast.AppendKey(nil, project, joinKeys, vs))
}

// TestHotKeysFromShortConnections: clients that open a connection per read are sampled by the hot-key tracker
// too: a connection's first read is recorded one time in 16, like any other.
func TestHotKeysFromShortConnections(t *testing.T) {
	p := startProxy(t, `
policies:
  - {name: p, prefix: "p:", hard_ttl: 1h}
`)
	p.redis.Do("SET", "p:1", "x")
	p.settle()
	for i := 0; i < 200; i++ {
		if got := p.do("GET", "p:1"); got != bulk("x") {
			t.Fatalf("GET p:1: %q", got)
		}
	}
	hot := parseLines(t, p.do("CACHE", "HOTKEYS"))
	if len(hot) != 1 || !regexp.MustCompile(`^key:"p:1" requests:\d+ policy:p$`).MatchString(hot[0]) {
		t.Fatalf("CACHE HOTKEYS after 200 connections of one GET each = %q; want p:1", hot)
	}
}
