package main

import (
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestLoadList(t *testing.T) {
	tests := []struct {
		in      string
		want    loadList
		str     string
		wantErr bool
	}{
		{"25%,50%,90%", loadList{{Share: 0.25}, {Share: 0.5}, {Share: 0.9}}, "25%,50%,90%", false},
		{"5000, 12.5%", loadList{{Rate: 5000}, {Share: 0.125}}, "5000,12.5%", false},
		{"", nil, "", false},
		{"0%", nil, "", true},
		{"fast", nil, "", true},
		{"-5", nil, "", true},
	}
	for _, tt := range tests {
		var l loadList
		err := l.Set(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("%q: got error %v; want error %v", tt.in, err, tt.wantErr)
			continue
		}
		if err == nil && (!slices.Equal(l, tt.want) || l.String() != tt.str) {
			t.Errorf("%q: got %v (%q); want %v (%q)", tt.in, l, l.String(), tt.want, tt.str)
		}
	}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		name  string
		reply any
		want  answerClass
	}{
		{"fresh", "key:\"feat:1\"\r\npolicy:feat\r\nstate:fresh\r\nkind:value\r\n", classHit},
		{"stale", "key:\"feat:1\"\r\npolicy:feat\r\nstate:stale (served, refreshed in the background)\r\n", classStale},
		{"unverified", "state:unverified (cached before a tracking loss: ...)\r\n", classStale},
		{"miss", "key:\"feat:1\"\r\npolicy:feat\r\nstate:miss\r\n", classMiss},
		{"dead", "state:dead (past hard deadline: refetched; ...)\r\n", classMiss},
		{"uncached", "key:\"x\"\r\npolicy:(none)\r\nstate:uncached (no policy matches: forwarded)\r\n", classOther},
		{"hash field", "key:\"e\"\r\npolicy:v\r\nkind:hash\r\ncomplete:true\r\nfield:\"_ts:v\"\r\nfield_policy:v\r\nfield_state:fresh\r\n", classHit},
		{"hash field missing", "kind:hash\r\ncomplete:false\r\nfield_state:miss\r\n", classMiss},
		{"error reply", nil, classOther},
	}
	for _, tt := range tests {
		if got := classify(tt.reply); got != tt.want {
			t.Errorf("%s: got %s; want %s", tt.name, classNames[got], classNames[tt.want])
		}
	}
	for _, c := range []struct{ a, b, want answerClass }{
		{classHit, classMiss, classMiss}, {classStale, classHit, classStale}, {classOther, classHit, classHit},
		{classMiss, classOther, classMiss}, {classOther, classOther, classOther},
	} {
		if got := worse(c.a, c.b); got != c.want {
			t.Errorf("worse(%s, %s) = %s; want %s", classNames[c.a], classNames[c.b], classNames[got], classNames[c.want])
		}
	}
}

// TestBuildSchedule checks the arrival process: the same seed gives the same schedule, times rise within the
// phase, and the count is near rate × duration (a Poisson count of mean 20,000 is within 4% with overwhelming odds).
func TestBuildSchedule(t *testing.T) {
	w := &workload{Keys: 1000, Zipf: 1.1, Mget: 2, Seed: 3}
	a := buildSchedule(10000, 2*time.Second, 7, kvOpen{w})
	b := buildSchedule(10000, 2*time.Second, 7, kvOpen{w})
	if n := len(a); n < 19200 || n > 20800 {
		t.Errorf("got %d requests at 10,000/s for 2s; want about 20,000", n)
	}
	if len(a) != len(b) {
		t.Fatalf("the same seed gave %d and %d requests", len(a), len(b))
	}
	for i := range a {
		if a[i].at != b[i].at || !slices.Equal(a[i].keys, b[i].keys) {
			t.Fatalf("request %d differs between two builds with the same seed", i)
		}
		if i > 0 && a[i].at < a[i-1].at || a[i].at >= 2*time.Second {
			t.Fatalf("request %d at %v after %v: times must rise within the phase", i, a[i].at, a[i-1].at)
		}
		if len(a[i].keys) != 2 || cap(a[i].keys) != 2 {
			t.Fatalf("request %d: %d keys (cap %d); want an MGET of 2 that cannot grow into the next", i, len(a[i].keys), cap(a[i].keys))
		}
	}
	if c := buildSchedule(10000, 2*time.Second, 8, kvOpen{w}); slices.EqualFunc(a[:100], c[:100],
		func(x, y openRequest) bool { return x.at == y.at }) {
		t.Error("two seeds gave the same arrival times")
	}
}

func TestNetemCommands(t *testing.T) {
	got := netemCommands("6379", 500*time.Microsecond, 0)
	want := []string{
		"tc qdisc add dev lo root handle 1: prio bands 2 priomap 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0",
		"tc qdisc add dev lo parent 1:2 handle 20: netem limit 100000 delay 500us",
		"tc filter add dev lo parent 1: protocol ip prio 1 u32 match ip protocol 6 0xff match ip dport 6379 0xffff flowid 1:2",
		"tc filter add dev lo parent 1: protocol ip prio 1 u32 match ip protocol 6 0xff match ip sport 6379 0xffff flowid 1:2",
	}
	if len(got) != len(want) {
		t.Fatalf("got %d commands; want %d", len(got), len(want))
	}
	for i := range want {
		if s := strings.Join(got[i], " "); s != want[i] {
			t.Errorf("command %d: got %q; want %q", i, s, want[i])
		}
	}
	if s := strings.Join(netemCommands("1", time.Millisecond, 100*time.Microsecond)[1], " "); !strings.HasSuffix(s, "delay 1000us 100us") {
		t.Errorf("with jitter: got %q", s)
	}
	if k := qdiscKind(got[0]); k != "prio" {
		t.Errorf("qdiscKind: got %q; want prio", k)
	}
	if k := qdiscKind(got[1]); k != "netem" {
		t.Errorf("qdiscKind: got %q; want netem", k)
	}
}

// TestOpenLoopRuns runs open-loop phases against a real redis-server and a real featcache: every scheduled
// request is answered, featcache's marked requests are classified, and its first reads of keys never read are
// misses while the keys a prefill cached are hits.
func TestOpenLoopRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Redis and builds featcache")
	}
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatal("redis-server not installed (Debian: apt-get install redis-server)")
	}
	dir := t.TempDir()
	bin, _, err := featcacheBinary("", moduleRoot(), dir)
	if err != nil {
		t.Fatal(err)
	}
	f := &fleet{dir: filepath.Join(dir)}
	defer f.stopAll()
	redisAddr, redisProc, err := f.startRedis("redis-server")
	if err != nil {
		t.Fatal(err)
	}
	w := &workload{Keys: 2000, ValueSize: 100, Seed: 1, Mget: 1}
	if _, _, err := seedRedis(redisAddr, w); err != nil {
		t.Fatal(err)
	}
	fcAddr, fcProc, err := f.startFeatcacheAs("featcache", bin, redisAddr, 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	// The first 1000 keys are cached before the phases; uniform reads over 2000 make about half the first reads
	// of a round hits and half misses.
	warm, err := openLoadTarget("warm", fcAddr, w, 4)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := warm.getAll(1000, w.appendKey); err != nil {
		t.Fatal(err)
	}
	warm.close()
	sampler := func(p *proc, addr string) func() (sample, error) {
		return func() (sample, error) {
			c, err := procCPU(p.pid())
			if err != nil || addr == "" {
				return sample{cpu: c}, err
			}
			st, err := cacheStats(addr)
			return sample{cpu: c, stats: st.m}, err
		}
	}
	targets := []openTarget{
		{name: "redis", addr: redisAddr, sample: sampler(redisProc, "")},
		{name: "featcache", addr: fcAddr, featcache: true, sample: sampler(fcProc, fcAddr)},
	}
	o := openSettings{Loads: loadList{{Share: 0.5}, {Rate: 500}}, Conns: 8, Mark: 2}
	res, err := runOpenLoop(o, 400*time.Millisecond, 1, 2000, targets, kvOpen{w}, new(atomic.Bool), t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Loads) != 2 || res.Loads[0].Rate != 1000 || res.Loads[1].Rate != 500 {
		t.Fatalf("got loads %+v; want 1000/s (50%% of 2000) and 500/s", res.Loads)
	}
	for _, l := range res.Loads {
		for _, tr := range l.Targets {
			r := tr.Rounds[0]
			if r.Requests != r.Scheduled || r.Requests < int64(l.Rate*0.4*0.8) || tr.Errors+tr.Nils > 0 {
				t.Errorf("%s at %v/s: %d answered of %d scheduled, %d errors, %d nils (%s)", tr.Name, l.Rate,
					r.Requests, r.Scheduled, tr.Errors, tr.Nils, tr.FirstError)
			}
			if tr.P50us <= 0 || tr.P99us < tr.P50us || tr.P999us < tr.P99us {
				t.Errorf("%s at %v/s: percentiles p50 %v p99 %v p99.9 %v", tr.Name, l.Rate, tr.P50us, tr.P99us, tr.P999us)
			}
			if tr.Name == "redis" {
				if len(tr.Classes) > 0 || tr.Cache != nil {
					t.Errorf("redis: got answer classes or cache figures %+v", tr.Classes)
				}
				continue
			}
			classes := map[string]int64{}
			for _, c := range tr.Classes {
				classes[c.Class] = c.Requests
			}
			if classes["hit"] == 0 || classes["other"] > 0 || classes["hit"]+classes["miss"] < r.Requests/2-1 {
				t.Errorf("featcache at %v/s: marked classes %v of %d requests; want hits, and every 2nd request classified",
					l.Rate, classes, r.Requests)
			}
			if tr.Cache == nil || tr.Cache.Reads() != r.Requests {
				t.Errorf("featcache at %v/s: CACHE STATS counted %v reads; want %d", l.Rate, tr.Cache, r.Requests)
			}
		}
	}
	if c := res.Loads[0].Targets[1].Classes; len(c) < 2 || c[1].Class != "miss" {
		t.Errorf("featcache's first phase: got classes %+v; want hits and misses (keys 1000-1999 start uncached)", c)
	}
	var b strings.Builder
	res.markdown(&b, "requests")
	for _, want := range []string{"| 50% = 1000/s | featcache |", "| 500/s | redis |", "| featcache | miss |"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("the open-loop tables lack %q:\n%s", want, b.String())
		}
	}
}
