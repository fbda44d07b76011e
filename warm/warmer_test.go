package warm

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"featcache/internal/redistest"
	"featcache/upstream"
)

func TestKeyLines(t *testing.T) {
	keys := []string{"plain", "with space", "", "\"quoted", "new\nline", "cr\r", "tab\tand\x00nul", "ümlaut", "end\\"}
	var file []byte
	for _, k := range keys {
		file = AppendKeyLine(file, []byte(k))
	}
	path := filepath.Join(t.TempDir(), "keys.txt")
	if err := os.WriteFile(path, append(file, "\n\r\n"...), 0o644); err != nil { // blank lines are skipped
		t.Fatal(err)
	}
	got := readAll(t, File(path), 3)
	if !slices.Equal(got, keys) {
		t.Fatalf("read back %q; want %q", got, keys)
	}
	// A file written by hand on Windows.
	if err := os.WriteFile(path, []byte("a\r\nb\r\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, File(path), 10); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("CRLF file: %q", got)
	}
	if err := os.WriteFile(path, []byte("a\n\"unterminated\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := File(path).Keys(context.Background(), 10, func([][]byte) bool { return true }); err == nil {
		t.Fatal("a bad quoted line was accepted")
	}
	if err := File(filepath.Join(t.TempDir(), "none")).Keys(context.Background(), 10, nil); !errors.Is(err, ErrNoSource) {
		t.Fatalf("missing file: %v; want ErrNoSource", err)
	}
}

func TestWriteKeysFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hot.txt")
	if err := WriteKeysFile(path, []HotKey{{Key: "b", Count: 9}, {Key: "a\nb", Count: 3}}); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, File(path), 10); !slices.Equal(got, []string{"b", "a\nb"}) {
		t.Fatalf("got %q", got)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("temporary files left behind: %v", entries)
	}
	if err := WriteKeysFile(filepath.Join(t.TempDir(), "no", "such", "dir"), nil); err == nil {
		t.Fatal("writing into a missing directory succeeded")
	}
}

func readAll(t *testing.T, src Source, batch int) []string {
	t.Helper()
	var out []string
	err := src.Keys(context.Background(), batch, func(keys [][]byte) bool {
		if len(keys) > batch {
			t.Fatalf("batch of %d > %d", len(keys), batch)
		}
		for _, k := range keys {
			out = append(out, string(k))
		}
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// testUpstream is featcache's upstream client for the Redis at addr, without tracking.
func testUpstream(t *testing.T, addr string) *upstream.Client {
	t.Helper()
	c, err := upstream.New(upstream.Options{Addresses: []string{addr}, Cache: noInvalidations{}, Timeout: time.Second,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// noInvalidations is a local tier for an upstream client without tracking: it is never told anything.
type noInvalidations struct{}

func (noInvalidations) Invalidate(...[]byte) {}
func (noInvalidations) Flush()               {}
func (noInvalidations) SetTrusted(bool)      {}

// TestZsetSource: members come highest score first, in pages; WriteZset replaces the set whole.
func TestZsetSource(t *testing.T) {
	srv := redistest.Start(t)
	pool := testUpstream(t, srv.Addr())
	var keys []HotKey
	for i := 0; i < 25; i++ {
		keys = append(keys, HotKey{Key: "k" + strconv.Itoa(i), Count: uint64(100 - i)})
	}
	srv.Do("ZADD", "hot", "1000", "stale-member")
	if err := WriteZset(pool, "hot", keys); err != nil {
		t.Fatal(err)
	}
	got := readAll(t, Zset{Key: "hot", Pool: pool}, 10)
	var want []string
	for _, k := range keys {
		want = append(want, k.Key)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("got %q; want %q", got, want)
	}
	if err := (Zset{Key: "missing", Pool: pool}).Keys(context.Background(), 10, nil); !errors.Is(err, ErrNoSource) {
		t.Fatalf("missing zset: %v; want ErrNoSource", err)
	}
	srv.Do("SET", "str", "x")
	if err := (Zset{Key: "str", Pool: pool}).Keys(context.Background(), 10, nil); err == nil {
		t.Fatal("a string key read as a sorted set")
	}
}

// fakeFiller records the keys it is given; keys starting with "skip" are skipped, keys in present are present,
// and it fails the first fails calls.
type fakeFiller struct {
	mu      sync.Mutex
	keys    []string
	present map[string]bool
	fails   int
	calls   int
}

func (f *fakeFiller) WarmFill(keys [][]byte) (Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.fails > 0 {
		f.fails--
		return Result{}, errors.New("upstream down")
	}
	var r Result
	for _, k := range keys {
		switch s := string(k); {
		case len(s) >= 4 && s[:4] == "skip":
			r.Skipped++
		case f.present[s]:
			r.Present++
		default:
			r.Fetched++
			f.keys = append(f.keys, s)
		}
	}
	return r, nil
}

type listSource []string

func (l listSource) String() string { return "list" }

func (l listSource) Keys(ctx context.Context, batch int, yield func([][]byte) bool) error {
	for i := 0; i < len(l); i += batch {
		var keys [][]byte
		for _, k := range l[i:min(i+batch, len(l))] {
			keys = append(keys, []byte(k))
		}
		if !yield(keys) {
			return nil
		}
	}
	return nil
}

func keysN(prefix string, n int) listSource {
	out := make(listSource, n)
	for i := range out {
		out[i] = prefix + strconv.Itoa(i)
	}
	return out
}

// TestWarmerReadyAfter: readiness turns true once ready_after keys are loaded, skipped keys do not count, a missing
// optional list does not stop the warm-up, failed batches are retried, and the rest loads after ready.
func TestWarmerReadyAfter(t *testing.T) {
	f := &fakeFiller{present: map[string]bool{"k0": true}, fails: 2}
	w := New(Options{Filler: f, Rate: 1000000, ReadyAfter: 150, Batch: 50, Logger: slog.New(slog.DiscardHandler)})
	t.Cleanup(w.Close)
	if w.Ready() {
		t.Fatal("ready before Start")
	}
	missing := File(filepath.Join(t.TempDir(), "absent"))
	w.Start([]Source{missing}, []Source{append(keysN("skip", 100), keysN("k", 300)...)})
	redistest.Eventually(t, 10*time.Second, "warm-up done", func() bool { st := w.Stats(); return st.Ready && !st.Running && st.SourcesDone == 1 })
	st := w.Stats()
	if st.Fetched != 299 || st.Present != 1 || st.Skipped != 100 || st.StartupLoaded != 300 || st.Retries != 2 || st.SourcesFailed != 1 {
		t.Fatalf("stats %+v; want fetched 299, present 1, skipped 100, loaded 300, 2 retries, 1 failed source", st)
	}
}

// TestWarmerReadyWithoutKeys: with fewer keys than ready_after, the end of the sources is enough; a later
// Enqueue runs after it.
func TestWarmerReadyWithoutKeys(t *testing.T) {
	f := &fakeFiller{}
	w := New(Options{Filler: f, Rate: 1000000, ReadyAfter: 1000, Logger: slog.New(slog.DiscardHandler)})
	t.Cleanup(w.Close)
	w.Start(nil, []Source{keysN("a", 10)})
	redistest.Eventually(t, 5*time.Second, "ready", w.Ready)
	w.Enqueue(keysN("b", 5))
	redistest.Eventually(t, 5*time.Second, "enqueued warm-up done", func() bool { return w.Stats().Fetched == 15 })
}

// TestWarmerReadyTimeout: a warm-up stuck on a failing upstream makes the instance ready after ready_timeout.
func TestWarmerReadyTimeout(t *testing.T) {
	f := &fakeFiller{fails: 1 << 30}
	w := New(Options{Filler: f, Rate: 1000000, ReadyAfter: 10, ReadyTimeout: 200 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	t.Cleanup(w.Close)
	w.Start(nil, []Source{keysN("a", 100)})
	redistest.Eventually(t, 5*time.Second, "ready after the timeout", w.Ready)
	if st := w.Stats(); st.StartupLoaded != 0 || !st.Running {
		t.Fatalf("stats %+v; want nothing loaded and the warm-up still running", st)
	}
}

// TestWarmerRate: 600 keys at 2,000 keys per second take about 0.3 s (the first batch is free: the burst).
func TestWarmerRate(t *testing.T) {
	f := &fakeFiller{}
	w := New(Options{Filler: f, Rate: 2000, Batch: 100, Logger: slog.New(slog.DiscardHandler)})
	t.Cleanup(w.Close)
	start := time.Now()
	w.Enqueue(keysN("a", 600))
	redistest.Eventually(t, 10*time.Second, "warm-up done", func() bool { return w.Stats().Fetched == 600 })
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Fatalf("600 keys at 2000/s took %v; want at least 250ms", d)
	}
	// Keys found cached are given back to the rate limit: the same list again is not slowed down.
	f.mu.Lock()
	for _, k := range f.keys {
		if f.present == nil {
			f.present = map[string]bool{}
		}
		f.present[k] = true
	}
	f.mu.Unlock()
	start = time.Now()
	w.Enqueue(keysN("a", 600))
	redistest.Eventually(t, 10*time.Second, "second warm-up done", func() bool { return w.Stats().Present == 600 })
	if d := time.Since(start); d > 200*time.Millisecond {
		t.Logf("re-running a cached list took %v (load on the machine?)", d)
	}
}

// TestWarmerLogsProgress: a start-up warm-up of a sorted set in Redis logs its start with the rate, its progress
// every ProgressInterval with growing counts, when it turns ready, and when it is done.
func TestWarmerLogsProgress(t *testing.T) {
	srv := redistest.Start(t)
	pool := testUpstream(t, srv.Addr())
	args := []string{"ZADD", "warm"}
	for i := 0; i < 1000; i++ {
		args = append(args, strconv.Itoa(1000-i), "k"+strconv.Itoa(i))
	}
	srv.Do(args...)
	var logs redistest.LogBuffer
	w := New(Options{Filler: &fakeFiller{}, Rate: 2000, Batch: 100, ReadyAfter: 500, ProgressInterval: 50 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	t.Cleanup(w.Close)
	w.Start(nil, []Source{Zset{Key: "warm", Pool: pool}})
	redistest.Eventually(t, 20*time.Second, "warm-up done", func() bool { st := w.Stats(); return st.SourcesDone == 1 && !st.Running })
	redistest.Eventually(t, 5*time.Second, "done logged", func() bool { return strings.Contains(logs.String(), `msg="warm-up: done"`) })

	text := logs.String()
	for _, want := range []string{
		`level=INFO msg="warm-up: started" kind=start-up sources="zset warm" rate=2000`,
		`level=INFO msg="warm-up: ready" reason="ready_after keys loaded" loaded=500 ready_after=500`,
		`level=INFO msg="warm-up: done" kind=start-up sources="zset warm" fetched=1000 present=0 skipped=0 retries=0`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the log lacks %q:\n%s", want, text)
		}
	}
	progress := regexp.MustCompile(`level=INFO msg="warm-up: progress" source="zset warm" fetched=(\d+) present=0 skipped=0 startup_loaded=(\d+) ready=(true|false) elapsed=`)
	lines := progress.FindAllStringSubmatch(text, -1)
	if len(lines) < 2 {
		t.Fatalf("%d progress lines for a warm-up of about 0.5s logging every 50ms; want at least 2:\n%s", len(lines), text)
	}
	last := 0
	for _, m := range lines {
		fetched, _ := strconv.Atoi(m[1])
		if loaded, _ := strconv.Atoi(m[2]); fetched <= last || fetched > 1000 || loaded != fetched || (m[3] == "true") != (loaded >= 500) {
			t.Fatalf("progress line %q after fetched=%d: want growing counts, startup_loaded equal to fetched, ready from 500 on", m[0], last)
		}
		last = fetched
	}
}

func TestLimiter(t *testing.T) {
	l := newLimiter(1000, 10)
	ctx := context.Background()
	start := time.Now()
	for i := 0; i < 30; i++ {
		if err := l.take(ctx, 10); err != nil {
			t.Fatal(err)
		}
	}
	// 300 keys at 1000/s with a burst of 50 (a twentieth of a second): at least 250 ms.
	if d := time.Since(start); d < 240*time.Millisecond {
		t.Fatalf("300 keys at 1000/s took %v", d)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := l.take(cctx, 1000); err == nil {
		t.Fatal("take with a cancelled context waited for nothing")
	}
}

// sizedFiller reads values of size bytes each, and fails its first fails calls of more than failAbove keys, as
// round trips that cannot arrive within the upstream timeout do.
type sizedFiller struct {
	mu        sync.Mutex
	size      int
	failAbove int
	fails     int
	calls     []int // keys per call
}

func (f *sizedFiller) WarmFill(keys [][]byte) (Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, len(keys))
	if f.fails > 0 && len(keys) > f.failAbove {
		f.fails--
		return Result{}, errors.New("no reply within timeout")
	}
	return Result{Fetched: len(keys), Bytes: len(keys) * f.size}, nil
}

// TestWarmerBatchBytes: calls of the Filler start at 16 keys and grow twofold up to Batch while values are small
// (a call ends where the source's batch of 200 keys does);
// with values of 1MB they hold BatchBytes' worth (4 keys); a call that fails is tried again with half as many
// keys, down to what gets through, and calls grow again from there.
func TestWarmerBatchBytes(t *testing.T) {
	for _, tc := range []struct {
		name        string
		filler      *sizedFiller
		want        []int // keys of the first calls
		wantRetries int64
	}{
		{"small values", &sizedFiller{size: 300}, []int{16, 32, 64, 88, 200, 200}, 0},
		{"1MB values", &sizedFiller{size: 1 << 20}, []int{16, 4, 4}, 0},
		{"failing above 5 keys", &sizedFiller{size: 100, failAbove: 5, fails: 2}, []int{16, 8, 4, 8, 16, 32}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := New(Options{Filler: tc.filler, Rate: 1000000, Logger: slog.New(slog.DiscardHandler)})
			t.Cleanup(w.Close)
			w.Enqueue(keysN("k", 1000))
			redistest.Eventually(t, 20*time.Second, "warm-up done", func() bool { return w.Stats().Fetched == 1000 })
			tc.filler.mu.Lock()
			calls := tc.filler.calls
			tc.filler.mu.Unlock()
			if len(calls) < len(tc.want) || !slices.Equal(calls[:len(tc.want)], tc.want) {
				t.Fatalf("keys per call %v; want it to start %v", calls, tc.want)
			}
			if r := w.Stats().Retries; r < tc.wantRetries {
				t.Fatalf("%d retries; want at least %d", r, tc.wantRetries)
			}
		})
	}
}
