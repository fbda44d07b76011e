package proxy

import (
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"featcache/config"
	"featcache/internal/redistest"
	"featcache/localcache"
	"featcache/upstream"
)

// BenchmarkColdStartReady100k measures cold start to ready: a Redis holds 100,000 keys of 256-byte values, and a
// new featcache whose warm.sources file lists them all, with ready_after 100000, is started in front of it. Each
// iteration times what a new process does, from creating its local tier and upstream client to Ready (/readyz
// 200): tracking established, the whole list read, every key fetched in batches of 200 (GET and PTTL) and stored.
// Run it with -benchtime 1x (or 3x); the sub-benchmarks compare the default warm.rate with an unlimited one.
//
//	go test -run '^$' -bench ColdStart -benchtime 3x ./proxy/
func BenchmarkColdStartReady100k(b *testing.B) {
	const n = 100000
	redis := redistest.Start(b)
	value := strings.Repeat("x", 256)
	c := redistest.Dial(b, redis.Addr())
	for i := 0; i < n; i += 1000 {
		args := []string{"MSET"}
		for j := i; j < i+1000; j++ {
			args = append(args, "feat:"+strconv.Itoa(j), value)
		}
		c.Send(args...)
	}
	for i := 0; i < n; i += 1000 {
		if _, err := c.Read(); err != nil {
			b.Fatal(err)
		}
	}
	file := writeKeysFile(b, keyList("feat:", 0, n))
	for _, rate := range []int{config.DefaultWarmRate, 1000000} {
		b.Run(fmt.Sprintf("rate=%d", rate), func(b *testing.B) {
			var total time.Duration
			for i := 0; i < b.N; i++ {
				total += coldStart(b, redis, fmt.Sprintf(`
warm:
  sources: [{file: %q}]
  ready_after: %d
  rate: %d
  ready_timeout: 0s
policies:
  - {name: feat, prefix: "feat:", hard_ttl: 1h}
`, file, n, rate), n)
			}
			b.ReportMetric(total.Seconds()/float64(b.N), "s_to_ready")
			b.ReportMetric(float64(n)*float64(b.N)/total.Seconds(), "keys/s")
		})
	}
}

// coldStart starts a featcache as main does and returns how long it took to be ready with want keys loaded.
func coldStart(b *testing.B, redis *redistest.Server, yamlCfg string, want int) time.Duration {
	cfg, err := config.Parse([]byte(yamlCfg))
	if err != nil {
		b.Fatal(err)
	}
	cfg.Upstream.Addresses = []string{redis.Addr()}
	log := slog.New(slog.DiscardHandler)
	start := time.Now()
	cache, err := localcache.New(localcache.Options{MaxMemory: 128 << 20})
	if err != nil {
		b.Fatal(err)
	}
	defer cache.Close()
	up, err := upstream.New(upstream.Options{
		Addresses: cfg.Upstream.Addresses, Timeout: cfg.Upstream.Timeout, Tracking: true,
		Prefixes: config.NewMatcher(cfg.Policies).TrackingPrefixes(), Cache: cache, Logger: log,
	})
	if err != nil {
		b.Fatal(err)
	}
	defer up.Close()
	srv, err := New(Options{Config: cfg, Cache: cache, Upstream: up, Logger: log})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(ln)
	srv.StartWarmup()
	redistest.Eventually(b, 5*time.Minute, "ready", srv.Ready) // polls every 5ms: the figure is that precise
	elapsed := time.Since(start)
	if st := srv.warmer.Stats(); st.StartupLoaded < int64(want) || cache.Stats().Entries < int64(want) {
		b.Fatalf("ready with %d keys loaded and %d entries; want %d", st.StartupLoaded, cache.Stats().Entries, want)
	}
	return elapsed
}
