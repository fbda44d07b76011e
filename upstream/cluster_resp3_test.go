package upstream

import (
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"featcache/internal/redistest"
)

// TestClusterRESP3Payload: a payload's commands between AppendHello(3) and AppendHello(2) run in RESP3 on the
// masters they go to, whether the payload goes to one master (sent as it is) or to several (each master's part
// wrapped by the router), and the shared connections are left in RESP2.
func TestClusterRESP3Payload(t *testing.T) {
	cl := redistest.StartCluster(t, 3, 0)
	c, err := New(Options{
		Addresses: []string{cl.Masters[0].Addr()}, Conns: 1, Cache: &recorder{},
		Timeout: time.Second, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	keys, owners := keysOn(t, cl, 2)
	for i, k := range keys {
		owners[i].Do("HSET", k, "f", "v")
	}
	const map3, array2 = "%1\r\n$1\r\nf\r\n$1\r\nv\r\n", "*2\r\n$1\r\nf\r\n$1\r\nv\r\n"
	frames := func(p *Payload) []string {
		t.Helper()
		call := NewCall()
		if err := c.Forward(call, p); err != nil {
			t.Fatal(err)
		}
		var out []string
		for i := 0; i < call.Len(); i++ {
			out = append(out, string(call.Frame(i)))
		}
		return out
	}
	for _, tt := range []struct {
		name string
		keys []string
	}{
		{"one master", keys[:1]},
		{"two masters", keys},
	} {
		var p Payload
		p.AppendKey("HGETALL", []byte(tt.keys[0])) // RESP2 before the switch
		p.AppendHello(3)
		for _, k := range tt.keys {
			p.AppendKey("HGETALL", []byte(k))
		}
		p.AppendHello(2)
		p.AppendKey("HGETALL", []byte(tt.keys[0]))
		got := frames(&p)
		n := len(tt.keys)
		if len(got) != n+4 || got[0] != array2 || !strings.HasPrefix(got[1], "%7\r\n$6\r\nserver\r\n") ||
			got[n+3] != array2 {
			t.Fatalf("%s: got %q", tt.name, got)
		}
		for i := range tt.keys {
			if got[2+i] != map3 {
				t.Errorf("%s: HGETALL %s in RESP3: got %q; want %q", tt.name, tt.keys[i], got[2+i], map3)
			}
		}
		// Every shared connection (one per master) speaks RESP2 again.
		var q Payload
		for _, k := range keys {
			q.AppendKey("HGETALL", []byte(k))
		}
		if got := frames(&q); !slices.Equal(got, []string{array2, array2}) {
			t.Errorf("%s: afterwards, in RESP2: got %q", tt.name, got)
		}
	}
}

// TestClusterKeyspace: a keyspace stream in front of a cluster has a connection on every master, delivers the
// invalidations of writes on each, reports up once every connection is, lost when one is killed, and closes them
// all.
func TestClusterKeyspace(t *testing.T) {
	cl := redistest.StartCluster(t, 3, 0)
	c, err := New(Options{
		Addresses: []string{cl.Masters[0].Addr()}, Tracking: true, Prefixes: []string{"cached:"}, Cache: &recorder{},
		Timeout: time.Second, HealthInterval: 50 * time.Millisecond, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var mu sync.Mutex
	var got []string
	var ups, losts int
	ks, err := c.TrackKeyspace(TrackerOptions{
		Prefixes: []string{"ks:"},
		OnInvalidate: func(keys [][]byte) {
			mu.Lock()
			defer mu.Unlock()
			for _, k := range keys {
				got = append(got, string(k))
			}
		},
		OnFlush: func() {},
		OnUp:    func(string) { mu.Lock(); ups++; mu.Unlock() },
		OnLost:  func(error) { mu.Lock(); losts++; mu.Unlock() },
	})
	if err != nil {
		t.Fatal(err)
	}
	if ks.Addr() != "" {
		t.Errorf("Addr in front of a cluster: %q; want \"\"", ks.Addr())
	}
	redistest.Eventually(t, 10*time.Second, "the stream up on every master", ks.Up)
	mu.Lock()
	if ups != 1 {
		t.Errorf("OnUp called %d times once every master's connection was up; want 1", ups)
	}
	mu.Unlock()
	conns := func(m *redistest.Server) int {
		n := 0
		for _, line := range strings.Split(string(m.Do("CLIENT", "LIST")), "\n") {
			if strings.Contains(line, " name=featcache-tracking ") && strings.Contains(line, " flags=t") {
				n++
			}
		}
		return n
	}
	for _, m := range cl.Masters {
		if n := conns(m); n != 2 {
			t.Errorf("%s: %d tracking connections; want 2 (the policies' and the keyspace stream's)", m.Addr(), n)
		}
	}
	keys, owners := keysOn(t, cl, 3)
	for i := range keys {
		keys[i] = "ks:{" + keys[i] + "}" // on the same master
		owners[i].Do("SET", keys[i], "v")
		owners[i].Do("SET", "other:"+keys[i], "v") // outside the prefixes
	}
	redistest.Eventually(t, 5*time.Second, "an invalidation from every master", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) >= 3
	})
	mu.Lock()
	slices.Sort(got)
	if want := slices.Sorted(slices.Values(keys)); !slices.Equal(got, want) {
		t.Errorf("invalidations: got %q; want %q", got, want)
	}
	mu.Unlock()

	// Closing the stream closes its connection on every master, and the policies' stay.
	ks.Close()
	redistest.Eventually(t, 5*time.Second, "the stream's connections closed", func() bool {
		for _, m := range cl.Masters {
			if conns(m) != 1 {
				return false
			}
		}
		return true
	})
	mu.Lock()
	if losts != 0 {
		t.Errorf("OnLost called %d times by Close; want 0", losts)
	}
	mu.Unlock()
}
