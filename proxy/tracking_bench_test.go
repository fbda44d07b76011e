package proxy

import (
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
	b.SetBytes(1024)
	runHitPathWith(b, srv, resp.AppendCommand(nil, "GET", "key:37"), func(c *client) {
		srv.ctrack.enable(c, trackState{})
		b.Cleanup(func() { srv.ctrack.disable(c) })
	})
	if _, keys := srv.ctrack.size(); keys != 1 {
		b.Fatalf("keys remembered: %d; want 1", keys)
	}
}
