package warm

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"featcache/internal/redistest"
)

func TestHotKeysAcrossPolicies(t *testing.T) {
	h := NewHotKeys(10)
	h.Policy("a").Add([]byte("a:1"), 30)
	h.Policy("b").Add([]byte("b:1"), 50)
	h.Policy("a").Add([]byte("a:2"), 10)
	got := h.Top(2)
	if len(got) != 2 || got[0].Key != "b:1" || got[0].Policy != "b" || got[1].Key != "a:1" || got[1].Policy != "a" {
		t.Fatalf("Top(2) = %+v; want b:1 (b), a:1 (a)", got)
	}
	if h.Len() != 3 {
		t.Fatalf("Len = %d; want 3", h.Len())
	}
	if !h.SetSize(0) || h.Policy("a") != nil || h.Len() != 0 {
		t.Fatal("size 0 must turn the tracker off")
	}
}

// TestPersister: the list goes to the file and the sorted set, hottest first; an empty list is not written; with
// an upstream that evicts by LRU and hotkeys_touch set, the hot keys are TOUCHed.
func TestPersister(t *testing.T) {
	srv := redistest.Start(t, "--maxmemory-policy", "allkeys-lru")
	pool := testUpstream(t, srv.Addr())
	h := NewHotKeys(100)
	file := filepath.Join(t.TempDir(), "hot.txt")
	p := NewPersister(h, pool, PersistConfig{File: file, Zset: "hot", Size: 2, Interval: 50 * time.Millisecond, Touch: 1000},
		slog.New(slog.DiscardHandler))
	t.Cleanup(p.Close)

	if err := p.Persist(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := p.Stats(); st.FileWrites != 0 || st.ZsetWrites != 0 {
		t.Fatalf("an empty list was written: %+v", st)
	}
	h.Policy("a").Add([]byte("a:1"), 5)
	h.Policy("a").Add([]byte("a:2"), 9)
	h.Policy("a").Add([]byte("a:3"), 1)
	if err := p.Persist(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, File(file), 10); !slices.Equal(got, []string{"a:2", "a:1"}) {
		t.Fatalf("file holds %q; want the 2 hottest", got)
	}
	if got := string(srv.Do("ZREVRANGE", "hot", "0", "-1", "WITHSCORES")); got != "*4\r\n$3\r\na:2\r\n$1\r\n9\r\n$3\r\na:1\r\n$1\r\n5\r\n" {
		t.Fatalf("zset holds %q", got)
	}

	srv.Do("SET", "a:2", "v")
	os.Remove(file)
	before := p.Stats()
	p.Start()
	redistest.Eventually(t, 10*time.Second, "hot keys touched", func() bool { return p.Stats().Touched >= 2 })
	// The loop writes the list every interval, not only when Persist is called.
	redistest.Eventually(t, 10*time.Second, "the list written by the loop", func() bool {
		st := p.Stats()
		return st.FileWrites > before.FileWrites && st.ZsetWrites > before.ZsetWrites
	})
	// Counts halve after each write (9, 5 -> 4, 2 -> 2, 1 -> 1, 0): a:2 stays first while anything is left.
	if got := readAll(t, File(file), 10); len(got) == 0 || len(got) > 2 || !slices.Equal(got, []string{"a:2", "a:1"}[:len(got)]) {
		t.Fatalf("file written by the loop holds %q; want the 2 hottest", got)
	}
	if st := p.Stats(); st.Eviction != "allkeys-lru" {
		t.Fatalf("eviction policy %q; want allkeys-lru", st.Eviction)
	}
	if info := string(srv.Do("INFO", "commandstats")); !strings.Contains(info, "cmdstat_touch:") {
		t.Fatalf("no TOUCH reached Redis:\n%s", info)
	}
}

// TestPersisterWarnsOnEvictionByAccess: at Start, an upstream whose maxmemory-policy evicts by LRU or LFU gets a
// warning, which says whether hot keys are touched (hotkeys_touch) or how to have them touched; one that does not
// evict by access gets none.
func TestPersisterWarnsOnEvictionByAccess(t *testing.T) {
	srv := redistest.Start(t)
	pool := testUpstream(t, srv.Addr())
	const warning = `level=WARN msg="hot keys: the upstream evicts by access`
	for _, tc := range []struct {
		policy string
		touch  int
		want   string // "" for no warning
	}{
		{"allkeys-lru", 0, "may evict the hottest keys first; set warm.hotkeys_touch to TOUCH them\" maxmemory_policy=allkeys-lru"},
		{"allkeys-lru", 100, "touching the hottest keys every hotkeys_interval\" maxmemory_policy=allkeys-lru hotkeys_touch=100"},
		{"volatile-lfu", 0, "set warm.hotkeys_touch to TOUCH them\" maxmemory_policy=volatile-lfu"},
		{"allkeys-random", 100, ""},
		{"noeviction", 0, ""},
	} {
		t.Run(tc.policy+" touch "+strconv.Itoa(tc.touch), func(t *testing.T) {
			srv.Do("CONFIG", "SET", "maxmemory-policy", tc.policy)
			var logs redistest.LogBuffer
			p := NewPersister(NewHotKeys(10), pool, PersistConfig{Size: 10, Interval: time.Minute, Touch: tc.touch},
				slog.New(slog.NewTextHandler(&logs, nil)))
			p.Start()
			redistest.Eventually(t, 5*time.Second, "eviction policy read", func() bool { return p.Stats().Eviction != "" })
			p.Close()
			got := logs.String()
			switch {
			case tc.want == "" && strings.Contains(got, "evicts by access"):
				t.Fatalf("maxmemory-policy %s: warned:\n%s", tc.policy, got)
			case tc.want != "" && (!strings.Contains(got, warning) || !strings.Contains(got, tc.want)):
				t.Fatalf("maxmemory-policy %s, hotkeys_touch %d: the log is\n%s\nwant %q ... %q", tc.policy, tc.touch, got, warning, tc.want)
			}
		})
	}
}

// TestPersisterNoTouchWithoutEviction: a Redis that does not evict by access is never TOUCHed.
func TestPersisterNoTouchWithoutEviction(t *testing.T) {
	srv := redistest.Start(t)
	pool := testUpstream(t, srv.Addr())
	h := NewHotKeys(100)
	h.Policy("a").Add([]byte("a:1"), 5)
	p := NewPersister(h, pool, PersistConfig{Size: 10, Interval: 20 * time.Millisecond, Touch: 1000}, slog.New(slog.DiscardHandler))
	p.Start()
	redistest.Eventually(t, 5*time.Second, "eviction policy read", func() bool { return p.Stats().Eviction != "" })
	// Several intervals pass: counts decay to nothing, and nothing is touched.
	redistest.Eventually(t, 5*time.Second, "decayed", func() bool { return len(h.Top(1)) == 0 })
	p.Close()
	if st := p.Stats(); st.Touched != 0 || st.Eviction != "noeviction" {
		t.Fatalf("stats %+v; want nothing touched under noeviction", st)
	}
}
