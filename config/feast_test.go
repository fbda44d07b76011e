package config

import (
	"strings"
	"testing"
	"time"

	"featcache/feast"
)

func TestFeastSection(t *testing.T) {
	c, err := Parse([]byte(`
policies:
  - {name: default, prefix: "", hard_ttl: 1m}
feast:
  project: driver_ranking
  soft_ttl: 1m
  hard_ttl: 5m
  feature_views:
    - name: driver_hourly_stats
      features: [conv_rate, acc_rate]
      soft_ttl: 10s
      hard_ttl: 30s
      max_event_age: 2h
    - name: driver_daily
      features: [trips]
      hard_ttl: 1h
`))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Policies) != 4 {
		t.Fatalf("%d policies; want default, feast and two views", len(c.Policies))
	}
	m := NewMatcher(c.Policies)
	key := feast.AppendKey(nil, "driver_ranking", []string{"driver_id"}, []feast.Value{feast.Int64(7)})
	if p := m.Match(key); p == nil || p.Name != "feast" || p.HardTTL != 5*time.Minute {
		t.Fatalf("a Feast key matched %+v; want the feast key policy (the suffix beats the default prefix)", p)
	}
	if p := m.Match([]byte("other")); p == nil || p.Name != "default" {
		t.Fatalf("other key: %+v", p)
	}
	hourly := m.FieldPolicy(feast.FieldID("driver_hourly_stats", "acc_rate"))
	if hourly == nil || hourly.Name != "feast:driver_hourly_stats" || hourly.SoftTTL != 10*time.Second ||
		hourly.View.MaxEventAge != 2*time.Hour {
		t.Fatalf("field policy of acc_rate: %+v", hourly)
	}
	if p := m.FieldPolicy([]byte("_ts:driver_daily")); p == nil || p.Name != "feast:driver_daily" {
		t.Fatalf("field policy of _ts:driver_daily: %+v", p)
	}
	if p := m.FieldPolicy([]byte("unknown")); p != nil {
		t.Fatalf("an unconfigured field has policy %q", p.Name)
	}
	if p := m.Match([]byte("_ts:driver_daily")); p == nil || p.Name != "default" {
		t.Fatal("a feature view's policy matched a key")
	}
	if got := strings.Join(m.TrackingPrefixes(), ","); got != "" {
		t.Fatalf("tracking prefixes %q; want [\"\"] (a suffix can follow any prefix)", got)
	}

	// A feast section without feature_views is the key policy alone.
	if c, err := Parse([]byte("feast: {project: p}")); err != nil || len(c.Policies) != 1 || c.Policies[0].Name != FeastKeyPolicy {
		t.Errorf("feast without feature_views: got %v", err)
	}

	for _, tt := range []struct{ name, in, err string }{
		{"no project", "feast: {hard_ttl: 1m}", "feast: project is required"},
		{"unknown field", "feast: {project: p, prefix: x}", `feast: unknown field "prefix"`},
		{"view without features", "feast: {project: p, feature_views: [{name: v}]}", `feature view "v": features: list at least one feature`},
		{"view unknown field", "feast: {project: p, feature_views: [{name: v, features: [a], prefix: x}]}", `unknown field "prefix"`},
		{"negative event age", "feast: {project: p, feature_views: [{name: v, features: [a], max_event_age: -1s}]}", "max_event_age"},
		{"duplicate view", "feast: {project: p, feature_views: [{name: v, features: [a]}, {name: v, features: [b]}]}", `duplicate policy name "feast:v"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Parse([]byte(tt.in)); err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("got %v; want an error containing %q", err, tt.err)
			}
		})
	}
}

func TestSuffixPolicies(t *testing.T) {
	c, err := Parse([]byte(`
policies:
  - {name: pat, pattern: "x:*:y"}
  - {name: short, suffix: "_p"}
  - {name: long, suffix: "x_p"}
  - {name: pre, prefix: "ab"}
  - {name: default, prefix: ""}
`))
	if err != nil {
		t.Fatal(err)
	}
	m := NewMatcher(c.Policies)
	expectMatches(t, m, map[string]string{
		"abc_p":      "short", // the suffix wins over the prefix
		"abx_p":      "long",  // the longest suffix
		"x:1:y":      "pat",   // patterns first
		"x:1:x_p":    "long",
		"abz":        "pre",
		"zz":         "default",
		"\xff\x00_p": "short",
		"_p":         "short",
		"p":          "default",
	})
	key := []byte("abx_p")
	if n := testing.AllocsPerRun(1000, func() { m.Match(key) }); n != 0 {
		t.Errorf("Match with suffixes allocates %v times", n)
	}
	if _, err := Parse([]byte(`policies: [{name: s, suffix: ""}]`)); err == nil {
		t.Error(`suffix "" accepted`)
	}
	if _, err := Parse([]byte(`policies: [{name: a, suffix: "_p"}, {name: b, suffix: "_p"}]`)); err == nil ||
		!strings.Contains(err.Error(), `suffix "_p" is already the suffix of policy "a"`) {
		t.Errorf("duplicate suffix: %v", err)
	}
}
