package proxy

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync/atomic"
	"testing"

	"featcache/config"
	"featcache/internal/resp"
	"featcache/localcache"
	"featcache/upstream"
)

// repeatReader returns the same payload forever, like a client sending the same pipeline again and again.
type repeatReader struct{ data []byte }

func (r *repeatReader) Read(p []byte) (int, error) { return copy(p, r.data), nil }

// benchServer is a Server whose tier holds keys key:0..n-1 with 1 KiB values; its upstream is never reached.
func benchServer(b *testing.B, n int) *Server { return benchServerWith(b, n, defaultTestConfig) }

// benchServerWith is benchServer with another configuration; its first policy must cache key:*.
func benchServerWith(b *testing.B, n int, yamlCfg string) *Server {
	b.Helper()
	cfg, err := config.Parse([]byte(yamlCfg))
	if err != nil {
		b.Fatal(err)
	}
	cache, err := localcache.New(localcache.Options{MaxMemory: 64 << 20})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(cache.Close)
	up, err := upstream.New(upstream.Options{Addresses: []string{"127.0.0.1:1"}, Cache: cache})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(up.Close)
	srv, err := New(Options{Config: cfg, Cache: cache, Upstream: up, Commands: embeddedCommands(b), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	lp := &srv.policies.Load().local[0]
	val := bytes.Repeat([]byte("v"), 1024)
	for i := 0; i < n; i++ {
		f, _ := cache.Acquire([]byte("key:" + strconv.Itoa(i)))
		cache.Complete(f, localcache.Result{Value: val, PTTL: -1}, lp)
	}
	return srv
}

// benchHitPath runs pipelines of GET hits through the reader and the request path, replies discarded.
func benchHitPath(b *testing.B, pipeline int) { benchHitPathWith(b, pipeline, defaultTestConfig) }

func benchHitPathWith(b *testing.B, pipeline int, yamlCfg string) {
	srv := benchServerWith(b, 1000, yamlCfg)
	var payload []byte
	for i := 0; i < pipeline; i++ {
		payload = resp.AppendCommand(payload, "GET", "key:"+strconv.Itoa(i*37%1000))
	}
	b.SetBytes(int64(pipeline) * 1024)
	runHitPath(b, srv, payload)
}

// runHitPath reads payload again and again through a client of srv and runs it through the request path, replies
// discarded, with the per-batch work serve does around a batch (its latency); every read must be a hit.
func runHitPath(b *testing.B, srv *Server, payload []byte) { runHitPathProto(b, srv, payload, 2) }

// runHitPathProto is runHitPath for a client of protocol proto (3: after HELLO 3).
func runHitPathProto(b *testing.B, srv *Server, payload []byte, proto int) {
	runHitPathWith(b, srv, payload, func(c *client) { c.seg.proto = proto })
}

// runHitPathWith is runHitPath for a client that setup prepares first (its protocol, tracking on ...).
func runHitPathWith(b *testing.B, srv *Server, payload []byte, setup func(c *client)) {
	server, client := net.Pipe()
	defer server.Close()
	defer client.Close()
	c := srv.newClient(server)
	setup(c)
	c.rd = resp.NewReader(&repeatReader{data: payload}, resp.Limits{})
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		cmds, err := c.rd.ReadBatch(c.cmds[:0])
		if err != nil {
			b.Fatal(err)
		}
		c.cmds = cmds
		c.beginBatch()
		c.execBatch(cmds)
		c.out = c.out[:0] // as if written
		c.endBatch()
	}
	b.StopTimer()
	if hits := srv.Stats().Hits.Load(); hits < int64(b.N) {
		b.Fatalf("hits = %d; the benchmark did not hit", hits)
	}
}

func BenchmarkHitPathGet(b *testing.B)        { benchHitPath(b, 1) }
func BenchmarkHitPathPipeline16(b *testing.B) { benchHitPath(b, 16) }

// BenchmarkHitPathServe is BenchmarkHitPathGet through the client's whole serve loop: besides the reader and the
// request path, what every batch costs around them (CLIENT LIST's notes, the write of the replies, the buffers'
// trim and the memory account, the slow-log check). The connection hands the reader one GET per read and drops
// the replies.
func BenchmarkHitPathServe(b *testing.B) { benchHitPathServe(b, 1) }

// BenchmarkHitPathServePipeline16 is BenchmarkHitPathServe with pipelines of 16 GETs.
func BenchmarkHitPathServePipeline16(b *testing.B) { benchHitPathServe(b, 16) }

func benchHitPathServe(b *testing.B, pipeline int) {
	srv := benchServer(b, 1000)
	var payload []byte
	for i := 0; i < pipeline; i++ {
		payload = resp.AppendCommand(payload, "GET", "key:"+strconv.Itoa(i*37%1000))
	}
	b.SetBytes(int64(pipeline) * 1024)
	nc := &benchConn{data: payload}
	c := srv.newClient(nc)
	b.ReportAllocs()
	b.ResetTimer()
	nc.left = b.N
	c.serve()
	b.StopTimer()
	if nc.left != 0 || nc.written < int64(b.N*pipeline*1024) {
		b.Fatalf("reads left %d, %d bytes written; the loop stopped early", nc.left, nc.written)
	}
	if hits := srv.Stats().Hits.Load(); hits < int64(b.N) {
		b.Fatalf("hits = %d; the benchmark did not hit", hits)
	}
}

// benchConn is a client connection that sends data left times, then EOF, and drops what is written to it.
type benchConn struct {
	net.Conn // nil: only what serve calls on a plain connection is implemented
	data     []byte
	left     int
	written  int64
}

func (c *benchConn) Read(p []byte) (int, error) {
	if c.left == 0 {
		return 0, io.EOF
	}
	c.left--
	return copy(p, c.data), nil
}

func (c *benchConn) Write(p []byte) (int, error) { c.written += int64(len(p)); return len(p), nil }
func (c *benchConn) Close() error                { return nil }
func (c *benchConn) RemoteAddr() net.Addr        { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }

// BenchmarkHitPathMGET is an MGET of 8 keys, all answered from memory.
func BenchmarkHitPathMGET(b *testing.B) { benchHitPathMGET(b, 2) }

// benchHitPathMGET runs an MGET of 8 keys, all answered from memory, for a client of protocol proto.
func benchHitPathMGET(b *testing.B, proto int) {
	srv := benchServer(b, 1000)
	args := []string{"MGET"}
	for i := 0; i < 8; i++ {
		args = append(args, "key:"+strconv.Itoa(i*37%1000))
	}
	b.SetBytes(8 * 1024)
	runHitPathProto(b, srv, resp.AppendCommand(nil, args...), proto)
}

// BenchmarkHitPathHMGET is Feast's read from memory: HMGET of 8 features and the event time of one view, out of
// a hash holding two views (18 fields).
func BenchmarkHitPathHMGET(b *testing.B) {
	srv := benchServer(b, 0)
	ps := srv.policies.Load()
	lp := &ps.local[0]
	var fields [][]byte
	var reads []localcache.FieldRead
	for i := 0; i < 18; i++ {
		f := []byte("field-" + strconv.Itoa(i))
		fields = append(fields, f)
		reads = append(reads, localcache.FieldRead{Field: f, Value: bytes.Repeat([]byte("v"), 9), Policy: lp})
	}
	key := []byte("entity:1")
	f, _ := srv.cache.AcquireHash(key, localcache.HashFillID(fields, true))
	srv.cache.CompleteHash(f, localcache.Result{PTTL: -1}, &localcache.HashResult{Fields: reads, All: true, KeyPolicy: lp})
	args := []string{"HMGET", "entity:1"}
	for i := 0; i < 9; i++ {
		args = append(args, "field-"+strconv.Itoa(i))
	}
	runHitPath(b, srv, resp.AppendCommand(nil, args...))
}

// The same reads for a client that chose RESP3 with HELLO 3: what answering cached reads in RESP3 costs.
func BenchmarkHitPathGetRESP3(b *testing.B) {
	srv := benchServer(b, 1000)
	b.SetBytes(1024)
	runHitPathProto(b, srv, resp.AppendCommand(nil, "GET", "key:37"), 3)
}

func BenchmarkHitPathMGETRESP3(b *testing.B) { benchHitPathMGET(b, 3) }

// The hot-key tracker's share of the hit path: the same benchmarks with the tracker off (warm.hotkeys_size: 0).
const hotkeysOffConfig = defaultTestConfig + `
warm:
  hotkeys_size: 0
`

func BenchmarkHitPathGetHotkeysOff(b *testing.B)        { benchHitPathWith(b, 1, hotkeysOffConfig) }
func BenchmarkHitPathPipeline16HotkeysOff(b *testing.B) { benchHitPathWith(b, 16, hotkeysOffConfig) }

// BenchmarkHitPathGetTracking is BenchmarkHitPathGet for a client with CLIENT TRACKING on in the default mode:
// each GET served from memory also remembers its key for the client.
func BenchmarkHitPathGetTracking(b *testing.B) {
	srv := benchServer(b, 1000)
	b.SetBytes(1024)
	runHitPathWith(b, srv, resp.AppendCommand(nil, "GET", "key:37"), func(c *client) {
		srv.ctrack.enable(c, trackState{})
		b.Cleanup(func() { srv.ctrack.disable(c) })
	})
	if _, keys := srv.ctrack.size(); keys != 1 {
		b.Fatalf("keys remembered: %d; want 1", keys)
	}
}

// BenchmarkPassthroughSET is the pass-through path end to end: clients send SET of 1 KiB values under a cached
// policy, one command at a time on each connection, through featcache to a real redis-server and back; every
// SET travels over the shared upstream connections and invalidates its key. b.RunParallel's goroutines are the
// clients, 8 per GOMAXPROCS, each with its own connection; they run in the benchmark's process, so its CPU
// profile holds theirs too (proxy and upstream functions are featcache's).
func BenchmarkPassthroughSET(b *testing.B) {
	p := startProxy(b, defaultTestConfig)
	val := bytes.Repeat([]byte("v"), 1024)
	var next atomic.Int64
	b.SetBytes(int64(len(val)))
	b.SetParallelism(8)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		nc, err := net.Dial("tcp", p.addr)
		if err != nil {
			b.Error(err)
			return
		}
		defer nc.Close()
		cmd := resp.AppendCommand(nil, "SET", "key:"+strconv.FormatInt(next.Add(1), 10), string(val))
		reply := make([]byte, 64)
		for pb.Next() {
			if _, err := nc.Write(cmd); err != nil {
				b.Error(err)
				return
			}
			n, err := io.ReadAtLeast(nc, reply, len("+OK\r\n"))
			if err != nil || string(reply[:n]) != "+OK\r\n" {
				b.Errorf("SET: %q, %v", reply[:n], err)
				return
			}
		}
	})
}
