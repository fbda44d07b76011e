package proxy

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"featcache/internal/redistest"
	"featcache/internal/testkit"
	"featcache/warm"
)

// loadKeys writes prefix0..prefix{n-1} with values "v0".. to Redis, in pipelined MSETs.
func loadKeys(t testing.TB, redis *redistest.Server, prefix string, n int) {
	t.Helper()
	c := redistest.Dial(t, redis.Addr())
	defer c.Close()
	sent := 0
	for i := 0; i < n; i += 500 {
		args := []string{"MSET"}
		for j := i; j < min(i+500, n); j++ {
			args = append(args, prefix+strconv.Itoa(j), "v"+strconv.Itoa(j))
		}
		if err := c.Send(args...); err != nil {
			t.Fatal(err)
		}
		sent++
	}
	for ; sent > 0; sent-- {
		if r, err := c.Read(); err != nil || string(r) != "+OK\r\n" {
			t.Fatalf("MSET: %q, %v", r, err)
		}
	}
}

// writeKeysFile writes keys, one per line, and returns the file's path.
func writeKeysFile(t testing.TB, keys []string) string {
	t.Helper()
	var b []byte
	for _, k := range keys {
		b = warm.AppendKeyLine(b, []byte(k))
	}
	return testkit.WriteFile(t, t.TempDir(), "keys.txt", string(b))
}

func keyList(prefix string, from, to int) []string {
	out := make([]string, 0, to-from)
	for i := from; i < to; i++ {
		out = append(out, prefix+strconv.Itoa(i))
	}
	return out
}

// mgetAll reads keys through c with MGETs of 500 and checks each value is "v<i>" for key prefix<i>.
func mgetAll(t testing.TB, c *redistest.Conn, keys []string) {
	t.Helper()
	for i := 0; i < len(keys); i += 500 {
		part := keys[i:min(i+500, len(keys))]
		var want strings.Builder
		want.WriteString("*" + strconv.Itoa(len(part)) + "\r\n")
		for _, k := range part {
			want.WriteString(bulk("v" + k[strings.IndexByte(k, ':')+1:]))
		}
		if got := string(c.Do(append([]string{"MGET"}, part...)...)); got != want.String() {
			t.Fatalf("MGET %s..: got %.100q; want %.100q", part[0], got, want.String())
		}
	}
}

// TestReadyzGatesOnWarmup: /readyz answers 503 until the start-up warm-up has loaded ready_after of 5,000 keys,
// the rest loads in the background at the rate limit, reads of the warmed keys then cause no upstream read, and
// when Redis hangs (SIGSTOP) /readyz stays 200 while featcache_upstream_up drops to 0.
func TestReadyzGatesOnWarmup(t *testing.T) {
	redis := redistest.Start(t)
	const n = 5000
	loadKeys(t, redis, "w:", n)
	keys := keyList("w:", 0, n)
	file := writeKeysFile(t, append(append([]string(nil), keys...), "nopolicy:1", "nopolicy:2"))
	p := startProxyOn(t, redis, fmt.Sprintf(`
warm:
  sources: [{file: %q}]
  ready_after: 3000
  rate: 4000
policies:
  - {name: w, prefix: "w:", hard_ttl: 1h}
`, file))
	admin := p.adminURL()
	if code := httpStatus(t, admin, "/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz = %d before the warm-up; want 503", code)
	}
	if code := httpStatus(t, admin, "/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz = %d; want 200", code)
	}
	getsBefore := redis.Calls("get")
	start := time.Now()
	p.srv.StartWarmup()
	redistest.Eventually(t, 20*time.Second, "ready", func() bool { return httpStatus(t, admin, "/readyz") == http.StatusOK })
	m := scrapeMetrics(t, admin)
	if loaded := m.value(t, "featcache_warm_startup_loaded_keys"); loaded < 3000 {
		t.Fatalf("ready with %v keys loaded; want at least 3000", loaded)
	}
	t.Logf("ready after %v", time.Since(start).Round(time.Millisecond))
	redistest.Eventually(t, 20*time.Second, "the rest warmed in the background", func() bool {
		m := scrapeMetrics(t, admin)
		return m.value(t, "featcache_warm_running") == 0 && m.value(t, "featcache_warm_keys_total", "result", "fetched") == n
	})
	m = scrapeMetrics(t, admin)
	if got := m.value(t, "featcache_warm_keys_total", "result", "skipped"); got != 2 {
		t.Errorf("skipped = %v; want the 2 keys no policy caches", got)
	}
	if got := redis.Calls("get") - getsBefore; got != n {
		t.Errorf("the warm-up made %d upstream GETs; want %d", got, n)
	}

	getsBefore = redis.Calls("get")
	mgetAll(t, p.dial(), keys)
	if got := redis.Calls("get") - getsBefore; got != 0 {
		t.Fatalf("reading the %d warmed keys made %d upstream GETs; want 0", n, got)
	}
	if got := scrapeMetrics(t, admin).value(t, "featcache_requests_total", "policy", "w", "result", "hit"); got != n {
		t.Fatalf("hits = %v; want %d", got, n)
	}

	redis.Pause()
	defer redis.Resume()
	redistest.Eventually(t, 10*time.Second, "upstream_up 0 while Redis hangs", func() bool {
		return scrapeMetrics(t, admin).value(t, "featcache_upstream_up") == 0
	})
	for i := 0; i < 3; i++ {
		if code := httpStatus(t, admin, "/readyz"); code != http.StatusOK {
			t.Fatalf("/readyz = %d while Redis hangs; want 200", code)
		}
	}
	redis.Resume()
	redistest.Eventually(t, 10*time.Second, "upstream_up back to 1", func() bool {
		return scrapeMetrics(t, admin).value(t, "featcache_upstream_up") == 1
	})
}

// TestReadyzWaitsForUpstream: featcache started while Redis hangs (SIGSTOP), or before it listens, answers /readyz
// with 503 and the reason until Redis answers once, and 200 from then on.
func TestReadyzWaitsForUpstream(t *testing.T) {
	for _, tc := range []struct {
		name        string
		stop, start func(*redistest.Server)
	}{
		{"hung", (*redistest.Server).Pause, (*redistest.Server).Resume},
		{"not listening yet", (*redistest.Server).Kill, (*redistest.Server).Restart},
	} {
		t.Run(tc.name, func(t *testing.T) {
			redis := redistest.Start(t)
			tc.stop(redis)
			t.Cleanup(redis.Resume) // a stopped server would not die of the Kill at the end
			p := newProxyOn(t, redis, defaultTestConfig)
			admin := p.adminURL()
			const why = "not ready: waiting for a first answer from the upstream\n"
			for i := 0; i < 3; i++ {
				if code, body := testkit.Get(t, admin+"/readyz"); code != http.StatusServiceUnavailable || body != why {
					t.Fatalf("/readyz before Redis answered: %d %q; want 503 %q", code, body, why)
				}
			}
			if got := scrapeMetrics(t, admin).value(t, "featcache_ready"); got != 0 {
				t.Fatalf("featcache_ready = %v before Redis answered; want 0", got)
			}
			tc.start(redis)
			redistest.Eventually(t, 15*time.Second, "ready once Redis answers", func() bool {
				return httpStatus(t, admin, "/readyz") == http.StatusOK
			})
			redistest.Eventually(t, 10*time.Second, "tracking established", func() bool { _, up := p.up.Tracking(); return up })
			p.redis.Do("SET", "k", "v")
			p.settle()
			if got := p.do("GET", "k"); got != bulk("v") {
				t.Fatalf("GET k once ready: %q", got)
			}
		})
	}
}

// TestWarmNeverOverwritesNewerValue: while warm-ups load 2,000 keys again and again, clients write some of them
// through featcache and others directly to Redis; afterwards every key read through featcache equals Redis's
// value: no warm-up stored a value older than a write.
func TestWarmNeverOverwritesNewerValue(t *testing.T) {
	redis := redistest.Start(t)
	const n = 2000
	loadKeys(t, redis, "k:", n)
	keys := keyList("k:", 0, n)
	p := startProxyOn(t, redis, `
warm:
  rate: 1000000
policies:
  - {name: k, prefix: "k:", hard_ttl: 1h, jitter: 0}
`)
	p.srv.StartWarmup()
	file := writeKeysFile(t, keys)
	var writers testkit.Loops
	writer := func(addr string, seed uint64) {
		c := redistest.Dial(t, addr)
		rng := rand.New(rand.NewPCG(seed, seed))
		writers.Go(func(i int) bool {
			k := keys[rng.IntN(n)]
			err := c.Send("SET", k, "new-"+strconv.Itoa(i))
			var r []byte
			if err == nil {
				r, err = c.Read()
			}
			if err != nil || string(r) != "+OK\r\n" {
				t.Errorf("SET %s: %q, %v", k, r, err)
				return false
			}
			return true
		})
	}
	writer(p.addr, 1)       // through featcache: invalidated before the reply
	writer(redis.Addr(), 2) // directly: invalidated by tracking
	c := p.dial()
	const rounds = 8
	for round := 1; round <= rounds; round++ {
		c.Do("CACHE", "FLUSH") // so that every round fetches every key again, racing with the writes
		if got := string(c.Do("CACHE", "WARM", "FILE", file)); got != "+OK\r\n" {
			t.Fatalf("CACHE WARM: %q", got)
		}
		redistest.Eventually(t, 30*time.Second, "warm-up done", func() bool {
			st := p.srv.warmer.Stats()
			return st.SourcesDone == int64(round) && !st.Running
		})
	}
	writers.Stop()
	p.settle()
	for i := 0; i < n; i += 500 {
		part := keys[i:min(i+500, n)]
		args := append([]string{"MGET"}, part...)
		if got, want := string(c.Do(args...)), string(redis.Do(args...)); got != want {
			t.Fatalf("after the warm-ups, featcache serves %.200q; Redis holds %.200q", got, want)
		}
	}
}

// TestCacheWarmCommand: CACHE WARM ZSET loads a sorted set in the background; running it again reads nothing from
// the upstream (every key is already cached); bad sources are refused at once with an error.
func TestCacheWarmCommand(t *testing.T) {
	p := startProxy(t, `
warm:
  rate: 1000000
policies:
  - {name: z, prefix: "z:", hard_ttl: 1h}
`)
	const n = 1500
	loadKeys(t, p.redis, "z:", n)
	args := []string{"ZADD", "wanted"}
	for i := 0; i < n; i++ {
		args = append(args, strconv.Itoa(n-i), "z:"+strconv.Itoa(i))
	}
	p.redis.Do(args...)
	p.redis.Do("SET", "plain", "x")
	p.settle()
	c := p.dial()
	gets := p.redis.Calls("get")
	if got := string(c.Do("CACHE", "WARM", "ZSET", "wanted")); got != "+OK\r\n" {
		t.Fatalf("CACHE WARM ZSET: %q", got)
	}
	redistest.Eventually(t, 20*time.Second, "warmed", func() bool { st := p.srv.warmer.Stats(); return st.Fetched == n && !st.Running })
	if got := p.redis.Calls("get") - gets; got != n {
		t.Fatalf("first warm-up: %d upstream GETs; want %d", got, n)
	}
	gets = p.redis.Calls("get")
	if got := string(c.Do("cache", "warm", "zset", "wanted")); got != "+OK\r\n" {
		t.Fatalf("CACHE WARM ZSET again: %q", got)
	}
	redistest.Eventually(t, 20*time.Second, "warmed again", func() bool { st := p.srv.warmer.Stats(); return st.Present == n && !st.Running })
	if got := p.redis.Calls("get") - gets; got != 0 {
		t.Fatalf("re-running the warm-up made %d upstream GETs; want 0", got)
	}

	for _, tc := range []replyCase{
		{[]string{"CACHE", "WARM", "FILE", "/no/such/file"}, "-ERR cannot read \"/no/such/file\""},
		{[]string{"CACHE", "WARM", "ZSET", "plain"}, "-ERR \"plain\" is not a sorted set (TYPE: string)"},
		{[]string{"CACHE", "WARM", "LIST", "x"}, "-ERR CACHE WARM takes FILE <path> or ZSET <key>"},
		{[]string{"CACHE", "WARM", "FILE"}, "-ERR wrong number of arguments for 'cache|warm' command"},
	} {
		if got := string(c.Do(tc.args...)); !strings.HasPrefix(got, tc.want) {
			t.Errorf("%q: got %q; want %q...", tc.args, got, tc.want)
		}
	}
}

// TestRestartWarmsFromHotKeys: an instance serving traffic writes its hot keys to a file and a sorted set when it
// shuts down; a new instance warms from the file, and another whose disk was lost warms from the sorted set, so
// that reading the hot keys costs neither of them an upstream read.
func TestRestartWarmsFromHotKeys(t *testing.T) {
	redis := redistest.Start(t)
	loadKeys(t, redis, "h:", 20)
	loadKeys(t, redis, "c:", 300)
	file := filepath.Join(t.TempDir(), "hotkeys.txt")
	cfg := func(file string) string {
		return fmt.Sprintf(`
warm:
  ready_after: 20
  rate: 1000000
  hotkeys_file: %q
  hotkeys_zset: "featcache:hotkeys"
  hotkeys_size: 100
policies:
  - {name: h, prefix: "h:", hard_ttl: 1h}
  - {name: c, prefix: "c:", hard_ttl: 1h}
`, file)
	}
	first := startProxyOn(t, redis, cfg(file))
	first.srv.StartWarmup()
	c := first.dial()
	hot := keyList("h:", 0, 20)
	for round := 0; round < 200; round++ {
		mgetAll(t, c, hot)
	}
	mgetAll(t, c, keyList("c:", 0, 300))
	top := string(c.Do("CACHE", "HOTKEYS", "3"))
	if !regexp.MustCompile(`^\*3\r\n(\+key:"h:\d+" requests:\d+ policy:h\r\n){3}$`).MatchString(top) {
		t.Fatalf("CACHE HOTKEYS 3 = %q; want three lines of h: keys with their counts and policy h", top)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := first.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	written, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(written)), "\n")
	if len(lines) < 20 || !sameSet(lines[:20], hot) {
		t.Fatalf("hot-key file starts with %q; want the 20 h: keys", lines[:min(20, len(lines))])
	}
	zset := string(redis.Do("ZREVRANGE", "featcache:hotkeys", "0", "19"))
	for _, k := range hot {
		if !strings.Contains(zset, bulk(k)) {
			t.Fatalf("hot-key zset top 20 lacks %s: %q", k, zset)
		}
	}

	for _, tc := range hotKeySources(t, file) {
		next := startWarmed(t, redis, cfg(tc.file), tc.name)
		gets := redis.Calls("get")
		mgetAll(t, next.dial(), hot)
		if got := redis.Calls("get") - gets; got != 0 {
			t.Errorf("%s: reading the hot keys made %d upstream GETs; want 0", tc.name, got)
		}
		next.srv.Close()
	}
}

// hotKeySource is where a restarted featcache finds its hot keys: the file its predecessor wrote, or, when that file
// is lost with the disk, the sorted set.
type hotKeySource struct{ name, file string }

// hotKeySources returns both sources, for a predecessor that wrote file.
func hotKeySources(t *testing.T, file string) []hotKeySource {
	return []hotKeySource{
		{"from the file", file},
		{"from the sorted set (disk lost)", filepath.Join(t.TempDir(), "lost.txt")},
	}
}

// startWarmed starts a featcache configured by yamlCfg in front of redis, starts its warm-up, and waits until it is
// ready and the warm-up is done; what names the case in failures.
func startWarmed(t *testing.T, redis *redistest.Server, yamlCfg, what string) *testProxy {
	t.Helper()
	p := startProxyOn(t, redis, yamlCfg)
	admin := p.adminURL()
	p.srv.StartWarmup()
	redistest.Eventually(t, 10*time.Second, what+": ready", func() bool { return httpStatus(t, admin, "/readyz") == http.StatusOK })
	redistest.Eventually(t, 10*time.Second, what+": warm-up done", func() bool { return !p.srv.warmer.Stats().Running })
	return p
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// TestShortRunKeepsHotKeys: an instance that warmed from its predecessor's hot-key list and then served only a few
// reads before it shut down (a restart loop, a deploy rolled back) writes a list that still holds the
// predecessor's hot keys, after the keys it read itself, so that its successor warms them too.
func TestShortRunKeepsHotKeys(t *testing.T) {
	redis := redistest.Start(t)
	loadKeys(t, redis, "h:", 20)
	loadKeys(t, redis, "c:", 5)
	file := filepath.Join(t.TempDir(), "hotkeys.txt")
	cfg := fmt.Sprintf(`
warm:
  rate: 1000000
  hotkeys_file: %q
  hotkeys_size: 100
policies:
  - {name: h, prefix: "h:", hard_ttl: 1h}
  - {name: c, prefix: "c:", hard_ttl: 1h}
`, file)
	shutdown := func(p *testProxy) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := p.srv.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
	}
	first := startProxyOn(t, redis, cfg)
	first.srv.StartWarmup()
	hot := keyList("h:", 0, 20)
	c := first.dial()
	for round := 0; round < 200; round++ {
		mgetAll(t, c, hot)
	}
	shutdown(first)

	second := startWarmed(t, redis, cfg, "the short run")
	c = second.dial()
	for i := 0; i < 100; i++ {
		c.Do("GET", "c:0")
	}
	shutdown(second)
	written, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(written)), "\n")
	if len(lines) != 21 || lines[0] != "c:0" || !sameSet(lines[1:], hot) {
		t.Fatalf("after the short run the hot-key file holds %q; want c:0, then the 20 h: keys", lines)
	}
}

// TestHotSamplingFollowsTheRate: the hot-key tracker's mean gap stays hotSampleMean while reads are few, grows so
// that about hotSampleRate reads a second are recorded when they are many, up to hotSampleMax, and comes back down
// when they slow.
func TestHotSamplingFollowsTheRate(t *testing.T) {
	var h hotSampling
	total := int64(0)
	for _, c := range []struct{ perSecond, want int64 }{
		{0, hotSampleMean},
		{16_000, hotSampleMean},
		{900_000, 900_000 / hotSampleRate},
		{900_000, 900_000 / hotSampleRate}, // the same rate a second later
		{1 << 34, hotSampleMax},
		{160, hotSampleMean},
	} {
		total += c.perSecond
		h.adjust(total)
		if got := h.current(); got != c.want {
			t.Fatalf("after %d cached reads in a second: mean %d; want %d", c.perSecond, got, c.want)
		}
	}
}

// TestHotKeyCountsAtAWiderGap: with the gap's mean raised, a key's count in CACHE HOTKEYS still estimates the
// reads of it (each recorded read counts for the mean it was drawn with), and CACHE STATS shows the mean.
func TestHotKeyCountsAtAWiderGap(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	p.redis.Do("SET", "k", "v")
	p.settle()
	p.srv.hotGap.mean.Store(256)
	c := p.dial()
	const reads = 51200
	cmds := make([][]string, 1024)
	for i := range cmds {
		cmds[i] = []string{"GET", "k"}
	}
	for i := 0; i < reads/len(cmds); i++ {
		c.Pipeline(cmds)
	}
	if n := p.srv.cachedReads(); n < reads {
		t.Fatalf("cachedReads = %d after %d GETs of a cached key; the sampling rate follows it", n, reads)
	}
	m := regexp.MustCompile(`requests:(\d+)`).FindSubmatch(c.Do("CACHE", "HOTKEYS", "1"))
	if m == nil {
		t.Fatal("CACHE HOTKEYS lists no key")
	}
	if n, _ := strconv.Atoi(string(m[1])); n < reads*8/10 || n > reads*12/10 {
		t.Fatalf("k read %d times counts %d at a mean gap of 256; want within 20%%", reads, n)
	}
	// The once-a-second adjustment may change the mean meanwhile: the line must show the mean of its moment.
	for {
		before := p.srv.hotGap.current()
		st := string(c.Do("CACHE", "STATS"))
		if p.srv.hotGap.current() != before {
			continue
		}
		if want := "hotkeys_sample_mean:" + strconv.FormatInt(before, 10) + "\r\n"; !strings.Contains(st, want) {
			t.Fatalf("CACHE STATS lacks %q: %.200q", want, st)
		}
		break
	}
}
