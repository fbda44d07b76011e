package proxy

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"featcache/internal/redistest"
)

// TestAdmissionFilter: with local.admission_threshold 3 and a 1MB tier that has had to evict, a key's first two
// misses are answered from Redis (the same bytes as Redis's own reply, to every GET of a pipeline that waited on the
// fill) without being stored, its third miss is stored, and the next GET is a hit; keys loaded by CACHE WARM are
// stored on their first read from Redis; and a write still invalidates an admitted key.
func TestAdmissionFilter(t *testing.T) {
	p := startProxy(t, `
local:
  max_memory: 1MB
  admission_threshold: 3
warm:
  rate: 1000000
policies:
  - {name: f, prefix: "f:", hard_ttl: 1h}
`)
	p.redis.Do("SET", "f:new", "fresh-value")
	fc := fillUntilEvicting(t, p)

	want := string(p.redis.Do("GET", "f:new"))
	for n := 1; n <= 4; n++ {
		gets := p.redis.Calls("get")
		// A pipeline of three GETs of the key in one write: one fill, whose result every GET gets.
		get := redistest.Encode("GET", "f:new")
		if _, err := fc.NetConn().Write([]byte(string(get) + string(get) + string(get))); err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			r, err := fc.Read()
			if err != nil || string(r) != want {
				t.Fatalf("round %d, GET %d through featcache: %q, %v; Redis answers %q", n, i, r, err, want)
			}
		}
		wantReads := 1
		if n == 4 {
			wantReads = 0 // stored by the third round's fill
		}
		if got := p.redis.Calls("get") - gets; got != wantReads {
			t.Errorf("round %d: %d upstream GETs; want %d", n, got, wantReads)
		}
	}
	if got := p.cache.Stats().NotAdmitted; got < 2 {
		t.Errorf("NotAdmitted %d; want at least the key's first two fills", got)
	}
	if st := string(fc.Do("CACHE", "STATS")); !strings.Contains(st, "fills_not_admitted:") {
		t.Errorf("CACHE STATS has no fills_not_admitted line:\n%s", st)
	}

	// Warmed keys skip the filter: loaded once, then read without an upstream read. The SETs' invalidations are
	// applied first: one arriving after the warmer read its key would drop that entry, as it should.
	inval := p.cache.Stats().Invalidations
	for i := range 20 {
		p.redis.Do("SET", "f:warm:"+strconv.Itoa(i), "w"+strconv.Itoa(i))
	}
	redistest.Eventually(t, 10*time.Second, "the SETs' invalidations applied", func() bool {
		return p.cache.Stats().Invalidations >= inval+20
	})
	warmed := keyList("f:warm:", 0, 20)
	if got := string(fc.Do("CACHE", "WARM", "FILE", writeKeysFile(t, warmed))); got != "+OK\r\n" {
		t.Fatalf("CACHE WARM FILE: %q", got)
	}
	redistest.Eventually(t, 10*time.Second, "warmed", func() bool {
		st := p.srv.warmer.Stats()
		return st.Fetched+st.Present >= int64(len(warmed)) && !st.Running
	})
	gets := p.redis.Calls("get")
	for _, k := range warmed {
		if got, want := string(fc.Do("GET", k)), string(p.redis.Do("GET", k)); got != want {
			t.Fatalf("GET %s: %q; Redis answers %q", k, got, want)
		}
	}
	if got := p.redis.Calls("get") - gets - len(warmed); got != 0 { // the direct GETs above count too
		t.Errorf("reading %d warmed keys made %d upstream GETs through featcache; want 0", len(warmed), got)
	}

	// Read-your-writes is untouched: a write through featcache invalidates the admitted key.
	if got := string(fc.Do("SET", "f:new", "newer")); got != "+OK\r\n" {
		t.Fatalf("SET: %q", got)
	}
	if got, want := string(fc.Do("GET", "f:new")), string(p.redis.Do("GET", "f:new")); got != want {
		t.Errorf("GET after SET: %q; Redis answers %q", got, want)
	}
}

// fillUntilEvicting writes 3000 values of 900 bytes straight to Redis (f:fill:0 and on) and reads each through a
// new connection to featcache, whose 1MB tier has then had to evict: from then on an admission filter decides. It
// returns that connection.
func fillUntilEvicting(t *testing.T, p *testProxy) *redistest.Conn {
	t.Helper()
	big := strings.Repeat("x", 900)
	c := p.redis.Dial()
	defer c.Close()
	for i := range 3000 {
		if err := c.Send("SET", "f:fill:"+strconv.Itoa(i), big); err != nil {
			t.Fatal(err)
		}
	}
	for range 3000 {
		if r, err := c.Read(); err != nil || string(r) != "+OK\r\n" {
			t.Fatalf("SET: %q, %v", r, err)
		}
	}
	p.settle()
	fc := p.dial()
	for i := range 3000 {
		fc.Do("GET", "f:fill:"+strconv.Itoa(i))
	}
	if ls := p.cache.Stats(); ls.Evictions == 0 {
		t.Fatalf("the 1MB tier did not evict after 3000 fills of 900 bytes: %+v", ls)
	}
	return fc
}
