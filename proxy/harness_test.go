package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
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
	// An option that sets the Logger sets the upstream's too, as main shares one (the options only set fields).
	probe := Options{Logger: log}
	for _, opt := range opts {
		opt(&probe)
	}
	log = probe.Logger
	upTLS, err := cfg.Upstream.TLS.ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	up, err := upstream.New(UpstreamOptions(cfg, upTLS, cache, log))
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
	// Serve registers the listener on its own goroutine: wait for it, so that a test asking /readyz at once does
	// not find "not listening yet".
	redistest.Eventually(t, 5*time.Second, "featcache serving its listener", func() bool {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		return len(srv.lns) > 0
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

// How tests talk to featcache and to Redis: raw commands on a connection, replies compared as bytes.

// bulk is s as a RESP bulk string.
func bulk(s string) string { return "$" + strconv.Itoa(len(s)) + "\r\n" + s + "\r\n" }

// expectDo sends one command and compares its raw reply.
func expectDo(t *testing.T, c *redistest.Conn, want string, args ...string) {
	t.Helper()
	if got := string(c.Do(args...)); got != want {
		t.Errorf("%q: got %q; want %q", args, got, want)
	}
}

// expectExec runs cmds as a transaction on c: MULTI, each command queued, then EXEC, whose raw reply must be want.
func expectExec(t *testing.T, c *redistest.Conn, want string, cmds ...[]string) {
	t.Helper()
	expectDo(t, c, "+OK\r\n", "MULTI")
	for _, cmd := range cmds {
		expectDo(t, c, "+QUEUED\r\n", cmd...)
	}
	expectDo(t, c, want, "EXEC")
}

// replyCase is a command and the raw reply it must get.
type replyCase struct {
	args []string
	want string
}

// expectReplies sends the command of each case, in order, on each of conns (featcache's, and Redis's where the
// reply is Redis's own) and compares the raw replies.
func expectReplies(t *testing.T, cases []replyCase, conns ...*redistest.Conn) {
	t.Helper()
	for _, tc := range cases {
		for _, c := range conns {
			expectDo(t, c, tc.want, tc.args...)
		}
	}
}

// expectRead reads one reply frame and compares it.
func expectRead(t *testing.T, c *redistest.Conn, want string) {
	t.Helper()
	got, err := c.Read()
	if err != nil {
		t.Fatalf("read: %v (got %q; want %q)", err, got, want)
	}
	if string(got) != want {
		t.Errorf("got %q; want %q", got, want)
	}
}

// encodePipeline encodes commands as one write, as a pipelining client sends them.
func encodePipeline(cmds ...[]string) []byte {
	var b []byte
	for _, c := range cmds {
		b = append(b, redistest.Encode(c...)...)
	}
	return b
}

// writeRaw writes b on c as it is.
func writeRaw(t *testing.T, c *redistest.Conn, b []byte) {
	t.Helper()
	c.NetConn().SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.NetConn().Write(b); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// readFrames reads n reply frames and returns them.
func readFrames(t *testing.T, c *redistest.Conn, n int) []string {
	t.Helper()
	frames := make([]string, 0, n)
	for i := 0; i < n; i++ {
		f, err := c.Read()
		if err != nil {
			t.Fatalf("reply %d of %d: %v (partial %q; before it %q)", i+1, n, err, f, frames)
		}
		frames = append(frames, string(f))
	}
	return frames
}

// expectPipeline writes cmds in one write and compares the concatenated replies, read up to and including the
// reply to a final PING sentinel: a reply that should not have been sent makes the bytes differ.
func expectPipeline(t *testing.T, c *redistest.Conn, want string, cmds ...[]string) {
	t.Helper()
	const sentinel = "sentinel-end-of-pipeline"
	cmds = append(cmds, []string{"PING", sentinel})
	writeRaw(t, c, encodePipeline(cmds...))
	end := "$" + strconv.Itoa(len(sentinel)) + "\r\n" + sentinel + "\r\n"
	var got strings.Builder
	for !strings.HasSuffix(got.String(), end) {
		f, err := c.Read()
		got.Write(f)
		if err != nil {
			t.Fatalf("pipeline: %v; got %q; want %q", err, got.String(), want+end)
		}
	}
	if got.String() != want+end {
		t.Errorf("pipeline %q:\n got %q;\nwant %q", cmds, got.String(), want+end)
	}
}

// expectClosed checks that the server closes c within d without sending anything more.
func expectClosed(t *testing.T, c *redistest.Conn, d time.Duration) {
	t.Helper()
	got, err := c.ReadTimeout(d)
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		t.Errorf("connection still open after %v", d)
	case len(got) > 0:
		t.Errorf("got %q before the close; want nothing", got)
	case err != nil && !errors.Is(err, io.EOF) && !isConnReset(err):
		t.Errorf("read: %v; want EOF", err)
	case err == nil:
		t.Errorf("got a reply; want the connection closed")
	}
}

func isConnReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && strings.Contains(op.Err.Error(), "connection reset")
}

// compareWithRedis sends the same pipeline to featcache (fc) and directly to a Redis (rc) and requires the
// same reply bytes, frame by frame; want, when not nil, pins the expected frames too.
func compareWithRedis(t *testing.T, fc, rc *redistest.Conn, want []string, cmds ...[]string) {
	t.Helper()
	payload := encodePipeline(cmds...)
	writeRaw(t, fc, payload)
	writeRaw(t, rc, payload)
	got := readFrames(t, fc, len(cmds))
	ref := readFrames(t, rc, len(cmds))
	for i := range cmds {
		if got[i] != ref[i] {
			t.Errorf("%q: got %q; want %q (Redis)", cmds[i], got[i], ref[i])
		}
		if want != nil && ref[i] != want[i] {
			t.Errorf("%q: Redis sent %q; the test expects %q", cmds[i], ref[i], want[i])
		}
	}
}

// upstreamConns returns the CLIENT LIST lines of the connections to redis whose name begins with prefix:
// "featcache" for all of featcache's, "featcache-tracking" for those of its tracking (with rueidis's idle one). A
// Redis that does not answer CLIENT LIST (while it loads its data, say) lists none.
func upstreamConns(redis *redistest.Server, prefix string) []string {
	return connsVia(redis.Do, prefix)
}

// connsVia is upstreamConns through do, a command on a connection of the caller's (one opened before Redis
// refuses new ones, as at maxclients).
func connsVia(do func(args ...string) []byte, prefix string) []string {
	list, _, _ := resp.BulkPayload(do("CLIENT", "LIST"))
	var lines []string
	for _, line := range strings.Split(string(list), "\n") {
		if strings.HasPrefix(clientField(line, "name"), prefix) {
			lines = append(lines, line)
		}
	}
	return lines
}

// trackingConns returns the CLIENT LIST lines of featcache's tracking connections to redis, those with tracking
// on (flag t): rueidis, which carries tracking, keeps a second, idle connection of the same name.
func trackingConns(redis *redistest.Server) []string {
	var lines []string
	for _, line := range upstreamConns(redis, "featcache-tracking") {
		if strings.Contains(clientField(line, "flags"), "t") {
			lines = append(lines, line)
		}
	}
	return lines
}

// trackingID returns the CLIENT ID of featcache's tracking connection to redis, or "" when it has none.
func trackingID(redis *redistest.Server) string {
	if lines := trackingConns(redis); len(lines) > 0 {
		return clientField(lines[0], "id")
	}
	return ""
}

// killConns closes the connections of CLIENT LIST lines (CLIENT KILL ID) and returns how many Redis closed.
func killConns(redis *redistest.Server, lines []string) int { return killVia(redis.Do, lines) }

// killVia is killConns through do (see connsVia).
func killVia(do func(args ...string) []byte, lines []string) int {
	killed := 0
	for _, line := range lines {
		if string(do("CLIENT", "KILL", "ID", clientField(line, "id"))) == ":1\r\n" {
			killed++
		}
	}
	return killed
}

// clientList returns the lines of CLIENT LIST on c (featcache's, or Redis's own).
func clientList(t *testing.T, c *redistest.Conn) []string {
	t.Helper()
	return listLines(t, c.Do("CLIENT", "LIST"))
}

// clientField returns the value of a field of a CLIENT LIST line.
func clientField(line, name string) string {
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, name+"="); ok {
			return v
		}
	}
	return ""
}

// listLines reads a CLIENT LIST reply into its lines.
func listLines(t *testing.T, reply []byte) []string {
	t.Helper()
	v, isNil, ok := resp.BulkPayload(reply)
	if !ok || isNil {
		t.Fatalf("CLIENT LIST: got %q; want a bulk string", reply)
	}
	s := strings.TrimSuffix(string(v), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}
