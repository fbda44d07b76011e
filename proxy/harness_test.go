package proxy

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"featcache/config"
	"featcache/internal/commands"
	"featcache/internal/redistest"
	"featcache/internal/resp"
	"featcache/localcache"
	"featcache/upstream"
)

// testProxy is a real featcache listener on 127.0.0.1:0 in front of a real redis-server.
type testProxy struct {
	t     testing.TB
	redis *redistest.Server
	srv   *Server
	cache *localcache.Cache
	up    *upstream.Client
	cfg   *config.Config
	addr  string
	clock *testClock
}

// testClock is an injectable clock; zero offset means real time.
type testClock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

// Advance moves the clock forward by d.
func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.offset += d
	c.mu.Unlock()
}

// defaultTestConfig caches every key ("" prefix) for a long time, with tracking on.
const defaultTestConfig = `
policies:
  - name: default
    prefix: ""
    soft_ttl: 1h
    hard_ttl: 2h
    jitter: 0
`

// startProxy starts a redis-server and a featcache in front of it, configured by yamlCfg (policies and other
// fields; upstream.addresses is set to the test's Redis).
func startProxy(t testing.TB, yamlCfg string) *testProxy {
	t.Helper()
	return startProxyOn(t, redistest.Start(t), yamlCfg)
}

// startProxyOn starts a featcache in front of an existing redis-server and waits until tracking is established;
// opts may adjust the server's options. With upstream.sentinel in yamlCfg, featcache finds its primary through the
// sentinels (redis is the primary at start).
func startProxyOn(t testing.TB, redis *redistest.Server, yamlCfg string, opts ...func(*Options)) *testProxy {
	t.Helper()
	return startProxyAt(t, []string{redis.Addr()}, redis, yamlCfg, opts...)
}

// startProxyAt starts a featcache in front of the upstream at addrs (one node, or a cluster's seeds) and waits
// until tracking is established; redis, if not nil, is the node tests reach directly.
func startProxyAt(t testing.TB, addrs []string, redis *redistest.Server, yamlCfg string, opts ...func(*Options)) *testProxy {
	t.Helper()
	p := newProxyAt(t, addrs, redis, yamlCfg, opts...)
	if p.cfg.Upstream.Tracking {
		redistest.Eventually(t, 5*time.Second, "tracking established", func() bool {
			_, up := p.up.Tracking()
			return up
		})
	}
	return p
}

// newProxyOn is startProxyOn without waiting for the upstream, for tests that start featcache while Redis does not
// answer. The local tier is local.max_memory, at most 16MB, so that tests do not allocate the 256MB default.
func newProxyOn(t testing.TB, redis *redistest.Server, yamlCfg string, opts ...func(*Options)) *testProxy {
	t.Helper()
	return newProxyAt(t, []string{redis.Addr()}, redis, yamlCfg, opts...)
}

// newProxyAt is startProxyAt without waiting for the upstream.
func newProxyAt(t testing.TB, addrs []string, redis *redistest.Server, yamlCfg string, opts ...func(*Options)) *testProxy {
	t.Helper()
	cfg, err := config.Parse([]byte(yamlCfg))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	if !cfg.Upstream.Sentinel.Enabled() {
		cfg.Upstream.Addresses = addrs
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("config: %v", err)
	}
	clock := &testClock{}
	cache, err := localcache.New(localcache.Options{MaxMemory: min(cfg.Local.MaxMemory, 16<<20), Now: clock.Now,
		Admission: localcache.AdmissionOptions{Threshold: cfg.Local.AdmissionThreshold}})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	if os.Getenv("FEATCACHE_TEST_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	upTLS, err := cfg.Upstream.TLS.ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	up, err := upstream.New(upstream.Options{
		Addresses:      cfg.Upstream.Addresses,
		Sentinel:       sentinelOptions(cfg.Upstream.Sentinel),
		Username:       cfg.Upstream.Username,
		Password:       cfg.Upstream.Password,
		TLS:            upTLS,
		Conns:          cfg.Upstream.Conns,
		Timeout:        cfg.Upstream.Timeout,
		CommandTimeout: cfg.Upstream.CommandTimeout,
		Tracking:       cfg.Upstream.Tracking,
		Prefixes:       config.NewMatcher(cfg.Policies).TrackingPrefixes(),
		Cache:          cache,
		Logger:         log,
	})
	if err != nil {
		t.Fatal(err)
	}
	o := Options{Config: cfg, Cache: cache, Upstream: up, Logger: log, Now: clock.Now}
	for _, opt := range opts {
		opt(&o)
	}
	srv, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// The listener is wired as main wires it: TLS when tls.cert_file is set.
	tlsCfg, err := cfg.TLS.ServerConfig()
	if err != nil {
		t.Fatal(err)
	}
	if tlsCfg != nil {
		ln = tls.NewListener(ln, tlsCfg)
	}
	go srv.Serve(ln)
	t.Cleanup(func() {
		srv.Close()
		up.Close()
	})
	return &testProxy{t: t, redis: redis, srv: srv, cache: cache, up: up, cfg: cfg, addr: ln.Addr().String(), clock: clock}
}

// dial opens a raw RESP connection to featcache.
func (p *testProxy) dial() *redistest.Conn { return redistest.Dial(p.t, p.addr) }

// do sends one command through featcache on a new connection and returns the raw reply.
func (p *testProxy) do(args ...string) string {
	c := p.dial()
	defer c.Close()
	return string(c.Do(args...))
}

// settle waits until featcache has applied every invalidation for what Redis has executed so far (the tracking
// barrier). A test that writes directly to Redis and then counts cache hits calls it first: the invalidation of
// its own setup write may otherwise arrive after the first read was cached, and drop it.
func (p *testProxy) settle() {
	p.t.Helper()
	if enabled, _ := p.up.Tracking(); !enabled {
		return
	}
	if err := p.up.Barrier(context.Background()); err != nil {
		p.t.Fatalf("tracking barrier: %v", err)
	}
}

// bulkStrings reads a reply that is an array of bulk strings (COMMAND LIST, CONFIG GET).
func bulkStrings(t testing.TB, reply []byte) []string {
	t.Helper()
	elems, err := resp.ParseBulkArray(reply, nil)
	if err != nil {
		t.Fatalf("reply %.200q: %v", reply, err)
	}
	out := make([]string, len(elems))
	for i, e := range elems {
		out[i] = string(e)
	}
	return out
}

// allCommands returns every command and subcommand of cmds, sorted by name.
func allCommands(cmds commands.Table) []*commands.Info {
	var all []*commands.Info
	for _, ci := range cmds {
		all = append(all, ci)
		for _, sub := range ci.Subcommands {
			all = append(all, sub)
		}
	}
	slices.SortFunc(all, func(a, b *commands.Info) int { return strings.Compare(a.Name, b.Name) })
	return all
}

// embeddedCommands is Redis 7.0's command table (commands.Embedded).
func embeddedCommands(tb testing.TB) commands.Table {
	tb.Helper()
	cmds, err := commands.Embedded()
	if err != nil {
		tb.Fatalf("commands.Embedded: %v", err)
	}
	return cmds
}
