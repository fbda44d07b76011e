package main

import (
	"strings"
	"testing"
	"time"

	"featcache/internal/redistest"
)

// TestSentinelConfig: featcache started with upstream.sentinel finds the primary through the sentinel (whose own
// password it never logs) and serves through it; -upstream replaces the sentinel section.
func TestSentinelConfig(t *testing.T) {
	const secret = "sentinel-pass-5bd1"
	set := redistest.StartSentinelSet(t, "mymaster", 0, 1, secret)
	cfg := `
upstream:
  sentinel:
    master_set: mymaster
    addresses: ["` + set.Sentinels[0].Addr() + `"]
    password: "` + secret + `"
policies:
  - {name: default, prefix: "", hard_ttl: 1h}
`
	in := startBinaryArgs(t, cfg)
	c := redistest.Dial(t, in.addr)
	if got := string(c.Do("SET", "k", "via-sentinel")); got != "+OK\r\n" {
		t.Fatalf("SET through featcache: %q", got)
	}
	if got := string(set.Primary.Do("GET", "k")); got != "$12\r\nvia-sentinel\r\n" {
		t.Fatalf("GET on the primary = %q; want the write made through featcache", got)
	}
	// The log arrives through a pipe: what featcache wrote before it answered may still be on its way.
	var log string
	redistest.Eventually(t, 5*time.Second, "the log shows the sentinel upstream and the primary found", func() bool {
		log = in.log.String()
		return strings.Contains(log, "upstream=sentinel:mymaster@"+set.Sentinels[0].Addr()) &&
			strings.Contains(log, "primary found through sentinel")
	})
	if strings.Contains(log, secret) {
		t.Errorf("the sentinel password is in the log:\n%s", log)
	}

	other := redistest.Start(t)
	flagged := startBinaryArgs(t, cfg, "-upstream", other.Addr())
	if got := string(redistest.Dial(t, flagged.addr).Do("SET", "k", "via-flag")); got != "+OK\r\n" {
		t.Fatalf("SET through featcache -upstream: %q", got)
	}
	if got := string(other.Do("GET", "k")); got != "$8\r\nvia-flag\r\n" {
		t.Fatalf("with -upstream, GET on that node = %q; want the write", got)
	}
}
