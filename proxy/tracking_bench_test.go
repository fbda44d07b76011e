package proxy

import (
	"net"
	"runtime"
	"strconv"
	"testing"

	"featcache/config"
	"featcache/internal/resp"
)

// BenchmarkTrackingTable measures what the default mode's table holds per tracked key: one client remembers b.N
// distinct keys of about 12 bytes; B/key is the heap's growth per key after a collection.
func BenchmarkTrackingTable(b *testing.B) {
	cfg := config.Default()
	cfg.Limits.MaxTrackedKeys = max(b.N, 1)
	t := newClientTracking(&Server{opt: Options{Config: cfg}})
	keys := make([][]byte, b.N)
	for i := range keys {
		keys[i] = []byte("feat:" + strconv.Itoa(1000000+i))
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	for i := range keys {
		t.remember(1, keys[i:i+1])
	}
	b.StopTimer()
	keys = nil
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/float64(b.N), "B/key")
	runtime.KeepAlive(t)
}

// BenchmarkHitPathGetTracking is BenchmarkHitPathGet for a client with CLIENT TRACKING on in the default mode:
// each GET served from memory also remembers its key for the client.
func BenchmarkHitPathGetTracking(b *testing.B) {
	srv := benchServer(b, 1000)
	payload := resp.AppendCommand(nil, "GET", "key:37")
	server, client := net.Pipe()
	defer server.Close()
	defer client.Close()
	c := srv.newClient(server)
	c.rd = resp.NewReader(&repeatReader{data: payload}, resp.Limits{})
	srv.ctrack.enable(c, trackState{})
	defer srv.ctrack.disable(c)
	b.SetBytes(1024)
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
		c.out = c.out[:0]
		c.endBatch()
	}
	b.StopTimer()
	if _, keys := srv.ctrack.size(); keys != 1 {
		b.Fatalf("keys remembered: %d; want 1", keys)
	}
}
