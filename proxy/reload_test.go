package proxy

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"featcache/config"
	"featcache/internal/redistest"
	"featcache/internal/testkit"
)

// reloadable is a proxy whose configuration lives in a file that reloads read again.
type reloadable struct {
	*testProxy
	path string
}

// startReloadable writes yamlCfg to a file and starts a proxy on it; CACHE RELOAD reads the file again. opts may
// adjust the server's options further.
func startReloadable(t *testing.T, redis *redistest.Server, yamlCfg string, opts ...func(*Options)) *reloadable {
	t.Helper()
	path := filepath.Join(t.TempDir(), "featcache.yaml")
	r := &reloadable{path: path}
	r.write(t, yamlCfg)
	load := func() (*config.Config, error) {
		cfg, err := config.Load(path)
		if err != nil {
			return nil, err
		}
		cfg.Upstream.Addresses = []string{redis.Addr()} // as the -upstream flag does
		return cfg, cfg.Validate()
	}
	r.testProxy = startProxyOn(t, redis, yamlCfg, append([]func(*Options){func(o *Options) { o.Reload = load }}, opts...)...)
	return r
}

func (r *reloadable) write(t *testing.T, yamlCfg string) {
	t.Helper()
	if err := os.WriteFile(r.path, []byte(yamlCfg), 0o644); err != nil {
		t.Fatal(err)
	}
}

// reload writes yamlCfg and runs CACHE RELOAD, returning its reply.
func (r *reloadable) reload(t *testing.T, yamlCfg string) string {
	t.Helper()
	r.write(t, yamlCfg)
	return r.do("CACHE", "RELOAD")
}

// TestReloadShortensDeadlines: an entry cached under hard_ttl 1h is judged by the reloaded hard_ttl 5m at its next
// lookup: ten minutes after its fill it is no longer served.
func TestReloadShortensDeadlines(t *testing.T) {
	p := startReloadable(t, redistest.Start(t), `
policies:
  - {name: p, prefix: "p:", hard_ttl: 1h, jitter: 0}
`)
	p.redis.Do("SET", "p:1", "v")
	p.settle()
	c := p.dial()
	c.Do("GET", "p:1")
	p.clock.Advance(10 * time.Minute)
	gets := p.redis.Calls("get")
	if got := string(c.Do("GET", "p:1")); got != bulk("v") || p.redis.Calls("get") != gets {
		t.Fatalf("before the reload, a 10-minute-old entry under hard_ttl 1h was not a hit (%q)", got)
	}
	reply := p.reload(t, `
policies:
  - {name: p, prefix: "p:", hard_ttl: 5m, jitter: 0}
`)
	if !strings.Contains(reply, "reloaded:policies=1") || !strings.Contains(reply, "restart_needed:\r\n") {
		t.Fatalf("CACHE RELOAD = %q", reply)
	}
	if got := string(c.Do("CACHE", "EXPLAIN", "p:1")); !strings.Contains(got, "state:dead") {
		t.Fatalf("after the reload, EXPLAIN = %q; want dead", got)
	}
	if got := string(c.Do("GET", "p:1")); got != bulk("v") || p.redis.Calls("get") != gets+1 {
		t.Fatalf("after the reload, the 10-minute-old entry was served from memory (upstream GETs %d, want %d)", p.redis.Calls("get"), gets+1)
	}
	explain := parseLines(t, string(c.Do("CACHE", "EXPLAIN", "p:1")))
	left := ""
	for _, line := range explain {
		if v, ok := strings.CutPrefix(line, "hard_left_ms:"); ok {
			left = v
		}
	}
	if ms, err := strconv.Atoi(left); err != nil || ms > 300000 || ms < 290000 {
		t.Fatalf("the refetched entry: EXPLAIN = %q; want hard_left_ms just under 300000", explain)
	}
}

// TestReloadRejectsInvalidFile: an invalid file is rejected with its error, the running policies keep serving,
// and the reload metrics say so until a valid file is applied.
func TestReloadRejectsInvalidFile(t *testing.T) {
	p := startReloadable(t, redistest.Start(t), `
policies:
  - {name: p, prefix: "p:", hard_ttl: 1h}
`)
	admin := p.adminURL()
	p.redis.Do("SET", "p:1", "v")
	p.settle()
	c := p.dial()
	c.Do("GET", "p:1")
	reply := p.reload(t, `
policies:
  - {name: p, prefix: "p:", hard_ttl: forever}
`)
	if !strings.HasPrefix(reply, "-ERR reload rejected, the running configuration stays: ") || !strings.Contains(reply, `hard_ttl: invalid duration "forever"`) {
		t.Fatalf("CACHE RELOAD of an invalid file = %q", reply)
	}
	gets := p.redis.Calls("get")
	if got := string(c.Do("GET", "p:1")); got != bulk("v") || p.redis.Calls("get") != gets {
		t.Fatalf("after a rejected reload, GET p:1 = %q and went upstream; want a hit", got)
	}
	m := scrapeMetrics(t, admin)
	if m.value(t, "featcache_config_last_reload_successful") != 0 || m.value(t, "featcache_config_reloads_total", "result", "rejected") != 1 {
		t.Fatal("the rejected reload is not in the metrics")
	}
	if reply := p.reload(t, "policies:\n  - {name: p, prefix: \"p:\", hard_ttl: 2h}\n"); !strings.HasPrefix(reply, "*4\r\n+reloaded:") {
		t.Fatalf("CACHE RELOAD of a valid file = %q", reply)
	}
	m = scrapeMetrics(t, admin)
	if m.value(t, "featcache_config_last_reload_successful") != 1 || m.value(t, "featcache_config_reloads_total", "result", "ok") != 1 {
		t.Fatal("the applied reload is not in the metrics")
	}
}

// TestReloadCacheFalse: a prefix switched to cache: false is never served from memory again, from the reload on.
func TestReloadCacheFalse(t *testing.T) {
	p := startReloadable(t, redistest.Start(t), `
policies:
  - {name: p, prefix: "p:", hard_ttl: 1h}
`)
	p.redis.Do("SET", "p:1", "v")
	p.settle()
	c := p.dial()
	c.Do("GET", "p:1")
	c.Do("GET", "p:1")
	p.reload(t, "policies:\n  - {name: p, prefix: \"p:\", cache: false}\n")
	gets, mgets := p.redis.Calls("get"), p.redis.Calls("mget")
	for i := 0; i < 3; i++ {
		c.Do("GET", "p:1")
		c.Do("MGET", "p:1")
	}
	// An MGET of keys no policy caches is Redis's own MGET, relayed.
	if got, gotM := p.redis.Calls("get")-gets, p.redis.Calls("mget")-mgets; got != 3 || gotM != 3 {
		t.Fatalf("after cache: false, 6 reads made %d upstream GETs and %d MGETs; want 3 and 3", got, gotM)
	}
}

// TestReloadReportsRestartFields: settings a reload cannot apply are named in the reply and keep their values.
func TestReloadReportsRestartFields(t *testing.T) {
	p := startReloadable(t, redistest.Start(t), "policies:\n  - {name: p, prefix: \"p:\"}\n")
	reply := p.reload(t, `
listen: "127.0.0.1:1"
password: "s3cret"
local:
  max_memory: 1GB
limits:
  max_conn_age: 1h
policies:
  - {name: p, prefix: "p:"}
`)
	if !strings.Contains(reply, "restart_needed:listen,password,local.max_memory\r\n") || strings.Contains(reply, "s3cret") {
		t.Fatalf("CACHE RELOAD = %q", reply)
	}
	if got := p.do("PING"); got != "+PONG\r\n" {
		t.Fatalf("PING without AUTH after a reload that set a password: %q; the password needs a restart", got)
	}
	if got := p.srv.Config().Limits.MaxConnAge; got != time.Hour {
		t.Fatalf("max_conn_age %v; want the reloaded 1h", got)
	}
}

// TestReloadLogLevel: log.level is applied by a reload; log.format needs a restart.
func TestReloadLogLevel(t *testing.T) {
	level := new(slog.LevelVar)
	redis := redistest.Start(t)
	path := testkit.WriteFile(t, t.TempDir(), "featcache.yaml", "log: {level: warn}\n")
	load := func() (*config.Config, error) {
		cfg, err := config.Load(path)
		if err != nil {
			return nil, err
		}
		cfg.Upstream.Addresses = []string{redis.Addr()}
		return cfg, cfg.Validate()
	}
	p := startProxyOn(t, redis, "log: {level: warn}\n", func(o *Options) { o.Reload = load; o.LogLevel = level })
	if err := os.WriteFile(path, []byte("log: {level: debug, format: json}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if reply := p.do("CACHE", "RELOAD"); !strings.Contains(reply, "restart_needed:log.format\r\n") {
		t.Fatalf("CACHE RELOAD = %q", reply)
	}
	if level.Level() != slog.LevelDebug {
		t.Fatalf("log level %v after the reload; want DEBUG", level.Level())
	}
}

// TestReloadTrackingPrefixes: a reload that caches a new prefix tracks it before serving it, and entries stored
// while their prefix was not tracked are never served: a key cached, then left untracked by a reload, changed in
// Redis, and cached again by the next reload, reads the new value.
func TestReloadTrackingPrefixes(t *testing.T) {
	onlyA := "policies:\n  - {name: a, prefix: \"a:\", hard_ttl: 1h}\n"
	aAndB := onlyA + "  - {name: b, prefix: \"b:\", hard_ttl: 1h}\n"
	p := startReloadable(t, redistest.Start(t), onlyA)
	p.redis.Do("SET", "b:1", "v1")
	if reply := p.reload(t, aAndB); !strings.Contains(reply, "tracking_prefixes_changed:true") {
		t.Fatalf("CACHE RELOAD = %q", reply)
	}
	c := p.dial()
	if got := string(c.Do("GET", "b:1")); got != bulk("v1") {
		t.Fatalf("GET b:1 = %q", got)
	}
	p.redis.Do("SET", "b:1", "v2") // not through featcache: only tracking can tell it
	p.settle()
	if got := string(c.Do("GET", "b:1")); got != bulk("v2") {
		t.Fatalf("a write under the newly tracked prefix was missed: GET b:1 = %q", got)
	}

	p.reload(t, onlyA) // b: is neither cached nor tracked any more; its entry stays in memory
	p.redis.Do("SET", "b:1", "v3")
	p.settle()
	p.reload(t, aAndB)
	if got := string(c.Do("GET", "b:1")); got != bulk("v3") {
		t.Fatalf("an entry stored before its prefix was tracked again was served: GET b:1 = %q; want v3", got)
	}
	if enabled, up := p.up.Tracking(); !enabled || !up {
		t.Fatal("tracking is not up after the reloads")
	}
	if got := p.up.Prefixes(); strings.Join(got, ",") != "a:,b:" {
		t.Fatalf("tracked prefixes %q; want a:,b:", got)
	}
}

// TestReloadWarmSettings: a reload applies warm.rate to the next warm-up, and warm.hotkeys_file and
// warm.hotkeys_interval to the hot-key writes at once: the list goes to the new file within the new interval, not
// the old one's minute, and never to the old file.
func TestReloadWarmSettings(t *testing.T) {
	dir := t.TempDir()
	oldFile, newFile := filepath.Join(dir, "old.txt"), filepath.Join(dir, "new.txt")
	cfg := func(rate int, interval, file string) string {
		return fmt.Sprintf(`
warm: {rate: %d, hotkeys_interval: %s, hotkeys_file: %q, hotkeys_size: 100}
policies:
  - {name: w, prefix: "w:", hard_ttl: 1h}
`, rate, interval, file)
	}
	var logs redistest.LogBuffer
	p := startReloadable(t, redistest.Start(t), cfg(1000, "1m", oldFile),
		func(o *Options) { o.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
	p.srv.StartWarmup()
	redistest.Eventually(t, 5*time.Second, "start-up warm-up logged", func() bool {
		return strings.Contains(logs.String(), `msg="warm-up: started" kind=start-up sources="file `+oldFile+`" rate=1000`)
	})
	loadKeys(t, p.redis, "w:", 100)
	keys := keyList("w:", 0, 100)
	c := p.dial()
	for i := 0; i < 5; i++ {
		mgetAll(t, c, keys)
	}
	if p.srv.hot.Len() == 0 {
		t.Fatal("no hot keys tracked after 500 reads")
	}

	if reply := p.reload(t, cfg(50000, "1s", newFile)); !strings.Contains(reply, "reloaded:policies=1") ||
		!strings.Contains(reply, "restart_needed:\r\n") || !strings.Contains(reply, "next_start:\r\n") {
		t.Fatalf("CACHE RELOAD = %q", reply)
	}
	if w := p.srv.Config().Warm; w.Rate != 50000 || w.HotkeysInterval != time.Second || w.HotkeysFile != newFile {
		t.Fatalf("running warm settings after the reload: rate %d, hotkeys_interval %v, hotkeys_file %q; want 50000, 1s, %q",
			w.Rate, w.HotkeysInterval, w.HotkeysFile, newFile)
	}
	redistest.Eventually(t, 10*time.Second, "hot keys written to the new file", func() bool {
		b, err := os.ReadFile(newFile)
		return err == nil && strings.HasPrefix(string(b), "w:")
	})
	if _, err := os.Stat(oldFile); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the old hot-key file was written after the reload: %v", err)
	}
	file := writeKeysFile(t, keys)
	if got := string(c.Do("CACHE", "WARM", "FILE", file)); got != "+OK\r\n" {
		t.Fatalf("CACHE WARM FILE: %q", got)
	}
	redistest.Eventually(t, 5*time.Second, "the next warm-up at the new rate", func() bool {
		return strings.Contains(logs.String(), `msg="warm-up: started" kind=run-time sources="file `+file+`" rate=50000`)
	})
}
